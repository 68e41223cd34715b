//! `fullsend dispatch`: each action's side effects and message shapes against
//! a real redis-server, plus `think | dispatch` as a pipeline.

use std::process::{Command, Stdio};

use serde_json::{Value, json};

use crate::common::mock_api::{MockApi, Reply};
use crate::support::{World, of_type, rambling, read};

fn decision(action: &str, payload: Value, message: Value) -> String {
    json!({"action": action, "reasoning": "because", "payload": payload, "priority": "high", "message": message}).to_string()
}

fn watcher_message() -> Value {
    json!({"type": "escalation", "source": "watcher", "msg_id": "cause-1", "original_message": {"content": "hi", "channel_id": "111222333", "message_id": "444555"}})
}

#[test]
fn dispatch_to_fullsend_emits_one_experiment_request() {
    let w = World::with_redis();
    let r = w.run(&["dispatch"], &json!({"action": "dispatch_to_fullsend", "reasoning": "worth testing", "payload": {"idea": "Scrape HN"}, "priority": "high", "context_for_fullsend": "devs reply", "message": watcher_message()}).to_string());
    assert_eq!(r.code, 0, "{}", r.stderr);
    let mut c = w.conn();
    let msgs = of_type(&mut c, "fullsend:to_fullsend", "experiment_request");
    assert_eq!(msgs.len(), 1);
    let m = &msgs[0];
    assert_eq!(m["idea"]["idea"], "Scrape HN");
    assert_eq!(m["context"], "devs reply");
    assert_eq!(m["priority"], "high");
    assert_eq!(m["orchestrator_reasoning"], "worth testing");
    assert_eq!(m["causation_id"], "cause-1");
    // One hop from its cause, and in its cause's trace.
    assert_eq!(m["causation_depth"], 1);
    assert!(
        m["traceparent"]
            .as_str()
            .is_some_and(|t| t.starts_with("00-") && t.ends_with("-01")),
        "{m}"
    );
    assert!(m["requested_at"].as_str().unwrap_or("").ends_with("+00:00"));
    assert!(m["request_id"].as_str().is_some() && m["msg_id"].as_str().is_some());
    // The same decision again is recognised and does nothing.
    let again = w.run(&["dispatch"], &json!({"action": "dispatch_to_fullsend", "payload": {"idea": "Scrape HN"}, "message": watcher_message()}).to_string());
    assert_eq!(again.code, 0);
    assert_eq!(again.json()["commit"]["status"]["status"], "duplicate");
    assert_eq!(
        of_type(&mut c, "fullsend:to_fullsend", "experiment_request").len(),
        1
    );
}

#[test]
fn dispatch_to_builder_flat_and_wrapped() {
    let w = World::with_redis();
    let mut c = w.conn();
    w.run(
        &["dispatch"],
        &decision(
            "dispatch_to_builder",
            json!({"name": "hn_scraper", "purpose": "scrape"}),
            json!({}),
        ),
    );
    w.run(&["dispatch"], &decision("dispatch_to_builder", json!({"prd": {"name": "gh_scraper"}, "notify_channel": "999", "notify_message": "done!"}), json!({})));
    let msgs = of_type(&mut c, "fullsend:builder_tasks", "tool_prd");
    assert_eq!(msgs.len(), 2);
    assert_eq!(msgs[0]["prd"]["name"], "hn_scraper");
    assert!(msgs[0].get("notify_channel").is_none());
    assert_eq!(msgs[0]["requested_by"], "orchestrator");
    assert_eq!(msgs[1]["prd"]["name"], "gh_scraper");
    assert_eq!(msgs[1]["notify_channel"], "999");
    assert_eq!(msgs[1]["notify_message"], "done!");
}

#[test]
fn respond_to_discord_resolves_the_channel_and_caps_content() {
    let w = World::with_redis();
    let mut c = w.conn();
    let r = w.run(
        &["dispatch"],
        &decision(
            "respond_to_discord",
            json!({"content": "y".repeat(3000)}),
            watcher_message(),
        ),
    );
    assert_eq!(r.code, 0, "{}", r.stderr);
    let msgs = of_type(
        &mut c,
        "fullsend:from_orchestrator",
        "orchestrator_response",
    );
    assert_eq!(msgs.len(), 1);
    assert_eq!(msgs[0]["channel_id"], "111222333");
    assert_eq!(msgs[0]["reply_to"], "444555");
    assert_eq!(
        msgs[0]["content"].as_str().map(|s| s.chars().count()),
        Some(2000)
    );
    // Default content when the model gave none.
    w.run(
        &["dispatch"],
        &decision(
            "respond_to_discord",
            json!({}),
            json!({"channel_id": "777"}),
        ),
    );
    let msgs = of_type(
        &mut c,
        "fullsend:from_orchestrator",
        "orchestrator_response",
    );
    assert_eq!(
        msgs[1]["content"],
        "✅ Got it — I will draft a plan and share next steps shortly."
    );
    // No channel anywhere: nothing is published, and a warning says so.
    let r = w.run(
        &["dispatch"],
        &decision(
            "respond_to_discord",
            json!({"content": "hello"}),
            json!({"type": "metric_alert"}),
        ),
    );
    assert_eq!(r.code, 0);
    assert!(r.stderr.contains("no channel_id"), "{}", r.stderr);
    assert_eq!(
        of_type(
            &mut c,
            "fullsend:from_orchestrator",
            "orchestrator_response"
        )
        .len(),
        2
    );
}

#[test]
fn update_worklist_replaces_atomically_and_keeps_history() {
    let w = World::with_redis();
    std::fs::write(w.context().join("worklist.md"), "# Old\n").expect("write");
    let r = w.run(
        &["dispatch"],
        &decision(
            "update_worklist",
            json!({"content": "# Fullsend Worklist\n- [ ] new"}),
            json!({}),
        ),
    );
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert_eq!(
        read(&w.context().join("worklist.md")),
        "# Fullsend Worklist\n- [ ] new\n"
    );
    let history: Vec<_> = std::fs::read_dir(w.context().join(".history"))
        .expect("history")
        .collect();
    assert_eq!(history.len(), 1);
    // Empty content never blanks the worklist.
    w.run(
        &["dispatch"],
        &decision("update_worklist", json!({"content": ""}), json!({})),
    );
    assert!(read(&w.context().join("worklist.md")).contains("new"));
}

#[test]
fn record_learning_appends_a_dated_entry() {
    let w = World::with_redis();
    std::fs::write(
        w.context().join("learnings.md"),
        "# Strategic Learnings\n\n## 2024-01-14\nold",
    )
    .expect("write");
    let r = w.run(
        &["dispatch"],
        &decision(
            "record_learning",
            json!({"learning": "Event targeting wins"}),
            json!({}),
        ),
    );
    assert_eq!(r.code, 0, "{}", r.stderr);
    let text = read(&w.context().join("learnings.md"));
    assert!(
        text.starts_with("# Strategic Learnings\n\n## 2024-01-14\nold\n\n## 20"),
        "{text}"
    );
    assert!(text.ends_with("\nEvent targeting wins"), "{text}");
}

#[test]
fn kill_experiment_archives_existing_and_refuses_everything_else() {
    let w = World::with_redis();
    let mut c = w.conn();
    let _: () = redis::cmd("HSET")
        .arg("experiments:exp_20240115_github_stars")
        .arg("state")
        .arg("running")
        .query(&mut c)
        .expect("hset");
    let _: () = redis::cmd("SET")
        .arg("schedules:exp_20240115_github_stars")
        .arg("0 9 * * 1")
        .query(&mut c)
        .expect("set");
    let r = w.run(&["dispatch"], &json!({"action": "kill_experiment", "reasoning": "2% replies", "payload": {"experiment_id": "exp_20240115_github_stars", "reason": "below failure threshold"}}).to_string());
    assert_eq!(r.code, 0, "{}", r.stderr);
    let h: std::collections::HashMap<String, String> = redis::cmd("HGETALL")
        .arg("experiments:exp_20240115_github_stars")
        .query(&mut c)
        .expect("hgetall");
    assert_eq!(h["state"], "archived");
    assert_eq!(h["archived_by"], "orchestrator");
    assert_eq!(h["archived_reason"], "below failure threshold");
    assert!(h.contains_key("archived_at"));
    let sched: Option<String> = redis::cmd("GET")
        .arg("schedules:exp_20240115_github_stars")
        .query(&mut c)
        .expect("get");
    assert!(sched.is_none(), "an archived experiment keeps no schedule");

    let before: Vec<String> = redis::cmd("KEYS")
        .arg("experiments:*")
        .query(&mut c)
        .expect("keys");
    for bad in [
        "exp_missing",
        "../x",
        "a b",
        "exp_1\r\nFLUSHALL",
        &"a".repeat(10_000),
        "{fs}",
        "*",
    ] {
        let r = w.run(
            &["dispatch"],
            &json!({"action": "kill_experiment", "experiment_id": bad}).to_string(),
        );
        assert_eq!(r.code, 1, "{bad:?} must be refused: {}", r.stderr);
        assert!(r.json()["plan"]["rejected"].is_string());
    }
    let r = w.run(
        &["dispatch"],
        &json!({"action": "kill_experiment"}).to_string(),
    );
    assert_eq!(r.code, 1);
    let after: Vec<String> = redis::cmd("KEYS")
        .arg("experiments:*")
        .query(&mut c)
        .expect("keys");
    assert_eq!(before, after, "no phantom hashes");
}

#[test]
fn roundtable_runs_the_configured_command_and_reports_back() {
    let w = roundtable_world(
        "cat > \"$(dirname \"$0\")/rt_input.json\"\necho '{\"transcript\":[\"a\",\"b\"],\"summary\":[\"go for events\"]}'",
    );
    std::fs::write(
        w.context().join("learnings.md"),
        "# Strategic Learnings\n\n## 1\none\n\n## 2\ntwo",
    )
    .expect("write");
    let r = w.run(
        &["dispatch"],
        &decision(
            "initiate_roundtable",
            json!({"prompt": "Where next?"}),
            json!({}),
        ),
    );
    assert_eq!(r.code, 0, "{}", r.stderr);
    let input: Value = serde_json::from_str(&read(&w.path("rt_input.json"))).expect("input json");
    assert_eq!(input["prompt"], "Where next?");
    assert!(input["learnings"].is_array(), "learnings go as a list");
    let mut c = w.conn();
    let back = of_type(&mut c, "fullsend:to_orchestrator", "roundtable_result");
    assert_eq!(back.len(), 1);
    assert_eq!(back[0]["summary"][0], "go for events");
    assert_eq!(
        of_type(&mut c, "fullsend:roundtable", "roundtable_request").len(),
        1
    );
}

/// A roundtable command made of `body`, configured in a world with Redis and secrets in its
/// environment.
fn roundtable_world(body: &str) -> World {
    let w = World::with_redis();
    let script = w.path("roundtable.sh");
    std::fs::write(&script, format!("#!/bin/sh\n{body}\n")).expect("write");
    std::fs::set_permissions(&script, std::os::unix::fs::PermissionsExt::from_mode(0o755))
        .expect("chmod");
    w.set("FULLSEND_ROUNDTABLE_CMD", script.to_str().expect("utf8"))
        .set("ANTHROPIC_API_KEY", "sk-ant-roundtable-SECRET")
        .set("OPENAI_API_KEY", "sk-openai-SECRET")
        .set("GEMINI_API_KEY", "gemini-SECRET")
}

/// The roundtable_result the dispatch published.
fn roundtable_result(w: &World) -> Value {
    let mut c = w.conn();
    let back = of_type(&mut c, "fullsend:to_orchestrator", "roundtable_result");
    assert_eq!(back.len(), 1, "one result, whatever happened");
    back[0].clone()
}

#[test]
fn the_roundtable_command_gets_no_secret() {
    let w = roundtable_world(
        "env > \"$(dirname \"$0\")/rt_env.txt\"\ncat > /dev/null\necho '{\"summary\":[\"ok\"]}'",
    );
    let r = w.run(
        &["dispatch"],
        &decision(
            "initiate_roundtable",
            json!({"prompt": "Where next?"}),
            json!({}),
        ),
    );
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert_eq!(roundtable_result(&w)["status"], "ok");
    let env = read(&w.path("rt_env.txt"));
    for secret in ["SECRET", "REDIS_URL", "ANTHROPIC", "OPENAI", "GEMINI"] {
        assert!(
            !env.contains(secret),
            "{secret} reached the roundtable:\n{env}"
        );
    }
    assert!(env.lines().any(|l| l.starts_with("PATH=")));
}

#[test]
fn a_roundtable_that_never_reads_a_large_request_cannot_hang_the_dispatch() {
    // 200 KiB of request: more than a pipe holds, so a writer outside the timeout would block.
    let w = roundtable_world("sleep 600").set("FULLSEND_ROUNDTABLE_TIMEOUT", "1");
    let prompt = "p".repeat(200 * 1024);
    let r = w.run(
        &["dispatch"],
        &decision("initiate_roundtable", json!({"prompt": prompt}), json!({})),
    );
    assert_eq!(r.code, 0, "{}", r.stderr);
    let result = roundtable_result(&w);
    assert_eq!(result["status"], "failed");
    assert!(
        result["error"]
            .as_str()
            .unwrap_or_default()
            .contains("timed out"),
        "{result}"
    );
}

#[test]
fn a_roundtable_that_prints_without_end_is_cut_off() {
    let w = roundtable_world("cat > /dev/null\nyes fullsend");
    let r = w.run(
        &["dispatch"],
        &decision("initiate_roundtable", json!({"prompt": "go"}), json!({})),
    );
    assert_eq!(r.code, 0, "{}", r.stderr);
    let result = roundtable_result(&w);
    assert_eq!(result["status"], "failed");
    assert!(
        result["error"]
            .as_str()
            .unwrap_or_default()
            .contains("more than"),
        "{result}"
    );
}

#[test]
fn no_action_and_dry_run_change_nothing() {
    let w = World::with_redis();
    let r = w.run(&["dispatch"], &decision("no_action", json!({}), json!({})));
    assert_eq!(r.code, 0);
    let r = w.run(
        &["dispatch", "--dry-run"],
        &decision("dispatch_to_fullsend", json!({"idea": "x"}), json!({})),
    );
    assert_eq!(r.code, 0);
    assert_eq!(r.json()["dry_run"], true);
    assert_eq!(
        r.json()["plan"]["effects"][0]["channel"],
        "fullsend:to_fullsend"
    );
    let mut c = w.conn();
    let keys: Vec<String> = redis::cmd("KEYS").arg("*").query(&mut c).expect("keys");
    assert!(keys.is_empty(), "{keys:?}");
}

#[test]
fn bad_decisions_and_a_dead_redis_fail_clearly() {
    let w = World::bare();
    assert_eq!(w.run(&["dispatch"], "not json").code, 2);
    assert_eq!(w.run(&["dispatch"], "{}").code, 2);
    let r = w.run(
        &["dispatch"],
        &decision("dispatch_to_fullsend", json!({"idea": "x"}), json!({})),
    );
    assert_eq!(r.code, 3, "Redis down is an upstream failure: {}", r.stderr);
    assert!(r.stderr.contains("Redis"), "{}", r.stderr);
}

#[test]
fn think_pipes_into_dispatch() {
    let decision = json!({"action": "dispatch_to_fullsend", "reasoning": "r", "payload": {"idea": "HN"}, "priority": "high"});
    let mock = MockApi::sequence(vec![Reply::text(rambling(&decision))]);
    let w = World::with_redis().mock(mock);
    let mut think = w
        .cmd(&["think"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("think");
    {
        use std::io::Write;
        let mut stdin = think.stdin.take().expect("stdin");
        stdin.write_all(br#"{"type":"escalation","source":"watcher","original_message":{"content":"Scrape HN Who is Hiring posts"}}"#).expect("write");
    }
    let think_out = think.stdout.take().expect("stdout");
    let dispatch: std::process::Output = {
        let mut cmd: Command = w.cmd(&["dispatch"]);
        cmd.stdin(think_out).output().expect("dispatch")
    };
    assert!(think.wait().expect("wait").success());
    assert!(
        dispatch.status.success(),
        "{}",
        String::from_utf8_lossy(&dispatch.stderr)
    );
    let mut c = w.conn();
    assert_eq!(
        of_type(&mut c, "fullsend:to_fullsend", "experiment_request").len(),
        1
    );
}

#[test]
fn pause_and_resume_follow_the_schedule_once_each() {
    let w = World::with_redis();
    let mut c = w.conn();
    let id = "exp_20261202_paused";
    let key = format!("experiments:{id}");
    let _: () = redis::cmd("HSET")
        .arg(&key)
        .arg(&[
            ("state", "running"),
            ("status", "running"),
            ("schedule", "0 9 * * 1"),
        ])
        .query(&mut c)
        .expect("hset");
    let _: () = redis::cmd("SET")
        .arg(format!("schedules:{id}"))
        .arg("0 9 * * 1")
        .query(&mut c)
        .expect("set");
    let act = |action: &str| {
        w.run(
            &["dispatch"],
            &json!({"action": action, "reasoning": "holiday week", "experiment_id": id, "payload": {"reason": "holiday week"}}).to_string(),
        )
    };
    let field = |c: &mut redis::Connection, f: &str| -> Option<String> {
        redis::cmd("HGET").arg(&key).arg(f).query(c).expect("hget")
    };
    let schedule = |c: &mut redis::Connection| -> Option<String> {
        redis::cmd("GET")
            .arg(format!("schedules:{id}"))
            .query(c)
            .expect("get")
    };
    for _ in 0..2 {
        let r = act("pause_experiment");
        assert_eq!(r.code, 0, "{}", r.stderr);
    }
    assert_eq!(field(&mut c, "state").as_deref(), Some("paused"));
    assert_eq!(field(&mut c, "status").as_deref(), Some("paused"));
    assert_eq!(
        field(&mut c, "paused_reason").as_deref(),
        Some("holiday week")
    );
    assert_eq!(schedule(&mut c), None, "the Executor's cron stops");
    assert_eq!(
        of_type(&mut c, "fullsend:experiments", "experiment_paused").len(),
        1,
        "pausing twice announces once"
    );
    for _ in 0..2 {
        let r = act("resume_experiment");
        assert_eq!(r.code, 0, "{}", r.stderr);
    }
    assert_eq!(field(&mut c, "state").as_deref(), Some("ready"));
    assert_eq!(field(&mut c, "status").as_deref(), Some("ready"));
    assert_eq!(
        schedule(&mut c).as_deref(),
        Some("0 9 * * 1"),
        "back on its schedule"
    );
    assert_eq!(
        of_type(&mut c, "fullsend:experiments", "experiment_resumed").len(),
        1
    );
    // Only experiments that exist, in a state that allows it.
    let _: () = redis::cmd("HSET")
        .arg(&key)
        .arg(&[("state", "archived"), ("status", "archived")])
        .query(&mut c)
        .expect("hset");
    for action in ["pause_experiment", "resume_experiment"] {
        let r = act(action);
        assert_eq!(r.code, 1, "{action} of an archived experiment is refused");
        assert!(r.json()["plan"]["rejected"].is_string());
    }
    assert_eq!(
        field(&mut c, "state").as_deref(),
        Some("archived"),
        "left alone"
    );
    let r = w.run(
        &["dispatch"],
        &json!({"action": "pause_experiment", "experiment_id": "exp_20261202_missing"}).to_string(),
    );
    assert_eq!(r.code, 1);
    let phantom: bool = redis::cmd("EXISTS")
        .arg("experiments:exp_20261202_missing")
        .query(&mut c)
        .expect("exists");
    assert!(!phantom, "no phantom hash");
}

#[test]
fn a_reply_without_a_channel_goes_to_the_report_channel() {
    let no_channel = json!({"type": "experiment_success", "source": "fullsend_listener", "msg_id": "done-1", "experiment_id": "exp_20261202_x"});
    let reply = |w: &World| {
        let r = w.run(
            &["dispatch"],
            &decision(
                "respond_to_discord",
                json!({"content": "exp_x hit 12% replies"}),
                no_channel.clone(),
            ),
        );
        assert_eq!(r.code, 0, "{}", r.stderr);
        of_type(
            &mut w.conn(),
            "fullsend:from_orchestrator",
            "orchestrator_response",
        )
    };
    let w = World::with_redis().set("FULLSEND_REPORT_CHANNEL_ID", "777000111");
    let sent = reply(&w);
    assert_eq!(sent.len(), 1);
    assert_eq!(sent[0]["channel_id"], "777000111");
    assert_eq!(sent[0]["content"], "exp_x hit 12% replies");
    // The old name is an alias.
    let w = World::with_redis().set("FULLSEND_NOTICE_CHANNEL_ID", "888000111");
    assert_eq!(reply(&w)[0]["channel_id"], "888000111");
    // Neither: nothing is published, and the report says why.
    let w = World::with_redis();
    assert!(reply(&w).is_empty());
}

#[test]
fn several_actions_go_through_one_commit_and_a_bad_one_drops_none_of_the_others() {
    let w = World::with_redis();
    let mut c = w.conn();
    let _: () = redis::cmd("HSET")
        .arg("experiments:exp_20261202_dead")
        .arg(&[("state", "running"), ("status", "running")])
        .query(&mut c)
        .expect("hset");
    let message = json!({"type": "metric_alert", "source": "redis_agent", "msg_id": "alert-1", "experiment_id": "exp_20261202_dead"});
    let decision = json!({
        "reasoning": "2% replies after 100 sends",
        "priority": "high",
        "message": message,
        "actions": [
            {"action": "kill_experiment", "experiment_id": "exp_20261202_dead", "payload": {"reason": "below its failure criteria"}},
            {"action": "kill_experiment", "experiment_id": "exp_20261202_missing"},
            {"action": "record_learning", "payload": {"learning": "CFOs ignore cold email: 2/100"}},
            {"action": "launch_rockets"},
        ],
    });
    let r = w.run(&["dispatch"], &decision.to_string());
    assert_eq!(r.code, 0, "the good ones went ahead: {}", r.stderr);
    let report = r.json();
    let refused = report["plan"]["refused"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    assert_eq!(refused.len(), 2, "{report}");
    assert_eq!(refused[0]["index"], 1);
    assert!(
        refused[0]["reason"]
            .as_str()
            .unwrap_or("")
            .contains("does not exist")
    );
    assert_eq!(refused[1]["index"], 3);
    let state: String = redis::cmd("HGET")
        .arg("experiments:exp_20261202_dead")
        .arg("status")
        .query(&mut c)
        .expect("hget");
    assert_eq!(state, "archived");
    assert_eq!(
        of_type(&mut c, "fullsend:experiments", "experiment_archived").len(),
        1
    );
    assert!(read(&w.context().join("learnings.md")).contains("CFOs ignore cold email: 2/100"));
    let phantom: bool = redis::cmd("EXISTS")
        .arg("experiments:exp_20261202_missing")
        .query(&mut c)
        .expect("exists");
    assert!(!phantom);
    // The same decision again (same msg_id): recognised, nothing twice.
    let again = w.run(&["dispatch"], &decision.to_string());
    assert_eq!(again.code, 0, "{}", again.stderr);
    assert_eq!(
        of_type(&mut c, "fullsend:experiments", "experiment_archived").len(),
        1
    );
    assert_eq!(
        read(&w.context().join("learnings.md"))
            .matches("CFOs ignore cold email")
            .count(),
        1
    );
    // Every action refused: exit 1, nothing written.
    let r = w.run(
        &["dispatch"],
        &json!({"actions": [{"action": "kill_experiment", "experiment_id": "exp_20261202_nope"}]})
            .to_string(),
    );
    assert_eq!(r.code, 1);
    assert!(r.json()["plan"]["rejected"].is_string());
}

#[test]
fn ask_for_context_asks_the_asker_and_keeps_the_question_open_once() {
    let w = World::with_redis();
    let message = json!({"type": "escalation", "msg_id": "vague-1", "original_message": {"username": "maria", "channel_id": "4242", "content": "more marketing?"}});
    let ask = decision(
        "ask_for_context",
        json!({"question": "Which audience do you have in mind?"}),
        message.clone(),
    );
    for _ in 0..2 {
        let r = w.run(&["dispatch"], &ask);
        assert_eq!(r.code, 0, "{}", r.stderr);
    }
    let sent = of_type(
        &mut w.conn(),
        "fullsend:from_orchestrator",
        "orchestrator_response",
    );
    assert_eq!(sent.len(), 1, "a redelivered decision asks once: {sent:?}");
    assert_eq!(sent[0]["channel_id"], "4242");
    assert_eq!(sent[0]["content"], "Which audience do you have in mind?");
    let worklist = read(&w.context().join("worklist.md"));
    let open: Vec<&str> = worklist
        .lines()
        .filter(|l| l.contains("Which audience do you have in mind?"))
        .collect();
    assert_eq!(
        open,
        ["- [ ] **Open question:** Which audience do you have in mind? (asked of maria)"],
        "{worklist}"
    );
    assert!(worklist.contains("## Open Questions"), "{worklist}");
    // No question: refused, nothing sent or recorded.
    let r = w.run(
        &["dispatch"],
        &decision("ask_for_context", json!({}), json!({"msg_id": "vague-2"})),
    );
    assert_eq!(r.code, 1, "{}", r.stderr);
    assert!(
        r.json()["plan"]["rejected"]
            .as_str()
            .unwrap_or("")
            .contains("question")
    );
}

#[test]
fn finished_work_moves_its_active_lines_to_completed_once() {
    let w = World::with_redis();
    std::fs::write(
        w.context().join("worklist.md"),
        "# Fullsend Worklist\n\n## Active (In Progress)\n- [ ] **Experiment design req_7** - FULLSEND designing\n- [ ] **Experiment design req_77** - FULLSEND designing\n- [ ] **hn_scraper** - Builder working on it (req_t1)\n\n## Completed This Week\n- [x] Initial cold email campaign - 12% response rate\n",
    )
    .expect("worklist");
    let ready = json!({"type": "experiment_ready", "msg_id": "ready-7", "request_id": "req_7", "experiment_id": "exp_20261202_hn", "scheduled_for": "2026-12-08T17:00:00Z"});
    for _ in 0..2 {
        let r = w.run(
            &["dispatch"],
            &decision(
                "respond_to_discord",
                json!({"content": "designed"}),
                ready.clone(),
            ),
        );
        assert_eq!(r.code, 0, "{}", r.stderr);
    }
    let tool = json!({"type": "tool_complete", "msg_id": "tool-1", "tool_name": "hn_scraper", "status": "active"});
    let r = w.run(&["dispatch"], &decision("no_action", json!({}), tool));
    assert_eq!(r.code, 0, "{}", r.stderr);
    let worklist = read(&w.context().join("worklist.md"));
    assert_eq!(
        worklist,
        "# Fullsend Worklist\n\n## Active (In Progress)\n- [ ] **Experiment design req_77** - FULLSEND designing\n\n## Completed This Week\n- [x] Initial cold email campaign - 12% response rate\n- [x] **Experiment design req_7** - FULLSEND designing → designed as exp_20261202_hn, first run 2026-12-08T17:00:00Z\n- [x] **hn_scraper** - Builder working on it (req_t1) → tool active\n",
    );
}

#[test]
fn a_hand_written_dispatch_gets_a_brief_from_the_context_as_it_is() {
    let w = World::with_redis();
    let mut c = w.conn();
    let _: () = redis::cmd("HSET")
        .arg("experiments:exp_20261101_hn_hiring")
        .arg(&[
            ("state", "archived"),
            ("status", "archived"),
            (
                "hypothesis",
                "Founders posting in HN Who is Hiring reply to a cold email",
            ),
            ("archived_reason", "1% replies after 200 sends"),
        ])
        .query(&mut c)
        .expect("hset");
    let _: () = redis::cmd("HSET")
        .arg("experiments:exp_20261101_yc")
        .arg(&[
            ("state", "running"),
            ("hypothesis", "YC batch founders like demos"),
        ])
        .query(&mut c)
        .expect("hset");
    std::fs::write(
        w.context().join("learnings.md"),
        "# Strategic Learnings\n\n## 2026-11-02\n**HN hiring founders are busy**\n- 2 replies from 200 HN hiring emails\n\n## 2026-11-01\n**CFOs ignore cold email**\n- 0 of 50\n",
    )
    .expect("learnings");
    let r = w.run(
        &["dispatch"],
        &decision(
            "dispatch_to_fullsend",
            json!({"idea": "Email founders from the HN Who is Hiring thread"}),
            watcher_message(),
        ),
    );
    assert_eq!(r.code, 0, "{}", r.stderr);
    let sent = of_type(&mut c, "fullsend:to_fullsend", "experiment_request");
    assert_eq!(sent.len(), 1);
    let request = &sent[0];
    assert_eq!(
        request["similar_experiments"][0]["experiment_id"], "exp_20261101_hn_hiring",
        "{request}"
    );
    assert_eq!(request["similar_experiments"][0]["state"], "archived");
    let learnings = request["relevant_learnings"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    assert_eq!(
        learnings.len(),
        1,
        "only the learning that bears on it: {learnings:?}"
    );
    assert!(
        learnings[0]["text"]
            .as_str()
            .unwrap_or("")
            .contains("HN hiring founders are busy")
    );
    let brief = request["brief"].as_str().unwrap_or("");
    assert!(
        brief.contains("Archived because: 1% replies after 200 sends"),
        "{brief}"
    );
}

#[test]
fn the_orchestrators_mode_choice_reaches_the_experiment_request() {
    let w = World::with_redis();
    let r = w.run(
        &["dispatch"],
        &decision(
            "dispatch_to_fullsend",
            json!({"idea": "New ground: conference attendees", "mode": "ralph", "complex": true}),
            watcher_message(),
        ),
    );
    assert_eq!(r.code, 0, "{}", r.stderr);
    let mut c = w.conn();
    let msgs = of_type(&mut c, "fullsend:to_fullsend", "experiment_request");
    assert_eq!(msgs[0]["mode"], "ralph");
    assert_eq!(msgs[0]["complex"], true);
}

#[test]
fn design_progress_notes_the_active_line_by_rule_without_a_model() {
    let w = World::with_redis();
    std::fs::write(
        w.context().join("worklist.md"),
        "# Fullsend Worklist\n\n## Active (In Progress)\n- [ ] **Experiment design req_9** - FULLSEND designing\n- [ ] **Experiment design req_99** - FULLSEND designing\n",
    )
    .expect("worklist");
    for (done, title) in [
        (2, "Check available tools"),
        (3, "Design the experiment spec"),
    ] {
        let msg = json!({"type": "design_progress", "msg_id": format!("p-{done}"), "request_id": "req_9", "tasks_done": done, "tasks_total": 6, "task_title": title});
        let thought = w.run(&["think"], &msg.to_string());
        assert_eq!(thought.code, 0, "{}", thought.stderr);
        assert_eq!(thought.json()["provider"], "rule", "{}", thought.stdout);
        let r = w.run(&["dispatch"], &thought.stdout);
        assert_eq!(r.code, 0, "{}", r.stderr);
    }
    assert_eq!(
        read(&w.context().join("worklist.md")),
        "# Fullsend Worklist\n\n## Active (In Progress)\n- [ ] **Experiment design req_9** - FULLSEND designing · RALPH 3/6 tasks done, last: Design the experiment spec\n- [ ] **Experiment design req_99** - FULLSEND designing\n",
    );
}
