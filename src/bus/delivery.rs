//! A delivery that travels with its message to another process: `listen --exec` puts it in
//! the pipeline's environment (`FULLSEND_DELIVERY`), and `think`, `dispatch` and `publish` in
//! that pipeline memoise, fence and acknowledge under it exactly as the built-in roles do.

use serde::{Deserialize, Serialize};

use crate::bus::effects::Fence;
use crate::bus::store::ChannelKeys;

/// The environment variable that carries a delivery.
pub const ENV: &str = "FULLSEND_DELIVERY";

/// One delivery of one stream entry to one consumer.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Delivery {
    /// The channel whose stream the entry is in.
    pub channel: String,
    /// The message's identity (its `msg_id`, else the entry id): the seed of every effect id,
    /// the memo and the seen marker.
    pub identity: String,
    /// The lease the commit must still hold: stream, group, consumer, entry and the delivery
    /// count it was taken at.
    pub fence: Fence,
}

impl Delivery {
    /// The delivery in this process's environment, if any. A malformed value is an error, not
    /// "no delivery": committing unfenced by mistake would break exactly-once.
    pub fn from_env() -> anyhow::Result<Option<Delivery>> {
        match std::env::var(ENV) {
            Ok(text) if !text.trim().is_empty() => serde_json::from_str(&text)
                .map(Some)
                .map_err(|e| anyhow::anyhow!("{ENV} is not a delivery: {e}")),
            _ => Ok(None),
        }
    }

    /// The value to put in a child's environment.
    pub fn to_env(&self) -> String {
        serde_json::to_string(self).unwrap_or_default()
    }

    fn keys(&self) -> ChannelKeys {
        ChannelKeys::new(&self.channel)
    }

    /// The seen marker of this message for its group.
    pub fn seen(&self) -> String {
        self.keys().seen(&self.fence.group, &self.identity)
    }

    /// The job this delivery is, for the stages shared with the built-in roles.
    pub fn job(
        &self,
        message: serde_json::Map<String, serde_json::Value>,
    ) -> crate::bus::runner::Job {
        crate::bus::runner::Job {
            entry_id: self.fence.entry_id.clone(),
            message,
            identity: self.identity.clone(),
            deliveries: self.fence.deliveries,
        }
    }

    /// The memoised decision of this message for its group (the same key the built-in role
    /// uses, so the two forms can take over from each other).
    pub fn memo(&self) -> String {
        self.keys().memo(&self.fence.group, &self.identity)
    }
}
