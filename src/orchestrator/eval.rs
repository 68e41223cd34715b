//! The PRD's Decision Quality Test as data: a case is a message, optional context, and what
//! the decision must (and must not) be. [`check`] says which expectations a decision missed.
//! Pure: the caller runs `think` and reports.

use std::collections::BTreeMap;
use std::sync::Arc;

use serde::Deserialize;
use serde_json::{Map, Value};

use super::decision::{Decision, Priority};
use crate::context::loader::{Context, Experiment, Metrics, Tactical, Tool};

/// One decision case.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DecisionCase {
    /// A short unique name.
    pub name: String,
    /// The incoming message, as it arrives on `fullsend:to_orchestrator`.
    pub message: Map<String, Value>,
    /// Context the case decides in (what is not given is empty).
    #[serde(default)]
    pub context: ContextCase,
    /// What the decision must be.
    #[serde(default)]
    pub expect: DecisionExpect,
}

/// The context of a case. Every part not given is empty, so a case means the same on any host.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ContextCase {
    /// product_context.md.
    #[serde(default)]
    pub product: String,
    /// worklist.md.
    #[serde(default)]
    pub worklist: String,
    /// learnings.md.
    #[serde(default)]
    pub learnings: String,
    /// Experiments (`state: archived` ones are past experiments).
    #[serde(default)]
    pub experiments: Vec<ExperimentCase>,
    /// Active tools.
    #[serde(default)]
    pub tools: Vec<ToolCase>,
    /// Tactical learnings, newest first.
    #[serde(default)]
    pub tactical_learnings: Vec<String>,
    /// Aggregated metrics by experiment id.
    #[serde(default)]
    pub metrics: BTreeMap<String, BTreeMap<String, String>>,
}

/// An experiment of a case's context.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExperimentCase {
    /// Its id.
    pub id: String,
    /// Its state.
    #[serde(default = "running")]
    pub state: String,
    /// What it tests.
    #[serde(default)]
    pub hypothesis: String,
    /// Its name (the hypothesis when not given).
    #[serde(default)]
    pub name: String,
    /// Why it was archived.
    #[serde(default)]
    pub archived_reason: String,
}

fn running() -> String {
    "running".into()
}

/// A tool of a case's context.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ToolCase {
    /// Its name.
    pub name: String,
    /// What it does.
    #[serde(default)]
    pub description: String,
}

/// What a decision must be. Every given expectation must hold.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DecisionExpect {
    /// Each of these actions is among the decision's actions.
    #[serde(default)]
    pub actions: Vec<String>,
    /// The decision's (first) action is one of these.
    #[serde(default)]
    pub one_of: Vec<String>,
    /// None of these actions is among the decision's.
    #[serde(default)]
    pub not_actions: Vec<String>,
    /// `path: text`: the field at `path` (`reasoning`, `payload.idea`, `experiment_id`) of the
    /// decision or of one of its actions contains `text`, ignoring case.
    #[serde(default)]
    pub contains: BTreeMap<String, String>,
    /// The priority is exactly this.
    #[serde(default)]
    pub priority: Option<String>,
    /// The priority is at least this.
    #[serde(default)]
    pub min_priority: Option<String>,
    /// The decision cost at most this (USD).
    #[serde(default)]
    pub max_cost_usd: Option<f64>,
}

impl ContextCase {
    /// The context the case decides in.
    pub fn to_context(&self) -> Context {
        let experiment = |e: &ExperimentCase| {
            Arc::new(Experiment {
                id: e.id.clone(),
                name: if e.name.is_empty() {
                    e.hypothesis.clone()
                } else {
                    e.name.clone()
                },
                state: e.state.clone(),
                updated_at: String::new(),
                hypothesis: e.hypothesis.clone(),
                archived_reason: e.archived_reason.clone(),
            })
        };
        let (archived, active): (Vec<_>, Vec<_>) =
            self.experiments.iter().partition(|e| e.state == "archived");
        Context {
            product: Arc::new(self.product.clone()),
            worklist: Arc::new(self.worklist.clone()),
            learnings: Arc::new(self.learnings.clone()),
            experiments: Arc::new(active.into_iter().map(experiment).collect()),
            archived: Arc::new(archived.into_iter().map(experiment).collect()),
            tools: Arc::new(
                self.tools
                    .iter()
                    .map(|t| {
                        Arc::new(Tool {
                            name: t.name.clone(),
                            description: t.description.clone(),
                        })
                    })
                    .collect(),
            ),
            tactical_learnings: Arc::new(
                self.tactical_learnings
                    .iter()
                    .enumerate()
                    .map(|(i, text)| {
                        Arc::new(Tactical {
                            key: format!("learnings:tactical:eval_{i}"),
                            text: text.clone(),
                            experiment_id: String::new(),
                            created_at: String::new(),
                        })
                    })
                    .collect(),
            ),
            metrics: Arc::new(
                self.metrics
                    .iter()
                    .map(|(id, fields)| {
                        Arc::new(Metrics {
                            experiment_id: id.clone(),
                            fields: fields.clone(),
                        })
                    })
                    .collect(),
            ),
            warnings: Vec::new(),
        }
    }
}

/// The actions of a decision, in order.
pub fn actions_of(decision: &Decision) -> Vec<&'static str> {
    if decision.actions.is_empty() {
        vec![decision.action.as_str()]
    } else {
        decision.actions.iter().map(|s| s.action.as_str()).collect()
    }
}

fn rank(priority: Priority) -> u8 {
    match priority {
        Priority::Low => 0,
        Priority::Medium => 1,
        Priority::High => 2,
        Priority::Urgent => 3,
    }
}

/// The expectations `decision` missed, each with what it was instead; empty when it passes.
pub fn check(expect: &DecisionExpect, decision: &Decision) -> Vec<String> {
    let mut missed = Vec::new();
    let actions = actions_of(decision);
    for want in &expect.actions {
        if !actions.contains(&want.as_str()) {
            missed.push(format!(
                "expected action {want}, got {}",
                actions.join(", ")
            ));
        }
    }
    if !expect.one_of.is_empty() && !expect.one_of.iter().any(|a| a == actions[0]) {
        missed.push(format!(
            "expected one of {}, got {}",
            expect.one_of.join(", "),
            actions[0]
        ));
    }
    for banned in &expect.not_actions {
        if actions.contains(&banned.as_str()) {
            missed.push(format!("action {banned} was not wanted"));
        }
    }
    let views = views_of(decision);
    for (path, text) in &expect.contains {
        let needle = text.to_lowercase();
        let found = views
            .iter()
            .filter_map(|v| crate::support::msg::text_at(v, path))
            .any(|v| v.to_lowercase().contains(&needle));
        if !found {
            missed.push(format!("{path} does not contain {text:?}"));
        }
    }
    let priority = Priority::parse_lenient(Some(&Value::String(
        expect.priority.clone().unwrap_or_default(),
    )));
    if expect.priority.is_some() && priority != decision.priority {
        missed.push(format!(
            "expected priority {}, got {}",
            expect.priority.as_deref().unwrap_or_default(),
            serde_json::to_value(decision.priority)
                .ok()
                .and_then(|v| v.as_str().map(str::to_string))
                .unwrap_or_default()
        ));
    }
    if let Some(min) = &expect.min_priority {
        let min_priority = Priority::parse_lenient(Some(&Value::String(min.clone())));
        if rank(decision.priority) < rank(min_priority) {
            missed.push(format!("expected priority at least {min}"));
        }
    }
    if let Some(max) = expect.max_cost_usd
        && decision.cost_usd.unwrap_or(0.0) > max
    {
        missed.push(format!(
            "cost ${:.4} is over ${max:.4}",
            decision.cost_usd.unwrap_or(0.0)
        ));
    }
    missed
}

/// The decision as JSON, and each of its actions as the same envelope with that action.
fn views_of(decision: &Decision) -> Vec<Value> {
    let mut views = vec![serde_json::to_value(decision).unwrap_or(Value::Null)];
    for step in &decision.actions {
        views.push(serde_json::to_value(decision.for_step(step)).unwrap_or(Value::Null));
    }
    views
}

#[cfg(test)]
mod tests {
    use super::*;

    fn decision(text: &str) -> Decision {
        Decision::from_model_text(text, Map::new())
    }

    #[test]
    fn a_decision_meeting_every_expectation_passes_and_each_miss_is_named() {
        let d = decision(
            r#"{"actions": [
                {"action": "kill_experiment", "experiment_id": "exp_1", "payload": {"reason": "2% response"}},
                {"action": "record_learning", "payload": {"learning": "CFOs ignore cold email"}}
            ], "reasoning": "It is failing", "priority": "high"}"#,
        );
        let expect: DecisionExpect = serde_yaml_ng::from_str(
            "actions: [kill_experiment, record_learning]\nnot_actions: [dispatch_to_fullsend]\ncontains: {experiment_id: exp_1, payload.learning: cfos}\nmin_priority: medium\n",
        )
        .expect("yaml");
        assert_eq!(check(&expect, &d), Vec::<String>::new());
        let expect: DecisionExpect = serde_yaml_ng::from_str(
            "actions: [dispatch_to_fullsend]\none_of: [no_action]\ncontains: {reasoning: thriving}\npriority: low\n",
        )
        .expect("yaml");
        let missed = check(&expect, &d);
        assert_eq!(missed.len(), 4, "{missed:?}");
        assert!(
            missed[0].contains("got kill_experiment, record_learning"),
            "{missed:?}"
        );
    }

    #[test]
    fn a_case_context_is_what_it_says_and_nothing_else() {
        let case: ContextCase = serde_yaml_ng::from_str(
            "experiments:\n  - {id: exp_1, hypothesis: CTOs reply}\n  - {id: exp_0, state: archived, hypothesis: CFOs reply}\ntools: [{name: hn_scraper}]\n",
        )
        .expect("yaml");
        let ctx = case.to_context();
        assert_eq!(ctx.experiments.len(), 1);
        assert_eq!(ctx.archived[0].id, "exp_0");
        assert_eq!(ctx.tools[0].name, "hn_scraper");
        assert!(ctx.learnings.is_empty() && ctx.worklist.is_empty());
    }
}
