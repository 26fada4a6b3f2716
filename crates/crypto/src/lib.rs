//! Veil's cryptography: HPKE sealing, Ed25519 identities, streaming AEAD, KDF and size padding.
//!
//! Every primitive comes from a well-kept crate (`hpke`, AWS-LC for opening HPKE messages and for the
//! stream's chunks, `ed25519-dalek`, `chacha20poly1305`, `hkdf`, `sha2`); this crate only composes them with
//! Veil's domain tags and versioned, length-prefixed encodings. Every hash, KDF and signature input starts with a `"veil/v1/<purpose>"` tag.
#![deny(unsafe_code)]

pub mod aead;
mod awslc;
mod error;
pub mod frames;
pub mod hash;
pub mod kdf;
pub mod pad;
pub mod rand;
pub mod seal;
pub mod sign;
pub mod stream;

pub use error::{CryptoError, Result};

/// Every domain tag starts with this prefix, so a tag from another protocol or version never collides.
pub const TAG_PREFIX: &str = "veil/v1/";

/// Appends `bytes` to `out`, preceded by its length as a big-endian u32.
///
/// Panics never: inputs longer than `u32::MAX` cannot exist in Veil's formats, and are rejected by the
/// callers that take untrusted lengths; this helper is only used on locally produced values.
pub(crate) fn put_lp(out: &mut Vec<u8>, bytes: &[u8]) {
    let len = u32::try_from(bytes.len()).unwrap_or(u32::MAX);
    out.extend_from_slice(&len.to_be_bytes());
    out.extend_from_slice(bytes);
}
