//! The block the validators agree on: a parent link, a height, the proposer's clock and an ordered
//! list of transaction envelopes (ciphertext only; see `veil-ledger`).
//!
//! Wire format (version 1, every integer big-endian, fixed width, so the encoding is canonical):
//!
//! ```text
//! parent (32) | height (8) | timestamp_ms (8) | tx_count (4) | { len (4) | envelope (len) } * tx_count
//! ```
//!
//! The digest consensus orders is `SHA-256("veil/v1/block" | encoding)`.

use bytes::BufMut;
use commonware_codec::{Buf, EncodeSize, Error as CodecError, Read, Write};
use commonware_consensus::{Heightable, types::Height};
use commonware_cryptography::{Digestible, Hasher, Sha256, sha256};

/// The digest type consensus orders.
pub type Digest = sha256::Digest;

/// Most envelopes one block carries.
pub const MAX_BLOCK_TXS: usize = 8_192;
/// Most envelope bytes one block carries (the sum of their lengths).
pub const MAX_BLOCK_TX_BYTES: usize = 4 * 1024 * 1024;
/// Largest single envelope a block may carry (the ledger refuses larger ones at admission too).
pub const MAX_TX_BYTES: usize = veil_ledger::MAX_ENVELOPE_BYTES;

/// A transaction's identity inside blocks and the mempool (the ledger's envelope id).
pub fn tx_id(envelope: &[u8]) -> [u8; 32] {
    veil_ledger::envelope_id(envelope)
}

const HEADER_BYTES: usize = 32 + 8 + 8 + 4;

/// A block of encrypted transactions.
#[derive(Clone, PartialEq, Eq)]
pub struct Block {
    /// The parent block's digest.
    pub parent: Digest,
    /// Height: the parent's plus one (genesis is 0).
    pub height: Height,
    /// The proposer's clock when it built the block, in milliseconds since the Unix epoch.
    pub timestamp_ms: u64,
    /// Encoded transaction envelopes, in execution order.
    pub txs: Vec<Vec<u8>>,
    digest: Digest,
}

impl std::fmt::Debug for Block {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Block")
            .field("height", &self.height.get())
            .field("digest", &hex::encode(self.digest.as_ref()))
            .field("txs", &self.txs.len())
            .finish()
    }
}

impl Block {
    /// Builds a block and computes its digest once.
    pub fn new(parent: Digest, height: Height, timestamp_ms: u64, txs: Vec<Vec<u8>>) -> Self {
        let mut block = Self {
            parent,
            height,
            timestamp_ms,
            txs,
            digest: Digest::from([0u8; 32]),
        };
        block.digest = block.compute_digest();
        block
    }

    /// The genesis block every validator of a chain starts from: height 0, no transactions, its
    /// parent the genesis configuration's hash (so two chains never share a genesis block).
    pub fn genesis(genesis_hash: [u8; 32]) -> Self {
        Self::new(Digest::from(genesis_hash), Height::zero(), 0, Vec::new())
    }

    fn compute_digest(&self) -> Digest {
        let mut encoded = Vec::with_capacity(self.encode_size());
        self.write(&mut encoded);
        Sha256::hash(&[b"veil/v1/block", &encoded])
    }

    /// Total envelope bytes.
    pub fn tx_bytes(&self) -> usize {
        self.txs.iter().map(Vec::len).sum()
    }
}

impl Write for Block {
    fn write(&self, buf: &mut impl BufMut) {
        buf.put_slice(self.parent.as_ref());
        buf.put_u64(self.height.get());
        buf.put_u64(self.timestamp_ms);
        buf.put_u32(u32::try_from(self.txs.len()).unwrap_or(u32::MAX));
        for tx in &self.txs {
            buf.put_u32(u32::try_from(tx.len()).unwrap_or(u32::MAX));
            buf.put_slice(tx);
        }
    }
}

impl EncodeSize for Block {
    fn encode_size(&self) -> usize {
        HEADER_BYTES + self.txs.iter().map(|tx| 4 + tx.len()).sum::<usize>()
    }
}

fn need(buf: &impl Buf, n: usize) -> Result<(), CodecError> {
    if buf.remaining() < n {
        Err(CodecError::EndOfBuffer)
    } else {
        Ok(())
    }
}

impl Read for Block {
    type Cfg = ();

    fn read_cfg(buf: &mut impl Buf, _: &()) -> Result<Self, CodecError> {
        need(buf, HEADER_BYTES)?;
        let mut parent = [0u8; 32];
        buf.copy_to_slice(&mut parent);
        let height = Height::new(buf.get_u64());
        let timestamp_ms = buf.get_u64();
        let count = buf.get_u32() as usize;
        if count > MAX_BLOCK_TXS {
            return Err(CodecError::Invalid("veil block", "too many transactions"));
        }
        let mut txs = Vec::with_capacity(count);
        let mut total = 0usize;
        for _ in 0..count {
            need(buf, 4)?;
            let len = buf.get_u32() as usize;
            if len == 0 || len > MAX_TX_BYTES {
                return Err(CodecError::Invalid(
                    "veil block",
                    "transaction envelope size out of range",
                ));
            }
            total += len;
            if total > MAX_BLOCK_TX_BYTES {
                return Err(CodecError::Invalid(
                    "veil block",
                    "transactions exceed the block size limit",
                ));
            }
            need(buf, len)?;
            let mut tx = vec![0u8; len];
            buf.copy_to_slice(&mut tx);
            txs.push(tx);
        }
        Ok(Self::new(Digest::from(parent), height, timestamp_ms, txs))
    }
}

impl Digestible for Block {
    type Digest = Digest;

    fn digest(&self) -> Digest {
        self.digest
    }
}

impl Heightable for Block {
    fn height(&self) -> Height {
        self.height
    }
}

impl commonware_consensus::Block for Block {
    fn parent(&self) -> Digest {
        self.parent
    }
}

impl commonware_consensus::BoundedBlock for Block {
    fn max_encode_size(_: &()) -> usize {
        HEADER_BYTES + MAX_BLOCK_TXS * 4 + MAX_BLOCK_TX_BYTES
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use commonware_codec::{Copying, DecodeExt, Encode};

    fn sample() -> Block {
        Block::new(
            Digest::from([7u8; 32]),
            Height::new(3),
            1_700_000_000_000,
            vec![vec![1, 2, 3], vec![9; 5]],
        )
    }

    #[test]
    fn round_trips_and_pins_bytes() {
        let block = sample();
        let bytes = block.encode();
        assert_eq!(
            hex::encode(&bytes),
            concat!(
                "0707070707070707070707070707070707070707070707070707070707070707",
                "0000000000000003",
                "0000018bcfe56800",
                "00000002",
                "00000003010203",
                "000000050909090909"
            )
        );
        let back = Block::decode(bytes).unwrap();
        assert_eq!(back, block);
        assert_eq!(back.digest(), block.digest());
    }

    #[test]
    fn digest_commits_to_every_field() {
        let base = sample();
        let variants = [
            Block::new(
                Digest::from([8u8; 32]),
                base.height,
                base.timestamp_ms,
                base.txs.clone(),
            ),
            Block::new(base.parent, Height::new(4), base.timestamp_ms, base.txs.clone()),
            Block::new(base.parent, base.height, base.timestamp_ms + 1, base.txs.clone()),
            Block::new(base.parent, base.height, base.timestamp_ms, vec![vec![1, 2, 3]]),
            Block::new(
                base.parent,
                base.height,
                base.timestamp_ms,
                vec![vec![1, 2], vec![3], vec![9; 5]],
            ),
        ];
        for v in variants {
            assert_ne!(v.digest(), base.digest());
        }
    }

    #[test]
    fn truncated_or_oversized_blocks_are_refused() {
        let bytes = sample().encode();
        for cut in 0..bytes.len() {
            assert!(
                Block::decode(Copying(&bytes[..cut])).is_err(),
                "truncated at {cut} accepted"
            );
        }
        let mut trailing = bytes.to_vec();
        trailing.push(0);
        assert!(Block::decode(Copying(&trailing[..])).is_err());
        let mut huge = sample().encode().to_vec();
        huge[48..52].copy_from_slice(&u32::MAX.to_be_bytes());
        assert!(Block::decode(Copying(&huge[..])).is_err());
        let mut empty_tx = Block::new(Digest::from([0; 32]), Height::new(1), 0, vec![vec![1]])
            .encode()
            .to_vec();
        empty_tx[52..56].copy_from_slice(&0u32.to_be_bytes());
        empty_tx.pop();
        assert!(Block::decode(Copying(&empty_tx[..])).is_err());
    }
}
