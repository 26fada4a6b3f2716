use thiserror::Error;

/// Everything that can be wrong with a protocol message. Messages never contain request or response content.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum TypesError {
    #[error("malformed {what}: {why}")]
    Malformed { what: &'static str, why: String },
    #[error(
        "unsupported {what} version {found} (this build speaks version {supported}); upgrade the older side"
    )]
    UnsupportedVersion {
        what: &'static str,
        found: u32,
        supported: u32,
    },
    #[error("frame of {len} bytes exceeds the maximum of {max} bytes")]
    FrameTooLarge { len: usize, max: usize },
    #[error("response stream truncated: {0}")]
    Truncated(String),
    #[error("receipt rejected: {0}")]
    BadReceipt(String),
    #[error(transparent)]
    Crypto(#[from] veil_crypto::CryptoError),
}

/// Result alias for this crate.
pub type Result<T, E = TypesError> = std::result::Result<T, E>;

impl TypesError {
    /// A JSON error, described by position and category only: serde's messages can quote input.
    pub(crate) fn json(what: &'static str, e: &serde_json::Error) -> Self {
        let why = match e.classify() {
            serde_json::error::Category::Io => "i/o error".to_owned(),
            serde_json::error::Category::Syntax => {
                format!("invalid JSON at line {} column {}", e.line(), e.column())
            }
            serde_json::error::Category::Data => {
                // Keep serde's field names ("missing field `model`") but never a quoted value.
                let msg = e.to_string();
                let named = [
                    "missing field `",
                    "unknown field `",
                    "unknown variant `",
                    "duplicate field `",
                ]
                .iter()
                .find_map(|p| {
                    let rest = msg.strip_prefix(p)?;
                    let end = rest.find('`')?;
                    Some(format!("{p}{}`", &rest[..end]))
                });
                named.unwrap_or_else(|| {
                    format!(
                        "a value has the wrong type or range at line {} column {}",
                        e.line(),
                        e.column()
                    )
                })
            }
            serde_json::error::Category::Eof => "unexpected end of JSON".to_owned(),
        };
        Self::Malformed { what, why }
    }
}
