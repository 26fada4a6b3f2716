//! `veil model …`: fetch and manage models.

use std::process::ExitCode;

use clap::Subcommand;

#[derive(Debug, Subcommand)]
pub enum ModelCommand {
    /// Fetch a model into Veil's data directory.
    Fetch,
}

pub fn run(cmd: ModelCommand) -> anyhow::Result<ExitCode> {
    match cmd {
        ModelCommand::Fetch => anyhow::bail!("model fetching is not built yet"),
    }
}
