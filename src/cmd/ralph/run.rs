//! `fullsend ralph run`: the RALPH loop over TASKS.md / STATUS.md in a work
//! dir. A progress bar on a TTY (stderr); a JSON summary on stdout. Exit 0
//! when complete, 4 when a limit stopped it, 1 when it failed or stalled.

use std::path::PathBuf;
use std::time::Duration;

use crate::cmd::Env;
use crate::cmd::args::GlobalArgs;
use crate::designer::ralph::{Progress, RalphStatus, RalphSummary, Task};
use crate::designer::spawn::SpawnResult;
use crate::support::exit::{Exit, Fail};

/// Examples shown in `--help` and the man page.
pub const EXAMPLES: &str = "\
Examples:
  fullsend ralph run --work-dir ./exp --goal 'Design a cold-email test for YC founders'
  fullsend ralph run --work-dir ./exp --max-iterations 20 --budget 2.50   # resumes at the first open task

Output (abridged):
  {\"status\":\"complete\",\"iterations\":6,\"tasks\":[{\"id\":\"TASK-001\",\"title\":\"…\",\"done\":true,\"attempts\":1},…],
   \"tasks_done\":6,\"tasks_total\":6,\"cost_usd\":0.41,\"work_dir\":\"./exp\",\"elapsed_ms\":183000,\"reason\":null}";

/// Arguments of `fullsend ralph run`.
#[derive(Debug, clap::Args)]
#[command(after_help = EXAMPLES)]
pub struct Args {
    /// The work dir holding TASKS.md and STATUS.md.
    #[arg(long, value_name = "DIR")]
    pub work_dir: PathBuf,
    /// Create TASKS.md first with a task-breakdown call.
    #[arg(long)]
    pub goal: Option<String>,
    /// Context written into a new STATUS.md.
    #[arg(long, default_value = "")]
    pub context: String,
    /// Most agent calls.
    #[arg(long, default_value_t = 50, env = "RALPH_MAX_ITERS")]
    pub max_iterations: u32,
    /// Attempts per task before the loop counts as stalled.
    #[arg(long, default_value_t = 3)]
    pub max_attempts: u32,
    /// Total seconds for the loop.
    #[arg(long, value_name = "SECS")]
    pub timeout: Option<f64>,
    /// Seconds per agent call [env: FULLSEND_TIMEOUT].
    #[arg(long, value_name = "SECS")]
    pub call_timeout: Option<f64>,
    /// Stop when the summed cost reaches this many USD.
    #[arg(long, value_name = "USD")]
    pub budget: Option<f64>,
    /// Coding agent command instead of claude (no shell; the prompt is on its stdin).
    #[arg(long)]
    pub agent: Option<String>,
    /// Path of the claude executable [env: FULLSEND_CLAUDE_BIN].
    #[arg(long)]
    pub claude_bin: Option<PathBuf>,
    /// Tools the agent may use (comma-separated).
    #[arg(long, value_delimiter = ',')]
    pub allowed_tools: Option<Vec<String>>,
}

/// Runs `ralph run`.
pub async fn run(args: Args, global: &GlobalArgs) -> anyhow::Result<Exit> {
    let mut flags = Vec::new();
    if let Some(p) = &args.claude_bin {
        flags.push(("claude_bin", p.display().to_string()));
    }
    if let Some(t) = args.call_timeout {
        flags.push(("fullsend_timeout", t.to_string()));
    }
    let env = Env::load(global, flags)?;
    std::fs::create_dir_all(&args.work_dir)
        .map_err(|e| Fail::usage(format!("work dir {}: {e}", args.work_dir.display())))?;
    // The same agent settings as a RALPH design: the skills server, the tools directory,
    // sub-agents, and the day's spend limit checked before every call. The loop's own
    // budget is `--budget`, not the design budget.
    let engine = crate::designer::design::Engine::Claude;
    let mut designer = crate::cmd::design::designer(
        &env,
        crate::designer::design::ModePolicy::Ralph,
        engine,
        args.agent.as_deref(),
        None,
        args.max_iterations,
    )?;
    designer.budget_usd = None;
    designer.spend = crate::cmd::optional_redis(&env.config).await.map(|conn| {
        crate::designer::purse::DailySpend {
            conn,
            limit: env.config.daily_spend_limit().ok().flatten(),
        }
    });
    let run = designer.run_for(
        "ralph_run",
        None,
        &args.work_dir,
        crate::designer::design::Mode::Ralph,
    );
    let mut spawn = designer.agent_options(&run, "ralph").map_err(Fail::usage)?;
    if let Some(tools) = args.allowed_tools {
        spawn.allowed_tools = tools;
    }
    let total = match args.timeout {
        Some(t) if t > 0.0 && t.is_finite() => Some(Duration::from_secs_f64(t)),
        Some(_) => return Err(Fail::usage("--timeout must be positive")),
        None => None,
    };
    let prompts = crate::context::prompt::Prompts::new(env.config.prompts_dir());
    let mut opts = crate::designer::design::ralph_options(
        &prompts,
        spawn,
        args.max_iterations,
        total,
        args.budget,
        args.goal,
        args.context,
    )?;
    opts.max_attempts_per_task = args.max_attempts.max(1);
    opts.purse = Some(run.purse.clone());
    let progress = Bar::new(crate::support::term::progress_enabled(global.quiet));
    let cancel = crate::support::signal::shutdown_channel();
    let summary = crate::designer::ralph::run(opts, &progress, cancel).await?;
    env.emit(&summary)?;
    Ok(exit_for(&summary))
}

/// Exit code of a loop: complete 0; limit reached 4; failed or stalled 1; signal 130/143.
pub fn exit_for(summary: &RalphSummary) -> Exit {
    match summary.status {
        RalphStatus::Complete => Exit::Success,
        RalphStatus::MaxIterations | RalphStatus::Timeout | RalphStatus::Budget => Exit::Limit,
        RalphStatus::Stalled | RalphStatus::Failed => Exit::Failed,
        RalphStatus::Cancelled => crate::support::signal::received().unwrap_or(Exit::Interrupted),
    }
}

/// A progress bar on stderr (TTY only) plus info logs.
struct Bar {
    bar: indicatif::ProgressBar,
}

impl Bar {
    fn new(enabled: bool) -> Self {
        let bar = if enabled {
            let b = indicatif::ProgressBar::new(0);
            b.set_draw_target(indicatif::ProgressDrawTarget::stderr());
            if let Ok(style) = indicatif::ProgressStyle::with_template(
                "{bar:30} {pos}/{len} tasks [{elapsed}] {msg}",
            ) {
                b.set_style(style);
            }
            b
        } else {
            indicatif::ProgressBar::hidden()
        };
        Bar { bar }
    }
}

impl Progress for Bar {
    fn begin(&self, tasks_total: usize, tasks_done: usize) {
        self.bar.set_length(tasks_total as u64);
        self.bar.set_position(tasks_done as u64);
    }
    fn iteration(&self, n: u32, task: &Task, attempt: u32) {
        self.bar
            .set_message(format!("#{n} {} (attempt {attempt})", task.id));
        tracing::info!(
            "iteration {n}: {} attempt {attempt}: {}",
            task.id,
            crate::support::msg::preview(&task.title, 80)
        );
    }
    fn finished_call(&self, task: &Task, result: &SpawnResult, done_now: bool) {
        if done_now {
            self.bar.inc(1);
        }
        tracing::info!(
            "{}: ok={} done={} cost=${:.4} {}ms",
            task.id,
            result.ok,
            done_now,
            result.total_cost_usd,
            result.duration_ms
        );
    }
    fn end(&self, summary: &RalphSummary) {
        self.bar.finish_and_clear();
        tracing::info!(
            "loop ended {:?} after {} iterations",
            summary.status,
            summary.iterations
        );
    }
}
