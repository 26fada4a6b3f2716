//! `veil_crypto::pad::unpad` on arbitrary bytes; whatever unpads re-pads to the same bytes, and `pad`
//! then `unpad` round-trips.
#![no_main]

use libfuzzer_sys::fuzz_target;
use veil_crypto::pad;

fuzz_target!(|data: &[u8]| {
    if let Ok(inner) = pad::unpad(data) {
        // The encoding is canonical: one padded form per payload.
        assert_eq!(pad::pad(inner).expect("re-pad"), data);
    }
    let padded = pad::pad(data).expect("pad");
    assert_eq!(padded.len(), pad::bucket_for(data.len()).expect("bucket"));
    assert_eq!(pad::unpad(&padded).expect("own padding"), data);
});
