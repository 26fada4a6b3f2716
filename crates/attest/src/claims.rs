//! What a verifier extracts from evidence: the claims that a [`crate::Policy`] appraises.

use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::{AttestError, Result};

/// Which kind of TEE produced the evidence.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum TeeKind {
    /// An Intel TDX trust domain (DCAP quote v4/v5).
    IntelTdx,
    /// An Intel SGX enclave (DCAP quote v3).
    IntelSgx,
    /// Veil's simulated TEE: a development key signs; it proves nothing about the machine.
    Simulated,
}

impl fmt::Display for TeeKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::IntelTdx => "intel-tdx",
            Self::IntelSgx => "intel-sgx",
            Self::Simulated => "simulated",
        })
    }
}

/// The platform's TCB status, with Intel's names (the converged platform + QE + TDX module status).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum TcbStatus {
    /// Fully patched.
    UpToDate,
    /// Patched, but software mitigations are needed for some advisories.
    SWHardeningNeeded,
    /// Patched, but the platform's configuration (e.g. BIOS settings) needs changes.
    ConfigurationNeeded,
    /// Both of the above.
    ConfigurationAndSWHardeningNeeded,
    /// Missing security updates.
    OutOfDate,
    /// Missing updates and needs configuration changes.
    OutOfDateConfigurationNeeded,
    /// TDX: the TD launched on an older TCB; the current TCB is up to date, relaunch the TD.
    TDRelaunchAdvised,
    /// TDX: relaunch advised and configuration needed.
    TDRelaunchAdvisedConfigurationNeeded,
    /// The platform's keys are revoked (never accepted; DCAP verification rejects it outright).
    Revoked,
}

impl TcbStatus {
    /// All statuses, in Intel's order of preference.
    pub const ALL: [TcbStatus; 9] = [
        Self::UpToDate,
        Self::SWHardeningNeeded,
        Self::ConfigurationNeeded,
        Self::ConfigurationAndSWHardeningNeeded,
        Self::OutOfDate,
        Self::OutOfDateConfigurationNeeded,
        Self::TDRelaunchAdvised,
        Self::TDRelaunchAdvisedConfigurationNeeded,
        Self::Revoked,
    ];

    /// Intel's name of the status.
    pub fn as_str(&self) -> &'static str {
        match self {
            Self::UpToDate => "UpToDate",
            Self::SWHardeningNeeded => "SWHardeningNeeded",
            Self::ConfigurationNeeded => "ConfigurationNeeded",
            Self::ConfigurationAndSWHardeningNeeded => "ConfigurationAndSWHardeningNeeded",
            Self::OutOfDate => "OutOfDate",
            Self::OutOfDateConfigurationNeeded => "OutOfDateConfigurationNeeded",
            Self::TDRelaunchAdvised => "TDRelaunchAdvised",
            Self::TDRelaunchAdvisedConfigurationNeeded => "TDRelaunchAdvisedConfigurationNeeded",
            Self::Revoked => "Revoked",
        }
    }
}

impl fmt::Display for TcbStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for TcbStatus {
    type Err = AttestError;

    fn from_str(s: &str) -> Result<Self> {
        Self::ALL
            .iter()
            .copied()
            .find(|status| status.as_str().eq_ignore_ascii_case(s))
            .ok_or_else(|| {
                let names: Vec<&str> = Self::ALL.iter().map(TcbStatus::as_str).collect();
                AttestError::InvalidPolicy(format!("unknown TCB status {s:?} (known: {})", names.join(", ")))
            })
    }
}

/// Bytes that serialize as a lowercase hex string.
#[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct HexBytes(pub Vec<u8>);

impl fmt::Debug for HexBytes {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&hex::encode(&self.0))
    }
}

impl From<&[u8]> for HexBytes {
    fn from(bytes: &[u8]) -> Self {
        Self(bytes.to_vec())
    }
}

impl Serialize for HexBytes {
    fn serialize<S: Serializer>(&self, serializer: S) -> std::result::Result<S::Ok, S::Error> {
        serializer.serialize_str(&hex::encode(&self.0))
    }
}

impl<'de> Deserialize<'de> for HexBytes {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> std::result::Result<Self, D::Error> {
        let s = String::deserialize(deserializer)?;
        hex::decode(s).map(HexBytes).map_err(serde::de::Error::custom)
    }
}

/// Named measurement registers, e.g. `mrtd`, `rtmr0` … `rtmr3` for TDX, `mrenclave`, `mrsigner` for
/// SGX, `sim_measurement` for the simulated TEE (see `docs/attestation.md` for the full list).
pub type Measurements = BTreeMap<String, HexBytes>;

/// Platform flags from the PCK certificate (Intel DCAP only; `None` where the certificate has no such
/// flag, as in Processor-CA certificates).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PlatformFlags {
    /// A multi-package platform whose packages can be added or replaced.
    pub dynamic_platform: Option<bool>,
    /// The platform caches its keys (so a re-provisioned platform keeps them).
    pub cached_keys: Option<bool>,
    /// Simultaneous multithreading is enabled.
    pub smt_enabled: Option<bool>,
}

/// The validity window of DCAP collateral, in unix seconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct CollateralWindow {
    /// When the TCB info was issued.
    pub tcb_info_issued: u64,
    /// The latest issue date over all collateral (TCB info, QE identity, CRLs, certificates).
    pub latest_issue: u64,
    /// The earliest expiry over all collateral: the evidence stops verifying after this.
    pub earliest_expiration: u64,
}

/// What a verifier extracted from evidence. A verifier returns claims only for evidence whose
/// signatures and certificate chains verified; whether the claims are *acceptable* is the
/// [`crate::Policy`]'s decision.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Claims {
    /// The TEE that produced the evidence.
    pub tee: TeeKind,
    /// `true` for the simulated TEE: the claims are signed by a development key and prove nothing.
    pub simulated: bool,
    /// Named measurement registers (exact values).
    pub measurements: Measurements,
    /// The 64 bytes the TEE bound into the evidence (see [`crate::report_data`]).
    pub report_data: HexBytes,
    /// The TCB status (the simulated TEE always says `UpToDate`: it has no TCB).
    pub tcb_status: TcbStatus,
    /// Intel security advisories that apply to this platform's TCB.
    pub advisory_ids: Vec<String>,
    /// The TEE runs in debug mode (TDX: any TD-under-debug bit; SGX: the DEBUG attribute).
    pub debug: bool,
    /// PCK certificate platform flags.
    pub platform: PlatformFlags,
    /// The collateral's validity window (DCAP only).
    pub collateral: Option<CollateralWindow>,
    /// When the evidence says it was produced (simulated TEE only; DCAP quotes carry no time).
    pub issued_at: Option<u64>,
    /// The development key that signed simulated evidence.
    pub sim_key: Option<HexBytes>,
    /// The "now" the evidence was verified at (unix seconds).
    pub verified_at: u64,
}

/// Parses Intel's RFC 3339 UTC timestamps (`2025-06-19T10:56:11Z`, optionally with fractional seconds,
/// which are dropped) into unix seconds.
pub(crate) fn parse_rfc3339_utc(s: &str) -> Option<u64> {
    let b = s.as_bytes();
    if b.len() < 20 || b[4] != b'-' || b[7] != b'-' || b[10] != b'T' || b[13] != b':' || b[16] != b':' {
        return None;
    }
    let num = |r: std::ops::Range<usize>| -> Option<u64> {
        let part = s.get(r)?;
        if !part.bytes().all(|c| c.is_ascii_digit()) {
            return None;
        }
        part.parse().ok()
    };
    let (year, month, day) = (num(0..4)?, num(5..7)?, num(8..10)?);
    let (hour, min, sec) = (num(11..13)?, num(14..16)?, num(17..19)?);
    let rest = s.get(19..)?;
    let rest = match rest.strip_prefix('.') {
        Some(frac) => frac.trim_start_matches(|c: char| c.is_ascii_digit()),
        None => rest,
    };
    if rest != "Z"
        || !(1..=12).contains(&month)
        || !(1..=31).contains(&day)
        || hour > 23
        || min > 59
        || sec > 60
    {
        return None;
    }
    // Days from civil (Howard Hinnant's algorithm), valid for years >= 1970 here.
    let y = if month <= 2 { year.checked_sub(1)? } else { year };
    let era = y / 400;
    let yoe = y - era * 400;
    let mp = (month + 9) % 12;
    let doy = (153 * mp + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = (era * 146_097 + doe).checked_sub(719_468)?;
    Some(days * 86_400 + hour * 3600 + min * 60 + sec)
}

/// Formats unix seconds as an RFC 3339 UTC timestamp, for messages.
pub(crate) fn format_unix(secs: u64) -> String {
    let days = secs / 86_400;
    let rem = secs % 86_400;
    // Civil from days (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z / 146_097;
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + u64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}Z",
        rem / 3600,
        (rem % 3600) / 60,
        rem % 60
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc3339_round_trips_known_dates() {
        assert_eq!(parse_rfc3339_utc("1970-01-01T00:00:00Z"), Some(0));
        assert_eq!(parse_rfc3339_utc("2025-06-19T10:56:11Z"), Some(1_750_330_571));
        assert_eq!(parse_rfc3339_utc("2024-02-29T23:59:59.123Z"), Some(1_709_251_199));
        assert_eq!(format_unix(1_750_330_571), "2025-06-19T10:56:11Z");
        assert_eq!(format_unix(1_709_251_199), "2024-02-29T23:59:59Z");
        for bad in [
            "",
            "2025-06-19",
            "2025-06-19T10:56:11",
            "2025-13-19T10:56:11Z",
            "2025-06-19T10:56:11+01:00",
        ] {
            assert_eq!(parse_rfc3339_utc(bad), None, "{bad}");
        }
    }

    #[test]
    fn tcb_status_names_parse_back() {
        for status in TcbStatus::ALL {
            assert_eq!(status.as_str().parse::<TcbStatus>(), Ok(status));
        }
        assert!("Fine".parse::<TcbStatus>().is_err());
    }
}
