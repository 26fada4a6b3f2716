//! HPKE (RFC 9180, base mode, DHKEM(X25519, HKDF-SHA256) + HKDF-SHA256 + ChaCha20-Poly1305) to seal a
//! message to a public key.
//!
//! A sealed message is versioned and self-describing:
//!
//! ```text
//! version (1) = 1 | kem id (2) | kdf id (2) | aead id (2) | purpose length (2) | purpose
//! | encapsulated key (32) | ciphertext with tag
//! ```
//!
//! The purpose is a `"veil/v1/<purpose>"` domain tag; it is HPKE's `info`, so a message sealed for one
//! purpose never opens as another. The header is bound into the AEAD's associated data together with the
//! caller's `aad`.

use std::fmt;
use std::sync::Arc;

use hpke::aead::ChaCha20Poly1305;
use hpke::kdf::HkdfSha256;
use hpke::kem::X25519HkdfSha256;
use hpke::{Deserializable, Kem as _, OpModeR, OpModeS, Serializable};
use zeroize::Zeroizing;

use crate::{CryptoError, Result};

type Kem = X25519HkdfSha256;

const VERSION: u8 = 1;
const KEM_ID: u16 = 0x0020;
const KDF_ID: u16 = 0x0001;
const AEAD_ID: u16 = 0x0003;
const ENC_LEN: usize = 32;
const TAG_LEN: usize = 16;

/// An X25519 public key that messages are sealed to.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct HpkePublicKey([u8; 32]);

impl HpkePublicKey {
    /// Parses a public key (any 32 bytes is an X25519 public key; low-order points are rejected by the
    /// KEM when sealing).
    pub fn from_bytes(bytes: [u8; 32]) -> Self {
        Self(bytes)
    }

    /// Parses a public key from a slice that must be 32 bytes long.
    pub fn from_slice(bytes: &[u8]) -> Result<Self> {
        bytes.try_into().map(Self).map_err(|_| CryptoError::InvalidKey {
            what: "HPKE public",
            why: format!("expected 32 bytes, got {}", bytes.len()),
        })
    }

    pub fn to_bytes(&self) -> [u8; 32] {
        self.0
    }
}

impl fmt::Debug for HpkePublicKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "HpkePublicKey({})", hex::encode(self.0))
    }
}

/// An X25519 secret key that opens sealed messages. Zeroized on drop; never printed.
#[derive(Clone)]
pub struct HpkeSecretKey {
    secret: Zeroizing<[u8; 32]>,
    public: HpkePublicKey,
    /// The same key parsed once inside AWS-LC, which opens messages (`None` only if AWS-LC could
    /// not allocate it; then the `hpke` crate opens).
    recipient: Option<Arc<crate::awslc::RecipientKey>>,
}

impl fmt::Debug for HpkeSecretKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "HpkeSecretKey(<redacted>, public {:?})", self.public)
    }
}

impl HpkeSecretKey {
    /// A fresh key pair from the OS CSPRNG.
    pub fn generate() -> Result<Self> {
        let ikm = Zeroizing::new(crate::rand::array::<32>()?);
        Ok(Self::derive(ikm.as_ref()))
    }

    /// The key pair deterministically derived from input keying material (RFC 9180 `DeriveKeyPair`),
    /// e.g. an epoch's transaction key from the network seed.
    pub fn derive(ikm: &[u8]) -> Self {
        let (sk, pk) = Kem::derive_keypair(ikm);
        let mut secret = Zeroizing::new([0u8; 32]);
        secret.copy_from_slice(&sk.to_bytes());
        let mut public = [0u8; 32];
        public.copy_from_slice(&pk.to_bytes());
        Self::with_public(secret, HpkePublicKey(public))
    }

    /// Restores a secret key from its 32 bytes (e.g. unsealed from disk).
    pub fn from_bytes(bytes: &[u8; 32]) -> Result<Self> {
        let sk = <Kem as hpke::Kem>::PrivateKey::from_bytes(bytes).map_err(|e| CryptoError::InvalidKey {
            what: "HPKE secret",
            why: e.to_string(),
        })?;
        let pk = Kem::sk_to_pk(&sk);
        let mut public = [0u8; 32];
        public.copy_from_slice(&pk.to_bytes());
        Ok(Self::with_public(Zeroizing::new(*bytes), HpkePublicKey(public)))
    }

    fn with_public(secret: Zeroizing<[u8; 32]>, public: HpkePublicKey) -> Self {
        let recipient = crate::awslc::RecipientKey::new(&secret).map(Arc::new);
        Self {
            secret,
            public,
            recipient,
        }
    }

    /// The secret bytes, for sealing to disk.
    pub fn to_bytes(&self) -> Zeroizing<[u8; 32]> {
        self.secret.clone()
    }

    pub fn public_key(&self) -> HpkePublicKey {
        self.public
    }
}

fn header(purpose: &str) -> Result<Vec<u8>> {
    if !purpose.starts_with(crate::TAG_PREFIX) {
        return Err(CryptoError::malformed(
            "purpose",
            format!("{purpose:?} must start with {:?}", crate::TAG_PREFIX),
        ));
    }
    let plen = u16::try_from(purpose.len())
        .map_err(|_| CryptoError::malformed("purpose", "longer than 65535 bytes"))?;
    let mut h = Vec::with_capacity(9 + purpose.len());
    h.push(VERSION);
    h.extend_from_slice(&KEM_ID.to_be_bytes());
    h.extend_from_slice(&KDF_ID.to_be_bytes());
    h.extend_from_slice(&AEAD_ID.to_be_bytes());
    h.extend_from_slice(&plen.to_be_bytes());
    h.extend_from_slice(purpose.as_bytes());
    Ok(h)
}

fn full_aad(header: &[u8], aad: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(4 + header.len() + aad.len());
    crate::put_lp(&mut out, header);
    out.extend_from_slice(aad);
    out
}

/// Seals `plaintext` to `recipient` for `purpose` (a `"veil/v1/…"` tag), binding `aad`.
pub fn seal(recipient: &HpkePublicKey, purpose: &str, aad: &[u8], plaintext: &[u8]) -> Result<Vec<u8>> {
    let head = header(purpose)?;
    let pk =
        <Kem as hpke::Kem>::PublicKey::from_bytes(&recipient.0).map_err(|e| CryptoError::InvalidKey {
            what: "HPKE public",
            why: e.to_string(),
        })?;
    let (enc, ct) = hpke::single_shot_seal::<ChaCha20Poly1305, HkdfSha256, Kem>(
        &OpModeS::Base,
        &pk,
        purpose.as_bytes(),
        plaintext,
        &full_aad(&head, aad),
    )
    .map_err(|e| CryptoError::InvalidKey {
        what: "HPKE recipient",
        why: e.to_string(),
    })?;
    let mut out = head;
    out.extend_from_slice(&enc.to_bytes());
    out.extend_from_slice(&ct);
    Ok(out)
}

/// The parts of a sealed message, parsed without decrypting.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SealedHeader<'a> {
    pub purpose: &'a str,
    header_len: usize,
}

/// Parses a sealed message's header: version, suite and purpose. Rejects unknown versions and suites.
pub fn parse_header(sealed: &[u8]) -> Result<SealedHeader<'_>> {
    const WHAT: &str = "sealed message";
    if sealed.len() < 9 {
        return Err(CryptoError::malformed(
            WHAT,
            format!("{} bytes is shorter than its header", sealed.len()),
        ));
    }
    if sealed[0] != VERSION {
        return Err(CryptoError::UnsupportedVersion {
            what: WHAT,
            found: sealed[0],
            supported: VERSION,
        });
    }
    let id = |i: usize| u16::from_be_bytes([sealed[i], sealed[i + 1]]);
    if (id(1), id(3), id(5)) != (KEM_ID, KDF_ID, AEAD_ID) {
        return Err(CryptoError::malformed(
            WHAT,
            format!(
                "HPKE suite kem={:#06x} kdf={:#06x} aead={:#06x} is not X25519/HKDF-SHA256/ChaCha20-Poly1305",
                id(1),
                id(3),
                id(5)
            ),
        ));
    }
    let plen = id(7) as usize;
    let header_len = 9 + plen;
    if sealed.len() < header_len + ENC_LEN + TAG_LEN {
        return Err(CryptoError::malformed(
            WHAT,
            format!("truncated: {} bytes", sealed.len()),
        ));
    }
    let purpose = std::str::from_utf8(&sealed[9..header_len])
        .map_err(|_| CryptoError::malformed(WHAT, "purpose is not UTF-8"))?;
    Ok(SealedHeader { purpose, header_len })
}

/// Opens a message sealed with [`seal`] for `purpose`, with the same `aad`.
pub fn open(secret: &HpkeSecretKey, purpose: &str, aad: &[u8], sealed: &[u8]) -> Result<Vec<u8>> {
    let h = parse_header(sealed)?;
    if h.purpose != purpose {
        return Err(CryptoError::WrongPurpose {
            expected: purpose.to_owned(),
            found: h.purpose.to_owned(),
        });
    }
    let (head, rest) = sealed.split_at(h.header_len);
    let (enc, ct) = rest.split_at(ENC_LEN);
    if let Some(recipient) = &secret.recipient {
        return crate::awslc::open(recipient, enc, purpose.as_bytes(), &full_aad(head, aad), ct).ok_or(
            CryptoError::Decrypt {
                what: "sealed message",
            },
        );
    }
    open_portable(secret, purpose, &full_aad(head, aad), enc, ct)
}

/// [`open`] with the `hpke` crate alone (the fallback, and the cross-check in tests).
fn open_portable(
    secret: &HpkeSecretKey,
    purpose: &str,
    full_aad: &[u8],
    enc: &[u8],
    ct: &[u8],
) -> Result<Vec<u8>> {
    let enc = <Kem as hpke::Kem>::EncappedKey::from_bytes(enc)
        .map_err(|e| CryptoError::malformed("sealed message", format!("encapsulated key: {e}")))?;
    let sk = <Kem as hpke::Kem>::PrivateKey::from_bytes(secret.secret.as_ref()).map_err(|e| {
        CryptoError::InvalidKey {
            what: "HPKE secret",
            why: e.to_string(),
        }
    })?;
    hpke::single_shot_open::<ChaCha20Poly1305, HkdfSha256, Kem>(
        &OpModeR::Base,
        &sk,
        &enc,
        purpose.as_bytes(),
        ct,
        full_aad,
    )
    .map_err(|_| CryptoError::Decrypt {
        what: "sealed message",
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const P: &str = "veil/v1/test";

    #[test]
    fn round_trip() {
        let sk = HpkeSecretKey::generate().unwrap();
        let sealed = seal(&sk.public_key(), P, b"aad", b"the prompt").unwrap();
        assert_eq!(open(&sk, P, b"aad", &sealed).unwrap(), b"the prompt");
        assert_eq!(parse_header(&sealed).unwrap().purpose, P);
        let restored = HpkeSecretKey::from_bytes(&sk.to_bytes()).unwrap();
        assert_eq!(restored.public_key(), sk.public_key());
        assert_eq!(open(&restored, P, b"aad", &sealed).unwrap(), b"the prompt");
    }

    #[test]
    fn wrong_key_purpose_aad_are_rejected() {
        let sk = HpkeSecretKey::generate().unwrap();
        let sealed = seal(&sk.public_key(), P, b"aad", b"m").unwrap();
        let other = HpkeSecretKey::generate().unwrap();
        assert_eq!(
            open(&other, P, b"aad", &sealed),
            Err(CryptoError::Decrypt {
                what: "sealed message"
            })
        );
        assert!(matches!(
            open(&sk, "veil/v1/other", b"aad", &sealed),
            Err(CryptoError::WrongPurpose { .. })
        ));
        assert_eq!(
            open(&sk, P, b"aaD", &sealed),
            Err(CryptoError::Decrypt {
                what: "sealed message"
            })
        );
        assert!(
            seal(&sk.public_key(), "nope", b"", b"m")
                .unwrap_err()
                .to_string()
                .contains("must start")
        );
    }

    #[test]
    fn every_flipped_byte_and_truncation_is_rejected() {
        let sk = HpkeSecretKey::derive(b"fixed test ikm");
        let sealed = seal(&sk.public_key(), P, b"", b"hello world").unwrap();
        for i in 0..sealed.len() {
            let mut t = sealed.clone();
            t[i] ^= 0x80;
            assert!(open(&sk, P, b"", &t).is_err(), "flip at {i} accepted");
        }
        for n in 0..sealed.len() {
            assert!(
                open(&sk, P, b"", &sealed[..n]).is_err(),
                "truncation to {n} accepted"
            );
        }
    }

    #[test]
    fn pinned_header_and_derived_key() {
        let sk = HpkeSecretKey::derive(&[0u8; 32]);
        assert_eq!(
            hex::encode(sk.public_key().to_bytes()),
            "70a736978971281065765948fb66006c898c25acd789169223ca7336cf62146f"
        );
        let sealed = seal(&sk.public_key(), P, b"", b"").unwrap();
        // version 1, kem 0x0020, kdf 0x0001, aead 0x0003, purpose length 12, "veil/v1/test"
        assert_eq!(
            hex::encode(&sealed[..21]),
            "01002000010003000c7665696c2f76312f74657374"
        );
        assert_eq!(sealed.len(), 21 + 32 + 16);
    }

    #[test]
    fn pinned_sealed_message_still_opens() {
        // Sealed once by this implementation; a change of the format or suite makes this fail.
        let sk = HpkeSecretKey::derive(&[0u8; 32]);
        let sealed = hex::decode(
            "01002000010003000c7665696c2f76312f74657374b743d18e7571671c46fbc1b4e3345939288d5632f42dcce3088fce1c302af038cbd236769574c5190a834629773173c2c822ddf29c5e",
        ).unwrap();
        assert_eq!(open(&sk, P, b"aad", &sealed).unwrap(), b"pinned");
    }

    /// Opens with the `hpke` crate alone, for the cross-check.
    fn open_with_hpke_crate(sk: &HpkeSecretKey, aad: &[u8], sealed: &[u8]) -> Result<Vec<u8>> {
        let h = parse_header(sealed)?;
        let (head, rest) = sealed.split_at(h.header_len);
        let (enc, ct) = rest.split_at(ENC_LEN);
        open_portable(sk, h.purpose, &full_aad(head, aad), enc, ct)
    }

    #[test]
    fn aws_lc_and_hpke_crate_agree() {
        // Two independent RFC 9180 implementations: whatever one accepts the other accepts, with the
        // same plaintext; whatever one refuses the other refuses.
        let sk = HpkeSecretKey::derive(b"cross-check");
        assert!(sk.recipient.is_some(), "AWS-LC did not take the key");
        for len in [0usize, 1, 15, 16, 17, 255, 1024, 5000] {
            let msg: Vec<u8> = (0..len).map(|i| (i * 7 + len) as u8).collect();
            let sealed = seal(&sk.public_key(), P, b"ad", &msg).unwrap();
            assert_eq!(open(&sk, P, b"ad", &sealed).unwrap(), msg);
            assert_eq!(open_with_hpke_crate(&sk, b"ad", &sealed).unwrap(), msg);
            for i in (0..sealed.len()).step_by(7) {
                let mut t = sealed.clone();
                t[i] ^= 0x01;
                assert_eq!(
                    open(&sk, P, b"ad", &t).is_ok(),
                    open_with_hpke_crate(&sk, b"ad", &t).is_ok(),
                    "implementations disagree on a flip at {i} of {len}"
                );
            }
        }
        // Low-order encapsulated keys (all-zero DH output) are refused by both.
        let sealed = seal(&sk.public_key(), P, b"", b"x").unwrap();
        let h = parse_header(&sealed).unwrap().header_len;
        for low in [[0u8; 32], {
            let mut one = [0u8; 32];
            one[0] = 1;
            one
        }] {
            let mut t = sealed.clone();
            t[h..h + ENC_LEN].copy_from_slice(&low);
            assert!(open(&sk, P, b"", &t).is_err());
            assert!(open_with_hpke_crate(&sk, b"", &t).is_err());
        }
        // The pinned message opens with both.
        let pinned = HpkeSecretKey::derive(&[0u8; 32]);
        let sealed = hex::decode(
            "01002000010003000c7665696c2f76312f74657374b743d18e7571671c46fbc1b4e3345939288d5632f42dcce3088fce1c302af038cbd236769574c5190a834629773173c2c822ddf29c5e",
        )
        .unwrap();
        assert_eq!(open_with_hpke_crate(&pinned, b"aad", &sealed).unwrap(), b"pinned");
        assert_eq!(open(&pinned, P, b"aad", &sealed).unwrap(), b"pinned");
    }

    #[test]
    fn secret_key_debug_is_redacted() {
        let sk = HpkeSecretKey::derive(&[1u8; 32]);
        let shown = format!("{sk:?}");
        assert!(shown.contains("redacted") && !shown.contains(&hex::encode(*sk.to_bytes())));
    }
}
