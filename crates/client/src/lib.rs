//! Veil's client: attests a worker, seals requests to its attested key, opens and checks the sealed response stream and its signed receipt.
//!
//! The checks are sans-I/O and usable on their own ([`verify_attestation`], [`seal_request`],
//! [`ResponseOpener`]); [`WorkerClient`] wires them to HTTP, caches a verified worker for a bounded
//! time and re-attests when the worker's key changed. Nothing is ever returned that did not
//! authenticate: a tampered, reordered, dropped, replayed or truncated frame, a bad receipt, or a worker
//! whose evidence fails the policy is an error.
#![forbid(unsafe_code)]
#![cfg_attr(test, allow(clippy::unwrap_used, clippy::expect_used))]

mod error;
pub mod ledger;
mod opener;

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use veil_attest::{Claims, Evidence, ExpectedReportData, Policy};
use veil_crypto::seal::HpkePublicKey;
use veil_crypto::sign::VerifyingKey;
use veil_types::{AttestationDoc, InferRequest, ModelStatus, ProvisionRequest, Secret32, tags};

pub use error::{ClientError, Result};
pub use opener::{Completion, Event, ResponseOpener};

/// How a client trusts workers.
#[derive(Debug, Clone)]
pub struct ClientConfig {
    /// The attestation policy (allowed measurements, whether simulated TEEs are accepted, …).
    pub policy: Policy,
    /// How long a verified worker is trusted before it is challenged again (default 5 minutes).
    pub attestation_ttl: Duration,
    /// Connection timeout (default 10 s).
    pub connect_timeout: Duration,
    /// Time limit of an attestation round trip (default 30 s).
    pub attestation_timeout: Duration,
    /// Time limit of provisioning, which includes decrypting and loading the model (default 10 min).
    pub provision_timeout: Duration,
}

impl ClientConfig {
    pub fn new(policy: Policy) -> Self {
        Self {
            policy,
            attestation_ttl: Duration::from_secs(300),
            connect_timeout: Duration::from_secs(10),
            attestation_timeout: Duration::from_secs(30),
            provision_timeout: Duration::from_secs(600),
        }
    }
}

/// A worker whose evidence passed the policy: the keys it proved live in its TEE.
#[derive(Debug, Clone)]
pub struct VerifiedWorker {
    pub url: String,
    pub hpke_public_key: HpkePublicKey,
    pub signing_public_key: VerifyingKey,
    /// The accepted claims (measurements, TEE kind, `simulated`).
    pub claims: Claims,
    pub models: Vec<ModelStatus>,
    pub verified_at: Instant,
}

impl VerifiedWorker {
    /// Whether its evidence came from the simulated TEE (accepted only because the policy allows it).
    pub fn simulated(&self) -> bool {
        self.claims.simulated
    }
}

fn unix_now() -> u64 {
    veil_types::now_ms() / 1000
}

/// Verifies an attestation document answered to `nonce`: the evidence passes `policy` at `now` (unix
/// seconds) and its report data binds `nonce` and exactly the two public keys the document announces.
pub fn verify_attestation(doc: &AttestationDoc, nonce: &[u8], policy: &Policy, now: u64) -> Result<Claims> {
    let evidence = Evidence::from_bytes(&doc.evidence)?;
    let keys_hash = veil_attest::keys_hash(&[&doc.hpke_public_key, &doc.signing_public_key]);
    let claims = veil_attest::verify_and_appraise(
        &evidence,
        policy,
        &ExpectedReportData::bound(nonce, &keys_hash),
        now,
    )?;
    if claims.simulated != doc.simulated {
        return Err(ClientError::Protocol(
            "the attestation document's `simulated` flag contradicts its evidence".into(),
        ));
    }
    Ok(claims)
}

/// A request sealed to a worker, with what is needed to open its response.
pub struct SealedRequest {
    /// The HTTP body of `POST /v1/infer`.
    pub body: Vec<u8>,
    pub request_hash: [u8; 32],
    pub(crate) response_key: Secret32,
    pub(crate) model: String,
}

impl std::fmt::Debug for SealedRequest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "SealedRequest({} bytes)", self.body.len())
    }
}

/// Pads and seals `req` to the worker's attested key.
pub fn seal_request(worker_key: &HpkePublicKey, req: &InferRequest) -> Result<SealedRequest> {
    let padded = req.to_padded()?;
    let body = veil_crypto::seal::seal(worker_key, tags::INFER_REQUEST, b"", &padded)?;
    Ok(SealedRequest {
        request_hash: veil_types::request_hash(&body),
        body,
        response_key: req.response_key.clone(),
        model: req.model.clone(),
    })
}

/// An HTTP client of one worker.
#[derive(Debug)]
pub struct WorkerClient {
    url: String,
    http: reqwest::Client,
    config: ClientConfig,
    cached: Mutex<Option<Arc<VerifiedWorker>>>,
}

impl WorkerClient {
    /// A client of the worker at `url` (e.g. `http://127.0.0.1:7000`).
    pub fn new(url: impl Into<String>, config: ClientConfig) -> Result<Self> {
        config.policy.validate()?;
        let http = reqwest::Client::builder()
            .no_proxy()
            .connect_timeout(config.connect_timeout)
            .build()
            .map_err(|e| ClientError::Http(format!("cannot build the HTTP client: {e}")))?;
        Ok(Self {
            url: url.into().trim_end_matches('/').to_owned(),
            http,
            config,
            cached: Mutex::new(None),
        })
    }

    pub fn url(&self) -> &str {
        &self.url
    }

    /// Challenges the worker with a fresh nonce and verifies its answer; caches the result.
    pub async fn attest(&self) -> Result<Arc<VerifiedWorker>> {
        let nonce = veil_crypto::rand::array::<32>()?;
        let url = format!("{}/v1/attestation?nonce={}", self.url, hex::encode(nonce));
        let resp = self
            .http
            .get(&url)
            .send()
            .await
            .map_err(|e| self.http_error(&e))?;
        let status = resp.status();
        let body = resp.bytes().await.map_err(|e| self.http_error(&e))?;
        if !status.is_success() {
            return Err(rejected(status.as_u16(), &body));
        }
        let doc = AttestationDoc::from_json(&body)?;
        let claims =
            verify_attestation(&doc, &nonce, &self.config.policy, unix_now()).map_err(|e| match e {
                ClientError::Attestation(a) => ClientError::WorkerRefused {
                    url: self.url.clone(),
                    reason: a.to_string(),
                },
                other => other,
            })?;
        let signing_public_key = VerifyingKey::from_bytes(&doc.signing_public_key)?;
        let worker = Arc::new(VerifiedWorker {
            url: self.url.clone(),
            hpke_public_key: HpkePublicKey::from_bytes(doc.hpke_public_key),
            signing_public_key,
            claims,
            models: doc.models,
            verified_at: Instant::now(),
        });
        if worker.simulated() {
            tracing::warn!(url = %self.url, "worker attested with SIMULATED evidence (accepted by policy; no hardware protection)");
        } else {
            tracing::info!(url = %self.url, "worker attested");
        }
        if let Ok(mut c) = self.cached.lock() {
            *c = Some(worker.clone());
        }
        Ok(worker)
    }

    /// The verified worker, from the cache while it is fresh, otherwise attested anew.
    pub async fn worker(&self) -> Result<Arc<VerifiedWorker>> {
        let cached = self.cached.lock().ok().and_then(|c| c.clone());
        match cached {
            Some(w) if w.verified_at.elapsed() < self.config.attestation_ttl => Ok(w),
            _ => self.attest().await,
        }
    }

    /// Drops the cached attestation: the next request challenges the worker again.
    pub fn forget(&self) {
        if let Ok(mut c) = self.cached.lock() {
            *c = None;
        }
    }

    /// Sends a model's data key, already sealed to this worker's attested key (`veil_bundle::seal_key`).
    pub async fn provision(&self, model: &str, bundle: &str, sealed_key: Vec<u8>) -> Result<()> {
        let body = serde_json::to_vec(&ProvisionRequest {
            version: veil_types::PROTOCOL_VERSION,
            model: model.to_owned(),
            bundle: bundle.to_owned(),
            sealed_key,
        })
        .map_err(|e| ClientError::Protocol(e.to_string()))?;
        let resp = self
            .http
            .post(format!("{}/v1/provision", self.url))
            .timeout(self.config.provision_timeout)
            .header("content-type", "application/json")
            .body(body)
            .send()
            .await
            .map_err(|e| self.http_error(&e))?;
        let status = resp.status();
        let body = resp.bytes().await.map_err(|e| self.http_error(&e))?;
        if !status.is_success() {
            return Err(rejected(status.as_u16(), &body));
        }
        Ok(())
    }

    /// Seals `req` to the attested worker and starts reading its answer. If the worker cannot open the
    /// request (its key changed since it was attested, e.g. it restarted), re-attests and retries once
    /// with a fresh nonce.
    pub async fn infer(&self, req: InferRequest) -> Result<ResponseStream> {
        let worker = self.worker().await?;
        match self.send(&worker, &req).await {
            Err(ClientError::Rejected { code, .. }) if code == "cannot_open" => {
                tracing::info!(url = %self.url, "worker could not open the request: re-attesting");
                self.forget();
                let worker = self.attest().await?;
                // A wholly fresh request: a new nonce, and a new response key, so that no key ever seals
                // two streams (a worker may have opened the first attempt after all).
                let mut fresh = req;
                fresh.nonce = veil_crypto::rand::array::<16>()?;
                fresh.timestamp_ms = veil_types::now_ms();
                fresh.response_key = Secret32::generate()?;
                self.send(&worker, &fresh).await
            }
            other => other,
        }
    }

    async fn send(&self, worker: &Arc<VerifiedWorker>, req: &InferRequest) -> Result<ResponseStream> {
        let sealed = seal_request(&worker.hpke_public_key, req)?;
        let resp = self.post_sealed(&sealed.body).await?;
        Ok(ResponseStream {
            opener: ResponseOpener::new(&sealed, worker.signing_public_key),
            resp: Some(resp),
            pending: VecDeque::new(),
            worker: worker.clone(),
        })
    }

    /// Posts an already sealed body to `/v1/infer` and returns the HTTP response once its status is a
    /// success (for callers that drive [`ResponseOpener`] themselves).
    pub async fn post_sealed(&self, body: &[u8]) -> Result<reqwest::Response> {
        let resp = self
            .http
            .post(format!("{}/v1/infer", self.url))
            .header("content-type", "application/octet-stream")
            .body(body.to_vec())
            .send()
            .await
            .map_err(|e| self.http_error(&e))?;
        let status = resp.status();
        if !status.is_success() {
            let body = resp.bytes().await.map_err(|e| self.http_error(&e))?;
            return Err(rejected(status.as_u16(), &body));
        }
        Ok(resp)
    }

    fn http_error(&self, e: &reqwest::Error) -> ClientError {
        ClientError::Http(format!("worker at {}: {e}", self.url))
    }
}

fn rejected(status: u16, body: &[u8]) -> ClientError {
    let v: serde_json::Value = serde_json::from_slice(body).unwrap_or_default();
    let code = v["error"]["code"].as_str().unwrap_or("http_error").to_owned();
    let message = v["error"]["message"]
        .as_str()
        .map(str::to_owned)
        .unwrap_or_else(|| format!("HTTP status {status}"));
    ClientError::Rejected {
        status,
        code,
        message,
    }
}

/// The answer to one request, read as it arrives.
#[derive(Debug)]
pub struct ResponseStream {
    opener: ResponseOpener,
    resp: Option<reqwest::Response>,
    pending: VecDeque<Event>,
    worker: Arc<VerifiedWorker>,
}

impl ResponseStream {
    /// The worker that answers.
    pub fn worker(&self) -> &Arc<VerifiedWorker> {
        &self.worker
    }

    /// The next authenticated event; `None` after [`Event::Done`]. An error ends the stream.
    pub async fn next(&mut self) -> Option<Result<Event>> {
        loop {
            if let Some(e) = self.pending.pop_front() {
                return Some(Ok(e));
            }
            let resp = self.resp.as_mut()?;
            match resp.chunk().await {
                Ok(Some(bytes)) => match self.opener.push(&bytes) {
                    Ok(events) => self.pending.extend(events),
                    Err(e) => {
                        self.resp = None;
                        return Some(Err(e));
                    }
                },
                Ok(None) => {
                    self.resp = None;
                    return match self.opener.finish() {
                        Ok(()) => None,
                        Err(e) => Some(Err(e)),
                    };
                }
                Err(e) => {
                    self.resp = None;
                    return Some(Err(ClientError::Stream(format!(
                        "the connection to the worker failed mid-answer ({e}); the answer is incomplete"
                    ))));
                }
            }
        }
    }

    /// The next event if it already arrived (with the bytes of an earlier event), without waiting; for
    /// a caller that writes out all the events at hand at once.
    pub fn ready(&mut self) -> Option<Event> {
        self.pending.pop_front()
    }

    /// Reads the whole answer.
    pub async fn collect(mut self) -> Result<(String, Completion)> {
        let mut text = String::new();
        while let Some(event) = self.next().await {
            match event? {
                Event::Delta(t) => text.push_str(&t),
                Event::Done(c) => {
                    // Drain: anything after the last frame is an error.
                    if let Some(Err(e)) = self.next().await {
                        return Err(e);
                    }
                    return Ok((text, *c));
                }
            }
        }
        Err(ClientError::Stream(
            "the answer ended without its final frame".into(),
        ))
    }
}
