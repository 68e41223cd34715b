//! FULLSEND's experiment design: an idea (or an `experiment_request`) → a
//! validated experiment spec, by one Claude Code call, a six-task RALPH loop,
//! or one Messages API call; one repair round when validation fails; then the
//! Redis writes and messages that the Executor, Builder, Redis Agent and
//! Orchestrator read (planned as effects, committed atomically).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::Context;
use serde::Serialize;
use serde_json::{Map, Value, json};

use crate::bus::effects::publish;
use crate::bus::effects::{Effect, Guard};
use crate::bus::store::{self, Conn, KeyValue};
use crate::context::prompt::Prompts;
use crate::designer::spawn::{self, Agent, SpawnOptions};
use crate::llm::{ModelRequest, PromptBlock, Provider, ThinkingMode};
use crate::support::exit::Fail;

/// How the spec is produced.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, clap::ValueEnum)]
#[serde(rename_all = "snake_case")]
pub enum Mode {
    /// One coding-agent call with the design prompt.
    Single,
    /// The PRD's six-task RALPH loop.
    Ralph,
}

/// Who produces the spec.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, clap::ValueEnum)]
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
    /// The original message, whole.
    pub original: Map<String, Value>,
}

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
        Ok(Request {
            idea,
            context: text("context"),
            priority: msg
                .get("priority")
                .and_then(Value::as_str)
                .unwrap_or("medium")
                .to_string(),
            request_id,
            orchestrator_reasoning: text("orchestrator_reasoning"),
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

    fn idea_text(&self) -> String {
        match &self.idea {
            Value::String(s) => s.clone(),
            other => serde_json::to_string_pretty(other).unwrap_or_default(),
        }
    }

    /// The original run's `requests/current.md`, kept in the work dir.
    fn as_markdown(&self) -> String {
        format!(
            "# Experiment Request\n\n**Priority:** {}\n**Received:** {}\n**Request:** {}\n\n## Idea/Goal\n\n```json\n{}\n```\n\n## Context\n\n{}\n\n## Orchestrator Reasoning\n\n{}\n\n---\n*Design this experiment; write the spec as YAML.*\n",
            self.priority,
            crate::support::msg::now_iso_seconds(),
            self.request_id,
            serde_json::to_string_pretty(&self.idea).unwrap_or_default(),
            self.context,
            self.orchestrator_reasoning
        )
    }
}

/// Everything a design run needs.
#[derive(Debug, Clone)]
pub struct Designer {
    /// Prompt templates.
    pub prompts: Prompts,
    /// Single-shot or RALPH.
    pub mode: Mode,
    /// Claude Code or the API.
    pub engine: Engine,
    /// Spawner settings (agent, model, permissions) for the Claude engine.
    pub spawn: Option<SpawnOptions>,
    /// How long one agent or model call may take.
    pub timeout: std::time::Duration,
    /// Root of work dirs.
    pub work_root: PathBuf,
    /// Product context file.
    pub product_context: PathBuf,
    /// For `--engine api`.
    pub api: Option<(Provider, String)>,
    /// Channel names.
    pub channels: crate::support::config::Channels,
    /// Max RALPH iterations.
    pub max_iterations: u32,
}

/// The outcome of a design.
#[derive(Debug, Clone, Serialize)]
pub struct Designed {
    /// `ready` or `failed`.
    pub status: &'static str,
    /// The validated spec.
    pub spec: Option<Map<String, Value>>,
    /// The tool request, if the design needs a new tool.
    pub tool_request: Option<Map<String, Value>>,
    /// Why it failed.
    pub reason: Option<String>,
    /// Rule violations of the last attempt.
    pub violations: Vec<crate::designer::spec::Violation>,
    /// Whether a repair round was needed.
    pub repaired: bool,
    /// The kept work dir.
    pub work_dir: PathBuf,
    /// Coding-agent or API cost.
    pub cost_usd: f64,
    /// Engine and mode used.
    pub engine: Engine,
    /// Mode used.
    pub mode: Mode,
    /// Tactical learnings the designer wrote alongside the spec.
    pub learnings: Vec<String>,
}

/// Context given to the designer: available tools, recent tactical learnings, product context.
#[derive(Debug, Clone, Default)]
pub struct DesignContext {
    /// `- name: description` lines.
    pub tools: String,
    /// Recent tactical learnings.
    pub learnings: String,
    /// product_context.md.
    pub product: String,
}

/// Loads the designer's context (Redis optional: missing parts are empty).
pub async fn load_context(conn: Option<&mut Conn>, product_context: &Path) -> DesignContext {
    let mut ctx = DesignContext {
        product: std::fs::read_to_string(product_context).unwrap_or_default(),
        ..Default::default()
    };
    if let Some(conn) = conn {
        let mut loader = crate::context::loader::Loader::default();
        let full = loader
            .load(Path::new("/nonexistent-fullsend-dir"), Some(conn))
            .await;
        ctx.tools = full
            .tools
            .iter()
            .map(|t| {
                format!(
                    "- {}: {}",
                    t.name,
                    crate::context::prompt::one_line(&t.description, 200)
                )
            })
            .collect::<Vec<_>>()
            .join("\n");
        ctx.learnings = full
            .tactical_learnings
            .iter()
            .take(20)
            .map(|t| {
                format!(
                    "- {} {}",
                    crate::context::prompt::one_line(&t.text, 300),
                    if t.experiment_id.is_empty() {
                        String::new()
                    } else {
                        format!("({})", t.experiment_id)
                    }
                )
            })
            .collect::<Vec<_>>()
            .join("\n");
    }
    if ctx.tools.is_empty() {
        ctx.tools = "(No tools registered yet)".into();
    }
    if ctx.learnings.is_empty() {
        ctx.learnings = "(No tactical learnings yet)".into();
    }
    if ctx.product.trim().is_empty() {
        ctx.product = "(No product context available)".into();
    }
    ctx
}

/// The six RALPH design tasks of the PRD.
pub const RALPH_DESIGN_TASKS: [&str; 6] = [
    "Research the target audience and validate the idea is feasible",
    "Check available tools and identify what's needed",
    "Design the experiment spec with hypothesis and metrics",
    "Write the outreach template (actual copy, not placeholders)",
    "Define success/failure criteria and schedule",
    "Output final experiment YAML to experiment_spec.yaml",
];

impl Designer {
    /// Designs a spec for `request`. Never touches Redis; the caller commits [`effects`].
    pub async fn design(
        &self,
        request: &Request,
        ctx: &DesignContext,
        cancel: tokio::sync::watch::Receiver<bool>,
    ) -> anyhow::Result<Designed> {
        let work_dir = self.fresh_work_dir(&request.request_id)?;
        std::fs::write(work_dir.join("request.md"), request.as_markdown())
            .context("writing request.md")?;
        let today = jiff::Zoned::now().strftime("%Y-%m-%d").to_string();
        let today_compact = jiff::Zoned::now().strftime("%Y%m%d").to_string();
        let vars = BTreeMap::from([
            ("idea", request.idea_text()),
            (
                "context",
                if request.context.trim().is_empty() {
                    "(none)".to_string()
                } else {
                    request.context.clone()
                },
            ),
            ("product_context", ctx.product.clone()),
            ("available_tools", ctx.tools.clone()),
            ("recent_learnings", ctx.learnings.clone()),
            ("today", today.clone()),
            ("today_compact", today_compact),
        ]);
        let mut designed = Designed {
            status: "failed",
            spec: None,
            tool_request: None,
            reason: None,
            violations: Vec::new(),
            repaired: false,
            work_dir: work_dir.clone(),
            cost_usd: 0.0,
            engine: self.engine,
            mode: self.mode,
            learnings: Vec::new(),
        };
        let first = match (self.engine, self.mode) {
            (Engine::Api, _) => {
                self.ask_api(&self.prompts.render("design.txt", &vars)?, &mut designed)
                    .await
            }
            (Engine::Claude, Mode::Single) => {
                self.ask_agent(
                    &self.prompts.render("design.txt", &vars)?,
                    &work_dir,
                    "design",
                    &mut designed,
                    cancel.clone(),
                )
                .await
            }
            (Engine::Claude, Mode::Ralph) => {
                self.run_ralph(&vars, &work_dir, &mut designed, cancel.clone())
                    .await
            }
        };
        let text = match first {
            Ok(text) => text,
            Err(reason) => {
                designed.reason = Some(reason);
                return Ok(designed);
            }
        };
        std::fs::write(work_dir.join("output-1.txt"), &text).context("keeping the output")?;
        match check(&text) {
            Ok((spec, tool)) => Ok(finish(designed, spec, tool, &text)),
            Err(problems) => {
                tracing::warn!("spec invalid, one repair round: {}", problems.summary());
                designed.violations = problems.violations.clone();
                designed.repaired = true;
                let mut repair_vars = BTreeMap::from([
                    ("previous", crate::support::msg::preview(&text, 20_000)),
                    ("errors", problems.summary()),
                    ("today", today),
                ]);
                repair_vars.insert("idea", request.idea_text());
                let prompt = self.prompts.render("design_repair.txt", &repair_vars)?;
                let second = match self.engine {
                    Engine::Api => self.ask_api(&prompt, &mut designed).await,
                    Engine::Claude => {
                        self.ask_agent(&prompt, &work_dir, "repair", &mut designed, cancel)
                            .await
                    }
                };
                let text = match second {
                    Ok(t) => t,
                    Err(reason) => {
                        designed.reason = Some(format!("repair round failed: {reason}"));
                        return Ok(designed);
                    }
                };
                std::fs::write(work_dir.join("output-2.txt"), &text)
                    .context("keeping the output")?;
                match check(&text) {
                    Ok((spec, tool)) => Ok(finish(designed, spec, tool, &text)),
                    Err(problems) => {
                        designed.violations = problems.violations.clone();
                        designed.reason = Some(format!(
                            "the spec is still invalid after one repair round: {}",
                            problems.summary()
                        ));
                        Ok(designed)
                    }
                }
            }
        }
    }

    fn fresh_work_dir(&self, request_id: &str) -> anyhow::Result<PathBuf> {
        std::fs::create_dir_all(&self.work_root)
            .with_context(|| format!("creating {}", self.work_root.display()))?;
        let stamp = jiff::Timestamp::now().strftime("%Y%m%dT%H%M%S").to_string();
        let uid = crate::support::msg::new_msg_id();
        let dir = self.work_root.join(format!(
            "design_{stamp}_{}_{}",
            &uid[uid.len() - 6..],
            sanitize(request_id)
        ));
        std::fs::create_dir(&dir)
            .with_context(|| format!("creating the work dir {}", dir.display()))?;
        Ok(dir)
    }

    async fn ask_agent(
        &self,
        prompt: &str,
        work_dir: &Path,
        label: &str,
        designed: &mut Designed,
        cancel: tokio::sync::watch::Receiver<bool>,
    ) -> Result<String, String> {
        let Some(mut opts) = self.spawn.clone() else {
            return Err("no coding agent configured".into());
        };
        opts.work_dir = work_dir.to_path_buf();
        opts.label = label.to_string();
        let result = spawn::spawn(&opts, prompt, cancel)
            .await
            .map_err(|e| format!("{e:#}"))?;
        designed.cost_usd += result.total_cost_usd;
        if result.timed_out {
            return Err(format!(
                "Timeout - the coding agent took longer than {}s",
                opts.timeout.as_secs()
            ));
        }
        if !result.ok {
            return Err(result
                .error
                .unwrap_or_else(|| "the coding agent failed".into()));
        }
        // The agent may have written the spec to a file instead of answering with it.
        let mut text = result.result;
        for name in ["experiment_spec.yaml", "tool_request.yaml"] {
            if let Ok(file) = std::fs::read_to_string(work_dir.join(name)) {
                text.push_str(&format!("\n\n```yaml\n{file}\n```\n"));
            }
        }
        Ok(text)
    }

    async fn ask_api(&self, prompt: &str, designed: &mut Designed) -> Result<String, String> {
        let Some((provider, model)) = &self.api else {
            return Err("no API provider configured".into());
        };
        let request = ModelRequest {
            model: model.clone(),
            system: Vec::new(),
            user: vec![PromptBlock {
                text: prompt.to_string(),
                cache: false,
            }],
            max_tokens: 16000,
            thinking: ThinkingMode::Auto,
            thinking_budget: 4000,
            effort: None,
            timeout: self.timeout,
            max_retries: 2,
        };
        let response = provider
            .complete(&request, None)
            .await
            .map_err(|e| e.to_string())?;
        designed.cost_usd +=
            crate::llm::price::cost(&response.model, &response.usage).unwrap_or(0.0);
        Ok(response.text)
    }

    async fn run_ralph(
        &self,
        vars: &BTreeMap<&str, String>,
        work_dir: &Path,
        designed: &mut Designed,
        cancel: tokio::sync::watch::Receiver<bool>,
    ) -> Result<String, String> {
        let initial = self
            .prompts
            .render("design_ralph_context.txt", vars)
            .map_err(|e| format!("{e:#}"))?;
        let titles: Vec<String> = RALPH_DESIGN_TASKS
            .iter()
            .map(|t| (*t).to_string())
            .collect();
        crate::designer::ralph::setup(work_dir, &titles, &initial).map_err(|e| format!("{e:#}"))?;
        let Some(mut spawn) = self.spawn.clone() else {
            return Err("no coding agent configured".into());
        };
        spawn.work_dir = work_dir.to_path_buf();
        let opts = ralph_options(
            &self.prompts,
            spawn,
            self.max_iterations,
            None,
            None,
            None,
            String::new(),
        )
        .map_err(|e| format!("{e:#}"))?;
        let summary =
            crate::designer::ralph::run(opts, &crate::designer::ralph::NoProgress, cancel)
                .await
                .map_err(|e| format!("{e:#}"))?;
        designed.cost_usd += summary.cost_usd;
        if summary.status != crate::designer::ralph::RalphStatus::Complete {
            return Err(format!(
                "RALPH design ended {:?}: {}",
                summary.status,
                summary.reason.unwrap_or_default()
            ));
        }
        let mut text = String::new();
        for name in ["experiment_spec.yaml", "tool_request.yaml"] {
            if let Ok(file) = std::fs::read_to_string(work_dir.join(name)) {
                text.push_str(&format!("```yaml\n{file}\n```\n\n"));
            }
        }
        if text.is_empty() {
            return Err("the RALPH loop did not produce experiment_spec.yaml".into());
        }
        Ok(text)
    }
}

/// Renders every design prompt with placeholder values, so that a broken
/// override stops a listener at start rather than failing each message.
pub fn check_prompts(prompts: &Prompts) -> anyhow::Result<()> {
    let x = || "x".to_string();
    let design_vars = BTreeMap::from([
        ("idea", x()),
        ("context", x()),
        ("product_context", x()),
        ("available_tools", x()),
        ("recent_learnings", x()),
        ("today", x()),
        ("today_compact", x()),
    ]);
    prompts.render("design.txt", &design_vars)?;
    prompts.render("design_ralph_context.txt", &design_vars)?;
    prompts.render(
        "design_repair.txt",
        &BTreeMap::from([
            ("previous", x()),
            ("errors", x()),
            ("today", x()),
            ("idea", x()),
        ]),
    )?;
    prompts.render(
        "ralph_task.txt",
        &BTreeMap::from([("task_id", x()), ("task_title", x())]),
    )?;
    prompts.render("ralph_breakdown.txt", &BTreeMap::from([("goal", x())]))?;
    Ok(())
}

/// RALPH options with the task and breakdown prompts rendered from `prompts`.
pub fn ralph_options(
    prompts: &Prompts,
    spawn: SpawnOptions,
    max_iterations: u32,
    total_timeout: Option<Duration>,
    budget_usd: Option<f64>,
    goal: Option<String>,
    initial_context: String,
) -> anyhow::Result<crate::designer::ralph::RalphOptions> {
    let (task_template, _) = prompts.source("ralph_task.txt")?;
    let (breakdown_template, _) = prompts.source("ralph_breakdown.txt")?;
    // Render once up front so a broken override fails before any agent runs.
    crate::context::prompt::render_str(
        &task_template,
        &BTreeMap::from([
            ("task_id", "TASK-001".to_string()),
            ("task_title", "x".to_string()),
        ]),
    )
    .map_err(Fail::usage)?;
    crate::context::prompt::render_str(
        &breakdown_template,
        &BTreeMap::from([("goal", "x".to_string())]),
    )
    .map_err(Fail::usage)?;
    Ok(crate::designer::ralph::RalphOptions {
        spawn,
        max_iterations,
        max_attempts_per_task: 3,
        max_consecutive_failures: 3,
        total_timeout,
        budget_usd,
        goal,
        initial_context,
        task_prompt: Box::new(move |task| {
            crate::context::prompt::render_str(
                &task_template,
                &BTreeMap::from([
                    ("task_id", task.id.clone()),
                    ("task_title", task.title.clone()),
                ]),
            )
            .unwrap_or_default()
        }),
        breakdown_prompt: Box::new(move |goal| {
            crate::context::prompt::render_str(
                &breakdown_template,
                &BTreeMap::from([("goal", goal.to_string())]),
            )
            .unwrap_or_default()
        }),
    })
}

/// Why an output is not a valid spec.
#[derive(Debug, Clone)]
pub struct Problems {
    /// Rule violations (empty when extraction itself failed).
    pub violations: Vec<crate::designer::spec::Violation>,
    /// Extraction error.
    pub error: Option<String>,
}

impl Problems {
    /// One line per problem.
    pub fn summary(&self) -> String {
        let mut lines: Vec<String> = self
            .violations
            .iter()
            .map(|v| format!("- {} ({}): {}", v.rule, v.field, v.message))
            .collect();
        if let Some(e) = &self.error {
            lines.insert(0, format!("- {e}"));
        }
        lines.join("\n")
    }
}

/// A validated spec and its tool request, if any.
pub type Checked = (Map<String, Value>, Option<Map<String, Value>>);

/// Extracts, normalises and validates a spec (and its tool request) from model output.
pub fn check(text: &str) -> Result<Checked, Problems> {
    let extracted = crate::designer::spec::extract(text).map_err(|e| Problems {
        violations: Vec::new(),
        error: Some(e),
    })?;
    let mut spec = extracted.experiment;
    crate::designer::spec::normalize(&mut spec);
    let mut violations = crate::designer::spec::validate(&spec);
    if let Some(tool) = &extracted.tool_request {
        violations.extend(crate::designer::spec::validate_tool_request(tool));
    }
    if violations.is_empty() {
        Ok((spec, extracted.tool_request))
    } else {
        Err(Problems {
            violations,
            error: None,
        })
    }
}

fn finish(
    mut designed: Designed,
    mut spec: Map<String, Value>,
    tool: Option<Map<String, Value>>,
    output: &str,
) -> Designed {
    designed.learnings = tactical_learnings(output);
    spec.entry("created_at")
        .or_insert_with(|| json!(crate::support::msg::now_iso_seconds()));
    designed.status = "ready";
    designed.spec = Some(spec);
    designed.tool_request = tool;
    designed.violations.clear();
    designed
}

/// Tactical learnings the designer wrote alongside the spec: a
/// `tactical_learnings:` list (of text, or of `{text}`/`{learning}` maps) in any
/// YAML block. At most ten, each at most 1,000 characters.
pub fn tactical_learnings(output: &str) -> Vec<String> {
    let mut docs: Vec<String> = crate::llm::extract::fenced_blocks(output)
        .into_iter()
        .map(|(_, body)| body)
        .collect();
    docs.push(output.to_string());
    let mut out: Vec<String> = Vec::new();
    for doc in docs {
        let Ok(Value::Object(map)) = serde_yaml_ng::from_str::<Value>(&doc) else {
            continue;
        };
        let Some(Value::Array(items)) = map.get("tactical_learnings") else {
            continue;
        };
        for item in items {
            let text = match item {
                Value::String(s) => s.clone(),
                Value::Object(o) => o
                    .get("text")
                    .or_else(|| o.get("learning"))
                    .and_then(Value::as_str)
                    .unwrap_or("")
                    .to_string(),
                _ => String::new(),
            };
            let text = text.trim().chars().take(1000).collect::<String>();
            if !text.is_empty() && !out.contains(&text) && out.len() < 10 {
                out.push(text);
            }
        }
    }
    out
}

fn sanitize(text: &str) -> String {
    text.chars()
        .filter(|c| c.is_ascii_alphanumeric() || *c == '_' || *c == '-')
        .take(40)
        .collect()
}

/// The experiment id to use: the spec's, or with `_2`, `_3`, … when taken.
pub async fn unique_id(conn: &mut Conn, id: &str) -> anyhow::Result<String> {
    for n in 1..100 {
        let candidate = if n == 1 {
            id.to_string()
        } else {
            format!("{id}_{n}")
        };
        let exists: bool = redis::cmd("EXISTS")
            .arg(format!("experiments:{candidate}"))
            .query_async(conn)
            .await?;
        if !exists {
            return Ok(candidate);
        }
    }
    Err(anyhow::anyhow!("no free experiment id near {id}"))
}

/// The Redis writes and messages of a designed spec (fullsend-system.md §2, §6).
pub fn effects(
    spec: &Map<String, Value>,
    tool: Option<&Map<String, Value>>,
    learnings: &[String],
    request: &Request,
    channels: &crate::support::config::Channels,
    cause: &Map<String, Value>,
) -> anyhow::Result<Vec<Effect>> {
    let id = spec
        .get("id")
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_string();
    if !crate::designer::spec::valid_experiment_id(&id) && !crate::support::msg::valid_key_id(&id) {
        return Err(Fail::usage(format!(
            "invalid experiment id {:?}",
            crate::support::msg::preview(&id, 40)
        )));
    }
    let now = crate::support::msg::now_iso_seconds();
    let execution = spec
        .get("execution")
        .and_then(Value::as_object)
        .cloned()
        .unwrap_or_default();
    let schedule = crate::designer::cron::strip_comment(
        execution
            .get("schedule")
            .and_then(Value::as_str)
            .unwrap_or_default(),
    );
    let timezone = execution
        .get("timezone")
        .and_then(Value::as_str)
        .unwrap_or("UTC")
        .to_string();
    let tool_name = execution
        .get("tool")
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_string();
    let hypothesis = spec
        .get("hypothesis")
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_string();
    // A spec whose tool still has to be built waits in draft; otherwise the
    // Executor's cron mode (which needs `ready`) can pick it up.
    let state = if tool.is_some() { "draft" } else { "ready" };
    let mut full = spec.clone();
    full.insert("state".into(), json!(state));
    let yaml = crate::designer::spec::to_yaml(&full).map_err(|e| anyhow::anyhow!(e))?;
    let jsonish = |v: Option<&Value>| v.map(Value::to_string).unwrap_or_else(|| "[]".into());
    let fields = BTreeMap::from([
        ("id".to_string(), id.clone()),
        ("experiment_id".to_string(), id.clone()),
        ("name".to_string(), crate::support::msg::preview(&hypothesis, 120)),
        ("summary".to_string(), hypothesis.clone()),
        ("hypothesis".to_string(), hypothesis.clone()),
        ("state".to_string(), state.to_string()),
        ("status".to_string(), state.to_string()),
        ("spec".to_string(), yaml.clone()),
        ("spec_json".to_string(), Value::Object(full.clone()).to_string()),
        ("execution".to_string(), json!({"tool": tool_name, "params": execution.get("params").cloned().unwrap_or(json!({}))}).to_string()),
        ("tool".to_string(), tool_name.clone()),
        ("params".to_string(), execution.get("params").cloned().unwrap_or(json!({})).to_string()),
        ("schedule".to_string(), schedule.clone()),
        ("timezone".to_string(), timezone.clone()),
        ("success_criteria".to_string(), jsonish(spec.get("success_criteria"))),
        ("failure_criteria".to_string(), jsonish(spec.get("failure_criteria"))),
        ("metrics".to_string(), jsonish(spec.get("metrics"))),
        ("request_id".to_string(), request.request_id.clone()),
        ("source".to_string(), "fullsend".to_string()),
        ("created_at".to_string(), now.clone()),
        ("updated_at".to_string(), now.clone()),
    ]);
    let metrics = spec.get("metrics").cloned().unwrap_or(json!([]));
    let metrics_yaml = serde_yaml_ng::to_string(&metrics).unwrap_or_default();
    let mut out = vec![
        Effect::HashSet {
            key: format!("experiments:{id}"),
            fields,
            guard: Guard::MustNotExist,
        },
        Effect::HashSet {
            key: format!("metrics_specs:{id}"),
            fields: BTreeMap::from([
                ("metrics_yaml".to_string(), metrics_yaml),
                ("metrics".to_string(), metrics.to_string()),
                ("experiment_id".to_string(), id.clone()),
                ("source".to_string(), "fullsend".to_string()),
                ("created_at".to_string(), now.clone()),
            ]),
            guard: Guard::None,
        },
        // The Executor GETs a bare cron string here.
        Effect::SetString {
            key: format!("schedules:{id}"),
            value: schedule.clone(),
        },
    ];
    let mut needs_tool = false;
    if let Some(tool) = tool {
        needs_tool = true;
        let name = tool
            .get("name")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_string();
        let req_id = format!(
            "req_{}_{}",
            jiff::Zoned::now().strftime("%Y%m%d"),
            &crate::support::msg::new_msg_id()[24..]
        );
        let mut prd = tool.clone();
        prd.insert("id".into(), json!(req_id));
        prd.insert("requested_by".into(), json!("fullsend"));
        prd.insert("experiment_blocked".into(), json!(id));
        prd.entry("tool_name").or_insert_with(|| json!(name));
        out.push(Effect::HashSet {
            key: format!("tool_requests:{req_id}"),
            fields: BTreeMap::from([
                (
                    "spec".to_string(),
                    serde_yaml_ng::to_string(&json!({"tool_request": prd})).unwrap_or_default(),
                ),
                (
                    "spec_json".to_string(),
                    Value::Object(prd.clone()).to_string(),
                ),
                ("name".to_string(), name.clone()),
                ("state".to_string(), "pending".to_string()),
                ("requested_by".to_string(), "fullsend".to_string()),
                ("experiment_id".to_string(), id.clone()),
                ("created_at".to_string(), now.clone()),
            ]),
            guard: Guard::None,
        });
        out.push(Effect::SetAdd {
            key: format!("pending_experiments:{name}"),
            members: vec![id.clone()],
        });
        out.push(publish(
            &channels.builder_tasks,
            obj(json!({"type": "tool_prd", "prd": prd, "requested_by": "fullsend", "priority": tool.get("priority").cloned().unwrap_or(json!(request.priority)), "request_id": req_id, "experiment_blocked": id, "requested_at": crate::support::msg::now_iso_micros(), "source": "fullsend"})),
            cause,
        ));
        out.push(publish(
            "fullsend:builder_requests",
            obj(json!({"type": "tool_requested", "request_id": req_id, "tool_name": name, "source": "fullsend", "spec_key": format!("tool_requests:{req_id}")})),
            cause,
        ));
    }
    // Tactical learnings go through the same code as `fullsend learn append --tactical`.
    for learning in learnings {
        out.extend(crate::context::learn::tactical_effects(
            learning,
            Some(&id),
            "fullsend",
        ));
    }
    out.push(publish("fullsend:experiments", obj(json!({"type": "experiment_created", "experiment_id": id, "source": "fullsend", "spec_key": format!("experiments:{id}")})), cause));
    out.push(publish(
        "fullsend:schedules",
        obj(json!({"type": "schedule_created", "experiment_id": id, "schedule": schedule, "timezone": timezone, "source": "fullsend"})),
        cause,
    ));
    out.push(publish(
        &channels.to_orchestrator,
        obj(json!({"type": "experiment_ready", "source": "fullsend", "experiment_id": id, "summary": hypothesis, "has_schedule": !schedule.is_empty(), "needs_tool": needs_tool, "request_id": request.request_id})),
        cause,
    ));
    Ok(out)
}

/// The `design_failed` message for the Orchestrator.
pub fn failed_effects(
    reason: &str,
    request: Option<&Request>,
    original: &Map<String, Value>,
    channels: &crate::support::config::Channels,
    work_dir: Option<&Path>,
) -> Vec<Effect> {
    vec![publish(
        &channels.to_orchestrator,
        obj(json!({
            "type": "design_failed",
            "source": "fullsend",
            "reason": reason,
            "request_id": request.map(|r| r.request_id.clone()),
            "original_request": Value::Object(original.clone()),
            "work_dir": work_dir,
        })),
        original,
    )]
}

/// The keys a list of effects writes, for reports.
pub fn keys_written(effects: &[Effect]) -> Vec<String> {
    effects
        .iter()
        .filter_map(|e| match e {
            Effect::HashSet { key, .. }
            | Effect::SetString { key, .. }
            | Effect::SetAdd { key, .. }
            | Effect::SortedAdd { key, .. }
            | Effect::Delete { key } => Some(key.clone()),
            _ => None,
        })
        .collect()
}

/// The messages a list of effects publishes: (channel, type).
pub fn messages(effects: &[Effect]) -> Vec<Value> {
    effects
        .iter()
        .filter_map(|e| match e {
            Effect::Publish { channel, message } => Some(json!({"channel": channel, "type": message.get("type"), "msg_id": message.get("msg_id")})),
            _ => None,
        })
        .collect()
}

fn obj(v: Value) -> Map<String, Value> {
    match v {
        Value::Object(m) => m,
        _ => Map::new(),
    }
}

/// Reads one experiment hash (for tests and `run_direct`).
pub async fn experiment_exists(conn: &mut Conn, id: &str) -> anyhow::Result<bool> {
    let values = store::read_many(conn, &[format!("experiments:{id}")], Some(&["state"])).await?;
    Ok(matches!(
        values.first(),
        Some(KeyValue::Hash(_) | KeyValue::Text(_))
    ))
}

/// Spawner options from configuration.
pub fn spawn_options(
    cfg: &crate::support::config::Config,
    agent: Option<Agent>,
    work_dir: PathBuf,
) -> anyhow::Result<SpawnOptions> {
    let agent = match agent {
        Some(a) => a,
        None => Agent::Claude(spawn::find_claude(cfg.claude_bin().as_deref())?),
    };
    let mut opts = SpawnOptions::new(agent, work_dir);
    opts.model = cfg.fullsend_model();
    opts.timeout = cfg.fullsend_timeout()?;
    opts.skip_permissions = cfg.skip_permissions()?;
    opts.sandbox = cfg.is_sandbox()?;
    Ok(opts)
}
