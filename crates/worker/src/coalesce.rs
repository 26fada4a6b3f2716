//! Groups a streamed answer's pieces into fewer frames.
//!
//! Each frame costs the worker's host a wake-up, a seal and a socket write (and the gateway a read, an open
//! and an event to its client): on a CPU worker that time is taken from the engine's cores, once per token.
//! Holding pieces that arrive less than an interval after the last frame, and sending them with the next,
//! bounds the frames per second whatever the decoding speed.

use std::time::{Duration, Instant};

use zeroize::Zeroizing;

/// Decides, piece by piece, which text goes out now.
#[derive(Debug)]
pub(crate) struct Coalescer {
    interval: Duration,
    /// Text not sent yet.
    held: Zeroizing<String>,
    /// When text was last sent; `None` before the first.
    last_sent: Option<Instant>,
}

impl Coalescer {
    /// Sends text at most once per `interval` (zero: every piece as it comes).
    pub(crate) fn new(interval: Duration) -> Self {
        Self {
            interval,
            held: Zeroizing::new(String::new()),
            last_sent: None,
        }
    }

    /// Takes a piece produced at `now`; returns the text to send now, if any. The first piece goes at once
    /// (time to first token is never delayed); later ones wait until `interval` has passed since the last
    /// text went, and then go together with everything held.
    pub(crate) fn push(&mut self, piece: &str, now: Instant) -> Option<Zeroizing<String>> {
        self.held.push_str(piece);
        if self.held.is_empty() {
            return None;
        }
        if self
            .last_sent
            .is_some_and(|last| now.saturating_duration_since(last) < self.interval)
        {
            return None;
        }
        self.last_sent = Some(now);
        Some(self.take())
    }

    /// At the end of the answer: the text still held, if any.
    pub(crate) fn finish(&mut self) -> Option<Zeroizing<String>> {
        (!self.held.is_empty()).then(|| self.take())
    }

    fn take(&mut self) -> Zeroizing<String> {
        Zeroizing::new(std::mem::take(&mut *self.held))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Feeds `pieces`, one every `gap`, and returns what was sent, the rest included.
    fn run(interval: Duration, gap: Duration, pieces: &[&str]) -> Vec<String> {
        let mut c = Coalescer::new(interval);
        let t0 = Instant::now();
        let mut sent = Vec::new();
        for (i, piece) in pieces.iter().enumerate() {
            let now = t0 + gap * u32::try_from(i).unwrap();
            sent.extend(c.push(piece, now).map(|s| s.to_string()));
        }
        sent.extend(c.finish().map(|s| s.to_string()));
        sent
    }

    const PIECES: [&str; 7] = ["Hel", "lo", ",", " wor", "ld", "", "!"];

    #[test]
    fn zero_interval_sends_every_piece() {
        let sent = run(Duration::ZERO, Duration::ZERO, &PIECES);
        let expected: Vec<&str> = PIECES.iter().copied().filter(|p| !p.is_empty()).collect();
        assert_eq!(sent, expected);
    }

    #[test]
    fn pieces_sooner_than_the_interval_go_with_the_next() {
        // A piece every 10 ms, at most one frame per 25 ms: the first at once, then every third piece
        // takes what was held with it; the end flushes the rest.
        let sent = run(Duration::from_millis(25), Duration::from_millis(10), &PIECES);
        assert_eq!(sent, ["Hel", "lo, wor", "ld!"]);
        assert_eq!(sent.concat(), PIECES.concat());
    }

    #[test]
    fn slow_pieces_are_not_held() {
        let sent = run(Duration::from_millis(20), Duration::from_millis(30), &PIECES);
        let expected: Vec<&str> = PIECES.iter().copied().filter(|p| !p.is_empty()).collect();
        assert_eq!(sent, expected);
    }

    #[test]
    fn a_long_interval_sends_the_first_piece_then_the_rest_at_the_end() {
        let sent = run(Duration::from_secs(3600), Duration::from_millis(1), &PIECES);
        assert_eq!(sent, ["Hel", "lo, world!"]);
    }

    #[test]
    fn leading_empty_pieces_do_not_use_up_the_first_frame() {
        let sent = run(
            Duration::from_secs(3600),
            Duration::from_millis(1),
            &["", "", "a", "b"],
        );
        assert_eq!(sent, ["a", "b"]);
        assert_eq!(
            run(Duration::from_secs(1), Duration::ZERO, &["", ""]),
            Vec::<String>::new()
        );
    }
}
