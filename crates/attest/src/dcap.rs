//! Intel TDX and SGX quotes (DCAP), verified fully offline with `dcap-qvl` against collateral JSON.
//!
//! The verifier checks the whole chain: Intel's root CA and CRLs, the TCB info and QE identity
//! signatures and validity windows, the PCK certificate chain, the QE report and its binding to the
//! attestation key, the quote's signature over header and report body, and the TCB level matching. It
//! returns [`Claims`]; whether they are acceptable is the [`crate::Policy`]'s decision (debug mode, for
//! one, passes here and is rejected by the policy, so that the reason is precise).

use serde::Deserialize;

use dcap_qvl::configs::RingConfig;
use dcap_qvl::quote::Quote;
use dcap_qvl::verify::QuoteVerifier;
use dcap_qvl::{PckCertFlag, QuoteClaims, QuoteCollateralV3, QuotePolicy};

use crate::claims::{
    Claims, CollateralWindow, HexBytes, Measurements, PlatformFlags, TcbStatus, TeeKind, format_unix,
    parse_rfc3339_utc,
};
use crate::{AttestError, Result};

/// DCAP collateral: Intel's TCB info, QE identity, CRLs and certificate chains for one platform, in the
/// JSON form that `dcap-qvl` and PCCS clients produce (`QuoteCollateralV3`).
///
/// Cheap to clone (shared): verify many quotes against the same parsed collateral.
#[derive(Clone)]
pub struct Collateral(std::sync::Arc<CollateralInner>);

struct CollateralInner {
    json: Vec<u8>,
    inner: QuoteCollateralV3,
    tcb_info_window: (u64, u64),
    qe_identity_window: (u64, u64),
}

impl std::fmt::Debug for Collateral {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Collateral")
            .field("tcb_info_issued", &format_unix(self.0.tcb_info_window.0))
            .field("tcb_info_next_update", &format_unix(self.0.tcb_info_window.1))
            .finish_non_exhaustive()
    }
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Dates {
    issue_date: String,
    next_update: String,
}

fn window(json: &str, what: &str) -> Result<(u64, u64)> {
    let dates: Dates = serde_json::from_str(json)
        .map_err(|e| AttestError::MalformedCollateral(format!("{what} is not the expected JSON: {e}")))?;
    let parse = |s: &str, field: &str| {
        parse_rfc3339_utc(s).ok_or_else(|| {
            AttestError::MalformedCollateral(format!("{what} {field} {s:?} is not an RFC 3339 UTC time"))
        })
    };
    Ok((
        parse(&dates.issue_date, "issueDate")?,
        parse(&dates.next_update, "nextUpdate")?,
    ))
}

impl Collateral {
    /// Parses collateral JSON (`QuoteCollateralV3`).
    pub fn from_json(json: &[u8]) -> Result<Self> {
        let inner: QuoteCollateralV3 = serde_json::from_slice(json)
            .map_err(|e| AttestError::MalformedCollateral(format!("not QuoteCollateralV3 JSON: {e}")))?;
        let tcb_info_window = window(&inner.tcb_info, "TCB info")?;
        let qe_identity_window = window(&inner.qe_identity, "QE identity")?;
        Ok(Self(std::sync::Arc::new(CollateralInner {
            json: json.to_vec(),
            inner,
            tcb_info_window,
            qe_identity_window,
        })))
    }

    /// The JSON this collateral was parsed from.
    pub fn json(&self) -> &[u8] {
        &self.0.json
    }

    /// The collateral as `dcap-qvl` takes it.
    pub fn as_dcap(&self) -> &QuoteCollateralV3 {
        &self.0.inner
    }

    fn check_window(&self, now: u64) -> Result<()> {
        for (what, (issued, next_update)) in [
            ("TCB info", self.0.tcb_info_window),
            ("QE identity", self.0.qe_identity_window),
        ] {
            if now < issued {
                return Err(AttestError::CollateralNotYetValid(format!(
                    "{what} was issued at {}, after now ({})",
                    format_unix(issued),
                    format_unix(now)
                )));
            }
            if now > next_update {
                return Err(AttestError::CollateralExpired(format!(
                    "{what} was valid until {}, now is {}",
                    format_unix(next_update),
                    format_unix(now)
                )));
            }
        }
        Ok(())
    }
}

/// Verifies Intel DCAP quotes (TDX and SGX) against Intel's production root CA.
pub struct DcapVerifier {
    inner: QuoteVerifier<RingConfig>,
}

impl std::fmt::Debug for DcapVerifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("DcapVerifier(Intel production root CA)")
    }
}

impl Default for DcapVerifier {
    fn default() -> Self {
        Self::new()
    }
}

impl DcapVerifier {
    /// A verifier anchored at Intel's SGX/TDX production root CA.
    pub fn new() -> Self {
        // Debug TEEs pass verification here and are rejected by the policy, with their own reason.
        Self {
            inner: QuoteVerifier::new_prod()
                .with_config::<RingConfig>()
                .allow_debug(true),
        }
    }

    /// Verifies `quote` (raw bytes) against `collateral` at `now` (unix seconds) and extracts its claims.
    pub fn verify(&self, quote: &[u8], collateral: &Collateral, now: u64) -> Result<Claims> {
        let parsed =
            Quote::parse(quote).map_err(|e| AttestError::Malformed(format!("not a DCAP quote: {e:#}")))?;
        // The quote ends with its length-prefixed auth data; only zero padding may follow (TDX quotes
        // read from fixed-size buffers carry some). Anything else is not part of what was signed.
        let signed_len = parsed.signed_length();
        let auth_len = quote
            .get(signed_len..signed_len.saturating_add(4))
            .and_then(|b| <[u8; 4]>::try_from(b).ok())
            .map(|b| u32::from_le_bytes(b) as usize)
            .ok_or_else(|| AttestError::Malformed("DCAP quote truncated before its auth data".into()))?;
        let end = signed_len.saturating_add(4).saturating_add(auth_len);
        if quote.get(end..).is_some_and(|tail| tail.iter().any(|&b| b != 0)) {
            return Err(AttestError::Malformed(format!(
                "{} bytes after the DCAP quote's end (only zero padding may follow it)",
                quote.len() - end
            )));
        }
        if parsed.header.tee_type != TEE_TYPE_SGX && parsed.header.tee_type != TEE_TYPE_TDX {
            return Err(AttestError::Unsupported(format!(
                "DCAP TEE type {:#x}",
                parsed.header.tee_type
            )));
        }
        collateral.check_window(now)?;
        let claims = self
            .inner
            // `claims_only`: appraisal is [`crate::Policy`]'s job, with Veil's own messages.
            .verify_with_policy(
                quote,
                collateral.0.inner.clone(),
                now,
                &QuotePolicy::claims_only(now),
            )
            .map_err(map_dcap_error)?;
        to_claims(&claims, collateral, now)
    }
}

const TEE_TYPE_SGX: u32 = 0x0000_0000;
const TEE_TYPE_TDX: u32 = 0x0000_0081;

/// Maps `dcap-qvl`'s error chain to a precise variant; the message keeps `dcap-qvl`'s own words.
fn map_dcap_error(err: impl std::fmt::Display) -> AttestError {
    let msg = format!("{err:#}");
    let lower = msg.to_ascii_lowercase();
    if lower.contains("notvalidyet") || lower.contains("in the future") {
        AttestError::CollateralNotYetValid(msg)
    } else if lower.contains("expired") {
        AttestError::CollateralExpired(msg)
    } else if lower.contains("signature is invalid")
        || lower.contains("signature invalid")
        || lower.contains("badsignature")
        || lower.contains("hash mismatch")
    {
        AttestError::BadSignature(msg)
    } else if lower.contains("no matching tcb level") || lower.contains("below minimum required") {
        AttestError::TcbLevelNotFound(msg)
    } else if lower.contains("failed to decode quote") {
        AttestError::Malformed(msg)
    } else if lower.contains("unsupported") || lower.contains("unknown qe vendor") {
        AttestError::Unsupported(msg)
    } else {
        AttestError::Dcap(msg)
    }
}

fn flag(f: PckCertFlag) -> Option<bool> {
    match f {
        PckCertFlag::True => Some(true),
        PckCertFlag::False => Some(false),
        PckCertFlag::Undefined => None,
    }
}

fn tcb_status(status: dcap_qvl::TcbStatus) -> TcbStatus {
    use dcap_qvl::TcbStatus as D;
    match status {
        D::UpToDate => TcbStatus::UpToDate,
        D::SWHardeningNeeded => TcbStatus::SWHardeningNeeded,
        D::ConfigurationNeeded => TcbStatus::ConfigurationNeeded,
        D::ConfigurationAndSWHardeningNeeded => TcbStatus::ConfigurationAndSWHardeningNeeded,
        D::OutOfDate => TcbStatus::OutOfDate,
        D::OutOfDateConfigurationNeeded => TcbStatus::OutOfDateConfigurationNeeded,
        D::TDRelaunchAdvised => TcbStatus::TDRelaunchAdvised,
        D::TDRelaunchAdvisedConfigurationNeeded => TcbStatus::TDRelaunchAdvisedConfigurationNeeded,
        D::Revoked => TcbStatus::Revoked,
    }
}

fn put(m: &mut Measurements, name: &str, value: &[u8]) {
    m.insert(name.to_string(), HexBytes::from(value));
}

/// The TEE kind, measurement registers, report data and debug flag of a report body.
fn report_fields(report: &dcap_qvl::quote::Report) -> Result<(TeeKind, Measurements, [u8; 64], bool)> {
    let mut measurements = Measurements::new();
    let (tee, report_data, debug) = if let Some(r) = report.as_sgx() {
        put(&mut measurements, "mrenclave", &r.mr_enclave);
        put(&mut measurements, "mrsigner", &r.mr_signer);
        put(&mut measurements, "isvprodid", &r.isv_prod_id.to_be_bytes());
        put(&mut measurements, "isvsvn", &r.isv_svn.to_be_bytes());
        put(&mut measurements, "attributes", &r.attributes);
        put(&mut measurements, "miscselect", &r.misc_select.to_be_bytes());
        (TeeKind::IntelSgx, r.report_data, r.attributes[0] & 0x02 != 0)
    } else if let Some(r) = report.as_td10() {
        // The TD 1.0 body is the common prefix of every TD report version.
        put(&mut measurements, "mrtd", &r.mr_td);
        put(&mut measurements, "rtmr0", &r.rt_mr0);
        put(&mut measurements, "rtmr1", &r.rt_mr1);
        put(&mut measurements, "rtmr2", &r.rt_mr2);
        put(&mut measurements, "rtmr3", &r.rt_mr3);
        put(&mut measurements, "mrconfigid", &r.mr_config_id);
        put(&mut measurements, "mrowner", &r.mr_owner);
        put(&mut measurements, "mrownerconfig", &r.mr_owner_config);
        put(&mut measurements, "mrseam", &r.mr_seam);
        put(&mut measurements, "mrsignerseam", &r.mr_signer_seam);
        put(&mut measurements, "tdattributes", &r.td_attributes);
        put(&mut measurements, "xfam", &r.xfam);
        if let Some(r15) = report.as_td15() {
            put(&mut measurements, "mrservicetd", &r15.mr_service_td);
        }
        // Any TD-under-debug bit (debug, or the profiling bits) makes the TD untrusted.
        (TeeKind::IntelTdx, r.report_data, r.td_attributes[0] != 0)
    } else {
        return Err(AttestError::Unsupported(
            "a DCAP report body that is neither SGX nor TDX".into(),
        ));
    };
    Ok((tee, measurements, report_data, debug))
}

/// Reads the measurement registers of a DCAP quote **without verifying it**: for a platform that wants
/// to know its own measurement (to publish it), never for deciding whether to trust someone else's.
pub fn quote_measurements_unverified(quote: &[u8]) -> Result<(TeeKind, Measurements)> {
    let parsed =
        Quote::parse(quote).map_err(|e| AttestError::Malformed(format!("not a DCAP quote: {e:#}")))?;
    let (tee, measurements, _, _) = report_fields(&parsed.report)?;
    Ok((tee, measurements))
}

fn to_claims(c: &QuoteClaims, collateral: &Collateral, now: u64) -> Result<Claims> {
    let (tee, measurements, report_data, debug) = report_fields(&c.report)?;
    let pck = &c.platform.pck;
    Ok(Claims {
        tee,
        simulated: false,
        measurements,
        report_data: HexBytes::from(&report_data[..]),
        tcb_status: tcb_status(c.tcb.status),
        advisory_ids: c.tcb.advisory_ids.clone(),
        debug,
        platform: PlatformFlags {
            dynamic_platform: flag(pck.dynamic_platform),
            cached_keys: flag(pck.cached_keys),
            smt_enabled: flag(pck.smt_enabled),
        },
        collateral: Some(CollateralWindow {
            tcb_info_issued: collateral.0.tcb_info_window.0,
            latest_issue: c.latest_issue_date,
            earliest_expiration: c.earliest_expiration_date,
        }),
        issued_at: None,
        sim_key: None,
        verified_at: now,
    })
}
