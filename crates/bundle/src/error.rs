use thiserror::Error;

/// Everything that can go wrong with a bundle. Messages never contain key material or plaintext.
#[derive(Debug, Error)]
pub enum BundleError {
    #[error("not a Veil model bundle: {0}")]
    NotABundle(String),
    #[error("unsupported bundle version {found} (this build understands version {supported}); upgrade Veil")]
    UnsupportedVersion { found: u8, supported: u8 },
    #[error("unknown model format {found:?} in the bundle header (known: {known})")]
    UnknownFormat { found: String, known: String },
    #[error("malformed bundle header: {0}")]
    Malformed(String),
    #[error(
        "bundle rejected: {0} (the bundle is corrupted or was tampered with, or this is not its data key)"
    )]
    Decrypt(veil_crypto::CryptoError),
    #[error("bundle rejected: it holds {found} bytes of model but its header says {expected}")]
    SizeMismatch { expected: u64, found: u64 },
    #[error("bundle rejected: the decrypted model's SHA-256 does not match the one sealed with it")]
    DigestMismatch,
    #[error(
        "the model yielded {found} bytes while sealing, but {expected} were announced; nothing valid was written"
    )]
    ModelSize { expected: u64, found: u64 },
    #[error("data key: {0}")]
    Key(String),
    #[error("{context}: {source}")]
    Io {
        context: String,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot decrypt into memory: {0}")]
    Memory(String),
    #[error(transparent)]
    Crypto(veil_crypto::CryptoError),
}

/// Result alias for this crate.
pub type Result<T, E = BundleError> = std::result::Result<T, E>;
