//! The error of an `nf` command: one line, and whether it is the user's (exit 2) or not (exit 1).
//! A leaf module: every command builds its errors here ([`usage`]), and the one-line form of a
//! clap value error ([`value_error_line`]) lives here too.
use std::fmt;

/// An error of a command: its message (one line, without the `error: ` prefix) and its kind.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CliError {
    /// The arguments cannot work (exit code 2).
    Usage(String),
    /// The command failed while running (exit code 1).
    Failed(String),
    /// Another rank of a data-parallel run reported the error; this one exits with the code
    /// and prints nothing.
    Quiet(u8),
}

impl CliError {
    /// The process exit code for this error.
    pub fn exit_code(&self) -> u8 {
        match self {
            CliError::Usage(_) => 2,
            CliError::Failed(_) => 1,
            CliError::Quiet(code) => *code,
        }
    }

    /// The same error with `prefix` before its message.
    pub fn with_prefix(self, prefix: &str) -> CliError {
        match self {
            CliError::Usage(m) => CliError::Usage(format!("{prefix}{m}")),
            CliError::Failed(m) => CliError::Failed(format!("{prefix}{m}")),
            q => q,
        }
    }
}

impl fmt::Display for CliError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CliError::Usage(m) | CliError::Failed(m) => f.write_str(m),
            CliError::Quiet(_) => Ok(()),
        }
    }
}

impl std::error::Error for CliError {}

/// A usage error (exit code 2): the arguments cannot work.
pub fn usage(m: impl Into<String>) -> CliError {
    CliError::Usage(m.into())
}

/// Write `line` and a newline to stderr in one write: a line of `eprintln!` goes out in
/// pieces (`error: `, the message, the newline), which a launcher forwarding several
/// processes' stderr (mpirun) can interleave with its own lines.
pub fn print_error_line(line: impl std::fmt::Display) {
    use std::io::Write;
    let _ = std::io::stderr().write_all(format!("{line}\n").as_bytes());
}

/// The one-line message for a clap error about a flag's value (unknown model, bad size, bad
/// shape, ...), or `None` for the errors clap should report itself (help, version, unknown or
/// missing flags, which print their usage).
pub fn value_error_line(e: &clap::Error) -> Option<String> {
    use clap::error::ErrorKind;
    if !matches!(
        e.kind(),
        ErrorKind::ValueValidation | ErrorKind::InvalidValue
    ) {
        return None;
    }
    let rendered = e.render().to_string();
    // Split at lone carriage returns too: a value quoted in the message may hold one.
    let line = rendered
        .split(['\n', '\r'])
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with("For more information"))
        .collect::<Vec<_>>()
        .join(" ");
    Some(line)
}
