//! `veil attest …`: produce and verify attestation evidence.

use std::process::ExitCode;

use clap::Subcommand;

#[derive(Debug, Subcommand)]
pub enum AttestCommand {
    /// Verify evidence and print its claims.
    Verify,
}

pub fn run(cmd: AttestCommand) -> anyhow::Result<ExitCode> {
    match cmd {
        AttestCommand::Verify => anyhow::bail!("attestation verification is not built yet"),
    }
}
