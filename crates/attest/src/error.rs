//! The one error type of this crate.

use thiserror::Error;

use crate::claims::TcbStatus;

/// Why evidence was not accepted, or why an input could not be used.
///
/// Every message names what was wrong and, where it helps, what to do. Rejections of evidence start with
/// `"evidence rejected: "`; [`AttestError::reason`] gives the text after that prefix, for callers (like the
/// CLI) that print their own.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum AttestError {
    /// The evidence bytes could not be decoded (truncated, wrong magic, bad lengths, unknown format).
    #[error("evidence rejected: malformed evidence: {0}")]
    Malformed(String),
    /// The collateral could not be decoded.
    #[error("evidence rejected: malformed collateral: {0}")]
    MalformedCollateral(String),
    /// A format or version this build does not verify.
    #[error("evidence rejected: unsupported evidence: {0}")]
    Unsupported(String),
    /// A piece of collateral (TCB info, QE identity, certificate, CRL) had expired at "now".
    #[error("evidence rejected: collateral expired: {0} (fetch fresh collateral)")]
    CollateralExpired(String),
    /// A piece of collateral was issued after "now" (a wrong clock, or "now" before the collateral).
    #[error("evidence rejected: collateral not yet valid: {0}")]
    CollateralNotYetValid(String),
    /// A signature in the evidence or its certificate chain does not verify.
    #[error("evidence rejected: signature invalid: {0}")]
    BadSignature(String),
    /// The platform's TCB (CPU, PCE, TDX module or QE SVNs) is older than every level in Intel's TCB info:
    /// Intel gives it no status at all.
    #[error(
        "evidence rejected: platform TCB matches no level in the collateral's TCB info ({0}); update the platform's firmware"
    )]
    TcbLevelNotFound(String),
    /// Any other failure of the DCAP verification pipeline (chain, QE identity, TCB matching).
    #[error("evidence rejected: DCAP verification failed: {0}")]
    Dcap(String),
    /// The TCB status is not in the policy's allowed set.
    #[error("evidence rejected: TCB status {status} not allowed (allowed: {allowed})")]
    TcbStatusNotAllowed {
        /// The status the evidence has.
        status: TcbStatus,
        /// The statuses the policy allows, comma-separated.
        allowed: String,
    },
    /// An advisory of the platform is on the policy's blocklist.
    #[error("evidence rejected: advisory {0} is blocked by policy")]
    AdvisoryBlocked(String),
    /// The TEE runs in debug mode (its memory is readable by the host).
    #[error("evidence rejected: debug mode is enabled (the host can read the TEE's memory)")]
    DebugEnabled,
    /// The PCK certificate says the platform is dynamic (multi-package with hot-plug) and the policy
    /// does not allow that.
    #[error("evidence rejected: dynamic platform not allowed by policy")]
    DynamicPlatformNotAllowed,
    /// The PCK certificate says the platform caches keys and the policy does not allow that.
    #[error("evidence rejected: cached platform keys not allowed by policy")]
    CachedKeysNotAllowed,
    /// The PCK certificate says SMT is enabled and the policy does not allow that.
    #[error("evidence rejected: SMT (hyper-threading) not allowed by policy")]
    SmtNotAllowed,
    /// The report data is not the one the verifier expected (wrong nonce or wrong bound keys).
    #[error(
        "evidence rejected: report data does not match the expected binding (expected {expected}, found {found})"
    )]
    ReportDataMismatch {
        /// Hex of the expected report data.
        expected: String,
        /// Hex of the report data in the evidence.
        found: String,
    },
    /// The measurements match none of the policy's allowed sets.
    #[error("evidence rejected: measurement not allowed: {0}")]
    MeasurementNotAllowed(String),
    /// Simulated-TEE evidence under a policy that does not allow it.
    #[error(
        "evidence rejected: simulated TEE evidence is not allowed by this policy \
         (it proves nothing about the machine; allow it only for development)"
    )]
    SimulatedNotAllowed,
    /// Simulated-TEE evidence signed by a development key the policy does not pin.
    #[error("evidence rejected: simulated TEE key {0} is not among the policy's allowed keys")]
    SimKeyNotAllowed(String),
    /// The evidence is older than the policy's maximum age.
    #[error(
        "evidence rejected: evidence is stale: issued at {issued_at}, {age_secs} s before now (max {max_secs} s)"
    )]
    Stale {
        /// When the evidence says it was produced (unix seconds).
        issued_at: u64,
        /// How old it is at "now".
        age_secs: u64,
        /// The policy's maximum age.
        max_secs: u64,
    },
    /// The evidence claims to be produced after "now" (beyond the allowed clock skew).
    #[error("evidence rejected: evidence is from the future: issued at {issued_at}, now is {now}")]
    FromTheFuture {
        /// When the evidence says it was produced.
        issued_at: u64,
        /// The verifier's "now".
        now: u64,
    },
    /// The policy itself is unusable (e.g. an empty measurement set, which would match anything).
    #[error("invalid attestation policy: {0}")]
    InvalidPolicy(String),
}

impl AttestError {
    const PREFIX: &'static str = "evidence rejected: ";

    /// The message without the `"evidence rejected: "` prefix.
    pub fn reason(&self) -> String {
        let full = self.to_string();
        match full.strip_prefix(Self::PREFIX) {
            Some(rest) => rest.to_string(),
            None => full,
        }
    }

    /// Whether this error is a verdict on evidence (as opposed to an unusable policy).
    pub fn is_rejection(&self) -> bool {
        !matches!(self, Self::InvalidPolicy(_))
    }
}

/// Result alias for this crate.
pub type Result<T, E = AttestError> = std::result::Result<T, E>;
