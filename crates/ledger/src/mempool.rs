//! A pure mempool: bounded, deduplicated by envelope id, with per-sender pending nonces so one sender
//! can queue `n, n+1, n+2, …` before any is included.

use std::collections::BTreeMap;
use std::fmt;

use veil_crypto::sign::Address;

use crate::error::TxError;
use crate::ledger::{Ledger, OpenedTx};
use crate::tx::envelope_id;

struct Entry {
    bytes: Vec<u8>,
    opened: OpenedTx,
    sender: Address,
    cost: u64,
}

#[derive(Default)]
struct Pending {
    /// nonce → admission sequence number.
    nonces: BTreeMap<u64, u64>,
    cost: u64,
}

/// Envelopes admitted and not yet included, in admission order.
pub struct Mempool {
    max_txs: usize,
    next_seq: u64,
    order: BTreeMap<u64, Entry>,
    by_id: BTreeMap<[u8; 32], u64>,
    senders: BTreeMap<Address, Pending>,
}

impl fmt::Debug for Mempool {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "Mempool({} of {} transactions)",
            self.order.len(),
            self.max_txs
        )
    }
}

impl Mempool {
    /// An empty mempool holding at most `max_txs` envelopes.
    pub fn new(max_txs: usize) -> Self {
        Self {
            max_txs,
            next_seq: 0,
            order: BTreeMap::new(),
            by_id: BTreeMap::new(),
            senders: BTreeMap::new(),
        }
    }

    /// The number of envelopes waiting.
    pub fn len(&self) -> usize {
        self.order.len()
    }

    /// Whether none is waiting.
    pub fn is_empty(&self) -> bool {
        self.order.is_empty()
    }

    /// The total bytes of the envelopes waiting.
    pub fn bytes(&self) -> usize {
        self.order.values().map(|e| e.bytes.len()).sum()
    }

    /// Whether the envelope with this id is waiting.
    pub fn contains(&self, id: &[u8; 32]) -> bool {
        self.by_id.contains_key(id)
    }

    /// The opened transaction of a waiting envelope, for [`Ledger::execute_block_with`]: blocks of
    /// envelopes this node already admitted execute without opening them again.
    pub fn opened(&self, id: &[u8; 32]) -> Option<&OpenedTx> {
        self.by_id
            .get(id)
            .and_then(|seq| self.order.get(seq))
            .map(|e| &e.opened)
    }

    /// Admits an envelope: [`Ledger::check`], then its nonce must be the account's nonce plus the
    /// sender's pending count, and the balance must cover every pending cost plus this one.
    pub fn admit(&mut self, ledger: &Ledger, bytes: Vec<u8>) -> Result<[u8; 32], TxError> {
        self.admit_check_room(&envelope_id(&bytes))?;
        let opened = ledger.open_envelope_bytes(&bytes)?;
        self.admit_opened(ledger, bytes, opened)
    }

    /// Whether an envelope with this id could be admitted now (not a duplicate, room left): what a
    /// node checks before spending the work of opening it.
    pub fn admit_check_room(&self, id: &[u8; 32]) -> Result<(), TxError> {
        if self.by_id.contains_key(id) {
            return Err(TxError::Duplicate);
        }
        if self.order.len() >= self.max_txs {
            return Err(TxError::MempoolFull { max: self.max_txs });
        }
        Ok(())
    }

    /// [`Mempool::admit`] of an envelope already opened (e.g. by a [`crate::Opener`] on another
    /// thread): every check but decryption and the signature runs here, against `ledger` now.
    pub fn admit_opened(
        &mut self,
        ledger: &Ledger,
        bytes: Vec<u8>,
        opened: OpenedTx,
    ) -> Result<[u8; 32], TxError> {
        let id = opened.id;
        if id != envelope_id(&bytes) {
            return Err(TxError::Malformed(
                "the opened transaction is not this envelope's".into(),
            ));
        }
        self.admit_check_room(&id)?;
        let adm = ledger.check_opened(&opened)?;
        let pending = self.senders.get(&adm.sender);
        let (count, pending_cost) = pending.map_or((0, 0), |p| (p.nonces.len() as u64, p.cost));
        let expected = adm.account_nonce + count;
        if adm.nonce < expected {
            return Err(TxError::NoncePending { nonce: adm.nonce });
        }
        if adm.nonce > expected {
            return Err(TxError::NonceGap {
                nonce: adm.nonce,
                expected,
            });
        }
        let need = pending_cost.saturating_add(adm.cost);
        if need > adm.balance {
            return Err(TxError::InsufficientBalance {
                need,
                have: adm.balance,
            });
        }
        let seq = self.next_seq;
        self.next_seq += 1;
        let p = self.senders.entry(adm.sender).or_default();
        p.nonces.insert(adm.nonce, seq);
        p.cost = need;
        self.by_id.insert(id, seq);
        self.order.insert(
            seq,
            Entry {
                bytes,
                opened,
                sender: adm.sender,
                cost: adm.cost,
            },
        );
        Ok(id)
    }

    /// Up to `max_txs` envelopes of at most `max_bytes` in total, in admission order, without removing
    /// them. Once one of a sender's envelopes does not fit, that sender's later ones are left out too
    /// (they would fail on their nonce).
    pub fn take(&self, max_txs: usize, max_bytes: usize) -> Vec<Vec<u8>> {
        let mut out = Vec::new();
        let mut bytes = 0usize;
        let mut blocked: Vec<Address> = Vec::new();
        for e in self.order.values() {
            if out.len() >= max_txs {
                break;
            }
            if blocked.contains(&e.sender) {
                continue;
            }
            if bytes + e.bytes.len() > max_bytes {
                blocked.push(e.sender);
                continue;
            }
            bytes += e.bytes.len();
            out.push(e.bytes.clone());
        }
        out
    }

    fn remove(&mut self, seq: u64) {
        if let Some(e) = self.order.remove(&seq) {
            self.by_id.remove(&e.opened.id);
            if let Some(p) = self.senders.get_mut(&e.sender) {
                p.nonces.remove(&e.opened.tx.body.nonce);
                p.cost = p.cost.saturating_sub(e.cost);
                if p.nonces.is_empty() {
                    self.senders.remove(&e.sender);
                }
            }
        }
    }

    /// After `ledger` executed a block with `included`: removes those, and every waiting envelope that
    /// can no longer execute (nonce used, an older epoch than the ledger's grace epoch, a nonce gap, or
    /// no longer covered by the balance).
    pub fn on_block(&mut self, ledger: &Ledger, included: &[Vec<u8>]) {
        for bytes in included {
            if let Some(seq) = self.by_id.get(&envelope_id(bytes)).copied() {
                self.remove(seq);
            }
        }
        let min_epoch = ledger.epoch().saturating_sub(1);
        let senders: Vec<Address> = self.senders.keys().copied().collect();
        for sender in senders {
            let Some(p) = self.senders.get(&sender) else {
                continue;
            };
            let seqs: Vec<(u64, u64)> = p.nonces.iter().map(|(n, s)| (*n, *s)).collect();
            let account = ledger.account(&sender).unwrap_or_default();
            let mut next = account.nonce;
            let mut spent: u64 = 0;
            let mut drop_rest = false;
            for (nonce, seq) in seqs {
                let Some(e) = self.order.get(&seq) else {
                    continue;
                };
                let keep = !drop_rest
                    && nonce == next
                    && e.opened.epoch >= min_epoch
                    && spent.saturating_add(e.cost) <= account.balance;
                if keep {
                    spent += e.cost;
                    next += 1;
                } else {
                    if nonce >= account.nonce {
                        drop_rest = true;
                    }
                    self.remove(seq);
                }
            }
        }
    }
}
