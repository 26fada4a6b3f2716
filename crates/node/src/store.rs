//! Durable validator state: the ledger snapshot after the last executed block (ciphertext state and
//! public metadata only) and the network seed, sealed under the platform's sealing key.
//!
//! Both live in one Commonware `Metadata` store (written atomically: a crash leaves the previous
//! complete version), on the runtime's storage, so the deterministic simulator can crash and
//! restart a validator from "disk".

use std::sync::Arc;

use commonware_codec::RangeCfg;
use commonware_storage::metadata::{self, Metadata};
use commonware_utils::sequence::U64;
use veil_crypto::kdf::Seed;
use zeroize::Zeroizing;

use crate::core::SharedCore;
use crate::error::{NodeError, Result};

const KEY_SNAPSHOT: u64 = 0;
const KEY_SEED: u64 = 1;
/// Largest value the store reads back (a snapshot of a large state).
const MAX_VALUE_BYTES: usize = 1 << 30;

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
}

/// The validator's durable store.
pub struct Store<E: commonware_storage::Context> {
    meta: Option<Metadata<E, U64, Vec<u8>>>,
    sealer: Arc<dyn Sealer>,
    sealed_epoch: Option<u64>,
}

impl<E: commonware_storage::Context> Store<E> {
    /// Opens (or creates) the store in `partition`.
    pub async fn open(context: E, partition: String, sealer: Arc<dyn Sealer>) -> Result<Self> {
        let meta = Metadata::init(
            context,
            metadata::Config {
                partition,
                codec_config: (RangeCfg::from(0..=MAX_VALUE_BYTES), ()),
            },
        )
        .await
        .map_err(|e| NodeError::Storage(format!("opening the validator store: {e}")))?;
        Ok(Self {
            meta: Some(meta),
            sealer,
            sealed_epoch: None,
        })
    }

    fn meta(&self) -> Result<&Metadata<E, U64, Vec<u8>>> {
        self.meta
            .as_ref()
            .ok_or_else(|| NodeError::Storage("the store failed earlier; restart the validator".into()))
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

    /// Persists the ledger after an executed block, with the ratcheted seed when the epoch moved:
    /// both in one atomic write, so a crash never pairs a snapshot with the wrong epoch's seed.
    pub async fn persist(&mut self, core: &SharedCore) -> Result<()> {
        // The key ring keeps the previous epoch's seed (it still opens that epoch's envelopes);
        // persisting it lets a restart rebuild the same ring.
        let (snapshot, epoch, seed) = core.with_ledger(|l| {
            let epoch = l.keys().seed_epoch();
            let seed =
                (self.sealed_epoch != Some(epoch)).then(|| Seed::from_bytes(*l.keys().seed().expose()));
            (l.snapshot(), epoch, seed)
        });
        let sealed_seed = seed.map(|seed| self.seal_seed(&seed, epoch)).transpose()?;
        let mut meta = self
            .meta
            .take()
            .ok_or_else(|| NodeError::Storage("the store failed earlier".into()))?;
        if let Some(sealed) = sealed_seed {
            meta.put(U64::new(KEY_SEED), sealed);
        }
        meta.put(U64::new(KEY_SNAPSHOT), snapshot);
        let meta = meta
            .sync()
            .await
            .map_err(|e| NodeError::Storage(format!("writing the ledger snapshot: {e}")))?;
        self.meta = Some(meta);
        self.sealed_epoch = Some(epoch);
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
