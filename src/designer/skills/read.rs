//! The read skills: the tools registry, experiments, tactical learnings, and the two context
//! files. Each reads only its own prefix or file and answers a bounded JSON value.

use std::collections::BTreeMap;
use std::path::Path;

use serde_json::{Map, Value, json};

use super::{MAX_ANSWER_BYTES, ToolError, bounded_list, cut, limit_arg, required_text, text_arg};
use crate::bus::store::{self, Conn, KeyValue};

/// The most keys of one prefix a read looks at (newest by key name for learnings).
const MAX_KEYS_READ: usize = 1000;

/// The longest single stored field shown (a spec is a few kilobytes).
const MAX_FIELD_BYTES: usize = 16 * 1024;

fn redis_failed(err: anyhow::Error) -> ToolError {
    ToolError::Failed(format!("Redis is unavailable right now: {err:#}"))
}

/// Reads every key of `pattern` (at most [`MAX_KEYS_READ`], the last by name) as flat fields.
async fn read_prefix(
    conn: &mut Conn,
    pattern: &str,
    skip: &[&str],
) -> Result<Vec<(String, BTreeMap<String, String>)>, ToolError> {
    let mut keys = store::scan_keys(conn, pattern)
        .await
        .map_err(redis_failed)?;
    keys.retain(|k| !skip.contains(&k.as_str()));
    if keys.len() > MAX_KEYS_READ {
        keys.drain(..keys.len() - MAX_KEYS_READ);
    }
    let values = store::read_many(conn, &keys, None)
        .await
        .map_err(redis_failed)?;
    Ok(keys
        .into_iter()
        .zip(values)
        .filter_map(|(k, v)| flat(v).map(|f| (k, f)))
        .collect())
}

/// A stored value as flat string fields: a hash as it is, a JSON string flattened.
fn flat(value: KeyValue) -> Option<BTreeMap<String, String>> {
    match value {
        KeyValue::Hash(h) => Some(h),
        KeyValue::Text(t) => {
            let f = crate::context::loader::flatten_json(&t);
            (!f.is_empty()).then_some(f)
        }
        KeyValue::Other => None,
    }
}

/// A stored field that holds JSON (inputs, outputs) as JSON; other text as text.
fn json_or_text(text: &str) -> Value {
    serde_json::from_str(text).unwrap_or_else(|_| Value::String(text.to_string()))
}

/// `tool_registry`: every `tools:*`, optionally of one status.
pub(super) async fn registry(
    conn: &mut Conn,
    args: &Map<String, Value>,
) -> Result<Value, ToolError> {
    let status = text_arg(args, "status");
    let mut tools = Vec::new();
    for (key, f) in read_prefix(conn, "tools:*", &[]).await? {
        let state = f
            .get("status")
            .or_else(|| f.get("state"))
            .cloned()
            .unwrap_or_else(|| "active".to_string());
        if status.is_some_and(|s| s != state) {
            continue;
        }
        let field = |k: &str| f.get(k).map(|v| json_or_text(v)).unwrap_or(Value::Null);
        tools.push(json!({
            "name": f.get("name").filter(|n| !n.is_empty()).cloned()
                .unwrap_or_else(|| key.trim_start_matches("tools:").to_string()),
            "status": state,
            "description": cut(f.get("description").map_or("", String::as_str), 2000).0,
            "inputs": field("inputs"),
            "outputs": field("outputs"),
        }));
    }
    Ok(bounded_list("tools", tools))
}

/// `list_experiments`: id, state and hypothesis of each, newest first.
pub(super) async fn list_experiments(
    conn: &mut Conn,
    args: &Map<String, Value>,
) -> Result<Value, ToolError> {
    let state = text_arg(args, "state");
    let limit = limit_arg(args, 20, 50);
    let mut rows: Vec<(String, Value)> = Vec::new();
    for (key, f) in read_prefix(conn, "experiments:*", &[]).await? {
        let pick = |names: &[&str]| {
            names
                .iter()
                .find_map(|n| f.get(*n).filter(|v| !v.is_empty()).cloned())
                .unwrap_or_default()
        };
        let this_state = pick(&["state", "status"]);
        if state.is_some_and(|s| s != this_state) {
            continue;
        }
        let updated = pick(&["updated_at", "created_at"]);
        rows.push((
            updated.clone(),
            json!({
                "id": key.trim_start_matches("experiments:"),
                "state": this_state,
                "hypothesis": cut(&pick(&["hypothesis", "summary", "name"]), 400).0,
                "updated_at": updated,
            }),
        ));
    }
    rows.sort_by(|a, b| b.0.cmp(&a.0));
    rows.truncate(limit);
    Ok(bounded_list(
        "experiments",
        rows.into_iter().map(|(_, v)| v).collect(),
    ))
}

/// `get_experiment`: the stored hash, in the designer's layout (the spec as YAML).
pub(super) async fn get_experiment(
    conn: &mut Conn,
    args: &Map<String, Value>,
) -> Result<Value, ToolError> {
    let id = required_text(args, "id", 64)?;
    if !crate::support::msg::valid_key_id(id) {
        return Err(ToolError::Refused(
            "an experiment id is letters, digits, `_` and `-` only".into(),
        ));
    }
    let key = format!("experiments:{id}");
    let value = store::read_many(conn, std::slice::from_ref(&key), None)
        .await
        .map_err(redis_failed)?
        .pop();
    let Some(fields) = value.and_then(flat) else {
        return Err(ToolError::Refused(format!(
            "there is no experiment {id}; list_experiments shows the ids"
        )));
    };
    let mut out = Map::new();
    out.insert("id".into(), json!(id));
    for (k, v) in fields {
        // The JSON copy of the spec says the same as `spec`, twice the size.
        if k == "spec_json" {
            continue;
        }
        let (v, _) = cut(&v, MAX_FIELD_BYTES);
        let value = if matches!(
            k.as_str(),
            "metrics" | "success_criteria" | "failure_criteria" | "execution" | "params"
        ) {
            json_or_text(&v)
        } else {
            Value::String(v)
        };
        out.insert(k, value);
    }
    Ok(Value::Object(out))
}

/// `search_learnings`: tactical learnings ranked by a query, or newest first.
pub(super) async fn search_learnings(
    conn: &mut Conn,
    args: &Map<String, Value>,
) -> Result<Value, ToolError> {
    let limit = limit_arg(args, 20, 50);
    let experiment = text_arg(args, "experiment_id");
    let tag = text_arg(args, "tag").map(str::to_ascii_lowercase);
    let mut found: Vec<(String, BTreeMap<String, String>)> =
        read_prefix(conn, "learnings:tactical:*", &["learnings:tactical:index"])
            .await?
            .into_iter()
            .filter(|(_, f)| {
                experiment.is_none_or(|e| f.get("experiment_id").map(String::as_str) == Some(e))
            })
            .filter(|(_, f)| {
                tag.as_deref().is_none_or(|t| {
                    f.get("tags").is_some_and(|tags| {
                        tags.split(',').any(|x| x.trim().eq_ignore_ascii_case(t))
                    })
                })
            })
            .collect();
    // Key names carry their time: the last is the newest.
    found.reverse();
    let order: Vec<usize> = match text_arg(args, "query") {
        Some(query) => {
            let texts: Vec<String> = found
                .iter()
                .map(|(_, f)| f.get("text").cloned().unwrap_or_default())
                .collect();
            crate::context::rank::rank(&texts, query, limit)
                .into_iter()
                .map(|(i, _)| i)
                .collect()
        }
        None => (0..found.len().min(limit)).collect(),
    };
    let items = order
        .into_iter()
        .map(|i| {
            let (key, f) = &found[i];
            let get = |k: &str| f.get(k).cloned().unwrap_or_default();
            json!({
                "key": key,
                "text": cut(&get("text"), 2000).0,
                "experiment_id": get("experiment_id"),
                "tags": get("tags").split(',').map(str::trim).filter(|t| !t.is_empty()).collect::<Vec<_>>(),
                "created_at": get("created_at"),
            })
        })
        .collect();
    Ok(bounded_list("learnings", items))
}

/// Reads a context file, bounded.
fn read_context_file(path: &Path, what: &str) -> Result<String, ToolError> {
    match std::fs::read(path) {
        Ok(bytes) => Ok(String::from_utf8_lossy(&bytes).into_owned()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(String::new()),
        Err(e) => Err(ToolError::Failed(format!("the {what} cannot be read: {e}"))),
    }
}

/// `product_context`: the file, whole up to the answer limit.
pub(super) fn file_text(path: &Path, what: &str) -> Result<Value, ToolError> {
    let text = read_context_file(path, what)?;
    let (text, truncated) = cut(&text, MAX_ANSWER_BYTES);
    Ok(json!({"text": text, "truncated": truncated}))
}

/// `strategic_learnings`: the file, or its entries ranked by a query.
pub(super) fn strategic(path: &Path, args: &Map<String, Value>) -> Result<Value, ToolError> {
    let Some(query) = text_arg(args, "query") else {
        return file_text(path, "strategic learnings");
    };
    let text = read_context_file(path, "strategic learnings")?;
    let entries = crate::context::rank::strategic_entries(&text);
    let ranked = crate::context::rank::rank(&entries, query, 10)
        .into_iter()
        .map(|(i, _)| Value::String(cut(&entries[i], 4000).0))
        .collect();
    Ok(bounded_list("entries", ranked))
}
