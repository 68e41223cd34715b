//! What a finished design writes and announces, planned as effects: the `experiments:{id}`
//! hash, the spec, tool requests for the Builder, and the messages the Executor and the
//! Orchestrator read; or the `design_failed` notice.

use std::collections::BTreeMap;
use std::path::Path;

use serde_json::{Map, Value, json};

use super::request::Request;
use crate::bus::effects::{Effect, Guard, publish};
use crate::bus::store::{self, Conn, KeyValue};
use crate::support::exit::Fail;

/// The experiment id to use: the spec's, or with `_2`, `_3`, … when taken.
pub async fn unique_id(conn: &mut Conn, id: &str) -> anyhow::Result<String> {
    for n in 1..100 {
        let candidate = if n == 1 {
            id.to_string()
        } else {
            format!("{id}_{n}")
        };
        let exists: bool = redis::cmd("EXISTS")
            .arg(format!("experiments:{candidate}"))
            .query_async(conn)
            .await?;
        if !exists {
            return Ok(candidate);
        }
    }
    Err(anyhow::anyhow!("no free experiment id near {id}"))
}
/// The Redis writes and messages of a designed spec (docs/system-contract.md §2, §6).
pub fn effects(
    spec: &Map<String, Value>,
    tool: Option<&Map<String, Value>>,
    learnings: &[String],
    request: &Request,
    channels: &crate::support::config::Channels,
    cause: &Map<String, Value>,
) -> anyhow::Result<Vec<Effect>> {
    let id = spec
        .get("id")
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_string();
    if !crate::designer::spec::valid_experiment_id(&id) && !crate::support::msg::valid_key_id(&id) {
        return Err(Fail::usage(format!(
            "invalid experiment id {:?}",
            crate::support::msg::preview(&id, 40)
        )));
    }
    let now = crate::support::msg::now_iso_seconds();
    let execution = spec
        .get("execution")
        .and_then(Value::as_object)
        .cloned()
        .unwrap_or_default();
    let schedule = crate::designer::cron::strip_comment(
        execution
            .get("schedule")
            .and_then(Value::as_str)
            .unwrap_or_default(),
    );
    let timezone = execution
        .get("timezone")
        .and_then(Value::as_str)
        .unwrap_or("UTC")
        .to_string();
    let tool_name = execution
        .get("tool")
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_string();
    let hypothesis = spec
        .get("hypothesis")
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_string();
    // A spec whose tool still has to be built waits in draft; otherwise the
    // Executor's cron mode (which needs `ready`) can pick it up.
    let state = if tool.is_some() { "draft" } else { "ready" };
    let mut full = spec.clone();
    full.insert("state".into(), json!(state));
    let yaml = crate::designer::spec::to_yaml(&full).map_err(|e| anyhow::anyhow!(e))?;
    let jsonish = |v: Option<&Value>| v.map(Value::to_string).unwrap_or_else(|| "[]".into());
    let fields = BTreeMap::from([
        ("id".to_string(), id.clone()),
        ("experiment_id".to_string(), id.clone()),
        ("name".to_string(), crate::support::msg::preview(&hypothesis, 120)),
        ("summary".to_string(), hypothesis.clone()),
        ("hypothesis".to_string(), hypothesis.clone()),
        ("state".to_string(), state.to_string()),
        ("status".to_string(), state.to_string()),
        ("spec".to_string(), yaml.clone()),
        ("spec_json".to_string(), Value::Object(full.clone()).to_string()),
        ("execution".to_string(), json!({"tool": tool_name, "params": execution.get("params").cloned().unwrap_or(json!({}))}).to_string()),
        ("tool".to_string(), tool_name.clone()),
        ("params".to_string(), execution.get("params").cloned().unwrap_or(json!({})).to_string()),
        ("schedule".to_string(), schedule.clone()),
        ("timezone".to_string(), timezone.clone()),
        ("success_criteria".to_string(), jsonish(spec.get("success_criteria"))),
        ("failure_criteria".to_string(), jsonish(spec.get("failure_criteria"))),
        ("metrics".to_string(), jsonish(spec.get("metrics"))),
        ("request_id".to_string(), request.request_id.clone()),
        ("source".to_string(), "fullsend".to_string()),
        ("created_at".to_string(), now.clone()),
        ("updated_at".to_string(), now.clone()),
    ]);
    let metrics = spec.get("metrics").cloned().unwrap_or(json!([]));
    let metrics_yaml = serde_yaml_ng::to_string(&metrics).unwrap_or_default();
    let mut out = vec![
        Effect::HashSet {
            key: format!("experiments:{id}"),
            fields,
            guard: Guard::MustNotExist,
        },
        Effect::HashSet {
            key: format!("metrics_specs:{id}"),
            fields: BTreeMap::from([
                ("metrics_yaml".to_string(), metrics_yaml),
                ("metrics".to_string(), metrics.to_string()),
                ("experiment_id".to_string(), id.clone()),
                ("source".to_string(), "fullsend".to_string()),
                ("created_at".to_string(), now.clone()),
            ]),
            guard: Guard::None,
        },
        // The Executor GETs a bare cron string here.
        Effect::SetString {
            key: format!("schedules:{id}"),
            value: schedule.clone(),
            expire_secs: None,
        },
    ];
    let mut needs_tool = false;
    if let Some(tool) = tool {
        needs_tool = true;
        let name = tool
            .get("name")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_string();
        let req_id = format!(
            "req_{}_{}",
            jiff::Zoned::now().strftime("%Y%m%d"),
            &crate::support::msg::new_msg_id()[24..]
        );
        let mut prd = tool.clone();
        prd.insert("id".into(), json!(req_id));
        prd.insert("requested_by".into(), json!("fullsend"));
        prd.insert("experiment_blocked".into(), json!(id));
        prd.entry("tool_name").or_insert_with(|| json!(name));
        out.push(Effect::HashSet {
            key: format!("tool_requests:{req_id}"),
            fields: BTreeMap::from([
                (
                    "spec".to_string(),
                    serde_yaml_ng::to_string(&json!({"tool_request": prd})).unwrap_or_default(),
                ),
                (
                    "spec_json".to_string(),
                    Value::Object(prd.clone()).to_string(),
                ),
                ("name".to_string(), name.clone()),
                ("state".to_string(), "pending".to_string()),
                ("requested_by".to_string(), "fullsend".to_string()),
                ("experiment_id".to_string(), id.clone()),
                ("created_at".to_string(), now.clone()),
            ]),
            guard: Guard::None,
        });
        out.push(Effect::SetAdd {
            key: format!("pending_experiments:{name}"),
            members: vec![id.clone()],
        });
        out.push(publish(
            &channels.builder_tasks,
            obj(json!({"type": "tool_prd", "prd": prd, "requested_by": "fullsend", "priority": tool.get("priority").cloned().unwrap_or(json!(request.priority)), "request_id": req_id, "experiment_blocked": id, "requested_at": crate::support::msg::now_iso_micros(), "source": "fullsend"})),
            cause,
        ));
        out.push(publish(
            "fullsend:builder_requests",
            obj(json!({"type": "tool_requested", "request_id": req_id, "tool_name": name, "source": "fullsend", "spec_key": format!("tool_requests:{req_id}")})),
            cause,
        ));
    }
    // Tactical learnings go through the same code as `fullsend learn append --tactical`.
    for learning in learnings {
        out.extend(crate::context::learn::tactical_effects(
            learning,
            Some(&id),
            "fullsend",
        ));
    }
    out.push(publish("fullsend:experiments", obj(json!({"type": "experiment_created", "experiment_id": id, "source": "fullsend", "spec_key": format!("experiments:{id}")})), cause));
    out.push(publish(
        "fullsend:schedules",
        obj(json!({"type": "schedule_created", "experiment_id": id, "schedule": schedule, "timezone": timezone, "source": "fullsend"})),
        cause,
    ));
    // The next run of the schedule in its time zone (the PRD's `scheduled_for`); null without
    // a schedule, or while a tool must be built first.
    let scheduled_for = (!schedule.is_empty() && !needs_tool)
        .then(|| {
            let tz = if timezone.is_empty() {
                "UTC"
            } else {
                timezone.as_str()
            };
            crate::designer::cron::next_run(&schedule, tz, jiff::Timestamp::now()).ok()
        })
        .flatten()
        .map(|next| next.strftime("%Y-%m-%dT%H:%M:%S%:z").to_string());
    out.push(publish(
        &channels.to_orchestrator,
        obj(json!({"type": "experiment_ready", "source": "fullsend", "experiment_id": id, "summary": hypothesis, "has_schedule": !schedule.is_empty(), "scheduled_for": scheduled_for, "needs_tool": needs_tool, "request_id": request.request_id})),
        cause,
    ));
    Ok(out)
}
/// The `design_failed` message for the Orchestrator.
pub fn failed_effects(
    reason: &str,
    request: Option<&Request>,
    original: &Map<String, Value>,
    channels: &crate::support::config::Channels,
    work_dir: Option<&Path>,
) -> Vec<Effect> {
    vec![publish(
        &channels.to_orchestrator,
        obj(json!({
            "type": "design_failed",
            "source": "fullsend",
            "reason": reason,
            "request_id": request.map(|r| r.request_id.clone()),
            "original_request": Value::Object(original.clone()),
            "work_dir": work_dir,
        })),
        original,
    )]
}
/// The keys a list of effects writes, for reports.
pub fn keys_written(effects: &[Effect]) -> Vec<String> {
    effects
        .iter()
        .filter_map(|e| match e {
            Effect::HashSet { key, .. }
            | Effect::SetString { key, .. }
            | Effect::SetAdd { key, .. }
            | Effect::SortedAdd { key, .. }
            | Effect::Delete { key } => Some(key.clone()),
            _ => None,
        })
        .collect()
}
/// The messages a list of effects publishes: (channel, type).
pub fn messages(effects: &[Effect]) -> Vec<Value> {
    effects
        .iter()
        .filter_map(|e| match e {
            Effect::Publish { channel, message } => Some(json!({"channel": channel, "type": message.get("type"), "msg_id": message.get("msg_id")})),
            _ => None,
        })
        .collect()
}
fn obj(v: Value) -> Map<String, Value> {
    match v {
        Value::Object(m) => m,
        _ => Map::new(),
    }
}
/// Reads one experiment hash (for tests and `run_direct`).
pub async fn experiment_exists(conn: &mut Conn, id: &str) -> anyhow::Result<bool> {
    let values = store::read_many(conn, &[format!("experiments:{id}")], Some(&["state"])).await?;
    Ok(matches!(
        values.first(),
        Some(KeyValue::Hash(_) | KeyValue::Text(_))
    ))
}
