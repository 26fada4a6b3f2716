//! Veil's simulated TEE: evidence signed by a development Ed25519 key.
//!
//! It stands in for a TEE where there is none (laptops, CI) and proves nothing about the machine: anyone
//! with the development key can sign any measurement. Its format cannot be mistaken for real evidence
//! (its own magic, `VEILSIM1`), its claims always say `simulated: true`, and the default policy rejects
//! it.
//!
//! Wire format, version 1 (all integers big-endian):
//!
//! ```text
//! "VEILSIM1"               8   magic: format and version
//! body length (136)        4   u32
//! body                   136   dev public key (32) | measurement (32) | report data (64) | issued at (u64)
//! signature length (64)    4   u32
//! signature               64   Ed25519 over tag "veil/v1/sim-evidence" and every byte before the
//!                              signature length
//! ```

use veil_crypto::sign::{Signature, SigningKey, VerifyingKey};

use crate::claims::{Claims, HexBytes, Measurements, PlatformFlags, TcbStatus, TeeKind};
use crate::{AttestError, Result};

/// The first 8 bytes of simulated evidence (format `VEILSIM`, version `1`).
pub const SIM_MAGIC: &[u8; 8] = b"VEILSIM1";
/// The domain tag of the development key's signature.
pub const SIM_SIGN_TAG: &str = "veil/v1/sim-evidence";
/// The name of the simulated TEE's single measurement register in [`Claims::measurements`].
pub const SIM_MEASUREMENT: &str = "sim_measurement";

const BODY_LEN: usize = 32 + 32 + 64 + 8;
const SIG_LEN: usize = 64;
/// Length of encoded simulated evidence.
pub const SIM_EVIDENCE_LEN: usize = 8 + 4 + BODY_LEN + 4 + SIG_LEN;

/// Decoded simulated evidence. Decoding checks only the format; [`SimVerifier`] checks the signature.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SimEvidence {
    /// The development public key that signed it.
    pub dev_key: [u8; 32],
    /// The simulated measurement (a hash of the executable and its configuration).
    pub measurement: [u8; 32],
    /// The 64 bytes of report data.
    pub report_data: [u8; 64],
    /// When it was produced (unix seconds).
    pub issued_at: u64,
    /// Ed25519 signature by `dev_key`.
    pub signature: [u8; 64],
}

fn signed_prefix(
    dev_key: &[u8; 32],
    measurement: &[u8; 32],
    report_data: &[u8; 64],
    issued_at: u64,
) -> Vec<u8> {
    let mut out = Vec::with_capacity(SIM_EVIDENCE_LEN);
    out.extend_from_slice(SIM_MAGIC);
    out.extend_from_slice(&(BODY_LEN as u32).to_be_bytes());
    out.extend_from_slice(dev_key);
    out.extend_from_slice(measurement);
    out.extend_from_slice(report_data);
    out.extend_from_slice(&issued_at.to_be_bytes());
    out
}

impl SimEvidence {
    /// Produces evidence signed by `key` (the format's constructor; the simulated platform in
    /// `veil-platform` calls it).
    pub fn sign(key: &SigningKey, measurement: [u8; 32], report_data: [u8; 64], issued_at: u64) -> Self {
        let dev_key = key.verifying_key().to_bytes();
        let msg = signed_prefix(&dev_key, &measurement, &report_data, issued_at);
        let signature = key.sign(SIM_SIGN_TAG, &msg).to_bytes();
        Self {
            dev_key,
            measurement,
            report_data,
            issued_at,
            signature,
        }
    }

    /// The wire encoding.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = signed_prefix(
            &self.dev_key,
            &self.measurement,
            &self.report_data,
            self.issued_at,
        );
        out.extend_from_slice(&(SIG_LEN as u32).to_be_bytes());
        out.extend_from_slice(&self.signature);
        out
    }

    /// Decodes the wire encoding; rejects anything but exactly one well-formed version-1 record.
    pub fn from_bytes(bytes: &[u8]) -> Result<Self> {
        let mut r = Reader(bytes);
        let magic = r.take(8, "magic")?;
        if magic != SIM_MAGIC {
            if magic.starts_with(b"VEILSIM") {
                return Err(AttestError::Unsupported(format!(
                    "simulated evidence version {:?} (this build reads version 1)",
                    String::from_utf8_lossy(&magic[7..])
                )));
            }
            return Err(AttestError::Malformed(
                "not simulated TEE evidence (no VEILSIM1 magic)".into(),
            ));
        }
        let body_len = r.u32("body length")?;
        if body_len as usize != BODY_LEN {
            return Err(AttestError::Malformed(format!(
                "simulated evidence body is {body_len} bytes, expected {BODY_LEN}"
            )));
        }
        let dev_key = r.array::<32>("dev key")?;
        let measurement = r.array::<32>("measurement")?;
        let report_data = r.array::<64>("report data")?;
        let issued_at = u64::from_be_bytes(r.array::<8>("issued-at time")?);
        let sig_len = r.u32("signature length")?;
        if sig_len as usize != SIG_LEN {
            return Err(AttestError::Malformed(format!(
                "simulated evidence signature is {sig_len} bytes, expected {SIG_LEN}"
            )));
        }
        let signature = r.array::<64>("signature")?;
        if !r.0.is_empty() {
            return Err(AttestError::Malformed(format!(
                "{} trailing bytes after simulated evidence",
                r.0.len()
            )));
        }
        Ok(Self {
            dev_key,
            measurement,
            report_data,
            issued_at,
            signature,
        })
    }
}

struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize, what: &str) -> Result<&'a [u8]> {
        if self.0.len() < n {
            return Err(AttestError::Malformed(format!(
                "simulated evidence truncated in its {what} ({} of {n} bytes)",
                self.0.len()
            )));
        }
        let (head, tail) = self.0.split_at(n);
        self.0 = tail;
        Ok(head)
    }

    fn array<const N: usize>(&mut self, what: &str) -> Result<[u8; N]> {
        let mut out = [0u8; N];
        out.copy_from_slice(self.take(N, what)?);
        Ok(out)
    }

    fn u32(&mut self, what: &str) -> Result<u32> {
        Ok(u32::from_be_bytes(self.array::<4>(what)?))
    }
}

/// Verifies simulated evidence: format and the development key's signature (the key is the one in the
/// evidence; a [`crate::Policy`] can pin allowed keys).
#[derive(Debug, Clone, Copy, Default)]
pub struct SimVerifier;

impl SimVerifier {
    /// Verifies `evidence` and extracts its claims (always `simulated: true`).
    pub fn verify(&self, evidence: &[u8], now: u64) -> Result<Claims> {
        let ev = SimEvidence::from_bytes(evidence)?;
        let key = VerifyingKey::from_bytes(&ev.dev_key)
            .map_err(|e| AttestError::BadSignature(format!("simulated evidence dev key: {e}")))?;
        let msg = signed_prefix(&ev.dev_key, &ev.measurement, &ev.report_data, ev.issued_at);
        key.verify(SIM_SIGN_TAG, &msg, &Signature::from_bytes(&ev.signature))
            .map_err(|_| {
                AttestError::BadSignature("simulated evidence is not signed by its dev key".into())
            })?;
        let mut measurements = Measurements::new();
        measurements.insert(SIM_MEASUREMENT.to_string(), HexBytes::from(&ev.measurement[..]));
        Ok(Claims {
            tee: TeeKind::Simulated,
            simulated: true,
            measurements,
            report_data: HexBytes::from(&ev.report_data[..]),
            tcb_status: TcbStatus::UpToDate,
            advisory_ids: Vec::new(),
            debug: false,
            platform: PlatformFlags::default(),
            collateral: None,
            issued_at: Some(ev.issued_at),
            sim_key: Some(HexBytes::from(&ev.dev_key[..])),
            verified_at: now,
        })
    }
}
