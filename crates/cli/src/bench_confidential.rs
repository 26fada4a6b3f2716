//! `veil bench confidential`: what confidentiality costs. The same prompts run through the engine directly
//! and through the OpenAI gateway → attested worker (simulated TEE) on loopback, in one run and one
//! process, interleaved (which path goes first alternates) so that any load from other processes hits both;
//! plus model load time from the encrypted bundle against the plain GGUF file, both loads ending with every
//! byte of the weights read into memory (see [`LoadReport`]).
//!
//! Both paths use the same engine (the one the worker loaded from the bundle: the direct path calls it
//! in-process) and greedy decoding, so they generate the same tokens with the same work. Each is
//! timed from the caller's side: time to first token (TTFT) is from the call (the HTTP request) to the
//! first piece of text (the first SSE content chunk); decode speed is `completion_tokens - 1` over the time
//! from that first piece to the end of the answer (for the gateway: the last SSE event). The paths run in
//! pairs (the same prompt on each, back to back); the reported ratio and added TTFT are medians over the
//! pairs of each pair's ratio and difference, so that a machine whose speed drifts (a shared VM, other
//! processes) compares like with like; the medians of each path are reported beside them. All after one
//! warm-up request per path (the worker was attested once before, as a gateway does). Timing never decides a
//! test.

use std::io::{Read as _, Write as _};
use std::net::{SocketAddr, TcpStream};
use std::ops::ControlFlow;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use clap::Args;
use serde::Serialize;
use veil_engine::{ChatRequest, Engine, LlamaConfig, LlamaEngine, ModelSource, SamplingParams, Weights};
use veil_models::DEFAULT_MODEL;

use crate::devnet::{Devnet, DevnetConfig};
use crate::model::{DataDirArgs, resolve_or_fetch};

/// The prompts, in order; `--prompts N` takes the first N. Each asks for a long answer, so that with the
/// default `--max-tokens` every answer runs to the limit.
const PROMPTS: [&str; 4] = [
    "Write a long story about a lighthouse keeper and a storm.",
    "Explain step by step how a bicycle works, in detail.",
    "Describe the water cycle to a child, with many examples.",
    "List twenty uses for a paper clip and explain each one.",
];

/// Goals the issue set.
const GOAL_DECODE_RATIO: f64 = 0.98;
const GOAL_ADDED_TTFT_MS: f64 = 5.0;
const GOAL_LOAD_RATIO: f64 = 1.2;

/// `veil bench confidential`.
#[derive(Debug, Args)]
pub struct ConfidentialBenchArgs {
    /// Print one JSON object instead of text.
    #[arg(long)]
    pub json: bool,
    /// Model: a catalogue name (fetched on first use) or a GGUF path.
    #[arg(long, default_value = DEFAULT_MODEL)]
    pub model: String,
    /// How many of the built-in prompts to run (1 to 4).
    #[arg(long, default_value_t = 3)]
    pub prompts: usize,
    /// Tokens generated per answer (greedy; an answer may stop earlier only if the model ends it).
    #[arg(long, default_value_t = 64)]
    pub max_tokens: u32,
    /// Times each prompt runs on each path.
    #[arg(long, default_value_t = 5)]
    pub repetitions: usize,
    /// Times the model is loaded from the plain file and from the bundle (back to back each time).
    #[arg(long, default_value_t = 5)]
    pub load_repetitions: usize,
    /// Engine threads, the same for both paths [default: all cores].
    #[arg(long)]
    pub threads: Option<usize>,
    /// Context window of both engines.
    #[arg(long, default_value_t = 1024)]
    pub ctx: u32,
    #[command(flatten)]
    pub stream: crate::worker::StreamArgs,
    #[command(flatten)]
    pub dir: DataDirArgs,
}

/// One timed answer.
#[derive(Debug, Clone, Copy)]
struct Sample {
    ttft: Duration,
    /// From the first piece of text to the end of the answer.
    decode: Duration,
    completion_tokens: u32,
    /// Pieces of text received (non-empty engine pieces; SSE content chunks).
    text_events: u32,
    /// CPU time of the process's threads outside the engine during the answer (see
    /// [`ThreadCpu`]); `None` where `/proc` cannot be read.
    outside_engine_cpu: Option<Duration>,
}

impl Sample {
    /// Decode tokens/s: the tokens after the first over the time after the first.
    fn decode_rate(&self) -> Option<f64> {
        let secs = self.decode.as_secs_f64();
        (self.completion_tokens > 1 && secs > 0.0).then(|| f64::from(self.completion_tokens - 1) / secs)
    }

    fn events_per_token(&self) -> Option<f64> {
        (self.completion_tokens > 0).then(|| f64::from(self.text_events) / f64::from(self.completion_tokens))
    }

    /// Microseconds of CPU outside the engine per completion token.
    fn outside_engine_us_per_token(&self) -> Option<f64> {
        let cpu = self.outside_engine_cpu?;
        (self.completion_tokens > 0).then(|| cpu.as_secs_f64() * 1e6 / f64::from(self.completion_tokens))
    }
}

/// CPU time, per thread, of this process's threads outside the engine: every thread but the engine's
/// (named `veil-engine-…`; llama.cpp's compute threads, which the engine's thread starts, inherit its
/// name). Those are the async runtime's threads (worker and gateway), the HTTP client's thread and the
/// threads that hand requests to the engine: what moving the tokens costs the cores, which the engine
/// then lacks when every core decodes. From `/proc/self/task/*/schedstat` (time on a CPU, in ns).
#[derive(Debug, Default)]
struct ThreadCpu(std::collections::HashMap<u64, u64>);

impl ThreadCpu {
    /// Now; `None` where `/proc` cannot be read.
    fn read() -> Option<ThreadCpu> {
        let mut threads = std::collections::HashMap::new();
        for entry in std::fs::read_dir("/proc/self/task").ok()? {
            let dir = entry.ok()?.path();
            let Some(tid) = dir.file_name().and_then(|n| n.to_str()?.parse::<u64>().ok()) else {
                continue;
            };
            // A thread that ended between the listing and these reads is left out.
            let (Ok(comm), Ok(stat)) = (
                std::fs::read_to_string(dir.join("comm")),
                std::fs::read_to_string(dir.join("schedstat")),
            ) else {
                continue;
            };
            if comm.starts_with("veil-engine") {
                continue;
            }
            threads.insert(tid, stat.split_whitespace().next()?.parse().ok()?);
        }
        Some(ThreadCpu(threads))
    }

    /// CPU spent since `earlier` by the threads alive now (a thread started since counts whole; one
    /// that ended meanwhile drops out, with what it spent).
    fn since(&self, earlier: &ThreadCpu) -> Duration {
        let ns = self
            .0
            .iter()
            .map(|(tid, now)| now.saturating_sub(earlier.0.get(tid).copied().unwrap_or(0)))
            .sum();
        Duration::from_nanos(ns)
    }
}

#[derive(Debug, Serialize)]
struct Report {
    model: String,
    model_path: String,
    model_bytes: u64,
    settings: Settings,
    decode_tokens_per_s: DecodeReport,
    ttft_ms: TtftReport,
    load_seconds: LoadReport,
    /// Completion tokens of each prompt on each path (greedy: equal when both paths generate the same).
    completion_tokens: Vec<TokenCounts>,
}

#[derive(Debug, Serialize)]
struct Settings {
    /// Threads this machine offers (available parallelism).
    machine_threads: usize,
    /// Engine threads each path decodes with.
    engine_threads: usize,
    n_ctx: u32,
    prompts: usize,
    max_tokens: u32,
    repetitions: usize,
    load_repetitions: usize,
    temperature: f32,
    /// Whether this binary was built with optimisations (`--release`).
    optimized_build: bool,
    /// How the worker runs here.
    tee: &'static str,
    transport: &'static str,
    /// The worker sends a streamed answer at most one frame per this interval (`--stream-interval-ms`).
    stream_interval_ms: u64,
}

#[derive(Debug, Serialize)]
struct DecodeReport {
    /// Medians of each path's samples.
    direct: f64,
    via_gateway: f64,
    /// Via the gateway divided by direct (1.0 = no cost): the median over pairs of each pair's ratio.
    ratio: f64,
    /// The pairs' ratios at the first and third quartiles: how much the machine's noise spreads them.
    ratio_quartiles: [f64; 2],
    /// The two medians' ratio.
    ratio_of_medians: f64,
    /// The fastest sample of each path (the least disturbed by other processes), and their ratio.
    direct_best: f64,
    via_gateway_best: f64,
    ratio_best: f64,
    goal_ratio_at_least: f64,
    /// CPU time of the threads outside the engine (see [`ThreadCpu`]) per completion token, medians of
    /// each path's samples, in µs: with every core decoding, roughly what each token costs the engine.
    /// `null` where `/proc` cannot be read.
    cpu_outside_engine_us_per_token: PathCpu,
    /// Text events per completion token (the engine's pieces; the gateway's SSE content chunks, one per
    /// worker frame), medians: below 1 via the gateway when the stream interval groups tokens.
    events_per_token: PathEvents,
    samples: usize,
}

#[derive(Debug, Serialize)]
struct PathEvents {
    direct: f64,
    via_gateway: f64,
}

#[derive(Debug, Serialize)]
struct PathCpu {
    direct: Option<f64>,
    via_gateway: Option<f64>,
}

#[derive(Debug, Serialize)]
struct TtftReport {
    /// Medians of each path's samples.
    direct: f64,
    via_gateway: f64,
    /// Via the gateway minus direct: the median over pairs of each pair's difference.
    added: f64,
    /// The pairs' differences at the first and third quartiles.
    added_quartiles: [f64; 2],
    /// The two medians' difference.
    added_of_medians: f64,
    /// The quickest sample of each path, and their difference.
    direct_best: f64,
    via_gateway_best: f64,
    added_best: f64,
    goal_added_at_most: f64,
    samples: usize,
}

/// Load times, in seconds. The ratio compares two loads that each end with every byte of the weights read
/// into the process's memory: the bundle's are read, authenticated, decrypted and hashed into a memfd, the
/// plain file's are read by llama.cpp into its own buffers (`Weights::Read`, llama.cpp's no-mmap load).
/// Both from a warm page cache. The engine's usual load of a plain file (`Weights::Mapped`) maps the
/// page cache's pages and copies none of them; it is reported too (`plain_file_mapped`), not compared.
#[derive(Debug, Serialize)]
struct LoadReport {
    /// What the ratio compares, in words.
    compares: &'static str,
    /// `LlamaEngine::load_with(Weights::Read)` of the GGUF: every byte of the weights read into memory.
    plain_file: f64,
    /// What a provisioned worker does (`veil_worker::load_bundle`): read the bundle from the blob store
    /// (checking its address), authenticate and decrypt it into a sealed memfd and check the model's
    /// SHA-256, while the engine parses the model's metadata as it arrives; then the engine takes the
    /// weights.
    bundle: f64,
    /// Bundle divided by plain file: the median over the repetitions of each one's ratio (each repetition
    /// loads both, back to back), as for the decode ratio.
    ratio: f64,
    /// The repetitions' ratios at the first and third quartiles.
    ratio_quartiles: [f64; 2],
    /// The median bundle load divided by the median plain one.
    ratio_of_medians: f64,
    /// The quickest load of each kind, and their ratio.
    plain_file_best: f64,
    bundle_best: f64,
    ratio_best: f64,
    goal_ratio_at_most: f64,
    /// Of `bundle`: until the whole bundle was in memory and had passed every check (the engine uses
    /// no weight before then).
    bundle_open: f64,
    /// Informational: `LlamaEngine::load_file`, the GGUF mapped from the page cache (nothing copied).
    plain_file_mapped: f64,
    /// The process's CPU time (user + system, all threads, from `/proc/self/stat` in 10 ms ticks) during
    /// each load, median: what the load costs the cores. When a load's threads outnumber the cores, this
    /// over the core count bounds its time from below. `null` where `/proc` cannot be read.
    plain_file_cpu: Option<f64>,
    bundle_cpu: Option<f64>,
    samples: usize,
}

#[derive(Debug, Serialize)]
struct TokenCounts {
    prompt: usize,
    direct: u32,
    via_gateway: u32,
}

pub fn run(args: ConfidentialBenchArgs) -> anyhow::Result<ExitCode> {
    let report = bench(&args)?;
    if args.json {
        crate::bench::print_report(&serde_json::to_value(&report)?, true)?;
    } else {
        print_text(&report)?;
    }
    Ok(ExitCode::SUCCESS)
}

fn bench(args: &ConfidentialBenchArgs) -> anyhow::Result<Report> {
    if !(1..=PROMPTS.len()).contains(&args.prompts) {
        bail!("--prompts must be 1 to {} (got {})", PROMPTS.len(), args.prompts);
    }
    if args.max_tokens < 2 || args.repetitions == 0 || args.load_repetitions == 0 {
        bail!("--max-tokens must be at least 2 (a decode speed needs two tokens), repetitions at least 1");
    }
    if args.threads == Some(0) {
        bail!("--threads must be at least 1");
    }
    let store = args.dir.store()?;
    let path = resolve_or_fetch(&store, &args.model)?;
    let model_bytes = std::fs::metadata(&path)
        .with_context(|| format!("cannot stat {}", path.display()))?
        .len();
    let engine_config = LlamaConfig {
        threads: args.threads,
        slots: 1,
        n_ctx: Some(args.ctx),
        ..LlamaConfig::default()
    };
    let data_dir = match &args.dir.data_dir {
        Some(d) => d.clone(),
        None => veil_models::default_data_dir()?,
    };
    // The worker's blob store, sealed bundle, data key and simulated-TEE key: all thrown away at the end.
    let state = tempfile::Builder::new()
        .prefix("veil-bench-confidential-")
        .tempdir()
        .context("cannot create a temporary directory")?;
    let devnet_config = DevnetConfig {
        data_dir,
        state_dir: state.path().to_owned(),
        model: args.model.clone(),
        engine: engine_config.clone(),
        gateway_listen: ([127, 0, 0, 1], 0).into(),
        worker_listen: ([127, 0, 0, 1], 0).into(),
        stream_interval: args.stream.interval(),
    };
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    let result = rt.block_on(async {
        // Seals the model into the temporary blob store, starts the worker (simulated TEE) and the
        // gateway, attests the worker and provisions its key: the one attestation, not timed.
        let devnet = Devnet::start(devnet_config).await?;
        let out = measure(args, &path, &engine_config, &devnet, state.path().to_owned()).await;
        devnet.shutdown().await?;
        out
    });
    rt.shutdown_timeout(Duration::from_secs(5));
    let (load, samples, counts) = result?;

    let (direct, gateway): (Vec<Sample>, Vec<Sample>) = (samples.direct, samples.gateway);
    let rates = |s: &[Sample]| -> Vec<f64> { s.iter().filter_map(Sample::decode_rate).collect() };
    let ttfts = |s: &[Sample]| -> Vec<f64> { s.iter().map(|x| x.ttft.as_secs_f64() * 1e3).collect() };
    let (rate_direct, rate_gateway) = (median(rates(&direct)), median(rates(&gateway)));
    let (best_rate_direct, best_rate_gateway) = (max(&rates(&direct)), max(&rates(&gateway)));
    let (ttft_direct, ttft_gateway) = (median(ttfts(&direct)), median(ttfts(&gateway)));
    let (best_ttft_direct, best_ttft_gateway) = (min(&ttfts(&direct)), min(&ttfts(&gateway)));
    // Each direct sample and the gateway sample at the same index ran the same prompt back to back.
    let pair_ratios: Vec<f64> = direct
        .iter()
        .zip(&gateway)
        .filter_map(|(d, g)| Some(g.decode_rate()? / d.decode_rate()?))
        .collect();
    let pair_added: Vec<f64> = direct
        .iter()
        .zip(&gateway)
        .map(|(d, g)| (g.ttft.as_secs_f64() - d.ttft.as_secs_f64()) * 1e3)
        .collect();
    let load_ratios: Vec<f64> = load.bundle.iter().zip(&load.file).map(|(b, f)| b / f).collect();
    let (best_load_file, best_load_bundle) = (min(&load.file), min(&load.bundle));
    let (load_file, load_bundle) = (median(load.file), median(load.bundle));
    let (load_bundle_open, load_file_mapped) = (median(load.bundle_open), median(load.file_mapped));
    // Reported only if every load's CPU time could be read.
    let cpu = |v: Vec<Option<f64>>| {
        v.into_iter()
            .collect::<Option<Vec<f64>>>()
            .map(|v| round(median(v), 3))
    };
    let (load_file_cpu, load_bundle_cpu) = (cpu(load.file_cpu), cpu(load.bundle_cpu));
    let outside = |s: &[Sample]| {
        s.iter()
            .map(Sample::outside_engine_us_per_token)
            .collect::<Option<Vec<f64>>>()
            .map(|v| round(median(v), 1))
    };
    let events = |s: &[Sample]| round(median(s.iter().filter_map(Sample::events_per_token).collect()), 3);
    Ok(Report {
        model: args.model.clone(),
        model_path: path.display().to_string(),
        model_bytes,
        settings: Settings {
            machine_threads: std::thread::available_parallelism().map_or(1, |n| n.get()),
            engine_threads: engine_config.effective_threads(),
            n_ctx: args.ctx,
            prompts: args.prompts,
            max_tokens: args.max_tokens,
            repetitions: args.repetitions,
            load_repetitions: args.load_repetitions,
            temperature: 0.0,
            optimized_build: !cfg!(debug_assertions),
            tee: "simulated",
            transport: "loopback HTTP: client -> gateway (OpenAI SSE) -> worker (sealed frames)",
            stream_interval_ms: args.stream.stream_interval_ms,
        },
        decode_tokens_per_s: DecodeReport {
            direct: round(rate_direct, 2),
            via_gateway: round(rate_gateway, 2),
            ratio: round(median(pair_ratios.clone()), 4),
            ratio_quartiles: quartiles(&pair_ratios).map(|q| round(q, 4)),
            ratio_of_medians: round(rate_gateway / rate_direct, 4),
            direct_best: round(best_rate_direct, 2),
            via_gateway_best: round(best_rate_gateway, 2),
            ratio_best: round(best_rate_gateway / best_rate_direct, 4),
            goal_ratio_at_least: GOAL_DECODE_RATIO,
            cpu_outside_engine_us_per_token: PathCpu {
                direct: outside(&direct),
                via_gateway: outside(&gateway),
            },
            events_per_token: PathEvents {
                direct: events(&direct),
                via_gateway: events(&gateway),
            },
            samples: direct.len(),
        },
        ttft_ms: TtftReport {
            direct: round(ttft_direct, 3),
            via_gateway: round(ttft_gateway, 3),
            added: round(median(pair_added.clone()), 3),
            added_quartiles: quartiles(&pair_added).map(|q| round(q, 3)),
            added_of_medians: round(ttft_gateway - ttft_direct, 3),
            direct_best: round(best_ttft_direct, 3),
            via_gateway_best: round(best_ttft_gateway, 3),
            added_best: round(best_ttft_gateway - best_ttft_direct, 3),
            goal_added_at_most: GOAL_ADDED_TTFT_MS,
            samples: direct.len(),
        },
        load_seconds: LoadReport {
            compares: "bundle -> memfd -> engine vs plain GGUF read by llama.cpp (no mmap); both read every \
                       weight into memory, page cache warm",
            plain_file: round(load_file, 4),
            bundle: round(load_bundle, 4),
            ratio: round(median(load_ratios.clone()), 3),
            ratio_quartiles: quartiles(&load_ratios).map(|q| round(q, 3)),
            ratio_of_medians: round(load_bundle / load_file, 3),
            plain_file_best: round(best_load_file, 4),
            bundle_best: round(best_load_bundle, 4),
            ratio_best: round(best_load_bundle / best_load_file, 3),
            goal_ratio_at_most: GOAL_LOAD_RATIO,
            bundle_open: round(load_bundle_open, 4),
            plain_file_mapped: round(load_file_mapped, 4),
            plain_file_cpu: load_file_cpu,
            bundle_cpu: load_bundle_cpu,
            samples: args.load_repetitions,
        },
        completion_tokens: counts,
    })
}

#[derive(Debug, Default)]
struct Loads {
    /// The plain file, weights read (`Weights::Read`).
    file: Vec<f64>,
    bundle: Vec<f64>,
    /// Of `bundle`: into memory.
    bundle_open: Vec<f64>,
    /// The plain file, mapped (`Weights::Mapped`).
    file_mapped: Vec<f64>,
    /// The process's CPU seconds during each plain (weights read) and bundle load; `None` where `/proc`
    /// could not be read.
    file_cpu: Vec<Option<f64>>,
    bundle_cpu: Vec<Option<f64>>,
}

#[derive(Debug, Default)]
struct Samples {
    direct: Vec<Sample>,
    gateway: Vec<Sample>,
}

async fn measure(
    args: &ConfidentialBenchArgs,
    path: &std::path::Path,
    config: &LlamaConfig,
    devnet: &Devnet,
    state_dir: PathBuf,
) -> anyhow::Result<(Loads, Samples, Vec<TokenCounts>)> {
    // Load times, alternating plain file and bundle so that both see the same page cache.
    let loads = {
        let (path, config, bundle, reps) = (
            path.to_owned(),
            config.clone(),
            devnet.bundle,
            args.load_repetitions,
        );
        let name = devnet.model.clone();
        tokio::task::spawn_blocking(move || load_times(&path, &config, &state_dir, &name, bundle, reps))
            .await
            .context("the loading thread failed")??
    };

    // The direct path calls the very engine the worker serves (loaded from the bundle), so that both
    // paths do the same engine work on the same memory. A second engine would also change how llama.cpp's
    // OpenMP threads wait: with more OpenMP threads in the process than cores, libgomp stops spinning at
    // barriers and sleeps instead, which makes decoding far more sensitive to any other runnable thread
    // — a state that a worker serving one model never is in.
    let engine: Arc<dyn Engine> = devnet
        .worker()
        .engine(&devnet.model)
        .context("the devnet's worker serves no engine")?;
    let base = devnet.base_url();
    let gateway: SocketAddr = base
        .strip_prefix("http://")
        .and_then(|rest| rest.strip_suffix("/v1"))
        .and_then(|addr| addr.parse().ok())
        .with_context(|| format!("unexpected gateway URL {base}"))?;
    let prompts = &PROMPTS[..args.prompts];

    // Warm-up: one short answer on each path, not counted.
    direct(&engine, prompts[0], 4.min(args.max_tokens)).await?;
    via_gateway(gateway, &devnet.model, prompts[0], 4.min(args.max_tokens)).await?;

    let mut samples = Samples::default();
    let mut counts: Vec<TokenCounts> = (0..prompts.len())
        .map(|prompt| TokenCounts {
            prompt,
            direct: 0,
            via_gateway: 0,
        })
        .collect();
    for rep in 0..args.repetitions {
        for (i, prompt) in prompts.iter().enumerate() {
            // Which path goes first alternates, so that neither always runs right after the other.
            let (d, g) = if (rep + i) % 2 == 0 {
                let d = direct(&engine, prompt, args.max_tokens).await?;
                (
                    d,
                    via_gateway(gateway, &devnet.model, prompt, args.max_tokens).await?,
                )
            } else {
                let g = via_gateway(gateway, &devnet.model, prompt, args.max_tokens).await?;
                (direct(&engine, prompt, args.max_tokens).await?, g)
            };
            counts[i].direct = d.completion_tokens;
            counts[i].via_gateway = g.completion_tokens;
            samples.direct.push(d);
            samples.gateway.push(g);
        }
    }
    if counts.iter().any(|c| c.direct != c.via_gateway) {
        tracing::warn!(
            "the two paths generated different numbers of tokens; compare the per-token rates with care"
        );
    }
    Ok((loads, samples, counts))
}

fn params(max_tokens: u32) -> SamplingParams {
    SamplingParams {
        max_tokens: Some(max_tokens),
        ..SamplingParams::greedy()
    }
}

/// One answer straight from the engine, timed from the call.
async fn direct(engine: &Arc<dyn Engine>, prompt: &str, max_tokens: u32) -> anyhow::Result<Sample> {
    let engine = engine.clone();
    let request = ChatRequest::user(prompt, params(max_tokens));
    tokio::task::spawn_blocking(move || {
        let cpu = ThreadCpu::read();
        let started = Instant::now();
        let mut first = None;
        let mut text_events = 0;
        let completion = engine.chat_stream(&request, &mut |piece| {
            if !piece.is_empty() {
                text_events += 1;
                first.get_or_insert_with(|| started.elapsed());
            }
            ControlFlow::Continue(())
        })?;
        let end = started.elapsed();
        let outside_engine_cpu = ThreadCpu::read()
            .zip(cpu.as_ref())
            .map(|(now, then)| now.since(then));
        let ttft = first.context("the engine produced no text")?;
        Ok(Sample {
            ttft,
            decode: end - ttft,
            completion_tokens: completion.usage.completion_tokens,
            text_events,
            outside_engine_cpu,
        })
    })
    .await
    .context("the engine thread failed")?
}

/// One answer through the gateway's OpenAI API, streamed, timed from sending the request.
///
/// A plain HTTP/1.1 client on a blocking thread: the connection is opened before the clock starts (an
/// OpenAI client reuses pooled connections), then the request is written and the server-sent events are
/// read as they arrive.
async fn via_gateway(addr: SocketAddr, model: &str, prompt: &str, max_tokens: u32) -> anyhow::Result<Sample> {
    let p = params(max_tokens);
    let body = serde_json::json!({
        "model": model,
        "messages": [{ "role": "user", "content": prompt }],
        "temperature": p.temperature,
        "top_p": p.top_p,
        "top_k": p.top_k,
        "max_tokens": max_tokens,
        "stream": true,
        "stream_options": { "include_usage": true },
    })
    .to_string();
    tokio::task::spawn_blocking(move || stream_chat(addr, &body))
        .await
        .context("the HTTP client thread failed")?
}

fn stream_chat(addr: SocketAddr, body: &str) -> anyhow::Result<Sample> {
    let mut conn = TcpStream::connect(addr).with_context(|| format!("cannot reach the gateway at {addr}"))?;
    conn.set_nodelay(true)?;
    conn.set_read_timeout(Some(Duration::from_secs(600)))?;
    let request = format!(
        "POST /v1/chat/completions HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\
         Content-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    let cpu = ThreadCpu::read();
    let started = Instant::now();
    conn.write_all(request.as_bytes())?;

    let mut events = SseReader::default();
    let mut buf = vec![0u8; 16 * 1024];
    let mut first = None;
    let mut tokens = None;
    let mut text_events = 0;
    loop {
        let n = conn.read(&mut buf).context("the gateway's stream broke")?;
        if n == 0 {
            bail!("the gateway's stream ended without [DONE]");
        }
        for data in events.push(&buf[..n])? {
            if data == "[DONE]" {
                let end = started.elapsed();
                let outside_engine_cpu = ThreadCpu::read()
                    .zip(cpu.as_ref())
                    .map(|(now, then)| now.since(then));
                let ttft = first.context("the gateway streamed no text")?;
                return Ok(Sample {
                    ttft,
                    decode: end - ttft,
                    completion_tokens: tokens.context("the gateway sent no usage")?,
                    text_events,
                    outside_engine_cpu,
                });
            }
            let v: serde_json::Value =
                serde_json::from_str(&data).with_context(|| format!("not JSON: {data}"))?;
            if let Some(e) = v.get("error") {
                bail!("the gateway reported an error: {e}");
            }
            let content = v["choices"][0]["delta"]["content"].as_str().unwrap_or("");
            if !content.is_empty() {
                text_events += 1;
                first.get_or_insert_with(|| started.elapsed());
            }
            if let Some(n) = v["usage"]["completion_tokens"].as_u64() {
                tokens = Some(u32::try_from(n).context("a token count out of range")?);
            }
        }
    }
}

/// Reads an HTTP/1.1 response carrying server-sent events in chunked transfer encoding, incrementally:
/// bytes in, the `data:` payloads of complete events out.
#[derive(Debug, Default)]
struct SseReader {
    /// Bytes not parsed yet.
    raw: Vec<u8>,
    /// Whether the status line and headers were read.
    head_done: bool,
    /// Payload bytes (de-chunked) not yet split into events.
    text: Vec<u8>,
}

impl SseReader {
    fn push(&mut self, bytes: &[u8]) -> anyhow::Result<Vec<String>> {
        self.raw.extend_from_slice(bytes);
        if !self.head_done {
            let Some(end) = find(&self.raw, b"\r\n\r\n") else {
                return Ok(Vec::new());
            };
            let head = String::from_utf8_lossy(&self.raw[..end]).to_ascii_lowercase();
            let status = head.split(' ').nth(1).unwrap_or("");
            if status != "200" {
                bail!(
                    "the gateway answered {status}: {}",
                    String::from_utf8_lossy(&self.raw[end + 4..])
                );
            }
            if !head.contains("transfer-encoding: chunked") {
                bail!("the gateway's stream is not chunked: {head}");
            }
            self.raw.drain(..end + 4);
            self.head_done = true;
        }
        // Whole chunks: `SIZE\r\nDATA\r\n`.
        while let Some(line_end) = find(&self.raw, b"\r\n") {
            let size_text = String::from_utf8_lossy(&self.raw[..line_end]);
            let size_text = size_text.split(';').next().unwrap_or("").trim();
            let size = usize::from_str_radix(size_text, 16)
                .with_context(|| format!("a bad chunk size {size_text:?}"))?;
            if self.raw.len() < line_end + 2 + size + 2 {
                break;
            }
            self.text
                .extend_from_slice(&self.raw[line_end + 2..line_end + 2 + size]);
            self.raw.drain(..line_end + 2 + size + 2);
        }
        let mut out = Vec::new();
        while let Some(end) = find(&self.text, b"\n\n") {
            let event: Vec<u8> = self.text.drain(..end + 2).collect();
            let event = String::from_utf8(event).context("the gateway sent non-UTF-8")?;
            let data = event
                .trim_end()
                .strip_prefix("data: ")
                .with_context(|| format!("not a server-sent event: {event:?}"))?;
            out.push(data.to_owned());
        }
        Ok(out)
    }
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

/// Seconds to load the model from the plain file (weights read, then mapped) and from the bundle, `reps`
/// times each, alternated.
fn load_times(
    path: &std::path::Path,
    config: &LlamaConfig,
    state_dir: &std::path::Path,
    name: &str,
    bundle: veil_blobs::BlobAddress,
    reps: usize,
) -> anyhow::Result<Loads> {
    use veil_worker::BundleSource as _;
    // The worker's own bundle source and load path (`veil_worker::load_bundle`).
    let store = veil_worker::BlobBundles(Arc::new(veil_blobs::LocalStore::open(state_dir.join("blobs"))?));
    let key = veil_bundle::DataKey::read_file(&state_dir.join("bundles").join(format!("{name}.key")))?;
    let mut loads = Loads::default();
    // The CPU time spent since `since`.
    let spent = |since: Option<f64>| Some(process_cpu_seconds()? - since?);
    for _ in 0..reps {
        let source = ModelSource::Path(path.to_owned());
        let (started, cpu) = (Instant::now(), process_cpu_seconds());
        let engine = LlamaEngine::load_with(source, config.clone(), Weights::Read)?;
        loads.file.push(started.elapsed().as_secs_f64());
        loads.file_cpu.push(spent(cpu));
        drop(engine);

        let (started, cpu) = (Instant::now(), process_cpu_seconds());
        let loaded = veil_worker::load_bundle(store.open(&bundle)?, &key, name, config)?;
        loads.bundle.push(started.elapsed().as_secs_f64());
        loads.bundle_cpu.push(spent(cpu));
        loads.bundle_open.push(loaded.decrypted.as_secs_f64());
        drop(loaded);

        let started = Instant::now();
        let engine = LlamaEngine::load_file(path, config.clone())?;
        loads.file_mapped.push(started.elapsed().as_secs_f64());
        drop(engine);
    }
    Ok(loads)
}

fn cpu_text(seconds: Option<f64>) -> String {
    seconds.map_or_else(|| "unknown".into(), |s| format!("{s:.2} s"))
}

/// User plus system CPU time of this process so far, all threads (those that ended included), in seconds:
/// `/proc/self/stat`'s `utime` and `stime`, in 10 ms ticks. `None` where it cannot be read.
fn process_cpu_seconds() -> Option<f64> {
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    // The command name (field 2) may hold spaces: count from the ") " that ends it.
    let mut fields = stat.rsplit_once(") ")?.1.split(' ');
    let utime: u64 = fields.nth(11)?.parse().ok()?;
    let stime: u64 = fields.next()?.parse().ok()?;
    Some((utime + stime) as f64 / 100.0)
}

/// The median (the mean of the two middle values for an even count); 0 for none.
fn median(mut v: Vec<f64>) -> f64 {
    v.retain(|x| x.is_finite());
    if v.is_empty() {
        return 0.0;
    }
    v.sort_by(f64::total_cmp);
    let n = v.len();
    if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    }
}

/// The first and third quartiles (medians of the lower and upper halves); a single value is both; zeros
/// for none.
fn quartiles(v: &[f64]) -> [f64; 2] {
    let mut v: Vec<f64> = v.iter().copied().filter(|x| x.is_finite()).collect();
    v.sort_by(f64::total_cmp);
    if v.len() == 1 {
        // One sample is its own spread (its halves would be empty).
        return [v[0], v[0]];
    }
    let half = v.len() / 2;
    [median(v[..half].to_vec()), median(v[v.len() - half..].to_vec())]
}

/// The largest finite value; 0 for none.
fn max(v: &[f64]) -> f64 {
    v.iter().copied().filter(|x| x.is_finite()).fold(0.0, f64::max)
}

/// The smallest finite value; 0 for none.
fn min(v: &[f64]) -> f64 {
    let m = v
        .iter()
        .copied()
        .filter(|x| x.is_finite())
        .fold(f64::INFINITY, f64::min);
    if m.is_finite() { m } else { 0.0 }
}

fn round(x: f64, digits: i32) -> f64 {
    let f = 10f64.powi(digits);
    (x * f).round() / f
}

fn print_text(r: &Report) -> anyhow::Result<()> {
    use std::io::Write as _;
    let s = &r.settings;
    let mut out = std::io::stdout().lock();
    let verdict = |ok: bool| if ok { "goal met" } else { "goal missed" };
    writeln!(
        out,
        "model {} ({:.1} MiB); {} prompt(s) × {} repetition(s), {} tokens each, greedy, {} engine thread(s) of {}; \
         medians",
        r.model,
        r.model_bytes as f64 / 1048576.0,
        s.prompts,
        s.repetitions,
        s.max_tokens,
        s.engine_threads,
        s.machine_threads
    )?;
    let d = &r.decode_tokens_per_s;
    writeln!(
        out,
        "decode:  {:.2} tok/s direct, {:.2} tok/s via gateway → worker: ratio {:.4} (pairs' quartiles {:.4}..{:.4}; \
         best {:.4}; goal ≥ {}: {})",
        d.direct,
        d.via_gateway,
        d.ratio,
        d.ratio_quartiles[0],
        d.ratio_quartiles[1],
        d.ratio_best,
        d.goal_ratio_at_least,
        verdict(d.ratio >= d.goal_ratio_at_least)
    )?;
    let us = |x: Option<f64>| x.map_or_else(|| "unknown".into(), |x| format!("{x:.0} µs"));
    writeln!(
        out,
        "         CPU outside the engine per token: {} direct, {} via gateway → worker; text events per token \
         {:.2} direct, {:.2} via gateway (stream interval {} ms)",
        us(d.cpu_outside_engine_us_per_token.direct),
        us(d.cpu_outside_engine_us_per_token.via_gateway),
        d.events_per_token.direct,
        d.events_per_token.via_gateway,
        s.stream_interval_ms
    )?;
    let t = &r.ttft_ms;
    writeln!(
        out,
        "TTFT:    {:.2} ms direct, {:.2} ms via gateway → worker: {:+.2} ms (pairs' quartiles {:+.2}..{:+.2} ms; \
         best {:+.2} ms; goal ≤ {} ms: {})",
        t.direct,
        t.via_gateway,
        t.added,
        t.added_quartiles[0],
        t.added_quartiles[1],
        t.added_best,
        t.goal_added_at_most,
        verdict(t.added <= t.goal_added_at_most)
    )?;
    let l = &r.load_seconds;
    writeln!(
        out,
        "load:    {:.3} s plain file (weights read), {:.3} s from bundle ({:.3} s until it was in memory and verified): ×{:.2} \
         (pairs' quartiles ×{:.2}..×{:.2}; best ×{:.2}; goal ≤ {}: {}); plain file mapped, nothing read: {:.3} s; \
         CPU per load: {} plain file, {} bundle",
        l.plain_file,
        l.bundle,
        l.bundle_open,
        l.ratio,
        l.ratio_quartiles[0],
        l.ratio_quartiles[1],
        l.ratio_best,
        l.goal_ratio_at_most,
        verdict(l.ratio <= l.goal_ratio_at_most),
        l.plain_file_mapped,
        cpu_text(l.plain_file_cpu),
        cpu_text(l.bundle_cpu),
    )?;
    if !s.optimized_build {
        writeln!(out, "(built without --release: not representative)")?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sse_over_chunks_split_anywhere() {
        let body = "data: {\"a\":1}\n\ndata: [DONE]\n\n";
        let mut wire =
            b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ntransfer-encoding: chunked\r\n\r\n"
                .to_vec();
        for part in [&body[..5], &body[5..20], &body[20..]] {
            wire.extend_from_slice(format!("{:x}\r\n{part}\r\n", part.len()).as_bytes());
        }
        wire.extend_from_slice(b"0\r\n\r\n");
        for step in [1, 3, 7, wire.len()] {
            let mut r = SseReader::default();
            let mut got = Vec::new();
            for piece in wire.chunks(step) {
                got.extend(r.push(piece).unwrap());
            }
            assert_eq!(got, ["{\"a\":1}", "[DONE]"], "{step}");
        }
        let mut r = SseReader::default();
        let err = r
            .push(b"HTTP/1.1 502 Bad Gateway\r\ncontent-length: 2\r\n\r\n{}")
            .unwrap_err();
        assert!(err.to_string().contains("502"), "{err}");
    }

    #[test]
    fn medians() {
        assert_eq!(median(vec![]), 0.0);
        assert_eq!(median(vec![3.0, 1.0, 2.0]), 2.0);
        assert_eq!(median(vec![4.0, 1.0, 2.0, 3.0]), 2.5);
        assert_eq!(median(vec![f64::NAN, 5.0]), 5.0);
        assert_eq!(
            (min(&[3.0, 1.0, f64::NAN]), max(&[3.0, 1.0, f64::NAN])),
            (1.0, 3.0)
        );
        assert_eq!((min(&[]), max(&[])), (0.0, 0.0));
        assert_eq!(quartiles(&[]), [0.0, 0.0]);
        assert_eq!(quartiles(&[5.0]), [5.0, 5.0]);
        assert_eq!(quartiles(&[4.0, 1.0, 3.0, 2.0]), [1.5, 3.5]);
        assert_eq!(quartiles(&[5.0, 1.0, 4.0, 2.0, 3.0, f64::NAN]), [1.5, 4.5]);
    }

    #[test]
    fn decode_rate_needs_two_tokens() {
        let s = |n, ms| Sample {
            ttft: Duration::from_millis(10),
            decode: Duration::from_millis(ms),
            completion_tokens: n,
            text_events: 5,
            outside_engine_cpu: Some(Duration::from_millis(ms)),
        };
        assert_eq!(s(1, 100).decode_rate(), None);
        assert_eq!(s(5, 0).decode_rate(), None);
        assert_eq!(s(11, 500).decode_rate(), Some(20.0));
        assert_eq!(s(10, 5).outside_engine_us_per_token(), Some(500.0));
        assert_eq!(s(0, 5).outside_engine_us_per_token(), None);
        assert_eq!(s(10, 5).events_per_token(), Some(0.5));
        assert_eq!(s(0, 5).events_per_token(), None);
    }
}
