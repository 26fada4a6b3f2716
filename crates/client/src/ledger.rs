//! The ledger side of the client: a JSON-RPC 2.0 client for a validator's RPC (`docs/node.md`) and
//! the wallet operations on top of it (keys, owner-only balance / receipt / history queries, sealed
//! transfers).
//!
//! Nothing here trusts the node with a secret: transactions are signed and HPKE-sealed to the
//! epoch's transaction key before they leave the process, and queries are answered sealed to a reply
//! key generated for that one query. The node operator sees ciphertexts of padded sizes.

use std::fmt;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use veil_crypto::seal::{HpkePublicKey, HpkeSecretKey};
use veil_crypto::sign::{Address, SigningKey};
use veil_ledger::{Answer, FeeSchedule, HistoryEntry, QueryKind, Receipt, TxBody, TxKind};
use zeroize::Zeroizing;

/// The JSON-RPC error code of a transaction the node refused (see `docs/node.md`).
pub const CODE_TX_REFUSED: i64 = -32010;
/// The JSON-RPC error code of a query the node could not answer.
pub const CODE_QUERY_REFUSED: i64 = -32011;
/// The JSON-RPC error code of a refused seed request.
pub const CODE_SEED_REFUSED: i64 = -32012;

/// What can go wrong talking to a validator or running a wallet operation.
#[derive(Debug, thiserror::Error)]
pub enum LedgerClientError {
    /// The node could not be reached (not started yet, wrong address, network down).
    #[error("cannot reach the validator at {url}: {reason}")]
    Unreachable {
        /// The RPC URL.
        url: String,
        /// What the HTTP client said.
        reason: String,
    },
    /// The node answered with an HTTP error outside JSON-RPC.
    #[error("the validator at {url} answered HTTP {status}: {body}")]
    Http {
        /// The RPC URL.
        url: String,
        /// The HTTP status.
        status: u16,
        /// The (truncated) body.
        body: String,
    },
    /// The node answered with a JSON-RPC error.
    #[error("{message} (JSON-RPC error {code})")]
    Rpc {
        /// The JSON-RPC error code.
        code: i64,
        /// The node's message.
        message: String,
        /// The error's `data`, if any.
        data: Option<Value>,
    },
    /// The node's answer is not what the protocol says.
    #[error("unexpected answer from the validator: {0}")]
    BadResponse(String),
    /// A wallet or key file problem, or a bad argument.
    #[error("{0}")]
    Wallet(String),
    /// Sealing a transaction failed.
    #[error("building the transaction: {0}")]
    Tx(#[from] veil_ledger::TxError),
    /// Sealing a query or opening its answer failed.
    #[error("query: {0}")]
    Query(#[from] veil_ledger::QueryError),
    /// A key or cryptographic failure.
    #[error(transparent)]
    Crypto(#[from] veil_crypto::CryptoError),
    /// Waiting for something took longer than allowed.
    #[error("{0}")]
    Timeout(String),
}

impl LedgerClientError {
    /// Whether the node was not reachable at all (worth retrying while it starts).
    pub fn is_unreachable(&self) -> bool {
        matches!(self, Self::Unreachable { .. })
    }

    /// The JSON-RPC error code, if the node answered with one.
    pub fn rpc_code(&self) -> Option<i64> {
        match self {
            Self::Rpc { code, .. } => Some(*code),
            _ => None,
        }
    }
}

/// Result alias of this module.
pub type Result<T, E = LedgerClientError> = std::result::Result<T, E>;

/// `veil_status`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeStatus {
    /// The network's name.
    pub chain_id: String,
    /// The genesis hash (hex): the chain id hash every transaction signs.
    pub genesis_hash: String,
    /// The height this node has executed.
    pub height: u64,
    /// The highest finalized height consensus reported (may run ahead of `height`).
    pub finalized_tip: u64,
    /// The state root after `height` (hex).
    pub state_root: String,
    /// The ledger's key epoch.
    pub epoch: u64,
    /// Envelopes waiting in the mempool.
    pub mempool_size: u64,
    /// Transactions applied since genesis.
    pub applied_txs: u64,
    /// Transactions skipped at execution since genesis.
    pub rejected_txs: u64,
    /// Validators in the set.
    pub validators: u64,
    /// Whether this node runs on the simulated TEE (development only).
    pub simulated_tee: bool,
}

/// One validator, as `veil_networkKeys` lists it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ValidatorInfo {
    /// Its consensus Ed25519 public key (hex).
    pub public_key: String,
    /// Its fee account (`veil1…`).
    pub address: String,
    /// Its p2p address.
    pub p2p: String,
    /// Its JSON-RPC address.
    pub rpc: String,
}

/// The network's attestation policy for validators.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NetworkPolicy {
    /// Whether simulated-TEE evidence is accepted (development networks only).
    pub allow_simulated_tee: bool,
}

/// `veil_networkKeys`: what a wallet needs to seal transactions and queries.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NetworkKeys {
    /// The network's name.
    pub chain_id: String,
    /// The genesis hash (hex).
    pub genesis_hash: String,
    /// The current key epoch.
    pub epoch: u64,
    /// Blocks per epoch.
    pub epoch_length: u64,
    /// The height the node has executed.
    pub height: u64,
    /// The epoch's X25519 transaction key (hex): seal envelopes and queries to it.
    pub tx_public_key: String,
    /// The fee per padded size bucket.
    pub fee_schedule: FeeSchedule,
    /// The validator set.
    pub validators: Vec<ValidatorInfo>,
    /// The attestation policy.
    pub policy: NetworkPolicy,
    /// Whether the answering node runs on the simulated TEE.
    pub simulated_tee: bool,
}

impl NetworkKeys {
    /// The transaction key.
    pub fn tx_public(&self) -> Result<HpkePublicKey> {
        let bytes = hex::decode(&self.tx_public_key)
            .map_err(|_| LedgerClientError::BadResponse("tx_public_key is not hex".into()))?;
        Ok(HpkePublicKey::from_slice(&bytes)?)
    }

    /// The genesis hash.
    pub fn genesis_hash_bytes(&self) -> Result<[u8; 32]> {
        hex32(&self.genesis_hash, "genesis_hash")
    }
}

/// `veil_getBlock`: a block's header and ciphertexts.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BlockInfo {
    /// Its height.
    pub height: u64,
    /// Its digest (hex).
    pub digest: String,
    /// Its parent's digest (hex).
    pub parent: String,
    /// The proposer's clock, milliseconds since the Unix epoch.
    pub timestamp_ms: u64,
    /// The state root after executing it (hex), when the answering node executed it recently.
    pub state_root: Option<String>,
    /// The transaction envelopes (hex), in execution order.
    pub txs: Vec<String>,
}

fn hex32(s: &str, what: &str) -> Result<[u8; 32]> {
    hex::decode(s)
        .ok()
        .and_then(|b| <[u8; 32]>::try_from(b).ok())
        .ok_or_else(|| LedgerClientError::BadResponse(format!("{what} is not 32 bytes of hex")))
}

/// The normalised RPC URL for an address given as `IP:port`, `host:port` or an `http://` URL.
pub fn rpc_url(addr: &str) -> String {
    let addr = addr.trim().trim_end_matches('/');
    if addr.starts_with("http://") || addr.starts_with("https://") {
        format!("{addr}/")
    } else {
        format!("http://{addr}/")
    }
}

/// A JSON-RPC client of one validator.
pub struct LedgerClient {
    http: reqwest::Client,
    url: String,
    next_id: AtomicU64,
}

impl fmt::Debug for LedgerClient {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LedgerClient").field("url", &self.url).finish()
    }
}

#[derive(Deserialize)]
struct RpcResponse {
    #[serde(default)]
    result: Option<Value>,
    #[serde(default)]
    error: Option<RpcErrorObject>,
}

#[derive(Deserialize)]
struct RpcErrorObject {
    code: i64,
    message: String,
    #[serde(default)]
    data: Option<Value>,
}

impl LedgerClient {
    /// A client of the validator at `addr` (`IP:port` or URL), with a 30 s request timeout.
    pub fn new(addr: &str) -> Result<Self> {
        Self::with_timeout(addr, Duration::from_secs(30))
    }

    /// A client with the given per-request timeout.
    pub fn with_timeout(addr: &str, timeout: Duration) -> Result<Self> {
        let http = reqwest::Client::builder()
            .timeout(timeout)
            .connect_timeout(Duration::from_secs(5))
            .build()
            .map_err(|e| LedgerClientError::Wallet(format!("building the HTTP client: {e}")))?;
        Ok(Self {
            http,
            url: rpc_url(addr),
            next_id: AtomicU64::new(1),
        })
    }

    /// The URL requests go to.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// Calls `method` with `params` (a JSON array) and decodes its result.
    pub async fn call<T: DeserializeOwned>(&self, method: &str, params: Value) -> Result<T> {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let request = json!({ "jsonrpc": "2.0", "id": id, "method": method, "params": params });
        let response = self
            .http
            .post(&self.url)
            .json(&request)
            .send()
            .await
            .map_err(|e| LedgerClientError::Unreachable {
                url: self.url.clone(),
                reason: error_chain(&e),
            })?;
        let status = response.status();
        let body = response
            .bytes()
            .await
            .map_err(|e| LedgerClientError::Unreachable {
                url: self.url.clone(),
                reason: error_chain(&e),
            })?;
        let parsed: RpcResponse = match serde_json::from_slice(&body) {
            Ok(r) => r,
            Err(_) if !status.is_success() => {
                return Err(LedgerClientError::Http {
                    url: self.url.clone(),
                    status: status.as_u16(),
                    body: String::from_utf8_lossy(&body[..body.len().min(300)]).into_owned(),
                });
            }
            Err(e) => {
                return Err(LedgerClientError::BadResponse(format!(
                    "{method}: not a JSON-RPC response: {e}"
                )));
            }
        };
        if let Some(err) = parsed.error {
            return Err(LedgerClientError::Rpc {
                code: err.code,
                message: err.message,
                data: err.data,
            });
        }
        let result = parsed.result.unwrap_or(Value::Null);
        serde_json::from_value(result)
            .map_err(|e| LedgerClientError::BadResponse(format!("{method}: unexpected result: {e}")))
    }

    /// `veil_status`.
    pub async fn status(&self) -> Result<NodeStatus> {
        self.call("veil_status", json!([])).await
    }

    /// `veil_networkKeys`.
    pub async fn network_keys(&self) -> Result<NetworkKeys> {
        self.call("veil_networkKeys", json!([])).await
    }

    /// `veil_submit`: the envelope's id once the node's mempool admitted it.
    pub async fn submit(&self, envelope: &[u8]) -> Result<[u8; 32]> {
        #[derive(Deserialize)]
        struct Submitted {
            id: String,
        }
        let s: Submitted = self.call("veil_submit", json!([hex::encode(envelope)])).await?;
        hex32(&s.id, "id")
    }

    /// `veil_getBlock`: `None` when the node has no block at that height (yet).
    pub async fn get_block(&self, height: u64) -> Result<Option<BlockInfo>> {
        self.call("veil_getBlock", json!([height])).await
    }

    /// `veil_query`: the sealed answer to a sealed query.
    pub async fn query(&self, sealed_query: &[u8]) -> Result<Vec<u8>> {
        #[derive(Deserialize)]
        struct Answered {
            answer: String,
        }
        let a: Answered = self
            .call("veil_query", json!([hex::encode(sealed_query)]))
            .await?;
        hex::decode(&a.answer).map_err(|_| LedgerClientError::BadResponse("answer is not hex".into()))
    }

    /// `veil_seedChallenge`: a fresh nonce to bind into seed-request evidence.
    pub async fn seed_challenge(&self) -> Result<Vec<u8>> {
        #[derive(Deserialize)]
        struct Challenge {
            nonce: String,
        }
        let c: Challenge = self.call("veil_seedChallenge", json!([])).await?;
        hex::decode(&c.nonce).map_err(|_| LedgerClientError::BadResponse("nonce is not hex".into()))
    }

    /// `veil_requestSeed`: the network seed sealed to the key the request's evidence binds.
    pub async fn request_seed(&self, request: &impl Serialize) -> Result<Vec<u8>> {
        #[derive(Deserialize)]
        struct Sealed {
            sealed: String,
        }
        let request = serde_json::to_value(request)
            .map_err(|e| LedgerClientError::Wallet(format!("encoding the seed request: {e}")))?;
        let s: Sealed = self.call("veil_requestSeed", json!([request])).await?;
        hex::decode(&s.sealed).map_err(|_| LedgerClientError::BadResponse("sealed is not hex".into()))
    }
}

fn error_chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        out.push_str(": ");
        out.push_str(&s.to_string());
        source = s.source();
    }
    out
}

/// A wallet: one Ed25519 account key. Its file holds the 32-byte seed as hex, mode 0600.
pub struct Wallet {
    key: SigningKey,
}

impl fmt::Debug for Wallet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Wallet({})", self.address())
    }
}

impl Wallet {
    /// A new random key.
    pub fn generate() -> Result<Self> {
        Ok(Self {
            key: SigningKey::generate()?,
        })
    }

    /// A wallet of an existing key.
    pub fn from_key(key: SigningKey) -> Self {
        Self { key }
    }

    /// Parses a key file's contents (64 hex digits).
    pub fn from_hex(text: &str) -> Result<Self> {
        let bytes = Zeroizing::new(hex::decode(text.trim()).map_err(|_| {
            LedgerClientError::Wallet("the wallet file must hold 64 hex digits (an Ed25519 seed)".into())
        })?);
        let seed: Zeroizing<[u8; 32]> = Zeroizing::new(bytes.as_slice().try_into().map_err(|_| {
            LedgerClientError::Wallet(format!(
                "the wallet file holds {} bytes; it must hold 32 (64 hex digits)",
                bytes.len()
            ))
        })?);
        Ok(Self {
            key: SigningKey::from_bytes(&seed),
        })
    }

    /// Reads a wallet file; refuses one others can read.
    pub fn load(path: &Path) -> Result<Self> {
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt as _;
            let meta = std::fs::metadata(path).map_err(|e| {
                LedgerClientError::Wallet(format!(
                    "cannot read the wallet {}: {e} (create one with `veil wallet new`)",
                    path.display()
                ))
            })?;
            let mode = meta.permissions().mode() & 0o777;
            if mode & 0o077 != 0 {
                return Err(LedgerClientError::Wallet(format!(
                    "the wallet {} is readable by others (mode {mode:o}); run `chmod 600 {}`",
                    path.display(),
                    path.display()
                )));
            }
        }
        let text = Zeroizing::new(std::fs::read_to_string(path).map_err(|e| {
            LedgerClientError::Wallet(format!(
                "cannot read the wallet {}: {e} (create one with `veil wallet new`)",
                path.display()
            ))
        })?);
        Self::from_hex(&text)
    }

    /// Writes the key to a new file (mode 0600); never overwrites.
    pub fn save(&self, path: &Path) -> Result<()> {
        use std::io::Write as _;
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir)
                .map_err(|e| LedgerClientError::Wallet(format!("creating {}: {e}", dir.display())))?;
        }
        let mut options = std::fs::OpenOptions::new();
        options.write(true).create_new(true);
        #[cfg(unix)]
        {
            use std::os::unix::fs::OpenOptionsExt as _;
            options.mode(0o600);
        }
        let mut file = options.open(path).map_err(|e| {
            if e.kind() == std::io::ErrorKind::AlreadyExists {
                LedgerClientError::Wallet(format!(
                    "{} already exists; refusing to overwrite a wallet (choose another path with --out)",
                    path.display()
                ))
            } else {
                LedgerClientError::Wallet(format!("creating {}: {e}", path.display()))
            }
        })?;
        let mut text = Zeroizing::new(hex::encode(&self.key.to_bytes()[..]));
        text.push('\n');
        file.write_all(text.as_bytes())
            .and_then(|()| file.sync_all())
            .map_err(|e| LedgerClientError::Wallet(format!("writing {}: {e}", path.display())))
    }

    /// The account address (`veil1…`).
    pub fn address(&self) -> Address {
        self.key.verifying_key().address()
    }

    /// The signing key.
    pub fn key(&self) -> &SigningKey {
        &self.key
    }

    /// Asks the node a signed, sealed question about this account; returns the answer and the
    /// height it was read at.
    pub async fn ask(
        &self,
        client: &LedgerClient,
        keys: &NetworkKeys,
        kind: QueryKind,
    ) -> Result<(Answer, u64)> {
        let reply = HpkeSecretKey::generate()?;
        let sealed = veil_ledger::seal_query(&self.key, &keys.tx_public()?, keys.epoch, kind, &reply)?;
        let answer = client.query(&sealed).await?;
        Ok(veil_ledger::open_answer_for(&reply, &sealed, &answer)?)
    }

    /// The balance and next nonce of this account.
    pub async fn balance(&self, client: &LedgerClient, keys: &NetworkKeys) -> Result<Balance> {
        match self.ask(client, keys, QueryKind::Balance).await? {
            (Answer::Balance { balance, nonce }, height) => Ok(Balance {
                balance,
                nonce,
                height,
            }),
            (other, _) => Err(LedgerClientError::BadResponse(format!(
                "asked for a balance, got {other:?}"
            ))),
        }
    }

    /// The receipt of this account's transaction with `nonce`, if it executed.
    pub async fn receipt(
        &self,
        client: &LedgerClient,
        keys: &NetworkKeys,
        nonce: u64,
    ) -> Result<Option<Receipt>> {
        match self.ask(client, keys, QueryKind::Receipt { nonce }).await? {
            (Answer::Receipt(r), _) => Ok(r),
            (other, _) => Err(LedgerClientError::BadResponse(format!(
                "asked for a receipt, got {other:?}"
            ))),
        }
    }

    /// History entries `from..from + limit` (at most `veil_ledger::MAX_HISTORY_PAGE` per answer).
    pub async fn history(
        &self,
        client: &LedgerClient,
        keys: &NetworkKeys,
        from: u64,
        limit: u32,
    ) -> Result<Vec<HistoryEntry>> {
        match self.ask(client, keys, QueryKind::History { from, limit }).await? {
            (Answer::History(h), _) => Ok(h),
            (other, _) => Err(LedgerClientError::BadResponse(format!(
                "asked for history, got {other:?}"
            ))),
        }
    }

    /// Builds a transfer with `nonce` at the schedule's fee for its size, sealed to the epoch key.
    pub fn seal_transfer(
        &self,
        keys: &NetworkKeys,
        nonce: u64,
        to: Address,
        amount: u64,
    ) -> Result<SealedTransfer> {
        let tx_public = keys.tx_public()?;
        let chain_id_hash = keys.genesis_hash_bytes()?;
        let body = |fee| TxBody {
            chain_id_hash,
            sender: self.key.verifying_key(),
            nonce,
            fee,
            kind: TxKind::Transfer { to, amount },
        };
        // The fee does not change the body's size, so seal once at the smallest bucket's fee and
        // reseal if the envelope landed in another bucket.
        let first_fee = keys
            .fee_schedule
            .fee_for(veil_crypto::pad::MIN_BUCKET)
            .ok_or_else(|| {
                LedgerClientError::BadResponse("the network's fee schedule has no 256-byte bucket".into())
            })?;
        let mut envelope = veil_ledger::seal_transaction(&self.key, &tx_public, keys.epoch, body(first_fee))?;
        let bucket = envelope.padded_len();
        let fee = keys.fee_schedule.fee_for(bucket).ok_or_else(|| {
            LedgerClientError::BadResponse(format!("the network's fee schedule has no {bucket}-byte bucket"))
        })?;
        if fee != first_fee {
            envelope = veil_ledger::seal_transaction(&self.key, &tx_public, keys.epoch, body(fee))?;
        }
        let bytes = envelope.encode();
        Ok(SealedTransfer {
            id: veil_ledger::envelope_id(&bytes),
            envelope: bytes,
            nonce,
            fee,
        })
    }

    /// Polls for the receipt of `nonce` every `interval` until it arrives or `timeout` passes;
    /// `tick` is called before each poll (for a progress line).
    pub async fn wait_receipt(
        &self,
        client: &LedgerClient,
        keys: &NetworkKeys,
        nonce: u64,
        timeout: Duration,
        interval: Duration,
        mut tick: impl FnMut(Duration),
    ) -> Result<Receipt> {
        let started = Instant::now();
        loop {
            tick(started.elapsed());
            if let Some(receipt) = self.receipt(client, keys, nonce).await? {
                return Ok(receipt);
            }
            if started.elapsed() >= timeout {
                return Err(LedgerClientError::Timeout(format!(
                    "no receipt for nonce {nonce} after {} s: the transaction is not executed yet (is the \
                     network finalizing? check `veil_status` on the validators); it may still execute",
                    timeout.as_secs()
                )));
            }
            tokio::time::sleep(interval).await;
        }
    }
}

/// A balance answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Balance {
    /// The balance, in the smallest unit.
    pub balance: u64,
    /// The next nonce the account must use.
    pub nonce: u64,
    /// The height the node read it at.
    pub height: u64,
}

/// A sealed transfer, ready to submit.
#[derive(Clone)]
pub struct SealedTransfer {
    /// The envelope id.
    pub id: [u8; 32],
    /// The envelope bytes.
    pub envelope: Vec<u8>,
    /// The nonce it consumes.
    pub nonce: u64,
    /// The fee it pays.
    pub fee: u64,
}

impl fmt::Debug for SealedTransfer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SealedTransfer(id {}, <confidential>)", hex::encode(self.id))
    }
}

/// Formats an amount with thousands separators (`1,000,000`).
pub use veil_ledger::format_amount;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_and_amounts() {
        assert_eq!(rpc_url("127.0.0.1:27000"), "http://127.0.0.1:27000/");
        assert_eq!(rpc_url("http://h:1/"), "http://h:1/");
        assert_eq!(format_amount(0), "0");
        assert_eq!(format_amount(999), "999");
        assert_eq!(format_amount(1_000), "1,000");
        assert_eq!(format_amount(1_234_567), "1,234,567");
        assert_eq!(format_amount(u64::MAX), "18,446,744,073,709,551,615");
    }

    #[test]
    fn wallet_file_round_trip_and_permissions() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sub/wallet.key");
        let w = Wallet::generate().unwrap();
        w.save(&path).unwrap();
        let back = Wallet::load(&path).unwrap();
        assert_eq!(back.address(), w.address());
        assert!(
            w.save(&path)
                .unwrap_err()
                .to_string()
                .contains("refusing to overwrite")
        );
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt as _;
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
            assert!(Wallet::load(&path).unwrap_err().to_string().contains("chmod 600"));
        }
        assert!(Wallet::from_hex("zz").is_err());
        assert!(
            Wallet::from_hex("00")
                .unwrap_err()
                .to_string()
                .contains("1 bytes")
        );
        assert!(format!("{w:?}").starts_with("Wallet(veil1"));
    }

    #[tokio::test]
    async fn unreachable_is_reported_as_such() {
        // A port that was just free: nothing listens there.
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let c = LedgerClient::new(&format!("127.0.0.1:{port}")).unwrap();
        let e = c.status().await.unwrap_err();
        assert!(e.is_unreachable(), "{e}");
        assert!(e.to_string().contains("cannot reach the validator"));
    }
}
