//! Produces TEE evidence and seals data on the local platform (simulated TEE, Intel TDX).
//!
//! A [`Platform`] produces evidence over 64 bytes of report data (see `veil_attest::report_data`),
//! reports its own measurement, and seals data to itself. Backends are picked by configuration
//! ([`PlatformConfig`], [`open`]):
//!
//! - [`sim::SimPlatform`]: a development stand-in that signs with a key in the data directory. It
//!   proves nothing, says so loudly, and refuses to start where a real TEE interface exists.
//! - [`tdx::TdxPlatform`]: Intel TDX quotes through Linux configfs-tsm.
//!
//! Verification lives in `veil-attest`; this crate only produces.
#![forbid(unsafe_code)]
#![cfg_attr(test, allow(clippy::unwrap_used, clippy::expect_used))]

mod error;
pub mod sim;
pub mod tdx;

use std::fmt;
use std::str::FromStr;

pub use error::{PlatformError, Result};
use veil_attest::Measurements;
use zeroize::Zeroizing;

/// Which backend a platform is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum PlatformKind {
    /// The simulated TEE (development only).
    Sim,
    /// Intel TDX through configfs-tsm.
    Tdx,
}

impl fmt::Display for PlatformKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Sim => "sim",
            Self::Tdx => "tdx",
        })
    }
}

impl FromStr for PlatformKind {
    type Err = PlatformError;

    fn from_str(s: &str) -> Result<Self> {
        match s {
            "sim" => Ok(Self::Sim),
            "tdx" => Ok(Self::Tdx),
            other => Err(PlatformError::Config(format!(
                "unknown platform {other:?} (known: sim, tdx)"
            ))),
        }
    }
}

/// Evidence as a platform produces it, before anyone attaches what a verifier needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RawEvidence {
    /// Simulated-TEE evidence (`VEILSIM1…`), complete in itself.
    Simulated(Vec<u8>),
    /// A raw Intel TDX quote; a verifier needs Intel's collateral for it (from a PCCS).
    TdxQuote(Vec<u8>),
}

impl RawEvidence {
    /// The raw bytes.
    pub fn as_bytes(&self) -> &[u8] {
        match self {
            Self::Simulated(b) | Self::TdxQuote(b) => b,
        }
    }

    /// Verifiable evidence: simulated evidence as is, a TDX quote with its `collateral`.
    pub fn into_evidence(self, collateral: Option<veil_attest::Collateral>) -> Result<veil_attest::Evidence> {
        match (self, collateral) {
            (Self::Simulated(b), _) => Ok(veil_attest::Evidence::Simulated(b)),
            (Self::TdxQuote(quote), Some(collateral)) => {
                Ok(veil_attest::Evidence::Dcap { quote, collateral })
            }
            (Self::TdxQuote(_), None) => Err(PlatformError::Config(
                "a TDX quote needs Intel collateral (from a PCCS) to be verified".into(),
            )),
        }
    }
}

/// A TEE platform: the code running inside it uses this to attest and to seal.
pub trait Platform: Send + Sync {
    /// Which backend this is.
    fn kind(&self) -> PlatformKind;

    /// Produces evidence binding `report_data` (compute it with `veil_attest::report_data`).
    fn evidence(&self, report_data: &[u8; 64]) -> Result<RawEvidence>;

    /// This platform's own measurement registers, as verifiers will see them in its evidence.
    fn measurement(&self) -> Result<Measurements>;

    /// Encrypts `data` so that only this platform (the same TEE identity) can open it.
    fn seal(&self, data: &[u8]) -> Result<Vec<u8>>;

    /// Opens what [`Platform::seal`] produced.
    fn unseal(&self, sealed: &[u8]) -> Result<Zeroizing<Vec<u8>>>;
}

/// Which backend to start, with its settings.
#[derive(Debug, Clone)]
pub enum PlatformConfig {
    /// The simulated TEE.
    Sim(sim::SimConfig),
    /// Intel TDX.
    Tdx(tdx::TdxConfig),
}

/// Starts the configured backend.
pub fn open(config: PlatformConfig) -> Result<Box<dyn Platform>> {
    Ok(match config {
        PlatformConfig::Sim(c) => Box::new(sim::SimPlatform::start(c)?),
        PlatformConfig::Tdx(c) => Box::new(tdx::TdxPlatform::start(c)?),
    })
}

/// The current unix time in seconds.
pub(crate) fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}
