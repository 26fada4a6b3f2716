//! Every message decoder of `veil_types` on arbitrary bytes: `AttestationDoc::from_json`,
//! `ProvisionRequest::from_json`, `InferRequest::from_padded`, `ResponseEvent::from_padded` and the
//! `Receipt` JSON with `verify_signature`. The input is tried both raw and padded (so the fuzzer reaches
//! the JSON parser behind `unpad`); a decoded message re-encodes and decodes to itself.
#![no_main]

use libfuzzer_sys::fuzz_target;
use veil_types::{AttestationDoc, InferRequest, ProvisionRequest, Receipt, ResponseEvent};

fuzz_target!(|data: &[u8]| {
    if let Ok(doc) = AttestationDoc::from_json(data) {
        let json = serde_json::to_vec(&doc).expect("encode");
        assert_eq!(AttestationDoc::from_json(&json).expect("own document"), doc);
    }
    if let Ok(req) = ProvisionRequest::from_json(data) {
        let json = serde_json::to_vec(&req).expect("encode");
        assert_eq!(ProvisionRequest::from_json(&json).expect("own request"), req);
    }
    if let Ok(r) = serde_json::from_slice::<Receipt>(data) {
        let _ = r.verify_signature();
        let json = serde_json::to_vec(&r).expect("encode");
        assert_eq!(serde_json::from_slice::<Receipt>(&json).expect("own receipt"), r);
    }

    let padded = veil_crypto::pad::pad(data).ok();
    for input in [Some(data), padded.as_deref()].into_iter().flatten() {
        if let Ok(req) = InferRequest::from_padded(input) {
            let again = req.to_padded().expect("encode");
            let back = InferRequest::from_padded(&again)
                .unwrap_or_else(|e| panic!("a decoded request does not decode after re-encoding: {e}"));
            assert_eq!(back, req);
        }
        if let Ok(ev) = ResponseEvent::from_padded(input) {
            if let ResponseEvent::Done { receipt, .. } = &ev {
                let _ = receipt.verify_signature();
            }
            let again = ev.to_padded().expect("encode");
            let back = ResponseEvent::from_padded(&again)
                .unwrap_or_else(|e| panic!("a decoded event does not decode after re-encoding: {e}"));
            assert_eq!(back, ev);
        }
    }
});
