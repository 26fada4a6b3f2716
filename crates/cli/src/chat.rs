//! `veil chat`: chat with a model through the plain (non-confidential) engine, and
//! `veil bench engine`: its speed on this machine.

use std::io::Write;
use std::ops::ControlFlow;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Instant;

use anyhow::Context;
use clap::Args;
use veil_engine::{ChatMessage, ChatRequest, Engine, LlamaConfig, LlamaEngine, SamplingParams};
use veil_models::DEFAULT_MODEL;

use crate::model::{DataDirArgs, resolve_or_fetch};

#[derive(Debug, Args)]
pub struct ChatArgs {
    /// The prompt (the user's message).
    pub prompt: String,
    /// Model: a catalogue name (fetched on first use), an imported model's name, or a GGUF path.
    #[arg(long, short, default_value = DEFAULT_MODEL)]
    pub model: String,
    /// A system message to put before the prompt.
    #[arg(long)]
    pub system: Option<String>,
    /// Sampling temperature; 0 is greedy and deterministic.
    #[arg(long, default_value_t = 0.0)]
    pub temperature: f32,
    /// Most tokens to generate.
    #[arg(long, default_value_t = 512)]
    pub max_tokens: u32,
    /// Random seed: the same seed gives the same answer (default: random).
    #[arg(long)]
    pub seed: Option<u32>,
    /// Nucleus sampling threshold (1 = off).
    #[arg(long, default_value_t = 0.95)]
    pub top_p: f32,
    /// Keep only the K most likely tokens (0 = off).
    #[arg(long, default_value_t = 40)]
    pub top_k: u32,
    /// Stop before this text (repeatable).
    #[arg(long, value_name = "TEXT")]
    pub stop: Vec<String>,
    /// Presence penalty, -2..2.
    #[arg(long, default_value_t = 0.0, allow_negative_numbers = true)]
    pub presence_penalty: f32,
    /// Frequency penalty, -2..2.
    #[arg(long, default_value_t = 0.0, allow_negative_numbers = true)]
    pub frequency_penalty: f32,
    /// Threads to decode with (default: all available CPUs).
    #[arg(long)]
    pub threads: Option<usize>,
    /// Context window in tokens (default: the model's, at most 4096).
    #[arg(long)]
    pub ctx_size: Option<u32>,
    /// Print the finish reason, token usage and speed on stderr at the end.
    #[arg(long)]
    pub stats: bool,
    #[command(flatten)]
    pub dir: DataDirArgs,
}

pub fn run(args: ChatArgs) -> anyhow::Result<ExitCode> {
    let path = resolve_or_fetch(&args.dir.store()?, &args.model)?;
    let config = LlamaConfig {
        threads: args.threads,
        slots: 1,
        n_ctx: args.ctx_size,
        ..LlamaConfig::default()
    };
    let engine =
        LlamaEngine::load_file(&path, config).with_context(|| format!("cannot load {}", path.display()))?;

    let mut messages = Vec::new();
    if let Some(system) = args.system {
        messages.push(ChatMessage::system(system));
    }
    messages.push(ChatMessage::user(args.prompt));
    let params = SamplingParams {
        temperature: args.temperature,
        top_p: args.top_p,
        top_k: args.top_k,
        seed: args.seed,
        max_tokens: Some(args.max_tokens),
        stop: args.stop,
        presence_penalty: args.presence_penalty,
        frequency_penalty: args.frequency_penalty,
        ignore_eos: false,
    };

    let mut out = std::io::stdout().lock();
    let mut write_error = None;
    let completion = engine.chat_stream(&ChatRequest { messages, params }, &mut |piece| {
        match out.write_all(piece.as_bytes()).and_then(|()| out.flush()) {
            Ok(()) => ControlFlow::Continue(()),
            // stdout closed (e.g. `| head`): stop generating.
            Err(e) => {
                write_error = Some(e);
                ControlFlow::Break(())
            }
        }
    })?;
    if write_error.is_none() {
        let _ = writeln!(out);
    }
    if args.stats {
        let u = completion.usage;
        let t = completion.timings;
        eprintln!(
            "finish: {}; tokens: {} prompt + {} completion; {:.1} prompt tok/s, {:.1} generation tok/s",
            completion.finish_reason.as_str(),
            u.prompt_tokens,
            u.completion_tokens,
            f64::from(u.prompt_tokens) / t.prompt_seconds.max(1e-9),
            f64::from(u.completion_tokens) / t.generation_seconds.max(1e-9),
        );
    }
    Ok(ExitCode::SUCCESS)
}

/// `veil bench engine`.
#[derive(Debug, clap::Args)]
pub struct EngineBenchArgs {
    /// Print one JSON object instead of a table.
    #[arg(long)]
    pub json: bool,
    /// Model to measure.
    #[arg(long, default_value = DEFAULT_MODEL)]
    pub model: String,
    /// Prompt tokens for the prompt-processing test (llama-bench's -p).
    #[arg(long, default_value_t = 128)]
    pub prompt_tokens: usize,
    /// Tokens for the decode test (llama-bench's -n).
    #[arg(long, default_value_t = 64)]
    pub gen_tokens: u32,
    /// Repetitions of each test; the mean is reported (llama-bench's -r).
    #[arg(long, default_value_t = 5)]
    pub repetitions: usize,
    /// Thread counts to measure.
    #[arg(long, value_delimiter = ',', default_value = "1,2")]
    pub threads: Vec<usize>,
    /// Path of llama.cpp's own `llama-bench`: run it in the same run, on the same model and
    /// settings, and print our speed as a ratio of its speed.
    #[arg(long, value_name = "PATH")]
    pub llama_bench: Option<PathBuf>,
    #[command(flatten)]
    pub dir: DataDirArgs,
}

#[derive(Debug, serde::Serialize)]
struct ThreadResult {
    threads: usize,
    prompt_tokens_per_s: f64,
    decode_tokens_per_s: f64,
    #[serde(skip_serializing_if = "Option::is_none")]
    llama_bench_prompt_tokens_per_s: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    llama_bench_decode_tokens_per_s: Option<f64>,
    /// Ours divided by llama-bench's (1.0 = the same speed).
    #[serde(skip_serializing_if = "Option::is_none")]
    prompt_ratio_vs_llama_bench: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    decode_ratio_vs_llama_bench: Option<f64>,
}

#[derive(Debug, serde::Serialize)]
struct BenchReport {
    model: String,
    model_path: String,
    model_bytes: u64,
    prompt_tokens: usize,
    gen_tokens: u32,
    repetitions: usize,
    /// Seconds to load the model (header check, mmap, first context).
    load_seconds: f64,
    /// Peak resident memory of this process (VmHWM), bytes.
    peak_rss_bytes: Option<u64>,
    /// Whether this binary was built with AVX2 enabled for Rust code (`target-cpu=native` here).
    built_with_avx2: bool,
    results: Vec<ThreadResult>,
    /// Speed with the most threads divided by speed with the fewest (same run).
    #[serde(skip_serializing_if = "Option::is_none")]
    thread_scaling: Option<Scaling>,
}

#[derive(Debug, serde::Serialize)]
struct Scaling {
    from_threads: usize,
    to_threads: usize,
    prompt: f64,
    decode: f64,
}

pub fn bench(args: EngineBenchArgs) -> anyhow::Result<ExitCode> {
    anyhow::ensure!(
        args.repetitions > 0 && args.prompt_tokens > 0 && args.gen_tokens > 0,
        "nothing to measure"
    );
    anyhow::ensure!(
        !args.threads.is_empty() && !args.threads.contains(&0),
        "--threads needs counts ≥ 1"
    );
    let path = resolve_or_fetch(&args.dir.store()?, &args.model)?;
    let model_bytes = std::fs::metadata(&path).map(|m| m.len()).unwrap_or(0);

    let mut load_seconds = None;
    let mut results = Vec::new();
    for &threads in &args.threads {
        let config = LlamaConfig {
            threads: Some(threads),
            slots: 1,
            n_ctx: Some(u32::try_from(args.prompt_tokens)? + args.gen_tokens + 16),
            n_batch: u32::try_from(args.prompt_tokens.max(1))?.min(2048),
            chat_template: None,
        };
        let started = Instant::now();
        let engine = LlamaEngine::load_file(&path, config)?;
        load_seconds.get_or_insert(started.elapsed().as_secs_f64());
        let (pp, tg) = measure(&engine, args.prompt_tokens, args.gen_tokens, args.repetitions)?;
        let theirs = match &args.llama_bench {
            Some(bin) => Some(run_llama_bench(bin, &path, threads, &args)?),
            None => None,
        };
        results.push(ThreadResult {
            threads,
            prompt_tokens_per_s: pp,
            decode_tokens_per_s: tg,
            llama_bench_prompt_tokens_per_s: theirs.map(|t| t.0),
            llama_bench_decode_tokens_per_s: theirs.map(|t| t.1),
            prompt_ratio_vs_llama_bench: theirs.map(|t| pp / t.0),
            decode_ratio_vs_llama_bench: theirs.map(|t| tg / t.1),
        });
    }
    let thread_scaling = match (results.first(), results.last()) {
        (Some(a), Some(b)) if results.len() > 1 => Some(Scaling {
            from_threads: a.threads,
            to_threads: b.threads,
            prompt: b.prompt_tokens_per_s / a.prompt_tokens_per_s,
            decode: b.decode_tokens_per_s / a.decode_tokens_per_s,
        }),
        _ => None,
    };
    let report = BenchReport {
        model: args.model.clone(),
        model_path: path.display().to_string(),
        model_bytes,
        prompt_tokens: args.prompt_tokens,
        gen_tokens: args.gen_tokens,
        repetitions: args.repetitions,
        load_seconds: load_seconds.unwrap_or(0.0),
        peak_rss_bytes: peak_rss_bytes(),
        built_with_avx2: cfg!(target_feature = "avx2"),
        results,
        thread_scaling,
    };

    let mut out = std::io::stdout().lock();
    if args.json {
        serde_json::to_writer_pretty(&mut out, &report)?;
        writeln!(out)?;
        return Ok(ExitCode::SUCCESS);
    }
    writeln!(
        out,
        "model {} ({:.1} MiB), load {:.3} s",
        report.model,
        model_bytes as f64 / 1048576.0,
        report.load_seconds
    )?;
    writeln!(
        out,
        "{:>7}  {:>14}  {:>14}  {:>16}  {:>16}",
        "threads",
        format!("pp{} tok/s", args.prompt_tokens),
        format!("tg{} tok/s", args.gen_tokens),
        "pp vs llama-bench",
        "tg vs llama-bench"
    )?;
    for r in &report.results {
        let ratio = |x: Option<f64>| x.map_or_else(|| "-".to_owned(), |v| format!("{v:.3}"));
        writeln!(
            out,
            "{:>7}  {:>14.1}  {:>14.1}  {:>16}  {:>16}",
            r.threads,
            r.prompt_tokens_per_s,
            r.decode_tokens_per_s,
            ratio(r.prompt_ratio_vs_llama_bench),
            ratio(r.decode_ratio_vs_llama_bench)
        )?;
    }
    if let Some(s) = &report.thread_scaling {
        writeln!(
            out,
            "{} vs {} threads: prompt ×{:.2}, decode ×{:.2}",
            s.to_threads, s.from_threads, s.prompt, s.decode
        )?;
    }
    if let Some(rss) = report.peak_rss_bytes {
        writeln!(out, "peak RSS {:.1} MiB", rss as f64 / 1048576.0)?;
    }
    Ok(ExitCode::SUCCESS)
}

/// Mean prompt-processing and decode speed (tokens/s) over `reps` runs, after one warm-up run.
/// Like llama-bench, the prompt test evaluates `n_prompt` tokens, and the decode test generates
/// `n_gen` tokens one at a time (greedy, past any end-of-text token).
fn measure(engine: &LlamaEngine, n_prompt: usize, n_gen: u32, reps: usize) -> anyhow::Result<(f64, f64)> {
    const TEXT: &str = "The quick brown fox jumps over the lazy dog while the river runs to the sea. ";
    let mut tokens = Vec::with_capacity(n_prompt);
    while tokens.len() < n_prompt {
        tokens.extend(engine.tokenize_text(TEXT));
    }
    tokens.truncate(n_prompt);
    let prompt_only = SamplingParams {
        max_tokens: Some(1),
        ignore_eos: true,
        ..SamplingParams::greedy()
    };
    // n_gen + 1 tokens sampled = n_gen decode calls, as llama-bench's tg test makes.
    let generate = SamplingParams {
        max_tokens: Some(n_gen + 1),
        ignore_eos: true,
        ..SamplingParams::greedy()
    };
    let one = tokens[..1].to_vec();
    let none = &mut |_: &str| ControlFlow::Continue(());
    // Warm-up (page faults, caches).
    engine.generate_tokens(tokens.clone(), &prompt_only, none)?;
    engine.generate_tokens(one.clone(), &generate, none)?;
    let (mut pp, mut tg) = (0.0, 0.0);
    for _ in 0..reps {
        let c = engine.generate_tokens(tokens.clone(), &prompt_only, none)?;
        pp += n_prompt as f64 / c.timings.prompt_seconds;
        let c = engine.generate_tokens(one.clone(), &generate, none)?;
        anyhow::ensure!(
            c.usage.completion_tokens == n_gen + 1,
            "decode test stopped early"
        );
        tg += f64::from(n_gen) / c.timings.generation_seconds;
    }
    Ok((pp / reps as f64, tg / reps as f64))
}

/// Runs llama.cpp's `llama-bench` with the same settings; returns its (prompt, decode) tokens/s.
fn run_llama_bench(
    bin: &Path,
    model: &Path,
    threads: usize,
    args: &EngineBenchArgs,
) -> anyhow::Result<(f64, f64)> {
    let output = std::process::Command::new(bin)
        .arg("-m")
        .arg(model)
        .args(["-t", &threads.to_string()])
        .args([
            "-p",
            &args.prompt_tokens.to_string(),
            "-n",
            &args.gen_tokens.to_string(),
        ])
        .args(["-r", &args.repetitions.to_string(), "-o", "json"])
        .output()
        .with_context(|| format!("cannot run {}", bin.display()))?;
    anyhow::ensure!(
        output.status.success(),
        "llama-bench failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    let runs: Vec<serde_json::Value> =
        serde_json::from_slice(&output.stdout).context("cannot read llama-bench's JSON output")?;
    let speed = |prompt: bool| {
        runs.iter()
            .find(|r| {
                let n_prompt = r["n_prompt"].as_u64().unwrap_or(0);
                let n_gen = r["n_gen"].as_u64().unwrap_or(0);
                if prompt {
                    n_prompt > 0 && n_gen == 0
                } else {
                    n_gen > 0 && n_prompt == 0
                }
            })
            .and_then(|r| r["avg_ts"].as_f64())
            .context("llama-bench's output has no avg_ts for this test")
    };
    Ok((speed(true)?, speed(false)?))
}

/// Peak resident set size of this process, from /proc/self/status (VmHWM).
fn peak_rss_bytes() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}
