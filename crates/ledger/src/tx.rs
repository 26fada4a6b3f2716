//! Transactions: the public [`Envelope`] and the sealed, signed [`TxBody`] inside it.
//!
//! ```text
//! envelope  = version (1) = 1 | epoch (u64 BE) | sealed length (u32 BE) | sealed
//! sealed    = veil_crypto::seal(tx key of epoch, "veil/v1/tx-envelope",
//!                               aad = version | epoch (u64 BE), pad(signed))
//! signed    = body length (u32 BE) | body | Ed25519 signature (64) under "veil/v1/tx" over body
//! body      = version (1) = 1 | chain id hash (32) | sender public key (32) | nonce (u64 BE)
//!             | max fee (u64 BE) | kind tag (1) | kind length (u32 BE) | kind
//! transfer  = kind tag 1: recipient address (20) | amount (u64 BE)
//! ```
//!
//! Padding to `veil_crypto::pad` buckets happens before sealing, so the envelope's length reveals only
//! the bucket (every transfer is in the 256-byte bucket).

use std::fmt;

use veil_crypto::seal::{self, HpkePublicKey};
use veil_crypto::sign::{Address, Signature, SigningKey, VerifyingKey};

use crate::codec::{Reader, put_lp};
use crate::error::TxError;
use crate::keys::KeyRing;
use crate::tags;

/// The version byte of an envelope.
pub const ENVELOPE_VERSION: u8 = 1;
/// The version byte of a transaction body.
pub const TX_VERSION: u8 = 1;
/// The largest envelope accepted (4 KiB).
pub const MAX_ENVELOPE_BYTES: usize = 4096;
/// Bytes of an envelope before its sealed part.
pub const ENVELOPE_HEADER_LEN: usize = 1 + 8 + 4;
/// What HPKE sealing adds to the padded body: header with the purpose, encapsulated key, tag.
pub const SEAL_OVERHEAD: usize = 9 + tags::TX_ENVELOPE.len() + 32 + 16;
/// The largest padded body that fits in [`MAX_ENVELOPE_BYTES`].
pub const MAX_PADDED_BODY: usize = 2048;
// The largest padded body fits an envelope, and the next bucket does not.
const _: () = assert!(ENVELOPE_HEADER_LEN + SEAL_OVERHEAD + MAX_PADDED_BODY <= MAX_ENVELOPE_BYTES);
const _: () = assert!(ENVELOPE_HEADER_LEN + SEAL_OVERHEAD + 2 * MAX_PADDED_BODY > MAX_ENVELOPE_BYTES);

/// Kind tag of [`TxKind::Transfer`].
pub const KIND_TRANSFER: u8 = 1;
/// The longest kind payload accepted.
const MAX_KIND_LEN: usize = MAX_PADDED_BODY;

/// The public part of a transaction: its epoch and the sealed, padded, signed body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Envelope {
    /// The epoch whose transaction key the body is sealed to.
    pub epoch: u64,
    /// The HPKE-sealed padded signed body.
    pub sealed: Vec<u8>,
}

impl Envelope {
    /// The wire bytes.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(ENVELOPE_HEADER_LEN + self.sealed.len());
        out.push(ENVELOPE_VERSION);
        out.extend_from_slice(&self.epoch.to_be_bytes());
        put_lp(&mut out, &self.sealed);
        out
    }

    /// Parses wire bytes; refuses oversized input, unknown versions, truncation and trailing bytes.
    pub fn decode(bytes: &[u8]) -> Result<Self, TxError> {
        if bytes.len() > MAX_ENVELOPE_BYTES {
            return Err(TxError::Oversize {
                len: bytes.len(),
                max: MAX_ENVELOPE_BYTES,
            });
        }
        let mut r = Reader::new(bytes);
        let version = r.u8("envelope version").map_err(TxError::Malformed)?;
        if version != ENVELOPE_VERSION {
            return Err(TxError::UnsupportedVersion {
                what: "envelope",
                found: version,
                supported: ENVELOPE_VERSION,
            });
        }
        let epoch = r.u64("envelope epoch").map_err(TxError::Malformed)?;
        let sealed = r
            .lp(MAX_ENVELOPE_BYTES, "sealed transaction")
            .map_err(TxError::Malformed)?
            .to_vec();
        r.finish("envelope").map_err(TxError::Malformed)?;
        Ok(Self { epoch, sealed })
    }

    /// The envelope's id: `SHA-256("veil/v1/envelope-id" | encoding)` (see [`envelope_id`]).
    pub fn id(&self) -> [u8; 32] {
        envelope_id(&self.encode())
    }

    /// The padded body size this envelope carries (its size bucket), from its length alone.
    pub fn padded_len(&self) -> usize {
        self.sealed.len().saturating_sub(SEAL_OVERHEAD)
    }
}

/// The id of an envelope from its wire bytes (equal to [`Envelope::id`]: decoding is canonical).
pub fn envelope_id(bytes: &[u8]) -> [u8; 32] {
    veil_crypto::hash::sha256_tagged(tags::ENVELOPE_ID, &[bytes])
}

fn envelope_aad(epoch: u64) -> [u8; 9] {
    let mut aad = [0u8; 9];
    aad[0] = ENVELOPE_VERSION;
    aad[1..].copy_from_slice(&epoch.to_be_bytes());
    aad
}

/// What a transaction does. Each kind has a tag byte; kinds to come: `PublishModel`,
/// `RegisterWorker`, `OpenChannel`, `Settle`.
#[derive(Clone, PartialEq, Eq)]
pub enum TxKind {
    /// Moves `amount` from the sender to `to`.
    Transfer {
        /// The recipient.
        to: Address,
        /// The amount, in the token's smallest unit.
        amount: u64,
    },
}

impl fmt::Debug for TxKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Transfer { .. } => f.write_str("Transfer(<confidential>)"),
        }
    }
}

impl TxKind {
    /// What the sender spends besides the fee.
    pub fn amount(&self) -> u64 {
        match self {
            Self::Transfer { amount, .. } => *amount,
        }
    }

    fn tag(&self) -> u8 {
        match self {
            Self::Transfer { .. } => KIND_TRANSFER,
        }
    }

    fn encode_payload(&self, out: &mut Vec<u8>) {
        match self {
            Self::Transfer { to, amount } => {
                out.extend_from_slice(&to.0);
                out.extend_from_slice(&amount.to_be_bytes());
            }
        }
    }

    fn decode(tag: u8, payload: &[u8]) -> Result<Self, String> {
        let mut r = Reader::new(payload);
        let kind = match tag {
            KIND_TRANSFER => Self::Transfer {
                to: Address(r.array("recipient address")?),
                amount: r.u64("amount")?,
            },
            other => {
                return Err(format!(
                    "unknown transaction kind {other} (this node understands: {KIND_TRANSFER} transfer)"
                ));
            }
        };
        r.finish("transfer")?;
        Ok(kind)
    }
}

/// The signed content of a transaction.
#[derive(Clone, PartialEq, Eq)]
pub struct TxBody {
    /// The genesis hash of the network ([`crate::Genesis::hash`]): stops cross-chain replay.
    pub chain_id_hash: [u8; 32],
    /// The sender's key; its address is the account debited.
    pub sender: VerifyingKey,
    /// The sender's account nonce this transaction consumes (0, 1, 2, …).
    pub nonce: u64,
    /// The most fee the sender authorises; must be at least the schedule's fee for the envelope's
    /// size bucket, and exactly the schedule's fee is charged.
    pub fee: u64,
    /// What it does.
    pub kind: TxKind,
}

impl fmt::Debug for TxBody {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("TxBody(<confidential>)")
    }
}

impl TxBody {
    /// The canonical bytes (what the signature covers).
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(128);
        out.push(TX_VERSION);
        out.extend_from_slice(&self.chain_id_hash);
        out.extend_from_slice(&self.sender.to_bytes());
        out.extend_from_slice(&self.nonce.to_be_bytes());
        out.extend_from_slice(&self.fee.to_be_bytes());
        out.push(self.kind.tag());
        let mut payload = Vec::with_capacity(28);
        self.kind.encode_payload(&mut payload);
        put_lp(&mut out, &payload);
        out
    }

    /// Parses a body; strict (a decoded body re-encodes to the same bytes).
    pub fn decode(bytes: &[u8]) -> Result<Self, TxError> {
        let mut r = Reader::new(bytes);
        let m = TxError::Malformed;
        let version = r.u8("body version").map_err(m)?;
        if version != TX_VERSION {
            return Err(TxError::UnsupportedVersion {
                what: "transaction body",
                found: version,
                supported: TX_VERSION,
            });
        }
        let chain_id_hash = r.array("chain id hash").map_err(m)?;
        let sender_bytes: [u8; 32] = r.array("sender key").map_err(m)?;
        let sender = VerifyingKey::from_bytes(&sender_bytes)
            .map_err(|e| TxError::Malformed(format!("sender key: {e}")))?;
        let nonce = r.u64("nonce").map_err(m)?;
        let fee = r.u64("fee").map_err(m)?;
        let tag = r.u8("kind tag").map_err(m)?;
        let payload = r.lp(MAX_KIND_LEN, "kind").map_err(m)?;
        let kind = TxKind::decode(tag, payload).map_err(m)?;
        r.finish("transaction body").map_err(m)?;
        Ok(Self {
            chain_id_hash,
            sender,
            nonce,
            fee,
            kind,
        })
    }

    /// The sender's account address.
    pub fn sender_address(&self) -> Address {
        self.sender.address()
    }
}

/// A body with the sender's signature.
#[derive(Clone, PartialEq, Eq)]
pub struct SignedTx {
    /// The body.
    pub body: TxBody,
    /// Ed25519 over the body's encoding under `"veil/v1/tx"`.
    pub signature: Signature,
}

impl fmt::Debug for SignedTx {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SignedTx(<confidential>)")
    }
}

impl SignedTx {
    /// Signs `body` (whose sender should be `signer`'s key).
    pub fn sign(signer: &SigningKey, body: TxBody) -> Self {
        let signature = signer.sign(tags::TX_SIGNATURE, &body.encode());
        Self { body, signature }
    }

    /// Checks the signature against the body's sender key.
    pub fn verify(&self) -> Result<(), TxError> {
        self.body
            .sender
            .verify(tags::TX_SIGNATURE, &self.body.encode(), &self.signature)
            .map_err(|_| TxError::BadSignature)
    }

    /// `body length (u32 BE) | body | signature (64)`.
    pub fn encode(&self) -> Vec<u8> {
        let body = self.body.encode();
        let mut out = Vec::with_capacity(4 + body.len() + 64);
        put_lp(&mut out, &body);
        out.extend_from_slice(&self.signature.to_bytes());
        out
    }

    /// Parses a signed transaction (does not verify the signature).
    pub fn decode(bytes: &[u8]) -> Result<Self, TxError> {
        let mut r = Reader::new(bytes);
        let body = r
            .lp(MAX_PADDED_BODY, "transaction body")
            .map_err(TxError::Malformed)?;
        let body = TxBody::decode(body)?;
        let sig: [u8; 64] = r.array("signature").map_err(TxError::Malformed)?;
        r.finish("signed transaction").map_err(TxError::Malformed)?;
        Ok(Self {
            body,
            signature: Signature::from_bytes(&sig),
        })
    }
}

/// Signs, pads and seals a transaction to the epoch's transaction key (wallet side). Uses the OS
/// random generator for HPKE's ephemeral key.
pub fn seal_transaction(
    signer: &SigningKey,
    tx_public: &HpkePublicKey,
    epoch: u64,
    body: TxBody,
) -> Result<Envelope, TxError> {
    if body.sender != signer.verifying_key() {
        return Err(TxError::Malformed(
            "the body's sender is not the signing key; set sender to the signer's public key".into(),
        ));
    }
    seal_signed(&SignedTx::sign(signer, body), tx_public, epoch)
}

/// Pads and seals an already signed transaction to the epoch's transaction key (for wallets that sign
/// elsewhere, and for load generators that pre-sign).
pub fn seal_signed(signed: &SignedTx, tx_public: &HpkePublicKey, epoch: u64) -> Result<Envelope, TxError> {
    let signed = signed.encode();
    let padded = veil_crypto::pad::pad(&signed).map_err(|e| TxError::Malformed(e.to_string()))?;
    if padded.len() > MAX_PADDED_BODY {
        return Err(TxError::Oversize {
            len: ENVELOPE_HEADER_LEN + SEAL_OVERHEAD + padded.len(),
            max: MAX_ENVELOPE_BYTES,
        });
    }
    let sealed = seal::seal(tx_public, tags::TX_ENVELOPE, &envelope_aad(epoch), &padded)
        .map_err(|e| TxError::Malformed(format!("sealing failed: {e}")))?;
    Ok(Envelope { epoch, sealed })
}

/// Opens an envelope with the ring's key for its epoch: decrypt, unpad, decode, verify the signature.
/// Returns the transaction and its padded size (its fee bucket).
pub(crate) fn open_sized(keys: &KeyRing, env: &Envelope) -> Result<(SignedTx, usize), TxError> {
    let Some(epoch_keys) = keys.get(env.epoch) else {
        return Err(TxError::WrongEpoch {
            got: env.epoch,
            current: keys.epoch(),
        });
    };
    let padded = seal::open(
        epoch_keys.tx_secret(),
        tags::TX_ENVELOPE,
        &envelope_aad(env.epoch),
        &env.sealed,
    )
    .map_err(|_| TxError::Undecryptable { epoch: env.epoch })?;
    let signed = veil_crypto::pad::unpad(&padded)
        .map_err(|e| TxError::Malformed(format!("transaction padding: {e}")))?;
    let tx = SignedTx::decode(signed)?;
    tx.verify()?;
    Ok((tx, padded.len()))
}

/// Opens an envelope (node side): the epoch must be the ring's current or previous one, else
/// [`TxError::WrongEpoch`]; then decrypt, unpad, decode and verify the signature.
pub fn open_envelope(keys: &KeyRing, env: &Envelope) -> Result<SignedTx, TxError> {
    open_sized(keys, env).map(|(tx, _)| tx)
}

/// Why an executed transaction failed (its fee was charged and its nonce consumed).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum FailureReason {
    /// The balance covered the fee but not the amount.
    InsufficientBalance,
    /// The recipient's balance would overflow (impossible with a valid genesis).
    Overflow,
}

impl FailureReason {
    pub(crate) fn code(self) -> u8 {
        match self {
            Self::InsufficientBalance => 1,
            Self::Overflow => 2,
        }
    }

    pub(crate) fn from_code(code: u8) -> Option<Self> {
        match code {
            1 => Some(Self::InsufficientBalance),
            2 => Some(Self::Overflow),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use veil_crypto::kdf::Seed;

    pub(crate) fn body(signer: &SigningKey, nonce: u64) -> TxBody {
        TxBody {
            chain_id_hash: [0xCC; 32],
            sender: signer.verifying_key(),
            nonce,
            fee: 10,
            kind: TxKind::Transfer {
                to: Address([0xDD; 20]),
                amount: 0x0102_0304_0506_0708,
            },
        }
    }

    #[test]
    fn sizes_fit() {
        assert_eq!(SEAL_OVERHEAD, 9 + 19 + 48);
    }

    #[test]
    fn seal_open_round_trip() {
        let ring = KeyRing::new(Seed::from_bytes([1; 32]), 0);
        let sk = SigningKey::from_bytes(&[2; 32]);
        let env = seal_transaction(&sk, &ring.current().tx_public(), 0, body(&sk, 3)).unwrap();
        assert_eq!(env.padded_len(), 256);
        assert_eq!(env.encode().len(), ENVELOPE_HEADER_LEN + SEAL_OVERHEAD + 256);
        let back = Envelope::decode(&env.encode()).unwrap();
        assert_eq!(back, env);
        assert_eq!(back.id(), envelope_id(&env.encode()));
        let tx = open_envelope(&ring, &back).unwrap();
        assert_eq!(tx.body, body(&sk, 3));
        // Sender must be the signer.
        let other = SigningKey::from_bytes(&[3; 32]);
        assert!(seal_transaction(&other, &ring.current().tx_public(), 0, body(&sk, 3)).is_err());
    }

    #[test]
    fn debug_hides_contents() {
        let sk = SigningKey::from_bytes(&[2; 32]);
        let tx = SignedTx::sign(&sk, body(&sk, 3));
        let shown = format!("{tx:?} {:?} {:?}", tx.body, tx.body.kind);
        assert!(!shown.contains("dd") && !shown.contains("578437695752307201"));
    }
}
