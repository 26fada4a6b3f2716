//! Owner-only queries: signed by the account's key, sealed to the epoch's transaction key, answered
//! sealed to a reply key the asker chose.
//!
//! ```text
//! query   = version (1) = 1 | epoch (u64 BE) | sealed length (u32 BE) | sealed
//! sealed  = veil_crypto::seal(tx key of epoch, "veil/v1/query", aad = version | epoch, pad(signed))
//! signed  = body length (u32 BE) | body | Ed25519 signature (64) under "veil/v1/query-sig" over body
//! body    = version (1) = 1 | asker public key (32) | reply X25519 key (32) | request id (16)
//!           | kind tag (1) | kind length (u32 BE) | kind
//! kinds   = 1 balance: empty | 2 receipt: nonce (u64) | 3 history: from (u64) | limit (u32)
//! answer  = veil_crypto::seal(reply key, "veil/v1/query-answer", aad = "", pad(version (1) = 1
//!           | query id (32) | height (u64) | answer tag (1) | answer length (u32) | answer))
//! ```
//!
//! A query names no account: it reads the asker's own, and the signature proves the asker holds its
//! key, so nobody can ask about anyone else's account. The query id (`SHA-256("veil/v1/query-id" |
//! query bytes)`) inside the answer lets the asker check that an answer belongs to its query
//! ([`open_answer_for`]), so a node cannot replay an older answer.

use std::fmt;

use veil_crypto::seal::{self, HpkePublicKey, HpkeSecretKey};
use veil_crypto::sign::{Address, Signature, SigningKey, VerifyingKey};

use crate::codec::{Reader, put_lp};
use crate::error::QueryError;
use crate::keys::KeyRing;
use crate::tags;
use crate::tx::FailureReason;

/// Version byte of a query, its body and its answer.
pub const QUERY_VERSION: u8 = 1;
/// The largest sealed query accepted.
pub const MAX_QUERY_BYTES: usize = 4096;
/// The most history entries one answer carries.
pub const MAX_HISTORY_PAGE: u32 = 64;
/// The largest answer plaintext (before padding) [`open_answer`] accepts.
const MAX_ANSWER_BYTES: usize = 8192;

/// What a receipt says happened to a transaction.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReceiptStatus {
    /// Executed.
    Applied,
    /// Executed and failed: the fee was charged and the nonce consumed, nothing else changed.
    Failed(FailureReason),
}

/// The receipt of an executed transaction, stored (encrypted) under the sender's address and nonce.
#[derive(Clone, PartialEq, Eq)]
pub struct Receipt {
    /// The envelope id.
    pub tx_id: [u8; 32],
    /// The sender's nonce it consumed.
    pub nonce: u64,
    /// The block height it executed at.
    pub height: u64,
    /// The fee charged.
    pub fee: u64,
    /// Applied or failed, and why.
    pub status: ReceiptStatus,
}

impl fmt::Debug for Receipt {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Receipt({:?}, <confidential>)", self.status)
    }
}

/// Which way an amount moved.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    /// Sent by this account.
    Sent,
    /// Received by this account.
    Received,
}

/// One entry of an account's history (successful transfers only; failures are in receipts).
#[derive(Clone, PartialEq, Eq)]
pub struct HistoryEntry {
    /// The block height.
    pub height: u64,
    /// Sent or received.
    pub direction: Direction,
    /// The other account.
    pub counterparty: Address,
    /// The amount moved.
    pub amount: u64,
    /// The fee the sender paid (0 for received entries).
    pub fee: u64,
    /// The sender's nonce of the transaction.
    pub nonce: u64,
}

impl fmt::Debug for HistoryEntry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "HistoryEntry({:?}, <confidential>)", self.direction)
    }
}

/// What a query asks about the asker's own account.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum QueryKind {
    /// Balance and next nonce.
    Balance,
    /// The receipt of the asker's transaction with this nonce.
    Receipt {
        /// The nonce.
        nonce: u64,
    },
    /// History entries `from..from + limit` (at most [`MAX_HISTORY_PAGE`]).
    History {
        /// The first index.
        from: u64,
        /// How many.
        limit: u32,
    },
}

/// An opened, verified query.
#[derive(Clone, PartialEq, Eq)]
pub struct Query {
    /// The account owner asking (its address is the account read).
    pub asker: VerifyingKey,
    /// Where the answer is sealed to.
    pub reply_key: HpkePublicKey,
    /// Random, so two identical questions are two different queries.
    pub request_id: [u8; 16],
    /// The question.
    pub kind: QueryKind,
    /// The asker's signature over the body.
    pub signature: Signature,
}

impl fmt::Debug for Query {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Query({:?}, <confidential>)", self.kind)
    }
}

/// The answer to a query.
#[derive(Clone, PartialEq, Eq)]
pub enum Answer {
    /// The balance and the next nonce to use.
    Balance {
        /// The balance.
        balance: u64,
        /// The account's next nonce.
        nonce: u64,
    },
    /// The receipt, if a transaction with that nonce executed.
    Receipt(Option<Receipt>),
    /// The history entries asked for (fewer at the end of the history).
    History(Vec<HistoryEntry>),
}

impl fmt::Debug for Answer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Balance { .. } => f.write_str("Answer::Balance(<confidential>)"),
            Self::Receipt(r) => write!(f, "Answer::Receipt({r:?})"),
            Self::History(h) => write!(f, "Answer::History({} entries)", h.len()),
        }
    }
}

fn aad(epoch: u64) -> [u8; 9] {
    let mut a = [0u8; 9];
    a[0] = QUERY_VERSION;
    a[1..].copy_from_slice(&epoch.to_be_bytes());
    a
}

fn body_bytes(
    asker: &VerifyingKey,
    reply: &HpkePublicKey,
    request_id: &[u8; 16],
    kind: &QueryKind,
) -> Vec<u8> {
    let mut out = Vec::with_capacity(100);
    out.push(QUERY_VERSION);
    out.extend_from_slice(&asker.to_bytes());
    out.extend_from_slice(&reply.to_bytes());
    out.extend_from_slice(request_id);
    let mut payload = Vec::new();
    let tag = match kind {
        QueryKind::Balance => 1,
        QueryKind::Receipt { nonce } => {
            payload.extend_from_slice(&nonce.to_be_bytes());
            2
        }
        QueryKind::History { from, limit } => {
            payload.extend_from_slice(&from.to_be_bytes());
            payload.extend_from_slice(&limit.to_be_bytes());
            3
        }
    };
    out.push(tag);
    put_lp(&mut out, &payload);
    out
}

/// The id of a sealed query: `SHA-256("veil/v1/query-id" | query bytes)`.
pub fn query_id(sealed_query: &[u8]) -> [u8; 32] {
    veil_crypto::hash::sha256_tagged(tags::QUERY_ID, &[sealed_query])
}

/// Signs a query about the signer's own account and seals it to the epoch's transaction key (wallet
/// side; uses the OS random generator for the request id and HPKE). The answer will be sealed to
/// `reply_secret`'s public key.
pub fn seal_query(
    signer: &SigningKey,
    tx_public: &HpkePublicKey,
    epoch: u64,
    kind: QueryKind,
    reply_secret: &HpkeSecretKey,
) -> Result<Vec<u8>, QueryError> {
    let request_id = veil_crypto::rand::array::<16>().map_err(|e| QueryError::Seal(e.to_string()))?;
    let body = body_bytes(
        &signer.verifying_key(),
        &reply_secret.public_key(),
        &request_id,
        &kind,
    );
    let sig = signer.sign(tags::QUERY_SIGNATURE, &body);
    let mut signed = Vec::with_capacity(body.len() + 68);
    put_lp(&mut signed, &body);
    signed.extend_from_slice(&sig.to_bytes());
    let padded = veil_crypto::pad::pad(&signed).map_err(|e| QueryError::Seal(e.to_string()))?;
    let sealed = seal::seal(tx_public, tags::QUERY, &aad(epoch), &padded)
        .map_err(|e| QueryError::Seal(e.to_string()))?;
    let mut out = Vec::with_capacity(13 + sealed.len());
    out.push(QUERY_VERSION);
    out.extend_from_slice(&epoch.to_be_bytes());
    put_lp(&mut out, &sealed);
    Ok(out)
}

/// Opens and verifies a sealed query (node side).
pub(crate) fn open_query(keys: &KeyRing, bytes: &[u8]) -> Result<Query, QueryError> {
    if bytes.len() > MAX_QUERY_BYTES {
        return Err(QueryError::Oversize {
            len: bytes.len(),
            max: MAX_QUERY_BYTES,
        });
    }
    let m = QueryError::Malformed;
    let mut r = Reader::new(bytes);
    let version = r.u8("query version").map_err(m)?;
    if version != QUERY_VERSION {
        return Err(QueryError::UnsupportedVersion {
            what: "query",
            found: version,
            supported: QUERY_VERSION,
        });
    }
    let epoch = r.u64("query epoch").map_err(m)?;
    let sealed = r.lp(MAX_QUERY_BYTES, "sealed query").map_err(m)?;
    r.finish("query").map_err(m)?;
    let Some(epoch_keys) = keys.get(epoch) else {
        return Err(QueryError::WrongEpoch {
            got: epoch,
            current: keys.epoch(),
        });
    };
    let padded = seal::open(epoch_keys.tx_secret(), tags::QUERY, &aad(epoch), sealed)
        .map_err(|_| QueryError::Undecryptable { epoch })?;
    let signed = veil_crypto::pad::unpad(&padded).map_err(|e| m(format!("query padding: {e}")))?;
    let mut r = Reader::new(signed);
    let body = r.lp(MAX_QUERY_BYTES, "query body").map_err(m)?;
    let sig = Signature::from_bytes(&r.array("query signature").map_err(m)?);
    r.finish("signed query").map_err(m)?;

    let mut b = Reader::new(body);
    let v = b.u8("query body version").map_err(m)?;
    if v != QUERY_VERSION {
        return Err(QueryError::UnsupportedVersion {
            what: "query body",
            found: v,
            supported: QUERY_VERSION,
        });
    }
    let asker = VerifyingKey::from_bytes(&b.array("asker key").map_err(m)?)
        .map_err(|e| m(format!("asker key: {e}")))?;
    let reply_key = HpkePublicKey::from_bytes(b.array("reply key").map_err(m)?);
    let request_id = b.array("request id").map_err(m)?;
    let tag = b.u8("query kind").map_err(m)?;
    let payload = b.lp(64, "query kind").map_err(m)?;
    b.finish("query body").map_err(m)?;
    let mut p = Reader::new(payload);
    let kind = match tag {
        1 => QueryKind::Balance,
        2 => QueryKind::Receipt {
            nonce: p.u64("nonce").map_err(m)?,
        },
        3 => QueryKind::History {
            from: p.u64("from").map_err(m)?,
            limit: p.u32("limit").map_err(m)?,
        },
        t => {
            return Err(m(format!(
                "unknown query kind {t} (known: 1 balance, 2 receipt, 3 history)"
            )));
        }
    };
    p.finish("query kind").map_err(m)?;
    asker
        .verify(tags::QUERY_SIGNATURE, body, &sig)
        .map_err(|_| QueryError::BadSignature)?;
    Ok(Query {
        asker,
        reply_key,
        request_id,
        kind,
        signature: sig,
    })
}

fn put_receipt(out: &mut Vec<u8>, r: &Receipt) {
    out.extend_from_slice(&r.tx_id);
    out.extend_from_slice(&r.nonce.to_be_bytes());
    out.extend_from_slice(&r.height.to_be_bytes());
    out.extend_from_slice(&r.fee.to_be_bytes());
    match r.status {
        ReceiptStatus::Applied => out.extend_from_slice(&[0, 0]),
        ReceiptStatus::Failed(f) => out.extend_from_slice(&[1, f.code()]),
    }
}

fn read_receipt(r: &mut Reader<'_>) -> Result<Receipt, String> {
    let tx_id = r.array("tx id")?;
    let nonce = r.u64("nonce")?;
    let height = r.u64("height")?;
    let fee = r.u64("fee")?;
    let status = match (r.u8("status")?, r.u8("reason")?) {
        (0, 0) => ReceiptStatus::Applied,
        (1, c) => ReceiptStatus::Failed(
            FailureReason::from_code(c).ok_or_else(|| format!("unknown failure reason {c}"))?,
        ),
        (s, c) => return Err(format!("unknown receipt status {s}/{c}")),
    };
    Ok(Receipt {
        tx_id,
        nonce,
        height,
        fee,
        status,
    })
}

/// Seals an answer to the query's reply key (node side; HPKE uses the OS random generator).
pub(crate) fn seal_answer(
    reply_key: &HpkePublicKey,
    query_id: &[u8; 32],
    height: u64,
    answer: &Answer,
) -> Result<Vec<u8>, QueryError> {
    let mut payload = Vec::new();
    let tag = match answer {
        Answer::Balance { balance, nonce } => {
            payload.extend_from_slice(&balance.to_be_bytes());
            payload.extend_from_slice(&nonce.to_be_bytes());
            1
        }
        Answer::Receipt(r) => {
            match r {
                None => payload.push(0),
                Some(r) => {
                    payload.push(1);
                    put_receipt(&mut payload, r);
                }
            }
            2
        }
        Answer::History(entries) => {
            payload.extend_from_slice(&(entries.len() as u32).to_be_bytes());
            for h in entries {
                payload.extend_from_slice(&h.height.to_be_bytes());
                payload.push(match h.direction {
                    Direction::Sent => 0,
                    Direction::Received => 1,
                });
                payload.extend_from_slice(&h.counterparty.0);
                payload.extend_from_slice(&h.amount.to_be_bytes());
                payload.extend_from_slice(&h.fee.to_be_bytes());
                payload.extend_from_slice(&h.nonce.to_be_bytes());
            }
            3
        }
    };
    let mut pt = Vec::with_capacity(46 + payload.len());
    pt.push(QUERY_VERSION);
    pt.extend_from_slice(query_id);
    pt.extend_from_slice(&height.to_be_bytes());
    pt.push(tag);
    put_lp(&mut pt, &payload);
    let padded = veil_crypto::pad::pad(&pt).map_err(|e| QueryError::Seal(e.to_string()))?;
    seal::seal(reply_key, tags::QUERY_ANSWER, b"", &padded).map_err(|e| QueryError::Seal(e.to_string()))
}

/// Opens an answer: returns it with the query id it answers and the height it was read at.
fn open_answer_full(
    reply_secret: &HpkeSecretKey,
    sealed_answer: &[u8],
) -> Result<(Answer, [u8; 32], u64), QueryError> {
    let bad = QueryError::BadAnswer;
    let padded =
        seal::open(reply_secret, tags::QUERY_ANSWER, b"", sealed_answer).map_err(|e| bad(format!("{e}")))?;
    let pt = veil_crypto::pad::unpad(&padded).map_err(|e| bad(e.to_string()))?;
    let mut r = Reader::new(pt);
    let v = r.u8("answer version").map_err(bad)?;
    if v != QUERY_VERSION {
        return Err(QueryError::UnsupportedVersion {
            what: "answer",
            found: v,
            supported: QUERY_VERSION,
        });
    }
    let id = r.array("query id").map_err(bad)?;
    let height = r.u64("height").map_err(bad)?;
    let tag = r.u8("answer kind").map_err(bad)?;
    let payload = r.lp(MAX_ANSWER_BYTES, "answer").map_err(bad)?;
    r.finish("answer").map_err(bad)?;
    let mut p = Reader::new(payload);
    let answer = match tag {
        1 => Answer::Balance {
            balance: p.u64("balance").map_err(bad)?,
            nonce: p.u64("nonce").map_err(bad)?,
        },
        2 => match p.u8("receipt present").map_err(bad)? {
            0 => Answer::Receipt(None),
            1 => Answer::Receipt(Some(read_receipt(&mut p).map_err(bad)?)),
            x => return Err(bad(format!("receipt presence byte {x}"))),
        },
        3 => {
            let n = p.u32("history length").map_err(bad)?;
            if n > MAX_HISTORY_PAGE {
                return Err(bad(format!(
                    "{n} history entries exceed the page size {MAX_HISTORY_PAGE}"
                )));
            }
            let mut entries = Vec::with_capacity(n as usize);
            for _ in 0..n {
                let height = p.u64("height").map_err(bad)?;
                let direction = match p.u8("direction").map_err(bad)? {
                    0 => Direction::Sent,
                    1 => Direction::Received,
                    d => return Err(bad(format!("direction {d}"))),
                };
                entries.push(HistoryEntry {
                    height,
                    direction,
                    counterparty: Address(p.array("counterparty").map_err(bad)?),
                    amount: p.u64("amount").map_err(bad)?,
                    fee: p.u64("fee").map_err(bad)?,
                    nonce: p.u64("nonce").map_err(bad)?,
                });
            }
            Answer::History(entries)
        }
        t => return Err(bad(format!("unknown answer kind {t}"))),
    };
    p.finish("answer").map_err(bad)?;
    Ok((answer, id, height))
}

/// Opens an answer sealed to `reply_secret` (without checking which query it answers; prefer
/// [`open_answer_for`]).
pub fn open_answer(reply_secret: &HpkeSecretKey, sealed_answer: &[u8]) -> Result<Answer, QueryError> {
    open_answer_full(reply_secret, sealed_answer).map(|(a, _, _)| a)
}

/// Opens an answer and checks it answers `sealed_query` (the bytes sent); returns the answer and the
/// block height the node read it at.
pub fn open_answer_for(
    reply_secret: &HpkeSecretKey,
    sealed_query: &[u8],
    sealed_answer: &[u8],
) -> Result<(Answer, u64), QueryError> {
    let (answer, id, height) = open_answer_full(reply_secret, sealed_answer)?;
    if id != query_id(sealed_query) {
        return Err(QueryError::BadAnswer(
            "the answer is for another query (a replayed or misrouted answer); ask again".into(),
        ));
    }
    Ok((answer, height))
}

#[cfg(test)]
mod tests {
    use super::*;
    use veil_crypto::kdf::Seed;

    #[test]
    fn query_round_trip_and_answer_binding() {
        let ring = KeyRing::new(Seed::from_bytes([5; 32]), 0);
        let sk = SigningKey::from_bytes(&[6; 32]);
        let reply = HpkeSecretKey::derive(b"reply");
        let q = seal_query(
            &sk,
            &ring.current().tx_public(),
            0,
            QueryKind::History { from: 3, limit: 9 },
            &reply,
        )
        .unwrap();
        let opened = open_query(&ring, &q).unwrap();
        assert_eq!(opened.asker, sk.verifying_key());
        assert_eq!(opened.kind, QueryKind::History { from: 3, limit: 9 });
        assert_eq!(opened.reply_key, reply.public_key());
        let answer = Answer::History(vec![HistoryEntry {
            height: 1,
            direction: Direction::Sent,
            counterparty: Address([1; 20]),
            amount: 5,
            fee: 10,
            nonce: 0,
        }]);
        let sealed = seal_answer(&opened.reply_key, &query_id(&q), 7, &answer).unwrap();
        assert_eq!(open_answer_for(&reply, &q, &sealed).unwrap(), (answer.clone(), 7));
        assert_eq!(open_answer(&reply, &sealed).unwrap(), answer);
        let q2 = seal_query(&sk, &ring.current().tx_public(), 0, QueryKind::Balance, &reply).unwrap();
        assert!(open_answer_for(&reply, &q2, &sealed).is_err());
        assert!(open_answer(&HpkeSecretKey::derive(b"other"), &sealed).is_err());
        for r in [
            None,
            Some(Receipt {
                tx_id: [2; 32],
                nonce: 1,
                height: 2,
                fee: 3,
                status: ReceiptStatus::Failed(FailureReason::InsufficientBalance),
            }),
        ] {
            let a = Answer::Receipt(r);
            let s = seal_answer(&reply.public_key(), &[0; 32], 1, &a).unwrap();
            assert_eq!(open_answer(&reply, &s).unwrap(), a);
        }
    }

    #[test]
    fn every_flipped_byte_is_refused() {
        let ring = KeyRing::new(Seed::from_bytes([5; 32]), 0);
        let sk = SigningKey::from_bytes(&[6; 32]);
        let reply = HpkeSecretKey::derive(b"reply");
        let q = seal_query(&sk, &ring.current().tx_public(), 0, QueryKind::Balance, &reply).unwrap();
        for i in 0..q.len() {
            let mut t = q.clone();
            t[i] ^= 0x01;
            assert!(open_query(&ring, &t).is_err(), "flip at {i} accepted");
        }
        for n in 0..q.len() {
            assert!(open_query(&ring, &q[..n]).is_err());
        }
    }
}
