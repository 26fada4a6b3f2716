//! The gateway in front of a worker (scripted engine) reached through a man-in-the-middle proxy on
//! 127.0.0.1 that flips, reorders, drops or cuts bytes, or switches to another worker: the user gets a
//! clear OpenAI-style error, never a wrong or cut answer presented as complete.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::ops::ControlFlow;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use axum::body::Bytes;
use axum::extract::{Request, State};
use axum::response::{IntoResponse, Response};
use veil_attest::Policy;
use veil_blobs::BlobAddress;
use veil_client::ClientConfig;
use veil_engine::{ChatRequest, Completion, Engine, FinishReason, ModelInfo, Timings, Usage};
use veil_gateway::Gateway;
use veil_types::{FrameDecoder, encode_frame};
use veil_worker::{BundleSource, ModelSpec, RunningWorker, Worker, WorkerConfig};

const PIECES: [&str; 3] = ["The capital ", "of France is ", "Paris."];

struct Scripted(ModelInfo);

impl Engine for Scripted {
    fn info(&self) -> &ModelInfo {
        &self.0
    }
    fn chat_stream(
        &self,
        _: &ChatRequest,
        on_piece: &mut dyn FnMut(&str) -> ControlFlow<()>,
    ) -> veil_engine::Result<Completion> {
        for p in PIECES {
            if on_piece(p).is_break() {
                break;
            }
        }
        Ok(Completion {
            text: PIECES.concat(),
            finish_reason: FinishReason::Stop,
            usage: Usage {
                prompt_tokens: 5,
                completion_tokens: 3,
            },
            timings: Timings::default(),
        })
    }
}

struct NoBundles;
impl BundleSource for NoBundles {
    fn open(&self, _: &BlobAddress) -> veil_worker::Result<Box<dyn std::io::Read + Send>> {
        Err(veil_worker::WorkerError::Config("no bundles here".into()))
    }
}

async fn start_worker(dir: &std::path::Path) -> RunningWorker {
    let platform = veil_platform::sim::SimPlatform::start(veil_platform::sim::SimConfig::new(dir)).unwrap();
    let config = WorkerConfig {
        models: vec![ModelSpec {
            name: "scripted".into(),
            bundle: BlobAddress::of(b"scripted"),
        }],
        // Every piece its own frame: the proxy's tampering needs several.
        stream_interval: std::time::Duration::ZERO,
        ..WorkerConfig::default()
    };
    let worker = Worker::new(config, Box::new(platform), Arc::new(NoBundles)).unwrap();
    let info = ModelInfo {
        name: "scripted".into(),
        architecture: "none".into(),
        n_params: 0,
        size: 0,
        n_ctx_train: 0,
        n_ctx: 0,
        threads: 1,
        slots: 1,
    };
    worker.serve_engine("scripted", Arc::new(Scripted(info))).unwrap();
    worker.start().await.unwrap()
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum Mode {
    Pass,
    FlipRequest(usize),
    FlipFrame(usize),
    SwapFrames(usize, usize),
    DropFrame(usize),
    CutFrame(usize),
    DuplicateLast,
}

struct Proxy {
    backend: Mutex<String>,
    mode: Mutex<Mode>,
    attestations: AtomicUsize,
    http: reqwest::Client,
    /// Every byte that crossed, both ways: what the operator's network sees.
    seen: Mutex<Vec<u8>>,
}

fn frames(body: &[u8]) -> Vec<Vec<u8>> {
    let mut d = FrameDecoder::default();
    d.push(body);
    let mut out = Vec::new();
    while let Some(f) = d.next_frame().unwrap() {
        out.push(f);
    }
    out
}

fn join(frames: &[Vec<u8>]) -> Vec<u8> {
    frames.iter().flat_map(|f| encode_frame(f).unwrap()).collect()
}

async fn forward(State(p): State<Arc<Proxy>>, req: Request) -> Response {
    let path = req
        .uri()
        .path_and_query()
        .map(|x| x.to_string())
        .unwrap_or_default();
    let method = req.method().clone();
    let mut body = axum::body::to_bytes(req.into_body(), usize::MAX)
        .await
        .unwrap()
        .to_vec();
    let mode = *p.mode.lock().unwrap();
    let infer = path.starts_with("/v1/infer");
    if path.starts_with("/v1/attestation") {
        p.attestations.fetch_add(1, Ordering::SeqCst);
    }
    p.seen.lock().unwrap().extend_from_slice(path.as_bytes());
    p.seen.lock().unwrap().extend_from_slice(&body);
    if let (true, Mode::FlipRequest(i)) = (infer, mode) {
        body[i] ^= 1;
    }
    let backend = p.backend.lock().unwrap().clone();
    let resp = p
        .http
        .request(method, format!("{backend}{path}"))
        .body(body)
        .send()
        .await
        .unwrap();
    let status = resp.status();
    let ctype = resp.headers().get("content-type").cloned();
    let mut out = resp.bytes().await.unwrap().to_vec();
    p.seen.lock().unwrap().extend_from_slice(&out);
    if infer && status.is_success() {
        let mut f = frames(&out);
        match mode {
            Mode::FlipFrame(i) => {
                let mid = f[i].len() / 2;
                f[i][mid] ^= 1;
            }
            Mode::SwapFrames(a, b) => f.swap(a, b),
            Mode::DropFrame(i) => {
                f.remove(i);
            }
            Mode::CutFrame(i) => f.truncate(i),
            Mode::DuplicateLast => {
                let last = f.last().unwrap().clone();
                f.push(last);
            }
            Mode::Pass | Mode::FlipRequest(_) => {}
        }
        out = join(&f);
    }
    let mut r = (status, Bytes::from(out)).into_response();
    if let Some(c) = ctype {
        r.headers_mut().insert("content-type", c);
    }
    r
}

async fn start_proxy(backend: String) -> (Arc<Proxy>, String) {
    let proxy = Arc::new(Proxy {
        backend: Mutex::new(backend),
        mode: Mutex::new(Mode::Pass),
        attestations: AtomicUsize::new(0),
        seen: Mutex::new(Vec::new()),
        http: reqwest::Client::builder().no_proxy().build().unwrap(),
    });
    let app = axum::Router::new().fallback(forward).with_state(proxy.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await });
    (proxy, url)
}

struct Setup {
    proxy: Arc<Proxy>,
    base: String,
    http: reqwest::Client,
}

impl Setup {
    fn set(&self, mode: Mode) {
        *self.proxy.mode.lock().unwrap() = mode;
    }

    async fn chat(&self, stream: bool) -> (u16, String, String) {
        let body = serde_json::json!({
            "model": "scripted",
            "stream": stream,
            "messages": [{"role": "user", "content": "What is the capital of France?"}],
        });
        let r = self
            .http
            .post(format!("{}/chat/completions", self.base))
            .json(&body)
            .send()
            .await
            .unwrap();
        let status = r.status().as_u16();
        let att = r
            .headers()
            .get("x-veil-attestation")
            .map(|v| v.to_str().unwrap().to_owned())
            .unwrap_or_default();
        (status, att, r.text().await.unwrap())
    }
}

fn error_of(body: &str) -> serde_json::Value {
    let v: serde_json::Value = serde_json::from_str(body).unwrap_or_else(|e| panic!("{e}: {body}"));
    v["error"].clone()
}

/// The `error` of the last SSE event, which must not be followed by `[DONE]`.
fn sse_error(body: &str) -> serde_json::Value {
    assert!(
        !body.contains("[DONE]"),
        "a failed stream must not end with [DONE]: {body}"
    );
    let last = body.trim_end().rsplit("\n\n").next().unwrap();
    error_of(last.strip_prefix("data: ").unwrap())
}

#[tokio::test]
async fn tampering_between_gateway_and_worker_is_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let worker = start_worker(dir.path()).await;
    let (proxy, proxy_url) = start_proxy(worker.url()).await;
    let gateway = Gateway::new(&proxy_url, ClientConfig::new(Policy::development())).unwrap();
    let running = gateway.start("127.0.0.1:0".parse().unwrap()).await.unwrap();
    let s = Setup {
        proxy: proxy.clone(),
        base: running.base_url(),
        http: reqwest::Client::builder().no_proxy().build().unwrap(),
    };

    let (status, att, body) = s.chat(false).await;
    assert_eq!((status, att.as_str()), (200, "simulated"), "{body}");
    assert!(body.contains("Paris"), "{body}");
    let (status, _, body) = s.chat(true).await;
    assert_eq!(status, 200);
    assert!(body.ends_with("data: [DONE]\n\n"), "{body}");
    // The operator's network saw neither the prompt nor any piece of the answer.
    let seen = proxy.seen.lock().unwrap().clone();
    assert!(seen.len() > 1000);
    for secret in ["capital", "France", "Paris", "What is"] {
        assert!(
            !seen.windows(secret.len()).any(|w| w == secret.as_bytes()),
            "{secret:?} crossed the network in clear"
        );
    }

    // Whole answers: one delta and the final frame.
    for mode in [
        Mode::FlipFrame(0),
        Mode::FlipFrame(1),
        Mode::SwapFrames(0, 1),
        Mode::DropFrame(0),
        Mode::CutFrame(1),
        Mode::DuplicateLast,
    ] {
        s.set(mode);
        let (status, att, body) = s.chat(false).await;
        assert_eq!(status, 502, "{mode:?}: {body}");
        assert_eq!(att, "simulated");
        let e = error_of(&body);
        assert_eq!(e["type"], "integrity_error", "{mode:?}: {body}");
        assert!(!body.contains("Paris"), "{mode:?}: {body}");
    }
    s.set(Mode::CutFrame(1));
    let (_, _, body) = s.chat(false).await;
    assert!(
        error_of(&body)["message"].as_str().unwrap().contains("truncated"),
        "{body}"
    );

    // Streams: a failure after the first delta arrives as an error event, without [DONE].
    for mode in [
        Mode::FlipFrame(2),
        Mode::SwapFrames(1, 2),
        Mode::DropFrame(2),
        Mode::CutFrame(3),
        Mode::DuplicateLast,
    ] {
        s.set(mode);
        let (status, _, body) = s.chat(true).await;
        assert_eq!(status, 200, "{mode:?}: {body}");
        assert_eq!(sse_error(&body)["type"], "integrity_error", "{mode:?}: {body}");
    }
    // A failure on the first frame is an HTTP error.
    s.set(Mode::FlipFrame(0));
    let (status, _, body) = s.chat(true).await;
    assert_eq!(status, 502, "{body}");

    // A flipped request byte: the worker cannot open it; the client re-attests and retries once.
    s.set(Mode::FlipRequest(40));
    let before = proxy.attestations.load(Ordering::SeqCst);
    let (status, _, body) = s.chat(false).await;
    assert_eq!(status, 502, "{body}");
    assert!(
        error_of(&body)["message"]
            .as_str()
            .unwrap()
            .contains("cannot open the sealed request"),
        "{body}"
    );
    assert_eq!(proxy.attestations.load(Ordering::SeqCst), before + 1);

    // The worker behind the address changes (new enclave keys): re-attested, and the answer arrives.
    s.set(Mode::Pass);
    let dir2 = tempfile::tempdir().unwrap();
    let other = start_worker(dir2.path()).await;
    *proxy.backend.lock().unwrap() = other.url();
    let before = proxy.attestations.load(Ordering::SeqCst);
    let (status, _, body) = s.chat(false).await;
    assert_eq!(status, 200, "{body}");
    assert!(body.contains("Paris"), "{body}");
    assert_eq!(proxy.attestations.load(Ordering::SeqCst), before + 1);

    running.stop().await.unwrap();
    worker.stop().await.unwrap();
    other.stop().await.unwrap();
}

#[tokio::test]
async fn openai_errors_for_bad_requests() {
    let dir = tempfile::tempdir().unwrap();
    let worker = start_worker(dir.path()).await;
    let gateway = Gateway::new(&worker.url(), ClientConfig::new(Policy::development())).unwrap();
    let running = gateway.start("127.0.0.1:0".parse().unwrap()).await.unwrap();
    let http = reqwest::Client::builder().no_proxy().build().unwrap();
    let base = running.base_url();
    for (body, status, param) in [
        (r#"{"model":"scripted"}"#, 400, serde_json::Value::Null),
        (r#"{"model":"scripted","messages":[]}"#, 400, "messages".into()),
        (
            r#"{"model":"scripted","n":2,"messages":[{"role":"user","content":"x"}]}"#,
            400,
            "n".into(),
        ),
        (
            r#"{"model":"scripted","messages":[{"role":"tool","content":"x"}]}"#,
            400,
            "messages".into(),
        ),
        (
            r#"{"model":"other","messages":[{"role":"user","content":"x"}]}"#,
            404,
            "model".into(),
        ),
        (
            r#"{"model":"scripted","temperature":1e39,"messages":[{"role":"user","content":"x"}]}"#,
            400,
            serde_json::Value::Null,
        ),
        (
            r#"{"model":"scripted","temperature":-1,"messages":[{"role":"user","content":"x"}]}"#,
            400,
            serde_json::Value::Null,
        ),
    ] {
        let r = http
            .post(format!("{base}/chat/completions"))
            .header("content-type", "application/json")
            .body(body)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status().as_u16(), status, "{body}");
        let e = error_of(&r.text().await.unwrap());
        assert!(e["message"].as_str().is_some_and(|m| !m.is_empty()), "{e}");
        assert_eq!(e["param"], param, "{body}: {e}");
        assert!(e["type"].is_string() && e.get("code").is_some(), "{e}");
    }
    // Content as parts, and the developer role, are accepted.
    let r = http
        .post(format!("{base}/chat/completions"))
        .json(&serde_json::json!({"model": "scripted", "messages": [
            {"role": "developer", "content": "Be brief."},
            {"role": "user", "content": [{"type": "text", "text": "Capital of France?"}]}]}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let r = http.get(format!("{base}/models/scripted")).send().await.unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["x-veil-attestation"], "simulated");
    let r = http.get(format!("{base}/models/other")).send().await.unwrap();
    assert_eq!(r.status(), 404);
    let r = http.get(format!("{base}/nope")).send().await.unwrap();
    assert_eq!(r.status(), 404);
    assert_eq!(error_of(&r.text().await.unwrap())["code"], "unknown_url");
    running.stop().await.unwrap();
    worker.stop().await.unwrap();
}

#[tokio::test]
async fn concurrent_requests_each_get_a_complete_answer() {
    let dir = tempfile::tempdir().unwrap();
    let worker = start_worker(dir.path()).await;
    let gateway = Gateway::new(&worker.url(), ClientConfig::new(Policy::development())).unwrap();
    let running = gateway.start("127.0.0.1:0".parse().unwrap()).await.unwrap();
    let http = reqwest::Client::builder().no_proxy().build().unwrap();
    let mut tasks = Vec::new();
    for i in 0..16 {
        let http = http.clone();
        let url = format!("{}/chat/completions", running.base_url());
        tasks.push(tokio::spawn(async move {
            let r = http
                .post(url)
                .json(&serde_json::json!({
                    "model": "scripted",
                    "stream": i % 2 == 0,
                    "messages": [{"role": "user", "content": format!("question {i}")}],
                }))
                .send()
                .await
                .unwrap();
            assert_eq!(r.status(), 200);
            let body = r.text().await.unwrap();
            if i % 2 == 0 {
                assert!(body.ends_with("data: [DONE]\n\n"), "{body}");
            } else {
                assert!(body.contains(&PIECES.concat()), "{body}");
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    running.stop().await.unwrap();
    worker.stop().await.unwrap();
}

#[tokio::test]
async fn attestation_is_cached_for_a_bounded_time() {
    let dir = tempfile::tempdir().unwrap();
    let worker = start_worker(dir.path()).await;
    let (proxy, proxy_url) = start_proxy(worker.url()).await;
    let http = reqwest::Client::builder().no_proxy().build().unwrap();
    for (ttl, expected) in [
        (std::time::Duration::from_secs(300), 1),
        (std::time::Duration::ZERO, 3),
    ] {
        let before = proxy.attestations.load(Ordering::SeqCst);
        let mut config = ClientConfig::new(Policy::development());
        config.attestation_ttl = ttl;
        let gateway = Gateway::new(&proxy_url, config).unwrap();
        let running = gateway.start("127.0.0.1:0".parse().unwrap()).await.unwrap();
        for _ in 0..3 {
            let r = http
                .get(format!("{}/models", running.base_url()))
                .send()
                .await
                .unwrap();
            assert_eq!(r.status(), 200);
        }
        assert_eq!(
            proxy.attestations.load(Ordering::SeqCst) - before,
            expected,
            "ttl {ttl:?}"
        );
        running.stop().await.unwrap();
    }
    worker.stop().await.unwrap();
}
