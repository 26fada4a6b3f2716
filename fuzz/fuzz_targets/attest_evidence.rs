//! `veil_attest`: the evidence envelope (`Evidence::from_bytes`), `decode_hex_or_raw`, and simulated
//! evidence (`SimEvidence::from_bytes`, `SimVerifier::verify`) on arbitrary bytes. Decoded values
//! re-encode to their input.
#![no_main]

use libfuzzer_sys::fuzz_target;
use veil_attest::evidence::EVIDENCE_MAGIC;
use veil_attest::sim::SIM_MAGIC;
use veil_attest::{Evidence, SimEvidence, SimVerifier, decode_hex_or_raw};

fuzz_target!(|data: &[u8]| {
    // Hex or raw: hex input decodes to bytes that re-encode to it (case and whitespace aside).
    let decoded = decode_hex_or_raw(data);
    if decoded != data {
        let text: String = String::from_utf8_lossy(data)
            .chars()
            .filter(|c| !c.is_ascii_whitespace())
            .collect();
        let text = text.strip_prefix("0x").unwrap_or(&text);
        assert!(hex::encode(&decoded).eq_ignore_ascii_case(text));
    }

    for input in [data, &decoded[..]] {
        if let Ok(ev) = Evidence::from_bytes(input) {
            let bytes = ev.to_bytes();
            if input.starts_with(EVIDENCE_MAGIC) {
                assert_eq!(bytes, input, "an envelope re-encodes to itself");
            } else {
                // Bare simulated evidence comes back wrapped in an envelope.
                assert!(input.starts_with(SIM_MAGIC));
            }
            let again = Evidence::from_bytes(&bytes).expect("own envelope");
            assert_eq!(again.to_bytes(), bytes);
            // Verification of whatever decoded (DCAP with its own collateral, or simulated) only refuses
            // or accepts; a fuzzer cannot forge a signature, but it must not panic either.
            let _ = ev.verify(1_750_377_600);
        }
        if let Ok(sim) = SimEvidence::from_bytes(input) {
            assert_eq!(sim.to_bytes(), input, "simulated evidence re-encodes to itself");
        }
        let _ = SimVerifier.verify(input, 1_700_000_000);
    }
});
