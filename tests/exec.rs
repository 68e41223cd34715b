//! `fullsend listen CHANNEL --group G --exec PIPELINE`: every exit-code mapping, a stage that
//! hangs, a stage that prints garbage, a filter that drops a message, and the shipped
//! `think | dispatch` pipeline counted effect by effect through SIGKILLs of the listener and of
//! its stages.

use std::time::Duration;

use serde_json::{Value, json};

use crate::common::ledger;
use crate::common::mock_api::{MockApi, Reply};
use crate::common::traffic::{self, Input, Kind};
use crate::listen::Listener;
use crate::support::{World, eventually, read};

/// Processes of this world (found by its Redis URL in their environment) whose command line
/// contains `needle` (arguments are NUL-separated there: `"\0think\0"` is a `think` stage, not
/// a listener whose `--exec` mentions it).
fn processes_of(w: &World, needle: &str) -> Vec<u32> {
    let url = format!("REDIS_URL={}", w.redis_url());
    let mut out = Vec::new();
    for entry in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let environ = std::fs::read(entry.path().join("environ")).unwrap_or_default();
        let cmdline = std::fs::read(entry.path().join("cmdline")).unwrap_or_default();
        let has = |hay: &[u8], n: &[u8]| hay.windows(n.len()).any(|x| x == n);
        if has(&environ, url.as_bytes()) && has(&cmdline, needle.as_bytes()) {
            out.push(pid);
        }
    }
    out
}

fn xadd(w: &World, channel: &str, data: &str) {
    let stream = format!(
        "fullsend:{{{}}}:stream",
        channel.trim_start_matches("fullsend:")
    );
    let _: String = redis::cmd("XADD")
        .arg(stream)
        .arg("*")
        .arg("data")
        .arg(data)
        .query(&mut w.conn())
        .expect("xadd");
}

fn xlen(w: &World, key: &str) -> i64 {
    redis::cmd("XLEN")
        .arg(key)
        .query(&mut w.conn())
        .expect("xlen")
}

/// Entries pending in `group` (-1 while the group does not exist yet).
fn pending(w: &World, channel: &str, group: &str) -> i64 {
    let stream = format!(
        "fullsend:{{{}}}:stream",
        channel.trim_start_matches("fullsend:")
    );
    let reply: redis::RedisResult<(i64, redis::Value, redis::Value, redis::Value)> =
        redis::cmd("XPENDING")
            .arg(stream)
            .arg(group)
            .query(&mut w.conn());
    reply.map(|(n, ..)| n).unwrap_or(-1)
}

/// A listener on `channel` (group `g`) running `pipeline`.
fn exec_listener(w: &World, channel: &str, pipeline: &str, extra: &[&str]) -> Listener {
    let mut args = vec![channel, "--group", "g", "--exec", pipeline, "--no-ingest"];
    if !extra.contains(&"--lease") {
        args.extend(["--lease", "3"]);
    }
    args.extend_from_slice(extra);
    static STARTED: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    let n = STARTED.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let log = format!("{}.{n}.log", channel.replace(':', "_"));
    Listener::start(w, &args, &log)
}

#[test]
fn every_exit_code_has_its_outcome() {
    let w = World::with_redis();
    let flag = |name: &str| w.path(name).display().to_string();
    let cases = [
        // (channel, pipeline, extra args)
        (
            "fullsend:bad",
            "cat > /dev/null; exit 2".to_string(),
            vec![],
        ),
        (
            "fullsend:flaky",
            format!(
                "cat > /dev/null; if [ -e {0} ]; then echo '{{\"ok\":1}}'; else touch {0}; exit 3; fi",
                flag("flaky")
            ),
            vec![],
        ),
        (
            "fullsend:limited",
            format!(
                "cat > /dev/null; if [ -e {0} ]; then exit 0; else touch {0}; exit 4; fi",
                flag("limited")
            ),
            vec![],
        ),
        (
            "fullsend:crash",
            "kill -9 $$".to_string(),
            vec!["--max-deliveries", "2"],
        ),
        (
            "fullsend:hang",
            "sleep 600".to_string(),
            vec!["--exec-timeout", "1", "--max-deliveries", "2"],
        ),
        (
            "fullsend:garbage",
            "cat > /dev/null; echo 'not json {'".to_string(),
            vec![],
        ),
        (
            "fullsend:filter",
            "grep -v drop-me || true".to_string(),
            vec![],
        ),
    ];
    let mut listeners = Vec::new();
    for (channel, pipeline, extra) in &cases {
        xadd(
            &w,
            channel,
            &json!({"type": "probe", "note": "drop-me"}).to_string(),
        );
        listeners.push(exec_listener(&w, channel, pipeline, extra));
    }
    let dlq = |c: &str| {
        xlen(
            &w,
            &format!("fullsend:{{{}}}:dlq", c.trim_start_matches("fullsend:")),
        )
    };
    let out = |i: usize| -> Vec<Value> { listeners[i].lines() };
    // 2: dead-lettered on its first delivery.
    eventually(Duration::from_secs(20), "exit 2 dead-lettered", || {
        (dlq("fullsend:bad") == 1).then_some(())
    });
    // 3: retried soon by its owner, then done; the second delivery committed.
    let line = eventually(Duration::from_secs(20), "exit 3 retried", || out(1).pop());
    assert_eq!(line["output"]["ok"], 1);
    assert_eq!(line["deliveries"], 2);
    // 4: waits, and the wait is not a delivery.
    let line = eventually(Duration::from_secs(20), "exit 4 waited", || out(2).pop());
    assert_eq!(line["deliveries"], 1, "{line}");
    // A crash counts as a failed delivery: dead-lettered after two.
    eventually(Duration::from_secs(30), "a crash dead-lettered", || {
        (dlq("fullsend:crash") == 1).then_some(())
    });
    // A hung stage is killed at its timeout, with everything it started.
    eventually(Duration::from_secs(30), "a hang dead-lettered", || {
        (dlq("fullsend:hang") == 1).then_some(())
    });
    eventually(Duration::from_secs(5), "no hung stage left", || {
        processes_of(&w, "sleep\x00600").is_empty().then_some(())
    });
    // Garbage on stdout with exit 0: acknowledged, shown as text.
    let line = eventually(Duration::from_secs(20), "garbage acknowledged", || {
        out(5).pop()
    });
    assert_eq!(line["output"], "not json {");
    assert_eq!(line["dropped"], true);
    // A filter that drops the message: acknowledged with a warning, nothing else.
    let line = eventually(Duration::from_secs(20), "filter", || out(6).pop());
    assert_eq!(line["dropped"], true);
    for c in [
        "fullsend:flaky",
        "fullsend:limited",
        "fullsend:garbage",
        "fullsend:filter",
    ] {
        assert_eq!(pending(&w, c, "g"), 0, "{c} acknowledged");
        assert_eq!(dlq(c), 0, "{c} not dead-lettered");
    }
    for l in listeners {
        assert_eq!(l.stop(), 0);
    }
    let logs: String = std::fs::read_dir(w.path(""))
        .expect("dir")
        .flatten()
        .filter(|e| {
            e.file_name()
                .to_string_lossy()
                .starts_with("fullsend_filter.")
        })
        .map(|e| read(&e.path()))
        .collect();
    assert!(logs.contains("without committing"), "the drop is logged");
}

#[test]
fn the_think_dispatch_pipeline_causes_each_effect_once_through_sigkills_and_a_lost_lease() {
    let mock = MockApi::start(|r, _| {
        Reply::Delay(Duration::from_millis(500), Box::new(traffic::answer(r)))
    });
    let w = World::with_redis().mock(mock);
    let command = traffic::roundtable_command(&w.path(""), &w.path("roundtable-runs.log"));
    let w = w.set("FULLSEND_ROUNDTABLE_CMD", command.to_str().expect("utf8"));
    // Enough work to be in flight through every fault below (42 messages).
    let inputs: Vec<Input> = traffic::mixed("p", 0, 60)
        .into_iter()
        .filter(|i| !matches!(i.kind, Kind::Design | Kind::DesignFails | Kind::ToolBuilt))
        .collect();
    traffic::seed(&mut w.conn(), &inputs).expect("seed");
    traffic::seed_worklist(&w.context(), &inputs).expect("seed the worklist");
    for i in &inputs {
        xadd(&w, i.channel(), &i.json());
    }
    let start = |log: &str| {
        Listener::start(
            &w,
            &[
                "fullsend:to_orchestrator",
                "--group",
                "orchestrator",
                "--exec",
                "fullsend think | fullsend dispatch",
                "--no-ingest",
                "--lease",
                "3",
                "--concurrency",
                "2",
            ],
            log,
        )
    };
    let a = start("a.log");
    // The listener SIGKILLed with stages running: its pipelines die with it or finish
    // unacknowledged; a successor redoes them once.
    eventually(Duration::from_secs(20), "a stage thinking", || {
        (!processes_of(&w, "\0think\0").is_empty()).then_some(())
    });
    a.kill();
    let b = start("b.log");
    // The listener stopped past its lease with its pipelines running: they finish, but their
    // dispatch stage's commit is fenced off (the delivery is another's now), and the listener
    // that took the entries over carries each out once.
    eventually(Duration::from_secs(20), "b's stages thinking", || {
        (!processes_of(&w, "\0think\0").is_empty()).then_some(())
    });
    crate::support::signal(b.pid(), libc::SIGSTOP);
    let c = start("c.log");
    std::thread::sleep(Duration::from_secs(8));
    crate::support::signal(b.pid(), libc::SIGCONT);
    // A stage SIGKILLed mid-message: a failed delivery, retried.
    for _ in 0..3 {
        let victims = eventually(Duration::from_secs(20), "a stage to kill", || {
            let v = processes_of(&w, "\0think\0");
            (!v.is_empty()).then_some(v)
        });
        crate::support::signal(victims[0], libc::SIGKILL);
        std::thread::sleep(Duration::from_millis(700));
    }
    let aof = w.redis().dir().join("appendonlydir");
    let runs = w.path("roundtable-runs.log");
    let context = w.context();
    let sources = ledger::Sources {
        aof_dir: &aof,
        context: &context,
        runs: &runs,
    };
    let count = || {
        let l = ledger::read(&mut w.conn(), &inputs, &sources).expect("ledger");
        ledger::compare(&inputs, &l)
    };
    eventually(Duration::from_secs(90), "every effect", || {
        ledger::complete(&count()).then_some(())
    });
    std::thread::sleep(Duration::from_secs(4));
    let failures = ledger::failures(&count());
    assert!(
        failures.is_empty(),
        "exactly once:\n{}",
        failures.join("\n")
    );
    assert_eq!(xlen(&w, "fullsend:{to_orchestrator}:dlq"), 0);
    assert!(
        !c.lines().is_empty(),
        "the second listener took work over while the first was stopped"
    );
    assert_eq!(b.stop(), 0);
    assert_eq!(c.stop(), 0);
    assert!(
        processes_of(&w, "\0think\0").is_empty(),
        "no stage outlives the listener"
    );
}

/// Runs a `commands/` script with this world's environment and this build's `fullsend` first on
/// PATH, as an operator would.
fn script(w: &World, rel: &str, args: &[&str], log: &str) -> Listener {
    let repo = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut bash = std::process::Command::new("bash");
    bash.arg(repo.join(rel)).args(args).env_clear();
    for (k, v) in w.cmd(&[]).get_envs() {
        if let Some(v) = v {
            bash.env(k, v);
        }
    }
    bash.env("PATH", bin_path());
    bash.current_dir(w.path(""));
    let err = std::fs::File::create(w.path(log)).expect("log");
    let child = bash
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(err)
        .spawn()
        .expect("bash");
    Listener::adopt(child)
}

/// PATH with the directory of the `fullsend` under test first.
fn bin_path() -> String {
    let bin = crate::support::bin();
    format!(
        "{}:{}",
        bin.parent().expect("bin dir").display(),
        std::env::var("PATH").unwrap_or_default()
    )
}

#[test]
fn the_shipped_pipelines_cause_each_effect_once_through_sigkills_of_their_stages() {
    // Both daemons as `commands/orchestrator.sh` and `commands/fullsend.sh` run them, all ten
    // message kinds, with a think stage, a design stage and the Orchestrator's listener
    // SIGKILLed mid-message.
    let mock = MockApi::start(|r, _| {
        Reply::Delay(Duration::from_millis(500), Box::new(traffic::answer(r)))
    });
    let w = World::with_redis().mock(mock);
    let command = traffic::roundtable_command(&w.path(""), &w.path("roundtable-runs.log"));
    let w = w
        .set("FULLSEND_ROUNDTABLE_CMD", command.to_str().expect("utf8"))
        .set("FULLSEND_ENGINE", "api");
    let inputs = traffic::mixed("s", 0, 36);
    traffic::seed(&mut w.conn(), &inputs).expect("seed");
    traffic::seed_worklist(&w.context(), &inputs).expect("seed the worklist");
    for i in &inputs {
        xadd(&w, i.channel(), &i.json());
    }
    let args = ["--no-ingest", "--lease", "3"];
    let w = w.set("FULLSEND_CONCURRENCY", "2");
    let o = script(&w, "commands/orchestrator.sh", &args, "o.log");
    let f = script(&w, "commands/fullsend.sh", &args, "f.log");
    for stage in ["\0think\0", "\0design\0"] {
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        let victims = eventually(Duration::from_secs(31), "a stage to kill", || {
            assert!(
                std::time::Instant::now() < deadline,
                "no {stage:?} stage: {}\n{}",
                read(&w.path("o.log")),
                read(&w.path("f.log"))
            );
            let v = processes_of(&w, stage);
            (!v.is_empty()).then_some(v)
        });
        crate::support::signal(victims[0], libc::SIGKILL);
    }
    std::thread::sleep(Duration::from_millis(800));
    o.kill();
    let o = script(&w, "commands/orchestrator.sh", &args, "o2.log");
    let aof = w.redis().dir().join("appendonlydir");
    let runs = w.path("roundtable-runs.log");
    let context = w.context();
    let sources = ledger::Sources {
        aof_dir: &aof,
        context: &context,
        runs: &runs,
    };
    let count = || {
        let l = ledger::read(&mut w.conn(), &inputs, &sources).expect("ledger");
        ledger::compare(&inputs, &l)
    };
    eventually(Duration::from_secs(120), "every effect", || {
        ledger::complete(&count()).then_some(())
    });
    std::thread::sleep(Duration::from_secs(4));
    let failures = ledger::failures(&count());
    assert!(
        failures.is_empty(),
        "exactly once:\n{}",
        failures.join("\n")
    );
    for dlq in [
        "fullsend:{to_orchestrator}:dlq",
        "fullsend:{to_fullsend}:dlq",
    ] {
        assert_eq!(xlen(&w, dlq), 0, "{dlq}");
    }
    assert_eq!(o.stop(), 0);
    assert_eq!(f.stop(), 0);
}

#[test]
fn the_approval_gate_holds_a_builder_dispatch_until_it_is_approved() {
    let mock = MockApi::start(|_, _| {
        Reply::text(
            json!({"action": "dispatch_to_builder", "reasoning": "we need a scraper", "priority": "high",
                   "payload": {"prd": {"name": "hn_scraper", "description": "scrape HN hiring posts"}}})
            .to_string(),
        )
    });
    let w = World::with_redis().mock(mock);
    let gate =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("commands/examples/approval-gate.sh");
    let pipeline = format!("fullsend think | {}", gate.display());
    let l = Listener::adopt(
        w.cmd(&[
            "listen",
            "fullsend:to_orchestrator",
            "--group",
            "orchestrator",
            "--exec",
            &pipeline,
            "--no-ingest",
            "--lease",
            "5",
        ])
        .env("PATH", bin_path())
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::fs::File::create(w.path("l.log")).expect("log"))
        .spawn()
        .expect("listen"),
    );
    xadd(
        &w,
        "fullsend:to_orchestrator",
        &json!({"type": "escalation", "source": "watcher", "original_message": {"content": "we keep scraping HN by hand"}}).to_string(),
    );
    let held = eventually(Duration::from_secs(30), "held for approval", || {
        let mut c = w.conn();
        let held = crate::support::of_type(&mut c, "fullsend:approvals", "approval_needed");
        (!held.is_empty()).then_some(held)
    });
    assert_eq!(held.len(), 1);
    assert_eq!(held[0]["decision"]["action"], "dispatch_to_builder");
    let prds = |w: &World| {
        crate::support::of_type(&mut w.conn(), "fullsend:builder_tasks", "tool_prd").len()
    };
    std::thread::sleep(Duration::from_secs(1));
    assert_eq!(prds(&w), 0, "nothing reaches the Builder before approval");
    assert_eq!(
        pending(&w, "fullsend:to_orchestrator", "orchestrator"),
        0,
        "the message is acknowledged"
    );

    let approve = |args: &[&str]| {
        let repo = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
        let mut c = std::process::Command::new("bash");
        c.arg(repo.join("commands/examples/approve.sh"))
            .args(args)
            .env_clear();
        for (k, v) in w.cmd(&[]).get_envs() {
            if let Some(v) = v {
                c.env(k, v);
            }
        }
        c.env("PATH", bin_path()).current_dir(w.path(""));
        c.output().expect("approve.sh")
    };
    let listed = approve(&[]);
    let id = held[0]["msg_id"].as_str().expect("msg_id");
    assert!(
        String::from_utf8_lossy(&listed.stdout).contains(id),
        "listed"
    );
    let first = approve(&[id]);
    assert!(
        first.status.success(),
        "{}",
        String::from_utf8_lossy(&first.stderr)
    );
    assert_eq!(prds(&w), 1, "approved: sent to the Builder");
    let again = approve(&[id]);
    assert!(
        again.status.success(),
        "{}",
        String::from_utf8_lossy(&again.stderr)
    );
    assert_eq!(prds(&w), 1, "approving twice dispatches once");
    assert_eq!(approve(&["no-such-id"]).status.code(), Some(2));
    assert_eq!(l.stop(), 0);
}

#[test]
fn sigterm_takes_a_running_pipeline_with_it_after_the_grace_period() {
    let w = World::with_redis();
    xadd(&w, "fullsend:slow", &json!({"type": "probe"}).to_string());
    let l = exec_listener(
        &w,
        "fullsend:slow",
        "cat > /dev/null; sleep 600",
        &["--grace", "1"],
    );
    eventually(Duration::from_secs(20), "the stage running", || {
        (!processes_of(&w, "sleep\x00600").is_empty()).then_some(())
    });
    let started = std::time::Instant::now();
    assert_eq!(l.stop(), 0, "SIGTERM exits 0");
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "within the grace period and a little"
    );
    eventually(Duration::from_secs(5), "no stage left", || {
        processes_of(&w, "sleep\x00600").is_empty().then_some(())
    });
    assert_eq!(
        pending(&w, "fullsend:slow", "g"),
        1,
        "the message stays pending for later"
    );
}

#[test]
fn a_pipeline_that_outlasts_the_lease_keeps_its_message() {
    // Lease 2 s, a stage of 5 s, a second listener waiting for work: the lease is renewed while
    // the pipeline runs, so nobody else takes the message and it runs once.
    let w = World::with_redis();
    let runs = w.path("runs.log");
    let pipeline = format!("cat > /dev/null; sleep 5; echo run >> {}", runs.display());
    xadd(&w, "fullsend:long", &json!({"type": "probe"}).to_string());
    let a = exec_listener(&w, "fullsend:long", &pipeline, &["--lease", "2"]);
    let b = exec_listener(&w, "fullsend:long", &pipeline, &["--lease", "2"]);
    eventually(Duration::from_secs(30), "done", || {
        (pending(&w, "fullsend:long", "g") == 0 && runs.exists()).then_some(())
    });
    std::thread::sleep(Duration::from_secs(3));
    assert_eq!(read(&runs).lines().count(), 1, "one run");
    assert_eq!(a.stop(), 0);
    assert_eq!(b.stop(), 0);
}
