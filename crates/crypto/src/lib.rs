//! Veil's cryptography: HPKE sealing, Ed25519 identities, streaming AEAD, KDF and size padding.
#![forbid(unsafe_code)]
