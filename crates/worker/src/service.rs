//! The worker's HTTP service: attestation, provisioning and sealed inference.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::ops::ControlFlow;
use std::str::FromStr;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::{DefaultBodyLimit, Query, State as AxState};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::serve::ListenerExt as _;
use serde::Deserialize;
use tokio::sync::{mpsc, oneshot};
use tokio_stream::wrappers::UnboundedReceiverStream;
use veil_blobs::BlobAddress;
use veil_crypto::frames::FrameSealer;
use veil_engine::{ChatMessage, ChatRequest, Engine, Role, SamplingParams};
use veil_types::{
    AttestationDoc, ErrorKind, InferRequest, ModelStatus, PROTOCOL_VERSION, ProvisionRequest, Receipt,
    ResponseEvent, Usage, tags,
};
use zeroize::Zeroizing;

use crate::coalesce::Coalescer;
use crate::replay::Refusal;
use crate::{Result, Worker, WorkerError};

/// A worker serving HTTP on a background task; [`RunningWorker::stop`] (or dropping it) stops it.
#[derive(Debug)]
pub struct RunningWorker {
    addr: SocketAddr,
    shutdown: Option<oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<std::io::Result<()>>>,
}

impl RunningWorker {
    /// The address it listens on.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Its base URL, `http://ADDR`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Stops serving and waits for open connections to finish.
    pub async fn stop(mut self) -> Result<()> {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        if let Some(task) = self.task.take() {
            task.await
                .map_err(|e| WorkerError::Internal(format!("server task: {e}")))?
                .map_err(|e| WorkerError::Internal(format!("server: {e}")))?;
        }
        Ok(())
    }

    /// Waits until the server ends (it ends only on error or when stopped).
    pub async fn wait(mut self) -> Result<()> {
        if let Some(task) = self.task.take() {
            task.await
                .map_err(|e| WorkerError::Internal(format!("server task: {e}")))?
                .map_err(|e| WorkerError::Internal(format!("server: {e}")))?;
        }
        Ok(())
    }
}

impl Drop for RunningWorker {
    fn drop(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
    }
}

impl Worker {
    /// The HTTP routes of the protocol.
    pub fn router(&self) -> Router {
        Router::new()
            .route("/v1/attestation", get(attestation))
            .route("/v1/provision", post(provision))
            .route("/v1/infer", post(infer))
            .layer(DefaultBodyLimit::max(veil_types::MAX_REQUEST_LEN))
            .with_state(self.clone())
    }

    /// Binds `self.config.listen` and serves on a background task of the current tokio runtime.
    pub async fn start(&self) -> Result<RunningWorker> {
        let listen = self.state.config.listen;
        let listener = tokio::net::TcpListener::bind(listen)
            .await
            .map_err(|source| WorkerError::Listen {
                addr: listen.to_string(),
                source,
            })?;
        let addr = listener.local_addr().map_err(|source| WorkerError::Listen {
            addr: listen.to_string(),
            source,
        })?;
        let (tx, rx) = oneshot::channel::<()>();
        let app = self.router();
        // Every response frame is a small write that should leave at once: no Nagle delay.
        let listener = listener.tap_io(|tcp| {
            if let Err(e) = tcp.set_nodelay(true) {
                tracing::debug!(error = %e, "cannot set TCP_NODELAY");
            }
        });
        let task = tokio::spawn(async move {
            axum::serve(listener, app)
                .with_graceful_shutdown(async move {
                    let _ = rx.await;
                })
                .await
        });
        tracing::info!(%addr, "worker listening");
        Ok(RunningWorker {
            addr,
            shutdown: Some(tx),
            task: Some(task),
        })
    }
}

/// A plain (unencrypted) error: only for failures before the request is opened, or about public data.
fn plain_error(status: StatusCode, code: &str, message: String) -> Response {
    let body = serde_json::json!({ "error": { "code": code, "message": message } });
    (status, axum::Json(body)).into_response()
}

#[derive(Deserialize)]
struct NonceQuery {
    nonce: String,
}

async fn attestation(
    AxState(worker): AxState<Worker>,
    query: std::result::Result<Query<NonceQuery>, axum::extract::rejection::QueryRejection>,
) -> Response {
    let Ok(Query(q)) = query else {
        return plain_error(
            StatusCode::BAD_REQUEST,
            "missing_nonce",
            "add ?nonce=HEX (8 to 64 fresh random bytes) to the attestation request".into(),
        );
    };
    let nonce = match hex::decode(&q.nonce) {
        Ok(n) if (8..=64).contains(&n.len()) => n,
        _ => {
            return plain_error(
                StatusCode::BAD_REQUEST,
                "bad_nonce",
                "the nonce must be 8 to 64 bytes written as hex".into(),
            );
        }
    };
    let st = &worker.state;
    let report_data = veil_attest::report_data(&nonce, &st.enclave.keys_hash);
    let evidence = match st
        .enclave
        .platform
        .evidence(&report_data)
        .and_then(|raw| raw.into_evidence(None))
    {
        Ok(e) => e.to_bytes(),
        Err(e) => {
            tracing::error!(error = %e, "cannot produce evidence");
            return plain_error(
                StatusCode::INTERNAL_SERVER_ERROR,
                "evidence_failed",
                e.to_string(),
            );
        }
    };
    let models = match worker.read_models() {
        Ok(m) => m
            .iter()
            .map(|(name, slot)| ModelStatus {
                name: name.clone(),
                bundle: slot.bundle.to_string(),
                ready: slot.engine.is_some(),
            })
            .collect(),
        Err(e) => return plain_error(StatusCode::INTERNAL_SERVER_ERROR, "internal", e.to_string()),
    };
    tracing::debug!(evidence_bytes = evidence.len(), "attestation served");
    axum::Json(AttestationDoc {
        version: PROTOCOL_VERSION,
        evidence,
        hpke_public_key: st.enclave.hpke.public_key().to_bytes(),
        signing_public_key: st.enclave.signing.verifying_key().to_bytes(),
        measurement: st.enclave.measurement.clone(),
        simulated: st.enclave.simulated,
        models,
    })
    .into_response()
}

async fn provision(AxState(worker): AxState<Worker>, body: Bytes) -> Response {
    let req = match ProvisionRequest::from_json(&body) {
        Ok(r) => r,
        Err(e) => return plain_error(StatusCode::BAD_REQUEST, "bad_request", e.to_string()),
    };
    let bundle = match BlobAddress::from_str(&req.bundle) {
        Ok(b) => b,
        Err(e) => return plain_error(StatusCode::BAD_REQUEST, "bad_bundle", e.to_string()),
    };
    let model = req.model.clone();
    let result =
        tokio::task::spawn_blocking(move || worker.provision(&req.model, &bundle, &req.sealed_key)).await;
    match result {
        Ok(Ok(())) => axum::Json(serde_json::json!({ "model": model, "ready": true })).into_response(),
        Ok(Err(e)) => {
            let status = match e {
                WorkerError::UnknownModel(_) => StatusCode::NOT_FOUND,
                WorkerError::Config(_) | WorkerError::Bundle(veil_bundle::BundleError::Key(_)) => {
                    StatusCode::BAD_REQUEST
                }
                _ => StatusCode::INTERNAL_SERVER_ERROR,
            };
            tracing::warn!(model = %model, error = %e, "provisioning failed");
            plain_error(status, "provision_failed", e.to_string())
        }
        Err(e) => plain_error(StatusCode::INTERNAL_SERVER_ERROR, "internal", e.to_string()),
    }
}

/// Unbounded, as the engine's own queue of pieces is: a slow reader never holds up the engine (an answer
/// is at most one frame per token of the context window, plus the last).
type FrameTx = mpsc::UnboundedSender<std::result::Result<Bytes, Infallible>>;

/// Seals `event` as the next frame, length-prefixed.
fn seal_frame(sealer: &mut FrameSealer, event: &ResponseEvent) -> Result<Bytes> {
    let padded = event.to_padded()?;
    let sealed = sealer.seal(&padded, event.is_last())?;
    Ok(Bytes::from(veil_types::encode_frame(&sealed)?))
}

async fn infer(AxState(worker): AxState<Worker>, body: Bytes) -> Response {
    let started = Instant::now();
    let st = &worker.state;
    let request_hash = veil_types::request_hash(&body);
    let padded = match veil_crypto::seal::open(&st.enclave.hpke, tags::INFER_REQUEST, b"", &body) {
        Ok(p) => Zeroizing::new(p),
        Err(e) => {
            tracing::info!(request_bytes = body.len(), "refused a request that does not open");
            return plain_error(
                StatusCode::BAD_REQUEST,
                "cannot_open",
                format!(
                    "cannot open the sealed request ({e}): it was sealed to another key (re-attest this \
                     worker) or tampered with"
                ),
            );
        }
    };
    let req = match InferRequest::from_padded(&padded) {
        Ok(r) => r,
        Err(e) => {
            tracing::info!(request_bytes = body.len(), "refused a malformed request");
            return plain_error(StatusCode::BAD_REQUEST, "malformed_request", e.to_string());
        }
    };
    drop(padded);
    let refusal = match st.replay.lock() {
        Ok(mut guard) => guard
            .check(req.nonce, req.timestamp_ms, veil_types::now_ms())
            .err(),
        Err(_) => Some(Refusal::Busy),
    };
    if let Some(refusal) = refusal {
        // Refused before its nonce is recorded: answered in clear (it says nothing about the request's
        // contents), never with a sealed frame, so that a response key never seals two different streams.
        let (status, code, message) = match refusal {
            Refusal::Replay => (
                StatusCode::CONFLICT,
                "replay",
                "this request was already served (replayed nonce); send a fresh request".to_owned(),
            ),
            Refusal::Stale { skew_ms, window_ms } => (
                StatusCode::BAD_REQUEST,
                "stale",
                format!(
                    "the request's timestamp is {skew_ms} ms off the worker's clock (allowed: ±{window_ms} ms); \
                     check the clocks"
                ),
            ),
            Refusal::Busy => (
                StatusCode::SERVICE_UNAVAILABLE,
                "busy",
                "the worker's replay cache is full; retry shortly".to_owned(),
            ),
        };
        tracing::info!(request_bytes = body.len(), refusal = code, "request refused");
        return plain_error(status, code, message);
    }
    let sealer = FrameSealer::new(req.response_key.expose(), tags::INFER_RESPONSE, &request_hash);
    let (tx, rx) = mpsc::unbounded_channel();
    let request_bytes = body.len();
    let worker2 = worker.clone();
    tokio::task::spawn_blocking(move || {
        run_request(&worker2, req, request_hash, sealer, tx, request_bytes, started);
    });
    frames_response(Body::from_stream(UnboundedReceiverStream::new(rx)))
}

fn frames_response(body: Body) -> Response {
    ([(header::CONTENT_TYPE, "application/octet-stream")], body).into_response()
}

fn to_chat_request(req: &InferRequest) -> std::result::Result<ChatRequest, String> {
    let mut messages = Vec::with_capacity(req.messages.len());
    for m in &req.messages {
        let role = Role::from_str(&m.role).map_err(|e| e.to_string())?;
        messages.push(ChatMessage {
            role,
            content: m.content.clone(),
        });
    }
    if messages.is_empty() {
        return Err("the request has no messages".into());
    }
    let p = &req.params;
    let params = SamplingParams {
        temperature: p.temperature,
        top_p: p.top_p,
        top_k: p.top_k,
        seed: p.seed,
        max_tokens: p.max_tokens,
        stop: p.stop.clone(),
        presence_penalty: p.presence_penalty,
        frequency_penalty: p.frequency_penalty,
        ignore_eos: false,
    };
    params.validate().map_err(|e| e.to_string())?;
    Ok(ChatRequest { messages, params })
}

/// Seals events as frames, in order, and queues them for the connection.
struct FrameOut {
    sealer: FrameSealer,
    /// `None` once the last frame is queued: that ends the body at once, and nothing can follow it.
    tx: Option<FrameTx>,
    /// A streamed answer's text not sent yet.
    coalescer: Coalescer,
}

impl FrameOut {
    /// Whether the frame was queued (false: sealing failed, the connection is gone, or the last frame
    /// was sent already).
    fn send(&mut self, event: &ResponseEvent) -> bool {
        let Some(tx) = &self.tx else { return false };
        let queued = match seal_frame(&mut self.sealer, event) {
            Ok(frame) => tx.send(Ok(frame)).is_ok(),
            Err(e) => {
                tracing::error!(error = %e, "cannot seal a response frame");
                false
            }
        };
        if event.is_last() || !queued {
            self.tx = None;
        }
        queued
    }

    /// A piece of a streamed answer, produced at `now`: sent at once or held to go with a later one (see
    /// [`Coalescer`]). False if the connection is gone.
    fn piece(&mut self, piece: &str, now: Instant) -> bool {
        let text = self.coalescer.push(piece, now);
        self.send_text(text)
    }

    /// Sends the text still held, at the end of a streamed answer.
    fn flush(&mut self) -> bool {
        let text = self.coalescer.finish();
        self.send_text(text)
    }

    fn send_text(&mut self, text: Option<Zeroizing<String>>) -> bool {
        match text {
            Some(mut text) => self.send(&ResponseEvent::Delta {
                text: std::mem::take(&mut *text),
            }),
            None => self.tx.is_some(),
        }
    }
}

/// Runs one opened request on a blocking thread, sending sealed frames to `tx`. A streamed answer's
/// deltas are sealed and queued on the engine's thread as pieces are produced
/// ([`Engine::chat_stream_send`]): no other thread wakes per token before the connection's; pieces that
/// come sooner than the configured stream interval after the last frame go with the next one.
fn run_request(
    worker: &Worker,
    req: InferRequest,
    request_hash: [u8; 32],
    sealer: FrameSealer,
    tx: FrameTx,
    request_bytes: usize,
    started: Instant,
) {
    let out = Arc::new(Mutex::new(FrameOut {
        sealer,
        tx: Some(tx),
        coalescer: Coalescer::new(worker.state.config.stream_interval),
    }));
    let send = |event: &ResponseEvent| -> bool {
        match out.lock() {
            Ok(mut o) => o.send(event),
            Err(_) => false,
        }
    };
    let fail = |kind: ErrorKind, message: String| {
        tracing::info!(request_bytes, error_kind = kind.as_str(), "request failed");
        send(&ResponseEvent::Error { kind, message });
    };
    let engine: Option<Arc<dyn Engine>> = match worker.read_models() {
        Ok(models) => models.get(&req.model).and_then(|s| s.engine.clone()),
        Err(_) => None,
    };
    let Some(engine) = engine else {
        let known = worker
            .read_models()
            .map(|m| m.contains_key(&req.model))
            .unwrap_or(false);
        let message = if known {
            format!(
                "model {:?} is not ready: its key has not been provisioned yet",
                req.model
            )
        } else {
            format!("model {:?} is not served by this worker", req.model)
        };
        return fail(ErrorKind::ModelNotReady, message);
    };
    let chat = match to_chat_request(&req) {
        Ok(c) => c,
        Err(message) => return fail(ErrorKind::InvalidRequest, message),
    };
    let first_piece_ms = Arc::new(std::sync::OnceLock::new());
    let result = if req.stream {
        let (out, first) = (Arc::clone(&out), Arc::clone(&first_piece_ms));
        engine.chat_stream_send(
            &chat,
            Box::new(move |piece| {
                let _ = first.set(started.elapsed().as_millis() as u64);
                let sent = out.lock().is_ok_and(|mut o| o.piece(piece, Instant::now()));
                if sent {
                    ControlFlow::Continue(())
                } else {
                    ControlFlow::Break(())
                }
            }),
        )
    } else {
        engine.chat_stream(&chat, &mut |_| {
            let _ = first_piece_ms.set(started.elapsed().as_millis() as u64);
            ControlFlow::Continue(())
        })
    };
    let mut completion = match result {
        Ok(c) => c,
        Err(e) => {
            let kind = match e {
                veil_engine::Error::InvalidRequest(_) | veil_engine::Error::PromptTooLong { .. } => {
                    ErrorKind::InvalidRequest
                }
                _ => ErrorKind::Internal,
            };
            return fail(kind, e.to_string());
        }
    };
    // The pieces together are exactly the completion's text (the Engine contract).
    let text = Zeroizing::new(std::mem::take(&mut completion.text));
    if req.stream {
        // The text the stream interval held back. Should the connection be gone, the receipt's frame
        // cannot go either, and the log below says it was not delivered.
        let _ = out.lock().map(|mut o| o.flush());
    } else if !send(&ResponseEvent::Delta {
        text: text.to_string(),
    }) {
        return;
    }
    let usage = Usage {
        prompt_tokens: completion.usage.prompt_tokens,
        completion_tokens: completion.usage.completion_tokens,
    };
    let receipt = Receipt::sign(
        &worker.state.enclave.signing,
        request_hash,
        veil_types::response_hash(&text),
        &req.model,
        usage.prompt_tokens,
        usage.completion_tokens,
    );
    let done = ResponseEvent::Done {
        finish_reason: completion.finish_reason.as_str().to_owned(),
        usage,
        receipt: Box::new(receipt),
    };
    let delivered = send(&done);
    let frames = out.lock().map(|o| o.sealer.sealed()).unwrap_or(0);
    tracing::info!(
        request_bytes,
        frames,
        prompt_tokens = usage.prompt_tokens,
        completion_tokens = usage.completion_tokens,
        first_piece_ms = first_piece_ms.get().copied(),
        total_ms = started.elapsed().as_millis() as u64,
        delivered,
        "request served"
    );
}
