//! The application consensus drives: it builds blocks from the mempool, checks blocks others
//! propose, and executes finalized blocks against the encrypted ledger.
//!
//! Consensus (simplex) orders 32-byte block digests; Commonware's marshal moves the blocks
//! themselves (broadcast, backfill, ordered delivery of finalized blocks). This module plugs into
//! both: [`VeilApp`] is the `commonware_consensus::Application` marshal's `Inline` wrapper calls to
//! propose and verify, and [`Finalizer`] is marshal's reporter, which hands every finalized block,
//! in height order, to an executor task that runs it through `veil-ledger`, persists the result and
//! only then acknowledges it (so a crash never loses an executed block).
//!
//! Everything here runs on the runtime's traits (clock, spawner, storage), never on tokio directly,
//! so the deterministic simulator reproduces a run exactly from its seed.

use std::collections::HashSet;
use std::time::UNIX_EPOCH;

use commonware_consensus::{
    Application, Heightable,
    marshal::{Update, ancestry::Ancestry},
    simplex::types::Context,
};
use commonware_cryptography::{Digested, Digestible, ed25519::PublicKey};
use commonware_runtime::Clock;
use commonware_utils::{Acknowledgement, acknowledgement::Exact, channel::mpsc};
use futures_util::StreamExt;
use tracing::{debug, warn};

use crate::block::{Block, Digest};
use crate::core::SharedCore;

/// The signing scheme validators vote with (Ed25519, attributable).
pub type Scheme = commonware_consensus::simplex::scheme::ed25519::Scheme;

/// How far back a proposer looks through not-yet-executed ancestors for transactions already
/// included (so it never includes one twice).
const MAX_ANCESTRY_WALK: usize = 256;

/// Limits on the blocks this validator builds.
#[derive(Debug, Clone, Copy)]
pub struct BlockLimits {
    /// Most transactions in a block this validator proposes.
    pub max_txs: usize,
    /// Most envelope bytes in a block this validator proposes.
    pub max_bytes: usize,
}

/// The consensus-facing application.
#[derive(Clone)]
pub struct VeilApp {
    core: SharedCore,
    limits: BlockLimits,
}

impl VeilApp {
    /// An application over the node's shared state.
    pub fn new(core: SharedCore, limits: BlockLimits) -> Self {
        Self { core, limits }
    }
}

fn now_ms(clock: &impl Clock) -> u64 {
    clock
        .current()
        .duration_since(UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}

impl<E> Application<E> for VeilApp
where
    E: Clock + Send + Sync + 'static,
{
    type SigningScheme = Scheme;
    type Context = Context<Digest, PublicKey>;
    type Block = Block;
    type Input = ();

    async fn propose(
        &mut self,
        (clock, _context): (E, Self::Context),
        mut ancestry: impl Ancestry<Self::Block>,
        _input: (),
    ) -> Option<Digested<Self::Block>> {
        let parent = ancestry.peek()?.clone();
        let executed = self.core.executed_height();

        // Transactions in ancestors that are finalized or notarized but not yet executed are
        // still in our mempool: skip them.
        let mut exclude: HashSet<[u8; 32]> = HashSet::new();
        let mut walked = 0;
        while walked < MAX_ANCESTRY_WALK {
            let Some(ancestor) = ancestry.next().await else {
                break;
            };
            if ancestor.height().get() <= executed {
                break;
            }
            exclude.extend(ancestor.inner().txs.iter().map(|tx| crate::block::tx_id(tx)));
            walked += 1;
        }
        let txs = self
            .core
            .candidates(self.limits.max_txs, self.limits.max_bytes, &exclude);
        let timestamp_ms = now_ms(&clock).max(parent.inner().timestamp_ms);
        let block = Block::new(parent.digest(), parent.height().next(), timestamp_ms, txs);
        debug!(
            height = block.height.get(),
            txs = block.txs.len(),
            "proposing block"
        );
        let digest = block.digest();
        Some(Digested::precomputed(block, digest))
    }

    async fn verify(
        &mut self,
        _context: (E, Self::Context),
        mut ancestry: impl Ancestry<Self::Block>,
    ) -> bool {
        // The Inline wrapper has already checked the parent link and the height.
        let Some(block) = ancestry.next().await else {
            return false;
        };
        let Some(parent) = ancestry.next().await else {
            return false;
        };
        if block.inner().timestamp_ms < parent.inner().timestamp_ms {
            warn!(
                height = block.height().get(),
                "refusing block: its timestamp is before its parent's"
            );
            return false;
        }
        // Envelopes are opened only when the block executes (a malformed one is then skipped
        // deterministically); here only refuse blocks no honest proposer builds: duplicates.
        let mut seen = HashSet::with_capacity(block.inner().txs.len());
        for tx in &block.inner().txs {
            if !seen.insert(crate::block::tx_id(tx)) {
                warn!(
                    height = block.height().get(),
                    "refusing block: it carries the same envelope twice"
                );
                return false;
            }
        }
        true
    }
}

/// Marshal's reporter: forwards finalized blocks, in order, to the executor task.
#[derive(Clone)]
pub struct Finalizer {
    sender: mpsc::UnboundedSender<(Digested<Block>, Exact)>,
    core: SharedCore,
}

impl Finalizer {
    /// A reporter and the receiving end the executor task drains.
    pub fn new(core: SharedCore) -> (Self, mpsc::UnboundedReceiver<(Digested<Block>, Exact)>) {
        let (sender, receiver) = mpsc::unbounded_channel();
        (Self { sender, core }, receiver)
    }
}

impl commonware_consensus::Reporter for Finalizer {
    type Activity = Update<Block>;

    fn report(&mut self, activity: Self::Activity) -> commonware_actor::Feedback {
        match activity {
            Update::Block(block, ack) => {
                if let Err(mpsc::error::SendError((block, ack))) = self.sender.send((block, ack)) {
                    // The executor is gone (shutting down): leave the block unacknowledged so
                    // marshal delivers it again after restart.
                    debug!(
                        height = block.height().get(),
                        "executor stopped; block left for redelivery"
                    );
                    drop(ack);
                }
            }
            Update::Tip(_round, height, _digest) => self.core.note_finalized_tip(height.get()),
        }
        commonware_actor::Feedback::Ok
    }
}

/// Executes finalized blocks as they arrive, persisting before acknowledging.
pub async fn run_executor<E>(
    context: E,
    core: SharedCore,
    mut store: crate::store::Store<E>,
    mut receiver: mpsc::UnboundedReceiver<(Digested<Block>, Exact)>,
) where
    E: commonware_runtime::Storage + Clock + commonware_runtime::Metrics + Send + Sync + 'static,
{
    while let Some((block, ack)) = receiver.recv().await {
        let height = block.height().get();
        let executed = core.executed_height();
        if height <= executed {
            // Redelivered after a restart: already in our persisted state.
            ack.acknowledge();
            continue;
        }
        if height != executed + 1 {
            warn!(
                height,
                executed, "finalized block out of order; waiting for redelivery"
            );
            drop(ack);
            continue;
        }
        let started = context.current();
        let outcome = match core.execute(block.inner(), block.digest()) {
            Ok(outcome) => outcome,
            Err(e) => {
                // Only a corrupt state gets here (the height was checked above): stop executing
                // rather than diverge; a restart restores the last persisted snapshot.
                tracing::error!(height, error = %e, "executing a finalized block failed; stopping the executor");
                drop(ack);
                return;
            }
        };
        if let Err(e) = store.persist(&core).await {
            // Without a durable copy we must not acknowledge: stop here, marshal redelivers.
            tracing::error!(height, error = %e, "could not persist executed block; stopping the executor");
            drop(ack);
            return;
        }
        let elapsed = context.current().duration_since(started).unwrap_or_default();
        debug!(
            height,
            applied = outcome.applied,
            rejected = outcome.rejected,
            ms = elapsed.as_millis() as u64,
            "executed finalized block"
        );
        ack.acknowledge();
    }
}
