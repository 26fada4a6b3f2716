//! `veil chat`: chat with a model through the plain (non-confidential) engine.

use std::process::ExitCode;

use clap::Args;

#[derive(Debug, Args)]
pub struct ChatArgs {
    /// The prompt.
    pub prompt: String,
}

pub fn run(_args: ChatArgs) -> anyhow::Result<ExitCode> {
    anyhow::bail!("the chat engine is not built yet")
}
