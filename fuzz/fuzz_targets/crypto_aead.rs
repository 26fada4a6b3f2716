//! `veil_crypto::aead::open` (fixed key) on arbitrary bytes; `seal` then `open` round-trips.
#![no_main]

use libfuzzer_sys::fuzz_target;
use veil_crypto::aead;

const KEY: [u8; 32] = [0x33; 32];

fuzz_target!(|data: &[u8]| {
    assert!(aead::open(&KEY, b"aad", data).is_err(), "forged data opened");
    let sealed = aead::seal(&KEY, b"aad", data).expect("seal");
    assert_eq!(aead::open(&KEY, b"aad", &sealed).expect("own data"), data);
});
