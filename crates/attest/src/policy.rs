//! Appraising claims: which TEEs, measurements, TCB levels and bindings a verifier accepts.

use std::collections::BTreeSet;

use serde::{Deserialize, Serialize};

use crate::claims::{Claims, HexBytes, Measurements, TcbStatus, format_unix};
use crate::{AttestError, Result};

/// Domain tag of the report-data binding.
pub const REPORT_DATA_TAG: &str = "veil/v1/report";
/// Domain tag of the hash of the public keys bound into evidence.
pub const REPORT_KEYS_TAG: &str = "veil/v1/report-keys";

/// `H(keys)`: the hash of the enclave public keys that evidence binds, each key length-prefixed, in the
/// order given.
pub fn keys_hash(public_keys: &[&[u8]]) -> [u8; 32] {
    veil_crypto::hash::sha256_tagged(REPORT_KEYS_TAG, public_keys)
}

/// The 64 bytes a TEE puts in its evidence: `SHA-512("veil/v1/report" | nonce | H(keys))`, with the tag
/// and each part length-prefixed. The verifier's fresh `nonce` makes the evidence fresh; `keys_hash`
/// (see [`keys_hash`]) binds the keys that the enclave generated, so a client encrypting to them knows
/// they live in the attested TEE.
pub fn report_data(nonce: &[u8], keys_hash: &[u8; 32]) -> [u8; 64] {
    veil_crypto::hash::sha512_tagged(REPORT_DATA_TAG, &[nonce, keys_hash])
}

/// What the verifier expects in the evidence's report data.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExpectedReportData {
    /// Exactly these 64 bytes (usually [`report_data`] of the verifier's nonce and the keys it will use).
    Exact([u8; 64]),
    /// Not checked: only for inspecting evidence. Never use it to decide whether to trust a key.
    Unchecked,
}

impl ExpectedReportData {
    /// The binding of `nonce` and the hash of the bound keys.
    pub fn bound(nonce: &[u8], keys_hash: &[u8; 32]) -> Self {
        Self::Exact(report_data(nonce, keys_hash))
    }
}

/// An attestation policy. The default is strict: TCB `UpToDate` only, no debug, no dynamic platforms,
/// any measurement (callers pin them with [`Policy::allow_measurements`]), and no simulated evidence.
///
/// Cached platform keys and SMT are allowed by default: nearly every multi-socket server platform has
/// them, and the advisories that concern them show in the TCB status and advisory list, which the
/// policy already appraises. A dynamic platform (packages can be added or replaced after
/// registration) is rejected unless allowed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Policy {
    /// TCB statuses accepted (default: `UpToDate` only).
    pub allowed_tcb_statuses: BTreeSet<TcbStatus>,
    /// Advisory IDs (e.g. `INTEL-SA-00615`, case-insensitive) that reject evidence when present.
    pub blocked_advisories: BTreeSet<String>,
    /// Accept TEEs in debug mode (never in production: the host reads their memory).
    pub allow_debug: bool,
    /// Accept PCK certificates flagged as dynamic platforms.
    pub allow_dynamic_platform: bool,
    /// Accept PCK certificates flagged as caching keys.
    pub allow_cached_keys: bool,
    /// Accept platforms with SMT (hyper-threading) enabled.
    pub allow_smt: bool,
    /// Allowed measurement sets: evidence passes when all registers named in at least one set have
    /// exactly those values. `None`: any measurement (the caller checks elsewhere).
    pub allowed_measurements: Option<Vec<Measurements>>,
    /// Accept simulated-TEE evidence (development only; default `false`).
    pub allow_simulated: bool,
    /// Pin the development keys whose simulated evidence is accepted (`None`: any key).
    pub allowed_sim_keys: Option<Vec<HexBytes>>,
    /// Maximum age of evidence that carries its production time (simulated TEE), in seconds.
    pub max_evidence_age_secs: u64,
    /// Tolerated clock skew for evidence that says it was produced after "now", in seconds.
    pub max_clock_skew_secs: u64,
    /// Maximum age of DCAP collateral (`now - TCB info issue date`), in seconds; `None`: as long as the
    /// collateral itself says it is valid.
    pub max_collateral_age_secs: Option<u64>,
}

impl Default for Policy {
    fn default() -> Self {
        Self {
            allowed_tcb_statuses: BTreeSet::from([TcbStatus::UpToDate]),
            blocked_advisories: BTreeSet::new(),
            allow_debug: false,
            allow_dynamic_platform: false,
            allow_cached_keys: true,
            allow_smt: true,
            allowed_measurements: None,
            allow_simulated: false,
            allowed_sim_keys: None,
            max_evidence_age_secs: 600,
            max_clock_skew_secs: 60,
            max_collateral_age_secs: None,
        }
    }
}

impl Policy {
    /// The strict default policy.
    pub fn strict() -> Self {
        Self::default()
    }

    /// A policy for development networks: the default plus simulated evidence.
    pub fn development() -> Self {
        Self {
            allow_simulated: true,
            ..Self::default()
        }
    }

    /// Also accept `status`.
    pub fn allow_status(mut self, status: TcbStatus) -> Self {
        self.allowed_tcb_statuses.insert(status);
        self
    }

    /// Reject evidence whose platform has `advisory`.
    pub fn block_advisory(mut self, advisory: impl Into<String>) -> Self {
        self.blocked_advisories.insert(advisory.into());
        self
    }

    /// Accept only evidence whose measurements match one of `sets`.
    pub fn allow_measurements(mut self, sets: Vec<Measurements>) -> Self {
        self.allowed_measurements = Some(sets);
        self
    }

    /// Checks that the policy can be applied (no empty measurement set, no unknown-length sim key).
    pub fn validate(&self) -> Result<()> {
        if let Some(sets) = &self.allowed_measurements
            && sets.iter().any(|set| set.is_empty())
        {
            return Err(AttestError::InvalidPolicy(
                "an allowed measurement set names no register (it would match anything)".into(),
            ));
        }
        if let Some(keys) = &self.allowed_sim_keys
            && keys.iter().any(|k| k.0.len() != 32)
        {
            return Err(AttestError::InvalidPolicy(
                "an allowed simulated-TEE key is not 32 bytes".into(),
            ));
        }
        Ok(())
    }

    /// Appraises verified `claims` at `now` (unix seconds): `Ok(())` when the policy accepts them,
    /// otherwise the first reason found.
    pub fn appraise(&self, claims: &Claims, expected: &ExpectedReportData, now: u64) -> Result<()> {
        self.validate()?;
        if claims.simulated {
            if !self.allow_simulated {
                return Err(AttestError::SimulatedNotAllowed);
            }
            if let Some(keys) = &self.allowed_sim_keys {
                let key = claims
                    .sim_key
                    .as_ref()
                    .map(|k| k.0.as_slice())
                    .unwrap_or_default();
                if !keys.iter().any(|k| k.0 == key) {
                    return Err(AttestError::SimKeyNotAllowed(hex::encode(key)));
                }
            }
        }
        if let ExpectedReportData::Exact(want) = expected
            && claims.report_data.0 != want.as_slice()
        {
            return Err(AttestError::ReportDataMismatch {
                expected: hex::encode(want),
                found: hex::encode(&claims.report_data.0),
            });
        }
        if claims.debug && !self.allow_debug {
            return Err(AttestError::DebugEnabled);
        }
        if !self.allowed_tcb_statuses.contains(&claims.tcb_status) || claims.tcb_status == TcbStatus::Revoked
        {
            let allowed: Vec<&str> = self.allowed_tcb_statuses.iter().map(TcbStatus::as_str).collect();
            return Err(AttestError::TcbStatusNotAllowed {
                status: claims.tcb_status,
                allowed: if allowed.is_empty() {
                    "none".into()
                } else {
                    allowed.join(", ")
                },
            });
        }
        for id in &claims.advisory_ids {
            if self.blocked_advisories.iter().any(|b| b.eq_ignore_ascii_case(id)) {
                return Err(AttestError::AdvisoryBlocked(id.clone()));
            }
        }
        if claims.platform.dynamic_platform == Some(true) && !self.allow_dynamic_platform {
            return Err(AttestError::DynamicPlatformNotAllowed);
        }
        if claims.platform.cached_keys == Some(true) && !self.allow_cached_keys {
            return Err(AttestError::CachedKeysNotAllowed);
        }
        if claims.platform.smt_enabled == Some(true) && !self.allow_smt {
            return Err(AttestError::SmtNotAllowed);
        }
        if let Some(sets) = &self.allowed_measurements {
            check_measurements(&claims.measurements, sets)?;
        }
        self.check_freshness(claims, now)
    }

    fn check_freshness(&self, claims: &Claims, now: u64) -> Result<()> {
        if let Some(issued_at) = claims.issued_at {
            if issued_at > now.saturating_add(self.max_clock_skew_secs) {
                return Err(AttestError::FromTheFuture { issued_at, now });
            }
            let age_secs = now.saturating_sub(issued_at);
            if age_secs > self.max_evidence_age_secs {
                return Err(AttestError::Stale {
                    issued_at,
                    age_secs,
                    max_secs: self.max_evidence_age_secs,
                });
            }
        }
        if let Some(window) = &claims.collateral {
            if now > window.earliest_expiration {
                return Err(AttestError::CollateralExpired(format!(
                    "it expired at {}, now is {}",
                    format_unix(window.earliest_expiration),
                    format_unix(now)
                )));
            }
            if let Some(max) = self.max_collateral_age_secs {
                let age = now.saturating_sub(window.tcb_info_issued);
                if age > max {
                    return Err(AttestError::CollateralExpired(format!(
                        "TCB info issued at {} is {age} s old, more than the policy's {max} s",
                        format_unix(window.tcb_info_issued)
                    )));
                }
            }
        }
        Ok(())
    }
}

fn check_measurements(found: &Measurements, sets: &[Measurements]) -> Result<()> {
    let mut first_difference = None;
    for set in sets {
        let mismatch = set
            .iter()
            .find(|(name, want)| found.get(name.as_str()) != Some(want));
        match mismatch {
            None => return Ok(()),
            Some((name, want)) if first_difference.is_none() => {
                let have = found
                    .get(name.as_str())
                    .map_or_else(|| "absent".to_string(), |v| hex::encode(&v.0));
                first_difference = Some(format!(
                    "{name} is {have}, allowed set expects {}",
                    hex::encode(&want.0)
                ));
            }
            Some(_) => {}
        }
    }
    Err(AttestError::MeasurementNotAllowed(match first_difference {
        Some(diff) => format!(
            "matches none of the {} allowed set(s); first set: {diff}",
            sets.len()
        ),
        None => "the policy allows no measurement".into(),
    }))
}
