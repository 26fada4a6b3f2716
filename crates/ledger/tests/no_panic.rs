//! Bounded no-panic test of every decoder of untrusted input in `veil-ledger` (the `ledger` fuzz target
//! covers the same ground without bounds): xorshift noise (a quarter behind a valid prefix), every
//! truncation and every single-bit flip of valid encodings. Authenticated inputs are refused.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::*;
use veil_crypto::seal::HpkeSecretKey;
use veil_ledger::*;

struct XorShift(u64);

impl XorShift {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    fn bytes(&mut self, prefix: &[u8]) -> Vec<u8> {
        let len = (self.next() % 600) as usize;
        let mut out = if self.next().is_multiple_of(4) {
            prefix.to_vec()
        } else {
            Vec::new()
        };
        out.extend((0..len).map(|_| self.next() as u8));
        out
    }
}

/// Runs every decoder on `input`; returns whether the authenticated ones (check, query, answer) accepted.
fn feed(ledger: &Ledger, reply: &HpkeSecretKey, input: &[u8]) -> [bool; 3] {
    if let Ok(env) = Envelope::decode(input) {
        assert_eq!(env.encode(), input, "envelope decoding is canonical");
        let _ = open_envelope(ledger.keys(), &env);
    }
    if let Ok(b) = TxBody::decode(input) {
        assert_eq!(b.encode(), input, "body decoding is canonical");
    }
    if let Ok(s) = SignedTx::decode(input) {
        assert_eq!(s.encode(), input, "signed decoding is canonical");
        let _ = s.verify();
    }
    let _ = Genesis::from_json(&String::from_utf8_lossy(input));
    [
        ledger.check(input).is_ok(),
        ledger.query(input).is_ok(),
        open_answer(reply, input).is_ok(),
    ]
}

#[test]
fn decoders_never_panic() {
    let g = genesis(&[(1, 1_000_000)], 100);
    let mut l = Ledger::genesis(&g, seed()).unwrap();
    let reply = HpkeSecretKey::derive(b"no-panic reply");
    let tx = transfer(&l, &key(1), 0, addr(2), 5);
    let q = seal_query(
        &key(1),
        &l.keys().current().tx_public(),
        0,
        QueryKind::Balance,
        &reply,
    )
    .unwrap();
    let answer = l.query(&q).unwrap();
    let body = body(&l, &key(1), 0, addr(2), 5).encode();
    let signed = SignedTx::sign(&key(1), TxBody::decode(&body).unwrap()).encode();

    let mut rng = XorShift(0x5EED_1234_ABCD_0001);
    let mut noise = Vec::new();
    for _ in 0..2_000 {
        let prefix = match rng.next() % 4 {
            0 => &tx[..13],
            1 => &q[..13],
            2 => &body[..40],
            _ => &signed[..8],
        };
        noise.push(rng.bytes(prefix));
    }
    for input in &noise {
        assert_eq!(feed(&l, &reply, input), [false; 3]);
    }
    assert_eq!(feed(&l, &reply, &tx), [true, false, false]);
    assert_eq!(feed(&l, &reply, &q), [false, true, false]);
    assert_eq!(feed(&l, &reply, &answer), [false, false, true]);
    // No truncation or flipped bit of an authenticated input is accepted.
    for valid in [&tx, &q, &answer, &body, &signed] {
        for n in 0..valid.len() {
            assert_eq!(feed(&l, &reply, &valid[..n]), [false; 3], "truncation to {n}");
        }
        for i in 0..valid.len() * 8 {
            let mut t = valid.to_vec();
            t[i / 8] ^= 1 << (i % 8);
            assert_eq!(feed(&l, &reply, &t), [false; 3], "bit {i}");
        }
    }
    // All of it in one block: every envelope skipped or executed, never a panic.
    let mut block_txs = noise;
    block_txs.push(tx);
    let out = block(&mut l, &block_txs);
    assert_eq!(out.applied, 1);
}

#[test]
fn snapshots_never_panic_and_tampering_is_refused() {
    let g = genesis(&[(1, 1_000_000), (2, 5)], 100);
    let mut l = Ledger::genesis(&g, seed()).unwrap();
    let tx = transfer(&l, &key(1), 0, addr(3), 5);
    block(&mut l, &[tx]);
    let snap = l.snapshot();
    let ring = || KeyRing::new(seed(), 0);
    Ledger::restore(&g, ring(), &snap).unwrap();
    for n in 0..snap.len() {
        assert!(Ledger::restore(&g, ring(), &snap[..n]).is_err());
    }
    // One flipped bit per byte (a different bit each time): every byte of a snapshot is checked.
    for i in 0..snap.len() {
        let mut t = snap.clone();
        t[i] ^= 1 << (i % 8);
        assert!(
            Ledger::restore(&g, ring(), &t).is_err(),
            "byte {i} of the snapshot"
        );
    }
    let mut rng = XorShift(77);
    for _ in 0..500 {
        let _ = Ledger::restore(&g, ring(), &rng.bytes(&snap[..97]));
    }
}
