//! Wire types of Veil's worker protocol, versioned: attestation document, provisioning, sealed inference requests, response events, receipts, and the length-prefixed frame codec.
//!
//! The protocol (see `docs/confidential-inference.md`):
//!
//! - `GET /v1/attestation?nonce=HEX` → [`AttestationDoc`] (JSON). The evidence's report data is
//!   `veil_attest::report_data(nonce, veil_attest::keys_hash([hpke public key, signing public key]))`.
//! - `POST /v1/provision`: body = JSON [`ProvisionRequest`], whose data key is sealed to the worker's
//!   attested key with `veil_bundle::seal_key`.
//! - `POST /v1/infer`: body = `seal(worker HPKE key, `[`tags::INFER_REQUEST`]`, b"", pad(JSON `[`InferRequest`]`))`.
//!   The response body is a sequence of frames, each `u32 BE length | frame` ([`encode_frame`],
//!   [`FrameDecoder`]), each frame from `veil_crypto::frames::FrameSealer::new(response_key,`
//!   [`tags::INFER_RESPONSE`]`, context = `[`request_hash`]`(body))` over `pad(JSON `[`ResponseEvent`]`)`.
//!   The [`ResponseEvent::Done`] or [`ResponseEvent::Error`] frame is the last one.
//!
//! Every decoder here rejects malformed, truncated or oversized input with an error and never panics.
#![forbid(unsafe_code)]
#![cfg_attr(test, allow(clippy::unwrap_used, clippy::expect_used))]

mod codec;
mod error;
mod hexser;
mod receipt;

use std::fmt;

use serde::{Deserialize, Serialize};
use zeroize::Zeroizing;

pub use codec::{FrameDecoder, MAX_FRAME_LEN, encode_frame};
pub use error::{Result, TypesError};
pub use receipt::Receipt;

/// The version of every message of this protocol; a message of another version is refused.
pub const PROTOCOL_VERSION: u32 = 1;

/// Largest sealed request body a worker accepts (16 MiB).
pub const MAX_REQUEST_LEN: usize = 16 << 20;

/// Domain tags of the protocol's HPKE purposes, frame streams, hashes and signatures.
pub mod tags {
    /// HPKE purpose of an inference request.
    pub const INFER_REQUEST: &str = "veil/v1/infer-request";
    /// Frame-stream purpose of an inference response.
    pub const INFER_RESPONSE: &str = "veil/v1/infer-response";
    /// Hash of a sealed request.
    pub const REQUEST_HASH: &str = "veil/v1/request";
    /// Hash of a whole answer.
    pub const RESPONSE_HASH: &str = "veil/v1/response";
    /// Signature of a receipt.
    pub const RECEIPT: &str = "veil/v1/receipt";
}

/// `H(request)`: the hash of the sealed request body exactly as sent; binds every response frame and the receipt to it.
pub fn request_hash(sealed_request: &[u8]) -> [u8; 32] {
    veil_crypto::hash::sha256_tagged(tags::REQUEST_HASH, &[sealed_request])
}

/// `H(response)`: the hash of the whole answer text.
pub fn response_hash(text: &str) -> [u8; 32] {
    veil_crypto::hash::sha256_tagged(tags::RESPONSE_HASH, &[text.as_bytes()])
}

fn check_version(what: &'static str, found: u32) -> Result<()> {
    if found == PROTOCOL_VERSION {
        Ok(())
    } else {
        Err(TypesError::UnsupportedVersion {
            what,
            found,
            supported: PROTOCOL_VERSION,
        })
    }
}

/// A 32-byte secret (a model data key, a response key): zeroized on drop, redacted in `Debug`,
/// hex in JSON.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret32(Zeroizing<[u8; 32]>);

impl Secret32 {
    pub fn new(bytes: [u8; 32]) -> Self {
        Self(Zeroizing::new(bytes))
    }
    /// A fresh secret from the OS CSPRNG.
    pub fn generate() -> Result<Self> {
        let mut s = Self::new([0; 32]);
        veil_crypto::rand::fill(s.0.as_mut())?;
        Ok(s)
    }
    pub fn expose(&self) -> &[u8; 32] {
        &self.0
    }
}

impl fmt::Debug for Secret32 {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret32(<redacted>)")
    }
}

impl Serialize for Secret32 {
    fn serialize<S: serde::Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        let text = Zeroizing::new(hex::encode(self.0.as_ref()));
        s.serialize_str(&text)
    }
}

impl<'de> Deserialize<'de> for Secret32 {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        let text = Zeroizing::new(String::deserialize(d)?);
        let mut out = Self::new([0; 32]);
        hex::decode_to_slice(text.as_bytes(), out.0.as_mut())
            .map_err(|e| serde::de::Error::custom(format!("secret: {e} (expected 64 hex digits)")))?;
        Ok(out)
    }
}

/// A model a worker serves, as listed in its attestation document.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModelStatus {
    /// The model's name (what clients put in `model`).
    pub name: String,
    /// The content address of its encrypted bundle.
    pub bundle: String,
    /// Whether its key was provisioned and it is loaded.
    pub ready: bool,
}

/// `GET /v1/attestation?nonce=HEX`: evidence binding the worker's enclave keys to the verifier's nonce.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AttestationDoc {
    pub version: u32,
    /// `veil_attest::Evidence` envelope bytes.
    #[serde(with = "hexser::vec")]
    pub evidence: Vec<u8>,
    /// The enclave's X25519 key that requests are sealed to.
    #[serde(with = "hexser::array")]
    pub hpke_public_key: [u8; 32],
    /// The enclave's Ed25519 key that signs receipts.
    #[serde(with = "hexser::array")]
    pub signing_public_key: [u8; 32],
    /// The worker's measurement as it claims it (informative: the verifier reads it from the evidence).
    #[serde(with = "hexser::vec")]
    pub measurement: Vec<u8>,
    /// Whether the evidence comes from the simulated TEE (development only).
    pub simulated: bool,
    pub models: Vec<ModelStatus>,
}

impl AttestationDoc {
    /// Parses and checks the version.
    pub fn from_json(bytes: &[u8]) -> Result<Self> {
        let doc: Self =
            serde_json::from_slice(bytes).map_err(|e| TypesError::json("attestation document", &e))?;
        check_version("attestation document", doc.version)?;
        Ok(doc)
    }
}

/// `POST /v1/provision` (JSON): the data key of one model bundle, sealed to the worker's attested HPKE key
/// with `veil_bundle::seal_key` (bound to the bundle's address), exactly as the ledger's KMS will release it.
/// The model's name and bundle address are public (the registry lists them); the key is not.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProvisionRequest {
    pub version: u32,
    pub model: String,
    /// The content address of the bundle the key opens (`sha256:<hex>`).
    pub bundle: String,
    /// `veil_bundle::seal_key(worker HPKE key, bundle, data key)`.
    #[serde(with = "hexser::vec")]
    pub sealed_key: Vec<u8>,
}

impl ProvisionRequest {
    pub fn from_json(bytes: &[u8]) -> Result<Self> {
        let req: Self =
            serde_json::from_slice(bytes).map_err(|e| TypesError::json("provision request", &e))?;
        check_version("provision request", req.version)?;
        Ok(req)
    }
}

/// One chat message. `Debug` shows the role and the length only: contents are the user's secret.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Message {
    /// `system`, `user` or `assistant`.
    pub role: String,
    pub content: String,
}

impl fmt::Debug for Message {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Message({}, {} bytes)", self.role, self.content.len())
    }
}

/// Sampling parameters with OpenAI's meanings.
#[derive(Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Params {
    pub temperature: f32,
    pub top_p: f32,
    pub top_k: u32,
    pub seed: Option<u32>,
    pub max_tokens: Option<u32>,
    pub stop: Vec<String>,
    pub presence_penalty: f32,
    pub frequency_penalty: f32,
}

impl Default for Params {
    fn default() -> Self {
        Self {
            temperature: 1.0,
            top_p: 1.0,
            top_k: 0,
            seed: None,
            max_tokens: None,
            stop: Vec::new(),
            presence_penalty: 0.0,
            frequency_penalty: 0.0,
        }
    }
}

impl fmt::Debug for Params {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Stop sequences are request content: only their count is shown.
        f.debug_struct("Params")
            .field("temperature", &self.temperature)
            .field("top_p", &self.top_p)
            .field("top_k", &self.top_k)
            .field("max_tokens", &self.max_tokens)
            .field("stop", &self.stop.len())
            .finish_non_exhaustive()
    }
}

/// `POST /v1/infer` (padded, then sealed): one chat request.
#[derive(Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct InferRequest {
    pub version: u32,
    /// 16 fresh random bytes: a worker refuses a nonce it has seen (replay).
    #[serde(with = "hexser::array")]
    pub nonce: [u8; 16],
    /// When the client made the request (unix milliseconds): a worker refuses stale requests.
    pub timestamp_ms: u64,
    /// The key the response frames are sealed under; fresh for each request.
    pub response_key: Secret32,
    pub model: String,
    pub messages: Vec<Message>,
    pub params: Params,
    /// Whether the client wants the answer piece by piece (otherwise one delta before `done`).
    pub stream: bool,
}

impl fmt::Debug for InferRequest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("InferRequest")
            .field("version", &self.version)
            .field("timestamp_ms", &self.timestamp_ms)
            .field("model", &self.model)
            .field("messages", &self.messages.len())
            .field("stream", &self.stream)
            .finish_non_exhaustive()
    }
}

impl InferRequest {
    /// A request with a fresh nonce, response key and the current time.
    pub fn new(
        model: impl Into<String>,
        messages: Vec<Message>,
        params: Params,
        stream: bool,
    ) -> Result<Self> {
        Ok(Self {
            version: PROTOCOL_VERSION,
            nonce: veil_crypto::rand::array::<16>()?,
            timestamp_ms: now_ms(),
            response_key: Secret32::generate()?,
            model: model.into(),
            messages,
            params,
            stream,
        })
    }

    /// The padded JSON plaintext, to be sealed.
    pub fn to_padded(&self) -> Result<Zeroizing<Vec<u8>>> {
        let json =
            Zeroizing::new(serde_json::to_vec(self).map_err(|e| TypesError::json("inference request", &e))?);
        Ok(Zeroizing::new(veil_crypto::pad::pad(&json)?))
    }

    /// Parses the padded JSON plaintext and checks the version.
    pub fn from_padded(padded: &[u8]) -> Result<Self> {
        let json = veil_crypto::pad::unpad(padded)?;
        let req: Self =
            serde_json::from_slice(json).map_err(|e| TypesError::json("inference request", &e))?;
        check_version("inference request", req.version)?;
        let p = &req.params;
        // JSON has no infinities, but an out-of-range number parses as one: refuse it here.
        if ![p.temperature, p.top_p, p.presence_penalty, p.frequency_penalty]
            .iter()
            .all(|v| v.is_finite())
        {
            return Err(TypesError::Malformed {
                what: "inference request",
                why: "a sampling parameter is not a finite number".into(),
            });
        }
        Ok(req)
    }
}

/// Milliseconds since the Unix epoch (0 if the clock is before it).
pub fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}

/// Token counts of one answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct Usage {
    pub prompt_tokens: u32,
    pub completion_tokens: u32,
}

/// What went wrong inside the worker, sent back encrypted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorKind {
    /// The request is invalid (bad parameters, unknown role, prompt too long).
    InvalidRequest,
    /// The model is not served here, or its key was not provisioned yet.
    ModelNotReady,
    /// The request's nonce was seen before (reserved: a worker refuses replays in clear, before sealing).
    Replay,
    /// The request's timestamp is outside the worker's window (reserved, as `Replay`).
    Stale,
    /// The engine failed.
    Internal,
}

impl ErrorKind {
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorKind::InvalidRequest => "invalid_request",
            ErrorKind::ModelNotReady => "model_not_ready",
            ErrorKind::Replay => "replay",
            ErrorKind::Stale => "stale",
            ErrorKind::Internal => "internal",
        }
    }
}

/// One event of a response stream: deltas, then exactly one `done` or `error`, which is the last frame.
#[derive(Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum ResponseEvent {
    /// More text of the answer.
    Delta { text: String },
    /// The end of a complete answer, with its signed receipt.
    Done {
        /// `stop`, `length` or `cancelled`.
        finish_reason: String,
        usage: Usage,
        receipt: Box<Receipt>,
    },
    /// The request failed inside the enclave.
    Error { kind: ErrorKind, message: String },
}

impl fmt::Debug for ResponseEvent {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ResponseEvent::Delta { text } => write!(f, "Delta({} bytes)", text.len()),
            ResponseEvent::Done {
                finish_reason, usage, ..
            } => write!(f, "Done({finish_reason}, {usage:?})"),
            ResponseEvent::Error { kind, message } => write!(f, "Error({kind:?}: {message})"),
        }
    }
}

impl ResponseEvent {
    /// The padded JSON plaintext of one frame.
    pub fn to_padded(&self) -> Result<Zeroizing<Vec<u8>>> {
        let json =
            Zeroizing::new(serde_json::to_vec(self).map_err(|e| TypesError::json("response event", &e))?);
        Ok(Zeroizing::new(veil_crypto::pad::pad(&json)?))
    }

    /// Parses one frame's padded JSON plaintext.
    pub fn from_padded(padded: &[u8]) -> Result<Self> {
        let json = veil_crypto::pad::unpad(padded)?;
        serde_json::from_slice(json).map_err(|e| TypesError::json("response event", &e))
    }

    /// Whether this event ends the stream.
    pub fn is_last(&self) -> bool {
        !matches!(self, ResponseEvent::Delta { .. })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secret_is_redacted_and_round_trips_as_hex() {
        let s = Secret32::new([0xab; 32]);
        assert_eq!(format!("{s:?}"), "Secret32(<redacted>)");
        let json = serde_json::to_string(&s).unwrap();
        assert_eq!(json, format!("\"{}\"", "ab".repeat(32)));
        assert_eq!(serde_json::from_str::<Secret32>(&json).unwrap(), s);
        assert!(serde_json::from_str::<Secret32>("\"abcd\"").is_err());
    }

    #[test]
    fn request_debug_hides_contents() {
        let req = InferRequest::new(
            "m",
            vec![Message {
                role: "user".into(),
                content: "secret prompt".into(),
            }],
            Params {
                stop: vec!["secret stop".into()],
                ..Params::default()
            },
            false,
        )
        .unwrap();
        let shown = format!("{req:?}");
        assert!(!shown.contains("secret"), "{shown}");
        let padded = req.to_padded().unwrap();
        assert!(padded.len().is_power_of_two());
        assert_eq!(InferRequest::from_padded(&padded).unwrap(), req);
        let ev = ResponseEvent::Delta {
            text: "secret answer".into(),
        };
        assert!(!format!("{ev:?}").contains("secret"));
    }

    #[test]
    fn other_versions_and_garbage_are_refused() {
        let mut req = InferRequest::new("m", vec![], Params::default(), true).unwrap();
        req.version = 2;
        let err = InferRequest::from_padded(&req.to_padded().unwrap()).unwrap_err();
        assert!(err.to_string().contains("version 2"), "{err}");
        assert!(InferRequest::from_padded(b"").is_err());
        assert!(InferRequest::from_padded(&veil_crypto::pad::pad(b"{not json").unwrap()).is_err());
        assert!(ResponseEvent::from_padded(&veil_crypto::pad::pad(b"{\"type\":\"nope\"}").unwrap()).is_err());
        assert!(AttestationDoc::from_json(b"[]").is_err());
        let req = InferRequest::new("m", vec![], Params::default(), true).unwrap();
        let json = serde_json::to_string(&req)
            .unwrap()
            .replace("\"temperature\":1.0", "\"temperature\":1e39");
        let err = InferRequest::from_padded(&veil_crypto::pad::pad(json.as_bytes()).unwrap()).unwrap_err();
        assert!(err.to_string().contains("finite"), "{err}");
    }
}
