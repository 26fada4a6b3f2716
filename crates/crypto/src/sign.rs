//! Ed25519 identities and domain-separated signatures; addresses derived from public keys.
//!
//! A signature covers `len(tag) | tag | message`, so a signature made for one purpose
//! (`"veil/v1/receipt"`) can never be replayed as another (`"veil/v1/tx"`).

use std::fmt;
use std::str::FromStr;

use ed25519_dalek::Signer;
use zeroize::Zeroizing;

use crate::{CryptoError, Result};

fn signed_bytes(tag: &str, msg: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(4 + tag.len() + msg.len());
    crate::put_lp(&mut out, tag.as_bytes());
    out.extend_from_slice(msg);
    out
}

/// An Ed25519 signing key. Zeroized on drop (ed25519-dalek's `zeroize` feature); never printed.
#[derive(Clone)]
pub struct SigningKey(ed25519_dalek::SigningKey);

impl fmt::Debug for SigningKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SigningKey(<redacted>, public {})", self.verifying_key())
    }
}

impl SigningKey {
    /// A fresh key from the OS CSPRNG.
    pub fn generate() -> Result<Self> {
        let seed = Zeroizing::new(crate::rand::array::<32>()?);
        Ok(Self::from_bytes(&seed))
    }

    /// The key for a 32-byte secret seed.
    pub fn from_bytes(seed: &[u8; 32]) -> Self {
        Self(ed25519_dalek::SigningKey::from_bytes(seed))
    }

    /// The 32-byte secret seed, for sealing to disk.
    pub fn to_bytes(&self) -> Zeroizing<[u8; 32]> {
        Zeroizing::new(self.0.to_bytes())
    }

    pub fn verifying_key(&self) -> VerifyingKey {
        VerifyingKey(self.0.verifying_key())
    }

    /// Signs `msg` under the domain tag `tag` (a `"veil/v1/…"` string).
    pub fn sign(&self, tag: &str, msg: &[u8]) -> Signature {
        Signature(self.0.sign(&signed_bytes(tag, msg)))
    }
}

/// An Ed25519 public key.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct VerifyingKey(ed25519_dalek::VerifyingKey);

impl VerifyingKey {
    /// Parses a public key; rejects encodings that are not a valid curve point.
    pub fn from_bytes(bytes: &[u8; 32]) -> Result<Self> {
        ed25519_dalek::VerifyingKey::from_bytes(bytes)
            .map(Self)
            .map_err(|e| CryptoError::InvalidKey {
                what: "Ed25519 public",
                why: e.to_string(),
            })
    }

    /// Parses a public key from a slice that must be 32 bytes long.
    pub fn from_slice(bytes: &[u8]) -> Result<Self> {
        let arr: [u8; 32] = bytes.try_into().map_err(|_| CryptoError::InvalidKey {
            what: "Ed25519 public",
            why: format!("expected 32 bytes, got {}", bytes.len()),
        })?;
        Self::from_bytes(&arr)
    }

    pub fn to_bytes(&self) -> [u8; 32] {
        self.0.to_bytes()
    }

    /// Verifies a signature made with [`SigningKey::sign`] under the same tag (strict verification:
    /// rejects small-order keys and non-canonical signatures).
    pub fn verify(&self, tag: &str, msg: &[u8], sig: &Signature) -> Result<()> {
        self.0
            .verify_strict(&signed_bytes(tag, msg), &sig.0)
            .map_err(|_| CryptoError::BadSignature)
    }

    /// The account address of this key.
    pub fn address(&self) -> Address {
        Address::of(self)
    }
}

impl fmt::Debug for VerifyingKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "VerifyingKey({self})")
    }
}

impl fmt::Display for VerifyingKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&hex::encode(self.to_bytes()))
    }
}

/// An Ed25519 signature.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct Signature(ed25519_dalek::Signature);

impl Signature {
    pub fn from_bytes(bytes: &[u8; 64]) -> Self {
        Self(ed25519_dalek::Signature::from_bytes(bytes))
    }

    /// Parses a signature from a slice that must be 64 bytes long.
    pub fn from_slice(bytes: &[u8]) -> Result<Self> {
        let arr: [u8; 64] = bytes.try_into().map_err(|_| {
            CryptoError::malformed("signature", format!("expected 64 bytes, got {}", bytes.len()))
        })?;
        Ok(Self::from_bytes(&arr))
    }

    pub fn to_bytes(&self) -> [u8; 64] {
        self.0.to_bytes()
    }
}

impl fmt::Debug for Signature {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Signature({})", hex::encode(self.to_bytes()))
    }
}

/// An account address: the first 20 bytes of `SHA-256("veil/v1/address" | public key)`, written as
/// `veil1` followed by 40 hex digits.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Address(pub [u8; 20]);

impl Address {
    pub const PREFIX: &'static str = "veil1";

    pub fn of(key: &VerifyingKey) -> Self {
        let h = crate::hash::sha256_tagged("veil/v1/address", &[&key.to_bytes()]);
        let mut a = [0u8; 20];
        a.copy_from_slice(&h[..20]);
        Self(a)
    }
}

impl fmt::Display for Address {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}{}", Self::PREFIX, hex::encode(self.0))
    }
}

impl fmt::Debug for Address {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Address({self})")
    }
}

impl FromStr for Address {
    type Err = CryptoError;

    fn from_str(s: &str) -> Result<Self> {
        let body = s.strip_prefix(Self::PREFIX).ok_or_else(|| {
            CryptoError::malformed("address", format!("{s:?} does not start with {:?}", Self::PREFIX))
        })?;
        let bytes = hex::decode(body).map_err(|e| {
            CryptoError::malformed("address", format!("{s:?} is not hex after the prefix: {e}"))
        })?;
        let arr: [u8; 20] = bytes.try_into().map_err(|b: Vec<u8>| {
            CryptoError::malformed(
                "address",
                format!("expected 20 bytes (40 hex digits), got {}", b.len()),
            )
        })?;
        Ok(Self(arr))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sign_verify_and_domain_separation() {
        let sk = SigningKey::from_bytes(&[9u8; 32]);
        let vk = sk.verifying_key();
        let sig = sk.sign("veil/v1/receipt", b"hello");
        vk.verify("veil/v1/receipt", b"hello", &sig).unwrap();
        assert_eq!(
            vk.verify("veil/v1/tx", b"hello", &sig),
            Err(CryptoError::BadSignature)
        );
        assert_eq!(
            vk.verify("veil/v1/receipt", b"hellO", &sig),
            Err(CryptoError::BadSignature)
        );
        let other = SigningKey::from_bytes(&[8u8; 32]).verifying_key();
        assert_eq!(
            other.verify("veil/v1/receipt", b"hello", &sig),
            Err(CryptoError::BadSignature)
        );
        let mut bytes = sig.to_bytes();
        bytes[10] ^= 1;
        assert!(
            vk.verify("veil/v1/receipt", b"hello", &Signature::from_bytes(&bytes))
                .is_err()
        );
    }

    #[test]
    fn address_round_trip_and_errors() {
        let vk = SigningKey::from_bytes(&[1u8; 32]).verifying_key();
        let a = vk.address();
        let s = a.to_string();
        assert!(s.starts_with("veil1") && s.len() == 45);
        assert_eq!(s.parse::<Address>().unwrap(), a);
        assert!(
            "veil2abcd"
                .parse::<Address>()
                .unwrap_err()
                .to_string()
                .contains("does not start")
        );
        assert!(
            "veil1zz"
                .parse::<Address>()
                .unwrap_err()
                .to_string()
                .contains("not hex")
        );
        assert!(
            "veil1abcd"
                .parse::<Address>()
                .unwrap_err()
                .to_string()
                .contains("expected 20 bytes")
        );
    }

    #[test]
    fn debug_never_shows_the_secret() {
        let sk = SigningKey::from_bytes(&[0x5A; 32]);
        let shown = format!("{sk:?}");
        assert!(shown.contains("redacted"));
        assert!(!shown.contains(&hex::encode([0x5A; 32])));
    }

    #[test]
    fn invalid_public_key_is_rejected() {
        assert!(
            VerifyingKey::from_slice(&[0u8; 31])
                .unwrap_err()
                .to_string()
                .contains("expected 32 bytes")
        );
    }

    #[test]
    fn pinned_vector() {
        let sk = SigningKey::from_bytes(&[1u8; 32]);
        assert_eq!(
            sk.verifying_key().address().to_string(),
            "veil136f4205466904d5780da4799b98548c123888fb5"
        );
        assert_eq!(
            hex::encode(sk.sign("veil/v1/test", b"msg").to_bytes()),
            "40111175a6f97d04630a6a399724135cb061b06a2f009f1f78b732686b36f1d0cc186ce47c75556f6ad16da0bc5462edbc760408b57460fc0b66f6a05c57590a"
        );
    }
}
