//! The simulated TEE: wire format, signature, and how policies treat it.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use veil_attest::sim::{SIM_EVIDENCE_LEN, SIM_MEASUREMENT};
use veil_attest::{
    AttestError, Evidence, ExpectedReportData, HexBytes, Measurements, Policy, SimEvidence, SimVerifier,
    TeeKind, keys_hash, report_data, verify_and_appraise,
};
use veil_crypto::sign::SigningKey;

const NOW: u64 = 1_700_000_000;

fn fixed() -> (SigningKey, SimEvidence) {
    let key = SigningKey::from_bytes(&[7; 32]);
    let ev = SimEvidence::sign(&key, [1; 32], [2; 64], NOW);
    (key, ev)
}

#[test]
fn wire_format_is_pinned() {
    let (_, ev) = fixed();
    let bytes = ev.to_bytes();
    assert_eq!(bytes.len(), SIM_EVIDENCE_LEN);
    assert_eq!(hex::encode(&bytes), PINNED);
    assert_eq!(SimEvidence::from_bytes(&bytes).unwrap(), ev);
}

// Checked independently (Python `cryptography`): Ed25519 by seed [7; 32] over
// len("veil/v1/sim-evidence") as u32 BE | tag | the first 148 bytes.
const PINNED: &str = concat!(
    "5645494c53494d31",                                                 // "VEILSIM1"
    "00000088",                                                         // body length 136
    "ea4a6c63e29c520abef5507b132ec5f9954776aebebe7b92421eea691446d22c", // dev public key
    "0101010101010101010101010101010101010101010101010101010101010101", // measurement
    "0202020202020202020202020202020202020202020202020202020202020202",
    "0202020202020202020202020202020202020202020202020202020202020202", // report data
    "000000006553f100",                                                 // issued at 1_700_000_000
    "00000040",                                                         // signature length 64
    "eec56d46d96bc9576c640f783d6f10094cb0f7c0b7720c4485a4fe970f0fe7ea",
    "d256a7c8e5a68bd08ce97ad5000cf6a7484662fd9620b97a4c825368fc2fb70c",
);

#[test]
fn round_trip_gives_simulated_claims() {
    let (key, ev) = fixed();
    let claims = SimVerifier.verify(&ev.to_bytes(), NOW + 5).unwrap();
    assert_eq!(claims.tee, TeeKind::Simulated);
    assert!(claims.simulated);
    assert_eq!(claims.measurements[SIM_MEASUREMENT].0, [1; 32]);
    assert_eq!(claims.report_data.0, [2; 64]);
    assert_eq!(claims.issued_at, Some(NOW));
    assert_eq!(claims.sim_key.as_ref().unwrap().0, key.verifying_key().to_bytes());
    assert_eq!(claims.verified_at, NOW + 5);
}

#[test]
fn every_flipped_byte_and_every_truncation_is_rejected() {
    let (_, ev) = fixed();
    let bytes = ev.to_bytes();
    for pos in 0..bytes.len() {
        for bit in [0x01u8, 0x80] {
            let mut t = bytes.clone();
            t[pos] ^= bit;
            let err = SimVerifier
                .verify(&t, NOW)
                .expect_err("tampered evidence never verifies");
            assert!(
                matches!(
                    err,
                    AttestError::BadSignature(_) | AttestError::Malformed(_) | AttestError::Unsupported(_)
                ),
                "byte {pos}: {err}"
            );
        }
    }
    for len in 0..bytes.len() {
        assert!(
            matches!(
                SimVerifier.verify(&bytes[..len], NOW),
                Err(AttestError::Malformed(_))
            ),
            "len {len}"
        );
    }
    let mut longer = bytes.clone();
    longer.push(0);
    assert!(matches!(
        SimVerifier.verify(&longer, NOW),
        Err(AttestError::Malformed(_))
    ));
    let mut v2 = bytes;
    v2[7] = b'2';
    assert!(matches!(
        SimVerifier.verify(&v2, NOW),
        Err(AttestError::Unsupported(_))
    ));
}

#[test]
fn signature_by_another_key_is_rejected() {
    let (_, ev) = fixed();
    let other = SimEvidence::sign(&SigningKey::from_bytes(&[8; 32]), [1; 32], [2; 64], NOW);
    let mut forged = ev.clone();
    forged.signature = other.signature;
    assert!(matches!(
        SimVerifier.verify(&forged.to_bytes(), NOW),
        Err(AttestError::BadSignature(_))
    ));
}

#[test]
fn default_policy_rejects_simulated_evidence() {
    let (_, ev) = fixed();
    let evidence = Evidence::from_bytes(&ev.to_bytes()).unwrap();
    let err =
        verify_and_appraise(&evidence, &Policy::default(), &ExpectedReportData::Unchecked, NOW).unwrap_err();
    assert_eq!(err, AttestError::SimulatedNotAllowed);
    assert!(
        err.reason().starts_with("simulated TEE evidence is not allowed"),
        "{}",
        err.reason()
    );
    verify_and_appraise(
        &evidence,
        &Policy::development(),
        &ExpectedReportData::Unchecked,
        NOW,
    )
    .unwrap();
}

#[test]
fn development_policy_checks_binding_keys_measurement_and_age() {
    let key = SigningKey::from_bytes(&[9; 32]);
    let nonce = b"fresh nonce from the verifier";
    let bound = keys_hash(&[b"hpke public key", b"signing public key"]);
    let ev = SimEvidence::sign(&key, [3; 32], report_data(nonce, &bound), NOW);
    let evidence = Evidence::Simulated(ev.to_bytes());
    let expected = ExpectedReportData::bound(nonce, &bound);
    let dev = Policy::development();
    verify_and_appraise(&evidence, &dev, &expected, NOW + 10).unwrap();

    let wrong_nonce = ExpectedReportData::bound(b"another nonce", &bound);
    assert!(matches!(
        verify_and_appraise(&evidence, &dev, &wrong_nonce, NOW),
        Err(AttestError::ReportDataMismatch { .. })
    ));
    let wrong_keys = ExpectedReportData::bound(nonce, &keys_hash(&[b"hpke public key"]));
    assert!(matches!(
        verify_and_appraise(&evidence, &dev, &wrong_keys, NOW),
        Err(AttestError::ReportDataMismatch { .. })
    ));

    let pinned = Policy {
        allowed_sim_keys: Some(vec![HexBytes(vec![0xaa; 32])]),
        ..dev.clone()
    };
    assert!(matches!(
        verify_and_appraise(&evidence, &pinned, &expected, NOW),
        Err(AttestError::SimKeyNotAllowed(_))
    ));
    let pinned = Policy {
        allowed_sim_keys: Some(vec![HexBytes(key.verifying_key().to_bytes().to_vec())]),
        ..dev.clone()
    };
    verify_and_appraise(&evidence, &pinned, &expected, NOW).unwrap();

    let mut set = Measurements::new();
    set.insert(SIM_MEASUREMENT.into(), HexBytes(vec![4; 32]));
    let other_code = dev.clone().allow_measurements(vec![set]);
    assert!(matches!(
        verify_and_appraise(&evidence, &other_code, &expected, NOW),
        Err(AttestError::MeasurementNotAllowed(_))
    ));

    let stale = NOW + dev.max_evidence_age_secs + 1;
    assert!(matches!(
        verify_and_appraise(&evidence, &dev, &expected, stale),
        Err(AttestError::Stale { .. })
    ));
    let early = NOW - dev.max_clock_skew_secs - 1;
    assert!(matches!(
        verify_and_appraise(&evidence, &dev, &expected, early),
        Err(AttestError::FromTheFuture { .. })
    ));
}

#[test]
fn report_data_binding_is_pinned() {
    // `SHA-512("veil/v1/report" | nonce | H(keys))`: pinned so that platform, clients and validators
    // never drift apart.
    let keys = keys_hash(&[&[1u8; 32][..]]);
    assert_eq!(
        hex::encode(keys),
        "fcc66bc1b279c78e82b66ccf49b8eda6bffab713bc4dd5d101b5d5ca0ce9ff70"
    );
    assert_eq!(
        hex::encode(report_data(&[2u8; 32], &keys)),
        concat!(
            "e080c3c8ddc6bf63c8e50cc11764c762633c2c1246e3d6fa930c6af85985ee6a",
            "31fa5074519e1538774a78f70cdc9db4572129cfcc4f406d69c7bf3f1f1d42ec"
        )
    );
}

#[test]
fn empty_measurement_set_is_an_invalid_policy() {
    let (_, ev) = fixed();
    let policy = Policy::development().allow_measurements(vec![Measurements::new()]);
    let err = verify_and_appraise(
        &Evidence::Simulated(ev.to_bytes()),
        &policy,
        &ExpectedReportData::Unchecked,
        NOW,
    )
    .unwrap_err();
    assert!(matches!(err, AttestError::InvalidPolicy(_)));
    assert!(!err.is_rejection());
}

#[test]
fn envelope_of_simulated_evidence_is_pinned() {
    let (_, ev) = fixed();
    let bytes = ev.to_bytes();
    let envelope = Evidence::Simulated(bytes.clone()).to_bytes();
    let mut expected = b"VEILEVD1\x02".to_vec();
    expected.extend_from_slice(&216u32.to_be_bytes());
    expected.extend_from_slice(&bytes);
    assert_eq!(envelope, expected);
    match Evidence::from_bytes(&envelope).unwrap() {
        Evidence::Simulated(inner) => assert_eq!(inner, bytes),
        other => panic!("decoded as {other:?}"),
    }
    assert!(matches!(
        Evidence::from_bytes(b"VEILEVD1\x09"),
        Err(AttestError::Unsupported(_))
    ));
    assert!(matches!(
        Evidence::from_bytes(b"garbage"),
        Err(AttestError::Malformed(_))
    ));
}
