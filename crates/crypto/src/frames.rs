//! Sealed, sequence-numbered message frames for a one-way stream of variable-size messages (a worker's
//! response to one request): the STREAM construction over ChaCha20-Poly1305, message-oriented.
//!
//! ```text
//! key     = HKDF-SHA256(ikm = stream key, salt = "veil/v1/frames", info = purpose)
//! frame i = last flag (1) | ChaCha20-Poly1305(key, nonce = i (u64 BE) | last flag | 0 0 0, aad = context, msg_i)
//! ```
//!
//! The sequence number is implicit (each side counts), and the flag sent in clear is authenticated through
//! the nonce, so a reordered, replayed, dropped, or forged frame fails to open, and a stream that stops
//! before its last frame is detected by [`FrameOpener::finish`]. A stream key must be used for one stream
//! only (it comes fresh with each request).

use chacha20poly1305::aead::{AeadInOut, KeyInit};
use chacha20poly1305::{ChaCha20Poly1305, Nonce, Tag};
use hkdf::Hkdf;
use sha2::Sha256;
use zeroize::Zeroizing;

use crate::{CryptoError, Result};

const TAG_LEN: usize = 16;

fn cipher(key: &[u8; 32], purpose: &str) -> ChaCha20Poly1305 {
    let mut k = Zeroizing::new([0u8; 32]);
    if Hkdf::<Sha256>::new(Some(b"veil/v1/frames"), key)
        .expand(purpose.as_bytes(), k.as_mut())
        .is_err()
    {
        unreachable!("HKDF-SHA256 can always expand 32 bytes");
    }
    ChaCha20Poly1305::new((&*k).into())
}

fn nonce(seq: u64, last: bool) -> Nonce {
    let mut n = [0u8; 12];
    n[..8].copy_from_slice(&seq.to_be_bytes());
    n[8] = u8::from(last);
    Nonce::from(n)
}

/// Seals the frames of one stream, in order.
pub struct FrameSealer {
    cipher: ChaCha20Poly1305,
    context: Vec<u8>,
    next: u64,
    finished: bool,
}

impl FrameSealer {
    /// `purpose` is a `"veil/v1/…"` tag; `context` is bound to every frame (e.g. the request's hash).
    pub fn new(key: &[u8; 32], purpose: &str, context: &[u8]) -> Self {
        Self {
            cipher: cipher(key, purpose),
            context: context.to_vec(),
            next: 0,
            finished: false,
        }
    }

    /// Seals the next message; `last` marks the end of the stream (no frame may follow it).
    pub fn seal(&mut self, msg: &[u8], last: bool) -> Result<Vec<u8>> {
        if self.finished {
            return Err(CryptoError::Stream(
                "cannot seal a frame after the last one".into(),
            ));
        }
        let mut out = Vec::with_capacity(1 + msg.len() + TAG_LEN);
        out.push(u8::from(last));
        out.extend_from_slice(msg);
        let tag = self
            .cipher
            .encrypt_inout_detached(&nonce(self.next, last), &self.context, out[1..].as_mut().into())
            .map_err(|_| CryptoError::Stream("frame encryption failed".into()))?;
        out.extend_from_slice(&tag);
        self.next += 1;
        self.finished = last;
        Ok(out)
    }

    /// How many frames were sealed so far.
    pub fn sealed(&self) -> u64 {
        self.next
    }
}

/// Opens the frames of one stream, in order.
pub struct FrameOpener {
    cipher: ChaCha20Poly1305,
    context: Vec<u8>,
    next: u64,
    finished: bool,
}

/// One opened frame.
#[derive(Debug, PartialEq, Eq)]
pub struct Frame {
    pub seq: u64,
    pub last: bool,
    pub msg: Zeroizing<Vec<u8>>,
}

impl FrameOpener {
    pub fn new(key: &[u8; 32], purpose: &str, context: &[u8]) -> Self {
        Self {
            cipher: cipher(key, purpose),
            context: context.to_vec(),
            next: 0,
            finished: false,
        }
    }

    /// Opens the next frame. Fails if it is not the next one in sequence, was tampered with, or comes after
    /// the last frame.
    pub fn open(&mut self, frame: &[u8]) -> Result<Frame> {
        if self.finished {
            return Err(CryptoError::Stream(
                "a frame arrived after the last one (replayed or appended)".into(),
            ));
        }
        let seq = self.next;
        if frame.len() < 1 + TAG_LEN {
            return Err(CryptoError::Stream(format!(
                "frame {seq} is truncated ({} bytes)",
                frame.len()
            )));
        }
        let last = match frame[0] {
            0 => false,
            1 => true,
            other => {
                return Err(CryptoError::Stream(format!(
                    "frame {seq} has an invalid flag byte {other}"
                )));
            }
        };
        let split = frame.len() - TAG_LEN;
        let tag = Tag::try_from(&frame[split..])
            .map_err(|_| CryptoError::Stream(format!("frame {seq}: bad tag length")))?;
        let mut msg = Zeroizing::new(frame[1..split].to_vec());
        self.cipher
            .decrypt_inout_detached(&nonce(seq, last), &self.context, msg.as_mut_slice().into(), &tag)
            .map_err(|_| {
                CryptoError::Stream(format!(
                    "frame {seq} failed authentication: it was tampered with, reordered, replayed or dropped, \
                     or belongs to another stream"
                ))
            })?;
        self.next += 1;
        self.finished = last;
        Ok(Frame { seq, last, msg })
    }

    /// Checks that the stream ended with its last frame; call when the transport closes.
    pub fn finish(&self) -> Result<()> {
        if self.finished {
            Ok(())
        } else {
            Err(CryptoError::Stream(format!(
                "the stream ended after {} frame(s) without its last frame (truncated)",
                self.next
            )))
        }
    }

    /// Whether the last frame has been opened.
    pub fn is_finished(&self) -> bool {
        self.finished
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const K: [u8; 32] = [9; 32];
    const P: &str = "veil/v1/test-frames";

    fn stream(msgs: &[&[u8]]) -> Vec<Vec<u8>> {
        let mut s = FrameSealer::new(&K, P, b"ctx");
        msgs.iter()
            .enumerate()
            .map(|(i, m)| s.seal(m, i + 1 == msgs.len()).unwrap())
            .collect()
    }

    #[test]
    fn round_trip() {
        let frames = stream(&[b"a", b"", b"hello"]);
        let mut o = FrameOpener::new(&K, P, b"ctx");
        let got: Vec<_> = frames.iter().map(|f| o.open(f).unwrap()).collect();
        assert_eq!(got[2].msg.as_slice(), b"hello");
        assert!(got[2].last && !got[0].last);
        o.finish().unwrap();
    }

    #[test]
    fn reorder_replay_drop_truncate_and_forge_are_detected() {
        let f = stream(&[b"one", b"two", b"three"]);
        let mut o = FrameOpener::new(&K, P, b"ctx");
        assert!(o.open(&f[1]).unwrap_err().to_string().contains("frame 0 failed"));

        let mut o = FrameOpener::new(&K, P, b"ctx");
        o.open(&f[0]).unwrap();
        assert!(
            o.open(&f[0]).unwrap_err().to_string().contains("frame 1 failed"),
            "replay"
        );

        let mut o = FrameOpener::new(&K, P, b"ctx");
        o.open(&f[0]).unwrap();
        assert!(o.open(&f[2]).is_err(), "drop");

        let mut o = FrameOpener::new(&K, P, b"ctx");
        o.open(&f[0]).unwrap();
        o.open(&f[1]).unwrap();
        assert!(o.finish().unwrap_err().to_string().contains("truncated"));
        o.open(&f[2]).unwrap();
        assert!(o.open(&f[2]).unwrap_err().to_string().contains("after the last"));

        // Flipping the clear flag (claiming an early end) or any other byte fails authentication.
        for i in 0..f[1].len() {
            let mut t = f[1].clone();
            t[i] ^= 1;
            let mut o = FrameOpener::new(&K, P, b"ctx");
            o.open(&f[0]).unwrap();
            assert!(o.open(&t).is_err(), "flip at {i}");
        }
        // Another context or purpose does not open.
        assert!(FrameOpener::new(&K, P, b"other").open(&f[0]).is_err());
        assert!(FrameOpener::new(&K, "veil/v1/x", b"ctx").open(&f[0]).is_err());
    }

    #[test]
    fn nothing_seals_after_the_last_frame() {
        let mut s = FrameSealer::new(&K, P, b"");
        s.seal(b"x", true).unwrap();
        assert!(s.seal(b"y", false).is_err());
    }

    #[test]
    fn pinned_vector() {
        let mut s = FrameSealer::new(&K, P, b"ctx");
        assert_eq!(
            hex::encode(s.seal(b"hi", false).unwrap()),
            "0075da60ade5ca57ea6f713afb27a117fa4d71"
        );
    }
}
