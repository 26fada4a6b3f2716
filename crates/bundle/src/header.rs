//! The bundle header: versioned, length-prefixed, authenticated as the stream's associated data.
//!
//! ```text
//! header = "VEILBNDL" | version (1) = 1 | body length (u16 BE) | body
//! body   = format length (u8) | format (ASCII, e.g. "gguf") | plaintext size (u64 BE) | chunk size (u32 BE)
//! ```

use std::fmt;
use std::io::Read;

use veil_crypto::stream::{MAX_CHUNK_SIZE, MIN_CHUNK_SIZE};

use crate::{BundleError, Result};

pub const MAGIC: &[u8; 8] = b"VEILBNDL";
pub const VERSION: u8 = 1;
/// A longer header body is refused before it is read.
pub const MAX_BODY_LEN: u16 = 1024;
const PREFIX_LEN: usize = 8 + 1 + 2;

/// What a bundle holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Format {
    /// A GGUF model file (llama.cpp).
    Gguf,
}

impl Format {
    pub const ALL: &[Format] = &[Format::Gguf];

    pub fn as_str(self) -> &'static str {
        match self {
            Format::Gguf => "gguf",
        }
    }

    pub fn parse(name: &str) -> Result<Self> {
        Self::ALL
            .iter()
            .copied()
            .find(|f| f.as_str() == name)
            .ok_or_else(|| BundleError::UnknownFormat {
                found: name.chars().take(64).collect(),
                known: Self::ALL
                    .iter()
                    .map(|f| f.as_str())
                    .collect::<Vec<_>>()
                    .join(", "),
            })
    }
}

impl fmt::Display for Format {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A parsed bundle header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BundleHeader {
    pub format: Format,
    /// The model's size in bytes.
    pub plaintext_len: u64,
    /// The streaming AEAD's chunk size.
    pub chunk_size: u32,
}

impl BundleHeader {
    /// The header's bytes (what is written in front of the stream and bound as its associated data).
    pub fn encode(&self) -> Vec<u8> {
        let format = self.format.as_str().as_bytes();
        let body_len = 1 + format.len() + 8 + 4;
        let mut out = Vec::with_capacity(PREFIX_LEN + body_len);
        out.extend_from_slice(MAGIC);
        out.push(VERSION);
        // Both lengths are small constants of this build (the format names are a few ASCII letters).
        out.extend_from_slice(&(body_len as u16).to_be_bytes());
        out.push(format.len() as u8);
        out.extend_from_slice(format);
        out.extend_from_slice(&self.plaintext_len.to_be_bytes());
        out.extend_from_slice(&self.chunk_size.to_be_bytes());
        out
    }

    /// Reads a header from the front of a bundle; returns it and its exact bytes.
    pub fn read_from(r: &mut impl Read) -> Result<(Self, Vec<u8>)> {
        let mut prefix = [0u8; PREFIX_LEN];
        let n = fill(r, &mut prefix)?;
        if n < MAGIC.len() || &prefix[..MAGIC.len()] != MAGIC {
            return Err(BundleError::NotABundle(if n < MAGIC.len() {
                format!("{n} bytes is too short to hold the \"VEILBNDL\" magic")
            } else {
                "it does not start with \"VEILBNDL\"".into()
            }));
        }
        if n > 8 && prefix[8] != VERSION {
            return Err(BundleError::UnsupportedVersion {
                found: prefix[8],
                supported: VERSION,
            });
        }
        if n < PREFIX_LEN {
            return Err(BundleError::Malformed(format!("truncated after {n} bytes")));
        }
        let body_len = u16::from_be_bytes([prefix[9], prefix[10]]);
        if body_len > MAX_BODY_LEN {
            return Err(BundleError::Malformed(format!(
                "header body of {body_len} bytes is longer than the {MAX_BODY_LEN} allowed"
            )));
        }
        let mut bytes = prefix.to_vec();
        bytes.resize(PREFIX_LEN + body_len as usize, 0);
        let got = fill(r, &mut bytes[PREFIX_LEN..])?;
        if got < body_len as usize {
            return Err(BundleError::Malformed(format!(
                "truncated: the header body has {got} of its {body_len} bytes"
            )));
        }
        let header = Self::parse_body(&bytes[PREFIX_LEN..])?;
        Ok((header, bytes))
    }

    /// Parses a whole header from bytes (it must be exactly one header).
    pub fn decode(bytes: &[u8]) -> Result<Self> {
        let (h, raw) = Self::read_from(&mut &bytes[..])?;
        if raw.len() != bytes.len() {
            return Err(BundleError::Malformed(format!(
                "{} bytes follow the header",
                bytes.len() - raw.len()
            )));
        }
        Ok(h)
    }

    fn parse_body(body: &[u8]) -> Result<Self> {
        let bad = |why: &str| BundleError::Malformed(why.to_owned());
        let (&flen, rest) = body
            .split_first()
            .ok_or_else(|| bad("the header body is empty"))?;
        let flen = flen as usize;
        if rest.len() != flen + 8 + 4 {
            return Err(BundleError::Malformed(format!(
                "header body is {} bytes; a version-1 body with a {flen}-byte format name has {}",
                body.len(),
                1 + flen + 12
            )));
        }
        let (fname, rest) = rest.split_at(flen);
        let fname = std::str::from_utf8(fname).map_err(|_| bad("the format name is not text"))?;
        let format = Format::parse(fname)?;
        let (len, cs) = rest.split_at(8);
        let plaintext_len = u64::from_be_bytes(len.try_into().map_err(|_| bad("size"))?);
        let chunk_size = u32::from_be_bytes(cs.try_into().map_err(|_| bad("chunk size"))?);
        if !(MIN_CHUNK_SIZE..=MAX_CHUNK_SIZE).contains(&chunk_size) {
            return Err(BundleError::Malformed(format!(
                "chunk size {chunk_size} is outside {MIN_CHUNK_SIZE}..={MAX_CHUNK_SIZE}"
            )));
        }
        Ok(Self {
            format,
            plaintext_len,
            chunk_size,
        })
    }
}

/// Reads until `buf` is full or the reader ends; returns the bytes read.
pub(crate) fn fill(r: &mut impl Read, buf: &mut [u8]) -> Result<usize> {
    veil_crypto::stream::read_full(r, buf).map_err(|source| BundleError::Io {
        context: "cannot read the bundle".into(),
        source,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> BundleHeader {
        BundleHeader {
            format: Format::Gguf,
            plaintext_len: 0x0102_0304_0506,
            chunk_size: 1 << 20,
        }
    }

    #[test]
    fn pinned_encoding() {
        // Pinned: a change of the header encoding must be a new version, not an accident.
        assert_eq!(
            hex::encode(sample().encode()),
            concat!(
                "5645494c424e444c", // "VEILBNDL"
                "01",               // version
                "0011",             // body length 17
                "04",               // format length
                "67677566",         // "gguf"
                "0000010203040506", // plaintext size
                "00100000",         // chunk size 1 MiB
            )
        );
        assert_eq!(BundleHeader::decode(&sample().encode()).unwrap(), sample());
    }

    #[test]
    fn bad_headers_are_named() {
        let good = sample().encode();
        let err = |b: &[u8]| BundleHeader::decode(b).unwrap_err();
        assert!(matches!(
            err(b"GGUF\x03\x00\x00\x00more bytes here"),
            BundleError::NotABundle(_)
        ));
        assert!(matches!(err(b"VEIL"), BundleError::NotABundle(_)));
        let mut v = good.clone();
        v[8] = 2;
        assert!(matches!(
            err(&v),
            BundleError::UnsupportedVersion {
                found: 2,
                supported: 1
            }
        ));
        let mut f = good.clone();
        f[12..16].copy_from_slice(b"onnx");
        let e = err(&f);
        assert!(
            matches!(&e, BundleError::UnknownFormat { found, .. } if found == "onnx"),
            "{e}"
        );
        assert!(e.to_string().contains("known: gguf"));
        for n in 0..good.len() {
            assert!(
                BundleHeader::decode(&good[..n]).is_err(),
                "truncated to {n} accepted"
            );
        }
        let mut long = good.clone();
        long[9..11].copy_from_slice(&u16::MAX.to_be_bytes());
        assert!(err(&long).to_string().contains("longer than"));
        let mut cs = good.clone();
        let l = cs.len();
        cs[l - 4..].copy_from_slice(&1u32.to_be_bytes());
        assert!(err(&cs).to_string().contains("chunk size 1"));
        let mut extra = good.clone();
        extra.push(0);
        assert!(matches!(err(&extra), BundleError::Malformed(_)));
    }
}
