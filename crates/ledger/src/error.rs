//! Errors of the ledger, one enum per concern. Their messages say what was wrong and what to do, and
//! never contain a transaction's confidential contents (amounts, balances, nonces, addresses): a
//! mempool error goes back to whoever submitted the envelope, who need not be its sender. The numbers
//! are in the variants' fields for the code that may see them (the sender's own wallet, tests); their
//! `Debug` prints the message, not the fields.

use std::fmt;

use thiserror::Error;

/// Why a transaction envelope was refused (by [`crate::Ledger::check`], the mempool, or
/// [`crate::open_envelope`]).
#[derive(Error, Clone, PartialEq, Eq)]
pub enum TxError {
    /// The bytes are not a well-formed envelope or transaction.
    #[error("malformed transaction: {0}")]
    Malformed(String),
    /// The envelope is larger than [`crate::MAX_ENVELOPE_BYTES`].
    #[error("envelope of {len} bytes refused: the largest accepted is {max} bytes")]
    Oversize {
        /// Its size.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// The envelope or body has a version this build does not understand.
    #[error(
        "unsupported {what} version {found} (this node understands version {supported}); upgrade the wallet or the node"
    )]
    UnsupportedVersion {
        /// Envelope or transaction body.
        what: &'static str,
        /// The version found.
        found: u8,
        /// The version understood.
        supported: u8,
    },
    /// Sealed to an epoch whose transaction key this node no longer (or does not yet) hold.
    #[error(
        "transaction for epoch {got} refused: the network is in epoch {current} (fetch the current transaction key from a node's `veil_networkKeys` and reseal)"
    )]
    WrongEpoch {
        /// The envelope's epoch.
        got: u64,
        /// The ledger's epoch.
        current: u64,
    },
    /// HPKE opening failed: not sealed to this epoch's key, or tampered with.
    #[error(
        "transaction could not be opened: it was not sealed to epoch {epoch}'s transaction key of this network, or it was tampered with"
    )]
    Undecryptable {
        /// The envelope's epoch.
        epoch: u64,
    },
    /// The signature does not verify for the sender key in the body.
    #[error("transaction signature does not verify for its sender key; sign the body with the sender's key")]
    BadSignature,
    /// Signed for another chain (the body's chain id hash is not this genesis' hash).
    #[error(
        "transaction is for another chain: its chain id hash is not this network's genesis hash; sign it for this network"
    )]
    WrongChain,
    /// No fee is defined for the envelope's size bucket.
    #[error("no fee is set for {bucket}-byte transactions on this network; make the transaction smaller")]
    NoFeeForSize {
        /// The padded body size.
        bucket: usize,
    },
    /// The fee the sender authorised is below the schedule's fee for its size bucket.
    #[error(
        "fee too low: a {bucket}-byte transaction costs {required} on this network; authorise at least that"
    )]
    FeeTooLow {
        /// The padded body size.
        bucket: usize,
        /// The fee authorised (confidential: not in the message).
        offered: u64,
        /// The schedule's fee (public).
        required: u64,
    },
    /// The nonce was already used by an executed transaction of this sender.
    #[error(
        "nonce already used: this transaction, or another with its nonce, was already executed; query the account nonce and sign a new one"
    )]
    NonceUsed {
        /// The transaction's nonce.
        nonce: u64,
        /// The account's next nonce.
        account_nonce: u64,
    },
    /// A transaction with this nonce from this sender is already waiting in the mempool.
    #[error(
        "a transaction with this nonce from this sender is already waiting in the mempool; wait for the next block"
    )]
    NoncePending {
        /// The transaction's nonce.
        nonce: u64,
    },
    /// The nonce leaves a gap after the account's (and the mempool's pending) nonces.
    #[error(
        "nonce too high: earlier nonces of this sender have not been submitted; submit them first (nonces are consecutive)"
    )]
    NonceGap {
        /// The transaction's nonce.
        nonce: u64,
        /// The nonce expected next.
        expected: u64,
    },
    /// The balance does not cover the amount plus the fee (plus the sender's pending transactions).
    #[error(
        "insufficient balance for this transaction's amount plus fee (and the sender's pending transactions); query the balance with a signed query"
    )]
    InsufficientBalance {
        /// What is needed.
        need: u64,
        /// What the account holds.
        have: u64,
    },
    /// The mempool already holds this envelope.
    #[error("transaction already in the mempool")]
    Duplicate,
    /// The mempool is full.
    #[error("mempool full ({max} transactions); retry after the next block")]
    MempoolFull {
        /// Its bound.
        max: usize,
    },
    /// The state could not be read (a corrupt ledger; the node must restore from a snapshot).
    #[error("ledger state unreadable: {0}")]
    State(String),
}

impl fmt::Debug for TxError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "TxError({self})")
    }
}

impl TxError {
    /// The message with the confidential numbers, for the sender's own wallet or tests only, never
    /// for logs or answers to an unauthenticated caller.
    pub fn detail(&self) -> String {
        match self {
            Self::FeeTooLow {
                bucket,
                offered,
                required,
            } => format!(
                "fee too low: a {bucket}-byte transaction costs {}, {} was authorised",
                format_amount(*required),
                format_amount(*offered)
            ),
            Self::NonceUsed { nonce, account_nonce } => {
                format!("nonce {nonce} already used (account nonce is {account_nonce})")
            }
            Self::NoncePending { nonce } => format!("nonce {nonce} is already pending in the mempool"),
            Self::NonceGap { nonce, expected } => {
                format!("nonce {nonce} is too high: the next nonce expected is {expected}")
            }
            Self::InsufficientBalance { need, have } => format!(
                "insufficient balance: need {}, have {}",
                format_amount(*need),
                format_amount(*have)
            ),
            other => other.to_string(),
        }
    }

    /// The reason code of this error, as recorded in a block's outcome.
    pub fn reason(&self) -> RejectReason {
        match self {
            Self::Malformed(_) => RejectReason::Malformed,
            Self::Oversize { .. } => RejectReason::Oversize,
            Self::UnsupportedVersion { .. } => RejectReason::UnsupportedVersion,
            Self::WrongEpoch { .. } => RejectReason::WrongEpoch,
            Self::Undecryptable { .. } => RejectReason::Undecryptable,
            Self::BadSignature => RejectReason::BadSignature,
            Self::WrongChain => RejectReason::WrongChain,
            Self::NoFeeForSize { .. } => RejectReason::NoFeeForSize,
            Self::FeeTooLow { .. } => RejectReason::FeeTooLow,
            Self::NonceUsed { .. } | Self::NoncePending { .. } => RejectReason::NonceUsed,
            Self::NonceGap { .. } => RejectReason::NonceGap,
            Self::InsufficientBalance { .. } => RejectReason::CannotPayFee,
            Self::Duplicate | Self::MempoolFull { .. } | Self::State(_) => RejectReason::Internal,
        }
    }
}

/// Why a block skipped an envelope without changing any state (a code; no confidential numbers).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum RejectReason {
    /// Larger than [`crate::MAX_ENVELOPE_BYTES`].
    Oversize,
    /// Not a well-formed envelope or transaction.
    Malformed,
    /// Unknown version.
    UnsupportedVersion,
    /// Sealed to an epoch other than the current or previous one.
    WrongEpoch,
    /// Not sealed to the epoch's key, or tampered with.
    Undecryptable,
    /// The signature does not verify.
    BadSignature,
    /// Signed for another chain.
    WrongChain,
    /// No fee for its size bucket.
    NoFeeForSize,
    /// The authorised fee is below the schedule's.
    FeeTooLow,
    /// Its nonce was already used (a replay, or a duplicate within the block).
    NonceUsed,
    /// Its nonce is ahead of the account's.
    NonceGap,
    /// The balance cannot pay even the fee.
    CannotPayFee,
    /// Unreadable ledger state (never expected).
    Internal,
}

/// Why a query was refused.
#[derive(Error, Clone, PartialEq, Eq)]
pub enum QueryError {
    /// Not a well-formed sealed query.
    #[error("malformed query: {0}")]
    Malformed(String),
    /// Larger than [`crate::query::MAX_QUERY_BYTES`].
    #[error("query of {len} bytes refused: the largest accepted is {max} bytes")]
    Oversize {
        /// Its size.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// Unknown version.
    #[error("unsupported {what} version {found} (this build understands version {supported})")]
    UnsupportedVersion {
        /// Which message.
        what: &'static str,
        /// The version found.
        found: u8,
        /// The version understood.
        supported: u8,
    },
    /// Sealed to an epoch whose key this node does not hold.
    #[error(
        "query for epoch {got} refused: the network is in epoch {current} (fetch the current transaction key from a node's `veil_networkKeys` and reseal)"
    )]
    WrongEpoch {
        /// The query's epoch.
        got: u64,
        /// The ledger's epoch.
        current: u64,
    },
    /// HPKE opening failed.
    #[error("query could not be opened: not sealed to epoch {epoch}'s transaction key, or tampered with")]
    Undecryptable {
        /// The query's epoch.
        epoch: u64,
    },
    /// The signature does not verify for the asker's key.
    #[error("query signature does not verify for the asker's key; sign it with the account's key")]
    BadSignature,
    /// The answer could not be opened or is not for this query.
    #[error("answer refused: {0}")]
    BadAnswer(String),
    /// Sealing the answer failed (e.g. an invalid reply key).
    #[error("sealing the answer failed: {0}")]
    Seal(String),
    /// The state could not be read.
    #[error("ledger state unreadable: {0}")]
    State(String),
}

impl fmt::Debug for QueryError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "QueryError({self})")
    }
}

/// Errors of the ledger itself: genesis, blocks, snapshots, state.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum LedgerError {
    /// The genesis is invalid.
    #[error("invalid genesis: {0}")]
    Genesis(String),
    /// A block at an unexpected height.
    #[error(
        "block at height {got} refused: the ledger is at height {current}, so the next block is {expected}"
    )]
    UnexpectedHeight {
        /// The height offered.
        got: u64,
        /// The ledger's height.
        current: u64,
        /// The only height accepted.
        expected: u64,
    },
    /// A snapshot is malformed or does not match.
    #[error("snapshot refused: {0}")]
    Snapshot(String),
    /// The snapshot's root does not match its entries.
    #[error(
        "snapshot refused: its state root {claimed} does not match its entries (computed {computed}); fetch it again from another validator"
    )]
    RootMismatch {
        /// The root the snapshot claims (hex).
        claimed: String,
        /// The root of its entries (hex).
        computed: String,
    },
    /// The key ring cannot serve the ledger's epoch.
    #[error("keys refused: {0}")]
    Keys(String),
    /// The state is corrupt (a value failed to decrypt or decode). The ledger must be discarded and
    /// restored from a snapshot.
    #[error("ledger state corrupt: {0}; restore this validator from a snapshot")]
    Corrupt(String),
}

/// Result alias of this crate (ledger errors by default).
pub type Result<T, E = LedgerError> = std::result::Result<T, E>;

/// An amount with thousands separators: `1010` → `"1,010"`.
pub fn format_amount(n: u64) -> String {
    let s = n.to_string();
    let mut out = String::with_capacity(s.len() + s.len() / 3);
    for (i, c) in s.chars().enumerate() {
        if i > 0 && (s.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_hide_confidential_numbers_detail_shows_them() {
        let e = TxError::InsufficientBalance {
            need: 1010,
            have: 500,
        };
        assert!(!e.to_string().contains("1,010") && !e.to_string().contains("500"));
        assert!(!format!("{e:?}").contains("500"));
        assert_eq!(e.detail(), "insufficient balance: need 1,010, have 500");
        let e = TxError::NonceUsed {
            nonce: 4,
            account_nonce: 7,
        };
        assert_eq!(e.detail(), "nonce 4 already used (account nonce is 7)");
        assert!(
            TxError::WrongEpoch { got: 3, current: 5 }
                .to_string()
                .starts_with("transaction for epoch 3 refused: the network is in epoch 5")
        );
        assert_eq!(format_amount(0), "0");
        assert_eq!(format_amount(999), "999");
        assert_eq!(format_amount(1_234_567), "1,234,567");
    }
}
