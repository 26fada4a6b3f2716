//! `veil_attest::DcapVerifier::verify` of arbitrary quote bytes against the real sample collateral that
//! dcap-qvl ships (see `veil_attest::samples`), and `quote_measurements_unverified`.
#![no_main]

use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use veil_attest::samples::{self, SampleInfo};
use veil_attest::{Collateral, DcapVerifier};

fn fixtures() -> &'static Vec<(SampleInfo, Vec<u8>, Collateral)> {
    static F: OnceLock<Vec<(SampleInfo, Vec<u8>, Collateral)>> = OnceLock::new();
    F.get_or_init(|| {
        samples::ALL
            .iter()
            .map(|&info| {
                let s = samples::load(info).unwrap_or_else(|e| panic!("dcap-qvl samples: {e}"));
                let c = Collateral::from_json(&s.collateral_json).expect("sample collateral");
                (info, s.quote, c)
            })
            .collect()
    })
}

fuzz_target!(|data: &[u8]| {
    let verifier = DcapVerifier::new();
    // The first byte picks the sample whose collateral (and "now") the quote is verified against.
    let Some((&pick, quote)) = data.split_first() else {
        return;
    };
    let all = fixtures();
    let (info, sample_quote, collateral) = &all[pick as usize % all.len()];
    // A mutated quote may still verify when only unsigned bytes changed; what matters is no panic.
    let _ = verifier.verify(quote, collateral, info.now);
    let _ = sample_quote;
    let _ = veil_attest::dcap::quote_measurements_unverified(quote);
});
