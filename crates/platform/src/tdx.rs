//! Intel TDX quotes through Linux configfs-tsm (`Documentation/ABI/testing/configfs-tsm-report`).
//!
//! For each quote: create a fresh entry `<root>/sys/kernel/config/tsm/report/<name>/`, check that its
//! `provider` is `tdx_guest`, read `generation`, write the 64 bytes of report data to `inblob`, read the
//! quote from `outblob`, check that `generation` advanced by exactly one (nobody else wrote to the
//! entry), and remove the entry. Written for Veil; the root is configurable so tests can play the kernel
//! in a temporary folder.

use std::fs::{self, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use veil_attest::{Measurements, TeeKind};
use zeroize::Zeroizing;

use crate::{Platform, PlatformError, PlatformKind, RawEvidence, Result};

/// The configfs-tsm report folder, relative to the root.
pub const TSM_REPORT_DIR: &str = "sys/kernel/config/tsm/report";
/// The provider name of Intel TDX guests.
pub const TDX_PROVIDER: &str = "tdx_guest";

/// Settings of the TDX backend.
#[derive(Debug, Clone)]
pub struct TdxConfig {
    /// The filesystem root that holds `sys/kernel/config` (`/`; tests use a temporary folder).
    pub root: PathBuf,
    /// How long to wait for the kernel (quote generation takes milliseconds to a few seconds).
    pub timeout: Duration,
}

impl Default for TdxConfig {
    fn default() -> Self {
        Self {
            root: PathBuf::from("/"),
            timeout: Duration::from_secs(30),
        }
    }
}

/// Intel TDX through configfs-tsm. Sealing is not supported yet (TDX has no sealing key of its own;
/// it will come from a key-management service).
#[derive(Debug)]
pub struct TdxPlatform {
    report_dir: PathBuf,
    timeout: Duration,
}

static ENTRY_COUNTER: AtomicU64 = AtomicU64::new(0);

/// Removes the report entry when the quote is done (or failed).
struct Entry(PathBuf);

impl Drop for Entry {
    fn drop(&mut self) {
        // On configfs, rmdir removes an entry with its attributes. (Elsewhere, such as a test's fake
        // tree, the attributes are plain files: remove them too.)
        if fs::remove_dir(&self.0).is_err()
            && let Err(e) = fs::remove_dir_all(&self.0)
        {
            tracing::warn!(entry = %self.0.display(), error = %e, "could not remove configfs-tsm report entry");
        }
    }
}

/// Waits for `path` to exist. On configfs, an entry's attributes exist as soon as it is created, so this
/// returns at once; the bound covers filesystems that populate it asynchronously.
fn wait_for(path: &Path, deadline: Instant, timeout: Duration) -> Result<()> {
    while !path.exists() {
        if Instant::now() >= deadline {
            return Err(PlatformError::Timeout {
                what: path.display().to_string(),
                secs: timeout.as_secs(),
            });
        }
        std::thread::sleep(Duration::from_millis(1));
    }
    Ok(())
}

fn read_text(path: &Path, what: &'static str) -> Result<String> {
    fs::read_to_string(path)
        .map(|s| s.trim().to_string())
        .map_err(|e| PlatformError::io(what, path, e))
}

fn read_generation(path: &Path) -> Result<u64> {
    let text = read_text(path, "reading configfs-tsm generation")?;
    text.parse()
        .map_err(|_| PlatformError::BadEvidence(format!("configfs-tsm generation {text:?} is not a number")))
}

impl TdxPlatform {
    /// Opens the TDX backend: the configfs-tsm report folder must exist.
    pub fn start(config: TdxConfig) -> Result<Self> {
        let report_dir = config.root.join(TSM_REPORT_DIR);
        if !report_dir.is_dir() {
            return Err(PlatformError::NoTee(report_dir));
        }
        tracing::info!(report_dir = %report_dir.display(), "Intel TDX platform (configfs-tsm)");
        Ok(Self {
            report_dir,
            timeout: config.timeout,
        })
    }

    /// Produces a TDX quote over `report_data`.
    pub fn quote(&self, report_data: &[u8; 64]) -> Result<Vec<u8>> {
        let deadline = Instant::now() + self.timeout;
        let nonce = veil_crypto::rand::array::<8>()?;
        let name = format!(
            "veil-{}-{}-{}",
            std::process::id(),
            ENTRY_COUNTER.fetch_add(1, Ordering::Relaxed),
            hex::encode(nonce)
        );
        let path = self.report_dir.join(name);
        fs::create_dir(&path)
            .map_err(|e| PlatformError::io("creating configfs-tsm report entry", &path, e))?;
        let entry = Entry(path);

        let provider_path = entry.0.join("provider");
        wait_for(&provider_path, deadline, self.timeout)?;
        let provider = read_text(&provider_path, "reading configfs-tsm provider")?;
        if provider != TDX_PROVIDER {
            return Err(PlatformError::WrongProvider { found: provider });
        }
        let generation_path = entry.0.join("generation");
        let before = read_generation(&generation_path)?;

        let inblob = entry.0.join("inblob");
        OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(false)
            .open(&inblob)
            .and_then(|mut f| f.write_all(report_data))
            .map_err(|e| PlatformError::io("writing report data to", &inblob, e))?;

        let outblob = entry.0.join("outblob");
        let quote = loop {
            // Reading outblob makes the kernel generate the quote (it blocks until done).
            match fs::read(&outblob) {
                Ok(q) if !q.is_empty() => break q,
                Ok(_) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(PlatformError::io("reading quote from", &outblob, e)),
            }
            if Instant::now() >= deadline {
                return Err(PlatformError::Timeout {
                    what: outblob.display().to_string(),
                    secs: self.timeout.as_secs(),
                });
            }
            std::thread::sleep(Duration::from_millis(1));
        };

        let after = read_generation(&generation_path)?;
        let expected = before.saturating_add(1);
        if after != expected {
            return Err(PlatformError::GenerationMismatch {
                before,
                after,
                expected,
            });
        }
        drop(entry);
        tracing::debug!(bytes = quote.len(), "TDX quote generated");
        Ok(quote)
    }
}

impl Platform for TdxPlatform {
    fn kind(&self) -> PlatformKind {
        PlatformKind::Tdx
    }

    fn evidence(&self, report_data: &[u8; 64]) -> Result<RawEvidence> {
        self.quote(report_data).map(RawEvidence::TdxQuote)
    }

    fn measurement(&self) -> Result<Measurements> {
        let quote = self.quote(&[0u8; 64])?;
        match veil_attest::dcap::quote_measurements_unverified(&quote) {
            Ok((TeeKind::IntelTdx, m)) => Ok(m),
            Ok((tee, _)) => Err(PlatformError::BadEvidence(format!(
                "configfs-tsm returned a {tee} quote, not TDX"
            ))),
            Err(e) => Err(PlatformError::BadEvidence(e.reason())),
        }
    }

    fn seal(&self, _data: &[u8]) -> Result<Vec<u8>> {
        Err(PlatformError::Unsupported("sealing on Intel TDX"))
    }

    fn unseal(&self, _sealed: &[u8]) -> Result<Zeroizing<Vec<u8>>> {
        Err(PlatformError::Unsupported("unsealing on Intel TDX"))
    }
}
