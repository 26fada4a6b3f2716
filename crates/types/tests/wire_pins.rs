//! Pins the protocol's bytes: a change here is a protocol change and needs a new version.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use veil_crypto::sign::SigningKey;
use veil_types::*;

#[test]
fn receipt_signed_bytes_and_json_are_pinned() {
    let key = SigningKey::from_bytes(&[7; 32]);
    let r = Receipt::sign(&key, [1; 32], [2; 32], "m", 3, 4);
    assert_eq!(
        hex::encode(r.signed_bytes()),
        format!(
            "00000001{}{}000000016d0000000300000004{}",
            "01".repeat(32),
            "02".repeat(32),
            hex::encode(key.verifying_key().to_bytes())
        )
    );
    // Ed25519 is deterministic: the whole receipt is pinned.
    let json = serde_json::to_string(&ResponseEvent::Done {
        finish_reason: "stop".into(),
        usage: Usage {
            prompt_tokens: 3,
            completion_tokens: 4,
        },
        receipt: Box::new(r),
    })
    .unwrap();
    assert_eq!(json, PINNED_DONE);
    let back = ResponseEvent::from_padded(&veil_crypto::pad::pad(json.as_bytes()).unwrap()).unwrap();
    let ResponseEvent::Done { receipt, .. } = back else {
        panic!()
    };
    receipt.verify_signature().unwrap();
}

const PINNED_DONE: &str = r#"{"type":"done","finish_reason":"stop","usage":{"prompt_tokens":3,"completion_tokens":4},"receipt":{"version":1,"request_hash":"0101010101010101010101010101010101010101010101010101010101010101","response_hash":"0202020202020202020202020202020202020202020202020202020202020202","model":"m","prompt_tokens":3,"completion_tokens":4,"worker_key":"ea4a6c63e29c520abef5507b132ec5f9954776aebebe7b92421eea691446d22c","signature":"271e02913500c9e08328c2060a2ab5ab2fd1cea9acc8835f9a6fbc38f4bc18ef8e4994a9d8f3f03308379115c0c9b2fb401c3d0b0dd376a28df788711a0b6b02"}}"#;

#[test]
fn events_and_requests_are_pinned() {
    assert_eq!(
        serde_json::to_string(&ResponseEvent::Delta { text: "Pa".into() }).unwrap(),
        r#"{"type":"delta","text":"Pa"}"#
    );
    assert_eq!(
        serde_json::to_string(&ResponseEvent::Error {
            kind: ErrorKind::Replay,
            message: "m".into()
        })
        .unwrap(),
        r#"{"type":"error","kind":"replay","message":"m"}"#
    );
    let req = InferRequest {
        version: PROTOCOL_VERSION,
        nonce: [5; 16],
        timestamp_ms: 1_700_000_000_000,
        response_key: Secret32::new([6; 32]),
        model: "smollm2".into(),
        messages: vec![Message {
            role: "user".into(),
            content: "hi".into(),
        }],
        params: Params::default(),
        stream: true,
    };
    let json = serde_json::to_string(&req).unwrap();
    assert_eq!(
        json,
        format!(
            r#"{{"version":1,"nonce":"{}","timestamp_ms":1700000000000,"response_key":"{}","model":"smollm2","messages":[{{"role":"user","content":"hi"}}],"params":{{"temperature":1.0,"top_p":1.0,"top_k":0,"seed":null,"max_tokens":null,"stop":[],"presence_penalty":0.0,"frequency_penalty":0.0}},"stream":true}}"#,
            "05".repeat(16),
            "06".repeat(32)
        )
    );
    let padded = req.to_padded().unwrap();
    assert_eq!(padded.len(), 512);
    assert_eq!(&padded[..4], &(json.len() as u32).to_be_bytes());
    assert_eq!(
        hex::encode(request_hash(b"sealed")),
        hex::encode(veil_crypto::hash::sha256_tagged("veil/v1/request", &[b"sealed"]))
    );
    assert_eq!(encode_frame(b"ab").unwrap(), vec![0, 0, 0, 2, b'a', b'b']);
}

#[test]
fn attestation_doc_is_pinned() {
    let doc = AttestationDoc {
        version: 1,
        evidence: vec![1, 2],
        hpke_public_key: [0xaa; 32],
        signing_public_key: [0xbb; 32],
        measurement: vec![0xcc; 2],
        simulated: true,
        models: vec![ModelStatus {
            name: "smollm2".into(),
            bundle: "abc".into(),
            ready: false,
        }],
    };
    let json = serde_json::to_string(&doc).unwrap();
    assert_eq!(
        json,
        format!(
            r#"{{"version":1,"evidence":"0102","hpke_public_key":"{}","signing_public_key":"{}","measurement":"cccc","simulated":true,"models":[{{"name":"smollm2","bundle":"abc","ready":false}}]}}"#,
            "aa".repeat(32),
            "bb".repeat(32)
        )
    );
    assert_eq!(AttestationDoc::from_json(json.as_bytes()).unwrap(), doc);
    let err =
        AttestationDoc::from_json(json.replace("\"version\":1", "\"version\":2").as_bytes()).unwrap_err();
    assert!(err.to_string().contains("version 2"), "{err}");
}

#[test]
fn decoders_never_panic_on_mutations() {
    let req = InferRequest::new("m", vec![], Params::default(), false).unwrap();
    let padded = req.to_padded().unwrap();
    for i in 0..padded.len() {
        let mut t = padded.to_vec();
        t[i] ^= 0xff;
        let _ = InferRequest::from_padded(&t);
        let _ = ResponseEvent::from_padded(&t);
    }
    for n in 0..padded.len() {
        assert!(InferRequest::from_padded(&padded[..n]).is_err());
    }
}
