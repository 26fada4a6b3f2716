//! `veil_crypto::stream`: `decrypt` (fixed key) and `parse_header` on arbitrary bytes; `encrypt` then
//! `decrypt` round-trips.
#![no_main]

use libfuzzer_sys::fuzz_target;
use veil_crypto::stream;

const KEY: [u8; 32] = [0x5a; 32];

fuzz_target!(|data: &[u8]| {
    if let Some(header) = data.first_chunk::<{ stream::HEADER_LEN }>() {
        let _ = stream::parse_header(header);
    }
    // Without the key nothing authenticates; the decrypter must only refuse.
    let mut out = Vec::new();
    assert!(
        stream::decrypt(&KEY, b"aad", data, &mut out).is_err(),
        "forged stream decrypted"
    );

    // Round trip with the smallest chunks (many chunk boundaries for short inputs).
    let ct = stream::encrypt_to_vec(&KEY, b"aad", stream::MIN_CHUNK_SIZE, data).expect("encrypt");
    assert_eq!(
        ct.len() as u64,
        stream::ciphertext_len(data.len() as u64, stream::MIN_CHUNK_SIZE)
    );
    let pt = stream::decrypt_to_vec(&KEY, b"aad", &ct).expect("own stream");
    assert_eq!(pt.as_slice(), data);
});
