use thiserror::Error;
use veil_types::ErrorKind;

/// What can go wrong talking to a worker. Every message says what failed and, where it helps, what to do.
#[derive(Debug, Error)]
pub enum ClientError {
    #[error("cannot reach the worker: {0}")]
    Http(String),
    #[error("attestation: {0}")]
    Attestation(#[from] veil_attest::AttestError),
    #[error("worker at {url} refused: its evidence fails the attestation policy: {reason}")]
    WorkerRefused { url: String, reason: String },
    #[error("the worker rejected the request (HTTP {status}, {code}): {message}")]
    Rejected {
        status: u16,
        code: String,
        message: String,
    },
    #[error("the worker failed the request ({}): {message}", kind.as_str())]
    Worker { kind: ErrorKind, message: String },
    #[error("response stream rejected: {0}; the answer is discarded")]
    Stream(String),
    #[error("receipt rejected: {0}")]
    Receipt(String),
    #[error("protocol: {0}")]
    Protocol(String),
    #[error(transparent)]
    Types(#[from] veil_types::TypesError),
    #[error(transparent)]
    Crypto(#[from] veil_crypto::CryptoError),
}

/// Result alias for this crate.
pub type Result<T, E = ClientError> = std::result::Result<T, E>;
