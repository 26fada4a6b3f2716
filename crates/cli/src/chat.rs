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
    /// Repetitions of each test per round (llama-bench's -r).
    #[arg(long, default_value_t = 5)]
    pub repetitions: usize,
    /// Rounds: ours then the baseline's, alternated, so that load from other processes hits both.
    #[arg(long, default_value_t = 3)]
    pub rounds: usize,
    /// Thread counts to measure.
    #[arg(long, value_delimiter = ',', default_value = "1,2")]
    pub threads: Vec<usize>,
    /// A llama-bench-compatible program (llama.cpp's `llama-bench`, or the stand-in built from
    /// crates/engine/bench/llama_bench_min.cpp): run in the same run, on the same model and
    /// settings; our speeds are then printed as ratios of its speeds.
    #[arg(long, value_name = "PATH")]
    pub llama_bench: Option<PathBuf>,
    #[command(flatten)]
    pub dir: DataDirArgs,
}

/// Tokens/s samples of the two tests.
#[derive(Debug, Default)]
struct Samples {
    prompt: Vec<f64>,
    decode: Vec<f64>,
}

fn mean(v: &[f64]) -> f64 {
    v.iter().sum::<f64>() / v.len().max(1) as f64
}

fn best(v: &[f64]) -> f64 {
    v.iter().copied().fold(0.0, f64::max)
}

fn round2(x: f64) -> f64 {
    (x * 100.0).round() / 100.0
}

fn round3(x: f64) -> f64 {
    (x * 1000.0).round() / 1000.0
}

#[derive(Debug, serde::Serialize)]
struct Rates {
    /// Mean over every repetition of every round (what llama-bench reports as avg_ts).
    prompt_tokens_per_s: f64,
    decode_tokens_per_s: f64,
    /// Best repetition: the least disturbed by other processes.
    prompt_tokens_per_s_best: f64,
    decode_tokens_per_s_best: f64,
}

impl Rates {
    fn of(s: &Samples) -> Self {
        Self {
            prompt_tokens_per_s: round2(mean(&s.prompt)),
            decode_tokens_per_s: round2(mean(&s.decode)),
            prompt_tokens_per_s_best: round2(best(&s.prompt)),
            decode_tokens_per_s_best: round2(best(&s.decode)),
        }
    }
}

#[derive(Debug, serde::Serialize)]
struct ThreadResult {
    threads: usize,
    veil: Rates,
    #[serde(skip_serializing_if = "Option::is_none")]
    llama_bench: Option<Rates>,
    /// Ours divided by llama-bench's, best against best (1.0 = the same speed).
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
    rounds: usize,
    /// Seconds to load the model the first time (header check, mmap, first context).
    load_seconds: f64,
    /// Peak resident memory of this process (VmHWM), bytes.
    peak_rss_bytes: Option<u64>,
    /// Whether this binary was built with AVX2 enabled for Rust code (`target-cpu=native` here).
    built_with_avx2: bool,
    results: Vec<ThreadResult>,
    /// Speed with the most threads divided by speed with the fewest (same run, best against best).
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
        args.repetitions > 0 && args.rounds > 0 && args.prompt_tokens > 0 && args.gen_tokens > 0,
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
            n_batch: u32::try_from(args.prompt_tokens)?.min(2048),
            chat_template: None,
        };
        let started = Instant::now();
        let engine = LlamaEngine::load_file(&path, config)?;
        load_seconds.get_or_insert(started.elapsed().as_secs_f64());
        let (mut ours, mut theirs) = (Samples::default(), Samples::default());
        for _ in 0..args.rounds {
            measure(
                &engine,
                args.prompt_tokens,
                args.gen_tokens,
                args.repetitions,
                &mut ours,
            )?;
            if let Some(bin) = &args.llama_bench {
                run_llama_bench(bin, &path, threads, &args, &mut theirs)?;
            }
        }
        let baseline = args.llama_bench.is_some();
        results.push(ThreadResult {
            threads,
            veil: Rates::of(&ours),
            llama_bench: baseline.then(|| Rates::of(&theirs)),
            prompt_ratio_vs_llama_bench: baseline.then(|| round3(best(&ours.prompt) / best(&theirs.prompt))),
            decode_ratio_vs_llama_bench: baseline.then(|| round3(best(&ours.decode) / best(&theirs.decode))),
        });
    }
    let thread_scaling = match (results.first(), results.last()) {
        (Some(a), Some(b)) if results.len() > 1 => Some(Scaling {
            from_threads: a.threads,
            to_threads: b.threads,
            prompt: round3(b.veil.prompt_tokens_per_s_best / a.veil.prompt_tokens_per_s_best),
            decode: round3(b.veil.decode_tokens_per_s_best / a.veil.decode_tokens_per_s_best),
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
        rounds: args.rounds,
        load_seconds: round3(load_seconds.unwrap_or(0.0)),
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
        "model {} ({:.1} MiB), load {:.3} s; tokens/s as mean (best) of {} rounds × {} repetitions",
        report.model,
        model_bytes as f64 / 1048576.0,
        report.load_seconds,
        args.rounds,
        args.repetitions
    )?;
    let pp = format!("pp{}", args.prompt_tokens);
    let tg = format!("tg{}", args.gen_tokens);
    writeln!(
        out,
        "{:>7}  {:>18}  {:>18}  {:>18}  {:>18}  {:>8}  {:>8}",
        "threads",
        format!("veil {pp}"),
        format!("veil {tg}"),
        format!("llama.cpp {pp}"),
        format!("llama.cpp {tg}"),
        "pp ratio",
        "tg ratio"
    )?;
    let cell = |r: Option<&Rates>, prompt: bool| match r {
        Some(r) if prompt => format!("{:.1} ({:.1})", r.prompt_tokens_per_s, r.prompt_tokens_per_s_best),
        Some(r) => format!("{:.1} ({:.1})", r.decode_tokens_per_s, r.decode_tokens_per_s_best),
        None => "-".to_owned(),
    };
    let ratio = |x: Option<f64>| x.map_or_else(|| "-".to_owned(), |v| format!("{v:.3}"));
    for r in &report.results {
        writeln!(
            out,
            "{:>7}  {:>18}  {:>18}  {:>18}  {:>18}  {:>8}  {:>8}",
            r.threads,
            cell(Some(&r.veil), true),
            cell(Some(&r.veil), false),
            cell(r.llama_bench.as_ref(), true),
            cell(r.llama_bench.as_ref(), false),
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

/// Adds `reps` samples of prompt-processing and decode speed (tokens/s), after one warm-up.
/// Like llama-bench, the prompt test evaluates `n_prompt` tokens in one batch, and the decode
/// test makes `n_gen` single-token decode calls (greedy, past any end-of-text token).
fn measure(
    engine: &LlamaEngine,
    n_prompt: usize,
    n_gen: u32,
    reps: usize,
    into: &mut Samples,
) -> anyhow::Result<()> {
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
    for _ in 0..reps {
        let c = engine.generate_tokens(tokens.clone(), &prompt_only, none)?;
        into.prompt.push(n_prompt as f64 / c.timings.prompt_seconds);
        let c = engine.generate_tokens(one.clone(), &generate, none)?;
        anyhow::ensure!(
            c.usage.completion_tokens == n_gen + 1,
            "decode test stopped early"
        );
        into.decode.push(f64::from(n_gen) / c.timings.generation_seconds);
    }
    Ok(())
}

/// Runs a llama-bench-compatible program with the same settings and adds its samples.
fn run_llama_bench(
    bin: &Path,
    model: &Path,
    threads: usize,
    args: &EngineBenchArgs,
    into: &mut Samples,
) -> anyhow::Result<()> {
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
    for prompt in [true, false] {
        let run = runs
            .iter()
            .find(|r| {
                let n_prompt = r["n_prompt"].as_u64().unwrap_or(0);
                let n_gen = r["n_gen"].as_u64().unwrap_or(0);
                if prompt {
                    n_prompt > 0 && n_gen == 0
                } else {
                    n_gen > 0 && n_prompt == 0
                }
            })
            .context("llama-bench's output lacks a test")?;
        let samples: Vec<f64> = match run["samples_ts"].as_array() {
            Some(a) => a.iter().filter_map(serde_json::Value::as_f64).collect(),
            None => run["avg_ts"].as_f64().into_iter().collect(),
        };
        anyhow::ensure!(!samples.is_empty(), "llama-bench's output has no speeds");
        if prompt {
            into.prompt.extend(samples)
        } else {
            into.decode.extend(samples)
        }
    }
    Ok(())
}

/// Peak resident set size of this process, from /proc/self/status (VmHWM).
fn peak_rss_bytes() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}
