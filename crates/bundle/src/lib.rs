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
use veil_engine::{InMemoryModel, InMemoryModelWriter};

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

/// Passes the model's bytes on (hashing them, unless the model is hashed elsewhere) and keeps the SHA-256
/// that follows them.
struct OpenWriter<W> {
    inner: W,
    remaining: u64,
    hasher: Option<Sha256>,
    trailer: Vec<u8>,
}

impl<W> OpenWriter<W> {
    fn new(inner: W, plaintext_len: u64) -> Self {
        Self::with_hasher(inner, plaintext_len, Some(Sha256::new()))
    }

    fn with_hasher(inner: W, plaintext_len: u64, hasher: Option<Sha256>) -> Self {
        Self {
            inner,
            remaining: plaintext_len,
            hasher,
            trailer: Vec::with_capacity(DIGEST_LEN),
        }
    }

    /// Checks, once the stream authenticated to its end, that the model had the header's size and the
    /// SHA-256 sealed after it.
    fn finish(self, header: BundleHeader) -> Result<BundleInfo> {
        match self.finish_sizes(header)? {
            (Some(actual), sealed) => check_digest(header, actual, sealed),
            (None, _) => Err(BundleError::Memory(
                "internal: the model was not hashed while it was decrypted".into(),
            )),
        }
    }

    /// Checks, once the stream authenticated to its end, that the model had the header's size; returns
    /// the model's SHA-256 if this writer computed it, and the one sealed after the model.
    fn finish_sizes(self, header: BundleHeader) -> Result<(Option<[u8; 32]>, [u8; 32])> {
        let found = header.plaintext_len - self.remaining + self.trailer.len() as u64;
        let sealed = <[u8; DIGEST_LEN]>::try_from(&self.trailer[..])
            .ok()
            .filter(|_| self.remaining == 0)
            .ok_or(BundleError::SizeMismatch {
                expected: header.plaintext_len,
                found: found.saturating_sub(DIGEST_LEN as u64),
            })?;
        Ok((self.hasher.map(|h| h.finalize().into()), sealed))
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
            if let Some(hasher) = &mut self.hasher {
                hasher.update(&buf[..to_model]);
            }
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
/// up front) ([`stream::decrypt_parallel`]), and the model's SHA-256 is computed on a thread of its own
/// (see [`open_to_memfd_and`], which can load the model while that hash is being checked). A few chunks
/// are in flight at a time (memory: a few MiB).
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
    open_to_memfd_and(bundle, key, name, |model| model)
}

/// Opens a bundle into memory as [`open_to_memfd`] does, hands the model to `load` as soon as every chunk
/// has authenticated and the model has its header's size, and returns what `load` returned only if the
/// model's SHA-256 also matched the one sealed with it. Otherwise what `load` returned is dropped (an
/// engine is unloaded) and the error is [`BundleError::DigestMismatch`], as from [`open_to_memfd`]; a
/// bundle refused before `load` runs gives the same error [`open_to_memfd`] gives.
///
/// So `load` may start while the SHA-256 is still being computed, and the caller can only ever use its
/// result after the check passed. That is safe to overlap because `load` never sees a byte that someone
/// without the data key chose: every chunk was authenticated (AEAD under the data key, which is sealed to
/// the worker for this bundle's address only) before `load` runs. The SHA-256 sealed after the model binds
/// the whole model as its owner sealed it; until it has matched, nothing loaded from it is served.
///
/// Where the SHA-256 runs depends on the cores: with four or more, on the calling thread over each chunk
/// in order as it is decrypted, so the model is checked before `load` runs (reader, decrypting threads and
/// hash each have a core; a core per decrypting thread); with fewer, over the finished memory file on a
/// thread of its own while `load` runs on the calling thread (a model load is mostly one thread, which
/// leaves a core to the hash; hashing while decrypting would take that core from the decryption that
/// `load` waits for). Either way the same bundles are accepted and refused with the same errors.
pub fn open_to_memfd_and<T>(
    bundle: impl Read + Send,
    key: &DataKey,
    name: &str,
    load: impl FnOnce(InMemoryModel) -> T,
) -> Result<(T, BundleInfo)> {
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    // With few cores the reading thread (which also checks the blob store's address) gets a core of its
    // own and one thread decrypts: measured on 2 cores, a second decrypting thread made the open slower
    // (contending for the cores with the reader, and with the other decrypting thread for the memory
    // file, whose writes take its inode lock), not faster.
    let (hash, decrypting_threads) = if cores >= 4 {
        (HashModel::WhileDecrypting, cores)
    } else {
        (HashModel::WhileLoading, cores.saturating_sub(1).max(1))
    };
    open_to_memfd_with(bundle, key, name, decrypting_threads, hash, load)
}

/// When [`open_to_memfd_and`] computes the model's SHA-256.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum HashModel {
    /// On the calling thread, each chunk in stream order as it is decrypted; checked before loading.
    WhileDecrypting,
    /// Over the finished memory file, on its own thread, while the model loads.
    WhileLoading,
}

fn open_to_memfd_with<T>(
    mut bundle: impl Read + Send,
    key: &DataKey,
    name: &str,
    threads: usize,
    hash: HashModel,
    load: impl FnOnce(InMemoryModel) -> T,
) -> Result<(T, BundleInfo)> {
    let (header, header_bytes, stream_header) = read_headers(&mut bundle)?;
    let model_len = header.plaintext_len;
    // Sparse until written: a header announcing a huge model costs nothing before its chunks authenticate.
    let memory = InMemoryModelWriter::new(name, model_len).map_err(|e| BundleError::Memory(e.to_string()))?;
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
    let hasher = (hash == HashModel::WhileDecrypting).then(Sha256::new);
    let mut sink = OpenWriter::with_hasher(io::sink(), model_len, hasher);
    let mut input = (&stream_header[..]).chain(bundle);
    stream::decrypt_parallel(
        key.as_bytes(),
        &header_bytes,
        &mut input,
        threads,
        &place,
        &mut |plaintext| sink.write_all(plaintext),
    )
    .map_err(decrypt_error)?;
    let (computed, sealed) = sink.finish_sizes(header)?;
    let model = memory.finish().map_err(|e| BundleError::Memory(e.to_string()))?;
    if let Some(actual) = computed {
        let info = check_digest(header, actual, sealed)?;
        return Ok((load(model), info));
    }
    // A second descriptor of the same (sealed) memory file, for the hashing thread to read.
    let file = std::fs::File::open(model.proc_path())
        .map_err(|e| BundleError::Memory(format!("cannot reopen the model in memory to hash it: {e}")))?;
    std::thread::scope(|scope| {
        let hashing = std::thread::Builder::new()
            .name("veil-bundle-sha256".into())
            .spawn_scoped(scope, move || sha256_of(file, model_len))
            .map_err(|e| BundleError::Memory(format!("cannot start the hashing thread: {e}")))?;
        let loaded = load(model);
        let actual = hashing
            .join()
            .map_err(|_| BundleError::Memory("the hashing thread panicked".into()))??;
        // On a mismatch `loaded` is dropped here, before anyone could use it.
        let info = check_digest(header, actual, sealed)?;
        Ok((loaded, info))
    })
}

/// The SHA-256 of the `len` bytes of `file` (a sealed memory file: its size cannot change).
fn sha256_of(mut file: std::fs::File, len: u64) -> Result<[u8; 32]> {
    let failed = |e: io::Error| BundleError::Memory(format!("cannot read the model back to hash it: {e}"));
    let mut hasher = Sha256::new();
    // The model is confidential: its bytes are wiped from the buffer when done.
    let size = HASH_BUFFER
        .min(usize::try_from(len).unwrap_or(HASH_BUFFER))
        .max(1);
    let mut buf = zeroize::Zeroizing::new(vec![0u8; size]);
    let mut read = 0u64;
    loop {
        let n = match file.read(&mut buf) {
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(failed(e)),
        };
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
        read += n as u64;
    }
    if read != len {
        return Err(failed(io::Error::other(format!("{read} bytes instead of {len}"))));
    }
    Ok(hasher.finalize().into())
}

/// How much of the model [`sha256_of`] reads at a time.
const HASH_BUFFER: usize = 1 << 20;

#[cfg(test)]
mod tests;
