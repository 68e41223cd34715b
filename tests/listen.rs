//! `fullsend listen`: end to end against a real redis-server (killed and
//! restarted), the Messages-API mock and fake `claude`, including the short
//! versions of the delivery targets (SIGKILL, SIGSTOP, SIGTERM, poison
//! messages, dropped connections, several listeners).

use std::io::{BufRead, BufReader};
use std::process::Child;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::common::fake_claude::{Behavior, write_fake_claude};
use crate::common::mock_api::{self, MockApi, Recorded, Reply};
use crate::support::{World, eventually, of_type, rambling, read, signal};

const STREAM: &str = "fullsend:{to_orchestrator}:stream";
const DLQ: &str = "fullsend:{to_orchestrator}:dlq";

/// A running listener and the JSON lines it printed.
pub(crate) struct Listener {
    child: Child,
    lines: Arc<Mutex<Vec<Value>>>,
}

impl Listener {
    pub(crate) fn start(w: &World, args: &[&str], log: &str) -> Listener {
        let mut all = vec!["listen"];
        all.extend_from_slice(args);
        Listener::adopt(w.spawn(&all, log))
    }
    /// Reads the JSON lines of a listener started some other way (e.g. a `commands/` script).
    pub(crate) fn adopt(mut child: Child) -> Listener {
        let stdout = child.stdout.take().expect("stdout");
        let lines = Arc::new(Mutex::new(Vec::new()));
        let sink = lines.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if let Ok(v) = serde_json::from_str::<Value>(&line) {
                    sink.lock().expect("lock").push(v);
                }
            }
        });
        Listener { child, lines }
    }
    pub(crate) fn pid(&self) -> u32 {
        self.child.id()
    }
    pub(crate) fn lines(&self) -> Vec<Value> {
        self.lines.lock().expect("lock").clone()
    }
    pub(crate) fn stop(mut self) -> i32 {
        signal(self.pid(), libc::SIGTERM);
        let start = Instant::now();
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                return status.code().unwrap_or(-1);
            }
            if start.elapsed() > Duration::from_secs(30) {
                let _ = self.child.kill();
                panic!("listener did not stop after SIGTERM");
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
    pub(crate) fn kill(mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Waits until `n` listeners of `group` are up and the pub/sub bridge is subscribed.
pub(crate) fn wait_ready(w: &World, group: &str, channel: &str, n: usize) {
    eventually(Duration::from_secs(20), "listeners ready", || {
        let mut conn = w.conn();
        let keys: Vec<String> = redis::cmd("KEYS")
            .arg(format!("fullsend:listeners:{group}:*"))
            .query(&mut conn)
            .ok()?;
        let subs: Vec<(String, i64)> = redis::cmd("PUBSUB")
            .arg("NUMSUB")
            .arg(channel)
            .query(&mut conn)
            .ok()?;
        (keys.len() >= n && subs.first().map(|s| s.1).unwrap_or(0) >= n as i64).then_some(())
    });
}

fn escalation(content: &str, channel_id: Option<&str>) -> Value {
    let mut original = json!({"username": "jake", "content": content});
    if let Some(c) = channel_id {
        original["channel_id"] = json!(c);
        original["message_id"] = json!("555");
    }
    json!({"type": "escalation", "source": "watcher", "priority": "high", "original_message": original})
}

/// A model that dispatches escalations to FULLSEND and answers everything else with no_action.
fn dispatching_model(req: &Recorded) -> Reply {
    let text = mock_api::user_text(req);
    if text.contains("\"escalation\"") {
        Reply::text(rambling(
            &json!({"action": "dispatch_to_fullsend", "reasoning": "HN hiring posts name CTOs {hiring}", "payload": {"idea": "Scrape HN Who is Hiring posts"}, "priority": "high", "context_for_fullsend": "dev outreach"}),
        ))
    } else {
        Reply::text(json!({"action": "no_action", "reasoning": "nothing to do"}).to_string())
    }
}

fn publish(w: &World, channel: &str, payload: &str) {
    let mut c = w.conn();
    let _: i64 = redis::cmd("PUBLISH")
        .arg(channel)
        .arg(payload)
        .query(&mut c)
        .expect("publish");
}

fn experiment_requests(w: &World) -> Vec<Value> {
    let mut c = w.conn();
    of_type(&mut c, "fullsend:to_fullsend", "experiment_request")
}

#[test]
fn published_escalation_becomes_an_experiment_request_and_survives_a_redis_restart() {
    let mut w = World::with_redis().mock(MockApi::start(|r, _| dispatching_model(r)));
    let listener = Listener::start(&w, &["orchestrator", "--lease", "5"], "listen.log");
    wait_ready(&w, "orchestrator", "fullsend:to_orchestrator", 1);

    // A subscriber of fullsend:to_fullsend sees the request within 2 seconds.
    let client = redis::Client::open(w.redis_url()).expect("client");
    let mut sub_conn = client.get_connection().expect("conn");
    let mut pubsub = sub_conn.as_pubsub();
    pubsub.subscribe("fullsend:to_fullsend").expect("subscribe");
    pubsub
        .set_read_timeout(Some(Duration::from_secs(2)))
        .expect("timeout");
    publish(
        &w,
        "fullsend:to_orchestrator",
        &escalation("Scrape HN Who is Hiring posts", None).to_string(),
    );
    let msg = pubsub.get_message().expect("experiment_request within 2 s");
    let payload: Value =
        serde_json::from_str(&msg.get_payload::<String>().expect("payload")).expect("json");
    assert_eq!(payload["type"], "experiment_request");
    assert_eq!(payload["idea"]["idea"], "Scrape HN Who is Hiring posts");
    assert!(payload["causation_id"].is_string(), "the cause is named");
    drop(pubsub);
    let log = read(&w.context().join("decisions.jsonl"));
    assert!(
        log.contains("HN hiring posts name CTOs"),
        "decision log line with the reasoning"
    );

    // Non-JSON is dead-lettered and the next message still flows.
    publish(&w, "fullsend:to_orchestrator", "this is not json {");
    publish(
        &w,
        "fullsend:to_orchestrator",
        &escalation("second idea", None).to_string(),
    );
    eventually(Duration::from_secs(10), "second request", || {
        (experiment_requests(&w).len() == 2).then_some(())
    });
    let mut c = w.conn();
    let dlq: u64 = redis::cmd("XLEN").arg(DLQ).query(&mut c).expect("xlen");
    assert_eq!(dlq, 1);

    // Kill redis-server and bring it back: the listener keeps going.
    w.redis_mut().kill();
    std::thread::sleep(Duration::from_millis(1500));
    w.redis_mut().restart();
    // The first message after the restart is answered soon (its handler may meet a stale
    // connection once; it is retried after a second, not after the 60 s lease), and once.
    let r = w.run(
        &["publish", "fullsend:to_orchestrator"],
        &escalation("after the restart", None).to_string(),
    );
    assert_eq!(r.code, 0, "{}", r.stderr);
    eventually(Duration::from_secs(10), "request after restart", || {
        (experiment_requests(&w).len() == 3).then_some(())
    });
    // Idle long enough for the subscription's keep-alive ping.
    std::thread::sleep(Duration::from_secs(6));
    assert_eq!(experiment_requests(&w).len(), 3, "once");

    assert_eq!(listener.stop(), 0, "SIGTERM exits 0");
    let log = read(&w.path("listen.log"));
    assert!(log.lines().all(|l| !l.contains("panicked")));
    assert!(
        !log.contains("Incompatible type"),
        "the subscription's ping reply is understood: {log}"
    );
}

#[test]
fn a_stopped_listener_keeps_its_name_and_its_entries() {
    // A is stopped (SIGSTOP) for longer than the old 6 s name lease but well inside its 60 s
    // work lease, with a model call in flight; B starts on the same host meanwhile. B must not
    // take A's name and re-run A's entry: every message costs one model call.
    let mock =
        MockApi::start(|r, _| Reply::Delay(Duration::from_secs(3), Box::new(dispatching_model(r))));
    let w = World::with_redis().mock(mock);
    let a = Listener::start(&w, &["orchestrator", "--no-ingest"], "a.log");
    eventually(Duration::from_secs(20), "A up", || {
        let mut c = w.conn();
        let keys: Vec<String> = redis::cmd("KEYS")
            .arg("fullsend:listeners:orchestrator:*")
            .query(&mut c)
            .ok()?;
        (!keys.is_empty()).then_some(())
    });
    for i in 0..3 {
        let r = w.run(
            &["publish", "fullsend:to_orchestrator"],
            &escalation(&format!("stopped {i}"), None).to_string(),
        );
        assert_eq!(r.code, 0, "{}", r.stderr);
    }
    eventually(Duration::from_secs(10), "A's model call in flight", || {
        (w.mock_api().request_count() >= 1).then_some(())
    });
    signal(a.pid(), libc::SIGSTOP);
    std::thread::sleep(Duration::from_secs(8));
    let b = Listener::start(&w, &["orchestrator", "--no-ingest"], "b.log");
    std::thread::sleep(Duration::from_secs(2));
    signal(a.pid(), libc::SIGCONT);
    eventually(Duration::from_secs(30), "three decisions", || {
        (experiment_requests(&w).len() == 3).then_some(())
    });
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(experiment_requests(&w).len(), 3, "each effect once");
    assert_eq!(
        w.mock_api().request_count(),
        3,
        "one model call per message: B never re-ran A's entry"
    );
    assert_eq!(a.stop(), 0);
    assert_eq!(b.stop(), 0);
}

#[test]
fn the_roundtable_runs_at_most_once_when_its_listener_dies_mid_run() {
    // The command kills its listener (its parent) on the first run, before any commit; the
    // restarted listener handles the message again from its memo and must not run it again.
    // The result comes back to the Orchestrator as a message of its own: no second roundtable.
    let mock = MockApi::start(|r, _| {
        let action = if mock_api::user_text(r).contains("roundtable_result") {
            json!({"action": "no_action", "reasoning": "noted"})
        } else {
            json!({"action": "initiate_roundtable", "reasoning": "a big question", "payload": {"prompt": "Where next?"}})
        };
        Reply::text(action.to_string())
    });
    let w = World::with_redis().mock(mock);
    let script = w.path("rt.sh");
    std::fs::write(
        &script,
        "#!/bin/sh\nd=$(dirname \"$0\")\necho run >> \"$d/runs.txt\"\ncat > /dev/null\nif [ ! -f \"$d/killed\" ]; then touch \"$d/killed\"; kill -9 $PPID; sleep 5; fi\necho '{\"summary\":[\"go\"]}'\n",
    )
    .expect("write");
    std::fs::set_permissions(&script, std::os::unix::fs::PermissionsExt::from_mode(0o755))
        .expect("chmod");
    let w = w.set("FULLSEND_ROUNDTABLE_CMD", script.to_str().expect("utf8"));
    let r = w.run(
        &["publish", "fullsend:to_orchestrator"],
        &escalation("a question for the roundtable", None).to_string(),
    );
    assert_eq!(r.code, 0, "{}", r.stderr);
    let first = w.run(&["listen", "orchestrator", "--once", "--no-ingest"], "");
    assert_ne!(first.code, 0, "the listener was killed");
    let again = w.run(&["listen", "orchestrator", "--once", "--no-ingest"], "");
    assert_eq!(again.code, 0, "{}", again.stderr);
    assert_eq!(read(&w.path("runs.txt")).lines().count(), 1, "at most once");
    let mut c = w.conn();
    let results = of_type(&mut c, "fullsend:to_orchestrator", "roundtable_result");
    assert_eq!(results.len(), 1, "{results:?}");
    assert_eq!(results[0]["status"], "failed");
    // One call for the question (the retry used its memo), one for the result notice.
    assert_eq!(
        w.mock_api().request_count(),
        2,
        "the decision came from its memo"
    );
}

#[test]
fn a_transient_failure_is_retried_by_its_owner_within_seconds() {
    // Three 529s, then an answer; the client does not retry by itself here, and the lease is
    // the default 60 s: the owner's backoff (1 s, 2 s, 4 s) must get the decision long before.
    let calls = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let counter = Arc::clone(&calls);
    let mock = MockApi::start(move |r, _| {
        if counter.fetch_add(1, std::sync::atomic::Ordering::SeqCst) < 3 {
            Reply::error(529, "overloaded_error", "Overloaded")
        } else {
            dispatching_model(r)
        }
    });
    let w = World::with_redis()
        .mock(mock)
        .set("FULLSEND_API_MAX_RETRIES", "0");
    let listener = Listener::start(&w, &["orchestrator", "--no-ingest"], "listen.log");
    let r = w.run(
        &["publish", "fullsend:to_orchestrator"],
        &escalation("retried soon", None).to_string(),
    );
    assert_eq!(r.code, 0, "{}", r.stderr);
    eventually(
        Duration::from_secs(20),
        "the decision after three 529s",
        || (experiment_requests(&w).len() == 1).then_some(()),
    );
    assert_eq!(calls.load(std::sync::atomic::Ordering::SeqCst), 4);
    assert_eq!(listener.stop(), 0);
    assert_eq!(experiment_requests(&w).len(), 1);
}

#[test]
fn durable_producers_are_handled_even_when_no_listener_was_running() {
    let w = World::with_redis().mock(MockApi::start(|r, _| dispatching_model(r)));
    // Before any listener exists: fullsend publish and a raw XADD.
    let r = w.run(
        &["publish", "fullsend:to_orchestrator"],
        &escalation("via fullsend publish", None).to_string(),
    );
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert!(r.json()["stream_id"].is_string());
    w.redis().cli(&[
        "XADD",
        STREAM,
        "*",
        "data",
        &escalation("via redis-cli XADD", None).to_string(),
    ]);
    let r = w.run(&["listen", "orchestrator", "--once", "--no-ingest"], "");
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert_eq!(r.lines().len(), 2, "{}", r.stdout);
    assert_eq!(experiment_requests(&w).len(), 2);
    // Running again finds nothing new: effects happened once.
    let again = w.run(&["listen", "orchestrator", "--once", "--no-ingest"], "");
    assert_eq!(again.lines().len(), 0);
    assert_eq!(experiment_requests(&w).len(), 2);
}

#[test]
fn status_notices_flow_without_the_model() {
    let w = World::with_redis().mock(MockApi::start(|r, _| dispatching_model(r)));
    for kind in ["fullsend_started", "builder_started", "design_started"] {
        w.run(
            &["publish", "fullsend:to_orchestrator"],
            &json!({"type": kind, "source": "fullsend_listener", "request_id": "r1"}).to_string(),
        );
    }
    let r = w.run(&["listen", "orchestrator", "--once", "--no-ingest"], "");
    assert_eq!(r.lines().len(), 3);
    assert!(r.lines().iter().all(|l| l["fallback"] == "status_rule"));
    assert_eq!(w.mock_api().request_count(), 0);
    // Started work shows in the worklist's Active section.
    let worklist = read(&w.context().join("worklist.md"));
    assert!(
        worklist.contains(
            "## Active (In Progress)\n- [ ] **Experiment design r1** - FULLSEND designing"
        ),
        "{worklist}"
    );
    assert_eq!(
        worklist.matches("Experiment design r1").count(),
        1,
        "design_started for the same request adds nothing"
    );
}

#[test]
fn concurrent_status_notices_lose_no_worklist_line() {
    // Each handler used to build a whole new worklist from the copy it had read, so at
    // --concurrency 4 the last writer dropped the lines of the others.
    let w = World::with_redis().mock(MockApi::start(|r, _| dispatching_model(r)));
    std::fs::write(
        w.context().join("worklist.md"),
        "# Fullsend Worklist\n\n## Active (In Progress)\n- [ ] **Existing work** - keep me\n\n## Completed This Week\n- [x] done\n",
    )
    .expect("worklist");
    let n = 8;
    for i in 0..n {
        w.run(
            &["publish", "fullsend:to_orchestrator"],
            &json!({"type": "fullsend_started", "source": "fullsend_listener", "request_id": format!("req{i}")}).to_string(),
        );
    }
    let r = w.run(
        &[
            "listen",
            "orchestrator",
            "--once",
            "--no-ingest",
            "--concurrency",
            "4",
        ],
        "",
    );
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert_eq!(r.lines().len(), n);
    let worklist = read(&w.context().join("worklist.md"));
    for i in 0..n {
        let line = format!("- [ ] **Experiment design req{i}** - FULLSEND designing");
        assert_eq!(worklist.matches(&line).count(), 1, "{line} in:\n{worklist}");
    }
    assert!(worklist.contains("**Existing work** - keep me"));
    // Every added line is in the Active section, before the next one.
    let active = worklist
        .split("## Completed This Week")
        .next()
        .unwrap_or_default();
    assert_eq!(
        active.matches("FULLSEND designing").count(),
        n,
        "{worklist}"
    );
    assert_eq!(w.mock_api().request_count(), 0);
    // A redelivery of all of them adds nothing.
    for i in 0..n {
        w.run(
            &["publish", "fullsend:to_orchestrator"],
            &json!({"type": "fullsend_started", "source": "fullsend_listener", "request_id": format!("req{i}")}).to_string(),
        );
    }
    w.run(
        &[
            "listen",
            "orchestrator",
            "--once",
            "--no-ingest",
            "--concurrency",
            "4",
        ],
        "",
    );
    assert_eq!(read(&w.context().join("worklist.md")), worklist);
}

#[test]
fn a_whole_worklist_rewrite_decided_on_an_old_copy_is_decided_again() {
    // The model rewrites the worklist from the copy in its prompt while a status notice adds a
    // line meanwhile: the rewrite is refused and decided again on the current file, so the
    // added line is in front of the model and nothing is silently lost.
    let mock = MockApi::start(|r, _| {
        let prompt = mock_api::user_text(r);
        let mut content = String::from(
            "# Fullsend Worklist\n\n## Active (In Progress)\n- [ ] **Model line** - from the model\n",
        );
        if prompt.contains("Experiment design req_b") {
            content.push_str("- [ ] **Experiment design req_b** - FULLSEND designing\n");
        }
        let decision = json!({"action": "update_worklist", "reasoning": "tidy", "payload": {"content": content}});
        Reply::Delay(
            Duration::from_secs(2),
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
        &["orchestrator", "--no-ingest", "--concurrency", "2"],
        "l.log",
    );
    let r = w.run(
        &["publish", "fullsend:to_orchestrator"],
        &escalation("tidy the worklist", None).to_string(),
    );
    assert_eq!(r.code, 0, "{}", r.stderr);
    eventually(Duration::from_secs(10), "the model thinking", || {
        (w.mock_api().request_count() >= 1).then_some(())
    });
    let r = w.run(
        &["publish", "fullsend:to_orchestrator"],
        &json!({"type": "fullsend_started", "source": "fullsend_listener", "request_id": "req_b"})
            .to_string(),
    );
    assert_eq!(r.code, 0, "{}", r.stderr);
    let worklist = eventually(Duration::from_secs(30), "the rewrite applied", || {
        let text = read(&w.context().join("worklist.md"));
        text.contains("Model line").then_some(text)
    });
    assert!(
        worklist.contains("Experiment design req_b"),
        "the line added meanwhile survives: {worklist}"
    );
    assert_eq!(w.mock_api().request_count(), 2, "decided again once");
    assert_eq!(l.stop(), 0);
}

#[test]
fn every_incoming_message_type_is_tolerated() {
    let w = World::with_redis().mock(MockApi::start(|r, _| dispatching_model(r)));
    let messages = [
        escalation("idea", Some("123")),
        json!({"type": "metric_alert", "source": "redis_agent", "experiment_id": "exp_123", "alert_type": "threshold_crossed", "metric": "response_rate", "value": 0.02, "threshold": 0.05}),
        json!({"type": "error", "source": "redis_agent", "experiment_id": "exp_1", "message": "boom", "severity": "high"}),
        json!({"type": "success_threshold", "source": "redis_agent", "experiment_id": "exp_1", "criterion": "response_rate > 0.1", "current_value": {"response_rate": 0.2}}),
        json!({"type": "failure_threshold", "source": "redis_agent", "experiment_id": "exp_1", "severity": "high"}),
        json!({"type": "periodic_summary", "source": "redis_agent", "summary": "all fine", "experiment_count": 3}),
        json!({"type": "experiment_ready", "source": "fullsend", "experiment_id": "exp_456", "summary": "x", "needs_tool": false}),
        json!({"type": "tool_complete", "source": "builder", "tool_name": "t", "status": "active"}),
        json!({"type": "builder_completed", "source": "builder_listener", "request_id": "r", "tool_name": "t"}),
        json!({"type": "fullsend_failed", "source": "fullsend_listener", "request_id": "r", "error": "x"}),
        json!({"type": "question", "source": "manual", "content": "what are we doing?"}),
    ];
    for m in &messages {
        w.run(&["publish", "fullsend:to_orchestrator"], &m.to_string());
    }
    let r = w.run(
        &[
            "listen",
            "orchestrator",
            "--once",
            "--no-ingest",
            "--concurrency",
            "4",
        ],
        "",
    );
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert_eq!(r.lines().len(), messages.len(), "{}", r.stderr);
}

#[test]
fn a_poison_message_is_dead_lettered_after_the_configured_deliveries_and_others_flow() {
    let w = World::with_redis().mock(MockApi::start(|r, _| {
        if mock_api::user_text(r).contains("poison") {
            Reply::error(529, "overloaded_error", "Overloaded")
        } else {
            dispatching_model(r)
        }
    }));
    let w = w.set("FULLSEND_API_MAX_RETRIES", "0");
    w.run(
        &["publish", "fullsend:to_orchestrator"],
        &json!({"type": "question", "content": "poison"}).to_string(),
    );
    let listener = Listener::start(
        &w,
        &[
            "orchestrator",
            "--lease",
            "0.5",
            "--max-deliveries",
            "3",
            "--no-ingest",
        ],
        "listen.log",
    );
    w.run(
        &["publish", "fullsend:to_orchestrator"],
        &escalation("healthy", None).to_string(),
    );
    eventually(Duration::from_secs(30), "dead letter", || {
        let mut c = w.conn();
        let n: u64 = redis::cmd("XLEN").arg(DLQ).query(&mut c).ok()?;
        (n == 1).then_some(())
    });
    let mut c = w.conn();
    let entries: Vec<(String, std::collections::HashMap<String, String>)> = redis::cmd("XRANGE")
        .arg(DLQ)
        .arg("-")
        .arg("+")
        .query(&mut c)
        .expect("xrange");
    let fields = &entries[0].1;
    assert_eq!(
        fields["deliveries"], "4",
        "dead-lettered on the delivery after the 3rd"
    );
    assert!(
        fields["error"].contains("529") || fields["error"].contains("overloaded"),
        "{fields:?}"
    );
    let poison_calls = w
        .mock_api()
        .requests()
        .iter()
        .filter(|r| mock_api::user_text(r).contains("poison"))
        .count();
    assert_eq!(
        poison_calls, 3,
        "one model call per delivery, none after the cap"
    );
    assert_eq!(
        experiment_requests(&w).len(),
        1,
        "the healthy message was handled"
    );
    assert_eq!(listener.stop(), 0);
    // Requeue puts it back on the stream.
    let r = w.run(&["dlq", "requeue", "orchestrator", "--all"], "");
    assert_eq!(r.code, 0, "{}", r.stderr);
    let n: u64 = redis::cmd("XLEN").arg(DLQ).query(&mut c).expect("xlen");
    assert_eq!(n, 0);
}

#[test]
fn a_slow_model_sends_still_thinking_once_and_one_follow_up_when_it_gives_up() {
    let w = World::with_redis().mock(MockApi::start(|r, _| {
        Reply::Delay(Duration::from_secs(5), Box::new(dispatching_model(r)))
    }));
    let w = w.set("ORCHESTRATOR_TIMEOUT", "0.5");
    w.run(
        &["publish", "fullsend:to_orchestrator"],
        &escalation("slow", Some("42")).to_string(),
    );
    let listener = Listener::start(
        &w,
        &[
            "orchestrator",
            "--lease",
            "0.5",
            "--max-deliveries",
            "3",
            "--no-ingest",
        ],
        "listen.log",
    );
    eventually(Duration::from_secs(30), "dead letter after retries", || {
        let mut c = w.conn();
        let n: u64 = redis::cmd("XLEN").arg(DLQ).query(&mut c).ok()?;
        (n == 1).then_some(())
    });
    let mut c = w.conn();
    let replies = of_type(
        &mut c,
        "fullsend:from_orchestrator",
        "orchestrator_response",
    );
    assert_eq!(
        replies.len(),
        2,
        "one still-thinking reply, then one follow-up: {replies:?}"
    );
    assert_eq!(
        replies[0]["content"],
        "I'm still thinking about this. Will update soon."
    );
    let follow_up = replies[1]["content"].as_str().unwrap_or_default();
    assert!(
        follow_up.starts_with("Update: I could not finish thinking about this")
            && follow_up.contains("fullsend dlq requeue"),
        "{follow_up}"
    );
    for reply in &replies {
        assert_eq!(reply["channel_id"], "42", "both go to the asker");
    }
    // Requeued and given up again: the asker already heard; no second follow-up.
    let dead_ids = || -> Vec<String> {
        let mut c = w.conn();
        let entries: redis::streams::StreamRangeReply = redis::cmd("XRANGE")
            .arg(DLQ)
            .arg("-")
            .arg("+")
            .query(&mut c)
            .unwrap_or_default();
        entries.ids.into_iter().map(|e| e.id).collect()
    };
    let first = dead_ids();
    let r = w.run(&["dlq", "requeue", "orchestrator", "--all"], "");
    assert_eq!(r.code, 0, "{}", r.stderr);
    eventually(Duration::from_secs(30), "dead letter again", || {
        let now = dead_ids();
        (now.len() == 1 && now != first).then_some(())
    });
    let replies = of_type(
        &mut c,
        "fullsend:from_orchestrator",
        "orchestrator_response",
    );
    assert_eq!(replies.len(), 2, "{replies:?}");
    listener.kill();
}

#[test]
fn sigkill_mid_message_loses_nothing_and_duplicates_nothing() {
    let w = World::with_redis().mock(MockApi::start(|r, _| {
        Reply::Delay(Duration::from_millis(400), Box::new(dispatching_model(r)))
    }));
    let total = 12;
    for i in 0..total {
        w.run(
            &["publish", "fullsend:to_orchestrator"],
            &escalation(&format!("idea {i}"), None).to_string(),
        );
    }
    let args = [
        "orchestrator",
        "--lease",
        "1",
        "--no-ingest",
        "--concurrency",
        "2",
    ];
    let mut a = Listener::start(&w, &args, "a.log");
    let b = Listener::start(&w, &args, "b.log");
    for round in 0..3 {
        std::thread::sleep(Duration::from_millis(700));
        a.kill();
        a = Listener::start(&w, &args, &format!("a{round}.log"));
    }
    eventually(Duration::from_secs(60), "all handled", || {
        (experiment_requests(&w).len() >= total).then_some(())
    });
    std::thread::sleep(Duration::from_millis(1500));
    let requests = experiment_requests(&w);
    let mut causes: Vec<String> = requests
        .iter()
        .map(|m| m["causation_id"].as_str().unwrap_or("").to_string())
        .collect();
    causes.sort();
    causes.dedup();
    assert_eq!(requests.len(), total, "no duplicates");
    assert_eq!(causes.len(), total, "no message lost");
    a.stop();
    b.stop();
}

#[test]
fn a_listener_stopped_past_its_lease_commits_nothing_twice() {
    let w = World::with_redis().mock(MockApi::start(|r, _| {
        Reply::Delay(Duration::from_millis(1500), Box::new(dispatching_model(r)))
    }));
    w.run(
        &["publish", "fullsend:to_orchestrator"],
        &escalation("stop me", None).to_string(),
    );
    let a = Listener::start(
        &w,
        &["orchestrator", "--lease", "0.6", "--no-ingest"],
        "a.log",
    );
    eventually(Duration::from_secs(10), "A is thinking", || {
        (w.mock_api().request_count() >= 1).then_some(())
    });
    signal(a.pid(), libc::SIGSTOP);
    let b = Listener::start(
        &w,
        &["orchestrator", "--lease", "0.6", "--no-ingest"],
        "b.log",
    );
    eventually(Duration::from_secs(20), "B handled it", || {
        (experiment_requests(&w).len() == 1).then_some(())
    });
    signal(a.pid(), libc::SIGCONT);
    std::thread::sleep(Duration::from_secs(3));
    assert_eq!(
        experiment_requests(&w).len(),
        1,
        "the stale listener did not commit"
    );
    assert_eq!(
        a.lines().len() + b.lines().len(),
        1,
        "one output line in all"
    );
    a.stop();
    b.stop();
}

#[test]
fn sigterm_finishes_work_in_flight_and_exits_0() {
    let w = World::with_redis().mock(MockApi::start(|r, _| {
        Reply::Delay(Duration::from_millis(1500), Box::new(dispatching_model(r)))
    }));
    w.run(
        &["publish", "fullsend:to_orchestrator"],
        &escalation("in flight", None).to_string(),
    );
    let l = Listener::start(
        &w,
        &["orchestrator", "--no-ingest", "--grace", "10"],
        "l.log",
    );
    eventually(Duration::from_secs(10), "thinking", || {
        (w.mock_api().request_count() >= 1).then_some(())
    });
    let started = Instant::now();
    let lines = l.lines.clone();
    assert_eq!(l.stop(), 0);
    assert!(started.elapsed() < Duration::from_secs(10));
    assert_eq!(
        experiment_requests(&w).len(),
        1,
        "the message in flight was finished"
    );
    assert_eq!(lines.lock().expect("lock").len(), 1);
}

#[test]
fn dropped_connections_and_a_paused_server_lose_nothing() {
    let w = World::with_redis().mock(MockApi::start(|r, _| dispatching_model(r)));
    let l = Listener::start(&w, &["orchestrator", "--lease", "2"], "l.log");
    wait_ready(&w, "orchestrator", "fullsend:to_orchestrator", 1);
    for i in 0..6 {
        w.run(
            &["publish", "fullsend:to_orchestrator"],
            &escalation(&format!("during chaos {i}"), None).to_string(),
        );
        w.redis().cli(&["CLIENT", "KILL", "TYPE", "normal"]);
        w.redis().cli(&["CLIENT", "KILL", "TYPE", "pubsub"]);
        std::thread::sleep(Duration::from_millis(300));
    }
    w.redis().cli(&["CLIENT", "PAUSE", "2000", "ALL"]);
    std::thread::sleep(Duration::from_millis(2500));
    eventually(Duration::from_secs(30), "all handled", || {
        (experiment_requests(&w).len() == 6).then_some(())
    });
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(experiment_requests(&w).len(), 6);
    assert_eq!(l.stop(), 0, "still running, stops cleanly");
}

#[test]
fn two_listeners_share_the_work_each_message_once() {
    let w = World::with_redis().mock(MockApi::start(|r, _| {
        Reply::Delay(Duration::from_millis(100), Box::new(dispatching_model(r)))
    }));
    let total = 40;
    for i in 0..total {
        w.run(
            &["publish", "fullsend:to_orchestrator"],
            &escalation(&format!("shared {i}"), None).to_string(),
        );
    }
    let args = ["orchestrator", "--no-ingest", "--concurrency", "4"];
    let a = Listener::start(&w, &args, "a.log");
    let b = Listener::start(&w, &args, "b.log");
    eventually(Duration::from_secs(60), "all handled", || {
        (experiment_requests(&w).len() >= total).then_some(())
    });
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(experiment_requests(&w).len(), total);
    let (la, lb) = (a.lines().len(), b.lines().len());
    assert_eq!(la + lb, total);
    assert!(la > 0 && lb > 0, "work was shared: {la} / {lb}");
    let status = w.run(&["status"], "");
    assert_eq!(status.code, 0, "{}", status.stderr);
    let s = status.json();
    assert_eq!(s["roles"][0]["listeners_alive"], 2);
    assert_eq!(s["roles"][0]["pending"], 0);
    a.stop();
    b.stop();
}

#[test]
fn listen_fullsend_designs_saves_and_announces() {
    let w = World::with_redis();
    let fake_dir = w.path("fake");
    std::fs::create_dir_all(&fake_dir).expect("dir");
    let claude = write_fake_claude(
        &fake_dir,
        Behavior::Reply(crate::design::spec_reply("exp_20261121_hn_hiring")),
    );
    let w = w.set("FULLSEND_CLAUDE_BIN", claude.to_str().expect("utf8"));
    let l = Listener::start(&w, &["fullsend", "--lease", "5"], "l.log");
    wait_ready(&w, "fullsend", "fullsend:to_fullsend", 1);
    publish(&w, "fullsend:to_fullsend", &json!({"type": "experiment_request", "idea": "Scrape GitHub stargazers of anthropic/claude and email CTOs", "context": "We have had success with developer-focused outreach"}).to_string());
    let mut c = w.conn();
    let h: std::collections::HashMap<String, String> =
        eventually(Duration::from_secs(30), "experiment saved", || {
            let h: std::collections::HashMap<String, String> = redis::cmd("HGETALL")
                .arg("experiments:exp_20261121_hn_hiring")
                .query(&mut c)
                .ok()?;
            (!h.is_empty()).then_some(h)
        });
    assert_eq!(h["state"], "ready");
    assert!(h["spec"].contains("experiment:"));
    let execution: Value = serde_json::from_str(&h["execution"]).expect("execution json");
    assert_eq!(execution["tool"], "github_stargazer_scraper");
    let cron: String = redis::cmd("GET")
        .arg("schedules:exp_20261121_hn_hiring")
        .query(&mut c)
        .expect("get");
    assert_eq!(
        cron, "0 9 * * MON",
        "comment stripped, bare string for the Executor"
    );
    let metrics: std::collections::HashMap<String, String> = redis::cmd("HGETALL")
        .arg("metrics_specs:exp_20261121_hn_hiring")
        .query(&mut c)
        .expect("hgetall");
    assert!(metrics["metrics_yaml"].contains("response_rate"));
    let ready = eventually(Duration::from_secs(10), "experiment_ready", || {
        let r = of_type(&mut c, "fullsend:to_orchestrator", "experiment_ready");
        (!r.is_empty()).then_some(r)
    });
    assert_eq!(ready[0]["experiment_id"], "exp_20261121_hn_hiring");
    assert_eq!(
        of_type(&mut c, "fullsend:to_orchestrator", "fullsend_started").len(),
        1
    );
    assert_eq!(
        of_type(&mut c, "fullsend:experiments", "experiment_created").len(),
        1
    );
    assert_eq!(
        of_type(&mut c, "fullsend:schedules", "schedule_created").len(),
        1
    );
    // A bad request is answered with design_failed, not dropped.
    publish(
        &w,
        "fullsend:to_fullsend",
        &json!({"type": "experiment_request", "request_id": "../../x"}).to_string(),
    );
    let failed = eventually(Duration::from_secs(10), "design_failed", || {
        let r = of_type(&mut c, "fullsend:to_orchestrator", "design_failed");
        (!r.is_empty()).then_some(r)
    });
    assert!(
        failed[0]["reason"].as_str().unwrap_or("").contains("idea"),
        "{failed:?}"
    );
    assert_eq!(l.stop(), 0);
}

#[test]
fn the_spend_limit_holds_messages_and_sends_one_notice() {
    let w = World::with_redis().mock(MockApi::start(|r, _| dispatching_model(r)));
    let w = w
        .set("FULLSEND_DAILY_SPEND_LIMIT_USD", "1")
        .set("FULLSEND_NOTICE_CHANNEL_ID", "4242");
    let day = jiff_free_today(&w);
    let mut c = w.conn();
    let _: () = redis::cmd("SET")
        .arg(format!("fullsend:spend:{day}"))
        .arg("1.5")
        .query(&mut c)
        .expect("set");
    for i in 0..2 {
        w.run(
            &["publish", "fullsend:to_orchestrator"],
            &escalation(&format!("held {i}"), None).to_string(),
        );
    }
    let l = Listener::start(&w, &["orchestrator", "--no-ingest"], "l.log");
    std::thread::sleep(Duration::from_secs(3));
    assert_eq!(
        w.mock_api().request_count(),
        0,
        "no model call past the limit"
    );
    assert!(experiment_requests(&w).is_empty());
    let notices = of_type(
        &mut c,
        "fullsend:from_orchestrator",
        "orchestrator_response",
    );
    assert_eq!(notices.len(), 1, "one notice: {notices:?}");
    assert_eq!(notices[0]["channel_id"], "4242");
    let queued: u64 = redis::cmd("XLEN").arg(STREAM).query(&mut c).expect("xlen");
    assert_eq!(queued, 2, "the messages wait in the stream");
    let status = w.run(&["status"], "").json();
    assert_eq!(
        status["roles"][0]["pending"], 0,
        "held back undelivered, so no delivery counts toward the dead-letter cap"
    );
    // A new day (or a higher limit): the held messages are handled.
    let _: () = redis::cmd("DEL")
        .arg(format!("fullsend:spend:{day}"))
        .query(&mut c)
        .expect("del");
    eventually(Duration::from_secs(20), "held messages handled", || {
        (experiment_requests(&w).len() == 2).then_some(())
    });
    assert_eq!(
        of_type(
            &mut c,
            "fullsend:from_orchestrator",
            "orchestrator_response"
        )
        .len(),
        1,
        "still one notice"
    );
    assert_eq!(l.stop(), 0);
}

/// Today's spend key suffix, as `fullsend status` reports it.
fn jiff_free_today(w: &World) -> String {
    w.run(&["status"], "").json()["spend"]["day"]
        .as_str()
        .expect("day")
        .to_string()
}

/// The PRD's decision-quality plan: five message types, each answered with
/// the fitting action, and each action's effect visible in Redis or the files.
#[test]
fn five_message_types_get_fitting_actions_and_effects() {
    let model = |req: &Recorded, _: usize| {
        let text = mock_api::user_text(req);
        let last = text
            .rsplit("## Incoming Message")
            .next()
            .unwrap_or("")
            .to_string();
        let decision = if last.contains("\"escalation\"") {
            json!({"action": "dispatch_to_fullsend", "reasoning": "a concrete idea worth a test", "payload": {"idea": "HN hiring"}, "priority": "high"})
        } else if last.contains("\"failure_threshold\"") {
            json!({"action": "kill_experiment", "reasoning": "below the failure criterion", "experiment_id": "exp_20240115_github_stars", "payload": {"reason": "response_rate < 0.02 after 100 sends"}, "priority": "high"})
        } else if last.contains("\"question\"") {
            json!({"action": "respond_to_discord", "reasoning": "a direct question", "payload": {"content": "We are running the HN test."}, "priority": "medium"})
        } else if last.contains("\"experiment_ready\"") {
            json!({"action": "update_worklist", "reasoning": "track it", "payload": {"content": "# Fullsend Worklist\n\n## Active (In Progress)\n- [ ] exp_20261121_hn - ready\n"}, "priority": "medium"})
        } else if last.contains("\"success_threshold\"") {
            json!({"action": "record_learning", "reasoning": "a win worth remembering", "payload": {"learning": "Hiring companies reply 3x more"}, "priority": "medium"})
        } else {
            json!({"action": "no_action", "reasoning": "nothing to do"})
        };
        Reply::text(rambling(&decision))
    };
    let w = World::with_redis().mock(MockApi::start(model));
    let mut c = w.conn();
    let _: () = redis::cmd("HSET")
        .arg("experiments:exp_20240115_github_stars")
        .arg("state")
        .arg("running")
        .query(&mut c)
        .expect("hset");
    let messages = [
        escalation("Scrape HN Who is Hiring posts", None),
        json!({"type": "failure_threshold", "source": "redis_agent", "experiment_id": "exp_20240115_github_stars", "severity": "high", "message": "response_rate 0.01"}),
        json!({"type": "question", "source": "watcher", "channel_id": "777", "message_id": "888", "content": "what's running?"}),
        json!({"type": "experiment_ready", "source": "fullsend", "experiment_id": "exp_20261121_hn", "summary": "HN test"}),
        json!({"type": "success_threshold", "source": "redis_agent", "experiment_id": "exp_x", "criterion": "response_rate > 0.1"}),
    ];
    for m in &messages {
        w.run(&["publish", "fullsend:to_orchestrator"], &m.to_string());
    }
    let r = w.run(&["listen", "orchestrator", "--once", "--no-ingest"], "");
    assert_eq!(r.code, 0, "{}", r.stderr);
    let actions: Vec<String> = r
        .lines()
        .iter()
        .map(|l| l["action"].as_str().unwrap_or("").to_string())
        .collect();
    assert_eq!(
        actions,
        vec![
            "dispatch_to_fullsend",
            "kill_experiment",
            "respond_to_discord",
            "update_worklist",
            "record_learning"
        ]
    );
    assert!(
        r.lines()
            .iter()
            .all(|l| !l["reasoning"].as_str().unwrap_or("").is_empty()),
        "every decision has its reasoning"
    );
    assert_eq!(experiment_requests(&w).len(), 1);
    let state: String = redis::cmd("HGET")
        .arg("experiments:exp_20240115_github_stars")
        .arg("state")
        .query(&mut c)
        .expect("hget");
    assert_eq!(state, "archived");
    let replies = of_type(
        &mut c,
        "fullsend:from_orchestrator",
        "orchestrator_response",
    );
    assert_eq!(replies.len(), 1);
    assert_eq!(replies[0]["channel_id"], "777");
    assert_eq!(replies[0]["reply_to"], "888");
    assert!(read(&w.context().join("worklist.md")).contains("exp_20261121_hn"));
    assert!(read(&w.context().join("learnings.md")).contains("Hiring companies reply 3x more"));
    let log = read(&w.context().join("decisions.jsonl"));
    assert_eq!(log.lines().count(), 5, "one decision-log line per decision");
    // The context the model saw is the real one: the running experiment was listed.
    let prompts: Vec<String> = w
        .mock_api()
        .requests()
        .iter()
        .map(mock_api::user_text)
        .collect();
    assert!(
        prompts[0].contains("exp_20240115_github_stars"),
        "{}",
        &prompts[0][..prompts[0].len().min(1500)]
    );
}

#[test]
fn fullsend_acts_on_what_the_executor_and_builder_report() {
    let w = World::with_redis();
    let w = w.with_fake_claude(Behavior::Reply("unused".into()));
    let mut c = w.conn();
    for exp in ["exp_20261121_a", "exp_20261121_b"] {
        let _: () = redis::cmd("HSET")
            .arg(format!("experiments:{exp}"))
            .arg("state")
            .arg("draft")
            .query(&mut c)
            .expect("hset");
    }
    let l = Listener::start(&w, &["fullsend"], "l.log");
    wait_ready(&w, "fullsend", "fullsend:experiment_results", 1);
    for exp in ["exp_20261121_a", "exp_20261121_b"] {
        publish(&w, "fullsend:experiment_results", &json!({"type": "experiment_failed", "experiment_id": exp, "run_id": format!("{exp}:1"), "error": "Tool not found: hn_scraper (looked in /app/tools)", "error_type": "ToolNotFoundError"}).to_string());
    }
    publish(&w, "fullsend:experiment_results", &json!({"type": "experiment_failed", "experiment_id": "exp_20261121_c", "run_id": "r", "error": "HTTP 401 Unauthorized from Resend", "error_type": "HTTPError"}).to_string());
    publish(&w, "fullsend:experiment_results", &json!({"type": "experiment_completed", "experiment_id": "exp_20261121_d", "run_id": "exp_20261121_d:1", "status": "success", "duration": 4.2}).to_string());
    let prds = eventually(Duration::from_secs(15), "auto PRDs", || {
        let p: Vec<Value> =
            crate::support::stream_messages(&mut c, "fullsend:{builder_tasks}:stream");
        (p.len() == 2).then_some(p)
    });
    assert_eq!(prds[0]["prd"]["tool_name"], "hn_scraper");
    assert_eq!(prds[0]["request_id"], "auto_exp_20261121_a_hn_scraper");
    let waiting: Vec<String> = redis::cmd("SMEMBERS")
        .arg("pending_experiments:hn_scraper")
        .query(&mut c)
        .expect("smembers");
    assert_eq!(waiting.len(), 2);
    eventually(
        Duration::from_secs(10),
        "api_key_required and experiment_success",
        || {
            let a = of_type(&mut c, "fullsend:to_orchestrator", "api_key_required");
            let s = of_type(&mut c, "fullsend:to_orchestrator", "experiment_success");
            (a.len() == 1 && s.len() == 1).then_some(())
        },
    );
    // The tool is built: every waiting experiment runs, once.
    publish(&w, "fullsend:builder_results", &json!({"type": "tool_built", "tool_name": "hn_scraper", "request_id": "auto_exp_20261121_a_hn_scraper"}).to_string());
    let runs = eventually(Duration::from_secs(10), "execute_now", || {
        let r = crate::support::stream_messages(&mut c, "fullsend:{execute_now}:stream");
        (r.len() == 2).then_some(r)
    });
    let mut ids: Vec<&str> = runs
        .iter()
        .filter_map(|r| r["experiment_id"].as_str())
        .collect();
    ids.sort();
    assert_eq!(ids, vec!["exp_20261121_a", "exp_20261121_b"]);
    let state: String = redis::cmd("HGET")
        .arg("experiments:exp_20261121_a")
        .arg("state")
        .query(&mut c)
        .expect("hget");
    assert_eq!(state, "ready");
    publish(
        &w,
        "fullsend:builder_results",
        &json!({"type": "tool_built", "tool_name": "hn_scraper", "request_id": "again"})
            .to_string(),
    );
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(
        crate::support::stream_messages(&mut c, "fullsend:{execute_now}:stream").len(),
        2,
        "a second tool_built runs nothing"
    );
    assert_eq!(l.stop(), 0);
}

#[test]
fn a_second_signal_takes_the_coding_agents_with_it() {
    let w = World::with_redis();
    let pid_file = w.path("agent.pid");
    let script = format!(
        "echo $$ > {}\ntrap '' TERM\nwhile :; do sleep 1; done",
        crate::common::fake_claude::sh_quote(pid_file.to_str().expect("utf8"))
    );
    let w = w.with_fake_claude(Behavior::Script(script));
    let r = w.run(
        &["publish", "fullsend:to_fullsend"],
        &json!({"type": "experiment_request", "idea": "Email CTOs of YC startups"}).to_string(),
    );
    assert_eq!(r.code, 0, "{}", r.stderr);
    let mut l = Listener::start(&w, &["fullsend", "--no-ingest", "--grace", "600"], "l.log");
    let agent: i32 = eventually(Duration::from_secs(20), "the agent running", || {
        std::fs::read_to_string(&pid_file).ok()?.trim().parse().ok()
    });
    // The first signal waits for the work in flight (a long grace); the second exits at once.
    signal(l.pid(), libc::SIGTERM);
    std::thread::sleep(Duration::from_millis(300));
    signal(l.pid(), libc::SIGTERM);
    let status = l.child.wait().expect("wait");
    assert_eq!(status.code(), Some(143));
    eventually(Duration::from_secs(10), "the agent gone", || {
        // SAFETY: signal 0 only checks that the process exists.
        let alive = unsafe { libc::kill(agent, 0) } == 0
            && !std::fs::read_to_string(format!("/proc/{agent}/stat"))
                .unwrap_or_default()
                .contains(") Z ");
        (!alive).then_some(())
    });
}

#[test]
fn fullsend_keeps_a_request_queued_through_an_api_outage() {
    // The agent's API answers 529 until `healed` exists; the request must stay queued (no
    // design_failed announced, nothing dead-lettered), then be designed once.
    let w = World::with_redis();
    let healed = w.path("healed");
    let script = format!(
        "if [ -f {} ]; then emit_result {}; else emit_result 'API Error: 529 Overloaded' true 529 1; fi",
        crate::common::fake_claude::sh_quote(healed.to_str().expect("utf8")),
        crate::common::fake_claude::sh_quote(&crate::design::spec_reply("exp_20261121_outage"))
    );
    let w = w.with_fake_claude(Behavior::Script(script));
    let r = w.run(
        &["publish", "fullsend:to_fullsend"],
        &json!({"type": "experiment_request", "idea": "Email CTOs of YC startups", "request_id": "req_outage"}).to_string(),
    );
    assert_eq!(r.code, 0, "{}", r.stderr);
    let r = w.run(
        &[
            "listen",
            "fullsend",
            "--once",
            "--no-ingest",
            "--max-deliveries",
            "50",
        ],
        "",
    );
    assert_eq!(r.code, 0, "{}", r.stderr);
    let mut c = w.conn();
    assert!(of_type(&mut c, "fullsend:to_orchestrator", "design_failed").is_empty());
    assert!(of_type(&mut c, "fullsend:to_orchestrator", "fullsend_failed").is_empty());
    let dlq: i64 = redis::cmd("XLEN")
        .arg("fullsend:{to_fullsend}:dlq")
        .query(&mut c)
        .unwrap_or(0);
    assert_eq!(dlq, 0);
    std::fs::write(&healed, "").expect("heal");
    let r = w.run(&["listen", "fullsend", "--once", "--no-ingest"], "");
    assert_eq!(r.code, 0, "{}", r.stderr);
    let ready = of_type(&mut c, "fullsend:to_orchestrator", "experiment_ready");
    assert_eq!(
        ready.len(),
        1,
        "designed once the API is back: {}",
        r.stdout
    );
    assert_eq!(ready[0]["experiment_id"], "exp_20261121_outage");
    assert!(of_type(&mut c, "fullsend:to_orchestrator", "design_failed").is_empty());
}

/// A model API that answers `broken` until `healed` is set, then decides like the PRD's example.
fn flaky_api(broken: Reply) -> (MockApi, Arc<std::sync::atomic::AtomicBool>) {
    let healed = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let flag = Arc::clone(&healed);
    let mock = MockApi::start(move |r, _| {
        if flag.load(std::sync::atomic::Ordering::SeqCst) {
            dispatching_model(r)
        } else {
            broken.clone()
        }
    });
    (mock, healed)
}

fn pending_count(w: &World) -> i64 {
    let mut c = w.conn();
    let summary: Vec<redis::Value> = redis::cmd("XPENDING")
        .arg(STREAM)
        .arg("orchestrator")
        .query(&mut c)
        .expect("xpending");
    match summary.first() {
        Some(redis::Value::Int(n)) => *n,
        _ => 0,
    }
}

fn dead_letters(w: &World) -> i64 {
    let mut c = w.conn();
    redis::cmd("XLEN")
        .arg("fullsend:{to_orchestrator}:dlq")
        .query(&mut c)
        .unwrap_or(0)
}

#[test]
fn a_proxy_page_in_place_of_the_api_consumes_nothing() {
    let (mock, healed) = flaky_api(Reply::Raw {
        status: 200,
        content_type: "text/html; charset=utf-8".into(),
        body: "<html><body>Please sign in to the guest Wi-Fi</body></html>".into(),
    });
    let w = World::with_redis().mock(mock);
    for i in 0..3 {
        w.run(
            &["publish", "fullsend:to_orchestrator"],
            &escalation(&format!("idea {i}"), None).to_string(),
        );
    }
    let r = w.run(&["listen", "orchestrator", "--once", "--no-ingest"], "");
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert_eq!(experiment_requests(&w).len(), 0);
    assert_eq!(
        pending_count(&w),
        3,
        "no message was acknowledged: {}",
        r.stdout
    );
    assert_eq!(dead_letters(&w), 0);
    healed.store(true, std::sync::atomic::Ordering::SeqCst);
    let r = w.run(&["listen", "orchestrator", "--once", "--no-ingest"], "");
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert_eq!(
        experiment_requests(&w).len(),
        3,
        "each message decided once: {}",
        r.stdout
    );
    assert_eq!(pending_count(&w), 0);
}

#[test]
fn a_credit_balance_refusal_pauses_and_loses_nothing() {
    let (mock, healed) = flaky_api(Reply::error(
        400,
        "invalid_request_error",
        "Your credit balance is too low to access the Anthropic API. Please go to Plans & Billing to upgrade or purchase credits.",
    ));
    let w = World::with_redis()
        .mock(mock)
        .set("FULLSEND_ACCOUNT_PAUSE", "1")
        .set("FULLSEND_NOTICE_CHANNEL_ID", "999");
    for i in 0..3 {
        w.run(
            &["publish", "fullsend:to_orchestrator"],
            &escalation(&format!("idea {i}"), None).to_string(),
        );
    }
    let r = w.run(&["listen", "orchestrator", "--once", "--no-ingest"], "");
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert_eq!(
        dead_letters(&w),
        0,
        "a billing refusal dead-letters nothing"
    );
    assert_eq!(experiment_requests(&w).len(), 0);
    let mut c = w.conn();
    let notices = of_type(
        &mut c,
        "fullsend:from_orchestrator",
        "orchestrator_response",
    );
    assert_eq!(notices.len(), 1, "one notice: {notices:?}");
    assert!(
        notices[0]["content"]
            .as_str()
            .unwrap_or_default()
            .contains("credit balance")
    );
    healed.store(true, std::sync::atomic::Ordering::SeqCst);
    // The pause is over after FULLSEND_ACCOUNT_PAUSE.
    std::thread::sleep(Duration::from_millis(1500));
    let r = w.run(&["listen", "orchestrator", "--once", "--no-ingest"], "");
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert_eq!(experiment_requests(&w).len(), 3, "{}", r.stdout);
    assert_eq!(dead_letters(&w), 0);
}

#[test]
fn tool_built_releases_only_waiting_drafts_and_each_once() {
    let w = World::with_redis();
    let w = w.with_fake_claude(Behavior::Reply("unused".into()));
    let mut c = w.conn();
    for exp in ["exp_20261121_wait", "exp_20261121_killed"] {
        let _: () = redis::cmd("HSET")
            .arg(format!("experiments:{exp}"))
            .arg("state")
            .arg("draft")
            .query(&mut c)
            .expect("hset");
    }
    // The format the original writers used: the experiment as a JSON string.
    let _: () = redis::cmd("SET")
        .arg("experiments:exp_20261121_string")
        .arg(r#"{"state":"draft"}"#)
        .query(&mut c)
        .expect("set");
    let _: () = redis::cmd("SADD")
        .arg("pending_experiments:hn_scraper")
        .arg(&[
            "exp_20261121_wait",
            "exp_20261121_killed",
            "exp_20261121_string",
        ])
        .query(&mut c)
        .expect("sadd");
    // Killing one takes it out of the wait list and sets both fields; killing it again is a no-op.
    let kill = json!({"action": "kill_experiment", "reasoning": "2% replies", "payload": {"experiment_id": "exp_20261121_killed"}}).to_string();
    assert_eq!(w.run(&["dispatch"], &kill).code, 0);
    let r = w.run(&["dispatch"], &kill);
    assert_eq!(r.code, 0, "{}", r.stderr);
    let h: std::collections::HashMap<String, String> = redis::cmd("HGETALL")
        .arg("experiments:exp_20261121_killed")
        .query(&mut c)
        .expect("hgetall");
    assert_eq!(
        (h["state"].as_str(), h["status"].as_str()),
        ("archived", "archived")
    );
    assert_eq!(
        of_type(&mut c, "fullsend:experiments", "experiment_archived").len(),
        1,
        "a second kill announces nothing"
    );
    let waiting: Vec<String> = redis::cmd("SMEMBERS")
        .arg("pending_experiments:hn_scraper")
        .query(&mut c)
        .expect("smembers");
    assert!(
        !waiting.contains(&"exp_20261121_killed".to_string()),
        "{waiting:?}"
    );
    // The tool is built, and the notice arrives three times (on FULLSEND's own stream, where
    // the bridge puts what the Builder publishes).
    for request in ["r1", "r2", "r3"] {
        let p = w.run(
            &["publish", "fullsend:to_fullsend"],
            &json!({"type": "tool_built", "tool_name": "hn_scraper", "request_id": request})
                .to_string(),
        );
        assert_eq!(p.code, 0, "{}", p.stderr);
        let r = w.run(&["listen", "fullsend", "--once", "--no-ingest"], "");
        assert_eq!(r.code, 0, "{}", r.stderr);
    }
    let runs = crate::support::stream_messages(&mut c, "fullsend:{execute_now}:stream");
    let ids: Vec<&str> = runs
        .iter()
        .filter_map(|r| r["experiment_id"].as_str())
        .collect();
    assert_eq!(
        ids,
        vec!["exp_20261121_wait"],
        "one run, for the one still waiting"
    );
    let state: String = redis::cmd("HGET")
        .arg("experiments:exp_20261121_wait")
        .arg("state")
        .query(&mut c)
        .expect("hget");
    assert_eq!(state, "ready");
    let killed: String = redis::cmd("HGET")
        .arg("experiments:exp_20261121_killed")
        .arg("state")
        .query(&mut c)
        .expect("hget");
    assert_eq!(killed, "archived", "a killed experiment never comes back");
    let string: String = redis::cmd("GET")
        .arg("experiments:exp_20261121_string")
        .query(&mut c)
        .expect("get");
    assert_eq!(
        string, r#"{"state":"draft"}"#,
        "another format is left alone"
    );
    let waiting: Vec<String> = redis::cmd("SMEMBERS")
        .arg("pending_experiments:hn_scraper")
        .query(&mut c)
        .expect("smembers");
    assert_eq!(
        waiting,
        vec!["exp_20261121_string".to_string()],
        "only the released left"
    );
}

#[test]
fn a_commit_that_meets_a_wrong_type_writes_nothing() {
    // A string where a set is expected, after a hash write and a publish in the same plan: the
    // script used to write the hash and publish, then fail on SADD, leaving them applied.
    use fullsend::bus::effects::{self, CommitStatus, Effect, Guard};
    let w = World::with_redis();
    let mut c = w.conn();
    let _: () = redis::cmd("SET")
        .arg("pending_experiments:typed")
        .arg("a string")
        .query(&mut c)
        .expect("set");
    let plan = vec![
        Effect::HashSet {
            key: "experiments:exp_20261121_typed".into(),
            fields: [("state".to_string(), "ready".to_string())].into(),
            guard: Guard::None,
        },
        effects::publish(
            "fullsend:execute_now",
            serde_json::from_value(json!({"experiment_id": "exp_20261121_typed"})).expect("map"),
            &serde_json::Map::new(),
        ),
        Effect::SetAdd {
            key: "pending_experiments:typed".into(),
            members: vec!["exp_20261121_typed".into()],
        },
    ];
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let commit = runtime.block_on(async {
        let mut conn = fullsend::bus::store::connect(&w.redis_url())
            .await
            .expect("connect");
        effects::commit(&mut conn, &plan, Some("test:seen:typed"), None)
            .await
            .expect("commit")
    });
    assert!(
        matches!(&commit.status, CommitStatus::Precondition(why) if why.contains("is a string")),
        "{:?}",
        commit.status
    );
    let keys: Vec<String> = redis::cmd("KEYS").arg("*").query(&mut c).expect("keys");
    assert_eq!(
        keys,
        vec!["pending_experiments:typed".to_string()],
        "nothing written"
    );
}

#[test]
fn the_pipelines_in_commands_run_as_written() {
    let w = World::with_redis().mock(MockApi::start(|r, _| dispatching_model(r)));
    let bin_dir = crate::support::bin()
        .parent()
        .expect("bin dir")
        .to_path_buf();
    let path = format!(
        "{}:{}",
        bin_dir.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let w = w.set("PATH", &path);
    w.run(
        &["publish", "fullsend:to_orchestrator"],
        &escalation("via the pipeline file", None).to_string(),
    );
    let script = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("commands/orchestrator.sh");
    let cmd = w.cmd(&[]);
    // Run the file, not the binary: the same environment, the script's own argv.
    let mut bash = std::process::Command::new("bash");
    bash.arg(&script).arg("--once").arg("--no-ingest");
    bash.env_clear();
    for (k, v) in cmd.get_envs() {
        if let Some(v) = v {
            bash.env(k, v);
        }
    }
    let out = crate::support::wait_output(
        bash.stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .expect("bash"),
        Duration::from_secs(60),
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let lines: Vec<Value> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect();
    assert_eq!(lines.len(), 1);
    assert_eq!(lines[0]["role"], "exec", "the pipeline form");
    assert_eq!(lines[0]["output"]["action"], "dispatch_to_fullsend");
    assert_eq!(experiment_requests(&w).len(), 1);
}

#[test]
fn a_broken_prompt_override_stops_the_daemon_at_start() {
    let w = World::with_redis().mock(MockApi::start(|r, _| dispatching_model(r)));
    let prompts = w.path("prompts");
    std::fs::create_dir_all(&prompts).expect("dir");
    std::fs::write(
        prompts.join("context.txt"),
        "{{ worklist }} {{ no_such_value }}",
    )
    .expect("write");
    let r = w.run(
        &[
            "listen",
            "orchestrator",
            "--prompts-dir",
            prompts.to_str().expect("utf8"),
        ],
        "",
    );
    assert_eq!(r.code, 2, "{}", r.stderr);
    assert!(r.stderr.contains("no_such_value"), "{}", r.stderr);
    // So do the parts only some messages use: the outcome prompt and the brief.
    std::fs::remove_file(prompts.join("context.txt")).expect("rm");
    for (name, bad) in [
        ("learn.txt", "{{ lesson }}"),
        ("dispatch.txt", "{{ idea }} {{ budget }}"),
    ] {
        std::fs::write(prompts.join(name), bad).expect("write");
        let r = w.run(
            &[
                "listen",
                "orchestrator",
                "--prompts-dir",
                prompts.to_str().expect("utf8"),
            ],
            "",
        );
        assert_eq!(r.code, 2, "{name}: {}", r.stderr);
        let var = bad
            .rsplit("{{ ")
            .next()
            .unwrap_or("")
            .trim_end_matches(" }}");
        assert!(r.stderr.contains(var), "{name}: {}", r.stderr);
        std::fs::remove_file(prompts.join(name)).expect("rm");
    }
    std::fs::write(prompts.join("design.txt"), "{{ idea }} {{ nope }}").expect("write");
    let w = w.with_fake_claude(Behavior::Reply("x".into()));
    let r = w.run(
        &[
            "listen",
            "fullsend",
            "--prompts-dir",
            prompts.to_str().expect("utf8"),
        ],
        "",
    );
    assert_eq!(r.code, 2, "{}", r.stderr);
    assert!(r.stderr.contains("nope"), "{}", r.stderr);
}

/// Trimming keeps every entry a consumer group still needs (pending or not yet
/// delivered), whatever its age.
#[test]
fn trimming_never_removes_what_a_group_still_needs() {
    let w = World::with_redis();
    let mut c = w.conn();
    let stream = "fullsend:{trimtest}:stream";
    for i in 1..=10 {
        let _: String = redis::cmd("XADD")
            .arg(stream)
            .arg(format!("{i}-0"))
            .arg("data")
            .arg("{}")
            .query(&mut c)
            .expect("xadd");
    }
    let _: () = redis::cmd("XGROUP")
        .arg("CREATE")
        .arg(stream)
        .arg("fast")
        .arg("0")
        .query(&mut c)
        .expect("group");
    let _: () = redis::cmd("XGROUP")
        .arg("CREATE")
        .arg(stream)
        .arg("slow")
        .arg("0")
        .query(&mut c)
        .expect("group");
    // "fast" read everything and acknowledged all but entry 7; "slow" read up to 4, entry 3 pending.
    let _: redis::Value = redis::cmd("XREADGROUP")
        .arg("GROUP")
        .arg("fast")
        .arg("c")
        .arg("COUNT")
        .arg(10)
        .arg("STREAMS")
        .arg(stream)
        .arg(">")
        .query(&mut c)
        .expect("read");
    for i in (1..=10).filter(|i| *i != 7) {
        let _: i64 = redis::cmd("XACK")
            .arg(stream)
            .arg("fast")
            .arg(format!("{i}-0"))
            .query(&mut c)
            .expect("ack");
    }
    let _: redis::Value = redis::cmd("XREADGROUP")
        .arg("GROUP")
        .arg("slow")
        .arg("c")
        .arg("COUNT")
        .arg(4)
        .arg("STREAMS")
        .arg(stream)
        .arg(">")
        .query(&mut c)
        .expect("read");
    for i in [1, 2, 4] {
        let _: i64 = redis::cmd("XACK")
            .arg(stream)
            .arg("slow")
            .arg(format!("{i}-0"))
            .query(&mut c)
            .expect("ack");
    }
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let trimmed = runtime.block_on(async {
        let mut conn = fullsend::bus::store::connect(&w.redis_url())
            .await
            .expect("connect");
        fullsend::bus::runner::trim_stream(&mut conn, stream, Duration::ZERO)
            .await
            .expect("trim")
    });
    assert_eq!(
        trimmed, 2,
        "only entries 1 and 2 were finished by every group"
    );
    let left: Vec<(String, Vec<(String, String)>)> = redis::cmd("XRANGE")
        .arg(stream)
        .arg("-")
        .arg("+")
        .query(&mut c)
        .expect("xrange");
    assert_eq!(left.first().map(|e| e.0.as_str()), Some("3-0"));
    assert_eq!(left.len(), 8);
    // XAUTOCLAIM finds no deleted pending entries.
    let reply: redis::Value = redis::cmd("XAUTOCLAIM")
        .arg(stream)
        .arg("slow")
        .arg("other")
        .arg(0)
        .arg("0-0")
        .query(&mut c)
        .expect("autoclaim");
    let redis::Value::Array(parts) = reply else {
        panic!("unexpected XAUTOCLAIM reply")
    };
    assert!(
        matches!(parts.get(2), Some(redis::Value::Array(deleted)) if deleted.is_empty()),
        "no deleted ids: {parts:?}"
    );
}

#[test]
fn a_listener_without_an_api_key_refuses_to_start() {
    let w = World::with_redis();
    let r = w.run(&["listen", "orchestrator"], "");
    assert_eq!(r.code, 2, "{}", r.stderr);
    assert!(r.stderr.contains("ANTHROPIC_API_KEY"), "{}", r.stderr);
    let r = w.run(&["listen", "fullsend", "--engine", "api"], "");
    assert_eq!(r.code, 2, "{}", r.stderr);
}

/// A restarted listener takes back its pending entry once: no second worker
/// for an entry already in flight, no delivery counted per idle re-read.
#[test]
fn a_restarted_listener_takes_its_pending_entry_back_exactly_once() {
    let w = World::with_redis().mock(MockApi::start(|r, _| {
        Reply::Delay(Duration::from_millis(1500), Box::new(dispatching_model(r)))
    }));
    w.run(
        &["publish", "fullsend:to_orchestrator"],
        &escalation("only one", None).to_string(),
    );
    let args = [
        "orchestrator",
        "--no-ingest",
        "--concurrency",
        "2",
        "--lease",
        "30",
    ];
    let a = Listener::start(&w, &args, "a.log");
    eventually(Duration::from_secs(10), "first call", || {
        (w.mock_api().request_count() == 1).then_some(())
    });
    a.kill();
    let b = Listener::start(&w, &args, "b.log");
    eventually(Duration::from_secs(15), "handled after the restart", || {
        (experiment_requests(&w).len() == 1).then_some(())
    });
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(
        w.mock_api().request_count(),
        2,
        "one call before the kill, one after: no duplicate worker"
    );
    assert_eq!(experiment_requests(&w).len(), 1);
    assert_eq!(b.lines().len(), 1);
    assert!(
        !read(&w.path("b.log")).contains("NotPending"),
        "{}",
        read(&w.path("b.log"))
    );
    b.stop();
}

/// Messages that arrive only by PUBLISH are taken into the stream once, however
/// many listeners hear them.
#[test]
fn published_messages_are_ingested_once_by_several_listeners() {
    let w = World::with_redis().mock(MockApi::start(|r, _| dispatching_model(r)));
    let a = Listener::start(&w, &["orchestrator"], "a.log");
    let b = Listener::start(&w, &["orchestrator"], "b.log");
    wait_ready(&w, "orchestrator", "fullsend:to_orchestrator", 2);
    for i in 0..10 {
        // No msg_id, as the Watcher sends them.
        publish(
            &w,
            "fullsend:to_orchestrator",
            &escalation(&format!("watcher idea {i}"), None).to_string(),
        );
    }
    eventually(Duration::from_secs(20), "all handled", || {
        (experiment_requests(&w).len() >= 10).then_some(())
    });
    std::thread::sleep(Duration::from_secs(1));
    let mut c = w.conn();
    let entries: u64 = redis::cmd("XLEN").arg(STREAM).query(&mut c).expect("xlen");
    assert_eq!(
        entries, 10,
        "each published message entered the stream once"
    );
    assert_eq!(experiment_requests(&w).len(), 10);
    assert_eq!(a.lines().len() + b.lines().len(), 10);
    a.stop();
    b.stop();
}

#[test]
fn one_escalation_dispatches_with_memory_and_updates_the_worklist_in_one_decision() {
    let w = World::with_redis().mock(MockApi::start(|r, _| {
        if mock_api::user_text(r).contains("\"escalation\"") {
            Reply::text(rambling(&json!({
                "reasoning": "HN hiring founders have budget; the last attempt was too generic",
                "priority": "high",
                "actions": [
                    {"action": "dispatch_to_fullsend", "payload": {"idea": "Scrape HN Who is Hiring posts and email the founders"}},
                    {"action": "update_worklist", "payload": {"content": "# Fullsend Worklist\n\n## Active (In Progress)\n- [ ] **HN hiring campaign** - FULLSEND designing\n"}}
                ]
            })))
        } else {
            Reply::text(json!({"action": "no_action", "reasoning": "nothing to do"}).to_string())
        }
    }));
    let mut c = w.conn();
    let _: () = redis::cmd("HSET")
        .arg("experiments:exp_20261101_hn_hiring_v1")
        .arg(&[
            ("state", "archived"),
            ("status", "archived"),
            (
                "hypothesis",
                "Founders posting in HN Who is Hiring reply to a generic cold email",
            ),
            ("archived_reason", "1% replies after 200 sends"),
        ])
        .query(&mut c)
        .expect("hset");
    std::fs::write(
        w.context().join("learnings.md"),
        "# Strategic Learnings\n\n## 2026-11-02\n**Specific beats generic for HN founders**\n- 1% generic vs 9% naming their post\n",
    )
    .expect("learnings");
    let listener = Listener::start(&w, &["orchestrator", "--lease", "5"], "listen.log");
    wait_ready(&w, "orchestrator", "fullsend:to_orchestrator", 1);
    publish(
        &w,
        "fullsend:to_orchestrator",
        &escalation("Scrape HN Who is Hiring posts", Some("42")).to_string(),
    );
    let request = eventually(Duration::from_secs(30), "experiment_request", || {
        experiment_requests(&w).into_iter().next()
    });
    assert_eq!(
        request["similar_experiments"][0]["experiment_id"], "exp_20261101_hn_hiring_v1",
        "{request}"
    );
    assert!(
        request["relevant_learnings"][0]["text"]
            .as_str()
            .unwrap_or("")
            .contains("Specific beats generic"),
        "{request}"
    );
    assert!(
        request["brief"]
            .as_str()
            .unwrap_or("")
            .contains("## Similar past experiments")
    );
    let worklist = read(&w.context().join("worklist.md"));
    assert!(worklist.contains("**HN hiring campaign**"), "{worklist}");
    // One decision did both: one model call, one log line with both actions.
    let calls = w
        .mock_api()
        .requests()
        .iter()
        .filter(|r| mock_api::user_text(r).contains("\"escalation\""))
        .count();
    assert_eq!(calls, 1);
    let line = eventually(Duration::from_secs(10), "the decision line", || {
        listener
            .lines()
            .into_iter()
            .find(|l| l["role"] == "orchestrator")
    });
    let effects: Vec<&str> = line["effects"]
        .as_array()
        .map(|e| e.iter().filter_map(|e| e["effect"].as_str()).collect())
        .unwrap_or_default();
    assert_eq!(effects, ["publish", "replace_file"], "{line}");
    listener.kill();
}

#[test]
fn a_failing_experiment_alert_ends_archived_learned_and_reported() {
    let w = World::with_redis()
        .mock(MockApi::start(|r, _| {
            let text = mock_api::user_text(r);
            if text.contains("metric_alert") && text.contains("This is an outcome") {
                Reply::text(json!({
                    "reasoning": "0.4% after 250 sends",
                    "priority": "high",
                    "actions": [
                        {"action": "kill_experiment", "experiment_id": "exp_20261120_cfo", "payload": {"reason": "0.4% replies after 250 sends"}},
                        {"action": "record_learning", "payload": {"learning": "**CFOs ignore cold email**\n- 1 reply from 250 sends (0.4%)\n- Action: target technical buyers"}},
                        {"action": "respond_to_discord", "payload": {"content": "Killed exp_20261120_cfo: 0.4% replies after 250 sends."}}
                    ]
                }).to_string())
            } else {
                Reply::text(json!({"action": "no_action", "reasoning": "no outcome prompt"}).to_string())
            }
        }))
        .set("FULLSEND_REPORT_CHANNEL_ID", "9090");
    let mut c = w.conn();
    let _: () = redis::cmd("HSET")
        .arg("experiments:exp_20261120_cfo")
        .arg(&[("state", "running"), ("status", "running")])
        .query(&mut c)
        .expect("hset");
    let _: () = redis::cmd("SET")
        .arg("schedules:exp_20261120_cfo")
        .arg("0 9 * * 2")
        .query(&mut c)
        .expect("set");
    let listener = Listener::start(&w, &["orchestrator", "--lease", "5"], "listen.log");
    wait_ready(&w, "orchestrator", "fullsend:to_orchestrator", 1);
    publish(
        &w,
        "fullsend:to_orchestrator",
        &json!({"type": "metric_alert", "source": "redis_agent", "experiment_id": "exp_20261120_cfo", "metric": "response_rate", "value": 0.004, "threshold": 0.05, "recommendation": "Consider killing this experiment"}).to_string(),
    );
    let report = eventually(Duration::from_secs(30), "the report", || {
        of_type(
            &mut w.conn(),
            "fullsend:from_orchestrator",
            "orchestrator_response",
        )
        .into_iter()
        .next()
    });
    assert_eq!(report["channel_id"], "9090");
    assert!(
        report["content"]
            .as_str()
            .unwrap_or("")
            .contains("Killed exp_20261120_cfo")
    );
    let fields: std::collections::HashMap<String, String> = redis::cmd("HGETALL")
        .arg("experiments:exp_20261120_cfo")
        .query(&mut c)
        .expect("hgetall");
    assert_eq!(fields["state"], "archived");
    assert_eq!(fields["status"], "archived");
    let schedule: bool = redis::cmd("EXISTS")
        .arg("schedules:exp_20261120_cfo")
        .query(&mut c)
        .expect("exists");
    assert!(!schedule, "no longer scheduled");
    let learnings = read(&w.context().join("learnings.md"));
    assert!(
        learnings.contains("**CFOs ignore cold email**\n- 1 reply from 250 sends (0.4%)"),
        "{learnings}"
    );
    listener.kill();
}
