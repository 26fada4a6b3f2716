//! `veil attest …` run as the real binary: exit codes, one-line reasons, claims JSON, hex and binary
//! quote files, and the simulated TEE round trip.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::PathBuf;
use std::process::{Command, Output};

/// Rejected evidence exits with this status (see `veil_cli::attest`).
const REJECTED: i32 = 3;
const SGX_NOW: &str = "1750377600"; // 2025-06-20T00:00:00Z, inside the SGX and TDX samples' collateral
const TDX_NOW: &str = "1750377600";
const OUTDATED_NOW: &str = "1771459200"; // 2026-02-19T00:00:00Z

/// dcap-qvl's sample folder in the cargo registry (or `VEIL_DCAP_SAMPLES`).
fn samples() -> PathBuf {
    if let Some(dir) = std::env::var_os("VEIL_DCAP_SAMPLES") {
        return PathBuf::from(dir);
    }
    let cargo_home = std::env::var_os("CARGO_HOME")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(std::env::var_os("HOME").expect("HOME")).join(".cargo"));
    let registry = cargo_home.join("registry/src");
    std::fs::read_dir(&registry)
        .unwrap_or_else(|e| panic!("{}: {e}", registry.display()))
        .flatten()
        .map(|e| e.path().join("dcap-qvl-0.7.1/sample"))
        .find(|p| p.join("tdx_quote").is_file())
        .unwrap_or_else(|| {
            panic!(
                "dcap-qvl's sample quotes not found under {}; run `cargo fetch` or set VEIL_DCAP_SAMPLES",
                registry.display()
            )
        })
}

fn to_hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn from_hex(s: &str) -> Vec<u8> {
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
        .collect()
}

fn veil(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_veil"))
        .args(args)
        .env_remove("VEIL_LOG")
        .output()
        .expect("run veil")
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

fn verify_sample(name: &str, now: &str, extra: &[&str]) -> Output {
    let dir = samples();
    let quote = dir.join(name);
    let collateral = dir.join(format!("{name}_collateral.json"));
    let mut args = vec![
        "attest",
        "verify",
        "--quote",
        quote.to_str().unwrap(),
        "--collateral",
    ];
    args.push(collateral.to_str().unwrap());
    args.extend(["--now", now]);
    args.extend(extra);
    veil(&args)
}

/// Asserts a rejection: status 3, nothing on stdout, exactly one line on stderr; returns that line.
fn rejected(o: &Output) -> String {
    assert_eq!(
        o.status.code(),
        Some(REJECTED),
        "stdout: {}\nstderr: {}",
        stdout(o),
        stderr(o)
    );
    assert!(o.stdout.is_empty(), "{}", stdout(o));
    let err = stderr(o);
    let lines: Vec<&str> = err.lines().collect();
    assert_eq!(lines.len(), 1, "one line: {err}");
    assert!(lines[0].starts_with("rejected: "), "{err}");
    lines[0].to_string()
}

fn accepted(o: &Output) -> serde_json::Value {
    assert!(o.status.success(), "stderr: {}", stderr(o));
    serde_json::from_slice(&o.stdout).expect("claims JSON on stdout")
}

#[test]
fn sgx_sample_rejected_for_its_tcb_status_then_accepted_when_allowed() {
    let line = rejected(&verify_sample("sgx_quote", SGX_NOW, &[]));
    assert_eq!(
        line,
        "rejected: TCB status ConfigurationAndSWHardeningNeeded not allowed (allowed: UpToDate)"
    );

    let claims = accepted(&verify_sample(
        "sgx_quote",
        SGX_NOW,
        &["--allow-status", "ConfigurationAndSWHardeningNeeded"],
    ));
    assert_eq!(claims["tee"], "intel-sgx");
    assert_eq!(claims["simulated"], false);
    assert_eq!(claims["tcb_status"], "ConfigurationAndSWHardeningNeeded");
    assert_eq!(
        claims["advisory_ids"],
        serde_json::json!(["INTEL-SA-00289", "INTEL-SA-00615"])
    );
    assert_eq!(
        claims["measurements"]["mrenclave"],
        "33d8736db756ed4997e04ba358d27833188f1932ff7b1d156904d3f560452fbb"
    );

    let line = rejected(&verify_sample(
        "sgx_quote",
        SGX_NOW,
        &[
            "--allow-status",
            "ConfigurationAndSWHardeningNeeded",
            "--block-advisory",
            "INTEL-SA-00289",
        ],
    ));
    assert_eq!(line, "rejected: advisory INTEL-SA-00289 is blocked by policy");
}

#[test]
fn tdx_samples_need_dynamic_platform_allowed() {
    for name in ["tdx_quote", "tdx_quote_td15ex"] {
        let now = if name == "tdx_quote" {
            TDX_NOW
        } else {
            "1791504000"
        };
        let line = rejected(&verify_sample(name, now, &[]));
        assert_eq!(line, "rejected: dynamic platform not allowed by policy");
        let claims = accepted(&verify_sample(name, now, &["--allow-dynamic-platform"]));
        assert_eq!(claims["tee"], "intel-tdx");
        assert_eq!(claims["tcb_status"], "UpToDate");
        assert_eq!(claims["debug"], false);
        assert_eq!(claims["measurements"]["mrtd"].as_str().unwrap().len(), 96);
    }
}

#[test]
fn outdated_sample_and_expired_collateral_are_rejected_with_their_reasons() {
    let line = rejected(&verify_sample(
        "tdx_quote_outdated",
        OUTDATED_NOW,
        &["--allow-dynamic-platform"],
    ));
    assert!(
        line.starts_with("rejected: platform TCB matches no level"),
        "{line}"
    );

    let line = rejected(&verify_sample(
        "tdx_quote",
        "1760000000",
        &["--allow-dynamic-platform"],
    ));
    assert!(
        line.starts_with("rejected: collateral expired: TCB info was valid until 2025-07-19T10:16:03Z"),
        "{line}"
    );
    let line = rejected(&verify_sample(
        "tdx_quote",
        "1700000000",
        &["--allow-dynamic-platform"],
    ));
    assert!(line.starts_with("rejected: collateral not yet valid"), "{line}");
}

#[test]
fn hex_and_binary_quote_files_give_the_same_claims() {
    let dir = samples();
    let tmp = tempfile::tempdir().unwrap();
    let hex_file = tmp.path().join("quote.hex");
    let raw = std::fs::read(dir.join("tdx_quote")).unwrap();
    std::fs::write(&hex_file, format!("0x{}\n", to_hex(&raw))).unwrap();
    let collateral = dir.join("tdx_quote_collateral.json");
    let from_hex = accepted(&veil(&[
        "attest",
        "verify",
        "--quote",
        hex_file.to_str().unwrap(),
        "--collateral",
        collateral.to_str().unwrap(),
        "--now",
        TDX_NOW,
        "--allow-dynamic-platform",
    ]));
    let from_raw = accepted(&verify_sample(
        "tdx_quote",
        TDX_NOW,
        &["--allow-dynamic-platform"],
    ));
    assert_eq!(from_hex, from_raw);
}

#[test]
fn tampered_quote_wrong_binding_and_measurement_are_rejected() {
    let dir = samples();
    let tmp = tempfile::tempdir().unwrap();
    let mut quote = std::fs::read(dir.join("tdx_quote")).unwrap();
    quote[48 + 200] ^= 1; // inside the TD report
    let tampered = tmp.path().join("tampered");
    std::fs::write(&tampered, &quote).unwrap();
    let collateral = dir.join("tdx_quote_collateral.json");
    let line = rejected(&veil(&[
        "attest",
        "verify",
        "--quote",
        tampered.to_str().unwrap(),
        "--collateral",
        collateral.to_str().unwrap(),
        "--now",
        TDX_NOW,
        "--allow-dynamic-platform",
    ]));
    assert!(line.starts_with("rejected: signature invalid"), "{line}");

    let line = rejected(&verify_sample(
        "tdx_quote",
        TDX_NOW,
        &[
            "--allow-dynamic-platform",
            "--nonce",
            "00112233",
            "--keys-hash",
            &"ab".repeat(32),
        ],
    ));
    assert!(
        line.starts_with("rejected: report data does not match the expected binding"),
        "{line}"
    );

    let line = rejected(&verify_sample(
        "tdx_quote",
        TDX_NOW,
        &[
            "--allow-dynamic-platform",
            "--allow-measurement",
            &format!("mrtd={}", "00".repeat(48)),
        ],
    ));
    assert!(line.starts_with("rejected: measurement not allowed"), "{line}");

    let claims = accepted(&verify_sample(
        "tdx_quote",
        TDX_NOW,
        &["--allow-dynamic-platform"],
    ));
    let mrtd = claims["measurements"]["mrtd"].as_str().unwrap();
    let rd = claims["report_data"].as_str().unwrap();
    accepted(&verify_sample(
        "tdx_quote",
        TDX_NOW,
        &[
            "--allow-dynamic-platform",
            "--allow-measurement",
            &format!("mrtd={mrtd}"),
            "--report-data",
            rd,
        ],
    ));
}

#[test]
fn bad_arguments_are_errors_not_rejections() {
    let o = verify_sample("tdx_quote", TDX_NOW, &["--allow-status", "Fine"]);
    assert_eq!(o.status.code(), Some(1));
    assert!(stderr(&o).contains("unknown TCB status"), "{}", stderr(&o));
    let o = veil(&[
        "attest",
        "verify",
        "--quote",
        "/nonexistent/quote",
        "--collateral",
        "/nonexistent/c.json",
    ]);
    assert_eq!(o.status.code(), Some(1));
    assert!(stderr(&o).contains("/nonexistent/quote"), "{}", stderr(&o));
}

#[test]
fn simulated_evidence_round_trip() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    let rd = "5a".repeat(64);
    let o = veil(&[
        "attest",
        "sim",
        "--report-data",
        &rd,
        "--data-dir",
        data.to_str().unwrap(),
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(
        stderr(&o).contains("SIMULATED TEE"),
        "a loud warning: {}",
        stderr(&o)
    );
    let evidence_hex = stdout(&o).trim().to_string();
    assert!(evidence_hex.starts_with(&to_hex(b"VEILSIM1")), "{evidence_hex}");
    let file = tmp.path().join("evidence.hex");
    std::fs::write(&file, &evidence_hex).unwrap();

    let line = rejected(&veil(&["attest", "verify", "--evidence", file.to_str().unwrap()]));
    assert!(
        line.starts_with("rejected: simulated TEE evidence is not allowed by this policy"),
        "{line}"
    );

    let claims = accepted(&veil(&[
        "attest",
        "verify",
        "--evidence",
        file.to_str().unwrap(),
        "--allow-simulated",
    ]));
    assert_eq!(claims["simulated"], true);
    assert_eq!(claims["tee"], "simulated");
    assert_eq!(claims["report_data"], rd);

    let line = rejected(&veil(&[
        "attest",
        "verify",
        "--evidence",
        file.to_str().unwrap(),
        "--allow-simulated",
        "--report-data",
        &"00".repeat(64),
    ]));
    assert!(line.starts_with("rejected: report data does not match"), "{line}");

    // Binary form, tampered: rejected for its signature.
    let mut raw = from_hex(&evidence_hex);
    raw[40] ^= 1;
    let bin = tmp.path().join("evidence.bin");
    std::fs::write(&bin, &raw).unwrap();
    let line = rejected(&veil(&[
        "attest",
        "verify",
        "--evidence",
        bin.to_str().unwrap(),
        "--allow-simulated",
    ]));
    assert!(line.starts_with("rejected: signature invalid"), "{line}");

    // Same data directory, same dev key: the second run signs with it.
    let again = veil(&[
        "attest",
        "sim",
        "--report-data",
        &rd,
        "--data-dir",
        data.to_str().unwrap(),
    ]);
    assert_eq!(&stdout(&again).trim()[..24 + 64], &evidence_hex[..24 + 64]);

    let o = veil(&[
        "attest",
        "sim",
        "--report-data",
        "abcd",
        "--data-dir",
        data.to_str().unwrap(),
    ]);
    assert_eq!(o.status.code(), Some(1));
    assert!(stderr(&o).contains("must be 64 bytes"), "{}", stderr(&o));
}
