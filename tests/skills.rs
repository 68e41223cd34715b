//! The designer's policies with the skills in place, black-box through `listen fullsend` and
//! `design`: the mode a request gets, a RALPH design that stops at its budget, `run_direct`
//! answering the Orchestrator, and `tool_feedback` recorded and acted on.

use std::time::Duration;

use serde_json::{Value, json};

use crate::common::fake_claude::{Behavior, argv_log};
use crate::listen::{Listener, wait_ready};
use crate::support::{World, eventually, of_type};

/// A fake that works either way: in a RALPH work dir it ticks the next task (and writes the
/// spec at the last one), with a verdict that agrees; elsewhere it answers a spec at once.
fn either_mode_agent(id: &str) -> Behavior {
    let spec = crate::common::specs::spec_yaml(id);
    Behavior::Script(format!(
        "if [ -f TASKS.md ]; then\npython3 - <<'PY'\nimport re\nt=open('TASKS.md').read()\nm=re.search(r'^- \\[ \\] (TASK-\\d+)', t, re.M)\nif m:\n    t=t.replace('- [ ] '+m.group(1), '- [x] '+m.group(1), 1)\n    open('TASKS.md','w').write(t)\n    if m.group(1)=='TASK-006':\n        open('experiment_spec.yaml','w').write({spec:?})\nPY\nFAKE_TASK_DONE=true\nemit_result '**TASK_DONE**'\nfi\nemit_result {reply}\n",
        reply = crate::common::fake_claude::sh_quote(&crate::design::spec_reply(id)),
    ))
}

/// The calls the fake logged in its working dir (one work dir per design).
fn calls_in(dir: &std::path::Path) -> Vec<Vec<String>> {
    crate::common::fake_claude::read_argv_log(&dir.join(crate::common::fake_claude::CWD_ARGV_LOG))
}

fn publish(w: &World, channel: &str, msg: &Value) {
    let r = w.run(&["publish", channel], &msg.to_string());
    assert_eq!(r.code, 0, "{}", r.stderr);
}

/// The work dirs of a request (named `design_<time>_<request id>_<random>`).
fn work_dirs(w: &World, request_id: &str) -> Vec<std::path::PathBuf> {
    std::fs::read_dir(w.path("work"))
        .map(|d| {
            d.flatten()
                .map(|e| e.path())
                .filter(|p| p.to_string_lossy().contains(&format!("_{request_id}_")))
                .collect()
        })
        .unwrap_or_default()
}

#[test]
fn listen_fullsend_designs_high_priority_in_ralph_and_low_priority_single_shot() {
    let w = World::with_redis().with_fake_claude(either_mode_agent("exp_20261202_modes"));
    let l = Listener::start(&w, &["fullsend", "--lease", "10"], "l.log");
    wait_ready(&w, "fullsend", "fullsend:to_fullsend", 1);
    publish(
        &w,
        "fullsend:to_fullsend",
        &json!({"type": "experiment_request", "idea": "Email CTOs who starred a competitor", "priority": "high", "request_id": "req_high"}),
    );
    publish(
        &w,
        "fullsend:to_fullsend",
        &json!({"type": "experiment_request", "idea": "Same again, new subject line", "priority": "low", "request_id": "req_low"}),
    );
    let mut c = w.conn();
    let ready = eventually(Duration::from_secs(60), "two designs", || {
        let r = of_type(&mut c, "fullsend:to_orchestrator", "experiment_ready");
        (r.len() >= 2).then_some(r)
    });
    assert_eq!(ready.len(), 2);
    let (high, low) = (work_dirs(&w, "req_high"), work_dirs(&w, "req_low"));
    assert_eq!((high.len(), low.len()), (1, 1), "{high:?} {low:?}");
    assert!(
        high[0].join("TASKS.md").exists(),
        "high priority ran the RALPH loop"
    );
    assert_eq!(calls_in(&high[0]).len(), 6, "one agent call per RALPH task");
    assert!(
        !low[0].join("TASKS.md").exists(),
        "low priority is single-shot"
    );
    assert_eq!(calls_in(&low[0]).len(), 1);
    // Only RALPH calls get sub-agents and a verdict schema.
    let ralph_call = &calls_in(&high[0])[0];
    assert!(
        ralph_call
            .iter()
            .any(|a| a.starts_with("--tools=") && a.contains("Task")),
        "{ralph_call:?}"
    );
    assert!(ralph_call.iter().any(|a| a == "--json-schema"));
    let single_call = &calls_in(&low[0])[0];
    assert!(
        !single_call.iter().any(|a| a.contains("Task")),
        "{single_call:?}"
    );
    // The RALPH design told the Orchestrator where it was.
    let progress = of_type(&mut c, "fullsend:to_orchestrator", "design_progress");
    assert!(!progress.is_empty(), "no design_progress");
    assert!(
        progress.iter().all(|p| p["request_id"] == "req_high"),
        "{progress:?}"
    );
    assert_eq!(l.stop(), 0);
}

#[test]
fn an_explicit_mode_wins_over_the_policy() {
    let w = World::with_redis()
        .with_fake_claude(either_mode_agent("exp_20261202_explicit"))
        .set("FULLSEND_DESIGN_MODE", "ralph");
    let r = w.run(
        &["design", "--dry-run"],
        &json!({"type": "experiment_request", "idea": "x", "priority": "urgent", "mode": "single", "request_id": "req_explicit"}).to_string(),
    );
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert_eq!(r.json()["mode"], "single");
    let r = w.run(
        &["design", "--dry-run"],
        &json!({"type": "experiment_request", "idea": "x", "mode": "loop"}).to_string(),
    );
    assert_ne!(r.code, 0, "an unknown mode is refused: {}", r.stdout);
}

#[test]
fn a_ralph_design_stops_at_its_budget_and_every_call_is_charged() {
    // Each fake call costs $0.0123: the first two spend $0.0246 of a $0.02 budget.
    let w = World::with_redis()
        .with_fake_claude(Behavior::TickTask)
        .set("FULLSEND_DESIGN_BUDGET_USD", "0.02");
    let r = w.run(&["design", "--idea", "x", "--mode", "ralph"], "");
    assert_eq!(r.code, 1, "{}\n{}", r.stdout, r.stderr);
    let out = r.json();
    assert_eq!(out["status"], "failed");
    assert!(
        out["reason"].as_str().unwrap_or("").contains("Budget"),
        "{out}"
    );
    let calls = argv_log(&w.path("fake"));
    assert_eq!(calls.len(), 2, "no call once the budget is spent");
    let caps: Vec<f64> = calls
        .iter()
        .filter_map(|c| {
            c.windows(2)
                .find(|p| p[0] == "--max-budget-usd")
                .map(|p| p[1].parse().expect("number"))
        })
        .collect();
    assert_eq!(caps.len(), 2);
    assert!((caps[0] - 0.02).abs() < 1e-9, "{caps:?}");
    assert!(
        (caps[1] - 0.0077).abs() < 1e-6,
        "the second call gets what is left: {caps:?}"
    );
    let mut c = w.conn();
    let keys: Vec<String> = redis::cmd("KEYS")
        .arg("fullsend:spend:*")
        .query(&mut c)
        .expect("keys");
    let total = keys
        .iter()
        .find(|k| !k.ends_with(":by"))
        .expect("the day's total");
    let spent: f64 = redis::cmd("GET")
        .arg(total)
        .query::<String>(&mut c)
        .expect("get")
        .parse()
        .expect("f64");
    assert!(
        (spent - 0.0246).abs() < 1e-6,
        "each call charged once: {spent}"
    );
    // The same two calls in the day's breakdown, under the role and the model.
    let by: std::collections::HashMap<String, f64> = redis::cmd("HGETALL")
        .arg(format!("{total}:by"))
        .query(&mut c)
        .expect("hgetall");
    assert_eq!(by.len(), 1, "{by:?}");
    let (part, usd) = by.iter().next().expect("one part");
    assert!(part.starts_with("fullsend|"), "{part}");
    assert!((usd - 0.0246).abs() < 1e-6, "{by:?}");
    assert!(of_type(&mut c, "fullsend:to_orchestrator", "design_failed").len() == 1);
}

#[test]
fn the_days_limit_stops_a_ralph_design_between_calls_and_keeps_the_request() {
    let w = World::with_redis()
        .with_fake_claude(Behavior::TickTask)
        .set("FULLSEND_DAILY_SPEND_LIMIT_USD", "0.02")
        .set("FULLSEND_DESIGN_BUDGET_USD", "0");
    let l = Listener::start(&w, &["fullsend", "--lease", "10"], "l.log");
    wait_ready(&w, "fullsend", "fullsend:to_fullsend", 1);
    publish(
        &w,
        "fullsend:to_fullsend",
        &json!({"type": "experiment_request", "idea": "x", "mode": "ralph", "request_id": "req_daily"}),
    );
    eventually(Duration::from_secs(30), "two calls", || {
        (argv_log(&w.path("fake")).len() >= 2).then_some(())
    });
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(
        argv_log(&w.path("fake")).len(),
        2,
        "no third call past the day's limit"
    );
    let mut c = w.conn();
    assert!(
        of_type(&mut c, "fullsend:to_orchestrator", "design_failed").is_empty(),
        "a design stopped by the day's limit waits; it is not announced as failed"
    );
    l.kill();
}

#[test]
fn run_direct_runs_the_agent_once_and_reports_to_the_orchestrator() {
    let verdict = r#"{"outcome":"success","summary":"Sent 3 test emails to the seed list","learnings":["Short subjects were opened more"],"metrics":{"sent":3}}"#;
    let w = World::with_redis().with_fake_claude(Behavior::Script(format!(
        "FAKE_STRUCTURED={}\nemit_result 'ran it'",
        crate::common::fake_claude::sh_quote(verdict)
    )));
    let spec = crate::common::specs::spec_yaml("exp_20261202_direct");
    w.redis().cli(&[
        "HSET",
        "experiments:exp_20261202_direct",
        "state",
        "ready",
        "spec",
        &spec,
    ]);
    let l = Listener::start(&w, &["fullsend", "--lease", "10"], "l.log");
    wait_ready(&w, "fullsend", "fullsend:to_fullsend", 1);
    publish(
        &w,
        "fullsend:to_fullsend",
        &json!({"type": "run_direct", "experiment_id": "exp_20261202_direct", "request_id": "req_direct"}),
    );
    publish(
        &w,
        "fullsend:to_fullsend",
        &json!({"type": "run_direct", "experiment_id": "exp_missing"}),
    );
    let mut c = w.conn();
    let done = eventually(Duration::from_secs(30), "direct_run_complete", || {
        let r = of_type(&mut c, "fullsend:to_orchestrator", "direct_run_complete");
        (!r.is_empty()).then_some(r)
    });
    assert_eq!(done.len(), 1);
    assert_eq!(done[0]["experiment_id"], "exp_20261202_direct");
    assert_eq!(done[0]["summary"], "Sent 3 test emails to the seed list");
    assert_eq!(done[0]["metrics"]["sent"], 3);
    assert!((done[0]["cost_usd"].as_f64().unwrap_or(0.0) - 0.0123).abs() < 1e-9);
    let failed = eventually(Duration::from_secs(30), "direct_run_failed", || {
        let r = of_type(&mut c, "fullsend:to_orchestrator", "direct_run_failed");
        (!r.is_empty()).then_some(r)
    });
    assert!(
        failed[0]["summary"]
            .as_str()
            .unwrap_or("")
            .contains("does not exist"),
        "{failed:?}"
    );
    // Its learning is recorded for the experiment, once.
    let keys: Vec<String> = redis::cmd("KEYS")
        .arg("learnings:tactical:2*")
        .query(&mut c)
        .expect("keys");
    assert_eq!(keys.len(), 1, "{keys:?}");
    let text: String = redis::cmd("HGET")
        .arg(&keys[0])
        .arg("text")
        .query(&mut c)
        .expect("hget");
    assert_eq!(text, "Short subjects were opened more");
    // One agent call, with the spec, the skills and a verdict schema, and no shell.
    let calls = argv_log(&w.path("fake"));
    assert_eq!(calls.len(), 1);
    assert!(calls[0].iter().any(|a| a.starts_with("--mcp-config=")));
    assert!(calls[0].iter().any(|a| a == "--json-schema"));
    assert!(
        !calls[0]
            .iter()
            .any(|a| a.starts_with("--tools=") && a.contains("Bash")),
        "{:?}",
        calls[0]
    );
    let prompt = crate::common::fake_claude::prompt_log(&w.path("fake")).join("\n");
    assert!(
        prompt.contains("exp_20261202_direct"),
        "the spec reaches the agent"
    );
    assert_eq!(l.stop(), 0);
}

#[test]
fn tool_feedback_is_a_learning_and_changed_inputs_redesign_the_waiting_experiments() {
    let w = World::with_redis().with_fake_claude(Behavior::Reply(crate::design::spec_reply(
        "exp_20261202_redone",
    )));
    let r = w.redis();
    r.cli(&[
        "HSET",
        "experiments:exp_waiting",
        "state",
        "draft",
        "hypothesis",
        "Stargazers reply to founders",
    ]);
    r.cli(&[
        "HSET",
        "experiments:exp_killed",
        "state",
        "archived",
        "hypothesis",
        "old",
    ]);
    r.cli(&[
        "SADD",
        "pending_experiments:gh_stars",
        "exp_waiting",
        "exp_killed",
    ]);
    let l = Listener::start(&w, &["fullsend", "--lease", "10"], "l.log");
    wait_ready(&w, "fullsend", "fullsend:to_fullsend", 1);
    publish(
        &w,
        "fullsend:to_fullsend",
        &json!({"type": "tool_feedback", "tool_name": "gh_stars", "feedback": "now takes an org, not a repo", "inputs_changed": true}),
    );
    let mut c = w.conn();
    let requests = eventually(Duration::from_secs(30), "a re-design request", || {
        let r: Vec<Value> = of_type(&mut c, "fullsend:to_fullsend", "experiment_request");
        (!r.is_empty()).then_some(r)
    });
    assert_eq!(
        requests.len(),
        1,
        "only the waiting draft is re-designed: {requests:?}"
    );
    assert_eq!(requests[0]["idea"]["redesign_of"], "exp_waiting");
    let state: String = redis::cmd("HGET")
        .arg("experiments:exp_waiting")
        .arg("state")
        .query(&mut c)
        .expect("hget");
    assert_eq!(state, "archived");
    let still: Vec<String> = redis::cmd("SMEMBERS")
        .arg("pending_experiments:gh_stars")
        .query(&mut c)
        .expect("smembers");
    assert_eq!(still, ["exp_killed"]);
    let keys: Vec<String> = redis::cmd("KEYS")
        .arg("learnings:tactical:2*")
        .query(&mut c)
        .expect("keys");
    let texts: Vec<String> = keys
        .iter()
        .map(|k| {
            redis::cmd("HGET")
                .arg(k)
                .arg("text")
                .query(&mut c)
                .expect("hget")
        })
        .collect();
    assert!(
        texts
            .iter()
            .any(|t| t == "Tool gh_stars: now takes an org, not a repo"),
        "{texts:?}"
    );
    assert!(
        of_type(&mut c, "fullsend:execute_now", "").is_empty() && {
            let n: i64 = redis::cmd("EXISTS")
                .arg("fullsend:{execute_now}:stream")
                .query(&mut c)
                .expect("exists");
            n == 0
        },
        "feedback releases nothing to the Executor"
    );
    l.kill();
}

#[test]
fn ralph_run_gets_the_same_skills_and_web_research_is_an_opt_in() {
    let w = World::with_redis().with_fake_claude(Behavior::TickTask);
    std::fs::create_dir_all(w.path("loop")).expect("dir");
    std::fs::write(w.path("loop/TASKS.md"), "# Tasks\n\n- [ ] TASK-001: one\n").expect("tasks");
    let r = w.run(
        &[
            "ralph",
            "run",
            "--work-dir",
            w.path("loop").to_str().expect("utf8"),
        ],
        "",
    );
    assert_eq!(r.code, 0, "{}\n{}", r.stdout, r.stderr);
    let call = &argv_log(&w.path("fake"))[0];
    assert!(
        call.iter().any(|a| a.starts_with("--mcp-config=")),
        "{call:?}"
    );
    assert!(
        call.iter()
            .any(|a| a.starts_with("--tools=") && a.contains("Task")),
        "{call:?}"
    );
    let tools = |w: &World| -> String {
        argv_log(&w.path("fake"))
            .last()
            .and_then(|c| c.iter().find(|a| a.starts_with("--tools=")).cloned())
            .unwrap_or_default()
    };
    let reply = Behavior::Reply(crate::design::spec_reply("exp_20261202_web"));
    let plain = World::with_redis().with_fake_claude(reply.clone());
    assert_eq!(
        plain.run(&["design", "--idea", "x", "--dry-run"], "").code,
        0
    );
    assert!(!tools(&plain).contains("Web"), "{}", tools(&plain));
    let opted = World::with_redis()
        .with_fake_claude(reply.clone())
        .set("FULLSEND_AGENT_WEB", "true");
    assert_eq!(
        opted.run(&["design", "--idea", "x", "--dry-run"], "").code,
        0
    );
    assert!(
        tools(&opted).contains("WebFetch") && tools(&opted).contains("WebSearch"),
        "{}",
        tools(&opted)
    );
    // With Browserbase configured, research goes through the web_fetch skill instead.
    let browserbase = World::with_redis()
        .with_fake_claude(reply)
        .set("FULLSEND_AGENT_WEB", "true")
        .set("BROWSERBASE_API_KEY", "bb-key");
    assert_eq!(
        browserbase
            .run(&["design", "--idea", "x", "--dry-run"], "")
            .code,
        0
    );
    assert!(
        !tools(&browserbase).contains("Web"),
        "{}",
        tools(&browserbase)
    );
    let env = crate::common::fake_claude::env_log(&browserbase.path("fake")).join("\n");
    assert!(
        !env.contains("bb-key"),
        "the Browserbase key stays out of the agent's environment"
    );
}

#[test]
fn one_trace_follows_a_request_into_the_agent() {
    let w = World::with_redis().with_fake_claude(Behavior::Reply(crate::design::spec_reply(
        "exp_20261202_traced",
    )));
    // The Orchestrator's dispatch puts its message's trace on the request.
    let r = w.run(
        &["dispatch"],
        &json!({"action": "dispatch_to_fullsend", "reasoning": "r", "payload": {"idea": "x", "mode": "single"}, "priority": "low", "message": {"type": "escalation", "msg_id": "cause-trace-1"}}).to_string(),
    );
    assert_eq!(r.code, 0, "{}", r.stderr);
    let mut c = w.conn();
    let request = of_type(&mut c, "fullsend:to_fullsend", "experiment_request").remove(0);
    let tp = request["traceparent"]
        .as_str()
        .expect("traceparent")
        .to_string();
    let parts: Vec<&str> = tp.split('-').collect();
    assert_eq!(
        (parts.len(), parts[0], parts[1].len(), parts[2].len()),
        (4, "00", 32, 16),
        "{tp}"
    );
    let trace = parts[1].to_string();
    let l = Listener::start(&w, &["fullsend", "--lease", "10"], "l.log");
    eventually(Duration::from_secs(30), "the design", || {
        l.lines()
            .into_iter()
            .find(|line| line["type"] == "experiment_request")
    });
    let line = l
        .lines()
        .into_iter()
        .find(|line| line["type"] == "experiment_request")
        .expect("line");
    assert_eq!(line["trace_id"], trace.as_str(), "{line}");
    let env = crate::common::fake_claude::env_log(&w.path("fake")).join("\n");
    assert!(
        env.contains(&format!("TRACEPARENT=00-{trace}-")),
        "the agent joins the trace"
    );
    assert_eq!(l.stop(), 0);
}

#[test]
fn a_redelivered_request_whose_agent_records_the_same_learning_records_it_once() {
    // The agent records a learning through its real skills server (started from the
    // `--mcp-config` it was given, as Claude Code would), then, the first time, hangs until it
    // is stopped as stalled: a transient failure, so the request is delivered again, and the
    // second run records the same learning and answers the spec.
    let script = format!(
        r#"cfg=""
for a in "${{args[@]}}"; do case "$a" in --mcp-config=*) cfg=${{a#--mcp-config=}} ;; esac; done
cmd=$(jq -r '.mcpServers.fullsend.command' "$cfg")
mapfile -t margs < <(jq -r '.mcpServers.fullsend.args[]' "$cfg")
mapfile -t menv < <(jq -r '(.mcpServers.fullsend.env // {{}}) | to_entries[] | "\(.key)=\(.value)"' "$cfg")
coproc MCP {{ env "${{menv[@]}}" "$cmd" "${{margs[@]}}"; }}
printf '%s\n' '{{"jsonrpc":"2.0","id":1,"method":"initialize","params":{{"protocolVersion":"2025-06-18","capabilities":{{}},"clientInfo":{{"name":"fake","version":"1"}}}}}}' >&"${{MCP[1]}}"
read -r -t 20 line <&"${{MCP[0]}}"
printf '%s\n' '{{"jsonrpc":"2.0","method":"notifications/initialized"}}' '{{"jsonrpc":"2.0","id":2,"method":"tools/call","params":{{"name":"append_learning","arguments":{{"text":"Founders answer on Mondays","idempotency_key":"mondays-answer"}}}}}}' >&"${{MCP[1]}}"
read -r -t 20 line <&"${{MCP[0]}}"
printf '%s\n' "$line" >> "$FAKE_DIR/mcp-answers.jsonl"
exec {{MCP[1]}}>&-
n=$(cat "$FAKE_DIR/runs" 2>/dev/null || echo 0); echo $((n + 1)) > "$FAKE_DIR/runs"
if [ "$n" = 0 ]; then exec sleep 60; fi
emit_result {reply}
"#,
        reply = crate::common::fake_claude::sh_quote(&crate::design::spec_reply(
            "exp_20261203_mondays"
        )),
    );
    let w = World::with_redis()
        .with_fake_claude(Behavior::Script(script))
        .set("FULLSEND_DESIGN_MODE", "single")
        .set("FULLSEND_AGENT_STALL_TIMEOUT", "2");
    let l = Listener::start(&w, &["fullsend", "--lease", "3"], "l.log");
    wait_ready(&w, "fullsend", "fullsend:to_fullsend", 1);
    publish(
        &w,
        "fullsend:to_fullsend",
        &json!({"type": "experiment_request", "request_id": "req_mondays", "idea": "Email founders on Mondays"}),
    );
    let mut c = w.conn();
    eventually(
        Duration::from_secs(60),
        "the second delivery's design",
        || {
            (!of_type(&mut c, "fullsend:to_orchestrator", "experiment_ready").is_empty())
                .then_some(())
        },
    );
    let answers = std::fs::read_to_string(w.path("fake/mcp-answers.jsonl")).unwrap_or_default();
    let answers: Vec<&str> = answers.lines().collect();
    assert_eq!(answers.len(), 2, "both runs called the skill: {answers:?}");
    assert!(
        answers[0].contains(r#"\"recorded\":true"#),
        "{}",
        answers[0]
    );
    assert!(
        answers[1].contains("duplicate"),
        "the second run's call is a duplicate: {}",
        answers[1]
    );
    let learnings: Vec<String> = redis::cmd("KEYS")
        .arg("learnings:tactical:*")
        .query::<Vec<String>>(&mut c)
        .expect("keys")
        .into_iter()
        .filter(|k| !k.ends_with(":index"))
        .collect();
    assert_eq!(
        learnings.len(),
        1,
        "one learning, not one per delivery: {learnings:?}"
    );
    assert_eq!(l.stop(), 0);
}

#[test]
fn a_ralph_verdict_confirms_only_its_own_task_and_its_learnings_and_spec_path_are_kept() {
    // The first call also ticks the second task; its verdict speaks for the first only, so the
    // second is cleared and gets its own call. Every verdict reports a learning; the last
    // writes the spec under another name and names it in `spec_path`.
    let spec = crate::common::specs::spec_yaml("exp_20261203_verdicts");
    let script = format!(
        "if [ -f TASKS.md ]; then\nFAKE_STRUCTURED=$(python3 - <<'PY'\nimport re, json, os\nt = open('TASKS.md').read()\ncur = re.search(r'^- \\[ \\] (TASK-\\d+)', t, re.M).group(1)\nticks = [cur] + (['TASK-002'] if cur == 'TASK-001' else [])\nfor id in ticks:\n    t = t.replace('- [ ] ' + id, '- [x] ' + id, 1)\nopen('TASKS.md', 'w').write(t)\nverdict = {{'task_done': True, 'summary': 'did ' + cur, 'learnings': ['learned at ' + cur]}}\nif cur == 'TASK-006':\n    os.makedirs('specs', exist_ok=True)\n    open('specs/final.yaml', 'w').write({spec:?})\n    verdict['spec_path'] = 'specs/final.yaml'\nprint(json.dumps(verdict))\nPY\n)\nemit_result '**TASK_DONE**'\nfi\nemit_result 'no tasks'\n"
    );
    let w = World::with_redis().with_fake_claude(Behavior::Script(script));
    let r = w.run(
        &["design", "--idea", "x", "--mode", "ralph", "--dry-run"],
        "",
    );
    assert_eq!(r.code, 0, "{}\n{}", r.stdout, r.stderr);
    let out = r.json();
    assert_eq!(out["status"], "ready", "{out}");
    assert_eq!(out["spec"]["id"], "exp_20261203_verdicts");
    let calls = argv_log(&w.path("fake"));
    assert_eq!(
        calls.len(),
        6,
        "one call per task: the second task's tick in the first call was cleared"
    );
    let learnings: Vec<&str> = out["learnings"]
        .as_array()
        .expect("learnings")
        .iter()
        .filter_map(Value::as_str)
        .collect();
    for n in 1..=6 {
        let expected = format!("learned at TASK-00{n}");
        assert_eq!(
            learnings.iter().filter(|l| **l == expected).count(),
            1,
            "{expected} in {learnings:?}"
        );
    }
}
