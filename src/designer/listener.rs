//! The FULLSEND role of `listen`: `experiment_request` → design → spec saved
//! and announced; `tool_built` → waiting experiments released; `tool_feedback`
//! → a learning, and re-designs when a tool's inputs changed; `run_direct` →
//! the agent run once. Started, ready and failed are reported back to the
//! Orchestrator.

use serde_json::{Map, Value, json};
use tokio::sync::watch;

use crate::bus::effects::publish;
use crate::bus::effects::{self, CommitStatus, Effect, Fence};
use crate::bus::runner::{Handled, Handler, Job, JobError};
use crate::bus::store::{self, ChannelKeys, Conn, KeyValue};
use crate::designer::design::{self, Designed, Designer, Request};

/// How long a finished design is memoised (a redelivery must not pay twice).
const MEMO_TTL_SECS: u64 = 24 * 3600;

/// FULLSEND's message handler.
pub struct FullsendRole {
    /// The designer.
    pub designer: Designer,
    /// Keys of the consumed channel.
    pub keys: ChannelKeys,
    /// The consumer group.
    pub group: String,
    /// The daily spend limit.
    pub gate: crate::bus::spend::Gate,
}

impl Handler for FullsendRole {
    async fn paused(&self, conn: Conn) -> Option<String> {
        self.gate.pause_reason(conn).await
    }

    async fn handle(
        &self,
        job: Job,
        mut conn: Conn,
        fence: Fence,
        cancel: watch::Receiver<bool>,
    ) -> Result<Handled, JobError> {
        let kind = job
            .message
            .get("type")
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_string();
        let (effects, mut line) = match kind.as_str() {
            "experiment_request" => self.experiment_request(&job, &mut conn, cancel).await?,
            "tool_built" => self.tool_built(&job, &mut conn).await?,
            "tool_feedback" => {
                match crate::designer::feedback::plan(
                    &mut conn,
                    &job.message,
                    &job.identity,
                    &self.designer.channels,
                )
                .await
                .map_err(JobError::Transient)?
                {
                    Ok(planned) => planned,
                    Err(reason) => return Err(JobError::Permanent(anyhow::anyhow!(reason))),
                }
            }
            "tool_build_failed" => {
                let mut msg = job.message.clone();
                msg.remove("msg_id");
                msg.insert("source".into(), json!("fullsend_listener"));
                (
                    vec![publish(
                        &self.designer.channels.to_orchestrator,
                        msg,
                        &job.message,
                    )],
                    json!({"forwarded": "tool_build_failed"}),
                )
            }
            "run_direct" => self.run_direct(&job, &mut conn, cancel).await?,
            "experiment_completed" | "experiment_failed" => {
                crate::designer::executor::executor_result(&job, &self.designer.channels)
            }
            other => {
                tracing::info!("{}: ignoring message type {:?}", job.identity, other);
                (Vec::new(), json!({"ignored": other}))
            }
        };
        let seen = self.keys.seen(&self.group, &job.identity);
        let commit = effects::commit(&mut conn, &effects, Some(&seen), Some(&fence))
            .await
            .map_err(JobError::Transient)?;
        if let CommitStatus::Precondition(why) = &commit.status {
            // What the plan relied on changed before the commit (the experiment id was taken
            // meanwhile, a draft was released): plan again. The design memo stays, so the
            // retry picks a free id for the same spec without designing (and paying) again.
            return Err(JobError::Transient(anyhow::anyhow!(
                "commit refused: {why}"
            )));
        }
        if let Value::Object(m) = &mut line {
            m.insert("v".into(), json!(1));
            m.insert("role".into(), json!("fullsend"));
            m.insert("msg_id".into(), json!(job.identity));
            m.insert(
                "trace_id".into(),
                json!(crate::support::msg::trace_id_of(
                    &job.message,
                    Some(&job.identity)
                )),
            );
            m.insert("type".into(), json!(kind));
            m.insert("keys_written".into(), json!(design::keys_written(&effects)));
            m.insert("messages".into(), json!(design::messages(&effects)));
            m.insert("commit".into(), json!(commit));
        }
        Ok(Handled {
            commit: commit.status,
            line,
        })
    }
}

impl FullsendRole {
    async fn experiment_request(
        &self,
        job: &Job,
        conn: &mut Conn,
        cancel: watch::Receiver<bool>,
    ) -> Result<(Vec<Effect>, Value), JobError> {
        let channels = &self.designer.channels;
        let request = match Request::from_message(&job.message) {
            Ok(r) => r,
            Err(reason) => {
                return Ok((
                    design::failed_effects(&reason, None, &job.message, channels, None),
                    json!({"status": "failed", "reason": reason}),
                ));
            }
        };
        let memo_key = self.keys.memo(&self.group, &job.identity);
        let memo: Option<String> = redis::cmd("GET")
            .arg(&memo_key)
            .query_async(conn)
            .await
            .map_err(|e| JobError::Transient(e.into()))?;
        let designed: Designed = match memo
            .and_then(|m| serde_json::from_str::<MemoDesign>(&m).ok())
        {
            Some(m) => m.into_designed(),
            None => {
                self.started_once(job, &request, conn).await?;
                let mut designer = self.designer.clone();
                designer.trace(&job.message, &job.identity);
                // Every agent call is charged to the day as it returns, and checked against
                // the day's limit before it starts.
                designer.spend = Some(crate::designer::purse::DailySpend {
                    conn: conn.clone(),
                    limit: self.gate.limit,
                });
                if request.mode_under(designer.mode) == design::Mode::Ralph {
                    designer.progress = Some(crate::designer::ralph::Reporter(
                        std::sync::Arc::new(super::progress::DesignProgress::new(
                            conn.clone(),
                            &self.designer.channels.to_orchestrator,
                            &request.request_id,
                            &job.identity,
                        )),
                    ));
                }
                use crate::support::trace::{self, kv};
                let mode = request.mode_under(designer.mode);
                let span = trace::Span::child(
                    "design",
                    trace::INTERNAL,
                    vec![
                        kv(trace::DESIGN_MODE, format!("{mode:?}").to_lowercase()),
                        kv("fullsend.request.id", request.request_id.clone()),
                    ],
                );
                let ctx = span
                    .run(design::load_context(Some(conn), &designer.product_context))
                    .await;
                let designed = span
                    .run(designer.design(&request, &ctx, cancel.clone()))
                    .await
                    .map_err(JobError::Transient)?;
                span.set(trace::COST_USD, designed.cost_usd);
                if designed.status != "ready" {
                    span.fail(
                        designed
                            .reason
                            .clone()
                            .unwrap_or_else(|| designed.status.to_string()),
                    );
                }
                drop(span);
                if *cancel.borrow() {
                    return Err(JobError::Transient(anyhow::anyhow!(
                        "lease lost during the design"
                    )));
                }
                // A 429/529/5xx or a timeout is no answer: the request stays queued and is
                // designed again after a backoff, never announced as failed.
                if designed.status == "failed" && designed.transient {
                    return Err(JobError::Transient(anyhow::anyhow!(
                        "the design failed for now: {}",
                        designed.reason.clone().unwrap_or_default()
                    )));
                }
                let memo = MemoDesign::from(&designed);
                // Without the memo a retry would design (and pay) again.
                let stored: Result<(), _> = redis::cmd("SET")
                    .arg(&memo_key)
                    .arg(serde_json::to_string(&memo).unwrap_or_default())
                    .arg("EX")
                    .arg(MEMO_TTL_SECS)
                    .query_async(conn)
                    .await;
                stored.map_err(|e| {
                    JobError::Transient(anyhow::Error::new(e).context("storing the design memo"))
                })?;
                designed
            }
        };
        let report = json!({"status": designed.status, "reason": designed.reason, "work_dir": designed.work_dir, "cost_usd": designed.cost_usd, "repaired": designed.repaired});
        let Some(mut spec) = designed.spec.clone() else {
            let reason = designed
                .reason
                .clone()
                .unwrap_or_else(|| "design failed".into());
            return Ok((
                design::failed_effects(
                    &reason,
                    Some(&request),
                    &job.message,
                    channels,
                    Some(&designed.work_dir),
                ),
                report,
            ));
        };
        let id = spec
            .get("id")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_string();
        let unique = design::unique_id(conn, &id)
            .await
            .map_err(JobError::Transient)?;
        spec.insert("id".into(), json!(unique));
        let effects = design::effects(
            &spec,
            designed.tool_request.as_ref(),
            &designed.learnings,
            &request,
            channels,
            &job.message,
        )
        .map_err(JobError::Permanent)?;
        let mut report = report;
        if let Value::Object(m) = &mut report {
            m.insert("experiment_id".into(), json!(unique));
            m.insert("needs_tool".into(), json!(designed.tool_request.is_some()));
        }
        Ok((effects, report))
    }

    /// `fullsend_started`, once per message however often it is redelivered (its id is the
    /// message's). Not announced, not designed: a start that could not be announced (Redis
    /// went away) is retried before any money is spent on the design.
    async fn started_once(
        &self,
        job: &Job,
        request: &Request,
        conn: &mut Conn,
    ) -> Result<(), JobError> {
        let mut msg = Map::new();
        msg.insert("type".into(), json!("fullsend_started"));
        msg.insert("source".into(), json!("fullsend_listener"));
        msg.insert("request_id".into(), json!(request.request_id));
        msg.insert("msg_id".into(), json!(format!("{}-started", job.identity)));
        let effect = publish(&self.designer.channels.to_orchestrator, msg, &job.message);
        effects::commit(conn, &[effect], None, None)
            .await
            .map(|_| ())
            .map_err(|err| JobError::Transient(err.context("announcing the start")))
    }

    /// A tool is ready: every experiment waiting for it is released (not one).
    async fn tool_built(
        &self,
        job: &Job,
        conn: &mut Conn,
    ) -> Result<(Vec<Effect>, Value), JobError> {
        let name = ["tool_name", "name", "tool"]
            .iter()
            .find_map(|k| job.message.get(*k).and_then(Value::as_str))
            .unwrap_or_default()
            .to_string();
        let status = job
            .message
            .get("status")
            .and_then(Value::as_str)
            .unwrap_or("active");
        if name.is_empty() || !crate::support::msg::valid_key_id(&name) {
            return Err(JobError::Permanent(anyhow::anyhow!(
                "tool message without a valid tool name"
            )));
        }
        if matches!(status, "failed" | "error") {
            let mut msg = job.message.clone();
            msg.remove("msg_id");
            msg.insert("type".into(), json!("tool_build_failed"));
            msg.insert("source".into(), json!("fullsend_listener"));
            return Ok((
                vec![publish(
                    &self.designer.channels.to_orchestrator,
                    msg,
                    &job.message,
                )],
                json!({"tool": name, "status": status}),
            ));
        }
        let key = format!("pending_experiments:{name}");
        let waiting: Vec<String> = redis::cmd("SMEMBERS")
            .arg(&key)
            .query_async(conn)
            .await
            .map_err(|e| JobError::Transient(e.into()))?;
        // Only experiments still waiting for this tool are released: a hash whose state is
        // `draft`. A killed (archived) one, one the Executor moved on, or one stored in another
        // format stays where it is, and nothing is published for it.
        let keys: Vec<String> = waiting
            .iter()
            .filter(|e| crate::support::msg::valid_key_id(e))
            .map(|e| format!("experiments:{e}"))
            .collect();
        let states = store::read_many(conn, &keys, Some(&["state"]))
            .await
            .map_err(JobError::Transient)?;
        let mut effects = Vec::new();
        let mut released = Vec::new();
        let mut skipped = Vec::new();
        for (exp_key, state) in keys.iter().zip(states) {
            let exp = exp_key.trim_start_matches("experiments:").to_string();
            let waiting_hash = matches!(&state, KeyValue::Hash(h) if h.get("state").map(String::as_str) == Some("draft"));
            if !waiting_hash {
                tracing::warn!("{exp} is in {key} but is not a draft experiment; not released");
                skipped.push(exp);
                continue;
            }
            let now = crate::support::msg::now_iso_seconds();
            effects.push(Effect::HashSet {
                key: exp_key.clone(),
                fields: [("state", "ready"), ("status", "ready")]
                    .iter()
                    .map(|(k, v)| ((*k).to_string(), (*v).to_string()))
                    .chain([("updated_at".to_string(), now)])
                    .collect(),
                // Still waiting when the commit runs, or the whole commit is retried.
                guard: effects::Guard::FieldIs {
                    field: "state".into(),
                    value: "draft".into(),
                },
            });
            effects.push(publish(
                "fullsend:execute_now",
                obj(json!({"experiment_id": exp, "triggered_by": "fullsend_listener"})),
                &job.message,
            ));
            released.push(exp);
        }
        // Only the members released: one added after the read keeps waiting for its turn.
        effects.push(Effect::SetRemove {
            key,
            members: released.clone(),
        });
        Ok((
            effects,
            json!({"tool": name, "released": released, "not_released": skipped}),
        ))
    }

    /// Runs the agent once on an idea or an experiment, memoised like a design, and reports
    /// `direct_run_complete` or `direct_run_failed` with its learnings recorded in the same commit.
    async fn run_direct(
        &self,
        job: &Job,
        conn: &mut Conn,
        cancel: watch::Receiver<bool>,
    ) -> Result<(Vec<Effect>, Value), JobError> {
        use crate::designer::direct::{DirectResult, DirectRun, direct_effects};
        let to_orchestrator = &self.designer.channels.to_orchestrator;
        let failed = |run: &DirectRun, reason: String| {
            let result = DirectResult {
                ok: false,
                outcome: "error".into(),
                summary: reason.clone(),
                cost_usd: 0.0,
                learnings: Vec::new(),
                metrics: Value::Null,
                session_id: None,
                work_dir: std::path::PathBuf::new(),
                transient: false,
            };
            (
                direct_effects(run, &result, to_orchestrator, &job.message),
                json!({"status": "failed", "reason": reason}),
            )
        };
        let run = match DirectRun::from_message(&job.message) {
            Ok(r) => r,
            Err(reason) => {
                let placeholder = DirectRun {
                    idea: None,
                    experiment_id: None,
                    request_id: format!("direct_{}", job.identity),
                };
                return Ok(failed(&placeholder, reason));
            }
        };
        let spec = match &run.experiment_id {
            Some(id) => {
                let key = format!("experiments:{id}");
                let found =
                    store::read_many(conn, std::slice::from_ref(&key), Some(&["spec", "state"]))
                        .await
                        .map_err(JobError::Transient)?
                        .pop();
                match found {
                    Some(KeyValue::Hash(h)) => Some(h.get("spec").cloned().unwrap_or_default()),
                    Some(KeyValue::Text(t)) => Some(t),
                    _ => return Ok(failed(&run, format!("experiment {id} does not exist"))),
                }
            }
            None => None,
        };
        let memo_key = self.keys.memo(&self.group, &job.identity);
        let memo: Option<String> = redis::cmd("GET")
            .arg(&memo_key)
            .query_async(conn)
            .await
            .map_err(|e| JobError::Transient(e.into()))?;
        let result = match memo.and_then(|m| serde_json::from_str::<DirectResult>(&m).ok()) {
            Some(r) => r,
            None => {
                let mut designer = self.designer.clone();
                designer.trace(&job.message, &job.identity);
                designer.spend = Some(crate::designer::purse::DailySpend {
                    conn: conn.clone(),
                    limit: self.gate.limit,
                });
                let ctx = design::load_context(Some(conn), &designer.product_context).await;
                let result = designer
                    .run_direct(&run, spec, &ctx, cancel.clone())
                    .await
                    .map_err(JobError::Transient)?;
                if *cancel.borrow() {
                    return Err(JobError::Transient(anyhow::anyhow!(
                        "lease lost during the direct run"
                    )));
                }
                if !result.ok && result.transient {
                    return Err(JobError::Transient(anyhow::anyhow!(
                        "the direct run failed for now: {}",
                        result.summary
                    )));
                }
                let stored: Result<(), _> = redis::cmd("SET")
                    .arg(&memo_key)
                    .arg(serde_json::to_string(&result).unwrap_or_default())
                    .arg("EX")
                    .arg(MEMO_TTL_SECS)
                    .query_async(conn)
                    .await;
                stored.map_err(|e| {
                    JobError::Transient(anyhow::Error::new(e).context("storing the run memo"))
                })?;
                result
            }
        };
        let report = json!({"status": result.outcome, "experiment_id": run.experiment_id, "cost_usd": result.cost_usd, "learnings": result.learnings.len(), "work_dir": result.work_dir});
        Ok((
            direct_effects(&run, &result, to_orchestrator, &job.message),
            report,
        ))
    }
}

/// The memoised part of a design.
#[derive(serde::Serialize, serde::Deserialize)]
struct MemoDesign {
    spec: Option<Map<String, Value>>,
    tool_request: Option<Map<String, Value>>,
    reason: Option<String>,
    work_dir: std::path::PathBuf,
    cost_usd: f64,
    repaired: bool,
    #[serde(default)]
    learnings: Vec<String>,
}

impl From<&Designed> for MemoDesign {
    fn from(d: &Designed) -> Self {
        MemoDesign {
            spec: d.spec.clone(),
            learnings: d.learnings.clone(),
            tool_request: d.tool_request.clone(),
            reason: d.reason.clone(),
            work_dir: d.work_dir.clone(),
            cost_usd: d.cost_usd,
            repaired: d.repaired,
        }
    }
}

impl MemoDesign {
    fn into_designed(self) -> Designed {
        Designed {
            status: if self.spec.is_some() {
                "ready"
            } else {
                "failed"
            },
            spec: self.spec,
            tool_request: self.tool_request,
            reason: self.reason,
            violations: Vec::new(),
            repaired: self.repaired,
            work_dir: self.work_dir,
            cost_usd: self.cost_usd,
            engine: design::Engine::Claude,
            mode: design::Mode::Single,
            learnings: self.learnings,
            session_ids: Vec::new(),
            transient: false,
        }
    }
}

fn obj(v: Value) -> Map<String, Value> {
    match v {
        Value::Object(m) => m,
        _ => Map::new(),
    }
}
