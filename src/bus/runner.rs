//! Durable listening: a channel's messages travel on a Redis stream read by a
//! consumer group per role. Entries are acknowledged only after their effects
//! commit (fenced to this consumer's lease), leases are renewed while work is
//! in flight, dead consumers' entries are reclaimed, poison entries go to a
//! dead-letter stream, and PUBLISH-only producers are bridged into the stream.

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::Context;
use futures_util::{FutureExt, StreamExt};
use serde_json::{Map, Value, json};
use tokio::sync::{Semaphore, watch};

use crate::bus::effects::{CommitStatus, Fence};
use crate::bus::store::{self, ChannelKeys, Conn};

/// How a listener runs.
#[derive(Debug, Clone)]
pub struct Options {
    /// Role name (also the consumer group).
    pub group: String,
    /// The channel whose stream is consumed.
    pub channel: String,
    /// Redis URL.
    pub redis_url: String,
    /// An explicit consumer name (default: `<host>:<n>`, the first free n).
    pub consumer: Option<String>,
    /// Messages handled at once.
    pub concurrency: usize,
    /// How long an entry stays ours without a renewal.
    pub lease: Duration,
    /// Deliveries before an entry is dead-lettered.
    pub max_deliveries: u64,
    /// How long in-flight work may finish after SIGTERM.
    pub grace: Duration,
    /// XREADGROUP block time.
    pub block: Duration,
    /// Exit when the stream is drained (tests, one-shot pipelines).
    pub once: bool,
    /// Bridge PUBLISH-only producers into the stream.
    pub ingest: bool,
    /// Further channels whose PUBLISHed messages this role also handles
    /// (bridged into its stream), e.g. the Executor's and Builder's results.
    pub also_ingest: Vec<String>,
}

/// One entry to handle.
#[derive(Debug, Clone)]
pub struct Job {
    /// The stream entry id.
    pub entry_id: String,
    /// The message.
    pub message: Map<String, Value>,
    /// The message's identity for dedup and memos: its `msg_id`, else the entry id.
    pub identity: String,
    /// Times delivered so far (1 = first).
    pub deliveries: u64,
}

/// What a handler did with a job.
#[derive(Debug)]
pub struct Handled {
    /// How the fenced commit ended.
    pub commit: CommitStatus,
    /// The JSON line to print.
    pub line: Value,
}

/// Why a job did not complete.
#[derive(Debug)]
pub enum JobError {
    /// Try again later (model down, Redis fault): the entry stays pending.
    Transient(anyhow::Error),
    /// Will never work (bad input): dead-letter it now.
    Permanent(anyhow::Error),
}

/// A role's message handler.
pub trait Handler: Send + Sync + 'static {
    /// Handles one job; commits its effects with `fence`. `cancel` flips when
    /// the lease is lost, and the handler should then stop without effects.
    fn handle(
        &self,
        job: Job,
        conn: Conn,
        fence: Fence,
        cancel: watch::Receiver<bool>,
    ) -> impl Future<Output = Result<Handled, JobError>> + Send;

    /// `Some(reason)` while new work must wait (e.g. the daily spend limit):
    /// the listener then reads nothing, so messages stay queued, undelivered.
    fn paused(&self, _conn: Conn) -> impl Future<Output = Option<String>> + Send {
        async { None }
    }
}

/// Counters of one listener run.
#[derive(Debug, Default)]
pub struct Stats {
    /// Committed.
    pub processed: AtomicU64,
    /// Failed (transient).
    pub failed: AtomicU64,
    /// Dead-lettered.
    pub dead_lettered: AtomicU64,
    /// Skipped as duplicates or lost leases.
    pub skipped: AtomicU64,
}

/// Where output lines go (the command layer prints them).
pub type Output = Arc<dyn Fn(&Value) + Send + Sync>;

const RENEW_SCRIPT: &str = r"
local p = redis.call('XPENDING', KEYS[1], ARGV[1], ARGV[3], ARGV[3], 1)
if #p == 0 or p[1][2] ~= ARGV[2] then return 0 end
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

/// Takes a PUBLISHed message into the stream once, however many listeners
/// hear it: by `msg_id` when it has one, else by content for a short window.
const INGEST_SCRIPT: &str = r"
local id = ARGV[2]
local ttl = ARGV[3]
if id == '' then
  id = 'sha1:' .. redis.sha1hex(ARGV[1])
  ttl = ARGV[4]
end
if not redis.call('SET', ARGV[5] .. id, '1', 'NX', 'EX', ttl) then return false end
return redis.call('XADD', KEYS[1], '*', 'data', ARGV[1])
";

/// Trims entries that every group is done with and that are older than the
/// retention; never an entry some group still needs.
const TRIM_SCRIPT: &str = r"
local function older(a, b)
  local am, as = string.match(a, '(%d+)-(%d+)')
  local bm, bs = string.match(b, '(%d+)-(%d+)')
  am, as, bm, bs = tonumber(am), tonumber(as), tonumber(bm), tonumber(bs)
  return am < bm or (am == bm and as < bs)
end
if redis.call('EXISTS', KEYS[1]) == 0 then return 0 end
local min = ARGV[1]
for _, g in ipairs(redis.call('XINFO', 'GROUPS', KEYS[1])) do
  local info = {}
  for i = 1, #g, 2 do info[g[i]] = g[i + 1] end
  local cand = info['last-delivered-id']
  if tonumber(info['pending']) > 0 then
    local p = redis.call('XPENDING', KEYS[1], info['name'], '-', '+', 1)
    if #p > 0 then cand = p[1][1] end
  end
  if older(cand, min) then min = cand end
end
return redis.call('XTRIM', KEYS[1], 'MINID', min)
";

const CLAIM_NAME_SCRIPT: &str = r"
local current = redis.call('HGET', KEYS[1], 'token')
if current and current ~= ARGV[2] then return 0 end
redis.call('HSET', KEYS[1], 'token', ARGV[1])
redis.call('PEXPIRE', KEYS[1], ARGV[3])
return 1
";

const HEARTBEAT_SCRIPT: &str = r"
local current = redis.call('HGET', KEYS[1], 'token')
if current and current ~= ARGV[1] then return 0 end
redis.call('HSET', KEYS[1], 'token', ARGV[1], unpack(ARGV, 3))
redis.call('PEXPIRE', KEYS[1], ARGV[2])
return 1
";

/// The heartbeat key of a listener.
pub fn heartbeat_key(group: &str, consumer: &str) -> String {
    format!("fullsend:listeners:{group}:{consumer}")
}

const HEARTBEAT_EVERY: Duration = Duration::from_secs(2);

/// Runs a listener until shutdown (or, with `once`, until the stream is drained).
pub async fn run<H: Handler>(
    opts: Options,
    handler: Arc<H>,
    mut shutdown: watch::Receiver<bool>,
    output: Output,
) -> anyhow::Result<Arc<Stats>> {
    let keys = ChannelKeys::new(&opts.channel);
    let stream = keys.stream();
    let stats = Arc::new(Stats::default());
    let mut conn = connect_with_backoff(&opts.redis_url, &mut shutdown).await?;
    let Some(mut conn_ok) = conn.take() else {
        return Ok(stats);
    };
    ensure_group(&mut conn_ok, &stream, &opts.group).await?;
    let token = crate::support::msg::new_msg_id();
    let consumer = claim_consumer_name(&mut conn_ok, &opts, &token).await?;
    tracing::info!(
        "listening on {} as {}/{} (concurrency {})",
        opts.channel,
        opts.group,
        consumer,
        opts.concurrency
    );
    let last_error = Arc::new(std::sync::Mutex::new(String::new()));
    let sem = Arc::new(Semaphore::new(opts.concurrency));
    let (stop_tx, stop_rx) = watch::channel(false);

    let beat = Beat {
        conn: conn_ok.clone(),
        opts: opts.clone(),
        consumer: consumer.clone(),
        token: token.clone(),
        stats: stats.clone(),
        sem: sem.clone(),
        last_error: last_error.clone(),
    };
    let heartbeat = tokio::spawn(heartbeat_loop(beat, stop_rx.clone()));
    let ingest = opts.ingest.then(|| {
        tokio::spawn(ingest_loop(
            opts.redis_url.clone(),
            keys.clone(),
            opts.also_ingest.clone(),
            stop_rx.clone(),
        ))
    });

    let ctx = Arc::new(Worker {
        opts: opts.clone(),
        stream: stream.clone(),
        dlq: keys.dlq(),
        consumer: consumer.clone(),
        stats: stats.clone(),
        output,
        last_error,
        errors_key: format!(
            "{}:errors:{}",
            keys.stream().trim_end_matches(":stream"),
            opts.group
        ),
        failures_key: format!(
            "{}:failures:{}",
            keys.stream().trim_end_matches(":stream"),
            opts.group
        ),
        in_flight: Default::default(),
    });

    // A restarted listener first finishes its own pending entries.
    let mut own_pending = true;
    // Paging through our own pending entries: re-reading from "0" would hand
    // back entries already being worked on (and count a delivery each time).
    let mut own_cursor = String::from("0-0");
    let mut blocking: Option<redis::aio::MultiplexedConnection> = None;
    let mut backoff = Backoff::default();
    let mut last_reclaim = Instant::now();
    let mut last_trim = Instant::now();
    let mut paused = false;
    let reclaim_every = (opts.lease / 2).clamp(Duration::from_millis(200), Duration::from_secs(10));
    loop {
        if *shutdown.borrow() {
            break;
        }
        let first = tokio::select! {
            p = sem.clone().acquire_owned() => p.context("semaphore closed")?,
            _ = shutdown.changed() => break,
        };
        let mut permits = vec![first];
        while let Ok(p) = sem.clone().try_acquire_owned() {
            permits.push(p);
        }
        let free = permits.len();
        if let Some(reason) = handler.paused(conn_ok.clone()).await {
            if !paused {
                tracing::warn!("paused: {reason}");
                paused = true;
            }
            drop(permits);
            tokio::select! {
                _ = tokio::time::sleep(Duration::from_secs(5)) => {},
                _ = shutdown.changed() => break,
            }
            continue;
        }
        if paused {
            tracing::warn!("resuming");
            paused = false;
        }
        let step = async {
            let mut entries = Vec::new();
            if own_pending {
                entries = read_group(
                    &mut conn_ok,
                    &stream,
                    &opts.group,
                    &consumer,
                    free,
                    None,
                    &own_cursor,
                )
                .await?;
                match entries.last() {
                    Some(last) => own_cursor = last.0.clone(),
                    None => own_pending = false,
                }
            } else if last_reclaim.elapsed() >= reclaim_every {
                last_reclaim = Instant::now();
                entries = autoclaim(
                    &mut conn_ok,
                    &stream,
                    &opts.group,
                    &consumer,
                    opts.lease,
                    free,
                )
                .await?;
            }
            if last_trim.elapsed() >= Duration::from_secs(60) {
                last_trim = Instant::now();
                trim(&mut conn_ok, &stream).await;
            }
            if entries.is_empty() && !own_pending {
                if blocking.is_none() {
                    blocking = Some(store::connect_blocking(&opts.redis_url, opts.block).await?);
                }
                if let Some(b) = blocking.as_mut() {
                    entries = read_group(
                        b,
                        &stream,
                        &opts.group,
                        &consumer,
                        free,
                        // Draining (--once) must notice an empty stream at once;
                        // otherwise wake in time for the next reclaim.
                        (!opts.once).then_some(opts.block.min(reclaim_every)),
                        ">",
                    )
                    .await?;
                }
            }
            anyhow::Ok(entries)
        };
        let entries = tokio::select! {
            r = step => r,
            _ = shutdown.changed() => break,
        };
        match entries {
            Ok(entries) => {
                backoff.reset();
                if entries.is_empty() && opts.once {
                    if sem.available_permits() + permits.len() == opts.concurrency {
                        break;
                    }
                    // Work is still in flight: wait a little rather than spin.
                    drop(permits);
                    tokio::time::sleep(Duration::from_millis(10)).await;
                    continue;
                }
                for entry in entries {
                    // Never two workers for one entry in this process.
                    if !ctx.claim(&entry.0) {
                        continue;
                    }
                    let Some(permit) = permits.pop() else {
                        ctx.release(&entry.0);
                        break;
                    };
                    let worker = ctx.clone();
                    let handler = handler.clone();
                    let conn = conn_ok.clone();
                    tokio::spawn(async move {
                        let id = entry.0.clone();
                        worker.process(entry, handler, conn).await;
                        worker.release(&id);
                        drop(permit);
                    });
                }
            }
            Err(err) => {
                let text = format!("{err:#}");
                if text.contains("NOGROUP") {
                    tracing::warn!(
                        "consumer group missing (Redis restarted without its data?); recreating it"
                    );
                    let _ = ensure_group(&mut conn_ok, &stream, &opts.group).await;
                    own_pending = true;
                    own_cursor = String::from("0-0");
                }
                blocking = None;
                ctx.note_error(&text);
                let delay = backoff.next();
                tracing::warn!("Redis: {text}; retrying in {:.1}s", delay.as_secs_f64());
                drop(permits);
                tokio::select! {
                    _ = tokio::time::sleep(delay) => {},
                    _ = shutdown.changed() => break,
                }
            }
        }
    }
    // Stop reading; let in-flight work finish within the grace period. What
    // does not finish stays pending in the group and is taken up later.
    let drained = tokio::time::timeout(opts.grace, sem.acquire_many(opts.concurrency as u32)).await;
    if drained.is_err() {
        tracing::warn!(
            "grace period over with work in flight; it stays pending and will be retried"
        );
    }
    let _ = stop_tx.send(true);
    let _ = heartbeat.await;
    if let Some(task) = ingest {
        task.abort();
    }
    let mut conn = conn_ok;
    let _: Result<i64, _> = redis::cmd("DEL")
        .arg(heartbeat_key(&opts.group, &consumer))
        .query_async(&mut conn)
        .await;
    Ok(stats)
}

struct Worker {
    opts: Options,
    stream: String,
    dlq: String,
    consumer: String,
    stats: Arc<Stats>,
    output: Output,
    last_error: Arc<std::sync::Mutex<String>>,
    errors_key: String,
    failures_key: String,
    in_flight: std::sync::Mutex<std::collections::HashSet<String>>,
}

/// One stream entry: id and fields (None when the entry was deleted).
type Entry = (String, Option<Vec<(String, String)>>, u64);

/// Deliveries that end without a recorded failure (the listener was killed
/// mid-message) are tolerated up to this multiple of `--max-deliveries`, so a
/// kill storm does not dead-letter healthy messages, while a message that
/// kills its listener every time still ends in the dead-letter stream.
const CRASH_ALLOWANCE: u64 = 3;

impl Worker {
    /// Marks an entry as being worked on here; false if it already is.
    fn claim(&self, entry_id: &str) -> bool {
        self.in_flight
            .lock()
            .map(|mut set| set.insert(entry_id.to_string()))
            .unwrap_or(false)
    }

    /// Unmarks an entry.
    fn release(&self, entry_id: &str) {
        if let Ok(mut set) = self.in_flight.lock() {
            set.remove(entry_id);
        }
    }

    fn note_error(&self, text: &str) {
        if let Ok(mut e) = self.last_error.lock() {
            *e = crate::support::msg::preview(text, 300);
        }
    }

    async fn process<H: Handler>(&self, entry: Entry, handler: Arc<H>, mut conn: Conn) {
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
        };

        let (cancel_tx, cancel_rx) = watch::channel(false);
        let renew = tokio::spawn(renew_loop(
            conn.clone(),
            fence.clone(),
            self.opts.lease,
            cancel_tx,
        ));
        // A panicking handler is a failed delivery like any other (counted
        // toward the dead-letter cap), not a dead worker.
        let result =
            std::panic::AssertUnwindSafe(handler.handle(job, conn.clone(), fence, cancel_rx))
                .catch_unwind()
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
        match result {
            Ok(handled) => match &handled.commit {
                CommitStatus::Ok => {
                    self.stats.processed.fetch_add(1, Ordering::Relaxed);
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
                    tracing::info!(
                        "entry {entry_id} ({identity}): {other:?}; nothing committed by this listener"
                    );
                }
            },
            Err(JobError::Transient(err)) => {
                self.stats.failed.fetch_add(1, Ordering::Relaxed);
                let text = format!("{err:#}");
                self.note_error(&text);
                tracing::warn!(
                    "entry {entry_id} ({identity}) failed on delivery {deliveries}: {text}; it will be retried"
                );
                self.record_failure(&mut conn, &entry_id, &text).await;
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
    async fn record_failure(&self, conn: &mut Conn, entry_id: &str, text: &str) {
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
    async fn deliveries(&self, conn: &mut Conn, entry_id: &str) -> anyhow::Result<Option<u64>> {
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

    async fn dead_letter(
        &self,
        conn: &mut Conn,
        entry_id: &str,
        payload: String,
        reason: &str,
        deliveries: u64,
    ) {
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

/// The message of an entry: the JSON object in field `data`, or (for entries
/// added by hand with other fields) the fields themselves.
fn parse_entry(fields: &[(String, String)]) -> Result<Map<String, Value>, String> {
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

/// What the heartbeat reports about its listener.
struct Beat {
    conn: Conn,
    opts: Options,
    consumer: String,
    token: String,
    stats: Arc<Stats>,
    sem: Arc<Semaphore>,
    last_error: Arc<std::sync::Mutex<String>>,
}

async fn heartbeat_loop(beat: Beat, mut stop: watch::Receiver<bool>) {
    let Beat {
        mut conn,
        opts,
        consumer,
        token,
        stats,
        sem,
        last_error,
    } = beat;
    let key = heartbeat_key(&opts.group, &consumer);
    let started = crate::support::msg::now_iso_seconds();
    loop {
        let in_flight = opts.concurrency - sem.available_permits().min(opts.concurrency);
        let error = last_error.lock().map(|e| e.clone()).unwrap_or_default();
        let fields: Vec<(String, String)> = vec![
            ("group".into(), opts.group.clone()),
            ("consumer".into(), consumer.clone()),
            ("channel".into(), opts.channel.clone()),
            ("host".into(), hostname()),
            ("pid".into(), std::process::id().to_string()),
            ("started_at".into(), started.clone()),
            ("last_beat".into(), crate::support::msg::now_iso_seconds()),
            (
                "processed".into(),
                stats.processed.load(Ordering::Relaxed).to_string(),
            ),
            (
                "failed".into(),
                stats.failed.load(Ordering::Relaxed).to_string(),
            ),
            (
                "dead_lettered".into(),
                stats.dead_lettered.load(Ordering::Relaxed).to_string(),
            ),
            ("in_flight".into(), in_flight.to_string()),
            ("concurrency".into(), opts.concurrency.to_string()),
            ("last_error".into(), error),
            ("version".into(), env!("CARGO_PKG_VERSION").into()),
        ];
        let beat_script = redis::Script::new(HEARTBEAT_SCRIPT);
        let mut script = beat_script.prepare_invoke();
        script
            .key(&key)
            .arg(&token)
            .arg((HEARTBEAT_EVERY * 3).as_millis() as u64);
        for (k, v) in &fields {
            script.arg(k).arg(v);
        }
        let beat: Result<i64, _> = script.invoke_async(&mut conn).await;
        if let Ok(0) = beat {
            tracing::error!("consumer name {consumer} was taken over by another process");
        }
        tokio::select! {
            _ = tokio::time::sleep(HEARTBEAT_EVERY) => {},
            _ = stop.changed() => return,
        }
    }
}

/// Bridges PUBLISH-only producers into the stream, resubscribing after any fault.
async fn ingest_loop(
    url: String,
    keys: ChannelKeys,
    also: Vec<String>,
    stop: watch::Receiver<bool>,
) {
    let mut backoff = Backoff::default();
    loop {
        if *stop.borrow() {
            return;
        }
        match ingest_session(&url, &keys, &also, &mut backoff).await {
            Ok(()) => tracing::info!("subscription to {} ended; resubscribing", keys.channel),
            Err(err) => tracing::warn!("subscription to {}: {err:#}", keys.channel),
        }
        tokio::time::sleep(backoff.next()).await;
    }
}

async fn ingest_session(
    url: &str,
    keys: &ChannelKeys,
    also: &[String],
    backoff: &mut Backoff,
) -> anyhow::Result<()> {
    let client = store::check_url(url)?;
    let mut conn = store::connect(url).await?;
    let pubsub = tokio::time::timeout(Duration::from_secs(5), client.get_async_pubsub())
        .await
        .context("subscribing timed out")??;
    let (mut sink, mut messages) = pubsub.split();
    sink.subscribe(&keys.channel).await?;
    for channel in also {
        sink.subscribe(channel).await?;
    }
    backoff.reset();
    tracing::info!("subscribed to {} {}", keys.channel, also.join(" "));
    let stream = keys.stream();
    let marker_prefix = keys.ingested("");
    loop {
        // Pings detect half-open connections that never deliver again.
        let next = tokio::time::timeout(Duration::from_secs(5), messages.next()).await;
        match next {
            Err(_) => {
                let _: String = tokio::time::timeout(Duration::from_secs(3), sink.ping())
                    .await
                    .context("ping timed out")??;
            }
            Ok(None) => return Ok(()),
            Ok(Some(msg)) => {
                let payload: String = msg.get_payload().unwrap_or_default();
                let msg_id = serde_json::from_str::<Map<String, Value>>(&payload)
                    .ok()
                    .and_then(|m| crate::support::msg::msg_id_of(&m).map(str::to_string))
                    .unwrap_or_default();
                let added: Option<String> = redis::Script::new(INGEST_SCRIPT)
                    .key(&stream)
                    .arg(&payload)
                    .arg(&msg_id)
                    .arg(store::INGEST_MARKER_TTL_SECS)
                    .arg(60)
                    .arg(&marker_prefix)
                    .invoke_async(&mut conn)
                    .await?;
                if let Some(id) = added {
                    tracing::debug!("took a published message into {stream} as {id}");
                }
            }
        }
    }
}

async fn connect_with_backoff(
    url: &str,
    shutdown: &mut watch::Receiver<bool>,
) -> anyhow::Result<Option<Conn>> {
    store::check_url(url)?;
    let mut backoff = Backoff::default();
    loop {
        match store::connect(url).await {
            Ok(c) => return Ok(Some(c)),
            Err(err) => {
                let delay = backoff.next();
                tracing::warn!("{err:#}; retrying in {:.1}s", delay.as_secs_f64());
                tokio::select! {
                    _ = tokio::time::sleep(delay) => {},
                    _ = shutdown.changed() => return Ok(None),
                }
            }
        }
    }
}

/// Creates the group at id 0 (so entries added before any listener are read).
pub async fn ensure_group(conn: &mut Conn, stream: &str, group: &str) -> anyhow::Result<()> {
    let created: Result<String, redis::RedisError> = redis::cmd("XGROUP")
        .arg("CREATE")
        .arg(stream)
        .arg(group)
        .arg("0")
        .arg("MKSTREAM")
        .query_async(conn)
        .await;
    match created {
        Ok(_) => Ok(()),
        Err(e) if e.to_string().contains("BUSYGROUP") => Ok(()),
        Err(e) => Err(e).with_context(|| format!("creating consumer group {group} on {stream}")),
    }
}

/// Claims a stable, unique consumer name: the explicit one, or `<host>:<n>`
/// for the first n not held by a live process.
async fn claim_consumer_name(
    conn: &mut Conn,
    opts: &Options,
    token: &str,
) -> anyhow::Result<String> {
    let host = hostname();
    let candidates: Vec<String> = match &opts.consumer {
        Some(name) => vec![name.clone()],
        None => (0..256).map(|i| format!("{host}:{i}")).collect(),
    };
    for name in &candidates {
        let key = heartbeat_key(&opts.group, name);
        let holder: std::collections::HashMap<String, String> =
            redis::cmd("HGETALL").arg(&key).query_async(conn).await?;
        let expected = match holder.get("token") {
            None => String::new(),
            Some(t) => {
                // A holder on this host whose process is gone (e.g. SIGKILL) can be replaced at once.
                let same_host = holder.get("host").is_some_and(|h| *h == host);
                let dead = holder
                    .get("pid")
                    .and_then(|p| p.parse::<i32>().ok())
                    .is_some_and(|pid| !pid_alive(pid));
                if same_host && dead {
                    t.clone()
                } else {
                    continue;
                }
            }
        };
        let claimed: i64 = redis::Script::new(CLAIM_NAME_SCRIPT)
            .key(&key)
            .arg(token)
            .arg(&expected)
            .arg((HEARTBEAT_EVERY * 3).as_millis() as u64)
            .invoke_async(conn)
            .await?;
        if claimed == 1 {
            let _: () = redis::cmd("HSET")
                .arg(&key)
                .arg("host")
                .arg(&host)
                .arg("pid")
                .arg(std::process::id())
                .query_async(conn)
                .await?;
            return Ok(name.clone());
        }
    }
    Err(crate::support::exit::Fail::usage(match &opts.consumer {
        Some(name) => format!("consumer name {name} is held by a live listener"),
        None => "no free consumer name on this host".into(),
    }))
}

fn pid_alive(pid: i32) -> bool {
    if pid <= 0 {
        return false;
    }
    // SAFETY: kill with signal 0 only checks for existence.
    let r = unsafe { libc::kill(pid, 0) };
    r == 0 || std::io::Error::last_os_error().raw_os_error() == Some(libc::EPERM)
}

/// This machine's name (stable across restarts, unlike the pid).
pub fn hostname() -> String {
    if let Ok(h) = std::env::var("FULLSEND_HOSTNAME")
        && !h.is_empty()
    {
        return h;
    }
    let mut buf = [0u8; 256];
    // SAFETY: the buffer is valid for its length.
    let r = unsafe { libc::gethostname(buf.as_mut_ptr().cast(), buf.len()) };
    let name = if r == 0 {
        let end = buf.iter().position(|&b| b == 0).unwrap_or(buf.len());
        String::from_utf8_lossy(&buf[..end]).into_owned()
    } else {
        "localhost".into()
    };
    name.chars()
        .filter(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
        .collect()
}

async fn read_group<C: redis::aio::ConnectionLike>(
    conn: &mut C,
    stream: &str,
    group: &str,
    consumer: &str,
    count: usize,
    block: Option<Duration>,
    id: &str,
) -> anyhow::Result<Vec<Entry>> {
    let mut cmd = redis::cmd("XREADGROUP");
    cmd.arg("GROUP")
        .arg(group)
        .arg(consumer)
        .arg("COUNT")
        .arg(count);
    if let Some(b) = block {
        cmd.arg("BLOCK").arg(b.as_millis() as u64);
    }
    cmd.arg("STREAMS").arg(stream).arg(id);
    let reply: redis::Value = cmd.query_async(conn).await?;
    let mut out = Vec::new();
    for (_, entries) in stream_replies(reply) {
        for e in entries {
            // Entries read with ">" are on their first delivery.
            out.push((e.0, e.1, if id == ">" { 1 } else { 0 }));
        }
    }
    Ok(out)
}

async fn autoclaim(
    conn: &mut Conn,
    stream: &str,
    group: &str,
    consumer: &str,
    lease: Duration,
    count: usize,
) -> anyhow::Result<Vec<Entry>> {
    let reply: redis::Value = redis::cmd("XAUTOCLAIM")
        .arg(stream)
        .arg(group)
        .arg(consumer)
        .arg(lease.as_millis() as u64)
        .arg("0-0")
        .arg("COUNT")
        .arg(count)
        .query_async(conn)
        .await?;
    let items = as_array(reply);
    let mut out = Vec::new();
    if let Some(entries) = items.get(1) {
        for e in as_array(entries.clone()) {
            if let Some(entry) = parse_stream_entry(e) {
                out.push((entry.0, entry.1, 0));
            }
        }
    }
    if let Some(deleted) = items.get(2) {
        let deleted = as_array(deleted.clone());
        if !deleted.is_empty() {
            tracing::error!(
                "{} pending entries of {stream} were deleted before being handled",
                deleted.len()
            );
        }
    }
    Ok(out)
}

async fn trim(conn: &mut Conn, stream: &str) {
    // Keep a day of history for inspection; never what a group still needs.
    match trim_stream(conn, stream, Duration::from_secs(24 * 3600)).await {
        Ok(n) if n > 0 => tracing::info!("trimmed {n} finished entries from {stream}"),
        Ok(_) => {}
        Err(err) => tracing::debug!("trim of {stream} failed: {err:#}"),
    }
}

/// Deletes entries older than `keep` that every consumer group has finished
/// with: below each group's oldest pending entry and last-delivered id. Returns
/// how many were deleted.
pub async fn trim_stream(conn: &mut Conn, stream: &str, keep: Duration) -> anyhow::Result<i64> {
    let floor = format!(
        "{}-0",
        crate::support::msg::now_millis() - i64::try_from(keep.as_millis()).unwrap_or(i64::MAX)
    );
    let trimmed: i64 = redis::Script::new(TRIM_SCRIPT)
        .key(stream)
        .arg(floor)
        .invoke_async(conn)
        .await
        .with_context(|| format!("trimming {stream}"))?;
    Ok(trimmed)
}

fn as_array(v: redis::Value) -> Vec<redis::Value> {
    match v {
        redis::Value::Array(a) | redis::Value::Set(a) => a,
        redis::Value::Map(m) => m.into_iter().flat_map(|(k, v)| [k, v]).collect(),
        _ => Vec::new(),
    }
}

fn as_string(v: &redis::Value) -> Option<String> {
    match v {
        redis::Value::BulkString(b) => Some(String::from_utf8_lossy(b).into_owned()),
        redis::Value::SimpleString(s) => Some(s.clone()),
        redis::Value::Int(i) => Some(i.to_string()),
        _ => None,
    }
}

type RawEntry = (String, Option<Vec<(String, String)>>);

fn parse_stream_entry(v: redis::Value) -> Option<RawEntry> {
    let parts = as_array(v);
    let id = as_string(parts.first()?)?;
    let fields = match parts.get(1) {
        Some(redis::Value::Nil) | None => None,
        Some(f) => {
            let flat: Vec<String> = as_array(f.clone()).iter().filter_map(as_string).collect();
            Some(
                flat.chunks(2)
                    .filter(|c| c.len() == 2)
                    .map(|c| (c[0].clone(), c[1].clone()))
                    .collect(),
            )
        }
    };
    Some((id, fields))
}

fn stream_replies(v: redis::Value) -> Vec<(String, Vec<RawEntry>)> {
    let mut out = Vec::new();
    match v {
        redis::Value::Map(pairs) => {
            for (k, entries) in pairs {
                let name = as_string(&k).unwrap_or_default();
                out.push((
                    name,
                    as_array(entries)
                        .into_iter()
                        .filter_map(parse_stream_entry)
                        .collect(),
                ));
            }
        }
        other => {
            for s in as_array(other) {
                let parts = as_array(s);
                let name = parts.first().and_then(as_string).unwrap_or_default();
                let entries = parts.get(1).cloned().map(as_array).unwrap_or_default();
                out.push((
                    name,
                    entries.into_iter().filter_map(parse_stream_entry).collect(),
                ));
            }
        }
    }
    out
}

/// Capped exponential backoff: 100 ms doubling to 5 s.
#[derive(Debug, Default)]
struct Backoff {
    attempt: u32,
}

impl Backoff {
    fn next(&mut self) -> Duration {
        let ms = (100u64 << self.attempt.min(6)).min(5000);
        self.attempt += 1;
        Duration::from_millis(ms)
    }
    fn reset(&mut self) {
        self.attempt = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entries_parse_from_data_or_fields() {
        let ok = parse_entry(&[("data".into(), r#"{"type":"x"}"#.into())]).expect("object");
        assert_eq!(ok["type"], "x");
        assert!(parse_entry(&[("data".into(), "not json".into())]).is_err());
        assert!(parse_entry(&[("data".into(), "[1]".into())]).is_err());
        let fields = parse_entry(&[
            ("type".into(), "escalation".into()),
            ("n".into(), "1".into()),
        ])
        .expect("fields");
        assert_eq!(fields["type"], "escalation");
        let mut b = Backoff::default();
        let delays: Vec<u64> = (0..10).map(|_| b.next().as_millis() as u64).collect();
        assert_eq!(delays[0], 100);
        assert_eq!(*delays.last().unwrap_or(&0), 5000);
    }
}
