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

mod check;
mod request;
mod save;

pub use check::{Problems, check, tactical_learnings};
use check::{finish, sanitize};
pub use request::{Engine, Mode, Request};
pub use save::{effects, experiment_exists, failed_effects, keys_written, messages, unique_id};

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
            mode: self.mode,
            learnings: Vec::new(),
            transient: false,
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

    /// A new, private work dir (0700, a random name) under the private work root.
    fn fresh_work_dir(&self, request_id: &str) -> anyhow::Result<PathBuf> {
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
        designed.transient = result.timed_out
            || result
                .api_error_status
                .is_some_and(|s| matches!(s, 408 | 409 | 429) || s >= 500);
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
            if let Ok(file) = read_output(&work_dir.join(name)) {
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
        let response = provider.complete(&request, None).await.map_err(|e| {
            designed.transient = e.is_transient() || e.is_account_blocked();
            e.to_string()
        })?;
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
            if let Ok(file) = read_output(&work_dir.join(name)) {
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
    Ok(opts)
}
