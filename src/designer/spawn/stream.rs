//! Reading the agent's stdout as it arrives: every line is kept in the call's log, the CLI's
//! `stream-json` events are turned into progress (each tool call, each API retry, the MCP
//! servers at start), and the time of the last byte is kept so a silent stream can be told
//! from a busy one.

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use serde_json::Value;
use tokio::io::{AsyncBufReadExt as _, AsyncWriteExt as _, BufReader};

/// One thing worth telling the operator while a call runs.
#[derive(Debug, Clone, PartialEq)]
pub enum AgentEvent {
    /// The session started: its MCP servers, and the ones that failed to connect.
    Started {
        /// The session id the CLI reports.
        session_id: Option<String>,
        /// `name: status` of each MCP server that is not connected.
        mcp_failed: Vec<String>,
    },
    /// The model called a tool.
    ToolCall {
        /// The tool's name (`Read`, `mcp__fullsend__submit_spec`, ...).
        name: String,
    },
    /// The CLI is retrying an API call.
    Retry {
        /// Which attempt.
        attempt: u64,
        /// Why (the API's status or error text).
        error: String,
    },
}

/// Receives events as they happen (the domain never prints; the caller decides how to show them).
#[derive(Clone)]
pub struct Observer(pub Arc<dyn Fn(&AgentEvent) + Send + Sync>);

impl std::fmt::Debug for Observer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Observer")
    }
}

/// What the reader saw, shared with the waiting side.
#[derive(Debug, Default)]
pub(super) struct Seen {
    /// Bytes read so far.
    pub(super) bytes: AtomicU64,
    /// Milliseconds since `start` of the last byte read.
    pub(super) last_ms: AtomicU64,
    /// Tool calls seen.
    pub(super) tool_calls: AtomicU64,
    /// MCP servers that failed to connect, from the init event.
    pub(super) mcp_failed: std::sync::Mutex<Vec<String>>,
}

/// The events one stdout line holds (none for a line that is not a known event).
pub(super) fn events_of(line: &str) -> Vec<AgentEvent> {
    let Ok(v) = serde_json::from_str::<Value>(line) else {
        return Vec::new();
    };
    let kind = v.get("type").and_then(Value::as_str).unwrap_or_default();
    let subtype = v.get("subtype").and_then(Value::as_str).unwrap_or_default();
    match (kind, subtype) {
        ("system", "init") => {
            let mut failed: Vec<String> = v
                .get("mcp_servers")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
                .filter_map(|s| {
                    let name = s.get("name").and_then(Value::as_str)?;
                    let status = s.get("status").and_then(Value::as_str).unwrap_or("unknown");
                    // `pending` is still connecting (the first tool call waits for it).
                    (!matches!(status, "connected" | "pending"))
                        .then(|| format!("{name}: {status}"))
                })
                .collect();
            failed.extend(
                v.get("mcp_server_errors")
                    .and_then(Value::as_array)
                    .into_iter()
                    .flatten()
                    .map(|e| e.as_str().map_or_else(|| e.to_string(), str::to_string)),
            );
            vec![AgentEvent::Started {
                session_id: v
                    .get("session_id")
                    .and_then(Value::as_str)
                    .map(str::to_string),
                mcp_failed: failed,
            }]
        }
        ("system", "api_retry") => vec![AgentEvent::Retry {
            attempt: v.get("attempt").and_then(Value::as_u64).unwrap_or(0),
            error: v
                .get("error_status")
                .map(|s| s.to_string())
                .or_else(|| {
                    v.get("error")
                        .map(|e| e.as_str().map_or_else(|| e.to_string(), str::to_string))
                })
                .unwrap_or_default(),
        }],
        ("assistant", _) => v
            .pointer("/message/content")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .filter(|c| c.get("type").and_then(Value::as_str) == Some("tool_use"))
            .filter_map(|c| c.get("name").and_then(Value::as_str))
            .map(|name| AgentEvent::ToolCall {
                name: name.to_string(),
            })
            .collect(),
        _ => Vec::new(),
    }
}

/// Copies `from` into the log file at `path` line by line, reporting events and activity.
/// Stops at EOF or once more than `max` bytes were read (the waiting side stops the call).
pub(super) async fn pump<R>(
    from: R,
    path: PathBuf,
    max: u64,
    started: Instant,
    seen: Arc<Seen>,
    observer: Option<Observer>,
    label: String,
) where
    R: tokio::io::AsyncRead + Unpin,
{
    let Ok(mut file) = tokio::fs::OpenOptions::new().append(true).open(&path).await else {
        return;
    };
    let mut reader = BufReader::new(from);
    let mut line = Vec::new();
    loop {
        line.clear();
        // A line longer than the cap still ends the loop: read_until stops at EOF.
        let n = match (&mut reader)
            .take(max.saturating_add(1))
            .read_until(b'\n', &mut line)
            .await
        {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        let total = seen.bytes.fetch_add(n as u64, Ordering::SeqCst) + n as u64;
        let now = u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX);
        seen.last_ms.store(now, Ordering::SeqCst);
        if file.write_all(&line).await.is_err() || total > max {
            break;
        }
        let text = String::from_utf8_lossy(&line);
        for event in events_of(text.trim()) {
            match &event {
                AgentEvent::ToolCall { .. } => {
                    seen.tool_calls.fetch_add(1, Ordering::SeqCst);
                }
                AgentEvent::Started { mcp_failed, .. } if !mcp_failed.is_empty() => {
                    if let Ok(mut failed) = seen.mcp_failed.lock() {
                        failed.extend(mcp_failed.iter().cloned());
                    }
                }
                _ => {}
            }
            match &observer {
                Some(o) => (o.0)(&event),
                None => log_event(&label, &event),
            }
        }
    }
    let _ = file.flush().await;
}

use tokio::io::AsyncReadExt as _;

/// The default way to show an event: a log line.
fn log_event(label: &str, event: &AgentEvent) {
    match event {
        AgentEvent::Started {
            session_id,
            mcp_failed,
        } => {
            if mcp_failed.is_empty() {
                tracing::info!(
                    "{label}: agent session {}",
                    session_id.as_deref().unwrap_or("?")
                );
            } else {
                tracing::warn!(
                    "{label}: MCP servers not connected: {}",
                    mcp_failed.join(", ")
                );
            }
        }
        AgentEvent::ToolCall { name } => tracing::info!("{label}: tool call {name}"),
        AgentEvent::Retry { attempt, error } => {
            tracing::warn!("{label}: API retry {attempt} ({error})");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_cli_events_become_progress() {
        let init = r#"{"type":"system","subtype":"init","session_id":"s1","mcp_servers":[{"name":"fullsend","status":"failed"},{"name":"x","status":"connected"},{"name":"slow","status":"pending"}]}"#;
        assert_eq!(
            events_of(init),
            [AgentEvent::Started {
                session_id: Some("s1".into()),
                mcp_failed: vec!["fullsend: failed".into()]
            }]
        );
        let tool = r#"{"type":"assistant","message":{"content":[{"type":"text","text":"hi"},{"type":"tool_use","name":"mcp__fullsend__tool_registry","input":{}}]}}"#;
        assert_eq!(
            events_of(tool),
            [AgentEvent::ToolCall {
                name: "mcp__fullsend__tool_registry".into()
            }]
        );
        let retry = r#"{"type":"system","subtype":"api_retry","attempt":2,"error_status":529}"#;
        assert_eq!(
            events_of(retry),
            [AgentEvent::Retry {
                attempt: 2,
                error: "529".into()
            }]
        );
        assert!(events_of("not json").is_empty());
        assert!(events_of(r#"{"type":"result"}"#).is_empty());
    }
}
