//! `run_direct`: the PRD's "can run simple experiments directly". The agent runs once on an
//! idea or a designed experiment, with its skills and the tools directory (Bash only where the
//! operator allowed a narrow rule), and answers a structured verdict. The result goes back to
//! the Orchestrator as `direct_run_complete` or `direct_run_failed`, with its learnings recorded.

use std::collections::BTreeMap;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};

use crate::bus::effects::{Effect, publish};
use crate::designer::design::{DesignContext, Designer};
use crate::designer::spawn;

/// A direct run asked for: an idea, an experiment, or both.
#[derive(Debug, Clone)]
pub struct DirectRun {
    /// What to do, in words.
    pub idea: Option<String>,
    /// The designed experiment to run, when there is one.
    pub experiment_id: Option<String>,
    /// The request this run answers (generated when absent).
    pub request_id: String,
}

impl DirectRun {
    /// From a `run_direct` message; errors name what is wrong.
    pub fn from_message(msg: &Map<String, Value>) -> Result<DirectRun, String> {
        let text = |k: &str| crate::support::msg::text_field(msg, k);
        let idea = text("idea").or_else(|| text("task"));
        let experiment_id = text("experiment_id");
        if let Some(id) = &experiment_id
            && !crate::support::msg::valid_key_id(id)
        {
            return Err(format!(
                "invalid experiment_id {:?}",
                crate::support::msg::preview(id, 40)
            ));
        }
        if idea.is_none() && experiment_id.is_none() {
            return Err("run_direct needs an idea or an experiment_id".into());
        }
        let request_id = match text("request_id") {
            Some(id) if crate::support::msg::is_safe_id(id.as_str()) && id.len() <= 64 => id,
            Some(id) => {
                return Err(format!(
                    "invalid request_id {:?}",
                    crate::support::msg::preview(&id, 40)
                ));
            }
            None => format!("direct_{}", crate::support::msg::new_msg_id()),
        };
        Ok(DirectRun {
            idea,
            experiment_id,
            request_id,
        })
    }
}

/// What a direct run came to (memoised by the listener, so a redelivery pays nothing twice).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct DirectResult {
    /// The agent finished and said `success`.
    pub ok: bool,
    /// `success`, `failure`, or `error` when the call itself failed.
    pub outcome: String,
    /// The agent's summary, or why the call failed.
    pub summary: String,
    /// What the call cost.
    pub cost_usd: f64,
    /// Tactical learnings from the verdict.
    pub learnings: Vec<String>,
    /// Metrics the agent reported.
    pub metrics: Value,
    /// The agent's session.
    pub session_id: Option<String>,
    /// The kept work dir.
    pub work_dir: PathBuf,
    /// Worth retrying later (a 429/529/5xx, a timeout, the day's limit).
    #[serde(skip)]
    pub transient: bool,
}

/// The verdict a direct run is asked for.
fn verdict_schema() -> Value {
    json!({
        "type": "object",
        "properties": {
            "outcome": {"type": "string", "enum": ["success", "failure"]},
            "summary": {"type": "string"},
            "learnings": {"type": "array", "items": {"type": "string"}, "maxItems": 10},
            "metrics": {"type": "object"}
        },
        "required": ["outcome", "summary"],
        "additionalProperties": false
    })
}

impl Designer {
    /// Runs the agent once on `run` (`experiment` is the stored spec, when there is one).
    pub async fn run_direct(
        &self,
        run: &DirectRun,
        experiment: Option<String>,
        ctx: &DesignContext,
        cancel: tokio::sync::watch::Receiver<bool>,
    ) -> anyhow::Result<DirectResult> {
        let work_dir = self.fresh_work_dir(&run.request_id)?;
        let vars = BTreeMap::from([
            (
                "task",
                run.idea.clone().unwrap_or_else(|| {
                    "Run the experiment below once, now, and report what came of it.".into()
                }),
            ),
            (
                "experiment",
                experiment.unwrap_or_else(|| "(none: work from the task alone)".into()),
            ),
            ("product_context", ctx.product.clone()),
            ("available_tools", ctx.tools.clone()),
        ]);
        let prompt = self.prompts.render("direct_run.txt", &vars)?;
        let mut result = DirectResult {
            ok: false,
            outcome: "error".into(),
            summary: String::new(),
            cost_usd: 0.0,
            learnings: Vec::new(),
            metrics: Value::Null,
            session_id: None,
            work_dir: work_dir.clone(),
            transient: false,
        };
        let mut scoped = self.run_for(
            &run.request_id,
            run.experiment_id.clone(),
            &work_dir,
            crate::designer::design::Mode::Single,
        );
        scoped.scope.experiment_id = run.experiment_id.clone();
        let mut opts = match self.agent_options(&scoped, "direct") {
            Ok(o) => o,
            Err(e) => {
                result.summary = e;
                return Ok(result);
            }
        };
        opts.json_schema = Some(verdict_schema());
        match scoped.purse.left().await {
            Ok(Some(cap)) => {
                opts.max_budget_usd = Some(opts.max_budget_usd.map_or(cap, |m| m.min(cap)));
            }
            Ok(None) => {}
            Err(exhausted) => {
                result.transient = exhausted.daily;
                result.summary = exhausted.reason;
                return Ok(result);
            }
        }
        let r = spawn::spawn(&opts, &prompt, cancel).await?;
        scoped
            .purse
            .record(r.total_cost_usd, spawn::billed_model(&opts))
            .await;
        result.cost_usd = r.total_cost_usd;
        result.session_id = r.session_id.clone();
        result.transient = r.timed_out
            || r.stalled
            || r.api_error_status
                .is_some_and(|s| matches!(s, 408 | 409 | 429) || s >= 500);
        if !r.ok {
            result.summary = r.error.unwrap_or_else(|| "the agent failed".into());
            return Ok(result);
        }
        let verdict = r.structured_output.unwrap_or(Value::Null);
        let text = |k: &str| verdict.get(k).and_then(Value::as_str).map(str::to_string);
        result.outcome = text("outcome").unwrap_or_else(|| "failure".into());
        result.ok = result.outcome == "success";
        result.summary =
            text("summary").unwrap_or_else(|| crate::support::msg::preview(r.result.trim(), 2000));
        result.learnings = verdict
            .get("learnings")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .filter_map(Value::as_str)
            .map(|l| crate::support::msg::preview(l.trim(), 1000))
            .filter(|l| !l.is_empty())
            .take(10)
            .collect();
        result.metrics = verdict.get("metrics").cloned().unwrap_or(Value::Null);
        Ok(result)
    }
}

/// The commit of a finished direct run: its learnings, and the report to the Orchestrator.
pub fn direct_effects(
    run: &DirectRun,
    result: &DirectResult,
    to_orchestrator: &str,
    cause: &Map<String, Value>,
) -> Vec<Effect> {
    let mut effects = Vec::new();
    for learning in &result.learnings {
        effects.extend(crate::context::learn::tactical_effects(
            learning,
            run.experiment_id.as_deref(),
            "fullsend_direct_run",
        ));
    }
    let kind = if result.ok {
        "direct_run_complete"
    } else {
        "direct_run_failed"
    };
    let msg = json!({
        "type": kind,
        "source": "fullsend_listener",
        "request_id": run.request_id,
        "experiment_id": run.experiment_id,
        "idea": run.idea,
        "outcome": result.outcome,
        "summary": result.summary,
        "learnings": result.learnings,
        "metrics": result.metrics,
        "cost_usd": result.cost_usd,
        "session_id": result.session_id,
        "work_dir": result.work_dir,
    });
    if let Value::Object(m) = msg {
        effects.push(publish(to_orchestrator, m, cause));
    }
    effects
}
