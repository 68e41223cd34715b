//! `fullsend ralph spawn` and `fullsend ralph run`, black-box with fake
//! `claude` executables: the CLI contract, the loop's statuses, and no
//! orphaned processes.

use std::time::Duration;

use crate::common::fake_claude::{self, Behavior, write_fake_claude};
use crate::support::{World, read};

fn with_fake(behavior: Behavior) -> World {
    let w = World::bare();
    let dir = w.path("fake");
    std::fs::create_dir_all(&dir).expect("dir");
    let claude = write_fake_claude(&dir, behavior);
    w.set("FULLSEND_CLAUDE_BIN", claude.to_str().expect("utf8"))
}

#[test]
fn spawn_runs_any_agent_and_reports_json() {
    let w = World::bare();
    let r = w.run(&["ralph", "spawn", "--agent", "cat", "--", "hello"], "");
    assert_eq!(r.code, 0, "{}", r.stderr);
    let out = r.json();
    assert_eq!(out["ok"], true);
    assert_eq!(out["result"], "hello");
    assert!(
        std::path::Path::new(out["stdout_path"].as_str().expect("path")).exists(),
        "each call's output is kept"
    );
}

#[test]
fn spawn_reads_the_claude_result_object() {
    let w = with_fake(Behavior::Reply("done it".into()));
    let r = w.run(
        &[
            "ralph",
            "spawn",
            "--work-dir",
            w.path("wd").to_str().expect("utf8"),
            "--",
            "say hi",
        ],
        "",
    );
    assert_eq!(r.code, 0, "{}", r.stderr);
    let out = r.json();
    assert_eq!(out["result"], "done it");
    assert!(out["total_cost_usd"].as_f64().unwrap_or(0.0) > 0.0);
    assert!(out["session_id"].is_string());
    let prompt_file = out["prompt_path"].as_str().expect("prompt path");
    assert_eq!(read(std::path::Path::new(prompt_file)), "say hi");
    let failing = with_fake(Behavior::Fail);
    let r = failing.run(&["ralph", "spawn", "--", "x"], "");
    assert_eq!(r.code, 1);
    assert_eq!(r.json()["is_error"], true);
}

#[test]
fn a_missing_claude_names_how_to_install_it() {
    let w = World::bare().set("PATH", "/usr/bin:/bin");
    let r = w.run(&["ralph", "spawn", "--", "x"], "");
    assert_ne!(r.code, 0);
    assert!(
        r.stderr
            .contains("npm install -g @anthropic-ai/claude-code"),
        "{}",
        r.stderr
    );
}

#[test]
fn skipping_permissions_as_root_needs_the_sandbox_confirmation() {
    if unsafe { libc::geteuid() } != 0 {
        return;
    }
    let w = with_fake(Behavior::Reply("x".into())).set("FULLSEND_SKIP_PERMISSIONS", "true");
    let r = w.run(&["ralph", "spawn", "--", "x"], "");
    assert_ne!(r.code, 0);
    assert!(r.stderr.contains("IS_SANDBOX"), "{}", r.stderr);
    assert!(
        fake_claude::argv_log(&w.path("fake")).is_empty(),
        "refused before spawning"
    );
}

#[test]
fn a_timeout_kills_the_whole_process_group() {
    let w = with_fake(Behavior::ForkGrandchildAndHang);
    let wd = w.path("wd");
    let started = std::time::Instant::now();
    let r = w.run(
        &[
            "ralph",
            "spawn",
            "--timeout",
            "1",
            "--work-dir",
            wd.to_str().expect("utf8"),
            "--",
            "hang",
        ],
        "",
    );
    assert!(started.elapsed() < Duration::from_secs(15));
    assert_eq!(r.code, 3, "{}", r.stderr);
    assert_eq!(r.json()["timed_out"], true);
    let pid: i32 = read(&wd.join("grandchild.pid"))
        .trim()
        .parse()
        .expect("pid");
    std::thread::sleep(Duration::from_millis(300));
    let zombie_or_gone = std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .map(|s| s.contains(") Z "))
        .unwrap_or(true);
    assert!(zombie_or_gone, "grandchild {pid} still running");
}

#[test]
fn run_completes_resumes_and_reports_attempts() {
    let w = with_fake(Behavior::TickTask);
    let wd = w.path("loop");
    std::fs::create_dir_all(&wd).expect("dir");
    std::fs::write(
        wd.join("TASKS.md"),
        "# Tasks\n\n- [x] TASK-001: done already\n- [ ] TASK-002: second\n- [ ] TASK-003: third\n",
    )
    .expect("write");
    let r = w.run(
        &["ralph", "run", "--work-dir", wd.to_str().expect("utf8")],
        "",
    );
    assert_eq!(r.code, 0, "{}", r.stderr);
    let s = r.json();
    assert_eq!(s["status"], "complete");
    assert_eq!(s["iterations"], 2, "resumed at the first open task");
    assert_eq!(s["tasks_done"], 3);
    assert!(read(&wd.join("TASKS.md")).matches("- [x]").count() == 3);
}

#[test]
fn a_task_never_ticked_ends_stalled() {
    let w = with_fake(Behavior::NeverTick);
    let wd = w.path("loop");
    std::fs::create_dir_all(&wd).expect("dir");
    std::fs::write(
        wd.join("TASKS.md"),
        "# Tasks\n\n- [ ] TASK-001: never done\n",
    )
    .expect("write");
    let r = w.run(
        &[
            "ralph",
            "run",
            "--work-dir",
            wd.to_str().expect("utf8"),
            "--max-attempts",
            "2",
        ],
        "",
    );
    assert_eq!(r.code, 1, "{}", r.stderr);
    let s = r.json();
    assert_eq!(s["status"], "stalled");
    assert_eq!(s["tasks"][0]["attempts"], 2);
}

#[test]
fn a_failed_breakdown_is_a_failure_never_complete() {
    let w = with_fake(Behavior::Fail);
    let wd = w.path("loop");
    let r = w.run(
        &[
            "ralph",
            "run",
            "--work-dir",
            wd.to_str().expect("utf8"),
            "--goal",
            "do things",
        ],
        "",
    );
    assert_eq!(r.code, 1, "{}", r.stderr);
    let s = r.json();
    assert_eq!(s["status"], "failed");
    assert_eq!(s["tasks_total"], 0);
}

#[test]
fn max_iterations_is_a_limit() {
    let w = with_fake(Behavior::TickTask);
    let wd = w.path("loop");
    std::fs::create_dir_all(&wd).expect("dir");
    std::fs::write(
        wd.join("TASKS.md"),
        "# Tasks\n\n- [ ] TASK-001: a\n- [ ] TASK-002: b\n- [ ] TASK-003: c\n",
    )
    .expect("write");
    let r = w.run(
        &[
            "ralph",
            "run",
            "--work-dir",
            wd.to_str().expect("utf8"),
            "--max-iterations",
            "2",
        ],
        "",
    );
    assert_eq!(r.code, 4, "{}", r.stderr);
    assert_eq!(r.json()["status"], "max_iterations");
}
