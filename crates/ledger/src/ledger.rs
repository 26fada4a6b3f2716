//! The ledger: genesis, mempool admission checks, deterministic block execution, epoch re-keying,
//! owner-only queries, snapshots.
//!
//! Execution rules (see `docs/ledger.md`):
//!
//! - A block at height `h` runs in epoch `h / epoch_length`. When `h` starts a new epoch, the key ring
//!   ratchets and the whole state is re-encrypted and re-slotted under the new state key *before* the
//!   block's transactions run. Envelopes sealed to the current or the previous epoch execute.
//! - An envelope that cannot be decoded, opened or verified, is for another chain, offers too low a
//!   fee, has the wrong nonce, or whose sender cannot pay even the fee, is *rejected*: skipped with a
//!   reason code, no state change, no receipt (a replayed envelope can never overwrite a receipt).
//! - Otherwise the schedule's fee for its size bucket is charged, the nonce is consumed, and a receipt
//!   is stored under (sender, nonce). The transfer then either *applies* (amount moved, one history
//!   entry each for sender and recipient) or *fails* (balance short of the amount; only the fee moves).
//! - The block's fees are summed and credited at the end of the block: an equal share to every
//!   validator fee account, the remainder of the division to the fee pool entry.

use std::collections::BTreeMap;
use std::fmt;
use std::sync::Arc;

use veil_crypto::kdf::Seed;
use veil_crypto::sign::Address;

use crate::codec::{Reader, put_lp};
use crate::error::{LedgerError, QueryError, RejectReason, Result, TxError};
use crate::genesis::Genesis;
use crate::keys::KeyRing;
use crate::query::{
    self, Answer, Direction, HistoryEntry, MAX_HISTORY_PAGE, QueryKind, Receipt, ReceiptStatus,
};
use crate::state::{AccountRecord, MAX_STATE_VALUE, State, StateKey, StateValue};
use crate::tx::{self, Envelope, FailureReason, SignedTx, TxKind, envelope_id};

/// Magic bytes of a snapshot.
pub const SNAPSHOT_MAGIC: &[u8; 8] = b"VEILSNAP";
/// Version byte of a snapshot.
pub const SNAPSHOT_VERSION: u8 = 1;
/// First bytes of a [`Ledger::last_block_delta`].
pub const DELTA_MAGIC: &[u8; 8] = b"VEILDLTA";
/// The delta format this build writes and reads.
pub const DELTA_VERSION: u8 = 1;
/// The most epochs [`Ledger::restore`] ratchets a key ring forward (one HKDF each): a snapshot
/// claiming a far later epoch is refused rather than spinning.
pub const MAX_RESTORE_EPOCH_JUMP: u64 = 1_000_000;

/// An account's balance and next nonce (read inside the enclave; never log it).
#[derive(Clone, Copy, Default, PartialEq, Eq)]
pub struct Account {
    /// The balance.
    pub balance: u64,
    /// The next nonce the account must use.
    pub nonce: u64,
}

impl fmt::Debug for Account {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Account(<confidential>)")
    }
}

/// A transaction that passed [`Ledger::check`] (the mempool's view of it).
#[derive(Clone, PartialEq, Eq)]
pub struct Admission {
    /// The envelope id.
    pub id: [u8; 32],
    /// The envelope's epoch.
    pub epoch: u64,
    /// The sender's address.
    pub sender: Address,
    /// The transaction's nonce.
    pub nonce: u64,
    /// The fee it will be charged (the schedule's, for its bucket).
    pub fee: u64,
    /// What it spends: amount plus fee.
    pub cost: u64,
    /// The sender's account nonce now.
    pub account_nonce: u64,
    /// The sender's balance now.
    pub balance: u64,
    /// The envelope's size in bytes.
    pub size: usize,
}

impl fmt::Debug for Admission {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "Admission(id {}, epoch {}, <confidential>)",
            hex::encode(self.id),
            self.epoch
        )
    }
}

/// What became of one envelope of a block.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TxStatus {
    /// Executed: fee charged, amount moved.
    Applied,
    /// Executed and failed: fee charged, nonce consumed, a failure receipt stored.
    Failed(FailureReason),
    /// Skipped without any state change.
    Rejected(RejectReason),
}

/// One envelope's result: its id (hash of its bytes, whatever they were) and status. Holds no
/// confidential data, but whether a transaction failed is still the sender's business: keep these
/// inside the node (metrics count them).
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct TxResult {
    /// [`envelope_id`] of the bytes.
    pub id: [u8; 32],
    /// What happened.
    pub status: TxStatus,
}

impl fmt::Debug for TxResult {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {:?}", hex::encode(&self.id[..8]), self.status)
    }
}

/// The result of executing a block.
#[derive(Clone, PartialEq, Eq)]
pub struct BlockOutcome {
    /// The block's height.
    pub height: u64,
    /// The epoch it ran in.
    pub epoch: u64,
    /// The state root after it.
    pub state_root: [u8; 32],
    /// Envelopes applied.
    pub applied: u32,
    /// Envelopes executed that failed (fee charged).
    pub failed: u32,
    /// Envelopes skipped.
    pub rejected: u32,
    /// Per envelope, in block order.
    pub results: Vec<TxResult>,
}

impl fmt::Debug for BlockOutcome {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("BlockOutcome")
            .field("height", &self.height)
            .field("epoch", &self.epoch)
            .field("state_root", &hex::encode(self.state_root))
            .field("applied", &self.applied)
            .field("failed", &self.failed)
            .field("rejected", &self.rejected)
            .field("results", &self.results)
            .finish()
    }
}

/// The ledger state machine of one validator.
pub struct Ledger {
    genesis: Genesis,
    genesis_hash: [u8; 32],
    /// Shared with [`Opener`]s (copied on write at an epoch change).
    keys: Arc<KeyRing>,
    state: State,
    height: u64,
}

impl fmt::Debug for Ledger {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "Ledger(chain {}, height {}, epoch {}, root {}, {} entries)",
            self.genesis.chain_id,
            self.height,
            self.epoch(),
            hex::encode(self.state.root()),
            self.state.len()
        )
    }
}

/// An envelope opened and verified (decrypted, unpadded, decoded, signature checked): the expensive,
/// state-independent part of admission and execution. [`Ledger::open_envelope_bytes`] produces it;
/// the mempool keeps it so that [`Ledger::execute_block_with`] need not open the envelope again.
/// Holds plaintext: keep it inside the enclave.
#[derive(Clone, PartialEq, Eq)]
pub struct OpenedTx {
    /// [`envelope_id`] of the envelope bytes.
    pub id: [u8; 32],
    /// The envelope's epoch.
    pub epoch: u64,
    /// The envelope's size in bytes.
    pub size: usize,
    /// The padded body size (the fee bucket).
    pub padded_len: usize,
    /// The verified transaction.
    pub tx: SignedTx,
}

impl fmt::Debug for OpenedTx {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "OpenedTx(id {}, epoch {}, <confidential>)",
            hex::encode(self.id),
            self.epoch
        )
    }
}

/// Opens envelopes with the keys a [`Ledger`] held when [`Ledger::opener`] was called.
#[derive(Clone)]
pub struct Opener(Arc<KeyRing>);

impl fmt::Debug for Opener {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Opener({:?})", self.0)
    }
}

impl Opener {
    /// [`Ledger::open_envelope_bytes`].
    pub fn open(&self, bytes: &[u8]) -> std::result::Result<OpenedTx, TxError> {
        open_with(&self.0, bytes)
    }
}

fn open_with(keys: &KeyRing, bytes: &[u8]) -> std::result::Result<OpenedTx, TxError> {
    let env = Envelope::decode(bytes)?;
    let (tx, padded_len) = tx::open_sized(keys, &env)?;
    Ok(OpenedTx {
        id: envelope_id(bytes),
        epoch: env.epoch,
        size: bytes.len(),
        padded_len,
        tx,
    })
}

/// Reads and checks `magic | version | genesis hash` of a snapshot or delta (`what`).
fn read_header(
    r: &mut Reader<'_>,
    magic: &[u8; 8],
    version: u8,
    what: &str,
    genesis_hash: &[u8; 32],
) -> Result<()> {
    let bad = LedgerError::Snapshot;
    if r.take(8, "magic").map_err(bad)? != magic {
        return Err(bad(format!("not a Veil ledger {what} (bad magic)")));
    }
    let found = r.u8("version").map_err(bad)?;
    if found != version {
        return Err(bad(format!(
            "unsupported {what} version {found} (this build reads version {version})"
        )));
    }
    if r.array::<32>("genesis hash").map_err(bad)? != *genesis_hash {
        return Err(bad(format!(
            "the {what} is of another network (its genesis hash differs)"
        )));
    }
    Ok(())
}

fn corrupt(e: String) -> LedgerError {
    LedgerError::Corrupt(e)
}

impl Ledger {
    /// The ledger at height 0: the genesis validated, its allocations applied, epoch 0.
    pub fn genesis(genesis: &Genesis, seed_for_epoch0: Seed) -> Result<Self> {
        genesis.validate()?;
        let keys = KeyRing::new(seed_for_epoch0, 0);
        let mut state = State::new();
        for a in &genesis.allocations {
            state
                .put(
                    keys.current(),
                    &StateKey::Account(a.address),
                    &StateValue::Account(AccountRecord {
                        balance: a.amount,
                        ..AccountRecord::default()
                    }),
                )
                .map_err(corrupt)?;
        }
        state.commit(0, 0);
        Ok(Self {
            genesis: genesis.clone(),
            genesis_hash: genesis.hash(),
            keys: Arc::new(keys),
            state,
            height: 0,
        })
    }

    /// The height of the last executed block (0 at genesis).
    pub fn height(&self) -> u64 {
        self.height
    }

    /// The current epoch.
    pub fn epoch(&self) -> u64 {
        self.keys.epoch()
    }

    /// The epoch a block at `height` runs in.
    pub fn epoch_of(&self, height: u64) -> u64 {
        height / self.genesis.epoch_length
    }

    /// The state root after the last block.
    pub fn state_root(&self) -> [u8; 32] {
        self.state.root()
    }

    /// The key ring (for the node: the public transaction key to publish, the seed to seal to disk).
    pub fn keys(&self) -> &KeyRing {
        &self.keys
    }

    /// The genesis hash (the chain id hash transactions sign).
    pub fn genesis_hash(&self) -> [u8; 32] {
        self.genesis_hash
    }

    /// The genesis this ledger runs.
    pub fn genesis_config(&self) -> &Genesis {
        &self.genesis
    }

    /// The encrypted state (what an observer of the validator's disk would see).
    pub fn state(&self) -> &State {
        &self.state
    }

    fn read_account(&self, address: &Address) -> std::result::Result<AccountRecord, String> {
        match self
            .state
            .get(self.keys.current(), &StateKey::Account(*address))?
        {
            Some(StateValue::Account(a)) => Ok(a),
            Some(_) => Err("an account slot holds another kind of value".into()),
            None => Ok(AccountRecord::default()),
        }
    }

    /// An account's balance and next nonce (zero for an account never seen). For the node's mempool;
    /// answers to users go through [`Ledger::query`].
    pub fn account(&self, address: &Address) -> Result<Account> {
        let a = self.read_account(address).map_err(corrupt)?;
        Ok(Account {
            balance: a.balance,
            nonce: a.nonce,
        })
    }

    /// The fee pool: the remainders of fee divisions.
    pub fn fee_pool(&self) -> Result<u64> {
        match self
            .state
            .get(self.keys.current(), &StateKey::FeePool)
            .map_err(corrupt)?
        {
            Some(StateValue::FeePool(b)) => Ok(b),
            Some(_) => Err(corrupt("the fee pool slot holds another kind of value".into())),
            None => Ok(0),
        }
    }

    /// Decodes, opens and verifies an envelope with the key of its epoch (current or previous): one
    /// X25519 and one Ed25519 verification. Pure and `&self`; [`Ledger::opener`] does the same
    /// without holding the ledger.
    pub fn open_envelope_bytes(&self, bytes: &[u8]) -> std::result::Result<OpenedTx, TxError> {
        open_with(&self.keys, bytes)
    }

    /// A detached, cheap-to-clone handle on this epoch's (and the previous epoch's) transaction keys,
    /// so that a node opens envelopes on its own threads, without holding the ledger (or the lock
    /// around it), and then admits them with [`crate::Mempool::admit_opened`] (which checks the epoch
    /// against the ledger again, so an opener from before an epoch change is harmless).
    pub fn opener(&self) -> Opener {
        Opener(Arc::clone(&self.keys))
    }

    /// Epoch still held, chain id, fee: the checks of an opened envelope that do not depend on the
    /// account. Returns the fee to charge.
    fn fee_of(&self, o: &OpenedTx) -> std::result::Result<u64, TxError> {
        if self.keys.get(o.epoch).is_none() {
            return Err(TxError::WrongEpoch {
                got: o.epoch,
                current: self.keys.epoch(),
            });
        }
        let (tx, padded) = (&o.tx, o.padded_len);
        if tx.body.chain_id_hash != self.genesis_hash {
            return Err(TxError::WrongChain);
        }
        let fee = self
            .genesis
            .fees
            .fee_for(padded)
            .ok_or(TxError::NoFeeForSize { bucket: padded })?;
        if tx.body.fee < fee {
            return Err(TxError::FeeTooLow {
                bucket: padded,
                offered: tx.body.fee,
                required: fee,
            });
        }
        Ok(fee)
    }

    /// Mempool admission of one envelope: decodes it, checks its epoch is the current or previous one,
    /// opens it, verifies the signature, the chain id, the fee for its size, that its nonce is not used
    /// and that the balance covers amount plus fee. Does not change anything.
    pub fn check(&self, envelope_bytes: &[u8]) -> std::result::Result<Admission, TxError> {
        self.check_opened(&self.open_envelope_bytes(envelope_bytes)?)
    }

    /// [`Ledger::check`] of an envelope already opened with [`Ledger::open_envelope_bytes`].
    pub fn check_opened(&self, opened: &OpenedTx) -> std::result::Result<Admission, TxError> {
        let fee = self.fee_of(opened)?;
        let tx = &opened.tx;
        let sender = tx.body.sender_address();
        let acct = self.read_account(&sender).map_err(TxError::State)?;
        if tx.body.nonce < acct.nonce {
            return Err(TxError::NonceUsed {
                nonce: tx.body.nonce,
                account_nonce: acct.nonce,
            });
        }
        let cost = tx.body.kind.amount().saturating_add(fee);
        if acct.balance < cost {
            return Err(TxError::InsufficientBalance {
                need: cost,
                have: acct.balance,
            });
        }
        Ok(Admission {
            id: opened.id,
            epoch: opened.epoch,
            sender,
            nonce: tx.body.nonce,
            fee,
            cost,
            account_nonce: acct.nonce,
            balance: acct.balance,
            size: opened.size,
        })
    }

    /// Executes the block at `height` (which must be `self.height() + 1`; any other height is refused
    /// without a change). Invalid envelopes are skipped with a reason; nothing in an envelope can make
    /// this fail or panic. An `Err` other than [`LedgerError::UnexpectedHeight`] means the state is
    /// corrupt: discard this ledger and restore it from a snapshot.
    pub fn execute_block(&mut self, height: u64, envelopes: &[Vec<u8>]) -> Result<BlockOutcome> {
        self.execute_block_with(height, envelopes, |_| None)
    }

    /// [`Ledger::execute_block`], taking envelopes already opened by this node (e.g. at mempool
    /// admission, [`crate::Mempool::opened`]) from `opened` by envelope id instead of opening them
    /// again. The result is identical to `execute_block`'s: the epoch, chain id, fee, nonce and balance
    /// checks all run again; only decryption and signature verification are skipped.
    pub fn execute_block_with<'a>(
        &mut self,
        height: u64,
        envelopes: &[Vec<u8>],
        opened: impl Fn(&[u8; 32]) -> Option<&'a OpenedTx>,
    ) -> Result<BlockOutcome> {
        let expected = self.height.saturating_add(1);
        if height != expected {
            return Err(LedgerError::UnexpectedHeight {
                got: height,
                current: self.height,
                expected,
            });
        }
        let epoch = self.epoch_of(height);
        if epoch > self.epoch() {
            Arc::make_mut(&mut self.keys).advance_to(epoch);
            let old = self
                .keys
                .get(epoch - 1)
                .ok_or_else(|| LedgerError::Keys(format!("the key ring lost epoch {}'s keys", epoch - 1)))?;
            self.state.rekey(old, self.keys.current()).map_err(corrupt)?;
        }
        let mut outcome = BlockOutcome {
            height,
            epoch,
            state_root: [0; 32],
            applied: 0,
            failed: 0,
            rejected: 0,
            results: Vec::with_capacity(envelopes.len()),
        };
        let mut fees: u64 = 0;
        for bytes in envelopes {
            let id = envelope_id(bytes);
            let status = match opened(&id).filter(|o| o.id == id) {
                Some(o) => self.execute_opened(o, height, &mut fees)?,
                None => match self.open_envelope_bytes(bytes) {
                    Ok(o) => self.execute_opened(&o, height, &mut fees)?,
                    Err(e) => TxStatus::Rejected(e.reason()),
                },
            };
            match status {
                TxStatus::Applied => outcome.applied += 1,
                TxStatus::Failed(_) => outcome.failed += 1,
                TxStatus::Rejected(_) => outcome.rejected += 1,
            }
            outcome.results.push(TxResult { id, status });
        }
        self.distribute_fees(fees)?;
        self.state.commit(epoch, height);
        self.height = height;
        outcome.state_root = self.state.root();
        Ok(outcome)
    }

    fn put(&mut self, key: StateKey, value: StateValue) -> Result<()> {
        self.state.put(self.keys.current(), &key, &value).map_err(corrupt)
    }

    fn execute_opened(&mut self, o: &OpenedTx, height: u64, fees: &mut u64) -> Result<TxStatus> {
        let fee = match self.fee_of(o) {
            Ok(f) => f,
            Err(e) => return Ok(TxStatus::Rejected(e.reason())),
        };
        let tx = &o.tx;
        let sender = tx.body.sender_address();
        let mut acct = self.read_account(&sender).map_err(corrupt)?;
        if tx.body.nonce < acct.nonce {
            return Ok(TxStatus::Rejected(RejectReason::NonceUsed));
        }
        if tx.body.nonce > acct.nonce {
            return Ok(TxStatus::Rejected(RejectReason::NonceGap));
        }
        if acct.balance < fee {
            return Ok(TxStatus::Rejected(RejectReason::CannotPayFee));
        }
        // From here the transaction executes: fee charged, nonce consumed, receipt stored.
        acct.balance -= fee;
        acct.nonce += 1;
        *fees = fees
            .checked_add(fee)
            .ok_or_else(|| corrupt("fee sum overflows".into()))?;
        let nonce = tx.body.nonce;
        let status = match &tx.body.kind {
            TxKind::Transfer { to, amount } => {
                self.transfer(sender, acct, *to, *amount, fee, nonce, height)?
            }
        };
        let receipt = Receipt {
            tx_id: o.id,
            nonce,
            height,
            fee,
            status: match status {
                TxStatus::Failed(r) => ReceiptStatus::Failed(r),
                _ => ReceiptStatus::Applied,
            },
        };
        self.put(StateKey::Receipt(sender, nonce), StateValue::Receipt(receipt))?;
        Ok(status)
    }

    /// Moves `amount` from `sender` (whose record `acct` already paid the fee) to `to`; writes the
    /// records and history entries.
    #[allow(clippy::too_many_arguments)]
    fn transfer(
        &mut self,
        sender: Address,
        mut acct: AccountRecord,
        to: Address,
        amount: u64,
        fee: u64,
        nonce: u64,
        height: u64,
    ) -> Result<TxStatus> {
        let entry = |direction, counterparty, fee| HistoryEntry {
            height,
            direction,
            counterparty,
            amount,
            fee,
            nonce,
        };
        if acct.balance < amount {
            self.put(StateKey::Account(sender), StateValue::Account(acct))?;
            return Ok(TxStatus::Failed(FailureReason::InsufficientBalance));
        }
        if to == sender {
            let i = acct.history_len;
            acct.history_len += 2;
            self.put(StateKey::Account(sender), StateValue::Account(acct))?;
            self.put(
                StateKey::History(sender, i),
                StateValue::History(entry(Direction::Sent, to, fee)),
            )?;
            self.put(
                StateKey::History(sender, i + 1),
                StateValue::History(entry(Direction::Received, sender, 0)),
            )?;
            return Ok(TxStatus::Applied);
        }
        let mut rec = self.read_account(&to).map_err(corrupt)?;
        let Some(credited) = rec.balance.checked_add(amount) else {
            self.put(StateKey::Account(sender), StateValue::Account(acct))?;
            return Ok(TxStatus::Failed(FailureReason::Overflow));
        };
        acct.balance -= amount;
        let si = acct.history_len;
        acct.history_len += 1;
        rec.balance = credited;
        let ri = rec.history_len;
        rec.history_len += 1;
        self.put(StateKey::Account(sender), StateValue::Account(acct))?;
        self.put(StateKey::Account(to), StateValue::Account(rec))?;
        self.put(
            StateKey::History(sender, si),
            StateValue::History(entry(Direction::Sent, to, fee)),
        )?;
        self.put(
            StateKey::History(to, ri),
            StateValue::History(entry(Direction::Received, sender, 0)),
        )?;
        Ok(TxStatus::Applied)
    }

    fn distribute_fees(&mut self, fees: u64) -> Result<()> {
        if fees == 0 {
            return Ok(());
        }
        let validators: Vec<Address> = self.genesis.validators.iter().map(|v| v.address).collect();
        let n = validators.len() as u64;
        let share = fees / n;
        let remainder = fees % n;
        if share > 0 {
            for v in validators {
                let mut a = self.read_account(&v).map_err(corrupt)?;
                a.balance = a
                    .balance
                    .checked_add(share)
                    .ok_or_else(|| corrupt("a validator balance overflows".into()))?;
                self.put(StateKey::Account(v), StateValue::Account(a))?;
            }
        }
        if remainder > 0 {
            let pool = self.fee_pool()?;
            let pool = pool
                .checked_add(remainder)
                .ok_or_else(|| corrupt("the fee pool overflows".into()))?;
            self.put(StateKey::FeePool, StateValue::FeePool(pool))?;
        }
        Ok(())
    }

    /// Answers a sealed, signed query about the asker's own account, sealed to the asker's reply key.
    pub fn query(&self, sealed_query: &[u8]) -> std::result::Result<Vec<u8>, QueryError> {
        let q = query::open_query(&self.keys, sealed_query)?;
        let address = q.asker.address();
        let keys = self.keys.current();
        let state = |e: String| QueryError::State(e);
        let answer = match q.kind {
            QueryKind::Balance => {
                let a = self.read_account(&address).map_err(state)?;
                Answer::Balance {
                    balance: a.balance,
                    nonce: a.nonce,
                }
            }
            QueryKind::Receipt { nonce } => {
                match self
                    .state
                    .get(keys, &StateKey::Receipt(address, nonce))
                    .map_err(state)?
                {
                    Some(StateValue::Receipt(r)) => Answer::Receipt(Some(r)),
                    _ => Answer::Receipt(None),
                }
            }
            QueryKind::History { from, limit } => {
                let a = self.read_account(&address).map_err(state)?;
                let end = from
                    .saturating_add(u64::from(limit.min(MAX_HISTORY_PAGE)))
                    .min(a.history_len);
                let mut entries = Vec::new();
                for i in from..end {
                    if let Some(StateValue::History(h)) = self
                        .state
                        .get(keys, &StateKey::History(address, i))
                        .map_err(state)?
                    {
                        entries.push(h);
                    }
                }
                Answer::History(entries)
            }
        };
        query::seal_answer(&q.reply_key, &query::query_id(sealed_query), self.height, &answer)
    }

    /// The state as bytes, for another validator to [`Ledger::restore`]: ciphertext entries and public
    /// metadata only, never keys.
    ///
    /// `"VEILSNAP" | version (1) = 1 | genesis hash (32) | height (u64) | epoch (u64) | root (32)
    /// | count (u64) | count × (slot (32) | length (u32) | ciphertext)`, entries in slot order.
    pub fn snapshot(&self) -> Vec<u8> {
        self.encode_entries(
            SNAPSHOT_MAGIC,
            SNAPSHOT_VERSION,
            self.state.len(),
            self.state.entries(),
        )
    }

    /// `magic | version | genesis hash | height | epoch | root | count | (slot | length | ciphertext)…`:
    /// the layout snapshots and deltas share.
    fn encode_entries<'a>(
        &self,
        magic: &[u8; 8],
        version: u8,
        count: usize,
        entries: impl Iterator<Item = (&'a [u8; 32], &'a [u8])>,
    ) -> Vec<u8> {
        let mut out = Vec::with_capacity(89 + count * (36 + crate::state::STATE_CIPHERTEXT_LEN));
        out.extend_from_slice(magic);
        out.push(version);
        out.extend_from_slice(&self.genesis_hash);
        out.extend_from_slice(&self.height.to_be_bytes());
        out.extend_from_slice(&self.epoch().to_be_bytes());
        out.extend_from_slice(&self.state.root());
        out.extend_from_slice(&(count as u64).to_be_bytes());
        for (slot, ct) in entries {
            out.extend_from_slice(slot);
            put_lp(&mut out, ct);
        }
        out
    }

    /// What the last executed block changed, for a store that persists blocks incrementally
    /// between [`Ledger::snapshot`]s; `None` when that block changed every entry (an epoch change
    /// re-keys the state) or nothing executed since genesis or restore: then persist a snapshot.
    ///
    /// `"VEILDLTA" | version (1) = 1 | genesis hash (32) | height (u64) | epoch (u64) | root (32)
    /// | count (u64) | count × (slot (32) | length (u32) | ciphertext)`, entries in slot order.
    /// Ciphertexts and public metadata only, like the snapshot.
    pub fn last_block_delta(&self) -> Option<Vec<u8>> {
        if self.height == 0 {
            return None;
        }
        let changes: Vec<(&[u8; 32], &[u8])> = self.state.last_changes()?.collect();
        Some(self.encode_entries(DELTA_MAGIC, DELTA_VERSION, changes.len(), changes.into_iter()))
    }

    /// Applies a [`Ledger::last_block_delta`] of the next height on top of this ledger (restored
    /// from an older snapshot). Returns `Ok(false)`, changing nothing, for a delta at or below the
    /// current height (already in the snapshot). Every entry must open under the epoch's keys in
    /// its slot, and the recomputed root must equal the recorded one; on `Err` other than a height
    /// gap this ledger is unusable: restore it again.
    pub fn apply_delta(&mut self, delta: &[u8]) -> Result<bool> {
        let bad = LedgerError::Snapshot;
        let mut r = Reader::new(delta);
        read_header(&mut r, DELTA_MAGIC, DELTA_VERSION, "delta", &self.genesis_hash)?;
        let height = r.u64("height").map_err(bad)?;
        if height <= self.height {
            return Ok(false);
        }
        if height != self.height + 1 {
            return Err(LedgerError::UnexpectedHeight {
                got: height,
                current: self.height,
                expected: self.height + 1,
            });
        }
        let epoch = r.u64("epoch").map_err(bad)?;
        if epoch != self.epoch() || epoch != self.epoch_of(height) {
            return Err(bad(format!(
                "the delta of height {height} is in epoch {epoch}; the ledger is in epoch {} (an epoch change needs a snapshot)",
                self.epoch()
            )));
        }
        let claimed: [u8; 32] = r.array("root").map_err(bad)?;
        let count = r.u64("entry count").map_err(bad)?;
        let keys = Arc::clone(&self.keys);
        for _ in 0..count {
            let slot: [u8; 32] = r.array("slot").map_err(bad)?;
            let ct = r.lp(MAX_STATE_VALUE, "entry").map_err(bad)?;
            crate::state::check_entry(keys.current(), &slot, ct)
                .map_err(|e| LedgerError::Keys(format!("a delta entry of height {height}: {e}")))?;
            self.state.put_ciphertext(slot, ct.to_vec());
        }
        r.finish("delta").map_err(bad)?;
        self.state.commit(epoch, height);
        if self.state.root() != claimed {
            return Err(LedgerError::RootMismatch {
                claimed: hex::encode(claimed),
                computed: hex::encode(self.state.root()),
            });
        }
        self.height = height;
        Ok(true)
    }

    /// Rebuilds a ledger from a snapshot: checks the genesis, recomputes the root from the entries and
    /// compares it, ratchets `keys` to the snapshot's epoch (they must hold the previous epoch's keys
    /// too, see [`KeyRing`]) and checks that every entry decrypts under them.
    pub fn restore(genesis: &Genesis, mut keys: KeyRing, snapshot: &[u8]) -> Result<Self> {
        genesis.validate()?;
        let bad = LedgerError::Snapshot;
        let mut r = Reader::new(snapshot);
        let genesis_hash = genesis.hash();
        read_header(
            &mut r,
            SNAPSHOT_MAGIC,
            SNAPSHOT_VERSION,
            "snapshot",
            &genesis_hash,
        )?;
        let height = r.u64("height").map_err(bad)?;
        let epoch = r.u64("epoch").map_err(bad)?;
        if epoch != height / genesis.epoch_length {
            return Err(bad(format!(
                "epoch {epoch} is not height {height}'s epoch ({})",
                height / genesis.epoch_length
            )));
        }
        let claimed: [u8; 32] = r.array("root").map_err(bad)?;
        let count = r.u64("entry count").map_err(bad)?;
        let mut entries = BTreeMap::new();
        let mut last: Option<[u8; 32]> = None;
        for _ in 0..count {
            let slot: [u8; 32] = r.array("slot").map_err(bad)?;
            let ct = r.lp(MAX_STATE_VALUE, "entry").map_err(bad)?;
            if last.is_some_and(|l| l >= slot) {
                return Err(bad("entries are not in strictly increasing slot order".into()));
            }
            last = Some(slot);
            entries.insert(slot, ct.to_vec());
        }
        r.finish("snapshot").map_err(bad)?;
        let mut state = State::new();
        state.replace(entries);
        state.commit(epoch, height);
        if state.root() != claimed {
            return Err(LedgerError::RootMismatch {
                claimed: hex::encode(claimed),
                computed: hex::encode(state.root()),
            });
        }
        if keys.epoch() > epoch {
            return Err(LedgerError::Keys(format!(
                "the key ring is at epoch {}, past the snapshot's epoch {epoch}; restore a newer snapshot",
                keys.epoch()
            )));
        }
        if epoch - keys.epoch() > MAX_RESTORE_EPOCH_JUMP {
            return Err(LedgerError::Keys(format!(
                "the snapshot's epoch {epoch} is more than {MAX_RESTORE_EPOCH_JUMP} epochs past the key ring's {}; obtain a recent seed",
                keys.epoch()
            )));
        }
        keys.advance_to(epoch);
        if epoch > 0 && !keys.has_previous() {
            return Err(LedgerError::Keys(format!(
                "the key ring holds no keys for epoch {} (the grace epoch); rebuild it from the seed it said to persist (KeyRing::seed, KeyRing::seed_epoch)",
                epoch - 1
            )));
        }
        state.verify_all(keys.current()).map_err(|e| {
            LedgerError::Keys(format!(
                "the snapshot does not open under these keys ({e}): wrong seed or seed epoch"
            ))
        })?;
        Ok(Self {
            genesis: genesis.clone(),
            genesis_hash,
            keys: Arc::new(keys),
            state,
            height,
        })
    }
}
