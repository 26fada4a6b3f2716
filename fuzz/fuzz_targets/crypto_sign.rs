//! `veil_crypto::sign`: `Address::from_str`, `VerifyingKey::from_slice`, `Signature::from_slice` and
//! `verify` on arbitrary bytes; parsed values re-encode to their input.
#![no_main]

use std::str::FromStr;

use libfuzzer_sys::fuzz_target;
use veil_crypto::sign::{Address, Signature, SigningKey, VerifyingKey};

fuzz_target!(|data: &[u8]| {
    // Addresses: text in, canonical (lowercase hex) text out.
    let text = String::from_utf8_lossy(data);
    if let Ok(addr) = Address::from_str(&text) {
        let shown = addr.to_string();
        assert!(shown.eq_ignore_ascii_case(&text), "{shown} vs {text:?}");
        assert_eq!(Address::from_str(&shown).expect("own address"), addr);
    }

    // Keys: a parsed key re-encodes to its 32 input bytes.
    if let Ok(vk) = VerifyingKey::from_slice(data) {
        assert_eq!(&vk.to_bytes()[..], data);
        let _ = vk.address();
    }
    // Key and signature from the input's halves: verification only ever refuses.
    if data.len() >= 96 {
        let (key, rest) = data.split_at(32);
        let (sig, msg) = rest.split_at(64);
        let sig = Signature::from_slice(sig).expect("64 bytes");
        assert_eq!(&sig.to_bytes()[..], &rest[..64]);
        if let Ok(vk) = VerifyingKey::from_slice(key) {
            let _ = vk.verify("veil/v1/fuzz", msg, &sig);
        }
        // A genuine key never accepts an arbitrary signature over these bytes.
        let real = SigningKey::from_bytes(&[7; 32]).verifying_key();
        assert!(
            real.verify("veil/v1/fuzz", msg, &sig).is_err(),
            "forged signature verified"
        );
    }
});
