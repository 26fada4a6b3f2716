//! Length-prefixed frames on a byte stream: `u32 BE length | frame`, and an incremental decoder.

use crate::{Result, TypesError};

/// The largest frame accepted (1 MiB): response events are padded deltas of a few bytes, or a receipt.
pub const MAX_FRAME_LEN: usize = 1 << 20;

/// `u32 BE length | frame`.
pub fn encode_frame(frame: &[u8]) -> Result<Vec<u8>> {
    if frame.len() > MAX_FRAME_LEN {
        return Err(TypesError::FrameTooLarge {
            len: frame.len(),
            max: MAX_FRAME_LEN,
        });
    }
    let mut out = Vec::with_capacity(4 + frame.len());
    out.extend_from_slice(&(frame.len() as u32).to_be_bytes());
    out.extend_from_slice(frame);
    Ok(out)
}

/// Splits a byte stream arriving in arbitrary pieces into frames; refuses frames above a maximum size
/// before buffering them.
#[derive(Debug)]
pub struct FrameDecoder {
    buf: Vec<u8>,
    max: usize,
    frames: u64,
}

impl Default for FrameDecoder {
    fn default() -> Self {
        Self::new(MAX_FRAME_LEN)
    }
}

impl FrameDecoder {
    pub fn new(max: usize) -> Self {
        Self {
            buf: Vec::new(),
            max,
            frames: 0,
        }
    }

    /// Adds bytes received from the transport.
    pub fn push(&mut self, bytes: &[u8]) {
        self.buf.extend_from_slice(bytes);
    }

    /// The next complete frame, `None` when more bytes are needed.
    pub fn next_frame(&mut self) -> Result<Option<Vec<u8>>> {
        let Some(len) = self.buf.first_chunk::<4>() else {
            return Ok(None);
        };
        let len = u32::from_be_bytes(*len) as usize;
        if len > self.max {
            return Err(TypesError::FrameTooLarge { len, max: self.max });
        }
        if self.buf.len() < 4 + len {
            return Ok(None);
        }
        let frame = self.buf[4..4 + len].to_vec();
        self.buf.drain(..4 + len);
        self.frames += 1;
        Ok(Some(frame))
    }

    /// Call when the transport closed: fails if a partial frame is left over.
    pub fn finish(&self) -> Result<()> {
        if self.buf.is_empty() {
            Ok(())
        } else {
            Err(TypesError::Truncated(format!(
                "the connection closed inside frame {} ({} bytes of it arrived)",
                self.frames,
                self.buf.len()
            )))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_survive_any_split() {
        let mut wire = encode_frame(b"hello").unwrap();
        wire.extend(encode_frame(b"").unwrap());
        wire.extend(encode_frame(&[7u8; 300]).unwrap());
        assert_eq!(&wire[..9], &[0, 0, 0, 5, b'h', b'e', b'l', b'l', b'o']);
        for step in 1..wire.len() {
            let mut d = FrameDecoder::default();
            let mut got = Vec::new();
            for piece in wire.chunks(step) {
                d.push(piece);
                while let Some(f) = d.next_frame().unwrap() {
                    got.push(f);
                }
            }
            d.finish().unwrap();
            assert_eq!(got, vec![b"hello".to_vec(), vec![], vec![7u8; 300]]);
        }
    }

    #[test]
    fn truncated_and_oversized_input_is_an_error() {
        let wire = encode_frame(b"hello").unwrap();
        for n in 1..wire.len() {
            let mut d = FrameDecoder::default();
            d.push(&wire[..n]);
            assert_eq!(d.next_frame().unwrap(), None);
            assert!(d.finish().unwrap_err().to_string().contains("truncated"));
        }
        let mut d = FrameDecoder::new(4);
        d.push(&[0, 0, 0, 5]);
        assert!(matches!(
            d.next_frame(),
            Err(TypesError::FrameTooLarge { len: 5, max: 4 })
        ));
        let mut d = FrameDecoder::default();
        d.push(&[0xff; 4]);
        assert!(d.next_frame().is_err());
        assert!(encode_frame(&vec![0; MAX_FRAME_LEN + 1]).is_err());
    }
}
