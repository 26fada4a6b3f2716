//! The inference Engine trait and its llama.cpp backend; knows nothing else of Veil.
//!
//! - [`Engine`]: what a worker calls, whatever the backend: chat messages in, streamed text out,
//!   ending with a finish reason and token usage.
//! - [`LlamaEngine`]: llama.cpp through `llama-cpp-2`, loading a GGUF from a file or from a
//!   file that exists only in memory ([`InMemoryModel`], a memfd).
//! - [`gguf`]: a header check that tells missing, non-GGUF, truncated and unsupported files apart
//!   before llama.cpp sees them.
#![forbid(unsafe_code)]
#![cfg_attr(not(test), deny(clippy::unwrap_used, clippy::expect_used))]

mod error;
pub mod gguf;
mod llama;
mod source;
mod text;
mod types;

use std::ops::ControlFlow;
use std::sync::{Arc, mpsc};

pub use error::{Error, Result};
pub use llama::{DEFAULT_N_BATCH, DEFAULT_N_CTX, LlamaConfig, LlamaEngine, Weights};
pub use source::{InMemoryModel, InMemoryModelWriter, ModelRelease, ModelSource, ModelWatch, PendingModel};
pub use types::{
    ChatMessage, ChatRequest, Completion, FinishReason, ModelInfo, Role, SamplingParams, Timings, Usage,
};

/// A callback that takes each piece of an answer on the engine's own thread ([`Engine::chat_stream_send`]);
/// `Break` stops generation.
pub type PieceSink = Box<dyn FnMut(&str) -> ControlFlow<()> + Send>;

/// A chat-completion engine. Implementations are shared between threads: every method takes
/// `&self`, and concurrent calls are each served with their own context.
pub trait Engine: Send + Sync {
    /// The loaded model.
    fn info(&self) -> &ModelInfo;

    /// Runs one request, calling `on_piece` with each piece of text as soon as it is produced.
    /// Pieces are whole UTF-8 characters and never contain (part of) a stop sequence; together
    /// they are exactly [`Completion::text`]. Returning `ControlFlow::Break` from `on_piece`
    /// stops generation (finish reason [`FinishReason::Cancelled`]).
    fn chat_stream(
        &self,
        request: &ChatRequest,
        on_piece: &mut dyn FnMut(&str) -> ControlFlow<()>,
    ) -> Result<Completion>;

    /// Like [`Engine::chat_stream`], for callers that hand each piece on to another thread anyway (a
    /// server writing it to a connection): `on_piece` may be called on the engine's own thread as soon as
    /// the piece is produced, so that the caller's thread is not woken for every token. `on_piece` should
    /// return quickly: the next token waits for it.
    fn chat_stream_send(&self, request: &ChatRequest, mut on_piece: PieceSink) -> Result<Completion> {
        self.chat_stream(request, &mut *on_piece)
    }

    /// Runs one request to the end and returns the whole answer.
    fn chat(&self, request: &ChatRequest) -> Result<Completion> {
        self.chat_stream(request, &mut |_| ControlFlow::Continue(()))
    }
}

/// An event of a [`ChatStream`].
#[derive(Debug, Clone, PartialEq)]
pub enum StreamEvent {
    /// More text of the answer.
    Piece(String),
    /// The end: the whole answer, its finish reason and usage.
    Done(Completion),
}

/// A request running on its own thread, read as an iterator (or from async code with a blocking
/// adapter). Dropping it cancels the request.
#[derive(Debug)]
pub struct ChatStream {
    events: mpsc::Receiver<Result<StreamEvent>>,
}

impl Iterator for ChatStream {
    type Item = Result<StreamEvent>;
    fn next(&mut self) -> Option<Self::Item> {
        self.events.recv().ok()
    }
}

/// Starts `request` on `engine` and returns its events as they come.
pub fn stream(engine: Arc<dyn Engine>, request: ChatRequest) -> ChatStream {
    let (tx, rx) = mpsc::sync_channel(64);
    std::thread::spawn(move || {
        let result = engine.chat_stream(&request, &mut |piece| match tx
            .send(Ok(StreamEvent::Piece(piece.to_owned())))
        {
            Ok(()) => ControlFlow::Continue(()),
            Err(_) => ControlFlow::Break(()),
        });
        let _ = tx.send(result.map(StreamEvent::Done));
    });
    ChatStream { events: rx }
}
