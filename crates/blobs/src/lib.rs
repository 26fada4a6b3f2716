//! Content-addressed blob store for encrypted model bundles: a local directory, or any S3-compatible object store.
//!
//! A blob's address is the SHA-256 of its stored bytes, written `sha256:<64 hex digits>` ([`BlobAddress`]).
//! Stores are picked by configuration ([`BlobConfig`]) and used through the [`BlobStore`] trait:
//!
//! - [`LocalStore`] (default): `<dir>/sha256/<first 2 hex digits>/<64 hex digits>`. A put streams into a
//!   temporary file in `<dir>/tmp`, hashing as it writes, fsyncs, then renames it into place, so a blob is
//!   either wholly there or not at all, even across a crash.
//! - `S3Store` (cargo feature `s3`): any S3-compatible object store through the `object_store` crate.
//!
//! Every read is verified: [`BlobReader`] hashes what it returns and fails at the end, naming the blob, if
//! the bytes are not the ones the address names. Like a decrypting stream, a reader that fails has already
//! returned the bytes before the failure, so callers discard what they read on error.
//!
//! The trait is synchronous (streams are [`std::io::Read`]), so the CPU-bound consumers (bundle decryption)
//! read from it directly; async callers call it from `tokio::task::spawn_blocking`.
#![forbid(unsafe_code)]

mod address;
mod config;
mod error;
mod local;
mod reader;
#[cfg(feature = "s3")]
mod s3;

use std::fs::File;
use std::io::Read;
use std::path::Path;

pub use address::{BlobAddress, Hasher, PREFIX};
pub use config::BlobConfig;
pub use error::{BlobError, Result};
pub use local::LocalStore;
pub use reader::BlobReader;
#[cfg(feature = "s3")]
pub use s3::{S3Config, S3Store};

/// A content-addressed store of immutable blobs. Implementations are shared between threads.
///
/// Blocking: async code calls it from `spawn_blocking` (the S3 backend drives its own runtime and must
/// not be called from inside an async task).
pub trait BlobStore: Send + Sync + std::fmt::Debug {
    /// Stores everything `data` yields and returns its address. Idempotent: putting bytes that are already
    /// stored changes nothing. Nothing is visible under the address until all of it is stored.
    fn put(&self, data: &mut dyn Read) -> Result<BlobAddress>;

    /// Stores `data`, which the caller says has address `expected`; if it does not, nothing is stored and
    /// [`BlobError::HashMismatch`] is returned.
    fn put_expected(&self, expected: &BlobAddress, data: &mut dyn Read) -> Result<()>;

    /// Stores a file. The default hashes the file first and then stores it with [`Self::put_expected`]
    /// (which lets a backend upload straight to the final name).
    fn put_file(&self, path: &Path) -> Result<BlobAddress> {
        let open = || File::open(path).map_err(BlobError::io(format!("cannot open {}", path.display())));
        let mut hasher = Hasher::new();
        let mut file = open()?;
        let mut buf = vec![0u8; 1 << 20];
        loop {
            let n = match file.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => n,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(BlobError::io(format!("cannot read {}", path.display()))(e)),
            };
            hasher.update(&buf[..n]);
        }
        let address = hasher.finish();
        self.put_expected(&address, &mut open()?)?;
        Ok(address)
    }

    /// Opens a blob for reading; the reader verifies the bytes against the address as they are read.
    fn get(&self, address: &BlobAddress) -> Result<BlobReader>;

    /// Whether the blob is stored.
    fn exists(&self, address: &BlobAddress) -> Result<bool>;

    /// The blob's size in bytes ([`BlobError::NotFound`] if it is not stored).
    fn size(&self, address: &BlobAddress) -> Result<u64>;

    /// Every stored blob's address, sorted.
    fn list(&self) -> Result<Vec<BlobAddress>>;

    /// Removes a blob; returns whether it was there.
    fn delete(&self, address: &BlobAddress) -> Result<bool>;

    /// Where this store keeps its blobs, for messages (e.g. `local directory /srv/blobs`).
    fn describe(&self) -> String;

    /// Reads a whole blob into memory, verified (for small blobs and tests).
    fn get_bytes(&self, address: &BlobAddress) -> Result<Vec<u8>> {
        let mut out = Vec::new();
        self.get(address)?
            .read_to_end(&mut out)
            .map_err(|e| reader::into_blob_error(e, format!("cannot read blob {address}")))?;
        Ok(out)
    }

    /// Stores a byte slice.
    fn put_bytes(&self, bytes: &[u8]) -> Result<BlobAddress> {
        self.put(&mut &bytes[..])
    }
}
