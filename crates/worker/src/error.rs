use thiserror::Error;

/// What can go wrong in a worker. Messages name sizes, models and addresses, never request or response
/// content or key material.
#[derive(Debug, Error)]
pub enum WorkerError {
    #[error("platform: {0}")]
    Platform(#[from] veil_platform::PlatformError),
    #[error("crypto: {0}")]
    Crypto(#[from] veil_crypto::CryptoError),
    #[error("blob store: {0}")]
    Blobs(#[from] veil_blobs::BlobError),
    #[error("bundle: {0}")]
    Bundle(#[from] veil_bundle::BundleError),
    #[error("engine: {0}")]
    Engine(#[from] veil_engine::Error),
    #[error("protocol: {0}")]
    Types(#[from] veil_types::TypesError),
    #[error("unknown model {0:?}: this worker serves only the models in its configuration")]
    UnknownModel(String),
    #[error("invalid configuration: {0}")]
    Config(String),
    #[error("cannot listen on {addr}: {source}")]
    Listen {
        addr: String,
        #[source]
        source: std::io::Error,
    },
    #[error("internal: {0}")]
    Internal(String),
}

/// Result alias for this crate.
pub type Result<T, E = WorkerError> = std::result::Result<T, E>;
