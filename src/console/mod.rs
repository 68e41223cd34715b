//! The operator's console (`fullsend web`): a page served from the binary itself (assets
//! embedded at build time, no build step, no CDN) with the live trail of messages and
//! decisions, the experiments, the queues, the spend and the context, each also answered as
//! JSON. What it changes (kill, pause, resume, requeue) goes through the same code as
//! `fullsend dispatch` and `fullsend dlq requeue`.
//!
//! [`auth`] decides who may see and change what; [`trail`] follows the streams and the decision
//! log; [`views`] builds the JSON documents; [`actions`] changes things; `routes` maps requests
//! to them and adds the security headers.

pub mod actions;
pub mod auth;
mod routes;
pub mod trail;
pub mod views;

use std::net::SocketAddr;
use std::sync::Arc;

use crate::bus::store::Conn;
use crate::support::config::Config;

/// A Redis connection made on first need and kept (it reconnects by itself): the console
/// starts, and says so on its pages, while Redis is down.
#[derive(Debug, Clone)]
pub struct Redis {
    url: String,
    conn: Arc<tokio::sync::Mutex<Option<Conn>>>,
    /// When the last attempt failed: the next waits a while, so requests do not queue up
    /// behind one 3 s attempt each while Redis is down.
    failed_at: Arc<std::sync::Mutex<Option<std::time::Instant>>>,
}

impl Redis {
    /// For `url`; nothing connects yet.
    pub fn new(url: String) -> Redis {
        Redis {
            url,
            conn: Arc::new(tokio::sync::Mutex::new(None)),
            failed_at: Arc::new(std::sync::Mutex::new(None)),
        }
    }

    /// The connection, connecting (for at most 3 s) when there is none yet; None at once
    /// within 2 s of a failed attempt.
    pub async fn get(&self) -> Option<Conn> {
        let recently_failed = || {
            self.failed_at
                .lock()
                .ok()
                .and_then(|f| *f)
                .is_some_and(|at| at.elapsed() < std::time::Duration::from_secs(2))
        };
        if recently_failed() {
            return self.conn.try_lock().ok().and_then(|slot| slot.clone());
        }
        let mut slot = self.conn.lock().await;
        if slot.is_none() && !recently_failed() {
            let connect = crate::bus::store::connect(&self.url);
            let failed =
                match tokio::time::timeout(std::time::Duration::from_secs(3), connect).await {
                    Ok(Ok(conn)) => {
                        *slot = Some(conn);
                        false
                    }
                    Ok(Err(err)) => {
                        tracing::debug!("console: Redis unavailable: {err:#}");
                        true
                    }
                    Err(_) => {
                        tracing::debug!("console: connecting to Redis timed out");
                        true
                    }
                };
            if let Ok(mut at) = self.failed_at.lock() {
                *at = failed.then(std::time::Instant::now);
            }
        }
        slot.clone()
    }
}

/// Everything a request may need.
#[derive(Debug)]
pub struct Console {
    config: Config,
    redis: Redis,
    auth: auth::Auth,
    feed: trail::Feed,
    audit: tokio::sync::mpsc::Sender<serde_json::Value>,
    /// Wrong tokens wait their turn (see `routes::slow_down_a_guess`).
    guesses: tokio::sync::Mutex<()>,
    /// Trail snapshots built at once.
    snapshots: tokio::sync::Semaphore,
}

impl Console {
    /// Records one change asked of the console (done or refused): who, what, and what came of
    /// it, for the log of changes.
    fn record(&self, who: &str, what: &str, status: u16, outcome: serde_json::Value) {
        let record = serde_json::json!({
            "v": 1,
            "event": "console_change",
            "at": crate::support::msg::now_iso_micros(),
            "who": who,
            "what": what,
            "status": status,
            "outcome": outcome,
        });
        tracing::info!(who, what, status, "console change");
        // Bounded: a stdout that stalls must not grow the process without end.
        if self.audit.try_send(record).is_err() {
            tracing::warn!(
                who,
                what,
                status,
                "console change record dropped (stdout is not keeping up)"
            );
        }
    }
}

/// A running console.
#[derive(Debug)]
pub struct Started {
    /// The address it is bound to.
    pub addr: SocketAddr,
    /// The page.
    pub url: String,
    /// The page with the token, which logs a browser in (it sets the cookie).
    pub login_url: String,
    /// True when the token was made at start (no `FULLSEND_WEB_TOKEN`).
    pub token_generated: bool,
    /// One record per change asked (done or refused), as it happens.
    pub changes: tokio::sync::mpsc::Receiver<serde_json::Value>,
}

/// How often the trail looks for new messages and decisions while a page watches.
const FOLLOW_EVERY: std::time::Duration = std::time::Duration::from_millis(400);

/// Binds `listen` and serves the console until the process ends.
pub async fn start(
    config: Config,
    listen: SocketAddr,
    token: Option<String>,
) -> anyhow::Result<Started> {
    let token_generated = token.as_deref().is_none_or(|t| t.trim().is_empty());
    let auth = auth::Auth::new(listen, token).map_err(crate::support::exit::Fail::usage)?;
    let listener = tokio::net::TcpListener::bind(listen)
        .await
        .map_err(|e| crate::support::exit::Fail::usage(format!("--listen {listen}: {e}")))?;
    let addr = listener.local_addr()?;
    let redis = Redis::new(config.redis_url());
    let feed = trail::Feed::start(
        redis.clone(),
        config.channels(),
        config.decision_log(),
        FOLLOW_EVERY,
    )
    .await;
    let url = format!("http://{addr}/");
    let login_url = format!("{url}?token={}", auth.token());
    let (audit, changes) = tokio::sync::mpsc::channel(4096);
    let console = Arc::new(Console {
        config,
        redis,
        auth,
        feed,
        audit,
        guesses: tokio::sync::Mutex::new(()),
        snapshots: tokio::sync::Semaphore::new(4),
    });
    crate::support::http_serve::serve(listener, move |req, peer| {
        routes::answer(console.clone(), req, peer)
    });
    Ok(Started {
        addr,
        url,
        login_url,
        token_generated,
        changes,
    })
}
