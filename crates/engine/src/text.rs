//! Turning token bytes into stream-safe text: whole UTF-8 characters only, and no partial stop
//! sequence ever leaves the engine.

/// Accumulates token bytes and releases only complete UTF-8 characters. A token may end in the
/// middle of a multibyte character (byte-level BPE does this for emoji and CJK); those bytes wait
/// for the next token.
#[derive(Debug, Default)]
pub(crate) struct Utf8Assembler {
    pending: Vec<u8>,
}

impl Utf8Assembler {
    /// Adds bytes and returns the text that is now complete (possibly empty).
    pub(crate) fn push(&mut self, bytes: &[u8]) -> String {
        self.pending.extend_from_slice(bytes);
        let mut out = String::new();
        loop {
            match std::str::from_utf8(&self.pending) {
                Ok(s) => {
                    out.push_str(s);
                    self.pending.clear();
                    return out;
                }
                Err(e) => {
                    let valid = e.valid_up_to();
                    // `valid` bytes are valid UTF-8 by the contract of `valid_up_to`.
                    out.push_str(&String::from_utf8_lossy(&self.pending[..valid]));
                    match e.error_len() {
                        // An incomplete character at the end: keep it for the next token.
                        None => {
                            self.pending.drain(..valid);
                            return out;
                        }
                        // Bytes that can never become valid: replace them, go on.
                        Some(bad) => {
                            out.push(char::REPLACEMENT_CHARACTER);
                            self.pending.drain(..valid + bad);
                        }
                    }
                }
            }
        }
    }

    /// Ends the stream: any incomplete character left is replaced by U+FFFD.
    pub(crate) fn finish(&mut self) -> String {
        let out = String::from_utf8_lossy(&self.pending).into_owned();
        self.pending.clear();
        out
    }
}

/// Watches the generated text for stop sequences. Text that might be the beginning of a stop
/// sequence is held back until it is known not to be one, so a stop sequence (or a part of it)
/// never reaches the client.
#[derive(Debug)]
pub(crate) struct StopMatcher {
    stops: Vec<String>,
    held: String,
}

/// What [`StopMatcher::push`] decided.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum StopScan {
    /// Text safe to emit now; generation goes on.
    Continue(String),
    /// A stop sequence was found: emit this text (everything before it) and stop.
    Stopped(String),
}

impl StopMatcher {
    pub(crate) fn new(stops: &[String]) -> Self {
        Self {
            stops: stops.iter().filter(|s| !s.is_empty()).cloned().collect(),
            held: String::new(),
        }
    }

    pub(crate) fn push(&mut self, text: &str) -> StopScan {
        if self.stops.is_empty() {
            return StopScan::Continue(text.to_owned());
        }
        self.held.push_str(text);
        // The earliest stop sequence wins.
        if let Some(at) = self.stops.iter().filter_map(|s| self.held.find(s.as_str())).min() {
            let before = self.held[..at].to_owned();
            self.held.clear();
            return StopScan::Stopped(before);
        }
        // Hold back the longest suffix that is a proper prefix of some stop sequence.
        let keep_from = self
            .held
            .char_indices()
            .map(|(i, _)| i)
            .find(|&i| {
                let suffix = &self.held[i..];
                self.stops
                    .iter()
                    .any(|s| s.len() > suffix.len() && s.starts_with(suffix))
            })
            .unwrap_or(self.held.len());
        let emit = self.held[..keep_from].to_owned();
        self.held.drain(..keep_from);
        StopScan::Continue(emit)
    }

    /// Generation ended without a stop sequence: what was held back is ordinary text.
    pub(crate) fn finish(&mut self) -> String {
        std::mem::take(&mut self.held)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn multibyte_characters_split_across_tokens_are_never_broken() {
        let text = "é😀中";
        let bytes = text.as_bytes();
        // Feed one byte at a time: every emitted piece must be whole characters.
        let mut asm = Utf8Assembler::default();
        let mut pieces = Vec::new();
        for b in bytes {
            pieces.push(asm.push(std::slice::from_ref(b)));
        }
        pieces.push(asm.finish());
        assert_eq!(pieces.concat(), text);
        assert_eq!(pieces.iter().filter(|p| !p.is_empty()).count(), 3, "{pieces:?}");
    }

    #[test]
    fn invalid_bytes_become_replacement_characters() {
        let mut asm = Utf8Assembler::default();
        assert_eq!(asm.push(b"a\xffb"), "a\u{fffd}b");
        assert_eq!(asm.push(b"\xe4\xb8"), "");
        assert_eq!(asm.finish(), "\u{fffd}");
        assert_eq!(asm.finish(), "");
    }

    fn run(stops: &[&str], pieces: &[&str]) -> (Vec<String>, bool) {
        let stops: Vec<String> = stops.iter().map(|s| s.to_string()).collect();
        let mut m = StopMatcher::new(&stops);
        let mut out = Vec::new();
        for p in pieces {
            match m.push(p) {
                StopScan::Continue(t) => out.push(t),
                StopScan::Stopped(t) => {
                    out.push(t);
                    return (out, true);
                }
            }
        }
        out.push(m.finish());
        (out, false)
    }

    #[test]
    fn stop_sequence_split_across_pieces_does_not_leak() {
        let (out, stopped) = run(&["STOP"], &["Hello S", "T", "OP and more"]);
        assert!(stopped);
        assert_eq!(out.concat(), "Hello ");
        // The partial "S" and "ST" were held back, never emitted.
        assert!(out.iter().all(|p| !p.contains('S')), "{out:?}");
    }

    #[test]
    fn false_start_of_a_stop_sequence_is_released() {
        let (out, stopped) = run(&["STOP"], &["a ST", "ART b"]);
        assert!(!stopped);
        assert_eq!(out.concat(), "a START b");
        assert_eq!(out[0], "a ");
    }

    #[test]
    fn held_text_is_released_at_the_end() {
        let (out, stopped) = run(&["\n\n"], &["line\n"]);
        assert!(!stopped);
        assert_eq!(out.concat(), "line\n");
    }

    #[test]
    fn earliest_of_several_stops_wins_and_multibyte_is_safe() {
        let (out, stopped) = run(&["ü!", "x"], &["aü", "!x"]);
        assert!(stopped);
        assert_eq!(out.concat(), "a");
        let (out, _) = run(&[], &["free", " text"]);
        assert_eq!(out.concat(), "free text");
    }
}
