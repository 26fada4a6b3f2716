//! `veil node --config FILE`: run one validator (consensus, p2p, encrypted ledger, JSON-RPC);
//! `veil node init`: write the keys, genesis and configurations of a local network.
//!
//! On its first start a validator obtains the network seed as its configuration says: validator 0
//! creates it inside its enclave; every other one asks a running validator for it, presenting
//! evidence of its enclave (`veil_seedChallenge` + `veil_requestSeed`). The seed is then sealed to
//! the data directory under the platform's sealing key, and later starts read it from there.

use std::io::Write as _;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use clap::{Args, Subcommand};
use veil_client::ledger::{LedgerClient, LedgerClientError, Wallet};
use veil_crypto::kdf::Seed;
use veil_crypto::sign::SigningKey;
use veil_ledger::{Allocation, FeeSchedule, Genesis, ValidatorAccount};
use veil_node::run::{NodeConfig, Peer, SeedSource};
use veil_node::seedshare::SeedRequester;
use veil_platform::{Platform, PlatformKind};

/// The default first port of `veil node init` (RPC ports count up from it; p2p from it + 100).
pub const DEFAULT_BASE_PORT: u16 = 27000;
/// The file, in a validator's data directory, that says it has a sealed network seed.
pub const INITIALIZED_MARKER: &str = "node-initialized";

/// `veil node`.
#[derive(Debug, Args)]
#[command(args_conflicts_with_subcommands = true)]
pub struct NodeArgs {
    #[command(subcommand)]
    pub command: Option<NodeCommand>,
    /// The validator's configuration (JSON; see docs/node.md). Written by `veil node init`.
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// The TEE platform this validator runs on: sim (development only) or tdx.
    #[arg(long, default_value = "sim", value_name = "PLATFORM")]
    pub platform: PlatformKind,
    /// On first start, how long to keep asking an unreachable seed source, in seconds.
    #[arg(long, default_value_t = 300, value_name = "SECONDS")]
    pub seed_timeout: u64,
}

#[derive(Debug, Subcommand)]
pub enum NodeCommand {
    /// Write a local network: validator keys, a genesis funding a demo wallet, one config per validator.
    Init(InitArgs),
}

/// `veil node init`.
#[derive(Debug, Args)]
pub struct InitArgs {
    /// The directory to write into (created; must not hold a network already).
    #[arg(long, value_name = "DIR")]
    pub dir: PathBuf,
    /// How many validators (at least 4: BFT needs 3f+1 with f >= 1).
    #[arg(long, default_value_t = 4)]
    pub validators: usize,
    /// Validator i serves JSON-RPC on 127.0.0.1:(P+i) and p2p on 127.0.0.1:(P+100+i).
    #[arg(long, default_value_t = DEFAULT_BASE_PORT, value_name = "P")]
    pub base_port: u16,
    /// The network's name.
    #[arg(long, default_value = "veil-devnet")]
    pub chain_id: String,
    /// The demo wallet's balance at genesis, in the smallest unit.
    #[arg(long, default_value_t = 1_000_000_000)]
    pub demo_balance: u64,
    /// Blocks per key epoch (the transaction and state keys ratchet forward at each epoch).
    #[arg(long, default_value_t = 10_000)]
    pub epoch_length: u64,
}

/// Runs `veil node …`.
pub fn run(args: NodeArgs) -> anyhow::Result<ExitCode> {
    match args.command {
        Some(NodeCommand::Init(init_args)) => init(&init_args),
        None => {
            let Some(config) = args.config.clone() else {
                bail!(
                    "give the validator's configuration with --config FILE (write one with `veil node init --dir DIR`)"
                );
            };
            run_node(&config, args.platform, Duration::from_secs(args.seed_timeout))
        }
    }
}

fn out(line: &str) -> anyhow::Result<()> {
    writeln!(std::io::stdout().lock(), "{line}")?;
    Ok(())
}

fn open_platform(
    kind: PlatformKind,
    config: &NodeConfig,
    config_bytes: &[u8],
) -> anyhow::Result<Arc<dyn Platform>> {
    let platform_config = match kind {
        PlatformKind::Sim => {
            let mut sim = veil_platform::sim::SimConfig::new(&config.data_dir);
            sim.config = config_bytes.to_vec();
            veil_platform::PlatformConfig::Sim(sim)
        }
        PlatformKind::Tdx => veil_platform::PlatformConfig::Tdx(veil_platform::tdx::TdxConfig::default()),
    };
    let platform =
        veil_platform::open(platform_config).with_context(|| format!("opening the {kind} platform"))?;
    Ok(Arc::from(platform))
}

fn run_node(config_path: &Path, kind: PlatformKind, seed_timeout: Duration) -> anyhow::Result<ExitCode> {
    let config = NodeConfig::load(config_path)?;
    let config_bytes =
        std::fs::read(config_path).with_context(|| format!("reading {}", config_path.display()))?;
    std::fs::create_dir_all(&config.data_dir)
        .with_context(|| format!("creating the data directory {}", config.data_dir.display()))?;
    let platform = open_platform(kind, &config, &config_bytes)?;
    if kind == PlatformKind::Sim {
        eprintln!(
            "veil node: SIMULATED TEE — this validator has no hardware protection; its operator can read the \
             ledger's keys. Development only."
        );
    }

    // Check the RPC port is free now, so a busy port is reported before anything starts. It is
    // released again until the validator is running, so that clients meanwhile get "connection
    // refused" (and retry) rather than a connection nobody answers.
    drop(std::net::TcpListener::bind(config.rpc_listen).with_context(|| {
        format!(
            "cannot listen for JSON-RPC on {}: free the port or change rpc_listen",
            config.rpc_listen
        )
    })?);

    let marker = config.data_dir.join(INITIALIZED_MARKER);
    let seed = if marker.exists() {
        None
    } else {
        Some(match &config.seed {
            SeedSource::Create => {
                eprintln!("veil node: first start: creating the network seed inside this enclave");
                Seed::generate().context("generating the network seed")?
            }
            SeedSource::Fetch { from } => {
                let rt = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .context("cannot start the async runtime")?;
                rt.block_on(fetch_seed(&*platform, *from, seed_timeout))?
            }
        })
    };

    let sealer = Arc::new(veil_node::store::PlatformSealer(platform.clone()));
    let rpc_failure: Arc<Mutex<Option<String>>> = Arc::new(Mutex::new(None));
    let failure = rpc_failure.clone();
    let rpc_addr = config.rpc_listen;
    let p2p_addr = config.p2p_listen;
    let data_dir = config.data_dir.clone();
    veil_node::run::run(config, platform, sealer, seed, move |ctx, addr| async move {
        // The validator started: its store holds the sealed seed, so later starts need none.
        if let Err(e) = std::fs::write(
            &marker,
            "this validator's store holds its sealed network seed; it will not ask for one again\n",
        ) {
            tracing::warn!(error = %e, path = %marker.display(), "could not write the initialised marker");
        }
        let mut signals = match crate::devnet::Signals::register() {
            Ok(s) => s,
            Err(e) => {
                record(&failure, format!("{e:#}"));
                return;
            }
        };
        eprintln!(
            "veil node: validator running; JSON-RPC and /metrics on http://{rpc_addr}/, p2p on {p2p_addr}, data in {}",
            data_dir.display()
        );
        tokio::select! {
            r = veil_node::rpc::serve(ctx, addr) => {
                if let Err(e) = r {
                    record(&failure, format!("JSON-RPC server: {e}"));
                }
            }
            s = signals.recv() => eprintln!("veil node: {s}; stopping"),
        }
    })?;
    if let Some(e) = rpc_failure.lock().unwrap_or_else(|p| p.into_inner()).take() {
        bail!("{e}");
    }
    Ok(ExitCode::SUCCESS)
}

fn record(slot: &Mutex<Option<String>>, message: String) {
    *slot.lock().unwrap_or_else(|p| p.into_inner()) = Some(message);
}

/// Obtains the network seed from the validator at `from`, presenting this enclave's evidence;
/// retries while `from` is not reachable, for at most `timeout`.
async fn fetch_seed(platform: &dyn Platform, from: SocketAddr, timeout: Duration) -> anyhow::Result<Seed> {
    let client = LedgerClient::with_timeout(&from.to_string(), Duration::from_secs(30))?;
    let started = Instant::now();
    let mut attempt = 0u32;
    loop {
        attempt += 1;
        let nonce = match client.seed_challenge().await {
            Ok(nonce) => nonce,
            Err(e) if e.is_unreachable() && started.elapsed() < timeout => {
                eprintln!(
                    "veil node: first start: waiting for the seed source {from} to come up (attempt {attempt}, {} s \
                     of {} s)",
                    started.elapsed().as_secs(),
                    timeout.as_secs()
                );
                tokio::time::sleep(Duration::from_secs(1)).await;
                continue;
            }
            Err(e) => return Err(seed_error(from, e)),
        };
        let (requester, request) = SeedRequester::new(platform, &nonce)?;
        let sealed = match client.request_seed(&request).await {
            Ok(sealed) => sealed,
            Err(e) if e.is_unreachable() && started.elapsed() < timeout => {
                tokio::time::sleep(Duration::from_secs(1)).await;
                continue;
            }
            Err(e) => return Err(seed_error(from, e)),
        };
        let (seed, epoch) = requester.accept(&sealed)?;
        if epoch != 0 {
            bail!(
                "the validator at {from} granted the seed of epoch {epoch}: the network is past its first key \
                 epoch, and a validator joining later needs state sync, which this version does not have; start \
                 every validator of a new network from genesis together"
            );
        }
        eprintln!(
            "veil node: first start: obtained the network seed from {from} (attested; sealing it to disk)"
        );
        return Ok(seed);
    }
}

fn seed_error(from: SocketAddr, e: LedgerClientError) -> anyhow::Error {
    if e.is_unreachable() {
        anyhow::anyhow!(
            "gave up obtaining the network seed: {e}; start the validator at {from} first, or raise --seed-timeout"
        )
    } else {
        anyhow::anyhow!("the validator at {from} refused to share the network seed: {e}")
    }
}

/// Writes `text` to a new file readable only by its owner.
fn write_secret(path: &Path, text: &str) -> anyhow::Result<()> {
    use std::os::unix::fs::OpenOptionsExt as _;
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .with_context(|| format!("creating {}", path.display()))?;
    file.write_all(text.as_bytes())
        .and_then(|()| file.sync_all())
        .with_context(|| format!("writing {}", path.display()))
}

/// `veil node init`.
pub fn init(args: &InitArgs) -> anyhow::Result<ExitCode> {
    if args.validators < 4 {
        bail!(
            "--validators {}: a BFT network needs at least 4 validators (3f+1 with f >= 1)",
            args.validators
        );
    }
    let last = u32::from(args.base_port) + 100 + args.validators as u32;
    if args.base_port == 0 || last > u32::from(u16::MAX) {
        bail!(
            "--base-port {}: ports P..P+{} and P+100.. must be valid TCP ports",
            args.base_port,
            args.validators
        );
    }
    std::fs::create_dir_all(&args.dir).with_context(|| format!("creating {}", args.dir.display()))?;
    let dir = args
        .dir
        .canonicalize()
        .with_context(|| format!("resolving {}", args.dir.display()))?;
    let genesis_path = dir.join("genesis.json");
    if genesis_path.exists() {
        bail!(
            "{} already holds a network ({} exists); choose an empty directory",
            dir.display(),
            genesis_path.display()
        );
    }

    let keys: Vec<SigningKey> = (0..args.validators)
        .map(|_| SigningKey::generate())
        .collect::<Result<_, _>>()
        .context("generating keys")?;
    let port = |offset: usize| args.base_port + offset as u16;
    let loopback = |p: u16| SocketAddr::from(([127, 0, 0, 1], p));
    let peers: Vec<Peer> = keys
        .iter()
        .enumerate()
        .map(|(i, k)| Peer {
            public_key: hex::encode(k.verifying_key().to_bytes()),
            p2p: loopback(port(100 + i)),
            rpc: loopback(port(i)),
        })
        .collect();

    let demo = Wallet::generate()?;
    let genesis = Genesis {
        chain_id: args.chain_id.clone(),
        epoch_length: args.epoch_length,
        allocations: vec![Allocation {
            address: demo.address(),
            amount: args.demo_balance,
        }],
        validators: keys
            .iter()
            .map(|k| ValidatorAccount {
                address: k.verifying_key().address(),
            })
            .collect(),
        fees: FeeSchedule::default(),
    };
    genesis.validate()?;
    let demo_path = dir.join("demo-wallet.key");
    demo.save(&demo_path)?;
    std::fs::write(&genesis_path, genesis.to_json())
        .with_context(|| format!("writing {}", genesis_path.display()))?;

    let mut configs = Vec::new();
    for (i, key) in keys.iter().enumerate() {
        let vdir = dir.join(format!("validator-{i}"));
        std::fs::create_dir_all(&vdir).with_context(|| format!("creating {}", vdir.display()))?;
        let key_file = vdir.join("key");
        let mut text = zeroize::Zeroizing::new(hex::encode(&key.to_bytes()[..]));
        text.push('\n');
        write_secret(&key_file, &text)?;
        let config = NodeConfig {
            data_dir: vdir.join("data"),
            genesis: genesis_path.clone(),
            key_file,
            validators: peers.clone(),
            p2p_listen: peers[i].p2p,
            rpc_listen: peers[i].rpc,
            seed: if i == 0 {
                SeedSource::Create
            } else {
                SeedSource::Fetch { from: peers[0].rpc }
            },
            allow_simulated_tee: true,
            mempool_capacity: 200_000,
            block_max_txs: 4_096,
            leader_timeout_ms: 1_000,
        };
        let path = vdir.join("config.json");
        std::fs::write(&path, serde_json::to_string_pretty(&config)?)
            .with_context(|| format!("writing {}", path.display()))?;
        configs.push(path);
    }

    out(&format!(
        "wrote a {}-validator network \"{}\" in {}",
        args.validators,
        args.chain_id,
        dir.display()
    ))?;
    out(&format!("  genesis:     {}", genesis_path.display()))?;
    out(&format!(
        "  demo wallet: {} ({}, funded with {})",
        demo_path.display(),
        demo.address(),
        veil_client::ledger::format_amount(args.demo_balance)
    ))?;
    for (i, path) in configs.iter().enumerate() {
        out(&format!(
            "  validator {i}: {}  (JSON-RPC http://{}/)",
            path.display(),
            peers[i].rpc
        ))?;
    }
    out("start each (validator 0 first creates the network seed; the others obtain it from it):")?;
    for path in &configs {
        out(&format!("  veil node --config {}", path.display()))?;
    }
    Ok(ExitCode::SUCCESS)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use clap::Parser as _;

    use super::*;
    use crate::{Cli, Command};

    fn parse(args: &[&str]) -> Result<Cli, clap::Error> {
        Cli::try_parse_from(std::iter::once("veil").chain(args.iter().copied()))
    }

    #[test]
    fn node_arguments() {
        let Command::Node(args) = parse(&["node", "--config", "/tmp/v.json"]).unwrap().command else {
            panic!()
        };
        assert_eq!(args.config.as_deref(), Some(Path::new("/tmp/v.json")));
        assert_eq!(args.platform, PlatformKind::Sim);
        assert!(args.command.is_none());
        let Command::Node(args) = parse(&[
            "node",
            "init",
            "--dir",
            "/tmp/n",
            "--validators",
            "5",
            "--base-port",
            "4000",
        ])
        .unwrap()
        .command
        else {
            panic!()
        };
        let Some(NodeCommand::Init(init)) = args.command else {
            panic!()
        };
        assert_eq!(
            (init.validators, init.base_port, init.dir),
            (5, 4000, PathBuf::from("/tmp/n"))
        );
        assert!(parse(&["node", "--platform", "sgx", "--config", "x"]).is_err());
        assert!(parse(&["node", "init"]).is_err(), "--dir is required");
    }

    #[test]
    fn init_writes_a_loadable_network() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("net");
        let args = InitArgs {
            dir: dir.clone(),
            validators: 4,
            base_port: 41000,
            chain_id: "veil-test".into(),
            demo_balance: 5_000,
            epoch_length: 100,
        };
        init(&args).unwrap();
        let genesis =
            Genesis::from_json(&std::fs::read_to_string(dir.join("genesis.json")).unwrap()).unwrap();
        let demo = Wallet::load(&dir.join("demo-wallet.key")).unwrap();
        assert_eq!(genesis.allocations[0].address, demo.address());
        assert_eq!(genesis.allocations[0].amount, 5_000);
        for i in 0..4 {
            let config = NodeConfig::load(&dir.join(format!("validator-{i}/config.json"))).unwrap();
            assert_eq!(config.rpc_listen.port(), 41000 + i as u16);
            assert_eq!(config.p2p_listen.port(), 41100 + i as u16);
            let key = config.signer().unwrap();
            let keys = config.validator_keys().unwrap();
            assert_eq!(keys[i], commonware_cryptography::Signer::public_key(&key));
            // The genesis fee accounts are the validators' keys' addresses, in order.
            let vk = veil_crypto::sign::VerifyingKey::from_slice(keys[i].as_ref()).unwrap();
            assert_eq!(genesis.validators[i].address, vk.address());
            assert_eq!(config.seed == SeedSource::Create, i == 0);
            use std::os::unix::fs::PermissionsExt as _;
            let mode = std::fs::metadata(&config.key_file).unwrap().permissions().mode();
            assert_eq!(mode & 0o077, 0);
        }
        // A second init into the same directory refuses.
        assert!(
            init(&args)
                .unwrap_err()
                .to_string()
                .contains("already holds a network")
        );
        let few = InitArgs {
            validators: 3,
            dir: tmp.path().join("other"),
            ..args
        };
        assert!(init(&few).unwrap_err().to_string().contains("at least 4"));
    }
}
