//! Verifies TEE evidence (Intel DCAP, simulated) and appraises its claims with a policy.
//!
//! Verification and appraisal are two steps. A [`Verifier`] (one per kind of evidence:
//! [`DcapVerifier`] for Intel TDX/SGX quotes, [`SimVerifier`] for Veil's simulated TEE) checks
//! signatures and certificate chains at a given "now" and extracts [`Claims`]; a [`Policy`] decides
//! whether those claims are acceptable (TCB status, advisories, debug, measurements, report-data
//! binding, freshness, simulated evidence). [`verify_and_appraise`] does both.
//!
//! This crate only verifies; producing evidence lives in `veil-platform`, which this crate never
//! imports. No function here panics on any input: every rejection is an [`AttestError`] that names
//! its reason.
#![forbid(unsafe_code)]
#![cfg_attr(test, allow(clippy::unwrap_used, clippy::expect_used))]

pub mod claims;
pub mod dcap;
mod error;
pub mod evidence;
pub mod policy;
pub mod samples;
pub mod sim;

pub use claims::{Claims, HexBytes, Measurements, TcbStatus, TeeKind};
pub use dcap::{Collateral, DcapVerifier};
pub use error::{AttestError, Result};
pub use evidence::{Evidence, Verifier, decode_hex_or_raw, verify_and_appraise};
pub use policy::{ExpectedReportData, Policy, keys_hash, report_data};
pub use sim::{SimEvidence, SimVerifier};
