//! Single-shot authenticated encryption (XChaCha20-Poly1305, random 192-bit nonce) for small secrets
//! at rest, such as a platform's sealed data.
//!
//! Format: `version (1) | nonce (24) | ciphertext | tag (16)`.

use chacha20poly1305::aead::{Aead, KeyInit, Payload};
use chacha20poly1305::{XChaCha20Poly1305, XNonce};

use crate::{CryptoError, Result};

const VERSION: u8 = 1;
const NONCE_LEN: usize = 24;
const TAG_LEN: usize = 16;

/// Encrypts `plaintext` under `key`, binding `aad`.
pub fn seal(key: &[u8; 32], aad: &[u8], plaintext: &[u8]) -> Result<Vec<u8>> {
    let nonce_bytes = crate::rand::array::<NONCE_LEN>()?;
    let cipher = XChaCha20Poly1305::new(key.into());
    let nonce = XNonce::from(nonce_bytes);
    let ct = cipher
        .encrypt(&nonce, Payload { msg: plaintext, aad })
        .map_err(|_| CryptoError::malformed("plaintext", "too long for XChaCha20-Poly1305"))?;
    let mut out = Vec::with_capacity(1 + NONCE_LEN + ct.len());
    out.push(VERSION);
    out.extend_from_slice(&nonce_bytes);
    out.extend_from_slice(&ct);
    Ok(out)
}

/// Decrypts what [`seal`] produced; fails on a wrong key, wrong `aad`, or any tampering.
pub fn open(key: &[u8; 32], aad: &[u8], sealed: &[u8]) -> Result<Vec<u8>> {
    let (&version, rest) = sealed
        .split_first()
        .ok_or_else(|| CryptoError::malformed("sealed data", "empty input"))?;
    if version != VERSION {
        return Err(CryptoError::UnsupportedVersion {
            what: "sealed data",
            found: version,
            supported: VERSION,
        });
    }
    if rest.len() < NONCE_LEN + TAG_LEN {
        return Err(CryptoError::malformed(
            "sealed data",
            format!(
                "{} bytes is shorter than nonce and tag ({})",
                sealed.len(),
                1 + NONCE_LEN + TAG_LEN
            ),
        ));
    }
    let (nonce, ct) = rest.split_at(NONCE_LEN);
    let nonce = XNonce::try_from(nonce).map_err(|_| CryptoError::malformed("sealed data", "bad nonce"))?;
    XChaCha20Poly1305::new(key.into())
        .decrypt(&nonce, Payload { msg: ct, aad })
        .map_err(|_| CryptoError::Decrypt { what: "sealed data" })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_tamper() {
        let key = [3u8; 32];
        let sealed = seal(&key, b"aad", b"secret").unwrap();
        assert_eq!(open(&key, b"aad", &sealed).unwrap(), b"secret");
        assert_eq!(
            open(&[4u8; 32], b"aad", &sealed),
            Err(CryptoError::Decrypt { what: "sealed data" })
        );
        assert_eq!(
            open(&key, b"aaD", &sealed),
            Err(CryptoError::Decrypt { what: "sealed data" })
        );
        for i in 1..sealed.len() {
            let mut t = sealed.clone();
            t[i] ^= 0x01;
            assert!(open(&key, b"aad", &t).is_err(), "flip at {i} accepted");
        }
        for n in 0..sealed.len() {
            assert!(
                open(&key, b"aad", &sealed[..n]).is_err(),
                "truncation to {n} accepted"
            );
        }
        let mut v = sealed.clone();
        v[0] = 2;
        assert!(matches!(
            open(&key, b"aad", &v),
            Err(CryptoError::UnsupportedVersion { found: 2, .. })
        ));
    }

    #[test]
    fn nonces_are_fresh() {
        let key = [3u8; 32];
        assert_ne!(seal(&key, b"", b"x").unwrap(), seal(&key, b"", b"x").unwrap());
    }
}
