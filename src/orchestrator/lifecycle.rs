//! The experiment lifecycle actions: `kill_experiment`, `pause_experiment` and
//! `resume_experiment`. Each checks the experiment as it is now (it must exist as a hash, in a
//! state that allows the change), is a no-op when it is already in the wanted state, and plans
//! writes guarded on what it read, so a change made meanwhile fails the commit.

use std::collections::BTreeMap;

use serde_json::{Map, Value, json};

use super::decision::{Action, Decision};
use super::dispatch::{first_text, object};
use crate::bus::effects::{Effect, Guard};
use crate::bus::store::Conn;

/// The effects of archiving, or why it is refused (bad id, unknown experiment).
/// The effects of archiving an experiment: `state` and `status` (the field the Redis Agent
/// reads), why and when, its schedule removed, and its id taken out of every
/// `pending_experiments:*` set so that a tool finishing later does not run it. `None` when it
/// is already archived: killing it again changes nothing and announces nothing.
pub(super) async fn kill_plan(
    decision: &Decision,
    conn: Option<&mut Conn>,
) -> anyhow::Result<Result<Option<Vec<Effect>>, String>> {
    let Some(id) = decision.experiment_id.as_deref() else {
        return Ok(Err("kill_experiment: no experiment_id given".into()));
    };
    if !crate::support::msg::valid_key_id(id) {
        return Ok(Err(format!(
            "kill_experiment: invalid experiment id {:?}",
            crate::support::msg::preview(id, 80)
        )));
    }
    let Some(conn) = conn else {
        return Ok(Err(
            "kill_experiment: Redis is needed to check that the experiment exists".into(),
        ));
    };
    let key = format!("experiments:{id}");
    let kind: String = redis::cmd("TYPE").arg(&key).query_async(conn).await?;
    match kind.as_str() {
        "hash" => {}
        "none" => {
            return Ok(Err(format!(
                "kill_experiment: experiment {id} does not exist"
            )));
        }
        other => {
            return Ok(Err(format!(
                "kill_experiment: {key} is a {other}, not a hash; refusing to overwrite it"
            )));
        }
    }
    let state: Option<String> = redis::cmd("HGET")
        .arg(&key)
        .arg("state")
        .query_async(conn)
        .await?;
    if state.as_deref() == Some("archived") {
        return Ok(Ok(None));
    }
    let now = crate::support::msg::now_iso_seconds();
    let fields = BTreeMap::from([
        ("state".to_string(), "archived".to_string()),
        ("status".to_string(), "archived".to_string()),
        ("archived_at".to_string(), now.clone()),
        ("archived_reason".to_string(), archive_reason(decision)),
        ("archived_by".to_string(), "orchestrator".to_string()),
        ("updated_at".to_string(), now),
    ]);
    let mut effects = vec![Effect::HashSet {
        key,
        fields,
        guard: Guard::MustExist,
    }];
    // An archived experiment must not keep running on its schedule.
    let schedule_key = format!("schedules:{id}");
    let exists: bool = redis::cmd("EXISTS")
        .arg(&schedule_key)
        .query_async(conn)
        .await?;
    if exists {
        effects.push(Effect::Delete { key: schedule_key });
    }
    for set in crate::bus::store::scan_keys(conn, "pending_experiments:*").await? {
        let waiting: bool = redis::cmd("SISMEMBER")
            .arg(&set)
            .arg(id)
            .query_async(conn)
            .await
            .unwrap_or(false);
        if waiting {
            effects.push(Effect::SetRemove {
                key: set,
                members: vec![id.to_string()],
            });
        }
    }
    Ok(Ok(Some(effects)))
}

pub(super) fn archive_reason(decision: &Decision) -> String {
    first_text(&[decision.payload.get("reason")]).unwrap_or_else(|| decision.reasoning.clone())
}

/// Pausing or resuming an experiment: the effects and the announcement, `None` when it is
/// already in the wanted state, or why it is refused. Pausing needs a `ready` or `running`
/// hash and removes `schedules:{id}` (the Executor's cron stops); resuming needs `paused` and
/// writes the schedule back from the hash's own `schedule` field. Both are guarded on the
/// state read here, so a change made meanwhile fails the commit instead of being overwritten.
pub(super) async fn pause_plan(
    decision: &Decision,
    conn: Option<&mut Conn>,
) -> anyhow::Result<Result<Option<(Vec<Effect>, Map<String, Value>)>, String>> {
    let action = decision.action.as_str();
    let pausing = decision.action == Action::PauseExperiment;
    let Some(id) = decision.experiment_id.as_deref() else {
        return Ok(Err(format!("{action}: no experiment_id given")));
    };
    if !crate::support::msg::valid_key_id(id) {
        return Ok(Err(format!(
            "{action}: invalid experiment id {:?}",
            crate::support::msg::preview(id, 80)
        )));
    }
    let Some(conn) = conn else {
        return Ok(Err(format!(
            "{action}: Redis is needed to check the experiment"
        )));
    };
    let key = format!("experiments:{id}");
    let kind: String = redis::cmd("TYPE").arg(&key).query_async(&mut *conn).await?;
    if kind != "hash" {
        return Ok(Err(match kind.as_str() {
            "none" => format!("{action}: experiment {id} does not exist"),
            other => format!("{action}: {key} is a {other}, not a hash"),
        }));
    }
    let (state, schedule): (Option<String>, Option<String>) = redis::cmd("HMGET")
        .arg(&key)
        .arg("state")
        .arg("schedule")
        .query_async(&mut *conn)
        .await?;
    let state = state.unwrap_or_default();
    let now = crate::support::msg::now_iso_seconds();
    let guard = Guard::FieldIs {
        field: "state".into(),
        value: state.clone(),
    };
    let announce = |kind: &str| {
        object(json!({
            "type": kind,
            "experiment_id": id,
            "reason": archive_reason(decision),
            "by": "orchestrator",
            "source": "orchestrator",
        }))
    };
    if pausing {
        match state.as_str() {
            "paused" => return Ok(Ok(None)),
            "ready" | "running" => {}
            other => {
                return Ok(Err(format!(
                    "{action}: {id} is {other:?}; only a ready or running experiment can be paused"
                )));
            }
        }
        let fields = BTreeMap::from([
            ("state".to_string(), "paused".to_string()),
            ("status".to_string(), "paused".to_string()),
            ("paused_from".to_string(), state.clone()),
            ("paused_at".to_string(), now.clone()),
            ("paused_reason".to_string(), archive_reason(decision)),
            ("updated_at".to_string(), now),
        ]);
        let effects = vec![
            Effect::HashSet { key, fields, guard },
            Effect::Delete {
                key: format!("schedules:{id}"),
            },
        ];
        return Ok(Ok(Some((effects, announce("experiment_paused")))));
    }
    match state.as_str() {
        "paused" => {}
        "ready" | "running" => return Ok(Ok(None)),
        other => {
            return Ok(Err(format!(
                "{action}: {id} is {other:?}; only a paused experiment can be resumed"
            )));
        }
    }
    let fields = BTreeMap::from([
        ("state".to_string(), "ready".to_string()),
        ("status".to_string(), "ready".to_string()),
        ("resumed_at".to_string(), now.clone()),
        ("updated_at".to_string(), now),
    ]);
    let mut effects = vec![Effect::HashSet { key, fields, guard }];
    if let Some(cron) = schedule.filter(|s| !s.trim().is_empty()) {
        effects.push(Effect::SetString {
            key: format!("schedules:{id}"),
            value: cron,
            expire_secs: None,
        });
    }
    Ok(Ok(Some((effects, announce("experiment_resumed")))))
}
