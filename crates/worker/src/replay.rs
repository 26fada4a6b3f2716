//! Refuses replayed and stale requests: a bounded cache of recent nonces and a timestamp window.

use std::collections::HashMap;

/// Why a request was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refusal {
    Stale { skew_ms: i128, window_ms: u64 },
    Replay,
    Busy,
}

/// Remembers each nonce until its request's timestamp leaves the window, so that a request is served at
/// most once: a replay inside the window hits the cache, one outside it is stale.
#[derive(Debug)]
pub struct ReplayGuard {
    window_ms: u64,
    capacity: usize,
    seen: HashMap<[u8; 16], u64>,
}

impl ReplayGuard {
    pub fn new(window_ms: u64, capacity: usize) -> Self {
        Self {
            window_ms,
            capacity,
            seen: HashMap::new(),
        }
    }

    /// Accepts (and remembers) a request made at `timestamp_ms` with `nonce`, at `now_ms`.
    pub fn check(&mut self, nonce: [u8; 16], timestamp_ms: u64, now_ms: u64) -> Result<(), Refusal> {
        let skew = i128::from(timestamp_ms) - i128::from(now_ms);
        if skew.unsigned_abs() > u128::from(self.window_ms) {
            return Err(Refusal::Stale {
                skew_ms: skew,
                window_ms: self.window_ms,
            });
        }
        if self.seen.contains_key(&nonce) {
            return Err(Refusal::Replay);
        }
        if self.seen.len() >= self.capacity {
            let window = self.window_ms;
            self.seen.retain(|_, ts| ts.saturating_add(window) >= now_ms);
            if self.seen.len() >= self.capacity {
                return Err(Refusal::Busy);
            }
        }
        self.seen.insert(nonce, timestamp_ms);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replay_stale_and_capacity() {
        let mut g = ReplayGuard::new(60_000, 2);
        let now = 1_000_000;
        g.check([1; 16], now, now).unwrap();
        assert_eq!(g.check([1; 16], now, now + 5), Err(Refusal::Replay));
        assert!(matches!(
            g.check([2; 16], now - 60_001, now),
            Err(Refusal::Stale { .. })
        ));
        assert!(matches!(
            g.check([2; 16], now + 60_001, now),
            Err(Refusal::Stale { .. })
        ));
        g.check([2; 16], now, now).unwrap();
        assert_eq!(g.check([3; 16], now, now), Err(Refusal::Busy));
        // Once the first two left the window, their slots are reused (and replaying them is stale).
        let later = now + 60_001;
        g.check([3; 16], later, later).unwrap();
        assert!(matches!(g.check([1; 16], now, later), Err(Refusal::Stale { .. })));
    }
}
