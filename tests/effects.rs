//! Effects exactly once, counted: mixed traffic of every message kind through both listeners and
//! every fault (SIGKILL, redis-server SIGKILL and restart, `CLIENT KILL`, `CLIENT PAUSE`, SIGSTOP
//! past the lease and the name lease), with every effect of every input counted by
//! `common/ledger.rs`; the worklist under concurrent status lines and whole-file rewrites; and a
//! listener started while Redis still answers `LOADING`.

use std::time::{Duration, Instant};

use serde_json::json;

use crate::common::ledger::{self, Sources};
use crate::common::mock_api::{self, MockApi, Reply};
use crate::common::traffic::{self, Input};
use crate::listen::{Listener, wait_ready};
use crate::support::{World, eventually, read, signal};

/// XADDs each input to its channel's stream (a durable producer, as `fullsend publish` is).
fn send(w: &World, inputs: &[Input]) {
    let mut c = w.conn();
    for input in inputs {
        let stream = format!(
            "fullsend:{{{}}}:stream",
            input.channel().trim_start_matches("fullsend:")
        );
        let _: String = redis::cmd("XADD")
            .arg(stream)
            .arg("*")
            .arg("data")
            .arg(input.json())
            .query(&mut c)
            .expect("xadd");
    }
}

/// The world of the mixed run: the scripted model (slow enough that faults land mid-call), the
/// roundtable command, FULLSEND designing with one model call.
fn mixed_world() -> World {
    let mock = MockApi::start(|r, _| {
        Reply::Delay(Duration::from_millis(400), Box::new(traffic::answer(r)))
    });
    let w = World::with_redis().mock(mock);
    let command = traffic::roundtable_command(&w.path(""), &w.path("roundtable-runs.log"));
    w.set("FULLSEND_ROUNDTABLE_CMD", command.to_str().expect("utf8"))
        .set("FULLSEND_ENGINE", "api")
}

fn tallies(w: &World, inputs: &[Input]) -> Vec<ledger::Tally> {
    let aof = w.redis().dir().join("appendonlydir");
    let runs = w.path("roundtable-runs.log");
    let context = w.context();
    let sources = Sources {
        aof_dir: &aof,
        context: &context,
        runs: &runs,
    };
    // Redis may be restarting: a failed read is "not yet".
    match redis::Client::open(w.redis_url()).and_then(|c| c.get_connection()) {
        Ok(mut conn) => ledger::read(&mut conn, inputs, &sources)
            .map(|l| ledger::compare(inputs, &l))
            .unwrap_or_default(),
        Err(_) => Vec::new(),
    }
}

/// Waits until every input has every effect it must cause, then for stragglers (a duplicate
/// that a stale listener might still commit), and returns the final tallies.
fn settle(w: &World, inputs: &[Input], limit: Duration, quiet: Duration) -> Vec<ledger::Tally> {
    let deadline = Instant::now() + limit;
    loop {
        let t = tallies(w, inputs);
        if !t.is_empty() && ledger::complete(&t) {
            break;
        }
        if Instant::now() > deadline {
            panic!(
                "not every effect happened within {limit:?}:\n{}",
                ledger::failures(&t).join("\n")
            );
        }
        std::thread::sleep(Duration::from_millis(250));
    }
    std::thread::sleep(quiet);
    tallies(w, inputs)
}

fn client_kill(w: &World, kind: &str) {
    let _ = w.redis().cli(&["CLIENT", "KILL", "TYPE", kind]);
}

#[test]
fn mixed_traffic_through_every_fault_causes_each_effect_exactly_once() {
    let mut w = mixed_world();
    // Five of each of the ten kinds.
    let inputs = traffic::mixed("m", 0, 50);
    traffic::seed(&mut w.conn(), &inputs).expect("seed");
    traffic::seed_worklist(&w.context(), &inputs).expect("seed the worklist");
    let lease = ["--lease", "3", "--concurrency", "2"];
    let role = |name: &'static str| {
        let mut a = vec![name];
        a.extend_from_slice(&lease);
        a
    };
    let mut a = Listener::start(&w, &role("orchestrator"), "a.log");
    let b = Listener::start(&w, &role("orchestrator"), "b.log");
    let f = Listener::start(&w, &role("fullsend"), "f.log");
    wait_ready(&w, "orchestrator", "fullsend:to_orchestrator", 2);
    wait_ready(&w, "fullsend", "fullsend:to_fullsend", 1);
    let calls = |w: &World| w.mock_api().request_count();

    // 1. A listener SIGKILLed with model calls in flight, and started again.
    send(&w, &inputs[0..9]);
    let before = calls(&w);
    eventually(Duration::from_secs(10), "model calls in flight", || {
        (calls(&w) >= before + 2).then_some(())
    });
    a.kill();
    a = Listener::start(&w, &role("orchestrator"), "a2.log");

    // 2. redis-server SIGKILLed with messages in flight, restarted a second later.
    send(&w, &inputs[9..18]);
    std::thread::sleep(Duration::from_millis(600));
    w.redis_mut().kill();
    std::thread::sleep(Duration::from_secs(1));
    w.redis_mut().restart();
    // What was in flight at the crash is answered within 10 s of the restart (and, as the
    // final count shows, once).
    let restarted = Instant::now();
    loop {
        let t = tallies(&w, &inputs[9..18]);
        if !t.is_empty() && ledger::complete(&t) {
            break;
        }
        assert!(
            restarted.elapsed() < Duration::from_secs(10),
            "in flight at the crash, not done 10 s after the restart:\n{}",
            ledger::failures(&tallies(&w, &inputs[9..18])).join("\n")
        );
        std::thread::sleep(Duration::from_millis(200));
    }

    // 3. Every connection dropped, then the server paused.
    send(&w, &inputs[18..27]);
    std::thread::sleep(Duration::from_millis(500));
    client_kill(&w, "normal");
    client_kill(&w, "pubsub");
    let _ = w.redis().cli(&["CLIENT", "PAUSE", "1500", "ALL"]);

    // 4. B stopped past its lease (3 s) and its name lease (9 s) with work in flight; C starts on
    //    the same host meanwhile; B resumes and must commit nothing it no longer owns.
    std::thread::sleep(Duration::from_secs(2));
    send(&w, &inputs[27..36]);
    std::thread::sleep(Duration::from_millis(500));
    signal(b.pid(), libc::SIGSTOP);
    std::thread::sleep(Duration::from_millis(9500));
    let c = Listener::start(&w, &role("orchestrator"), "c.log");
    send(&w, &inputs[36..50]);
    std::thread::sleep(Duration::from_secs(1));
    signal(b.pid(), libc::SIGCONT);

    let tallies = settle(&w, &inputs, Duration::from_secs(90), Duration::from_secs(5));
    let failures = ledger::failures(&tallies);
    assert!(
        failures.is_empty(),
        "every effect exactly once:\n{}",
        failures.join("\n")
    );
    for effect in [
        "experiment_request",
        "orchestrator_response",
        "tool_prd",
        "experiment_archived",
        "execute_now",
        "experiment_ready",
        "design_failed",
        "learning",
        "worklist_line",
        "worklist_note",
        "hash_state",
        "roundtable_run",
    ] {
        let t = tallies
            .iter()
            .find(|t| t.effect == effect)
            .unwrap_or_else(|| panic!("{effect} is counted"));
        assert!(
            t.expected >= 5,
            "{effect}: the run exercised it ({})",
            t.expected
        );
    }
    let mut dead = w.conn();
    for stream in [
        "fullsend:{to_orchestrator}:dlq",
        "fullsend:{to_fullsend}:dlq",
    ] {
        let n: i64 = redis::cmd("XLEN")
            .arg(stream)
            .query(&mut dead)
            .expect("xlen");
        assert_eq!(n, 0, "{stream}: nothing dead-lettered");
    }
    for l in [a, b, c, f] {
        assert_eq!(l.stop(), 0);
    }
    for log in ["a.log", "a2.log", "b.log", "c.log", "f.log"] {
        let text = read(&w.path(log));
        assert!(!text.contains("panicked"), "{log}: {text}");
    }
}

#[test]
fn fifty_status_notices_and_worklist_rewrites_are_each_applied_once() {
    // Status lines are added under the worklist's lock; the model's whole-file rewrites name the
    // version they read and are decided again when a line landed meanwhile. Every line and every
    // rewrite must be in the final file exactly once.
    let mock = MockApi::start(|r, _| {
        let prompt = mock_api::user_text(r);
        let Some(id) = prompt
            .split("rewrite-for ")
            .nth(1)
            .and_then(|s| s.split(|c: char| !c.is_ascii_alphanumeric()).next())
            .filter(|_| prompt.contains("Type: escalation"))
        else {
            return Reply::text(json!({"action": "no_action", "reasoning": "-"}).to_string());
        };
        // The worklist as the prompt shows it, with this decision's line added.
        let current = prompt
            .split("### Current Worklist\n")
            .nth(1)
            .and_then(|s| s.split("\n### Active Experiments").next())
            .unwrap_or("")
            .trim_end()
            .to_string();
        let content = format!("{current}\n- [ ] **Decision {id}** - from the model\n");
        let decision = json!({"action": "update_worklist", "reasoning": "tidy", "payload": {"content": content}});
        Reply::Delay(
            Duration::from_millis(300),
            Box::new(Reply::text(decision.to_string())),
        )
    });
    let w = World::with_redis().mock(mock);
    std::fs::write(
        w.context().join("worklist.md"),
        "# Fullsend Worklist\n\n## Active (In Progress)\n",
    )
    .expect("worklist");
    let l = Listener::start(
        &w,
        &["orchestrator", "--no-ingest", "--concurrency", "4"],
        "l.log",
    );
    let mut c = w.conn();
    let rewrites: Vec<String> = (0..6).map(|i| format!("r{i}")).collect();
    for i in 0..50 {
        if i % 9 == 0 {
            let id = &rewrites[i / 9];
            let msg = json!({"type": "escalation", "source": "watcher", "original_message": {"content": format!("rewrite-for {id}")}});
            let _: String = redis::cmd("XADD")
                .arg("fullsend:{to_orchestrator}:stream")
                .arg("*")
                .arg("data")
                .arg(msg.to_string())
                .query(&mut c)
                .expect("xadd");
        }
        let notice = json!({"type": "fullsend_started", "source": "fullsend_listener", "request_id": format!("req_{i:02}")});
        let _: String = redis::cmd("XADD")
            .arg("fullsend:{to_orchestrator}:stream")
            .arg("*")
            .arg("data")
            .arg(notice.to_string())
            .query(&mut c)
            .expect("xadd");
    }
    let count = |text: &str, needle: &str| text.lines().filter(|l| l.contains(needle)).count();
    let deadline = Instant::now() + Duration::from_secs(90);
    eventually(Duration::from_secs(91), "every line and rewrite", || {
        let text = read(&w.context().join("worklist.md"));
        if Instant::now() > deadline {
            panic!("worklist:\n{text}\nlog:\n{}", read(&w.path("l.log")));
        }
        let lines = (0..50).all(|i| count(&text, &format!("Experiment design req_{i:02}**")) >= 1);
        let decisions = rewrites
            .iter()
            .all(|id| count(&text, &format!("**Decision {id}**")) >= 1);
        (lines && decisions).then_some(())
    });
    std::thread::sleep(Duration::from_secs(2));
    let text = read(&w.context().join("worklist.md"));
    for i in 0..50 {
        assert_eq!(
            count(&text, &format!("Experiment design req_{i:02}**")),
            1,
            "req_{i:02} once:\n{text}"
        );
    }
    for id in &rewrites {
        assert_eq!(
            count(&text, &format!("**Decision {id}**")),
            1,
            "{id} once:\n{text}"
        );
    }
    assert_eq!(l.stop(), 0);
}

#[test]
fn a_listener_started_while_redis_is_loading_waits_and_then_works() {
    // A base file of 20,000 keys, each loaded with a 200 µs delay: the server answers `LOADING`
    // for about four seconds after the restart.
    let mock = MockApi::start(|_, _| {
        Reply::text(json!({"action": "record_learning", "reasoning": "-", "payload": {"learning": "Loaded fine"}}).to_string())
    });
    let mut w = World::with_redis().mock(mock);
    assert_eq!(w.redis().cli(&["DEBUG", "POPULATE", "20000"]), "OK");
    w.redis().cli(&["BGREWRITEAOF"]);
    eventually(Duration::from_secs(20), "the AOF rewritten", || {
        let info = w.redis().cli(&["INFO", "persistence"]);
        (info.contains("aof_rewrite_in_progress:0")
            && info.contains("aof_last_bgrewrite_status:ok"))
        .then_some(())
    });
    w.redis_mut().restart_loading(&[
        "--key-load-delay",
        "200",
        "--loading-process-events-interval-bytes",
        "1024",
    ]);
    let l = Listener::start(&w, &["orchestrator", "--no-ingest"], "l.log");
    std::thread::sleep(Duration::from_millis(1500));
    assert!(
        w.redis().cli(&["PING"]).contains("LOADING"),
        "still loading: the listener met LOADING at start-up"
    );
    eventually(Duration::from_secs(60), "loaded", || {
        (w.redis().cli(&["PING"]) == "PONG").then_some(())
    });
    let r = w.run(
        &["publish", "fullsend:to_orchestrator"],
        &json!({"type": "escalation", "source": "watcher", "original_message": {"content": "after loading"}}).to_string(),
    );
    assert_eq!(r.code, 0, "{}", r.stderr);
    eventually(Duration::from_secs(15), "the learning", || {
        read(&w.context().join("learnings.md"))
            .contains("Loaded fine")
            .then_some(())
    });
    assert_eq!(l.stop(), 0, "it never exited: {}", read(&w.path("l.log")));
}

#[test]
fn an_os_crash_that_loses_the_aof_tail_redoes_the_lost_commits_once() {
    // `appendfsync everysec` can lose the last second of writes to an OS crash. Simulated by
    // cutting the AOF inside the third-last commit: that commit and every later one are gone
    // (Redis drops a transaction cut short at the end of the file), the file effects are still
    // on disk. The redo must put every effect back exactly once.
    let mock = MockApi::start(|r, _| traffic::answer(r));
    let mut w = World::with_redis().mock(mock);
    let inputs: Vec<Input> = traffic::mixed("o", 0, 27)
        .into_iter()
        .filter(|i| {
            use traffic::Kind::*;
            matches!(i.kind, Learn | Respond | Build | Kill | Started)
        })
        .collect();
    traffic::seed(&mut w.conn(), &inputs).expect("seed");
    traffic::seed_worklist(&w.context(), &inputs).expect("seed the worklist");
    send(&w, &inputs);
    let l = Listener::start(
        &w,
        &["orchestrator", "--no-ingest", "--lease", "3"],
        "l.log",
    );
    let done = settle(&w, &inputs, Duration::from_secs(60), Duration::ZERO);
    assert!(ledger::failures(&done).is_empty());
    l.kill();

    w.redis_mut().kill();
    let aof_dir = w.redis().dir().join("appendonlydir");
    let incr = std::fs::read_dir(&aof_dir)
        .expect("aof dir")
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| p.to_string_lossy().ends_with(".incr.aof"))
        .max()
        .expect("an incremental AOF");
    let bytes = std::fs::read(&incr).expect("read aof");
    let multi = b"*1\r\n$5\r\nMULTI\r\n";
    let starts: Vec<usize> = (0..bytes.len().saturating_sub(multi.len()))
        .filter(|&i| bytes[i..].starts_with(multi))
        .collect();
    assert!(starts.len() >= 3, "commits are transactions in the AOF");
    let cut = starts[starts.len() - 3] + multi.len() + 10;
    std::fs::write(&incr, &bytes[..cut]).expect("truncate aof");
    w.redis_mut().restart();
    let lost = tallies(&w, &inputs);
    assert!(
        !ledger::complete(&lost),
        "the cut lost published effects, to be redone"
    );

    let l = Listener::start(
        &w,
        &["orchestrator", "--no-ingest", "--lease", "3"],
        "l2.log",
    );
    let after = settle(&w, &inputs, Duration::from_secs(60), Duration::from_secs(4));
    let failures = ledger::failures(&after);
    assert!(failures.is_empty(), "redone once:\n{}", failures.join("\n"));
    let (pending, ..): (i64, redis::Value, redis::Value, redis::Value) = redis::cmd("XPENDING")
        .arg("fullsend:{to_orchestrator}:stream")
        .arg("orchestrator")
        .query(&mut w.conn())
        .expect("xpending");
    assert_eq!(pending, 0, "nothing left pending");
    assert_eq!(l.stop(), 0);
}
