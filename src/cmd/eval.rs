//! `fullsend eval CASES`: the PRD's Decision and Experiment Quality Tests as a command. Each
//! case runs `think` (a `message` case) or `design --engine api` (an `idea` case) in the
//! context the case gives, with no effects; the report says per case what passed, what was
//! decided or designed, and what it cost. `--record FILE` keeps a real model's answers as a
//! replay file, so CI can run the same cases with `--provider replay:FILE`.

use std::io::Write as _;
use std::path::{Path, PathBuf};

use serde_json::{Value, json};

use crate::cmd::Env;
use crate::cmd::args::GlobalArgs;
use crate::designer::eval::DesignCase;
use crate::llm::{Provider, Recorder};
use crate::orchestrator::eval::DecisionCase;
use crate::orchestrator::think::{Orchestrator, Outcome};
use crate::support::exit::{Exit, Fail};

/// Examples shown in `--help` and the man page.
pub const EXAMPLES: &str = "\
Examples:
  fullsend eval evals/decisions.yaml --provider replay:evals/replies/decisions.jsonl
  fullsend eval evals/designs.yaml --provider replay:evals/replies/designs.jsonl
  ANTHROPIC_API_KEY=… fullsend eval evals/decisions.yaml --record evals/replies/decisions.jsonl
  fullsend eval evals/decisions.yaml --only kill | jq '.cases[] | {name, pass, reasons}'

A case file is YAML (a list of cases, or {cases: [...]}) or JSON Lines. A case with a
`message` is a decision case, one with an `idea` a design case; see evals/README.md.

Output (abridged):
  {\"v\":1,\"passed\":4,\"failed\":1,\"cost_usd\":0.21,\"cases\":[{\"name\":\"escalation\",\"pass\":true,
   \"reasons\":[],\"actions\":[\"dispatch_to_fullsend\",\"update_worklist\"],…}]}";

/// Arguments of `fullsend eval`.
#[derive(Debug, clap::Args)]
#[command(after_help = EXAMPLES)]
pub struct Args {
    /// The case file (YAML, or JSON Lines when it ends in .jsonl).
    pub cases: PathBuf,
    /// Model provider: anthropic, gemini, openai or replay:FILE [env: ORCHESTRATOR_PROVIDER,
    /// FULLSEND_PROVIDER for design cases].
    #[arg(long)]
    pub provider: Option<String>,
    /// Model id [env: ORCHESTRATOR_MODEL, FULLSEND_API_MODEL for design cases].
    #[arg(long)]
    pub model: Option<String>,
    /// Write every model answer to FILE as a replay file (JSON Lines), one per case.
    #[arg(long, value_name = "FILE")]
    pub record: Option<PathBuf>,
    /// Run only the cases whose name contains this.
    #[arg(long)]
    pub only: Option<String>,
}

/// A case of either kind.
enum Case {
    Decision(Box<DecisionCase>),
    Design(Box<DesignCase>),
}

impl Case {
    fn name(&self) -> &str {
        match self {
            Case::Decision(c) => &c.name,
            Case::Design(c) => &c.name,
        }
    }
}

/// Runs `eval`.
pub async fn run(args: Args, global: &GlobalArgs) -> anyhow::Result<Exit> {
    let env = Env::load(global, Vec::new())?;
    let mut cases = read_cases(&args.cases)?;
    if let Some(only) = &args.only {
        cases.retain(|c| c.name().contains(only.as_str()));
    }
    if cases.is_empty() {
        return Err(Fail::usage(format!(
            "{} has no cases{}",
            args.cases.display(),
            if args.only.is_some() {
                " matching --only"
            } else {
                ""
            }
        )));
    }
    let mut recorded = match &args.record {
        Some(path) => Some(
            tempfile::NamedTempFile::new_in(
                path.parent()
                    .filter(|p| !p.as_os_str().is_empty())
                    .unwrap_or(Path::new(".")),
            )
            .map_err(|e| Fail::usage(format!("--record {}: {e}", path.display())))?,
        ),
        None => None,
    };
    let mut orchestrator: Option<Orchestrator> = None;
    let mut designer: Option<crate::designer::design::Designer> = None;
    let mut reports = Vec::new();
    for case in &cases {
        let report = match case {
            Case::Decision(case) => {
                if orchestrator.is_none() {
                    let mut o = Orchestrator::from_config(
                        &env.config,
                        args.provider.as_deref(),
                        args.model.as_deref(),
                    )?;
                    o.provider.ready().map_err(|e| e.into_anyhow())?;
                    if args.record.is_some() {
                        o.provider = Provider::Recording(Recorder::new(o.provider.clone()));
                    }
                    orchestrator = Some(o);
                }
                let o = orchestrator.as_ref().expect("set above");
                let (report, key) = decision_case(o, case).await?;
                if let (Some(file), Provider::Recording(r)) = (recorded.as_mut(), &o.provider) {
                    save_answers(file, r, &key)?;
                }
                report
            }
            Case::Design(case) => {
                if designer.is_none() {
                    let mut d = crate::cmd::design::designer(
                        &env,
                        crate::designer::design::ModePolicy::Single,
                        crate::designer::design::Engine::Api,
                        None,
                        args.provider.as_deref(),
                        1,
                    )?;
                    if let Some((provider, model)) = d.api.as_mut() {
                        provider.ready().map_err(|e| e.into_anyhow())?;
                        if args.record.is_some() {
                            *provider = Provider::Recording(Recorder::new(provider.clone()));
                        }
                        if let Some(m) = &args.model {
                            *model = m.clone();
                        }
                    }
                    designer = Some(d);
                }
                let d = designer.as_ref().expect("set above");
                let report = design_case(d, case).await?;
                if let (Some(file), Some((Provider::Recording(r), _))) = (recorded.as_mut(), &d.api)
                {
                    save_answers(file, r, &case.idea)?;
                }
                report
            }
        };
        reports.push(report);
    }
    if let (Some(file), Some(path)) = (recorded, &args.record) {
        file.persist(path)
            .map_err(|e| Fail::usage(format!("--record {}: {e}", path.display())))?;
        tracing::info!("recorded the answers in {}", path.display());
    }
    let passed = reports.iter().filter(|r| r["pass"] == json!(true)).count();
    let cost: f64 = reports.iter().filter_map(|r| r["cost_usd"].as_f64()).sum();
    summary_table(&reports);
    env.emit(&json!({
        "v": 1,
        "cases_file": args.cases,
        "passed": passed,
        "failed": reports.len() - passed,
        "cost_usd": cost,
        "cases": reports,
    }))?;
    Ok(if passed == reports.len() {
        Exit::Success
    } else {
        Exit::Failed
    })
}

/// Cases from YAML (a list, or `{cases: [...]}`) or JSON Lines.
fn read_cases(path: &Path) -> anyhow::Result<Vec<Case>> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| Fail::usage(format!("reading {}: {e}", path.display())))?;
    let bad = |what: String| Fail::usage(format!("{}: {what}", path.display()));
    let items: Vec<Value> = if path.extension().is_some_and(|e| e == "jsonl") {
        text.lines()
            .enumerate()
            .filter(|(_, l)| !l.trim().is_empty())
            .map(|(n, l)| serde_json::from_str(l).map_err(|e| bad(format!("line {}: {e}", n + 1))))
            .collect::<anyhow::Result<_>>()?
    } else {
        match serde_yaml_ng::from_str::<Value>(&text).map_err(|e| bad(e.to_string()))? {
            Value::Array(items) => items,
            Value::Object(mut map) => match map.remove("cases") {
                Some(Value::Array(items)) => items,
                _ => return Err(bad("expected a list of cases, or {cases: [...]}".into())),
            },
            _ => return Err(bad("expected a list of cases".into())),
        }
    };
    let mut names = std::collections::HashSet::new();
    items
        .into_iter()
        .enumerate()
        .map(|(i, item)| {
            let case = if item.get("message").is_some() {
                Case::Decision(Box::new(
                    serde_json::from_value(item)
                        .map_err(|e| bad(format!("case {}: {e}", i + 1)))?,
                ))
            } else if item.get("idea").is_some() {
                Case::Design(Box::new(
                    serde_json::from_value(item)
                        .map_err(|e| bad(format!("case {}: {e}", i + 1)))?,
                ))
            } else {
                return Err(bad(format!(
                    "case {}: needs a `message` (a decision case) or an `idea` (a design case)",
                    i + 1
                )));
            };
            if !names.insert(case.name().to_string()) {
                return Err(bad(format!("two cases are named {:?}", case.name())));
            }
            Ok(case)
        })
        .collect()
}

/// Runs `think` on one case; the report, and the text its prompt is matched by in a replay.
async fn decision_case(o: &Orchestrator, case: &DecisionCase) -> anyhow::Result<(Value, String)> {
    let mut message = case.message.clone();
    // The message's id is in the prompt: a recorded answer is found again by it.
    let msg_id = match crate::support::msg::msg_id_of(&message) {
        Some(id) => id.to_string(),
        None => {
            let id = format!("eval-{}", case.name);
            message.insert("msg_id".into(), json!(id));
            id
        }
    };
    let ctx = case.context.to_context();
    let started = std::time::Instant::now();
    let (decision, error) = match o.decide(&message, &ctx, None).await? {
        Outcome::Decided(d) => (d, None),
        Outcome::Failed { decision, error } => (decision, Some(error.to_string())),
    };
    let mut reasons = crate::orchestrator::eval::check(&case.expect, &decision);
    if let Some(e) = &error {
        reasons.insert(0, format!("the model call failed: {e}"));
    }
    if let Some(note) = &decision.parse_note {
        reasons.push(format!("the answer was not taken as is: {note}"));
    }
    Ok((
        json!({
            "name": case.name,
            "kind": "decision",
            "pass": reasons.is_empty(),
            "reasons": reasons,
            "actions": crate::orchestrator::eval::actions_of(&decision),
            "decision": {
                "action": decision.action,
                "actions": decision.actions,
                "reasoning": decision.reasoning,
                "payload": decision.payload,
                "priority": decision.priority,
                "experiment_id": decision.experiment_id,
                "brief": decision.brief,
            },
            "usage": decision.usage,
            "cost_usd": decision.cost_usd,
            "elapsed_ms": u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX),
        }),
        msg_id,
    ))
}

/// Runs `design --engine api` on one case, writing nothing to Redis.
async fn design_case(
    d: &crate::designer::design::Designer,
    case: &DesignCase,
) -> anyhow::Result<Value> {
    let request = crate::designer::design::Request::from_idea(&case.idea, &case.context)
        .map_err(|e| Fail::usage(format!("case {}: {e}", case.name)))?;
    let or = |text: &str, none: &str| {
        if text.trim().is_empty() {
            none.to_string()
        } else {
            text.to_string()
        }
    };
    let ctx = crate::designer::design::DesignContext {
        tools: or(&case.tools, "(No tools registered yet)"),
        learnings: "(No tactical learnings yet)".into(),
        product: or(&case.product, "(No product context available)"),
    };
    let started = std::time::Instant::now();
    let (_keep, cancel) = tokio::sync::watch::channel(false);
    let designed = d.design(&request, &ctx, cancel).await?;
    let reasons = crate::designer::eval::check(&case.expect, &designed);
    Ok(json!({
        "name": case.name,
        "kind": "design",
        "pass": reasons.is_empty(),
        "reasons": reasons,
        "status": designed.status,
        "spec": designed.spec,
        "tool_request": designed.tool_request,
        "violations": designed.violations,
        "repaired": designed.repaired,
        "cost_usd": designed.cost_usd,
        "elapsed_ms": u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX),
    }))
}

/// Appends a case's recorded answers to the replay file. A design that needed a repair round
/// is saved as its last answer, so the replay designs it in one.
fn save_answers(
    file: &mut tempfile::NamedTempFile,
    recorder: &Recorder,
    key: &str,
) -> anyhow::Result<()> {
    if let Some(last) = recorder.take().last() {
        writeln!(file, "{}", crate::llm::replay_line(Some(key), last))?;
    }
    Ok(())
}

/// The per-case table on stderr.
fn summary_table(reports: &[Value]) {
    let width = reports
        .iter()
        .filter_map(|r| r["name"].as_str())
        .map(str::len)
        .max()
        .unwrap_or(4)
        .max(4);
    eprintln!("{:<width$}  {:<4}  {:<9}  outcome", "case", "pass", "cost");
    for r in reports {
        let outcome = match r["kind"].as_str() {
            Some("decision") => r["actions"]
                .as_array()
                .map(|a| {
                    a.iter()
                        .filter_map(Value::as_str)
                        .collect::<Vec<_>>()
                        .join("+")
                })
                .unwrap_or_default(),
            _ => r["status"].as_str().unwrap_or_default().to_string(),
        };
        eprintln!(
            "{:<width$}  {:<4}  {:<9}  {outcome}",
            r["name"].as_str().unwrap_or_default(),
            if r["pass"] == json!(true) {
                "ok"
            } else {
                "FAIL"
            },
            format!("${:.4}", r["cost_usd"].as_f64().unwrap_or(0.0)),
        );
        for reason in r["reasons"].as_array().into_iter().flatten() {
            eprintln!(
                "{:<width$}    - {}",
                "",
                reason.as_str().unwrap_or_default()
            );
        }
    }
}
