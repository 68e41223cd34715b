//! One RALPH loop in motion: each iteration picks the next open task, spawns the agent on it,
//! records what happened and decides whether to go on, wait out a rate limit, or stop.

use std::collections::BTreeMap;
use std::io::Write as _;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use tokio::sync::watch;

use super::tasks::{
    Task, clean_title, ensure_status, parse_tasks, render_tasks, tasks_from_text, untick,
};
use super::verdict::{Verdicts, verdict_says_done};
use super::{Progress, RalphOptions, RalphStatus, RalphSummary, TASKS_FILE, TaskReport};
use crate::designer::spawn::{self, SpawnResult};

/// Longest wait after a rate-limited call.
const MAX_RATE_LIMIT_WAIT: Duration = Duration::from_secs(30);
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
pub(super) fn rate_limited(r: &SpawnResult) -> bool {
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
    /// What the confirmed verdicts reported.
    verdicts: Verdicts,
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

    /// What the next call may spend: the smaller of the loop's budget left and the purse's
    /// (the day's spend limit). Checked before every call; Err when nothing is left.
    async fn cap(&self) -> Result<Option<f64>, Stop> {
        let mut cap = self.opts.budget_usd.map(|b| b - self.cost);
        if let Some(purse) = &self.opts.purse {
            match purse.left().await {
                Ok(Some(left)) => cap = Some(cap.map_or(left, |c| c.min(left))),
                Ok(None) => {}
                Err(exhausted) => return Err((RalphStatus::Budget, Some(exhausted.reason))),
            }
        }
        match cap {
            Some(c) if c <= 0.0 => Err(self
                .over_budget()
                .unwrap_or((RalphStatus::Budget, Some("no budget left".to_owned())))),
            other => Ok(other),
        }
    }

    /// One agent call, its per-call timeout shortened to the time left and its
    /// `--max-budget-usd` to `cap`. A spawn error becomes a failed result so one bad call
    /// never ends the loop by itself. Its cost is counted at once, whatever the outcome.
    async fn call(
        &mut self,
        label: String,
        prompt: &str,
        cap: Option<f64>,
        verdict: bool,
    ) -> (SpawnResult, bool) {
        let mut sopts = self.opts.spawn.clone();
        sopts.label = label;
        if verdict {
            sopts.json_schema.clone_from(&self.opts.verdict_schema);
        }
        if let Some(cap) = cap {
            sopts.max_budget_usd = Some(sopts.max_budget_usd.map_or(cap, |m| m.min(cap)));
        }
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
            Err(e) => SpawnResult::not_run(
                Some(format!("spawn failed: {e:#}")),
                PathBuf::new(),
                PathBuf::new(),
                PathBuf::new(),
            ),
        };
        if r.total_cost_usd.is_finite() && r.total_cost_usd > 0.0 {
            self.cost += r.total_cost_usd;
        }
        if let Some(purse) = &self.opts.purse {
            purse
                .record(r.total_cost_usd, spawn::billed_model(&sopts))
                .await;
        }
        let cut = cut_by_deadline && r.timed_out;
        (r, cut)
    }

    /// Clears a tick the verdict did not confirm, so the task is tried again.
    fn untick(&self, id: &str) -> anyhow::Result<()> {
        let path = self.tasks_path();
        let text = std::fs::read_to_string(&path)
            .with_context(|| format!("reading {}", path.display()))?;
        let tmp = self.work_dir.join(".fullsend").join("TASKS.md.tmp");
        std::fs::write(&tmp, untick(&text, id))
            .with_context(|| format!("writing {}", tmp.display()))?;
        std::fs::rename(&tmp, &path).with_context(|| format!("renaming to {}", path.display()))
    }

    /// Waits after a rate-limited call, bounded by the deadline; stops early on cancel.
    async fn pause(&mut self, d: Duration) {
        let d = match self.deadline {
            Some(dl) => d.min(dl.saturating_duration_since(Instant::now())),
            None => d,
        };
        tokio::select! {
            () = tokio::time::sleep(d) => {}
            () = crate::support::signal::wait_cancelled(&mut self.cancel) => {}
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
            let cap = match self.cap().await {
                Ok(cap) => cap,
                Err(stop) => return Ok(Some(stop)),
            };
            tries += 1;
            self.progress.iteration(0, &pseudo, tries);
            let (r, _) = self
                .call(format!("breakdown-{tries}"), &prompt, cap, false)
                .await;
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
            let cap = match self.cap().await {
                Ok(cap) => cap,
                Err(stop) => return Ok(stop),
            };
            let attempt = used + 1;
            self.iterations += 1;
            let n = self.iterations;
            self.progress.iteration(n, &task, attempt);
            let prompt = (self.opts.task_prompt)(&task);
            let done_before: Vec<String> = self
                .read_tasks()
                .map(|ts| ts.into_iter().filter(|t| t.done).map(|t| t.id).collect())
                .unwrap_or_default();
            let (r, cut) = self
                .call(
                    format!("task-{}-attempt-{attempt}", task.id),
                    &prompt,
                    cap,
                    true,
                )
                .await;
            // Progress is the checkbox, never the TASK_DONE marker or the exit code. With a
            // verdict schema, the structured verdict must say the same: either alone is not done.
            let ticked = self
                .read_tasks()
                .map(|ts| ts.iter().any(|t| t.id == task.id && t.done))
                .unwrap_or(false);
            let done_now = match &self.opts.verdict_schema {
                None => ticked,
                Some(_) => {
                    let confirmed = verdict_says_done(&r);
                    if ticked && !confirmed {
                        self.untick(&task.id)?;
                    }
                    // A call is about its one task: its verdict confirms no other, so another
                    // box it ticked is cleared and that task gets its own call.
                    for other in self.read_tasks().unwrap_or_default() {
                        if other.done && other.id != task.id && !done_before.contains(&other.id) {
                            self.untick(&other.id)?;
                        }
                    }
                    if ticked && confirmed {
                        self.verdicts.keep(&r);
                    }
                    ticked && confirmed
                }
            };
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
            learnings: self.verdicts.learnings.clone(),
            spec_path: self.verdicts.spec_path.clone(),
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
        verdicts: Verdicts::default(),
    };
    runner.load_state();
    let (status, reason) = runner.drive().await?;
    let summary = runner.summary(status, reason, started);
    progress.end(&summary);
    Ok(summary)
}
