//! The Orchestrator's decision step: context + prompt → model → decision, with
//! the PRD's fallbacks (timeout → "still thinking" reply; API error →
//! `no_action`) and rules that answer status notices without a model call.

use std::time::Instant;

use serde_json::{Map, Value, json};

use crate::context::loader::Context;
use crate::context::prompt::{self, Prompts};
use crate::llm::{LlmError, ModelRequest, ProgressFn, Provider, ThinkingMode};
use crate::orchestrator::decision::{Action, Decision, Priority};
use crate::support::config::Config;

/// The PRD's reply when thinking takes too long.
pub const STILL_THINKING: &str = "I'm still thinking about this. Will update soon.";
/// The follow-up to a "still thinking" message that was finally given up.
pub const GAVE_UP: &str = "Update: I could not finish thinking about this. I tried several times and the model kept failing or timing out, so I have set the message aside for an operator (it is in the dead-letter queue and can be retried with `fullsend dlq requeue`). Nothing will be done about it until then; if it is urgent, please ask again.";

/// A message this many hops from its origin is not acted on: far deeper than any real chain
/// (escalation → request → experiment_ready → reply is 3), shallow enough to stop a loop
/// before it costs much.
pub const MAX_CAUSATION_DEPTH: u64 = 12;

/// Message types that only report progress: answered by a rule, never the model.
pub const DEFAULT_STATUS_TYPES: &[&str] = &[
    "fullsend_started",
    "design_progress",
    "builder_started",
    "design_started",
    "learning_recorded",
    "experiment_archived",
    "roundtable_request",
];

/// Everything needed to make decisions.
#[derive(Debug, Clone)]
pub struct Orchestrator {
    /// The model provider.
    pub provider: Provider,
    /// Prompt templates.
    pub prompts: Prompts,
    /// Model id.
    pub model: String,
    thinking: ThinkingMode,
    thinking_budget: u32,
    effort: Option<String>,
    max_tokens: u32,
    timeout: std::time::Duration,
    max_retries: u32,
    prompt_budget: usize,
    status_types: Vec<String>,
    /// The context blocks of the last prompt, reused while the context is unchanged.
    prompt_cache: prompt::PromptCache,
}

/// How a decision attempt ended.
#[derive(Debug)]
pub enum Outcome {
    /// A decision (from the model, or by a status rule).
    Decided(Decision),
    /// The model timed out or failed; `decision` is the PRD's fallback.
    Failed {
        /// The fallback decision.
        decision: Decision,
        /// What went wrong.
        error: LlmError,
    },
}

impl Orchestrator {
    /// Builds from configuration; `provider` and `model` override it.
    pub fn from_config(
        cfg: &Config,
        provider: Option<&str>,
        model: Option<&str>,
    ) -> anyhow::Result<Self> {
        let provider_spec = provider
            .map(str::to_string)
            .unwrap_or_else(|| cfg.orchestrator_provider());
        let provider = Provider::from_spec(&provider_spec, cfg)?;
        let status_types = std::env::var("FULLSEND_STATUS_TYPES")
            .ok()
            .map(|v| {
                v.split(',')
                    .map(|s| s.trim().to_string())
                    .filter(|s| !s.is_empty())
                    .collect()
            })
            .unwrap_or_else(|| {
                DEFAULT_STATUS_TYPES
                    .iter()
                    .map(|s| (*s).to_string())
                    .collect()
            });
        Ok(Orchestrator {
            provider,
            prompts: Prompts::new(cfg.prompts_dir()),
            model: model
                .map(str::to_string)
                .unwrap_or_else(|| cfg.orchestrator_model()),
            thinking: crate::llm::ThinkingMode::parse(cfg.thinking_mode())?,
            thinking_budget: cfg.thinking_budget()?,
            effort: cfg.effort(),
            max_tokens: cfg.max_tokens()?,
            timeout: cfg.thinking_timeout()?,
            max_retries: cfg.api_max_retries()?,
            prompt_budget: cfg.prompt_budget_tokens()?,
            status_types,
            prompt_cache: prompt::PromptCache::default(),
        })
    }

    /// Overrides the timeout (e.g. `--timeout`).
    pub fn set_timeout(&mut self, timeout: std::time::Duration) {
        self.timeout = timeout;
    }

    /// True when `msg` is a status notice that needs no model call.
    pub fn is_status_notice(&self, msg: &Map<String, Value>) -> bool {
        msg.get("type")
            .and_then(Value::as_str)
            .is_some_and(|t| self.status_types.iter().any(|s| s == t))
    }

    /// The prompt `decide` would send for `msg` (fitted to the budget).
    pub fn prompt(
        &self,
        msg: &Map<String, Value>,
        ctx: &Context,
    ) -> anyhow::Result<prompt::BuiltPrompt> {
        let blocks = self
            .prompt_cache
            .blocks(&self.prompts, ctx, self.prompt_budget)?;
        prompt::prompt_with(&self.prompts, &blocks, msg)
    }

    /// Renders every prompt a decision may need (the outcome part and the brief included) with
    /// an empty context, so that a broken override stops a listener at start instead of
    /// failing each message it applies to.
    pub fn check_prompts(&self) -> anyhow::Result<()> {
        let outcome = Map::from_iter([("type".to_string(), json!("metric_alert"))]);
        self.prompt(&outcome, &Context::default())?;
        super::brief::build(&Map::new(), "", "", &Context::default(), &self.prompts)?;
        Ok(())
    }

    /// Decides what to do about `msg`.
    pub async fn decide(
        &self,
        msg: &Map<String, Value>,
        ctx: &Context,
        progress: Option<&ProgressFn>,
    ) -> anyhow::Result<Outcome> {
        let started = Instant::now();
        let depth = crate::support::msg::causation_depth(msg);
        if depth >= MAX_CAUSATION_DEPTH {
            tracing::error!(
                "a message {depth} hops from its origin: stopping the chain here (limit {MAX_CAUSATION_DEPTH})"
            );
            let mut d = Decision::no_action(
                msg.clone(),
                format!(
                    "this message is {depth} hops from the message that started its chain (the limit is {MAX_CAUSATION_DEPTH}): a loop between fullsend's own messages is stopped here, without a model call"
                ),
            );
            d.fallback = Some("causation_limit".into());
            d.provider = "rule".into();
            return Ok(Outcome::Decided(d));
        }
        if self.is_status_notice(msg) {
            let kind = msg.get("type").and_then(Value::as_str).unwrap_or("");
            let mut d = Decision::no_action(
                msg.clone(),
                format!("{kind} is a status notice; handled by rule, no model call"),
            );
            d.fallback = Some("status_rule".into());
            d.provider = "rule".into();
            // Work that started is worth a line in the worklist's Active section.
            // One line, added against the worklist as it is when the decision is carried out:
            // a whole new worklist built from this copy would drop lines others add meanwhile.
            if let Some(note) = progress_note(msg) {
                d.action = Action::UpdateWorklist;
                d.priority = Priority::Low;
                d.payload = Map::from_iter([("note_line".to_string(), note)]);
            } else if let Some(line) =
                started_line(msg).filter(|l| !ctx.worklist.lines().any(|x| x == l))
            {
                d.action = Action::UpdateWorklist;
                d.priority = Priority::Low;
                d.payload = Map::from_iter([("add_line".to_string(), json!(line))]);
            }
            return Ok(Outcome::Decided(d));
        }
        let built = self.prompt(msg, ctx)?;
        if !built.omitted.is_empty() {
            tracing::info!(
                "prompt cut to fit {} tokens: {}",
                self.prompt_budget,
                built.omitted.join("; ")
            );
        }
        let request = ModelRequest {
            model: self.model.clone(),
            system: built.system,
            user: built.user,
            max_tokens: self.max_tokens,
            thinking: self.thinking,
            thinking_budget: self.thinking_budget,
            effort: self.effort.clone(),
            timeout: self.timeout,
            max_retries: self.max_retries,
        };
        let result = self.provider.complete(&request, progress).await;
        let elapsed_ms = u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX);
        Ok(match result {
            Ok(response) => {
                let mut d = Decision::from_model_text(&response.text, msg.clone());
                d.provider = response.provider;
                d.model = if response.model.is_empty() {
                    self.model.clone()
                } else {
                    response.model
                };
                d.usage = response.usage;
                d.cost_usd = crate::llm::price::cost(&d.model, &d.usage);
                d.thinking = response.thinking;
                d.elapsed_ms = elapsed_ms;
                if d.action == Action::UpdateWorklist
                    || d.actions.iter().any(|s| s.action == Action::UpdateWorklist)
                {
                    d.worklist_version = Some(crate::support::files::version_of(&ctx.worklist));
                }
                super::brief::attach(&mut d, ctx, &self.prompts)?;
                if d.action == Action::NoAction && d.parse_note.is_some() && d.raw.is_none() {
                    d.raw = Some(crate::support::msg::preview(&response.text, 2000));
                }
                Outcome::Decided(d)
            }
            Err(error) => {
                let mut d = match &error {
                    LlmError::Timeout(_) => {
                        let mut d = Decision::no_action(
                            msg.clone(),
                            format!("{error}; sent the fallback reply"),
                        );
                        d.action = Action::RespondToDiscord;
                        d.priority = Priority::Medium;
                        d.payload =
                            Map::from_iter([("content".to_string(), json!(STILL_THINKING))]);
                        d.fallback = Some("timeout".into());
                        d
                    }
                    other => {
                        let mut d =
                            Decision::no_action(msg.clone(), format!("model call failed: {other}"));
                        d.payload = Map::from_iter([
                            ("error_type".to_string(), json!(other.kind_name())),
                            (
                                "error_message".to_string(),
                                json!(crate::support::msg::preview(&other.to_string(), 500)),
                            ),
                        ]);
                        d.fallback = Some("model_error".into());
                        d
                    }
                };
                d.provider = self.provider.name();
                d.model = self.model.clone();
                d.elapsed_ms = elapsed_ms;
                Outcome::Failed { decision: d, error }
            }
        })
    }
}

/// The worklist's title, for a worklist that is empty.
pub const WORKLIST_TITLE: &str = "# Fullsend Worklist";
/// The section started work goes to.
pub const ACTIVE_SECTION: &str = "## Active (In Progress)";

/// The worklist line that started work earns (`builder_started`, `fullsend_started`,
/// `design_started`), or None for other messages.
pub fn started_line(msg: &Map<String, Value>) -> Option<String> {
    let text = |k: &str| {
        msg.get(k)
            .and_then(Value::as_str)
            .map(|s| crate::support::msg::preview(s, 80))
            .filter(|s| !s.is_empty())
    };
    match msg.get("type").and_then(Value::as_str)? {
        "builder_started" => Some(format!(
            "- [ ] **{}** - Builder working on it ({})",
            text("tool_name")?,
            text("request_id").unwrap_or_else(|| "no request id".into())
        )),
        "fullsend_started" | "design_started" => Some(format!(
            "- [ ] **Experiment design {}** - FULLSEND designing",
            text("request_id").or_else(|| text("experiment_id"))?
        )),
        _ => None,
    }
}

/// The worklist note of a `design_progress` message: `{"keys": [request id], "note": "RALPH
/// 3/6 tasks done, last: …"}`, or None for other messages.
pub fn progress_note(msg: &Map<String, Value>) -> Option<Value> {
    if msg.get("type").and_then(Value::as_str)? != "design_progress" {
        return None;
    }
    let id = msg.get("request_id").and_then(Value::as_str)?;
    let count = |k: &str| msg.get(k).and_then(Value::as_u64).unwrap_or(0);
    let mut note = format!(
        "RALPH {}/{} tasks done",
        count("tasks_done"),
        count("tasks_total")
    );
    if let Some(title) = msg.get("task_title").and_then(Value::as_str) {
        note.push_str(&format!(
            ", last: {}",
            crate::support::msg::preview(title, 60)
        ));
    }
    Some(json!({"keys": [crate::support::msg::preview(id, 80)], "note": note}))
}

/// Where finished work goes in the worklist.
pub const COMPLETED_SECTION: &str = "## Completed This Week";

/// The ids or names whose Active worklist lines `msg` finishes, and the note they get: a
/// design that ended (`experiment_ready`, `design_failed`), a tool that is done
/// (`tool_complete`), a direct run that ended. None for other messages.
pub fn finished_work(msg: &Map<String, Value>) -> Option<(Vec<String>, String)> {
    let text = |k: &str| {
        msg.get(k)
            .and_then(Value::as_str)
            .map(|s| crate::support::msg::preview(s.trim(), 80))
            .filter(|s| !s.is_empty())
    };
    let ids = |names: &[&str]| -> Vec<String> { names.iter().filter_map(|n| text(n)).collect() };
    let (keys, note) = match msg.get("type").and_then(Value::as_str)? {
        "experiment_ready" => (
            ids(&["request_id", "experiment_id"]),
            match (text("experiment_id"), text("scheduled_for")) {
                (Some(id), Some(at)) => format!("designed as {id}, first run {at}"),
                (Some(id), None) => format!("designed as {id}"),
                _ => "designed".to_string(),
            },
        ),
        "design_failed" => (
            ids(&["request_id", "experiment_id"]),
            format!(
                "design failed: {}",
                text("reason")
                    .or_else(|| text("error"))
                    .unwrap_or_else(|| "no reason given".into())
            ),
        ),
        "tool_complete" => (
            ids(&["tool_name", "request_id"]),
            format!(
                "tool {}",
                text("status").unwrap_or_else(|| "complete".into())
            ),
        ),
        kind @ ("direct_run_complete" | "direct_run_failed") => (
            ids(&["experiment_id", "request_id"]),
            if kind == "direct_run_complete" {
                "direct run complete".to_string()
            } else {
                "direct run failed".to_string()
            },
        ),
        _ => return None,
    };
    (!keys.is_empty()).then_some((keys, note))
}

/// `worklist` with the started-work line of `msg` in its Active section, or None when there is
/// nothing to add (the preview `think` shows; the listener adds the line under the file's lock).
pub fn worklist_with_started(worklist: &str, msg: &Map<String, Value>) -> Option<String> {
    let line = started_line(msg)?;
    crate::support::files::add_to_section(worklist, WORKLIST_TITLE, ACTIVE_SECTION, &line)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn msg(v: Value) -> Map<String, Value> {
        match v {
            Value::Object(m) => m,
            _ => Map::new(),
        }
    }

    #[test]
    fn started_work_goes_under_active_once() {
        let worklist = "# Fullsend Worklist\n\n## Active (In Progress)\n- [ ] **GitHub stargazer campaign**\n\n## Ready (Prioritized Queue)\n1. YC founders\n";
        let m =
            msg(json!({"type": "builder_started", "tool_name": "hn_scraper", "request_id": "r1"}));
        let updated = worklist_with_started(worklist, &m).expect("a line is added");
        assert!(updated.contains("**GitHub stargazer campaign**\n- [ ] **hn_scraper** - Builder working on it (r1)\n\n## Ready"), "{updated}");
        assert_eq!(worklist_with_started(&updated, &m), None, "idempotent");
        let m = msg(json!({"type": "fullsend_started", "request_id": "req_9"}));
        assert!(
            worklist_with_started("", &m)
                .expect("line")
                .contains("## Active (In Progress)\n- [ ] **Experiment design req_9**")
        );
        assert_eq!(
            worklist_with_started(worklist, &msg(json!({"type": "learning_recorded"}))),
            None
        );
    }
}
