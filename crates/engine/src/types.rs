//! Requests, results and stream events: what any backend takes and gives.

use crate::error::{Error, Result};

/// Who says a chat message.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Role {
    System,
    User,
    Assistant,
}

impl Role {
    /// The role name used by chat templates (and by the OpenAI API).
    pub fn as_str(self) -> &'static str {
        match self {
            Role::System => "system",
            Role::User => "user",
            Role::Assistant => "assistant",
        }
    }
}

impl std::str::FromStr for Role {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        match s {
            "system" => Ok(Role::System),
            "user" => Ok(Role::User),
            "assistant" => Ok(Role::Assistant),
            other => Err(Error::InvalidRequest(format!(
                "unknown role {other:?} (expected system, user or assistant)"
            ))),
        }
    }
}

/// One chat message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChatMessage {
    pub role: Role,
    pub content: String,
}

impl ChatMessage {
    pub fn system(content: impl Into<String>) -> Self {
        Self {
            role: Role::System,
            content: content.into(),
        }
    }
    pub fn user(content: impl Into<String>) -> Self {
        Self {
            role: Role::User,
            content: content.into(),
        }
    }
    pub fn assistant(content: impl Into<String>) -> Self {
        Self {
            role: Role::Assistant,
            content: content.into(),
        }
    }
}

/// How the next token is chosen, with OpenAI's meanings.
#[derive(Debug, Clone, PartialEq)]
pub struct SamplingParams {
    /// 0 means greedy: always the most likely token, fully deterministic.
    pub temperature: f32,
    /// Nucleus sampling: keep the smallest set of tokens whose probability reaches `top_p` (1 = off).
    pub top_p: f32,
    /// Keep only the `top_k` most likely tokens (0 = off).
    pub top_k: u32,
    /// Random seed; the same seed and request give the same output. `None` = random.
    pub seed: Option<u32>,
    /// Most tokens to generate; `None` = until the model stops or the context is full.
    pub max_tokens: Option<u32>,
    /// Generation stops before any of these strings; they are not part of the output.
    pub stop: Vec<String>,
    /// Penalty (−2..2) on tokens that already appeared in the answer.
    pub presence_penalty: f32,
    /// Penalty (−2..2) proportional to how often a token already appeared in the answer.
    pub frequency_penalty: f32,
    /// Keep generating past the end-of-generation token (benchmarks only: fixed-length output).
    pub ignore_eos: bool,
}

impl Default for SamplingParams {
    fn default() -> Self {
        Self {
            temperature: 0.8,
            top_p: 0.95,
            top_k: 40,
            seed: None,
            max_tokens: None,
            stop: Vec::new(),
            presence_penalty: 0.0,
            frequency_penalty: 0.0,
            ignore_eos: false,
        }
    }
}

impl SamplingParams {
    /// Greedy decoding (temperature 0): deterministic.
    pub fn greedy() -> Self {
        Self {
            temperature: 0.0,
            ..Self::default()
        }
    }

    /// Checks the ranges, so that llama.cpp never sees a nonsensical value.
    pub fn validate(&self) -> Result<()> {
        let bad = |m: String| Err(Error::InvalidRequest(m));
        if !self.temperature.is_finite() || self.temperature < 0.0 {
            return bad(format!("temperature must be ≥ 0 (got {})", self.temperature));
        }
        if !(self.top_p > 0.0 && self.top_p <= 1.0) {
            return bad(format!("top_p must be in (0, 1] (got {})", self.top_p));
        }
        for (name, v) in [
            ("presence_penalty", self.presence_penalty),
            ("frequency_penalty", self.frequency_penalty),
        ] {
            if !v.is_finite() || !(-2.0..=2.0).contains(&v) {
                return bad(format!("{name} must be in [-2, 2] (got {v})"));
            }
        }
        if self.max_tokens == Some(0) {
            return bad("max_tokens must be at least 1".into());
        }
        if self.stop.len() > 16 || self.stop.iter().any(|s| s.len() > 256) {
            return bad("at most 16 stop sequences of at most 256 bytes each".into());
        }
        Ok(())
    }
}

/// A chat completion request.
#[derive(Debug, Clone, PartialEq)]
pub struct ChatRequest {
    pub messages: Vec<ChatMessage>,
    pub params: SamplingParams,
}

impl ChatRequest {
    /// One user message.
    pub fn user(prompt: impl Into<String>, params: SamplingParams) -> Self {
        Self {
            messages: vec![ChatMessage::user(prompt)],
            params,
        }
    }
}

/// Why generation ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum FinishReason {
    /// The model ended its answer, or a stop sequence was reached.
    Stop,
    /// `max_tokens` was reached, or the context window is full.
    Length,
    /// The consumer stopped reading the stream.
    Cancelled,
}

impl FinishReason {
    /// OpenAI's spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            FinishReason::Stop => "stop",
            FinishReason::Length => "length",
            FinishReason::Cancelled => "cancelled",
        }
    }
}

/// Token counts of one request.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Hash)]
pub struct Usage {
    /// Tokens of the templated prompt.
    pub prompt_tokens: u32,
    /// Tokens generated (the end-of-generation token is not counted: it is not part of the answer).
    pub completion_tokens: u32,
}

impl Usage {
    pub fn total_tokens(&self) -> u32 {
        self.prompt_tokens + self.completion_tokens
    }
}

/// Timing of one request, for benchmarks and metrics.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct Timings {
    /// Seconds spent evaluating the prompt.
    pub prompt_seconds: f64,
    /// Seconds spent generating (sampling and decoding) the answer.
    pub generation_seconds: f64,
}

/// The whole answer to a request.
#[derive(Debug, Clone, PartialEq)]
pub struct Completion {
    pub text: String,
    pub finish_reason: FinishReason,
    pub usage: Usage,
    pub timings: Timings,
}

/// Facts about the loaded model.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ModelInfo {
    /// `general.name`, or the file name.
    pub name: String,
    /// `general.architecture`.
    pub architecture: String,
    pub n_params: u64,
    /// Bytes of weights.
    pub size: u64,
    /// Context length the model was trained with.
    pub n_ctx_train: u32,
    /// Context window of each request in this engine.
    pub n_ctx: u32,
    /// Threads each request uses.
    pub threads: usize,
    /// Requests served at the same time.
    pub slots: usize,
}
