//! The queues as an operator sees them: per role, the stream's length, what is pending (with
//! idle times and delivery counts), the dead letters with their errors, the listeners alive;
//! Redis's own health; and putting dead letters back on their stream. `fullsend status`,
//! `fullsend dlq`, `/metrics` and the console all read and act through here.

use std::collections::HashMap;

use redis::streams::StreamInfoGroupsReply;
use serde_json::{Value, json};

use crate::bus::store::{ChannelKeys, Conn};

/// Version and the settings durability relies on, with warnings.
pub async fn redis_health(conn: &mut Conn) -> anyhow::Result<Value> {
    let info: String = redis::cmd("INFO").arg("server").query_async(conn).await?;
    let version = info
        .lines()
        .find_map(|l| l.strip_prefix("redis_version:"))
        .unwrap_or("")
        .trim()
        .to_string();
    let mut settings = HashMap::new();
    let mut warnings = Vec::new();
    for name in ["appendonly", "appendfsync", "maxmemory-policy"] {
        let got: Result<Vec<String>, _> = redis::cmd("CONFIG")
            .arg("GET")
            .arg(name)
            .query_async(conn)
            .await;
        match got {
            Ok(v) if v.len() >= 2 => {
                settings.insert(name, v[1].clone());
            }
            _ => warnings.push(format!("cannot read {name} (CONFIG GET not allowed?)")),
        }
    }
    let expect = [
        ("appendonly", "yes"),
        ("appendfsync", "everysec"),
        ("maxmemory-policy", "noeviction"),
    ];
    for (name, want) in expect {
        if let Some(have) = settings.get(name) {
            let ok = if name == "appendfsync" {
                have == "everysec" || have == "always"
            } else {
                have == want
            };
            if !ok {
                warnings.push(format!("{name} is {have}; durable delivery needs {want}"));
            }
        }
    }
    let major: u32 = version
        .split('.')
        .next()
        .and_then(|m| m.parse().ok())
        .unwrap_or(0);
    if major < 7 {
        warnings.push(format!(
            "Redis {version} is older than 7.0, which fullsend needs"
        ));
    }
    Ok(json!({"reachable": true, "version": version, "settings": settings, "warnings": warnings}))
}

/// One role's queue: stream length, pending, lag, dead letters, listeners alive, last error.
pub async fn role_status(conn: &mut Conn, group: &str, channel: &str) -> anyhow::Result<Value> {
    let keys = ChannelKeys::new(channel);
    let stream = keys.stream();
    let length: u64 = redis::cmd("XLEN")
        .arg(&stream)
        .query_async(conn)
        .await
        .unwrap_or(0);
    let dlq_length: u64 = redis::cmd("XLEN")
        .arg(keys.dlq())
        .query_async(conn)
        .await
        .unwrap_or(0);
    let mut pending = 0u64;
    let mut lag = Value::Null;
    // A stream that does not exist yet has no groups: nothing is pending.
    let groups: Option<StreamInfoGroupsReply> = redis::cmd("XINFO")
        .arg("GROUPS")
        .arg(&stream)
        .query_async(conn)
        .await
        .ok();
    if let Some(info) = groups
        .into_iter()
        .flat_map(|g| g.groups)
        .find(|g| g.name == group)
    {
        pending = info.pending as u64;
        lag = info.lag.map(Value::from).unwrap_or(Value::Null);
    }
    let listener_keys =
        crate::bus::store::scan_keys(conn, &format!("fullsend:listeners:{group}:*")).await?;
    let mut listeners = Vec::new();
    let mut last_error = String::new();
    for key in listener_keys {
        let mut h: HashMap<String, String> =
            redis::cmd("HGETALL").arg(&key).query_async(conn).await?;
        h.remove("token");
        if let Some(e) = h.get("last_error").filter(|e| !e.is_empty()) {
            last_error = e.clone();
        }
        listeners.push(json!(h));
    }
    let errors: HashMap<String, String> = redis::cmd("HGETALL")
        .arg(format!(
            "{}:errors:{group}",
            stream.trim_end_matches(":stream")
        ))
        .query_async(conn)
        .await
        .unwrap_or_default();
    Ok(json!({
        "role": group,
        "channel": channel,
        "stream": stream,
        "length": length,
        "pending": pending,
        "lag": lag,
        "dead_letters": dlq_length,
        "listeners_alive": listeners.len(),
        "listeners": listeners,
        "failing_entries": errors.len(),
        "last_error": if last_error.is_empty() { Value::Null } else { json!(last_error) },
    }))
}

/// Up to `count` entries pending in `group` on `channel`'s stream, oldest first: id, the
/// consumer holding it, how long it has been idle and how often it was delivered.
pub async fn pending_entries(
    conn: &mut Conn,
    group: &str,
    channel: &str,
    count: usize,
) -> anyhow::Result<Vec<Value>> {
    let stream = ChannelKeys::new(channel).stream();
    let rows: Result<Vec<(String, String, u64, u64)>, _> = redis::cmd("XPENDING")
        .arg(&stream)
        .arg(group)
        .arg("-")
        .arg("+")
        .arg(count)
        .query_async(conn)
        .await;
    // No group yet (nothing was ever read): nothing is pending.
    let rows = match rows {
        Ok(rows) => rows,
        Err(err) if err.code() == Some("NOGROUP") => Vec::new(),
        Err(err) => return Err(err.into()),
    };
    Ok(rows
        .into_iter()
        .map(|(id, consumer, idle_ms, deliveries)| {
            json!({"entry_id": id, "consumer": consumer, "idle_ms": idle_ms, "deliveries": deliveries})
        })
        .collect())
}

/// One dead letter: its entry id in the dead-letter stream and its fields (`data`, `error`,
/// `deliveries`, `consumer`, `entry_id`, `dead_at`).
pub type DeadLetter = (String, HashMap<String, String>);

/// Up to `count` dead letters of `channel`, oldest first.
pub async fn dead_letters(
    conn: &mut Conn,
    channel: &str,
    count: usize,
) -> anyhow::Result<Vec<DeadLetter>> {
    Ok(redis::cmd("XRANGE")
        .arg(ChannelKeys::new(channel).dlq())
        .arg("-")
        .arg("+")
        .arg("COUNT")
        .arg(count)
        .query_async(conn)
        .await?)
}

/// Which dead letters to requeue.
#[derive(Debug, Clone)]
pub enum Requeue {
    /// Every one.
    All,
    /// These dead-letter entry ids; an unknown one is an error before anything moves.
    Ids(Vec<String>),
}

/// Why a requeue did nothing.
#[derive(Debug)]
pub enum RequeueError {
    /// A named dead letter is not there (already requeued, or never was).
    Unknown(String),
    /// Redis failed.
    Redis(anyhow::Error),
}

impl std::fmt::Display for RequeueError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            RequeueError::Unknown(m) => f.write_str(m),
            RequeueError::Redis(e) => write!(f, "{e:#}"),
        }
    }
}

/// Moves dead letters back to their stream as new entries (a fresh delivery count), each in
/// one transaction with its removal from the dead-letter stream, so a crash can neither lose
/// nor double one. Returns `{dlq_id, requeued_as, stream}` per dead letter moved.
pub async fn requeue(
    conn: &mut Conn,
    channel: &str,
    which: &Requeue,
) -> Result<Vec<Value>, RequeueError> {
    let keys = ChannelKeys::new(channel);
    let entries: Vec<DeadLetter> = match which {
        Requeue::All => redis::cmd("XRANGE")
            .arg(keys.dlq())
            .arg("-")
            .arg("+")
            .query_async(conn)
            .await
            .map_err(|e| RequeueError::Redis(e.into()))?,
        Requeue::Ids(ids) => {
            let mut found = Vec::new();
            for id in ids {
                let mut one: Vec<DeadLetter> = redis::cmd("XRANGE")
                    .arg(keys.dlq())
                    .arg(id)
                    .arg(id)
                    .query_async(conn)
                    .await
                    .map_err(|e| RequeueError::Redis(e.into()))?;
                if one.is_empty() {
                    return Err(RequeueError::Unknown(format!(
                        "no dead letter {id} in {}",
                        keys.dlq()
                    )));
                }
                found.append(&mut one);
            }
            found
        }
    };
    let mut moved = Vec::with_capacity(entries.len());
    for (id, fields) in entries {
        let data = fields.get("data").cloned().unwrap_or_default();
        // XDEL first inside MULTI: a dead letter another requeue moved a moment ago is
        // deleted 0 times, and then nothing is added (the script below checks that).
        let new_id: Option<String> = redis::Script::new(REQUEUE_SCRIPT)
            .key(keys.dlq())
            .key(keys.stream())
            .arg(&id)
            .arg(&data)
            .invoke_async(conn)
            .await
            .map_err(|e| RequeueError::Redis(e.into()))?;
        if let Some(new_id) = new_id {
            moved.push(json!({"dlq_id": id, "requeued_as": new_id, "stream": keys.stream()}));
        }
    }
    Ok(moved)
}

/// Deletes the dead letter and, only if it was still there, adds its data to the stream: two
/// requeues of the same entry (a double click, two operators) move it once.
const REQUEUE_SCRIPT: &str = r"
if redis.call('XDEL', KEYS[1], ARGV[1]) == 0 then return false end
return redis.call('XADD', KEYS[2], '*', 'data', ARGV[2])
";

/// The Prometheus text of `/metrics`: the queue gauges of `roles` (role, channel) read from
/// Redis now, then every series of the process. A Redis that cannot be read leaves the gauges
/// as they were.
pub async fn scrape(conn: Option<Conn>, roles: &[(String, String)]) -> String {
    use crate::support::metrics;
    if let Some(mut conn) = conn {
        for (role, channel) in roles {
            match role_status(&mut conn, role, channel).await {
                Ok(s) => {
                    let n = |k: &str| s[k].as_i64().unwrap_or(0);
                    metrics::queue(role, n("pending"), n("dead_letters"), n("listeners_alive"));
                }
                Err(err) => tracing::debug!("metrics: reading the {role} queue: {err:#}"),
            }
        }
    }
    metrics::render()
}
