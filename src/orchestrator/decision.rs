//! The Orchestrator's decision: parsing a model's free-form answer into one of
//! the eight actions, with the original's normalisation rules. Pure, no I/O.

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::llm::Usage;

/// What the Orchestrator decided to do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Action {
    /// Send an experiment request to FULLSEND.
    DispatchToFullsend,
    /// Send a tool PRD to the Builder.
    DispatchToBuilder,
    /// Reply on Discord.
    RespondToDiscord,
    /// Replace worklist.md.
    UpdateWorklist,
    /// Append to learnings.md.
    RecordLearning,
    /// Archive an experiment.
    KillExperiment,
    /// Start a roundtable debate.
    InitiateRoundtable,
    /// Stop a ready or running experiment's schedule for now.
    PauseExperiment,
    /// Put a paused experiment back on its schedule.
    ResumeExperiment,
    /// Ask the person (or the report channel) for what is missing, and keep the question in
    /// the worklist.
    AskForContext,
    /// Do nothing.
    NoAction,
}

impl Action {
    /// Every action, in documentation order.
    pub const ALL: [Action; 11] = [
        Action::DispatchToFullsend,
        Action::DispatchToBuilder,
        Action::RespondToDiscord,
        Action::UpdateWorklist,
        Action::RecordLearning,
        Action::KillExperiment,
        Action::InitiateRoundtable,
        Action::PauseExperiment,
        Action::ResumeExperiment,
        Action::AskForContext,
        Action::NoAction,
    ];

    /// The wire name.
    pub fn as_str(self) -> &'static str {
        match self {
            Action::DispatchToFullsend => "dispatch_to_fullsend",
            Action::DispatchToBuilder => "dispatch_to_builder",
            Action::RespondToDiscord => "respond_to_discord",
            Action::UpdateWorklist => "update_worklist",
            Action::RecordLearning => "record_learning",
            Action::KillExperiment => "kill_experiment",
            Action::InitiateRoundtable => "initiate_roundtable",
            Action::PauseExperiment => "pause_experiment",
            Action::ResumeExperiment => "resume_experiment",
            Action::AskForContext => "ask_for_context",
            Action::NoAction => "no_action",
        }
    }

    fn parse(text: &str) -> Option<Action> {
        let t = text.trim().to_ascii_lowercase();
        Action::ALL.into_iter().find(|a| a.as_str() == t)
    }
}

/// How urgent the decision is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Priority {
    /// Low.
    Low,
    /// Medium (also the default for anything unrecognised).
    Medium,
    /// High.
    High,
    /// Urgent.
    Urgent,
}

impl Priority {
    /// Trimmed, lower-cased; anything else is `medium`.
    pub fn parse_lenient(value: Option<&Value>) -> Priority {
        match value
            .and_then(Value::as_str)
            .map(|s| s.trim().to_ascii_lowercase())
            .as_deref()
        {
            Some("low") => Priority::Low,
            Some("high") => Priority::High,
            Some("urgent") => Priority::Urgent,
            _ => Priority::Medium,
        }
    }
}

/// A decision, as `think` prints it and `dispatch` reads it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Decision {
    /// Envelope version.
    #[serde(default = "one")]
    pub v: u32,
    /// The action.
    pub action: Action,
    /// Why.
    #[serde(default)]
    pub reasoning: String,
    /// Action-specific data (always an object).
    #[serde(default)]
    pub payload: Map<String, Value>,
    /// Priority.
    #[serde(default = "medium")]
    pub priority: Priority,
    /// The experiment concerned, if any.
    #[serde(default)]
    pub experiment_id: Option<String>,
    /// What FULLSEND should know.
    #[serde(default)]
    pub context_for_fullsend: String,
    /// The incoming message that caused the decision, whole.
    #[serde(default)]
    pub message: Map<String, Value>,
    /// Why the model's answer was not taken as is (unknown action, no JSON…).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub parse_note: Option<String>,
    /// Set when no model answer was used: `timeout`, `model_error`, `status_rule`, `spend_limit`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fallback: Option<String>,
    /// Provider and model that decided.
    #[serde(default)]
    pub provider: String,
    /// The model id.
    #[serde(default)]
    pub model: String,
    /// Token usage.
    #[serde(default)]
    pub usage: Usage,
    /// Cost in USD from the price table, when known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cost_usd: Option<f64>,
    /// The thinking text, when the API returned it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub thinking: Option<String>,
    /// Wall time of the decision.
    #[serde(default)]
    pub elapsed_ms: u64,
    /// The model's raw text, when it could not be parsed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub raw: Option<String>,
    /// The version of the worklist the model read ([`crate::support::files::version_of`]). A
    /// whole-file `update_worklist` is refused when the file changed since, and decided again.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub worklist_version: Option<String>,
    /// Several actions carried out together (a kill and its learning, a dispatch and its
    /// worklist line), in order; empty for the PRD's single-action form. When present, the
    /// first is also `action`/`payload`/`experiment_id`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub actions: Vec<Step>,
    /// For `dispatch_to_fullsend`: what FULLSEND is told besides the idea ([`super::brief`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub brief: Option<super::brief::Brief>,
}

/// One action of a decision that has several.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Step {
    /// The action.
    pub action: Action,
    /// Its data.
    #[serde(default)]
    pub payload: Map<String, Value>,
    /// The experiment it concerns.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub experiment_id: Option<String>,
    /// Its priority (the decision's when not given).
    #[serde(default = "medium")]
    pub priority: Priority,
    /// Why the model's item was not taken as is (an unknown action).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub parse_note: Option<String>,
    /// For `dispatch_to_fullsend`: what FULLSEND is told besides the idea.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub brief: Option<super::brief::Brief>,
}

/// The most actions one decision may carry; more are dropped, with a note.
pub const MAX_ACTIONS: usize = 5;

fn one() -> u32 {
    1
}
fn medium() -> Priority {
    Priority::Medium
}

impl Decision {
    /// A decision that does nothing, with a reason.
    pub fn no_action(message: Map<String, Value>, reasoning: impl Into<String>) -> Decision {
        Decision {
            v: 1,
            action: Action::NoAction,
            reasoning: reasoning.into(),
            payload: Map::new(),
            priority: Priority::Medium,
            experiment_id: None,
            context_for_fullsend: String::new(),
            message,
            parse_note: None,
            fallback: None,
            provider: String::new(),
            model: String::new(),
            usage: Usage::default(),
            cost_usd: None,
            thinking: None,
            elapsed_ms: 0,
            raw: None,
            worklist_version: None,
            actions: Vec::new(),
            brief: None,
        }
    }

    /// The decision for one of its steps: the same envelope, that step's action.
    pub fn for_step(&self, step: &Step) -> Decision {
        let mut d = self.clone();
        d.actions = Vec::new();
        d.action = step.action;
        d.payload = step.payload.clone();
        d.experiment_id = step.experiment_id.clone();
        d.priority = step.priority;
        d.brief = step.brief.clone();
        d.fill_from_payload();
        d
    }

    /// Parses a model's answer (prose, fences and all) into a decision about `message`.
    pub fn from_model_text(text: &str, message: Map<String, Value>) -> Decision {
        match crate::llm::extract::decision_object(text) {
            Some(object) => Decision::from_object(object, message),
            None => {
                let mut d =
                    Decision::no_action(message, "the model's answer contained no JSON decision");
                d.parse_note = Some("no JSON object found".into());
                d.raw = Some(crate::support::msg::preview(text, 2000));
                d
            }
        }
    }

    /// Normalises a decision object: unknown or null action → `no_action` (the
    /// reason kept), priority lenient, a non-object payload wrapped as `{"value": …}`.
    pub fn from_object(mut object: Map<String, Value>, message: Map<String, Value>) -> Decision {
        let reasoning = match object.remove("reasoning") {
            Some(Value::String(s)) => s,
            Some(Value::Null) | None => String::new(),
            Some(other) => other.to_string(),
        };
        let payload = match object.remove("payload") {
            Some(Value::Object(m)) => m,
            Some(Value::Null) | None => Map::new(),
            Some(other) => Map::from_iter([("value".to_string(), other)]),
        };
        let (action, parse_note) = match object.get("action") {
            Some(Value::String(s)) => match Action::parse(s) {
                Some(a) => (a, None),
                None => (
                    Action::NoAction,
                    Some(format!(
                        "unknown action {:?}",
                        crate::support::msg::preview(s, 80)
                    )),
                ),
            },
            Some(Value::Null) => (Action::NoAction, Some("action was null".to_string())),
            Some(other) => (
                Action::NoAction,
                Some(format!(
                    "action was {}",
                    crate::support::io::json_kind(other)
                )),
            ),
            None => (Action::NoAction, Some("no action given".to_string())),
        };
        let steps = match object.remove("actions") {
            Some(Value::Array(items)) => Some(items),
            _ => None,
        };
        let text_field = |v: Option<&Value>| {
            v.and_then(Value::as_str)
                .map(str::to_string)
                .filter(|s| !s.trim().is_empty())
        };
        let mut d = Decision::no_action(message, reasoning);
        d.action = action;
        d.priority = Priority::parse_lenient(object.get("priority"));
        d.payload = payload;
        d.experiment_id = text_field(object.get("experiment_id"));
        d.context_for_fullsend = text_field(object.get("context_for_fullsend")).unwrap_or_default();
        d.parse_note = parse_note;
        d.fill_from_payload();
        if let Some(items) = steps {
            d.take_steps(items);
        }
        d
    }

    /// Reads the `actions` form: each item by the same rules as a whole decision (unknown
    /// action → `no_action` with a note), at most [`MAX_ACTIONS`]. The first becomes `action`.
    fn take_steps(&mut self, items: Vec<Value>) {
        let total = items.len();
        for item in items.into_iter().take(MAX_ACTIONS) {
            let object = match item {
                Value::Object(o) => o,
                other => Map::from_iter([("action".to_string(), other)]),
            };
            let has_priority = object.contains_key("priority");
            let one = Decision::from_object(object, Map::new());
            self.actions.push(Step {
                action: one.action,
                payload: one.payload,
                experiment_id: one.experiment_id,
                priority: if has_priority {
                    one.priority
                } else {
                    self.priority
                },
                parse_note: one.parse_note,
                brief: None,
            });
        }
        if total > MAX_ACTIONS {
            self.parse_note = Some(format!(
                "{total} actions given; only the first {MAX_ACTIONS} are carried out"
            ));
        }
        if let Some(first) = self.actions.first() {
            self.action = first.action;
            self.payload = first.payload.clone();
            self.experiment_id = first.experiment_id.clone();
            if self
                .parse_note
                .as_deref()
                .is_some_and(|n| n == "no action given")
            {
                self.parse_note = None;
            }
        }
    }

    /// `experiment_id` falls back to `payload.experiment_id`, and
    /// `context_for_fullsend` to `payload.context`.
    pub fn fill_from_payload(&mut self) {
        if self
            .experiment_id
            .as_deref()
            .is_none_or(|s| s.trim().is_empty())
        {
            self.experiment_id = self
                .payload
                .get("experiment_id")
                .and_then(Value::as_str)
                .filter(|s| !s.trim().is_empty())
                .map(str::to_string);
        }
        if self.context_for_fullsend.trim().is_empty() {
            self.context_for_fullsend = match self.payload.get("context") {
                Some(Value::String(s)) => s.clone(),
                Some(Value::Null) | None => String::new(),
                Some(other) => other.to_string(),
            };
        }
    }
}

impl Decision {
    /// A decision from JSON: `think`'s output, or a bare `{action, payload, …}`
    /// normalised by the same rules as model output.
    pub fn read(text: &str) -> anyhow::Result<Decision> {
        let object = crate::support::io::parse_json_object(text, "the decision")?;
        if !object.contains_key("action") && !object.contains_key("actions") {
            return Err(crate::support::exit::Fail::usage(
                "the decision has no \"action\" (or \"actions\") field",
            ));
        }
        if let Ok(mut decision) =
            serde_json::from_value::<Decision>(serde_json::Value::Object(object.clone()))
        {
            decision.fill_from_payload();
            return Ok(decision);
        }
        let message = match object.get("message") {
            Some(serde_json::Value::Object(m)) => m.clone(),
            _ => serde_json::Map::new(),
        };
        Ok(Decision::from_object(object, message))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Decision {
        Decision::from_model_text(text, Map::new())
    }

    #[test]
    fn normalisation_rules() {
        let d = parse(
            r#"Sure. {"action":" Dispatch_To_Fullsend ","priority":"URGENT ","payload":{"idea":"a } b","context":"ctx"},"reasoning":"r"}"#,
        );
        assert_eq!(d.action, Action::DispatchToFullsend);
        assert_eq!(d.priority, Priority::Urgent);
        assert_eq!(d.payload["idea"], "a } b");
        assert_eq!(d.context_for_fullsend, "ctx");

        let d = parse(r#"{"action": null, "reasoning": "hmm"}"#);
        assert_eq!(d.action, Action::NoAction);
        assert_eq!(d.parse_note.as_deref(), Some("action was null"));

        let d = parse(r#"{"action": "launch_rockets"}"#);
        assert_eq!(d.action, Action::NoAction);
        assert!(d.parse_note.unwrap_or_default().contains("launch_rockets"));

        let d = parse(
            r#"{"action": "respond_to_discord", "payload": "hello", "priority": "whenever"}"#,
        );
        assert_eq!(d.payload["value"], "hello");
        assert_eq!(d.priority, Priority::Medium);

        let d = parse(
            r#"{"action":"kill_experiment","payload":{"experiment_id":"exp_1","reason":"dead"}}"#,
        );
        assert_eq!(d.experiment_id.as_deref(), Some("exp_1"));

        let d = parse("I could not decide.");
        assert_eq!(d.action, Action::NoAction);
        assert!(d.raw.is_some());
    }

    #[test]
    fn several_actions_are_read_in_order_and_capped() {
        let d = parse(
            r#"{"reasoning": "dead", "priority": "high", "actions": [
                {"action": "kill_experiment", "experiment_id": "exp_1", "payload": {"reason": "2%"}},
                {"action": "record_learning", "payload": {"learning": "CFOs ignore"}, "priority": "low"},
                {"action": "launch_rockets"}
            ]}"#,
        );
        assert_eq!(d.actions.len(), 3);
        assert_eq!(
            d.action,
            Action::KillExperiment,
            "the first is also the action"
        );
        assert_eq!(d.experiment_id.as_deref(), Some("exp_1"));
        assert_eq!(d.parse_note, None);
        assert_eq!(
            d.actions[0].priority,
            Priority::High,
            "the decision's priority"
        );
        assert_eq!(d.actions[1].priority, Priority::Low);
        assert_eq!(d.actions[2].action, Action::NoAction);
        assert!(
            d.actions[2]
                .parse_note
                .as_deref()
                .unwrap_or("")
                .contains("launch_rockets")
        );
        let step = d.for_step(&d.actions[1]);
        assert_eq!(step.action, Action::RecordLearning);
        assert!(step.actions.is_empty());
        let many = format!(
            r#"{{"actions": [{}]}}"#,
            [r#"{"action": "no_action"}"#; 9].join(",")
        );
        let d = parse(&many);
        assert_eq!(d.actions.len(), MAX_ACTIONS);
        assert!(d.parse_note.unwrap_or_default().contains("only the first"));
        // The JSON `think` prints reads back the same.
        let d =
            parse(r#"{"actions": [{"action": "record_learning", "payload": {"learning": "x"}}]}"#);
        let again: Decision = serde_json::from_str(&serde_json::to_string(&d).unwrap()).unwrap();
        assert_eq!(again.actions.len(), 1);
    }
}
