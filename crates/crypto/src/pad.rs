//! Size padding to buckets, for anything sent over a network or stored on chain, so an observer learns
//! only a size class.
//!
//! `pad(data)` = `len(data) as u32 BE | data | zeros`, to the smallest bucket that fits. Buckets are
//! powers of two from [`MIN_BUCKET`] (256 B).

use crate::{CryptoError, Result};

/// The smallest bucket.
pub const MIN_BUCKET: usize = 256;
/// The largest padded size (256 MiB); larger inputs are refused rather than silently left unpadded.
pub const MAX_BUCKET: usize = 1 << 28;

/// The padded size of a payload of `len` bytes (length prefix included).
pub fn bucket_for(len: usize) -> Result<usize> {
    let needed = len
        .checked_add(4)
        .ok_or_else(|| CryptoError::Padding("length overflows".into()))?;
    let bucket = needed
        .max(MIN_BUCKET)
        .checked_next_power_of_two()
        .unwrap_or(usize::MAX);
    if bucket > MAX_BUCKET {
        return Err(CryptoError::Padding(format!(
            "{len} bytes exceeds the largest bucket ({MAX_BUCKET} bytes); split the payload"
        )));
    }
    Ok(bucket)
}

/// Pads `data` to its bucket.
pub fn pad(data: &[u8]) -> Result<Vec<u8>> {
    let bucket = bucket_for(data.len())?;
    let mut out = Vec::with_capacity(bucket);
    // bucket_for guarantees data.len() < MAX_BUCKET < u32::MAX.
    out.extend_from_slice(&(data.len() as u32).to_be_bytes());
    out.extend_from_slice(data);
    out.resize(bucket, 0);
    Ok(out)
}

/// Removes padding added by [`pad`], checking the length prefix, the bucket size, and that the filler
/// is all zeros.
pub fn unpad(padded: &[u8]) -> Result<&[u8]> {
    if padded.len() < 4 {
        return Err(CryptoError::Padding(format!(
            "{} bytes is too short for a length prefix",
            padded.len()
        )));
    }
    let (len_bytes, rest) = padded.split_at(4);
    let len = u32::from_be_bytes([len_bytes[0], len_bytes[1], len_bytes[2], len_bytes[3]]) as usize;
    if len > rest.len() {
        return Err(CryptoError::Padding(format!(
            "length prefix {len} exceeds the {} bytes present",
            rest.len()
        )));
    }
    let expected = bucket_for(len)?;
    if padded.len() != expected {
        return Err(CryptoError::Padding(format!(
            "padded size {} is not the bucket for {len} bytes ({expected})",
            padded.len()
        )));
    }
    let (data, filler) = rest.split_at(len);
    if filler.iter().any(|&b| b != 0) {
        return Err(CryptoError::Padding("non-zero padding bytes".into()));
    }
    Ok(data)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets() {
        assert_eq!(bucket_for(0).unwrap(), 256);
        assert_eq!(bucket_for(252).unwrap(), 256);
        assert_eq!(bucket_for(253).unwrap(), 512);
        assert_eq!(bucket_for(1000).unwrap(), 1024);
        assert!(bucket_for(MAX_BUCKET).is_err());
    }

    #[test]
    fn round_trip_hides_size_within_bucket() {
        for n in [0usize, 1, 100, 252, 253, 5000] {
            let data = vec![0xCDu8; n];
            let p = pad(&data).unwrap();
            assert!(p.len().is_power_of_two() && p.len() >= 256);
            assert_eq!(unpad(&p).unwrap(), &data[..]);
        }
        assert_eq!(pad(b"a").unwrap().len(), pad(&[7u8; 200]).unwrap().len());
    }

    #[test]
    fn tampered_padding_is_rejected() {
        let p = pad(b"hello").unwrap();
        let mut bad = p.clone();
        bad[100] = 1;
        assert!(unpad(&bad).unwrap_err().to_string().contains("non-zero"));
        let mut long = p.clone();
        long[0] = 0xFF;
        assert!(unpad(&long).unwrap_err().to_string().contains("exceeds"));
        assert!(
            unpad(&p[..255])
                .unwrap_err()
                .to_string()
                .contains("not the bucket")
        );
        assert!(unpad(&p[..3]).is_err());
    }
}
