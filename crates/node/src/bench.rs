//! `veil bench ledger`: 4 validators on this machine, connected by the real authenticated p2p over
//! loopback TCP, and a load generator submitting signed, encrypted transfers to them. Measures
//! finalized transfers per second and finality latency (submission to execution of the finalized
//! block that carries it, on the validator it was submitted to).
//!
//! The validators share one process and one Commonware tokio runtime (so the machine's cores are
//! shared the way 4 processes would share them, without 4 runtimes' worth of threads). Transfers
//! are built and sealed before the clock starts: a client's cost is not the ledger's.

use std::collections::HashMap;
use std::net::{SocketAddr, TcpListener};
use std::sync::{Arc, mpsc as std_mpsc};
use std::time::{Duration, Instant};

use commonware_cryptography::{Signer as _, ed25519};
use commonware_p2p::Address;
use commonware_runtime::{Runner as _, Supervisor as _, tokio as cw_tokio};
use veil_crypto::kdf::Seed;
use veil_crypto::sign::SigningKey;
use veil_ledger::{
    Allocation, EpochKeys, FeeSchedule, Genesis, TxBody, TxKind, ValidatorAccount, seal_transaction,
};

use crate::app::BlockLimits;
use crate::error::{NodeError, Result};
use crate::store::Sealer;
use crate::validator::{self, Timing, ValidatorConfig};

/// Benchmark settings.
#[derive(Debug, Clone, serde::Serialize)]
pub struct LedgerBenchConfig {
    /// Transfers to submit.
    pub transfers: usize,
    /// Sending wallets (each sends `transfers / wallets` with consecutive nonces).
    pub wallets: usize,
    /// Target submission rate (transfers/s); the generator never lets more than `max_in_flight`
    /// wait for finality.
    pub rate: u64,
    /// Most submitted-but-not-finalized transfers at once.
    pub max_in_flight: usize,
    /// Most transfers per block.
    pub block_max_txs: usize,
}

impl Default for LedgerBenchConfig {
    fn default() -> Self {
        Self {
            transfers: 20_000,
            wallets: 200,
            rate: 2_500,
            max_in_flight: 8_000,
            block_max_txs: 4_096,
        }
    }
}

/// What the benchmark measured.
#[derive(Debug, Clone, serde::Serialize)]
pub struct LedgerBenchReport {
    /// The settings.
    pub config: LedgerBenchConfig,
    /// Transfers finalized and executed.
    pub finalized: usize,
    /// Seconds from the first submission to the last transfer's finality.
    pub seconds: f64,
    /// Finalized transfers per second.
    pub transfers_per_second: f64,
    /// Finality latency percentiles, milliseconds.
    pub latency_ms_p50: f64,
    /// 99th percentile.
    pub latency_ms_p99: f64,
    /// Blocks executed during the run (on validator 0).
    pub blocks: u64,
    /// Mean transfers per block.
    pub mean_block_txs: f64,
    /// Transfers refused at submission (should be 0).
    pub refused: usize,
    /// Validators agreed on the state root at the final height.
    pub roots_agree: bool,
    /// Goals from the issue: transfers/s and p50 latency.
    pub goal_transfers_per_second: f64,
    /// p50 goal, milliseconds.
    pub goal_latency_ms_p50: f64,
}

struct NoSeal;

impl Sealer for NoSeal {
    fn seal(&self, data: &[u8]) -> std::result::Result<Vec<u8>, String> {
        // Benchmark only: the validators' data lives in a temporary directory deleted afterwards.
        Ok(data.to_vec())
    }
    fn unseal(&self, sealed: &[u8]) -> std::result::Result<zeroize::Zeroizing<Vec<u8>>, String> {
        Ok(zeroize::Zeroizing::new(sealed.to_vec()))
    }
}

fn free_port() -> Result<SocketAddr> {
    let listener = TcpListener::bind("127.0.0.1:0")
        .map_err(|e| NodeError::Config(format!("finding a free port: {e}")))?;
    listener
        .local_addr()
        .map_err(|e| NodeError::Config(format!("finding a free port: {e}")))
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let idx = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[idx.min(sorted.len() - 1)]
}

/// Runs the benchmark. `progress` receives a line now and then.
pub fn run_ledger_bench(
    config: LedgerBenchConfig,
    progress: impl Fn(&str) + Send + 'static,
) -> Result<LedgerBenchReport> {
    const N: usize = 4;
    if config.wallets == 0 || config.transfers < config.wallets {
        return Err(NodeError::Config(
            "need at least one wallet and one transfer per wallet".into(),
        ));
    }
    let signers: Vec<ed25519::PrivateKey> = (0..N)
        .map(|i| ed25519::PrivateKey::from_seed(1_000 + i as u64))
        .collect();
    let keys: Vec<ed25519::PublicKey> = signers.iter().map(|s| s.public_key()).collect();
    let wallets: Vec<SigningKey> = (0..config.wallets)
        .map(|i| {
            let mut seed = [0u8; 32];
            seed[..8].copy_from_slice(&(i as u64).to_be_bytes());
            seed[8] = 0xbe;
            SigningKey::from_bytes(&seed)
        })
        .collect();
    let genesis = Genesis {
        chain_id: "veil-bench".into(),
        epoch_length: 1_000_000,
        allocations: wallets
            .iter()
            .map(|w| Allocation {
                address: w.verifying_key().address(),
                amount: 1 << 40,
            })
            .collect(),
        validators: keys
            .iter()
            .map(|k| {
                veil_crypto::sign::VerifyingKey::from_slice(k.as_ref())
                    .map(|v| ValidatorAccount { address: v.address() })
                    .map_err(|e| NodeError::Config(e.to_string()))
            })
            .collect::<Result<_>>()?,
        fees: FeeSchedule::default(),
    };
    let seed = veil_crypto::rand::array::<32>().map_err(|e| NodeError::Seed(e.to_string()))?;
    let tx_public = EpochKeys::derive(&Seed::from_bytes(seed), 0).tx_public();

    // Build every transfer first (client-side work, not timed).
    progress(&format!(
        "sealing {} transfers from {} wallets…",
        config.transfers, config.wallets
    ));
    let per_wallet = config.transfers / config.wallets;
    let fee = genesis.fees.buckets.first().map(|b| b.fee).unwrap_or(10);
    let mut txs: Vec<(usize, Vec<u8>)> = Vec::with_capacity(per_wallet * config.wallets);
    for n in 0..per_wallet {
        for (w, wallet) in wallets.iter().enumerate() {
            let to = wallets[(w + 1) % wallets.len()].verifying_key().address();
            let body = TxBody {
                chain_id_hash: genesis.hash(),
                sender: wallet.verifying_key(),
                nonce: n as u64,
                fee,
                kind: TxKind::Transfer {
                    to,
                    amount: 1 + (n as u64 % 7),
                },
            };
            let env = seal_transaction(wallet, &tx_public, 0, body)
                .map_err(|e| NodeError::Config(e.to_string()))?;
            txs.push((w % N, env.encode()));
        }
    }

    let ports: Vec<SocketAddr> = (0..N).map(|_| free_port()).collect::<Result<_>>()?;
    let dir = tempfile_dir()?;
    let runtime = cw_tokio::Runner::new(
        cw_tokio::Config::new()
            .with_storage_directory(dir.path())
            .with_worker_threads(2),
    );
    let (cores_tx, cores_rx) = std_mpsc::channel();
    let genesis_for_runtime = genesis.clone();
    let keys_for_runtime = keys.clone();
    let limits = BlockLimits {
        max_txs: config.block_max_txs,
        max_bytes: crate::block::MAX_BLOCK_TX_BYTES,
    };
    let (done_tx, done_rx) = std_mpsc::channel::<()>();
    let done_rx = Arc::new(std::sync::Mutex::new(done_rx));
    let runtime_thread = std::thread::spawn(move || {
        runtime.start(|context| async move {
            let peers: Vec<(ed25519::PublicKey, Address)> = keys_for_runtime
                .iter()
                .cloned()
                .zip(ports.iter().map(|p| Address::Symmetric(*p)))
                .collect();
            let mut cores = Vec::new();
            for (i, signer) in signers.into_iter().enumerate() {
                let ctx = context.child("validator").with_attribute("index", i);
                let Ok((chans, oracle)) =
                    crate::run::start_p2p(&ctx, signer.clone(), ports[i], peers.clone())
                else {
                    return;
                };
                let vc = ValidatorConfig {
                    signer,
                    validators: keys_for_runtime.clone(),
                    genesis: genesis_for_runtime.clone(),
                    genesis_seed: Some(Seed::from_bytes(seed)),
                    sealer: Arc::new(NoSeal),
                    partition: format!("bench-{i}"),
                    mempool_capacity: 1_000_000,
                    limits,
                    timing: Timing::default(),
                };
                match validator::start(ctx.child("node"), vc, chans, oracle.clone(), oracle).await {
                    Ok(v) => cores.push(v.core.clone()),
                    Err(e) => {
                        tracing::error!(error = %e, "bench validator failed to start");
                        return;
                    }
                }
            }
            let _ = cores_tx.send(cores);
            // Keep the runtime alive until the load generator is done.
            loop {
                if done_rx.lock().map(|rx| rx.try_recv().is_ok()).unwrap_or(true) {
                    return;
                }
                commonware_runtime::Clock::sleep(&context, Duration::from_millis(50)).await;
            }
        });
    });
    let cores = cores_rx
        .recv_timeout(Duration::from_secs(60))
        .map_err(|_| NodeError::Config("the benchmark validators did not start".into()))?;

    // Wait for the chain to finalize a first block.
    let start_wait = Instant::now();
    while cores.iter().any(|c| c.executed_height() < 1) {
        if start_wait.elapsed() > Duration::from_secs(60) {
            return Err(NodeError::Config(
                "the benchmark chain finalized no block in 60 s".into(),
            ));
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    progress("4 validators finalizing; submitting…");

    // Submit at the target rate, bounded in flight; track finality per transfer on the validator
    // it was submitted to.
    let mut submitted_at: HashMap<[u8; 32], (usize, Instant)> = HashMap::with_capacity(txs.len());
    let mut latencies: Vec<f64> = Vec::with_capacity(txs.len());
    let mut refused = 0usize;
    let mut seen_height = [cores[0].executed_height(); N];
    let first_height = cores[0].executed_height();
    let t0 = Instant::now();
    let interval = Duration::from_secs_f64(1.0 / config.rate.max(1) as f64);
    let mut next = 0usize;
    let mut last_report = Instant::now();
    let mut last_final = t0;
    let total = txs.len();
    while latencies.len() + refused < total {
        // Submit what is due.
        let due = ((t0.elapsed().as_secs_f64() / interval.as_secs_f64()) as usize).min(total);
        while next < due && submitted_at.len() < config.max_in_flight {
            let (v, env) = &txs[next];
            let id = veil_ledger::envelope_id(env);
            match cores[*v].submit(env.clone()) {
                Ok(_) => {
                    submitted_at.insert(id, (*v, Instant::now()));
                }
                Err(e) => {
                    refused += 1;
                    tracing::warn!(error = %e, "benchmark transfer refused");
                }
            }
            next += 1;
        }
        // Collect finality: newly executed blocks on each validator.
        for (v, core) in cores.iter().enumerate() {
            let h = core.executed_height();
            while seen_height[v] < h {
                seen_height[v] += 1;
                let Some(ids) = core.executed_tx_ids(seen_height[v]) else {
                    continue;
                };
                let now = Instant::now();
                for id in ids {
                    if let Some((sv, at)) = submitted_at.get(&id)
                        && *sv == v
                    {
                        latencies.push(now.duration_since(*at).as_secs_f64() * 1_000.0);
                        submitted_at.remove(&id);
                        last_final = now;
                    }
                }
            }
        }
        if last_report.elapsed() > Duration::from_secs(2) {
            progress(&format!(
                "{} submitted, {} finalized, height {}",
                next,
                latencies.len(),
                cores[0].executed_height()
            ));
            last_report = Instant::now();
        }
        if t0.elapsed() > Duration::from_secs(600) {
            break;
        }
        std::thread::sleep(Duration::from_millis(1));
    }
    let seconds = last_final.duration_since(t0).as_secs_f64().max(1e-9);
    let final_height = cores.iter().map(|c| c.executed_height()).min().unwrap_or(0);
    let roots: Vec<_> = cores
        .iter()
        .filter_map(|c| c.executed_at(final_height).map(|e| e.state_root))
        .collect();
    let roots_agree = roots.len() == N && roots.iter().all(|r| *r == roots[0]);
    let blocks = cores[0].executed_height() - first_height;
    let _ = done_tx.send(());
    let _ = runtime_thread.join();
    latencies.sort_by(f64::total_cmp);
    let finalized = latencies.len();
    Ok(LedgerBenchReport {
        finalized,
        seconds,
        transfers_per_second: finalized as f64 / seconds,
        latency_ms_p50: percentile(&latencies, 0.50),
        latency_ms_p99: percentile(&latencies, 0.99),
        blocks,
        mean_block_txs: if blocks == 0 {
            0.0
        } else {
            finalized as f64 / blocks as f64
        },
        refused,
        roots_agree,
        goal_transfers_per_second: 2_000.0,
        goal_latency_ms_p50: 300.0,
        config,
    })
}

fn tempfile_dir() -> Result<tempfile::TempDir> {
    tempfile::Builder::new()
        .prefix("veil-ledger-bench-")
        .tempdir()
        .map_err(|e| NodeError::Config(format!("creating a temporary directory: {e}")))
}
