//! `veil devnet`: a whole local Veil network in one command.
//!
//! Fetches the model, seals it into a bundle in a local blob store (or reuses the bundle and data key that
//! an earlier run sealed), starts an attested worker on the simulated TEE and an OpenAI-compatible gateway
//! in this process, provisions the data key to the worker after verifying its evidence under a development
//! policy (simulated evidence accepted, the worker's simulated measurement and development key pinned), and
//! prints the gateway's OpenAI base URL. Ctrl-C or SIGTERM stops everything.
//!
//! The parts are owned by [`Devnet`]: [`Devnet::start`] brings them up, [`Devnet::shutdown`] stops them.
//! The confidential ledger runs beside them: [`LocalLedger`] starts four validators (`veil node`
//! processes of this same binary, a genesis funding a demo wallet) before anything else, and the devnet
//! prints their RPC addresses and the demo wallet once the chain finalizes.

use std::fs::File;
use std::io::{BufReader, BufWriter, Read, Write};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::str::FromStr;
use std::sync::Arc;
use std::time::{Duration, Instant, UNIX_EPOCH};

use anyhow::{Context, bail};
use clap::Args;
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use serde::{Deserialize, Serialize};
use veil_blobs::{BlobAddress, BlobStore, LocalStore};
use veil_bundle::DataKey;
use veil_engine::LlamaConfig;
use veil_gateway::{Gateway, RunningGateway};
use veil_models::{DEFAULT_MODEL, ModelStore};
use veil_platform::Platform as _;
use veil_worker::{BlobBundles, ModelSpec, RunningWorker, Worker, WorkerConfig};

/// How long each part may take to stop before the devnet gives up waiting for it.
const STOP_TIMEOUT: Duration = Duration::from_secs(10);

#[derive(Debug, Args)]
pub struct DevnetArgs {
    /// Veil's data directory, where models are fetched to [default: the user's data directory, e.g.
    /// ~/.local/share/veil].
    #[arg(long, env = "VEIL_DATA_DIR", value_name = "DIR")]
    pub data_dir: Option<PathBuf>,
    /// Where the devnet keeps its blob store, sealed bundles, data keys and simulated-TEE key
    /// [default: DATA_DIR/devnet].
    #[arg(long, value_name = "DIR")]
    pub state_dir: Option<PathBuf>,
    /// The model to serve: a catalogue name (fetched on first use) or the path of a GGUF file.
    #[arg(long, default_value = DEFAULT_MODEL)]
    pub model: String,
    /// Engine threads [default: all cores].
    #[arg(long)]
    pub threads: Option<usize>,
    /// Context window per request [default: the model's, capped].
    #[arg(long)]
    pub ctx: Option<u32>,
    /// Where the gateway listens (keep it on loopback); port 0 lets the OS choose.
    #[arg(long, default_value = "127.0.0.1:0", value_name = "ADDR")]
    pub gateway_listen: SocketAddr,
    /// Where the worker listens; port 0 lets the OS choose.
    #[arg(long, default_value = "127.0.0.1:0", value_name = "ADDR")]
    pub worker_listen: SocketAddr,
    #[command(flatten)]
    pub stream: crate::worker::StreamArgs,
}

/// What a devnet runs.
#[derive(Debug, Clone)]
pub struct DevnetConfig {
    /// Veil's data directory (models).
    pub data_dir: PathBuf,
    /// The devnet's own directory: `blobs/`, `bundles/`, `tee/`.
    pub state_dir: PathBuf,
    /// Catalogue name or GGUF path.
    pub model: String,
    pub engine: LlamaConfig,
    pub gateway_listen: SocketAddr,
    pub worker_listen: SocketAddr,
    /// The worker's [`WorkerConfig::stream_interval`].
    pub stream_interval: Duration,
}

impl DevnetConfig {
    pub fn from_args(args: &DevnetArgs) -> anyhow::Result<Self> {
        let data_dir = match &args.data_dir {
            Some(d) => d.clone(),
            None => veil_models::default_data_dir()?,
        };
        let state_dir = args.state_dir.clone().unwrap_or_else(|| data_dir.join("devnet"));
        Ok(Self {
            data_dir,
            state_dir,
            model: args.model.clone(),
            engine: LlamaConfig {
                threads: args.threads,
                n_ctx: args.ctx,
                ..LlamaConfig::default()
            },
            gateway_listen: args.gateway_listen,
            worker_listen: args.worker_listen,
            stream_interval: args.stream.interval(),
        })
    }
}

/// A running local network: one worker (simulated TEE) and one gateway, in this process.
#[derive(Debug)]
pub struct Devnet {
    /// The model's name as clients ask for it.
    pub model: String,
    /// The sealed bundle the worker serves.
    pub bundle: BlobAddress,
    /// Whether the bundle was sealed by an earlier run.
    pub reused_bundle: bool,
    worker: Worker,
    worker_handle: RunningWorker,
    gateway: Gateway,
    gateway_handle: RunningGateway,
}

/// Prints one progress step on stderr: `label… ` then, when done, `done in X s`.
fn step<T>(label: &str, f: impl FnOnce() -> anyhow::Result<T>) -> anyhow::Result<(T, Duration)> {
    eprintln!("{label}…");
    let started = Instant::now();
    let out = f()?;
    Ok((out, started.elapsed()))
}

fn secs(d: Duration) -> String {
    format!("{:.1} s", d.as_secs_f64())
}

impl Devnet {
    /// Fetches and seals the model (blocking work on blocking threads), starts the worker, provisions
    /// its key after attesting it, and starts the gateway. Progress goes to stderr.
    pub async fn start(config: DevnetConfig) -> anyhow::Result<Self> {
        eprintln!(
            "veil devnet: data dir {}, state dir {}",
            config.data_dir.display(),
            config.state_dir.display()
        );
        // 1. The model.
        let (model_name, model_path, fetch_time) = {
            let config = config.clone();
            tokio::task::spawn_blocking(move || -> anyhow::Result<_> {
                let (r, t) = step(&format!("fetching model {}", config.model), || {
                    let store = ModelStore::new(&config.data_dir);
                    let path = crate::model::resolve_or_fetch(&store, &config.model)?;
                    Ok((model_name(&config.model, &path), path))
                })?;
                Ok((r.0, r.1, t))
            })
            .await
            .context("the model fetch thread failed")??
        };
        eprintln!(
            "fetching model… done in {} ({})",
            secs(fetch_time),
            model_path.display()
        );

        // 2. The bundle, sealed now or by an earlier run.
        let store: Arc<LocalStore> = Arc::new(
            LocalStore::open(config.state_dir.join("blobs"))
                .context("cannot open the devnet's blob store")?,
        );
        let prepared = {
            let (store, dir, name, path) = (
                store.clone(),
                config.state_dir.join("bundles"),
                model_name.clone(),
                model_path.clone(),
            );
            tokio::task::spawn_blocking(move || prepare_bundle(store.as_ref(), &dir, &name, &path))
                .await
                .context("the sealing thread failed")??
        };

        // 3. The worker, on the simulated TEE.
        let sim = veil_platform::sim::SimPlatform::start(veil_platform::sim::SimConfig::new(
            config.state_dir.join("tee"),
        ))
        .context("cannot start the simulated TEE")?;
        let measurement = sim.measurement_bytes();
        let registers = sim.measurement()?;
        let dev_key = sim.dev_public_key();
        let worker = Worker::new(
            WorkerConfig {
                listen: config.worker_listen,
                models: vec![ModelSpec {
                    name: model_name.clone(),
                    bundle: prepared.address,
                }],
                engine: config.engine.clone(),
                stream_interval: config.stream_interval,
                ..WorkerConfig::default()
            },
            Box::new(sim),
            Arc::new(BlobBundles(store)),
        )?;
        let worker_handle = worker.start().await?;
        let worker_url = worker_handle.url();
        eprintln!(
            "worker up at {worker_url} (SIMULATED TEE: development only, no hardware protection; \
             measurement {})",
            hex::encode(measurement)
        );

        // 4. Attest the worker and provision the data key to its enclave key.
        let client_config = devnet_client_config(registers, dev_key);
        let client = veil_client::WorkerClient::new(&worker_url, client_config.clone())?;
        eprintln!("provisioning…");
        let started = Instant::now();
        let attested = client
            .attest()
            .await
            .context("the devnet's own worker failed attestation")?;
        let sealed_key = veil_bundle::seal_key(&attested.hpke_public_key, &prepared.address, &prepared.key)?;
        client
            .provision(&model_name, &prepared.address.to_string(), sealed_key)
            .await
            .with_context(|| {
                format!(
                    "cannot provision {model_name} (bundle {}); if the stored bundle is damaged, remove {} \
                     to seal afresh",
                    prepared.address,
                    config.state_dir.join("bundles").display()
                )
            })?;
        eprintln!(
            "provisioning… model loaded in {} (attested, key sealed to the enclave, bundle decrypted into \
             memory only)",
            secs(started.elapsed())
        );

        // 5. The gateway.
        let gateway = Gateway::new(&worker_url, client_config)?;
        gateway
            .client()
            .attest()
            .await
            .context("the gateway cannot attest the devnet's worker")?;
        let gateway_handle = gateway.start(config.gateway_listen).await?;
        eprintln!(
            "gateway up at {} (every response carries x-veil-attestation: simulated)",
            gateway_handle.base_url()
        );
        Ok(Self {
            model: model_name,
            bundle: prepared.address,
            reused_bundle: prepared.reused,
            worker,
            worker_handle,
            gateway,
            gateway_handle,
        })
    }

    /// The gateway's OpenAI base URL, `http://ADDR/v1`.
    pub fn base_url(&self) -> String {
        self.gateway_handle.base_url()
    }

    /// The worker's URL.
    pub fn worker_url(&self) -> String {
        self.worker_handle.url()
    }

    /// The worker (its enclave keys, models).
    pub fn worker(&self) -> &Worker {
        &self.worker
    }

    /// The gateway.
    pub fn gateway(&self) -> &Gateway {
        &self.gateway
    }

    /// Stops the gateway (first: no new requests), then the worker; each may take [`STOP_TIMEOUT`].
    pub async fn shutdown(self) -> anyhow::Result<()> {
        let Self {
            gateway_handle,
            worker_handle,
            ..
        } = self;
        match tokio::time::timeout(STOP_TIMEOUT, gateway_handle.stop()).await {
            Ok(r) => r.context("the gateway did not stop cleanly")?,
            Err(_) => eprintln!(
                "the gateway did not stop within {}; leaving it",
                secs(STOP_TIMEOUT)
            ),
        }
        match tokio::time::timeout(STOP_TIMEOUT, worker_handle.stop()).await {
            Ok(r) => r.context("the worker did not stop cleanly")?,
            Err(_) => eprintln!(
                "the worker did not stop within {}; leaving it",
                secs(STOP_TIMEOUT)
            ),
        }
        Ok(())
    }
}

/// The devnet's trust in its own worker: simulated evidence is accepted (this is a development network on
/// one machine, and says so), but only from this worker's simulated measurement and development key.
fn devnet_client_config(
    registers: veil_attest::Measurements,
    dev_key: [u8; 32],
) -> veil_client::ClientConfig {
    let mut policy = veil_attest::Policy::development().allow_measurements(vec![registers]);
    policy.allowed_sim_keys = Some(vec![veil_attest::HexBytes(dev_key.to_vec())]);
    veil_client::ClientConfig::new(policy)
}

/// The name a model is served under: the catalogue name, else the file's stem.
fn model_name(requested: &str, path: &Path) -> String {
    match veil_models::lookup(requested) {
        Some(entry) => entry.name.to_owned(),
        None => path
            .file_stem()
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_else(|| requested.to_owned()),
    }
}

/// A bundle in the blob store and its data key.
struct Prepared {
    address: BlobAddress,
    key: DataKey,
    reused: bool,
}

/// What `bundles/NAME.json` records about the bundle sealed for a model (the key is in `NAME.key`).
#[derive(Debug, Serialize, Deserialize, PartialEq, Eq)]
struct BundleRecord {
    model_path: PathBuf,
    model_len: u64,
    model_mtime_ns: u128,
    plaintext_sha256: String,
    bundle: String,
    bundle_len: u64,
}

fn mtime_ns(meta: &std::fs::Metadata) -> u128 {
    meta.modified()
        .ok()
        .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
        .unwrap_or_default()
        .as_nanos()
}

/// Reuses the bundle and key an earlier run sealed for this model file, when they are still there and
/// match it; otherwise seals the model afresh (a new data key), stores the bundle and records it.
fn prepare_bundle(store: &dyn BlobStore, dir: &Path, name: &str, model: &Path) -> anyhow::Result<Prepared> {
    let meta = std::fs::metadata(model).with_context(|| format!("cannot stat {}", model.display()))?;
    let record_path = dir.join(format!("{name}.json"));
    let key_path = dir.join(format!("{name}.key"));
    let previous: Option<BundleRecord> = std::fs::read(&record_path)
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok());
    if let Some(rec) = &previous {
        match reusable(store, rec, &key_path, model, &meta) {
            Ok((address, key)) => {
                eprintln!("sealing… reusing the bundle sealed earlier: {address} (no re-encryption)");
                return Ok(Prepared {
                    address,
                    key,
                    reused: true,
                });
            }
            Err(why) => {
                eprintln!("sealing… the bundle sealed earlier cannot be reused ({why:#}); sealing afresh")
            }
        }
    }
    let (prepared, elapsed) = step(
        &format!("sealing {} into the devnet blob store", model.display()),
        || seal_into(store, dir, &record_path, &key_path, model, &meta),
    )?;
    eprintln!("sealing… done in {}: {}", secs(elapsed), prepared.address);
    if let Some(old) = previous.and_then(|r| BlobAddress::from_str(&r.bundle).ok())
        && old != prepared.address
    {
        let _ = store.delete(&old);
    }
    Ok(prepared)
}

fn reusable(
    store: &dyn BlobStore,
    rec: &BundleRecord,
    key_path: &Path,
    model: &Path,
    meta: &std::fs::Metadata,
) -> anyhow::Result<(BlobAddress, DataKey)> {
    if rec.model_path != model || rec.model_len != meta.len() || rec.model_mtime_ns != mtime_ns(meta) {
        bail!("the model file changed");
    }
    if let Some(entry) = veil_models::CATALOG.iter().find(|e| e.size == meta.len())
        && model.file_name().and_then(|n| n.to_str()) == Some(&entry.file_name())
        && entry.sha256 != rec.plaintext_sha256
    {
        bail!("it holds another version of the model");
    }
    let address = BlobAddress::from_str(&rec.bundle)?;
    if !store.exists(&address)? {
        bail!("{address} is not in the blob store");
    }
    let len = store.size(&address)?;
    if len != rec.bundle_len {
        bail!("{address} has {len} bytes, {} expected", rec.bundle_len);
    }
    let header_ok = {
        let mut reader = store.get(&address)?;
        veil_bundle::BundleHeader::read_from(&mut reader)
            .map(|(h, _)| h.plaintext_len == meta.len())
            .unwrap_or(false)
    };
    if !header_ok {
        bail!("{address} does not hold this model");
    }
    let key = DataKey::read_file(key_path)?;
    Ok((address, key))
}

fn seal_into(
    store: &dyn BlobStore,
    dir: &Path,
    record_path: &Path,
    key_path: &Path,
    model: &Path,
    meta: &std::fs::Metadata,
) -> anyhow::Result<Prepared> {
    std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let len = meta.len();
    let file = File::open(model).with_context(|| format!("cannot open {}", model.display()))?;
    let input = BufReader::with_capacity(1 << 20, file);
    let key = DataKey::generate()?;
    let bar = ProgressBar::with_draw_target(Some(len), ProgressDrawTarget::stderr());
    if let Ok(style) =
        ProgressStyle::with_template("sealing {bar:40} {bytes}/{total_bytes} {bytes_per_sec} eta {eta}")
    {
        bar.set_style(style);
    }

    // Seal on one thread into a pipe; the blob store hashes and stores what comes out of it on this one,
    // so the bundle is written once, straight into the store. If sealing fails, the reader fails too and
    // nothing is stored.
    let (rx, tx) = std::io::pipe().context("cannot create a pipe")?;
    let (done_tx, done_rx) = std::sync::mpsc::channel::<bool>();
    let (sealed, stored) = std::thread::scope(|scope| {
        let key = &key;
        let bar = &bar;
        let sealer = scope.spawn(move || {
            let mut out = BufWriter::with_capacity(1 << 20, tx);
            let r = veil_bundle::seal(input, len, key, &mut out, &mut |done| bar.set_position(done))
                .map_err(anyhow::Error::from)
                .and_then(|s| out.flush().map(|()| s).map_err(anyhow::Error::from));
            let _ = done_tx.send(r.is_ok());
            drop(out);
            r
        });
        let mut reader = SealedPipe {
            inner: rx,
            done: done_rx,
            sealed: None,
        };
        let stored = store.put(&mut reader);
        drop(reader); // a store that failed early ends the sealer with a broken pipe
        let sealed = sealer
            .join()
            .map_err(|_| anyhow::anyhow!("the sealing thread panicked"));
        (sealed, stored)
    });
    bar.finish_and_clear();
    let sealed = sealed?.with_context(|| format!("cannot seal {}", model.display()))?;
    let stored = stored.context("cannot store the bundle")?;
    if stored != sealed.address {
        bail!(
            "the blob store computed {stored} for the bundle, not {}",
            sealed.address
        );
    }

    // The key first (readable only by this user), then the record that points at it.
    write_atomically(key_path, format!("{}\n", &*key.to_hex()).as_bytes())?;
    let record = BundleRecord {
        model_path: model.to_owned(),
        model_len: len,
        model_mtime_ns: mtime_ns(meta),
        plaintext_sha256: hex::encode(sealed.plaintext_sha256),
        bundle: sealed.address.to_string(),
        bundle_len: sealed.bundle_len,
    };
    write_atomically(record_path, &serde_json::to_vec_pretty(&record)?)?;
    Ok(Prepared {
        address: sealed.address,
        key,
        reused: false,
    })
}

/// The read end of the sealing pipe: at its end, fails unless the sealer reported success.
struct SealedPipe {
    inner: std::io::PipeReader,
    done: std::sync::mpsc::Receiver<bool>,
    sealed: Option<bool>,
}

impl Read for SealedPipe {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        if n == 0 && !buf.is_empty() {
            let done = &self.done;
            if !*self.sealed.get_or_insert_with(|| done.recv().unwrap_or(false)) {
                return Err(std::io::Error::other("sealing failed"));
            }
        }
        Ok(n)
    }
}

/// Writes `path` through a temporary file (mode 0600) renamed into place.
fn write_atomically(path: &Path, bytes: &[u8]) -> anyhow::Result<()> {
    let dir = path.parent().unwrap_or(Path::new("."));
    let mut tmp = tempfile::Builder::new()
        .prefix(".veil-devnet-")
        .tempfile_in(dir)
        .with_context(|| format!("cannot create a file in {}", dir.display()))?;
    tmp.write_all(bytes)
        .and_then(|()| tmp.as_file().sync_all())
        .with_context(|| format!("cannot write {}", path.display()))?;
    tmp.persist(path)
        .map_err(|e| e.error)
        .with_context(|| format!("cannot write {}", path.display()))?;
    Ok(())
}

/// How many validators the devnet runs (3f+1 with f = 1).
pub const DEVNET_VALIDATORS: usize = 4;
/// How long the devnet waits for the validators to finalize their first block.
const LEDGER_READY_TIMEOUT: Duration = Duration::from_secs(300);

/// The devnet's confidential ledger: [`DEVNET_VALIDATORS`] `veil node` processes (this same binary) on
/// 127.0.0.1 ports the OS chose, written afresh by `veil node init` into `STATE_DIR/ledger` at each start
/// (a genesis funding a demo wallet; validator 0 creates the network seed, the others obtain it from it
/// by attestation). Their output and process ids go to `STATE_DIR/ledger/logs/`. [`LocalLedger::stop`]
/// (or dropping it) kills and reaps every process.
#[derive(Debug)]
pub struct LocalLedger {
    /// The network's directory (genesis, demo wallet, one directory per validator).
    pub dir: PathBuf,
    /// The validators' JSON-RPC addresses.
    pub rpc: Vec<SocketAddr>,
    /// The funded demo wallet's key file.
    pub demo_wallet: PathBuf,
    /// The demo wallet's address.
    pub demo_address: String,
    /// The demo wallet's genesis balance.
    pub demo_balance: u64,
    /// The binary the validators run.
    pub exe: PathBuf,
    children: Vec<std::process::Child>,
}

impl LocalLedger {
    /// Writes a fresh network into `state_dir/ledger` and starts its validators; returns at once
    /// (they find each other and finalize in the background: see [`LocalLedger::wait_finalized`]).
    pub fn start(state_dir: &Path) -> anyhow::Result<Self> {
        let exe = std::env::current_exe().context("cannot find this executable to run the validators")?;
        let dir = state_dir.join("ledger");
        if dir.exists() {
            // Each devnet starts its chain from genesis: the ports and the demo wallet change anyway.
            std::fs::remove_dir_all(&dir)
                .with_context(|| format!("cannot remove the previous devnet ledger {}", dir.display()))?;
        }
        let init = std::process::Command::new(&exe)
            .args(["node", "init", "--validators"])
            .arg(DEVNET_VALIDATORS.to_string())
            .arg("--dir")
            .arg(&dir)
            .stdin(std::process::Stdio::null())
            .output()
            .context("cannot run `veil node init`")?;
        if !init.status.success() {
            bail!(
                "`veil node init` failed: {}",
                String::from_utf8_lossy(&init.stderr).trim()
            );
        }
        let demo_wallet = dir.join("demo-wallet.key");
        let demo_address = veil_client::ledger::Wallet::load(&demo_wallet)?
            .address()
            .to_string();
        let genesis = veil_ledger::Genesis::from_json(
            &std::fs::read_to_string(dir.join("genesis.json")).context("cannot read the devnet genesis")?,
        )?;
        let demo_balance = genesis.allocations.iter().map(|a| a.amount).sum();

        // Ports the OS reports free, all held at once so that they differ, then released for the nodes.
        let listeners = (0..2 * DEVNET_VALIDATORS)
            .map(|_| std::net::TcpListener::bind(("127.0.0.1", 0)))
            .collect::<std::io::Result<Vec<_>>>()
            .context("cannot find free ports on 127.0.0.1")?;
        let addrs = listeners
            .iter()
            .map(std::net::TcpListener::local_addr)
            .collect::<std::io::Result<Vec<_>>>()?;
        drop(listeners);
        let (rpc, p2p) = addrs.split_at(DEVNET_VALIDATORS);
        let configs: Vec<PathBuf> = (0..DEVNET_VALIDATORS)
            .map(|i| dir.join(format!("validator-{i}")).join("config.json"))
            .collect();
        for (i, path) in configs.iter().enumerate() {
            let mut config = veil_node::run::NodeConfig::load(path)?;
            for (j, peer) in config.validators.iter_mut().enumerate() {
                peer.rpc = rpc[j];
                peer.p2p = p2p[j];
            }
            config.rpc_listen = rpc[i];
            config.p2p_listen = p2p[i];
            if let veil_node::run::SeedSource::Fetch { from } = &mut config.seed {
                *from = rpc[0];
            }
            std::fs::write(path, serde_json::to_vec_pretty(&config)?)
                .with_context(|| format!("cannot write {}", path.display()))?;
        }

        let logs = dir.join("logs");
        std::fs::create_dir_all(&logs).with_context(|| format!("cannot create {}", logs.display()))?;
        let mut ledger = Self {
            dir,
            rpc: rpc.to_vec(),
            demo_wallet,
            demo_address,
            demo_balance,
            exe,
            children: Vec::new(),
        };
        for (i, config) in configs.iter().enumerate() {
            let log_path = ledger.log_path(i);
            let log =
                File::create(&log_path).with_context(|| format!("cannot create {}", log_path.display()))?;
            let child = std::process::Command::new(&ledger.exe)
                .args(["--log", "warn", "node", "--config"])
                .arg(config)
                .stdin(std::process::Stdio::null())
                .stdout(log.try_clone()?)
                .stderr(log)
                .spawn()
                .with_context(|| format!("cannot start validator {i}"))?;
            let pid = child.id();
            ledger.children.push(child);
            // For the user, should this process be killed before it can stop them.
            let pid_path = logs.join(format!("validator-{i}.pid"));
            std::fs::write(&pid_path, format!("{pid}\n"))
                .with_context(|| format!("cannot write {}", pid_path.display()))?;
        }
        Ok(ledger)
    }

    /// Validator `i`'s log file (its stdout and stderr).
    pub fn log_path(&self, i: usize) -> PathBuf {
        self.dir.join("logs").join(format!("validator-{i}.log"))
    }

    /// Polls every validator's `veil_status` until each has executed a finalized block; shows progress on
    /// stderr. Fails if a validator exits or `limit` passes, quoting the validators' logs.
    pub async fn wait_finalized(&mut self, limit: Duration) -> anyhow::Result<u64> {
        let clients = self
            .rpc
            .iter()
            .map(|a| veil_client::ledger::LedgerClient::with_timeout(&a.to_string(), Duration::from_secs(5)))
            .collect::<Result<Vec<_>, _>>()?;
        let started = Instant::now();
        let mut last_report = Instant::now();
        let mut pause = Duration::from_millis(100);
        eprintln!(
            "ledger: {DEVNET_VALIDATORS} validators starting (SIMULATED TEE; logs in {})…",
            self.dir.join("logs").display()
        );
        loop {
            for (i, child) in self.children.iter_mut().enumerate() {
                if let Some(status) = child.try_wait()? {
                    bail!(
                        "validator {i} exited ({status}) before the chain finalized a block; its log {}:\n{}",
                        self.log_path(i).display(),
                        tail(&self.log_path(i), 20)
                    );
                }
            }
            let mut heights = Vec::with_capacity(clients.len());
            for c in &clients {
                heights.push(c.status().await.ok().map(|s| s.height));
            }
            if heights.iter().all(|h| h.is_some_and(|h| h >= 1)) {
                let height = heights.iter().flatten().copied().min().unwrap_or(1);
                eprintln!(
                    "ledger: finalizing (height {height}) after {}",
                    secs(started.elapsed())
                );
                return Ok(height);
            }
            if started.elapsed() > limit {
                bail!(
                    "the validators did not finalize a block within {}; validator 0's log {}:\n{}",
                    secs(limit),
                    self.log_path(0).display(),
                    tail(&self.log_path(0), 20)
                );
            }
            if last_report.elapsed() >= Duration::from_secs(5) {
                last_report = Instant::now();
                let answering = heights.iter().filter(|h| h.is_some()).count();
                eprintln!(
                    "ledger: waiting for the first finalized block… {} ({answering} of {DEVNET_VALIDATORS} \
                     validators answering)",
                    secs(started.elapsed())
                );
            }
            tokio::time::sleep(pause).await;
            pause = (pause * 2).min(Duration::from_secs(1));
        }
    }

    /// Kills and reaps every validator (their stores are crash-safe, and the next devnet starts a fresh
    /// chain anyway).
    pub fn stop(mut self) {
        self.kill_all();
    }

    fn kill_all(&mut self) {
        for child in &mut self.children {
            let _ = child.kill();
            let _ = child.wait();
        }
        self.children.clear();
    }

    /// What the user pastes to use the ledger.
    fn print_ready(&self, out: &mut impl Write, height: u64) -> std::io::Result<()> {
        let exe = self.exe.display();
        let rpc = self.rpc.first().map(ToString::to_string).unwrap_or_default();
        let wallet = self.demo_wallet.display();
        writeln!(
            out,
            "Confidential ledger: {} validators on a SIMULATED TEE (development only), finalizing (height {height})",
            self.rpc.len()
        )?;
        for (i, a) in self.rpc.iter().enumerate() {
            writeln!(out, "Validator {i} JSON-RPC: http://{a}/")?;
        }
        writeln!(
            out,
            "Demo wallet: {} (funded with {}), key file {wallet}",
            self.demo_address,
            veil_client::ledger::format_amount(self.demo_balance)
        )?;
        writeln!(out, "Try it:")?;
        writeln!(out, "  {exe} wallet --wallet {wallet} --rpc {rpc} balance")?;
        writeln!(out, "  {exe} wallet --wallet ./my-wallet.key new")?;
        writeln!(
            out,
            "  {exe} wallet --wallet {wallet} --rpc {rpc} transfer $({exe} wallet --wallet ./my-wallet.key address) 1000"
        )?;
        Ok(())
    }
}

impl Drop for LocalLedger {
    fn drop(&mut self) {
        self.kill_all();
    }
}

/// The last `lines` lines of a log file.
fn tail(path: &Path, lines: usize) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

/// What the user pastes: the base URL, a curl line, the Python client's environment.
fn print_ready(devnet: &Devnet) -> std::io::Result<()> {
    let base = devnet.base_url();
    let model = &devnet.model;
    let mut out = std::io::stdout().lock();
    writeln!(out)?;
    writeln!(
        out,
        "Veil devnet ready: model {model}, worker on a SIMULATED TEE (development only: no hardware protection)"
    )?;
    writeln!(out, "OpenAI base URL: {base}")?;
    writeln!(out, "Try it:")?;
    writeln!(
        out,
        "  curl {base}/chat/completions -H 'content-type: application/json' -d '{{\"model\":\"{model}\",\
         \"messages\":[{{\"role\":\"user\",\"content\":\"What is the capital of France?\"}}]}}'"
    )?;
    writeln!(out, "Python (pip install openai):")?;
    writeln!(
        out,
        "  OPENAI_BASE_URL={base} OPENAI_API_KEY=unused python3 -c 'from openai import OpenAI; \
         print(OpenAI().chat.completions.create(model=\"{model}\", messages=[{{\"role\":\"user\",\
         \"content\":\"What is the capital of France?\"}}]).choices[0].message.content)'"
    )?;
    out.flush()
}

/// Resolves when SIGINT (Ctrl-C) or SIGTERM arrives; registered before anything starts (also `veil node`).
pub(crate) struct Signals {
    int: tokio::signal::unix::Signal,
    term: tokio::signal::unix::Signal,
}

impl Signals {
    pub(crate) fn register() -> anyhow::Result<Self> {
        use tokio::signal::unix::{SignalKind, signal};
        Ok(Self {
            int: signal(SignalKind::interrupt()).context("cannot handle SIGINT")?,
            term: signal(SignalKind::terminate()).context("cannot handle SIGTERM")?,
        })
    }

    pub(crate) async fn recv(&mut self) -> &'static str {
        tokio::select! {
            _ = self.int.recv() => "SIGINT",
            _ = self.term.recv() => "SIGTERM",
        }
    }
}

pub fn run(args: DevnetArgs) -> anyhow::Result<ExitCode> {
    let config = DevnetConfig::from_args(&args)?;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    let result = rt.block_on(async move {
        let mut signals = Signals::register()?;
        let started = Instant::now();
        // The validators start first, as processes of their own: they find each other and finalize
        // while the model is fetched and sealed here, so the ledger never delays the gateway.
        let mut ledger = LocalLedger::start(&config.state_dir)?;
        let devnet = tokio::select! {
            d = Devnet::start(config) => d?,
            s = signals.recv() => {
                ledger.stop();
                eprintln!("veil devnet: {s} while starting; stopped");
                return Ok(ExitCode::SUCCESS);
            }
        };
        eprintln!("veil devnet: gateway up in {}", secs(started.elapsed()));
        print_ready(&devnet)?;
        let waited = tokio::select! {
            h = ledger.wait_finalized(LEDGER_READY_TIMEOUT) => Ok(h),
            s = signals.recv() => Err(s),
        };
        let height = match waited {
            Ok(Ok(h)) => h,
            Ok(Err(e)) => {
                ledger.stop();
                devnet.shutdown().await?;
                return Err(e);
            }
            Err(s) => {
                eprintln!("veil devnet: {s} while the ledger was starting: stopping");
                ledger.stop();
                devnet.shutdown().await?;
                eprintln!("veil devnet: stopped");
                return Ok(ExitCode::SUCCESS);
            }
        };
        eprintln!("veil devnet: up in {}", secs(started.elapsed()));
        {
            let mut out = std::io::stdout().lock();
            writeln!(out)?;
            ledger.print_ready(&mut out, height)?;
            writeln!(out, "Ctrl-C stops the devnet.")?;
            out.flush()?;
        }
        let s = signals.recv().await;
        eprintln!("veil devnet: {s}: stopping");
        let stopped = devnet.shutdown().await;
        ledger.stop();
        stopped?;
        eprintln!("veil devnet: stopped");
        Ok::<_, anyhow::Error>(ExitCode::SUCCESS)
    });
    // Requests still running on blocking threads get a moment, not forever.
    rt.shutdown_timeout(Duration::from_secs(5));
    result
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn catalogue_names_and_file_stems() {
        assert_eq!(model_name("SmolLM2", Path::new("/x/smollm2.gguf")), "smollm2");
        assert_eq!(model_name("/m/tiny.gguf", Path::new("/m/tiny.gguf")), "tiny");
    }

    #[test]
    fn the_policy_accepts_only_this_simulated_worker() {
        let mut registers = veil_attest::Measurements::new();
        registers.insert("sim_measurement".to_owned(), veil_attest::HexBytes(vec![7; 32]));
        let c = devnet_client_config(registers, [9; 32]);
        assert!(c.policy.allow_simulated);
        assert_eq!(
            c.policy.allowed_sim_keys,
            Some(vec![veil_attest::HexBytes(vec![9; 32])])
        );
        let sets = c.policy.allowed_measurements.clone().unwrap_or_default();
        assert_eq!(sets.len(), 1);
        assert_eq!(sets[0]["sim_measurement"], veil_attest::HexBytes(vec![7; 32]));
        c.policy.validate().unwrap_or_else(|e| panic!("{e}"));
    }
}
