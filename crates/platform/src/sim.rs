//! The simulated TEE: development evidence signed by a key in the data directory.
//!
//! Its measurement is `SHA-256("veil/v1/sim-measurement" | SHA-256(executable) | configuration)`, so
//! changing the code or its configuration changes it, as a real TEE's would. Its evidence proves
//! nothing (whoever reads the key file can sign anything), every verifier marks it `simulated`, and the
//! default policy rejects it. It refuses to start on a machine with a real TEE interface, so a
//! misconfigured production node fails instead of silently running unprotected.

use std::fs::{self, OpenOptions};
use std::io::{Read, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};
use veil_attest::sim::{SIM_MEASUREMENT, SimEvidence};
use veil_attest::{HexBytes, Measurements};
use veil_crypto::sign::SigningKey;
use zeroize::Zeroizing;

use crate::{Platform, PlatformError, PlatformKind, RawEvidence, Result, unix_now};

/// Paths (relative to the probed root) whose presence means a real TEE interface exists.
pub const REAL_TEE_PATHS: [&str; 3] = ["sys/kernel/config/tsm/report", "dev/tdx_guest", "dev/sev-guest"];
/// The dev key's file name in the data directory (a raw 32-byte Ed25519 seed, mode 0600).
pub const DEV_KEY_FILE: &str = "sim-dev-key";
/// Domain tag of the simulated measurement.
pub const MEASUREMENT_TAG: &str = "veil/v1/sim-measurement";
const SEAL_PURPOSE: &str = "veil/v1/sim-seal";
const SEAL_AAD: &[u8] = b"veil/v1/sim-sealed";

/// Settings of the simulated TEE.
#[derive(Debug, Clone)]
pub struct SimConfig {
    /// Where the dev key lives (created on first use).
    pub data_dir: PathBuf,
    /// The configuration that the measurement covers (e.g. the node's config file bytes).
    pub config: Vec<u8>,
    /// The root under which real TEE interfaces are probed (`/`; tests use a temporary folder).
    pub probe_root: PathBuf,
    /// The executable to measure (`None`: the running one).
    pub executable: Option<PathBuf>,
}

impl SimConfig {
    /// Defaults: the running executable, empty configuration, probe `/`.
    pub fn new(data_dir: impl Into<PathBuf>) -> Self {
        Self {
            data_dir: data_dir.into(),
            config: Vec::new(),
            probe_root: PathBuf::from("/"),
            executable: None,
        }
    }
}

/// The simulated TEE.
pub struct SimPlatform {
    key: SigningKey,
    measurement: [u8; 32],
    seal_key: Zeroizing<[u8; 32]>,
}

impl std::fmt::Debug for SimPlatform {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SimPlatform")
            .field("dev_key", &self.key.verifying_key())
            .field("measurement", &hex::encode(self.measurement))
            .finish_non_exhaustive()
    }
}

/// Returns the first real TEE interface found under `root`.
pub fn probe_real_tee(root: &Path) -> Option<PathBuf> {
    REAL_TEE_PATHS.iter().map(|p| root.join(p)).find(|p| p.exists())
}

/// The simulated measurement of `executable` with `config`.
pub fn measure(executable: &Path, config: &[u8]) -> Result<[u8; 32]> {
    let mut file =
        fs::File::open(executable).map_err(|e| PlatformError::io("opening executable", executable, e))?;
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = file
            .read(&mut buf)
            .map_err(|e| PlatformError::io("reading executable", executable, e))?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
    }
    let exe_digest: [u8; 32] = hasher.finalize().into();
    Ok(veil_crypto::hash::sha256_tagged(
        MEASUREMENT_TAG,
        &[&exe_digest, config],
    ))
}

fn load_or_create_key(dir: &Path) -> Result<SigningKey> {
    fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .map_err(|e| PlatformError::io("creating data directory", dir, e))?;
    let path = dir.join(DEV_KEY_FILE);
    match OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&path)
    {
        Ok(mut file) => {
            let key = SigningKey::generate()?;
            file.write_all(key.to_bytes().as_ref())
                .and_then(|()| file.sync_all())
                .map_err(|e| PlatformError::io("writing dev key", &path, e))?;
            tracing::warn!(path = %path.display(), public_key = %key.verifying_key(), "created a new simulated-TEE dev key");
            Ok(key)
        }
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
            let meta = fs::metadata(&path).map_err(|e| PlatformError::io("reading dev key", &path, e))?;
            let mode = meta.permissions().mode() & 0o777;
            if mode & 0o077 != 0 {
                return Err(PlatformError::DevKey {
                    path,
                    why: format!("readable by others (mode {mode:o}); run `chmod 600` on it"),
                });
            }
            let bytes =
                Zeroizing::new(fs::read(&path).map_err(|e| PlatformError::io("reading dev key", &path, e))?);
            let seed: Zeroizing<[u8; 32]> =
                Zeroizing::new(bytes.as_slice().try_into().map_err(|_| PlatformError::DevKey {
                    path: path.clone(),
                    why: format!("{} bytes, expected 32", bytes.len()),
                })?);
            Ok(SigningKey::from_bytes(&seed))
        }
        Err(e) => Err(PlatformError::io("creating dev key", &path, e)),
    }
}

impl SimPlatform {
    /// Starts the simulated TEE: refuses where a real TEE exists, measures, loads or creates the key.
    pub fn start(config: SimConfig) -> Result<Self> {
        if let Some(found) = probe_real_tee(&config.probe_root) {
            return Err(PlatformError::RealTeePresent(found));
        }
        let executable = match &config.executable {
            Some(path) => path.clone(),
            None => std::env::current_exe().map_err(|e| {
                PlatformError::io("locating the running executable", Path::new("<current exe>"), e)
            })?,
        };
        let measurement = measure(&executable, &config.config)?;
        let key = load_or_create_key(&config.data_dir)?;
        let seal_key = veil_crypto::kdf::derive(key.to_bytes().as_ref(), SEAL_PURPOSE, 0);
        tracing::warn!(
            measurement = %hex::encode(measurement),
            dev_key = %key.verifying_key(),
            "SIMULATED TEE: this node runs WITHOUT hardware protection. Its operator can read every \
             prompt, output, key and model it handles, and its evidence proves nothing. For development \
             and tests only; production policies reject it."
        );
        Ok(Self {
            key,
            measurement,
            seal_key,
        })
    }

    /// Evidence as produced at `now` (unix seconds).
    pub fn evidence_at(&self, report_data: &[u8; 64], now: u64) -> RawEvidence {
        RawEvidence::Simulated(SimEvidence::sign(&self.key, self.measurement, *report_data, now).to_bytes())
    }

    /// The development public key that signs this platform's evidence.
    pub fn dev_public_key(&self) -> [u8; 32] {
        self.key.verifying_key().to_bytes()
    }

    /// The simulated measurement.
    pub fn measurement_bytes(&self) -> [u8; 32] {
        self.measurement
    }
}

impl Platform for SimPlatform {
    fn kind(&self) -> PlatformKind {
        PlatformKind::Sim
    }

    fn evidence(&self, report_data: &[u8; 64]) -> Result<RawEvidence> {
        Ok(self.evidence_at(report_data, unix_now()))
    }

    fn measurement(&self) -> Result<Measurements> {
        let mut m = Measurements::new();
        m.insert(SIM_MEASUREMENT.to_string(), HexBytes::from(&self.measurement[..]));
        Ok(m)
    }

    fn seal(&self, data: &[u8]) -> Result<Vec<u8>> {
        Ok(veil_crypto::aead::seal(&self.seal_key, SEAL_AAD, data)?)
    }

    fn unseal(&self, sealed: &[u8]) -> Result<Zeroizing<Vec<u8>>> {
        Ok(Zeroizing::new(veil_crypto::aead::open(
            &self.seal_key,
            SEAL_AAD,
            sealed,
        )?))
    }
}
