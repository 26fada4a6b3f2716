//! The llama.cpp backend (through the `llama-cpp-2` bindings).
//!
//! Concurrency: a FIFO queue served by `slots` worker threads. Each slot owns one llama.cpp
//! context (its own KV cache), created once and cleared (metadata and data) before every request,
//! so requests never see each other's tokens. With more requests than slots, the rest wait in the
//! queue. Each slot decodes with `threads` threads.

use std::num::NonZeroU32;
use std::ops::ControlFlow;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, OnceLock, mpsc};
use std::thread::JoinHandle;
use std::time::Instant;

use llama_cpp_2::context::LlamaContext;
use llama_cpp_2::context::params::LlamaContextParams;
use llama_cpp_2::llama_backend::LlamaBackend;
use llama_cpp_2::llama_batch::LlamaBatch;
use llama_cpp_2::model::params::LlamaModelParams;
use llama_cpp_2::model::{LlamaChatMessage, LlamaChatTemplate, LlamaModel};
use llama_cpp_2::sampling::LlamaSampler;
use llama_cpp_2::token::LlamaToken;
use llama_cpp_2::{ApplyChatTemplateError, ChatTemplateError, LogOptions, send_logs_to_tracing};

use crate::error::{Error, Result};
use crate::source::{ModelSource, ModelWatch};
use crate::text::{StopMatcher, StopScan, Utf8Assembler};
use crate::types::{
    ChatMessage, ChatRequest, Completion, FinishReason, ModelInfo, SamplingParams, Timings, Usage,
};
use crate::{Engine, PieceSink};

/// Default context window per request (capped by what the model was trained with).
pub const DEFAULT_N_CTX: u32 = 4096;
/// Default number of prompt tokens evaluated per decode call.
pub const DEFAULT_N_BATCH: u32 = 512;
/// llama.cpp's "pick a random seed".
const RANDOM_SEED: u32 = 0xFFFF_FFFF;

/// How llama.cpp brings a model's weights into memory.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Weights {
    /// Map the file (mmap, page tables populated up front): the weights are the page cache's (or the
    /// memfd's) own pages and nothing is copied, so from a warm page cache no byte of them passes
    /// through the CPU. What Veil's loads use.
    #[default]
    Mapped,
    /// Read every byte into llama.cpp's own buffers (llama.cpp's `--no-mmap`). A baseline for
    /// benchmarks: like a bundle load, it moves all of the weights through the CPU into new memory.
    Read,
}

/// How the llama.cpp engine runs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LlamaConfig {
    /// Threads per slot. `None`: the machine's available parallelism divided by `slots` (at least 1).
    pub threads: Option<usize>,
    /// Requests decoded at the same time, each in its own context. Others wait in a FIFO queue.
    pub slots: usize,
    /// Context window (prompt + answer) of each request. `None`: the model's training context,
    /// capped at [`DEFAULT_N_CTX`].
    pub n_ctx: Option<u32>,
    /// Prompt tokens evaluated per decode call.
    pub n_batch: u32,
    /// A chat template to use instead of the model's own (`tokenizer.chat_template`): a template
    /// name llama.cpp knows (e.g. `"chatml"`) or a template text it recognises.
    pub chat_template: Option<String>,
}

impl Default for LlamaConfig {
    fn default() -> Self {
        Self {
            threads: None,
            slots: 1,
            n_ctx: None,
            n_batch: DEFAULT_N_BATCH,
            chat_template: None,
        }
    }
}

impl LlamaConfig {
    /// The thread count each slot will use.
    pub fn effective_threads(&self) -> usize {
        self.threads.unwrap_or_else(|| {
            let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
            (cpus / self.slots.max(1)).max(1)
        })
    }
}

/// The llama.cpp backend is initialised once per process; every engine shares it.
fn backend() -> Result<&'static LlamaBackend> {
    static BACKEND: OnceLock<std::result::Result<LlamaBackend, String>> = OnceLock::new();
    BACKEND
        .get_or_init(|| {
            // llama.cpp logs a lot (every tensor, every context). Its log is routed into `tracing`
            // only when someone asked for debug logs of the engine or of llama.cpp itself;
            // otherwise it is dropped, so stderr stays quiet.
            let verbose = tracing::enabled!(tracing::Level::DEBUG)
                || tracing::enabled!(target: "llama.cpp", tracing::Level::DEBUG);
            send_logs_to_tracing(LogOptions::default().with_logs_enabled(verbose));
            LlamaBackend::init().map_err(|e| e.to_string())
        })
        .as_ref()
        .map_err(|e| Error::Backend(e.clone()))
}

/// One request, as a slot receives it.
struct Job {
    tokens: Vec<LlamaToken>,
    params: SamplingParams,
    cancel: Arc<AtomicBool>,
    events: mpsc::Sender<Event>,
    /// If set, pieces go to it on the slot's thread instead of to the caller as [`Event::Piece`].
    inline: Option<PieceSink>,
}

enum Event {
    Piece(String),
    Done(Result<Completion>),
}

/// An [`Engine`] running a GGUF model with llama.cpp on the CPU.
pub struct LlamaEngine {
    jobs: Option<mpsc::Sender<Job>>,
    workers: Vec<JoinHandle<()>>,
    template: Option<LlamaChatTemplate>,
    model: Arc<LlamaModel>,
    info: ModelInfo,
    n_ctx: u32,
    /// Kept open for the model's lifetime: an in-memory model's pages are mapped from it. Declared
    /// after `model`, so it is dropped (closed) after the model is freed.
    _source: ModelSource,
}

impl std::fmt::Debug for LlamaEngine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LlamaEngine")
            .field("info", &self.info)
            .finish_non_exhaustive()
    }
}

impl LlamaEngine {
    /// Loads a GGUF file from disk.
    pub fn load_file(path: impl AsRef<Path>, config: LlamaConfig) -> Result<Self> {
        Self::load(ModelSource::Path(path.as_ref().to_path_buf()), config)
    }

    /// Loads a model. The GGUF header is checked first (missing, not a GGUF, truncated, or an
    /// unsupported architecture each give their own error), then llama.cpp maps it with mmap.
    pub fn load(source: ModelSource, config: LlamaConfig) -> Result<Self> {
        Self::load_with(source, config, Weights::Mapped)
    }

    /// Like [`LlamaEngine::load`], choosing how the weights get into memory.
    pub fn load_with(source: ModelSource, config: LlamaConfig, weights: Weights) -> Result<Self> {
        if config.slots == 0 || config.threads == Some(0) || config.n_batch == 0 {
            return Err(Error::InvalidRequest(
                "slots, threads and n_batch must be at least 1".into(),
            ));
        }
        let header = source.check()?;
        let backend = backend()?;
        let shown = source.display_path();
        let path = source.llama_path();
        let started = Instant::now();
        // Mapped by default: for an in-memory model the mapping shares the memfd's pages.
        let mut params = LlamaModelParams::default().with_use_mmap(weights == Weights::Mapped);
        let watch = match &source {
            ModelSource::Pending(pending) => Some(pending.watch()),
            _ => None,
        };
        if let Some(watch) = watch.clone() {
            // llama.cpp has parsed the metadata (written by now) when it first reports progress, and
            // not yet touched a weight: mapped or read, every weight is used only after this call.
            // So the load waits here until the model is released, and stops if it never will be.
            let mut released = false;
            params = params.with_progress_callback(move |_| {
                released = released || watch.wait_ready().is_ok();
                released
            });
        }
        let model = LlamaModel::load_from_file(backend, &path, &params).map_err(|e| {
            match watch.as_ref().and_then(ModelWatch::failure) {
                Some(why) => Error::ModelIncomplete(why),
                None => Error::LoadFailed {
                    path: shown.clone(),
                    reason: format!("{e} (the file passed the header check, so its contents are likely damaged or of an unsupported variant)"),
                },
            }
        })?;
        // Every weight llama.cpp read passed through the release; a model without weights never asked.
        if let ModelSource::Pending(pending) = &source {
            pending.wait_ready().map_err(Error::ModelIncomplete)?;
        }
        let model = Arc::new(model);

        let template = match &config.chat_template {
            Some(t) => Some(
                LlamaChatTemplate::new(t)
                    .map_err(|_| Error::InvalidRequest("the chat template contains a NUL byte".into()))?,
            ),
            None => match model.chat_template(None) {
                Ok(t) => Some(t),
                Err(ChatTemplateError::MissingTemplate) => None,
                Err(e) => {
                    return Err(Error::LoadFailed {
                        path: shown,
                        reason: format!("chat template: {e}"),
                    });
                }
            },
        };

        let n_ctx_train = model.n_ctx_train();
        let n_ctx = config
            .n_ctx
            .unwrap_or(DEFAULT_N_CTX.min(n_ctx_train.max(1)))
            .max(16);
        let threads = config.effective_threads();
        let n_batch = config.n_batch.min(n_ctx);

        // Slots are started one after the other: llama.cpp contexts must not be created from
        // one model concurrently.
        let (job_tx, job_rx) = mpsc::channel::<Job>();
        let job_rx = Arc::new(Mutex::new(job_rx));
        let mut workers = Vec::with_capacity(config.slots);
        for slot in 0..config.slots {
            let (ready_tx, ready_rx) = mpsc::channel();
            let model = Arc::clone(&model);
            let jobs = Arc::clone(&job_rx);
            let handle = std::thread::Builder::new()
                .name(format!("veil-engine-slot-{slot}"))
                .spawn(move || slot_main(&model, n_ctx, n_batch, threads, &jobs, &ready_tx))
                .map_err(|e| Error::Backend(format!("cannot start a worker thread: {e}")))?;
            workers.push(handle);
            match ready_rx.recv() {
                Ok(Ok(())) => {}
                Ok(Err(e)) => return Err(e),
                Err(_) => return Err(Error::Backend("a worker thread died while starting".into())),
            }
        }

        let info = ModelInfo {
            name: header.name.clone().unwrap_or_else(|| {
                shown
                    .file_stem()
                    .map_or_else(|| "model".into(), |s| s.to_string_lossy().into_owned())
            }),
            architecture: header.architecture.clone().unwrap_or_default(),
            n_params: model.n_params(),
            size: model.size(),
            n_ctx_train,
            n_ctx,
            threads,
            slots: config.slots,
        };
        tracing::debug!(
            model = %info.name, arch = %info.architecture, n_ctx, threads, slots = config.slots,
            seconds = started.elapsed().as_secs_f64(), "model loaded"
        );
        Ok(Self {
            jobs: Some(job_tx),
            workers,
            template,
            model,
            info,
            n_ctx,
            _source: source,
        })
    }

    /// Formats messages with the chat template (the model's own unless configured otherwise),
    /// ending with the assistant's turn opened.
    pub fn format_chat(&self, messages: &[ChatMessage]) -> Result<String> {
        let template = self.template.as_ref().ok_or(Error::NoChatTemplate)?;
        let chat = messages
            .iter()
            .map(|m| LlamaChatMessage::new(m.role.as_str().to_owned(), m.content.clone()))
            .collect::<std::result::Result<Vec<_>, _>>()
            .map_err(|_| Error::InvalidRequest("a message contains a NUL byte".into()))?;
        self.model
            .apply_chat_template(template, &chat, true)
            .map_err(|e| match e {
                ApplyChatTemplateError::FfiError(_) | ApplyChatTemplateError::NullResult => {
                    let start: String = template
                        .to_string()
                        .unwrap_or_default()
                        .chars()
                        .take(60)
                        .collect();
                    Error::UnsupportedChatTemplate {
                        template_start: start,
                    }
                }
                other => Error::Inference(format!("applying the chat template: {other}")),
            })
    }

    /// Tokenizes a templated prompt: special tokens written in the template (`<|im_start|>`…)
    /// become their token, and BOS is added where the model wants it (once).
    pub fn tokenize_prompt(&self, prompt: &str) -> Vec<LlamaToken> {
        let vocab = self.model.vocab();
        let mut tokens = vocab.tokenize(prompt.as_bytes(), true, true);
        let bos = vocab.bos();
        // A template that writes the BOS text itself, plus add_special, would give two.
        if tokens.len() >= 2 && tokens[0] == bos && tokens[1] == bos {
            tokens.remove(0);
        }
        tokens
    }

    /// Runs a raw token prompt (no chat template): for benchmarks and tests of the decoder itself.
    pub fn generate_tokens(
        &self,
        tokens: Vec<LlamaToken>,
        params: &SamplingParams,
        on_piece: &mut dyn FnMut(&str) -> ControlFlow<()>,
    ) -> Result<Completion> {
        self.submit(tokens, params, on_piece, None)
    }

    /// Queues a job and waits for its end; pieces go to `on_piece` on this thread, or to `inline` on
    /// the slot's thread.
    fn submit(
        &self,
        tokens: Vec<LlamaToken>,
        params: &SamplingParams,
        on_piece: &mut dyn FnMut(&str) -> ControlFlow<()>,
        inline: Option<PieceSink>,
    ) -> Result<Completion> {
        params.validate()?;
        if tokens.is_empty() {
            return Err(Error::InvalidRequest("the prompt is empty".into()));
        }
        if tokens.len() >= self.n_ctx as usize {
            return Err(Error::PromptTooLong {
                prompt_tokens: tokens.len(),
                n_ctx: self.n_ctx,
            });
        }
        let jobs = self.jobs.as_ref().ok_or(Error::EngineStopped)?;
        let (tx, rx) = mpsc::channel();
        let cancel = Arc::new(AtomicBool::new(false));
        jobs.send(Job {
            tokens,
            params: params.clone(),
            cancel: Arc::clone(&cancel),
            events: tx,
            inline,
        })
        .map_err(|_| Error::EngineStopped)?;
        let mut cancelled = false;
        loop {
            match rx.recv() {
                Ok(Event::Piece(p)) => {
                    if !cancelled && on_piece(&p).is_break() {
                        cancelled = true;
                        cancel.store(true, Ordering::Relaxed);
                    }
                }
                Ok(Event::Done(result)) => return result,
                Err(_) => return Err(Error::EngineStopped),
            }
        }
    }

    /// The vocabulary's tokens for a text (no special-token parsing): for benchmarks.
    pub fn tokenize_text(&self, text: &str) -> Vec<LlamaToken> {
        self.model.vocab().tokenize(text.as_bytes(), true, false)
    }
}

impl Engine for LlamaEngine {
    fn info(&self) -> &ModelInfo {
        &self.info
    }

    fn chat_stream(
        &self,
        request: &ChatRequest,
        on_piece: &mut dyn FnMut(&str) -> ControlFlow<()>,
    ) -> Result<Completion> {
        let tokens = self.chat_tokens(request)?;
        self.submit(tokens, &request.params, on_piece, None)
    }

    fn chat_stream_send(&self, request: &ChatRequest, on_piece: PieceSink) -> Result<Completion> {
        let tokens = self.chat_tokens(request)?;
        // Pieces never reach this thread: the slot calls `on_piece`.
        self.submit(
            tokens,
            &request.params,
            &mut |_| ControlFlow::Continue(()),
            Some(on_piece),
        )
    }
}

impl LlamaEngine {
    /// A chat request's prompt tokens, after checking it.
    fn chat_tokens(&self, request: &ChatRequest) -> Result<Vec<LlamaToken>> {
        request.params.validate()?;
        if request.messages.is_empty() {
            return Err(Error::InvalidRequest(
                "a chat request needs at least one message".into(),
            ));
        }
        let prompt = self.format_chat(&request.messages)?;
        Ok(self.tokenize_prompt(&prompt))
    }
}

impl Drop for LlamaEngine {
    fn drop(&mut self) {
        // Closing the queue ends every slot's loop; join them so that their contexts are freed
        // before the model (and an in-memory model's file) is.
        self.jobs.take();
        for w in self.workers.drain(..) {
            let _ = w.join();
        }
    }
}

fn slot_main(
    model: &LlamaModel,
    n_ctx: u32,
    n_batch: u32,
    threads: usize,
    jobs: &Mutex<mpsc::Receiver<Job>>,
    ready: &mpsc::Sender<Result<()>>,
) {
    let started = backend().and_then(|backend| {
        let threads = i32::try_from(threads).unwrap_or(i32::MAX);
        let params = LlamaContextParams::default()
            .with_n_ctx(NonZeroU32::new(n_ctx))
            .with_n_batch(n_batch)
            .with_n_ubatch(n_batch)
            .with_n_seq_max(1)
            .with_n_threads(threads)
            .with_n_threads_batch(threads);
        model.new_context(backend, params).map_err(|e| {
            Error::Backend(format!(
                "cannot create a llama.cpp context of {n_ctx} tokens: {e}"
            ))
        })
    });
    let mut ctx = match started {
        Ok(ctx) => {
            let _ = ready.send(Ok(()));
            ctx
        }
        Err(e) => {
            let _ = ready.send(Err(e));
            return;
        }
    };
    let mut batch = LlamaBatch::new(n_batch as usize, 1);
    loop {
        // Only one idle slot waits in `recv` at a time; the others wait for the lock.
        let job = match jobs.lock() {
            Ok(rx) => rx.recv(),
            Err(poisoned) => poisoned.into_inner().recv(),
        };
        let Ok(mut job) = job else { return };
        let result = run_job(model, &mut ctx, &mut batch, n_batch as usize, &mut job);
        // The caller's sink goes before the caller hears of the end (it may hold a connection open).
        job.inline = None;
        let _ = job.events.send(Event::Done(result));
    }
}

fn inference<E: std::fmt::Display>(what: &'static str) -> impl FnOnce(E) -> Error {
    move |e| Error::Inference(format!("{what}: {e}"))
}

fn build_sampler(params: &SamplingParams, n_vocab: i32, n_ctx: u32) -> LlamaSampler {
    let mut chain = Vec::new();
    if params.presence_penalty != 0.0 || params.frequency_penalty != 0.0 {
        // Over every token of the answer so far (the window is the whole context).
        let window = i32::try_from(n_ctx).unwrap_or(i32::MAX);
        chain.push(LlamaSampler::penalties(
            n_vocab,
            window,
            1.0,
            params.frequency_penalty,
            params.presence_penalty,
        ));
    }
    if params.temperature <= 0.0 {
        chain.push(LlamaSampler::greedy());
    } else {
        if params.top_k > 0 {
            chain.push(LlamaSampler::top_k(
                i32::try_from(params.top_k).unwrap_or(i32::MAX),
            ));
        }
        if params.top_p < 1.0 {
            chain.push(LlamaSampler::top_p(params.top_p, 1));
        }
        chain.push(LlamaSampler::temp(params.temperature));
        chain.push(LlamaSampler::dist(params.seed.unwrap_or(RANDOM_SEED)));
    }
    LlamaSampler::chain_simple(chain)
}

fn run_job(
    model: &LlamaModel,
    ctx: &mut LlamaContext<'_>,
    batch: &mut LlamaBatch<'_>,
    n_batch: usize,
    job: &mut Job,
) -> Result<Completion> {
    // A fresh sequence: nothing of the previous request stays in the KV cache.
    ctx.clear_kv_cache();
    let n_ctx = ctx.n_ctx();
    let prompt_started = Instant::now();
    let n_prompt = job.tokens.len();
    let mut pos: i32 = 0;
    for chunk in job.tokens.chunks(n_batch) {
        batch.clear();
        for &token in chunk {
            let last = pos as usize + 1 == n_prompt;
            batch
                .add(token, pos, &[0], last)
                .map_err(inference("adding a prompt token"))?;
            pos += 1;
        }
        ctx.decode(batch).map_err(inference("evaluating the prompt"))?;
    }
    let prompt_seconds = prompt_started.elapsed().as_secs_f64();

    let generation_started = Instant::now();
    let vocab = model.vocab();
    let mut sampler = build_sampler(&job.params, model.n_vocab(), n_ctx);
    let mut utf8 = Utf8Assembler::default();
    let mut stops = StopMatcher::new(&job.params.stop);
    let mut text = String::new();
    let mut completion_tokens: u32 = 0;
    let max_tokens = job.params.max_tokens.unwrap_or(u32::MAX);
    let mut stopped_by_sequence = false;
    let mut emit = |piece: String, text: &mut String| {
        if piece.is_empty() {
            return;
        }
        text.push_str(&piece);
        let stop = match &mut job.inline {
            Some(f) => f(&piece).is_break(),
            None => job.events.send(Event::Piece(piece)).is_err(),
        };
        if stop {
            job.cancel.store(true, Ordering::Relaxed);
        }
    };

    let finish_reason = loop {
        if job.cancel.load(Ordering::Relaxed) {
            break FinishReason::Cancelled;
        }
        // `sample` also records the token in the sampler (penalties, RNG state).
        let token = sampler.sample(ctx, -1);
        if vocab.is_eog(token) && !job.params.ignore_eos {
            break FinishReason::Stop;
        }
        completion_tokens += 1;
        let piece = utf8.push(&vocab.token_to_piece(token, false, None));
        if !piece.is_empty() {
            match stops.push(&piece) {
                StopScan::Continue(t) => emit(t, &mut text),
                StopScan::Stopped(t) => {
                    emit(t, &mut text);
                    stopped_by_sequence = true;
                    break FinishReason::Stop;
                }
            }
        }
        if completion_tokens >= max_tokens || pos as u32 >= n_ctx {
            break FinishReason::Length;
        }
        batch.clear();
        batch
            .add(token, pos, &[0], true)
            .map_err(inference("adding a token"))?;
        pos += 1;
        ctx.decode(batch).map_err(inference("decoding"))?;
    };

    // Unless a stop sequence ended it, release what was held back (an incomplete character at
    // the very end becomes U+FFFD; text that only looked like a stop sequence's start).
    if !stopped_by_sequence && finish_reason != FinishReason::Cancelled {
        let tail = utf8.finish();
        match stops.push(&tail) {
            StopScan::Continue(t) | StopScan::Stopped(t) => emit(t, &mut text),
        }
        let held = stops.finish();
        emit(held, &mut text);
    }

    Ok(Completion {
        text,
        finish_reason,
        usage: Usage {
            prompt_tokens: u32::try_from(n_prompt).unwrap_or(u32::MAX),
            completion_tokens,
        },
        timings: Timings {
            prompt_seconds,
            generation_seconds: generation_started.elapsed().as_secs_f64(),
        },
    })
}
