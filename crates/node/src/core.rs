//! The validator's state shared between consensus, the executor and the RPC: the executed ledger,
//! the mempool and counters. One mutex; every critical section is short (no I/O under the lock).

use std::collections::{BTreeMap, HashSet};
use std::sync::{Arc, Mutex, MutexGuard};

use veil_ledger::{BlockOutcome, Ledger, LedgerError, Mempool, OpenedTx, TxError};

use crate::block::{Block, Digest, tx_id};

/// How many recent heights keep their state root and block digest in memory (for status and
/// agreement checks).
const RECENT_ROOTS: usize = 4_096;
/// How many recent heights keep their envelope ids.
const RECENT_IDS: usize = 256;

/// Counters for status and metrics.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct Stats {
    /// Blocks executed since genesis.
    pub blocks: u64,
    /// Transactions applied (valid, state changed) since genesis.
    pub applied_txs: u64,
    /// Transactions executed that failed (fee charged, nonce consumed, failure receipt stored).
    pub failed_txs: u64,
    /// Envelopes skipped at execution without a state change (undecodable, replayed, unsigned…).
    pub rejected_txs: u64,
    /// Highest finalized height consensus has reported (may run ahead of execution).
    pub finalized_tip: u64,
    /// Envelopes refused at admission since start.
    pub refused_submissions: u64,
}

/// A recent executed block: its digest and the state root after it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Executed {
    /// The block's digest.
    pub digest: Digest,
    /// State root after executing it.
    pub state_root: [u8; 32],
    /// Transactions in it.
    pub txs: u32,
    /// The proposer's timestamp.
    pub timestamp_ms: u64,
}

pub(crate) struct Core {
    pub(crate) ledger: Ledger,
    pub(crate) mempool: Mempool,
    pub(crate) stats: Stats,
    pub(crate) recent: BTreeMap<u64, Executed>,
    /// Envelope ids of the most recent executed blocks (benchmarks and finality tracking).
    pub(crate) recent_ids: BTreeMap<u64, Vec<[u8; 32]>>,
    /// The same ids as a set: gossip that arrives after its envelope executed is dropped unopened.
    pub(crate) recent_id_set: HashSet<[u8; 32]>,
    /// Where admitted client submissions go to be gossiped to the other validators.
    pub(crate) outbox: Option<commonware_utils::channel::mpsc::UnboundedSender<Vec<u8>>>,
}

/// Shared, cloneable access to the validator's state.
#[derive(Clone)]
pub struct SharedCore(Arc<Mutex<Core>>);

impl SharedCore {
    /// State around an (already genesis-initialised or restored) ledger.
    pub fn new(ledger: Ledger, mempool_capacity: usize) -> Self {
        Self(Arc::new(Mutex::new(Core {
            ledger,
            mempool: Mempool::new(mempool_capacity),
            stats: Stats::default(),
            recent: BTreeMap::new(),
            recent_ids: BTreeMap::new(),
            recent_id_set: HashSet::new(),
            outbox: None,
        })))
    }

    pub(crate) fn lock(&self) -> MutexGuard<'_, Core> {
        // A panic while holding the lock would already have stopped this validator's tasks;
        // recover the data rather than poison every later caller.
        self.0.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Height of the last executed block.
    pub fn executed_height(&self) -> u64 {
        self.lock().ledger.height()
    }

    /// Candidate envelopes for a new block, in admission order, skipping `exclude`.
    pub fn candidates(&self, max_txs: usize, max_bytes: usize, exclude: &HashSet<[u8; 32]>) -> Vec<Vec<u8>> {
        let core = self.lock();
        let mut picked = Vec::new();
        let mut bytes = 0usize;
        for tx in core
            .mempool
            .take(max_txs + exclude.len(), max_bytes + exclude.len() * 4096)
        {
            if picked.len() >= max_txs {
                break;
            }
            if exclude.contains(&tx_id(&tx)) || bytes + tx.len() > max_bytes {
                continue;
            }
            bytes += tx.len();
            picked.push(tx);
        }
        picked
    }

    /// Opens envelopes outside the lock (decryption and signature checks are the expensive part of
    /// admission; holding the lock for them would stall proposals and execution): duplicates and
    /// a full mempool are refused first, under a short lock.
    /// With `skip_executed`, envelopes executed in the recent blocks are refused unopened too.
    fn open_unlocked(&self, envelopes: &[Vec<u8>], skip_executed: bool) -> Vec<Result<OpenedTx, TxError>> {
        let (opener, room) = {
            let core = self.lock();
            let room: Vec<Result<(), TxError>> = envelopes
                .iter()
                .map(|e| {
                    let id = tx_id(e);
                    if skip_executed && core.recent_id_set.contains(&id) {
                        return Err(TxError::Duplicate);
                    }
                    core.mempool.admit_check_room(&id)
                })
                .collect();
            (core.ledger.opener(), room)
        };
        envelopes
            .iter()
            .zip(room)
            .map(|(e, room)| room.and_then(|()| opener.open(e)))
            .collect()
    }

    /// Submits a client's envelope to the mempool after the ledger's admission checks, and queues
    /// it for gossip to the other validators.
    pub fn submit(&self, envelope: Vec<u8>) -> Result<[u8; 32], TxError> {
        let opened = self
            .open_unlocked(std::slice::from_ref(&envelope), false)
            .pop()
            .unwrap_or(Err(TxError::Duplicate));
        let mut core = self.lock();
        let core = &mut *core;
        let gossip = core.outbox.as_ref().map(|_| envelope.clone());
        match opened.and_then(|o| core.mempool.admit_opened(&core.ledger, envelope, o)) {
            Ok(id) => {
                if let (Some(outbox), Some(envelope)) = (&core.outbox, gossip) {
                    // Closed only while shutting down; the envelope stays in our mempool.
                    let _ = outbox.send(envelope);
                }
                Ok(id)
            }
            Err(e) => {
                core.stats.refused_submissions += 1;
                Err(e)
            }
        }
    }

    /// Admits envelopes another validator gossiped (same checks, not gossiped again); returns how
    /// many were not admitted (already here, already included, or invalid).
    pub fn admit_gossiped(&self, envelopes: Vec<Vec<u8>>) -> usize {
        let opened = self.open_unlocked(&envelopes, true);
        let mut core = self.lock();
        let core = &mut *core;
        let mut refused = 0;
        for (envelope, opened) in envelopes.into_iter().zip(opened) {
            if opened
                .and_then(|o| core.mempool.admit_opened(&core.ledger, envelope, o))
                .is_err()
            {
                refused += 1;
            }
        }
        refused
    }

    /// Sends admitted submissions to `outbox` from now on (the gossip task drains it).
    pub fn set_outbox(&self, outbox: commonware_utils::channel::mpsc::UnboundedSender<Vec<u8>>) {
        self.lock().outbox = Some(outbox);
    }

    /// Executes a finalized block (the next height) and prunes the mempool.
    pub fn execute(&self, block: &Block, digest: Digest) -> Result<BlockOutcome, LedgerError> {
        let mut core = self.lock();
        let core = &mut *core;
        // Envelopes this validator admitted were opened and verified then: reuse that work.
        let mempool = &core.mempool;
        let outcome = core
            .ledger
            .execute_block_with(block.height.get(), &block.txs, |id| mempool.opened(id))?;
        core.mempool.on_block(&core.ledger, &block.txs);
        core.stats.blocks += 1;
        core.stats.applied_txs += u64::from(outcome.applied);
        core.stats.failed_txs += u64::from(outcome.failed);
        core.stats.rejected_txs += u64::from(outcome.rejected);
        core.recent.insert(
            block.height.get(),
            Executed {
                digest,
                state_root: outcome.state_root,
                txs: u32::try_from(block.txs.len()).unwrap_or(u32::MAX),
                timestamp_ms: block.timestamp_ms,
            },
        );
        while core.recent.len() > RECENT_ROOTS {
            core.recent.pop_first();
        }
        core.recent_id_set.extend(outcome.results.iter().map(|r| r.id));
        core.recent_ids
            .insert(block.height.get(), outcome.results.iter().map(|r| r.id).collect());
        while core.recent_ids.len() > RECENT_IDS {
            if let Some((_, ids)) = core.recent_ids.pop_first() {
                for id in ids {
                    core.recent_id_set.remove(&id);
                }
            }
        }
        Ok(outcome)
    }

    /// Records the finalized tip consensus reported.
    pub fn note_finalized_tip(&self, height: u64) {
        let mut core = self.lock();
        core.stats.finalized_tip = core.stats.finalized_tip.max(height);
    }

    /// Counters.
    pub fn stats(&self) -> Stats {
        self.lock().stats.clone()
    }

    /// Mempool size.
    pub fn mempool_len(&self) -> usize {
        self.lock().mempool.len()
    }

    /// The state root after the last executed block.
    pub fn state_root(&self) -> [u8; 32] {
        self.lock().ledger.state_root()
    }

    /// The digest and state root of a recently executed height.
    pub fn executed_at(&self, height: u64) -> Option<Executed> {
        self.lock().recent.get(&height).copied()
    }

    /// The envelope ids of a recently executed block, in block order.
    pub fn executed_tx_ids(&self, height: u64) -> Option<Vec<[u8; 32]>> {
        self.lock().recent_ids.get(&height).cloned()
    }

    /// Runs `f` with the ledger (read-only).
    pub fn with_ledger<T>(&self, f: impl FnOnce(&Ledger) -> T) -> T {
        f(&self.lock().ledger)
    }
}
