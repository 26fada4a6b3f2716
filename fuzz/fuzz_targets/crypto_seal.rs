//! `veil_crypto::seal`: `parse_header` and `open` (fixed recipient key) on arbitrary bytes; `seal` then
//! `open` round-trips.
#![no_main]

use libfuzzer_sys::fuzz_target;
use veil_crypto::seal::{self, HpkeSecretKey};

const PURPOSE: &str = "veil/v1/fuzz";

fuzz_target!(|data: &[u8]| {
    let sk = HpkeSecretKey::derive(b"veil fuzz recipient");
    if let Ok(h) = seal::parse_header(data) {
        // The purpose is a borrowed slice of the input, right after the 9-byte prefix.
        assert_eq!(&data[9..9 + h.purpose.len()], h.purpose.as_bytes());
        // Opening with the purpose the header names reaches the HPKE decapsulation.
        let purpose = h.purpose.to_owned();
        assert!(
            seal::open(&sk, &purpose, b"", data).is_err(),
            "forged message opened"
        );
    }
    assert!(
        seal::open(&sk, PURPOSE, b"aad", data).is_err(),
        "forged message opened"
    );

    // Round trip: anything sealed opens to itself, and the header parses back.
    let sealed = seal::seal(&sk.public_key(), PURPOSE, b"aad", data).expect("seal");
    assert_eq!(seal::parse_header(&sealed).expect("own header").purpose, PURPOSE);
    assert_eq!(
        seal::open(&sk, PURPOSE, b"aad", &sealed).expect("own message"),
        data
    );
});
