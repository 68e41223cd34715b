//! Consumer identity and reading: a consumer name held under a lease, the group created on
//! first use, new entries read with XREADGROUP and dead consumers' entries reclaimed with
//! XAUTOCLAIM.

use std::time::Duration;

use anyhow::Context;
use redis::streams::{StreamAutoClaimReply, StreamId, StreamReadReply};
use tokio::sync::watch;

use super::heartbeat::{heartbeat_key, name_lease};
use super::worker::Entry;
use super::{Backoff, Options};
use crate::bus::store::{self, Conn};

const CLAIM_NAME_SCRIPT: &str = r"
local current = redis.call('HGET', KEYS[1], 'token')
if current and current ~= ARGV[2] then return 0 end
redis.call('HSET', KEYS[1], 'token', ARGV[1])
redis.call('PEXPIRE', KEYS[1], ARGV[3])
return 1
";
pub(super) async fn connect_with_backoff(
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
pub(super) async fn claim_consumer_name(
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
            .arg(name_lease(opts.lease).as_millis() as u64)
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

/// Reads up to `count` entries with XREADGROUP: new ones with `id` ">" (their first
/// delivery), or this consumer's own pending ones from `id`.
pub(super) async fn read_group<C: redis::aio::ConnectionLike>(
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
    // A BLOCK that times out answers nil.
    let reply: Option<StreamReadReply> = cmd.query_async(conn).await?;
    // Entries read with ">" are on their first delivery; for re-reads the count is unknown here.
    let deliveries = if id == ">" { 1 } else { 0 };
    Ok(reply
        .into_iter()
        .flat_map(|r| r.keys)
        .flat_map(|key| key.ids)
        .map(|entry| to_entry(entry, deliveries))
        .collect())
}

/// Claims up to `count` entries that other consumers have held longer than `lease`
/// (XAUTOCLAIM from `cursor`); returns them and the cursor to continue from, so a long
/// pending list is walked through rather than rescanned from its start every time.
pub(super) async fn autoclaim(
    conn: &mut Conn,
    stream: &str,
    group: &str,
    consumer: &str,
    lease: Duration,
    count: usize,
    cursor: &str,
) -> anyhow::Result<(Vec<Entry>, String)> {
    let reply: StreamAutoClaimReply = redis::cmd("XAUTOCLAIM")
        .arg(stream)
        .arg(group)
        .arg(consumer)
        .arg(lease.as_millis() as u64)
        .arg(cursor)
        .arg("COUNT")
        .arg(count)
        .query_async(conn)
        .await?;
    if !reply.deleted_ids.is_empty() {
        tracing::error!(
            "{} pending entries of {stream} were deleted before being handled",
            reply.deleted_ids.len()
        );
    }
    let next = reply.next_stream_id.clone();
    Ok((
        reply
            .claimed
            .into_iter()
            .map(|entry| to_entry(entry, 0))
            .collect(),
        next,
    ))
}

/// A stream entry as the worker takes it. Redis answers a pending entry whose body was
/// trimmed away with nil fields, which arrive here as an empty map: every real entry has at
/// least one field (XADD requires one), so empty means gone.
fn to_entry(entry: StreamId, deliveries: u64) -> Entry {
    let fields = (!entry.map.is_empty()).then(|| {
        entry
            .map
            .iter()
            .map(|(field, value)| {
                let text = redis::from_redis_value_ref::<String>(value).unwrap_or_default();
                (field.clone(), text)
            })
            .collect()
    });
    (entry.id, fields, deliveries)
}

/// Takes back this consumer's own pending `ids` for a retry (XCLAIM with no idle minimum; a
/// retry marked `counted` counts a delivery, the others are claimed JUSTID, which does not).
/// Entries acknowledged or taken over meanwhile are not returned.
pub(super) async fn claim_own(
    conn: &mut Conn,
    stream: &str,
    group: &str,
    consumer: &str,
    ids: &[(String, bool)],
) -> anyhow::Result<Vec<Entry>> {
    let mut out = Vec::new();
    for counted in [true, false] {
        let batch: Vec<String> = ids
            .iter()
            .filter(|(_, c)| *c == counted)
            .map(|(id, _)| id.clone())
            .collect();
        out.extend(claim_batch(conn, stream, group, consumer, &batch, counted).await?);
    }
    Ok(out)
}

async fn claim_batch(
    conn: &mut Conn,
    stream: &str,
    group: &str,
    consumer: &str,
    ids: &[String],
    counted: bool,
) -> anyhow::Result<Vec<Entry>> {
    // Only entries still ours: XCLAIM would otherwise take one another consumer reclaimed.
    let mut mine = Vec::new();
    for id in ids {
        let owner: Vec<(String, String, u64, u64)> = redis::cmd("XPENDING")
            .arg(stream)
            .arg(group)
            .arg(id)
            .arg(id)
            .arg(1)
            .query_async(conn)
            .await?;
        if owner.first().is_some_and(|(_, who, _, _)| who == consumer) {
            mine.push(id.clone());
        }
    }
    if mine.is_empty() {
        return Ok(Vec::new());
    }
    if counted {
        let reply: redis::streams::StreamClaimReply = redis::cmd("XCLAIM")
            .arg(stream)
            .arg(group)
            .arg(consumer)
            .arg(0)
            .arg(&mine)
            .query_async(conn)
            .await?;
        return Ok(reply
            .ids
            .into_iter()
            .map(|entry| to_entry(entry, 0))
            .collect());
    }
    // JUSTID resets the idle time without counting a delivery; the body is read apart.
    let claimed: Vec<String> = redis::cmd("XCLAIM")
        .arg(stream)
        .arg(group)
        .arg(consumer)
        .arg(0)
        .arg(&mine)
        .arg("JUSTID")
        .query_async(conn)
        .await?;
    let mut out = Vec::new();
    for id in claimed {
        let range: redis::streams::StreamRangeReply = redis::cmd("XRANGE")
            .arg(stream)
            .arg(&id)
            .arg(&id)
            .query_async(conn)
            .await?;
        match range.ids.into_iter().next() {
            Some(entry) => out.push(to_entry(entry, 0)),
            None => out.push((id, None, 0)),
        }
    }
    Ok(out)
}
