//! Chunked streaming AEAD for large payloads (model bundles): the STREAM construction (Hoang, Reyhanitabar,
//! Rogaway, Vizár 2015) over ChaCha20-Poly1305.
//!
//! ```text
//! header  = "VEILSTRM" | version (1) = 1 | chunk size (u32 BE) | salt (32 random bytes)
//! chunk i = ChaCha20-Poly1305(k, nonce = i (u64 BE) | final flag (1) | 0 0 0, aad = header | aad, plaintext_i)
//! k       = HKDF-SHA256(ikm = data key, salt = salt, info = "veil/v1/stream-chunk-key")
//! ```
//!
//! Every chunk but the last holds exactly `chunk size` bytes of plaintext; the last one (possibly empty)
//! carries the final flag. The chunk index and the final flag are in the nonce, and the header is in every
//! chunk's associated data, so truncation (no final chunk), reordering and duplication (wrong index),
//! extension (data after the final chunk), header changes and tampering are all detected. Encryption and
//! decryption stream from a reader to a writer holding one chunk in memory. A decrypting writer receives
//! only authenticated chunks, but a stream that fails part-way has already written its earlier chunks:
//! callers must discard the output on error.

use std::io::{self, Read, Write};

use chacha20poly1305::aead::{AeadInOut, KeyInit};
use chacha20poly1305::{ChaCha20Poly1305, Nonce, Tag};
use hkdf::Hkdf;
use sha2::Sha256;
use zeroize::Zeroizing;

use crate::{CryptoError, Result};

pub const MAGIC: &[u8; 8] = b"VEILSTRM";
pub const VERSION: u8 = 1;
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

struct ChunkCipher {
    cipher: ChaCha20Poly1305,
    aad: Vec<u8>,
}

impl ChunkCipher {
    fn new(key: &[u8; 32], header: &[u8; HEADER_LEN], aad: &[u8]) -> Self {
        let salt = &header[13..];
        let mut k = Zeroizing::new([0u8; 32]);
        if Hkdf::<Sha256>::new(Some(salt), key)
            .expand(b"veil/v1/stream-chunk-key", k.as_mut())
            .is_err()
        {
            unreachable!("HKDF-SHA256 can always expand 32 bytes");
        }
        let mut full_aad = Vec::with_capacity(HEADER_LEN + aad.len());
        full_aad.extend_from_slice(header);
        full_aad.extend_from_slice(aad);
        Self {
            cipher: ChaCha20Poly1305::new((&*k).into()),
            aad: full_aad,
        }
    }

    fn nonce(index: u64, last: bool) -> Nonce {
        let mut n = [0u8; 12];
        n[..8].copy_from_slice(&index.to_be_bytes());
        n[8] = u8::from(last);
        Nonce::from(n)
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
    if buf.capacity() >= want {
        buf.resize(want, 0);
        let n = fill(r, &mut buf[have..])?;
        buf.truncate(have + n);
    } else {
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
    aad: &[u8],
    chunk_size: u32,
    salt: [u8; 32],
    mut input: &mut dyn Read,
    output: &mut dyn Write,
) -> Result<StreamSummary> {
    let mut header = [0u8; HEADER_LEN];
    header[..8].copy_from_slice(MAGIC);
    header[8] = VERSION;
    header[9..13].copy_from_slice(&chunk_size.to_be_bytes());
    header[13..].copy_from_slice(&salt);
    let cc = ChunkCipher::new(key, &header, aad);
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
            .cipher
            .encrypt_inout_detached(
                &ChunkCipher::nonce(index, last),
                &cc.aad,
                buf.as_mut_slice().into(),
            )
            .map_err(|_| CryptoError::Stream("chunk encryption failed".into()))?;
        output
            .write_all(&buf)
            .map_err(io_err("writing a ciphertext chunk"))?;
        output
            .write_all(&tag)
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
    if &header[..8] != MAGIC {
        return Err(CryptoError::Stream(
            "is not a Veil encrypted stream (bad magic)".into(),
        ));
    }
    if header[8] != VERSION {
        return Err(CryptoError::UnsupportedVersion {
            what: "encrypted stream",
            found: header[8],
            supported: VERSION,
        });
    }
    let chunk_size = u32::from_be_bytes([header[9], header[10], header[11], header[12]]);
    if !(MIN_CHUNK_SIZE..=MAX_CHUNK_SIZE).contains(&chunk_size) {
        return Err(CryptoError::Stream(format!(
            "header's chunk size {chunk_size} is outside {MIN_CHUNK_SIZE}..={MAX_CHUNK_SIZE}"
        )));
    }
    Ok(chunk_size)
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
    mut input: &mut dyn Read,
    output: &mut dyn Write,
) -> Result<StreamSummary> {
    let mut header = [0u8; HEADER_LEN];
    let n = fill(&mut input, &mut header).map_err(io_err("reading the stream header"))?;
    if n < HEADER_LEN {
        return Err(CryptoError::Stream(format!(
            "truncated: {n} bytes is shorter than the {HEADER_LEN}-byte header"
        )));
    }
    let chunk_size = parse_header(&header)?;
    let cc = ChunkCipher::new(key, &header, aad);
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
        if buf.len() < TAG_LEN {
            return Err(CryptoError::Stream(if buf.is_empty() {
                format!(
                    "truncated: ends after chunk {} without a final chunk",
                    index.saturating_sub(1)
                )
            } else {
                format!(
                    "truncated: chunk {index} is {} bytes, shorter than its tag",
                    buf.len()
                )
            }));
        }
        summary.ciphertext_len += buf.len() as u64;
        let split = buf.len() - TAG_LEN;
        let tag = Tag::try_from(&buf[split..])
            .map_err(|_| CryptoError::Stream(format!("chunk {index}: bad tag length")))?;
        buf.truncate(split);
        cc.cipher
            .decrypt_inout_detached(
                &ChunkCipher::nonce(index, last),
                &cc.aad,
                buf.as_mut_slice().into(),
                &tag,
            )
            .map_err(|_| {
                CryptoError::Stream(format!(
                    "chunk {index} failed authentication: the stream was tampered with, truncated, reordered \
                     or duplicated, or the key or associated data is wrong"
                ))
            })?;
        output.write_all(&buf).map_err(io_err("writing the plaintext"))?;
        summary.plaintext_len += buf.len() as u64;
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
            assert_eq!(
                &*decrypt_to_vec(&K, b"aad", &ct).unwrap(),
                &pt,
                "round trip for {n}"
            );
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
    }

    #[test]
    fn wrong_key_and_aad_are_rejected() {
        let ct = encrypt_to_vec(&K, b"aad", CS, &sample(100)).unwrap();
        assert!(
            decrypt_to_vec(&[1; 32], b"aad", &ct)
                .unwrap_err()
                .to_string()
                .contains("chunk 0 failed")
        );
        assert!(
            decrypt_to_vec(&K, b"other", &ct)
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
            assert!(decrypt_to_vec(&K, b"", &t).is_err(), "flip at {i} accepted");
        }
    }

    #[test]
    fn truncation_at_every_length_is_rejected() {
        let ct = encrypt_to_vec(&K, b"", CS, &sample(200)).unwrap();
        for n in 0..ct.len() {
            let err = decrypt_to_vec(&K, b"", &ct[..n]).unwrap_err().to_string();
            assert!(
                err.contains("truncated") || err.contains("failed authentication"),
                "{n}: {err}"
            );
        }
        // Cut exactly at a chunk boundary: every remaining chunk is intact, but no final chunk came.
        let at_boundary = HEADER_LEN + 2 * (CS as usize + TAG_LEN);
        let err = decrypt_to_vec(&K, b"", &ct[..at_boundary])
            .unwrap_err()
            .to_string();
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
            decrypt_to_vec(&K, b"", &reordered)
                .unwrap_err()
                .to_string()
                .contains("chunk 0 failed")
        );
        let duplicated = join(&[&c[0], &c[0], &c[1], &c[2], &c[3]]);
        assert!(
            decrypt_to_vec(&K, b"", &duplicated)
                .unwrap_err()
                .to_string()
                .contains("chunk 1 failed")
        );
        let dropped = join(&[&c[0], &c[2], &c[3]]);
        assert!(
            decrypt_to_vec(&K, b"", &dropped)
                .unwrap_err()
                .to_string()
                .contains("chunk 1 failed")
        );
        let mut extended = ct.clone();
        extended.extend_from_slice(&c[0]);
        assert!(decrypt_to_vec(&K, b"", &extended).is_err());
        let mut trailing = ct.clone();
        trailing.push(0);
        assert!(decrypt_to_vec(&K, b"", &trailing).is_err());
        // A chunk spliced in from another stream under the same key is rejected (different salt).
        let other = encrypt_to_vec(&K, b"", CS, &sample(250)).unwrap();
        let (_, oc) = chunks_of(&other);
        let spliced = join(&[&c[0], &oc[1], &c[2], &c[3]]);
        assert!(
            decrypt_to_vec(&K, b"", &spliced)
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
            decrypt_to_vec(&K, b"", &header)
                .unwrap_err()
                .to_string()
                .contains("chunk 0 failed")
        );
    }

    #[test]
    fn pinned_vector() {
        let mut ct = Vec::new();
        encrypt_with_salt(
            &K,
            b"aad",
            16,
            [7u8; 32],
            &mut &b"hello, veil streams"[..],
            &mut ct,
        )
        .unwrap();
        assert_eq!(
            hex::encode(&ct),
            "5645494c5354524d01000000100707070707070707070707070707070707070707070707070707070707070707a41bf708ff2f7c58ba1c94668fcd76ca5ccf984e5760b94af782989bbe355c4ee794cb4fec8d3319259abc38d667d25a429668"
        );
        assert_eq!(&*decrypt_to_vec(&K, b"aad", &ct).unwrap(), b"hello, veil streams");
    }

    #[test]
    fn bad_headers_are_rejected_clearly() {
        let ct = encrypt_to_vec(&K, b"", CS, b"x").unwrap();
        let mut m = ct.clone();
        m[0] = b'X';
        assert!(
            decrypt_to_vec(&K, b"", &m)
                .unwrap_err()
                .to_string()
                .contains("bad magic")
        );
        let mut v = ct.clone();
        v[8] = 9;
        assert!(matches!(
            decrypt_to_vec(&K, b"", &v),
            Err(CryptoError::UnsupportedVersion { found: 9, .. })
        ));
        let mut c = ct.clone();
        c[9..13].copy_from_slice(&u32::MAX.to_be_bytes());
        assert!(
            decrypt_to_vec(&K, b"", &c)
                .unwrap_err()
                .to_string()
                .contains("outside")
        );
        assert!(encrypt_to_vec(&K, b"", 1, b"x").is_err());
    }
}
