//! Durable listening: a channel's messages travel on a Redis stream read by a
//! consumer group per role. Entries are acknowledged only after their effects
//! commit (fenced to this consumer's lease), leases are renewed while work is
//! in flight, dead consumers' entries are reclaimed, poison entries go to a
//! dead-letter stream, and PUBLISH-only producers are bridged into the stream.

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::AtomicU64;
use std::time::{Duration, Instant};

use anyhow::Context;
use serde_json::{Map, Value};
use tokio::sync::{Semaphore, watch};

use crate::bus::effects::{CommitStatus, Fence};
use crate::bus::store::{self, ChannelKeys, Conn};

mod claim;
mod heartbeat;
mod ingest;
#[cfg(test)]
mod tests;
mod trim;
mod worker;

use claim::{autoclaim, claim_consumer_name, claim_own, connect_with_backoff, read_group};
pub use claim::{ensure_group, hostname};
pub use heartbeat::heartbeat_key;
use heartbeat::{Beat, heartbeat_loop};
use ingest::ingest_loop;
use trim::trim;
pub use trim::trim_stream;
use worker::Worker;

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
    /// Nothing is wrong with the message: the role is paused (a refused account). The entry
    /// stays pending and the attempt does not count toward the dead-letter cap.
    Paused(anyhow::Error),
    /// What the decision was based on changed meanwhile (a whole-file rewrite met a newer
    /// worklist): someone else made progress, so the message is decided again soon and the
    /// attempt does not count toward the dead-letter cap.
    Conflict(anyhow::Error),
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
    let token = crate::support::msg::new_msg_id();
    // A Redis that is still loading its data (LOADING), or that drops the connection now, is
    // waited for; only a name held by a live listener is an answer to give up on.
    let mut start_backoff = Backoff::default();
    let consumer = loop {
        let started = async {
            ensure_group(&mut conn_ok, &stream, &opts.group).await?;
            claim_consumer_name(&mut conn_ok, &opts, &token).await
        }
        .await;
        match started {
            Ok(name) => break name,
            Err(err)
                if crate::support::exit::classify(&err) == crate::support::exit::Exit::Usage =>
            {
                return Err(err);
            }
            Err(err) => {
                let delay = start_backoff.next();
                tracing::warn!("starting: {err:#}; retrying in {:.1}s", delay.as_secs_f64());
                tokio::select! {
                    _ = tokio::time::sleep(delay) => {},
                    _ = shutdown.changed() => return Ok(stats),
                }
            }
        }
    };
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

    let (retry_tx, mut retry_rx) = tokio::sync::mpsc::unbounded_channel();
    let ctx = Arc::new(Worker {
        opts: opts.clone(),
        keys: keys.clone(),
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
        retries: retry_tx,
    });
    // Entries that failed transiently, with when their owner (this process) retries them.
    let mut due: Vec<(String, Instant, bool)> = Vec::new();

    // A restarted listener first finishes its own pending entries.
    let mut own_pending = true;
    // Paging through our own pending entries: re-reading from "0" would hand
    // back entries already being worked on (and count a delivery each time).
    let mut own_cursor = String::from("0-0");
    let mut blocking: Option<redis::aio::MultiplexedConnection> = None;
    let mut backoff = Backoff::default();
    let mut last_reclaim = Instant::now();
    let mut reclaim_cursor = String::from("0-0");
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
        while let Ok(retry) = retry_rx.try_recv() {
            due.push(retry);
        }
        let now = Instant::now();
        // At most one retry per free slot; the rest wait their turn.
        let mut ready: Vec<(String, bool)> = Vec::new();
        due.retain(|(id, at, counted)| {
            if *at <= now && ready.len() < free {
                ready.push((id.clone(), *counted));
                false
            } else {
                true
            }
        });
        // Wake for the next retry rather than sleeping a whole block.
        let next_retry = due
            .iter()
            .map(|(_, at, _)| at.saturating_duration_since(now))
            .min();
        let step = async {
            let mut entries = Vec::new();
            if !ready.is_empty() {
                entries = claim_own(&mut conn_ok, &stream, &opts.group, &consumer, &ready).await?;
            }
            if !entries.is_empty() {
                // Retries first; new entries wait for the next turn.
            } else if own_pending {
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
                let (claimed, next) = autoclaim(
                    &mut conn_ok,
                    &stream,
                    &opts.group,
                    &consumer,
                    opts.lease,
                    free,
                    &reclaim_cursor,
                )
                .await?;
                entries = claimed;
                // Follow the cursor through a long pending list; "0-0" means it wrapped.
                reclaim_cursor = next;
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
                        // otherwise wake in time for the next reclaim or retry.
                        (!opts.once).then_some(
                            opts.block
                                .min(reclaim_every)
                                .min(next_retry.unwrap_or(Duration::MAX))
                                .max(Duration::from_millis(10)),
                        ),
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
