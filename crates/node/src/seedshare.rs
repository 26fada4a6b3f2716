//! Attested transfer of the network seed between validators' enclaves.
//!
//! Validator 0 creates the seed inside its enclave at genesis. Every other validator obtains it
//! only by presenting TEE evidence that passes the network's attestation policy:
//!
//! 1. the joining validator asks a running one for a fresh nonce (a challenge);
//! 2. it generates an HPKE key pair inside its enclave and produces evidence whose report data is
//!    `report_data(nonce, keys_hash([hpke_public]))` (DESIGN.md's binding);
//! 3. the running validator verifies the evidence against the policy (simulated evidence only when
//!    the policy allows it) and answers with `epoch | seed` HPKE-sealed to the bound key, the nonce
//!    as associated data;
//! 4. the joining validator opens it and seals the seed to its own disk (see [`crate::store`]).
//!
//! The grantor sends the seed of its current epoch: with the ratchet, a newcomer can derive every
//! later epoch but never an earlier one.

use veil_attest::{Evidence, ExpectedReportData, Policy, keys_hash, report_data, verify_and_appraise};
use veil_crypto::kdf::Seed;
use veil_crypto::seal::{self, HpkePublicKey, HpkeSecretKey};
use veil_platform::Platform;
use zeroize::Zeroizing;

use crate::error::{NodeError, Result};

const PURPOSE: &str = "veil/v1/seed-transfer";

/// What a joining validator sends: its evidence and the HPKE key the evidence binds.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct SeedRequest {
    /// The challenge nonce, as the grantor issued it (hex).
    pub nonce: String,
    /// Evidence envelope (`VEILEVD1…`), hex.
    pub evidence: String,
    /// The enclave HPKE public key the evidence binds, hex.
    pub hpke_public: String,
}

/// The joining side: holds the enclave secret until the sealed seed arrives.
pub struct SeedRequester {
    secret: HpkeSecretKey,
    nonce: Vec<u8>,
}

impl SeedRequester {
    /// Creates the enclave key and the evidence for `nonce` (the grantor's challenge).
    pub fn new(platform: &dyn Platform, nonce: &[u8]) -> Result<(Self, SeedRequest)> {
        let secret = HpkeSecretKey::generate()
            .map_err(|e| NodeError::Seed(format!("generating the enclave key: {e}")))?;
        let public = secret.public_key().to_bytes();
        let rd = report_data(nonce, &keys_hash(&[&public]));
        let evidence = platform
            .evidence(&rd)
            .and_then(|raw| raw.into_evidence(None))
            .map_err(|e| NodeError::Seed(format!("producing evidence: {e}")))?;
        let request = SeedRequest {
            nonce: hex::encode(nonce),
            evidence: hex::encode(evidence.to_bytes()),
            hpke_public: hex::encode(public),
        };
        Ok((
            Self {
                secret,
                nonce: nonce.to_vec(),
            },
            request,
        ))
    }

    /// Opens the grantor's answer: the seed and the epoch it belongs to.
    pub fn accept(&self, sealed: &[u8]) -> Result<(Seed, u64)> {
        let plain = Zeroizing::new(
            seal::open(&self.secret, PURPOSE, &self.nonce, sealed).map_err(|e| {
                NodeError::Seed(format!("the sealed seed does not open with our enclave key: {e}"))
            })?,
        );
        if plain.len() != 40 {
            return Err(NodeError::Seed(format!(
                "the sealed seed has {} bytes, expected 40",
                plain.len()
            )));
        }
        let mut epoch = [0u8; 8];
        epoch.copy_from_slice(&plain[..8]);
        let mut seed = [0u8; 32];
        seed.copy_from_slice(&plain[8..]);
        Ok((Seed::from_bytes(seed), u64::from_be_bytes(epoch)))
    }
}

/// The granting side: verifies `request` against `policy` for the `nonce` it issued and seals
/// `seed` (of `epoch`) to the key the evidence binds. `now` is unix seconds.
pub fn grant(
    seed: &Seed,
    epoch: u64,
    policy: &Policy,
    nonce: &[u8],
    request: &SeedRequest,
    now: u64,
) -> Result<Vec<u8>> {
    let sent_nonce =
        hex::decode(&request.nonce).map_err(|_| NodeError::Seed("the request's nonce is not hex".into()))?;
    if sent_nonce != nonce {
        return Err(NodeError::Seed(
            "the request answers another challenge; ask for a fresh nonce".into(),
        ));
    }
    let public = hex::decode(&request.hpke_public)
        .ok()
        .and_then(|b| HpkePublicKey::from_slice(&b).ok())
        .ok_or_else(|| NodeError::Seed("the request's HPKE public key is not 32 bytes of hex".into()))?;
    let evidence_bytes = hex::decode(&request.evidence)
        .map_err(|_| NodeError::Seed("the request's evidence is not hex".into()))?;
    let evidence =
        Evidence::from_bytes(&evidence_bytes).map_err(|e| NodeError::Seed(format!("evidence: {e}")))?;
    let expected = ExpectedReportData::bound(nonce, &keys_hash(&[&public.to_bytes()]));
    let claims = verify_and_appraise(&evidence, policy, &expected, now)
        .map_err(|e| NodeError::Seed(format!("evidence rejected by the network policy: {e}")))?;
    tracing::info!(
        simulated = claims.simulated,
        "granting the network seed to an attested validator"
    );
    let mut plain = Zeroizing::new(Vec::with_capacity(40));
    plain.extend_from_slice(&epoch.to_be_bytes());
    plain.extend_from_slice(seed.expose());
    seal::seal(&public, PURPOSE, nonce, &plain).map_err(|e| NodeError::Seed(format!("sealing the seed: {e}")))
}
