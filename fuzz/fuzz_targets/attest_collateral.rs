//! `veil_attest::Collateral::from_json` on arbitrary bytes; parsed collateral keeps its JSON, and
//! verifying a real sample quote against it never panics.
#![no_main]

use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use veil_attest::samples;
use veil_attest::{Collateral, DcapVerifier};

fn quote() -> &'static Vec<u8> {
    static Q: OnceLock<Vec<u8>> = OnceLock::new();
    Q.get_or_init(|| {
        samples::load(samples::TDX)
            .unwrap_or_else(|e| panic!("dcap-qvl samples: {e}"))
            .quote
    })
}

fuzz_target!(|data: &[u8]| {
    if let Ok(c) = Collateral::from_json(data) {
        assert_eq!(c.json(), data);
        let _ = format!("{c:?}");
        let _ = DcapVerifier::new().verify(quote(), &c, samples::TDX.now);
    }
});
