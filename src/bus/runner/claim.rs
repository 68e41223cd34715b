//! Consumer identity and reading: a consumer name held under a lease, the group created on
//! first use, new entries read with XREADGROUP and dead consumers' entries reclaimed with
//! XAUTOCLAIM.

use super::heartbeat::{HEARTBEAT_EVERY, heartbeat_key};
use super::worker::Entry;
use super::{Backoff, Options};
use crate::bus::store::{self, Conn};
use anyhow::Context;
use std::time::Duration;
use tokio::sync::watch;

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
pub(super) async fn autoclaim(
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
