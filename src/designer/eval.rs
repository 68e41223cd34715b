//! The PRD's Experiment Quality Test as data: an idea, and what makes its spec complete (a
//! specific target, a real template, metrics with thresholds, criteria both ways, a valid
//! schedule). [`check`] says what a designed spec lacks. Pure: the caller runs the design.

use std::collections::BTreeMap;

use serde::Deserialize;
use serde_json::Value;

use super::design::Designed;

/// One design case.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DesignCase {
    /// A short unique name.
    pub name: String,
    /// The idea.
    pub idea: String,
    /// What the Orchestrator would say about it.
    #[serde(default)]
    pub context: String,
    /// The designer's context (what is not given is empty).
    #[serde(default)]
    pub product: String,
    /// `- name: description` lines of the available tools.
    #[serde(default)]
    pub tools: String,
    /// What the spec must also be, beyond complete.
    #[serde(default)]
    pub expect: DesignExpect,
}

/// Expectations beyond a complete spec.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DesignExpect {
    /// `outreach.channel` is this.
    #[serde(default)]
    pub channel: Option<String>,
    /// `path: text`: the spec's field at `path` (`target.description`, `outreach.template`)
    /// contains `text`, ignoring case.
    #[serde(default)]
    pub contains: BTreeMap<String, String>,
    /// The design asks for a new tool (true) or uses the available ones (false).
    #[serde(default)]
    pub needs_tool: Option<bool>,
    /// The design cost at most this (USD).
    #[serde(default)]
    pub max_cost_usd: Option<f64>,
}

/// The shortest target description taken as specific (who, where, how many).
const MIN_TARGET_CHARS: usize = 25;
/// The shortest template taken as real copy rather than a stub.
const MIN_TEMPLATE_CHARS: usize = 120;

/// What the design lacks; empty when the spec is complete and meets `expect`.
pub fn check(expect: &DesignExpect, designed: &Designed) -> Vec<String> {
    let Some(spec) = designed.spec.as_ref() else {
        return vec![format!(
            "no valid spec: {}",
            designed.reason.as_deref().unwrap_or("the design failed")
        )];
    };
    let spec = match spec.get("experiment") {
        Some(Value::Object(inner)) => inner,
        _ => spec,
    };
    let mut missed = Vec::new();
    let spec_value = Value::Object(spec.clone());
    let text = |path: &str| crate::support::msg::text_at(&spec_value, path).unwrap_or_default();
    let target = text("target.description");
    if target.trim().chars().count() < MIN_TARGET_CHARS || target.split_whitespace().count() < 4 {
        missed.push(format!("target.description is not specific: {target:?}"));
    }
    let template = text("outreach.template");
    if template.trim().chars().count() < MIN_TEMPLATE_CHARS {
        missed.push(format!(
            "outreach.template is not real copy ({} characters)",
            template.trim().chars().count()
        ));
    }
    let metrics = spec.get("metrics").and_then(Value::as_array);
    let with_threshold = metrics.map_or(0, |m| {
        m.iter()
            .filter(|m| {
                m.as_object()
                    .is_some_and(|m| m.keys().any(|k| k.contains("threshold") && !m[k].is_null()))
            })
            .count()
    });
    if with_threshold == 0 {
        missed.push("no metric has a threshold".into());
    }
    for criteria in ["success_criteria", "failure_criteria"] {
        let given = match spec.get(criteria) {
            Some(Value::Array(items)) => !items.is_empty(),
            Some(Value::String(s)) => !s.trim().is_empty(),
            _ => false,
        };
        if !given {
            missed.push(format!("{criteria} is missing"));
        }
    }
    let schedule = text("execution.schedule");
    let zone = text("execution.timezone");
    if let Err(e) = super::cron::validate(&schedule) {
        missed.push(format!("execution.schedule: {e}"));
    } else if !zone.is_empty()
        && let Err(e) = super::cron::validate_timezone(&zone)
    {
        missed.push(format!("execution.timezone: {e}"));
    }
    if let Some(channel) = &expect.channel
        && text("outreach.channel") != *channel
    {
        missed.push(format!(
            "expected outreach.channel {channel}, got {:?}",
            text("outreach.channel")
        ));
    }
    for (path, want) in &expect.contains {
        if !text(path).to_lowercase().contains(&want.to_lowercase()) {
            missed.push(format!("{path} does not contain {want:?}"));
        }
    }
    if let Some(needs) = expect.needs_tool
        && needs != designed.tool_request.is_some()
    {
        missed.push(if needs {
            "expected a tool request, got none".into()
        } else {
            "expected no tool request".into()
        });
    }
    if let Some(max) = expect.max_cost_usd
        && designed.cost_usd > max
    {
        missed.push(format!("cost ${:.4} is over ${max:.4}", designed.cost_usd));
    }
    missed
}
