//! A reader that verifies a blob's bytes against its address as they are read.

use std::fmt;
use std::io::{self, Read};

use crate::{BlobAddress, BlobError, Hasher};

/// Reads a blob, hashing what it returns. When the source ends it checks the length and the hash and
/// returns an error (kind [`io::ErrorKind::InvalidData`], wrapping a [`BlobError`] that names the blob) if
/// either is wrong. Bytes returned before that error must be discarded.
pub struct BlobReader {
    inner: Box<dyn Read + Send>,
    address: BlobAddress,
    len: u64,
    hasher: Option<Hasher>,
}

impl BlobReader {
    /// Wraps `inner`, which should yield `len` bytes whose SHA-256 is `address`.
    pub fn new(address: BlobAddress, len: u64, inner: Box<dyn Read + Send>) -> Self {
        Self {
            inner,
            address,
            len,
            hasher: Some(Hasher::new()),
        }
    }

    pub fn address(&self) -> &BlobAddress {
        &self.address
    }

    /// The blob's size, as the store reported it when it was opened.
    pub fn len(&self) -> u64 {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    fn check(&mut self, hasher: Hasher) -> io::Result<()> {
        let found = hasher.len();
        if found != self.len {
            return Err(invalid(BlobError::WrongSize {
                address: self.address,
                expected: self.len,
                found,
            }));
        }
        let actual = hasher.finish();
        if actual != self.address {
            tracing::warn!(address = %self.address, %actual, "corrupted blob");
            return Err(invalid(BlobError::Corrupted {
                address: self.address,
                actual,
                len: found,
            }));
        }
        Ok(())
    }
}

fn invalid(e: BlobError) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, e)
}

/// Turns an error from a [`BlobReader`] back into the [`BlobError`] it carries, or wraps it.
pub(crate) fn into_blob_error(e: io::Error, context: String) -> BlobError {
    match e.downcast::<BlobError>() {
        Ok(b) => b,
        Err(source) => BlobError::Io { context, source },
    }
}

impl Read for BlobReader {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let Some(hasher) = self.hasher.as_mut() else {
            return Ok(0);
        };
        if buf.is_empty() {
            return Ok(0);
        }
        let n = self.inner.read(buf)?;
        if n == 0 {
            if let Some(h) = self.hasher.take() {
                self.check(h)?;
            }
            return Ok(0);
        }
        hasher.update(&buf[..n]);
        if hasher.len() > self.len {
            let found = hasher.len();
            self.hasher = None;
            return Err(invalid(BlobError::WrongSize {
                address: self.address,
                expected: self.len,
                found,
            }));
        }
        Ok(n)
    }
}

impl fmt::Debug for BlobReader {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("BlobReader")
            .field("address", &self.address)
            .field("len", &self.len)
            .finish_non_exhaustive()
    }
}
