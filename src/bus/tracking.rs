//! Which keys changed since the last look, from Redis itself: client-side caching in broadcast
//! mode (`CLIENT TRACKING ON BCAST PREFIX …`) on a dedicated RESP3 connection, whose
//! invalidation pushes name every key written under the prefixes, by any client.
//!
//! Each [`KeyTracker::changes`] first PINGs that connection. Redis sends a connection's pushes
//! in order with its replies, so once the PONG is back, every write that completed before the
//! PING has been announced. A cache that reloads what `changes` names is therefore never older
//! than the moment of the call. When the connection drops (a reconnect, `CLIENT KILL`), or the
//! server cannot track, the answer is "everything may have changed", never a stale "nothing".

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use redis::aio::MultiplexedConnection;
use redis::{PushInfo, PushKind, Value};
use tokio::sync::mpsc::{UnboundedReceiver, unbounded_channel};

/// How long to wait before trying again after tracking could not be set up.
const RETRY_AFTER: Duration = Duration::from_secs(5);
/// The most a PING (or the set-up) may take before the tracking connection counts as lost.
const TIMEOUT: Duration = Duration::from_secs(2);

/// What changed since the previous call.
#[derive(Debug, PartialEq, Eq)]
pub enum Changes {
    /// Not tracked now (no connection, or the server cannot track): read everything, cache nothing.
    Untracked,
    /// Tracking (re)started or Redis flushed: everything may have changed; reload it all.
    All,
    /// Exactly these keys were written (possibly none).
    Keys(BTreeSet<String>),
}

/// A tracking connection for a set of key prefixes.
pub struct KeyTracker {
    url: String,
    prefixes: Vec<String>,
    live: Option<(MultiplexedConnection, UnboundedReceiver<PushInfo>)>,
    retry_at: Option<Instant>,
}

impl std::fmt::Debug for KeyTracker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KeyTracker")
            .field("prefixes", &self.prefixes)
            .field("live", &self.live.is_some())
            .finish()
    }
}

impl KeyTracker {
    /// A tracker for keys under `prefixes`; it connects on first use.
    pub fn new(url: &str, prefixes: &[&str]) -> KeyTracker {
        KeyTracker {
            url: url.to_string(),
            prefixes: prefixes.iter().map(|p| (*p).to_string()).collect(),
            live: None,
            retry_at: None,
        }
    }

    /// What changed since the previous call (see the module's note on ordering).
    pub async fn changes(&mut self) -> Changes {
        let Some((conn, rx)) = self.live.as_mut() else {
            return self.start().await;
        };
        let ping: Result<redis::RedisResult<Value>, _> =
            tokio::time::timeout(TIMEOUT, redis::cmd("PING").query_async(conn)).await;
        if let Err(why) = ping
            .map_err(|_| "timed out".to_string())
            .and_then(|r| r.map_err(|e| e.to_string()))
        {
            tracing::warn!(
                "context tracking: the connection stopped answering ({why}); reconnecting and reloading everything"
            );
            self.live = None;
            return self.start().await;
        }
        let mut keys = BTreeSet::new();
        let mut all = false;
        while let Ok(push) = rx.try_recv() {
            match push.kind {
                PushKind::Invalidate => match push.data.first() {
                    Some(Value::Array(names)) => {
                        keys.extend(names.iter().filter_map(|n| match n {
                            Value::BulkString(b) => Some(String::from_utf8_lossy(b).into_owned()),
                            Value::SimpleString(s) => Some(s.clone()),
                            _ => None,
                        }));
                    }
                    // A null invalidation: the server flushed, or lost track.
                    _ => all = true,
                },
                PushKind::Disconnection => {
                    tracing::warn!(
                        "context tracking: disconnected; reconnecting and reloading everything"
                    );
                    self.live = None;
                    return self.start().await;
                }
                _ => {}
            }
        }
        if all {
            Changes::All
        } else {
            Changes::Keys(keys)
        }
    }

    /// Connects and turns tracking on; `All` when that worked (the cache starts from scratch).
    async fn start(&mut self) -> Changes {
        if self.retry_at.is_some_and(|at| Instant::now() < at) {
            return Changes::Untracked;
        }
        match tokio::time::timeout(TIMEOUT, self.connect()).await {
            Ok(Ok(live)) => {
                self.live = Some(live);
                self.retry_at = None;
                Changes::All
            }
            Ok(Err(err)) => self.failed(&format!("{err:#}")),
            Err(_) => self.failed("timed out"),
        }
    }

    fn failed(&mut self, why: &str) -> Changes {
        tracing::warn!(
            "context tracking unavailable ({why}); the context is read in full for each message"
        );
        self.retry_at = Some(Instant::now() + RETRY_AFTER);
        Changes::Untracked
    }

    async fn connect(
        &self,
    ) -> anyhow::Result<(MultiplexedConnection, UnboundedReceiver<PushInfo>)> {
        let client = crate::bus::store::check_url(&self.url)?;
        let info = client.get_connection_info().clone();
        let settings = info
            .redis_settings()
            .clone()
            .set_protocol(redis::ProtocolVersion::RESP3);
        let client = redis::Client::open(info.set_redis_settings(settings))?;
        let (tx, rx) = unbounded_channel();
        let config = redis::AsyncConnectionConfig::new()
            .set_connection_timeout(Some(TIMEOUT))
            .set_response_timeout(Some(TIMEOUT))
            .set_push_sender(tx);
        let mut conn = client
            .get_multiplexed_async_connection_with_config(&config)
            .await?;
        let mut tracking = redis::cmd("CLIENT");
        tracking.arg("TRACKING").arg("ON").arg("BCAST");
        for prefix in &self.prefixes {
            tracking.arg("PREFIX").arg(prefix);
        }
        let _: () = tracking.query_async(&mut conn).await?;
        Ok((conn, rx))
    }
}
