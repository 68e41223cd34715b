//! The live trail: every message as it flows, built from what the system already keeps. The
//! channels' streams give what was received and what was sent (a dispatch to FULLSEND, a reply,
//! a tool request, a design's progress, `experiment_ready`); the decision log gives what was
//! decided and why. Each item carries its message's W3C trace id, which every message caused by
//! an escalation inherits, so the page groups one escalation's items into one card.
//!
//! [`Feed`] polls both sources and broadcasts new items to the
//! server-sent-event streams; [`snapshot`] reads the recent past for a page that just opened.

use std::io::{Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};

use serde::Serialize;
use serde_json::{Map, Value, json};

use crate::bus::store::{ChannelKeys, Conn};
use crate::support::config::Channels;

/// One step of a message's way through the system.
#[derive(Debug, Clone, Serialize)]
pub struct Item {
    /// Unique and stable: `stream:<key>:<entry id>` or `decision:<msg_id>:<logged_at>`.
    pub key: String,
    /// The W3C trace id its card is grouped by.
    pub trace_id: String,
    /// Unix milliseconds.
    pub at_ms: i64,
    /// `received`, `decided`, `dispatched`, `replied`, `tool_requested`, `design`,
    /// `experiment_ready` or `published`.
    pub kind: String,
    /// The channel, for stream items.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub channel: Option<String>,
    /// The message (stream items) or the decision (decision items), long texts cut.
    pub body: Value,
}

/// The channels the trail reads, with the kind of item each entry is.
pub fn watched(channels: &Channels) -> Vec<String> {
    vec![
        channels.to_orchestrator.clone(),
        channels.to_fullsend.clone(),
        channels.from_orchestrator.clone(),
        channels.builder_tasks.clone(),
    ]
}

fn kind_of(channel: &str, channels: &Channels, msg: &Map<String, Value>) -> &'static str {
    let msg_type = msg.get("type").and_then(Value::as_str).unwrap_or_default();
    if channel == channels.to_orchestrator {
        match msg_type {
            "experiment_ready" => "experiment_ready",
            "design_progress" => "design",
            _ => "received",
        }
    } else if channel == channels.to_fullsend {
        "dispatched"
    } else if channel == channels.from_orchestrator {
        "replied"
    } else if channel == channels.builder_tasks {
        "tool_requested"
    } else {
        "published"
    }
}

/// Longest text kept per field of an item (a model that rambles must not fill the page).
const MAX_TEXT: usize = 16 * 1024;

/// `value` with every string cut to [`MAX_TEXT`] bytes.
fn bounded(value: Value) -> Value {
    match value {
        Value::String(s) if s.len() > MAX_TEXT => {
            let mut end = MAX_TEXT;
            while !s.is_char_boundary(end) {
                end -= 1;
            }
            Value::String(format!("{}… [cut: {} bytes]", &s[..end], s.len()))
        }
        Value::Array(a) => Value::Array(a.into_iter().map(bounded).collect()),
        Value::Object(o) => Value::Object(o.into_iter().map(|(k, v)| (k, bounded(v))).collect()),
        other => other,
    }
}

/// Largest item sent whole (a snapshot holds up to a thousand).
const MAX_ITEM: usize = 64 * 1024;

/// The fields a page shows, kept when an item is too large to send whole.
const SHOWN: &[&str] = &[
    "type",
    "action",
    "reasoning",
    "priority",
    "model",
    "provider",
    "usage",
    "cost_usd",
    "experiment_id",
    "request_id",
    "msg_id",
    "content",
    "idea",
    "summary",
    "traceparent",
];

/// `body` itself when it serializes to at most [`MAX_ITEM`] bytes; else only the fields the
/// page shows, each at most 4 KiB, and a `cut` saying how large the whole was (it is still in
/// its stream or the decision log).
fn capped(body: Value) -> Value {
    let size = serde_json::to_string(&body).map_or(0, |s| s.len());
    if size <= MAX_ITEM {
        return body;
    }
    let mut kept = Map::new();
    for key in SHOWN {
        if let Some(v) = body.get(*key) {
            let text = v.to_string();
            let v = if text.len() > 4096 {
                let mut end = 4096;
                while !text.is_char_boundary(end) {
                    end -= 1;
                }
                Value::String(format!("{}…", &text[..end]))
            } else {
                v.clone()
            };
            kept.insert((*key).to_string(), v);
        }
    }
    kept.insert(
        "cut".into(),
        json!(format!("{size} bytes: only the main fields are shown; the whole is in its stream or the decision log")),
    );
    Value::Object(kept)
}

fn stream_item(channel: &str, channels: &Channels, id: &str, data: &str) -> Item {
    let msg: Map<String, Value> = match serde_json::from_str(data) {
        Ok(Value::Object(m)) => m,
        _ => {
            let mut m = Map::new();
            m.insert("unparsed".into(), Value::String(data.to_string()));
            m
        }
    };
    let at_ms = id
        .split('-')
        .next()
        .and_then(|ms| ms.parse().ok())
        .unwrap_or_default();
    Item {
        key: format!("stream:{channel}:{id}"),
        trace_id: crate::support::msg::trace_id_of(&msg, Some(id)),
        at_ms,
        kind: kind_of(channel, channels, &msg).into(),
        channel: Some(channel.to_string()),
        body: capped(bounded(Value::Object(msg))),
    }
}

fn decision_item(line: &str) -> Option<Item> {
    let record: Value = serde_json::from_str(line).ok()?;
    let decision = record.get("decision")?.clone();
    let logged_at = record["logged_at"].as_str().unwrap_or_default().to_string();
    let at_ms = jiff::Timestamp::strptime("%Y-%m-%dT%H:%M:%S%.f%:z", &logged_at)
        .map(|t| t.as_millisecond())
        .unwrap_or_default();
    let trace_id = match record["trace_id"].as_str() {
        Some(t) => t.to_string(),
        None => {
            let msg = decision["message"].as_object().cloned().unwrap_or_default();
            crate::support::msg::trace_id_of(&msg, None)
        }
    };
    Some(Item {
        key: format!(
            "decision:{}:{logged_at}",
            record["msg_id"].as_str().unwrap_or("-")
        ),
        trace_id,
        at_ms,
        kind: "decided".into(),
        channel: None,
        body: capped(bounded(decision)),
    })
}

type Entries = Vec<(String, std::collections::HashMap<String, String>)>;

/// The last `per_channel` entries of each watched channel and the last decisions, oldest first.
pub async fn snapshot(
    conn: Option<&mut Conn>,
    channels: &Channels,
    decision_log: &Path,
    per_channel: usize,
) -> Vec<Item> {
    let mut items = Vec::new();
    if let Some(conn) = conn {
        let mut pipe = redis::pipe();
        let watched = watched(channels);
        for channel in &watched {
            pipe.cmd("XREVRANGE")
                .arg(ChannelKeys::new(channel).stream())
                .arg("+")
                .arg("-")
                .arg("COUNT")
                .arg(per_channel);
        }
        match pipe.query_async::<Vec<Entries>>(conn).await {
            Ok(all) => {
                for (channel, entries) in watched.iter().zip(all) {
                    for (id, fields) in entries {
                        let data = fields.get("data").map(String::as_str).unwrap_or_default();
                        items.push(stream_item(channel, channels, &id, data));
                    }
                }
            }
            Err(err) => tracing::debug!("trail: reading the streams: {err:#}"),
        }
    }
    let (lines, _) = tail_lines(decision_log, 4 * 1024 * 1024, per_channel);
    items.extend(lines.iter().filter_map(|l| decision_item(l)));
    items.sort_by_key(|i| i.at_ms);
    items
}

/// The last `count` complete lines of the file's last `window` bytes, and the file's length.
fn tail_lines(path: &Path, window: u64, count: usize) -> (Vec<String>, u64) {
    let Ok(mut file) = std::fs::File::open(path) else {
        return (Vec::new(), 0);
    };
    let len = file.metadata().map(|m| m.len()).unwrap_or(0);
    let start = len.saturating_sub(window);
    let mut bytes = Vec::new();
    if file.seek(SeekFrom::Start(start)).is_err()
        || file.take(len - start).read_to_end(&mut bytes).is_err()
    {
        return (Vec::new(), len);
    }
    // The window may start inside a character; that first line is dropped below anyway.
    let text = String::from_utf8_lossy(&bytes);
    let mut lines: Vec<&str> = text.lines().collect();
    if start > 0 && !lines.is_empty() {
        lines.remove(0); // cut in the middle
    }
    let from = lines.len().saturating_sub(count);
    (lines[from..].iter().map(|l| l.to_string()).collect(), len)
}

/// Follows the watched streams and the decision log, broadcasting new items.
#[derive(Debug)]
pub struct Feed {
    sender: tokio::sync::broadcast::Sender<Item>,
}

impl Feed {
    /// Starts following from now (once Redis answers); polls every `every`.
    pub async fn start(
        conn: crate::console::Redis,
        channels: Channels,
        decision_log: PathBuf,
        every: std::time::Duration,
    ) -> Feed {
        let (sender, _) = tokio::sync::broadcast::channel(1024);
        let tx = sender.clone();
        let mut follow = Follow::new(channels, decision_log);
        follow.skip_logged();
        let mut started = match conn.get().await {
            Some(mut c) => follow.start_at_end(&mut c).await,
            None => false,
        };
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(every).await;
                let mut items = follow.new_decisions();
                if let Some(mut c) = conn.get().await {
                    if started {
                        items.extend(follow.poll(&mut c).await);
                    } else {
                        // From Redis's first answer on; what came before is in each page's
                        // snapshot. Following does not wait for a first page: a page's
                        // snapshot and the items broadcast after it must leave no gap.
                        started = follow.start_at_end(&mut c).await;
                    }
                }
                items.sort_by_key(|i| i.at_ms);
                for item in items {
                    // No page watching is not an error.
                    let _ = tx.send(item);
                }
            }
        });
        Feed { sender }
    }

    /// New items from now on.
    pub fn subscribe(&self) -> tokio::sync::broadcast::Receiver<Item> {
        self.sender.subscribe()
    }
}

/// Where following has got to in each source.
struct Follow {
    channels: Channels,
    decision_log: PathBuf,
    last_ids: Vec<String>,
    log_offset: u64,
}

impl Follow {
    fn new(channels: Channels, decision_log: PathBuf) -> Follow {
        let n = watched(&channels).len();
        Follow {
            channels,
            decision_log,
            last_ids: vec!["0-0".into(); n],
            log_offset: 0,
        }
    }

    /// Starts the decision log at its end (what is in it already is in the snapshots).
    fn skip_logged(&mut self) {
        self.log_offset = std::fs::metadata(&self.decision_log)
            .map(|m| m.len())
            .unwrap_or(0);
    }

    /// Starts every stream at its last entry; false (try again) when Redis did not answer.
    async fn start_at_end(&mut self, conn: &mut Conn) -> bool {
        let mut pipe = redis::pipe();
        for channel in watched(&self.channels) {
            pipe.cmd("XREVRANGE")
                .arg(ChannelKeys::new(&channel).stream())
                .arg("+")
                .arg("-")
                .arg("COUNT")
                .arg(1);
        }
        match pipe.query_async::<Vec<Entries>>(conn).await {
            Ok(all) => {
                for (i, last) in all.into_iter().enumerate() {
                    self.last_ids[i] = last
                        .into_iter()
                        .next()
                        .map(|(id, _)| id)
                        .unwrap_or_else(|| "0-0".into());
                }
                true
            }
            Err(err) => {
                tracing::debug!("trail: finding the streams' ends: {err:#}");
                false
            }
        }
    }

    async fn poll(&mut self, conn: &mut Conn) -> Vec<Item> {
        let mut items = Vec::new();
        let watched = watched(&self.channels);
        let mut pipe = redis::pipe();
        for (channel, last) in watched.iter().zip(&self.last_ids) {
            pipe.cmd("XRANGE")
                .arg(ChannelKeys::new(channel).stream())
                .arg(format!("({last}"))
                .arg("+")
                .arg("COUNT")
                .arg(500);
        }
        match pipe.query_async::<Vec<Entries>>(conn).await {
            Ok(all) => {
                for (i, entries) in all.into_iter().enumerate() {
                    for (id, fields) in entries {
                        let data = fields.get("data").map(String::as_str).unwrap_or_default();
                        items.push(stream_item(&watched[i], &self.channels, &id, data));
                        self.last_ids[i] = id;
                    }
                }
            }
            Err(err) => tracing::debug!("trail: following the streams: {err:#}"),
        }
        items
    }

    /// The decision lines appended since the last poll (from the start of a rotated log).
    fn new_decisions(&mut self) -> Vec<Item> {
        let Ok(mut file) = std::fs::File::open(&self.decision_log) else {
            return Vec::new();
        };
        let len = file.metadata().map(|m| m.len()).unwrap_or(0);
        if len < self.log_offset {
            self.log_offset = 0;
        }
        if len == self.log_offset || file.seek(SeekFrom::Start(self.log_offset)).is_err() {
            return Vec::new();
        }
        let mut bytes = Vec::new();
        if file
            .take(len - self.log_offset)
            .read_to_end(&mut bytes)
            .is_err()
        {
            return Vec::new();
        }
        // Only whole lines: a line being written is read at the next poll.
        let complete = bytes.iter().rposition(|b| *b == b'\n').map_or(0, |i| i + 1);
        self.log_offset += complete as u64;
        String::from_utf8_lossy(&bytes[..complete])
            .lines()
            .filter_map(decision_item)
            .collect()
    }
}

/// The trail as JSON: its items, and the trace ids newest first.
pub fn as_json(items: &[Item]) -> Value {
    let mut traces: Vec<(&str, i64)> = Vec::new();
    for item in items {
        match traces.iter_mut().find(|(t, _)| *t == item.trace_id) {
            Some(t) => t.1 = t.1.max(item.at_ms),
            None => traces.push((&item.trace_id, item.at_ms)),
        }
    }
    traces.sort_by_key(|t| std::cmp::Reverse(t.1));
    json!({
        "v": 1,
        "traces": traces.iter().map(|(t, _)| t).collect::<Vec<_>>(),
        "items": items,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_item_too_large_to_send_keeps_its_main_fields_only() {
        let many: Vec<String> = (0..100)
            .map(|i| format!("{i} {}", "x".repeat(2000)))
            .collect();
        let body = bounded(json!({"type": "escalation", "content": "hello", "extra": many}));
        let cut = capped(body);
        assert_eq!(cut["type"], "escalation");
        assert_eq!(cut["content"], "hello");
        assert!(cut.get("extra").is_none());
        assert!(cut["cut"].as_str().is_some_and(|c| c.contains("bytes")));
        assert!(serde_json::to_string(&cut).expect("json").len() < MAX_ITEM);
        let small = json!({"type": "escalation", "extra": [1, 2]});
        assert_eq!(capped(small.clone()), small);
    }

    #[test]
    fn long_texts_are_cut_on_a_character_boundary() {
        let long = "é".repeat(MAX_TEXT);
        let cut = bounded(json!({"reasoning": long}));
        let text = cut["reasoning"].as_str().expect("text");
        assert!(text.len() < MAX_TEXT + 64, "{}", text.len());
        assert!(text.ends_with("bytes]"));
    }

    #[test]
    fn the_tail_of_a_log_survives_a_window_that_starts_inside_a_character() {
        let dir = tempfile::tempdir().expect("dir");
        let path = dir.path().join("decisions.jsonl");
        let line = format!("{}\n", "é".repeat(50));
        std::fs::write(&path, line.repeat(10)).expect("write");
        // 101 bytes per line: a window of 151 starts in the middle of an `é`.
        let (lines, len) = tail_lines(&path, 151, 5);
        assert_eq!(len, 1010);
        assert_eq!(lines, vec!["é".repeat(50)]);
    }

    #[test]
    fn a_decision_line_keeps_its_trace_and_time() {
        let line = r#"{"logged_at":"2026-12-03T10:00:00.000000+00:00","msg_id":"m1","trace_id":"0af7651916cd43dd8448eb211c80319c","decision":{"action":"no_action","reasoning":"<script>x</script>"}}"#;
        let item = decision_item(line).expect("item");
        assert_eq!(item.trace_id, "0af7651916cd43dd8448eb211c80319c");
        assert_eq!(item.kind, "decided");
        assert_eq!(item.at_ms, 1_796_292_000_000);
        assert_eq!(item.body["reasoning"], "<script>x</script>");
        assert!(decision_item("not json").is_none());
    }
}
