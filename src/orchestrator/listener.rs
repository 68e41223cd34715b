//! The Orchestrator role of `listen`: think → dispatch for each message,
//! through the same code as `fullsend think` and `fullsend dispatch`, with
//! the model's decision memoised so a redelivery never pays twice.

use serde_json::json;
use tokio::sync::{Mutex, watch};

use crate::bus::effects::{self, CommitStatus, Fence};
use crate::bus::runner::{Handled, Handler, Job, JobError};
use crate::bus::store::{ChannelKeys, Conn};
use crate::context::loader::Loader;
use crate::orchestrator::decision::Decision;
use crate::orchestrator::dispatch::{self, Target};
use crate::orchestrator::think::{Orchestrator, Outcome};

/// How long a memoised decision is kept.
const MEMO_TTL_SECS: u64 = 24 * 3600;
/// How long a message's last word is kept: longer than any retry schedule of it.
const LAST_WORD_TTL_SECS: u64 = 7 * 24 * 3600;

/// The Orchestrator's message handler.
pub struct OrchestratorRole {
    /// The decision maker.
    pub orchestrator: Orchestrator,
    /// Where effects go.
    pub target: Target,
    /// The decision log.
    pub decision_log: std::sync::Arc<crate::orchestrator::log::DecisionLog>,
    /// Keys of the consumed channel.
    pub keys: ChannelKeys,
    /// The consumer group.
    pub group: String,
    /// Context loader (file cache shared across messages).
    pub loader: Mutex<Loader>,
    /// The daily spend limit.
    pub gate: crate::bus::spend::Gate,
}

impl Handler for OrchestratorRole {
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
        let decision = self.think_stage(&job, &mut conn, cancel.clone()).await?;
        if *cancel.borrow() {
            return Err(JobError::Transient(anyhow::anyhow!(
                "lease lost before dispatch"
            )));
        }
        dispatch_stage(
            &self.target,
            &self.keys,
            &self.group,
            &job,
            &decision,
            &mut conn,
            &fence,
        )
        .await
    }
}

/// The dispatch stage of one delivered message: plan, file effects after the lease is checked
/// again, then the fenced commit that acknowledges the entry. Shared by the built-in role and by
/// `fullsend dispatch` inside a `listen --exec` pipeline.
pub async fn dispatch_stage(
    target: &Target,
    keys: &ChannelKeys,
    group: &str,
    job: &Job,
    decision: &Decision,
    conn: &mut Conn,
    fence: &Fence,
) -> Result<Handled, JobError> {
    let memo_key = keys.memo(group, &job.identity);
    let plan = dispatch::plan(decision, target, Some(&mut *conn))
        .await
        .map_err(JobError::Transient)?;
    for w in &plan.warnings {
        tracing::warn!("{}: {w}", job.identity);
    }
    if let Some(r) = &plan.rejected {
        tracing::error!("{}: {r}", job.identity);
    }
    let seen = keys.seen(group, &job.identity);
    let span = crate::support::trace::Span::child(
        "dispatch",
        crate::support::trace::INTERNAL,
        vec![crate::support::trace::kv(
            crate::support::trace::ACTION,
            decision.action.as_str(),
        )],
    );
    let executed = span
        .run(dispatch::execute(
            plan,
            decision,
            target,
            conn,
            Some(&job.identity),
            Some(&seen),
            Some(fence),
        ))
        .await;
    if let Ok(report) = &executed {
        span.run(async { effect_spans(report) }).await;
    }
    drop(span);
    let report = match executed {
        Ok(report) => report,
        Err(err) if err.is::<crate::support::files::ChangedSince>() => {
            // The worklist moved under a whole-file rewrite: forget the decision, so the
            // retry asks the model again with the worklist as it is now.
            let _: Result<(), _> = redis::cmd("DEL").arg(&memo_key).query_async(conn).await;
            return Err(JobError::Conflict(err));
        }
        Err(err) => return Err(JobError::Transient(err)),
    };
    let commit = report
        .commit
        .as_ref()
        .map(|c| c.status.clone())
        .unwrap_or(CommitStatus::Ok);
    let line = json!({
        "v": 1,
        "role": "orchestrator",
        "msg_id": job.identity,
        "trace_id": crate::support::msg::trace_id_of(&job.message, Some(&job.identity)),
        "type": job.message.get("type"),
        "action": decision.action,
        "priority": decision.priority,
        "reasoning": decision.reasoning,
        "fallback": decision.fallback,
        "provider": decision.provider,
        "model": decision.model,
        "usage": decision.usage,
        "cost_usd": decision.cost_usd,
        "elapsed_ms": decision.elapsed_ms,
        "rejected": report.plan.rejected,
        "refused": report.plan.refused,
        "warnings": report.plan.warnings,
        "effects": report.plan.effects,
        "commit": report.commit,
    });
    Ok(Handled { commit, line })
}

/// One span per effect of a dispatch, named by its kind, with what it touched and whether the
/// commit that carried it went through.
fn effect_spans(report: &dispatch::Report) {
    use crate::support::trace::{self, kv};
    if !trace::enabled() {
        return; // each effect is serialized to name it: not for no-op spans
    }
    let committed = report.commit.as_ref().map_or("none", |c| match c.status {
        CommitStatus::Ok => "ok",
        _ => "not committed",
    });
    for effect in &report.plan.effects {
        let v = serde_json::to_value(effect).unwrap_or_default();
        let kind = v["effect"].as_str().unwrap_or("effect").to_string();
        let target = ["channel", "key", "path"]
            .iter()
            .find_map(|k| v[*k].as_str())
            .unwrap_or_default()
            .to_string();
        let span = trace::Span::child(
            format!("effect {kind}"),
            trace::INTERNAL,
            vec![
                kv(trace::EFFECT_KIND, kind),
                kv(trace::EFFECT_TARGET, target),
                kv("fullsend.commit.status", committed),
            ],
        );
        drop(span);
    }
}

impl OrchestratorRole {
    /// The think stage of one delivered message: its memoised decision, or a new one from the
    /// model, memoised before anything depends on it. Shared by the built-in role and by
    /// `fullsend think` inside a `listen --exec` pipeline.
    pub async fn think_stage(
        &self,
        job: &Job,
        conn: &mut Conn,
        cancel: watch::Receiver<bool>,
    ) -> Result<Decision, JobError> {
        let memo_key = self.keys.memo(&self.group, &job.identity);
        let memo: Option<String> = redis::cmd("GET")
            .arg(&memo_key)
            .query_async(conn)
            .await
            .map_err(|e| JobError::Transient(e.into()))?;
        match memo.and_then(|m| serde_json::from_str::<Decision>(&m).ok()) {
            Some(d) => Ok(d),
            None => self.decide(job, conn, &memo_key, cancel).await,
        }
    }

    async fn decide(
        &self,
        job: &Job,
        conn: &mut Conn,
        memo_key: &str,
        mut cancel: watch::Receiver<bool>,
    ) -> Result<Decision, JobError> {
        let ctx = {
            let span = crate::support::trace::Span::child(
                "context.load",
                crate::support::trace::INTERNAL,
                Vec::new(),
            );
            let mut loader = self.loader.lock().await;
            span.run(loader.load(&self.target.context_path, Some(conn)))
                .await
        };
        for w in ctx.warnings.iter().filter(|w| !w.contains("No such file")) {
            tracing::warn!("{w}");
        }
        let outcome = tokio::select! {
            o = self.orchestrator.decide(&job.message, &ctx, None) => o.map_err(JobError::Permanent)?,
            _ = cancel.wait_for(|c| *c) => return Err(JobError::Transient(anyhow::anyhow!("lease lost while thinking"))),
        };
        match outcome {
            Outcome::Decided(decision) => {
                if let Err(err) = self.decision_log.append(&decision) {
                    tracing::warn!("decision log: {err:#}");
                }
                // Without the memo a retry would ask the model again and could decide
                // differently: a memo that cannot be stored is a transient failure. The spend
                // goes in the same round trip.
                let memo = serde_json::to_string(&decision).unwrap_or_default();
                let mut pipe = redis::pipe();
                pipe.cmd("SET")
                    .arg(memo_key)
                    .arg(&memo)
                    .arg("EX")
                    .arg(MEMO_TTL_SECS)
                    .ignore();
                if let Some(cost) = decision.cost_usd {
                    crate::bus::spend::add_to(
                        &mut pipe,
                        cost,
                        "orchestrator",
                        metrics_model(&decision),
                    );
                }
                record_metrics(&decision);
                if let Err(err) = pipe.query_async::<()>(conn).await {
                    // The spend part may be what failed (a key of another type): the memo
                    // alone decides.
                    tracing::warn!("storing the decision memo and its spend: {err:#}");
                    let stored: Result<(), _> = redis::cmd("SET")
                        .arg(memo_key)
                        .arg(&memo)
                        .arg("EX")
                        .arg(MEMO_TTL_SECS)
                        .query_async(conn)
                        .await;
                    stored.map_err(|e| {
                        JobError::Transient(
                            anyhow::Error::new(e).context("storing the decision memo"),
                        )
                    })?;
                }
                Ok(decision)
            }
            Outcome::Failed { decision, error } => {
                if let Err(err) = self.decision_log.append(&decision) {
                    tracing::warn!("decision log: {err:#}");
                }
                match error {
                    // A model that answered without usable text: the decision is
                    // no_action with the reason, handled like any other.
                    crate::llm::LlmError::Protocol(_) => Ok(decision),
                    // Every message would fail the same way until the account is paid:
                    // pause the role, keep this message queued.
                    ref blocked if blocked.is_account_blocked() => {
                        if let Err(err) = self.gate.block_account(conn, &blocked.to_string()).await
                        {
                            tracing::warn!("pausing for the account: {err:#}");
                        }
                        Err(JobError::Paused(error.into()))
                    }
                    // Only a request the API calls malformed is dead-lettered at
                    // once; an outage, a rate limit or a revoked key is retried up
                    // to the delivery cap, so fixing the key in time loses nothing.
                    crate::llm::LlmError::Api {
                        status: 400 | 413, ..
                    } => Err(JobError::Permanent(error.into())),
                    other => {
                        if decision.fallback.as_deref() == Some("timeout") {
                            self.still_thinking_once(job, &decision, conn).await;
                        }
                        Err(JobError::Transient(other.into()))
                    }
                }
            }
        }
    }

    /// The PRD's "still thinking" reply, sent once per message however often it is retried.
    async fn still_thinking_once(&self, job: &Job, decision: &Decision, conn: &mut Conn) {
        let notified = self.keys.notified(&self.group, &job.identity);
        // Only to the person who asked: a message without a channel gets no notice in the
        // report channel.
        let asker_only = Target {
            report_channel: None,
            ..self.target.clone()
        };
        // The reply alone: whatever else the message's plan holds (a worklist line it finishes)
        // waits for the real decision.
        let replies_only = |mut plan: dispatch::Plan| {
            plan.effects
                .retain(|e| matches!(e, crate::bus::effects::Effect::Publish { .. }));
            plan
        };
        match dispatch::plan(decision, &asker_only, None)
            .await
            .map(replies_only)
        {
            Ok(mut plan) if !plan.effects.is_empty() => {
                // What the asker hears if the message is finally given up: kept with the
                // notice, sent by the listener that dead-letters it.
                let mut follow_up = decision.clone();
                follow_up.payload = serde_json::Map::from_iter([(
                    "content".to_string(),
                    json!(crate::orchestrator::think::GAVE_UP),
                )]);
                if let Ok(Some(effect)) = dispatch::plan(&follow_up, &asker_only, None)
                    .await
                    .map(|p| replies_only(p).effects.into_iter().next())
                {
                    plan.effects.push(crate::bus::effects::Effect::SetString {
                        key: self.keys.last_word(&self.group, &job.identity),
                        value: serde_json::to_string(&effect).unwrap_or_default(),
                        expire_secs: Some(LAST_WORD_TTL_SECS),
                    });
                }
                if let Err(err) = effects::commit(conn, &plan.effects, Some(&notified), None).await
                {
                    tracing::warn!("sending the still-thinking reply failed: {err:#}");
                }
            }
            Ok(_) => tracing::info!(
                "{}: no reply channel for the still-thinking notice",
                job.identity
            ),
            Err(err) => tracing::warn!("{err:#}"),
        }
    }
}

/// The model a decision's tokens and spend are counted under (the provider when unnamed).
fn metrics_model(decision: &crate::orchestrator::decision::Decision) -> &str {
    if decision.model.is_empty() {
        decision.provider.as_str()
    } else {
        decision.model.as_str()
    }
}

/// A fresh decision's time, tokens and cost in the process's metrics.
fn record_metrics(decision: &crate::orchestrator::decision::Decision) {
    use crate::support::metrics;
    metrics::decision_seconds(decision.elapsed_ms as f64 / 1000.0);
    let model = metrics_model(decision);
    let u = &decision.usage;
    for (kind, n) in [
        ("input", u.input_tokens),
        ("output", u.output_tokens),
        ("cache_write", u.cache_creation_input_tokens),
        ("cache_read", u.cache_read_input_tokens),
    ] {
        metrics::tokens("orchestrator", model, kind, n);
    }
    metrics::cost("orchestrator", model, decision.cost_usd.unwrap_or(0.0));
}
