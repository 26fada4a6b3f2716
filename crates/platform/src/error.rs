//! The one error type of this crate.

use std::path::{Path, PathBuf};

use thiserror::Error;

/// What went wrong producing evidence or sealing. Messages name the path or value and what to do.
#[derive(Debug, Error)]
pub enum PlatformError {
    /// The simulated TEE was asked to start on a machine with a real TEE interface.
    #[error(
        "refusing to start the simulated TEE: a real TEE interface exists at {0} \
         (use the real backend, e.g. `tdx`; simulated evidence proves nothing)"
    )]
    RealTeePresent(PathBuf),
    /// No TDX configfs-tsm interface.
    #[error(
        "no TDX quote interface at {0} (is this an Intel TDX guest, with configfs mounted at \
         /sys/kernel/config and the tsm report module loaded?)"
    )]
    NoTee(PathBuf),
    /// The configfs-tsm entry is served by another provider.
    #[error("configfs-tsm report provider is {found:?}, expected \"tdx_guest\" (this is not a TDX guest)")]
    WrongProvider {
        /// The provider the kernel reported.
        found: String,
    },
    /// Someone else wrote to the configfs-tsm entry while this process used it.
    #[error(
        "configfs-tsm generation went from {before} to {after}, expected {expected}: another writer \
         used the same report entry, so the quote may not hold our report data; retry"
    )]
    GenerationMismatch {
        /// Generation before writing the report data.
        before: u64,
        /// Generation after reading the quote.
        after: u64,
        /// `before + 1`.
        expected: u64,
    },
    /// The kernel did not answer in time.
    #[error("timed out after {secs} s waiting for {what}")]
    Timeout {
        /// What was awaited.
        what: String,
        /// How long.
        secs: u64,
    },
    /// The backend cannot do this yet.
    #[error("{0} is not supported yet")]
    Unsupported(&'static str),
    /// A filesystem operation failed.
    #[error("{what} {}: {source}", path.display())]
    Io {
        /// What was being done.
        what: &'static str,
        /// On which path.
        path: PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
    /// The development key file is unusable.
    #[error("simulated TEE dev key {}: {why}", path.display())]
    DevKey {
        /// The key file.
        path: PathBuf,
        /// What is wrong with it.
        why: String,
    },
    /// A configuration value is wrong.
    #[error("platform configuration: {0}")]
    Config(String),
    /// The kernel returned something that is not a quote.
    #[error("the platform returned unusable evidence: {0}")]
    BadEvidence(String),
    /// Cryptography failed (sealing, key generation).
    #[error(transparent)]
    Crypto(#[from] veil_crypto::CryptoError),
}

impl PlatformError {
    pub(crate) fn io(what: &'static str, path: &Path, source: std::io::Error) -> Self {
        Self::Io {
            what,
            path: path.to_path_buf(),
            source,
        }
    }
}

/// Result alias for this crate.
pub type Result<T, E = PlatformError> = std::result::Result<T, E>;
