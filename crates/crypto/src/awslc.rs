//! HPKE open (RFC 9180, base mode, DHKEM(X25519, HKDF-SHA256), HKDF-SHA256, ChaCha20-Poly1305) through
//! AWS-LC's `EVP_HPKE` (BoringSSL's implementation; its X25519 is s2n-bignum's verified assembly).
//!
//! Opening is the recipient's hot path: every validator opens every transaction envelope and every
//! worker every request. AWS-LC's X25519 is about twice as fast as the portable Montgomery ladder
//! `hpke` uses, and the recipient key is parsed once and kept (its public key is not recomputed per
//! message). Sealing and key derivation stay with the `hpke` crate; tests open with both libraries.
//!
//! The only `unsafe` code in this crate: four FFI calls, each documented with what it requires.
#![allow(unsafe_code)]

use std::ptr::NonNull;

use aws_lc_sys as ffi;

/// A recipient secret key inside AWS-LC, parsed once. Immutable after construction.
pub(crate) struct RecipientKey(NonNull<ffi::EVP_HPKE_KEY>);

// SAFETY: the key is written only in `new` and freed only in `drop`; in between AWS-LC reads it
// through `const EVP_HPKE_KEY *` (EVP_HPKE_CTX_setup_recipient), which is safe from several threads.
unsafe impl Send for RecipientKey {}
// SAFETY: as above, shared access is read-only.
unsafe impl Sync for RecipientKey {}

impl RecipientKey {
    /// Parses an X25519 secret key; `None` if AWS-LC refuses it or cannot allocate.
    pub(crate) fn new(secret: &[u8; 32]) -> Option<Self> {
        // SAFETY: EVP_HPKE_KEY_new returns a zeroed heap key or null (checked).
        let key = NonNull::new(unsafe { ffi::EVP_HPKE_KEY_new() })?;
        let key = Self(key);
        // SAFETY: `key` is a valid, zeroed EVP_HPKE_KEY; the KEM is a static AWS-LC object; the
        // secret pointer/length describe a live 32-byte array that AWS-LC copies.
        let ok = unsafe {
            ffi::EVP_HPKE_KEY_init(
                key.0.as_ptr(),
                ffi::EVP_hpke_x25519_hkdf_sha256(),
                secret.as_ptr(),
                secret.len(),
            )
        };
        if ok == 1 {
            Some(key)
        } else {
            clear_errors();
            None
        }
    }
}

impl Drop for RecipientKey {
    fn drop(&mut self) {
        // SAFETY: the pointer came from EVP_HPKE_KEY_new and is freed exactly once (AWS-LC clears
        // the key material before releasing it).
        unsafe { ffi::EVP_HPKE_KEY_free(self.0.as_ptr()) }
    }
}

/// A receiving HPKE context, freed on drop.
struct Context(NonNull<ffi::EVP_HPKE_CTX>);

impl Drop for Context {
    fn drop(&mut self) {
        // SAFETY: the pointer came from EVP_HPKE_CTX_new and is freed exactly once; freeing also
        // clears the context's keys.
        unsafe { ffi::EVP_HPKE_CTX_free(self.0.as_ptr()) }
    }
}

/// Single-shot open: `None` when the encapsulated key is invalid or the ciphertext does not
/// authenticate under `info` and `aad`.
pub(crate) fn open(
    key: &RecipientKey,
    enc: &[u8],
    info: &[u8],
    aad: &[u8],
    ciphertext: &[u8],
) -> Option<Vec<u8>> {
    // SAFETY: EVP_HPKE_CTX_new returns a zeroed heap context or null (checked).
    let ctx = Context(NonNull::new(unsafe { ffi::EVP_HPKE_CTX_new() })?);
    // SAFETY: `ctx` and `key` are valid AWS-LC objects; KDF and AEAD are static AWS-LC objects;
    // every pointer/length pair describes a live slice that AWS-LC only reads during the call.
    let ok = unsafe {
        ffi::EVP_HPKE_CTX_setup_recipient(
            ctx.0.as_ptr(),
            key.0.as_ptr(),
            ffi::EVP_hpke_hkdf_sha256(),
            ffi::EVP_hpke_chacha20_poly1305(),
            enc.as_ptr(),
            enc.len(),
            info.as_ptr(),
            info.len(),
        )
    };
    if ok != 1 {
        clear_errors();
        return None;
    }
    let mut out = vec![0u8; ciphertext.len()];
    let mut written = 0usize;
    // SAFETY: `ctx` was set up as a recipient above; `out` has `out.len()` writable bytes and AWS-LC
    // writes at most `max_out_len` of them, reporting the count in `written`; input slices are live.
    let ok = unsafe {
        ffi::EVP_HPKE_CTX_open(
            ctx.0.as_ptr(),
            out.as_mut_ptr(),
            &mut written,
            out.len(),
            ciphertext.as_ptr(),
            ciphertext.len(),
            aad.as_ptr(),
            aad.len(),
        )
    };
    if ok != 1 || written > out.len() {
        clear_errors();
        return None;
    }
    out.truncate(written);
    Some(out)
}

/// Drops the failure reasons AWS-LC queued on this thread (they would otherwise pile up and be
/// attributed to a later, unrelated call).
fn clear_errors() {
    // SAFETY: no arguments; touches only this thread's AWS-LC error queue.
    unsafe { ffi::ERR_clear_error() }
}
