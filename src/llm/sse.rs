//! Server-sent events: splits a byte stream into events, whatever the chunk
//! boundaries are, in time linear in the bytes received and with a bound on
//! the size of one event.
//!
//! Hand-written rather than a crate: the providers need only `event:` and
//! `data:` fields, and the parser is ~100 lines with no dependencies. What a
//! crate would add (`id:`, `retry:`, reconnection) the Messages, Gemini and
//! chat-completions streams do not use.

/// The largest event the parser holds before giving up. A real event is a
/// few kilobytes (a text delta, a usage block); a stream that grows one event
/// past this is broken or hostile, and the call fails instead of using memory
/// without bound.
pub(crate) const MAX_EVENT_BYTES: usize = 8 * 1024 * 1024;

/// One SSE event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Event {
    /// The `event:` field ("message" when absent).
    pub(crate) name: String,
    /// The `data:` lines, joined by newlines.
    pub(crate) data: String,
}

/// An event grew past [`MAX_EVENT_BYTES`] without ending.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct EventTooLarge(pub(crate) usize);

impl std::fmt::Display for EventTooLarge {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "an SSE event grew to {} bytes without ending (limit {MAX_EVENT_BYTES})",
            self.0
        )
    }
}

/// Accumulates bytes and yields complete events.
#[derive(Debug, Default)]
pub(crate) struct Parser {
    buffer: Vec<u8>,
    /// Where the unfinished event starts in `buffer` (bytes before it are consumed).
    start: usize,
    /// Where the search for the next blank line resumes: bytes before it were
    /// already looked at and hold no separator.
    scanned: usize,
    /// Bytes examined in total, so a test can prove the scan is linear.
    #[cfg(test)]
    examined: usize,
}

impl Parser {
    /// Feeds a chunk and returns the events it completed.
    pub(crate) fn feed(&mut self, chunk: &[u8]) -> Result<Vec<Event>, EventTooLarge> {
        self.buffer.extend_from_slice(chunk);
        let mut events = Vec::new();
        while let Some((end, sep_len)) = self.find_event_end() {
            if let Some(event) = parse_event(&self.buffer[self.start..end]) {
                events.push(event);
            }
            self.start = end + sep_len;
            self.scanned = self.start;
        }
        // A separator is at most 4 bytes, so only the last 3 can begin one
        // that the next chunk completes; everything before them is settled.
        self.scanned = self.buffer.len().saturating_sub(3).max(self.start);
        self.compact();
        let pending = self.buffer.len() - self.start;
        if pending > MAX_EVENT_BYTES {
            return Err(EventTooLarge(pending));
        }
        Ok(events)
    }

    /// Whatever is left when the stream ends, as a last event.
    pub(crate) fn finish(&mut self) -> Option<Event> {
        let raw = std::mem::take(&mut self.buffer);
        let rest = raw.get(self.start..).unwrap_or_default();
        self.start = 0;
        self.scanned = 0;
        parse_event(rest)
    }

    /// The end of the next event (a blank line: `\n\n`, `\r\n\r\n` or `\r\r`),
    /// searched from where the last search stopped.
    fn find_event_end(&mut self) -> Option<(usize, usize)> {
        let buf = &self.buffer;
        let mut i = self.scanned;
        while i < buf.len() {
            #[cfg(test)]
            {
                self.examined += 1;
            }
            if buf[i] == b'\n' || buf[i] == b'\r' {
                let rest = &buf[i..];
                if rest.starts_with(b"\r\n\r\n") {
                    return Some((i, 4));
                }
                if rest.starts_with(b"\n\n") || rest.starts_with(b"\r\r") {
                    return Some((i, 2));
                }
            }
            i += 1;
        }
        None
    }

    /// Drops consumed bytes, but only when they are at least half the buffer,
    /// so that a long event arriving in small chunks is not copied again for
    /// every chunk (amortised linear).
    fn compact(&mut self) {
        if self.start == self.buffer.len() {
            self.buffer.clear();
        } else if self.start * 2 >= self.buffer.len() {
            self.buffer.drain(..self.start);
        } else {
            return;
        }
        self.scanned -= self.start;
        self.start = 0;
    }
}

fn parse_event(raw: &[u8]) -> Option<Event> {
    let text = String::from_utf8_lossy(raw);
    let mut name = String::new();
    let mut data: Vec<&str> = Vec::new();
    for line in text.split(['\n', '\r']) {
        if line.is_empty() || line.starts_with(':') {
            continue;
        }
        let (field, value) = match line.split_once(':') {
            Some((f, v)) => (f, v.strip_prefix(' ').unwrap_or(v)),
            None => (line, ""),
        };
        match field {
            "event" => name = value.to_string(),
            "data" => data.push(value),
            _ => {}
        }
    }
    if name.is_empty() && data.is_empty() {
        return None;
    }
    Some(Event {
        name: if name.is_empty() {
            "message".into()
        } else {
            name
        },
        data: data.join("\n"),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn survives_any_chunking() {
        let stream = b"event: ping\ndata: {}\n\n: comment\n\nevent: content_block_delta\r\ndata: {\"a\":1}\r\n\r\ndata: x\ndata: y\n\n";
        for size in 1..stream.len() {
            let mut parser = Parser::default();
            let mut events = Vec::new();
            for chunk in stream.chunks(size) {
                events.extend(parser.feed(chunk).unwrap());
            }
            events.extend(parser.finish());
            assert_eq!(events.len(), 3, "chunk size {size}");
            assert_eq!(events[0].name, "ping");
            assert_eq!(events[1].name, "content_block_delta");
            assert_eq!(events[1].data, "{\"a\":1}");
            assert_eq!(events[2].data, "x\ny");
        }
    }

    #[test]
    fn a_trailing_event_without_blank_line_is_returned_by_finish() {
        let mut parser = Parser::default();
        assert!(parser.feed(b"data: a\n\ndata: b").unwrap().len() == 1);
        assert_eq!(parser.finish().unwrap().data, "b");
    }

    #[test]
    fn scanning_is_linear_in_the_bytes_received() {
        // One 1 MiB event in 64-byte chunks, then many small ones: a parser that
        // rescans from the start of its buffer examines ~8 GiB here.
        let mut stream = b"data: ".to_vec();
        stream.extend(std::iter::repeat_n(b'x', 1 << 20));
        stream.extend_from_slice(b"\n\n");
        for _ in 0..10_000 {
            stream.extend_from_slice(b"event: e\ndata: {}\n\n");
        }
        let mut parser = Parser::default();
        let mut events = 0;
        for chunk in stream.chunks(64) {
            events += parser.feed(chunk).unwrap().len();
        }
        assert_eq!(events, 10_001);
        assert!(
            parser.examined <= stream.len() + 4 * stream.len().div_ceil(64),
            "examined {} bytes of {}",
            parser.examined,
            stream.len()
        );
    }

    #[test]
    fn an_event_that_never_ends_is_refused_at_the_bound() {
        let mut parser = Parser::default();
        let chunk = vec![b'x'; 1 << 20];
        let mut result = Ok(Vec::new());
        for _ in 0..=MAX_EVENT_BYTES / chunk.len() {
            result = parser.feed(&chunk);
            if result.is_err() {
                break;
            }
        }
        assert_eq!(result, Err(EventTooLarge(MAX_EVENT_BYTES + (1 << 20))));
    }
}
