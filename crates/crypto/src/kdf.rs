//! Key derivation (HKDF-SHA256) with versioned, length-prefixed contexts, as DESIGN.md's key hierarchy.
//!
//! `derive(secret, "veil/v1/tx-key", epoch)` expands with the context
//! `len(purpose) | purpose | epoch (u64, big-endian)`, so two purposes or two epochs never share a key.
//! The network seed ratchets forward each epoch with [`Seed::ratchet`], and the old seed is erased.

use hkdf::Hkdf;
use sha2::Sha256;
use zeroize::{Zeroize, ZeroizeOnDrop, Zeroizing};

/// The salt of every HKDF extraction in Veil (version-tagged).
const SALT: &[u8] = b"veil/v1/kdf";

fn context(purpose: &str, epoch: u64) -> Vec<u8> {
    let mut info = Vec::with_capacity(4 + purpose.len() + 8);
    crate::put_lp(&mut info, purpose.as_bytes());
    info.extend_from_slice(&epoch.to_be_bytes());
    info
}

/// Derives a 32-byte key for `purpose` (a `"veil/v1/…"` tag) and `epoch` from `secret`.
pub fn derive(secret: &[u8], purpose: &str, epoch: u64) -> Zeroizing<[u8; 32]> {
    let mut out = Zeroizing::new([0u8; 32]);
    let hk = Hkdf::<Sha256>::new(Some(SALT), secret);
    // 32 bytes is far below HKDF-SHA256's 8160-byte limit, so expand cannot fail.
    if hk.expand(&context(purpose, epoch), out.as_mut()).is_err() {
        unreachable!("HKDF-SHA256 can always expand 32 bytes");
    }
    out
}

/// A 32-byte secret seed (the network seed, or any root secret). Zeroized on drop; never printed.
#[derive(Clone, Zeroize, ZeroizeOnDrop)]
pub struct Seed([u8; 32]);

impl std::fmt::Debug for Seed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Seed(<redacted>)")
    }
}

impl Seed {
    /// A fresh random seed from the OS CSPRNG.
    pub fn generate() -> crate::Result<Self> {
        Ok(Self(crate::rand::array()?))
    }

    /// Wraps existing seed bytes (e.g. unsealed from disk).
    pub fn from_bytes(bytes: [u8; 32]) -> Self {
        Self(bytes)
    }

    /// The raw bytes, for sealing to disk or to another enclave.
    pub fn expose(&self) -> &[u8; 32] {
        &self.0
    }

    /// The next epoch's seed: `seed[e+1] = HKDF(seed[e], "veil/v1/ratchet")`. The caller drops `self`,
    /// which erases the old seed, so a seed stolen later does not open earlier epochs.
    pub fn ratchet(&self) -> Seed {
        let next = derive(&self.0, "veil/v1/ratchet", 0);
        Seed(*next)
    }

    /// Derives the key for `purpose` in `epoch` from this seed.
    pub fn derive(&self, purpose: &str, epoch: u64) -> Zeroizing<[u8; 32]> {
        derive(&self.0, purpose, epoch)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn purposes_and_epochs_separate_keys() {
        let s = [7u8; 32];
        assert_ne!(
            *derive(&s, "veil/v1/tx-key", 1),
            *derive(&s, "veil/v1/state-key", 1)
        );
        assert_ne!(*derive(&s, "veil/v1/tx-key", 1), *derive(&s, "veil/v1/tx-key", 2));
        assert_eq!(*derive(&s, "veil/v1/tx-key", 1), *derive(&s, "veil/v1/tx-key", 1));
    }

    #[test]
    fn ratchet_moves_forward_and_is_deterministic() {
        let s0 = Seed::from_bytes([1u8; 32]);
        let s1 = s0.ratchet();
        assert_ne!(s0.expose(), s1.expose());
        assert_eq!(s1.expose(), Seed::from_bytes([1u8; 32]).ratchet().expose());
        assert_ne!(s1.ratchet().expose(), s1.expose());
    }

    #[test]
    fn seed_debug_is_redacted() {
        let s = Seed::from_bytes([0xAB; 32]);
        let shown = format!("{s:?}");
        assert!(
            !shown.contains("171") && !shown.to_lowercase().contains("ab,"),
            "{shown}"
        );
    }

    #[test]
    fn pinned_vector() {
        assert_eq!(
            hex::encode(*derive(&[0u8; 32], "veil/v1/tx-key", 3)),
            "734c422c2177c4227c312956ed364f4a429919f560889723200b9f69246e88f8"
        );
        assert_eq!(
            hex::encode(Seed::from_bytes([0u8; 32]).ratchet().expose()),
            "38690fda1df792c479adbbd644ebcf35ec42e549ac36d821ecbdcd4b5470fb80"
        );
    }
}
