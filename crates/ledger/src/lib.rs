//! Veil's deterministic, encrypted ledger state machine: sealed transaction envelopes, encrypted
//! authenticated state, private balances, fees, epoch re-keying, owner-only queries and a mempool.
//!
//! Everything here is pure: no I/O, no clock, no threads. The validator node (`veil-node`) feeds it
//! ordered blocks of envelope bytes and persists what it returns. The only randomness is HPKE's
//! ephemeral key when *sealing* (a wallet sealing a transaction or query, a node sealing an answer to
//! its asker); nothing that reaches the state or its root depends on it.
//!
//! See `docs/ledger.md` for the formats and what is public.
#![forbid(unsafe_code)]
#![warn(missing_docs)]
#![cfg_attr(test, allow(clippy::unwrap_used, clippy::expect_used))]

mod codec;
mod error;
pub mod genesis;
pub mod keys;
pub mod ledger;
pub mod mempool;
pub mod query;
pub mod state;
pub mod tx;

pub use error::{LedgerError, QueryError, RejectReason, TxError, format_amount};
pub use genesis::{Allocation, BucketFee, FeeSchedule, Genesis, ValidatorAccount};
pub use keys::{EpochKeys, KeyRing};
pub use ledger::{Account, Admission, BlockOutcome, Ledger, OpenedTx, Opener, TxResult, TxStatus};
pub use mempool::Mempool;
pub use query::{
    Answer, Direction, HistoryEntry, MAX_HISTORY_PAGE, Query, QueryKind, Receipt, ReceiptStatus, open_answer,
    open_answer_for, seal_query,
};
pub use state::State;
pub use tx::{
    Envelope, FailureReason, MAX_ENVELOPE_BYTES, SignedTx, TxBody, TxKind, envelope_id, open_envelope,
    seal_signed, seal_transaction,
};

/// Domain tags of every hash, KDF, signature and HPKE purpose of the ledger.
pub mod tags {
    /// HKDF purpose of an epoch's transaction key pair (X25519).
    pub const TX_KEY: &str = "veil/v1/tx-key";
    /// HKDF purpose of an epoch's state key.
    pub const STATE_KEY: &str = "veil/v1/state-key";
    /// HKDF purpose (from the state key) of the keyed hash that maps logical keys to slots.
    pub const STATE_SLOT_KEY: &str = "veil/v1/state-slot-key";
    /// HKDF purpose (from the state key) of AES-SIV's MAC half.
    pub const STATE_SIV_MAC_KEY: &str = "veil/v1/state-siv-mac-key";
    /// HKDF purpose (from the state key) of AES-SIV's encryption half.
    pub const STATE_SIV_ENC_KEY: &str = "veil/v1/state-siv-enc-key";
    /// Prefix of the keyed hash input of a slot.
    pub const STATE_SLOT: &str = "veil/v1/state-slot";
    /// AES-SIV associated data header of a state value.
    pub const STATE_VALUE: &str = "veil/v1/state-value";
    /// Hash of a leaf bucket of the state root.
    pub const STATE_LEAF: &str = "veil/v1/state-leaf";
    /// Hash of a middle node of the state root.
    pub const STATE_MID: &str = "veil/v1/state-mid";
    /// The state root.
    pub const STATE_ROOT: &str = "veil/v1/state-root";
    /// HPKE purpose of a transaction envelope.
    pub const TX_ENVELOPE: &str = "veil/v1/tx-envelope";
    /// Signature tag of a transaction body.
    pub const TX_SIGNATURE: &str = "veil/v1/tx";
    /// Hash of an envelope's encoding: its id.
    pub const ENVELOPE_ID: &str = "veil/v1/envelope-id";
    /// HPKE purpose of a query.
    pub const QUERY: &str = "veil/v1/query";
    /// Signature tag of a query body.
    pub const QUERY_SIGNATURE: &str = "veil/v1/query-sig";
    /// Hash of a sealed query: its id, echoed in the answer.
    pub const QUERY_ID: &str = "veil/v1/query-id";
    /// HPKE purpose of an answer sealed to the asker.
    pub const QUERY_ANSWER: &str = "veil/v1/query-answer";
    /// Hash of a genesis: the chain id hash that every transaction signs.
    pub const GENESIS: &str = "veil/v1/genesis";
}

#[cfg(test)]
mod tests {
    /// The node shares these across tasks and threads.
    #[test]
    fn types_are_send_and_sync() {
        fn check<T: Send + Sync>() {}
        check::<crate::Ledger>();
        check::<crate::Mempool>();
        check::<crate::KeyRing>();
        check::<crate::OpenedTx>();
        check::<crate::BlockOutcome>();
    }
}
