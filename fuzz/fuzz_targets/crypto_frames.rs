//! `veil_crypto::frames::FrameOpener::open` on a sequence of arbitrary frames (fixed key); a sealed
//! sequence round-trips, and a forged frame spliced into it is refused.
#![no_main]

use libfuzzer_sys::fuzz_target;
use veil_crypto::frames::{FrameOpener, FrameSealer};

const KEY: [u8; 32] = [0x17; 32];
const PURPOSE: &str = "veil/v1/fuzz-frames";

/// Splits the input into frames: each is `len (u8) | bytes`, the last one takes what is left.
fn split(mut data: &[u8]) -> Vec<&[u8]> {
    let mut out = Vec::new();
    while let Some((&len, rest)) = data.split_first() {
        let n = (len as usize).min(rest.len());
        out.push(&rest[..n]);
        data = &rest[n..];
    }
    out
}

fuzz_target!(|data: &[u8]| {
    let frames = split(data);

    // Arbitrary frames: none opens, and the opener never declares the stream finished.
    let mut opener = FrameOpener::new(&KEY, PURPOSE, b"ctx");
    for f in &frames {
        assert!(opener.open(f).is_err(), "forged frame opened");
    }
    assert!(!opener.is_finished());
    assert!(opener.finish().is_err());

    // Round trip: seal each piece as a frame, the last one marked last, and open them in order.
    let mut sealer = FrameSealer::new(&KEY, PURPOSE, b"ctx");
    let sealed: Vec<Vec<u8>> = frames
        .iter()
        .enumerate()
        .map(|(i, m)| sealer.seal(m, i + 1 == frames.len()).expect("seal"))
        .collect();
    let mut opener = FrameOpener::new(&KEY, PURPOSE, b"ctx");
    for (i, (s, m)) in sealed.iter().zip(&frames).enumerate() {
        let f = opener.open(s).expect("own frame");
        assert_eq!(f.seq, i as u64);
        assert_eq!(f.msg.as_slice(), *m);
        assert_eq!(f.last, i + 1 == frames.len());
    }
    if !frames.is_empty() {
        opener.finish().expect("stream ended with its last frame");
        // Anything after the last frame is refused, even a genuine frame replayed.
        assert!(opener.open(&sealed[0]).is_err());
    }

    // A forged frame (the raw input) in the middle of a genuine stream is refused.
    if sealed.len() >= 2 {
        let mut opener = FrameOpener::new(&KEY, PURPOSE, b"ctx");
        opener.open(&sealed[0]).expect("own frame");
        assert!(opener.open(data).is_err(), "forged frame opened mid-stream");
    }
});
