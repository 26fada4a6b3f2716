//! Evidence of any kind, its transport envelope, and the [`Verifier`] trait.
//!
//! Envelope, version 1 (integers big-endian), as carried in transactions and handshakes:
//!
//! ```text
//! "VEILEVD1"        8  magic: format and version
//! kind              1  1 = Intel DCAP, 2 = simulated TEE
//! DCAP:   quote length (u32) | quote | collateral JSON length (u32) | collateral JSON
//! simulated: evidence length (u32) | simulated evidence (see `sim`)
//! ```

use crate::claims::Claims;
use crate::dcap::{Collateral, DcapVerifier};
use crate::policy::{ExpectedReportData, Policy};
use crate::sim::{SIM_MAGIC, SimVerifier};
use crate::{AttestError, Result};

/// The first 8 bytes of an evidence envelope.
pub const EVIDENCE_MAGIC: &[u8; 8] = b"VEILEVD1";
const KIND_DCAP: u8 = 1;
const KIND_SIM: u8 = 2;

/// Evidence from a TEE, with what its verifier needs.
#[derive(Debug, Clone)]
pub enum Evidence {
    /// An Intel DCAP quote (TDX or SGX) and the collateral to verify it offline.
    Dcap {
        /// The raw quote.
        quote: Vec<u8>,
        /// Intel's collateral for the quote's platform.
        collateral: Collateral,
    },
    /// Simulated-TEE evidence (`VEILSIM1…`).
    Simulated(Vec<u8>),
}

/// A verifier for one kind of evidence: checks signatures and chains at `now` (unix seconds; validators
/// pass the block time) and extracts [`Claims`]. It does not appraise them: see [`Policy`].
pub trait Verifier {
    /// Verifies `evidence`, or says why not (including when it is of another kind).
    fn verify(&self, evidence: &Evidence, now: u64) -> Result<Claims>;
}

impl Verifier for DcapVerifier {
    fn verify(&self, evidence: &Evidence, now: u64) -> Result<Claims> {
        match evidence {
            Evidence::Dcap { quote, collateral } => DcapVerifier::verify(self, quote, collateral, now),
            Evidence::Simulated(_) => Err(AttestError::Unsupported(
                "simulated evidence given to the DCAP verifier".into(),
            )),
        }
    }
}

impl Verifier for SimVerifier {
    fn verify(&self, evidence: &Evidence, now: u64) -> Result<Claims> {
        match evidence {
            Evidence::Simulated(bytes) => SimVerifier::verify(self, bytes, now),
            Evidence::Dcap { .. } => Err(AttestError::Unsupported(
                "DCAP evidence given to the simulated verifier".into(),
            )),
        }
    }
}

impl Evidence {
    /// Verifies with the verifier for this kind of evidence.
    pub fn verify(&self, now: u64) -> Result<Claims> {
        match self {
            Evidence::Dcap { .. } => Verifier::verify(&DcapVerifier::new(), self, now),
            Evidence::Simulated(_) => Verifier::verify(&SimVerifier, self, now),
        }
    }

    /// The envelope encoding.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = EVIDENCE_MAGIC.to_vec();
        match self {
            Evidence::Dcap { quote, collateral } => {
                out.push(KIND_DCAP);
                put_lp(&mut out, quote);
                put_lp(&mut out, collateral.json());
            }
            Evidence::Simulated(bytes) => {
                out.push(KIND_SIM);
                put_lp(&mut out, bytes);
            }
        }
        out
    }

    /// Decodes an envelope, or bare simulated evidence (which starts with its own magic).
    pub fn from_bytes(bytes: &[u8]) -> Result<Self> {
        if bytes.starts_with(SIM_MAGIC) {
            return Ok(Evidence::Simulated(bytes.to_vec()));
        }
        let Some(rest) = bytes.strip_prefix(EVIDENCE_MAGIC) else {
            return Err(AttestError::Malformed(
                "not Veil evidence (neither a VEILEVD1 envelope nor VEILSIM1 simulated evidence)".into(),
            ));
        };
        let (&kind, mut rest) = rest
            .split_first()
            .ok_or_else(|| AttestError::Malformed("evidence envelope truncated before its kind".into()))?;
        let evidence = match kind {
            KIND_DCAP => {
                let quote = take_lp(&mut rest, "quote")?.to_vec();
                let collateral = Collateral::from_json(take_lp(&mut rest, "collateral")?)?;
                Evidence::Dcap { quote, collateral }
            }
            KIND_SIM => Evidence::Simulated(take_lp(&mut rest, "simulated evidence")?.to_vec()),
            other => {
                return Err(AttestError::Unsupported(format!(
                    "evidence kind {other} in envelope"
                )));
            }
        };
        if !rest.is_empty() {
            return Err(AttestError::Malformed(format!(
                "{} trailing bytes after the evidence envelope",
                rest.len()
            )));
        }
        Ok(evidence)
    }
}

fn put_lp(out: &mut Vec<u8>, bytes: &[u8]) {
    // Quotes and collateral are kilobytes; a length beyond u32 cannot be produced from real evidence.
    let len = u32::try_from(bytes.len()).unwrap_or(u32::MAX);
    out.extend_from_slice(&len.to_be_bytes());
    out.extend_from_slice(bytes);
}

fn take_lp<'a>(rest: &mut &'a [u8], what: &str) -> Result<&'a [u8]> {
    let truncated = || AttestError::Malformed(format!("evidence envelope truncated in its {what}"));
    let (len, tail) = rest.split_first_chunk::<4>().ok_or_else(truncated)?;
    let len = u32::from_be_bytes(*len) as usize;
    if tail.len() < len {
        return Err(truncated());
    }
    let (body, tail) = tail.split_at(len);
    *rest = tail;
    Ok(body)
}

/// Verifies `evidence` at `now` and appraises its claims with `policy`: the one call a client, gateway
/// or validator makes. Returns the accepted claims.
pub fn verify_and_appraise(
    evidence: &Evidence,
    policy: &Policy,
    expected: &ExpectedReportData,
    now: u64,
) -> Result<Claims> {
    policy.validate()?;
    let claims = evidence.verify(now)?;
    policy.appraise(&claims, expected, now)?;
    Ok(claims)
}

/// Reads a blob given either as raw bytes or as hex text (whitespace and a `0x` prefix allowed), as
/// quote and evidence files come in both forms.
pub fn decode_hex_or_raw(bytes: &[u8]) -> Vec<u8> {
    let text: Vec<u8> = bytes
        .iter()
        .copied()
        .filter(|b| !b.is_ascii_whitespace())
        .collect();
    let text = text.strip_prefix(b"0x").unwrap_or(&text);
    if !text.is_empty()
        && text.iter().all(u8::is_ascii_hexdigit)
        && let Ok(decoded) = hex::decode(text)
    {
        return decoded;
    }
    bytes.to_vec()
}
