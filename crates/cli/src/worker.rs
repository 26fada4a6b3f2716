//! `veil worker serve`: an attested inference worker; `veil worker provision`: send a model's data key to one.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::str::FromStr;
use std::sync::Arc;

use anyhow::{Context, bail};
use clap::{Args, Subcommand};
use veil_blobs::{BlobAddress, LocalStore};
use veil_engine::LlamaConfig;
use veil_worker::{BlobBundles, ModelSpec, Worker, WorkerConfig};

#[derive(Debug, Subcommand)]
pub enum WorkerCommand {
    /// Serve encrypted inference: attestation, key provisioning, sealed requests (simulated TEE here).
    Serve(ServeArgs),
    /// Attest a worker and send it a model's data key, sealed to its attested enclave key.
    Provision(ProvisionArgs),
}

#[derive(Debug, Args)]
pub struct ServeArgs {
    /// Address to listen on; port 0 lets the OS choose. The URL is printed on stdout.
    #[arg(long, default_value = "127.0.0.1:0")]
    pub listen: SocketAddr,
    /// The local blob store holding the model bundles.
    #[arg(long, value_name = "DIR")]
    pub blobs: PathBuf,
    /// A model to serve, as NAME=BUNDLE_ADDRESS (repeatable).
    #[arg(long = "model", value_name = "NAME=ADDRESS", required = true)]
    pub models: Vec<String>,
    /// Where the simulated TEE keeps its development key [default: Veil's data directory].
    #[arg(long, value_name = "DIR")]
    pub data_dir: Option<PathBuf>,
    /// Threads per request slot [default: all cores / slots].
    #[arg(long)]
    pub threads: Option<usize>,
    /// Requests decoded at once.
    #[arg(long, default_value_t = 1)]
    pub slots: usize,
    /// Context window per request.
    #[arg(long)]
    pub ctx: Option<u32>,
    #[command(flatten)]
    pub stream: StreamArgs,
}

/// How a worker groups a streamed answer's tokens into frames.
#[derive(Debug, Clone, Copy, Args)]
pub struct StreamArgs {
    /// Send a streamed answer at most one frame per this many milliseconds: tokens produced sooner after
    /// the last frame wait and go with the next (the first token never waits). Fewer frames take less CPU
    /// from the engine; 0 sends every token at once.
    #[arg(long, value_name = "MS", default_value_t = default_stream_interval_ms())]
    pub stream_interval_ms: u64,
}

impl StreamArgs {
    pub fn interval(&self) -> std::time::Duration {
        std::time::Duration::from_millis(self.stream_interval_ms)
    }
}

fn default_stream_interval_ms() -> u64 {
    u64::try_from(veil_worker::DEFAULT_STREAM_INTERVAL.as_millis()).unwrap_or(u64::MAX)
}

#[derive(Debug, Args)]
pub struct PolicyArgs {
    /// Accept workers running on the simulated TEE (development only: no hardware protection).
    #[arg(long)]
    pub allow_simulated: bool,
    /// Accept only workers with this measurement, as REGISTER=HEX (e.g. sim_measurement=…); repeatable,
    /// all given registers must match.
    #[arg(long = "allow-measurement", value_name = "REGISTER=HEX")]
    pub measurements: Vec<String>,
}

impl PolicyArgs {
    pub fn client_config(&self) -> anyhow::Result<veil_client::ClientConfig> {
        let mut policy = if self.allow_simulated {
            veil_attest::Policy::development()
        } else {
            veil_attest::Policy::strict()
        };
        if !self.measurements.is_empty() {
            let mut set = veil_attest::Measurements::new();
            for m in &self.measurements {
                let (reg, hex) = m
                    .split_once('=')
                    .with_context(|| format!("--allow-measurement {m:?}: expected REGISTER=HEX"))?;
                let bytes =
                    hex::decode(hex).with_context(|| format!("--allow-measurement {m:?}: not hex"))?;
                set.insert(reg.to_owned(), veil_attest::HexBytes(bytes));
            }
            policy = policy.allow_measurements(vec![set]);
        }
        Ok(veil_client::ClientConfig::new(policy))
    }
}

#[derive(Debug, Args)]
pub struct ProvisionArgs {
    /// The worker's base URL.
    #[arg(long, value_name = "URL")]
    pub worker: String,
    /// The model's name on the worker.
    #[arg(long)]
    pub model: String,
    /// The bundle's content address.
    #[arg(long, value_name = "ADDRESS")]
    pub bundle: String,
    /// The raw data key file written by `veil model seal`.
    #[arg(long, value_name = "FILE")]
    pub key_file: PathBuf,
    #[command(flatten)]
    pub policy: PolicyArgs,
}

pub fn run(cmd: WorkerCommand) -> anyhow::Result<ExitCode> {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    match cmd {
        WorkerCommand::Serve(args) => rt.block_on(serve(args)),
        WorkerCommand::Provision(args) => rt.block_on(provision(args)),
    }
}

async fn serve(args: ServeArgs) -> anyhow::Result<ExitCode> {
    let mut models = Vec::new();
    for m in &args.models {
        let (name, addr) = m
            .split_once('=')
            .with_context(|| format!("--model {m:?}: expected NAME=BUNDLE_ADDRESS"))?;
        models.push(ModelSpec {
            name: name.to_owned(),
            bundle: BlobAddress::from_str(addr).with_context(|| format!("--model {m:?}"))?,
        });
    }
    let data_dir = match &args.data_dir {
        Some(d) => d.clone(),
        None => veil_models::default_data_dir()?,
    };
    let platform = veil_platform::open(veil_platform::PlatformConfig::Sim(
        veil_platform::sim::SimConfig::new(data_dir),
    ))?;
    let store = LocalStore::open(&args.blobs)?;
    let config = WorkerConfig {
        listen: args.listen,
        models,
        engine: LlamaConfig {
            threads: args.threads,
            slots: args.slots,
            n_ctx: args.ctx,
            ..LlamaConfig::default()
        },
        stream_interval: args.stream.interval(),
        ..WorkerConfig::default()
    };
    let worker = Worker::new(config, platform, Arc::new(BlobBundles(Arc::new(store))))?;
    let running = worker.start().await?;
    {
        use std::io::Write as _;
        writeln!(std::io::stdout().lock(), "{}", running.url())?;
    }
    eprintln!(
        "veil worker listening on {} (SIMULATED TEE: development only); enclave key {}",
        running.url(),
        hex::encode(worker.hpke_public_key().to_bytes())
    );
    tokio::select! {
        r = running.wait() => { r?; }
        r = tokio::signal::ctrl_c() => {
            r.context("cannot wait for Ctrl-C")?;
            eprintln!("veil worker: stopping");
        }
    }
    Ok(ExitCode::SUCCESS)
}

async fn provision(args: ProvisionArgs) -> anyhow::Result<ExitCode> {
    let client = veil_client::WorkerClient::new(&args.worker, args.policy.client_config()?)?;
    let worker = client.attest().await?;
    let bundle = BlobAddress::from_str(&args.bundle)?;
    let key = veil_bundle::DataKey::read_file(&args.key_file)?;
    let sealed = veil_bundle::seal_key(&worker.hpke_public_key, &bundle, &key)?;
    if !worker.models.iter().any(|m| m.name == args.model) {
        bail!(
            "the worker at {} does not serve a model named {:?}",
            args.worker,
            args.model
        );
    }
    client.provision(&args.model, &args.bundle, sealed).await?;
    eprintln!("provisioned {} on {}: ready", args.model, args.worker);
    Ok(ExitCode::SUCCESS)
}
