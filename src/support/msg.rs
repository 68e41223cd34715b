//! Message envelopes: ids, timestamps and the correlation fields every
//! emitted message carries. Pure functions, no I/O.

use serde_json::{Map, Value};

/// A new message id: a UUIDv7, so ids sort by time and never collide.
pub fn new_msg_id() -> String {
    uuid::Uuid::now_v7().to_string()
}

/// Now, as ISO-8601 UTC with microseconds and `+00:00` (the original's `requested_at`).
pub fn now_iso_micros() -> String {
    jiff::Timestamp::now()
        .strftime("%Y-%m-%dT%H:%M:%S%.6f+00:00")
        .to_string()
}

/// Now, as `%Y-%m-%dT%H:%M:%SZ` (the format of the Redis hashes' timestamps).
pub fn now_iso_seconds() -> String {
    jiff::Timestamp::now()
        .strftime("%Y-%m-%dT%H:%M:%SZ")
        .to_string()
}

/// Now, as Unix milliseconds.
pub fn now_millis() -> i64 {
    jiff::Timestamp::now().as_millisecond()
}

/// True if `id` is safe to embed in a Redis key, a path or a log line:
/// 1–128 characters of `[A-Za-z0-9_.:-]`, not starting with `.`.
pub fn is_safe_id(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= 128
        && !id.starts_with('.')
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.' | b':'))
}

/// The W3C trace id of a message: the one its `traceparent` carries (so one escalation is one
/// trace across both services), else one derived from its `msg_id` or its delivery's
/// `identity` (so a redelivery stays in the same trace), else a fresh one. 32 hex digits.
pub fn trace_id_of(msg: &Map<String, Value>, identity: Option<&str>) -> String {
    if let Some(id) = msg
        .get("traceparent")
        .and_then(Value::as_str)
        .and_then(|tp| tp.split('-').nth(1))
        .filter(|id| {
            id.len() == 32 && id.bytes().all(|b| b.is_ascii_hexdigit()) && *id != "0".repeat(32)
        })
    {
        return id.to_ascii_lowercase();
    }
    match msg_id_of(msg).or(identity) {
        Some(id) => uuid::Uuid::new_v5(&uuid::Uuid::NAMESPACE_OID, id.as_bytes())
            .simple()
            .to_string(),
        None => uuid::Uuid::now_v7().simple().to_string(),
    }
}

/// A `traceparent` header value in trace `trace_id` (W3C Trace Context, sampled): the span in
/// progress when it is in that trace (so what it causes nests under it), else a new span id.
pub fn traceparent(trace_id: &str) -> String {
    if let Some(tp) = crate::support::trace::current_traceparent(trace_id) {
        return tp;
    }
    let span = uuid::Uuid::now_v7().as_u64_pair().1 | 1;
    format!("00-{trace_id}-{span:016x}-01")
}

/// How many messages lie between `msg` and the one from outside that started its chain (0 for
/// that one, or for a message from a producer that does not count).
pub fn causation_depth(msg: &Map<String, Value>) -> u64 {
    msg.get("causation_depth")
        .and_then(Value::as_u64)
        .unwrap_or(0)
}

/// A message's text field `key`, trimmed; None when absent, not text, or blank.
pub fn text_field(msg: &Map<String, Value>, key: &str) -> Option<String> {
    msg.get(key)
        .and_then(Value::as_str)
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(str::to_string)
}

/// The `msg_id` of a message, when it has a safe one.
pub fn msg_id_of(msg: &Map<String, Value>) -> Option<&str> {
    msg.get("msg_id")
        .and_then(Value::as_str)
        .filter(|id| is_safe_id(id))
}

/// Adds `msg_id` (new), `causation_id` (the cause's `msg_id`, if any) and
/// `timestamp` to an outgoing message, keeping fields that are already set.
pub fn stamp(message: &mut Map<String, Value>, cause: Option<&Map<String, Value>>) {
    if msg_id_of(message).is_none() {
        message.insert("msg_id".into(), Value::String(new_msg_id()));
    }
    if let Some(cause_id) = cause.and_then(msg_id_of) {
        message
            .entry("causation_id")
            .or_insert_with(|| Value::String(cause_id.to_string()));
    }
    // One hop further from the message that came from outside: a loop between fullsend's own
    // messages (a roundtable whose result asks for another) is stopped by its depth.
    if let Some(cause) = cause.filter(|c| !c.is_empty()) {
        message
            .entry("causation_depth")
            .or_insert_with(|| Value::from(causation_depth(cause) + 1));
    }
    // What a message causes is part of its trace: the console groups by it, and the spans of
    // the service that handles the effect join the cause's trace.
    if let Some(cause) = cause.filter(|c| !c.is_empty())
        && !message.contains_key("traceparent")
    {
        message.insert(
            "traceparent".into(),
            Value::String(traceparent(&trace_id_of(cause, None))),
        );
    }
    message
        .entry("timestamp")
        .or_insert_with(|| Value::String(now_iso_micros()));
}

/// A short, single-line preview of text for logs (control characters removed).
pub fn preview(text: &str, max_chars: usize) -> String {
    let clean: String = text
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect();
    if clean.chars().count() <= max_chars {
        clean
    } else {
        let mut out: String = clean.chars().take(max_chars).collect();
        out.push('…');
        out
    }
}

/// The text at a dotted path of a JSON value (`payload.prd.name`, `metrics.0.name`): strings
/// as they are, numbers, booleans and objects written out as JSON; None when absent or null.
pub fn text_at(value: &Value, path: &str) -> Option<String> {
    let mut at = value;
    for part in path.split('.') {
        at = match at {
            Value::Object(map) => map.get(part)?,
            Value::Array(items) => items.get(part.parse::<usize>().ok()?)?,
            _ => return None,
        };
    }
    match at {
        Value::String(s) => Some(s.clone()),
        Value::Null => None,
        other => Some(other.to_string()),
    }
}

/// Experiment ids that may become keys: `[A-Za-z0-9_-]`, 1–64 characters.
pub fn valid_key_id(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= 64
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn safe_ids() {
        assert!(is_safe_id("exp_20240115_github_stars"));
        assert!(is_safe_id("0190f1c2-aaaa-7bbb-8ccc-123456789abc"));
        for bad in [
            "",
            "../x",
            "a b",
            "exp_1\r\nFLUSHALL",
            "{fs}",
            "*",
            ".hidden",
            "ａ",
        ] {
            assert!(!is_safe_id(bad), "{bad:?} should be rejected");
        }
        assert!(!is_safe_id(&"a".repeat(10_000)));
    }

    #[test]
    fn stamp_links_cause_and_keeps_existing() {
        let cause: Map<String, Value> =
            serde_json::from_str(r#"{"msg_id":"cause-1"}"#).expect("json");
        let mut out = Map::new();
        stamp(&mut out, Some(&cause));
        assert_eq!(out["causation_id"], "cause-1");
        let tp = out["traceparent"].as_str().expect("traceparent");
        assert_eq!(trace_id_of(&out, None), trace_id_of(&cause, None), "{tp}");
        let first = out["msg_id"].clone();
        stamp(&mut out, Some(&cause));
        assert_eq!(out["msg_id"], first);
        assert_ne!(new_msg_id(), new_msg_id());
    }
}
