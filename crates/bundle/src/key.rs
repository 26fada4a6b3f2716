//! Model data keys, and sealing them to a recipient (HPKE).

use std::fmt;
use std::path::Path;

use veil_blobs::BlobAddress;
use veil_crypto::seal::{HpkePublicKey, HpkeSecretKey};
use zeroize::{Zeroize, ZeroizeOnDrop, Zeroizing};

use crate::{BundleError, Result};

/// The HPKE purpose (`info`) under which data keys are sealed.
pub const KEY_PURPOSE: &str = "veil/v1/model-key";

/// A model's data key: 32 random bytes, one per model version. Zeroized on drop; `Debug` prints no bytes.
#[derive(Clone, Zeroize, ZeroizeOnDrop)]
pub struct DataKey([u8; 32]);

impl DataKey {
    /// A fresh key from the operating system's CSPRNG.
    pub fn generate() -> Result<Self> {
        Ok(Self(veil_crypto::rand::array().map_err(BundleError::Crypto)?))
    }

    pub fn from_bytes(bytes: [u8; 32]) -> Self {
        Self(bytes)
    }

    pub fn from_slice(bytes: &[u8]) -> Result<Self> {
        let arr: [u8; 32] = bytes
            .try_into()
            .map_err(|_| BundleError::Key(format!("a data key is 32 bytes, not {}", bytes.len())))?;
        Ok(Self(arr))
    }

    pub fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }

    /// 64 lowercase hex digits (the key file format).
    pub fn to_hex(&self) -> Zeroizing<String> {
        Zeroizing::new(hex::encode(self.0))
    }

    /// Parses 64 hex digits (surrounding whitespace is ignored).
    pub fn from_hex(text: &str) -> Result<Self> {
        let text = text.trim();
        let mut out = [0u8; 32];
        hex::decode_to_slice(text, &mut out).map_err(|_| {
            BundleError::Key(format!(
                "expected 64 hex digits, found {} characters that are not a hex key",
                text.len()
            ))
        })?;
        let key = Self(out);
        out.zeroize();
        Ok(key)
    }

    /// Reads a key file: 64 hex digits (what `veil model seal --key-out` writes) or 32 raw bytes.
    pub fn read_file(path: &Path) -> Result<Self> {
        let bytes = Zeroizing::new(std::fs::read(path).map_err(|source| BundleError::Io {
            context: format!("cannot read the data key file {}", path.display()),
            source,
        })?);
        if bytes.len() == 32 {
            return Self::from_slice(&bytes);
        }
        let text = std::str::from_utf8(&bytes)
            .map_err(|_| BundleError::Key(format!("{} is neither 32 bytes nor hex text", path.display())))?;
        Self::from_hex(text).map_err(|e| BundleError::Key(format!("{}: {e}", path.display())))
    }
}

impl fmt::Debug for DataKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("DataKey(<redacted>)")
    }
}

/// Seals `key` to `recipient` (HPKE, purpose [`KEY_PURPOSE`]), bound to the bundle it opens: the sealed key
/// opens only with the same bundle address (its text form `sha256:<hex>` is the associated data).
pub fn seal_key(recipient: &HpkePublicKey, bundle: &BlobAddress, key: &DataKey) -> Result<Vec<u8>> {
    veil_crypto::seal::seal(
        recipient,
        KEY_PURPOSE,
        bundle.to_string().as_bytes(),
        key.as_bytes(),
    )
    .map_err(BundleError::Crypto)
}

/// Opens a data key sealed with [`seal_key`] for the bundle at `bundle`.
pub fn open_key(secret: &HpkeSecretKey, bundle: &BlobAddress, sealed: &[u8]) -> Result<DataKey> {
    let bytes = Zeroizing::new(
        veil_crypto::seal::open(secret, KEY_PURPOSE, bundle.to_string().as_bytes(), sealed).map_err(|e| {
            BundleError::Key(format!(
                "cannot open the data key sealed for bundle {bundle}: {e} (is it sealed to this key, and for \
                 this bundle?)"
            ))
        })?,
    );
    DataKey::from_slice(&bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_never_shows_the_key() {
        let k = DataKey::from_bytes([0xab; 32]);
        let shown = format!("{k:?}");
        assert!(!shown.contains("ab") && !shown.contains("171"), "{shown}");
        assert_eq!(DataKey::from_hex(&k.to_hex()).unwrap().as_bytes(), k.as_bytes());
        assert!(DataKey::from_hex("abcd").is_err());
        assert!(DataKey::from_slice(&[0; 31]).is_err());
        assert_ne!(
            DataKey::generate().unwrap().as_bytes(),
            DataKey::generate().unwrap().as_bytes()
        );
    }

    #[test]
    fn key_files_hex_or_raw() {
        let dir = tempfile::tempdir().unwrap();
        let k = DataKey::from_bytes([7; 32]);
        let hex_file = dir.path().join("k.hex");
        std::fs::write(&hex_file, format!("{}\n", &*k.to_hex())).unwrap();
        assert_eq!(DataKey::read_file(&hex_file).unwrap().as_bytes(), k.as_bytes());
        let raw = dir.path().join("k.raw");
        std::fs::write(&raw, k.as_bytes()).unwrap();
        assert_eq!(DataKey::read_file(&raw).unwrap().as_bytes(), k.as_bytes());
        std::fs::write(&raw, b"not a key").unwrap();
        assert!(matches!(DataKey::read_file(&raw), Err(BundleError::Key(_))));
    }

    #[test]
    fn sealed_keys_open_only_for_their_recipient_and_bundle() {
        let sk = HpkeSecretKey::generate().unwrap();
        let other = HpkeSecretKey::generate().unwrap();
        let key = DataKey::generate().unwrap();
        let a = BlobAddress::of(b"bundle a");
        let b = BlobAddress::of(b"bundle b");
        let sealed = seal_key(&sk.public_key(), &a, &key).unwrap();
        assert_eq!(open_key(&sk, &a, &sealed).unwrap().as_bytes(), key.as_bytes());
        let err = open_key(&sk, &b, &sealed).unwrap_err().to_string();
        assert!(err.contains(&b.to_string()), "{err}");
        assert!(open_key(&other, &a, &sealed).is_err());
        let mut t = sealed.clone();
        let last = t.len() - 1;
        t[last] ^= 1;
        assert!(open_key(&sk, &a, &t).is_err());
        // Sealed for another purpose: refused, saying so.
        let wrong = veil_crypto::seal::seal(
            &sk.public_key(),
            "veil/v1/request",
            a.to_string().as_bytes(),
            key.as_bytes(),
        )
        .unwrap();
        assert!(
            open_key(&sk, &a, &wrong)
                .unwrap_err()
                .to_string()
                .contains("purpose")
        );
    }
}
