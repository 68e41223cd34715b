//! Daily spend: model and coding-agent costs added up per UTC day in Redis,
//! and the optional daily limit that stops new model calls once reached
//! (messages then wait in their streams; nothing is dropped).

use serde_json::{Map, json};

use crate::bus::store::Conn;
use crate::support::config::Config;

/// The Redis key of a day's spend.
pub fn day_key(day: &str) -> String {
    format!("fullsend:spend:{day}")
}

/// Today's date (UTC), as the key suffix.
pub fn today() -> String {
    jiff::Timestamp::now().strftime("%Y-%m-%d").to_string()
}

/// Adds `usd` to today's spend; returns the new total.
pub async fn add(conn: &mut Conn, usd: f64) -> anyhow::Result<f64> {
    if usd <= 0.0 || !usd.is_finite() {
        return spent_today(conn).await;
    }
    let key = day_key(&today());
    let (total,): (f64,) = redis::pipe()
        .cmd("INCRBYFLOAT")
        .arg(&key)
        .arg(usd)
        .cmd("EXPIRE")
        .arg(&key)
        .arg(8 * 24 * 3600)
        .ignore()
        .query_async(conn)
        .await?;
    Ok(total)
}

/// Adds `usd` to today's spend as part of `pipe` (its replies ignored), so it can share a
/// round trip with other writes.
pub fn add_to(pipe: &mut redis::Pipeline, usd: f64) {
    if usd <= 0.0 || !usd.is_finite() {
        return;
    }
    let key = day_key(&today());
    pipe.cmd("INCRBYFLOAT")
        .arg(&key)
        .arg(usd)
        .ignore()
        .cmd("EXPIRE")
        .arg(&key)
        .arg(8 * 24 * 3600)
        .ignore();
}

/// Today's spend so far.
pub async fn spent_today(conn: &mut Conn) -> anyhow::Result<f64> {
    let v: Option<String> = redis::cmd("GET")
        .arg(day_key(&today()))
        .query_async(conn)
        .await?;
    Ok(v.and_then(|s| s.parse().ok()).unwrap_or(0.0))
}

/// The daily limit and where to announce that it was reached.
#[derive(Debug, Clone)]
pub struct Gate {
    /// USD per UTC day; None = no limit.
    pub limit: Option<f64>,
    /// Discord channel for the one notice a day.
    pub notice_channel: Option<String>,
    /// Where Discord replies go.
    pub from_orchestrator: String,
    /// How long a refused account pauses the listeners before the next try.
    pub account_pause: std::time::Duration,
}

impl Gate {
    /// From configuration.
    pub fn from_config(cfg: &Config) -> anyhow::Result<Gate> {
        Ok(Gate {
            limit: cfg.daily_spend_limit()?,
            notice_channel: cfg.notice_channel_id(),
            account_pause: cfg.account_pause()?,
            from_orchestrator: cfg.channels().from_orchestrator,
        })
    }

    /// `Some(reason)` when the limit is reached or the provider refused the account (and, once,
    /// announces it).
    pub async fn blocked(&self, conn: &mut Conn) -> anyhow::Result<Option<String>> {
        let account: Option<String> = redis::cmd("GET")
            .arg(ACCOUNT_BLOCK_KEY)
            .query_async(conn)
            .await?;
        if let Some(reason) = account {
            return Ok(Some(reason));
        }
        let Some(limit) = self.limit else {
            return Ok(None);
        };
        let spent = spent_today(conn).await?;
        if spent < limit {
            return Ok(None);
        }
        let reason = format!(
            "daily spend limit reached: ${spent:.2} of ${limit:.2} today (UTC); new model calls wait until tomorrow or a higher FULLSEND_DAILY_SPEND_LIMIT_USD"
        );
        self.notify_once(conn, &reason).await;
        Ok(Some(reason))
    }

    /// For listeners: the reason to pause, treating a failed check as no pause
    /// (the model call's own spend accounting still runs).
    pub async fn pause_reason(&self, mut conn: Conn) -> Option<String> {
        self.blocked(&mut conn).await.unwrap_or_else(|err| {
            tracing::debug!("spend check failed: {err:#}");
            None
        })
    }

    /// Pauses every listener for `account_pause` after the provider refused the account
    /// (credit balance, console spend limit), and sends one notice. The messages stay queued;
    /// when the pause ends the next call tells whether the account is back.
    pub async fn block_account(&self, conn: &mut Conn, reason: &str) -> anyhow::Result<()> {
        let reason = format!("the model provider refused the account: {reason}");
        let _: () = redis::cmd("SET")
            .arg(ACCOUNT_BLOCK_KEY)
            .arg(&reason)
            .arg("PX")
            .arg(
                u64::try_from(self.account_pause.as_millis())
                    .unwrap_or(u64::MAX)
                    .max(1),
            )
            .query_async(conn)
            .await?;
        self.notify(conn, &reason, "fullsend:spend:account_notified", 3600)
            .await;
        Ok(())
    }

    async fn notify_once(&self, conn: &mut Conn, reason: &str) {
        let marker = format!("fullsend:spend:notified:{}", today());
        self.notify(conn, reason, &marker, 2 * 24 * 3600).await;
    }

    /// Sends `reason` to the notice channel unless `marker` says it was sent within `ttl`.
    async fn notify(&self, conn: &mut Conn, reason: &str, marker: &str, ttl: u64) {
        let first: Result<Option<String>, _> = redis::cmd("SET")
            .arg(marker)
            .arg("1")
            .arg("NX")
            .arg("EX")
            .arg(ttl)
            .query_async(conn)
            .await;
        if !matches!(first, Ok(Some(_))) {
            return;
        }
        tracing::error!("{reason}");
        let Some(channel_id) = &self.notice_channel else {
            tracing::warn!(
                "FULLSEND_NOTICE_CHANNEL_ID is not set; the spend-limit notice goes to the logs only"
            );
            return;
        };
        let mut msg = Map::new();
        msg.insert("type".into(), json!("orchestrator_response"));
        msg.insert("channel_id".into(), json!(channel_id));
        msg.insert(
            "content".into(),
            json!(format!(
                "⚠️ fullsend paused: {reason}. Messages are kept and will be handled later."
            )),
        );
        msg.insert("priority".into(), json!("high"));
        msg.insert("source".into(), json!("orchestrator"));
        let effect = crate::bus::effects::publish(&self.from_orchestrator, msg, &Map::new());
        if let Err(err) = crate::bus::effects::commit(conn, &[effect], None, None).await {
            tracing::warn!("sending the spend-limit notice failed: {err:#}");
        }
    }
}

/// Set while the provider refuses the account; its value is the reason.
pub const ACCOUNT_BLOCK_KEY: &str = "fullsend:spend:account_blocked";

/// A spend record as an effect-free report field.
pub fn report(spent: f64, limit: Option<f64>) -> serde_json::Value {
    json!({"spent_today_usd": (spent * 10_000.0).round() / 10_000.0, "daily_limit_usd": limit, "day": today()})
}
