//! Byte-level helpers of the ledger's wire formats: big-endian integers and u32-length-prefixed fields,
//! with a reader that never panics and names what was short.

/// Appends `bytes` preceded by its length as a u32 big-endian. Callers only pass values bounded far
/// below `u32::MAX` (every format here is capped at a few KiB, snapshots per entry).
pub(crate) fn put_lp(out: &mut Vec<u8>, bytes: &[u8]) {
    let len = u32::try_from(bytes.len()).unwrap_or(u32::MAX);
    out.extend_from_slice(&len.to_be_bytes());
    out.extend_from_slice(bytes);
}

/// A cursor over untrusted bytes.
pub(crate) struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    pub(crate) fn new(buf: &'a [u8]) -> Self {
        Self { buf, pos: 0 }
    }

    pub(crate) fn take(&mut self, n: usize, what: &str) -> Result<&'a [u8], String> {
        let end = self
            .pos
            .checked_add(n)
            .filter(|&e| e <= self.buf.len())
            .ok_or_else(|| {
                format!(
                    "truncated: {what} needs {n} bytes at offset {}, only {} left",
                    self.pos,
                    self.buf.len() - self.pos
                )
            })?;
        let out = &self.buf[self.pos..end];
        self.pos = end;
        Ok(out)
    }

    pub(crate) fn array<const N: usize>(&mut self, what: &str) -> Result<[u8; N], String> {
        let s = self.take(N, what)?;
        let mut a = [0u8; N];
        a.copy_from_slice(s);
        Ok(a)
    }

    pub(crate) fn u8(&mut self, what: &str) -> Result<u8, String> {
        Ok(self.array::<1>(what)?[0])
    }

    pub(crate) fn u32(&mut self, what: &str) -> Result<u32, String> {
        Ok(u32::from_be_bytes(self.array(what)?))
    }

    pub(crate) fn u64(&mut self, what: &str) -> Result<u64, String> {
        Ok(u64::from_be_bytes(self.array(what)?))
    }

    /// A u32-length-prefixed field of at most `max` bytes.
    pub(crate) fn lp(&mut self, max: usize, what: &str) -> Result<&'a [u8], String> {
        let len = self.u32(what)? as usize;
        if len > max {
            return Err(format!("{what} of {len} bytes exceeds the maximum of {max}"));
        }
        self.take(len, what)
    }

    pub(crate) fn remaining(&self) -> usize {
        self.buf.len() - self.pos
    }

    /// Fails if bytes are left over.
    pub(crate) fn finish(&self, what: &str) -> Result<(), String> {
        match self.remaining() {
            0 => Ok(()),
            n => Err(format!("{n} trailing bytes after the {what}")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reader_never_panics_on_short_input() {
        let mut r = Reader::new(&[0, 0, 0, 9, 1]);
        assert!(r.lp(100, "x").unwrap_err().contains("truncated"));
        let mut r = Reader::new(&[0, 0, 1, 0]);
        assert!(r.lp(10, "x").unwrap_err().contains("exceeds"));
        let mut r = Reader::new(&[1, 2]);
        assert!(r.u64("n").is_err());
        let mut buf = Vec::new();
        put_lp(&mut buf, b"ab");
        let mut r = Reader::new(&buf);
        assert_eq!(r.lp(2, "x").unwrap(), b"ab");
        r.finish("x").unwrap();
    }
}
