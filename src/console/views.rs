//! What each page shows, as JSON: experiments, queues, spend and context. The page renders
//! these documents and adds no logic of its own; `curl …/api/<view>` gets the same.

use serde_json::{Value, json};

use crate::bus::store::{self, Conn, KeyValue};
use crate::support::config::Config;

/// Pending entries and dead letters shown per role.
const SHOWN_PER_ROLE: usize = 100;

/// The roles and their channels.
pub fn roles(config: &Config) -> Vec<(String, String)> {
    let c = config.channels();
    vec![
        ("orchestrator".into(), c.to_orchestrator),
        ("fullsend".into(), c.to_fullsend),
    ]
}

/// Every `experiments:*` hash: id, state, hypothesis, schedule, `scheduled_for`, metrics.
pub async fn experiments(conn: &mut Conn) -> anyhow::Result<Value> {
    let keys = store::scan_keys(conn, "experiments:*").await?;
    let fields: &[&str] = &[
        "state",
        "status",
        "hypothesis",
        "schedule",
        "scheduled_for",
        "metrics",
        "created_at",
        "updated_at",
        "archive_reason",
    ];
    let values = store::read_many(conn, &keys, Some(fields)).await?;
    let mut rows = Vec::new();
    for (key, value) in keys.iter().zip(values) {
        let KeyValue::Hash(h) = value else { continue };
        let get = |k: &str| h.get(k).filter(|v| !v.is_empty()).cloned();
        rows.push(json!({
            "id": key.trim_start_matches("experiments:"),
            "state": get("state").or_else(|| get("status")),
            "hypothesis": get("hypothesis"),
            "schedule": get("schedule"),
            "scheduled_for": get("scheduled_for"),
            "metrics": get("metrics").map(|m| serde_json::from_str::<Value>(&m).unwrap_or(Value::String(m))),
            "created_at": get("created_at"),
            "updated_at": get("updated_at").or_else(|| get("created_at")),
            "archive_reason": get("archive_reason"),
        }));
    }
    rows.sort_by(|a, b| b["updated_at"].as_str().cmp(&a["updated_at"].as_str()));
    Ok(json!({"v": 1, "experiments": rows}))
}

/// One experiment: every field of its hash, the spec as YAML. None when there is none.
pub async fn experiment(conn: &mut Conn, id: &str) -> anyhow::Result<Option<Value>> {
    if !crate::support::msg::valid_key_id(id) {
        return Ok(None);
    }
    let key = format!("experiments:{id}");
    let Some(KeyValue::Hash(h)) = store::read_many(conn, std::slice::from_ref(&key), None)
        .await?
        .pop()
    else {
        return Ok(None);
    };
    let mut fields = serde_json::Map::new();
    for (k, v) in h {
        if k != "spec_json" {
            fields.insert(k, Value::String(v));
        }
    }
    let spec = fields
        .get("spec")
        .and_then(Value::as_str)
        .map(str::to_string);
    Ok(Some(
        json!({"v": 1, "id": id, "spec_yaml": spec, "fields": fields}),
    ))
}

/// Per role: the queue, the entries pending with idle times and delivery counts, and the dead
/// letters with their errors.
pub async fn queues(conn: &mut Conn, config: &Config) -> anyhow::Result<Value> {
    use crate::bus::queues;
    let mut out = Vec::new();
    for (role, channel) in roles(config) {
        let mut status = queues::role_status(conn, &role, &channel).await?;
        status["pending_entries"] =
            json!(queues::pending_entries(conn, &role, &channel, SHOWN_PER_ROLE).await?);
        let dead: Vec<Value> = queues::dead_letters(conn, &channel, SHOWN_PER_ROLE)
            .await?
            .into_iter()
            .map(|(id, fields)| json!({"dlq_id": id, "fields": fields}))
            .collect();
        status["dead_letter_entries"] = json!(dead);
        out.push(status);
    }
    Ok(json!({"v": 1, "roles": out}))
}

/// Today's spend against the daily limit, and the last `days` days by role and by model.
pub async fn spend(conn: &mut Conn, config: &Config, days: u32) -> anyhow::Result<Value> {
    let history = crate::bus::spend::history(conn, days).await?;
    let spent = history.last().map_or(0.0, |d| d.total_usd);
    Ok(json!({
        "v": 1,
        "today": crate::bus::spend::report(spent, config.daily_spend_limit()?),
        "days": history,
    }))
}

/// The worklist and the strategic learnings as markdown, and the worklist's earlier versions
/// (newest first).
pub fn context(config: &Config) -> Value {
    let dir = config.context_path();
    let read = |name: &str| std::fs::read_to_string(dir.join(name)).ok();
    json!({
        "v": 1,
        "worklist": read("worklist.md"),
        "learnings": read("learnings.md"),
        "history": worklist_history(config),
    })
}

fn worklist_history(config: &Config) -> Vec<Value> {
    let dir = config.context_path().join(".history");
    let mut names: Vec<(String, u64)> = std::fs::read_dir(&dir)
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| {
            let name = e.file_name().to_string_lossy().to_string();
            let len = e.metadata().ok()?.len();
            (name.starts_with("worklist-") && name.ends_with(".md")).then_some((name, len))
        })
        .collect();
    names.sort_by(|a, b| b.0.cmp(&a.0));
    names
        .into_iter()
        .map(|(name, bytes)| json!({"name": name, "bytes": bytes}))
        .collect()
}

/// One earlier worklist by its file name (only names the history lists are served).
pub fn worklist_version(config: &Config, name: &str) -> Option<String> {
    let listed = worklist_history(config)
        .iter()
        .any(|v| v["name"].as_str() == Some(name));
    if !listed || name.contains('/') || name.starts_with('.') {
        return None;
    }
    std::fs::read_to_string(config.context_path().join(".history").join(name)).ok()
}
