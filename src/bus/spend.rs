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

/// How long a day's spend is kept: the console's 30-day chart, and a margin.
const KEEP_DAYS_SECS: u64 = 40 * 24 * 3600;

/// The Redis hash of a day's spend by `role|model` (the console's chart).
pub fn day_breakdown_key(day: &str) -> String {
    format!("fullsend:spend:{day}:by")
}

/// Adds `usd` spent by `role` on `model` to today's spend; returns the new total.
pub async fn add(conn: &mut Conn, usd: f64, role: &str, model: &str) -> anyhow::Result<f64> {
    if usd <= 0.0 || !usd.is_finite() {
        return spent_today(conn).await;
    }
    let day = today();
    let key = day_key(&day);
    let mut pipe = redis::pipe();
    pipe.cmd("INCRBYFLOAT").arg(&key).arg(usd);
    add_breakdown(&mut pipe, &day, usd, role, model);
    pipe.cmd("EXPIRE").arg(&key).arg(KEEP_DAYS_SECS).ignore();
    let (total,): (f64,) = pipe.query_async(conn).await?;
    Ok(total)
}

/// Adds `usd` spent by `role` on `model` to today's spend as part of `pipe` (its replies
/// ignored), so it can share a round trip with other writes.
pub fn add_to(pipe: &mut redis::Pipeline, usd: f64, role: &str, model: &str) {
    if usd <= 0.0 || !usd.is_finite() {
        return;
    }
    // One day for both keys, even at midnight.
    let day = today();
    let key = day_key(&day);
    pipe.cmd("INCRBYFLOAT")
        .arg(&key)
        .arg(usd)
        .ignore()
        .cmd("EXPIRE")
        .arg(&key)
        .arg(KEEP_DAYS_SECS)
        .ignore();
    add_breakdown(pipe, &day, usd, role, model);
}

fn add_breakdown(pipe: &mut redis::Pipeline, day: &str, usd: f64, role: &str, model: &str) {
    let key = day_breakdown_key(day);
    let model = if model.is_empty() { "unknown" } else { model };
    pipe.cmd("HINCRBYFLOAT")
        .arg(&key)
        .arg(format!("{role}|{model}"))
        .arg(usd)
        .ignore()
        .cmd("EXPIRE")
        .arg(&key)
        .arg(KEEP_DAYS_SECS)
        .ignore();
}

/// One UTC day's spend: the total and its parts by role and by model.
#[derive(Debug, Clone, serde::Serialize)]
pub struct DaySpend {
    /// `YYYY-MM-DD`.
    pub day: String,
    /// USD that day.
    pub total_usd: f64,
    /// USD by role.
    pub by_role: std::collections::BTreeMap<String, f64>,
    /// USD by model.
    pub by_model: std::collections::BTreeMap<String, f64>,
}

/// The last `days` UTC days' spend, oldest first, today last (two round trips).
pub async fn history(conn: &mut Conn, days: u32) -> anyhow::Result<Vec<DaySpend>> {
    let today = jiff::Timestamp::now()
        .to_zoned(jiff::tz::TimeZone::UTC)
        .date();
    let dates: Vec<String> = (0..days.max(1))
        .rev()
        .filter_map(|back| today.checked_sub(jiff::Span::new().days(back)).ok())
        .map(|d| d.strftime("%Y-%m-%d").to_string())
        .collect();
    let mut pipe = redis::pipe();
    for day in &dates {
        pipe.cmd("GET").arg(day_key(day));
        pipe.cmd("HGETALL").arg(day_breakdown_key(day));
    }
    let replies: Vec<redis::Value> = pipe.query_async(conn).await?;
    let mut out = Vec::with_capacity(dates.len());
    for (day, pair) in dates.into_iter().zip(replies.chunks(2)) {
        let total: Option<String> = redis::from_redis_value(pair[0].clone()).unwrap_or(None);
        let parts: std::collections::HashMap<String, String> =
            redis::from_redis_value(pair[1].clone()).unwrap_or_default();
        let mut spend = DaySpend {
            day,
            total_usd: total.and_then(|t| t.parse().ok()).unwrap_or(0.0),
            by_role: Default::default(),
            by_model: Default::default(),
        };
        for (field, usd) in parts {
            let usd: f64 = usd.parse().unwrap_or(0.0);
            let (role, model) = field.split_once('|').unwrap_or((field.as_str(), "unknown"));
            *spend.by_role.entry(role.to_string()).or_default() += usd;
            *spend.by_model.entry(model.to_string()).or_default() += usd;
        }
        out.push(spend);
    }
    Ok(out)
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
