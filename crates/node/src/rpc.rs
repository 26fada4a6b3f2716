//! The validator's JSON-RPC 2.0 interface over HTTP (`POST /`) and its Prometheus metrics
//! (`GET /metrics`). See `docs/node.md` for the reference.
//!
//! Everything this serves is public or sealed: block headers and ciphertext envelopes, the network's
//! public keys and policy, counters; a query's answer is HPKE-sealed to a key chosen by the asker
//! inside the (signed, sealed) query, and the network seed leaves only sealed to an attested enclave
//! key. Envelope, query and answer bytes are never logged; a log line names the method at most.
//!
//! The server runs on the tokio runtime `veil node` starts; it is not part of what the deterministic
//! simulator drives, so it may use tokio directly.

use std::collections::HashMap;
use std::fmt::Write as _;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::Body;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde::Serialize;
use serde_json::{Value, json};
use veil_attest::Policy;
use veil_ledger::TxError;

use crate::block::Block;
use crate::core::SharedCore;
use crate::run::{Peer, RpcContext};
use crate::seedshare::{self, SeedRequest};

/// The largest request body accepted (1 MiB).
pub const MAX_BODY_BYTES: usize = 1 << 20;
/// The most calls in one batch.
pub const MAX_BATCH: usize = 64;
/// How long a seed challenge stays valid.
pub const CHALLENGE_TTL: Duration = Duration::from_secs(60);
/// The most seed challenges outstanding at once.
pub const MAX_CHALLENGES: usize = 1024;

/// JSON-RPC error codes.
pub mod codes {
    /// The body is not JSON.
    pub const PARSE_ERROR: i64 = -32700;
    /// The JSON is not a JSON-RPC 2.0 request (or the body is too large).
    pub const INVALID_REQUEST: i64 = -32600;
    /// No such method.
    pub const METHOD_NOT_FOUND: i64 = -32601;
    /// The parameters are not what the method takes.
    pub const INVALID_PARAMS: i64 = -32602;
    /// The node failed (its ledger state is unreadable, a task failed).
    pub const INTERNAL_ERROR: i64 = -32603;
    /// The mempool refused the transaction; the message says why.
    pub const TX_REFUSED: i64 = -32010;
    /// The query could not be opened or answered; the message says why.
    pub const QUERY_REFUSED: i64 = -32011;
    /// The seed request was refused (unknown challenge, evidence fails the policy, …).
    pub const SEED_REFUSED: i64 = -32012;
}

/// Every method this server answers.
pub const METHODS: [&str; 7] = [
    "veil_status",
    "veil_networkKeys",
    "veil_submit",
    "veil_getBlock",
    "veil_query",
    "veil_seedChallenge",
    "veil_requestSeed",
];

/// Where the RPC reads finalized blocks by height.
pub trait BlockSource: Send + Sync + 'static {
    /// The finalized block at `height`, if this node holds it.
    fn block(&self, height: u64) -> Pin<Box<dyn Future<Output = Option<Block>> + Send + '_>>;
}

/// Marshal's mailbox: finalized blocks from this validator's archive.
impl BlockSource
    for commonware_consensus::marshal::core::Mailbox<
        crate::app::Scheme,
        commonware_consensus::marshal::standard::Standard<Block>,
    >
{
    fn block(&self, height: u64) -> Pin<Box<dyn Future<Output = Option<Block>> + Send + '_>> {
        Box::pin(async move {
            self.get_block(commonware_consensus::types::Height::new(height))
                .await
                .map(|digested| digested.inner().clone())
        })
    }
}

/// Blocks held in memory (tests, tools).
#[derive(Default)]
pub struct MemoryBlocks(pub Mutex<std::collections::BTreeMap<u64, Block>>);

impl BlockSource for MemoryBlocks {
    fn block(&self, height: u64) -> Pin<Box<dyn Future<Output = Option<Block>> + Send + '_>> {
        let found = self
            .0
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(&height)
            .cloned();
        Box::pin(async move { found })
    }
}

/// What the handlers share.
pub struct RpcState {
    core: SharedCore,
    blocks: Arc<dyn BlockSource>,
    validators: Vec<Peer>,
    simulated_tee: bool,
    allow_simulated_tee: bool,
    challenges: Mutex<HashMap<[u8; 32], Instant>>,
}

impl RpcState {
    /// State over a validator's core. `simulated_tee`: whether this node runs on the simulated TEE;
    /// `allow_simulated_tee`: whether seed requests with simulated evidence are granted.
    pub fn new(
        core: SharedCore,
        blocks: Arc<dyn BlockSource>,
        validators: Vec<Peer>,
        simulated_tee: bool,
        allow_simulated_tee: bool,
    ) -> Self {
        Self {
            core,
            blocks,
            validators,
            simulated_tee,
            allow_simulated_tee,
            challenges: Mutex::new(HashMap::new()),
        }
    }

    /// State for the validator [`crate::run::run`] started.
    pub fn from_context(ctx: RpcContext) -> Self {
        let simulated = ctx.platform.kind() == veil_platform::PlatformKind::Sim;
        Self::new(
            ctx.core,
            Arc::new(ctx.marshal),
            ctx.validators,
            simulated,
            ctx.allow_simulated_tee,
        )
    }

    fn policy(&self) -> Policy {
        if self.allow_simulated_tee {
            Policy::development()
        } else {
            Policy::strict()
        }
    }
}

/// The HTTP routes: `POST /` (JSON-RPC) and `GET /metrics`.
pub fn router(state: Arc<RpcState>) -> Router {
    Router::new()
        .route("/", post(handle_post))
        .route("/metrics", get(metrics))
        .with_state(state)
}

/// Serves the RPC for a running validator on `addr` until the future is dropped.
pub async fn serve(ctx: RpcContext, addr: SocketAddr) -> std::io::Result<()> {
    let listener = tokio::net::TcpListener::bind(addr).await.map_err(|e| {
        std::io::Error::new(
            e.kind(),
            format!("cannot listen for JSON-RPC on {addr}: {e}; free the port or change rpc_listen"),
        )
    })?;
    serve_listener(ctx, listener).await
}

async fn serve_listener(ctx: RpcContext, listener: tokio::net::TcpListener) -> std::io::Result<()> {
    let addr = listener.local_addr()?;
    let state = Arc::new(RpcState::from_context(ctx));
    tracing::info!(%addr, "JSON-RPC and /metrics listening");
    axum::serve(listener, router(state)).await
}

/// A JSON-RPC error.
#[derive(Debug, Clone, PartialEq)]
struct Failure {
    code: i64,
    message: String,
    data: Option<Value>,
}

impl Failure {
    fn new(code: i64, message: impl Into<String>) -> Self {
        Self {
            code,
            message: message.into(),
            data: None,
        }
    }

    fn params(method: &str, expected: &str) -> Self {
        Self::new(
            codes::INVALID_PARAMS,
            format!("invalid params for {method}: expected {expected}"),
        )
    }
}

fn error_object(id: Value, f: Failure) -> Value {
    let mut error = json!({ "code": f.code, "message": f.message });
    if let Some(data) = f.data {
        error["data"] = data;
    }
    json!({ "jsonrpc": "2.0", "id": id, "error": error })
}

fn json_response(status: StatusCode, body: &Value) -> Response {
    (
        status,
        [(header::CONTENT_TYPE, "application/json")],
        body.to_string(),
    )
        .into_response()
}

async fn handle_post(State(state): State<Arc<RpcState>>, body: Body) -> Response {
    let bytes = match axum::body::to_bytes(body, MAX_BODY_BYTES).await {
        Ok(b) => b,
        Err(_) => {
            let f = Failure::new(
                codes::INVALID_REQUEST,
                format!("request body unreadable or larger than {MAX_BODY_BYTES} bytes (1 MiB)"),
            );
            return json_response(StatusCode::PAYLOAD_TOO_LARGE, &error_object(Value::Null, f));
        }
    };
    let request: Value = match serde_json::from_slice(&bytes) {
        Ok(v) => v,
        Err(e) => {
            let f = Failure::new(
                codes::PARSE_ERROR,
                format!("parse error: the body is not JSON ({e})"),
            );
            return json_response(StatusCode::OK, &error_object(Value::Null, f));
        }
    };
    match request {
        Value::Array(calls) => {
            if calls.is_empty() || calls.len() > MAX_BATCH {
                let f = Failure::new(
                    codes::INVALID_REQUEST,
                    format!("a batch must hold 1 to {MAX_BATCH} calls, got {}", calls.len()),
                );
                return json_response(StatusCode::OK, &error_object(Value::Null, f));
            }
            let mut answers = Vec::with_capacity(calls.len());
            for call in calls {
                if let Some(answer) = handle_call(&state, call).await {
                    answers.push(answer);
                }
            }
            if answers.is_empty() {
                StatusCode::NO_CONTENT.into_response()
            } else {
                json_response(StatusCode::OK, &Value::Array(answers))
            }
        }
        call => match handle_call(&state, call).await {
            Some(answer) => json_response(StatusCode::OK, &answer),
            None => StatusCode::NO_CONTENT.into_response(),
        },
    }
}

/// One call; `None` for a notification (no `id`).
async fn handle_call(state: &RpcState, call: Value) -> Option<Value> {
    let Value::Object(mut call) = call else {
        let f = Failure::new(
            codes::INVALID_REQUEST,
            "invalid request: a call must be a JSON object",
        );
        return Some(error_object(Value::Null, f));
    };
    let id = call.remove("id");
    let reply_id = match &id {
        None => Value::Null,
        Some(v @ (Value::Null | Value::Number(_) | Value::String(_))) => v.clone(),
        Some(_) => {
            let f = Failure::new(
                codes::INVALID_REQUEST,
                "invalid request: id must be a number, a string or null",
            );
            return Some(error_object(Value::Null, f));
        }
    };
    if call.get("jsonrpc").and_then(Value::as_str) != Some("2.0") {
        let f = Failure::new(
            codes::INVALID_REQUEST,
            "invalid request: \"jsonrpc\" must be \"2.0\"",
        );
        return Some(error_object(reply_id, f));
    }
    let Some(method) = call.get("method").and_then(Value::as_str).map(str::to_owned) else {
        let f = Failure::new(
            codes::INVALID_REQUEST,
            "invalid request: \"method\" must be a string",
        );
        return Some(error_object(reply_id, f));
    };
    let params = match call.remove("params") {
        None | Some(Value::Null) => Vec::new(),
        Some(Value::Array(a)) => a,
        Some(_) => {
            let f = Failure::new(
                codes::INVALID_PARAMS,
                format!("invalid params for {method}: params must be a JSON array (positional)"),
            );
            return Some(error_object(reply_id, f));
        }
    };
    tracing::debug!(method = %method, "rpc call");
    let outcome = dispatch(state, &method, &params).await;
    id.as_ref()?;
    Some(match outcome {
        Ok(result) => json!({ "jsonrpc": "2.0", "id": reply_id, "result": result }),
        Err(f) => error_object(reply_id, f),
    })
}

async fn dispatch(state: &RpcState, method: &str, params: &[Value]) -> Result<Value, Failure> {
    match method {
        "veil_status" => {
            no_params(method, params)?;
            Ok(status(state))
        }
        "veil_networkKeys" => {
            no_params(method, params)?;
            Ok(network_keys(state))
        }
        "veil_submit" => {
            let envelope = hex_param(method, params, "[envelope_hex]: one transaction envelope as hex")?;
            submit(state, envelope)
        }
        "veil_getBlock" => {
            let height = height_param(method, params)?;
            Ok(get_block(state, height).await)
        }
        "veil_query" => {
            let query = hex_param(method, params, "[sealed_query_hex]: one sealed query as hex")?;
            query_ledger(state, &query)
        }
        "veil_seedChallenge" => {
            no_params(method, params)?;
            seed_challenge(state)
        }
        "veil_requestSeed" => {
            const EXPECTED: &str =
                "[{\"nonce\", \"evidence\", \"hpke_public\"}]: one seed request (hex strings)";
            let [request] = params else {
                return Err(Failure::params(method, EXPECTED));
            };
            let request: SeedRequest =
                serde_json::from_value(request.clone()).map_err(|_| Failure::params(method, EXPECTED))?;
            request_seed(state, request).await
        }
        other => Err(Failure::new(
            codes::METHOD_NOT_FOUND,
            format!(
                "unknown method {other:?}; this node answers: {}",
                METHODS.join(", ")
            ),
        )),
    }
}

fn no_params(method: &str, params: &[Value]) -> Result<(), Failure> {
    if params.is_empty() {
        Ok(())
    } else {
        Err(Failure::params(method, "no parameters ([])"))
    }
}

fn hex_param(method: &str, params: &[Value], expected: &str) -> Result<Vec<u8>, Failure> {
    let [Value::String(s)] = params else {
        return Err(Failure::params(method, expected));
    };
    let s = s.strip_prefix("0x").unwrap_or(s);
    hex::decode(s).map_err(|_| Failure::params(method, &format!("{expected} (the string is not hex)")))
}

fn height_param(method: &str, params: &[Value]) -> Result<u64, Failure> {
    let [height] = params else {
        return Err(Failure::params(method, "[height]: one block height (integer)"));
    };
    height
        .as_u64()
        .ok_or_else(|| Failure::params(method, "[height]: a non-negative integer height"))
}

fn status(state: &RpcState) -> Value {
    let (chain_id, genesis_hash, height, root, epoch) = state.core.with_ledger(|l| {
        (
            l.genesis_config().chain_id.clone(),
            l.genesis_hash(),
            l.height(),
            l.state_root(),
            l.epoch(),
        )
    });
    let stats = state.core.stats();
    json!({
        "chain_id": chain_id,
        "genesis_hash": hex::encode(genesis_hash),
        "height": height,
        "finalized_tip": stats.finalized_tip.max(height),
        "state_root": hex::encode(root),
        "epoch": epoch,
        "mempool_size": state.core.mempool_len(),
        "applied_txs": stats.applied_txs,
        "rejected_txs": stats.rejected_txs,
        "validators": state.validators.len(),
        "simulated_tee": state.simulated_tee,
    })
}

#[derive(Serialize)]
struct ValidatorInfo {
    public_key: String,
    address: String,
    p2p: String,
    rpc: String,
}

fn network_keys(state: &RpcState) -> Value {
    let (chain_id, genesis_hash, epoch, epoch_length, height, tx_public, fees) =
        state.core.with_ledger(|l| {
            let g = l.genesis_config();
            (
                g.chain_id.clone(),
                l.genesis_hash(),
                l.epoch(),
                g.epoch_length,
                l.height(),
                l.keys().current().tx_public().to_bytes(),
                g.fees.clone(),
            )
        });
    let validators: Vec<ValidatorInfo> = state
        .validators
        .iter()
        .map(|p| ValidatorInfo {
            public_key: p.public_key.clone(),
            address: hex::decode(&p.public_key)
                .ok()
                .and_then(|b| veil_crypto::sign::VerifyingKey::from_slice(&b).ok())
                .map(|k| k.address().to_string())
                .unwrap_or_default(),
            p2p: p.p2p.to_string(),
            rpc: p.rpc.to_string(),
        })
        .collect();
    json!({
        "chain_id": chain_id,
        "genesis_hash": hex::encode(genesis_hash),
        "epoch": epoch,
        "epoch_length": epoch_length,
        "height": height,
        "tx_public_key": hex::encode(tx_public),
        "fee_schedule": fees,
        "validators": validators,
        "policy": { "allow_simulated_tee": state.allow_simulated_tee },
        "simulated_tee": state.simulated_tee,
    })
}

/// A stable, machine-readable name of a refusal (the `data.reason` of a -32010 error).
fn tx_error_kind(e: &TxError) -> &'static str {
    match e {
        TxError::Malformed(_) => "malformed",
        TxError::Oversize { .. } => "oversize",
        TxError::UnsupportedVersion { .. } => "unsupported_version",
        TxError::WrongEpoch { .. } => "wrong_epoch",
        TxError::Undecryptable { .. } => "undecryptable",
        TxError::BadSignature => "bad_signature",
        TxError::WrongChain => "wrong_chain",
        TxError::NoFeeForSize { .. } => "no_fee_for_size",
        TxError::FeeTooLow { .. } => "fee_too_low",
        TxError::NonceUsed { .. } => "nonce_used",
        TxError::NoncePending { .. } => "nonce_pending",
        TxError::NonceGap { .. } => "nonce_gap",
        TxError::InsufficientBalance { .. } => "insufficient_balance",
        TxError::Duplicate => "duplicate",
        TxError::MempoolFull { .. } => "mempool_full",
        TxError::State(_) => "state",
    }
}

fn submit(state: &RpcState, envelope: Vec<u8>) -> Result<Value, Failure> {
    match state.core.submit(envelope) {
        Ok(id) => Ok(json!({ "id": hex::encode(id) })),
        Err(e) => {
            // The message carries no confidential numbers (see `veil_ledger::TxError`): the caller
            // need not be the sender.
            let code = if matches!(e, TxError::State(_)) {
                codes::INTERNAL_ERROR
            } else {
                codes::TX_REFUSED
            };
            tracing::debug!(reason = tx_error_kind(&e), "envelope refused");
            Err(Failure {
                code,
                message: e.to_string(),
                data: Some(json!({ "reason": tx_error_kind(&e) })),
            })
        }
    }
}

async fn get_block(state: &RpcState, height: u64) -> Value {
    let Some(block) = state.blocks.block(height).await else {
        return Value::Null;
    };
    let executed = state
        .core
        .executed_at(height)
        .filter(|e| e.digest == commonware_cryptography::Digestible::digest(&block));
    json!({
        "height": block.height.get(),
        "digest": hex::encode(commonware_cryptography::Digestible::digest(&block).as_ref()),
        "parent": hex::encode(block.parent.as_ref()),
        "timestamp_ms": block.timestamp_ms,
        "state_root": executed.map(|e| hex::encode(e.state_root)),
        "txs": block.txs.iter().map(hex::encode).collect::<Vec<_>>(),
    })
}

fn query_ledger(state: &RpcState, query: &[u8]) -> Result<Value, Failure> {
    match state.core.with_ledger(|l| l.query(query)) {
        Ok(answer) => Ok(json!({ "answer": hex::encode(answer) })),
        Err(e @ veil_ledger::QueryError::State(_)) => Err(Failure::new(codes::INTERNAL_ERROR, e.to_string())),
        Err(e) => Err(Failure::new(codes::QUERY_REFUSED, e.to_string())),
    }
}

fn seed_challenge(state: &RpcState) -> Result<Value, Failure> {
    let nonce = veil_crypto::rand::array::<32>().map_err(|e| {
        Failure::new(
            codes::INTERNAL_ERROR,
            format!("no randomness for a challenge: {e}"),
        )
    })?;
    let now = Instant::now();
    let mut challenges = state.challenges.lock().unwrap_or_else(|p| p.into_inner());
    challenges.retain(|_, issued| now.duration_since(*issued) < CHALLENGE_TTL);
    if challenges.len() >= MAX_CHALLENGES {
        return Err(Failure::new(
            codes::SEED_REFUSED,
            format!("{MAX_CHALLENGES} seed challenges are outstanding; retry in a minute"),
        ));
    }
    challenges.insert(nonce, now);
    Ok(json!({ "nonce": hex::encode(nonce), "expires_in_s": CHALLENGE_TTL.as_secs() }))
}

async fn request_seed(state: &RpcState, request: SeedRequest) -> Result<Value, Failure> {
    let nonce: [u8; 32] = hex::decode(&request.nonce)
        .ok()
        .and_then(|b| b.try_into().ok())
        .ok_or_else(|| Failure::params("veil_requestSeed", "a 32-byte hex nonce from veil_seedChallenge"))?;
    let issued = state
        .challenges
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .remove(&nonce);
    if issued.is_none_or(|at| at.elapsed() >= CHALLENGE_TTL) {
        return Err(Failure::new(
            codes::SEED_REFUSED,
            "unknown, used or expired seed challenge; ask veil_seedChallenge for a fresh nonce (each lives 60 s and \
             serves one request)",
        ));
    }
    let (seed, epoch) = state
        .core
        .with_ledger(|l| (l.keys().seed().clone(), l.keys().seed_epoch()));
    let policy = state.policy();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    // Evidence verification (DCAP collateral, signatures) is CPU work: keep it off the async workers.
    let granted =
        tokio::task::spawn_blocking(move || seedshare::grant(&seed, epoch, &policy, &nonce, &request, now))
            .await;
    match granted {
        Ok(Ok(sealed)) => Ok(json!({ "sealed": hex::encode(sealed) })),
        Ok(Err(e)) => {
            tracing::warn!(error = %e, "seed request refused");
            Err(Failure::new(codes::SEED_REFUSED, e.to_string()))
        }
        Err(e) => Err(Failure::new(
            codes::INTERNAL_ERROR,
            format!("the seed grant task failed: {e}"),
        )),
    }
}

async fn metrics(State(state): State<Arc<RpcState>>) -> Response {
    let (height, epoch) = state.core.with_ledger(|l| (l.height(), l.epoch()));
    let stats = state.core.stats();
    let mempool = state.core.mempool_len();
    let mut out = String::with_capacity(2048);
    let mut metric = |name: &str, kind: &str, help: &str, value: u64| {
        let _ = write!(
            out,
            "# HELP {name} {help}\n# TYPE {name} {kind}\n{name} {value}\n"
        );
    };
    metric(
        "veil_height",
        "gauge",
        "Height of the last block this validator executed.",
        height,
    );
    metric(
        "veil_finalized_tip",
        "gauge",
        "Highest finalized height consensus reported (may run ahead of execution).",
        stats.finalized_tip.max(height),
    );
    metric(
        "veil_finalized_txs_total",
        "counter",
        "Transactions applied by the finalized blocks this validator executed since it started.",
        stats.applied_txs,
    );
    metric(
        "veil_rejected_txs_total",
        "counter",
        "Transactions skipped at execution (invalid, replayed, unfunded) since this validator started.",
        stats.rejected_txs,
    );
    metric(
        "veil_refused_submissions_total",
        "counter",
        "Envelopes the mempool refused at submission since this validator started.",
        stats.refused_submissions,
    );
    metric(
        "veil_blocks_executed_total",
        "counter",
        "Blocks executed since this validator started.",
        stats.blocks,
    );
    metric(
        "veil_mempool_size",
        "gauge",
        "Envelopes waiting in the mempool.",
        mempool as u64,
    );
    metric(
        "veil_peers",
        "gauge",
        "Validators in the configured validator set, this one included (the configured set, not live p2p connections).",
        state.validators.len() as u64,
    );
    metric("veil_epoch", "gauge", "The ledger's current key epoch.", epoch);
    metric(
        "veil_simulated_tee",
        "gauge",
        "1 when this validator runs on the simulated TEE (no hardware protection; development only).",
        u64::from(state.simulated_tee),
    );
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4; charset=utf-8")],
        out,
    )
        .into_response()
}

#[cfg(test)]
mod tests {
    use super::*;
    use commonware_consensus::types::Height;
    use veil_client::ledger::{LedgerClient, LedgerClientError, Wallet};
    use veil_crypto::kdf::Seed;
    use veil_crypto::sign::SigningKey;
    use veil_ledger::{Allocation, FeeSchedule, Genesis, Ledger, ReceiptStatus, ValidatorAccount};

    use crate::block::Digest;

    struct Harness {
        url: String,
        core: SharedCore,
        blocks: Arc<MemoryBlocks>,
        wallet: Wallet,
        seed: Seed,
        server: tokio::task::JoinHandle<()>,
        dir: tempfile::TempDir,
    }

    impl Drop for Harness {
        fn drop(&mut self) {
            self.server.abort();
        }
    }

    fn validator_keys() -> Vec<SigningKey> {
        (0..4u8)
            .map(|i| SigningKey::from_bytes(&[0x40 + i; 32]))
            .collect()
    }

    async fn start(allow_simulated_tee: bool) -> Harness {
        let wallet = Wallet::from_key(SigningKey::from_bytes(&[7; 32]));
        let vals = validator_keys();
        let genesis = Genesis {
            chain_id: "veil-rpc-test".into(),
            epoch_length: 1_000,
            allocations: vec![Allocation {
                address: wallet.address(),
                amount: 1_000_000,
            }],
            validators: vals
                .iter()
                .map(|k| ValidatorAccount {
                    address: k.verifying_key().address(),
                })
                .collect(),
            fees: FeeSchedule::default(),
        };
        let seed = Seed::from_bytes([9; 32]);
        let ledger = Ledger::genesis(&genesis, seed.clone()).unwrap();
        let core = SharedCore::new(ledger, 1_000);
        let blocks = Arc::new(MemoryBlocks::default());
        let peers = vals
            .iter()
            .enumerate()
            .map(|(i, k)| Peer {
                public_key: hex::encode(k.verifying_key().to_bytes()),
                p2p: format!("127.0.0.1:{}", 30_100 + i).parse().unwrap(),
                rpc: format!("127.0.0.1:{}", 30_000 + i).parse().unwrap(),
            })
            .collect();
        let state = Arc::new(RpcState::new(
            core.clone(),
            blocks.clone(),
            peers,
            true,
            allow_simulated_tee,
        ));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let server = tokio::spawn(async move {
            let _ = axum::serve(listener, router(state)).await;
        });
        Harness {
            url: format!("http://{addr}/"),
            core,
            blocks,
            wallet,
            seed,
            server,
            dir: tempfile::tempdir().unwrap(),
        }
    }

    async fn raw(url: &str, body: impl Into<reqwest::Body>) -> (u16, String) {
        let r = reqwest::Client::new()
            .post(url)
            .header("content-type", "application/json")
            .body(body)
            .send()
            .await
            .unwrap();
        (r.status().as_u16(), r.text().await.unwrap())
    }

    async fn raw_json(url: &str, body: &str) -> Value {
        let (status, text) = raw(url, body.to_owned()).await;
        assert_eq!(status, 200, "{text}");
        serde_json::from_str(&text).unwrap()
    }

    /// Executes `txs` as the next block, as the validator's executor would.
    fn execute(h: &Harness, txs: Vec<Vec<u8>>) -> Block {
        let height = h.core.executed_height() + 1;
        let parent = h
            .blocks
            .0
            .lock()
            .unwrap()
            .get(&(height - 1))
            .map(commonware_cryptography::Digestible::digest)
            .unwrap_or(Digest::from([0u8; 32]));
        let block = Block::new(parent, Height::new(height), 1_700_000_000_000 + height, txs);
        h.core
            .execute(&block, commonware_cryptography::Digestible::digest(&block))
            .unwrap();
        h.blocks.0.lock().unwrap().insert(height, block.clone());
        block
    }

    #[tokio::test]
    async fn status_keys_and_metrics() {
        let h = start(true).await;
        let client = LedgerClient::new(&h.url).unwrap();
        let status = client.status().await.unwrap();
        assert_eq!(status.chain_id, "veil-rpc-test");
        assert_eq!(status.height, 0);
        assert_eq!(status.validators, 4);
        assert!(status.simulated_tee);
        assert_eq!(
            status.genesis_hash,
            hex::encode(h.core.with_ledger(|l| l.genesis_hash()))
        );
        assert_eq!(status.state_root, hex::encode(h.core.state_root()));

        let keys = client.network_keys().await.unwrap();
        assert_eq!(keys.epoch, 0);
        assert_eq!(keys.epoch_length, 1_000);
        assert_eq!(keys.fee_schedule, FeeSchedule::default());
        assert_eq!(keys.validators.len(), 4);
        assert_eq!(
            keys.validators[0].address,
            validator_keys()[0].verifying_key().address().to_string()
        );
        assert_eq!(keys.validators[1].rpc, "127.0.0.1:30001");
        assert!(keys.policy.allow_simulated_tee);
        let expected_key = h.core.with_ledger(|l| l.keys().current().tx_public().to_bytes());
        assert_eq!(keys.tx_public().unwrap().to_bytes(), expected_key);

        let text = reqwest::get(format!("{}metrics", h.url))
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        for name in [
            "veil_height 0",
            "veil_finalized_tip 0",
            "veil_finalized_txs_total 0",
            "veil_rejected_txs_total 0",
            "veil_mempool_size 0",
            "veil_peers 4",
            "veil_epoch 0",
            "# TYPE veil_finalized_txs_total counter",
            "# HELP veil_peers Validators in the configured validator set",
        ] {
            assert!(text.contains(name), "{name:?} missing from\n{text}");
        }
    }

    #[tokio::test]
    async fn submit_execute_query_and_blocks() {
        let h = start(true).await;
        let client = LedgerClient::new(&h.url).unwrap();
        let keys = client.network_keys().await.unwrap();
        let before = h.wallet.balance(&client, &keys).await.unwrap();
        assert_eq!((before.balance, before.nonce, before.height), (1_000_000, 0, 0));

        let to = SigningKey::from_bytes(&[8; 32]).verifying_key().address();
        let sealed = h.wallet.seal_transfer(&keys, 0, to, 2_500).unwrap();
        assert_eq!(sealed.fee, 10);
        let id = client.submit(&sealed.envelope).await.unwrap();
        assert_eq!(id, sealed.id);
        assert_eq!(client.status().await.unwrap().mempool_size, 1);

        // Replayed: a clear refusal with a machine-readable reason.
        let err = client.submit(&sealed.envelope).await.unwrap_err();
        assert_eq!(err.rpc_code(), Some(codes::TX_REFUSED));
        assert!(err.to_string().contains("already in the mempool"), "{err}");
        // Over-balance.
        let greedy = h.wallet.seal_transfer(&keys, 1, to, 5_000_000).unwrap();
        let err = client.submit(&greedy.envelope).await.unwrap_err();
        match &err {
            LedgerClientError::Rpc { code, message, data } => {
                assert_eq!(*code, codes::TX_REFUSED);
                assert!(message.contains("insufficient balance"), "{message}");
                assert!(
                    !message.contains("5000000") && !message.contains("5,000,000"),
                    "{message}"
                );
                assert_eq!(data.as_ref().unwrap()["reason"], "insufficient_balance");
            }
            other => panic!("{other:?}"),
        }
        // Wrong epoch and garbage.
        let mut wrong_epoch = keys.clone();
        wrong_epoch.epoch = 5;
        let stale = h.wallet.seal_transfer(&wrong_epoch, 1, to, 1).unwrap();
        let err = client.submit(&stale.envelope).await.unwrap_err();
        assert!(err.to_string().contains("epoch 5"), "{err}");
        let err = client.submit(&[1, 2, 3]).await.unwrap_err();
        assert_eq!(err.rpc_code(), Some(codes::TX_REFUSED));
        assert!(err.to_string().contains("malformed"), "{err}");

        // No receipt before execution; then the block runs.
        assert!(h.wallet.receipt(&client, &keys, 0).await.unwrap().is_none());
        assert!(client.get_block(1).await.unwrap().is_none());
        let block = execute(&h, vec![sealed.envelope.clone()]);
        let receipt = h.wallet.receipt(&client, &keys, 0).await.unwrap().unwrap();
        assert_eq!(
            (receipt.status, receipt.fee, receipt.height, receipt.tx_id),
            (ReceiptStatus::Applied, 10, 1, sealed.id)
        );
        let after = h.wallet.balance(&client, &keys).await.unwrap();
        assert_eq!(
            (after.balance, after.nonce, after.height),
            (1_000_000 - 2_510, 1, 1)
        );
        let history = h.wallet.history(&client, &keys, 0, 10).await.unwrap();
        assert_eq!(history.len(), 1);
        assert_eq!((history[0].amount, history[0].counterparty), (2_500, to));
        let waited = h
            .wallet
            .wait_receipt(
                &client,
                &keys,
                0,
                Duration::from_secs(5),
                Duration::from_millis(10),
                |_| {},
            )
            .await
            .unwrap();
        assert_eq!(waited, receipt);

        let info = client.get_block(1).await.unwrap().unwrap();
        assert_eq!(info.height, 1);
        assert_eq!(
            info.digest,
            hex::encode(commonware_cryptography::Digestible::digest(&block).as_ref())
        );
        assert_eq!(info.parent, hex::encode([0u8; 32]));
        assert_eq!(info.timestamp_ms, block.timestamp_ms);
        assert_eq!(
            info.state_root.as_deref(),
            Some(hex::encode(h.core.state_root()).as_str())
        );
        assert_eq!(info.txs, vec![hex::encode(&sealed.envelope)]);
        let status = client.status().await.unwrap();
        assert_eq!(
            (status.height, status.applied_txs, status.mempool_size),
            (1, 1, 0)
        );
        let text = reqwest::get(format!("{}metrics", h.url))
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        assert!(
            text.contains("veil_height 1\n") && text.contains("veil_finalized_txs_total 1\n"),
            "{text}"
        );

        // A query from someone else's key reads their own (empty) account, never ours; a tampered
        // query is refused.
        let stranger = Wallet::from_key(SigningKey::from_bytes(&[3; 32]));
        let theirs = stranger.balance(&client, &keys).await.unwrap();
        assert_eq!((theirs.balance, theirs.nonce), (0, 0));
        let reply = veil_crypto::seal::HpkeSecretKey::generate().unwrap();
        let mut q = veil_ledger::seal_query(
            h.wallet.key(),
            &keys.tx_public().unwrap(),
            0,
            veil_ledger::QueryKind::Balance,
            &reply,
        )
        .unwrap();
        let last = q.len() - 1;
        q[last] ^= 1;
        let err = client.query(&q).await.unwrap_err();
        assert_eq!(err.rpc_code(), Some(codes::QUERY_REFUSED), "{err}");
    }

    #[tokio::test]
    async fn json_rpc_errors() {
        let h = start(true).await;
        let v = raw_json(&h.url, "{not json").await;
        assert_eq!(v["error"]["code"], codes::PARSE_ERROR);
        assert_eq!(v["id"], Value::Null);
        let v = raw_json(&h.url, r#"{"jsonrpc":"2.0","id":1,"method":"eth_blockNumber"}"#).await;
        assert_eq!(v["error"]["code"], codes::METHOD_NOT_FOUND);
        assert_eq!(v["id"], 1);
        let msg = v["error"]["message"].as_str().unwrap();
        for m in METHODS {
            assert!(msg.contains(m), "{msg}");
        }
        let v = raw_json(&h.url, r#"{"jsonrpc":"1.0","id":"a","method":"veil_status"}"#).await;
        assert_eq!(
            (v["error"]["code"].as_i64(), v["id"].as_str()),
            (Some(codes::INVALID_REQUEST), Some("a"))
        );
        let v = raw_json(&h.url, r#"[1]"#).await;
        assert_eq!(v[0]["error"]["code"], codes::INVALID_REQUEST);
        let v = raw_json(&h.url, r#"[]"#).await;
        assert_eq!(v["error"]["code"], codes::INVALID_REQUEST);
        for (call, expected) in [
            (
                r#"{"jsonrpc":"2.0","id":2,"method":"veil_status","params":[1]}"#,
                "no parameters",
            ),
            (
                r#"{"jsonrpc":"2.0","id":2,"method":"veil_status","params":{"a":1}}"#,
                "JSON array",
            ),
            (
                r#"{"jsonrpc":"2.0","id":2,"method":"veil_submit","params":[]}"#,
                "envelope_hex",
            ),
            (
                r#"{"jsonrpc":"2.0","id":2,"method":"veil_submit","params":["xyz"]}"#,
                "not hex",
            ),
            (
                r#"{"jsonrpc":"2.0","id":2,"method":"veil_getBlock","params":["1"]}"#,
                "integer",
            ),
            (
                r#"{"jsonrpc":"2.0","id":2,"method":"veil_getBlock","params":[-1]}"#,
                "non-negative",
            ),
            (
                r#"{"jsonrpc":"2.0","id":2,"method":"veil_query","params":[5]}"#,
                "sealed_query_hex",
            ),
            (
                r#"{"jsonrpc":"2.0","id":2,"method":"veil_requestSeed","params":[{"nonce":"00"}]}"#,
                "hpke_public",
            ),
        ] {
            let v = raw_json(&h.url, call).await;
            assert_eq!(v["error"]["code"], codes::INVALID_PARAMS, "{call}: {v}");
            assert!(
                v["error"]["message"].as_str().unwrap().contains(expected),
                "{call}: {v}"
            );
        }
        // A batch answers each call in order; a notification gets no answer.
        let v = raw_json(
            &h.url,
            r#"[{"jsonrpc":"2.0","id":1,"method":"veil_status"},{"jsonrpc":"2.0","method":"veil_status"},{"jsonrpc":"2.0","id":3,"method":"nope"}]"#,
        )
        .await;
        assert_eq!(v.as_array().unwrap().len(), 2);
        assert_eq!(v[0]["result"]["chain_id"], "veil-rpc-test");
        assert_eq!(v[1]["error"]["code"], codes::METHOD_NOT_FOUND);
        let (status, body) = raw(&h.url, r#"{"jsonrpc":"2.0","method":"veil_status"}"#).await;
        assert_eq!((status, body.as_str()), (204, ""));
        // Bodies over 1 MiB are refused without being read whole.
        let big = format!(
            r#"{{"jsonrpc":"2.0","id":1,"method":"veil_submit","params":["{}"]}}"#,
            "00".repeat(MAX_BODY_BYTES / 2 + 100)
        );
        let (status, body) = raw(&h.url, big).await;
        assert_eq!(status, 413, "{body}");
        let v: Value = serde_json::from_str(&body).unwrap();
        assert_eq!(v["error"]["code"], codes::INVALID_REQUEST);
        assert!(v["error"]["message"].as_str().unwrap().contains("1 MiB"));
        // Oversized envelopes under the body limit are the ledger's refusal.
        let err = LedgerClient::new(&h.url)
            .unwrap()
            .submit(&vec![1u8; 10_000])
            .await
            .unwrap_err();
        assert!(err.to_string().contains("largest accepted"), "{err}");
    }

    fn sim_platform(dir: &std::path::Path) -> veil_platform::sim::SimPlatform {
        let mut config = veil_platform::sim::SimConfig::new(dir.join("sim"));
        config.probe_root = dir.to_path_buf();
        veil_platform::sim::SimPlatform::start(config).unwrap()
    }

    #[tokio::test]
    async fn seed_transfer_over_rpc() {
        let h = start(true).await;
        let client = LedgerClient::new(&h.url).unwrap();
        let platform = sim_platform(h.dir.path());
        let nonce = client.seed_challenge().await.unwrap();
        assert_eq!(nonce.len(), 32);
        let (requester, request) = seedshare::SeedRequester::new(&platform, &nonce).unwrap();
        let sealed = client.request_seed(&request).await.unwrap();
        let (seed, epoch) = requester.accept(&sealed).unwrap();
        assert_eq!((seed.expose(), epoch), (h.seed.expose(), 0));
        // Single use.
        let err = client.request_seed(&request).await.unwrap_err();
        assert_eq!(err.rpc_code(), Some(codes::SEED_REFUSED));
        assert!(err.to_string().contains("fresh nonce"), "{err}");
        // A nonce the node never issued.
        let (_, forged) = seedshare::SeedRequester::new(&platform, &[5u8; 32]).unwrap();
        let err = client.request_seed(&forged).await.unwrap_err();
        assert_eq!(err.rpc_code(), Some(codes::SEED_REFUSED));
        // Evidence bound to another key than the one the request names.
        let nonce = client.seed_challenge().await.unwrap();
        let (_, mut swapped) = seedshare::SeedRequester::new(&platform, &nonce).unwrap();
        swapped.hpke_public = hex::encode(
            veil_crypto::seal::HpkeSecretKey::generate()
                .unwrap()
                .public_key()
                .to_bytes(),
        );
        let err = client.request_seed(&swapped).await.unwrap_err();
        assert!(err.to_string().contains("policy"), "{err}");
    }

    #[tokio::test]
    async fn strict_policy_refuses_simulated_evidence() {
        let h = start(false).await;
        let client = LedgerClient::new(&h.url).unwrap();
        assert!(!client.network_keys().await.unwrap().policy.allow_simulated_tee);
        let platform = sim_platform(h.dir.path());
        let nonce = client.seed_challenge().await.unwrap();
        let (_, request) = seedshare::SeedRequester::new(&platform, &nonce).unwrap();
        let err = client.request_seed(&request).await.unwrap_err();
        assert_eq!(err.rpc_code(), Some(codes::SEED_REFUSED));
        assert!(
            err.to_string()
                .contains("evidence rejected by the network policy"),
            "{err}"
        );
    }
}
