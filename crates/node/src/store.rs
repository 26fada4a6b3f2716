//! Durable validator state: the ledger (ciphertext state and public metadata only) and the network
//! seed, sealed under the platform's sealing key.
//!
//! A snapshot of the ledger and the sealed seed live in one Commonware `Metadata` store (written
//! atomically: a crash leaves the previous complete version). Between snapshots each executed
//! block appends only what it changed (a ledger delta) to a Commonware journal, synced before the
//! block is acknowledged; a restart restores the snapshot and replays the deltas after it. A new
//! snapshot is written when the deltas since the last one outgrow it (so the bytes written stay
//! proportional to what blocks change, not to the state's size), at every epoch change (it
//! re-keys every entry and moves the seed), and first of all; the journal is then pruned. All on
//! the runtime's storage, so the deterministic simulator can crash and restart a validator from
//! "disk".

use std::sync::Arc;

use commonware_codec::RangeCfg;
use commonware_runtime::{ReadOptions, buffer::paged::CacheRef};
use commonware_storage::journal::segmented::variable::{self as journal, Journal};
use commonware_storage::metadata::{self, Metadata};
use commonware_utils::sequence::U64;
use commonware_utils::{NZU16, NZUsize};
use veil_crypto::kdf::Seed;
use zeroize::Zeroizing;

use crate::core::SharedCore;
use crate::error::{NodeError, Result};

const KEY_SNAPSHOT: u64 = 0;
const KEY_SEED: u64 = 1;
/// Largest value the store reads back (a snapshot of a large state).
const MAX_VALUE_BYTES: usize = 1 << 30;
/// Heights per journal section (the unit the journal prunes).
const SECTION_HEIGHTS: u64 = 1_024;
/// Deltas may add up to the last snapshot's size, and at least this much, before the next snapshot.
const MIN_JOURNAL_BYTES: u64 = 8 << 20;

/// Seals and unseals data to this machine's TEE (the platform's sealing key).
pub trait Sealer: Send + Sync + 'static {
    /// Seals `data` so only this platform (same measurement) can open it.
    fn seal(&self, data: &[u8]) -> std::result::Result<Vec<u8>, String>;
    /// Opens what [`Sealer::seal`] produced.
    fn unseal(&self, sealed: &[u8]) -> std::result::Result<Zeroizing<Vec<u8>>, String>;
}

/// The platform's sealing (the simulated TEE's or a real one's) as a [`Sealer`].
pub struct PlatformSealer(pub Arc<dyn veil_platform::Platform>);

impl Sealer for PlatformSealer {
    fn seal(&self, data: &[u8]) -> std::result::Result<Vec<u8>, String> {
        self.0.seal(data).map_err(|e| e.to_string())
    }

    fn unseal(&self, sealed: &[u8]) -> std::result::Result<Zeroizing<Vec<u8>>, String> {
        self.0.unseal(sealed).map_err(|e| e.to_string())
    }
}

/// What a previous run left on disk.
pub struct Persisted {
    /// The ledger snapshot.
    pub snapshot: Vec<u8>,
    /// The oldest seed the key ring holds (see `KeyRing::seed`).
    pub seed: Seed,
    /// The epoch of `seed`.
    pub seed_epoch: u64,
    /// Ledger deltas journaled after the snapshot, oldest first (some may be older than the
    /// snapshot: `Ledger::apply_delta` skips those).
    pub deltas: Vec<Vec<u8>>,
}

/// The validator's durable store.
pub struct Store<E: commonware_storage::Context> {
    meta: Option<Metadata<E, U64, Vec<u8>>>,
    journal: Option<Journal<E, Vec<u8>>>,
    /// Deltas replayed at open, handed out by `load`.
    replayed: Vec<Vec<u8>>,
    sealer: Arc<dyn Sealer>,
    sealed_epoch: Option<u64>,
    /// Whether a snapshot is on disk (deltas need one under them).
    has_snapshot: bool,
    /// Size of the last snapshot, and bytes journaled since.
    snapshot_bytes: u64,
    journal_bytes: u64,
}

fn failed() -> NodeError {
    NodeError::Storage("the store failed earlier; restart the validator".into())
}

fn section(height: u64) -> u64 {
    height / SECTION_HEIGHTS
}

impl<E: commonware_storage::Context> Store<E> {
    /// Opens (or creates) the store in `partition`.
    pub async fn open(context: E, partition: String, sealer: Arc<dyn Sealer>) -> Result<Self> {
        let meta = Metadata::init(
            context.child("snapshot"),
            metadata::Config {
                partition: partition.clone(),
                codec_config: (RangeCfg::from(0..=MAX_VALUE_BYTES), ()),
            },
        )
        .await
        .map_err(|e| NodeError::Storage(format!("opening the validator store: {e}")))?;
        let journal_err = |e: commonware_storage::journal::Error| {
            NodeError::Storage(format!("reading the ledger journal: {e}"))
        };
        let journal = Journal::init(
            context.child("deltas"),
            journal::Config {
                partition: format!("{partition}-deltas"),
                compression: None,
                codec_config: (RangeCfg::from(0..=MAX_VALUE_BYTES), ()),
                page_cache: CacheRef::new(NZU16!(4_096), NZUsize!(64)),
                write_buffer: NZUsize!(1 << 16),
            },
        )
        .await
        .map_err(journal_err)?;
        // Replay now: the journal appends only to sections it replayed.
        let mut replay = journal
            .replay(0, 0, NZUsize!(1 << 16), ReadOptions::default())
            .await
            .map_err(journal_err)?;
        let mut replayed = Vec::new();
        while let Some(item) = replay.next().await {
            let (_section, _offset, _len, delta) = item.map_err(journal_err)?;
            replayed.push(delta);
        }
        let mut journal = replay.finish().map_err(journal_err)?;
        let snapshot = meta.get(&U64::new(KEY_SNAPSHOT)).map(Vec::len);
        if snapshot.is_none() && !replayed.is_empty() {
            // Deltas without a snapshot under them (cannot happen: the first write is a snapshot).
            journal = journal.clear().await.map_err(journal_err)?;
            replayed.clear();
        }
        Ok(Self {
            meta: Some(meta),
            journal: Some(journal),
            journal_bytes: replayed.iter().map(|d| d.len() as u64).sum(),
            replayed,
            sealer,
            sealed_epoch: None,
            has_snapshot: snapshot.is_some(),
            snapshot_bytes: snapshot.unwrap_or(0) as u64,
        })
    }

    fn meta(&self) -> Result<&Metadata<E, U64, Vec<u8>>> {
        self.meta.as_ref().ok_or_else(failed)
    }

    /// What a previous run persisted, if anything.
    pub fn load(&mut self) -> Result<Option<Persisted>> {
        let meta = self.meta()?;
        let (Some(snapshot), Some(sealed)) =
            (meta.get(&U64::new(KEY_SNAPSHOT)), meta.get(&U64::new(KEY_SEED)))
        else {
            return Ok(None);
        };
        let snapshot = snapshot.clone();
        let opened = self.sealer.unseal(sealed).map_err(|e| {
            NodeError::Storage(format!(
                "unsealing the network seed: {e} (was the data directory moved to another machine?)"
            ))
        })?;
        if opened.len() != 40 {
            return Err(NodeError::Storage(
                "the sealed network seed has the wrong length".into(),
            ));
        }
        let mut epoch = [0u8; 8];
        epoch.copy_from_slice(&opened[..8]);
        let mut seed = [0u8; 32];
        seed.copy_from_slice(&opened[8..]);
        let seed_epoch = u64::from_be_bytes(epoch);
        self.sealed_epoch = Some(seed_epoch);
        Ok(Some(Persisted {
            snapshot,
            seed: Seed::from_bytes(seed),
            seed_epoch,
            deltas: std::mem::take(&mut self.replayed),
        }))
    }

    /// Seals `seed` (for `epoch`) into the store (durable once this returns).
    pub async fn save_seed(&mut self, seed: &Seed, epoch: u64) -> Result<()> {
        let sealed = self.seal_seed(seed, epoch)?;
        let mut meta = self
            .meta
            .take()
            .ok_or_else(|| NodeError::Storage("the store failed earlier".into()))?;
        meta.put(U64::new(KEY_SEED), sealed);
        let meta = meta
            .sync()
            .await
            .map_err(|e| NodeError::Storage(format!("writing the sealed seed: {e}")))?;
        self.meta = Some(meta);
        self.sealed_epoch = Some(epoch);
        Ok(())
    }

    /// Persists the ledger after an executed block: its delta appended to the journal, or a full
    /// snapshot (with the ratcheted seed when the epoch moved, both in one atomic write, so a crash
    /// never pairs a snapshot with the wrong epoch's seed). Durable when this returns.
    pub async fn persist(&mut self, core: &SharedCore) -> Result<()> {
        enum Write {
            Delta(u64, Vec<u8>),
            Snapshot(u64, Vec<u8>, u64, Option<Seed>),
        }
        let budget = self.snapshot_bytes.max(MIN_JOURNAL_BYTES);
        let write = core.with_ledger(|l| {
            // The key ring keeps the previous epoch's seed (it still opens that epoch's
            // envelopes); persisting it lets a restart rebuild the same ring.
            let epoch = l.keys().seed_epoch();
            let seed_moved = self.sealed_epoch != Some(epoch);
            let delta = (self.has_snapshot && !seed_moved)
                .then(|| l.last_block_delta())
                .flatten()
                .filter(|d| self.journal_bytes + d.len() as u64 <= budget);
            match delta {
                Some(delta) => Write::Delta(l.height(), delta),
                None => Write::Snapshot(
                    l.height(),
                    l.snapshot(),
                    epoch,
                    seed_moved.then(|| Seed::from_bytes(*l.keys().seed().expose())),
                ),
            }
        });
        match write {
            Write::Delta(height, delta) => self.append_delta(height, delta).await,
            Write::Snapshot(height, snapshot, epoch, seed) => {
                self.write_snapshot(height, snapshot, epoch, seed).await
            }
        }
    }

    async fn append_delta(&mut self, height: u64, delta: Vec<u8>) -> Result<()> {
        let journal = self.journal.take().ok_or_else(failed)?;
        let err = |e: commonware_storage::journal::Error| {
            NodeError::Storage(format!("writing the ledger journal at height {height}: {e}"))
        };
        let (journal, _, _) = journal.append(section(height), &delta).await.map_err(err)?;
        let journal = journal.sync(section(height)).await.map_err(err)?;
        self.journal = Some(journal);
        self.journal_bytes += delta.len() as u64;
        Ok(())
    }

    async fn write_snapshot(
        &mut self,
        height: u64,
        snapshot: Vec<u8>,
        epoch: u64,
        seed: Option<Seed>,
    ) -> Result<()> {
        let sealed_seed = seed.map(|seed| self.seal_seed(&seed, epoch)).transpose()?;
        let mut meta = self.meta.take().ok_or_else(failed)?;
        if let Some(sealed) = sealed_seed {
            meta.put(U64::new(KEY_SEED), sealed);
        }
        let bytes = snapshot.len() as u64;
        meta.put(U64::new(KEY_SNAPSHOT), snapshot);
        let meta = meta
            .sync()
            .await
            .map_err(|e| NodeError::Storage(format!("writing the ledger snapshot: {e}")))?;
        self.meta = Some(meta);
        self.sealed_epoch = Some(epoch);
        self.has_snapshot = true;
        self.snapshot_bytes = bytes;
        self.journal_bytes = 0;
        // Deltas below this height are in the snapshot now (a restart skips those still left in
        // the snapshot's own section).
        let journal = self.journal.take().ok_or_else(failed)?;
        let (journal, _) = journal
            .prune(section(height))
            .await
            .map_err(|e| NodeError::Storage(format!("pruning the ledger journal: {e}")))?;
        self.journal = Some(journal);
        Ok(())
    }

    fn seal_seed(&self, seed: &Seed, epoch: u64) -> Result<Vec<u8>> {
        let mut plain = Zeroizing::new(Vec::with_capacity(40));
        plain.extend_from_slice(&epoch.to_be_bytes());
        plain.extend_from_slice(seed.expose());
        self.sealer
            .seal(&plain)
            .map_err(|e| NodeError::Storage(format!("sealing the network seed: {e}")))
    }
}
