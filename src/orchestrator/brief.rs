//! The brief a `dispatch_to_fullsend` carries: the idea, why it might work, the learnings and
//! past experiments that bear on it (ranked by [`crate::context::rank`], no model call), the
//! tools, and the constraints, written out from `prompts/dispatch.txt`. FULLSEND gets the
//! lists too, so its designer can quote them.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use super::decision::{Action, Decision};
use crate::context::loader::Context;
use crate::context::prompt::{Prompts, one_line};
use crate::context::rank;

/// The most tools a brief lists.
const MAX_TOOLS: usize = 30;

/// What FULLSEND is told besides the raw idea.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Brief {
    /// The brief, in prose (`prompts/dispatch.txt`).
    pub text: String,
    /// `{experiment_id, hypothesis, state, results, archived_reason?, score}`, best first.
    #[serde(default)]
    pub similar_experiments: Vec<Value>,
    /// `{source, text, experiment_id?, score}`, best first.
    #[serde(default)]
    pub relevant_learnings: Vec<Value>,
    /// `{name, description}` of every active tool (at most 30).
    #[serde(default)]
    pub available_tools: Vec<Value>,
}

/// Gives every `dispatch_to_fullsend` of `decision` that has none its brief, from `ctx`.
pub fn attach(decision: &mut Decision, ctx: &Context, prompts: &Prompts) -> anyhow::Result<()> {
    if decision.actions.is_empty() {
        if decision.action == Action::DispatchToFullsend && decision.brief.is_none() {
            decision.brief = Some(build(
                &decision.payload,
                &decision.reasoning,
                &decision.context_for_fullsend,
                ctx,
                prompts,
            )?);
        }
        return Ok(());
    }
    for i in 0..decision.actions.len() {
        let step = &decision.actions[i];
        if step.action != Action::DispatchToFullsend || step.brief.is_some() {
            continue;
        }
        let context = step
            .payload
            .get("context")
            .and_then(Value::as_str)
            .unwrap_or(&decision.context_for_fullsend)
            .to_string();
        let brief = build(&step.payload, &decision.reasoning, &context, ctx, prompts)?;
        decision.actions[i].brief = Some(brief);
    }
    Ok(())
}

/// True when some `dispatch_to_fullsend` of `decision` still has no brief.
pub fn missing(decision: &Decision) -> bool {
    if decision.actions.is_empty() {
        decision.action == Action::DispatchToFullsend && decision.brief.is_none()
    } else {
        decision
            .actions
            .iter()
            .any(|s| s.action == Action::DispatchToFullsend && s.brief.is_none())
    }
}

/// The brief for one dispatch.
pub fn build(
    idea: &Map<String, Value>,
    reasoning: &str,
    context_for_fullsend: &str,
    ctx: &Context,
    prompts: &Prompts,
) -> anyhow::Result<Brief> {
    let idea_words = words_of(&Value::Object(idea.clone()));
    let query = format!("{idea_words} {context_for_fullsend}");
    let similar = rank::similar_experiments(ctx, &query);
    let learnings = rank::relevant_learnings(ctx, &query);
    let tools: Vec<Value> = ctx
        .tools
        .iter()
        .take(MAX_TOOLS)
        .map(|t| serde_json::json!({"name": t.name, "description": one_line(&t.description, 200)}))
        .collect();
    let why = [reasoning.trim(), context_for_fullsend.trim()]
        .into_iter()
        .filter(|s| !s.is_empty())
        .collect::<Vec<_>>()
        .join("\n\n");
    let vars = BTreeMap::from([
        ("idea", idea_text(idea)),
        ("why", or_none(why, "(the Orchestrator gave no reason)")),
        (
            "relevant_learnings",
            or_none(
                learnings
                    .iter()
                    .map(|l| match l.experiment_id.as_str() {
                        "" => format!("- ({}) {}", l.source, l.text),
                        id => format!("- ({}, from {id}) {}", l.source, l.text),
                    })
                    .collect::<Vec<_>>()
                    .join("\n"),
                "(nothing recorded bears on it yet)",
            ),
        ),
        (
            "similar_experiments",
            or_none(
                similar
                    .iter()
                    .map(experiment_line)
                    .collect::<Vec<_>>()
                    .join("\n"),
                "(none: this is new ground)",
            ),
        ),
        (
            "tools",
            or_none(
                ctx.tools
                    .iter()
                    .take(MAX_TOOLS)
                    .map(|t| format!("- {}: {}", t.name, one_line(&t.description, 200)))
                    .collect::<Vec<_>>()
                    .join("\n"),
                "(no tools registered yet: ask for one in a tool_request if the design needs it)",
            ),
        ),
        ("constraints", or_none(constraints(idea), "(none given)")),
    ]);
    let text = prompts.render("dispatch.txt", &vars)?;
    Ok(Brief {
        text,
        similar_experiments: similar
            .iter()
            .map(|e| serde_json::to_value(e).unwrap_or(Value::Null))
            .collect(),
        relevant_learnings: learnings
            .iter()
            .map(|l| serde_json::to_value(l).unwrap_or(Value::Null))
            .collect(),
        available_tools: tools,
    })
}

fn experiment_line(e: &rank::SimilarExperiment) -> String {
    let mut line = format!("- {} ({}): {}", e.experiment_id, e.state, e.hypothesis);
    if !e.results.is_empty() {
        let mut results: Vec<String> = e.results.iter().map(|(k, v)| format!("{k}={v}")).collect();
        results.sort();
        line.push_str(&format!(". Results: {}", results.join(", ")));
    }
    if !e.archived_reason.is_empty() {
        line.push_str(&format!(". Archived because: {}", e.archived_reason));
    }
    line
}

/// The idea in words, and anything else the payload carries (constraints have their own
/// section) as JSON after it.
fn idea_text(idea: &Map<String, Value>) -> String {
    let rest: Map<String, Value> = idea
        .iter()
        .filter(|(k, _)| !matches!(k.as_str(), "idea" | "constraints" | "context"))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    let details = || serde_json::to_string_pretty(&rest).unwrap_or_default();
    match idea.get("idea") {
        Some(Value::String(s)) if rest.is_empty() => s.clone(),
        Some(Value::String(s)) => format!("{s}\n\nDetails:\n{}", details()),
        _ => details(),
    }
}

/// The payload's `constraints` (text or a list), one per line.
fn constraints(idea: &Map<String, Value>) -> String {
    match idea.get("constraints") {
        Some(Value::String(s)) => one_line(s, 1000),
        Some(Value::Array(items)) => items
            .iter()
            .take(20)
            .map(|c| match c {
                Value::String(s) => format!("- {}", one_line(s, 300)),
                other => format!("- {}", one_line(&other.to_string(), 300)),
            })
            .collect::<Vec<_>>()
            .join("\n"),
        _ => String::new(),
    }
}

fn or_none(text: String, none: &str) -> String {
    if text.trim().is_empty() {
        none.to_string()
    } else {
        text
    }
}

/// Every string in `value`, joined: the words to rank by.
fn words_of(value: &Value) -> String {
    match value {
        Value::String(s) => s.clone(),
        Value::Array(items) => items.iter().map(words_of).collect::<Vec<_>>().join(" "),
        Value::Object(map) => map.values().map(words_of).collect::<Vec<_>>().join(" "),
        _ => String::new(),
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use serde_json::json;

    use super::*;
    use crate::context::loader::{Experiment, Tool};

    #[test]
    fn a_dispatch_gets_a_brief_naming_the_failed_experiment_and_the_tools() {
        let ctx = Context {
            archived: Arc::new(vec![Arc::new(Experiment {
                id: "exp_0_hn_hiring".into(),
                name: "HN hiring posts".into(),
                state: "archived".into(),
                hypothesis: "Founders posting on HN Who is Hiring reply to cold email".into(),
                archived_reason: "2% response after 200 sends".into(),
                ..Default::default()
            })]),
            tools: Arc::new(vec![Arc::new(Tool {
                name: "hn_scraper".into(),
                description: "Scrapes HN threads".into(),
            })]),
            ..Default::default()
        };
        let mut d = Decision::from_model_text(
            r#"{"actions": [
                {"action": "dispatch_to_fullsend", "payload": {"idea": "Scrape HN Who is Hiring posts", "constraints": ["no more than 100 emails a day"]}},
                {"action": "update_worklist", "payload": {"add_line": "- [ ] HN"}}
            ], "reasoning": "Hiring founders have budget"}"#,
            Map::new(),
        );
        assert!(missing(&d));
        attach(&mut d, &ctx, &Prompts::default()).expect("brief");
        assert!(!missing(&d));
        let brief = d.actions[0]
            .brief
            .as_ref()
            .expect("the dispatch has a brief");
        assert!(d.actions[1].brief.is_none(), "only dispatches get one");
        assert_eq!(
            brief.similar_experiments[0]["experiment_id"],
            json!("exp_0_hn_hiring")
        );
        for part in [
            "Scrape HN Who is Hiring posts",
            "Hiring founders have budget",
            "exp_0_hn_hiring (archived)",
            "Archived because: 2% response",
            "- hn_scraper: Scrapes HN threads",
            "- no more than 100 emails a day",
        ] {
            assert!(
                brief.text.contains(part),
                "{part:?} missing from:\n{}",
                brief.text
            );
        }
        let again = d.actions[0].brief.clone();
        attach(&mut d, &ctx, &Prompts::default()).expect("brief");
        assert_eq!(d.actions[0].brief, again, "a brief is kept, not rebuilt");
    }
}
