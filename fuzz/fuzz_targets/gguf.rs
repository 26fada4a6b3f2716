//! `veil_engine::gguf::read_header` on arbitrary bytes in memory (a `Cursor`, never llama.cpp), with the
//! true length and with a length that disagrees with the bytes. Needs `--features llama` (veil-engine
//! always links llama.cpp, though this target never calls it).
#![no_main]

use std::io::Cursor;

use libfuzzer_sys::fuzz_target;
use veil_engine::gguf;

fuzz_target!(|data: &[u8]| {
    if let Ok(h) = gguf::read_header(Cursor::new(data), data.len() as u64) {
        assert_eq!(h.file_len, data.len() as u64);
        assert!(h.required_len <= h.file_len, "{h:?}");
    }
    // A file that claims to be longer than the bytes there (a file growing or lying about its size).
    let _ = gguf::read_header(Cursor::new(data), (data.len() as u64).saturating_mul(2) + 8);
});
