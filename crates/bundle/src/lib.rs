//! Encrypted model bundles: an authenticated header in front of a streaming-AEAD ciphertext, and data-key sealing.
//!
//! ```text
//! bundle    = header | stream
//! header    = "VEILBNDL" | version (1) = 1 | body length (u16 BE)
//!             | format length (u8) | format | plaintext size (u64 BE) | chunk size (u32 BE)
//! stream    = veil_crypto::stream(key = data key, aad = header, chunk size, plaintext = model | SHA-256(model))
//! ```
//!
//! The header is the stream's associated data, so changing any byte of it fails decryption. The model's
//! SHA-256 travels *inside* the encryption, after the model: the blob store sees only sizes (a plaintext
//! hash in the clear would tell anyone which public model a bundle holds), and sealing needs one pass over
//! the model. Opening checks the header, decrypts while authenticating every 1 MiB chunk, and at the end
//! checks the size and the SHA-256. See `docs/bundles.md`.
#![forbid(unsafe_code)]

mod error;
mod header;
mod key;

use std::io::{self, Read, Write};

use sha2::{Digest, Sha256};
use veil_blobs::{BlobAddress, Hasher};
use veil_crypto::stream;
use veil_engine::{InMemoryModel, InMemoryModelWriter, PendingModel};

pub use error::{BundleError, Result};
pub use header::{BundleHeader, Format, MAGIC, MAX_BODY_LEN, VERSION};
pub use key::{DataKey, KEY_PURPOSE, open_key, seal_key};

/// The default chunk size: the foundation's 1 MiB.
pub const DEFAULT_CHUNK_SIZE: u32 = stream::DEFAULT_CHUNK_SIZE;
const DIGEST_LEN: usize = 32;

/// How to seal.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SealOptions {
    pub format: Format,
    pub chunk_size: u32,
}

impl Default for SealOptions {
    fn default() -> Self {
        Self {
            format: Format::Gguf,
            chunk_size: DEFAULT_CHUNK_SIZE,
        }
    }
}

/// What [`seal`] wrote.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sealed {
    pub header: BundleHeader,
    /// SHA-256 of the model (the plaintext).
    pub plaintext_sha256: [u8; 32],
    /// The bundle's content address: SHA-256 of every byte written.
    pub address: BlobAddress,
    /// The bundle's size in bytes.
    pub bundle_len: u64,
}

/// What [`open`] found in a bundle that decrypted and verified.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BundleInfo {
    pub header: BundleHeader,
    /// SHA-256 of the model, as sealed and as checked.
    pub plaintext_sha256: [u8; 32],
}

/// The size of the bundle for a model of `plaintext_len` bytes.
pub fn bundle_len(format: Format, plaintext_len: u64, chunk_size: u32) -> u64 {
    let header = BundleHeader {
        format,
        plaintext_len,
        chunk_size,
    };
    header.encode().len() as u64 + stream::ciphertext_len(plaintext_len + DIGEST_LEN as u64, chunk_size)
}

/// Seals a GGUF model of `plaintext_len` bytes with 1 MiB chunks; see [`seal_with`].
pub fn seal(
    model: impl Read,
    plaintext_len: u64,
    key: &DataKey,
    out: impl Write,
    progress: &mut dyn FnMut(u64),
) -> Result<Sealed> {
    seal_with(&SealOptions::default(), model, plaintext_len, key, out, progress)
}

/// Encrypts `model`, which must yield exactly `plaintext_len` bytes, into a bundle written to `out`, in
/// one pass and constant memory. `progress` is called with the number of model bytes read so far. On error
/// the output is not a valid bundle and must be discarded.
pub fn seal_with(
    options: &SealOptions,
    model: impl Read,
    plaintext_len: u64,
    key: &DataKey,
    out: impl Write,
    progress: &mut dyn FnMut(u64),
) -> Result<Sealed> {
    let header = BundleHeader {
        format: options.format,
        plaintext_len,
        chunk_size: options.chunk_size,
    };
    let header_bytes = header.encode();
    let mut out = HashingWriter {
        inner: out,
        hasher: Hasher::new(),
    };
    out.write_all(&header_bytes).map_err(|source| BundleError::Io {
        context: "cannot write the bundle header".into(),
        source,
    })?;
    let mut reader = SealReader {
        inner: model,
        expected: plaintext_len,
        read: 0,
        hasher: Sha256::new(),
        trailer: None,
        error: None,
        progress,
    };
    let result = stream::encrypt(
        key.as_bytes(),
        &header_bytes,
        options.chunk_size,
        &mut reader,
        &mut out,
    );
    if let Some(e) = reader.error.take() {
        return Err(e);
    }
    result.map_err(|e| match e {
        veil_crypto::CryptoError::Io { during, message } => BundleError::Io {
            context: format!("sealing failed while {during}"),
            source: io::Error::other(message),
        },
        other => BundleError::Crypto(other),
    })?;
    let plaintext_sha256 = reader
        .trailer
        .map(|(d, _)| d)
        .ok_or_else(|| BundleError::Malformed("sealing ended before the model did".into()))?;
    let bundle_len = out.hasher.len();
    let address = out.hasher.finish();
    tracing::debug!(%address, plaintext_len, bundle_len, "model sealed");
    Ok(Sealed {
        header,
        plaintext_sha256,
        address,
        bundle_len,
    })
}

/// Yields the model (hashing and counting it), then its SHA-256.
struct SealReader<'p, R> {
    inner: R,
    expected: u64,
    read: u64,
    hasher: Sha256,
    /// The digest and how much of it has been yielded.
    trailer: Option<([u8; 32], usize)>,
    /// A size error, kept typed (the stream only carries its message).
    error: Option<BundleError>,
    progress: &'p mut dyn FnMut(u64),
}

impl<R: Read> Read for SealReader<'_, R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if buf.is_empty() {
            return Ok(0);
        }
        if let Some((digest, pos)) = &mut self.trailer {
            let n = (DIGEST_LEN - *pos).min(buf.len());
            buf[..n].copy_from_slice(&digest[*pos..*pos + n]);
            *pos += n;
            return Ok(n);
        }
        let left = self.expected - self.read;
        if left == 0 {
            // The model must end exactly here.
            let mut probe = [0u8; 1];
            let extra = loop {
                match self.inner.read(&mut probe) {
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                    other => break other?,
                }
            };
            if extra != 0 {
                return Err(self.size_error(self.expected + 1));
            }
            let digest: [u8; 32] = std::mem::take(&mut self.hasher).finalize().into();
            self.trailer = Some((digest, 0));
            return self.read(buf);
        }
        let want = buf.len().min(usize::try_from(left).unwrap_or(usize::MAX));
        let n = self.inner.read(&mut buf[..want])?;
        if n == 0 {
            return Err(self.size_error(self.read));
        }
        self.hasher.update(&buf[..n]);
        self.read += n as u64;
        (self.progress)(self.read);
        Ok(n)
    }
}

impl<R> SealReader<'_, R> {
    fn size_error(&mut self, found: u64) -> io::Error {
        let e = BundleError::ModelSize {
            expected: self.expected,
            found,
        };
        let msg = e.to_string();
        self.error = Some(e);
        io::Error::new(io::ErrorKind::InvalidData, msg)
    }
}

struct HashingWriter<W> {
    inner: W,
    hasher: Hasher,
}

impl<W: Write> Write for HashingWriter<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.hasher.update(&buf[..n]);
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

/// Opens a bundle: checks its header, decrypts the model into `out` while authenticating every chunk,
/// then checks the model's size and SHA-256. On error, `out` may hold part of the model and must be
/// discarded (everything in it was authenticated, but it is incomplete).
pub fn open(mut bundle: impl Read, key: &DataKey, out: impl Write) -> Result<BundleInfo> {
    let (header, header_bytes, stream_header) = read_headers(&mut bundle)?;
    let mut sink = OpenWriter::new(out, header.plaintext_len);
    let input = (&stream_header[..]).chain(bundle);
    stream::decrypt(key.as_bytes(), &header_bytes, input, &mut sink).map_err(decrypt_error)?;
    sink.finish(header)
}

/// Reads and checks the bundle header and the stream header behind it; returns the bundle header, its
/// bytes (the stream's associated data) and the stream header.
fn read_headers(bundle: &mut impl Read) -> Result<(BundleHeader, Vec<u8>, [u8; stream::HEADER_LEN])> {
    let (header, header_bytes) = BundleHeader::read_from(bundle)?;
    let mut stream_header = [0u8; stream::HEADER_LEN];
    let n = header::fill(bundle, &mut stream_header)?;
    if n < stream::HEADER_LEN {
        return Err(BundleError::Malformed(format!(
            "truncated: the encrypted stream's header has {n} of its {} bytes",
            stream::HEADER_LEN
        )));
    }
    let chunk_size = stream::parse_header(&stream_header).map_err(BundleError::Decrypt)?;
    if chunk_size != header.chunk_size {
        return Err(BundleError::Malformed(format!(
            "the header says {}-byte chunks but the stream has {chunk_size}-byte chunks",
            header.chunk_size
        )));
    }
    Ok((header, header_bytes, stream_header))
}

fn decrypt_error(e: veil_crypto::CryptoError) -> BundleError {
    match e {
        veil_crypto::CryptoError::Io { during, message } => BundleError::Io {
            context: format!("opening the bundle failed while {during}"),
            source: io::Error::other(message),
        },
        other => BundleError::Decrypt(other),
    }
}

/// Passes the model's bytes on, hashing them, and keeps the SHA-256 that follows them.
struct OpenWriter<W> {
    inner: W,
    remaining: u64,
    hasher: Sha256,
    trailer: Vec<u8>,
}

impl<W> OpenWriter<W> {
    fn new(inner: W, plaintext_len: u64) -> Self {
        Self {
            inner,
            remaining: plaintext_len,
            hasher: Sha256::new(),
            trailer: Vec::with_capacity(DIGEST_LEN),
        }
    }

    /// Checks, once the stream authenticated to its end, that the model had the header's size and the
    /// SHA-256 sealed after it.
    fn finish(self, header: BundleHeader) -> Result<BundleInfo> {
        let found = header.plaintext_len - self.remaining + self.trailer.len() as u64;
        let sealed = <[u8; DIGEST_LEN]>::try_from(&self.trailer[..])
            .ok()
            .filter(|_| self.remaining == 0)
            .ok_or(BundleError::SizeMismatch {
                expected: header.plaintext_len,
                found: found.saturating_sub(DIGEST_LEN as u64),
            })?;
        check_digest(header, self.hasher.finalize().into(), sealed)
    }
}

/// The model's SHA-256 must be the one sealed after it.
fn check_digest(header: BundleHeader, actual: [u8; 32], sealed: [u8; 32]) -> Result<BundleInfo> {
    if actual != sealed {
        return Err(BundleError::DigestMismatch);
    }
    tracing::debug!(format = %header.format, len = header.plaintext_len, "bundle opened");
    Ok(BundleInfo {
        header,
        plaintext_sha256: actual,
    })
}

impl<W: Write> Write for OpenWriter<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let to_model = buf
            .len()
            .min(usize::try_from(self.remaining).unwrap_or(usize::MAX));
        if to_model > 0 {
            self.inner.write_all(&buf[..to_model])?;
            self.hasher.update(&buf[..to_model]);
            self.remaining -= to_model as u64;
        }
        let rest = &buf[to_model..];
        if self.trailer.len() + rest.len() > DIGEST_LEN {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                "the bundle holds more data than its header says",
            ));
        }
        self.trailer.extend_from_slice(rest);
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

/// Opens a bundle straight into memory: a sealed memfd ([`InMemoryModel`]) that the engine loads with
/// `ModelSource::Memory`, so the plaintext never touches a disk. The model is returned only if the whole
/// bundle authenticated and its size and SHA-256 matched; otherwise the memory file is dropped.
///
/// It checks exactly what [`open`] checks, faster: one thread reads the bundle, other threads authenticate
/// and decrypt its chunks and write each one's plaintext straight to its place in the memory file (sized
/// up front) ([`stream::decrypt_parallel`]), and another computes the model's SHA-256 over the chunks in
/// order. A few chunks are in flight at a time (memory: a few MiB). See [`open_to_memfd_and`], which also
/// lets the engine start on the model's metadata while the rest is being decrypted.
///
/// When `bundle` is a blob store's reader (`BlobStore::get`, as for a worker), its content-address check
/// (SHA-256 of the ciphertext) runs on the reading thread, overlapped with decryption. It is kept on
/// purpose although it costs as much CPU as the model's hash: the AEAD under the data key and the SHA-256
/// sealed inside authenticate the model against anyone without the key, but the address is what the
/// registry pins, and only the address check binds the loaded bytes to it against a key holder (a model's
/// owner can seal any model under its data key, and may run the store the worker reads from). A bundle
/// whose bytes do not match its address fails with the store's error, or the AEAD's for a changed chunk,
/// whichever comes first; either way nothing is returned.
pub fn open_to_memfd(
    bundle: impl Read + Send,
    key: &DataKey,
    name: &str,
) -> Result<(InMemoryModel, BundleInfo)> {
    let (model, info) = open_to_memfd_and(bundle, key, name, PendingModel::into_model)?;
    Ok((model.map_err(|e| BundleError::Memory(e.to_string()))?, info))
}

/// Opens a bundle into memory as [`open_to_memfd`] does, and meanwhile runs `load` (on the calling
/// thread) on the model as it arrives: a [`PendingModel`] that the engine loads with
/// `ModelSource::Pending`. Returns what `load` returned only if the bundle passed every check; otherwise
/// that is dropped (an engine is unloaded) and the error is the one [`open_to_memfd`] gives.
///
/// What `load` can see, and when:
/// - each byte once its chunk has authenticated (AEAD under the data key, which is sealed to the worker
///   for this bundle's address only) and been written in stream order ([`PendingModel::wait_for`]): the
///   engine parses the GGUF metadata (tokenizer, tensor layout) while the weights are still being
///   decrypted, and nothing anyone without the data key chose ever reaches it;
/// - the whole model only once every check has passed ([`PendingModel::wait_ready`]): every chunk
///   authenticated to the stream's end, the model's size, the SHA-256 sealed with it, and the blob store's
///   address check when `bundle` is its reader (the reader reports a mismatch at the end of the bundle,
///   before the stream can end). The memory file is sealed (read-only for good) by then. The engine uses
///   no weight before this, so a model that fails any check is never run.
///
/// If a check fails, the pending model's waits return the error, so `load` ends instead of waiting.
pub fn open_to_memfd_and<T>(
    bundle: impl Read + Send,
    key: &DataKey,
    name: &str,
    load: impl FnOnce(PendingModel) -> T,
) -> Result<(T, BundleInfo)> {
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    // A core each for the reading thread (which also checks the blob store's address), the thread
    // hashing the model in order, and the engine parsing the metadata; decryption gets the rest, at least
    // one thread. Measured on 2 cores, a second decrypting thread made the open slower (contending for
    // the cores, and with the other decrypting thread for the memory file, whose writes take its inode
    // lock), not faster.
    open_to_memfd_with(bundle, key, name, cores.saturating_sub(3).max(1), load)
}

fn open_to_memfd_with<T>(
    mut bundle: impl Read + Send,
    key: &DataKey,
    name: &str,
    threads: usize,
    load: impl FnOnce(PendingModel) -> T,
) -> Result<(T, BundleInfo)> {
    let (header, header_bytes, stream_header) = read_headers(&mut bundle)?;
    let model_len = header.plaintext_len;
    // Sparse until written: a header announcing a huge model costs nothing before its chunks authenticate.
    let memory = InMemoryModelWriter::new(name, model_len).map_err(|e| BundleError::Memory(e.to_string()))?;
    let (pending, release) = memory.pending().map_err(|e| BundleError::Memory(e.to_string()))?;
    let input = (&stream_header[..]).chain(bundle);
    let open = move || match decrypt_into(memory, input, key, &header, &header_bytes, threads) {
        Ok((info, model)) => {
            release
                .ready(&model)
                .map_err(|e| BundleError::Memory(e.to_string()))?;
            Ok(info)
        }
        Err(e) => {
            release.fail(e.to_string());
            Err(e)
        }
    };
    std::thread::scope(|scope| {
        let opening = std::thread::Builder::new()
            .name("veil-bundle-open".into())
            .spawn_scoped(scope, open)
            .map_err(|e| BundleError::Memory(format!("cannot start the decrypting thread: {e}")))?;
        let loaded = load(pending);
        // On any failure `loaded` is dropped here, and it never had the weights (they were not released).
        let info = opening
            .join()
            .map_err(|_| BundleError::Memory("the decrypting thread panicked".into()))??;
        Ok((loaded, info))
    })
}

/// Decrypts the stream into `memory`, checks the model, and seals the memory file.
fn decrypt_into(
    memory: InMemoryModelWriter,
    mut input: impl Read + Send,
    key: &DataKey,
    header: &BundleHeader,
    header_bytes: &[u8],
    threads: usize,
) -> Result<(BundleInfo, InMemoryModel)> {
    let model_len = header.plaintext_len;
    // The model's bytes go to the memory file; the digest sealed after them (and anything beyond, which
    // `OpenWriter` refuses) does not.
    let place = |offset: u64, plaintext: &[u8]| {
        let in_model = model_len.saturating_sub(offset).min(plaintext.len() as u64) as usize;
        if in_model == 0 {
            return Ok(());
        }
        memory
            .write_at(offset, &plaintext[..in_model])
            .map_err(io::Error::other)
    };
    let mut sink = OpenWriter::new(io::sink(), model_len);
    stream::decrypt_parallel(
        key.as_bytes(),
        header_bytes,
        &mut input,
        threads,
        &place,
        &mut |plaintext| {
            sink.write_all(plaintext)?;
            // In stream order, after `place`: everything up to here is in the memory file.
            memory.written_upto(model_len - sink.remaining);
            Ok(())
        },
    )
    .map_err(decrypt_error)?;
    let info = sink.finish(*header)?;
    let model = memory.finish().map_err(|e| BundleError::Memory(e.to_string()))?;
    Ok((info, model))
}

#[cfg(test)]
mod tests;
