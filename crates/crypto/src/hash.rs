//! Domain-separated hashing: `H(len(tag) | tag | len(part_1) | part_1 | …)`.
//!
//! Every part is length-prefixed, so `["ab", "c"]` and `["a", "bc"]` never hash alike.

use sha2::{Digest, Sha256, Sha512};

fn feed<D: Digest>(hasher: &mut D, tag: &str, parts: &[&[u8]]) {
    hasher.update((tag.len() as u64).to_be_bytes());
    hasher.update(tag.as_bytes());
    for part in parts {
        hasher.update((part.len() as u64).to_be_bytes());
        hasher.update(part);
    }
}

/// SHA-256 over a domain tag and length-prefixed parts.
pub fn sha256_tagged(tag: &str, parts: &[&[u8]]) -> [u8; 32] {
    let mut h = Sha256::new();
    feed(&mut h, tag, parts);
    h.finalize().into()
}

/// SHA-512 over a domain tag and length-prefixed parts.
pub fn sha512_tagged(tag: &str, parts: &[&[u8]]) -> [u8; 64] {
    let mut h = Sha512::new();
    feed(&mut h, tag, parts);
    h.finalize().into()
}

/// Plain SHA-256 (for content addresses and file checksums, where the input is already a format of its
/// own and other tools must compute the same value).
pub fn sha256(data: &[u8]) -> [u8; 32] {
    Sha256::digest(data).into()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parts_are_length_prefixed() {
        assert_ne!(
            sha256_tagged("veil/v1/t", &[b"ab", b"c"]),
            sha256_tagged("veil/v1/t", &[b"a", b"bc"])
        );
        assert_ne!(
            sha256_tagged("veil/v1/a", &[b"x"]),
            sha256_tagged("veil/v1/b", &[b"x"])
        );
    }

    #[test]
    fn pinned_vectors() {
        // Pinned so that an accidental change of the encoding fails a test.
        assert_eq!(
            hex(&sha256_tagged("veil/v1/test", &[b"hello", b""])),
            "5ddadf3034ff7cc4796c655de7970aef46f699623221c79da53251b55eed82ad"
        );
        assert_eq!(
            hex(&sha512_tagged("veil/v1/test", &[b"hello"])),
            "f2d7f781a315b9c69685400fd3ae89948674e3dd62d89079c99eeb2e3980f03d7eaeff505827fe37301052124c6dcb667ec0cf582a63eb5f8b7bb0847b647ad7"
        );
    }

    fn hex(b: &[u8]) -> String {
        b.iter().map(|x| format!("{x:02x}")).collect()
    }
}
