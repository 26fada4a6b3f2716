//! The receipt a worker's enclave signs at the end of each answer.

use serde::{Deserialize, Serialize};
use veil_crypto::sign::{Signature, SigningKey, VerifyingKey};

use crate::{PROTOCOL_VERSION, Result, TypesError, hexser, tags};

/// Signed by the enclave's Ed25519 key over [`Receipt::signed_bytes`]:
///
/// ```text
/// version (u32 BE) | request hash (32) | response hash (32) | model length (u32 BE) | model
/// | prompt tokens (u32 BE) | completion tokens (u32 BE) | worker signing key (32)
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Receipt {
    pub version: u32,
    #[serde(with = "hexser::array")]
    pub request_hash: [u8; 32],
    #[serde(with = "hexser::array")]
    pub response_hash: [u8; 32],
    pub model: String,
    pub prompt_tokens: u32,
    pub completion_tokens: u32,
    #[serde(with = "hexser::array")]
    pub worker_key: [u8; 32],
    #[serde(with = "hexser::array")]
    pub signature: [u8; 64],
}

impl Receipt {
    /// Signs a receipt with the enclave's key.
    pub fn sign(
        key: &SigningKey,
        request_hash: [u8; 32],
        response_hash: [u8; 32],
        model: &str,
        prompt_tokens: u32,
        completion_tokens: u32,
    ) -> Self {
        let mut r = Self {
            version: PROTOCOL_VERSION,
            request_hash,
            response_hash,
            model: model.to_owned(),
            prompt_tokens,
            completion_tokens,
            worker_key: key.verifying_key().to_bytes(),
            signature: [0; 64],
        };
        r.signature = key.sign(tags::RECEIPT, &r.signed_bytes()).to_bytes();
        r
    }

    /// The canonical bytes the signature covers.
    pub fn signed_bytes(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(4 + 64 + 4 + self.model.len() + 8 + 32);
        out.extend_from_slice(&self.version.to_be_bytes());
        out.extend_from_slice(&self.request_hash);
        out.extend_from_slice(&self.response_hash);
        out.extend_from_slice(&u32::try_from(self.model.len()).unwrap_or(u32::MAX).to_be_bytes());
        out.extend_from_slice(self.model.as_bytes());
        out.extend_from_slice(&self.prompt_tokens.to_be_bytes());
        out.extend_from_slice(&self.completion_tokens.to_be_bytes());
        out.extend_from_slice(&self.worker_key);
        out
    }

    /// Checks the version and that `worker_key` signed it. The caller also checks that `worker_key` is the
    /// attested key and that the hashes and counts are those of its own request and answer.
    pub fn verify_signature(&self) -> Result<()> {
        if self.version != PROTOCOL_VERSION {
            return Err(TypesError::UnsupportedVersion {
                what: "receipt",
                found: self.version,
                supported: PROTOCOL_VERSION,
            });
        }
        let key = VerifyingKey::from_bytes(&self.worker_key)
            .map_err(|e| TypesError::BadReceipt(format!("worker key: {e}")))?;
        key.verify(
            tags::RECEIPT,
            &self.signed_bytes(),
            &Signature::from_bytes(&self.signature),
        )
        .map_err(|_| TypesError::BadReceipt("the signature does not verify for the worker's key".into()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signs_verifies_and_rejects_any_change() {
        let key = SigningKey::from_bytes(&[3; 32]);
        let r = Receipt::sign(&key, [1; 32], [2; 32], "smollm2", 10, 20);
        r.verify_signature().unwrap();
        let mut bad = r.clone();
        bad.completion_tokens = 21;
        assert!(
            bad.verify_signature()
                .unwrap_err()
                .to_string()
                .contains("does not verify")
        );
        let mut bad = r.clone();
        bad.model = "other".into();
        assert!(bad.verify_signature().is_err());
        let mut bad = r.clone();
        bad.worker_key = SigningKey::from_bytes(&[4; 32]).verifying_key().to_bytes();
        assert!(bad.verify_signature().is_err());
        let mut bad = r;
        bad.version = 9;
        assert!(bad.verify_signature().is_err());
    }
}
