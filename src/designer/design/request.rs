//! The design request: an idea from the command line or an `experiment_request` from the
//! Orchestrator, checked (hostile ids, missing text) and given an id.

use serde::Serialize;
use serde_json::{Map, Value, json};

/// How the spec is produced.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Mode {
    /// One coding-agent call with the design prompt.
    Single,
    /// The PRD's six-task RALPH loop.
    Ralph,
}

/// How the mode of a request is chosen when the request does not say.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ModePolicy {
    /// RALPH for `high`/`urgent` priority or a request marked complex; single-shot otherwise.
    Auto,
    /// Always single-shot.
    Single,
    /// Always RALPH.
    Ralph,
}

/// Who produces the spec.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Engine {
    /// The Claude Code CLI.
    Claude,
    /// One Messages API call (hosts without Claude Code).
    Api,
}

/// A design request, from `--idea` or an `experiment_request`.
#[derive(Debug, Clone, Serialize)]
pub struct Request {
    /// The idea: text or the Orchestrator's payload object.
    pub idea: Value,
    /// Context from the Orchestrator.
    pub context: String,
    /// Priority.
    pub priority: String,
    /// The request id (validated, or generated).
    pub request_id: String,
    /// The Orchestrator's reasoning.
    pub orchestrator_reasoning: String,
    /// The Orchestrator's brief (`prompts/dispatch.txt`), when it wrote one.
    pub brief: String,
    /// Past experiments like this one, as the Orchestrator ranked them.
    pub similar_experiments: Vec<Value>,
    /// Learnings that bear on the idea, as the Orchestrator ranked them.
    pub relevant_learnings: Vec<Value>,
    /// The mode the Orchestrator asked for (`mode: "single" | "ralph"`).
    pub mode: Option<Mode>,
    /// The Orchestrator marked the request complex (`complex: true`).
    pub complex: bool,
    /// The original message, whole.
    pub original: Map<String, Value>,
}

/// The most items of each ranked list the designer's prompt shows.
const MAX_LISTED: usize = 10;
impl Request {
    /// From an `experiment_request` message. Errors name what is wrong.
    pub fn from_message(msg: &Map<String, Value>) -> Result<Request, String> {
        if let Some(t) = msg.get("type").and_then(Value::as_str)
            && t != "experiment_request"
        {
            return Err(format!(
                "expected an experiment_request, got type {:?}",
                crate::support::msg::preview(t, 40)
            ));
        }
        let idea = match msg.get("idea") {
            Some(Value::String(s)) if !s.trim().is_empty() => Value::String(s.clone()),
            Some(Value::Object(o)) if !o.is_empty() => Value::Object(o.clone()),
            Some(Value::Null) | None => return Err("the request has no idea".into()),
            Some(Value::String(_)) | Some(Value::Object(_)) => {
                return Err("the request's idea is empty".into());
            }
            Some(other) => {
                return Err(format!(
                    "the request's idea is {}, not text or an object",
                    crate::support::io::json_kind(other)
                ));
            }
        };
        let request_id = match msg.get("request_id").and_then(Value::as_str) {
            Some(id) if crate::support::msg::is_safe_id(id) && id.len() <= 64 => id.to_string(),
            Some(id) => {
                return Err(format!(
                    "invalid request_id {:?}",
                    crate::support::msg::preview(id, 40)
                ));
            }
            None => format!("req_{}", crate::support::msg::new_msg_id()),
        };
        let text = |k: &str| match msg.get(k) {
            Some(Value::String(s)) => s.clone(),
            Some(Value::Null) | None => String::new(),
            Some(other) => other.to_string(),
        };
        let mode = match msg.get("mode") {
            None | Some(Value::Null) => None,
            Some(Value::String(m)) if m == "single" => Some(Mode::Single),
            Some(Value::String(m)) if m == "ralph" => Some(Mode::Ralph),
            Some(other) => {
                return Err(format!(
                    "the request's mode is {}, not \"single\" or \"ralph\"",
                    crate::support::msg::preview(&other.to_string(), 40)
                ));
            }
        };
        let complex = msg.get("complex").and_then(Value::as_bool).unwrap_or(false)
            || matches!(&idea, Value::Object(o) if o.get("complex").and_then(Value::as_bool) == Some(true));
        Ok(Request {
            mode,
            complex,
            idea,
            context: text("context"),
            priority: msg
                .get("priority")
                .and_then(Value::as_str)
                .unwrap_or("medium")
                .to_string(),
            request_id,
            orchestrator_reasoning: text("orchestrator_reasoning"),
            brief: text("brief"),
            similar_experiments: list(msg, "similar_experiments"),
            relevant_learnings: list(msg, "relevant_learnings"),
            original: msg.clone(),
        })
    }

    /// From `--idea TEXT`.
    pub fn from_idea(idea: &str, context: &str) -> Result<Request, String> {
        if idea.trim().is_empty() {
            return Err("the idea is empty".into());
        }
        let mut msg = Map::new();
        msg.insert("type".into(), json!("experiment_request"));
        msg.insert("idea".into(), json!(idea));
        msg.insert("context".into(), json!(context));
        Request::from_message(&msg)
    }

    /// The RALPH path is asked for by `spawn_ralph` or a string idea naming RALPH.
    /// The mode this request is designed in: what it asks for; else the PRD's RALPH markers
    /// (`spawn_ralph`, "RALPH" in the idea); else the policy.
    pub fn mode_under(&self, policy: ModePolicy) -> Mode {
        if let Some(mode) = self.mode {
            return mode;
        }
        if self.wants_ralph() {
            return Mode::Ralph;
        }
        match policy {
            ModePolicy::Single => Mode::Single,
            ModePolicy::Ralph => Mode::Ralph,
            ModePolicy::Auto => {
                let weighty = matches!(
                    self.priority.to_ascii_lowercase().as_str(),
                    "high" | "urgent" | "critical"
                );
                if weighty || self.complex {
                    Mode::Ralph
                } else {
                    Mode::Single
                }
            }
        }
    }

    /// The PRD's own RALPH markers: `spawn_ralph: true` in an idea object, or "RALPH" in its text.
    pub fn wants_ralph(&self) -> bool {
        match &self.idea {
            Value::Object(o) => o
                .get("spawn_ralph")
                .and_then(Value::as_bool)
                .unwrap_or(false),
            Value::String(s) => s.contains("RALPH"),
            _ => false,
        }
    }

    /// What the Orchestrator said about the idea: its brief, else its context.
    pub(super) fn context_text(&self) -> String {
        [&self.brief, &self.context]
            .into_iter()
            .find(|t| !t.trim().is_empty())
            .cloned()
            .unwrap_or_else(|| "(none)".to_string())
    }

    /// The similar past experiments, a line each.
    pub(super) fn similar_text(&self) -> String {
        listed(&self.similar_experiments, "(none given)", |e| {
            let mut line = format!(
                "- {} ({}): {}",
                field(e, "experiment_id"),
                field(e, "state"),
                field(e, "hypothesis")
            );
            if let Some(Value::Object(results)) = e.get("results")
                && !results.is_empty()
            {
                let results: Vec<String> = results
                    .iter()
                    .map(|(k, v)| {
                        format!("{k}={}", v.as_str().map_or(v.to_string(), str::to_string))
                    })
                    .collect();
                line.push_str(&format!(". Results: {}", results.join(", ")));
            }
            let reason = field(e, "archived_reason");
            if !reason.is_empty() {
                line.push_str(&format!(". Archived because: {reason}"));
            }
            line
        })
    }

    /// The relevant learnings, a line each.
    pub(super) fn learnings_text(&self) -> String {
        listed(&self.relevant_learnings, "(none given)", |l| match l {
            Value::String(s) => format!("- {s}"),
            _ => format!("- ({}) {}", field(l, "source"), field(l, "text")),
        })
    }

    pub(super) fn idea_text(&self) -> String {
        match &self.idea {
            Value::String(s) => s.clone(),
            other => serde_json::to_string_pretty(other).unwrap_or_default(),
        }
    }

    /// The original run's `requests/current.md`, kept in the work dir.
    pub(super) fn as_markdown(&self) -> String {
        format!(
            "# Experiment Request\n\n**Priority:** {}\n**Received:** {}\n**Request:** {}\n\n## Idea/Goal\n\n```json\n{}\n```\n\n## Context\n\n{}\n\n## Orchestrator Reasoning\n\n{}\n\n## Similar Past Experiments\n\n{}\n\n## Relevant Learnings\n\n{}\n\n---\n*Design this experiment; write the spec as YAML.*\n",
            self.priority,
            crate::support::msg::now_iso_seconds(),
            self.request_id,
            serde_json::to_string_pretty(&self.idea).unwrap_or_default(),
            self.context_text(),
            self.orchestrator_reasoning,
            self.similar_text(),
            self.learnings_text()
        )
    }
}

/// An array field of the message (anything else is no list).
fn list(msg: &Map<String, Value>, key: &str) -> Vec<Value> {
    match msg.get(key) {
        Some(Value::Array(items)) => items.iter().take(MAX_LISTED).cloned().collect(),
        _ => Vec::new(),
    }
}

/// A text field of a list item, on one line and bounded (the items come over the bus).
fn field(item: &Value, key: &str) -> String {
    match item.get(key) {
        Some(Value::String(s)) => crate::support::msg::preview(s.trim(), 400),
        Some(Value::Null) | None => String::new(),
        Some(other) => crate::support::msg::preview(&other.to_string(), 400),
    }
}

fn listed(items: &[Value], none: &str, line: impl Fn(&Value) -> String) -> String {
    if items.is_empty() {
        return none.to_string();
    }
    items
        .iter()
        .map(|i| crate::support::msg::preview(&line(i), 700))
        .collect::<Vec<_>>()
        .join("\n")
}
