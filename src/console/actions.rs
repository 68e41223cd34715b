//! What the console can change, through the same code as the CLI: kill, pause or resume an
//! experiment as `fullsend dispatch` would carry out that decision, and requeue dead letters as
//! `fullsend dlq requeue` does. Each change is logged with who asked and what came of it.

use serde_json::{Value, json};

use crate::bus::queues::{self, Requeue, RequeueError};
use crate::bus::store::Conn;
use crate::orchestrator::dispatch::{self, Target};
use crate::support::config::Config;

/// Why an action did nothing.
#[derive(Debug)]
pub enum ActionError {
    /// The request is wrong (unknown experiment, a state that does not allow it): 409/400.
    Refused(String),
    /// Something underneath failed: 502.
    Failed(String),
}

/// The lifecycle verbs the console offers.
pub fn lifecycle_action(verb: &str) -> Option<&'static str> {
    match verb {
        "kill" => Some("kill_experiment"),
        "pause" => Some("pause_experiment"),
        "resume" => Some("resume_experiment"),
        _ => None,
    }
}

/// Carries out `action` on experiment `id` as the decision `{action, experiment_id, payload:
/// {reason}}` would be dispatched; returns the dispatch report.
pub async fn lifecycle(
    config: &Config,
    conn: &mut Conn,
    action: &str,
    id: &str,
    reason: &str,
    who: &str,
) -> Result<Value, ActionError> {
    if !crate::support::msg::valid_key_id(id) {
        return Err(ActionError::Refused(format!(
            "invalid experiment id {id:?}"
        )));
    }
    let reason = if reason.trim().is_empty() {
        format!("{action} from the console by {who}")
    } else {
        reason.trim().chars().take(500).collect()
    };
    let decision = json!({
        "action": action,
        "experiment_id": id,
        "reasoning": format!("operator console: {reason}"),
        "payload": {"experiment_id": id, "reason": reason},
    });
    let decision = crate::orchestrator::decision::Decision::read(&decision.to_string())
        .map_err(|e| ActionError::Failed(format!("building the decision: {e:#}")))?;
    let target = Target::from_config(config).map_err(|e| ActionError::Failed(format!("{e:#}")))?;
    let plan = dispatch::plan(&decision, &target, Some(conn))
        .await
        .map_err(|e| ActionError::Failed(format!("{e:#}")))?;
    if let Some(rejected) = &plan.rejected {
        tracing::warn!(
            who,
            action,
            experiment_id = id,
            "console: refused: {rejected}"
        );
        return Err(ActionError::Refused(rejected.clone()));
    }
    let report = dispatch::execute(plan, &decision, &target, conn, None, None, None)
        .await
        .map_err(|e| ActionError::Failed(format!("{e:#}")))?;
    tracing::info!(
        who,
        action,
        experiment_id = id,
        "console: {action} {id}: {reason}"
    );
    serde_json::to_value(&report).map_err(|e| ActionError::Failed(e.to_string()))
}

/// Requeues the dead letters `which` of `channel`; returns what moved.
pub async fn requeue(
    conn: &mut Conn,
    role: &str,
    channel: &str,
    which: &Requeue,
    who: &str,
) -> Result<Value, ActionError> {
    let moved = queues::requeue(conn, channel, which)
        .await
        .map_err(|e| match e {
            RequeueError::Unknown(m) => ActionError::Refused(m),
            RequeueError::Redis(e) => ActionError::Failed(format!("{e:#}")),
        })?;
    let ids: Vec<&str> = moved.iter().filter_map(|m| m["dlq_id"].as_str()).collect();
    tracing::info!(
        who,
        role,
        requeued = moved.len(),
        "console: requeued {role} dead letters {ids:?}"
    );
    Ok(json!({"v": 1, "role": role, "requeued": moved}))
}
