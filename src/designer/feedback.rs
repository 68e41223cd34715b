//! `tool_feedback`: a Builder's or an operator's note on a built tool. It is kept as a tactical
//! learning for that tool; when it says the tool's inputs changed, every experiment still
//! waiting for the tool is archived as outdated and designed again against the new inputs.

use std::collections::BTreeMap;

use serde_json::{Map, Value, json};

use crate::bus::effects::{Effect, Guard, publish};
use crate::bus::store::{self, Conn, KeyValue};
use crate::support::config::Channels;

/// The effects of one `tool_feedback` message, and a report line.
pub async fn plan(
    conn: &mut Conn,
    msg: &Map<String, Value>,
    identity: &str,
    channels: &Channels,
) -> anyhow::Result<Result<(Vec<Effect>, Value), String>> {
    let text = |k: &str| crate::support::msg::text_field(msg, k);
    let Some(tool) = ["tool_name", "name", "tool"].iter().find_map(|k| text(k)) else {
        return Ok(Err("tool_feedback without a tool name".into()));
    };
    if !crate::support::msg::valid_key_id(&tool) {
        return Ok(Err("tool_feedback with an invalid tool name".into()));
    }
    let Some(note) = ["feedback", "note", "message", "content"]
        .iter()
        .find_map(|k| text(k))
    else {
        return Ok(Err(format!("tool_feedback for {tool} says nothing")));
    };
    let changed = msg
        .get("inputs_changed")
        .and_then(Value::as_bool)
        .unwrap_or(false);
    let note = crate::support::msg::preview(&note, 1000);
    let mut out = crate::context::learn::tactical_effects_with(
        &format!("Tool {tool}: {note}"),
        None,
        "tool_feedback",
        BTreeMap::from([
            ("tool".to_string(), tool.clone()),
            ("tags".to_string(), format!("tool,{tool}")),
        ]),
    );
    let mut redesigned = Vec::new();
    if changed {
        let key = format!("pending_experiments:{tool}");
        let waiting: Vec<String> = redis::cmd("SMEMBERS").arg(&key).query_async(conn).await?;
        let keys: Vec<String> = waiting
            .iter()
            .filter(|e| crate::support::msg::valid_key_id(e))
            .map(|e| format!("experiments:{e}"))
            .collect();
        let values =
            store::read_many(conn, &keys, Some(&["state", "hypothesis", "request_id"])).await?;
        for (exp_key, value) in keys.iter().zip(values) {
            let KeyValue::Hash(h) = value else { continue };
            if h.get("state").map(String::as_str) != Some("draft") {
                continue;
            }
            let exp = exp_key.trim_start_matches("experiments:").to_string();
            let reason = format!("re-designed: tool {tool} changed its inputs ({note})");
            out.push(Effect::HashSet {
                key: exp_key.clone(),
                fields: BTreeMap::from([
                    ("state".to_string(), "archived".to_string()),
                    ("status".to_string(), "archived".to_string()),
                    ("archived_reason".to_string(), reason.clone()),
                    (
                        "updated_at".to_string(),
                        crate::support::msg::now_iso_seconds(),
                    ),
                ]),
                guard: Guard::FieldIs {
                    field: "state".into(),
                    value: "draft".into(),
                },
            });
            let mut request = Map::new();
            request.insert("type".into(), json!("experiment_request"));
            request.insert("source".into(), json!("fullsend_listener"));
            request.insert(
                "idea".into(),
                json!({
                    "idea": h.get("hypothesis").cloned().unwrap_or_default(),
                    "redesign_of": exp,
                    "tool": tool,
                }),
            );
            request.insert(
                "context".into(),
                json!(format!("The tool {tool} changed its inputs: {note}. Design {exp} again against its current inputs (read them with tool_registry).")),
            );
            request.insert("priority".into(), json!("medium"));
            request.insert("mode".into(), json!("single"));
            request.insert(
                "request_id".into(),
                json!(format!("redesign_{}", &exp[..exp.len().min(55)])),
            );
            request.insert("msg_id".into(), json!(format!("{identity}-redesign-{exp}")));
            out.push(publish(&channels.to_fullsend, request, msg));
            redesigned.push(exp);
        }
        out.push(Effect::SetRemove {
            key,
            members: redesigned.clone(),
        });
    }
    Ok(Ok((
        out,
        json!({"tool": tool, "learning_recorded": true, "inputs_changed": changed, "redesigned": redesigned}),
    )))
}
