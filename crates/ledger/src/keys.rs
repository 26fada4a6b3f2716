//! Epoch keys and the key ring (DESIGN.md "Key hierarchy").
//!
//! From the epoch's seed, with `veil_crypto::kdf` (HKDF-SHA256, context `len(purpose) | purpose |
//! epoch`):
//!
//! - transaction key pair (X25519, RFC 9180 `DeriveKeyPair`) from `derive(seed, "veil/v1/tx-key", e)`;
//! - state key `derive(seed, "veil/v1/state-key", e)`, and from it the slot key
//!   (`"veil/v1/state-slot-key"`, HMAC-SHA256 of logical state keys) and the two halves of the
//!   AES-256-SIV key (`"veil/v1/state-siv-mac-key"`, `"veil/v1/state-siv-enc-key"`).
//!
//! The seed ratchets forward (`seed[e+1] = seed[e].ratchet()`); the ring keeps the keys of the current
//! and the previous epoch (envelopes sealed just before an epoch change still execute) and erases
//! everything older.

use std::fmt;

use aes_siv::KeyInit as _;
use aes_siv::siv::Aes256Siv;
use hmac::{Hmac, Mac as _};
use sha2::Sha256;
use veil_crypto::kdf::{Seed, derive};
use veil_crypto::seal::{HpkePublicKey, HpkeSecretKey};
use zeroize::Zeroizing;

use crate::tags;

/// The keys of one epoch. Secrets are zeroized on drop and never printed.
#[derive(Clone)]
pub struct EpochKeys {
    epoch: u64,
    tx_secret: HpkeSecretKey,
    tx_public: HpkePublicKey,
    state_key: Zeroizing<[u8; 32]>,
    slot_mac: Hmac<Sha256>,
    siv_key: Zeroizing<[u8; 64]>,
}

impl fmt::Debug for EpochKeys {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "EpochKeys(epoch {}, tx public {:?}, secrets <redacted>)",
            self.epoch, self.tx_public
        )
    }
}

impl EpochKeys {
    /// Derives the keys of `epoch` from that epoch's seed.
    pub fn derive(seed: &Seed, epoch: u64) -> Self {
        let tx_ikm = seed.derive(tags::TX_KEY, epoch);
        let tx_secret = HpkeSecretKey::derive(tx_ikm.as_ref());
        let state_key = seed.derive(tags::STATE_KEY, epoch);
        let slot_key = derive(state_key.as_ref(), tags::STATE_SLOT_KEY, epoch);
        let mac_half = derive(state_key.as_ref(), tags::STATE_SIV_MAC_KEY, epoch);
        let enc_half = derive(state_key.as_ref(), tags::STATE_SIV_ENC_KEY, epoch);
        let mut siv_key = Zeroizing::new([0u8; 64]);
        siv_key[..32].copy_from_slice(mac_half.as_ref());
        siv_key[32..].copy_from_slice(enc_half.as_ref());
        // HMAC accepts keys of any length, so this cannot fail; `new_from_slice` is the only
        // constructor taking a slice.
        let slot_mac = match Hmac::<Sha256>::new_from_slice(slot_key.as_ref()) {
            Ok(m) => m,
            Err(_) => unreachable!("HMAC takes keys of any length"),
        };
        Self {
            epoch,
            tx_public: tx_secret.public_key(),
            tx_secret,
            state_key,
            slot_mac,
            siv_key,
        }
    }

    /// The epoch these keys belong to.
    pub fn epoch(&self) -> u64 {
        self.epoch
    }

    /// The public transaction key: wallets seal envelopes and queries of this epoch to it.
    pub fn tx_public(&self) -> HpkePublicKey {
        self.tx_public
    }

    /// The secret transaction key (stays in the enclave).
    pub(crate) fn tx_secret(&self) -> &HpkeSecretKey {
        &self.tx_secret
    }

    /// A fingerprint of the state key (tagged hash), for tests and diagnostics; reveals nothing of it.
    pub fn state_key_fingerprint(&self) -> [u8; 32] {
        veil_crypto::hash::sha256_tagged("veil/v1/state-key-fingerprint", &[self.state_key.as_ref()])
    }

    /// The slot of a logical state key: HMAC-SHA256(slot key, `"veil/v1/state-slot"` | len | key).
    pub(crate) fn slot(&self, logical: &[u8]) -> [u8; 32] {
        let mut mac = self.slot_mac.clone();
        mac.update(&(tags::STATE_SLOT.len() as u32).to_be_bytes());
        mac.update(tags::STATE_SLOT.as_bytes());
        mac.update(&(logical.len() as u32).to_be_bytes());
        mac.update(logical);
        mac.finalize().into_bytes().into()
    }

    fn siv(&self) -> Aes256Siv {
        let key: &[u8; 64] = &self.siv_key;
        Aes256Siv::new(key.into())
    }

    /// AES-256-SIV of a state value, with the tag and the slot as associated data.
    pub(crate) fn seal_value(&self, slot: &[u8; 32], plaintext: &[u8]) -> Option<Vec<u8>> {
        self.siv()
            .encrypt([tags::STATE_VALUE.as_bytes(), slot.as_slice()], plaintext)
            .ok()
    }

    /// Opens a value sealed with [`EpochKeys::seal_value`] under the same slot.
    pub(crate) fn open_value(&self, slot: &[u8; 32], ciphertext: &[u8]) -> Option<Vec<u8>> {
        self.siv()
            .decrypt([tags::STATE_VALUE.as_bytes(), slot.as_slice()], ciphertext)
            .ok()
    }
}

/// The seed and the keys of the current and previous epoch.
///
/// The ring holds the *oldest* seed it needs: the previous epoch's once it has advanced (it holds
/// that epoch's keys anyway, so this exposes nothing more), else the current one's. That lets a
/// restarted validator rebuild exactly the same ring — previous epoch included — from what it sealed
/// to disk: `KeyRing::new(seed, seed_epoch)` then `advance_to(epoch)`. Every validator must hold the
/// previous epoch's keys, or it would skip grace-epoch envelopes that the others execute.
#[derive(Clone)]
pub struct KeyRing {
    seed: Seed,
    seed_epoch: u64,
    current: EpochKeys,
    previous: Option<EpochKeys>,
}

impl fmt::Debug for KeyRing {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "KeyRing(epoch {}, previous {}, seed <redacted> of epoch {})",
            self.current.epoch,
            self.previous.is_some(),
            self.seed_epoch
        )
    }
}

impl KeyRing {
    /// A ring at `epoch`, from that epoch's seed (at genesis: the network seed, epoch 0).
    pub fn new(seed_for_epoch: Seed, epoch: u64) -> Self {
        let current = EpochKeys::derive(&seed_for_epoch, epoch);
        Self {
            seed: seed_for_epoch,
            seed_epoch: epoch,
            current,
            previous: None,
        }
    }

    /// The current epoch's keys.
    pub fn current(&self) -> &EpochKeys {
        &self.current
    }

    /// The current epoch.
    pub fn epoch(&self) -> u64 {
        self.current.epoch
    }

    /// The keys of `epoch` if the ring still (or already) holds them: the current and previous epoch.
    pub fn get(&self, epoch: u64) -> Option<&EpochKeys> {
        if epoch == self.current.epoch {
            Some(&self.current)
        } else {
            self.previous.as_ref().filter(|p| p.epoch == epoch)
        }
    }

    /// Whether the ring holds the previous epoch's keys (always, once it has advanced at least once
    /// or was rebuilt from the previous epoch's seed).
    pub fn has_previous(&self) -> bool {
        self.previous.is_some()
    }

    /// Ratchets forward to `epoch` (a no-op when not ahead), erasing every seed and key older than
    /// `epoch - 1`.
    pub fn advance_to(&mut self, epoch: u64) {
        if epoch <= self.current.epoch {
            return;
        }
        let prev_epoch = epoch - 1;
        // Ratchet the held seed up to the previous epoch's; each step drops (zeroizes) the older one.
        let mut seed = self.seed.clone();
        let mut e = self.seed_epoch;
        while e < prev_epoch {
            seed = seed.ratchet();
            e += 1;
        }
        let previous = if self.current.epoch == prev_epoch {
            self.current.clone()
        } else {
            EpochKeys::derive(&seed, prev_epoch)
        };
        let next = seed.ratchet();
        self.current = EpochKeys::derive(&next, epoch);
        self.previous = Some(previous);
        // Replacing drops the old seed, which zeroizes it.
        self.seed = seed;
        self.seed_epoch = prev_epoch;
    }

    /// The oldest seed the ring holds, to seal to disk together with [`KeyRing::seed_epoch`] (see the
    /// type's documentation for rebuilding the ring from it).
    pub fn seed(&self) -> &Seed {
        &self.seed
    }

    /// The epoch of [`KeyRing::seed`].
    pub fn seed_epoch(&self) -> u64 {
        self.seed_epoch
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn seed(b: u8) -> Seed {
        Seed::from_bytes([b; 32])
    }

    #[test]
    fn derivation_is_deterministic_and_separated() {
        let a = EpochKeys::derive(&seed(1), 0);
        let b = EpochKeys::derive(&seed(1), 0);
        assert_eq!(a.tx_public(), b.tx_public());
        assert_eq!(a.slot(b"k"), b.slot(b"k"));
        assert_ne!(a.slot(b"k"), a.slot(b"l"));
        let c = EpochKeys::derive(&seed(1), 1);
        assert_ne!(a.tx_public(), c.tx_public());
        assert_ne!(a.slot(b"k"), c.slot(b"k"));
        assert_ne!(a.state_key_fingerprint(), c.state_key_fingerprint());
        let d = EpochKeys::derive(&seed(2), 0);
        assert_ne!(a.tx_public(), d.tx_public());
        // Pinned: a change of the derivation is a protocol change.
        assert_eq!(
            hex::encode(EpochKeys::derive(&seed(0), 0).tx_public().to_bytes()),
            hex::encode(
                HpkeSecretKey::derive(&*derive(&[0; 32], "veil/v1/tx-key", 0))
                    .public_key()
                    .to_bytes()
            )
        );
    }

    #[test]
    fn siv_is_deterministic_and_bound_to_the_slot() {
        let k = EpochKeys::derive(&seed(1), 0);
        let s1 = k.slot(b"a");
        let s2 = k.slot(b"b");
        let ct = k.seal_value(&s1, &[7u8; 128]).unwrap();
        assert_eq!(ct.len(), 144);
        assert_eq!(ct, k.seal_value(&s1, &[7u8; 128]).unwrap());
        assert_ne!(ct, k.seal_value(&s2, &[7u8; 128]).unwrap());
        assert_eq!(k.open_value(&s1, &ct).unwrap(), vec![7u8; 128]);
        assert!(k.open_value(&s2, &ct).is_none());
        let other = EpochKeys::derive(&seed(1), 1);
        assert!(other.open_value(&s1, &ct).is_none());
    }

    #[test]
    fn ring_ratchets_and_forgets() {
        let mut ring = KeyRing::new(seed(3), 0);
        let k0 = ring.current().tx_public();
        assert!(ring.get(0).is_some() && ring.get(1).is_none() && !ring.has_previous());
        ring.advance_to(1);
        assert_eq!(ring.epoch(), 1);
        assert_eq!(ring.get(0).unwrap().tx_public(), k0);
        assert_eq!(ring.seed().expose(), seed(3).expose());
        assert_eq!(ring.seed_epoch(), 0);
        let s1 = seed(3).ratchet();
        assert_eq!(ring.current().tx_public(), EpochKeys::derive(&s1, 1).tx_public());
        ring.advance_to(2);
        assert!(ring.get(0).is_none(), "epoch 0 keys must be gone");
        assert_ne!(ring.seed().expose(), seed(3).expose(), "seed 0 must be gone");
        assert_eq!(ring.seed().expose(), s1.expose());
        ring.advance_to(1);
        assert_eq!(ring.epoch(), 2);
        // Jumping several epochs gives the same keys as stepping.
        let mut jump = KeyRing::new(seed(3), 0);
        jump.advance_to(5);
        let mut step = KeyRing::new(seed(3), 0);
        for e in 1..=5 {
            step.advance_to(e);
        }
        assert_eq!(jump.current().tx_public(), step.current().tx_public());
        assert_eq!(jump.get(4).unwrap().tx_public(), step.get(4).unwrap().tx_public());
        assert_eq!(jump.seed().expose(), step.seed().expose());
        // Rebuilding from what the ring says to persist gives the same ring.
        let mut rebuilt = KeyRing::new(step.seed().clone(), step.seed_epoch());
        rebuilt.advance_to(5);
        assert_eq!(
            rebuilt.get(4).unwrap().tx_public(),
            step.get(4).unwrap().tx_public()
        );
        assert_eq!(
            rebuilt.current().state_key_fingerprint(),
            step.current().state_key_fingerprint()
        );
    }

    #[test]
    fn debug_redacts() {
        let ring = KeyRing::new(seed(0xAB), 0);
        let shown = format!("{ring:?} {:?}", ring.current());
        assert!(shown.contains("redacted"));
        assert!(!shown.contains("abab") && !shown.contains("171"));
    }
}
