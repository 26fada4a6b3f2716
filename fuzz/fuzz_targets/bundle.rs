//! `veil_bundle`: `BundleHeader::decode` / `read_from` and `open` (fixed data key) on arbitrary bytes;
//! a decoded header re-encodes to its input. Needs `--features llama` (veil-bundle links veil-engine).
#![no_main]

use libfuzzer_sys::fuzz_target;
use veil_bundle::{BundleHeader, DataKey};

fuzz_target!(|data: &[u8]| {
    if let Ok(h) = BundleHeader::decode(data) {
        assert_eq!(h.encode(), data, "a header re-encodes to itself");
    }
    if let Ok((h, raw)) = BundleHeader::read_from(&mut &data[..]) {
        assert_eq!(h.encode(), raw);
        assert!(data.starts_with(&raw));
    }
    let key = DataKey::from_bytes([0x44; 32]);
    let mut out = Vec::new();
    assert!(
        veil_bundle::open(data, &key, &mut out).is_err(),
        "a forged bundle opened"
    );
});
