//! `veil bench confidential --json` with tiny settings: the real model, an in-process worker (simulated
//! TEE) and gateway on loopback. Checks the report's shape and that every measurement is a positive
//! number; never its speed (timing never decides a test).

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::process::Command;

#[test]
fn bench_confidential_reports_every_measurement() {
    let out = Command::new(env!("CARGO_BIN_EXE_veil"))
        .env_remove("VEIL_LOG")
        .args([
            "bench",
            "confidential",
            "--json",
            "--prompts",
            "1",
            "--max-tokens",
            "4",
        ])
        .args(["--repetitions", "1", "--load-repetitions", "1", "--threads", "2"])
        // Longer than the answer: the worker sends the first token, then the other three in one frame.
        .args(["--stream-interval-ms", "3600000"])
        .output()
        .expect("run veil bench confidential");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "veil bench confidential failed: {stderr}");
    let r: serde_json::Value = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("not JSON ({e}): {}", String::from_utf8_lossy(&out.stdout)));

    let positive = |path: &str| {
        let v = r.pointer(path).unwrap_or_else(|| panic!("{path} missing: {r:#}"));
        let x = v
            .as_f64()
            .unwrap_or_else(|| panic!("{path} is not a number: {v}"));
        assert!(x.is_finite() && x > 0.0, "{path} = {x}");
        x
    };
    for p in [
        "/decode_tokens_per_s/direct",
        "/decode_tokens_per_s/via_gateway",
        "/decode_tokens_per_s/ratio",
        "/decode_tokens_per_s/direct_best",
        "/decode_tokens_per_s/via_gateway_best",
        "/decode_tokens_per_s/ratio_best",
        "/decode_tokens_per_s/goal_ratio_at_least",
        "/ttft_ms/direct",
        "/ttft_ms/via_gateway",
        "/ttft_ms/direct_best",
        "/ttft_ms/via_gateway_best",
        "/ttft_ms/goal_added_at_most",
        "/load_seconds/plain_file",
        "/load_seconds/bundle",
        "/load_seconds/ratio",
        "/load_seconds/ratio_of_medians",
        "/load_seconds/plain_file_best",
        "/load_seconds/bundle_best",
        "/load_seconds/ratio_best",
        "/load_seconds/goal_ratio_at_most",
        "/load_seconds/bundle_open",
        "/load_seconds/plain_file_mapped",
        // Each load reads 94 MiB at least: some 10 ms ticks of CPU.
        "/load_seconds/plain_file_cpu",
        "/load_seconds/bundle_cpu",
        // The gateway path's HTTP, sealing and opening run outside the engine; the direct path's
        // caller thread wakes for each token.
        "/decode_tokens_per_s/cpu_outside_engine_us_per_token/direct",
        "/decode_tokens_per_s/cpu_outside_engine_us_per_token/via_gateway",
        "/settings/machine_threads",
        "/settings/engine_threads",
        "/model_bytes",
    ] {
        positive(p);
    }
    // The added TTFT may be negative on a noisy machine; the medians' one must be their difference, and
    // with one pair the pairs' median is that pair's difference too.
    let added = r["ttft_ms"]["added_of_medians"]
        .as_f64()
        .expect("ttft_ms.added_of_medians");
    let diff = positive("/ttft_ms/via_gateway") - positive("/ttft_ms/direct");
    assert!((added - diff).abs() < 0.01, "{added} vs {diff}");
    let paired = r["ttft_ms"]["added"].as_f64().expect("ttft_ms.added");
    assert!((paired - diff).abs() < 0.01, "{paired} vs {diff}");
    let ratio = positive("/decode_tokens_per_s/via_gateway") / positive("/decode_tokens_per_s/direct");
    for p in [
        "/decode_tokens_per_s/ratio",
        "/decode_tokens_per_s/ratio_of_medians",
    ] {
        assert!((positive(p) - ratio).abs() < 0.001, "{p}: {r:#}");
    }
    assert!(
        r["load_seconds"]["compares"]
            .as_str()
            .is_some_and(|c| c.contains("no mmap"))
    );
    assert!(positive("/load_seconds/bundle_open") < positive("/load_seconds/bundle"));
    // Two HTTP hops, sealing and opening cost more than waking one thread per token.
    assert!(
        positive("/decode_tokens_per_s/cpu_outside_engine_us_per_token/via_gateway")
            > positive("/decode_tokens_per_s/cpu_outside_engine_us_per_token/direct"),
        "{r:#}"
    );
    // One load of each kind: the pairs' median, the medians' ratio and the quartiles are that pair's ratio.
    let load_ratio = positive("/load_seconds/bundle") / positive("/load_seconds/plain_file");
    for p in ["/load_seconds/ratio", "/load_seconds/ratio_of_medians"] {
        assert!((positive(p) - load_ratio).abs() < 0.01, "{p}: {r:#}");
    }
    for q in [0, 1] {
        let quartile = r["load_seconds"]["ratio_quartiles"][q]
            .as_f64()
            .expect("load quartile");
        assert!((quartile - load_ratio).abs() < 0.01, "quartile {q}: {r:#}");
    }
    assert_eq!(r["settings"]["engine_threads"], 2);
    assert_eq!(r["settings"]["max_tokens"], 4);
    assert_eq!(r["settings"]["prompts"], 1);
    assert_eq!(r["settings"]["tee"], "simulated");
    assert_eq!(r["decode_tokens_per_s"]["samples"], 1);
    assert_eq!(r["settings"]["stream_interval_ms"], 3_600_000);
    assert_eq!(
        r["decode_tokens_per_s"]["events_per_token"]["via_gateway"], 0.5,
        "two content chunks for four tokens: {r:#}"
    );
    assert!(
        positive("/decode_tokens_per_s/events_per_token/direct") > 0.5,
        "{r:#}"
    );
    let counts = r["completion_tokens"].as_array().expect("completion_tokens");
    assert_eq!(counts.len(), 1);
    assert_eq!(counts[0]["direct"], 4, "greedy, 4 tokens: {r:#}");
    assert_eq!(counts[0]["via_gateway"], 4, "greedy, 4 tokens: {r:#}");
}
