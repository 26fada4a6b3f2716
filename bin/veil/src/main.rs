//! The `veil` binary: parse arguments, run the command, report an error and exit non-zero.
#![forbid(unsafe_code)]

use clap::Parser;

fn main() -> std::process::ExitCode {
    let cli = veil_cli::Cli::parse();
    match veil_cli::run(cli) {
        Ok(code) => code,
        Err(err) => {
            // `{:#}` prints the whole chain of causes on one line.
            eprintln!("error: {err:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
