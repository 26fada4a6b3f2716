//! Encrypted, authenticated state.
//!
//! A map from 32-byte *slots* to ciphertexts:
//!
//! - `slot = HMAC-SHA256(slot key of the epoch, len | "veil/v1/state-slot" | len | logical key)`,
//!   where the logical key is typed and fixed-size (`0x01 | address` for an account, `0x02 | address |
//!   nonce` for a receipt, `0x03 | address | index` for a history entry, `0x04` for the fee pool), so
//!   neither key names nor who holds what can be read from a slot;
//! - `value = AES-256-SIV(state SIV key of the epoch, headers = ["veil/v1/state-value", slot],
//!   version (1) = 1 | len | logical key | len | value | zeros to a multiple of 128 bytes)`:
//!   deterministic, so every honest validator computes identical bytes, and every entry has the same
//!   length (144 bytes), so an entry's kind is not visible either. The logical key is inside so the
//!   state can be re-slotted under the next epoch's keys.
//!
//! The root is incremental: leaves are the 65,536 buckets of slots by their first two bytes, middle
//! nodes the 256 groups by first byte; only buckets touched since the last commit are rehashed.
//!
//! ```text
//! leaf(p)  = H("veil/v1/state-leaf", [p (2 bytes), slot, ciphertext, slot, ciphertext, …])  (slot order)
//! mid(b)   = H("veil/v1/state-mid",  [b, p_lo, leaf(p), p_lo, leaf(p), …])  (non-empty leaves only)
//! root     = H("veil/v1/state-root", [epoch, height, entry count, b, mid(b), …])  (non-empty only)
//! ```
//!
//! with `H(tag, parts) = SHA-256(len(tag) | tag | len(part) | part | …)` (lengths u64 BE), as
//! `veil_crypto::hash::sha256_tagged`.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

use sha2::{Digest, Sha256};
use veil_crypto::sign::Address;

use crate::codec::{Reader, put_lp};
use crate::keys::EpochKeys;
use crate::query::{Direction, HistoryEntry, Receipt, ReceiptStatus};
use crate::tags;
use crate::tx::FailureReason;

/// Version byte of a state value's plaintext.
pub const STATE_VALUE_VERSION: u8 = 1;
/// State plaintexts are padded to a multiple of this.
pub const STATE_PLAINTEXT_BLOCK: usize = 128;
/// The length of every state ciphertext of this version (one block plus the SIV tag).
pub const STATE_CIPHERTEXT_LEN: usize = STATE_PLAINTEXT_BLOCK + 16;
/// The largest state ciphertext a snapshot may carry.
pub const MAX_STATE_VALUE: usize = 4096;

/// A typed logical key of the state.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) enum StateKey {
    Account(Address),
    Receipt(Address, u64),
    History(Address, u64),
    FeePool,
}

impl StateKey {
    fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(29);
        match self {
            Self::Account(a) => {
                out.push(1);
                out.extend_from_slice(&a.0);
            }
            Self::Receipt(a, n) => {
                out.push(2);
                out.extend_from_slice(&a.0);
                out.extend_from_slice(&n.to_be_bytes());
            }
            Self::History(a, i) => {
                out.push(3);
                out.extend_from_slice(&a.0);
                out.extend_from_slice(&i.to_be_bytes());
            }
            Self::FeePool => out.push(4),
        }
        out
    }

    fn decode(bytes: &[u8]) -> Result<Self, String> {
        let mut r = Reader::new(bytes);
        let key = match r.u8("key tag")? {
            1 => Self::Account(Address(r.array("address")?)),
            2 => Self::Receipt(Address(r.array("address")?), r.u64("nonce")?),
            3 => Self::History(Address(r.array("address")?), r.u64("index")?),
            4 => Self::FeePool,
            t => return Err(format!("unknown state key tag {t}")),
        };
        r.finish("state key")?;
        Ok(key)
    }
}

/// An account's record.
#[derive(Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct AccountRecord {
    pub(crate) balance: u64,
    pub(crate) nonce: u64,
    pub(crate) history_len: u64,
}

/// A typed state value.
#[derive(Clone, PartialEq, Eq)]
pub(crate) enum StateValue {
    Account(AccountRecord),
    Receipt(Receipt),
    History(HistoryEntry),
    FeePool(u64),
}

impl fmt::Debug for StateValue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("StateValue(<confidential>)")
    }
}

impl StateValue {
    fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(64);
        match self {
            Self::Account(a) => {
                out.push(1);
                out.extend_from_slice(&a.balance.to_be_bytes());
                out.extend_from_slice(&a.nonce.to_be_bytes());
                out.extend_from_slice(&a.history_len.to_be_bytes());
            }
            Self::Receipt(r) => {
                out.push(2);
                out.extend_from_slice(&r.tx_id);
                out.extend_from_slice(&r.nonce.to_be_bytes());
                out.extend_from_slice(&r.height.to_be_bytes());
                out.extend_from_slice(&r.fee.to_be_bytes());
                match r.status {
                    ReceiptStatus::Applied => out.extend_from_slice(&[0, 0]),
                    ReceiptStatus::Failed(reason) => out.extend_from_slice(&[1, reason.code()]),
                }
            }
            Self::History(h) => {
                out.push(3);
                out.extend_from_slice(&h.height.to_be_bytes());
                out.push(match h.direction {
                    Direction::Sent => 0,
                    Direction::Received => 1,
                });
                out.extend_from_slice(&h.counterparty.0);
                out.extend_from_slice(&h.amount.to_be_bytes());
                out.extend_from_slice(&h.fee.to_be_bytes());
                out.extend_from_slice(&h.nonce.to_be_bytes());
            }
            Self::FeePool(b) => {
                out.push(4);
                out.extend_from_slice(&b.to_be_bytes());
            }
        }
        out
    }

    fn decode(bytes: &[u8]) -> Result<Self, String> {
        let mut r = Reader::new(bytes);
        let v = match r.u8("value tag")? {
            1 => Self::Account(AccountRecord {
                balance: r.u64("balance")?,
                nonce: r.u64("nonce")?,
                history_len: r.u64("history length")?,
            }),
            2 => {
                let tx_id = r.array("tx id")?;
                let nonce = r.u64("nonce")?;
                let height = r.u64("height")?;
                let fee = r.u64("fee")?;
                let status = match (r.u8("status")?, r.u8("reason")?) {
                    (0, 0) => ReceiptStatus::Applied,
                    (1, c) => ReceiptStatus::Failed(
                        FailureReason::from_code(c).ok_or_else(|| format!("unknown failure reason {c}"))?,
                    ),
                    (s, c) => return Err(format!("unknown receipt status {s}/{c}")),
                };
                Self::Receipt(Receipt {
                    tx_id,
                    nonce,
                    height,
                    fee,
                    status,
                })
            }
            3 => {
                let height = r.u64("height")?;
                let direction = match r.u8("direction")? {
                    0 => Direction::Sent,
                    1 => Direction::Received,
                    d => return Err(format!("unknown direction {d}")),
                };
                Self::History(HistoryEntry {
                    height,
                    direction,
                    counterparty: Address(r.array("counterparty")?),
                    amount: r.u64("amount")?,
                    fee: r.u64("fee")?,
                    nonce: r.u64("nonce")?,
                })
            }
            4 => Self::FeePool(r.u64("fee pool")?),
            t => return Err(format!("unknown state value tag {t}")),
        };
        r.finish("state value")?;
        Ok(v)
    }

    fn matches(&self, key: &StateKey) -> bool {
        matches!(
            (key, self),
            (StateKey::Account(_), Self::Account(_))
                | (StateKey::Receipt(..), Self::Receipt(_))
                | (StateKey::History(..), Self::History(_))
                | (StateKey::FeePool, Self::FeePool(_))
        )
    }
}

fn plaintext(key: &[u8], value: &[u8]) -> Vec<u8> {
    let len = 1 + 4 + key.len() + 4 + value.len();
    let padded = len.div_ceil(STATE_PLAINTEXT_BLOCK) * STATE_PLAINTEXT_BLOCK;
    let mut out = Vec::with_capacity(padded);
    out.push(STATE_VALUE_VERSION);
    put_lp(&mut out, key);
    put_lp(&mut out, value);
    out.resize(padded, 0);
    out
}

/// Splits a plaintext into (logical key, value) bytes, checking version and padding.
fn split_plaintext(pt: &[u8]) -> Result<(&[u8], &[u8]), String> {
    if pt.is_empty() || !pt.len().is_multiple_of(STATE_PLAINTEXT_BLOCK) {
        return Err(format!("state plaintext of {} bytes is not padded", pt.len()));
    }
    let mut r = Reader::new(pt);
    let v = r.u8("state version")?;
    if v != STATE_VALUE_VERSION {
        return Err(format!("unsupported state value version {v}"));
    }
    let key = r.lp(STATE_PLAINTEXT_BLOCK, "state key")?;
    let value = r.lp(MAX_STATE_VALUE, "state value")?;
    let rest = r.take(r.remaining(), "padding")?;
    if rest.len() >= STATE_PLAINTEXT_BLOCK || rest.iter().any(|&b| b != 0) {
        return Err("bad state padding".into());
    }
    Ok((key, value))
}

/// A SHA-256 fed like `veil_crypto::hash::sha256_tagged`, part by part.
struct Tagged(Sha256);

impl Tagged {
    fn new(tag: &str) -> Self {
        let mut h = Sha256::new();
        h.update((tag.len() as u64).to_be_bytes());
        h.update(tag.as_bytes());
        Self(h)
    }

    fn part(&mut self, bytes: &[u8]) {
        self.0.update((bytes.len() as u64).to_be_bytes());
        self.0.update(bytes);
    }

    fn finish(self) -> [u8; 32] {
        self.0.finalize().into()
    }
}

/// The encrypted state: slots to ciphertexts, with an incrementally maintained root. Holds no keys.
#[derive(Clone, Default)]
pub struct State {
    entries: BTreeMap<[u8; 32], Vec<u8>>,
    leaves: BTreeMap<u16, [u8; 32]>,
    mids: BTreeMap<u8, [u8; 32]>,
    dirty: BTreeSet<u16>,
    /// Slots written since the last commit; `None` once every entry changed (new state, re-key).
    pending: Option<BTreeSet<[u8; 32]>>,
    /// `pending` as of the last commit: what that commit changed (`None`: everything).
    last_changed: Option<BTreeSet<[u8; 32]>>,
    epoch: u64,
    height: u64,
    root: [u8; 32],
}

impl fmt::Debug for State {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "State(entries {}, epoch {}, height {}, root {})",
            self.entries.len(),
            self.epoch,
            self.height,
            hex::encode(self.root)
        )
    }
}

fn prefix(slot: &[u8; 32]) -> u16 {
    u16::from_be_bytes([slot[0], slot[1]])
}

impl State {
    /// An empty state, committed at epoch 0, height 0.
    pub fn new() -> Self {
        let mut s = Self::default();
        s.commit(0, 0);
        s
    }

    /// The root committed last (see the module documentation).
    pub fn root(&self) -> [u8; 32] {
        self.root
    }

    /// The number of entries.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether the state has no entries.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// The epoch bound into the last root.
    pub fn epoch(&self) -> u64 {
        self.epoch
    }

    /// The height bound into the last root.
    pub fn height(&self) -> u64 {
        self.height
    }

    /// Every (slot, ciphertext) entry in slot order: what an observer of a validator's disk sees.
    pub fn entries(&self) -> impl Iterator<Item = (&[u8; 32], &[u8])> {
        self.entries.iter().map(|(k, v)| (k, v.as_slice()))
    }

    pub(crate) fn get(&self, keys: &EpochKeys, key: &StateKey) -> Result<Option<StateValue>, String> {
        let slot = keys.slot(&key.encode());
        let Some(ct) = self.entries.get(&slot) else {
            return Ok(None);
        };
        let pt = keys
            .open_value(&slot, ct)
            .ok_or("a state value does not decrypt under the epoch's state key")?;
        let (_, value) = split_plaintext(&pt)?;
        let value = StateValue::decode(value)?;
        if !value.matches(key) {
            return Err("a state value has the wrong kind for its key".into());
        }
        Ok(Some(value))
    }

    pub(crate) fn put(&mut self, keys: &EpochKeys, key: &StateKey, value: &StateValue) -> Result<(), String> {
        let k = key.encode();
        let slot = keys.slot(&k);
        let ct = keys
            .seal_value(&slot, &plaintext(&k, &value.encode()))
            .ok_or("AES-SIV refused to seal a state value")?;
        self.put_ciphertext(slot, ct);
        Ok(())
    }

    /// Stores an already sealed entry (replaying a persisted delta; checked by the caller).
    pub(crate) fn put_ciphertext(&mut self, slot: [u8; 32], ct: Vec<u8>) {
        self.dirty.insert(prefix(&slot));
        if let Some(pending) = &mut self.pending {
            pending.insert(slot);
        }
        self.entries.insert(slot, ct);
    }

    /// The (slot, ciphertext) entries the last commit changed, in slot order; `None` when it
    /// changed every entry (the first commit, a re-key, a replace).
    pub fn last_changes(&self) -> Option<impl Iterator<Item = (&[u8; 32], &[u8])>> {
        self.last_changed.as_ref().map(|slots| {
            slots
                .iter()
                .filter_map(|s| self.entries.get_key_value(s))
                .map(|(k, v)| (k, v.as_slice()))
        })
    }

    /// Rehashes the buckets touched since the last commit and binds `epoch` and `height` into the root.
    pub(crate) fn commit(&mut self, epoch: u64, height: u64) {
        let mut dirty_mids = BTreeSet::new();
        for p in std::mem::take(&mut self.dirty) {
            let [hi, lo] = p.to_be_bytes();
            let mut start = [0u8; 32];
            start[0] = hi;
            start[1] = lo;
            let mut end = [0xFFu8; 32];
            end[0] = hi;
            end[1] = lo;
            let mut h = Tagged::new(tags::STATE_LEAF);
            h.part(&[hi, lo]);
            let mut any = false;
            for (slot, ct) in self.entries.range(start..=end) {
                h.part(slot);
                h.part(ct);
                any = true;
            }
            if any {
                self.leaves.insert(p, h.finish());
            } else {
                self.leaves.remove(&p);
            }
            dirty_mids.insert(hi);
        }
        for b in dirty_mids {
            let lo_key = u16::from(b) << 8;
            let mut h = Tagged::new(tags::STATE_MID);
            h.part(&[b]);
            let mut any = false;
            for (p, leaf) in self.leaves.range(lo_key..=(lo_key | 0xFF)) {
                h.part(&[p.to_be_bytes()[1]]);
                h.part(leaf);
                any = true;
            }
            if any {
                self.mids.insert(b, h.finish());
            } else {
                self.mids.remove(&b);
            }
        }
        let mut h = Tagged::new(tags::STATE_ROOT);
        h.part(&epoch.to_be_bytes());
        h.part(&height.to_be_bytes());
        h.part(&(self.entries.len() as u64).to_be_bytes());
        for (b, mid) in &self.mids {
            h.part(&[*b]);
            h.part(mid);
        }
        self.epoch = epoch;
        self.height = height;
        self.root = h.finish();
        self.last_changed = self.pending.replace(BTreeSet::new());
    }

    /// Re-encrypts and re-slots every entry from `old` keys to `new` ones (then commit).
    pub(crate) fn rekey(&mut self, old: &EpochKeys, new: &EpochKeys) -> Result<(), String> {
        let mut fresh = BTreeMap::new();
        for (slot, ct) in &self.entries {
            let pt = old
                .open_value(slot, ct)
                .ok_or("a state value does not decrypt under the old epoch's state key")?;
            let (key, _) = split_plaintext(&pt)?;
            let new_slot = new.slot(key);
            let new_ct = new
                .seal_value(&new_slot, &pt)
                .ok_or("AES-SIV refused to seal a state value")?;
            fresh.insert(new_slot, new_ct);
        }
        self.replace(fresh);
        Ok(())
    }

    /// Replaces every entry (all buckets become dirty).
    pub(crate) fn replace(&mut self, entries: BTreeMap<[u8; 32], Vec<u8>>) {
        self.entries = entries;
        self.leaves.clear();
        self.mids.clear();
        self.dirty = self.entries.keys().map(prefix).collect();
        self.pending = None;
    }

    /// Checks that every entry decrypts under `keys`, sits in the slot of the key inside it, and
    /// decodes.
    pub(crate) fn verify_all(&self, keys: &EpochKeys) -> Result<(), String> {
        for (slot, ct) in &self.entries {
            check_entry(keys, slot, ct)?;
        }
        Ok(())
    }
}

/// Checks that one entry decrypts under `keys`, sits in the slot of the key inside it, and decodes.
pub(crate) fn check_entry(keys: &EpochKeys, slot: &[u8; 32], ct: &[u8]) -> Result<(), String> {
    let pt = keys
        .open_value(slot, ct)
        .ok_or("an entry does not decrypt under the epoch's state key")?;
    let (key, value) = split_plaintext(&pt)?;
    if keys.slot(key) != *slot {
        return Err("an entry is not in its key's slot".into());
    }
    let key = StateKey::decode(key)?;
    if !StateValue::decode(value)?.matches(&key) {
        return Err("an entry has the wrong kind for its key".into());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use veil_crypto::kdf::Seed;

    fn keys(e: u64) -> EpochKeys {
        EpochKeys::derive(&Seed::from_bytes([4; 32]), e)
    }

    fn acct(balance: u64) -> StateValue {
        StateValue::Account(AccountRecord {
            balance,
            nonce: 1,
            history_len: 2,
        })
    }

    #[test]
    fn put_get_and_fixed_length() {
        let k = keys(0);
        let mut s = State::new();
        let key = StateKey::Account(Address([1; 20]));
        assert_eq!(s.get(&k, &key).unwrap(), None);
        s.put(&k, &key, &acct(5)).unwrap();
        assert_eq!(s.get(&k, &key).unwrap(), Some(acct(5)));
        let r = StateKey::Receipt(Address([1; 20]), 3);
        let receipt = StateValue::Receipt(Receipt {
            tx_id: [9; 32],
            nonce: 3,
            height: 4,
            fee: 10,
            status: ReceiptStatus::Failed(FailureReason::InsufficientBalance),
        });
        s.put(&k, &r, &receipt).unwrap();
        let h = StateKey::History(Address([1; 20]), u64::MAX);
        let hist = StateValue::History(HistoryEntry {
            height: u64::MAX,
            direction: Direction::Received,
            counterparty: Address([0xFF; 20]),
            amount: u64::MAX,
            fee: u64::MAX,
            nonce: u64::MAX,
        });
        s.put(&k, &h, &hist).unwrap();
        s.put(&k, &StateKey::FeePool, &StateValue::FeePool(7)).unwrap();
        assert_eq!(s.get(&k, &r).unwrap(), Some(receipt));
        assert_eq!(s.get(&k, &h).unwrap(), Some(hist));
        assert!(s.entries().all(|(_, ct)| ct.len() == STATE_CIPHERTEXT_LEN));
        s.commit(0, 1);
        s.verify_all(&k).unwrap();
        // A value moved to another slot is refused.
        let mut moved = s.clone();
        let (a, b): (Vec<_>, Vec<_>) = moved.entries.iter().map(|(k, v)| (*k, v.clone())).unzip();
        moved.entries.insert(a[0], b[1].clone());
        assert!(moved.verify_all(&k).is_err());
    }

    #[test]
    fn root_is_incremental_and_order_independent() {
        let k = keys(0);
        let mut a = State::new();
        let mut b = State::new();
        let empty = a.root();
        let addr = |i: u64| {
            let mut a = [0u8; 20];
            a[..8].copy_from_slice(&i.to_be_bytes());
            Address(a)
        };
        for i in 0..300u64 {
            a.put(&k, &StateKey::Account(addr(i)), &acct(i)).unwrap();
            if i % 50 == 0 {
                a.commit(0, 1);
            }
        }
        for i in (0..300u64).rev() {
            b.put(&k, &StateKey::Account(addr(i)), &acct(i)).unwrap();
        }
        a.commit(0, 1);
        b.commit(0, 1);
        assert_ne!(a.root(), empty);
        assert_eq!(a.root(), b.root());
        // A full recomputation gives the same root as the incremental one.
        let mut c = a.clone();
        c.replace(a.entries.clone());
        c.commit(0, 1);
        assert_eq!(c.root(), a.root());
        // Height and epoch are bound.
        c.commit(0, 2);
        assert_ne!(c.root(), a.root());
        c.commit(1, 1);
        assert_ne!(c.root(), a.root());
        // Changing one value changes the root.
        a.put(&k, &StateKey::Account(addr(3)), &acct(4)).unwrap();
        a.commit(0, 1);
        assert_ne!(a.root(), b.root());
    }

    #[test]
    fn rekey_moves_every_entry() {
        let (k0, k1) = (keys(0), keys(1));
        let mut s = State::new();
        let key = StateKey::Account(Address([1; 20]));
        s.put(&k0, &key, &acct(5)).unwrap();
        s.commit(0, 1);
        let before: Vec<_> = s.entries().map(|(k, v)| (*k, v.to_vec())).collect();
        s.rekey(&k0, &k1).unwrap();
        s.commit(1, 2);
        let after: Vec<_> = s.entries().map(|(k, v)| (*k, v.to_vec())).collect();
        assert_ne!(before[0].0, after[0].0);
        assert_ne!(before[0].1, after[0].1);
        assert_eq!(s.get(&k1, &key).unwrap(), Some(acct(5)));
        assert_eq!(s.get(&k0, &key).unwrap(), None);
        s.verify_all(&k1).unwrap();
        assert!(s.verify_all(&k0).is_err());
    }
}
