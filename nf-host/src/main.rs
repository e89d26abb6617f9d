//! `nf`: the NeuroFlux command line. See [`nf_host::cli`].
#![forbid(unsafe_code)]
use std::process::ExitCode;

use clap::Parser;
use nf_host::cli::{self, Cli};

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => {
            // A bad flag value is one line; help, version and usage errors are clap's own.
            if let Some(line) = cli::value_error_line(&e) {
                cli::print_error_line(line);
                return ExitCode::from(2);
            }
            let _ = e.print();
            return ExitCode::from(u8::try_from(e.exit_code()).unwrap_or(2));
        }
    };
    // A bad NF_GEMM_ISA is a usage error, before any kernel would trip over it.
    if let Err(e) = nf_cpu::isa_from_env() {
        cli::print_error_line(format_args!("error: {e}"));
        return ExitCode::from(2);
    }
    match cli::run(&cli, &mut std::io::stdout().lock()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            if !matches!(e, nf_host::error::CliError::Quiet(_)) {
                cli::print_error_line(format_args!("error: {e}"));
            }
            ExitCode::from(e.exit_code())
        }
    }
}
