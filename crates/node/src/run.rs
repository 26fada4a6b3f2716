//! `veil node`: one validator as a real process — Commonware's tokio runtime (storage in the data
//! directory), authenticated and encrypted p2p between the validators (`lookup`: known addresses,
//! Ed25519 identities, SAKE handshake, ChaCha20-Poly1305), the validator itself, and the RPC.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use commonware_codec::{Copying, DecodeExt as _};
use commonware_cryptography::{ChaCha20Poly1305, Signer as _, ed25519};
use commonware_p2p::{Address, AddressableManager as _, authenticated::lookup};
use commonware_runtime::{Quota, Runner as _, Supervisor as _, tokio as cw_tokio};
use commonware_stream::{
    cups::{self, Cups},
    sake::{self, Sake},
};
use commonware_utils::{NZU32, NZUsize, ordered::Map};
use serde::{Deserialize, Serialize};
use veil_crypto::kdf::Seed;
use veil_ledger::Genesis;
use zeroize::Zeroizing;

use crate::app::BlockLimits;
use crate::error::{NodeError, Result};
use crate::store::Sealer;
use crate::validator::{self, Channels, Timing, ValidatorConfig, channels};

/// One validator of the network, as every node's configuration lists it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Peer {
    /// Its consensus / p2p identity: an Ed25519 public key, hex. Fees go to the `veil1…`
    /// address of this same key.
    pub public_key: String,
    /// Its p2p address (`IP:port`).
    pub p2p: SocketAddr,
    /// Its JSON-RPC address (`IP:port`).
    pub rpc: SocketAddr,
}

/// How this validator obtains the network seed on its first start.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub enum SeedSource {
    /// Create it inside this enclave (validator 0, at genesis).
    Create,
    /// Obtain it from the validator at this RPC address, presenting this enclave's evidence.
    Fetch {
        /// The RPC address of a running validator.
        from: SocketAddr,
    },
}

/// `veil node --config FILE`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NodeConfig {
    /// Where this validator keeps its chain data, sealed seed and key.
    pub data_dir: PathBuf,
    /// The chain's genesis file (JSON; see `docs/ledger.md`).
    pub genesis: PathBuf,
    /// This validator's consensus key: a file holding 32 bytes of hex (an Ed25519 seed).
    pub key_file: PathBuf,
    /// Every validator, this one included.
    pub validators: Vec<Peer>,
    /// Where this validator listens for p2p (must match its entry in `validators`).
    pub p2p_listen: SocketAddr,
    /// Where this validator serves JSON-RPC and `/metrics` (loopback unless you mean otherwise).
    pub rpc_listen: SocketAddr,
    /// How to obtain the network seed on first start.
    pub seed: SeedSource,
    /// Accept simulated-TEE evidence from validators asking for the seed (development only).
    #[serde(default)]
    pub allow_simulated_tee: bool,
    /// Mempool capacity in envelopes.
    #[serde(default = "default_mempool")]
    pub mempool_capacity: usize,
    /// Most transactions per proposed block.
    #[serde(default = "default_block_txs")]
    pub block_max_txs: usize,
    /// Leader timeout in milliseconds.
    #[serde(default = "default_leader_timeout_ms")]
    pub leader_timeout_ms: u64,
}

fn default_mempool() -> usize {
    200_000
}
fn default_block_txs() -> usize {
    4_096
}
fn default_leader_timeout_ms() -> u64 {
    1_000
}

impl NodeConfig {
    /// Reads and checks a configuration file.
    pub fn load(path: &std::path::Path) -> Result<Self> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| NodeError::Config(format!("reading {}: {e}", path.display())))?;
        let config: Self =
            serde_json::from_str(&text).map_err(|e| NodeError::Config(format!("{}: {e}", path.display())))?;
        Ok(config)
    }

    /// The validators' consensus public keys, in configuration order.
    pub fn validator_keys(&self) -> Result<Vec<ed25519::PublicKey>> {
        self.validators
            .iter()
            .map(|p| {
                let bytes = hex::decode(&p.public_key)
                    .map_err(|_| NodeError::Config(format!("validator key {:?} is not hex", p.public_key)))?;
                ed25519::PublicKey::decode(Copying(&bytes[..])).map_err(|_| {
                    NodeError::Config(format!(
                        "validator key {:?} is not an Ed25519 public key",
                        p.public_key
                    ))
                })
            })
            .collect()
    }

    /// Reads this validator's consensus key.
    pub fn signer(&self) -> Result<ed25519::PrivateKey> {
        let text = Zeroizing::new(std::fs::read_to_string(&self.key_file).map_err(|e| {
            NodeError::Config(format!("reading the key file {}: {e}", self.key_file.display()))
        })?);
        let bytes = Zeroizing::new(
            hex::decode(text.trim())
                .map_err(|_| NodeError::Config("the key file must hold 32 bytes of hex".into()))?,
        );
        ed25519::PrivateKey::decode(Copying(&bytes[..]))
            .map_err(|_| NodeError::Config("the key file must hold 32 bytes of hex (an Ed25519 seed)".into()))
    }
}

/// Messages per second per peer and channel. Commonware preallocates each channel's inbound
/// mailbox at peers x burst, so this also sizes memory: 1,000/s keeps a validator small while
/// allowing far more than consensus and batched gossip send.
pub const P2P_QUOTA: Quota = Quota::per_second(NZU32!(1_000));

/// The network namespace (binds p2p handshakes to Veil).
const P2P_NAMESPACE: &[u8] = b"veil/v1/p2p";

/// What the RPC server needs; started by [`run`] inside the runtime.
pub struct RpcContext {
    /// The running validator's state.
    pub core: crate::core::SharedCore,
    /// Marshal's mailbox (blocks by height).
    pub marshal: commonware_consensus::marshal::core::Mailbox<
        crate::app::Scheme,
        commonware_consensus::marshal::standard::Standard<crate::block::Block>,
    >,
    /// The genesis.
    pub genesis: Genesis,
    /// The validator set.
    pub validators: Vec<Peer>,
    /// This validator's platform (to answer seed requests with policy checks).
    pub platform: Arc<dyn veil_platform::Platform>,
    /// Whether simulated evidence is accepted for seed requests.
    pub allow_simulated_tee: bool,
}

/// The p2p oracle validators use (peer provider and blocker).
pub type P2pOracle = commonware_p2p::authenticated::lookup::Oracle<ed25519::PublicKey>;
/// A validator's channels on the authenticated network.
pub type P2pChannels<E> = Channels<
    commonware_p2p::authenticated::lookup::Sender<ed25519::PublicKey, E>,
    commonware_p2p::authenticated::lookup::Receiver<ed25519::PublicKey>,
>;

/// Starts this validator's authenticated, encrypted p2p (`lookup`: every validator's address is
/// known; SAKE handshake with its Ed25519 identity; ChaCha20-Poly1305) on `listen`, tracks the
/// validator set, registers Veil's channels and returns them with the oracle.
pub fn start_p2p<E>(
    context: &E,
    signer: ed25519::PrivateKey,
    listen: SocketAddr,
    peers: Vec<(ed25519::PublicKey, Address)>,
) -> Result<(P2pChannels<E>, P2pOracle)>
where
    E: commonware_runtime::Spawner
        + commonware_runtime::Clock
        + commonware_runtime::Network
        + commonware_runtime::Resolver
        + commonware_runtime::Metrics
        + rand_core::CryptoRng,
{
    let max_message = validator::max_message_size(peers.len());
    let p2p_cfg = lookup::Config::local(
        Cups::<_, ChaCha20Poly1305>::new(
            Sake {
                signer,
                synchrony_bound: Duration::from_secs(5),
                max_handshake_age: Duration::from_secs(10),
                version: sake::Version::V1,
            },
            cups::Version::V1,
        ),
        P2P_NAMESPACE,
        listen,
        NZUsize!(peers.len()),
        max_message,
        NZUsize!(4_096),
    );
    let (mut network, mut oracle) = lookup::Network::new(context.child("network"), p2p_cfg);
    let map =
        Map::try_from(peers).map_err(|_| NodeError::Config("the validator set lists a key twice".into()))?;
    oracle.track(0, map);
    // Per peer and channel (see P2P_QUOTA).
    let quota = P2P_QUOTA;
    let chans = Channels {
        votes: network.register(channels::VOTES, quota),
        certificates: network.register(channels::CERTIFICATES, quota),
        resolver: network.register(channels::RESOLVER, quota),
        backfill: network.register(channels::BACKFILL, quota),
        broadcast: network.register(channels::BROADCAST, quota),
        txs: network.register(channels::TXS, quota),
    };
    network.start();
    Ok((chans, oracle))
}

/// Runs a validator until the process is stopped. `serve_rpc` starts the RPC server on the given
/// listener address (see `crate::rpc`); it runs on the same tokio runtime.
pub fn run<F, Fut>(
    config: NodeConfig,
    platform: Arc<dyn veil_platform::Platform>,
    sealer: Arc<dyn Sealer>,
    seed: Option<Seed>,
    serve_rpc: F,
) -> Result<()>
where
    F: FnOnce(RpcContext, SocketAddr) -> Fut + Send + 'static,
    Fut: std::future::Future<Output = ()> + Send + 'static,
{
    let genesis_text = std::fs::read_to_string(&config.genesis)
        .map_err(|e| NodeError::Config(format!("reading the genesis {}: {e}", config.genesis.display())))?;
    let genesis =
        Genesis::from_json(&genesis_text).map_err(|e| NodeError::Config(format!("genesis: {e}")))?;
    let signer = config.signer()?;
    let keys = config.validator_keys()?;
    let me = signer.public_key();
    let Some(my_entry) = keys.iter().position(|k| *k == me) else {
        return Err(NodeError::Config(format!(
            "this validator's key ({}) is not in the configuration's validators",
            hex::encode(me.as_ref())
        )));
    };
    if config.validators[my_entry].p2p.port() != config.p2p_listen.port() {
        return Err(NodeError::Config(
            "p2p_listen does not match this validator's p2p address in `validators`".into(),
        ));
    }
    // Fees go to each validator's key's account: the genesis must list exactly those accounts.
    let expected: Vec<_> = keys
        .iter()
        .map(|k| veil_crypto::sign::VerifyingKey::from_slice(k.as_ref()).map(|v| v.address()))
        .collect::<std::result::Result<_, _>>()
        .map_err(|e| NodeError::Config(format!("validator key: {e}")))?;
    let listed: Vec<_> = genesis.validators.iter().map(|v| v.address).collect();
    if expected != listed {
        return Err(NodeError::Config(
            "the genesis validators' accounts do not match the validators' keys (in order)".into(),
        ));
    }
    std::fs::create_dir_all(&config.data_dir)
        .map_err(|e| NodeError::Config(format!("creating {}: {e}", config.data_dir.display())))?;

    let validator_config = ValidatorConfig {
        signer: signer.clone(),
        validators: keys.clone(),
        genesis: genesis.clone(),
        genesis_seed: seed,
        sealer,
        partition: "veil".into(),
        mempool_capacity: config.mempool_capacity,
        limits: BlockLimits {
            max_txs: config.block_max_txs,
            max_bytes: crate::block::MAX_BLOCK_TX_BYTES,
        },
        timing: Timing {
            leader_timeout: Duration::from_millis(config.leader_timeout_ms),
            ..Timing::default()
        },
    };
    validator::validate(&validator_config)?;

    let runtime = cw_tokio::Runner::new(
        cw_tokio::Config::new()
            .with_storage_directory(config.data_dir.join("chain"))
            .with_worker_threads(2),
    );
    let rpc_listen = config.rpc_listen;
    let peers: Vec<(ed25519::PublicKey, Address)> = keys
        .iter()
        .cloned()
        .zip(config.validators.iter().map(|p| Address::Symmetric(p.p2p)))
        .collect();
    let validators_info = config.validators.clone();
    let allow_sim = config.allow_simulated_tee;
    let p2p_listen = config.p2p_listen;
    runtime.start(|context| async move {
        let (chans, oracle) = match start_p2p(&context, signer, p2p_listen, peers) {
            Ok(started) => started,
            Err(e) => {
                tracing::error!(error = %e, "p2p configuration refused");
                return Err(e);
            }
        };
        let v = validator::start(
            context.child("validator"),
            validator_config,
            chans,
            oracle.clone(),
            oracle,
        )
        .await?;
        tracing::info!(
            rpc = %rpc_listen,
            p2p = %p2p_listen,
            height = v.core.executed_height(),
            "validator running"
        );
        let rpc = RpcContext {
            core: v.core.clone(),
            marshal: v.marshal.clone(),
            genesis,
            validators: validators_info,
            platform,
            allow_simulated_tee: allow_sim,
        };
        serve_rpc(rpc, rpc_listen).await;
        Ok(())
    })
}
