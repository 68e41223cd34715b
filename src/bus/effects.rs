//! Side effects as data. Commands first plan a list of effects (printed by
//! `--dry-run`), then apply them: file effects locally and idempotently, Redis
//! effects in one atomic script that can be fenced to a stream entry's lease,
//! so a redelivered or stale message commits nothing twice.

use std::collections::BTreeMap;
use std::path::PathBuf;

use anyhow::Context;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};

use crate::bus::store::{ChannelKeys, Conn, INGEST_MARKER_TTL_SECS};

/// A precondition on a hash write.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Guard {
    /// Write unconditionally.
    #[default]
    None,
    /// Only if the key exists (never create phantom hashes).
    MustExist,
    /// Only if the key does not exist (never overwrite).
    MustNotExist,
    /// Only if the hash exists and `field` holds `value` now (e.g. an experiment still
    /// `draft`, waiting for its tool): checked inside the commit, so a change made by another
    /// component since the plan was made fails the whole commit instead of being overwritten.
    FieldIs {
        /// The hash field.
        field: String,
        /// The value it must hold.
        value: String,
    },
}

/// One side effect.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "effect", rename_all = "snake_case")]
pub enum Effect {
    /// PUBLISH on a channel and add to its stream.
    Publish {
        /// Channel name.
        channel: String,
        /// The message (already stamped with `msg_id`).
        message: Map<String, Value>,
    },
    /// HSET fields of a hash.
    HashSet {
        /// Key.
        key: String,
        /// Field values.
        fields: BTreeMap<String, String>,
        /// Precondition.
        #[serde(default)]
        guard: Guard,
    },
    /// SET a string.
    SetString {
        /// Key.
        key: String,
        /// Value.
        value: String,
        /// When the key expires, in seconds from the commit (never when absent).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        expire_secs: Option<u64>,
    },
    /// SADD members.
    SetAdd {
        /// Key.
        key: String,
        /// Members.
        members: Vec<String>,
    },
    /// ZADD one member.
    SortedAdd {
        /// Key.
        key: String,
        /// Score.
        score: f64,
        /// Member.
        member: String,
    },
    /// SREM members from a set.
    SetRemove {
        /// Key.
        key: String,
        /// Members.
        members: Vec<String>,
    },
    /// DEL a key.
    Delete {
        /// Key.
        key: String,
    },
    /// Append a learning to learnings.md.
    AppendLearning {
        /// The file.
        path: PathBuf,
        /// The learning.
        text: String,
    },
    /// Add one line to a section of a markdown file, read and written under the file's lock,
    /// so that concurrent additions all survive; a line already there is not added again.
    AddLine {
        /// The file.
        path: PathBuf,
        /// Heading of the section (`## Active (In Progress)`); matched by prefix.
        section: String,
        /// Title for a file that is empty or missing.
        title: String,
        /// The line.
        line: String,
        /// Where previous versions go.
        history_dir: PathBuf,
    },
    /// Move the lines of a markdown section that name one of `keys` to another section,
    /// ticked, with a note (finished work leaving the worklist's Active section); under the
    /// file's lock, and a no-op once they are moved.
    CompleteLines {
        /// The file.
        path: PathBuf,
        /// Heading of the section the lines leave; matched by prefix.
        from: String,
        /// Heading of the section they go to.
        to: String,
        /// Ids or names a line must contain, as a whole word, to move.
        keys: Vec<String>,
        /// What is written after a moved line.
        note: String,
        /// Where previous versions go.
        history_dir: PathBuf,
    },
    /// Put a note on the lines of a markdown section that name one of `keys` (where running
    /// work has got to), under the file's lock; a no-op once they carry it.
    NoteLines {
        /// The file.
        path: PathBuf,
        /// Heading of the section; matched by prefix.
        section: String,
        /// Ids or names a line must contain, as a whole word.
        keys: Vec<String>,
        /// The note.
        note: String,
        /// Where previous versions go.
        history_dir: PathBuf,
    },
    /// Replace a file atomically, keeping the previous version.
    ReplaceFile {
        /// The file.
        path: PathBuf,
        /// New content.
        content: String,
        /// Where previous versions go.
        history_dir: PathBuf,
        /// The version the content was decided on: when the file is another one now, nothing
        /// is written and the effect fails with [`crate::support::files::ChangedSince`].
        #[serde(default, skip_serializing_if = "Option::is_none")]
        based_on: Option<String>,
    },
}

impl Effect {
    /// Whether this effect touches Redis (and so goes into the commit script).
    pub fn is_redis(&self) -> bool {
        !matches!(
            self,
            Effect::AppendLearning { .. }
                | Effect::AddLine { .. }
                | Effect::CompleteLines { .. }
                | Effect::NoteLines { .. }
                | Effect::ReplaceFile { .. }
        )
    }
}

/// Applies the file effects, idempotently per `marker` (a message id). A file effect's identity
/// is its place among the file effects, not among all effects: the Redis effects of a plan can
/// change with the state it was planned on (an experiment already archived plans none), its
/// file effects cannot.
pub fn apply_files(effects: &[Effect], marker: Option<&str>) -> anyhow::Result<Vec<Value>> {
    let mut reports = Vec::new();
    for (index, effect) in effects.iter().filter(|e| !e.is_redis()).enumerate() {
        match effect {
            Effect::AppendLearning { path, text } => {
                let id = marker.map(|m| format!("{m}#{index}"));
                let done = crate::support::files::append_learning(path, text, id.as_deref())?;
                reports.push(json!({"effect": "append_learning", "path": path, "appended": done.appended, "timestamp": done.timestamp}));
            }
            Effect::AddLine {
                path,
                section,
                title,
                line,
                history_dir,
            } => {
                let done = crate::support::files::edit_atomic(path, history_dir, |current| {
                    crate::support::files::add_to_section(
                        current.unwrap_or(""),
                        title,
                        section,
                        line,
                    )
                })?;
                reports.push(json!({"effect": "add_line", "path": path, "line": line, "changed": done.changed}));
            }
            Effect::CompleteLines {
                path,
                from,
                to,
                keys,
                note,
                history_dir,
            } => {
                let done = crate::support::files::edit_atomic(path, history_dir, |current| {
                    crate::support::files::complete_in_section(
                        current.unwrap_or(""),
                        from,
                        to,
                        keys,
                        note,
                    )
                })?;
                reports.push(json!({"effect": "complete_lines", "path": path, "keys": keys, "changed": done.changed}));
            }
            Effect::NoteLines {
                path,
                section,
                keys,
                note,
                history_dir,
            } => {
                let done = crate::support::files::edit_atomic(path, history_dir, |current| {
                    crate::support::files::note_in_section(
                        current.unwrap_or(""),
                        section,
                        keys,
                        note,
                    )
                })?;
                reports.push(json!({"effect": "note_lines", "path": path, "keys": keys, "changed": done.changed}));
            }
            Effect::ReplaceFile {
                path,
                content,
                history_dir,
                based_on,
            } => {
                let mut stale = false;
                let done = crate::support::files::edit_atomic(path, history_dir, |current| {
                    let now = crate::support::files::version_of(current.unwrap_or(""));
                    if based_on.as_ref().is_some_and(|v| *v != now) {
                        stale = true;
                        return None;
                    }
                    Some(content.clone())
                })?;
                if stale {
                    return Err(crate::support::files::ChangedSince { path: path.clone() }.into());
                }
                reports.push(json!({"effect": "replace_file", "path": path, "bytes": done.bytes, "previous": done.previous, "changed": done.changed}));
            }
            _ => {}
        }
    }
    Ok(reports)
}

/// Binds the commit to a stream entry: it only happens while this consumer
/// still owns the entry, and it acknowledges the entry.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Fence {
    /// The stream.
    pub stream: String,
    /// The consumer group.
    pub group: String,
    /// This consumer.
    pub consumer: String,
    /// The entry.
    pub entry_id: String,
    /// The entry's delivery count when this consumer took it: the fencing token. Every other
    /// delivery (a successor re-reading the entry, a reclaim) raises it, so a commit or a
    /// renewal by a process that was stopped meanwhile finds it changed and writes nothing,
    /// even when a successor took over its consumer name.
    pub deliveries: u64,
}

/// Whether this consumer still holds the entry under the same delivery: the check made before
/// work that the commit script cannot cover (file effects).
pub async fn still_holds(conn: &mut Conn, fence: &Fence) -> anyhow::Result<bool> {
    Ok(pending_owner(conn, fence)
        .await?
        .is_some_and(|(owner, count)| owner == fence.consumer && count == fence.deliveries))
}

/// Who holds the fenced entry now and under which delivery count; None once it is
/// acknowledged.
pub async fn pending_owner(
    conn: &mut Conn,
    fence: &Fence,
) -> anyhow::Result<Option<(String, u64)>> {
    let pending: Vec<(String, String, u64, u64)> = redis::cmd("XPENDING")
        .arg(&fence.stream)
        .arg(&fence.group)
        .arg(&fence.entry_id)
        .arg(&fence.entry_id)
        .arg(1)
        .query_async(conn)
        .await
        .context("checking the lease")?;
    Ok(pending
        .into_iter()
        .next()
        .map(|(_, owner, _, count)| (owner, count)))
}

/// How a commit ended.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case", tag = "status", content = "detail")]
pub enum CommitStatus {
    /// Everything was written.
    Ok,
    /// The message was already handled (seen marker): nothing written.
    Duplicate,
    /// The entry is no longer pending (acknowledged elsewhere): nothing written.
    NotPending,
    /// Another consumer owns the entry now: nothing written.
    LostLease,
    /// A guard failed (e.g. the experiment vanished): nothing written.
    Precondition(String),
}

/// The result of a commit.
#[derive(Debug, Clone, Serialize)]
pub struct Commit {
    /// How it ended.
    pub status: CommitStatus,
    /// Stream ids of the publishes, in order (None: already in the stream).
    pub stream_ids: Vec<Option<String>>,
}

/// Checks guards, then applies every op, marks the message seen and (fenced)
/// acknowledges the entry: all or nothing.
const COMMIT_SCRIPT: &str = r"
local mode = ARGV[1]
if mode == 'fenced' then
  local p = redis.call('XPENDING', KEYS[1], ARGV[2], ARGV[4], ARGV[4], 1)
  if #p == 0 then return {'not_pending'} end
  if p[1][2] ~= ARGV[3] then return {'lost_lease'} end
  if ARGV[8] ~= '' and tostring(p[1][4]) ~= ARGV[8] then return {'lost_lease'} end
end
if ARGV[5] == '1' and redis.call('EXISTS', KEYS[2]) == 1 then
  if mode == 'fenced' then redis.call('XACK', KEYS[1], ARGV[2], ARGV[4]) end
  return {'duplicate'}
end
local ops = cjson.decode(ARGV[7])
-- Every check comes before the first write: Redis keeps what a script wrote before an error,
-- so a wrong type found halfway would leave the commit half-applied.
local want = {publish='stream', hset='hash', set='string', sadd='set', srem='set', zadd='zset'}
for _, op in ipairs(ops) do
  local w = want[op.op]
  if w then
    local t = redis.call('TYPE', KEYS[op.k]).ok
    if t ~= 'none' and t ~= w then
      return {'precondition', KEYS[op.k] .. ' is a ' .. t .. ', not a ' .. w}
    end
  end
  if op.op == 'publish' then
    local t = redis.call('TYPE', KEYS[op.m]).ok
    if t ~= 'none' and t ~= 'string' then
      return {'precondition', KEYS[op.m] .. ' is a ' .. t .. ', not a string'}
    end
  end
  if op.op == 'hset' and op.guard == 'must_exist' and redis.call('EXISTS', KEYS[op.k]) == 0 then
    return {'precondition', KEYS[op.k] .. ' does not exist'}
  end
  if op.op == 'hset' and op.guard == 'must_not_exist' and redis.call('EXISTS', KEYS[op.k]) == 1 then
    return {'precondition', KEYS[op.k] .. ' already exists'}
  end
  if op.op == 'hset' and type(op.guard) == 'table' and op.guard.field_is then
    local g = op.guard.field_is
    if redis.call('HGET', KEYS[op.k], g.field) ~= g.value then
      return {'precondition', KEYS[op.k] .. ' ' .. g.field .. ' is not ' .. g.value}
    end
  end
end
local out = {'ok'}
for _, op in ipairs(ops) do
  if op.op == 'publish' then
    local id = false
    if redis.call('SET', KEYS[op.m], '1', 'NX', 'EX', op.ttl) then
      id = redis.call('XADD', KEYS[op.k], '*', 'data', op.payload)
      if #redis.call('XINFO', 'GROUPS', KEYS[op.k]) == 0 then
        redis.call('XTRIM', KEYS[op.k], 'MAXLEN', '~', 10000)
      end
      redis.call('PUBLISH', op.channel, op.payload)
    end
    table.insert(out, id or '')
  elseif op.op == 'hset' then
    redis.call('HSET', KEYS[op.k], unpack(op.fields))
  elseif op.op == 'set' then
    if type(op.ex) == 'number' then
      redis.call('SET', KEYS[op.k], op.value, 'EX', op.ex)
    else
      redis.call('SET', KEYS[op.k], op.value)
    end
  elseif op.op == 'sadd' then
    redis.call('SADD', KEYS[op.k], unpack(op.members))
  elseif op.op == 'srem' then
    redis.call('SREM', KEYS[op.k], unpack(op.members))
  elseif op.op == 'del' then
    redis.call('DEL', KEYS[op.k])
  elseif op.op == 'zadd' then
    redis.call('ZADD', KEYS[op.k], op.score, op.member)
  end
end
if ARGV[5] == '1' then redis.call('SET', KEYS[2], '1', 'EX', ARGV[6]) end
if mode == 'fenced' then redis.call('XACK', KEYS[1], ARGV[2], ARGV[4]) end
return out
";

/// How long a handled message's id is remembered.
pub const SEEN_TTL_SECS: u64 = 7 * 24 * 3600;

/// Commits the Redis effects in one script. `seen` marks the cause as handled
/// (and skips everything if it already was); `fence` binds it to a lease.
pub async fn commit(
    conn: &mut Conn,
    effects: &[Effect],
    seen: Option<&str>,
    fence: Option<&Fence>,
) -> anyhow::Result<Commit> {
    let mut keys: Vec<String> = Vec::new();
    keys.push(
        fence
            .map(|f| f.stream.clone())
            .unwrap_or_else(|| seen.unwrap_or("fullsend:noop").to_string()),
    );
    keys.push(seen.unwrap_or("fullsend:noop").to_string());
    let mut ops = Vec::new();
    let key_index = |keys: &mut Vec<String>, key: String| -> usize {
        keys.push(key);
        keys.len()
    };
    for (index, effect) in effects.iter().enumerate() {
        match effect {
            Effect::Publish { channel, message } => {
                let channel_keys = ChannelKeys::new(channel);
                // One effect, one identity: under a seen marker (a delivered message), the id is
                // derived from the message and the effect's place in the plan, so a retry
                // publishes under the same id and the ingest marker stops the second copy.
                let mut message = message.clone();
                if let Some(seen) = seen {
                    message.insert("msg_id".into(), Value::String(effect_id(seen, index)));
                }
                let msg_id = crate::support::msg::msg_id_of(&message)
                    .map(str::to_string)
                    .unwrap_or_else(crate::support::msg::new_msg_id);
                let k = key_index(&mut keys, channel_keys.stream());
                let m = key_index(&mut keys, channel_keys.ingested(&msg_id));
                ops.push(json!({"op": "publish", "k": k, "m": m, "channel": channel, "payload": Value::Object(message).to_string(), "ttl": INGEST_MARKER_TTL_SECS}));
            }
            Effect::HashSet { key, fields, guard } => {
                if fields.is_empty() {
                    continue;
                }
                let k = key_index(&mut keys, key.clone());
                let flat: Vec<&String> = fields.iter().flat_map(|(f, v)| [f, v]).collect();
                ops.push(json!({"op": "hset", "k": k, "fields": flat, "guard": guard}));
            }
            Effect::SetString {
                key,
                value,
                expire_secs,
            } => {
                let k = key_index(&mut keys, key.clone());
                ops.push(json!({"op": "set", "k": k, "value": value, "ex": expire_secs}));
            }
            Effect::SetAdd { key, members } => {
                if members.is_empty() {
                    continue;
                }
                let k = key_index(&mut keys, key.clone());
                ops.push(json!({"op": "sadd", "k": k, "members": members}));
            }
            Effect::SetRemove { key, members } => {
                if members.is_empty() {
                    continue;
                }
                let k = key_index(&mut keys, key.clone());
                ops.push(json!({"op": "srem", "k": k, "members": members}));
            }
            Effect::SortedAdd { key, score, member } => {
                let k = key_index(&mut keys, key.clone());
                ops.push(
                    json!({"op": "zadd", "k": k, "score": score.to_string(), "member": member}),
                );
            }
            Effect::Delete { key } => {
                let k = key_index(&mut keys, key.clone());
                ops.push(json!({"op": "del", "k": k}));
            }
            Effect::AppendLearning { .. }
            | Effect::AddLine { .. }
            | Effect::CompleteLines { .. }
            | Effect::NoteLines { .. }
            | Effect::ReplaceFile { .. } => {}
        }
    }
    // Hashed once per process, not once per commit.
    static COMMIT: std::sync::LazyLock<redis::Script> =
        std::sync::LazyLock::new(|| redis::Script::new(COMMIT_SCRIPT));
    let commit_script = &*COMMIT;
    let mut script = commit_script.prepare_invoke();
    for key in &keys {
        script.key(key);
    }
    match fence {
        Some(f) => script
            .arg("fenced")
            .arg(&f.group)
            .arg(&f.consumer)
            .arg(&f.entry_id),
        None => script.arg("plain").arg("").arg("").arg(""),
    };
    script
        .arg(if seen.is_some() { "1" } else { "0" })
        .arg(SEEN_TTL_SECS)
        .arg(Value::Array(ops).to_string())
        .arg(fence.map(|f| f.deliveries.to_string()).unwrap_or_default());
    let reply: Vec<Option<String>> = script
        .invoke_async(conn)
        .await
        .context("committing effects to Redis")?;
    let mut reply = reply.into_iter();
    let status = match reply.next().flatten().as_deref() {
        Some("ok") => CommitStatus::Ok,
        Some("duplicate") => CommitStatus::Duplicate,
        Some("not_pending") => CommitStatus::NotPending,
        Some("lost_lease") => CommitStatus::LostLease,
        Some("precondition") => {
            CommitStatus::Precondition(reply.next().flatten().unwrap_or_default())
        }
        other => anyhow::bail!("unexpected commit reply {other:?}"),
    };
    let stream_ids = reply.map(|id| id.filter(|s| !s.is_empty())).collect();
    Ok(Commit { status, stream_ids })
}

/// The id of the `index`-th effect of the message behind `seen`: a UUIDv5, the same on every
/// delivery of that message.
pub fn effect_id(seen: &str, index: usize) -> String {
    uuid::Uuid::new_v5(
        &uuid::Uuid::NAMESPACE_OID,
        format!("{seen}#{index}").as_bytes(),
    )
    .to_string()
}

/// A publish effect with the message stamped (msg_id, causation_id, timestamp).
pub fn publish(
    channel: &str,
    mut message: Map<String, Value>,
    cause: &Map<String, Value>,
) -> Effect {
    crate::support::msg::stamp(&mut message, Some(cause));
    Effect::Publish {
        channel: channel.to_string(),
        message,
    }
}

/// Publishes one message durably, outside a commit (used by `publish` and notices).
pub async fn publish_now(
    conn: &mut Conn,
    channel: &str,
    mut message: Map<String, Value>,
    cause: Option<&Map<String, Value>>,
) -> anyhow::Result<crate::bus::store::Published> {
    crate::support::msg::stamp(&mut message, cause);
    let msg_id = crate::support::msg::msg_id_of(&message)
        .map(str::to_string)
        .unwrap_or_else(crate::support::msg::new_msg_id);
    crate::bus::store::publish(conn, channel, &msg_id, &Value::Object(message).to_string()).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn effect_ids_are_stable_per_message_and_place() {
        let a = effect_id("fullsend:to_orchestrator:seen:orchestrator:m1", 0);
        assert_eq!(
            a,
            effect_id("fullsend:to_orchestrator:seen:orchestrator:m1", 0)
        );
        assert_ne!(
            a,
            effect_id("fullsend:to_orchestrator:seen:orchestrator:m1", 1)
        );
        assert_ne!(
            a,
            effect_id("fullsend:to_orchestrator:seen:orchestrator:m2", 0)
        );
        assert!(crate::support::msg::is_safe_id(&a));
    }
}
