//! Server-sent events: splits a byte stream into events, whatever the chunk
//! boundaries are.

/// One SSE event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Event {
    /// The `event:` field ("message" when absent).
    pub(crate) name: String,
    /// The `data:` lines, joined by newlines.
    pub(crate) data: String,
}

/// Accumulates bytes and yields complete events.
#[derive(Debug, Default)]
pub(crate) struct Parser {
    buffer: Vec<u8>,
}

impl Parser {
    /// Feeds a chunk and returns the events it completed.
    pub(crate) fn feed(&mut self, chunk: &[u8]) -> Vec<Event> {
        self.buffer.extend_from_slice(chunk);
        let mut events = Vec::new();
        while let Some((end, sep_len)) = find_event_end(&self.buffer) {
            let raw: Vec<u8> = self.buffer.drain(..end + sep_len).collect();
            if let Some(event) = parse_event(&raw[..end]) {
                events.push(event);
            }
        }
        events
    }

    /// Whatever is left when the stream ends, as a last event.
    pub(crate) fn finish(&mut self) -> Option<Event> {
        let raw = std::mem::take(&mut self.buffer);
        parse_event(&raw)
    }
}

/// The end of the first event (a blank line: `\n\n`, `\r\n\r\n` or `\r\r`).
fn find_event_end(buf: &[u8]) -> Option<(usize, usize)> {
    let mut i = 0;
    while i < buf.len() {
        if buf[i..].starts_with(b"\r\n\r\n") {
            return Some((i, 4));
        }
        if buf[i..].starts_with(b"\n\n") || buf[i..].starts_with(b"\r\r") {
            return Some((i, 2));
        }
        i += 1;
    }
    None
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
                events.extend(parser.feed(chunk));
            }
            events.extend(parser.finish());
            assert_eq!(events.len(), 3, "chunk size {size}");
            assert_eq!(events[1].name, "content_block_delta");
            assert_eq!(events[1].data, "{\"a\":1}");
            assert_eq!(events[2].data, "x\ny");
        }
    }
}
