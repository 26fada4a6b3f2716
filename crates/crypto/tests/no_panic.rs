//! Bounded no-panic checks of every decoder of untrusted input, for the normal test suite (the fuzz
//! targets in `fuzz/` explore further; see `docs/fuzzing.md`): pseudo-random inputs from a fixed seed,
//! and every truncation and every single-bit flip of a valid encoding. Authenticated formats must refuse
//! all of them; unauthenticated ones must re-encode whatever they accept to the same bytes.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::str::FromStr;

use veil_crypto::frames::{FrameOpener, FrameSealer};
use veil_crypto::seal::{self, HpkeSecretKey};
use veil_crypto::sign::{Address, Signature, SigningKey, VerifyingKey};
use veil_crypto::{aead, pad, stream};

const RANDOM_INPUTS: usize = 2_000;
const KEY: [u8; 32] = [0x5a; 32];

/// xorshift64: deterministic, so a failure reproduces.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    /// Random bytes of a random length below `max`; every fourth input starts with `prefix` (a magic or
    /// a valid header), so the checks behind it are reached too.
    fn input(&mut self, max: usize, prefix: &[u8]) -> Vec<u8> {
        let len = (self.next() % max as u64) as usize;
        let mut v: Vec<u8> = (0..len).map(|_| self.next() as u8).collect();
        if self.next().is_multiple_of(4) {
            let n = prefix.len().min(v.len());
            v[..n].copy_from_slice(&prefix[..n]);
        }
        v
    }
}

/// Every proper prefix of `valid`, and `valid` with each single bit flipped.
fn mutations(valid: &[u8]) -> impl Iterator<Item = Vec<u8>> + '_ {
    let truncations = (0..valid.len()).map(|n| valid[..n].to_vec());
    let flips = (0..valid.len() * 8).map(|bit| {
        let mut v = valid.to_vec();
        v[bit / 8] ^= 1 << (bit % 8);
        v
    });
    truncations.chain(flips)
}

#[test]
fn seal_open_refuses_noise_truncations_and_flips() {
    const P: &str = "veil/v1/no-panic";
    let sk = HpkeSecretKey::derive(b"no-panic recipient");
    let valid = seal::seal(&sk.public_key(), P, b"aad", b"a sealed message").unwrap();
    assert_eq!(seal::open(&sk, P, b"aad", &valid).unwrap(), b"a sealed message");
    let mut rng = Rng(1);
    for input in (0..RANDOM_INPUTS).map(|_| rng.input(200, &valid[..30])) {
        let _ = seal::parse_header(&input);
        assert!(seal::open(&sk, P, b"aad", &input).is_err());
    }
    for input in mutations(&valid) {
        let _ = seal::parse_header(&input);
        assert!(
            seal::open(&sk, P, b"aad", &input).is_err(),
            "{}",
            hex::encode(&input)
        );
    }
}

#[test]
fn stream_decrypt_refuses_noise_truncations_and_flips() {
    let plaintext: Vec<u8> = (0..100u8).collect();
    let valid = stream::encrypt_to_vec(&KEY, b"aad", stream::MIN_CHUNK_SIZE, &plaintext).unwrap();
    assert_eq!(
        stream::decrypt_to_vec(&KEY, b"aad", &valid).unwrap().as_slice(),
        plaintext
    );
    let mut rng = Rng(2);
    // The prefix is a valid header with the smallest chunk size (a large one would make each input
    // allocate its chunk buffer).
    for input in (0..RANDOM_INPUTS).map(|_| rng.input(300, &valid[..stream::HEADER_LEN])) {
        if let Some(h) = input.first_chunk::<{ stream::HEADER_LEN }>() {
            let _ = stream::parse_header(h);
        }
        assert!(stream::decrypt_to_vec(&KEY, b"aad", &input).is_err());
    }
    for input in mutations(&valid) {
        assert!(
            stream::decrypt_to_vec(&KEY, b"aad", &input).is_err(),
            "{}",
            hex::encode(&input)
        );
    }
}

#[test]
fn frame_opener_refuses_noise_truncations_and_flips() {
    const P: &str = "veil/v1/no-panic-frames";
    let mut sealer = FrameSealer::new(&KEY, P, b"ctx");
    let first = sealer.seal(b"first", false).unwrap();
    let second = sealer.seal(b"second and last", true).unwrap();
    let mut rng = Rng(3);
    for _ in 0..RANDOM_INPUTS {
        let mut o = FrameOpener::new(&KEY, P, b"ctx");
        for _ in 0..1 + rng.next() % 3 {
            assert!(o.open(&rng.input(64, &[0])).is_err());
        }
        assert!(o.finish().is_err());
    }
    for input in mutations(&second) {
        let mut o = FrameOpener::new(&KEY, P, b"ctx");
        o.open(&first).unwrap();
        assert!(o.open(&input).is_err(), "{}", hex::encode(&input));
        assert!(o.finish().is_err());
    }
}

#[test]
fn aead_open_refuses_noise_truncations_and_flips() {
    let valid = aead::seal(&KEY, b"aad", b"a small secret").unwrap();
    let mut rng = Rng(4);
    for input in (0..RANDOM_INPUTS).map(|_| rng.input(100, &[1])) {
        assert!(aead::open(&KEY, b"aad", &input).is_err());
    }
    for input in mutations(&valid) {
        assert!(
            aead::open(&KEY, b"aad", &input).is_err(),
            "{}",
            hex::encode(&input)
        );
    }
}

#[test]
fn unpad_accepts_only_canonical_padding() {
    let valid = pad::pad(b"padded payload").unwrap();
    let mut rng = Rng(5);
    let check = |input: &[u8]| {
        if let Ok(inner) = pad::unpad(input) {
            assert_eq!(pad::pad(inner).unwrap(), input, "non-canonical padding accepted");
        }
    };
    for _ in 0..RANDOM_INPUTS {
        // Bucket-sized inputs, so the length and filler checks are reached.
        let mut input = vec![0u8; [0, 3, 4, 255, 256, 512][(rng.next() % 6) as usize]];
        for b in input.iter_mut().take((rng.next() % 8) as usize) {
            *b = rng.next() as u8;
        }
        check(&input);
        check(&rng.input(600, &[0, 0, 0]));
    }
    for input in mutations(&valid) {
        check(&input);
    }
    // A length beyond the bucket, or a non-zero filler byte, is refused. (A length flipped to another
    // value inside the bucket is another canonical padding: padding is not authentication.)
    let mut t = valid.clone();
    t[0] ^= 1;
    assert!(pad::unpad(&t).is_err());
    let mut t = valid;
    t[200] ^= 1;
    assert!(pad::unpad(&t).is_err());
}

#[test]
fn keys_signatures_and_addresses_parse_without_panic() {
    let sk = SigningKey::from_bytes(&[7; 32]);
    let vk = sk.verifying_key();
    let sig = sk.sign("veil/v1/no-panic", b"msg");
    let addr = vk.address().to_string();
    let mut rng = Rng(6);
    for _ in 0..RANDOM_INPUTS {
        let input = rng.input(100, addr.as_bytes());
        let text = String::from_utf8_lossy(&input);
        if let Ok(a) = Address::from_str(&text) {
            assert!(a.to_string().eq_ignore_ascii_case(&text));
        }
        let key = rng.input(40, &[]);
        if let Ok(k) = VerifyingKey::from_slice(&key) {
            assert_eq!(&k.to_bytes()[..], key);
            let _ = k.verify("veil/v1/no-panic", b"msg", &sig);
        }
        if let Ok(s) = Signature::from_slice(&rng.input(70, &[])) {
            assert!(vk.verify("veil/v1/no-panic", b"msg", &s).is_err());
        }
    }
    for input in mutations(addr.as_bytes()) {
        if let Ok(a) = Address::from_str(&String::from_utf8_lossy(&input)) {
            // No checksum: a flipped digit is another address, but always the one the text spells.
            assert!(a.to_string().as_bytes().eq_ignore_ascii_case(&input));
        }
    }
    for input in mutations(&vk.to_bytes()) {
        if let Ok(k) = VerifyingKey::from_slice(&input) {
            assert!(k.verify("veil/v1/no-panic", b"msg", &sig).is_err());
        }
    }
    for input in mutations(&sig.to_bytes()) {
        if let Ok(s) = Signature::from_slice(&input) {
            assert!(vk.verify("veil/v1/no-panic", b"msg", &s).is_err());
        }
    }
}
