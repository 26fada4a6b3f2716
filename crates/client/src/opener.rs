//! Opens a sealed response stream: frames → authenticated events → a checked receipt.

use veil_crypto::frames::FrameOpener;
use veil_crypto::sign::VerifyingKey;
use veil_types::{FrameDecoder, Receipt, ResponseEvent, Usage, tags};
use zeroize::Zeroizing;

use crate::{ClientError, Result, SealedRequest};

/// The end of a complete, verified answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Completion {
    /// `stop`, `length` or `cancelled`.
    pub finish_reason: String,
    pub usage: Usage,
    /// The worker's signed receipt, already checked against the request, the answer and the attested key.
    pub receipt: Receipt,
}

/// An authenticated event of an answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// More text.
    Delta(String),
    /// The end, with a verified receipt.
    Done(Box<Completion>),
}

/// Opens the frames of one response, in order, and checks its receipt. Sans-I/O: feed it the bytes of
/// the HTTP body as they arrive with [`ResponseOpener::push`], then call [`ResponseOpener::finish`]
/// when the body ends.
pub struct ResponseOpener {
    decoder: FrameDecoder,
    frames: FrameOpener,
    text: Zeroizing<String>,
    request_hash: [u8; 32],
    model: String,
    worker_key: VerifyingKey,
    done: bool,
    /// An error found after events that were returned first; reported by the next call.
    failed: Option<ClientError>,
}

impl std::fmt::Debug for ResponseOpener {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ResponseOpener")
            .field("done", &self.done)
            .finish_non_exhaustive()
    }
}

impl ResponseOpener {
    /// An opener for the response to `request`, whose receipt must be signed by `worker_key` (the attested
    /// signing key).
    pub fn new(request: &SealedRequest, worker_key: VerifyingKey) -> Self {
        Self {
            decoder: FrameDecoder::default(),
            frames: FrameOpener::new(
                request.response_key.expose(),
                tags::INFER_RESPONSE,
                &request.request_hash,
            ),
            text: Zeroizing::new(String::new()),
            request_hash: request.request_hash,
            model: request.model.clone(),
            worker_key,
            done: false,
            failed: None,
        }
    }

    /// Takes more bytes of the body; returns the events they complete. Events that authenticated before a
    /// failing frame are returned first, and the failure by the next call (`push` or `finish`). After an
    /// error the stream is over.
    pub fn push(&mut self, bytes: &[u8]) -> Result<Vec<Event>> {
        if let Some(e) = self.failed.take() {
            return Err(e);
        }
        let mut events = Vec::new();
        match self.push_inner(bytes, &mut events) {
            Ok(()) => Ok(events),
            Err(e) if events.is_empty() => Err(e),
            Err(e) => {
                self.failed = Some(e);
                Ok(events)
            }
        }
    }

    fn push_inner(&mut self, bytes: &[u8], events: &mut Vec<Event>) -> Result<()> {
        self.decoder.push(bytes);
        while let Some(frame) = self.decoder.next_frame()? {
            if self.done {
                return Err(ClientError::Stream(
                    "data arrived after the final frame (replayed or appended)".into(),
                ));
            }
            let opened = self
                .frames
                .open(&frame)
                .map_err(|e| ClientError::Stream(e.to_string()))?;
            let event = ResponseEvent::from_padded(&opened.msg)?;
            if event.is_last() != opened.last {
                return Err(ClientError::Stream(format!(
                    "frame {} is {} but {} marked as the last frame",
                    opened.seq,
                    if event.is_last() {
                        "a final event"
                    } else {
                        "a delta"
                    },
                    if opened.last { "is" } else { "is not" }
                )));
            }
            match event {
                ResponseEvent::Delta { text } => {
                    self.text.push_str(&text);
                    events.push(Event::Delta(text));
                }
                ResponseEvent::Error { kind, message } => {
                    self.done = true;
                    return Err(ClientError::Worker { kind, message });
                }
                ResponseEvent::Done {
                    finish_reason,
                    usage,
                    receipt,
                } => {
                    self.check_receipt(&receipt, usage)?;
                    self.done = true;
                    events.push(Event::Done(Box::new(Completion {
                        finish_reason,
                        usage,
                        receipt: *receipt,
                    })));
                }
            }
        }
        Ok(())
    }

    fn check_receipt(&self, r: &Receipt, usage: Usage) -> Result<()> {
        r.verify_signature()?;
        let bad = |m: &str| Err(ClientError::Receipt(m.to_owned()));
        if r.worker_key != self.worker_key.to_bytes() {
            return bad("signed by a key other than the attested worker's");
        }
        if r.request_hash != self.request_hash {
            return bad("it is for another request");
        }
        if r.response_hash != veil_types::response_hash(&self.text) {
            return bad("it covers another answer than the one received");
        }
        if r.model != self.model {
            return bad("it names another model than the one requested");
        }
        if r.prompt_tokens != usage.prompt_tokens || r.completion_tokens != usage.completion_tokens {
            return bad("its token counts differ from the reported usage");
        }
        Ok(())
    }

    /// Call when the body ended: fails unless the final frame arrived and nothing followed it.
    pub fn finish(&mut self) -> Result<()> {
        if let Some(e) = self.failed.take() {
            return Err(e);
        }
        self.decoder.finish()?;
        if !self.done {
            return Err(ClientError::Stream(
                "the answer ended before its final frame (truncated: the worker stopped or the connection \
                 was cut)"
                    .into(),
            ));
        }
        Ok(())
    }

    /// Whether the final frame arrived.
    pub fn is_done(&self) -> bool {
        self.done
    }
}
