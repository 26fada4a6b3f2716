//! Veil's attested inference worker: enclave keys bound into evidence, provisioned model bundles decrypted into memory only, sealed requests, sealed response frames and signed receipts.
//!
//! A [`Worker`] runs inside a TEE (the simulated one in development). At start it creates its enclave
//! keys: an X25519 key that clients seal requests to, and an Ed25519 key that signs receipts. It serves
//! the protocol of `veil-types` over HTTP ([`Worker::router`]):
//!
//! - `GET /v1/attestation?nonce=HEX`: evidence whose report data binds the nonce and both public keys;
//! - `POST /v1/provision`: a model's data key, sealed to the enclave key; the worker then fetches the
//!   model's bundle from its [`BundleSource`], decrypts it into a sealed memory file and loads it;
//! - `POST /v1/infer`: a sealed request, answered with sealed, sequence-numbered frames ending with a
//!   signed receipt, or with an encrypted error.
//!
//! What the operator sees: request and response sizes (padded to buckets) and timings (a streamed answer's
//! frames come at most one per [`WorkerConfig::stream_interval`]). Logs hold sizes, token counts and
//! durations only, never prompts, answers, parameters or model bytes.
#![forbid(unsafe_code)]
#![cfg_attr(test, allow(clippy::unwrap_used, clippy::expect_used))]

mod coalesce;
mod error;
mod replay;
mod service;

use std::collections::BTreeMap;
use std::io::Read;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use veil_blobs::{BlobAddress, BlobStore};
use veil_bundle::{BundleInfo, DataKey};
use veil_crypto::seal::{HpkePublicKey, HpkeSecretKey};
use veil_crypto::sign::SigningKey;
use veil_engine::{Engine, LlamaConfig, LlamaEngine, ModelSource};
use veil_platform::{Platform, PlatformKind};

pub use error::{Result, WorkerError};
pub use replay::{Refusal, ReplayGuard};
pub use service::RunningWorker;

/// A model this worker serves: its public name and the content address of its encrypted bundle.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ModelSpec {
    pub name: String,
    pub bundle: BlobAddress,
}

/// How a worker runs.
#[derive(Debug, Clone)]
pub struct WorkerConfig {
    /// Where to listen (default `127.0.0.1:0`: a port chosen by the OS).
    pub listen: SocketAddr,
    /// The models it serves; each becomes ready once its key is provisioned.
    pub models: Vec<ModelSpec>,
    /// How each model is run.
    pub engine: LlamaConfig,
    /// A request's timestamp may differ from the worker's clock by at most this much (default 60 s).
    pub window_ms: u64,
    /// How many recent nonces are remembered (default 1 Mi); when full of unexpired nonces, requests are
    /// refused rather than risking a replay.
    pub replay_capacity: usize,
    /// A streamed answer goes out at most one frame per this interval: pieces produced sooner after the
    /// last frame wait and go with the next (default [`DEFAULT_STREAM_INTERVAL`]; zero sends a frame per
    /// piece). The first piece and the end are never held.
    pub stream_interval: Duration,
}

/// 20 ms: no piece waits longer than that plus one token, a smooth stream to the eye (about a screen
/// refresh), and at the ~90 tokens/s a small model decodes on two cores the worker seals and sends half as
/// many frames (at a GPU's hundreds of tokens/s, a fraction); slower decoding is not held at all.
pub const DEFAULT_STREAM_INTERVAL: Duration = Duration::from_millis(20);

impl Default for WorkerConfig {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from(([127, 0, 0, 1], 0)),
            models: Vec::new(),
            engine: LlamaConfig::default(),
            window_ms: 60_000,
            replay_capacity: 1 << 20,
            stream_interval: DEFAULT_STREAM_INTERVAL,
        }
    }
}

/// A model decrypted from its bundle into memory and loaded, every check passed.
#[derive(Debug)]
pub struct LoadedBundle {
    pub engine: LlamaEngine,
    pub info: BundleInfo,
    /// From the call until the whole bundle was in memory and had passed every check (the engine was
    /// parsing the model's metadata meanwhile, and used its weights only from then on).
    pub decrypted: Duration,
}

/// What a worker does with a bundle once it has its data key: decrypts it into a sealed memory file
/// ([`veil_bundle::open_to_memfd_and`]) while the engine starts loading it (parsing its metadata as it
/// arrives; the weights only once every check passed). The engine is returned only if the bundle passed
/// every check (each chunk authenticated, size, the SHA-256 sealed with the model, and the blob store's
/// address check when `bundle` is its reader); otherwise it is dropped and the bundle's error returned.
/// `veil bench confidential` times this same function.
pub fn load_bundle(
    bundle: impl Read + Send,
    key: &DataKey,
    name: &str,
    engine: &LlamaConfig,
) -> Result<LoadedBundle> {
    let started = Instant::now();
    let mut watch = None;
    let (engine, info) = veil_bundle::open_to_memfd_and(bundle, key, name, |pending| {
        watch = Some(pending.watch());
        LlamaEngine::load(ModelSource::Pending(pending), engine.clone())
    })?;
    let released = watch.and_then(|w| w.ready_at());
    Ok(LoadedBundle {
        engine: engine?,
        info,
        decrypted: released.map_or(Duration::ZERO, |at| at.saturating_duration_since(started)),
    })
}

/// Where a worker finds encrypted model bundles.
pub trait BundleSource: Send + Sync {
    /// A reader of the bundle at `address`.
    fn open(&self, address: &BlobAddress) -> Result<Box<dyn Read + Send>>;
}

/// Bundles from a blob store (a local directory, or an S3-compatible store).
#[derive(Debug, Clone)]
pub struct BlobBundles(pub Arc<dyn BlobStore>);

impl BundleSource for BlobBundles {
    fn open(&self, address: &BlobAddress) -> Result<Box<dyn Read + Send>> {
        Ok(Box::new(self.0.get(address)?))
    }
}

/// Where a worker gets model data keys from, besides `POST /v1/provision` (the ledger's KMS, later).
pub trait KeySource: Send + Sync {
    /// The data key of `bundle` sealed to `worker` with `veil_bundle::seal_key`, if this source has it.
    fn sealed_key(
        &self,
        model: &str,
        bundle: &BlobAddress,
        worker: &HpkePublicKey,
    ) -> Result<Option<Vec<u8>>>;
}

/// No key source: keys arrive only through `POST /v1/provision`.
#[derive(Debug, Clone, Copy, Default)]
pub struct ProvisionOnly;

impl KeySource for ProvisionOnly {
    fn sealed_key(&self, _: &str, _: &BlobAddress, _: &HpkePublicKey) -> Result<Option<Vec<u8>>> {
        Ok(None)
    }
}

/// The keys generated inside the enclave at start; they never leave it.
pub(crate) struct Enclave {
    pub platform: Box<dyn Platform>,
    pub hpke: HpkeSecretKey,
    pub signing: SigningKey,
    pub keys_hash: [u8; 32],
    pub measurement: Vec<u8>,
    pub simulated: bool,
}

pub(crate) struct Slot {
    pub bundle: BlobAddress,
    pub engine: Option<Arc<dyn Engine>>,
}

pub(crate) struct State {
    pub enclave: Enclave,
    pub bundles: Arc<dyn BundleSource>,
    pub models: RwLock<BTreeMap<String, Slot>>,
    pub replay: Mutex<ReplayGuard>,
    pub config: WorkerConfig,
}

/// An attested inference worker.
#[derive(Clone)]
pub struct Worker {
    pub(crate) state: Arc<State>,
}

impl std::fmt::Debug for Worker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Worker")
            .field("hpke_public_key", &self.hpke_public_key())
            .field("simulated", &self.state.enclave.simulated)
            .finish_non_exhaustive()
    }
}

impl Worker {
    /// Creates the enclave keys on `platform` and prepares to serve `config.models` from `bundles`.
    pub fn new(
        config: WorkerConfig,
        platform: Box<dyn Platform>,
        bundles: Arc<dyn BundleSource>,
    ) -> Result<Self> {
        let hpke = HpkeSecretKey::generate()?;
        let signing = SigningKey::generate()?;
        let keys_hash =
            veil_attest::keys_hash(&[&hpke.public_key().to_bytes(), &signing.verifying_key().to_bytes()]);
        let measurement = platform
            .measurement()?
            .into_values()
            .next()
            .map(|m| m.0)
            .unwrap_or_default();
        let simulated = platform.kind() == PlatformKind::Sim;
        let mut models = BTreeMap::new();
        for spec in &config.models {
            if models
                .insert(
                    spec.name.clone(),
                    Slot {
                        bundle: spec.bundle,
                        engine: None,
                    },
                )
                .is_some()
            {
                return Err(WorkerError::Config(format!(
                    "model {:?} is configured twice",
                    spec.name
                )));
            }
        }
        tracing::info!(
            hpke_public_key = %hex::encode(hpke.public_key().to_bytes()),
            signing_public_key = %signing.verifying_key(),
            platform = %platform.kind(),
            models = models.len(),
            "worker enclave keys created"
        );
        let replay = Mutex::new(ReplayGuard::new(config.window_ms, config.replay_capacity));
        Ok(Self {
            state: Arc::new(State {
                enclave: Enclave {
                    platform,
                    hpke,
                    signing,
                    keys_hash,
                    measurement,
                    simulated,
                },
                bundles,
                models: RwLock::new(models),
                replay,
                config,
            }),
        })
    }

    /// The key clients seal requests to.
    pub fn hpke_public_key(&self) -> HpkePublicKey {
        self.state.enclave.hpke.public_key()
    }

    /// The key that signs receipts.
    pub fn signing_public_key(&self) -> veil_crypto::sign::VerifyingKey {
        self.state.enclave.signing.verifying_key()
    }

    /// Whether this worker runs on the simulated TEE.
    pub fn simulated(&self) -> bool {
        self.state.enclave.simulated
    }

    /// Opens a data key sealed to this worker for `model`'s bundle, decrypts the bundle into memory and
    /// loads it. Blocking (seconds for a large model): call it from a blocking thread.
    pub fn provision(&self, model: &str, bundle: &BlobAddress, sealed_key: &[u8]) -> Result<()> {
        {
            let models = self.read_models()?;
            let slot = models
                .get(model)
                .ok_or_else(|| WorkerError::UnknownModel(model.to_owned()))?;
            if slot.bundle != *bundle {
                return Err(WorkerError::Config(format!(
                    "model {model:?} is served from bundle {}, not {bundle}",
                    slot.bundle
                )));
            }
            if slot.engine.is_some() {
                return Ok(());
            }
        }
        let key: DataKey = veil_bundle::open_key(&self.state.enclave.hpke, bundle, sealed_key)?;
        let started = Instant::now();
        let reader = self.state.bundles.open(bundle)?;
        let loaded = load_bundle(reader, &key, model, &self.state.config.engine)?;
        drop(key);
        tracing::info!(
            bundle = %bundle,
            bytes = loaded.info.header.plaintext_len,
            ms = started.elapsed().as_millis() as u64,
            decrypted_ms = loaded.decrypted.as_millis() as u64,
            "model decrypted into memory and loaded"
        );
        self.serve_engine(model, Arc::new(loaded.engine))
    }

    /// Serves `model` with an engine loaded elsewhere (tests, benchmarks); the model must be configured.
    pub fn serve_engine(&self, model: &str, engine: Arc<dyn Engine>) -> Result<()> {
        let mut models = self
            .state
            .models
            .write()
            .map_err(|_| WorkerError::Internal("model table lock poisoned".into()))?;
        let slot = models
            .get_mut(model)
            .ok_or_else(|| WorkerError::UnknownModel(model.to_owned()))?;
        slot.engine = Some(engine);
        Ok(())
    }

    /// The engine serving `model`, once it is ready: for benchmarks that compare it called directly with
    /// the same engine behind the protocol.
    pub fn engine(&self, model: &str) -> Option<Arc<dyn Engine>> {
        self.read_models().ok()?.get(model)?.engine.clone()
    }

    /// Asks `source` for the keys of models that are not ready yet and provisions those it has; returns
    /// how many became ready.
    pub fn fetch_keys(&self, source: &dyn KeySource) -> Result<usize> {
        let pending: Vec<(String, BlobAddress)> = self
            .read_models()?
            .iter()
            .filter(|(_, s)| s.engine.is_none())
            .map(|(n, s)| (n.clone(), s.bundle))
            .collect();
        let mut ready = 0;
        for (name, bundle) in pending {
            if let Some(sealed) = source.sealed_key(&name, &bundle, &self.hpke_public_key())? {
                self.provision(&name, &bundle, &sealed)?;
                ready += 1;
            }
        }
        Ok(ready)
    }

    pub(crate) fn read_models(&self) -> Result<std::sync::RwLockReadGuard<'_, BTreeMap<String, Slot>>> {
        self.state
            .models
            .read()
            .map_err(|_| WorkerError::Internal("model table lock poisoned".into()))
    }
}
