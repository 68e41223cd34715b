//! The RALPH loop: one fresh agent call per open task in TASKS.md, memory in STATUS.md, progress judged only
//! by the task's checkbox, with hard caps on iterations, attempts, failures, wall time and cost.

use std::path::PathBuf;
use std::time::Duration;

use crate::designer::spawn::{SpawnOptions, SpawnResult};

mod iterate;
mod tasks;
#[cfg(test)]
mod tests;
mod verdict;

pub use iterate::run;
pub use tasks::{Task, parse_tasks, render_tasks, setup, tasks_from_text};
pub use verdict::verdict_schema;

/// The task list file in the work dir.
pub const TASKS_FILE: &str = "TASKS.md";
/// The memory file in the work dir.
pub const STATUS_FILE: &str = "STATUS.md";

/// How a loop ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum RalphStatus {
    /// Every task's box is ticked.
    Complete,
    /// `max_iterations` calls were made.
    MaxIterations,
    /// A task used all its attempts without being ticked.
    Stalled,
    /// Consecutive failed calls, a failed breakdown, or no tasks.
    Failed,
    /// `total_timeout` passed.
    Timeout,
    /// `budget_usd` was reached.
    Budget,
    /// The cancel flag flipped.
    Cancelled,
}

/// Per-task outcome in the summary.
#[derive(Debug, Clone, serde::Serialize)]
pub struct TaskReport {
    /// Task id.
    pub id: String,
    /// Task title.
    pub title: String,
    /// Ticked at the end.
    pub done: bool,
    /// Open task: attempts used so far (persisted across runs). Done task: the attempt that ticked it in this
    /// run, 0 if it was done before.
    pub attempts: u32,
}

/// The loop's result.
#[derive(Debug, Clone, serde::Serialize)]
pub struct RalphSummary {
    /// How it ended.
    pub status: RalphStatus,
    /// Task calls made in this run (rate-limited ones included; the breakdown call is not).
    pub iterations: u32,
    /// Every task in TASKS.md at the end.
    pub tasks: Vec<TaskReport>,
    /// Ticked tasks.
    pub tasks_done: usize,
    /// All tasks.
    pub tasks_total: usize,
    /// Sum of `total_cost_usd` over every call of this run, breakdown included.
    pub cost_usd: f64,
    /// The loop's work dir.
    pub work_dir: PathBuf,
    /// Wall time of the run.
    pub elapsed_ms: u64,
    /// Why it ended, when not Complete.
    pub reason: Option<String>,
    /// Tactical learnings the confirmed task verdicts reported (each once).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub learnings: Vec<String>,
    /// The spec file the last confirmed verdict named (relative to the work dir).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub spec_path: Option<String>,
}

/// Progress reports (the domain code never prints). Order: for a breakdown, `iteration(0, BREAKDOWN, k)` and
/// `finished_call` come first; then `begin` once the task list is known; then `iteration`/`finished_call` per
/// call; `end` always last (also for early failures).
pub trait Progress: Send + Sync {
    /// The task list is known.
    fn begin(&self, tasks_total: usize, tasks_done: usize);
    /// Call number `n` starts on `task`, its `attempt`-th counted attempt.
    fn iteration(&self, n: u32, task: &Task, attempt: u32);
    /// A call returned; `done_now` is whether the task's box is ticked now.
    fn finished_call(&self, task: &Task, result: &SpawnResult, done_now: bool);
    /// The loop ended.
    fn end(&self, summary: &RalphSummary);
}

/// A shared [`Progress`], for options that are cloned and printed.
#[derive(Clone)]
pub struct Reporter(pub std::sync::Arc<dyn Progress>);

impl std::fmt::Debug for Reporter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Reporter")
    }
}

/// A `Progress` that ignores everything.
pub struct NoProgress;

impl Progress for NoProgress {
    fn begin(&self, _tasks_total: usize, _tasks_done: usize) {}
    fn iteration(&self, _n: u32, _task: &Task, _attempt: u32) {}
    fn finished_call(&self, _task: &Task, _result: &SpawnResult, _done_now: bool) {}
    fn end(&self, _summary: &RalphSummary) {}
}

/// Loop configuration.
pub struct RalphOptions {
    /// Agent call options; `work_dir` is the loop's work dir, `label` is set per call, `timeout` is per call.
    pub spawn: SpawnOptions,
    /// Cap on task calls (default 50).
    pub max_iterations: u32,
    /// Counted attempts per task before status Stalled (default 3).
    pub max_attempts_per_task: u32,
    /// Failed calls in a row (spawn errors / is_error / crash / timeout) before status Failed (default 3).
    pub max_consecutive_failures: u32,
    /// Wall-clock cap for the whole loop → Timeout.
    pub total_timeout: Option<Duration>,
    /// Cap on the summed `total_cost_usd`, checked before and after each call → Budget.
    pub budget_usd: Option<f64>,
    /// Shared money (the day's spend limit, a design's budget): checked before each call,
    /// charged after it.
    pub purse: Option<std::sync::Arc<crate::designer::purse::Purse>>,
    /// Asks each task call for this structured verdict (`--json-schema`); the loop then
    /// needs the verdict and the checkbox to agree before a task counts as done.
    pub verdict_schema: Option<serde_json::Value>,
    /// When Some and TASKS.md is absent: one breakdown call first.
    pub goal: Option<String>,
    /// Goes into STATUS.md when the loop creates it.
    pub initial_context: String,
    /// The task prompt, rendered by the caller.
    pub task_prompt: Box<dyn Fn(&Task) -> String + Send + Sync>,
    /// Goal → prompt asking for a task list.
    pub breakdown_prompt: Box<dyn Fn(&str) -> String + Send + Sync>,
}

impl RalphOptions {
    /// Options with the defaults (50 iterations, 3 attempts per task, 3 consecutive failures, no time or
    /// cost cap, no goal, empty context).
    pub fn new(
        spawn: SpawnOptions,
        task_prompt: Box<dyn Fn(&Task) -> String + Send + Sync>,
        breakdown_prompt: Box<dyn Fn(&str) -> String + Send + Sync>,
    ) -> Self {
        Self {
            spawn,
            max_iterations: 50,
            max_attempts_per_task: 3,
            max_consecutive_failures: 3,
            total_timeout: None,
            budget_usd: None,
            purse: None,
            verdict_schema: None,
            goal: None,
            initial_context: String::new(),
            task_prompt,
            breakdown_prompt,
        }
    }
}
