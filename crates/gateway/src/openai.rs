//! The OpenAI HTTP API: request parsing, responses, server-sent events and error bodies.

use std::convert::Infallible;

use axum::body::{Body, Bytes};
use axum::extract::{Path, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use serde_json::{Value, json};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use veil_client::{ClientError, Completion, Event, ResponseStream, VerifiedWorker};
use veil_types::{ErrorKind, InferRequest, Message, Params};

use crate::{ATTESTATION_HEADER, Gateway};

/// An OpenAI-style error: `{"error": {"message", "type", "param", "code"}}`.
struct ApiError {
    status: StatusCode,
    kind: &'static str,
    code: &'static str,
    param: Option<&'static str>,
    message: String,
    simulated: Option<bool>,
}

impl ApiError {
    fn invalid(param: Option<&'static str>, message: impl Into<String>) -> Self {
        Self {
            status: StatusCode::BAD_REQUEST,
            kind: "invalid_request_error",
            code: "invalid_request",
            param,
            message: message.into(),
            simulated: None,
        }
    }

    fn with_worker(mut self, worker: Option<&VerifiedWorker>) -> Self {
        self.simulated = worker.map(VerifiedWorker::simulated);
        self
    }

    fn body(&self) -> Value {
        json!({ "error": {
            "message": self.message,
            "type": self.kind,
            "param": self.param,
            "code": self.code,
        }})
    }
}

impl From<ClientError> for ApiError {
    fn from(e: ClientError) -> Self {
        let (status, kind, code) = match &e {
            ClientError::WorkerRefused { .. } | ClientError::Attestation(_) => {
                (StatusCode::BAD_GATEWAY, "attestation_error", "worker_refused")
            }
            ClientError::Http(_) => (StatusCode::BAD_GATEWAY, "api_error", "worker_unreachable"),
            ClientError::Worker { kind, .. } => match kind {
                ErrorKind::InvalidRequest => (
                    StatusCode::BAD_REQUEST,
                    "invalid_request_error",
                    "invalid_request",
                ),
                ErrorKind::ModelNotReady => {
                    (StatusCode::NOT_FOUND, "invalid_request_error", "model_not_found")
                }
                ErrorKind::Replay | ErrorKind::Stale => {
                    (StatusCode::BAD_GATEWAY, "api_error", "request_refused")
                }
                ErrorKind::Internal => (StatusCode::INTERNAL_SERVER_ERROR, "api_error", "worker_error"),
            },
            ClientError::Stream(_)
            | ClientError::Receipt(_)
            | ClientError::Types(_)
            | ClientError::Crypto(_) => (
                StatusCode::BAD_GATEWAY,
                "integrity_error",
                "integrity_check_failed",
            ),
            ClientError::Rejected { .. } | ClientError::Protocol(_) => {
                (StatusCode::BAD_GATEWAY, "api_error", "worker_rejected")
            }
        };
        Self {
            status,
            kind,
            code,
            param: None,
            message: e.to_string(),
            simulated: None,
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut resp = (self.status, axum::Json(self.body())).into_response();
        if let Some(sim) = self.simulated {
            resp.headers_mut()
                .insert(ATTESTATION_HEADER, attestation_value(sim));
        }
        resp
    }
}

fn attestation_value(simulated: bool) -> HeaderValue {
    HeaderValue::from_static(if simulated { "simulated" } else { "verified" })
}

pub(crate) async fn not_found() -> Response {
    ApiError {
        status: StatusCode::NOT_FOUND,
        kind: "invalid_request_error",
        code: "unknown_url",
        param: None,
        message: "unknown URL: this gateway serves POST /v1/chat/completions and GET /v1/models".into(),
        simulated: None,
    }
    .into_response()
}

pub(crate) async fn models(State(gw): State<Gateway>) -> Response {
    let worker = match gw.client.worker().await {
        Ok(w) => w,
        Err(e) => return ApiError::from(e).into_response(),
    };
    let data: Vec<Value> = worker
        .models
        .iter()
        .map(|m| json!({ "id": m.name, "object": "model", "created": 0, "owned_by": "veil" }))
        .collect();
    let mut resp = axum::Json(json!({ "object": "list", "data": data })).into_response();
    resp.headers_mut()
        .insert(ATTESTATION_HEADER, attestation_value(worker.simulated()));
    resp
}

pub(crate) async fn model(State(gw): State<Gateway>, Path(id): Path<String>) -> Response {
    let worker = match gw.client.worker().await {
        Ok(w) => w,
        Err(e) => return ApiError::from(e).into_response(),
    };
    let mut resp = if worker.models.iter().any(|m| m.name == id) {
        axum::Json(json!({ "id": id, "object": "model", "created": 0, "owned_by": "veil" })).into_response()
    } else {
        ApiError {
            status: StatusCode::NOT_FOUND,
            kind: "invalid_request_error",
            code: "model_not_found",
            param: Some("model"),
            message: format!("the model {id:?} does not exist on this worker"),
            simulated: None,
        }
        .into_response()
    };
    resp.headers_mut()
        .insert(ATTESTATION_HEADER, attestation_value(worker.simulated()));
    resp
}

#[derive(Deserialize)]
#[serde(untagged)]
enum Content {
    Text(String),
    Parts(Vec<Part>),
}

#[derive(Deserialize)]
struct Part {
    #[serde(rename = "type")]
    kind: String,
    text: Option<String>,
}

#[derive(Deserialize)]
struct ChatMessageIn {
    role: String,
    content: Option<Content>,
}

#[derive(Deserialize)]
#[serde(untagged)]
enum Stop {
    One(String),
    Many(Vec<String>),
}

#[derive(Deserialize, Default)]
struct StreamOptions {
    include_usage: Option<bool>,
}

/// The fields Veil understands; others (`user`, `metadata`, …) are ignored, as OpenAI clients send them.
#[derive(Deserialize)]
struct ChatCompletionRequest {
    model: String,
    messages: Vec<ChatMessageIn>,
    #[serde(default)]
    stream: bool,
    stream_options: Option<StreamOptions>,
    temperature: Option<f32>,
    top_p: Option<f32>,
    top_k: Option<u32>,
    max_tokens: Option<u32>,
    max_completion_tokens: Option<u32>,
    seed: Option<i64>,
    stop: Option<Stop>,
    presence_penalty: Option<f32>,
    frequency_penalty: Option<f32>,
    n: Option<u32>,
}

fn parse_request(body: &[u8]) -> Result<(InferRequest, bool), ApiError> {
    let req: ChatCompletionRequest = serde_json::from_slice(body).map_err(|e| {
        ApiError::invalid(
            None,
            format!("the request body is not a valid chat completion request: {e}"),
        )
    })?;
    if req.n.is_some_and(|n| n != 1) {
        return Err(ApiError::invalid(Some("n"), "only n = 1 is supported"));
    }
    if req.messages.is_empty() {
        return Err(ApiError::invalid(Some("messages"), "messages must not be empty"));
    }
    let mut messages = Vec::with_capacity(req.messages.len());
    for (i, m) in req.messages.into_iter().enumerate() {
        let role = match m.role.as_str() {
            "developer" => "system".to_owned(),
            "system" | "user" | "assistant" => m.role,
            other => {
                return Err(ApiError::invalid(
                    Some("messages"),
                    format!(
                        "messages[{i}].role {other:?} is not supported (system, developer, user, assistant)"
                    ),
                ));
            }
        };
        let content = match m.content {
            None => String::new(),
            Some(Content::Text(t)) => t,
            Some(Content::Parts(parts)) => {
                let mut text = String::new();
                for p in parts {
                    if p.kind != "text" {
                        return Err(ApiError::invalid(
                            Some("messages"),
                            format!("messages[{i}] has a {:?} part; only text is supported", p.kind),
                        ));
                    }
                    text.push_str(&p.text.unwrap_or_default());
                }
                text
            }
        };
        messages.push(Message { role, content });
    }
    let seed = req
        .seed
        .map(|s| u32::try_from(s.rem_euclid(1 << 32)).unwrap_or(0));
    let defaults = Params::default();
    let params = Params {
        temperature: req.temperature.unwrap_or(defaults.temperature),
        top_p: req.top_p.unwrap_or(defaults.top_p),
        top_k: req.top_k.unwrap_or(defaults.top_k),
        seed,
        max_tokens: req.max_completion_tokens.or(req.max_tokens),
        stop: match req.stop {
            None => Vec::new(),
            Some(Stop::One(s)) => vec![s],
            Some(Stop::Many(v)) => v,
        },
        presence_penalty: req.presence_penalty.unwrap_or(0.0),
        frequency_penalty: req.frequency_penalty.unwrap_or(0.0),
    };
    for (name, v) in [
        ("temperature", params.temperature),
        ("top_p", params.top_p),
        ("presence_penalty", params.presence_penalty),
        ("frequency_penalty", params.frequency_penalty),
    ] {
        if !v.is_finite() {
            return Err(ApiError::invalid(None, format!("{name} must be a finite number")));
        }
    }
    let include_usage = req
        .stream_options
        .unwrap_or_default()
        .include_usage
        .unwrap_or(false);
    let infer = InferRequest::new(req.model, messages, params, req.stream)
        .map_err(|e| ApiError::from(ClientError::Types(e)))?;
    Ok((infer, include_usage))
}

fn finish_reason(reason: &str) -> &'static str {
    match reason {
        "length" => "length",
        _ => "stop",
    }
}

fn usage_json(c: &Completion) -> Value {
    json!({
        "prompt_tokens": c.usage.prompt_tokens,
        "completion_tokens": c.usage.completion_tokens,
        "total_tokens": c.usage.prompt_tokens + c.usage.completion_tokens,
    })
}

fn completion_id() -> String {
    let bytes = veil_crypto::rand::array::<12>().unwrap_or_default();
    format!("chatcmpl-{}", hex::encode(bytes))
}

fn unix_secs() -> u64 {
    veil_types::now_ms() / 1000
}

pub(crate) async fn chat_completions(State(gw): State<Gateway>, body: Bytes) -> Response {
    let (req, include_usage) = match parse_request(&body) {
        Ok(r) => r,
        Err(e) => return e.into_response(),
    };
    let worker = match gw.client.worker().await {
        Ok(w) => w,
        Err(e) => return ApiError::from(e).into_response(),
    };
    if !worker.models.iter().any(|m| m.name == req.model) {
        let served: Vec<&str> = worker.models.iter().map(|m| m.name.as_str()).collect();
        return ApiError {
            status: StatusCode::NOT_FOUND,
            kind: "invalid_request_error",
            code: "model_not_found",
            param: Some("model"),
            message: format!(
                "the model {:?} does not exist on this worker (it serves: {})",
                req.model,
                served.join(", ")
            ),
            simulated: None,
        }
        .with_worker(Some(&worker))
        .into_response();
    }
    let model = req.model.clone();
    let stream = req.stream;
    let mut answer = match gw.client.infer(req).await {
        Ok(s) => s,
        Err(e) => return ApiError::from(e).with_worker(Some(&worker)).into_response(),
    };
    let simulated = answer.worker().simulated();
    let id = completion_id();
    let created = unix_secs();
    let mut resp = if stream {
        // Wait for the first event, so that a request the worker refuses gets an HTTP error status.
        let first = match answer.next().await {
            Some(Ok(e)) => e,
            Some(Err(e)) => return ApiError::from(e).with_worker(Some(&worker)).into_response(),
            None => {
                return ApiError::from(ClientError::Stream("the answer ended before it began".into()))
                    .with_worker(Some(&worker))
                    .into_response();
            }
        };
        let (tx, rx) = mpsc::channel(64);
        tokio::spawn(sse(
            answer,
            first,
            tx,
            Chunker { id, created, model },
            include_usage,
        ));
        let mut r = Body::from_stream(ReceiverStream::new(rx)).into_response();
        r.headers_mut().insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("text/event-stream"),
        );
        r.headers_mut()
            .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
        r
    } else {
        match answer.collect().await {
            Ok((text, c)) => axum::Json(json!({
                "id": id,
                "object": "chat.completion",
                "created": created,
                "model": model,
                "choices": [{
                    "index": 0,
                    "message": { "role": "assistant", "content": text, "refusal": null },
                    "logprobs": null,
                    "finish_reason": finish_reason(&c.finish_reason),
                }],
                "usage": usage_json(&c),
                "system_fingerprint": null,
            }))
            .into_response(),
            Err(e) => return ApiError::from(e).with_worker(Some(&worker)).into_response(),
        }
    };
    resp.headers_mut()
        .insert(ATTESTATION_HEADER, attestation_value(simulated));
    resp
}

struct Chunker {
    id: String,
    created: u64,
    model: String,
}

impl Chunker {
    fn chunk(&self, delta: Value, finish: Option<&str>) -> Bytes {
        self.event(&json!({
            "id": self.id,
            "object": "chat.completion.chunk",
            "created": self.created,
            "model": self.model,
            "system_fingerprint": null,
            "choices": [{ "index": 0, "delta": delta, "logprobs": null, "finish_reason": finish }],
        }))
    }

    fn event(&self, v: &Value) -> Bytes {
        Bytes::from(format!("data: {v}\n\n"))
    }
}

type SseTx = mpsc::Sender<Result<Bytes, Infallible>>;

/// Streams the answer as OpenAI's server-sent events: a role chunk, content chunks, a chunk with the
/// finish reason, a usage chunk when asked for, then `[DONE]`. An error mid-stream is sent as an
/// `error` event and the stream ends without `[DONE]`, so a client never takes a cut answer as complete.
///
/// The events at hand are written together: the role chunk with the first content, and every event
/// that arrived with the same bytes from the worker; the stream waits only when none is left.
async fn sse(mut answer: ResponseStream, first: Event, tx: SseTx, c: Chunker, include_usage: bool) {
    let mut out: Vec<u8> = Vec::with_capacity(1024);
    out.extend_from_slice(&c.chunk(
        json!({ "role": "assistant", "content": "", "refusal": null }),
        None,
    ));
    let mut next = Some(Ok(first));
    loop {
        let event = match next.take().or_else(|| answer.ready().map(Ok)) {
            Some(e) => e,
            None => {
                if !out.is_empty() && tx.send(Ok(Bytes::from(std::mem::take(&mut out)))).await.is_err() {
                    return;
                }
                match answer.next().await {
                    Some(e) => e,
                    None => return,
                }
            }
        };
        match event {
            Ok(Event::Delta(text)) => {
                if !text.is_empty() {
                    out.extend_from_slice(&c.chunk(json!({ "content": text }), None));
                }
            }
            Ok(Event::Done(done)) => {
                if let Some(Err(e)) = answer.next().await {
                    out.extend_from_slice(&c.event(&ApiError::from(e).body()));
                    let _ = tx.send(Ok(Bytes::from(out))).await;
                    return;
                }
                out.extend_from_slice(&c.chunk(json!({}), Some(finish_reason(&done.finish_reason))));
                if include_usage {
                    let usage = json!({
                        "id": c.id,
                        "object": "chat.completion.chunk",
                        "created": c.created,
                        "model": c.model,
                        "system_fingerprint": null,
                        "choices": [],
                        "usage": usage_json(&done),
                    });
                    out.extend_from_slice(&c.event(&usage));
                }
                out.extend_from_slice(b"data: [DONE]\n\n");
                let _ = tx.send(Ok(Bytes::from(out))).await;
                return;
            }
            Err(e) => {
                tracing::warn!(error = %e, "answer rejected mid-stream");
                out.extend_from_slice(&c.event(&ApiError::from(e).body()));
                let _ = tx.send(Ok(Bytes::from(out))).await;
                return;
            }
        }
    }
}
