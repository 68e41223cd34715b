//! Redis access: connecting from `REDIS_URL`, the key layout of fullsend's
//! streams, and durable publishing (PUBLISH for pub/sub subscribers plus XADD
//! for stream consumers, in one script).

use std::time::Duration;

use anyhow::Context;
use redis::aio::ConnectionManager;

use crate::support::config::redacted_url;
use crate::support::exit::Fail;

/// A Redis connection that reconnects by itself after faults.
pub type Conn = ConnectionManager;

/// How long an ingest marker protects against re-adding the same message.
pub const INGEST_MARKER_TTL_SECS: u64 = 7 * 24 * 3600;

/// Streams without a consumer group are capped (nobody needs their entries).
const UNCONSUMED_STREAM_MAXLEN: u64 = 10_000;

/// Checks a Redis URL before use: it must parse, and TLS certificate checks
/// may not be turned off.
pub fn check_url(url: &str) -> anyhow::Result<redis::Client> {
    if url.contains("#insecure") {
        return Err(Fail::usage(
            "REDIS_URL: `#insecure` (no TLS certificate checks) is refused",
        ));
    }
    let client = redis::Client::open(url).map_err(|e| {
        Fail::usage(format!(
            "REDIS_URL is not a valid Redis URL ({}): {}",
            redacted_url(url),
            e.kind_str()
        ))
    })?;
    Ok(client)
}

trait KindStr {
    fn kind_str(&self) -> String;
}
impl KindStr for redis::RedisError {
    fn kind_str(&self) -> String {
        // The full Display may echo the URL, password included.
        format!("{:?}", self.kind())
    }
}

/// Connects with bounded timeouts and automatic reconnection.
pub async fn connect(url: &str) -> anyhow::Result<Conn> {
    let client = check_url(url)?;
    let config = redis::aio::ConnectionManagerConfig::new()
        .set_connection_timeout(Some(Duration::from_secs(3)))
        .set_response_timeout(Some(Duration::from_secs(10)))
        .set_number_of_retries(2)
        .set_max_delay(Duration::from_secs(2));
    let conn = tokio::time::timeout(
        Duration::from_secs(15),
        client.get_connection_manager_with_config(config),
    )
    .await
    .map_err(|_| Fail::upstream(format!("Redis at {} did not answer", redacted_url(url))))?
    .map_err(|e| {
        Fail::upstream(format!(
            "cannot connect to Redis at {}: {e}",
            redacted_url(url)
        ))
    })?;
    Ok(conn)
}

/// One connection attempt, no retries: whether Redis answers at `url` now. For commands where
/// Redis is optional, so a server that is not there costs one refused connect, not the
/// connection manager's retries.
pub async fn answers(url: &str) -> anyhow::Result<()> {
    let client = check_url(url)?;
    let config = redis::AsyncConnectionConfig::new()
        .set_connection_timeout(Some(Duration::from_secs(3)))
        .set_response_timeout(Some(Duration::from_secs(3)));
    // Connecting authenticates and selects the database: that is the answer wanted.
    let _conn = client
        .get_multiplexed_async_connection_with_config(&config)
        .await?;
    Ok(())
}

/// A dedicated connection for blocking reads (XREADGROUP BLOCK), whose
/// response timeout must outlast the block time (redis-rs defaults to 500 ms).
pub async fn connect_blocking(
    url: &str,
    block: Duration,
) -> anyhow::Result<redis::aio::MultiplexedConnection> {
    let client = check_url(url)?;
    let config = redis::AsyncConnectionConfig::new()
        .set_connection_timeout(Some(Duration::from_secs(3)))
        .set_response_timeout(Some(block + Duration::from_secs(5)));
    let conn = client
        .get_multiplexed_async_connection_with_config(&config)
        .await
        .with_context(|| format!("connecting to Redis at {}", redacted_url(url)))?;
    Ok(conn)
}

/// The keys fullsend keeps for one channel. All share the hash tag `{name}` so
/// that scripts touching several of them stay in one cluster slot.
#[derive(Debug, Clone)]
pub struct ChannelKeys {
    /// The pub/sub channel name.
    pub channel: String,
    tag: String,
}

impl ChannelKeys {
    /// Keys for `channel`; `fullsend:to_orchestrator` → `fullsend:{to_orchestrator}:…`.
    pub fn new(channel: &str) -> Self {
        let tag = match channel.strip_prefix("fullsend:") {
            Some(rest) => format!("fullsend:{{{rest}}}"),
            None => format!("{{{channel}}}"),
        };
        ChannelKeys {
            channel: channel.to_string(),
            tag,
        }
    }
    /// The stream carrying the channel's messages durably.
    pub fn stream(&self) -> String {
        format!("{}:stream", self.tag)
    }
    /// The dead-letter stream.
    pub fn dlq(&self) -> String {
        format!("{}:dlq", self.tag)
    }
    /// Marks a message id as already added to the stream.
    pub fn ingested(&self, id: &str) -> String {
        format!("{}:ingested:{id}", self.tag)
    }
    /// Marks a message as fully handled by `group`.
    pub fn seen(&self, group: &str, msg_id: &str) -> String {
        format!("{}:seen:{group}:{msg_id}", self.tag)
    }
    /// The memoised model result for a message.
    pub fn memo(&self, group: &str, msg_id: &str) -> String {
        format!("{}:memo:{group}:{msg_id}", self.tag)
    }
    /// Marks that the one-time "still thinking" notice was sent.
    pub fn notified(&self, group: &str, msg_id: &str) -> String {
        format!("{}:notified:{group}:{msg_id}", self.tag)
    }
    /// A message's last word: an effect (a follow-up to someone told to wait) that the
    /// listener commits, once, if it gives the message up to the dead-letter stream.
    pub fn last_word(&self, group: &str, msg_id: &str) -> String {
        format!("{}:last_word:{group}:{msg_id}", self.tag)
    }
}

/// Adds a message to the channel's stream and PUBLISHes it, atomically and
/// once per message id (a repeat does neither). Streams nobody consumes yet are capped; streams with a
/// consumer group are never trimmed here.
const PUBLISH_SCRIPT: &str = r"
if not redis.call('SET', KEYS[2], '1', 'NX', 'EX', ARGV[3]) then
  return {false, -1}
end
local id = redis.call('XADD', KEYS[1], '*', 'data', ARGV[2])
if #redis.call('XINFO', 'GROUPS', KEYS[1]) == 0 then
  redis.call('XTRIM', KEYS[1], 'MAXLEN', '~', ARGV[4])
end
local receivers = redis.call('PUBLISH', ARGV[1], ARGV[2])
return {id, receivers}
";

/// The outcome of a durable publish.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Published {
    /// The channel.
    pub channel: String,
    /// The stream entry id, or None when this message id was already in the stream.
    pub stream_id: Option<String>,
    /// How many pub/sub subscribers received it (-1: not sent again, a duplicate).
    pub receivers: i64,
    /// The message id.
    pub msg_id: String,
}

/// PUBLISHes `payload` on `channel` and adds it to the channel's stream once per `msg_id`.
pub async fn publish(
    conn: &mut Conn,
    channel: &str,
    msg_id: &str,
    payload: &str,
) -> anyhow::Result<Published> {
    let keys = ChannelKeys::new(channel);
    let (id, receivers): (Option<String>, i64) = redis::Script::new(PUBLISH_SCRIPT)
        .key(keys.stream())
        .key(keys.ingested(msg_id))
        .arg(channel)
        .arg(payload)
        .arg(INGEST_MARKER_TTL_SECS)
        .arg(UNCONSUMED_STREAM_MAXLEN)
        .invoke_async(conn)
        .await
        .with_context(|| format!("publishing on {channel}"))?;
    Ok(Published {
        channel: channel.to_string(),
        stream_id: id,
        receivers,
        msg_id: msg_id.to_string(),
    })
}

/// All keys matching `pattern`, by SCAN (never KEYS), deduplicated and sorted.
pub async fn scan_keys(conn: &mut Conn, pattern: &str) -> anyhow::Result<Vec<String>> {
    Ok(scan_patterns(conn, &[pattern])
        .await?
        .pop()
        .unwrap_or_default())
}

/// The keys of several patterns, scanned side by side: each round trip
/// carries one SCAN step of every pattern still in progress.
pub async fn scan_patterns(conn: &mut Conn, patterns: &[&str]) -> anyhow::Result<Vec<Vec<String>>> {
    let mut found: Vec<std::collections::BTreeSet<String>> =
        vec![Default::default(); patterns.len()];
    let mut cursors: Vec<Option<u64>> = vec![Some(0); patterns.len()];
    while cursors.iter().any(Option::is_some) {
        let mut pipe = redis::pipe();
        let active: Vec<usize> = (0..patterns.len())
            .filter(|i| cursors[*i].is_some())
            .collect();
        for &i in &active {
            pipe.cmd("SCAN")
                .arg(cursors[i].unwrap_or(0))
                .arg("MATCH")
                .arg(patterns[i])
                .arg("COUNT")
                .arg(1000);
        }
        let replies: Vec<(u64, Vec<String>)> = pipe
            .query_async(conn)
            .await
            .with_context(|| format!("scanning {}", patterns.join(", ")))?;
        for (&i, (next, batch)) in active.iter().zip(replies) {
            found[i].extend(batch);
            cursors[i] = (next != 0).then_some(next);
        }
    }
    Ok(found
        .into_iter()
        .map(|set| set.into_iter().collect())
        .collect())
}

/// The keys under each prefix, from one SCAN pass over the keyspace (no
/// MATCH): cheaper for the server than one pattern-matching pass per prefix.
pub async fn scan_prefixes(conn: &mut Conn, prefixes: &[&str]) -> anyhow::Result<Vec<Vec<String>>> {
    let mut found: Vec<Vec<String>> = vec![Vec::new(); prefixes.len()];
    let mut seen = std::collections::HashSet::new();
    let mut cursor: u64 = 0;
    loop {
        let (next, batch): (u64, Vec<String>) = redis::cmd("SCAN")
            .arg(cursor)
            .arg("COUNT")
            .arg(10_000)
            .query_async(conn)
            .await
            .context("scanning the keyspace")?;
        for key in batch {
            if let Some(i) = prefixes.iter().position(|p| key.starts_with(p)) {
                // SCAN may return a key twice.
                if seen.insert(key.clone()) {
                    found[i].push(key);
                }
            }
        }
        if next == 0 {
            break;
        }
        cursor = next;
    }
    for keys in &mut found {
        keys.sort();
    }
    Ok(found)
}

/// The value of one key read by [`read_many`].
#[derive(Debug, Clone)]
pub enum KeyValue {
    /// A hash.
    Hash(std::collections::BTreeMap<String, String>),
    /// A string.
    Text(String),
    /// Missing or another type.
    Other,
}

/// Reads many keys of mixed types in two pipelined round trips (TYPE, then
/// HGETALL — or HMGET of `fields` — or GET), never one round trip per key.
pub async fn read_many(
    conn: &mut Conn,
    keys: &[String],
    fields: Option<&[&str]>,
) -> anyhow::Result<Vec<KeyValue>> {
    let requests: Vec<(&str, Option<&[&str]>)> =
        keys.iter().map(|k| (k.as_str(), fields)).collect();
    read_keys(conn, &requests).await
}

/// Like [`read_many`], with the hash fields to read chosen per key (None: all).
pub async fn read_keys(
    conn: &mut Conn,
    requests: &[(&str, Option<&[&str]>)],
) -> anyhow::Result<Vec<KeyValue>> {
    /// How one key is read in the second round trip.
    enum Slot<'a> {
        Skip,
        Hash(Option<&'a [&'a str]>),
        Text,
    }
    if requests.is_empty() {
        return Ok(Vec::new());
    }
    let mut types_pipe = redis::pipe();
    for (key, _) in requests {
        types_pipe.cmd("TYPE").arg(*key);
    }
    let types: Vec<String> = types_pipe
        .query_async(conn)
        .await
        .context("reading key types")?;
    let mut read_pipe = redis::pipe();
    let mut slots = Vec::with_capacity(requests.len());
    for ((key, fields), kind) in requests.iter().zip(&types) {
        slots.push(match kind.as_str() {
            "hash" => {
                match fields {
                    Some(names) => read_pipe.cmd("HMGET").arg(*key).arg(*names),
                    None => read_pipe.cmd("HGETALL").arg(*key),
                };
                Slot::Hash(*fields)
            }
            "string" => {
                read_pipe.cmd("GET").arg(*key);
                Slot::Text
            }
            _ => Slot::Skip,
        });
    }
    let values: Vec<redis::Value> = if slots.iter().any(|s| !matches!(s, Slot::Skip)) {
        read_pipe.query_async(conn).await.context("reading keys")?
    } else {
        Vec::new()
    };
    let mut values = values.into_iter();
    let mut out = Vec::with_capacity(requests.len());
    for slot in slots {
        let value = match slot {
            Slot::Skip => {
                out.push(KeyValue::Other);
                continue;
            }
            _ => values.next().unwrap_or(redis::Value::Nil),
        };
        out.push(match slot {
            Slot::Hash(Some(names)) => {
                let got: Vec<Option<String>> =
                    redis::FromRedisValue::from_redis_value(value).unwrap_or_default();
                KeyValue::Hash(
                    names
                        .iter()
                        .zip(got)
                        .filter_map(|(n, v)| v.map(|v| ((*n).to_string(), v)))
                        .collect(),
                )
            }
            Slot::Hash(None) => {
                KeyValue::Hash(redis::FromRedisValue::from_redis_value(value).unwrap_or_default())
            }
            Slot::Text => {
                let text: Option<String> =
                    redis::FromRedisValue::from_redis_value(value).unwrap_or(None);
                text.map(KeyValue::Text).unwrap_or(KeyValue::Other)
            }
            Slot::Skip => KeyValue::Other,
        });
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_share_a_hash_tag() {
        let k = ChannelKeys::new("fullsend:to_orchestrator");
        assert_eq!(k.stream(), "fullsend:{to_orchestrator}:stream");
        assert_eq!(k.dlq(), "fullsend:{to_orchestrator}:dlq");
        assert_eq!(ChannelKeys::new("other").stream(), "{other}:stream");
    }

    #[test]
    fn redaction_hides_password() {
        let shown = redacted_url("redis://user:secret@example.com:6380/3");
        assert!(!shown.contains("secret"), "{shown}");
        assert!(shown.contains("6380"), "{shown}");
        assert!(shown.ends_with("/3"), "{shown}");
        assert!(check_url("rediss://h:6380/0#insecure").is_err());
    }
}
