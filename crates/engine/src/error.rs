//! The one error type of the engine.

use std::path::PathBuf;

/// Result of engine operations.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// What went wrong, said so that the reader knows what to do.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("model file {path} does not exist: check the path (or fetch the model first)")]
    ModelNotFound { path: PathBuf },

    #[error("{path} is not a GGUF model file: {reason}; give a .gguf model (llama.cpp format)")]
    NotGguf { path: PathBuf, reason: String },

    #[error("{path} is a truncated GGUF file: {reason}; the copy is incomplete, fetch or copy it again")]
    TruncatedGguf { path: PathBuf, reason: String },

    #[error(
        "{path} is a {architecture:?} model, an architecture this engine's llama.cpp cannot run; \
         use a model of a supported architecture (llama, qwen2, gemma, phi3, …)"
    )]
    UnsupportedArchitecture { path: PathBuf, architecture: String },

    #[error(
        "llama.cpp could not load {path}: {reason} (run with VEIL_LOG=veil_engine=debug to see \
         llama.cpp's own log)"
    )]
    LoadFailed { path: PathBuf, reason: String },

    #[error("cannot put the model in memory: {0}")]
    Memory(String),

    #[error("the model being written into memory was not completed: {0}")]
    ModelIncomplete(String),

    #[error("the llama.cpp backend failed to start: {0}")]
    Backend(String),

    #[error(
        "the model has no chat template in its GGUF metadata (tokenizer.chat_template); set one \
         explicitly in the engine configuration"
    )]
    NoChatTemplate,

    #[error(
        "llama.cpp does not recognise the chat template {template_start:?}…; its built-in matcher \
         knows ChatML, Llama 2/3, Mistral, Gemma, Phi-3 and others: set one of those by name \
         (e.g. \"chatml\") in the engine configuration"
    )]
    UnsupportedChatTemplate { template_start: String },

    #[error(
        "the prompt is {prompt_tokens} tokens but the context window is {n_ctx} tokens (and at \
         least one token must be left to answer); shorten the conversation or raise the context size"
    )]
    PromptTooLong { prompt_tokens: usize, n_ctx: u32 },

    #[error("invalid request: {0}")]
    InvalidRequest(String),

    #[error("inference failed: {0}")]
    Inference(String),

    #[error("the engine has shut down")]
    EngineStopped,

    #[error("{context}: {source}")]
    Io {
        context: String,
        #[source]
        source: std::io::Error,
    },
}
