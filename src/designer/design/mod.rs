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
use serde_json::{Map, Value};

use crate::bus::store::Conn;
use crate::context::prompt::Prompts;
use crate::designer::spawn::{self, Agent, SpawnOptions};
use crate::llm::{ModelRequest, PromptBlock, Provider, ThinkingMode};
use crate::support::exit::Fail;

mod agent;
mod check;
mod request;
mod save;

pub use check::{Problems, check, tactical_learnings};
use check::{finish, sanitize};
pub use request::{Engine, Mode, ModePolicy, Request};
pub use save::{effects, experiment_exists, failed_effects, keys_written, messages, unique_id};

/// Everything a design run needs.
#[derive(Debug, Clone)]
pub struct Designer {
    /// Prompt templates.
    pub prompts: Prompts,
    /// How a request's mode is chosen when it does not say.
    pub mode: ModePolicy,
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
    /// The agent's skills (`fullsend mcp`); None: the agent gets none.
    pub skills: Option<crate::designer::skills::McpWiring>,
    /// The built tools, added read-only to every agent call when the directory exists.
    pub tools_dir: Option<PathBuf>,
    /// The CLI's own WebFetch/WebSearch, an opt-in (they can carry data out).
    pub cli_web: bool,
    /// What one design may spend, all its agent calls together.
    pub budget_usd: Option<f64>,
    /// The whole-run deadline of a RALPH design.
    pub ralph_deadline: Option<Duration>,
    /// `--max-turns` per agent call.
    pub max_turns: Option<u32>,
    /// Where the day's spend is counted and limited (Redis); None: not counted here.
    pub spend: Option<crate::designer::purse::DailySpend>,
    /// Gets a RALPH design's per-task progress.
    pub progress: Option<crate::designer::ralph::Reporter>,
}

/// One run's mode, scope (ids, work dir) and money.
pub(crate) struct Run {
    pub(crate) mode: Mode,
    pub(crate) scope: crate::designer::skills::Scope,
    pub(crate) purse: std::sync::Arc<crate::designer::purse::Purse>,
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
    /// The agent sessions of the run (`--session-id`), in call order.
    pub session_ids: Vec<String>,
    /// The failure is worth retrying later (a 429/529/5xx, a timeout, a refused account): a
    /// daemon keeps the request queued instead of announcing `design_failed`.
    #[serde(skip)]
    pub transient: bool,
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
        let mode = request.mode_under(self.mode);
        let run = self.run_for(&request.request_id, None, &work_dir, mode);
        std::fs::write(work_dir.join("request.md"), request.as_markdown())
            .context("writing request.md")?;
        let today = jiff::Zoned::now().strftime("%Y-%m-%d").to_string();
        let today_compact = jiff::Zoned::now().strftime("%Y%m%d").to_string();
        let vars = BTreeMap::from([
            ("idea", request.idea_text()),
            ("context", request.context_text()),
            ("similar_experiments", request.similar_text()),
            ("relevant_learnings", request.learnings_text()),
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
            mode,
            learnings: Vec::new(),
            session_ids: Vec::new(),
            transient: false,
        };
        let first = match (self.engine, mode) {
            (Engine::Api, _) => {
                self.ask_api(
                    &self.prompts.render("design.txt", &vars)?,
                    &run,
                    &mut designed,
                )
                .await
            }
            (Engine::Claude, Mode::Single) => {
                self.ask_agent(
                    &self.prompts.render("design.txt", &vars)?,
                    &run,
                    "design",
                    &mut designed,
                    cancel.clone(),
                )
                .await
            }
            (Engine::Claude, Mode::Ralph) => {
                self.run_ralph(&vars, &run, &mut designed, cancel.clone())
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
                    Engine::Api => self.ask_api(&prompt, &run, &mut designed).await,
                    Engine::Claude => {
                        self.ask_agent(&prompt, &run, "repair", &mut designed, cancel)
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

    /// Ties every agent call of this designer to `msg`'s trace (`TRACEPARENT`).
    pub fn trace(&mut self, msg: &Map<String, Value>, identity: &str) {
        if let Some(spawn) = self.spawn.as_mut() {
            spawn.traceparent = Some(crate::support::msg::traceparent(
                &crate::support::msg::trace_id_of(msg, Some(identity)),
            ));
        }
    }

    /// A run in `work_dir` for `request_id`: the skills' run id, and a purse with the design's
    /// budget drawing on the day's spend. The run id is the request's own, so a redelivered
    /// request's agent that records the same learning (the same idempotency key) records it
    /// once.
    pub(crate) fn run_for(
        &self,
        request_id: &str,
        experiment_id: Option<String>,
        work_dir: &Path,
        mode: Mode,
    ) -> Run {
        Run {
            mode,
            scope: crate::designer::skills::Scope {
                run_id: match sanitize(request_id) {
                    id if id.is_empty() => uuid::Uuid::now_v7().simple().to_string(),
                    id => id,
                },
                request_id: request_id.to_string(),
                experiment_id,
                work_dir: std::fs::canonicalize(work_dir)
                    .unwrap_or_else(|_| work_dir.to_path_buf()),
            },
            purse: std::sync::Arc::new(crate::designer::purse::Purse::new(
                self.budget_usd,
                self.spend.clone(),
            )),
        }
    }

    /// A new, private work dir (0700, a random name) under the private work root.
    pub(crate) fn fresh_work_dir(&self, request_id: &str) -> anyhow::Result<PathBuf> {
        crate::support::files::private_dir(&self.work_root, false)
            .with_context(|| format!("the work root {}", self.work_root.display()))?;
        let stamp = jiff::Timestamp::now().strftime("%Y%m%dT%H%M%S").to_string();
        let dir = tempfile::Builder::new()
            .prefix(&format!("design_{stamp}_{}_", sanitize(request_id)))
            .permissions(std::os::unix::fs::PermissionsExt::from_mode(0o700))
            .tempdir_in(&self.work_root)
            .with_context(|| format!("creating a work dir in {}", self.work_root.display()))?;
        // Kept after the run: the call logs are how an operator reviews what the agent did.
        Ok(dir.keep())
    }

    async fn ask_api(
        &self,
        prompt: &str,
        run: &Run,
        designed: &mut Designed,
    ) -> Result<String, String> {
        let Some((provider, model)) = &self.api else {
            return Err("no API provider configured".into());
        };
        if let Err(exhausted) = run.purse.left().await {
            designed.transient = exhausted.daily;
            return Err(exhausted.reason);
        }
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
        let response = provider.complete(&request, None).await.map_err(|e| {
            designed.transient = e.is_transient() || e.is_account_blocked();
            e.to_string()
        })?;
        let cost = crate::llm::price::cost(&response.model, &response.usage).unwrap_or(0.0);
        run.purse.record(cost, &response.model).await;
        designed.cost_usd += cost;
        Ok(response.text)
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
        ("similar_experiments", x()),
        ("relevant_learnings", x()),
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
    prompts.render(
        "direct_run.txt",
        &BTreeMap::from([
            ("task", x()),
            ("experiment", x()),
            ("product_context", x()),
            ("available_tools", x()),
        ]),
    )?;
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
        purse: None,
        verdict_schema: None,
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

/// A validated spec and its tool request, if any.
pub type Checked = (Map<String, Value>, Option<Map<String, Value>>);

/// The largest spec file the agent may leave behind.
const MAX_SPEC_FILE: u64 = 1024 * 1024;

/// Reads a file the agent wrote in its work dir: a regular file, not a symlink the agent planted
/// to make fullsend read something else into the spec.
fn read_output(path: &Path) -> anyhow::Result<String> {
    crate::support::files::read_no_follow(path, MAX_SPEC_FILE)
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
    opts.bash_allow = cfg.agent_bash_allow();
    opts.stall_timeout = cfg.agent_stall_timeout()?;
    Ok(opts)
}
