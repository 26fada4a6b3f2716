//! Wires one validator together on any Commonware runtime and any p2p network: simplex consensus,
//! marshal (block broadcast, backfill, ordered finalized delivery), the application, the executor
//! and the durable store.
//!
//! The same function runs in the deterministic simulator (simulated network, seeded runtime) and in
//! `veil node` (tokio runtime, authenticated TCP p2p), so what the simulation tests is what runs.

use std::num::NonZeroU64;
use std::sync::Arc;
use std::time::Duration;

use commonware_broadcast::buffered;
use commonware_consensus::{
    marshal::{
        self,
        core::Actor as MarshalActor,
        resolver::p2p as marshal_resolver,
        standard::{Inline, Standard},
    },
    simplex::{self, elector::RoundRobin},
    types::{Epoch, FixedEpocher, ViewDelta},
};
use commonware_cryptography::{
    Digestible, Sha256, Signer as _,
    certificate::{ConstantProvider, Verifier as _},
    ed25519::{PrivateKey, PublicKey},
};
use commonware_p2p::{Blocker, Provider, Receiver, Sender};
use commonware_parallel::Sequential;
use commonware_runtime::{Clock, Handle, Metrics, Spawner, Storage, buffer::paged::CacheRef};
use commonware_storage::archive::immutable;
use commonware_utils::{NZDuration, NZU16, NZU64, NZUsize, ordered::Set};
use rand_core::CryptoRng;
use veil_crypto::kdf::Seed;
use veil_ledger::{Genesis, KeyRing, Ledger};

use crate::app::{BlockLimits, Finalizer, Scheme, VeilApp, run_executor};
use crate::block::Block;
use crate::core::SharedCore;
use crate::error::{NodeError, Result};
use crate::store::{Sealer, Store};

/// The runtime a validator needs: clock, spawner, storage, metrics and a CSPRNG.
pub trait Runtime: Clock + CryptoRng + Spawner + Storage + Metrics + Send + Sync + 'static {}
impl<T: Clock + CryptoRng + Spawner + Storage + Metrics + Send + Sync + 'static> Runtime for T {}

/// p2p channel numbers (every validator must use the same).
pub mod channels {
    /// Consensus votes.
    pub const VOTES: u64 = 0;
    /// Consensus certificates.
    pub const CERTIFICATES: u64 = 1;
    /// Consensus resolver (missing certificates).
    pub const RESOLVER: u64 = 2;
    /// Marshal backfill (missing blocks).
    pub const BACKFILL: u64 = 3;
    /// Block broadcast.
    pub const BROADCAST: u64 = 4;
    /// Mempool gossip.
    pub const TXS: u64 = 5;
}

/// Consensus timing.
#[derive(Debug, Clone, Copy)]
pub struct Timing {
    /// How long to wait for a leader's proposal before voting to skip the view.
    pub leader_timeout: Duration,
    /// How long to wait for a notarized block to certify.
    pub certification_timeout: Duration,
    /// How often to rebroadcast timeouts.
    pub timeout_retry: Duration,
}

impl Default for Timing {
    fn default() -> Self {
        Self {
            leader_timeout: Duration::from_secs(1),
            certification_timeout: Duration::from_secs(2),
            timeout_retry: Duration::from_secs(5),
        }
    }
}

/// Everything one validator needs to start.
pub struct ValidatorConfig {
    /// This validator's consensus (p2p identity and vote) key.
    pub signer: PrivateKey,
    /// Every validator's consensus public key (the validator set, any order: it is sorted).
    pub validators: Vec<PublicKey>,
    /// The chain's genesis.
    pub genesis: Genesis,
    /// The network seed for epoch 0, used only when the store is empty (first start).
    pub genesis_seed: Option<Seed>,
    /// Seals the network seed to this machine.
    pub sealer: Arc<dyn Sealer>,
    /// Storage partition prefix (unique per validator on shared storage).
    pub partition: String,
    /// Mempool capacity in envelopes.
    pub mempool_capacity: usize,
    /// Block limits for proposals.
    pub limits: BlockLimits,
    /// Consensus timing.
    pub timing: Timing,
}

/// The p2p channels a validator uses, as (sender, receiver) pairs, registered on channels
/// [`channels::VOTES`] .. [`channels::BROADCAST`].
pub struct Channels<S, R> {
    /// Votes.
    pub votes: (S, R),
    /// Certificates.
    pub certificates: (S, R),
    /// Consensus resolver.
    pub resolver: (S, R),
    /// Marshal backfill.
    pub backfill: (S, R),
    /// Block broadcast.
    pub broadcast: (S, R),
    /// Mempool gossip.
    pub txs: (S, R),
}

/// A running validator.
pub struct Validator {
    /// Shared state (ledger, mempool, counters).
    pub core: SharedCore,
    /// Marshal's mailbox (finalized blocks by height).
    pub marshal: marshal::core::Mailbox<Scheme, Standard<Block>>,
    /// This validator's public key.
    pub public_key: PublicKey,
    handles: Vec<Handle<()>>,
}

impl Validator {
    /// Stops every task of this validator (as a crash would: nothing is flushed beyond what is
    /// already durable).
    pub fn abort(self) {
        for handle in self.handles {
            handle.abort();
        }
    }
}

const NAMESPACE: &[u8] = b"veil/v1/consensus";

/// Checks a validator configuration before anything starts (Commonware panics on bad config).
pub fn validate(config: &ValidatorConfig) -> Result<()> {
    if config.validators.len() < 4 {
        return Err(NodeError::Config(format!(
            "a BFT network needs at least 4 validators (3f+1 with f >= 1); the configuration lists {}",
            config.validators.len()
        )));
    }
    let me = config.signer.public_key();
    if !config.validators.contains(&me) {
        return Err(NodeError::Config(
            "this validator's key is not in the validator set; add its public key to the genesis validators"
                .into(),
        ));
    }
    let mut sorted = config.validators.clone();
    sorted.sort();
    sorted.dedup();
    if sorted.len() != config.validators.len() {
        return Err(NodeError::Config(
            "the validator set lists a public key twice".into(),
        ));
    }
    if config.limits.max_txs == 0 || config.limits.max_txs > crate::block::MAX_BLOCK_TXS {
        return Err(NodeError::Config(format!(
            "block max_txs must be between 1 and {}",
            crate::block::MAX_BLOCK_TXS
        )));
    }
    if config.limits.max_bytes == 0 || config.limits.max_bytes > crate::block::MAX_BLOCK_TX_BYTES {
        return Err(NodeError::Config(format!(
            "block max_bytes must be between 1 and {}",
            crate::block::MAX_BLOCK_TX_BYTES
        )));
    }
    config
        .genesis
        .validate()
        .map_err(|e| NodeError::Config(format!("genesis: {e}")))?;
    Ok(())
}

fn archive_config<C>(
    prefix: &str,
    name: &str,
    page_cache: &CacheRef,
    codec_config: C,
) -> immutable::Config<C> {
    immutable::Config {
        metadata_partition: format!("{prefix}-{name}-metadata"),
        freezer_table_partition: format!("{prefix}-{name}-freezer-table"),
        freezer_table_initial_size: 64,
        freezer_table_resize_frequency: 10,
        freezer_table_resize_chunk_size: 10,
        freezer_key_partition: format!("{prefix}-{name}-freezer-key"),
        freezer_key_page_cache: page_cache.clone(),
        freezer_value_partition: format!("{prefix}-{name}-freezer-value"),
        freezer_value_target_size: 1 << 20,
        freezer_value_compression: None,
        ordinal_partition: format!("{prefix}-{name}-ordinal"),
        items_per_section: NZU64!(1024),
        codec_config,
        replay_buffer: NZUsize!(1 << 20),
        freezer_key_write_buffer: NZUsize!(1 << 20),
        freezer_value_write_buffer: NZUsize!(1 << 20),
        ordinal_write_buffer: NZUsize!(1 << 20),
    }
}

/// Largest p2p message a validator network must admit (blocks dominate).
pub fn max_message_size(validators: usize) -> u32 {
    let participants = u32::try_from(validators).unwrap_or(u32::MAX);
    let consensus = simplex::max_payload_size::<Scheme, crate::block::Digest>(participants);
    let blocks = marshal::max_payload_size::<Standard<Block>, Scheme>(participants, &());
    u32::try_from(consensus.max(blocks) + 1024).unwrap_or(u32::MAX)
}

/// Starts a validator: restores its ledger from disk (or creates it from genesis), then starts
/// marshal, block broadcast, consensus and the executor.
pub async fn start<E, S, R, P, B>(
    context: E,
    config: ValidatorConfig,
    channels: Channels<S, R>,
    peer_provider: P,
    blocker: B,
) -> Result<Validator>
where
    E: Runtime,
    S: Sender<PublicKey = PublicKey>,
    R: Receiver<PublicKey = PublicKey>,
    P: Provider<PublicKey = PublicKey>,
    B: Blocker<PublicKey = PublicKey> + Clone,
{
    validate(&config)?;
    let public_key = config.signer.public_key();
    let prefix = config.partition.clone();

    // Ledger: from the store, or from genesis.
    let mut store = Store::open(
        context.child("store"),
        format!("{prefix}-ledger"),
        config.sealer.clone(),
    )
    .await?;
    let ledger = match store.load()? {
        Some(persisted) => {
            let keys = KeyRing::new(persisted.seed, persisted.seed_epoch);
            let mut ledger = Ledger::restore(&config.genesis, keys, &persisted.snapshot)
                .map_err(|e| NodeError::Storage(format!("restoring the ledger snapshot: {e}")))?;
            for delta in &persisted.deltas {
                ledger.apply_delta(delta).map_err(|e| {
                    NodeError::Storage(format!(
                        "replaying the ledger journal after height {}: {e}",
                        ledger.height()
                    ))
                })?;
            }
            ledger
        }
        None => {
            let seed = config.genesis_seed.as_ref().ok_or_else(|| {
                NodeError::Config(
                    "this validator has no ledger yet and no network seed: obtain it from a running validator \
                     (attested seed transfer) or, for validator 0 at genesis, create it"
                        .into(),
                )
            })?;
            store.save_seed(seed, 0).await?;
            Ledger::genesis(&config.genesis, Seed::from_bytes(*seed.expose()))
                .map_err(|e| NodeError::Config(format!("genesis: {e}")))?
        }
    };
    let genesis_block = Block::genesis(ledger.genesis_hash());
    let core = SharedCore::new(ledger, config.mempool_capacity);

    // Signing scheme and the (single, static) validator set.
    let participants: Set<PublicKey> = Set::from_iter_dedup(config.validators.iter().cloned());
    let scheme = Scheme::signer(NAMESPACE, participants.clone(), config.signer.clone())
        .ok_or_else(|| NodeError::Config("this validator's key is not in the validator set".into()))?;
    let provider = ConstantProvider::<Scheme, Epoch>::new(scheme.clone());
    // One consensus epoch for the chain's life (the ledger's key epochs are separate).
    let epocher = FixedEpocher::new(NonZeroU64::MAX);
    let page_cache = CacheRef::new(NZU16!(16_384), NZUsize!(1_024));

    // Marshal: backfill resolver, block broadcast, finalized archives.
    let mailbox_size = NZUsize!(4_096);
    let resolver_cfg = marshal_resolver::Config {
        public_key: public_key.clone(),
        peer_provider: peer_provider.clone(),
        blocker: blocker.clone(),
        mailbox_size,
        fetch_timeout: NZDuration!(Duration::from_secs(2)),
        fetch_retry_delay: Duration::from_millis(100),
        priority_requests: false,
        priority_responses: false,
    };
    let resolver = marshal_resolver::init(context.child("marshal_resolver"), resolver_cfg, channels.backfill);
    let broadcast_cfg = buffered::Config {
        public_key: public_key.clone(),
        mailbox_size,
        deque_size: 16,
        priority: false,
        codec_config: (),
        peer_provider,
        strategy: Sequential,
    };
    let (broadcast_engine, buffer) = buffered::Engine::new(context.child("broadcast"), broadcast_cfg);
    let mut handles = vec![broadcast_engine.start(channels.broadcast)];

    let finalizations = immutable::Archive::init(
        context.child("finalizations_by_height"),
        archive_config(
            &prefix,
            "finalizations",
            &page_cache,
            Scheme::certificate_codec_config_unbounded(),
        ),
    )
    .await
    .map_err(|e| NodeError::Storage(format!("opening the finalizations archive: {e}")))?;
    let blocks = immutable::Archive::init(
        context.child("finalized_blocks"),
        archive_config(&prefix, "blocks", &page_cache, ()),
    )
    .await
    .map_err(|e| NodeError::Storage(format!("opening the blocks archive: {e}")))?;
    let marshal_cfg = marshal::Config {
        provider,
        epocher: epocher.clone(),
        start: marshal::Start::Genesis(commonware_cryptography::Digested::precomputed(
            genesis_block.clone(),
            genesis_block.digest(),
        )),
        partition_prefix: format!("{prefix}-marshal"),
        mailbox_size,
        view_retention: ViewDelta::new(64),
        prunable_items_per_section: NZU64!(64),
        page_cache: page_cache.clone(),
        replay_buffer: NZUsize!(1 << 20),
        key_write_buffer: NZUsize!(1 << 20),
        value_write_buffer: NZUsize!(1 << 20),
        block_codec_config: (),
        max_repair: NZUsize!(16),
        max_pending_acks: NZUsize!(8),
        strategy: Sequential,
    };
    let (actor, marshal_mailbox, _floor) = MarshalActor::<_, Standard<Block>, _, _, _, _, _, _>::init(
        context.child("marshal"),
        finalizations,
        blocks,
        marshal_cfg,
    )
    .await;
    let (finalizer, executed_rx) = Finalizer::new(core.clone());
    handles.push(actor.start(finalizer, buffer, resolver));

    // Executor: runs finalized blocks, persists, acknowledges.
    let exec_core = core.clone();
    handles.push(
        context
            .child("executor")
            .spawn(move |ctx| async move { run_executor(ctx, exec_core, store, executed_rx).await }),
    );

    // Mempool gossip.
    let (outbox, outbox_rx) = commonware_utils::channel::mpsc::unbounded_channel();
    core.set_outbox(outbox);
    let (txs_sender, txs_receiver) = channels.txs;
    handles.push(
        context
            .child("gossip_out")
            .spawn(move |ctx| crate::gossip::run_outbound(ctx, txs_sender, outbox_rx)),
    );
    let gossip_core = core.clone();
    handles.push(
        context
            .child("gossip_in")
            .spawn(move |_| crate::gossip::run_inbound(gossip_core, txs_receiver)),
    );

    // Consensus.
    let app = VeilApp::new(core.clone(), config.limits);
    let inline = Inline::new(context.child("inline"), app, marshal_mailbox.clone(), epocher);
    let simplex_cfg = simplex::Config {
        scheme,
        elector: RoundRobin::<Sha256>::default(),
        blocker,
        automaton: inline.clone(),
        relay: inline.clone(),
        reporter: inline,
        partition: format!("{prefix}-simplex"),
        mailbox_size,
        epoch: Epoch::zero(),
        floor: simplex::Floor::Genesis(genesis_block.digest()),
        replay_buffer: NZUsize!(1 << 20),
        write_buffer: NZUsize!(1 << 20),
        leader_timeout: config.timing.leader_timeout,
        certification_timeout: config.timing.certification_timeout,
        timeout_retry: config.timing.timeout_retry,
        fetch_timeout: NZDuration!(Duration::from_secs(1)),
        fetch_retry_delay: Duration::from_millis(100),
        view_retention: ViewDelta::new(64),
        skip: simplex::SkipPolicy::Enabled {
            timeout: config.timing.leader_timeout * 10,
            budget: simplex::SkipBudget::Participants,
        },
        page_cache,
        strategy: Sequential,
        forward: simplex::ForwardPolicy::Disabled,
        track_historical_votes: false,
    };
    let engine = simplex::Engine::new(context.child("consensus"), simplex_cfg);
    handles.push(engine.start(channels.votes, channels.certificates, channels.resolver));

    Ok(Validator {
        core,
        marshal: marshal_mailbox,
        public_key,
        handles,
    })
}
