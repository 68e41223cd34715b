//! Prompt templates (built in, overridable from a directory), strict rendering
//! (an unfilled placeholder is an error, never sent), and the Orchestrator's
//! prompt fitted to a token budget.

use std::collections::BTreeMap;
use std::path::PathBuf;

use anyhow::Context as _;
use serde_json::{Map, Value};

use crate::context::loader::Context;
use crate::llm::{PromptBlock, estimate_tokens};
use crate::support::exit::Fail;

/// The prompt files compiled into the binary.
const BUILTIN: &[(&str, &str)] = &[
    ("system.txt", include_str!("../../prompts/system.txt")),
    ("context.txt", include_str!("../../prompts/context.txt")),
    ("message.txt", include_str!("../../prompts/message.txt")),
    ("design.txt", include_str!("../../prompts/design.txt")),
    ("dispatch.txt", include_str!("../../prompts/dispatch.txt")),
    ("learn.txt", include_str!("../../prompts/learn.txt")),
    (
        "direct_run.txt",
        include_str!("../../prompts/direct_run.txt"),
    ),
    (
        "design_repair.txt",
        include_str!("../../prompts/design_repair.txt"),
    ),
    (
        "design_ralph_context.txt",
        include_str!("../../prompts/design_ralph_context.txt"),
    ),
    (
        "ralph_task.txt",
        include_str!("../../prompts/ralph_task.txt"),
    ),
    (
        "ralph_breakdown.txt",
        include_str!("../../prompts/ralph_breakdown.txt"),
    ),
];

/// Where prompt templates come from. Templates are compiled once per
/// `Prompts` (a listener renders thousands of prompts).
#[derive(Debug, Clone, Default)]
pub struct Prompts {
    dir: Option<PathBuf>,
    compiled: std::sync::Arc<std::sync::OnceLock<Result<minijinja::Environment<'static>, String>>>,
}

impl Prompts {
    /// Built-in prompts, overridden file by file from `dir` when given.
    pub fn new(dir: Option<PathBuf>) -> Self {
        Prompts {
            dir,
            compiled: Default::default(),
        }
    }

    /// The names of every prompt.
    pub fn names() -> impl Iterator<Item = &'static str> {
        BUILTIN.iter().map(|(n, _)| *n)
    }

    /// A template's text and where it came from ("builtin" or a path).
    pub fn source(&self, name: &str) -> anyhow::Result<(String, String)> {
        if let Some(dir) = &self.dir {
            let path = dir.join(name);
            if path.exists() {
                let text = std::fs::read_to_string(&path)
                    .with_context(|| format!("reading prompt {}", path.display()))?;
                return Ok((text, path.display().to_string()));
            }
        }
        BUILTIN
            .iter()
            .find(|(n, _)| *n == name)
            .map(|(_, t)| ((*t).to_string(), "builtin".to_string()))
            .ok_or_else(|| Fail::usage(format!("unknown prompt {name}")))
    }

    /// Renders a template. Every placeholder must have a value; a missing one
    /// is an error, never sent.
    pub fn render(&self, name: &str, vars: &BTreeMap<&str, String>) -> anyhow::Result<String> {
        let env = self
            .compiled
            .get_or_init(|| {
                let mut env = strict_env();
                for (name, _) in BUILTIN {
                    let (text, origin) = self.source(name).map_err(|e| format!("{e:#}"))?;
                    env.add_template_owned((*name).to_string(), text)
                        .map_err(|e| format!("prompt {name} ({origin}): {e}"))?;
                }
                Ok(env)
            })
            .as_ref()
            .map_err(|e| Fail::usage(e.clone()))?;
        let template = env
            .get_template(name)
            .map_err(|e| Fail::usage(format!("prompt {name}: {e}")))?;
        render_template(&template, vars).map_err(|e| Fail::usage(format!("prompt {name}: {e}")))
    }
}

fn strict_env() -> minijinja::Environment<'static> {
    let mut env = minijinja::Environment::new();
    env.set_undefined_behavior(minijinja::UndefinedBehavior::Strict);
    env.set_keep_trailing_newline(true);
    env
}

fn render_template(
    template: &minijinja::Template<'_, '_>,
    vars: &BTreeMap<&str, String>,
) -> Result<String, String> {
    let mut missing: Vec<String> = template
        .undeclared_variables(false)
        .into_iter()
        .filter(|v| !vars.contains_key(v.as_str()))
        .collect();
    if !missing.is_empty() {
        missing.sort();
        return Err(format!(
            "placeholder(s) without a value: {}",
            missing.join(", ")
        ));
    }
    template.render(vars).map_err(|e| e.to_string())
}

/// Renders template text strictly: undefined placeholders are errors.
pub fn render_str(text: &str, vars: &BTreeMap<&str, String>) -> Result<String, String> {
    let env = strict_env();
    let template = env.template_from_str(text).map_err(|e| e.to_string())?;
    render_template(&template, vars)
}

/// The Orchestrator prompt: system (stable, cached), context (cached), message (last).
#[derive(Debug, Clone)]
pub struct BuiltPrompt {
    /// System blocks.
    pub system: Vec<PromptBlock>,
    /// User blocks.
    pub user: Vec<PromptBlock>,
    /// Estimated tokens of everything.
    pub estimated_tokens: usize,
    /// What had to be left out to fit the budget.
    pub omitted: Vec<String>,
}

/// The parts of the prompt that depend on the context only (the system block with the product
/// context and strategic learnings, the context block), rendered once for a context and reused
/// for every message while the context is unchanged.
#[derive(Debug, Clone)]
pub struct ContextBlocks {
    system: String,
    context: String,
    omitted: Vec<String>,
    /// The message's share of the budget, in tokens.
    message_tokens: usize,
}

pub use super::prompt_cache::PromptCache;

/// Builds the Orchestrator prompt for `msg`, fitting `budget_tokens`.
pub fn orchestrator_prompt(
    prompts: &Prompts,
    ctx: &Context,
    msg: &Map<String, Value>,
    budget_tokens: usize,
) -> anyhow::Result<BuiltPrompt> {
    let blocks = context_blocks(prompts, ctx, budget_tokens)?;
    prompt_with(prompts, &blocks, msg)
}

/// The whole prompt: the context blocks and `msg` in its share of the budget.
pub fn prompt_with(
    prompts: &Prompts,
    blocks: &ContextBlocks,
    msg: &Map<String, Value>,
) -> anyhow::Result<BuiltPrompt> {
    let mut omitted = blocks.omitted.clone();
    let message_json = fit_message(msg, blocks.message_tokens, &mut omitted);
    let mut message = prompts.render("message.txt", &message_vars(msg, &message_json))?;
    if let Some(kind) = outcome_type(msg) {
        let about = match msg.get("experiment_id").and_then(Value::as_str) {
            Some(id) => format!(" (experiment {})", one_line(id, 64)),
            None => String::new(),
        };
        let vars = BTreeMap::from([("message_type", kind.to_string()), ("about", about)]);
        message.push_str(&prompts.render("learn.txt", &vars)?);
    }
    let estimated_tokens = estimate_tokens(&blocks.system)
        + estimate_tokens(&blocks.context)
        + estimate_tokens(&message);
    Ok(BuiltPrompt {
        system: vec![PromptBlock {
            text: blocks.system.clone(),
            cache: true,
        }],
        user: vec![
            PromptBlock {
                text: blocks.context.clone(),
                cache: true,
            },
            PromptBlock {
                text: message,
                cache: false,
            },
        ],
        estimated_tokens,
        omitted,
    })
}

/// Messages that report how an experiment, a tool or a direct run turned out: the prompt asks
/// for the learning (`prompts/learn.txt`).
pub const OUTCOME_TYPES: &[&str] = &[
    "experiment_success",
    "experiment_completed",
    "experiment_error",
    "experiment_failed",
    "metric_alert",
    "direct_run_complete",
    "direct_run_failed",
];

/// The message's type when it is an outcome.
fn outcome_type(msg: &Map<String, Value>) -> Option<&'static str> {
    let kind = msg.get("type").and_then(Value::as_str)?;
    OUTCOME_TYPES.iter().copied().find(|t| *t == kind)
}

/// Renders the context blocks. The message always gets a quarter of what the templates leave,
/// so the context blocks do not depend on the message: they can be reused, and they stay a
/// stable prefix for the API's prompt cache.
pub fn context_blocks(
    prompts: &Prompts,
    ctx: &Context,
    budget_tokens: usize,
) -> anyhow::Result<ContextBlocks> {
    let empty = BTreeMap::from([
        ("product_context", String::new()),
        ("learnings", String::new()),
        ("worklist", String::new()),
        ("experiments_summary", String::new()),
        ("tools_list", String::new()),
        ("tactical_learnings", String::new()),
        ("metrics_summary", String::new()),
        ("omitted", String::new()),
    ]);
    let message_vars_empty = message_vars(&Map::new(), "");
    // The fixed cost of the templates themselves.
    let fixed = estimate_tokens(&prompts.render("system.txt", &empty)?)
        + estimate_tokens(&prompts.render("context.txt", &empty)?)
        + estimate_tokens(&prompts.render("message.txt", &message_vars_empty)?)
        + 64;
    let available = budget_tokens.saturating_sub(fixed);
    let mut omitted = Vec::new();
    // Long strings in the message are cut inside its JSON so that it stays valid.
    let message_tokens = available / 4;
    let available = available - message_tokens;
    let sections = [
        Section::text(
            "product context",
            &ctx.product,
            Keep::Head,
            "(No product context available)",
        ),
        Section::text(
            "strategic learnings",
            &ctx.learnings,
            Keep::NewestEntries,
            "(No strategic learnings yet)",
        ),
        Section::text("worklist", &ctx.worklist, Keep::Head, "(No worklist yet)"),
        Section::lines(
            "experiments",
            ctx.experiments
                .iter()
                .map(|e| {
                    format!(
                        "- {}: {} (state: {})",
                        e.id,
                        one_line(&e.name, 200),
                        e.state
                    )
                })
                .collect(),
            "(No active experiments)",
        ),
        Section::lines(
            "tools",
            ctx.tools
                .iter()
                .map(|t| format!("- {}: {}", t.name, one_line(&t.description, 200)))
                .collect(),
            "(No tools registered)",
        ),
        Section::lines(
            "tactical learnings",
            ctx.tactical_learnings
                .iter()
                .map(|t| {
                    let exp = if t.experiment_id.is_empty() {
                        String::new()
                    } else {
                        format!(" [{}]", t.experiment_id)
                    };
                    format!("- {}{}: {}", t.created_at, exp, one_line(&t.text, 400))
                })
                .collect(),
            "(No tactical learnings)",
        ),
        Section::lines(
            "metrics",
            ctx.metrics
                .iter()
                .map(|m| {
                    let fields: Vec<String> = m
                        .fields
                        .iter()
                        .map(|(k, v)| format!("{k}={}", one_line(v, 40)))
                        .collect();
                    format!("- {}: {}", m.experiment_id, fields.join(", "))
                })
                .collect(),
            "(No metrics yet)",
        ),
    ];
    let allocations = water_fill(
        &sections.iter().map(Section::need).collect::<Vec<_>>(),
        available,
    );
    let rendered: Vec<String> = sections
        .iter()
        .zip(&allocations)
        .map(|(s, a)| s.fit(*a, &mut omitted))
        .collect();

    let omitted_note = if omitted.is_empty() {
        String::new()
    } else {
        format!(
            "\n(Left out to fit the prompt budget: {}.)\n",
            omitted.join("; ")
        )
    };
    let system_vars = BTreeMap::from([
        ("product_context", rendered[0].clone()),
        ("learnings", rendered[1].clone()),
    ]);
    let context_vars = BTreeMap::from([
        ("worklist", rendered[2].clone()),
        ("experiments_summary", rendered[3].clone()),
        ("tools_list", rendered[4].clone()),
        ("tactical_learnings", rendered[5].clone()),
        ("metrics_summary", rendered[6].clone()),
        ("omitted", omitted_note),
    ]);
    let system = prompts.render("system.txt", &system_vars)?;
    let context = prompts.render("context.txt", &context_vars)?;
    Ok(ContextBlocks {
        system,
        context,
        omitted,
        message_tokens,
    })
}

fn message_vars(msg: &Map<String, Value>, json: &str) -> BTreeMap<&'static str, String> {
    let field = |k: &str, default: &str| {
        msg.get(k)
            .and_then(Value::as_str)
            .map(|s| one_line(s, 80))
            .unwrap_or_else(|| default.to_string())
    };
    BTreeMap::from([
        ("message_type", field("type", "unknown")),
        ("message_source", field("source", "unknown")),
        ("message_priority", field("priority", "normal")),
        ("message_json", json.to_string()),
    ])
}

/// The message as pretty JSON, with long strings shortened until it fits.
fn fit_message(
    msg: &Map<String, Value>,
    budget_tokens: usize,
    omitted: &mut Vec<String>,
) -> String {
    let whole = serde_json::to_string_pretty(msg).unwrap_or_default();
    if estimate_tokens(&whole) <= budget_tokens.max(256) {
        return whole;
    }
    let mut value = Value::Object(msg.clone());
    let mut limit = 4096usize;
    loop {
        let cut = truncate_strings(&mut value, limit);
        let text = serde_json::to_string_pretty(&value).unwrap_or_default();
        if estimate_tokens(&text) <= budget_tokens.max(256) || limit <= 64 {
            omitted.push(format!(
                "{cut} characters of the incoming message's longest fields"
            ));
            return text;
        }
        value = Value::Object(msg.clone());
        limit /= 2;
    }
}

fn truncate_strings(value: &mut Value, limit: usize) -> usize {
    match value {
        Value::String(s) if s.chars().count() > limit => {
            let total = s.chars().count();
            let kept: String = s.chars().take(limit).collect();
            *s = format!("{kept}… [{} characters cut]", total - limit);
            total - limit
        }
        Value::Array(items) => {
            let mut cut = 0;
            if items.len() > 50 {
                cut += items.len() - 50;
                items.truncate(50);
            }
            cut + items
                .iter_mut()
                .map(|v| truncate_strings(v, limit))
                .sum::<usize>()
        }
        Value::Object(map) => map.values_mut().map(|v| truncate_strings(v, limit)).sum(),
        _ => 0,
    }
}

/// Shares `available` among needs: small needs are met whole, the rest split evenly.
fn water_fill(needs: &[usize], available: usize) -> Vec<usize> {
    let mut order: Vec<usize> = (0..needs.len()).collect();
    order.sort_by_key(|&i| needs[i]);
    let mut out = vec![0; needs.len()];
    let mut remaining = available;
    for (done, &i) in order.iter().enumerate() {
        let share = remaining / (needs.len() - done);
        out[i] = needs[i].min(share);
        remaining -= out[i];
    }
    out
}

/// Which part of a text section survives a cut.
#[derive(Debug, Clone, Copy)]
enum Keep {
    /// The beginning (priorities come first).
    Head,
    /// Whole `## ` entries from the end (newest last in the file).
    NewestEntries,
}

struct Section<'a> {
    name: &'static str,
    body: SectionBody<'a>,
    empty: &'static str,
}

enum SectionBody<'a> {
    Text(&'a str, Keep),
    Lines(Vec<String>),
}

impl<'a> Section<'a> {
    fn text(name: &'static str, text: &'a str, keep: Keep, empty: &'static str) -> Self {
        Section {
            name,
            body: SectionBody::Text(text, keep),
            empty,
        }
    }
    fn lines(name: &'static str, lines: Vec<String>, empty: &'static str) -> Self {
        Section {
            name,
            body: SectionBody::Lines(lines),
            empty,
        }
    }
    fn need(&self) -> usize {
        match &self.body {
            SectionBody::Text(t, _) => estimate_tokens(t),
            SectionBody::Lines(lines) => lines.iter().map(|l| estimate_tokens(l) + 1).sum(),
        }
    }
    /// The section cut to `tokens`, noting what was left out.
    fn fit(&self, tokens: usize, omitted: &mut Vec<String>) -> String {
        let max_bytes = tokens * 7 / 2;
        match &self.body {
            SectionBody::Text(text, keep) => {
                let text = text.trim();
                if text.is_empty() {
                    return self.empty.to_string();
                }
                if text.len() <= max_bytes {
                    return text.to_string();
                }
                match keep {
                    Keep::Head => {
                        let cut = floor_char_boundary(text, max_bytes.saturating_sub(80));
                        omitted.push(format!(
                            "the last {} characters of the {}",
                            text.len() - cut,
                            self.name
                        ));
                        format!("{}\n(… rest of the {} omitted)", &text[..cut], self.name)
                    }
                    Keep::NewestEntries => {
                        let entries = split_entries(text);
                        let mut kept = Vec::new();
                        let mut used = 0;
                        for entry in entries.iter().rev() {
                            if used + entry.len() + 1 > max_bytes.saturating_sub(80) {
                                break;
                            }
                            used += entry.len() + 1;
                            kept.push(*entry);
                        }
                        kept.reverse();
                        let left = entries.len() - kept.len();
                        omitted.push(format!("{left} older {} entries", self.name));
                        format!("({left} older entries omitted)\n{}", kept.join("\n"))
                    }
                }
            }
            SectionBody::Lines(lines) => {
                if lines.is_empty() {
                    return self.empty.to_string();
                }
                let whole: usize = lines.iter().map(|l| l.len() + 1).sum();
                if whole <= max_bytes {
                    return lines.join("\n");
                }
                // Keep room for the note that says what was left out.
                let mut out = String::new();
                let mut count = 0;
                for line in lines {
                    if out.len() + line.len() + 1 > max_bytes.saturating_sub(80) {
                        break;
                    }
                    out.push_str(line);
                    out.push('\n');
                    count += 1;
                }
                if count < lines.len() {
                    omitted.push(format!(
                        "{} of {} {}",
                        lines.len() - count,
                        lines.len(),
                        self.name
                    ));
                    out.push_str(&format!(
                        "(… {} more {} omitted)\n",
                        lines.len() - count,
                        self.name
                    ));
                }
                out.trim_end().to_string()
            }
        }
    }
}

/// `learnings.md` split before each `## ` heading (the preamble is its own entry).
fn split_entries(text: &str) -> Vec<&str> {
    let mut starts = vec![0];
    let mut pos = 0;
    for line in text.split_inclusive('\n') {
        if pos > 0 && line.starts_with("## ") {
            starts.push(pos);
        }
        pos += line.len();
    }
    starts.push(text.len());
    starts
        .windows(2)
        .map(|w| text[w[0]..w[1]].trim_end())
        .filter(|e| !e.is_empty())
        .collect()
}

fn floor_char_boundary(text: &str, mut index: usize) -> usize {
    if index >= text.len() {
        return text.len();
    }
    while !text.is_char_boundary(index) {
        index -= 1;
    }
    index
}

/// One line, at most `max` characters.
pub fn one_line(text: &str, max: usize) -> String {
    crate::support::msg::preview(text.trim(), max)
}

#[cfg(test)]
#[allow(clippy::field_reassign_with_default)]
mod tests {
    use super::*;

    #[test]
    fn unfilled_placeholder_is_an_error() {
        let vars = BTreeMap::from([("a", "x".to_string())]);
        assert_eq!(render_str("{{ a }}!", &vars).as_deref(), Ok("x!"));
        let err = render_str("{{ a }} {{ b }}", &vars).unwrap_err();
        assert!(err.contains('b'), "{err}");
        // Literal braces in values are not re-rendered.
        let vars = BTreeMap::from([("a", "{{ evil }}".to_string())]);
        assert_eq!(render_str("{{ a }}", &vars).as_deref(), Ok("{{ evil }}"));
    }

    #[test]
    fn builtin_prompts_render_with_their_variables() {
        let prompts = Prompts::default();
        let ctx = Context::default();
        let msg: Map<String, Value> =
            serde_json::from_str(r#"{"type":"escalation","source":"watcher"}"#).expect("json");
        let built = orchestrator_prompt(&prompts, &ctx, &msg, 24_000).expect("prompt");
        assert!(
            built.system[0]
                .text
                .contains("(No product context available)")
        );
        assert!(built.user[1].text.contains("\"escalation\""));
        assert!(built.user[0].cache && !built.user[1].cache);
    }

    #[test]
    fn prompt_fits_budget_for_huge_context() {
        let prompts = Prompts::default();
        let mut ctx = Context {
            worklist: "w".repeat(400_000).into(),
            ..Default::default()
        };
        ctx.learnings = std::sync::Arc::new(
            (0..20_000)
                .map(|i| format!("## 2026-01-01T00:00:{i}\nlearning number {i} with some words\n"))
                .collect(),
        );
        ctx.experiments = (0..10_000)
            .map(|i| {
                std::sync::Arc::new(crate::context::loader::Experiment {
                    id: format!("exp_{i}"),
                    name: "n".repeat(50),
                    state: "draft".into(),
                    ..Default::default()
                })
            })
            .collect::<Vec<_>>()
            .into();
        let mut msg = Map::new();
        msg.insert("content".into(), Value::String("x".repeat(1_000_000)));
        for budget in [4_000, 24_000, 100_000] {
            let built = orchestrator_prompt(&prompts, &ctx, &msg, budget).expect("prompt");
            assert!(
                built.estimated_tokens <= budget,
                "{} > {budget}",
                built.estimated_tokens
            );
            assert!(!built.omitted.is_empty());
            assert!(
                built.system[0].text.contains("learning number 19999"),
                "newest learning kept"
            );
        }
    }

    #[test]
    fn small_sections_are_never_cut() {
        let prompts = Prompts::default();
        let mut ctx = Context::default();
        ctx.experiments = vec![std::sync::Arc::new(crate::context::loader::Experiment {
            id: "exp_1".into(),
            name: String::new(),
            state: "running".into(),
            ..Default::default()
        })]
        .into();
        let built = orchestrator_prompt(&prompts, &ctx, &Map::new(), 24_000).expect("prompt");
        assert!(
            built.user[0].text.contains("- exp_1:  (state: running)"),
            "{}",
            built.user[0].text
        );
        assert!(built.omitted.is_empty(), "{:?}", built.omitted);
    }

    #[test]
    fn water_fill_meets_small_needs() {
        assert_eq!(water_fill(&[10, 1000, 20], 300), vec![10, 270, 20]);
        assert_eq!(water_fill(&[10, 20], 300), vec![10, 20]);
    }
}
