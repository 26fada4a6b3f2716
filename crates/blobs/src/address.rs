//! Content addresses: `sha256:<64 lowercase hex digits>` of the stored bytes.

use std::fmt;
use std::str::FromStr;

use sha2::{Digest, Sha256};

use crate::{BlobError, Result};

/// The prefix of every address's text form.
pub const PREFIX: &str = "sha256:";

/// A blob's content address: the SHA-256 of its bytes (for a bundle, of its ciphertext).
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct BlobAddress([u8; 32]);

impl BlobAddress {
    pub const fn from_digest(digest: [u8; 32]) -> Self {
        Self(digest)
    }

    /// The address of `bytes`.
    pub fn of(bytes: &[u8]) -> Self {
        Self(Sha256::digest(bytes).into())
    }

    pub fn digest(&self) -> &[u8; 32] {
        &self.0
    }

    /// The 64 lowercase hex digits, without the `sha256:` prefix.
    pub fn hex(&self) -> String {
        hex::encode(self.0)
    }

    /// Parses `sha256:<64 hex digits>` (upper-case digits are accepted; [`fmt::Display`] writes lower case).
    pub fn parse(input: &str) -> Result<Self> {
        let bad = |reason: String| BlobError::BadAddress {
            input: input.chars().take(100).collect(),
            reason,
        };
        let Some(digits) = input.strip_prefix(PREFIX) else {
            return Err(bad(match input.split_once(':') {
                Some((alg, _)) => format!("unsupported hash algorithm {alg:?}"),
                None => "it has no \"sha256:\" prefix".into(),
            }));
        };
        if digits.len() != 64 {
            return Err(bad(format!("{} hex digits instead of 64", digits.len())));
        }
        let mut digest = [0u8; 32];
        hex::decode_to_slice(digits, &mut digest).map_err(|e| bad(format!("not hex: {e}")))?;
        Ok(Self(digest))
    }
}

impl fmt::Display for BlobAddress {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{PREFIX}{}", self.hex())
    }
}

impl fmt::Debug for BlobAddress {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

impl FromStr for BlobAddress {
    type Err = BlobError;
    fn from_str(s: &str) -> Result<Self> {
        Self::parse(s)
    }
}

impl serde::Serialize for BlobAddress {
    fn serialize<S: serde::Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> serde::Deserialize<'de> for BlobAddress {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        let s = <std::borrow::Cow<'de, str>>::deserialize(d)?;
        Self::parse(&s).map_err(serde::de::Error::custom)
    }
}

/// Computes an address while bytes go by.
#[derive(Default, Clone)]
pub struct Hasher {
    inner: Sha256,
    len: u64,
}

impl Hasher {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn update(&mut self, bytes: &[u8]) {
        self.inner.update(bytes);
        self.len += bytes.len() as u64;
    }

    /// Bytes hashed so far.
    pub fn len(&self) -> u64 {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    pub fn finish(self) -> BlobAddress {
        BlobAddress(self.inner.finalize().into())
    }
}

impl fmt::Debug for Hasher {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Hasher")
            .field("len", &self.len)
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn display_parse_round_trip_and_pinned() {
        let a = BlobAddress::of(b"abc");
        assert_eq!(
            a.to_string(),
            "sha256:ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
        assert_eq!(BlobAddress::parse(&a.to_string()).unwrap(), a);
        assert_eq!(
            BlobAddress::parse(&a.to_string().to_uppercase().replace("SHA256", "sha256")).unwrap(),
            a
        );
        assert_eq!(serde_json::to_string(&a).unwrap(), format!("\"{a}\""));
        assert_eq!(
            serde_json::from_str::<BlobAddress>(&format!("\"{a}\"")).unwrap(),
            a
        );
        let mut h = Hasher::new();
        h.update(b"a");
        h.update(b"bc");
        assert_eq!(h.len(), 3);
        assert_eq!(h.finish(), a);
    }

    #[test]
    fn parse_errors_are_clear() {
        let hex64 = "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad";
        let err = |s: &str| BlobAddress::parse(s).unwrap_err().to_string();
        assert!(err(hex64).contains("no \"sha256:\" prefix"), "{}", err(hex64));
        assert!(err(&format!("md5:{hex64}")).contains("unsupported hash algorithm \"md5\""));
        assert!(err("sha256:abcd").contains("4 hex digits instead of 64"));
        assert!(err(&format!("sha256:{}zz", &hex64[..62])).contains("not hex"));
        assert!(err("").contains("expected sha256:<64"));
        assert!(serde_json::from_str::<BlobAddress>("\"sha256:00\"").is_err());
    }
}
