//! Veil's command-line subcommands; the `veil` binary only parses arguments and calls [`run`].
#![forbid(unsafe_code)]

use std::process::ExitCode;

use clap::{Parser, Subcommand};

pub mod attest;
pub mod bench;
pub mod bench_confidential;
pub mod bundle;
pub mod chat;
pub mod devnet;
pub mod gateway;
pub mod model;
pub mod node;
pub mod wallet;
pub mod worker;

/// Veil: an end-to-end confidential, decentralized AI network.
#[derive(Debug, Parser)]
#[command(name = "veil", version, about, long_about = None)]
pub struct Cli {
    /// Log filter (e.g. `info`, `veil_engine=debug`); also read from `VEIL_LOG`.
    #[arg(long, global = true, env = "VEIL_LOG", default_value = "warn")]
    pub log: String,

    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Produce and verify TEE attestation evidence.
    #[command(subcommand)]
    Attest(attest::AttestCommand),
    /// Fetch and manage models.
    #[command(subcommand)]
    Model(model::ModelCommand),
    /// Chat with a model locally (plain engine, not confidential).
    Chat(chat::ChatArgs),
    /// Benchmarks that print ratios and rates for this machine.
    #[command(subcommand)]
    Bench(bench::BenchCommand),
    /// Run an attested inference worker, or provision a model key to one.
    #[command(subcommand)]
    Worker(worker::WorkerCommand),
    /// OpenAI-compatible endpoint on this machine, sealing requests to an attested worker.
    Gateway(gateway::GatewayArgs),
    /// A whole local network in one command: fetch and seal the model, start an attested worker (simulated
    /// TEE) and an OpenAI-compatible gateway, provision the key; prints the base URL. Ctrl-C stops it.
    Devnet(devnet::DevnetArgs),
    /// Run a validator of the confidential ledger (`--config FILE`), or write a local network (`init`).
    Node(node::NodeArgs),
    /// An account on the confidential ledger: new, address, balance, transfer, history.
    Wallet(wallet::WalletArgs),
}

/// Runs one parsed command line.
pub fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    init_logging(&cli.log);
    match cli.command {
        Command::Attest(cmd) => attest::run(cmd),
        Command::Model(cmd) => model::run(cmd),
        Command::Chat(args) => chat::run(args),
        Command::Bench(cmd) => bench::run(cmd),
        Command::Worker(cmd) => worker::run(cmd),
        Command::Gateway(args) => gateway::run(args),
        Command::Devnet(args) => devnet::run(args),
        Command::Node(args) => node::run(args),
        Command::Wallet(args) => wallet::run(args),
    }
}

fn init_logging(filter: &str) {
    let filter = tracing_subscriber::EnvFilter::try_new(filter)
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn"));
    // Logs go to stderr so that stdout stays machine-readable (JSON claims, streamed answers).
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .try_init();
}
