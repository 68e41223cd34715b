//! Unit tests of the parent module.

use std::os::unix::fs::PermissionsExt as _;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use tokio::sync::watch;

use super::iterate::run;
use super::tasks::{Task, parse_tasks, render_tasks, setup, tasks_from_text};
use super::*;
use crate::designer::spawn::Agent;
use crate::designer::spawn::{SpawnOptions, SpawnResult};

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
fn untick_clears_only_the_checkbox_of_that_task() {
    let text = "- [x] TASK-001: keep [X] and [x] in the title\n- [X] TASK-002: other\n";
    assert_eq!(
        super::tasks::untick(text, "TASK-001"),
        "- [ ] TASK-001: keep [X] and [x] in the title\n- [X] TASK-002: other\n"
    );
    assert_eq!(
        super::tasks::untick(text, "TASK-002"),
        "- [x] TASK-001: keep [X] and [x] in the title\n- [ ] TASK-002: other\n"
    );
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
        &format!("if [ ! -f ../once ]; then touch ../once; exit 1; fi\n{TICK}\necho '{RESULT}'"),
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
