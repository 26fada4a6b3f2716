//! Bounded no-panic checks of the decoders that `dcap_samples.rs` (`garbage_never_panics`, tampered
//! quotes) and `sim_evidence.rs` (flipped and truncated simulated evidence) do not already cover:
//! `decode_hex_or_raw`, every truncation and bit flip of an evidence *envelope*, and truncated or
//! tampered collateral JSON. The fuzz targets in `fuzz/` explore further; see `docs/fuzzing.md`.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use veil_attest::samples;
use veil_attest::{Collateral, DcapVerifier, Evidence, SimEvidence, decode_hex_or_raw};
use veil_crypto::sign::SigningKey;

const NOW: u64 = 1_700_000_000;

/// xorshift64: deterministic, so a failure reproduces.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
}

#[test]
fn hex_or_raw_decodes_hex_and_passes_anything_else_through() {
    let mut rng = Rng(11);
    let alphabet = b"0123456789abcdefABCDEFx \n\tg";
    for _ in 0..2_000 {
        let len = (rng.next() % 80) as usize;
        let input: Vec<u8> = (0..len)
            .map(|_| match rng.next() % 3 {
                0 => rng.next() as u8,
                _ => alphabet[(rng.next() % alphabet.len() as u64) as usize],
            })
            .collect();
        let out = decode_hex_or_raw(&input);
        if out != input {
            let text: Vec<u8> = input
                .iter()
                .copied()
                .filter(|b| !b.is_ascii_whitespace())
                .collect();
            let text = text.strip_prefix(b"0x").unwrap_or(&text);
            assert!(hex::encode(&out).as_bytes().eq_ignore_ascii_case(text));
        }
    }
    assert_eq!(decode_hex_or_raw(b" 0xAB cd\n"), [0xab, 0xcd]);
    assert_eq!(decode_hex_or_raw(b"abc"), b"abc", "odd length stays raw");
}

#[test]
fn every_truncation_and_bit_flip_of_a_simulated_envelope_is_refused() {
    let key = SigningKey::from_bytes(&[7; 32]);
    let envelope = Evidence::Simulated(SimEvidence::sign(&key, [1; 32], [2; 64], NOW).to_bytes()).to_bytes();
    Evidence::from_bytes(&envelope).unwrap().verify(NOW).unwrap();
    for n in 0..envelope.len() {
        assert!(Evidence::from_bytes(&envelope[..n]).is_err(), "truncated to {n}");
    }
    for bit in 0..envelope.len() * 8 {
        let mut t = envelope.clone();
        t[bit / 8] ^= 1 << (bit % 8);
        if let Ok(ev) = Evidence::from_bytes(&t) {
            assert!(ev.verify(NOW).is_err(), "bit {bit} flipped and still verifies");
        }
    }
}

#[test]
fn truncated_or_tampered_collateral_and_envelopes_never_panic() {
    let s = samples::load(samples::TDX).unwrap_or_else(|e| panic!("{e}"));
    let json = &s.collateral_json;
    // Truncations at a stride (each parse reads up to 16 KB of JSON), plus the last few bytes.
    for n in (0..json.len()).step_by(7).chain(json.len() - 8..json.len()) {
        assert!(Collateral::from_json(&json[..n]).is_err(), "truncated to {n}");
    }
    let c = Collateral::from_json(json).unwrap();
    let verifier = DcapVerifier::new();
    let mut rng = Rng(12);
    for _ in 0..150 {
        let mut t = json.clone();
        let pos = (rng.next() % t.len() as u64) as usize;
        t[pos] ^= 1 << (rng.next() % 8);
        if let Ok(c) = Collateral::from_json(&t) {
            // A change inside a signed structure or certificate fails; one in layout (whitespace) may
            // not. Either way: no panic.
            let _ = verifier.verify(&s.quote, &c, samples::TDX.now);
        }
    }
    // A DCAP envelope: every truncation, and flips at a stride.
    let envelope = Evidence::Dcap {
        quote: s.quote.clone(),
        collateral: c,
    }
    .to_bytes();
    for n in (0..envelope.len()).step_by(11) {
        assert!(Evidence::from_bytes(&envelope[..n]).is_err(), "truncated to {n}");
    }
    for pos in (0..13 + s.quote.len()).step_by(19) {
        let mut t = envelope.clone();
        t[pos] ^= 0x10;
        if let Ok(ev) = Evidence::from_bytes(&t) {
            let _ = ev.verify(samples::TDX.now);
        }
    }
}
