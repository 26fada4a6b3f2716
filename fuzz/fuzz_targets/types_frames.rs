//! `veil_types::FrameDecoder` on an arbitrary byte stream cut into arbitrary pieces; the frames it
//! yields re-encode (`encode_frame`) to exactly the bytes it consumed.
#![no_main]

use libfuzzer_sys::fuzz_target;
use veil_types::{FrameDecoder, MAX_FRAME_LEN, encode_frame};

fuzz_target!(|data: &[u8]| {
    // Byte 0: the piece size the transport delivers; byte 1: a small frame limit (or the default).
    let [step, limit, wire @ ..] = data else {
        return;
    };
    let step = usize::from(*step).max(1);
    let max = if *limit == 0 {
        MAX_FRAME_LEN
    } else {
        usize::from(*limit)
    };
    let mut decoder = FrameDecoder::new(max);
    let mut frames = Vec::new();
    let mut failed = false;
    'outer: for piece in wire.chunks(step) {
        decoder.push(piece);
        loop {
            match decoder.next_frame() {
                Ok(Some(f)) => {
                    assert!(f.len() <= max);
                    frames.push(f);
                }
                Ok(None) => break,
                Err(_) => {
                    failed = true;
                    break 'outer;
                }
            }
        }
    }
    let mut again = Vec::new();
    for f in &frames {
        again.extend(encode_frame(f).expect("a decoded frame re-encodes"));
    }
    assert_eq!(
        &wire[..again.len()],
        &again[..],
        "frames re-encode to the consumed bytes"
    );
    if !failed {
        // Whatever was not consumed is a partial frame, which `finish` reports.
        assert_eq!(decoder.finish().is_ok(), again.len() == wire.len());
    }
});
