//! Mempool gossip: an envelope a client submits to one validator reaches every validator's
//! mempool, so whichever validator leads next can include it (and each validator opens it once,
//! at admission, then reuses that work when the block executes).
//!
//! Envelopes travel in batches (`count (4) | { len (4) | envelope }*`, big-endian) on their own
//! p2p channel; they are ciphertext, as on chain. A received envelope goes through the same
//! admission checks as a submitted one and is not forwarded again (every validator is directly
//! connected to every other).

use std::time::Duration;

use commonware_p2p::{Receiver, Recipients, Sender};
use commonware_runtime::Clock;
use commonware_utils::channel::mpsc;
use tracing::debug;

use crate::core::SharedCore;

/// Most envelopes in one gossip message.
const MAX_BATCH: usize = 512;
/// Most bytes in one gossip message.
const MAX_BATCH_BYTES: usize = 512 * 1024;
/// How long the first envelope of a batch waits for company.
const LINGER: Duration = Duration::from_millis(5);

/// Encodes a batch.
pub fn encode_batch(envelopes: &[Vec<u8>]) -> Vec<u8> {
    let mut out = Vec::with_capacity(4 + envelopes.iter().map(|e| 4 + e.len()).sum::<usize>());
    out.extend_from_slice(&u32::try_from(envelopes.len()).unwrap_or(u32::MAX).to_be_bytes());
    for e in envelopes {
        out.extend_from_slice(&u32::try_from(e.len()).unwrap_or(u32::MAX).to_be_bytes());
        out.extend_from_slice(e);
    }
    out
}

/// Decodes a batch; `None` when malformed (the whole message is dropped).
pub fn decode_batch(mut bytes: &[u8]) -> Option<Vec<Vec<u8>>> {
    fn take<'a>(bytes: &mut &'a [u8], n: usize) -> Option<&'a [u8]> {
        if bytes.len() < n {
            return None;
        }
        let (head, tail) = bytes.split_at(n);
        *bytes = tail;
        Some(head)
    }
    let count = u32::from_be_bytes(take(&mut bytes, 4)?.try_into().ok()?) as usize;
    if count > MAX_BATCH {
        return None;
    }
    let mut out = Vec::with_capacity(count);
    for _ in 0..count {
        let len = u32::from_be_bytes(take(&mut bytes, 4)?.try_into().ok()?) as usize;
        if len == 0 || len > veil_ledger::MAX_ENVELOPE_BYTES {
            return None;
        }
        out.push(take(&mut bytes, len)?.to_vec());
    }
    bytes.is_empty().then_some(out)
}

/// Sends what clients submit here to every other validator, in batches.
pub async fn run_outbound<E: Clock, S: Sender>(
    clock: E,
    mut sender: S,
    mut outbox: mpsc::UnboundedReceiver<Vec<u8>>,
) {
    while let Some(first) = outbox.recv().await {
        let mut batch = vec![first];
        let mut bytes = batch[0].len();
        let deadline = clock.current() + LINGER;
        while batch.len() < MAX_BATCH && bytes < MAX_BATCH_BYTES {
            match outbox.try_recv() {
                Ok(next) => {
                    bytes += next.len();
                    batch.push(next);
                }
                Err(mpsc::error::TryRecvError::Empty) => {
                    if clock.current() >= deadline {
                        break;
                    }
                    clock.sleep(Duration::from_millis(1)).await;
                }
                Err(mpsc::error::TryRecvError::Disconnected) => break,
            }
        }
        let message = encode_batch(&batch);
        let sent = sender.send(Recipients::All, message, false);
        debug!(envelopes = batch.len(), peers = sent.len(), "gossiped envelopes");
    }
}

/// Admits what other validators gossip.
pub async fn run_inbound<R: Receiver>(core: SharedCore, mut receiver: R) {
    while let Ok((peer, message)) = receiver.recv().await {
        let Some(envelopes) = decode_batch(message.as_ref()) else {
            debug!(?peer, "dropping a malformed gossip message");
            continue;
        };
        let refused = core.admit_gossiped(envelopes);
        if refused > 0 {
            // Normal when the envelope was already included or admitted: not an error.
            debug!(refused, "gossiped envelopes not admitted");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn batches_round_trip_and_reject_malformed() {
        let batch = vec![vec![1u8; 10], vec![2u8; 300]];
        let bytes = encode_batch(&batch);
        assert_eq!(decode_batch(&bytes), Some(batch));
        for cut in 0..bytes.len() {
            assert_eq!(decode_batch(&bytes[..cut]), None, "truncated at {cut}");
        }
        let mut trailing = bytes.clone();
        trailing.push(0);
        assert_eq!(decode_batch(&trailing), None);
        assert_eq!(decode_batch(&encode_batch(&[vec![]])), None);
        assert_eq!(decode_batch(&u32::MAX.to_be_bytes()), None);
    }
}
