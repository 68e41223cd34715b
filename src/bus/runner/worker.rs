//! One worker slot: it takes an entry, holds its lease while the handler runs (renewing it),
//! and then commits, retries with backoff or dead-letters the entry.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use futures_util::FutureExt;
use serde_json::{Map, Value, json};
use tokio::sync::watch;

use super::{Handler, Job, JobError, Options, Output, Stats};
use crate::bus::effects::{CommitStatus, Fence};
use crate::bus::store::Conn;

const RENEW_SCRIPT: &str = r"
local p = redis.call('XPENDING', KEYS[1], ARGV[1], ARGV[3], ARGV[3], 1)
if #p == 0 or p[1][2] ~= ARGV[2] or tostring(p[1][4]) ~= ARGV[4] then return 0 end
redis.call('XCLAIM', KEYS[1], ARGV[1], ARGV[2], 0, ARGV[3], 'JUSTID')
return 1
";
const DEAD_LETTER_SCRIPT: &str = r"
local p = redis.call('XPENDING', KEYS[1], ARGV[1], ARGV[3], ARGV[3], 1)
if #p == 0 or p[1][2] ~= ARGV[2] then return 0 end
redis.call('XADD', KEYS[2], '*', 'data', ARGV[4], 'error', ARGV[5], 'deliveries', ARGV[6], 'consumer', ARGV[2], 'group', ARGV[1], 'entry_id', ARGV[3], 'stream', KEYS[1], 'dead_at', ARGV[7])
redis.call('XACK', KEYS[1], ARGV[1], ARGV[3])
return 1
";
pub(super) struct Worker {
    pub(super) opts: Options,
    pub(super) keys: crate::bus::store::ChannelKeys,
    pub(super) stream: String,
    pub(super) dlq: String,
    pub(super) consumer: String,
    pub(super) stats: Arc<Stats>,
    pub(super) output: Output,
    pub(super) last_error: Arc<std::sync::Mutex<String>>,
    pub(super) errors_key: String,
    pub(super) failures_key: String,
    pub(super) in_flight: std::sync::Mutex<std::collections::HashSet<String>>,
    /// Where a failed attempt schedules its own retry: (entry id, when, whether the retry
    /// counts as a delivery).
    pub(super) retries: tokio::sync::mpsc::UnboundedSender<(String, std::time::Instant, bool)>,
}

/// How long the owner waits before it retries an entry that failed on delivery `n`: 1 s, 2 s,
/// 4 s … but always well inside the lease, so the owner retries it before anyone else may.
pub(super) fn retry_delay(deliveries: u64, lease: std::time::Duration) -> std::time::Duration {
    let doubling = std::time::Duration::from_secs(1 << deliveries.saturating_sub(1).min(10));
    doubling
        .min(lease / 2)
        .max(std::time::Duration::from_millis(100))
}
/// A random 50–550 ms: how long a message whose decision met a newer state waits before it is
/// decided again (random, so writers that collided spread out).
pub(super) fn conflict_delay(entry_id: &str, deliveries: u64) -> std::time::Duration {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write(entry_id.as_bytes());
    h.write_u64(deliveries);
    std::time::Duration::from_millis(50 + h.finish() % 500)
}
/// One stream entry: id and fields (None when the entry was deleted).
pub(super) type Entry = (String, Option<Vec<(String, String)>>, u64);
/// Deliveries that end without a recorded failure (the listener was killed
/// mid-message) are tolerated up to this multiple of `--max-deliveries`, so a
/// kill storm does not dead-letter healthy messages, while a message that
/// kills its listener every time still ends in the dead-letter stream.
const CRASH_ALLOWANCE: u64 = 3;
impl Worker {
    /// Marks an entry as being worked on here; false if it already is.
    pub(super) fn claim(&self, entry_id: &str) -> bool {
        self.in_flight
            .lock()
            .map(|mut set| set.insert(entry_id.to_string()))
            .unwrap_or(false)
    }

    /// Unmarks an entry.
    pub(super) fn release(&self, entry_id: &str) {
        if let Ok(mut set) = self.in_flight.lock() {
            set.remove(entry_id);
        }
    }

    pub(super) fn note_error(&self, text: &str) {
        if let Ok(mut e) = self.last_error.lock() {
            *e = crate::support::msg::preview(text, 300);
        }
    }

    pub(super) async fn process<H: Handler>(&self, entry: Entry, handler: Arc<H>, mut conn: Conn) {
        let (entry_id, fields, known_deliveries) = entry;
        let deliveries = if known_deliveries > 0 {
            known_deliveries
        } else {
            match self.deliveries(&mut conn, &entry_id).await {
                Ok(Some(n)) => n,
                Ok(None) => {
                    // Acknowledged or taken over meanwhile: not ours to handle.
                    tracing::info!("entry {entry_id} is no longer pending here; skipping it");
                    return;
                }
                Err(err) => {
                    tracing::warn!("entry {entry_id}: {err:#}; leaving it pending");
                    return;
                }
            }
        };
        let Some(fields) = fields else {
            // The body was trimmed or deleted: nothing to do but acknowledge.
            tracing::warn!("entry {entry_id} has no body; acknowledging it");
            let _: Result<i64, _> = redis::cmd("XACK")
                .arg(&self.stream)
                .arg(&self.opts.group)
                .arg(&entry_id)
                .query_async(&mut conn)
                .await;
            return;
        };
        let raw = fields
            .iter()
            .find(|(k, _)| k == "data")
            .map(|(_, v)| v.clone());
        let message = match parse_entry(&fields) {
            Ok(m) => m,
            Err(reason) => {
                self.dead_letter(
                    &mut conn,
                    &entry_id,
                    raw.unwrap_or_default(),
                    &reason,
                    deliveries,
                )
                .await;
                return;
            }
        };
        let payload = raw.unwrap_or_else(|| Value::Object(message.clone()).to_string());
        let failures: u64 = if deliveries > 1 {
            redis::cmd("HGET")
                .arg(&self.failures_key)
                .arg(&entry_id)
                .query_async::<Option<u64>>(&mut conn)
                .await
                .ok()
                .flatten()
                .unwrap_or(0)
        } else {
            0
        };
        if failures >= self.opts.max_deliveries
            || deliveries > self.opts.max_deliveries * CRASH_ALLOWANCE
        {
            let last: Option<String> = redis::cmd("HGET")
                .arg(&self.errors_key)
                .arg(&entry_id)
                .query_async(&mut conn)
                .await
                .ok()
                .flatten();
            let reason = format!(
                "gave up after {} deliveries ({failures} failed, the rest cut short); last error: {}",
                deliveries - 1,
                last.unwrap_or_else(
                    || "none recorded (the listener died mid-message each time?)".into()
                )
            );
            self.dead_letter(&mut conn, &entry_id, payload, &reason, deliveries)
                .await;
            return;
        }
        let mut message = message;
        let identity = crate::support::msg::msg_id_of(&message)
            .map(str::to_string)
            .unwrap_or_else(|| entry_id.clone());
        // Messages from producers that set no id get the entry id, so what
        // they cause can still name its cause.
        message
            .entry("msg_id")
            .or_insert_with(|| Value::String(identity.clone()));
        let job = Job {
            entry_id: entry_id.clone(),
            message,
            identity: identity.clone(),
            deliveries,
        };
        let fence = Fence {
            stream: self.stream.clone(),
            group: self.opts.group.clone(),
            consumer: self.consumer.clone(),
            entry_id: entry_id.clone(),
            deliveries,
        };

        let (cancel_tx, cancel_rx) = watch::channel(false);
        let renew = tokio::spawn(renew_loop(
            conn.clone(),
            fence.clone(),
            self.opts.lease,
            cancel_tx,
        ));
        // One trace per message: this span is its root here (or the child of the span that
        // sent it), and every log line of its handling carries its trace id.
        let trace_id = crate::support::msg::trace_id_of(&job.message, Some(&identity));
        let span = message_span(&self.opts, &job, &trace_id);
        let log_span = tracing::error_span!("message", trace_id = %trace_id);
        // A panicking handler is a failed delivery like any other (counted
        // toward the dead-letter cap), not a dead worker.
        let handling = handler.handle(job, conn.clone(), fence, cancel_rx);
        let result = span
            .run(tracing::Instrument::instrument(
                std::panic::AssertUnwindSafe(handling).catch_unwind(),
                log_span,
            ))
            .await
            .unwrap_or_else(|panic| {
                let text = panic
                    .downcast_ref::<&str>()
                    .map(|s| (*s).to_string())
                    .or_else(|| panic.downcast_ref::<String>().cloned())
                    .unwrap_or_else(|| "unknown panic".into());
                Err(JobError::Transient(anyhow::anyhow!(
                    "the handler panicked: {text}"
                )))
            });
        renew.abort();
        if let Err(
            JobError::Transient(err)
            | JobError::Permanent(err)
            | JobError::Paused(err)
            | JobError::Conflict(err),
        ) = &result
        {
            span.fail(format!("{err:#}"));
        }
        drop(span);
        match result {
            Ok(handled) => match &handled.commit {
                CommitStatus::Ok => {
                    self.stats.processed.fetch_add(1, Ordering::Relaxed);
                    crate::support::metrics::message(&self.opts.group, "processed");
                    if deliveries > 1 {
                        // Only a retried entry can have a recorded error.
                        let _: Result<(), _> = redis::pipe()
                            .cmd("HDEL")
                            .arg(&self.errors_key)
                            .arg(&entry_id)
                            .ignore()
                            .cmd("HDEL")
                            .arg(&self.failures_key)
                            .arg(&entry_id)
                            .ignore()
                            .query_async(&mut conn)
                            .await;
                    }
                    let mut line = handled.line;
                    if let Value::Object(m) = &mut line {
                        m.insert("entry_id".into(), json!(entry_id));
                        m.insert("deliveries".into(), json!(deliveries));
                    }
                    (self.output)(&line);
                }
                other => {
                    self.stats.skipped.fetch_add(1, Ordering::Relaxed);
                    crate::support::metrics::message(&self.opts.group, "skipped");
                    tracing::info!(
                        "entry {entry_id} ({identity}): {other:?}; nothing committed by this listener"
                    );
                }
            },
            Err(JobError::Transient(err)) => {
                self.stats.failed.fetch_add(1, Ordering::Relaxed);
                crate::support::metrics::message(&self.opts.group, "retried");
                let text = format!("{err:#}");
                self.note_error(&text);
                tracing::warn!(
                    "entry {entry_id} ({identity}) failed on delivery {deliveries}: {text}; it will be retried"
                );
                self.record_failure(&mut conn, &entry_id, &text).await;
                // The entry stays ours: retry it soon rather than after a whole lease.
                let due = std::time::Instant::now() + retry_delay(deliveries, self.opts.lease);
                let _ = self.retries.send((entry_id.clone(), due, true));
            }
            Err(JobError::Paused(err)) => {
                let text = format!("{err:#}");
                self.note_error(&text);
                tracing::warn!("entry {entry_id} ({identity}) waits: {text}");
                // No failure recorded, and the retry does not count a delivery: a paused
                // role must not walk its queue into the dead-letter stream.
                let due = std::time::Instant::now() + self.opts.lease / 2;
                let _ = self.retries.send((entry_id.clone(), due, false));
            }
            Err(JobError::Conflict(err)) => {
                tracing::info!("entry {entry_id} ({identity}) is decided again: {err:#}");
                // Spread the retries of writers that met each other, so they do not meet again.
                let due = std::time::Instant::now() + conflict_delay(&entry_id, deliveries);
                let _ = self.retries.send((entry_id.clone(), due, false));
            }
            Err(JobError::Permanent(err)) => {
                self.dead_letter(
                    &mut conn,
                    &entry_id,
                    payload,
                    &format!("{err:#}"),
                    deliveries,
                )
                .await;
            }
        }
    }

    /// Remembers why a delivery failed and counts it toward the dead-letter cap.
    pub(super) async fn record_failure(&self, conn: &mut Conn, entry_id: &str, text: &str) {
        let week = 7 * 24 * 3600;
        let _: Result<(), _> = redis::pipe()
            .cmd("HSET")
            .arg(&self.errors_key)
            .arg(entry_id)
            .arg(crate::support::msg::preview(text, 1000))
            .ignore()
            .cmd("EXPIRE")
            .arg(&self.errors_key)
            .arg(week)
            .ignore()
            .cmd("HINCRBY")
            .arg(&self.failures_key)
            .arg(entry_id)
            .arg(1)
            .ignore()
            .cmd("EXPIRE")
            .arg(&self.failures_key)
            .arg(week)
            .ignore()
            .query_async(conn)
            .await;
    }

    /// Times the entry was delivered, or None when it is no longer pending here.
    pub(super) async fn deliveries(
        &self,
        conn: &mut Conn,
        entry_id: &str,
    ) -> anyhow::Result<Option<u64>> {
        let reply: Vec<(String, String, u64, u64)> = redis::cmd("XPENDING")
            .arg(&self.stream)
            .arg(&self.opts.group)
            .arg(entry_id)
            .arg(entry_id)
            .arg(1)
            .query_async(conn)
            .await?;
        Ok(reply.first().filter(|r| r.1 == self.consumer).map(|r| r.3))
    }

    pub(super) async fn dead_letter(
        &self,
        conn: &mut Conn,
        entry_id: &str,
        payload: String,
        reason: &str,
        deliveries: u64,
    ) {
        if let Err(err) = self.say_last_word(conn, entry_id, &payload).await {
            tracing::warn!(
                "entry {entry_id}: its last word was not sent ({err:#}); it stays pending"
            );
            return;
        }
        let done: Result<i64, _> = redis::Script::new(DEAD_LETTER_SCRIPT)
            .key(&self.stream)
            .key(&self.dlq)
            .arg(&self.opts.group)
            .arg(&self.consumer)
            .arg(entry_id)
            .arg(&payload)
            .arg(reason)
            .arg(deliveries)
            .arg(crate::support::msg::now_iso_micros())
            .invoke_async(conn)
            .await;
        match done {
            Ok(1) => {
                self.stats.dead_lettered.fetch_add(1, Ordering::Relaxed);
                crate::support::metrics::message(&self.opts.group, "dead_lettered");
                self.note_error(reason);
                tracing::error!("entry {entry_id} dead-lettered to {}: {reason}", self.dlq);
                (self.output)(
                    &json!({"v": 1, "status": "dead_lettered", "entry_id": entry_id, "deliveries": deliveries, "error": reason, "dlq": self.dlq}),
                );
            }
            Ok(_) => tracing::info!("entry {entry_id}: no longer ours; not dead-lettered here"),
            Err(err) => tracing::warn!("dead-lettering {entry_id} failed: {err}; it stays pending"),
        }
    }
}
impl Worker {
    /// Commits the message's last word, if its handler left one (a follow-up to the person who
    /// was told to wait), before the message is given up. Marked as sent in the same commit,
    /// so a listener that dies before the dead-letter script sends it once, not twice.
    async fn say_last_word(
        &self,
        conn: &mut Conn,
        entry_id: &str,
        payload: &str,
    ) -> anyhow::Result<()> {
        let message: Option<Map<String, Value>> = serde_json::from_str(payload).ok();
        let identity = message
            .as_ref()
            .and_then(crate::support::msg::msg_id_of)
            .unwrap_or(entry_id);
        let key = self.keys.last_word(&self.opts.group, identity);
        let stored: Option<String> = redis::cmd("GET").arg(&key).query_async(conn).await?;
        let Some(stored) = stored else {
            return Ok(());
        };
        match serde_json::from_str::<crate::bus::effects::Effect>(&stored) {
            Ok(effect) => {
                crate::bus::effects::commit(conn, &[effect], Some(&format!("{key}:sent")), None)
                    .await?;
            }
            Err(err) => tracing::warn!("{key} is not an effect ({err}); nothing sent"),
        }
        Ok(())
    }
}

/// The message of an entry: the JSON object in field `data`, or (for entries
/// added by hand with other fields) the fields themselves.
pub(super) fn parse_entry(fields: &[(String, String)]) -> Result<Map<String, Value>, String> {
    if let Some((_, data)) = fields.iter().find(|(k, _)| k == "data") {
        return match serde_json::from_str::<Value>(data) {
            Ok(Value::Object(m)) => Ok(m),
            Ok(other) => Err(format!(
                "message is {}, not a JSON object",
                crate::support::io::json_kind(&other)
            )),
            Err(e) => Err(format!(
                "message is not JSON ({e}): {}",
                crate::support::msg::preview(data, 200)
            )),
        };
    }
    if fields.is_empty() {
        return Err("entry has no fields".into());
    }
    Ok(fields
        .iter()
        .map(|(k, v)| {
            (
                k.clone(),
                serde_json::from_str::<Value>(v)
                    .ok()
                    .filter(|j| j.is_object() || j.is_array())
                    .unwrap_or_else(|| Value::String(v.clone())),
            )
        })
        .collect())
}
/// Renews the lease every lease/3; flips `cancel` when it is lost.
async fn renew_loop(mut conn: Conn, fence: Fence, lease: Duration, cancel: watch::Sender<bool>) {
    let every = (lease / 3).max(Duration::from_millis(50));
    loop {
        tokio::time::sleep(every).await;
        let renewed: Result<i64, _> = redis::Script::new(RENEW_SCRIPT)
            .key(&fence.stream)
            .arg(&fence.group)
            .arg(&fence.consumer)
            .arg(&fence.entry_id)
            .arg(fence.deliveries)
            .invoke_async(&mut conn)
            .await;
        match renewed {
            Ok(1) => {}
            Ok(_) => {
                tracing::warn!(
                    "lease on {} lost to another consumer; abandoning it",
                    fence.entry_id
                );
                let _ = cancel.send(true);
                return;
            }
            // A Redis fault is not a lost lease: keep trying; the fenced commit decides.
            Err(err) => tracing::debug!("lease renewal of {} failed: {err}", fence.entry_id),
        }
    }
}

/// The root span of one delivery: `process <channel>`, with the messaging attributes.
fn message_span(
    opts: &super::Options,
    job: &super::Job,
    trace_id: &str,
) -> crate::support::trace::Span {
    use crate::support::trace::{self, kv};
    let name = format!("process {}", opts.channel);
    let traceparent = job.message.get("traceparent").and_then(Value::as_str);
    if !trace::enabled() {
        // No exporter: the span only carries the trace context; its attributes would be
        // built for nothing on every message.
        return trace::Span::message(name, trace_id, traceparent, Vec::new());
    }
    let msg_type = job
        .message
        .get("type")
        .and_then(Value::as_str)
        .unwrap_or("unknown")
        .to_string();
    trace::Span::message(
        name,
        trace_id,
        traceparent,
        vec![
            kv(trace::MESSAGING_SYSTEM, "redis"),
            kv(trace::MESSAGING_DESTINATION, opts.channel.clone()),
            kv(trace::MESSAGING_OPERATION, "process"),
            kv(trace::MESSAGING_MESSAGE_ID, job.identity.clone()),
            kv(trace::MESSAGE_TYPE, msg_type),
            kv(trace::ROLE, opts.group.clone()),
            kv(
                trace::DELIVERIES,
                i64::try_from(job.deliveries).unwrap_or(i64::MAX),
            ),
        ],
    )
}
