//! Turning a decision into effects (the contract of docs/system-contract.md §4) and
//! carrying them out. Every emitted message carries a new `msg_id` and the
//! `msg_id` of the message that caused it.

use std::path::PathBuf;
use std::time::Duration;

use serde::Serialize;
use serde_json::{Map, Value, json};

use crate::bus::effects::publish;
use crate::bus::effects::{self, Commit, Effect, Fence};
use crate::bus::store::Conn;
use crate::orchestrator::decision::{Action, Decision};
use crate::support::config::Channels;

/// Where a decision's effects go.
#[derive(Debug, Clone)]
pub struct Target {
    /// Channel names.
    pub channels: Channels,
    /// The context directory (worklist.md, learnings.md).
    pub context_path: PathBuf,
    /// The roundtable command and its timeout, when configured.
    pub roundtable: Option<(String, Duration)>,
    /// Where a reply goes when the message names no channel (FULLSEND_REPORT_CHANNEL_ID), so
    /// completions and alerts are reported without being asked.
    pub report_channel: Option<String>,
}

impl Target {
    /// Where effects go, from configuration.
    pub fn from_config(config: &crate::support::config::Config) -> anyhow::Result<Target> {
        let roundtable = match config.roundtable_command() {
            Some(cmd) => Some((cmd, config.roundtable_timeout()?)),
            None => None,
        };
        Ok(Target {
            channels: config.channels(),
            context_path: config.context_path(),
            roundtable,
            report_channel: config.report_channel_id(),
        })
    }
}

/// The default reply when the model gave no content.
pub const DEFAULT_REPLY: &str = "✅ Got it — I will draft a plan and share next steps shortly.";
pub use super::reply::DISCORD_MAX_CHARS;
/// Where roundtable requests are announced.
pub const ROUNDTABLE_CHANNEL: &str = "fullsend:roundtable";

/// What a decision will do.
#[derive(Debug, Clone, Serialize)]
pub struct Plan {
    /// The action.
    pub action: Action,
    /// Effects, in order.
    pub effects: Vec<Effect>,
    /// A roundtable to run before committing (its result is published back).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub roundtable: Option<Value>,
    /// Why the action was refused, if it was (with several actions: only when every one was).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rejected: Option<String>,
    /// With several actions, the ones refused: `{index, action, reason}`; the others go ahead.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub refused: Vec<Value>,
    /// Things the operator should know.
    pub warnings: Vec<String>,
}

impl Plan {
    /// A plan that does nothing (yet).
    fn empty(action: Action) -> Plan {
        Plan {
            action,
            effects: Vec::new(),
            roundtable: None,
            rejected: None,
            refused: Vec::new(),
            warnings: Vec::new(),
        }
    }
}

/// Plans the effects of `decision`: of its one action, or of each of its `actions` in order,
/// all to be committed together. A refused action is reported in `refused` and the others go
/// ahead. Reads Redis only to check the experiments the actions name.
pub async fn plan(
    decision: &Decision,
    target: &Target,
    conn: Option<&mut Conn>,
) -> anyhow::Result<Plan> {
    let mut plan = if decision.actions.is_empty() {
        plan_one(decision, target, conn).await?
    } else {
        plan_steps(decision, target, conn).await?
    };
    // Finished work leaves the worklist's Active section, whatever the model decided.
    if let Some((keys, note)) = super::think::finished_work(&decision.message) {
        plan.effects.push(Effect::CompleteLines {
            path: target.context_path.join("worklist.md"),
            from: super::think::ACTIVE_SECTION.to_string(),
            to: super::think::COMPLETED_SECTION.to_string(),
            keys,
            note,
            history_dir: target.context_path.join(".history"),
        });
    }
    Ok(plan)
}

/// Plans each of the decision's `actions`.
async fn plan_steps(
    decision: &Decision,
    target: &Target,
    mut conn: Option<&mut Conn>,
) -> anyhow::Result<Plan> {
    let mut plan = Plan::empty(decision.action);
    for (index, step) in decision.actions.iter().enumerate() {
        let name = step.action.as_str();
        let refuse = |plan: &mut Plan, reason: String| {
            plan.refused
                .push(json!({"index": index, "action": name, "reason": reason}));
        };
        if let Some(note) = &step.parse_note {
            refuse(&mut plan, note.clone());
            continue;
        }
        let one = plan_one(&decision.for_step(step), target, conn.as_deref_mut()).await?;
        if let Some(reason) = one.rejected {
            refuse(&mut plan, reason);
            continue;
        }
        if one.roundtable.is_some() && plan.roundtable.is_some() {
            refuse(&mut plan, "one roundtable per decision".into());
            continue;
        }
        plan.effects.extend(one.effects);
        plan.roundtable = plan.roundtable.or(one.roundtable);
        plan.warnings.extend(
            one.warnings
                .into_iter()
                .map(|w| format!("action {index}: {w}")),
        );
    }
    for r in &plan.refused {
        plan.warnings.push(format!(
            "action {} ({}) refused: {}",
            r["index"],
            r["action"].as_str().unwrap_or(""),
            r["reason"].as_str().unwrap_or("")
        ));
    }
    if plan.refused.len() == decision.actions.len() {
        plan.rejected = Some("every action of the decision was refused".into());
    }
    Ok(plan)
}

/// Plans the effects of one action.
async fn plan_one(
    decision: &Decision,
    target: &Target,
    conn: Option<&mut Conn>,
) -> anyhow::Result<Plan> {
    let mut plan = Plan::empty(decision.action);
    let cause = &decision.message;
    let payload = &decision.payload;
    let priority = serde_json::to_value(decision.priority)?;
    match decision.action {
        Action::DispatchToFullsend => {
            let mut msg = object(json!({
                "type": "experiment_request",
                "idea": Value::Object(payload.clone()),
                "context": decision.context_for_fullsend,
                "priority": priority,
                "requested_at": crate::support::msg::now_iso_micros(),
                "orchestrator_reasoning": decision.reasoning,
                "source": "orchestrator",
            }));
            // FULLSEND's work on it joins the trace of the message that caused it.
            msg.insert(
                "traceparent".into(),
                json!(crate::support::msg::traceparent(
                    &crate::support::msg::trace_id_of(cause, None)
                )),
            );
            // How the Orchestrator wants it designed (FULLSEND's policy decides otherwise).
            if let Some(mode) = payload
                .get("mode")
                .and_then(Value::as_str)
                .filter(|m| matches!(*m, "single" | "ralph"))
            {
                msg.insert("mode".into(), json!(mode));
            }
            if payload.get("complex").and_then(Value::as_bool) == Some(true) {
                msg.insert("complex".into(), json!(true));
            }
            msg.insert(
                "request_id".into(),
                Value::String(format!("req_{}", crate::support::msg::new_msg_id())),
            );
            match &decision.brief {
                Some(brief) => {
                    msg.insert("brief".into(), json!(brief.text));
                    msg.insert("similar_experiments".into(), json!(brief.similar_experiments));
                    msg.insert("relevant_learnings".into(), json!(brief.relevant_learnings));
                    msg.insert("available_tools".into(), json!(brief.available_tools));
                }
                None => plan.warnings.push(
                    "dispatch_to_fullsend: the decision carries no brief; FULLSEND gets the idea alone"
                        .into(),
                ),
            }
            plan.effects
                .push(publish(&target.channels.to_fullsend, msg, cause));
        }
        Action::DispatchToBuilder => {
            let mut msg = object(json!({
                "type": "tool_prd",
                "requested_by": "orchestrator",
                "priority": priority,
                "requested_at": crate::support::msg::now_iso_micros(),
                "orchestrator_reasoning": decision.reasoning,
                "source": "orchestrator",
            }));
            match payload.get("prd") {
                Some(prd) => {
                    msg.insert("prd".into(), prd.clone());
                    for field in ["notify_channel", "notify_message"] {
                        if let Some(v) = payload.get(field).filter(|v| !v.is_null()) {
                            msg.insert(field.into(), v.clone());
                        }
                    }
                }
                None => {
                    msg.insert("prd".into(), Value::Object(payload.clone()));
                }
            }
            msg.insert(
                "request_id".into(),
                Value::String(format!("req_{}", crate::support::msg::new_msg_id())),
            );
            plan.effects
                .push(publish(&target.channels.builder_tasks, msg, cause));
        }
        Action::RespondToDiscord => {
            let content = first_text(&[
                payload.get("content"),
                payload.get("message"),
                cause.get("notify_message"),
                payload.get("value"),
            ])
            .unwrap_or_else(|| DEFAULT_REPLY.to_string());
            match super::reply::reply(decision, target, &content) {
                Ok(effect) => plan.effects.push(effect),
                Err(warning) => plan.warnings.push(format!("respond_to_discord: {warning}")),
            }
        }
        Action::AskForContext => match super::reply::question(decision, target) {
            Ok(effects) => plan.effects.extend(effects),
            Err(reason) => plan.rejected = Some(reason),
        },
        // A progress rule notes where running work is, on its own line, at commit time.
        Action::UpdateWorklist if payload.get("note_line").is_some_and(Value::is_object) => {
            let note = &payload["note_line"];
            plan.effects.push(Effect::NoteLines {
                path: target.context_path.join("worklist.md"),
                section: crate::orchestrator::think::ACTIVE_SECTION.to_string(),
                keys: note["keys"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .filter_map(Value::as_str)
                    .map(str::to_string)
                    .collect(),
                note: text_of(note.get("note")).unwrap_or_default(),
                history_dir: target.context_path.join(".history"),
            });
        }
        // A status rule adds one line, edited against the file as it is at commit time.
        Action::UpdateWorklist if payload.get("add_line").is_some_and(Value::is_string) => {
            plan.effects.push(Effect::AddLine {
                path: target.context_path.join("worklist.md"),
                section: crate::orchestrator::think::ACTIVE_SECTION.to_string(),
                title: crate::orchestrator::think::WORKLIST_TITLE.to_string(),
                line: text_of(payload.get("add_line")).unwrap_or_default(),
                history_dir: target.context_path.join(".history"),
            });
        }
        Action::UpdateWorklist => match first_text(&[
            payload.get("content"),
            payload.get("worklist"),
            payload.get("value"),
        ]) {
            Some(content) => plan.effects.push(Effect::ReplaceFile {
                path: target.context_path.join("worklist.md"),
                content: ensure_newline(content),
                history_dir: target.context_path.join(".history"),
                based_on: decision.worklist_version.clone(),
            }),
            None => plan
                .warnings
                .push("update_worklist: payload.content is empty; worklist left alone".into()),
        },
        Action::RecordLearning => match first_text(&[
            payload.get("learning"),
            payload.get("content"),
            payload.get("text"),
            payload.get("value"),
        ]) {
            Some(text) => plan.effects.push(Effect::AppendLearning {
                path: target.context_path.join("learnings.md"),
                text,
            }),
            None => plan
                .warnings
                .push("record_learning: payload.learning is empty; nothing recorded".into()),
        },
        Action::KillExperiment => match super::lifecycle::kill_plan(decision, conn).await? {
            Ok(None) => plan.warnings.push(format!(
                "kill_experiment: {} is already archived; nothing changed",
                decision.experiment_id.as_deref().unwrap_or_default()
            )),
            Ok(Some(effects)) => {
                let id = decision.experiment_id.clone().unwrap_or_default();
                plan.effects.extend(effects);
                let msg = object(json!({
                    "type": "experiment_archived",
                    "experiment_id": id,
                    "reason": super::lifecycle::archive_reason(decision),
                    "archived_by": "orchestrator",
                    "source": "orchestrator",
                }));
                plan.effects
                    .push(publish("fullsend:experiments", msg, cause));
            }
            Err(reason) => plan.rejected = Some(reason),
        },
        Action::InitiateRoundtable => {
            let prompt = first_text(&[
                payload.get("prompt"),
                payload.get("topic"),
                payload.get("question"),
                payload.get("value"),
            ])
            .unwrap_or_else(|| decision.reasoning.clone());
            let learnings = recent_learnings(&target.context_path.join("learnings.md"), 10);
            let request = json!({
                "prompt": prompt,
                "context": decision.context_for_fullsend.clone() + &payload.get("context").and_then(Value::as_str).map(|c| format!("\n{c}")).unwrap_or_default(),
                "learnings": learnings,
            });
            let mut msg = object(
                json!({"type": "roundtable_request", "source": "orchestrator", "priority": priority}),
            );
            if let Value::Object(r) = &request {
                msg.extend(r.clone());
            }
            plan.effects.push(publish(ROUNDTABLE_CHANNEL, msg, cause));
            if target.roundtable.is_some() {
                plan.roundtable = Some(request);
            } else {
                plan.warnings.push("initiate_roundtable: no roundtable command configured (FULLSEND_ROUNDTABLE_CMD); request published only".into());
            }
        }
        Action::PauseExperiment | Action::ResumeExperiment => {
            match super::lifecycle::pause_plan(decision, conn).await? {
                Ok(None) => plan.warnings.push(format!(
                    "{}: {} is already {}; nothing changed",
                    decision.action.as_str(),
                    decision.experiment_id.as_deref().unwrap_or_default(),
                    if decision.action == Action::PauseExperiment {
                        "paused"
                    } else {
                        "running"
                    }
                )),
                Ok(Some((effects, announcement))) => {
                    plan.effects.extend(effects);
                    plan.effects
                        .push(publish("fullsend:experiments", announcement, cause));
                }
                Err(reason) => plan.rejected = Some(reason),
            }
        }
        Action::NoAction => {}
    }
    Ok(plan)
}

/// What dispatching did.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    /// Envelope version.
    pub v: u32,
    /// The action.
    pub action: Action,
    /// True for `--dry-run` (nothing happened).
    pub dry_run: bool,
    /// The planned effects.
    pub plan: Plan,
    /// File effects done.
    pub files: Vec<Value>,
    /// The roundtable's outcome, when one ran.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub roundtable: Option<Value>,
    /// The Redis commit, when there was one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub commit: Option<Commit>,
    /// `msg_id` of the message that caused the decision.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub causation_id: Option<String>,
}

/// Runs the roundtable at most once per message (`seen` names it): its result is memoised,
/// and a run that started but left no result (the listener died during it) is not started
/// again; it is reported as interrupted. Without `seen` (a one-off `dispatch`) it just runs.
async fn roundtable_once(
    conn: &mut Conn,
    command: &str,
    request: &Value,
    timeout: std::time::Duration,
    seen: Option<&str>,
) -> anyhow::Result<anyhow::Result<Value>> {
    let Some(seen) = seen else {
        return Ok(crate::orchestrator::roundtable::run(command, request, timeout).await);
    };
    const DAY: u64 = 24 * 3600;
    let (started, result) = (
        format!("{seen}:roundtable:started"),
        format!("{seen}:roundtable:result"),
    );
    let memo: Option<String> = redis::cmd("GET").arg(&result).query_async(conn).await?;
    if let Some(memo) = memo {
        let value: Value = serde_json::from_str(&memo).unwrap_or(Value::Null);
        return Ok(match value.get("error").and_then(Value::as_str) {
            Some(error) => Err(anyhow::anyhow!("{error}")),
            None => Ok(value),
        });
    }
    let first: Option<String> = redis::cmd("SET")
        .arg(&started)
        .arg("1")
        .arg("NX")
        .arg("EX")
        .arg(DAY)
        .query_async(conn)
        .await?;
    if first.is_none() {
        return Ok(Err(anyhow::anyhow!(
            "the roundtable was interrupted by a listener restart; it runs at most once per message"
        )));
    }
    let outcome = crate::orchestrator::roundtable::run(command, request, timeout).await;
    let memo = match &outcome {
        Ok(value) => value.clone(),
        Err(err) => json!({"error": format!("{err:#}")}),
    };
    let _: () = redis::cmd("SET")
        .arg(&result)
        .arg(memo.to_string())
        .arg("EX")
        .arg(DAY)
        .query_async(conn)
        .await?;
    Ok(outcome)
}

/// Carries out a plan: file effects (idempotent per `marker`), the roundtable,
/// then one Redis commit (marked `seen`, fenced when given).
pub async fn execute(
    mut plan: Plan,
    decision: &Decision,
    target: &Target,
    conn: &mut Conn,
    marker: Option<&str>,
    seen: Option<&str>,
    fence: Option<&Fence>,
) -> anyhow::Result<Report> {
    // Files are written, and the roundtable runs, outside the commit script, so the lease is
    // checked first: a listener that lost the entry while it thought writes no file for it and
    // starts no roundtable. A plan without either needs no check: the commit is fenced.
    let outside_the_commit =
        plan.effects.iter().any(|e| !e.is_redis()) || plan.roundtable.is_some();
    if let Some(fence) = fence
        && outside_the_commit
        && !effects::still_holds(conn, fence).await?
    {
        anyhow::bail!(
            "the lease on {} was lost before the file effects; leaving them to its new owner",
            fence.entry_id
        );
    }
    // Locks, fsyncs and renames block: off the async workers, so renewals and heartbeats
    // keep their schedule while a slow disk works.
    let files = {
        let file_effects = plan.effects.clone();
        let marker = marker.map(str::to_string);
        tokio::task::spawn_blocking(move || effects::apply_files(&file_effects, marker.as_deref()))
            .await
            .map_err(|e| anyhow::anyhow!("file effects: {e}"))??
    };
    let mut roundtable = None;
    if let (Some(request), Some((command, timeout))) =
        (plan.roundtable.clone(), target.roundtable.as_ref())
    {
        let outcome = roundtable_once(conn, command, &request, *timeout, seen).await?;
        let mut msg = object(
            json!({"type": "roundtable_result", "source": "orchestrator", "prompt": request["prompt"]}),
        );
        match &outcome {
            Ok(result) => {
                msg.insert("status".into(), json!("ok"));
                msg.insert(
                    "summary".into(),
                    result.get("summary").cloned().unwrap_or(Value::Null),
                );
                msg.insert(
                    "transcript".into(),
                    result.get("transcript").cloned().unwrap_or(Value::Null),
                );
            }
            Err(err) => {
                msg.insert("status".into(), json!("failed"));
                msg.insert("error".into(), json!(format!("{err:#}")));
            }
        }
        roundtable = Some(Value::Object(msg.clone()));
        plan.effects.push(publish(
            &target.channels.to_orchestrator,
            msg,
            &decision.message,
        ));
    }
    let needs_commit =
        plan.effects.iter().any(Effect::is_redis) || seen.is_some() || fence.is_some();
    let commit = if needs_commit {
        Some(effects::commit(conn, &plan.effects, seen, fence).await?)
    } else {
        None
    };
    Ok(Report {
        v: 1,
        action: plan.action,
        dry_run: false,
        plan,
        files,
        roundtable,
        commit,
        causation_id: crate::support::msg::msg_id_of(&decision.message).map(str::to_string),
    })
}

/// A report of what a plan would do, doing nothing.
pub fn dry_run(plan: Plan, decision: &Decision) -> Report {
    Report {
        v: 1,
        action: plan.action,
        dry_run: true,
        plan,
        files: Vec::new(),
        roundtable: None,
        commit: None,
        causation_id: crate::support::msg::msg_id_of(&decision.message).map(str::to_string),
    }
}

pub(super) fn original(msg: &Map<String, Value>) -> Option<&Map<String, Value>> {
    msg.get("original_message").and_then(Value::as_object)
}

/// A non-empty string (numbers are written out).
pub(super) fn text_of(value: Option<&Value>) -> Option<String> {
    match value? {
        Value::String(s) if !s.trim().is_empty() => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        _ => None,
    }
}

pub(super) fn first_text(values: &[Option<&Value>]) -> Option<String> {
    values.iter().find_map(|v| text_of(*v))
}

fn ensure_newline(mut text: String) -> String {
    if !text.ends_with('\n') {
        text.push('\n');
    }
    text
}

pub(super) fn object(value: Value) -> Map<String, Value> {
    match value {
        Value::Object(m) => m,
        _ => Map::new(),
    }
}

/// The last `n` entries of learnings.md, as a list (the Roundtable wants a list).
fn recent_learnings(path: &std::path::Path, n: usize) -> Vec<String> {
    let Ok(text) = std::fs::read_to_string(path) else {
        return Vec::new();
    };
    let entries: Vec<String> = text
        .split("\n## ")
        .skip(1)
        .map(|e| format!("## {}", e.trim()))
        .collect();
    entries.into_iter().rev().take(n).rev().collect()
}
