//! Bounded no-panic checks of the bundle decoders on noise, for the normal test suite (the unit tests
//! flip every byte of and truncate a sealed bundle; the fuzz target in `fuzz/` explores further, see
//! `docs/fuzzing.md`): `BundleHeader::decode`/`read_from`, `open` and `open_key` on pseudo-random input
//! from a fixed seed, and every single-bit flip of a header, which re-encodes to itself if it decodes.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use veil_blobs::BlobAddress;
use veil_bundle::{BundleHeader, DataKey, Format, SealOptions, open_key, seal_key};
use veil_crypto::seal::HpkeSecretKey;

/// xorshift64: deterministic, so a failure reproduces.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    fn bytes(&mut self, max: usize) -> Vec<u8> {
        let len = (self.next() % max as u64) as usize;
        (0..len).map(|_| self.next() as u8).collect()
    }
}

fn sealed_bundle(key: &DataKey) -> Vec<u8> {
    let model: Vec<u8> = (0..100u8).collect();
    let options = SealOptions {
        format: Format::Gguf,
        chunk_size: 16,
    };
    let mut out = Vec::new();
    veil_bundle::seal_with(
        &options,
        &model[..],
        model.len() as u64,
        key,
        &mut out,
        &mut |_| {},
    )
    .unwrap();
    out
}

#[test]
fn noise_never_opens_and_never_panics() {
    let key = DataKey::from_bytes([0x44; 32]);
    let valid = sealed_bundle(&key);
    let mut sink = Vec::new();
    veil_bundle::open(&valid[..], &key, &mut sink).unwrap();
    let header_len = BundleHeader::read_from(&mut &valid[..]).unwrap().1.len();
    let mut rng = Rng(21);
    for round in 0..2_000u32 {
        let mut input = rng.bytes(300);
        // Every other input keeps a valid prefix (header, and sometimes the stream header), so the
        // checks behind the magic are reached too.
        if round.is_multiple_of(2) {
            let keep = (header_len + (rng.next() % 60) as usize).min(valid.len());
            let n = keep.min(input.len());
            input[..n].copy_from_slice(&valid[..n]);
        }
        if let Ok(h) = BundleHeader::decode(&input) {
            assert_eq!(h.encode(), input);
        }
        if let Ok((h, raw)) = BundleHeader::read_from(&mut &input[..]) {
            assert_eq!(h.encode(), raw);
        }
        let mut sink = Vec::new();
        assert!(veil_bundle::open(&input[..], &key, &mut sink).is_err());
    }
}

#[test]
fn every_bit_flip_of_a_header_is_refused_or_canonical() {
    let header = BundleHeader {
        format: Format::Gguf,
        plaintext_len: 123_456,
        chunk_size: 1 << 20,
    }
    .encode();
    for bit in 0..header.len() * 8 {
        let mut t = header.clone();
        t[bit / 8] ^= 1 << (bit % 8);
        // A flip in the size or chunk size can give another valid header; it must then be the one those
        // bytes spell (the stream's associated data catches the change when opening).
        if let Ok(h) = BundleHeader::decode(&t) {
            assert_eq!(h.encode(), t, "bit {bit}");
        }
    }
}

#[test]
fn sealed_keys_from_noise_never_open() {
    let secret = HpkeSecretKey::derive(b"no-panic worker");
    let address: BlobAddress = "sha256:0000000000000000000000000000000000000000000000000000000000000000"
        .parse()
        .unwrap();
    let valid = seal_key(&secret.public_key(), &address, &DataKey::from_bytes([9; 32])).unwrap();
    open_key(&secret, &address, &valid).unwrap();
    let mut rng = Rng(22);
    for _ in 0..2_000 {
        assert!(open_key(&secret, &address, &rng.bytes(150)).is_err());
    }
    for bit in 0..valid.len() * 8 {
        let mut t = valid.clone();
        t[bit / 8] ^= 1 << (bit % 8);
        assert!(open_key(&secret, &address, &t).is_err(), "bit {bit}");
    }
}
