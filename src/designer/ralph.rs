//! The RALPH loop: one fresh agent call per open task in TASKS.md, memory in STATUS.md, progress judged only
//! by the task's checkbox, with hard caps on iterations, attempts, failures, wall time and cost.

use std::collections::BTreeMap;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use tokio::sync::watch;

use crate::designer::spawn::{self, SpawnOptions, SpawnResult};

/// The task list file in the work dir.
pub const TASKS_FILE: &str = "TASKS.md";
/// The memory file in the work dir.
pub const STATUS_FILE: &str = "STATUS.md";
/// Longest wait after a rate-limited call.
const MAX_RATE_LIMIT_WAIT: Duration = Duration::from_secs(30);

/// One line of TASKS.md.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Task {
    /// The id before the colon, e.g. `TASK-001`.
    pub id: String,
    /// The text after the colon.
    pub title: String,
    /// Whether the box is ticked.
    pub done: bool,
}

/// Parses one checkbox line `- [ ] ID: title`; None for any other line.
fn parse_task_line(line: &str) -> Option<Task> {
    let line = line.trim_end_matches('\r').trim_start();
    let rest = line
        .strip_prefix("- ")
        .or_else(|| line.strip_prefix("* "))?
        .trim_start();
    let (done, rest) = if let Some(r) = rest.strip_prefix("[ ]") {
        (false, r)
    } else if let Some(r) = rest
        .strip_prefix("[x]")
        .or_else(|| rest.strip_prefix("[X]"))
    {
        (true, r)
    } else {
        return None;
    };
    let (id, title) = rest.trim_start().split_once(':')?;
    let id = id.trim();
    let id_ok = !id.is_empty()
        && id
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_' || c == '.');
    id_ok.then(|| Task {
        id: id.to_owned(),
        title: title.trim().to_owned(),
        done,
    })
}

/// Parses TASKS.md (tolerates `* [ ]`, `- [X]`, leading spaces, CRLF; ignores other lines).
pub fn parse_tasks(text: &str) -> Vec<Task> {
    text.lines().filter_map(parse_task_line).collect()
}

/// One title on one line: a newline inside a title would break the file format.
fn clean_title(title: &str) -> String {
    title.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// Renders TASKS.md in the PRD format for these titles.
pub fn render_tasks(titles: &[String]) -> String {
    let mut out = String::from("# Tasks\n\n");
    for (i, t) in titles.iter().enumerate() {
        out.push_str(&format!("- [ ] TASK-{:03}: {}\n", i + 1, clean_title(t)));
    }
    out
}

/// A list item in free text: (indent, kind, text); kind 0 = numbered, 1 = bullet.
fn list_item(line: &str) -> Option<(usize, u8, &str)> {
    let trimmed = line.trim_end_matches('\r');
    let body = trimmed.trim_start();
    let indent = trimmed.len() - body.len();
    if let Some(r) = body
        .strip_prefix("- ")
        .or_else(|| body.strip_prefix("* "))
        .or_else(|| body.strip_prefix("+ "))
    {
        return Some((indent, 1, r));
    }
    let digits = body.chars().take_while(char::is_ascii_digit).count();
    if digits > 0 && digits <= 3 {
        let r = &body[digits..];
        if let Some(r) = r.strip_prefix(". ").or_else(|| r.strip_prefix(") ")) {
            return Some((indent, 0, r));
        }
    }
    None
}

/// Strips a leading checkbox, a `TASK-NNN:` prefix and wrapping bold from a list item.
fn item_title(text: &str) -> String {
    let mut t = text.trim();
    for b in ["[ ]", "[x]", "[X]"] {
        if let Some(r) = t.strip_prefix(b) {
            t = r.trim_start();
        }
    }
    if let Some((id, rest)) = t.split_once(':')
        && id.to_ascii_uppercase().starts_with("TASK-")
        && !id.contains(' ')
    {
        t = rest.trim();
    }
    if let Some(inner) = t.strip_prefix("**").and_then(|r| r.strip_suffix("**")) {
        t = inner.trim();
    }
    clean_title(t)
}

/// Task titles from a task-breakdown answer: `- [ ] TASK-001: x` lines, or `1. x` / `- x` list items; empty
/// if none. Checkbox lines win over numbered items, which win over bullets; only the outermost level counts.
pub fn tasks_from_text(text: &str) -> Vec<String> {
    let boxed: Vec<String> = parse_tasks(text)
        .into_iter()
        .map(|t| clean_title(&t.title))
        .filter(|t| !t.is_empty())
        .collect();
    if !boxed.is_empty() {
        return boxed;
    }
    // Fenced blocks in an answer are usually the TASKS.md file itself, so their items count like the rest.
    let items: Vec<_> = text.lines().filter_map(list_item).collect();
    let Some(kind) = items.iter().map(|(_, k, _)| *k).min() else {
        return Vec::new();
    };
    let of_kind: Vec<_> = items.into_iter().filter(|(_, k, _)| *k == kind).collect();
    let min_indent = of_kind.iter().map(|(i, _, _)| *i).min().unwrap_or(0);
    of_kind
        .into_iter()
        .filter(|(i, _, _)| *i == min_indent)
        .map(|(_, _, t)| item_title(t))
        .filter(|t| !t.is_empty())
        .collect()
}

/// The initial STATUS.md for this context.
fn render_status(initial_context: &str) -> String {
    format!(
        "# Status (Memory)\n\n{}\n\n## Log\n",
        initial_context.trim()
    )
}

/// Writes STATUS.md unless it exists: an existing one is memory from earlier runs and is kept.
fn ensure_status(work_dir: &Path, initial_context: &str) -> anyhow::Result<()> {
    let path = work_dir.join(STATUS_FILE);
    match std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(&path)
    {
        Ok(mut f) => f
            .write_all(render_status(initial_context).as_bytes())
            .with_context(|| format!("writing {}", path.display())),
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Ok(()),
        Err(e) => Err(e).with_context(|| format!("creating {}", path.display())),
    }
}

/// Creates TASKS.md and STATUS.md in work_dir for a fresh run (refuses to overwrite an existing TASKS.md, and
/// refuses an empty task list). An existing STATUS.md is kept.
pub fn setup(work_dir: &Path, titles: &[String], initial_context: &str) -> anyhow::Result<()> {
    if titles.iter().all(|t| clean_title(t).is_empty()) {
        bail!("no tasks to set up");
    }
    std::fs::create_dir_all(work_dir)
        .with_context(|| format!("creating {}", work_dir.display()))?;
    let path = work_dir.join(TASKS_FILE);
    let titles: Vec<String> = titles
        .iter()
        .map(|t| clean_title(t))
        .filter(|t| !t.is_empty())
        .collect();
    let mut f = match std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(&path)
    {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
            bail!(
                "{} already exists; refusing to overwrite it (resume instead, or use a new work dir)",
                path.display()
            )
        }
        Err(e) => return Err(e).with_context(|| format!("creating {}", path.display())),
    };
    f.write_all(render_tasks(&titles).as_bytes())
        .with_context(|| format!("writing {}", path.display()))?;
    ensure_status(work_dir, initial_context)
}

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
    /// Cap on the summed `total_cost_usd`, checked after each call → Budget.
    pub budget_usd: Option<f64>,
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
            goal: None,
            initial_context: String::new(),
            task_prompt,
            breakdown_prompt,
        }
    }
}

/// Persisted per-task attempt counts (`.fullsend/ralph_state.json`).
#[derive(Debug, Default, serde::Serialize, serde::Deserialize)]
struct RalphState {
    #[serde(default)]
    attempts: BTreeMap<String, u32>,
}

/// One line of `.fullsend/iterations.jsonl`.
#[derive(serde::Serialize)]
struct IterationRecord<'a> {
    ts: String,
    n: u32,
    task: &'a str,
    attempt: u32,
    ok: bool,
    done_now: bool,
    rate_limited: bool,
    timed_out: bool,
    exit_code: Option<i32>,
    cost: f64,
    cost_total: f64,
    duration_ms: u64,
    session_id: Option<&'a str>,
    error: Option<&'a str>,
}

/// Why the loop stops.
type Stop = (RalphStatus, Option<String>);

/// A rate-limited call: the API said 429 (rate limit) or 529 (overloaded).
fn rate_limited(r: &SpawnResult) -> bool {
    !r.ok && matches!(r.api_error_status, Some(429 | 529))
}

/// min(30 s, 2^n s) for the n-th rate-limited call in a row.
fn rate_limit_wait(n: u32) -> Duration {
    Duration::from_secs(1u64 << n.min(5)).min(MAX_RATE_LIMIT_WAIT)
}

/// The loop's mutable state.
struct Runner<'a> {
    opts: RalphOptions,
    progress: &'a dyn Progress,
    cancel: watch::Receiver<bool>,
    work_dir: PathBuf,
    deadline: Option<Instant>,
    cost: f64,
    iterations: u32,
    state: RalphState,
    /// Attempt that ticked each task in this run.
    ticked_at: BTreeMap<String, u32>,
    last_tasks: Vec<Task>,
}

impl Runner<'_> {
    fn tasks_path(&self) -> PathBuf {
        self.work_dir.join(TASKS_FILE)
    }

    fn state_path(&self) -> PathBuf {
        self.work_dir.join(".fullsend").join("ralph_state.json")
    }

    fn cancelled(&self) -> bool {
        *self.cancel.borrow()
    }

    fn timed_out(&self) -> bool {
        self.deadline.is_some_and(|d| Instant::now() >= d)
    }

    fn over_budget(&self) -> Option<Stop> {
        let b = self.opts.budget_usd?;
        (self.cost >= b).then(|| {
            (
                RalphStatus::Budget,
                Some(format!(
                    "budget reached: spent ${:.4} of ${b:.4}",
                    self.cost
                )),
            )
        })
    }

    /// The checks shared by every step: cancel, wall clock, budget.
    fn limits(&self) -> Option<Stop> {
        if self.cancelled() {
            return Some((RalphStatus::Cancelled, Some("cancelled".to_owned())));
        }
        if self.timed_out() {
            let t = self.opts.total_timeout.unwrap_or_default();
            return Some((
                RalphStatus::Timeout,
                Some(format!("total timeout of {}s reached", t.as_secs_f64())),
            ));
        }
        self.over_budget()
    }

    fn read_tasks(&self) -> anyhow::Result<Vec<Task>> {
        let path = self.tasks_path();
        let text = std::fs::read_to_string(&path)
            .with_context(|| format!("reading {}", path.display()))?;
        Ok(parse_tasks(&text))
    }

    fn load_state(&mut self) {
        // A missing or corrupt state file only loses attempt counts; starting from zero is safe.
        self.state = std::fs::read_to_string(self.state_path())
            .ok()
            .and_then(|s| serde_json::from_str(&s).ok())
            .unwrap_or_default();
    }

    fn save_state(&self) -> anyhow::Result<()> {
        let path = self.state_path();
        let tmp = path.with_extension("json.tmp");
        let json = serde_json::to_string_pretty(&self.state)?;
        // Write-then-rename so a crash never leaves a half-written state file.
        std::fs::write(&tmp, json).with_context(|| format!("writing {}", tmp.display()))?;
        std::fs::rename(&tmp, &path).with_context(|| format!("renaming to {}", path.display()))
    }

    fn log_iteration(
        &self,
        n: u32,
        task: &str,
        attempt: u32,
        r: &SpawnResult,
        done_now: bool,
    ) -> anyhow::Result<()> {
        let rec = IterationRecord {
            ts: jiff::Timestamp::now().to_string(),
            n,
            task,
            attempt,
            ok: r.ok,
            done_now,
            rate_limited: rate_limited(r),
            timed_out: r.timed_out,
            exit_code: r.exit_code,
            cost: r.total_cost_usd,
            cost_total: self.cost,
            duration_ms: r.duration_ms,
            session_id: r.session_id.as_deref(),
            error: r.error.as_deref(),
        };
        let path = self.work_dir.join(".fullsend").join("iterations.jsonl");
        let mut line = serde_json::to_string(&rec)?;
        line.push('\n');
        let mut f = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .with_context(|| format!("opening {}", path.display()))?;
        f.write_all(line.as_bytes())
            .with_context(|| format!("writing {}", path.display()))
    }

    /// One agent call, its per-call timeout shortened to the time left. A spawn error becomes a failed result
    /// so one bad call never ends the loop by itself.
    async fn call(&mut self, label: String, prompt: &str) -> (SpawnResult, bool) {
        let mut sopts = self.opts.spawn.clone();
        sopts.label = label;
        let mut cut_by_deadline = false;
        if let Some(d) = self.deadline {
            let left = d.saturating_duration_since(Instant::now());
            if left < sopts.timeout {
                sopts.timeout = left;
                cut_by_deadline = true;
            }
        }
        let r = match spawn::spawn(&sopts, prompt, self.cancel.clone()).await {
            Ok(r) => r,
            Err(e) => SpawnResult {
                ok: false,
                exit_code: None,
                signal: None,
                timed_out: false,
                cancelled: false,
                is_error: false,
                result: String::new(),
                session_id: None,
                num_turns: None,
                total_cost_usd: 0.0,
                api_error_status: None,
                permission_denials: 0,
                usage: None,
                duration_ms: 0,
                error: Some(format!("spawn failed: {e:#}")),
                prompt_path: PathBuf::new(),
                stdout_path: PathBuf::new(),
                stderr_path: PathBuf::new(),
            },
        };
        if r.total_cost_usd.is_finite() && r.total_cost_usd > 0.0 {
            self.cost += r.total_cost_usd;
        }
        let cut = cut_by_deadline && r.timed_out;
        (r, cut)
    }

    /// Waits after a rate-limited call, bounded by the deadline; stops early on cancel.
    async fn pause(&mut self, d: Duration) {
        let d = match self.deadline {
            Some(dl) => d.min(dl.saturating_duration_since(Instant::now())),
            None => d,
        };
        tokio::select! {
            () = tokio::time::sleep(d) => {}
            () = spawn::wait_cancelled(&mut self.cancel) => {}
        }
    }

    /// Moves a TASKS.md the breakdown left behind out of the way, so a re-run retries the breakdown.
    fn discard_tasks_file(&self) {
        let from = self.tasks_path();
        if from.exists() {
            let to = self.work_dir.join(".fullsend").join("TASKS.rejected.md");
            // Best effort: if the rename fails, the next run reports "no tasks" instead of retrying.
            let _ = std::fs::rename(from, to);
        }
    }

    /// The breakdown call: TASKS.md written by the agent, or its answer turned into TASKS.md.
    async fn breakdown(&mut self, goal: &str) -> anyhow::Result<Option<Stop>> {
        let pseudo = Task {
            id: "BREAKDOWN".to_owned(),
            title: clean_title(goal),
            done: false,
        };
        let prompt = (self.opts.breakdown_prompt)(goal);
        let max_tries = self.opts.max_consecutive_failures.max(1);
        let mut tries = 0u32;
        let r = loop {
            if let Some(stop) = self.limits() {
                return Ok(Some(stop));
            }
            tries += 1;
            self.progress.iteration(0, &pseudo, tries);
            let (r, _) = self.call(format!("breakdown-{tries}"), &prompt).await;
            let has_file = self.tasks_path().exists();
            self.log_iteration(0, &pseudo.id, tries, &r, false)?;
            self.progress.finished_call(&pseudo, &r, has_file && r.ok);
            if r.cancelled {
                self.discard_tasks_file();
                return Ok(Some((
                    RalphStatus::Cancelled,
                    Some("cancelled during task breakdown".to_owned()),
                )));
            }
            if rate_limited(&r) && tries < max_tries {
                self.discard_tasks_file();
                self.pause(rate_limit_wait(tries)).await;
                continue;
            }
            break r;
        };
        if !r.ok {
            self.discard_tasks_file();
            let why = r.error.unwrap_or_else(|| "unknown error".to_owned());
            return Ok(Some((
                RalphStatus::Failed,
                Some(format!("task breakdown failed: {why}")),
            )));
        }
        let from_file = if self.tasks_path().exists() {
            self.read_tasks()?
        } else {
            Vec::new()
        };
        if !from_file.is_empty() {
            return Ok(None);
        }
        let titles = tasks_from_text(&r.result);
        if titles.is_empty() {
            self.discard_tasks_file();
            return Ok(Some((
                RalphStatus::Failed,
                Some("task breakdown produced no tasks".to_owned()),
            )));
        }
        // The agent answered with a list (or wrote an unparseable file): our rendering is authoritative.
        let path = self.tasks_path();
        std::fs::write(&path, render_tasks(&titles))
            .with_context(|| format!("writing {}", path.display()))?;
        Ok(None)
    }

    /// Everything up to the first task call: STATUS.md, breakdown, the task list.
    async fn prepare(&mut self) -> anyhow::Result<Option<Stop>> {
        if let Some(stop) = self.limits() {
            return Ok(Some(stop));
        }
        if !self.tasks_path().exists() {
            let Some(goal) = self.opts.goal.clone().filter(|g| !g.trim().is_empty()) else {
                return Ok(Some((
                    RalphStatus::Failed,
                    Some(format!(
                        "no tasks: {TASKS_FILE} is missing and no goal was given"
                    )),
                )));
            };
            ensure_status(&self.work_dir, &self.opts.initial_context)?;
            if let Some(stop) = self.breakdown(&goal).await? {
                return Ok(Some(stop));
            }
        } else {
            ensure_status(&self.work_dir, &self.opts.initial_context)?;
        }
        self.last_tasks = self.read_tasks()?;
        if self.last_tasks.is_empty() {
            return Ok(Some((
                RalphStatus::Failed,
                Some(format!("no tasks in {TASKS_FILE}")),
            )));
        }
        Ok(None)
    }

    /// The task loop proper.
    async fn drive(&mut self) -> anyhow::Result<Stop> {
        if let Some(stop) = self.prepare().await? {
            return Ok(stop);
        }
        let done = self.last_tasks.iter().filter(|t| t.done).count();
        self.progress.begin(self.last_tasks.len(), done);
        let max_attempts = self.opts.max_attempts_per_task.max(1);
        let max_failures = self.opts.max_consecutive_failures.max(1);
        let mut failures = 0u32;
        let mut last_error = String::new();
        let mut rate_limit_streak = 0u32;
        loop {
            // Re-read every time: the agent owns TASKS.md between calls.
            let tasks = match self.read_tasks() {
                Ok(t) => t,
                Err(e) => return Ok((RalphStatus::Failed, Some(format!("{e:#}")))),
            };
            if tasks.is_empty() {
                return Ok((
                    RalphStatus::Failed,
                    Some(format!("{TASKS_FILE} no longer lists any tasks")),
                ));
            }
            self.last_tasks = tasks;
            let Some(task) = self.last_tasks.iter().find(|t| !t.done).cloned() else {
                return Ok((RalphStatus::Complete, None));
            };
            if let Some(stop) = self.limits() {
                return Ok(stop);
            }
            if self.iterations >= self.opts.max_iterations {
                let why = format!(
                    "max iterations ({}) reached with {} still open",
                    self.opts.max_iterations, task.id
                );
                return Ok((RalphStatus::MaxIterations, Some(why)));
            }
            let used = self.state.attempts.get(&task.id).copied().unwrap_or(0);
            if used >= max_attempts {
                let why = format!(
                    "{} was not ticked after {used} attempts: {}",
                    task.id, task.title
                );
                return Ok((RalphStatus::Stalled, Some(why)));
            }
            let attempt = used + 1;
            self.iterations += 1;
            let n = self.iterations;
            self.progress.iteration(n, &task, attempt);
            let prompt = (self.opts.task_prompt)(&task);
            let (r, cut) = self
                .call(format!("task-{}-attempt-{attempt}", task.id), &prompt)
                .await;
            // Progress is the checkbox, nothing else: not the TASK_DONE marker, not the exit code.
            let done_now = self
                .read_tasks()
                .map(|ts| ts.iter().any(|t| t.id == task.id && t.done))
                .unwrap_or(false);
            self.log_iteration(n, &task.id, attempt, &r, done_now)?;
            self.progress.finished_call(&task, &r, done_now);

            let limited = rate_limited(&r);
            if done_now {
                self.state.attempts.remove(&task.id);
                self.ticked_at.insert(task.id.clone(), attempt);
                self.save_state()?;
            } else if !(limited || r.cancelled || cut) {
                // Rate limits, cancels and the loop's own deadline are not the task's fault.
                self.state.attempts.insert(task.id.clone(), attempt);
                self.save_state()?;
            }
            if r.cancelled {
                return Ok((RalphStatus::Cancelled, Some("cancelled".to_owned())));
            }
            if done_now || r.ok {
                failures = 0;
            } else if !(limited || cut) {
                failures += 1;
                last_error = r.error.clone().unwrap_or_default();
            }
            // Finished work beats a limit reached by the very call that finished it.
            if self
                .read_tasks()
                .is_ok_and(|ts| !ts.is_empty() && ts.iter().all(|t| t.done))
            {
                continue;
            }
            if let Some(stop) = self.over_budget() {
                return Ok(stop);
            }
            if failures >= max_failures {
                let why = format!("{failures} consecutive failed calls; last: {last_error}");
                return Ok((RalphStatus::Failed, Some(why)));
            }
            if limited {
                rate_limit_streak += 1;
                self.pause(rate_limit_wait(rate_limit_streak)).await;
            } else {
                rate_limit_streak = 0;
            }
        }
    }

    fn summary(
        &self,
        status: RalphStatus,
        reason: Option<String>,
        started: Instant,
    ) -> RalphSummary {
        let tasks: Vec<TaskReport> = self
            .last_tasks
            .iter()
            .map(|t| TaskReport {
                id: t.id.clone(),
                title: t.title.clone(),
                done: t.done,
                attempts: if t.done {
                    self.ticked_at.get(&t.id).copied().unwrap_or(0)
                } else {
                    self.state.attempts.get(&t.id).copied().unwrap_or(0)
                },
            })
            .collect();
        RalphSummary {
            status,
            iterations: self.iterations,
            tasks_done: tasks.iter().filter(|t| t.done).count(),
            tasks_total: tasks.len(),
            tasks,
            cost_usd: self.cost,
            work_dir: self.work_dir.clone(),
            elapsed_ms: u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX),
            reason,
        }
    }
}

/// Runs the loop. Progress is decided ONLY by the task's checkbox in TASKS.md after each call. Resumes at the
/// first open task when TASKS.md exists; per-task attempts persist in `work_dir/.fullsend/ralph_state.json`;
/// every call appends a line to `work_dir/.fullsend/iterations.jsonl`. Rate-limited calls (429/529) are not
/// attempts and are retried after min(30 s, 2^n s). Errors are setup problems (bad options, unwritable work
/// dir); every way the agent can fail is a status in the summary.
pub async fn run(
    opts: RalphOptions,
    progress: &dyn Progress,
    cancel: watch::Receiver<bool>,
) -> anyhow::Result<RalphSummary> {
    let started = Instant::now();
    spawn::check_options(&opts.spawn)?;
    let work_dir = opts.spawn.work_dir.clone();
    let meta = work_dir.join(".fullsend");
    std::fs::create_dir_all(&meta).with_context(|| format!("creating {}", meta.display()))?;
    let deadline = opts.total_timeout.map(|t| started + t);
    let mut runner = Runner {
        opts,
        progress,
        cancel,
        work_dir,
        deadline,
        cost: 0.0,
        iterations: 0,
        state: RalphState::default(),
        ticked_at: BTreeMap::new(),
        last_tasks: Vec::new(),
    };
    runner.load_state();
    let (status, reason) = runner.drive().await?;
    let summary = runner.summary(status, reason, started);
    progress.end(&summary);
    Ok(summary)
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;
    use crate::designer::spawn::Agent;
    use std::os::unix::fs::PermissionsExt as _;
    use std::sync::Mutex;

    const RESULT: &str = r#"{"type":"result","subtype":"success","is_error":false,"result":"ok","total_cost_usd":0.01,"session_id":"s","num_turns":1}"#;
    const RESULT_DONE: &str = r#"{"type":"result","subtype":"success","is_error":false,"result":"**TASK_DONE**","total_cost_usd":0.01,"session_id":"s","num_turns":1}"#;
    /// Ticks the first open box, like a diligent agent.
    const TICK: &str = r"sed -i '0,/- \[ \] /s//- [x] /' TASKS.md";

    fn fake(dir: &Path, body: &str) -> PathBuf {
        let p = dir.join("fake-claude");
        std::fs::write(&p, format!("#!/usr/bin/env bash\n{body}\n")).unwrap();
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o755)).unwrap();
        p
    }

    /// A work dir inside a temp dir, with the fake agent outside it.
    fn dirs() -> (tempfile::TempDir, PathBuf) {
        let tmp = tempfile::tempdir().unwrap();
        let work = tmp.path().join("work");
        std::fs::create_dir_all(&work).unwrap();
        (tmp, work)
    }

    fn options(agent: PathBuf, work: &Path) -> RalphOptions {
        let mut sopts = SpawnOptions::new(Agent::Claude(agent), work);
        sopts.timeout = Duration::from_secs(20);
        sopts.kill_grace = Duration::from_millis(200);
        RalphOptions::new(
            sopts,
            Box::new(|t: &Task| {
                format!(
                    "You are completing task {} ({}) from TASKS.md.",
                    t.id, t.title
                )
            }),
            Box::new(|g: &str| format!("BREAKDOWN: {g}")),
        )
    }

    fn titles(n: usize) -> Vec<String> {
        (1..=n).map(|i| format!("step {i}")).collect()
    }

    fn no_cancel() -> watch::Receiver<bool> {
        watch::channel(false).1
    }

    fn jsonl_lines(work: &Path) -> Vec<serde_json::Value> {
        std::fs::read_to_string(work.join(".fullsend/iterations.jsonl"))
            .unwrap_or_default()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect()
    }

    #[derive(Default)]
    struct Recorder {
        calls: Mutex<Vec<(u32, String, u32)>>,
        begun: Mutex<Option<(usize, usize)>>,
        ended: Mutex<bool>,
    }

    impl Progress for Recorder {
        fn begin(&self, total: usize, done: usize) {
            *self.begun.lock().unwrap() = Some((total, done));
        }
        fn iteration(&self, n: u32, task: &Task, attempt: u32) {
            self.calls
                .lock()
                .unwrap()
                .push((n, task.id.clone(), attempt));
        }
        fn finished_call(&self, _task: &Task, _result: &SpawnResult, _done_now: bool) {}
        fn end(&self, _summary: &RalphSummary) {
            *self.ended.lock().unwrap() = true;
        }
    }

    #[test]
    fn parse_and_render() {
        let text = "# Tasks\r\n\r\n- [ ] TASK-001: first\r\n  * [x] TASK-002: second: with colon\n- [X] TASK-003:third\nnot a task\n- [ ] no id here\n- [?] TASK-9: odd\n";
        let tasks = parse_tasks(text);
        assert_eq!(
            tasks,
            vec![
                Task {
                    id: "TASK-001".into(),
                    title: "first".into(),
                    done: false
                },
                Task {
                    id: "TASK-002".into(),
                    title: "second: with colon".into(),
                    done: true
                },
                Task {
                    id: "TASK-003".into(),
                    title: "third".into(),
                    done: true
                },
            ]
        );
        let rendered = render_tasks(&["a".into(), "b\nc".into()]);
        assert_eq!(
            rendered,
            "# Tasks\n\n- [ ] TASK-001: a\n- [ ] TASK-002: b c\n"
        );
        assert_eq!(parse_tasks(&rendered).len(), 2);
    }

    #[test]
    fn titles_from_answers() {
        assert_eq!(
            tasks_from_text("Plan:\n- [ ] TASK-001: a\n- [ ] TASK-002: b\n- other"),
            ["a", "b"]
        );
        assert_eq!(
            tasks_from_text("Here:\n1. Research\n   - detail\n2) **Design**\n- note"),
            ["Research", "Design"]
        );
        assert_eq!(tasks_from_text("* one\n* two\n  * nested"), ["one", "two"]);
        assert_eq!(tasks_from_text("- TASK-004: x\n- [ ] y"), ["x", "y"]);
        assert!(tasks_from_text("I could not do that.").is_empty());
        assert!(tasks_from_text("").is_empty());
    }

    #[test]
    fn setup_files_and_refusals() {
        let (_tmp, work) = dirs();
        setup(&work, &titles(2), "ctx here").unwrap();
        assert_eq!(
            std::fs::read_to_string(work.join("TASKS.md")).unwrap(),
            "# Tasks\n\n- [ ] TASK-001: step 1\n- [ ] TASK-002: step 2\n"
        );
        assert_eq!(
            std::fs::read_to_string(work.join("STATUS.md")).unwrap(),
            "# Status (Memory)\n\nctx here\n\n## Log\n"
        );
        assert!(setup(&work, &titles(1), "x").is_err());
        let (_tmp2, work2) = dirs();
        assert!(setup(&work2, &[], "x").is_err());
        assert!(!work2.join("TASKS.md").exists());
    }

    #[tokio::test]
    async fn complete_loop_of_three() {
        let (tmp, work) = dirs();
        setup(&work, &titles(3), "ctx").unwrap();
        // Ticks without printing TASK_DONE: the tick alone is progress.
        let agent = fake(tmp.path(), &format!("{TICK}\necho '{RESULT}'"));
        let rec = Recorder::default();
        let s = run(options(agent, &work), &rec, no_cancel()).await.unwrap();
        assert_eq!(s.status, RalphStatus::Complete, "{s:?}");
        assert_eq!((s.iterations, s.tasks_done, s.tasks_total), (3, 3, 3));
        assert!((s.cost_usd - 0.03).abs() < 1e-9);
        assert!(s.reason.is_none());
        assert!(s.tasks.iter().all(|t| t.done && t.attempts == 1));
        let calls = rec.calls.lock().unwrap().clone();
        assert_eq!(
            calls,
            vec![
                (1, "TASK-001".into(), 1),
                (2, "TASK-002".into(), 1),
                (3, "TASK-003".into(), 1)
            ]
        );
        assert_eq!(*rec.begun.lock().unwrap(), Some((3, 0)));
        assert!(*rec.ended.lock().unwrap());
        let lines = jsonl_lines(&work);
        assert_eq!(lines.len(), 3);
        assert_eq!(lines[0]["task"], "TASK-001");
        assert_eq!(lines[0]["done_now"], true);
        assert_eq!(lines[0]["ok"], true);
        assert!(
            work.join(".fullsend/calls/001-task-TASK-001-attempt-1.prompt.txt")
                .exists()
        );
        let state: serde_json::Value = serde_json::from_str(
            &std::fs::read_to_string(work.join(".fullsend/ralph_state.json")).unwrap(),
        )
        .unwrap();
        assert_eq!(state["attempts"], serde_json::json!({}));
    }

    #[tokio::test]
    async fn liar_stalls() {
        let (tmp, work) = dirs();
        setup(&work, &titles(2), "ctx").unwrap();
        // Claims TASK_DONE but never ticks.
        let agent = fake(tmp.path(), &format!("echo '{RESULT_DONE}'"));
        let t0 = Instant::now();
        let s = run(options(agent, &work), &NoProgress, no_cancel())
            .await
            .unwrap();
        assert!(t0.elapsed() < Duration::from_secs(15));
        assert_eq!(s.status, RalphStatus::Stalled, "{s:?}");
        assert_eq!(s.iterations, 3);
        assert_eq!(s.tasks_done, 0);
        assert_eq!(s.tasks[0].attempts, 3);
        assert!(s.reason.as_deref().unwrap().contains("TASK-001"));
        // A re-run does not get fresh attempts.
        let agent = tmp.path().join("fake-claude");
        let s = run(options(agent, &work), &NoProgress, no_cancel())
            .await
            .unwrap();
        assert_eq!((s.status, s.iterations), (RalphStatus::Stalled, 0));
    }

    #[tokio::test]
    async fn max_iterations_caps_calls() {
        let (tmp, work) = dirs();
        setup(&work, &titles(5), "ctx").unwrap();
        let agent = fake(tmp.path(), &format!("{TICK}\necho '{RESULT}'"));
        let mut o = options(agent, &work);
        o.max_iterations = 2;
        let s = run(o, &NoProgress, no_cancel()).await.unwrap();
        assert_eq!(s.status, RalphStatus::MaxIterations, "{s:?}");
        assert_eq!((s.iterations, s.tasks_done, s.tasks_total), (2, 2, 5));
    }

    #[tokio::test]
    async fn budget_stops_the_loop() {
        let (tmp, work) = dirs();
        setup(&work, &titles(5), "ctx").unwrap();
        let agent = fake(tmp.path(), &format!("{TICK}\necho '{RESULT}'"));
        let mut o = options(agent, &work);
        o.budget_usd = Some(0.025);
        let s = run(o, &NoProgress, no_cancel()).await.unwrap();
        assert_eq!(s.status, RalphStatus::Budget, "{s:?}");
        assert_eq!(s.iterations, 3);
        assert!(s.cost_usd >= 0.025);
    }

    #[tokio::test]
    async fn failing_agent_fails_after_consecutive_failures() {
        let (tmp, work) = dirs();
        setup(&work, &titles(2), "ctx").unwrap();
        let agent = fake(tmp.path(), "echo 'kaboom' >&2; exit 1");
        let mut o = options(agent, &work);
        o.max_attempts_per_task = 10;
        let s = run(o, &NoProgress, no_cancel()).await.unwrap();
        assert_eq!(s.status, RalphStatus::Failed, "{s:?}");
        assert_eq!(s.iterations, 3);
        let reason = s.reason.unwrap();
        assert!(
            reason.contains("3 consecutive") && reason.contains("exit 1: kaboom"),
            "{reason}"
        );
        let lines = jsonl_lines(&work);
        assert_eq!(lines.len(), 3);
        assert_eq!(lines[2]["ok"], false);
        assert_eq!(lines[2]["error"], "exit 1: kaboom");
    }

    #[tokio::test]
    async fn one_failure_does_not_end_the_loop() {
        let (tmp, work) = dirs();
        setup(&work, &titles(2), "ctx").unwrap();
        // Fails on the first call only, then behaves.
        let agent = fake(
            tmp.path(),
            &format!(
                "if [ ! -f ../once ]; then touch ../once; exit 1; fi\n{TICK}\necho '{RESULT}'"
            ),
        );
        let s = run(options(agent, &work), &NoProgress, no_cancel())
            .await
            .unwrap();
        assert_eq!(s.status, RalphStatus::Complete, "{s:?}");
        assert_eq!(s.iterations, 3);
        assert_eq!(s.tasks[0].attempts, 2);
    }

    #[tokio::test]
    async fn resume_skips_ticked_and_honours_attempts() {
        let (tmp, work) = dirs();
        std::fs::write(
            work.join("TASKS.md"),
            "# Tasks\n\n- [x] TASK-001: a\n- [ ] TASK-002: b\n- [ ] TASK-003: c\n",
        )
        .unwrap();
        std::fs::create_dir_all(work.join(".fullsend")).unwrap();
        std::fs::write(
            work.join(".fullsend/ralph_state.json"),
            r#"{"attempts":{"TASK-002":2}}"#,
        )
        .unwrap();
        let agent = fake(tmp.path(), &format!("{TICK}\necho '{RESULT}'"));
        let rec = Recorder::default();
        let s = run(options(agent, &work), &rec, no_cancel()).await.unwrap();
        assert_eq!(s.status, RalphStatus::Complete, "{s:?}");
        assert_eq!(s.iterations, 2);
        let calls = rec.calls.lock().unwrap().clone();
        assert_eq!(
            calls,
            vec![(1, "TASK-002".into(), 3), (2, "TASK-003".into(), 1)]
        );
        assert_eq!(*rec.begun.lock().unwrap(), Some((3, 1)));
        // STATUS.md was missing, so the loop created it.
        assert!(
            std::fs::read_to_string(work.join("STATUS.md"))
                .unwrap()
                .starts_with("# Status (Memory)")
        );
        let state = std::fs::read_to_string(work.join(".fullsend/ralph_state.json")).unwrap();
        assert!(!state.contains("TASK-002"), "{state}");

        // With the attempts used up, a liar stalls at once on resume.
        let (tmp, work) = dirs();
        std::fs::write(
            work.join("TASKS.md"),
            "# Tasks\n\n- [x] TASK-001: a\n- [ ] TASK-002: b\n",
        )
        .unwrap();
        std::fs::create_dir_all(work.join(".fullsend")).unwrap();
        std::fs::write(
            work.join(".fullsend/ralph_state.json"),
            r#"{"attempts":{"TASK-002":3}}"#,
        )
        .unwrap();
        let agent = fake(tmp.path(), &format!("echo '{RESULT_DONE}'"));
        let s = run(options(agent, &work), &NoProgress, no_cancel())
            .await
            .unwrap();
        assert_eq!(
            (s.status, s.iterations, s.tasks_done),
            (RalphStatus::Stalled, 0, 1)
        );
    }

    #[tokio::test]
    async fn no_tasks_is_failure_never_complete() {
        let (tmp, work) = dirs();
        std::fs::write(work.join("TASKS.md"), "# Tasks\n\nnothing here\n").unwrap();
        let agent = fake(tmp.path(), &format!("echo '{RESULT}'"));
        let s = run(options(agent.clone(), &work), &NoProgress, no_cancel())
            .await
            .unwrap();
        assert_eq!(s.status, RalphStatus::Failed);
        assert_eq!(s.tasks_total, 0);
        assert!(s.reason.unwrap().contains("no tasks"));
        let (_tmp2, work2) = dirs();
        let s = run(options(agent, &work2), &NoProgress, no_cancel())
            .await
            .unwrap();
        assert_eq!(s.status, RalphStatus::Failed);
        assert!(s.reason.unwrap().contains("no goal"));
    }

    #[tokio::test]
    async fn breakdown_failure_is_failed() {
        let (tmp, work) = dirs();
        // The original's bug: the error text became TASKS.md and 0 tasks meant COMPLETE.
        let agent = fake(
            tmp.path(),
            "echo 'Error: something' > TASKS.md; echo 'auth failed' >&2; exit 1",
        );
        let mut o = options(agent, &work);
        o.goal = Some("design an experiment".into());
        let s = run(o, &NoProgress, no_cancel()).await.unwrap();
        assert_eq!(s.status, RalphStatus::Failed, "{s:?}");
        assert_eq!((s.tasks_total, s.iterations), (0, 0));
        assert!(
            s.reason
                .as_deref()
                .unwrap()
                .contains("task breakdown failed: exit 1: auth failed"),
            "{s:?}"
        );
        assert!(!work.join("TASKS.md").exists());

        // Succeeds but yields no tasks.
        let (tmp, work) = dirs();
        let agent = fake(
            tmp.path(),
            r#"echo '{"type":"result","is_error":false,"result":"I cannot help with that.","total_cost_usd":0.02}'"#,
        );
        let mut o = options(agent, &work);
        o.goal = Some("design an experiment".into());
        let s = run(o, &NoProgress, no_cancel()).await.unwrap();
        assert_eq!(s.status, RalphStatus::Failed);
        assert_eq!(s.tasks_total, 0);
        assert!((s.cost_usd - 0.02).abs() < 1e-9);
        assert!(s.reason.unwrap().contains("no tasks"));
    }

    #[tokio::test]
    async fn breakdown_answer_becomes_tasks() {
        let (tmp, work) = dirs();
        // First call (no TASKS.md) answers with a numbered list; later calls tick.
        let body = format!(
            "if [ ! -f TASKS.md ]; then\n  echo '{{\"type\":\"result\",\"is_error\":false,\"result\":\"Plan:\\n1. Research\\n2. Design\",\"total_cost_usd\":0.01}}'\n  exit 0\nfi\n{TICK}\necho '{RESULT}'"
        );
        let agent = fake(tmp.path(), &body);
        let mut o = options(agent, &work);
        o.goal = Some("design an experiment".into());
        o.initial_context = "## Experiment Request\nidea".into();
        let rec = Recorder::default();
        let s = run(o, &rec, no_cancel()).await.unwrap();
        assert_eq!(s.status, RalphStatus::Complete, "{s:?}");
        assert_eq!((s.tasks_total, s.iterations), (2, 2));
        assert_eq!(s.tasks[1].title, "Design");
        assert!((s.cost_usd - 0.03).abs() < 1e-9);
        assert!(
            std::fs::read_to_string(work.join("STATUS.md"))
                .unwrap()
                .contains("## Experiment Request\nidea")
        );
        assert_eq!(rec.calls.lock().unwrap()[0], (0, "BREAKDOWN".into(), 1));
        assert_eq!(jsonl_lines(&work)[0]["task"], "BREAKDOWN");
    }

    #[tokio::test]
    async fn breakdown_agent_writes_tasks_file() {
        let (tmp, work) = dirs();
        let body = format!(
            "if [ ! -f TASKS.md ]; then\n  printf '# Tasks\\n\\n- [ ] TASK-001: one\\n- [ ] TASK-002: two\\n- [ ] TASK-003: three\\n' > TASKS.md\n  echo '{RESULT}'\n  exit 0\nfi\n{TICK}\necho '{RESULT}'"
        );
        let agent = fake(tmp.path(), &body);
        let mut o = options(agent, &work);
        o.goal = Some("g".into());
        let s = run(o, &NoProgress, no_cancel()).await.unwrap();
        assert_eq!(s.status, RalphStatus::Complete, "{s:?}");
        assert_eq!((s.tasks_total, s.tasks_done, s.iterations), (3, 3, 3));
    }

    #[tokio::test]
    async fn rate_limit_is_not_an_attempt() {
        let (tmp, work) = dirs();
        setup(&work, &titles(1), "ctx").unwrap();
        let body = format!(
            "if [ ! -f ../limited ]; then touch ../limited\n  echo '{{\"type\":\"result\",\"is_error\":true,\"api_error_status\":429,\"result\":\"API Error: Request rejected (429)\",\"total_cost_usd\":0}}'\n  exit 1\nfi\n{TICK}\necho '{RESULT}'"
        );
        let agent = fake(tmp.path(), &body);
        let mut o = options(agent, &work);
        o.max_attempts_per_task = 1;
        o.max_consecutive_failures = 1;
        let rec = Recorder::default();
        let s = run(o, &rec, no_cancel()).await.unwrap();
        assert_eq!(s.status, RalphStatus::Complete, "{s:?}");
        assert_eq!(s.iterations, 2);
        assert_eq!(
            rec.calls.lock().unwrap().clone(),
            vec![(1, "TASK-001".into(), 1), (2, "TASK-001".into(), 1)]
        );
        assert_eq!(jsonl_lines(&work)[0]["rate_limited"], true);
    }

    #[tokio::test]
    async fn cancel_stops_quickly() {
        let (tmp, work) = dirs();
        setup(&work, &titles(2), "ctx").unwrap();
        let agent = fake(tmp.path(), "sleep 1000");
        let (tx, rx) = watch::channel(false);
        let flip = tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(400)).await;
            tx.send(true).ok();
            tx
        });
        let t0 = Instant::now();
        let s = run(options(agent, &work), &NoProgress, rx).await.unwrap();
        drop(flip.await);
        assert_eq!(s.status, RalphStatus::Cancelled, "{s:?}");
        assert!(t0.elapsed() < Duration::from_secs(5));
        // A cancelled call is not held against the task.
        assert_eq!(s.tasks[0].attempts, 0);
    }

    #[tokio::test]
    async fn total_timeout_stops_the_loop() {
        let (tmp, work) = dirs();
        setup(&work, &titles(2), "ctx").unwrap();
        let agent = fake(tmp.path(), "sleep 1000");
        let mut o = options(agent, &work);
        o.total_timeout = Some(Duration::from_millis(700));
        let t0 = Instant::now();
        let s = run(o, &NoProgress, no_cancel()).await.unwrap();
        assert_eq!(s.status, RalphStatus::Timeout, "{s:?}");
        assert_eq!(s.iterations, 1);
        assert!(t0.elapsed() < Duration::from_secs(5));
    }

    #[test]
    fn run_future_is_send() {
        fn assert_send<T: Send>(_: &T) {}
        let dir = tempfile::tempdir().unwrap();
        let o = options(PathBuf::from("/bin/true"), dir.path());
        let fut = run(o, &NoProgress, no_cancel());
        assert_send(&fut);
    }
}
