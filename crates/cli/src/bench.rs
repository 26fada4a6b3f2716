//! `veil bench …`: benchmarks that print rates and ratios measured on this machine.

use std::process::ExitCode;

use clap::Subcommand;

#[derive(Debug, Subcommand)]
pub enum BenchCommand {
    /// Streaming AEAD throughput.
    Crypto,
}

pub fn run(cmd: BenchCommand) -> anyhow::Result<ExitCode> {
    match cmd {
        BenchCommand::Crypto => anyhow::bail!("not built yet"),
    }
}
