//! The error of an `nf` command: one line, and whether it is the user's (exit 2) or not (exit 1).
use std::fmt;

/// An error of a command: its message (one line, without the `error: ` prefix) and its kind.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CliError {
    /// The arguments cannot work (exit code 2).
    Usage(String),
    /// The command failed while running (exit code 1).
    Failed(String),
}

impl CliError {
    /// The process exit code for this error.
    pub fn exit_code(&self) -> u8 {
        match self {
            CliError::Usage(_) => 2,
            CliError::Failed(_) => 1,
        }
    }
}

impl fmt::Display for CliError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CliError::Usage(m) | CliError::Failed(m) => f.write_str(m),
        }
    }
}

impl std::error::Error for CliError {}
