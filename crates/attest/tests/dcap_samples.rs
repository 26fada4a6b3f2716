//! Intel DCAP verification against the real quotes and collateral that `dcap-qvl` ships.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use veil_attest::samples::{self, Sample, SampleInfo};
use veil_attest::{
    AttestError, Claims, Collateral, DcapVerifier, Evidence, ExpectedReportData, Measurements, Policy,
    TcbStatus, TeeKind, verify_and_appraise,
};

fn load(info: SampleInfo) -> (Sample, Collateral) {
    let sample = samples::load(info).unwrap_or_else(|e| panic!("{e}"));
    let collateral = Collateral::from_json(&sample.collateral_json).expect("sample collateral parses");
    (sample, collateral)
}

fn verify(info: SampleInfo) -> Claims {
    let (s, c) = load(info);
    DcapVerifier::new()
        .verify(&s.quote, &c, info.now)
        .expect("sample verifies at its now")
}

fn appraise(info: SampleInfo, policy: &Policy) -> Result<Claims, AttestError> {
    let (s, collateral) = load(info);
    let evidence = Evidence::Dcap {
        quote: s.quote,
        collateral,
    };
    verify_and_appraise(&evidence, policy, &ExpectedReportData::Unchecked, info.now)
}

#[test]
fn sgx_sample_reports_its_tcb_status_and_is_rejected_by_default() {
    let claims = verify(samples::SGX);
    assert_eq!(claims.tee, TeeKind::IntelSgx);
    assert!(!claims.simulated && !claims.debug);
    assert_eq!(claims.tcb_status, TcbStatus::ConfigurationAndSWHardeningNeeded);
    assert_eq!(claims.advisory_ids, ["INTEL-SA-00289", "INTEL-SA-00615"]);
    assert_eq!(
        hex::encode(&claims.measurements["mrenclave"].0),
        "33d8736db756ed4997e04ba358d27833188f1932ff7b1d156904d3f560452fbb"
    );
    assert!(claims.measurements.contains_key("mrsigner"));
    assert_eq!(claims.measurements["isvprodid"].0, [0, 0]);
    assert_eq!(&claims.report_data.0[..13], b"Hello, world!");

    let err = appraise(samples::SGX, &Policy::default()).unwrap_err();
    assert_eq!(
        err.to_string(),
        "evidence rejected: TCB status ConfigurationAndSWHardeningNeeded not allowed (allowed: UpToDate)"
    );
    let policy = Policy::default().allow_status(TcbStatus::ConfigurationAndSWHardeningNeeded);
    appraise(samples::SGX, &policy).expect("accepted once its status is allowed");

    let policy = policy.block_advisory("intel-sa-00615");
    assert_eq!(
        appraise(samples::SGX, &policy).unwrap_err(),
        AttestError::AdvisoryBlocked("INTEL-SA-00615".into())
    );
}

#[test]
fn tdx_samples_are_up_to_date_on_a_dynamic_platform() {
    for info in [samples::TDX, samples::TDX_TD15EX] {
        let claims = verify(info);
        assert_eq!(claims.tee, TeeKind::IntelTdx, "{}", info.name);
        assert_eq!(claims.tcb_status, TcbStatus::UpToDate, "{}", info.name);
        assert!(claims.advisory_ids.is_empty());
        assert!(!claims.debug);
        for reg in [
            "mrtd",
            "rtmr0",
            "rtmr1",
            "rtmr2",
            "rtmr3",
            "mrconfigid",
            "mrowner",
            "mrownerconfig",
        ] {
            assert_eq!(claims.measurements[reg].0.len(), 48, "{reg}");
        }
        assert_eq!(claims.platform.dynamic_platform, Some(true));
        let window = claims
            .collateral
            .expect("DCAP claims carry the collateral window");
        assert!(window.tcb_info_issued <= info.now && info.now <= window.earliest_expiration);

        // Under the default policy: rejected for exactly that reason, and accepted once allowed.
        assert_eq!(
            appraise(info, &Policy::default()).unwrap_err(),
            AttestError::DynamicPlatformNotAllowed
        );
        let policy = Policy {
            allow_dynamic_platform: true,
            ..Policy::default()
        };
        let accepted = appraise(info, &policy).expect("accepted");
        assert_eq!(accepted, claims);
    }
    let claims = verify(samples::TDX);
    assert_eq!(
        hex::encode(&claims.measurements["mrtd"].0),
        "91eb2b44d141d4ece09f0c75c2c53d247a3c68edd7fafe8a3520c942a604a407de03ae6dc5f87f27428b2538873118b7"
    );
    assert!(
        !claims.measurements.contains_key("mrservicetd"),
        "a TD 1.0 report has no service TD"
    );
    assert!(
        verify(samples::TDX_TD15EX)
            .measurements
            .contains_key("mrservicetd")
    );
}

#[test]
fn outdated_tdx_sample_matches_no_tcb_level() {
    // Its TEE TCB SVN (module SVN 3) is below every level of its TCB info (which all need 5): Intel gives
    // the platform no status at all, and no policy can accept it.
    let (s, c) = load(samples::TDX_OUTDATED);
    let err = DcapVerifier::new()
        .verify(&s.quote, &c, samples::TDX_OUTDATED.now)
        .unwrap_err();
    assert!(matches!(err, AttestError::TcbLevelNotFound(_)), "{err}");
    let lenient = Policy {
        allowed_tcb_statuses: TcbStatus::ALL.into_iter().collect(),
        ..Policy::default()
    };
    assert!(matches!(
        appraise(samples::TDX_OUTDATED, &lenient),
        Err(AttestError::TcbLevelNotFound(_))
    ));
}

#[test]
fn flipped_bytes_in_the_signed_region_are_rejected() {
    for info in samples::ALL {
        let (s, c) = load(info);
        let quote = dcap_qvl::quote::Quote::parse(&s.quote).expect("sample parses");
        let signed_len = quote.signed_length();
        // The v5 body descriptor (type, size) sits between header and report.
        let report_start = if quote.header.version == 5 { 54 } else { 48 };
        let mut checked = 0;
        for pos in (0..signed_len).step_by(7).chain([signed_len - 1, report_start]) {
            let mut tampered = s.quote.clone();
            tampered[pos] ^= 0x01;
            let err = DcapVerifier::new()
                .verify(&tampered, &c, info.now)
                .expect_err("a tampered quote never verifies");
            if pos >= report_start {
                // Report body: only the signature can catch it.
                assert!(
                    matches!(err, AttestError::BadSignature(_)),
                    "{} byte {pos}: {err}",
                    info.name
                );
            } else {
                // Header: a field the verifier refuses, or the signature.
                assert!(
                    matches!(
                        err,
                        AttestError::BadSignature(_)
                            | AttestError::Malformed(_)
                            | AttestError::Unsupported(_)
                    ),
                    "{} byte {pos}: {err}",
                    info.name
                );
            }
            checked += 1;
        }
        assert!(checked >= signed_len / 7, "{}: {checked} positions", info.name);
    }
}

#[test]
fn tampered_auth_data_and_truncation_are_rejected_without_panic() {
    let (s, c) = load(samples::TDX);
    let signed_len = dcap_qvl::quote::Quote::parse(&s.quote).unwrap().signed_length();
    // After the signed region: auth data length (4), quote signature (64), attestation key (64), then the
    // certification data: QE report (384), its signature (64), QE auth data. (The PEM chain that follows
    // ends with a copy of Intel's root certificate, which the verifier ignores in favour of its own.)
    let authenticated_end = signed_len + 4 + 64 + 64 + 6 + 384 + 64 + 2 + 32;
    for pos in (signed_len..authenticated_end).step_by(5) {
        let mut tampered = s.quote.clone();
        tampered[pos] ^= 0x80;
        assert!(
            DcapVerifier::new()
                .verify(&tampered, &c, samples::TDX.now)
                .is_err(),
            "byte {pos}"
        );
    }
    // The sample is followed by 70 bytes of zero padding, which is accepted; a non-zero byte there is not.
    let auth_len = u32::from_le_bytes(s.quote[signed_len..signed_len + 4].try_into().unwrap()) as usize;
    let end = signed_len + 4 + auth_len;
    assert!(end < s.quote.len() && s.quote[end..].iter().all(|&b| b == 0));
    DcapVerifier::new()
        .verify(&s.quote[..end], &c, samples::TDX.now)
        .expect("without its padding");
    let mut trailing = s.quote.clone();
    *trailing.last_mut().unwrap() = 1;
    let err = DcapVerifier::new()
        .verify(&trailing, &c, samples::TDX.now)
        .unwrap_err();
    assert!(matches!(err, AttestError::Malformed(_)), "{err}");
    for len in [0, 1, 47, 48, 100, signed_len, end - 1] {
        let err = DcapVerifier::new()
            .verify(&s.quote[..len], &c, samples::TDX.now)
            .unwrap_err();
        assert!(
            matches!(err, AttestError::Malformed(_) | AttestError::BadSignature(_)),
            "len {len}: {err}"
        );
    }
}

#[test]
fn collateral_outside_its_validity_is_rejected_with_its_reason() {
    for info in samples::ALL {
        let (s, c) = load(info);
        let verifier = DcapVerifier::new();
        let expired = info.now + 60 * 86_400;
        let err = verifier.verify(&s.quote, &c, expired).unwrap_err();
        assert!(
            matches!(err, AttestError::CollateralExpired(_)),
            "{}: {err}",
            info.name
        );
        assert!(err.to_string().contains("valid until"), "{err}");

        let before_issue = info.now - 5 * 86_400;
        let err = verifier.verify(&s.quote, &c, before_issue).unwrap_err();
        assert!(
            matches!(err, AttestError::CollateralNotYetValid(_)),
            "{}: {err}",
            info.name
        );
    }
}

#[test]
fn collateral_from_another_platform_or_tampered_is_rejected() {
    let (tdx, _) = load(samples::TDX);
    let (_, sgx_collateral) = load(samples::SGX);
    // The SGX sample's collateral is valid at the TDX sample's time too, but is for another FMSPC/TEE.
    let err = DcapVerifier::new()
        .verify(&tdx.quote, &sgx_collateral, samples::TDX.now)
        .unwrap_err();
    assert!(err.is_rejection(), "{err}");

    let json = String::from_utf8(tdx.collateral_json.clone()).unwrap();
    // A changed TCB level in the signed TCB info JSON breaks Intel's signature over it.
    let forged = json.replacen("UpToDate", "OutOfDate", 1);
    assert_ne!(forged, json);
    let forged = Collateral::from_json(forged.as_bytes()).unwrap();
    let err = DcapVerifier::new()
        .verify(&tdx.quote, &forged, samples::TDX.now)
        .unwrap_err();
    assert!(matches!(err, AttestError::BadSignature(_)), "{err}");

    for bad in [&b""[..], b"{}", b"not json", &tdx.collateral_json[..100]] {
        assert!(matches!(
            Collateral::from_json(bad),
            Err(AttestError::MalformedCollateral(_))
        ));
    }
}

#[test]
fn report_data_binding_is_checked() {
    let (s, collateral) = load(samples::TDX);
    let policy = Policy {
        allow_dynamic_platform: true,
        ..Policy::default()
    };
    let evidence = Evidence::Dcap {
        quote: s.quote,
        collateral,
    };
    let claims = verify(samples::TDX);
    let mut exact = [0u8; 64];
    exact.copy_from_slice(&claims.report_data.0);
    verify_and_appraise(
        &evidence,
        &policy,
        &ExpectedReportData::Exact(exact),
        samples::TDX.now,
    )
    .expect("the quote's own report data is accepted");

    let wrong_nonce = ExpectedReportData::bound(b"another nonce", &[7; 32]);
    let err = verify_and_appraise(&evidence, &policy, &wrong_nonce, samples::TDX.now).unwrap_err();
    match &err {
        AttestError::ReportDataMismatch { found, .. } => assert_eq!(found, &hex::encode(exact)),
        other => panic!("expected a report-data mismatch, got {other}"),
    }
}

#[test]
fn disallowed_measurement_and_debug_are_rejected_with_their_reasons() {
    let claims = verify(samples::TDX);
    let base = Policy {
        allow_dynamic_platform: true,
        ..Policy::default()
    };

    let mut allowed = Measurements::new();
    allowed.insert("mrtd".into(), claims.measurements["mrtd"].clone());
    allowed.insert("rtmr0".into(), claims.measurements["rtmr0"].clone());
    let policy = base.clone().allow_measurements(vec![allowed.clone()]);
    policy
        .appraise(&claims, &ExpectedReportData::Unchecked, samples::TDX.now)
        .expect("its own measurement");

    let mut other = allowed.clone();
    other.insert("rtmr0".into(), veil_attest::HexBytes(vec![0; 48]));
    let policy = base.clone().allow_measurements(vec![other]);
    let err = policy
        .appraise(&claims, &ExpectedReportData::Unchecked, samples::TDX.now)
        .unwrap_err();
    assert!(
        matches!(&err, AttestError::MeasurementNotAllowed(m) if m.contains("rtmr0")),
        "{err}"
    );

    // No valid debug quote can be made without Intel's keys: the policy rejects claims that say debug.
    let mut debug = claims.clone();
    debug.debug = true;
    assert_eq!(
        base.appraise(&debug, &ExpectedReportData::Unchecked, samples::TDX.now)
            .unwrap_err(),
        AttestError::DebugEnabled
    );
    let allow_debug = Policy {
        allow_debug: true,
        ..base
    };
    allow_debug
        .appraise(&debug, &ExpectedReportData::Unchecked, samples::TDX.now)
        .unwrap();
}

#[test]
fn evidence_envelope_round_trips_and_verifies() {
    let (s, collateral) = load(samples::TDX_TD15EX);
    let evidence = Evidence::Dcap {
        quote: s.quote.clone(),
        collateral,
    };
    let bytes = evidence.to_bytes();
    assert!(bytes.starts_with(b"VEILEVD1\x01"));
    let back = Evidence::from_bytes(&bytes).unwrap();
    assert_eq!(
        back.verify(samples::TDX_TD15EX.now).unwrap(),
        verify(samples::TDX_TD15EX)
    );
    for len in [0, 8, 9, 12, 13 + s.quote.len(), bytes.len() - 1] {
        assert!(Evidence::from_bytes(&bytes[..len]).is_err(), "len {len}");
    }
    let mut trailing = bytes.clone();
    trailing.push(0);
    assert!(matches!(
        Evidence::from_bytes(&trailing),
        Err(AttestError::Malformed(_))
    ));
}

#[test]
fn garbage_never_panics() {
    // A deterministic xorshift stream: random lengths and bytes, some behind a valid quote header.
    let mut state = 0x9e37_79b9_7f4a_7c15_u64;
    let mut next = move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    };
    let (s, c) = load(samples::TDX);
    let verifier = DcapVerifier::new();
    for round in 0..300 {
        let len = (next() % 1200) as usize;
        let mut bytes: Vec<u8> = (0..len).map(|_| next() as u8).collect();
        if round % 2 == 0 && bytes.len() >= 48 {
            bytes[..48].copy_from_slice(&s.quote[..48]);
        }
        assert!(verifier.verify(&bytes, &c, samples::TDX.now).is_err());
        assert!(
            Evidence::from_bytes(&bytes).is_err(),
            "random bytes are not an envelope"
        );
        assert!(Collateral::from_json(&bytes).is_err());
        let mut sim = b"VEILSIM1".to_vec();
        sim.extend_from_slice(&bytes);
        assert!(veil_attest::SimVerifier.verify(&sim, 0).is_err());
    }
    // Random spans of the real quote overwritten with noise.
    for _ in 0..100 {
        let mut q = s.quote.clone();
        let start = (next() as usize) % q.len();
        let end = (start + 1 + (next() as usize) % 64).min(q.len());
        for b in &mut q[start..end] {
            *b = next() as u8;
        }
        let _ = verifier.verify(&q, &c, samples::TDX.now);
    }
}
