//! An incremental parser for Server-Sent Events (the WHATWG `text/event-stream` format), as OpenAI-
//! compatible servers stream completions: `data: {...}` events separated by blank lines, ending with
//! `data: [DONE]`.
//!
//! Bytes arrive in arbitrary pieces: an event, a line or a CRLF pair may be split across reads, so the
//! parser keeps what it has not consumed and hands out whole events. Lines end in LF, CRLF or a lone CR;
//! comments (`:`) and fields other than `data` (`event`, `id`, `retry`) are skipped; multi-line data is
//! joined with `\n`.

/// The longest event (or unterminated line) accepted: as large as a hub frame, no larger.
pub const MAX_EVENT_BYTES: usize = stacknet_protocol::wire::MAX_FRAME_BYTES;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum SseError {
    #[error("an event grew past {max} bytes")]
    TooLarge { max: usize },
}

#[derive(Debug, Default)]
pub struct SseParser {
    buf: Vec<u8>,
    /// Start of the bytes not yet consumed in `buf`.
    pos: usize,
    /// The last line ended in CR at the end of the input: a following LF belongs to it.
    skip_lf: bool,
    data: Vec<u8>,
    has_data: bool,
}

impl SseParser {
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds bytes from the stream; call [`Self::next_event`] until it gives `None`.
    pub fn push(&mut self, bytes: &[u8]) {
        if self.pos > 0 && self.pos == self.buf.len() {
            self.buf.clear();
            self.pos = 0;
        } else if self.pos > self.buf.len() / 2 {
            // Compact only when more than half is consumed, so each byte moves at most once on average.
            self.buf.drain(..self.pos);
            self.pos = 0;
        }
        self.buf.extend_from_slice(bytes);
    }

    /// The data of the next complete event, if the input holds one.
    pub fn next_event(&mut self) -> Result<Option<Vec<u8>>, SseError> {
        loop {
            if self.skip_lf && self.pos < self.buf.len() {
                if self.buf[self.pos] == b'\n' {
                    self.pos += 1;
                }
                self.skip_lf = false;
            }
            let rest = &self.buf[self.pos..];
            let Some(end) = rest.iter().position(|&b| b == b'\n' || b == b'\r') else {
                if rest.len() > MAX_EVENT_BYTES {
                    return Err(SseError::TooLarge { max: MAX_EVENT_BYTES });
                }
                return Ok(None);
            };
            let line_start = self.pos;
            let terminator = rest[end];
            self.pos += end + 1;
            if terminator == b'\r' {
                match self.buf.get(self.pos) {
                    Some(b'\n') => self.pos += 1,
                    Some(_) => {}
                    None => self.skip_lf = true,
                }
            }
            if let Some(event) = self.line(line_start, line_start + end)? {
                return Ok(Some(event));
            }
        }
    }

    /// At the end of the stream: the last event even if no blank line closed it. (The standard drops
    /// it; servers that omit the final blank line exist, and a truncated stream is caught later by the
    /// missing `[DONE]`.)
    pub fn finish(&mut self) -> Result<Option<Vec<u8>>, SseError> {
        if self.pos < self.buf.len() {
            let (start, end) = (self.pos, self.buf.len());
            self.pos = end;
            if let Some(event) = self.line(start, end)? {
                return Ok(Some(event));
            }
        }
        Ok(self.dispatch())
    }

    /// Handles the line `buf[start..end]`; returns an event when the line is blank and ends one.
    fn line(&mut self, start: usize, end: usize) -> Result<Option<Vec<u8>>, SseError> {
        let line = &self.buf[start..end];
        if line.is_empty() {
            return Ok(self.dispatch());
        }
        if line[0] == b':' {
            return Ok(None);
        }
        let (field, value) = match line.iter().position(|&b| b == b':') {
            Some(colon) => {
                let value = &line[colon + 1..];
                (&line[..colon], value.strip_prefix(b" ").unwrap_or(value))
            }
            None => (line, &[][..]),
        };
        if field == b"data" {
            if self.data.len() + value.len() + 1 > MAX_EVENT_BYTES {
                return Err(SseError::TooLarge { max: MAX_EVENT_BYTES });
            }
            if self.has_data {
                self.data.push(b'\n');
            }
            self.data.extend_from_slice(value);
            self.has_data = true;
        }
        Ok(None)
    }

    fn dispatch(&mut self) -> Option<Vec<u8>> {
        if !self.has_data {
            return None;
        }
        self.has_data = false;
        Some(std::mem::take(&mut self.data))
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn events_in_pieces(pieces: &[&[u8]]) -> Vec<String> {
        let mut parser = SseParser::new();
        let mut out = Vec::new();
        for piece in pieces {
            parser.push(piece);
            while let Some(e) = parser.next_event().unwrap() {
                out.push(String::from_utf8(e).unwrap());
            }
        }
        if let Some(e) = parser.finish().unwrap() {
            out.push(String::from_utf8(e).unwrap());
        }
        out
    }

    const STREAM: &[u8] =
        b": keep-alive\r\n\r\nevent: message\r\ndata: {\"a\":1}\r\n\r\ndata:{\"b\":2}\n\ndata: x\ndata: y\r\rdata: [DONE]\n\n";

    #[test]
    fn whole_stream() {
        assert_eq!(
            events_in_pieces(&[STREAM]),
            ["{\"a\":1}", "{\"b\":2}", "x\ny", "[DONE]"]
        );
    }

    #[test]
    fn every_split_point_gives_the_same_events() {
        let whole = events_in_pieces(&[STREAM]);
        for i in 0..=STREAM.len() {
            for j in i..=STREAM.len() {
                let got = events_in_pieces(&[&STREAM[..i], &STREAM[i..j], &STREAM[j..]]);
                assert_eq!(got, whole, "split at {i} and {j}");
            }
        }
    }

    #[test]
    fn byte_by_byte() {
        let pieces: Vec<&[u8]> = STREAM.chunks(1).collect();
        assert_eq!(events_in_pieces(&pieces), events_in_pieces(&[STREAM]));
    }

    #[test]
    fn last_event_without_blank_line_and_comment_only_streams() {
        assert_eq!(events_in_pieces(&[b"data: [DONE]"]), ["[DONE]"]);
        assert_eq!(events_in_pieces(&[b": ping\n\n: ping\n"]), Vec::<String>::new());
        assert_eq!(events_in_pieces(&[b"data\n\n"]), [""]);
    }

    #[test]
    fn oversized_line_is_refused() {
        let mut parser = SseParser::new();
        parser.push(&vec![b'a'; MAX_EVENT_BYTES + 1]);
        assert!(parser.next_event().is_err());
    }
}
