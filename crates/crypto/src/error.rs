use thiserror::Error;

/// Everything that can go wrong in Veil's cryptography. Messages say what was wrong and, where it
/// helps, what to do; they never contain key material or plaintext.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum CryptoError {
    #[error("malformed {what}: {why}")]
    Malformed { what: &'static str, why: String },
    #[error("unsupported {what} version {found} (this build understands versions up to {supported})")]
    UnsupportedVersion {
        what: &'static str,
        found: u8,
        supported: u8,
    },
    #[error("sealed for purpose {found:?}, but {expected:?} was expected")]
    WrongPurpose { expected: String, found: String },
    #[error("decryption failed: wrong key, wrong associated data, or the {what} was tampered with")]
    Decrypt { what: &'static str },
    #[error("signature does not verify for this key and message")]
    BadSignature,
    #[error("invalid {what} key: {why}")]
    InvalidKey { what: &'static str, why: String },
    #[error("stream {0}")]
    Stream(String),
    #[error("i/o error during {during}: {message}")]
    Io { during: &'static str, message: String },
    #[error("the operating system's random number generator failed: {0}")]
    Rng(String),
    #[error("padding: {0}")]
    Padding(String),
}

/// Result alias for this crate.
pub type Result<T, E = CryptoError> = std::result::Result<T, E>;

impl CryptoError {
    pub(crate) fn malformed(what: &'static str, why: impl Into<String>) -> Self {
        Self::Malformed {
            what,
            why: why.into(),
        }
    }
}
