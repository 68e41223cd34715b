//! The pub/sub bridge: messages that producers only PUBLISH are copied into the role's stream
//! once (an ingest marker per message id), so they join the durable path.

use std::time::Duration;

use anyhow::Context;
use futures_util::StreamExt;
use serde_json::{Map, Value};
use tokio::sync::watch;

use super::Backoff;
use crate::bus::store::{self, ChannelKeys};

/// Takes a PUBLISHed message into the stream once, however many listeners
/// hear it: by `msg_id` when it has one, else by content for a short window.
const INGEST_SCRIPT: &str = r"
local id = ARGV[2]
local ttl = ARGV[3]
if id == '' then
  id = 'sha1:' .. redis.sha1hex(ARGV[1])
  ttl = ARGV[4]
end
if not redis.call('SET', ARGV[5] .. id, '1', 'NX', 'EX', ttl) then return false end
return redis.call('XADD', KEYS[1], '*', 'data', ARGV[1])
";
/// Bridges PUBLISH-only producers into the stream, resubscribing after any fault.
pub(super) async fn ingest_loop(
    url: String,
    keys: ChannelKeys,
    also: Vec<String>,
    stop: watch::Receiver<bool>,
) {
    let mut backoff = Backoff::default();
    loop {
        if *stop.borrow() {
            return;
        }
        match ingest_session(&url, &keys, &also, &mut backoff).await {
            Ok(()) => tracing::info!("subscription to {} ended; resubscribing", keys.channel),
            Err(err) => tracing::warn!("subscription to {}: {err:#}", keys.channel),
        }
        tokio::time::sleep(backoff.next()).await;
    }
}
async fn ingest_session(
    url: &str,
    keys: &ChannelKeys,
    also: &[String],
    backoff: &mut Backoff,
) -> anyhow::Result<()> {
    let client = store::check_url(url)?;
    let mut conn = store::connect(url).await?;
    let pubsub = tokio::time::timeout(Duration::from_secs(5), client.get_async_pubsub())
        .await
        .context("subscribing timed out")??;
    let (mut sink, mut messages) = pubsub.split();
    sink.subscribe(&keys.channel).await?;
    for channel in also {
        sink.subscribe(channel).await?;
    }
    backoff.reset();
    tracing::info!("subscribed to {} {}", keys.channel, also.join(" "));
    let stream = keys.stream();
    let marker_prefix = keys.ingested("");
    loop {
        // Pings detect half-open connections that never deliver again.
        let next = tokio::time::timeout(Duration::from_secs(5), messages.next()).await;
        match next {
            Err(_) => {
                // Subscribed, Redis answers PING with ["pong", ""], not a string: any reply
                // proves the connection, and only a failure ends the session.
                let _: redis::Value = tokio::time::timeout(Duration::from_secs(3), sink.ping())
                    .await
                    .context("ping timed out")??;
            }
            Ok(None) => return Ok(()),
            Ok(Some(msg)) => {
                let payload: String = msg.get_payload().unwrap_or_default();
                let msg_id = serde_json::from_str::<Map<String, Value>>(&payload)
                    .ok()
                    .and_then(|m| crate::support::msg::msg_id_of(&m).map(str::to_string))
                    .unwrap_or_default();
                let added: Option<String> = redis::Script::new(INGEST_SCRIPT)
                    .key(&stream)
                    .arg(&payload)
                    .arg(&msg_id)
                    .arg(store::INGEST_MARKER_TTL_SECS)
                    .arg(60)
                    .arg(&marker_prefix)
                    .invoke_async(&mut conn)
                    .await?;
                if let Some(id) = added {
                    tracing::debug!("took a published message into {stream} as {id}");
                }
            }
        }
    }
}
