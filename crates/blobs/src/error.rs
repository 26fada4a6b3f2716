use thiserror::Error;

use crate::BlobAddress;

/// Everything that can go wrong in a blob store. Messages name the blob and say what to do.
#[derive(Debug, Error)]
pub enum BlobError {
    #[error("invalid blob address {input:?}: {reason} (expected sha256:<64 lowercase hex digits>)")]
    BadAddress { input: String, reason: String },
    #[error("blob {address} is not in the store ({store})")]
    NotFound { address: BlobAddress, store: String },
    #[error(
        "blob {address} is corrupted: its {len} stored bytes hash to {actual}; delete it and put it again"
    )]
    Corrupted {
        address: BlobAddress,
        actual: BlobAddress,
        len: u64,
    },
    #[error(
        "blob {address} is corrupted: {expected} bytes expected, {found} read; delete it and put it again"
    )]
    WrongSize {
        address: BlobAddress,
        expected: u64,
        found: u64,
    },
    #[error("the data put as {expected} hashes to {actual}; nothing was stored")]
    HashMismatch {
        expected: BlobAddress,
        actual: BlobAddress,
    },
    #[error("{context}: {source}")]
    Io {
        context: String,
        #[source]
        source: std::io::Error,
    },
    #[error("object store: {context}: {message}")]
    Backend { context: String, message: String },
    #[error("blob store configuration: {0}")]
    Config(String),
}

/// Result alias for this crate.
pub type Result<T, E = BlobError> = std::result::Result<T, E>;

impl BlobError {
    pub(crate) fn io(context: impl Into<String>) -> impl FnOnce(std::io::Error) -> Self {
        let context = context.into();
        move |source| Self::Io { context, source }
    }
}
