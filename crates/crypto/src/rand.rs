//! Randomness from the operating system's CSPRNG.

use crate::{CryptoError, Result};

/// Fills `buf` with random bytes from the OS.
pub fn fill(buf: &mut [u8]) -> Result<()> {
    getrandom::fill(buf).map_err(|e| CryptoError::Rng(e.to_string()))
}

/// Returns `N` random bytes from the OS.
pub fn array<const N: usize>() -> Result<[u8; N]> {
    let mut out = [0u8; N];
    fill(&mut out)?;
    Ok(out)
}
