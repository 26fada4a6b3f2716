//! Chunked streaming AEAD for large payloads (model bundles): the STREAM construction (Hoang, Reyhanitabar,
//! Rogaway, Vizár 2015) over AES-256-GCM (version 2, what [`encrypt`] writes) or ChaCha20-Poly1305
//! (version 1, which streams sealed before still use and which [`decrypt`] still opens).
//!
//! ```text
//! header  = "VEILSTRM" | version (1) | chunk size (u32 BE) | salt (32 random bytes)
//! chunk i = AEAD(k, nonce = i (u64 BE) | final flag (1) | 0 0 0, aad = header | aad, plaintext_i)
//! AEAD, k = version 2: AES-256-GCM,       k = HKDF-SHA256(ikm = data key, salt, info = "veil/v2/stream-chunk-key")
//!           version 1: ChaCha20-Poly1305, k = HKDF-SHA256(ikm = data key, salt, info = "veil/v1/stream-chunk-key")
//! ```
//!
//! Every chunk but the last holds exactly `chunk size` bytes of plaintext; the last one (possibly empty)
//! carries the final flag. The chunk index and the final flag are in the nonce, and the header is in every
//! chunk's associated data, so truncation (no final chunk), reordering and duplication (wrong index),
//! extension (data after the final chunk), header changes (the version, hence the cipher, included) and
//! tampering are all detected. Each version derives its own chunk key, so no key is ever used with both
//! ciphers. Nonces are unique per key (a chunk index appears once per stream, and every stream has a fresh
//! random salt, hence a fresh key), as both ciphers require. Encryption and decryption stream from a
//! reader to a writer holding one chunk in memory. A decrypting writer receives only authenticated chunks,
//! but a stream that fails part-way has already written its earlier chunks: callers must discard the
//! output on error.
//!
//! Chunks are independent once their index and final flag are known, so [`decrypt_parallel`] opens them on
//! several threads (for large models): one thread reads the chunks in order and decides each one's index
//! and final flag exactly as [`decrypt`] does, workers authenticate and decrypt them, and the caller sees
//! the plaintext both as soon as each chunk is authenticated (by position) and in stream order. It accepts
//! exactly the streams [`decrypt`] accepts and reports the same error for those it refuses.
//!
//! Both ciphers are AWS-LC's, through `aws-lc-rs`'s safe API: opening is the hot path when a worker loads
//! a model, and AWS-LC's assembly is several times faster than portable code. AES-256-GCM is version 2
//! because, with the AES and carry-less multiplication instructions of every x86 and Arm server a TEE runs
//! on, it opens three to five times as fast as ChaCha20-Poly1305 (measured: 100 MiB in ~18 ms against
//! ~56 ms on one core), and opening a model's chunks is CPU the worker spends before it can serve. Both
//! are the standard constructions (NIST SP 800-38D and RFC 8439: 96-bit nonce, 128-bit tag); tests check
//! that RustCrypto's independent implementations open and refuse exactly the same streams.

use std::collections::BTreeMap;
use std::io::{self, Read, Write};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Mutex, mpsc};

use aws_lc_rs::aead::{AES_256_GCM, Aad, Algorithm, CHACHA20_POLY1305, LessSafeKey, Nonce, UnboundKey};
use hkdf::Hkdf;
use sha2::Sha256;
use zeroize::Zeroizing;

use crate::{CryptoError, Result};

pub const MAGIC: &[u8; 8] = b"VEILSTRM";
/// The version [`encrypt`] writes (AES-256-GCM chunks); [`decrypt`] opens it and version 1.
pub const VERSION: u8 = 2;
/// The default chunk size: 1 MiB.
pub const DEFAULT_CHUNK_SIZE: u32 = 1 << 20;
/// Chunk sizes outside this range are refused (the upper bound caps the memory a hostile header can ask for).
pub const MIN_CHUNK_SIZE: u32 = 16;
pub const MAX_CHUNK_SIZE: u32 = 64 << 20;
/// The header's length in bytes.
pub const HEADER_LEN: usize = 8 + 1 + 4 + 32;
const TAG_LEN: usize = 16;

/// What a finished encryption or decryption processed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StreamSummary {
    pub plaintext_len: u64,
    pub ciphertext_len: u64,
    pub chunks: u64,
}

/// The ciphertext length for a plaintext of `len` bytes (header included).
pub fn ciphertext_len(len: u64, chunk_size: u32) -> u64 {
    let chunks = len / chunk_size as u64 + u64::from(!len.is_multiple_of(chunk_size as u64) || len == 0);
    HEADER_LEN as u64 + len + chunks * TAG_LEN as u64
}

/// The AEAD that seals a stream's chunks, named by the header's version.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Suite {
    ChaCha20Poly1305,
    Aes256Gcm,
}

impl Suite {
    fn of_version(version: u8) -> Option<Self> {
        match version {
            1 => Some(Self::ChaCha20Poly1305),
            2 => Some(Self::Aes256Gcm),
            _ => None,
        }
    }

    fn version(self) -> u8 {
        match self {
            Self::ChaCha20Poly1305 => 1,
            Self::Aes256Gcm => 2,
        }
    }

    fn algorithm(self) -> &'static Algorithm {
        match self {
            Self::ChaCha20Poly1305 => &CHACHA20_POLY1305,
            Self::Aes256Gcm => &AES_256_GCM,
        }
    }

    /// The HKDF info of the chunk key: one per version, so no key serves both ciphers.
    fn key_info(self) -> &'static [u8] {
        match self {
            Self::ChaCha20Poly1305 => b"veil/v1/stream-chunk-key",
            Self::Aes256Gcm => b"veil/v2/stream-chunk-key",
        }
    }
}

struct ChunkCipher {
    /// Seals and opens chunks (AWS-LC, which clears its copy of the key when dropped).
    key: LessSafeKey,
    aad: Vec<u8>,
    /// Tests open with RustCrypto too, to check both libraries accept and refuse the same chunks.
    #[cfg(test)]
    rustcrypto: (Suite, Zeroizing<[u8; 32]>),
    #[cfg(test)]
    open_with_rustcrypto: bool,
}

impl ChunkCipher {
    /// The cipher for a stream whose header (already checked by [`parse`]) is `header`.
    fn new(key: &[u8; 32], suite: Suite, header: &[u8; HEADER_LEN], aad: &[u8]) -> Self {
        let salt = &header[13..];
        let mut k = Zeroizing::new([0u8; 32]);
        if Hkdf::<Sha256>::new(Some(salt), key)
            .expand(suite.key_info(), k.as_mut())
            .is_err()
        {
            unreachable!("HKDF-SHA256 can always expand 32 bytes");
        }
        let mut full_aad = Vec::with_capacity(HEADER_LEN + aad.len());
        full_aad.extend_from_slice(header);
        full_aad.extend_from_slice(aad);
        let Ok(unbound) = UnboundKey::new(suite.algorithm(), k.as_ref()) else {
            unreachable!("a 32-byte key is a valid key for both ciphers");
        };
        Self {
            key: LessSafeKey::new(unbound),
            aad: full_aad,
            #[cfg(test)]
            rustcrypto: (suite, k),
            #[cfg(test)]
            open_with_rustcrypto: false,
        }
    }

    fn nonce_bytes(index: u64, last: bool) -> [u8; 12] {
        let mut n = [0u8; 12];
        n[..8].copy_from_slice(&index.to_be_bytes());
        n[8] = u8::from(last);
        n
    }

    fn nonce(index: u64, last: bool) -> Nonce {
        // Unique for the key: see the module's documentation.
        Nonce::assume_unique_for_key(Self::nonce_bytes(index, last))
    }
}

fn io_err(during: &'static str) -> impl Fn(io::Error) -> CryptoError {
    move |e| CryptoError::Io {
        during,
        message: e.to_string(),
    }
}

/// Reads until `buf` is full or the reader is exhausted (retrying on `Interrupted`); returns the bytes read.
/// Unlike `read_exact`, a short read is not an error: the caller learns how much arrived.
pub fn read_full(r: &mut impl Read, buf: &mut [u8]) -> io::Result<usize> {
    fill(r, buf)
}

fn fill(r: &mut impl Read, buf: &mut [u8]) -> io::Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        match r.read(&mut buf[n..]) {
            Ok(0) => break,
            Ok(k) => n += k,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(n)
}

/// Reads up to `want` bytes into `buf` (which may already hold a carried-over first byte), then peeks one
/// more byte to learn whether this is the last chunk. Returns `(is_last, carried byte for the next chunk)`.
///
/// The buffer grows with the bytes that actually arrive until it has held one whole chunk, so a hostile
/// header that announces 64 MiB chunks in front of a few bytes costs a few bytes, not 64 MiB.
fn read_chunk(r: &mut impl Read, buf: &mut Vec<u8>, want: usize) -> io::Result<(bool, Option<u8>)> {
    let have = buf.len();
    read_chunk_after(r, buf, have, want)
}

/// [`read_chunk`] into a buffer whose first `have` bytes are kept (a carried-over byte, or none) and whose
/// other bytes, left from an earlier chunk, are overwritten rather than zeroed first.
fn read_chunk_after(
    r: &mut impl Read,
    buf: &mut Vec<u8>,
    have: usize,
    want: usize,
) -> io::Result<(bool, Option<u8>)> {
    if buf.capacity() >= want {
        // Zeroes only bytes never written before: none, for a buffer that has held a whole chunk.
        buf.resize(want, 0);
        let n = fill(r, &mut buf[have..])?;
        buf.truncate(have + n);
    } else {
        buf.truncate(have);
        r.by_ref().take((want - have) as u64).read_to_end(buf)?;
    }
    if buf.len() < want {
        return Ok((true, None));
    }
    let mut peek = [0u8; 1];
    match fill(r, &mut peek)? {
        0 => Ok((true, None)),
        _ => Ok((false, Some(peek[0]))),
    }
}

/// Encrypts everything `input` yields to `output` under `key`, binding `aad`, in chunks of `chunk_size`.
pub fn encrypt(
    key: &[u8; 32],
    aad: &[u8],
    chunk_size: u32,
    mut input: impl Read,
    mut output: impl Write,
) -> Result<StreamSummary> {
    if !(MIN_CHUNK_SIZE..=MAX_CHUNK_SIZE).contains(&chunk_size) {
        return Err(CryptoError::Stream(format!(
            "chunk size {chunk_size} is outside {MIN_CHUNK_SIZE}..={MAX_CHUNK_SIZE}"
        )));
    }
    encrypt_with_salt(
        key,
        Suite::Aes256Gcm,
        aad,
        chunk_size,
        crate::rand::array()?,
        &mut input,
        &mut output,
    )
}

// The work is done by non-generic functions over `dyn Read`/`dyn Write`, so the AEAD code is compiled (and
// optimised) in this crate rather than in every caller's, whatever their build profile.
fn encrypt_with_salt(
    key: &[u8; 32],
    suite: Suite,
    aad: &[u8],
    chunk_size: u32,
    salt: [u8; 32],
    mut input: &mut dyn Read,
    output: &mut dyn Write,
) -> Result<StreamSummary> {
    let mut header = [0u8; HEADER_LEN];
    header[..8].copy_from_slice(MAGIC);
    header[8] = suite.version();
    header[9..13].copy_from_slice(&chunk_size.to_be_bytes());
    header[13..].copy_from_slice(&salt);
    let cc = ChunkCipher::new(key, suite, &header, aad);
    output
        .write_all(&header)
        .map_err(io_err("writing the stream header"))?;

    let mut buf = Zeroizing::new(Vec::with_capacity(chunk_size as usize + TAG_LEN));
    let mut summary = StreamSummary {
        plaintext_len: 0,
        ciphertext_len: HEADER_LEN as u64,
        chunks: 0,
    };
    for index in 0u64.. {
        let (last, carry) =
            read_chunk(&mut input, &mut buf, chunk_size as usize).map_err(io_err("reading the plaintext"))?;
        summary.plaintext_len += buf.len() as u64;
        let tag = cc
            .key
            .seal_in_place_separate_tag(ChunkCipher::nonce(index, last), Aad::from(&cc.aad[..]), &mut buf)
            .map_err(|_| CryptoError::Stream("chunk encryption failed".into()))?;
        output
            .write_all(&buf)
            .map_err(io_err("writing a ciphertext chunk"))?;
        output
            .write_all(tag.as_ref())
            .map_err(io_err("writing a ciphertext chunk"))?;
        summary.ciphertext_len += (buf.len() + TAG_LEN) as u64;
        summary.chunks += 1;
        buf.clear();
        if last {
            break;
        }
        buf.extend(carry);
    }
    output.flush().map_err(io_err("flushing the ciphertext"))?;
    Ok(summary)
}

/// Parses and checks a stream header, returning its chunk size.
pub fn parse_header(header: &[u8; HEADER_LEN]) -> Result<u32> {
    parse(header).map(|(chunk_size, _)| chunk_size)
}

/// Parses and checks a stream header: its chunk size and cipher.
fn parse(header: &[u8; HEADER_LEN]) -> Result<(u32, Suite)> {
    if &header[..8] != MAGIC {
        return Err(CryptoError::Stream(
            "is not a Veil encrypted stream (bad magic)".into(),
        ));
    }
    let suite = Suite::of_version(header[8]).ok_or(CryptoError::UnsupportedVersion {
        what: "encrypted stream",
        found: header[8],
        supported: VERSION,
    })?;
    let chunk_size = u32::from_be_bytes([header[9], header[10], header[11], header[12]]);
    if !(MIN_CHUNK_SIZE..=MAX_CHUNK_SIZE).contains(&chunk_size) {
        return Err(CryptoError::Stream(format!(
            "header's chunk size {chunk_size} is outside {MIN_CHUNK_SIZE}..={MAX_CHUNK_SIZE}"
        )));
    }
    Ok((chunk_size, suite))
}

/// Decrypts a stream made by [`encrypt`] from `input` to `output`. Fails, naming the chunk, on any
/// tampering, truncation, reordering, duplication, extension, wrong key or wrong `aad`. On error the output
/// must be discarded (it may hold the authenticated chunks that came before the failure).
pub fn decrypt(
    key: &[u8; 32],
    aad: &[u8],
    mut input: impl Read,
    mut output: impl Write,
) -> Result<StreamSummary> {
    decrypt_dyn(key, aad, &mut input, &mut output)
}

fn decrypt_dyn(
    key: &[u8; 32],
    aad: &[u8],
    input: &mut dyn Read,
    output: &mut dyn Write,
) -> Result<StreamSummary> {
    let (chunk_size, cc) = header_and_cipher(key, aad, input)?;
    decrypt_chunks(&cc, chunk_size, input, output)
}

fn decrypt_chunks(
    cc: &ChunkCipher,
    chunk_size: u32,
    mut input: &mut dyn Read,
    output: &mut dyn Write,
) -> Result<StreamSummary> {
    let want = chunk_size as usize + TAG_LEN;
    // Untrusted chunk size: start small and let `read_chunk` grow the buffer as ciphertext arrives.
    let mut buf = Zeroizing::new(Vec::with_capacity(want.min(64 << 10)));
    let mut summary = StreamSummary {
        plaintext_len: 0,
        ciphertext_len: HEADER_LEN as u64,
        chunks: 0,
    };
    for index in 0u64.. {
        let (last, carry) =
            read_chunk(&mut input, &mut buf, want).map_err(io_err("reading the ciphertext"))?;
        summary.ciphertext_len += buf.len() as u64;
        let len = cc.open_chunk(index, last, &mut buf)?;
        output
            .write_all(&buf[..len])
            .map_err(io_err("writing the plaintext"))?;
        summary.plaintext_len += len as u64;
        summary.chunks += 1;
        buf.clear();
        if last {
            break;
        }
        buf.extend(carry);
    }
    output.flush().map_err(io_err("flushing the plaintext"))?;
    Ok(summary)
}

fn header_and_cipher(key: &[u8; 32], aad: &[u8], mut input: &mut dyn Read) -> Result<(u32, ChunkCipher)> {
    let mut header = [0u8; HEADER_LEN];
    let n = fill(&mut input, &mut header).map_err(io_err("reading the stream header"))?;
    if n < HEADER_LEN {
        return Err(CryptoError::Stream(format!(
            "truncated: {n} bytes is shorter than the {HEADER_LEN}-byte header"
        )));
    }
    let (chunk_size, suite) = parse(&header)?;
    Ok((chunk_size, ChunkCipher::new(key, suite, &header, aad)))
}

/// The error for chunk `index` when only `len` bytes, too few to hold its tag, arrived for it.
fn truncated(index: u64, len: usize) -> CryptoError {
    CryptoError::Stream(if len == 0 {
        format!(
            "truncated: ends after chunk {} without a final chunk",
            index.saturating_sub(1)
        )
    } else {
        format!("truncated: chunk {index} is {len} bytes, shorter than its tag")
    })
}

impl ChunkCipher {
    /// Authenticates and decrypts chunk `index` (ciphertext then tag) in place; returns the plaintext length.
    /// On error the chunk holds unauthenticated bytes: the caller must not pass them on.
    fn open_chunk(&self, index: u64, last: bool, chunk: &mut [u8]) -> Result<usize> {
        if chunk.len() < TAG_LEN {
            return Err(truncated(index, chunk.len()));
        }
        let split = chunk.len() - TAG_LEN;
        #[cfg(test)]
        if self.open_with_rustcrypto {
            return self.open_chunk_rustcrypto(index, last, chunk).map(|()| split);
        }
        self.key
            .open_in_place(Self::nonce(index, last), Aad::from(&self.aad[..]), chunk)
            .map_err(|_| failed(index))?;
        Ok(split)
    }

    #[cfg(test)]
    fn open_chunk_rustcrypto(&self, index: u64, last: bool, chunk: &mut [u8]) -> Result<()> {
        use chacha20poly1305::aead::{AeadInOut, KeyInit};
        let (body, tag) = chunk.split_at_mut(chunk.len() - TAG_LEN);
        let nonce = Self::nonce_bytes(index, last);
        let (suite, key) = &self.rustcrypto;
        let opened = match suite {
            Suite::ChaCha20Poly1305 => chacha20poly1305::ChaCha20Poly1305::new((&**key).into())
                .decrypt_inout_detached(&nonce.into(), &self.aad, body.into(), (&*tag).try_into().unwrap()),
            Suite::Aes256Gcm => aes_gcm::Aes256Gcm::new((&**key).into()).decrypt_inout_detached(
                &nonce.into(),
                &self.aad,
                body.into(),
                (&*tag).try_into().unwrap(),
            ),
        };
        opened.map_err(|_| failed(index))
    }
}

fn failed(index: u64) -> CryptoError {
    CryptoError::Stream(format!(
        "chunk {index} failed authentication: the stream was tampered with, truncated, reordered \
         or duplicated, or the key or associated data is wrong"
    ))
}

/// Memory the chunk buffers of [`decrypt_parallel`] may use together (three chunks are always allowed,
/// whatever the chunk size).
const PARALLEL_BUFFER_BUDGET: usize = 32 << 20;

/// A chunk read from the input, on its way to a worker.
struct ReadChunk {
    index: u64,
    last: bool,
    buf: Zeroizing<Vec<u8>>,
}

/// A chunk a worker authenticated and decrypted: its plaintext is `buf[..len]`.
struct OpenChunk {
    last: bool,
    buf: Zeroizing<Vec<u8>>,
    len: usize,
}

type Outcome = (u64, Result<OpenChunk>);

/// Decrypts a stream made by [`encrypt`] on `threads` worker threads, plus one that reads `input`. It
/// accepts exactly the streams [`decrypt`] accepts, and refuses the others with the error [`decrypt`]
/// gives (the one for the first bad chunk in stream order).
///
/// Each authenticated chunk's plaintext is passed to `place(offset, plaintext)` on a worker thread, in no
/// particular order (`offset`: where the chunk starts in the plaintext), then to `in_order(plaintext)` on
/// the calling thread, in stream order. Nothing that failed authentication is passed to either. On error,
/// everything both received must be discarded: the chunks before the bad one, and possibly some after
/// it, were passed on. Memory: a few chunks (about 32 MiB at most, but at least three chunks); a hostile
/// header's chunk size costs only the bytes that actually arrive.
pub fn decrypt_parallel(
    key: &[u8; 32],
    aad: &[u8],
    input: &mut (dyn Read + Send),
    threads: usize,
    place: &(dyn Fn(u64, &[u8]) -> io::Result<()> + Sync),
    in_order: &mut dyn FnMut(&[u8]) -> io::Result<()>,
) -> Result<StreamSummary> {
    let (chunk_size, cc) = header_and_cipher(key, aad, input)?;
    let want = chunk_size as usize + TAG_LEN;
    let threads = threads.max(1);
    let buffers = (2 * threads + 2).min((PARALLEL_BUFFER_BUDGET / want).max(3));
    let stop = AtomicBool::new(false);
    // Unbounded, but the reader never has more than `buffers` chunks out: it waits for the calling
    // thread to hand a buffer back before it reads more.
    let (work_tx, work_rx) = mpsc::channel::<ReadChunk>();
    let work_rx = Mutex::new(work_rx);
    let (done_tx, done_rx) = mpsc::channel::<Outcome>();
    let (pool_tx, pool_rx) = mpsc::channel::<Zeroizing<Vec<u8>>>();
    let (cc, stop, work_rx) = (&cc, &stop, &work_rx);
    std::thread::scope(|scope| {
        // Named, for profiles and debuggers. Should one fail to start, those already started end as
        // their channels close.
        let reader_done = done_tx.clone();
        spawn_named(scope, "veil-stream-read", move || {
            read_chunks(input, want, buffers, &pool_rx, &work_tx, &reader_done, stop)
        })?;
        for _ in 0..threads {
            let done = done_tx.clone();
            spawn_named(scope, "veil-stream-open", move || {
                open_chunks(cc, chunk_size, work_rx, &done, place, stop)
            })?;
        }
        drop(done_tx);
        let result = collect(done_rx, pool_tx, in_order);
        // Whatever happened, the other threads end now: they see `stop` or a closed channel.
        stop.store(true, Ordering::Relaxed);
        result
    })
}

fn spawn_named<'scope>(
    scope: &'scope std::thread::Scope<'scope, '_>,
    name: &str,
    f: impl FnOnce() + Send + 'scope,
) -> Result<()> {
    std::thread::Builder::new()
        .name(name.into())
        .spawn_scoped(scope, f)
        .map(drop)
        .map_err(|e| CryptoError::Stream(format!("cannot start a decrypting thread: {e}")))
}

/// The reader: splits `input` into chunks, deciding each one's final flag as [`decrypt`] does.
fn read_chunks(
    mut input: &mut (dyn Read + Send),
    want: usize,
    buffers: usize,
    pool: &mpsc::Receiver<Zeroizing<Vec<u8>>>,
    work: &mpsc::Sender<ReadChunk>,
    done: &mpsc::Sender<Outcome>,
    stop: &AtomicBool,
) {
    let mut carry = None;
    let mut made = 0;
    for index in 0u64.. {
        if stop.load(Ordering::Relaxed) {
            return;
        }
        let mut buf = match pool.try_recv() {
            Ok(buf) => buf,
            Err(_) if made < buffers => {
                made += 1;
                // Untrusted chunk size: start small and let `read_chunk` grow the buffer as ciphertext arrives.
                Zeroizing::new(Vec::with_capacity(want.min(64 << 10)))
            }
            Err(_) => match pool.recv() {
                Ok(buf) => buf,
                Err(_) => return, // the calling thread has finished
            },
        };
        // The buffer still holds its last chunk's plaintext (wiped when it is dropped): it is overwritten,
        // not cleared and zeroed again.
        let have = match carry.take() {
            Some(byte) if buf.is_empty() => {
                buf.push(byte);
                1
            }
            Some(byte) => {
                buf[0] = byte;
                1
            }
            None => 0,
        };
        let (last, next) = match read_chunk_after(&mut input, &mut buf, have, want) {
            Ok(r) => r,
            Err(e) => {
                let _ = done.send((index, Err(io_err("reading the ciphertext")(e))));
                return;
            }
        };
        if buf.len() < TAG_LEN {
            let _ = done.send((index, Err(truncated(index, buf.len()))));
            return;
        }
        carry = next;
        if work.send(ReadChunk { index, last, buf }).is_err() || last {
            return;
        }
    }
}

/// A worker: opens chunks and places their plaintext until the reader is done or the caller stops.
fn open_chunks(
    cc: &ChunkCipher,
    chunk_size: u32,
    work: &Mutex<mpsc::Receiver<ReadChunk>>,
    done: &mpsc::Sender<Outcome>,
    place: &(dyn Fn(u64, &[u8]) -> io::Result<()> + Sync),
    stop: &AtomicBool,
) {
    loop {
        let next = match work.lock() {
            Ok(rx) => rx.recv(),
            Err(_) => return,
        };
        let Ok(ReadChunk { index, last, mut buf }) = next else {
            return; // the reader is done and every chunk is taken
        };
        if stop.load(Ordering::Relaxed) {
            return;
        }
        // A panic in `place` must not leave the calling thread waiting for this chunk forever.
        let opened = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            let len = cc.open_chunk(index, last, &mut buf)?;
            place(index * u64::from(chunk_size), &buf[..len]).map_err(io_err("placing the plaintext"))?;
            Ok(len)
        }))
        .unwrap_or_else(|_| Err(CryptoError::Stream("a decrypting thread panicked".into())));
        if done
            .send((index, opened.map(|len| OpenChunk { last, buf, len })))
            .is_err()
        {
            return;
        }
    }
}

/// The calling thread's part: takes the opened chunks in stream order, hands each to `in_order` and its
/// buffer back to the reader, and stops at the final chunk or the first error.
fn collect(
    done: mpsc::Receiver<Outcome>,
    pool: mpsc::Sender<Zeroizing<Vec<u8>>>,
    in_order: &mut dyn FnMut(&[u8]) -> io::Result<()>,
) -> Result<StreamSummary> {
    let mut summary = StreamSummary {
        plaintext_len: 0,
        ciphertext_len: HEADER_LEN as u64,
        chunks: 0,
    };
    // Chunks opened before their turn: at most the reader's buffers.
    let mut early = BTreeMap::new();
    loop {
        let index = summary.chunks;
        let outcome = match early.remove(&index) {
            Some(o) => o,
            None => match done.recv() {
                Ok((i, o)) if i == index => o,
                Ok((i, o)) => {
                    early.insert(i, o);
                    continue;
                }
                Err(_) => {
                    return Err(CryptoError::Stream(
                        "the decrypting threads stopped before the final chunk".into(),
                    ));
                }
            },
        };
        let chunk = outcome?;
        in_order(&chunk.buf[..chunk.len]).map_err(io_err("writing the plaintext"))?;
        summary.plaintext_len += chunk.len as u64;
        summary.ciphertext_len += (chunk.len + TAG_LEN) as u64;
        summary.chunks += 1;
        if chunk.last {
            return Ok(summary);
        }
        let _ = pool.send(chunk.buf);
    }
}

/// Encrypts a byte slice into a new vector (convenience for small payloads and tests).
pub fn encrypt_to_vec(key: &[u8; 32], aad: &[u8], chunk_size: u32, plaintext: &[u8]) -> Result<Vec<u8>> {
    let mut out = Vec::with_capacity(ciphertext_len(plaintext.len() as u64, chunk_size) as usize);
    encrypt(key, aad, chunk_size, plaintext, &mut out)?;
    Ok(out)
}

/// Decrypts a byte slice into a new vector; nothing is returned unless the whole stream authenticates.
pub fn decrypt_to_vec(key: &[u8; 32], aad: &[u8], ciphertext: &[u8]) -> Result<Zeroizing<Vec<u8>>> {
    let mut out = Zeroizing::new(Vec::new());
    decrypt(key, aad, ciphertext, &mut *out)?;
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    const K: [u8; 32] = [0x42; 32];
    const CS: u32 = 64;

    fn sample(n: usize) -> Vec<u8> {
        (0..n).map(|i| (i * 31 % 251) as u8).collect()
    }

    /// Decrypts with `decrypt_parallel`: what it placed by offset and what it passed in order, which
    /// must agree.
    fn parallel_to_vec(key: &[u8; 32], aad: &[u8], ct: &[u8], threads: usize) -> Result<Vec<u8>> {
        let placed = std::sync::Mutex::new(Vec::new());
        let place = |offset: u64, pt: &[u8]| {
            let mut v = placed.lock().unwrap();
            let end = offset as usize + pt.len();
            if v.len() < end {
                v.resize(end, 0);
            }
            v[offset as usize..end].copy_from_slice(pt);
            Ok(())
        };
        let mut ordered = Vec::new();
        let summary = decrypt_parallel(key, aad, &mut &ct[..], threads, &place, &mut |pt| {
            ordered.extend_from_slice(pt);
            Ok(())
        })?;
        assert_eq!(*placed.lock().unwrap(), ordered);
        assert_eq!(summary.plaintext_len, ordered.len() as u64);
        assert_eq!(summary.ciphertext_len, ct.len() as u64);
        Ok(ordered)
    }

    /// Decrypts with `decrypt` and with `decrypt_parallel` (1, 2 and 5 workers): both must accept the
    /// same plaintext or refuse with the same error.
    fn both(key: &[u8; 32], aad: &[u8], ct: &[u8]) -> Result<Vec<u8>> {
        let sequential = decrypt_to_vec(key, aad, ct).map(|v| v.to_vec());
        for threads in [1, 2, 5] {
            let parallel = parallel_to_vec(key, aad, ct, threads);
            match (&sequential, &parallel) {
                (Ok(a), Ok(b)) => assert_eq!(a, b),
                (Err(a), Err(b)) => assert_eq!(a.to_string(), b.to_string()),
                (a, b) => panic!("sequential {a:?}, parallel with {threads} threads {b:?}"),
            }
        }
        sequential
    }

    fn chunks_of(ct: &[u8]) -> (Vec<u8>, Vec<Vec<u8>>) {
        let (h, body) = ct.split_at(HEADER_LEN);
        (
            h.to_vec(),
            body.chunks(CS as usize + TAG_LEN).map(|c| c.to_vec()).collect(),
        )
    }

    #[test]
    fn round_trips_at_every_boundary() {
        for n in [0, 1, 63, 64, 65, 128, 129, 1000] {
            let pt = sample(n);
            let ct = encrypt_to_vec(&K, b"aad", CS, &pt).unwrap();
            assert_eq!(ct.len() as u64, ciphertext_len(n as u64, CS), "length for {n}");
            assert_eq!(both(&K, b"aad", &ct).unwrap(), pt, "round trip for {n}");
        }
    }

    #[test]
    fn reused_chunk_buffers_pass_on_no_stale_bytes() {
        // Chunks above 64 KiB grow each buffer as ciphertext arrives before it is reused, and the
        // reader overwrites a reused buffer's old bytes instead of zeroing them: the plaintext must
        // still be exactly the stream's, at every length of the final chunk.
        let cs = (64 << 10) + 7;
        for n in [11 * cs as usize, 11 * cs as usize + 1, 11 * cs as usize + 5000] {
            let pt = sample(n);
            let ct = encrypt_to_vec(&K, b"", cs, &pt).unwrap();
            assert_eq!(both(&K, b"", &ct).unwrap(), pt, "{n} bytes");
        }
    }

    #[test]
    fn one_byte_reads_work() {
        struct Trickle<'a>(&'a [u8]);
        impl Read for Trickle<'_> {
            fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
                if self.0.is_empty() || buf.is_empty() {
                    return Ok(0);
                }
                buf[0] = self.0[0];
                self.0 = &self.0[1..];
                Ok(1)
            }
        }
        let pt = sample(300);
        let mut ct = Vec::new();
        encrypt(&K, b"", CS, Trickle(&pt), &mut ct).unwrap();
        let mut out = Vec::new();
        decrypt(&K, b"", Trickle(&ct), &mut out).unwrap();
        assert_eq!(out, pt);
        let mut out = Vec::new();
        decrypt_parallel(&K, b"", &mut Trickle(&ct), 2, &|_, _| Ok(()), &mut |p| {
            out.extend_from_slice(p);
            Ok(())
        })
        .unwrap();
        assert_eq!(out, pt);
    }

    #[test]
    fn parallel_places_every_chunk_once_and_stops_on_errors() {
        let pt = sample(64 * 40 + 5);
        let ct = encrypt_to_vec(&K, b"", CS, &pt).unwrap();
        let seen = std::sync::Mutex::new(Vec::new());
        let mut order = Vec::new();
        decrypt_parallel(
            &K,
            b"",
            &mut &ct[..],
            3,
            &|offset, p| {
                seen.lock().unwrap().push((offset, p.len()));
                Ok(())
            },
            &mut |p| {
                order.push(p.len());
                Ok(())
            },
        )
        .unwrap();
        let mut seen = seen.into_inner().unwrap();
        seen.sort();
        let expected: Vec<(u64, usize)> = (0..41).map(|i| (i * 64, if i == 40 { 5 } else { 64 })).collect();
        assert_eq!(seen, expected);
        assert_eq!(order, expected.iter().map(|e| e.1).collect::<Vec<_>>());

        // An error from either callback ends it with that error, naming what was being done.
        let err = decrypt_parallel(
            &K,
            b"",
            &mut &ct[..],
            2,
            &|offset, _| {
                if offset == 64 * 7 {
                    Err(io::Error::other("full"))
                } else {
                    Ok(())
                }
            },
            &mut |_| Ok(()),
        )
        .unwrap_err();
        assert!(err.to_string().contains("placing the plaintext"), "{err}");
        let mut n = 0;
        let err = decrypt_parallel(&K, b"", &mut &ct[..], 2, &|_, _| Ok(()), &mut |_| {
            n += 1;
            if n == 3 {
                Err(io::Error::other("no"))
            } else {
                Ok(())
            }
        })
        .unwrap_err();
        assert!(err.to_string().contains("writing the plaintext"), "{err}");
        // A panicking callback is an error, not a hang.
        let err = decrypt_parallel(
            &K,
            b"",
            &mut &ct[..],
            2,
            &|offset, _| {
                assert_ne!(offset, 64 * 5, "boom");
                Ok(())
            },
            &mut |_| Ok(()),
        )
        .unwrap_err();
        assert!(err.to_string().contains("panicked"), "{err}");
    }

    #[test]
    fn wrong_key_and_aad_are_rejected() {
        let ct = encrypt_to_vec(&K, b"aad", CS, &sample(100)).unwrap();
        assert!(
            both(&[1; 32], b"aad", &ct)
                .unwrap_err()
                .to_string()
                .contains("chunk 0 failed")
        );
        assert!(
            both(&K, b"other", &ct)
                .unwrap_err()
                .to_string()
                .contains("chunk 0 failed")
        );
    }

    #[test]
    fn every_flipped_byte_is_rejected() {
        let ct = encrypt_to_vec(&K, b"", CS, &sample(150)).unwrap();
        for i in 0..ct.len() {
            let mut t = ct.clone();
            t[i] ^= 0x04;
            assert!(both(&K, b"", &t).is_err(), "flip at {i} accepted");
        }
    }

    #[test]
    fn truncation_at_every_length_is_rejected() {
        let ct = encrypt_to_vec(&K, b"", CS, &sample(200)).unwrap();
        for n in 0..ct.len() {
            let err = both(&K, b"", &ct[..n]).unwrap_err().to_string();
            assert!(
                err.contains("truncated") || err.contains("failed authentication"),
                "{n}: {err}"
            );
        }
        // Cut exactly at a chunk boundary: every remaining chunk is intact, but no final chunk came.
        let at_boundary = HEADER_LEN + 2 * (CS as usize + TAG_LEN);
        let err = both(&K, b"", &ct[..at_boundary]).unwrap_err().to_string();
        assert!(err.contains("chunk 1 failed"), "{err}");
    }

    #[test]
    fn reorder_duplicate_drop_and_extend_are_rejected() {
        let ct = encrypt_to_vec(&K, b"", CS, &sample(250)).unwrap();
        let (h, c) = chunks_of(&ct);
        assert_eq!(c.len(), 4);
        let join = |parts: &[&Vec<u8>]| {
            let mut v = h.clone();
            for p in parts {
                v.extend_from_slice(p);
            }
            v
        };
        let reordered = join(&[&c[1], &c[0], &c[2], &c[3]]);
        assert!(
            both(&K, b"", &reordered)
                .unwrap_err()
                .to_string()
                .contains("chunk 0 failed")
        );
        let duplicated = join(&[&c[0], &c[0], &c[1], &c[2], &c[3]]);
        assert!(
            both(&K, b"", &duplicated)
                .unwrap_err()
                .to_string()
                .contains("chunk 1 failed")
        );
        let dropped = join(&[&c[0], &c[2], &c[3]]);
        assert!(
            both(&K, b"", &dropped)
                .unwrap_err()
                .to_string()
                .contains("chunk 1 failed")
        );
        let mut extended = ct.clone();
        extended.extend_from_slice(&c[0]);
        assert!(both(&K, b"", &extended).is_err());
        let mut trailing = ct.clone();
        trailing.push(0);
        assert!(both(&K, b"", &trailing).is_err());
        // A chunk spliced in from another stream under the same key is rejected (different salt).
        let other = encrypt_to_vec(&K, b"", CS, &sample(250)).unwrap();
        let (_, oc) = chunks_of(&other);
        let spliced = join(&[&c[0], &oc[1], &c[2], &c[3]]);
        assert!(
            both(&K, b"", &spliced)
                .unwrap_err()
                .to_string()
                .contains("chunk 1 failed")
        );
    }

    #[test]
    fn a_huge_announced_chunk_costs_only_what_arrives() {
        let mut buf = Vec::new();
        let (last, carry) =
            read_chunk(&mut &[1u8; 10][..], &mut buf, MAX_CHUNK_SIZE as usize + TAG_LEN).unwrap();
        assert!(last && carry.is_none());
        assert_eq!(buf, [1u8; 10]);
        assert!(
            buf.capacity() < 1 << 20,
            "allocated {} bytes for 10",
            buf.capacity()
        );

        let mut header = encrypt_to_vec(&K, b"", CS, b"")
            .unwrap()
            .into_iter()
            .take(HEADER_LEN)
            .collect::<Vec<_>>();
        header[9..13].copy_from_slice(&MAX_CHUNK_SIZE.to_be_bytes());
        header.extend_from_slice(&[0u8; 40]);
        assert!(
            both(&K, b"", &header)
                .unwrap_err()
                .to_string()
                .contains("chunk 0 failed")
        );
    }

    /// Encrypts with `suite` and a fixed salt.
    fn encrypt_as(suite: Suite, aad: &[u8], chunk_size: u32, plaintext: &[u8]) -> Vec<u8> {
        let mut ct = Vec::new();
        encrypt_with_salt(
            &K,
            suite,
            aad,
            chunk_size,
            [7u8; 32],
            &mut &plaintext[..],
            &mut ct,
        )
        .unwrap();
        ct
    }

    /// Both versions' bytes are pinned: a version-1 stream sealed by an earlier build still opens, and
    /// the version-2 format cannot change unnoticed.
    #[test]
    fn pinned_vectors() {
        let pt = b"hello, veil streams";
        let v1 = "5645494c5354524d01000000100707070707070707070707070707070707070707070707070707070707070707a41bf708ff2f7c58ba1c94668fcd76ca5ccf984e5760b94af782989bbe355c4ee794cb4fec8d3319259abc38d667d25a429668";
        assert_eq!(
            hex::encode(encrypt_as(Suite::ChaCha20Poly1305, b"aad", 16, pt)),
            v1
        );
        assert_eq!(both(&K, b"aad", &hex::decode(v1).unwrap()).unwrap(), pt);
        let v2 = encrypt_as(Suite::Aes256Gcm, b"aad", 16, pt);
        assert_eq!(
            hex::encode(&v2),
            "5645494c5354524d02000000100707070707070707070707070707070707070707070707070707070707070707d69aca0d90aa432f2011fc2b3d98be34879caa79d9177f2671c0287aabf532d6e99279fcb30939911f8c030d73e8354f5e217f"
        );
        assert_eq!(both(&K, b"aad", &v2).unwrap(), pt);
        // `encrypt` writes version 2; a stream sealed with one version's cipher under the other's
        // version byte does not open (the version is authenticated, and each has its own key).
        assert_eq!(encrypt_to_vec(&K, b"aad", 16, pt).unwrap()[8], 2);
        let mut relabelled = hex::decode(v1).unwrap();
        relabelled[8] = 2;
        assert!(
            both(&K, b"aad", &relabelled)
                .unwrap_err()
                .to_string()
                .contains("chunk 0 failed")
        );
    }

    /// Decrypts sequentially, opening every chunk with RustCrypto instead of AWS-LC.
    fn decrypt_rustcrypto(key: &[u8; 32], aad: &[u8], ct: &[u8]) -> Result<Vec<u8>> {
        let mut input = ct;
        let (chunk_size, mut cc) = header_and_cipher(key, aad, &mut input)?;
        cc.open_with_rustcrypto = true;
        let mut out = Vec::new();
        decrypt_chunks(&cc, chunk_size, &mut input, &mut out)?;
        Ok(out)
    }

    /// AWS-LC (which seals and opens) and RustCrypto's independent implementations accept the same
    /// streams of both versions with the same plaintext and refuse the same ones with the same error:
    /// every flipped byte, every truncation, a wrong key or associated data.
    #[test]
    fn aws_lc_and_rustcrypto_open_and_refuse_alike() {
        let agree = |key: &[u8; 32], aad: &[u8], ct: &[u8]| {
            let rc = decrypt_rustcrypto(key, aad, ct);
            let aws = both(key, aad, ct);
            match (&rc, &aws) {
                (Ok(a), Ok(b)) => assert_eq!(a, b),
                (Err(a), Err(b)) => assert_eq!(a.to_string(), b.to_string()),
                (a, b) => panic!("RustCrypto {a:?}, AWS-LC {b:?}"),
            }
            aws.is_ok()
        };
        for suite in [Suite::ChaCha20Poly1305, Suite::Aes256Gcm] {
            for n in [0, 1, 63, 64, 65, 150] {
                let pt = sample(n);
                let ct = encrypt_as(suite, b"aad", CS, &pt);
                assert!(agree(&K, b"aad", &ct), "{suite:?}, {n} bytes refused");
                assert!(!agree(&[1; 32], b"aad", &ct));
                assert!(!agree(&K, b"aab", &ct));
                for i in 0..ct.len() {
                    for bit in [0x01, 0x80] {
                        let mut t = ct.clone();
                        t[i] ^= bit;
                        assert!(
                            !agree(&K, b"aad", &t),
                            "{suite:?}, {n} bytes: flip {bit:#x} at {i} accepted"
                        );
                    }
                }
                for cut in 0..ct.len() {
                    assert!(
                        !agree(&K, b"aad", &ct[..cut]),
                        "{suite:?}, {n} bytes: cut at {cut} accepted"
                    );
                }
            }
            // One full-size chunk (the final one: the plaintext ends at its end): both open it to the
            // same plaintext, and both refuse it under another index or final flag.
            let mut input: &[u8] = &encrypt_as(suite, b"", 1 << 16, &sample(1 << 16));
            let (_, cc) = header_and_cipher(&K, b"", &mut input).unwrap();
            let chunk = &input[..(1 << 16) + TAG_LEN];
            let (mut a, mut b) = (chunk.to_vec(), chunk.to_vec());
            assert_eq!(cc.open_chunk(0, true, &mut a).unwrap(), 1 << 16);
            cc.open_chunk_rustcrypto(0, true, &mut b).unwrap();
            assert_eq!(a[..1 << 16], b[..1 << 16]);
            assert_eq!(a[..1 << 16], sample(1 << 16)[..]);
            for (index, last) in [(0, false), (1, true)] {
                let (mut a, mut b) = (chunk.to_vec(), chunk.to_vec());
                assert_eq!(
                    cc.open_chunk(index, last, &mut a).unwrap_err().to_string(),
                    failed(index).to_string()
                );
                assert!(cc.open_chunk_rustcrypto(index, last, &mut b).is_err());
            }
        }
    }

    /// Not a check: the time to open one 1 MiB chunk with each library. Run with
    /// `cargo test --release -p veil-crypto -- --ignored --nocapture chunk_open_speed`.
    #[test]
    #[ignore]
    fn chunk_open_speed() {
        let size = DEFAULT_CHUNK_SIZE as usize;
        for suite in [Suite::ChaCha20Poly1305, Suite::Aes256Gcm] {
            let ct = encrypt_as(suite, b"", DEFAULT_CHUNK_SIZE, &sample(size + 1));
            let mut input = &ct[..];
            let (_, cc) = header_and_cipher(&K, b"", &mut input).unwrap();
            let chunk = &input[..size + TAG_LEN];
            let mut buf = chunk.to_vec();
            let rounds = 200;
            for (name, rustcrypto) in [
                ("RustCrypto", true),
                ("AWS-LC", false),
                ("RustCrypto", true),
                ("AWS-LC", false),
            ] {
                let started = std::time::Instant::now();
                for _ in 0..rounds {
                    buf.copy_from_slice(chunk);
                    if rustcrypto {
                        cc.open_chunk_rustcrypto(0, false, &mut buf).unwrap();
                    } else {
                        cc.open_chunk(0, false, &mut buf).unwrap();
                    }
                }
                let per = started.elapsed().as_secs_f64() / f64::from(rounds);
                eprintln!(
                    "{suite:?}, {name:>10}: {:.3} ms per 1 MiB chunk ({:.0} MiB/s, copy included)",
                    per * 1e3,
                    1.0 / per
                );
            }
        }
    }

    #[test]
    fn bad_headers_are_rejected_clearly() {
        let ct = encrypt_to_vec(&K, b"", CS, b"x").unwrap();
        let mut m = ct.clone();
        m[0] = b'X';
        assert!(both(&K, b"", &m).unwrap_err().to_string().contains("bad magic"));
        let mut v = ct.clone();
        v[8] = 9;
        assert!(matches!(
            both(&K, b"", &v),
            Err(CryptoError::UnsupportedVersion { found: 9, .. })
        ));
        let mut c = ct.clone();
        c[9..13].copy_from_slice(&u32::MAX.to_be_bytes());
        assert!(both(&K, b"", &c).unwrap_err().to_string().contains("outside"));
        assert!(encrypt_to_vec(&K, b"", 1, b"x").is_err());
    }
}
