//! Errors of the validator node.

/// What went wrong starting or running a validator.
#[derive(Debug, thiserror::Error)]
pub enum NodeError {
    /// The configuration is invalid; the message says what to change.
    #[error("invalid validator configuration: {0}")]
    Config(String),
    /// The validator's durable store could not be read or written.
    #[error("validator storage: {0}")]
    Storage(String),
    /// The network seed could not be obtained or opened.
    #[error("network seed: {0}")]
    Seed(String),
}

/// Result alias for this crate.
pub type Result<T> = std::result::Result<T, NodeError>;
