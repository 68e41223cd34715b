//! Heartbeats: each listener refreshes a key with its role, pid, host and counters, so that
//! `fullsend status` can tell live listeners from dead ones.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use tokio::sync::{Semaphore, watch};

use super::claim::hostname;
use super::{Options, Stats};
use crate::bus::store::Conn;

/// How long a consumer name outlives its last heartbeat: longer than the work lease, so a
/// listener that is stopped (SIGSTOP, a VM pause) keeps its name, and its entries, for as long
/// as it keeps its leases. A successor on the same host takes the next name instead.
pub(super) fn name_lease(lease: Duration) -> Duration {
    lease + HEARTBEAT_EVERY * 3
}

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
pub(super) const HEARTBEAT_EVERY: Duration = Duration::from_secs(2);
/// What the heartbeat reports about its listener.
pub(super) struct Beat {
    pub(super) conn: Conn,
    pub(super) opts: Options,
    pub(super) consumer: String,
    pub(super) token: String,
    pub(super) stats: Arc<Stats>,
    pub(super) sem: Arc<Semaphore>,
    pub(super) last_error: Arc<std::sync::Mutex<String>>,
}
pub(super) async fn heartbeat_loop(beat: Beat, mut stop: watch::Receiver<bool>) {
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
            .arg(name_lease(opts.lease).as_millis() as u64);
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
