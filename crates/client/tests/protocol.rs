//! Client ↔ worker over HTTP on 127.0.0.1 with a scripted engine (fast; the real model runs in
//! `bin/veil/tests/confidential_e2e.rs`): attestation policy, sealing, streams, receipts and tampering.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::ops::ControlFlow;
use std::sync::Arc;
use std::time::Duration;

use veil_attest::{HexBytes, Measurements, Policy};
use veil_blobs::BlobAddress;
use veil_client::{ClientConfig, ClientError, Event, ResponseOpener, WorkerClient, seal_request};
use veil_engine::{ChatRequest, Completion, Engine, FinishReason, ModelInfo, Timings, Usage};
use veil_types::{ErrorKind, FrameDecoder, InferRequest, Message, Params, encode_frame};
use veil_worker::{BundleSource, ModelSpec, RunningWorker, Worker, WorkerConfig};

const PIECES: [&str; 3] = ["The capital ", "of France is ", "Paris."];

struct Scripted(ModelInfo);

impl Engine for Scripted {
    fn info(&self) -> &ModelInfo {
        &self.0
    }
    fn chat_stream(
        &self,
        request: &ChatRequest,
        on_piece: &mut dyn FnMut(&str) -> ControlFlow<()>,
    ) -> veil_engine::Result<Completion> {
        let mut text = String::new();
        for p in PIECES {
            text.push_str(p);
            if on_piece(p).is_break() {
                break;
            }
        }
        Ok(Completion {
            text,
            finish_reason: FinishReason::Stop,
            usage: Usage {
                prompt_tokens: request.messages.len() as u32 * 10,
                completion_tokens: PIECES.len() as u32,
            },
            timings: Timings::default(),
        })
    }
}

struct NoBundles;
impl BundleSource for NoBundles {
    fn open(&self, _: &BlobAddress) -> veil_worker::Result<Box<dyn std::io::Read + Send>> {
        Err(veil_worker::WorkerError::Config("no bundles in this test".into()))
    }
}

struct Fixture {
    running: RunningWorker,
    measurement: Vec<u8>,
    _dir: tempfile::TempDir,
}

/// A worker that sends every piece as its own frame: the frame-level tests need several.
async fn start_worker() -> Fixture {
    start_worker_with(Duration::ZERO).await
}

async fn start_worker_with(stream_interval: Duration) -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    let platform =
        veil_platform::sim::SimPlatform::start(veil_platform::sim::SimConfig::new(dir.path())).unwrap();
    let measurement = platform.measurement_bytes().to_vec();
    let config = WorkerConfig {
        models: vec![
            ModelSpec {
                name: "scripted".into(),
                bundle: BlobAddress::of(b"scripted"),
            },
            ModelSpec {
                name: "unprovisioned".into(),
                bundle: BlobAddress::of(b"unprovisioned"),
            },
        ],
        stream_interval,
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
    Fixture {
        running: worker.start().await.unwrap(),
        measurement,
        _dir: dir,
    }
}

fn dev_client(f: &Fixture) -> WorkerClient {
    WorkerClient::new(f.running.url(), ClientConfig::new(Policy::development())).unwrap()
}

/// A streamed answer of the scripted model: its deltas and its end.
async fn streamed(client: &WorkerClient) -> (Vec<String>, Box<veil_client::Completion>) {
    let mut s = client.infer(request("scripted", true)).await.unwrap();
    let mut deltas = Vec::new();
    let mut done = None;
    while let Some(e) = s.next().await {
        match e.unwrap() {
            Event::Delta(t) => deltas.push(t),
            Event::Done(c) => done = Some(c),
        }
    }
    (deltas, done.expect("the stream ended with its receipt"))
}

fn request(model: &str, stream: bool) -> InferRequest {
    InferRequest::new(
        model,
        vec![Message {
            role: "user".into(),
            content: "What is the capital of France?".into(),
        }],
        Params::default(),
        stream,
    )
    .unwrap()
}

#[tokio::test]
async fn streaming_and_whole_answers_come_with_verified_receipts() {
    let f = start_worker().await;
    let client = dev_client(&f);
    let worker = client.attest().await.unwrap();
    assert!(worker.simulated());
    assert_eq!(worker.models.len(), 2);
    assert!(worker.models.iter().any(|m| m.name == "scripted" && m.ready));

    let (deltas, done) = streamed(&client).await;
    assert_eq!(deltas, PIECES);
    assert_eq!(done.finish_reason, "stop");
    assert_eq!(done.usage.completion_tokens, 3);
    assert_eq!(done.receipt.worker_key, worker.signing_public_key.to_bytes());

    let (text, c) = client
        .infer(request("scripted", false))
        .await
        .unwrap()
        .collect()
        .await
        .unwrap();
    assert_eq!(text, PIECES.concat());
    assert_eq!(c.usage.prompt_tokens, 10);
    f.running.stop().await.unwrap();
}

#[tokio::test]
async fn policies_refuse_simulated_and_unlisted_measurements() {
    let f = start_worker().await;
    let strict = WorkerClient::new(f.running.url(), ClientConfig::new(Policy::strict())).unwrap();
    let err = strict.attest().await.unwrap_err();
    assert!(matches!(err, ClientError::WorkerRefused { .. }), "{err}");
    assert!(err.to_string().contains("simulated"), "{err}");

    let mut other = Measurements::new();
    other.insert("sim_measurement".into(), HexBytes(vec![0u8; 32]));
    let pinned = Policy::development().allow_measurements(vec![other]);
    let err = WorkerClient::new(f.running.url(), ClientConfig::new(pinned))
        .unwrap()
        .attest()
        .await
        .unwrap_err();
    assert!(matches!(err, ClientError::WorkerRefused { .. }), "{err}");
    assert!(err.to_string().to_lowercase().contains("measurement"), "{err}");

    let mut ours = Measurements::new();
    ours.insert("sim_measurement".into(), HexBytes(f.measurement.clone()));
    let pinned = Policy::development().allow_measurements(vec![ours]);
    WorkerClient::new(f.running.url(), ClientConfig::new(pinned))
        .unwrap()
        .attest()
        .await
        .unwrap();
    // A refused worker is never sent a request.
    assert!(strict.infer(request("scripted", false)).await.is_err());
    f.running.stop().await.unwrap();
}

#[tokio::test]
async fn pieces_sooner_than_the_stream_interval_share_a_frame() {
    // The scripted engine produces its pieces at once: with an interval far longer than the answer, the
    // first piece goes alone (time to first token is not held back) and the rest at the end, in one frame.
    let f = start_worker_with(Duration::from_secs(3600)).await;
    let client = dev_client(&f);
    let worker = client.attest().await.unwrap();
    let (deltas, done) = streamed(&client).await;
    assert_eq!(deltas, [PIECES[0].to_owned(), PIECES[1..].concat()]);
    assert_eq!(
        done.usage.completion_tokens, 3,
        "token counts are the engine's, not the frames'"
    );

    let sealed = seal_request(&worker.hpke_public_key, &request("scripted", true)).unwrap();
    let frames = raw_frames(&client, &sealed.body).await;
    assert_eq!(frames.len(), 3, "two deltas and done");
    f.running.stop().await.unwrap();
}

/// The raw frames of an answer, as sent on the wire.
async fn raw_frames(client: &WorkerClient, body: &[u8]) -> Vec<Vec<u8>> {
    let resp = client.post_sealed(body).await.unwrap();
    let bytes = resp.bytes().await.unwrap();
    let mut d = FrameDecoder::default();
    d.push(&bytes);
    let mut frames = Vec::new();
    while let Some(f) = d.next_frame().unwrap() {
        frames.push(f);
    }
    d.finish().unwrap();
    frames
}

fn open_all(opener: &mut ResponseOpener, frames: &[Vec<u8>]) -> Result<Vec<Event>, ClientError> {
    let mut events = Vec::new();
    for f in frames {
        events.extend(opener.push(&encode_frame(f).unwrap())?);
    }
    opener.finish()?;
    Ok(events)
}

#[tokio::test]
async fn tampered_reordered_dropped_and_truncated_frames_are_errors() {
    let f = start_worker().await;
    let client = dev_client(&f);
    let worker = client.attest().await.unwrap();
    let key = worker.signing_public_key;
    let sealed = seal_request(&worker.hpke_public_key, &request("scripted", true)).unwrap();
    let frames = raw_frames(&client, &sealed.body).await;
    assert_eq!(frames.len(), 4, "three deltas and done");
    assert!(
        frames[..3].iter().all(|f| f.len() == frames[0].len()),
        "deltas are padded to one bucket"
    );

    let events = open_all(&mut ResponseOpener::new(&sealed, key), &frames).unwrap();
    assert_eq!(events.len(), 4);

    for i in 0..frames.len() {
        for pos in [0, 1, frames[i].len() / 2, frames[i].len() - 1] {
            let mut t = frames.clone();
            t[i][pos] ^= 0x01;
            let err = open_all(&mut ResponseOpener::new(&sealed, key), &t).unwrap_err();
            assert!(matches!(err, ClientError::Stream(_)), "flip {i}/{pos}: {err}");
        }
    }
    let mut swapped = frames.clone();
    swapped.swap(0, 1);
    let err = open_all(&mut ResponseOpener::new(&sealed, key), &swapped).unwrap_err();
    assert!(err.to_string().contains("frame 0 failed authentication"), "{err}");

    let mut dropped = frames.clone();
    dropped.remove(1);
    assert!(open_all(&mut ResponseOpener::new(&sealed, key), &dropped).is_err());

    let truncated = &frames[..3];
    let err = open_all(&mut ResponseOpener::new(&sealed, key), truncated).unwrap_err();
    assert!(err.to_string().contains("truncated"), "{err}");

    let mut replayed = frames.clone();
    replayed.push(frames[3].clone());
    let err = open_all(&mut ResponseOpener::new(&sealed, key), &replayed).unwrap_err();
    assert!(err.to_string().contains("after the final frame"), "{err}");

    // A cut inside a frame.
    let mut o = ResponseOpener::new(&sealed, key);
    let wire = encode_frame(&frames[0]).unwrap();
    o.push(&wire[..wire.len() - 3]).unwrap();
    assert!(o.finish().is_err());

    // A receipt checked against another attested key is refused.
    let other = veil_crypto::sign::SigningKey::generate().unwrap().verifying_key();
    let err = open_all(&mut ResponseOpener::new(&sealed, other), &frames).unwrap_err();
    assert!(matches!(err, ClientError::Receipt(_)), "{err}");
    f.running.stop().await.unwrap();
}

#[tokio::test]
async fn replayed_stale_tampered_and_misrouted_requests_are_refused() {
    let f = start_worker().await;
    let client = dev_client(&f);
    let worker = client.attest().await.unwrap();
    let key = worker.signing_public_key;

    let sealed = seal_request(&worker.hpke_public_key, &request("scripted", false)).unwrap();
    let first = raw_frames(&client, &sealed.body).await;
    open_all(&mut ResponseOpener::new(&sealed, key), &first).unwrap();
    let err = client.post_sealed(&sealed.body).await.unwrap_err();
    assert!(
        matches!(&err, ClientError::Rejected { status: 409, code, .. } if code == "replay"),
        "{err}"
    );

    let mut old = request("scripted", false);
    old.timestamp_ms -= 120_000;
    let sealed = seal_request(&worker.hpke_public_key, &old).unwrap();
    let err = client.post_sealed(&sealed.body).await.unwrap_err();
    assert!(
        matches!(&err, ClientError::Rejected { status: 400, code, .. } if code == "stale"),
        "{err}"
    );
    assert!(err.to_string().contains("off the worker's clock"), "{err}");

    let sealed = seal_request(&worker.hpke_public_key, &request("scripted", false)).unwrap();
    for pos in [0, 10, sealed.body.len() / 2, sealed.body.len() - 1] {
        let mut t = sealed.body.clone();
        t[pos] ^= 0x01;
        let err = client.post_sealed(&t).await.unwrap_err();
        assert!(
            matches!(&err, ClientError::Rejected { status: 400, code, .. } if code == "cannot_open"),
            "{err}"
        );
    }

    let err = client
        .infer(request("unprovisioned", false))
        .await
        .unwrap()
        .collect()
        .await
        .unwrap_err();
    assert!(
        matches!(
            err,
            ClientError::Worker {
                kind: ErrorKind::ModelNotReady,
                ..
            }
        ),
        "{err}"
    );
    assert!(err.to_string().contains("not been provisioned"), "{err}");
    let err = client
        .infer(request("nope", false))
        .await
        .unwrap()
        .collect()
        .await
        .unwrap_err();
    assert!(err.to_string().contains("not served"), "{err}");

    let mut bad = request("scripted", false);
    bad.messages[0].role = "wizard".into();
    let err = client.infer(bad).await.unwrap().collect().await.unwrap_err();
    assert!(
        matches!(
            err,
            ClientError::Worker {
                kind: ErrorKind::InvalidRequest,
                ..
            }
        ),
        "{err}"
    );
    f.running.stop().await.unwrap();
}

#[tokio::test]
async fn tampered_evidence_and_substituted_keys_are_refused() {
    let f = start_worker().await;
    let http = reqwest::Client::builder().no_proxy().build().unwrap();
    let nonce = [7u8; 32];
    let body = http
        .get(format!(
            "{}/v1/attestation?nonce={}",
            f.running.url(),
            hex::encode(nonce)
        ))
        .send()
        .await
        .unwrap()
        .bytes()
        .await
        .unwrap();
    let doc = veil_types::AttestationDoc::from_json(&body).unwrap();
    let policy = Policy::development();
    let now = veil_types::now_ms() / 1000;
    veil_client::verify_attestation(&doc, &nonce, &policy, now).unwrap();

    // Another nonce (a replayed document), a substituted HPKE or signing key (a man in the middle).
    assert!(veil_client::verify_attestation(&doc, &[8u8; 32], &policy, now).is_err());
    let mut mitm = doc.clone();
    mitm.hpke_public_key = veil_crypto::seal::HpkeSecretKey::generate()
        .unwrap()
        .public_key()
        .to_bytes();
    let err = veil_client::verify_attestation(&mitm, &nonce, &policy, now).unwrap_err();
    assert!(err.to_string().contains("report data"), "{err}");
    let mut mitm = doc.clone();
    mitm.signing_public_key[0] ^= 1;
    assert!(veil_client::verify_attestation(&mitm, &nonce, &policy, now).is_err());
    // A lie about `simulated`.
    let mut lie = doc.clone();
    lie.simulated = false;
    assert!(veil_client::verify_attestation(&lie, &nonce, &policy, now).is_err());
    // Every flipped byte of the evidence.
    for i in 0..doc.evidence.len() {
        let mut t = doc.clone();
        t.evidence[i] ^= 1;
        assert!(
            veil_client::verify_attestation(&t, &nonce, &policy, now).is_err(),
            "flip at {i} accepted"
        );
    }
    // Stale evidence.
    assert!(veil_client::verify_attestation(&doc, &nonce, &policy, now + 3600).is_err());

    // Bad nonces are refused by the worker with a clear message.
    for q in ["", "?nonce=zz", "?nonce=00"] {
        let r = http
            .get(format!("{}/v1/attestation{q}", f.running.url()))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 400, "{q}");
        assert!(r.text().await.unwrap().contains("nonce"));
    }
    f.running.stop().await.unwrap();
}
