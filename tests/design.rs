//! `fullsend design`: extraction, validation, the repair round, every Redis
//! write and publish, bad requests, timeouts, RALPH and API engines, with fake
//! `claude` executables and a real redis-server.

use std::collections::HashMap;
use std::time::Duration;

use serde_json::{Value, json};

use crate::common::fake_claude::{self, Behavior};
use crate::common::mock_api::{MockApi, Reply};
use crate::support::{World, of_type};

pub(crate) use crate::common::specs::spec_yaml;

pub(crate) fn spec_reply(id: &str) -> String {
    format!(
        "Here's a bold experiment {{with braces}}.\n\n```yaml\n# draft\nnot: [valid\n```\n\nThe real one:\n\n```yaml\n{}```\n\nLet me know what you think!",
        spec_yaml(id)
    )
}

const TOOL_REQUEST: &str = "```yaml\ntool_request:\n  name: github_stargazer_scraper\n  description: \"Scrape users who starred a repo\"\n  priority: high\n  inputs:\n    - name: repo\n      type: string\n  outputs:\n    - name: users\n      type: list\n  requirements:\n    - handle rate limits\n```\n";

fn fake(w: World, behavior: Behavior) -> World {
    w.with_fake_claude(behavior)
}

#[test]
fn parse_survives_prose_several_fences_and_trailing_text() {
    let w = World::bare();
    let r = w.run(
        &["design", "--parse"],
        &spec_reply("exp_20240115_github_stars"),
    );
    assert_eq!(r.code, 0, "{}", r.stderr);
    let out = r.json();
    assert_eq!(out["valid"], true);
    assert_eq!(out["spec"]["execution"]["schedule"], "0 9 * * MON");
    let invalid = spec_yaml("exp_20240115_github_stars")
        .replace("    - response_rate < 0.02 after 100 sends\n", "")
        .replace("failure_criteria:\n", "failure_criteria: []\n");
    let r = w.run(&["design", "--parse"], &invalid);
    assert_eq!(r.code, 1);
    let rules: Vec<String> = r.json()["violations"]
        .as_array()
        .expect("list")
        .iter()
        .map(|v| v["rule"].as_str().unwrap_or("").to_string())
        .collect();
    assert_eq!(rules, vec!["failure_criteria"]);
    for (from, to, rule) in [
        ("id: exp_20240115_github_stars", "id: ../etc/passwd", "id"),
        ("size: 500", "size: -3", "target.size"),
        (
            "Hi {{first_name}}",
            "Hi {{FIRST_NAME}} [INSERT HERE]",
            "placeholders",
        ),
        ("- name: emails_sent", "- name: emails_out", "metrics"),
        (
            "\"0 9 * * MON  # Every Monday 9am\"",
            "\"61 9 * * MON\"",
            "schedule",
        ),
        ("America/Los_Angeles", "Mars/Olympus", "schedule"),
    ] {
        let text = spec_yaml("exp_20240115_github_stars").replace(from, to);
        let r = w.run(&["design", "--parse"], &text);
        assert_eq!(r.code, 1, "{rule}: {}", r.stdout);
        let rules: Vec<String> = r.json()["violations"]
            .as_array()
            .expect("list")
            .iter()
            .map(|v| v["rule"].as_str().unwrap_or("").to_string())
            .collect();
        assert!(rules.contains(&rule.to_string()), "{rule}: {rules:?}");
    }
}

#[test]
fn dry_run_designs_with_claude_and_writes_nothing() {
    let w = fake(
        World::with_redis(),
        Behavior::Reply(spec_reply("exp_20261121_hn_cto")),
    );
    std::fs::write(w.context().join("product_context.md"), "We sell dev tools.").expect("write");
    let mut c = w.conn();
    let _: () = redis::cmd("HSET")
        .arg("tools:github_stargazer_scraper")
        .arg("description")
        .arg("stars")
        .query(&mut c)
        .expect("hset");
    let r = w.run(
        &[
            "design",
            "--idea",
            "Scrape HN Who is Hiring posts and email CTOs",
            "--dry-run",
        ],
        "",
    );
    assert_eq!(r.code, 0, "{}", r.stderr);
    let out = r.json();
    assert_eq!(out["status"], "ready");
    assert_eq!(out["spec"]["id"], "exp_20261121_hn_cto");
    let keys: Vec<String> = redis::cmd("KEYS").arg("*").query(&mut c).expect("keys");
    let written: Vec<&String> = keys
        .iter()
        .filter(|k| !k.starts_with("fullsend:spend:"))
        .collect();
    assert_eq!(
        written,
        vec!["tools:github_stargazer_scraper"],
        "a dry run writes nothing but the money it spent"
    );
    // The spawner's contract with the CLI.
    let argv = fake_claude::argv_log(&w.path("fake"));
    let call = &argv[0];
    let tools = call
        .iter()
        .find(|a| a.starts_with("--tools="))
        .cloned()
        .unwrap_or_default();
    assert_eq!(tools, "--tools=Read,Write,Edit,Glob,Grep", "{call:?}");
    let allowed: Vec<&String> = call
        .iter()
        .filter(|a| a.starts_with("--allowedTools"))
        .collect();
    assert_eq!(
        allowed,
        ["--allowedTools=mcp__fullsend__*"],
        "file permissions come from the generated settings; only the skills are allowed by flag: {call:?}"
    );
    assert!(
        call.iter().any(|a| a.starts_with("--mcp-config=")),
        "every design hands the agent its skills: {call:?}"
    );
    let config = call
        .iter()
        .find_map(|a| a.strip_prefix("--mcp-config="))
        .expect("config");
    assert!(
        !std::path::Path::new(config).exists(),
        "the secret config is gone after the call"
    );
    assert!(
        call.iter().any(|a| a == "--setting-sources=user"),
        "{call:?}"
    );
    assert!(call.iter().any(|a| a == "--strict-mcp-config"), "{call:?}");
    assert!(
        call.windows(2)
            .any(|p| p[0] == "--output-format" && p[1] == "stream-json")
    );
    assert!(call.iter().any(|a| a == "--verbose"), "{call:?}");
    assert!(call.iter().any(|a| a == "--session-id"), "{call:?}");
    assert!(
        call.windows(2)
            .any(|p| p[0] == "--max-budget-usd" && p[1] == "5"),
        "the design's budget caps the call: {call:?}"
    );
    assert!(
        call.windows(2)
            .any(|p| p[0] == "--model" && p[1] == "sonnet")
    );
    let prompt = fake_claude::prompt_log(&w.path("fake"))
        .first()
        .cloned()
        .unwrap_or_default();
    assert!(
        prompt.contains("Scrape HN Who is Hiring posts"),
        "the idea reaches the prompt"
    );
    assert!(
        prompt.contains("github_stargazer_scraper: stars"),
        "available tools reach the prompt"
    );
    assert!(
        prompt.contains("We sell dev tools."),
        "product context reaches the prompt"
    );
    assert!(!call.iter().any(|a| a.contains("dangerously")));
    let env = fake_claude::env_log(&w.path("fake")).join("\n");
    assert!(!env.contains("REDIS_URL"), "the child never sees Redis");
    let work_dir = out["work_dir"].as_str().expect("work dir");
    assert!(
        std::path::Path::new(work_dir).join("request.md").exists(),
        "work dir kept with the request"
    );
}

#[test]
fn saving_writes_every_key_and_message_once() {
    let w = fake(
        World::with_redis(),
        Behavior::Reply(spec_reply("exp_20261121_hn_cto")),
    );
    let r = w.run(&["design"], &json!({"type": "experiment_request", "idea": {"idea": "HN"}, "context": "devs", "priority": "high", "mode": "single", "msg_id": "cause-9"}).to_string());
    assert_eq!(r.code, 0, "{}", r.stderr);
    let mut c = w.conn();
    let h: HashMap<String, String> = redis::cmd("HGETALL")
        .arg("experiments:exp_20261121_hn_cto")
        .query(&mut c)
        .expect("hgetall");
    for field in [
        "id",
        "name",
        "hypothesis",
        "state",
        "spec",
        "spec_json",
        "execution",
        "schedule",
        "timezone",
        "success_criteria",
        "failure_criteria",
        "created_at",
        "updated_at",
    ] {
        assert!(
            h.contains_key(field),
            "experiments hash lacks {field}: {h:?}"
        );
    }
    assert_eq!(h["timezone"], "America/Los_Angeles");
    assert!(
        serde_json::from_str::<Value>(&h["success_criteria"])
            .expect("json")
            .is_array()
    );
    let kind: String = redis::cmd("TYPE")
        .arg("schedules:exp_20261121_hn_cto")
        .query(&mut c)
        .expect("type");
    assert_eq!(kind, "string");
    assert_eq!(
        of_type(&mut c, "fullsend:to_orchestrator", "experiment_ready").len(),
        1
    );
    let ready = &of_type(&mut c, "fullsend:to_orchestrator", "experiment_ready")[0];
    assert_eq!(ready["causation_id"], "cause-9");
    // The PRD's scheduled_for: the next Monday 9:00 in Los Angeles (UTC-8 or UTC-7).
    let next = ready["scheduled_for"].as_str().expect("scheduled_for");
    let at: jiff::Timestamp = next.parse().expect("an RFC 3339 time");
    let local = at.to_zoned(jiff::tz::TimeZone::get("America/Los_Angeles").expect("tz"));
    assert_eq!(local.weekday(), jiff::civil::Weekday::Monday, "{next}");
    assert_eq!((local.hour(), local.minute()), (9, 0), "{next}");
    assert!(
        next.ends_with("-08:00") || next.ends_with("-07:00"),
        "{next}"
    );
    assert!(
        at > jiff::Timestamp::now()
            && at < jiff::Timestamp::now() + jiff::SignedDuration::from_hours(24 * 8)
    );
    // The same id again gets a new, unique id; nothing is overwritten.
    let r = w.run(&["design", "--idea", "again"], "");
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert_eq!(r.json()["spec"]["id"], "exp_20261121_hn_cto_2");
}

#[test]
fn a_needed_tool_is_requested_where_the_builder_listens() {
    let w = fake(
        World::with_redis(),
        Behavior::Reply(format!(
            "{}\n\n{TOOL_REQUEST}",
            spec_reply("exp_20261121_stars")
        )),
    );
    let r = w.run(&["design", "--idea", "GitHub stargazers"], "");
    assert_eq!(r.code, 0, "{}", r.stderr);
    let mut c = w.conn();
    let prd = of_type(&mut c, "fullsend:builder_tasks", "tool_prd");
    assert_eq!(prd.len(), 1);
    assert_eq!(prd[0]["prd"]["name"], "github_stargazer_scraper");
    assert_eq!(
        of_type(&mut c, "fullsend:builder_requests", "tool_requested").len(),
        1
    );
    let waiting: Vec<String> = redis::cmd("SMEMBERS")
        .arg("pending_experiments:github_stargazer_scraper")
        .query(&mut c)
        .expect("smembers");
    assert_eq!(waiting, vec!["exp_20261121_stars".to_string()]);
    let state: String = redis::cmd("HGET")
        .arg("experiments:exp_20261121_stars")
        .arg("state")
        .query(&mut c)
        .expect("hget");
    assert_eq!(state, "draft", "blocked on its tool");
    let reqs: Vec<String> = redis::cmd("KEYS")
        .arg("tool_requests:*")
        .query(&mut c)
        .expect("keys");
    assert_eq!(reqs.len(), 1);
    assert_eq!(
        of_type(&mut c, "fullsend:to_orchestrator", "experiment_ready")[0]["needs_tool"],
        true
    );
}

#[test]
fn an_invalid_spec_gets_one_repair_round() {
    let bad = spec_reply("exp_20261121_fix").replace("size: 500", "size: many");
    let script = format!(
        "n=$(cat \"$FAKE_DIR/count\" 2>/dev/null || echo 0); n=$((n+1)); echo $n > \"$FAKE_DIR/count\"\nif [ $n -eq 1 ]; then emit_result {}; else emit_result {}; fi",
        fake_claude::sh_quote(&bad),
        fake_claude::sh_quote(&spec_reply("exp_20261121_fix"))
    );
    let w = fake(World::with_redis(), Behavior::Script(script));
    let r = w.run(&["design", "--idea", "x", "--dry-run"], "");
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert_eq!(r.json()["repaired"], true);
    let argv = fake_claude::argv_log(&w.path("fake"));
    assert_eq!(argv.len(), 2);
    let prompt = fake_claude::prompt_log(&w.path("fake"))
        .get(1)
        .cloned()
        .unwrap_or_default();
    assert!(
        prompt.contains("target.size"),
        "the errors are fed back: {prompt}"
    );
}

#[test]
fn a_spec_invalid_twice_is_design_failed_and_nothing_is_saved() {
    let w = fake(
        World::with_redis(),
        Behavior::Reply("I think we should do something great, but I won't write YAML.".into()),
    );
    let r = w.run(&["design", "--idea", "x"], "");
    assert_eq!(r.code, 1);
    assert_eq!(r.json()["status"], "failed");
    let mut c = w.conn();
    let failed = of_type(&mut c, "fullsend:to_orchestrator", "design_failed");
    assert_eq!(failed.len(), 1);
    assert!(
        failed[0]["reason"]
            .as_str()
            .unwrap_or("")
            .contains("repair"),
        "{failed:?}"
    );
    assert_eq!(failed[0]["original_request"]["idea"], "x");
    let keys: Vec<String> = redis::cmd("KEYS")
        .arg("experiments:*")
        .query(&mut c)
        .expect("keys");
    assert!(keys.is_empty());
}

#[test]
fn bad_requests_fail_clearly_and_write_nothing_half() {
    let w = fake(
        World::with_redis(),
        Behavior::Reply(spec_reply("exp_20261121_x")),
    );
    assert_eq!(w.run(&["design"], "not json").code, 2);
    assert_eq!(w.run(&["design", "--idea", "  "], "").code, 2);
    for request in [
        json!({"type": "experiment_request"}),
        json!({"type": "experiment_request", "idea": "x", "request_id": "exp_1\r\nFLUSHALL"}),
        json!({"type": "experiment_request", "idea": 42}),
    ] {
        let r = w.run(&["design"], &request.to_string());
        assert_eq!(r.code, 2, "{request}: {}", r.stderr);
    }
    let mut c = w.conn();
    assert_eq!(
        of_type(&mut c, "fullsend:to_orchestrator", "design_failed").len(),
        3
    );
    let keys: Vec<String> = redis::cmd("KEYS")
        .arg("experiments:*")
        .query(&mut c)
        .expect("keys");
    assert!(keys.is_empty());
    assert!(
        fake_claude::argv_log(&w.path("fake")).is_empty(),
        "the agent never ran"
    );
    // A hostile id from the model never becomes a key.
    let w = fake(
        World::with_redis(),
        Behavior::Reply(spec_reply("../../etc/passwd")),
    );
    let r = w.run(&["design", "--idea", "x"], "");
    assert_eq!(r.code, 1);
    let mut c = w.conn();
    let keys: Vec<String> = redis::cmd("KEYS")
        .arg("experiments:*")
        .query(&mut c)
        .expect("keys");
    assert!(keys.is_empty());
}

#[test]
fn a_hung_agent_times_out_with_its_whole_process_group_killed() {
    let w = fake(World::with_redis(), Behavior::ForkGrandchildAndHang).set("FULLSEND_TIMEOUT", "1");
    let started = std::time::Instant::now();
    let r = w.run(&["design", "--idea", "x"], "");
    assert!(started.elapsed() < Duration::from_secs(20));
    assert_eq!(r.code, 3, "{}", r.stderr);
    assert!(
        r.json()["reason"]
            .as_str()
            .unwrap_or("")
            .starts_with("Timeout")
    );
    let work_dir = r.json()["work_dir"].as_str().expect("work dir").to_string();
    let pid: i32 = std::fs::read_to_string(std::path::Path::new(&work_dir).join("grandchild.pid"))
        .expect("pid")
        .trim()
        .parse()
        .expect("number");
    std::thread::sleep(Duration::from_millis(300));
    let alive = unsafe { libc::kill(pid, 0) } == 0 && !is_zombie(pid);
    assert!(!alive, "grandchild {pid} survived");
    let mut c = w.conn();
    assert_eq!(
        of_type(&mut c, "fullsend:to_orchestrator", "design_failed").len(),
        1
    );
}

fn is_zombie(pid: i32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .map(|s| s.contains(") Z "))
        .unwrap_or(true)
}

#[test]
fn a_spec_file_that_is_a_symlink_is_not_read() {
    // The agent plants a symlink to a file outside its work dir that holds a valid spec: fullsend
    // must not read through it, so the design has no spec.
    let w = World::with_redis();
    let outside = w.path("outside_spec.yaml");
    std::fs::write(&outside, spec_yaml("exp_20261121_planted")).expect("write");
    let script = format!(
        "ln -s {} experiment_spec.yaml\nemit_result 'I wrote the spec to a file.'",
        fake_claude::sh_quote(outside.to_str().expect("utf8"))
    );
    let w = fake(w, Behavior::Script(script));
    let r = w.run(&["design", "--idea", "x", "--dry-run"], "");
    assert_ne!(r.json()["status"], "ready", "{}", r.stdout);
    assert!(!r.stdout.contains("exp_20261121_planted"), "{}", r.stdout);
}

#[test]
fn a_work_root_that_is_not_private_is_refused() {
    use std::os::unix::fs::PermissionsExt as _;
    let base = World::with_redis();
    let open = base.path("open-root");
    std::fs::create_dir(&open).expect("dir");
    std::fs::set_permissions(&open, std::fs::Permissions::from_mode(0o777)).expect("chmod");
    let link = base.path("link-root");
    std::os::unix::fs::symlink(base.path("open-root"), &link).expect("symlink");
    let w = fake(base, Behavior::Reply(spec_reply("exp_20261121_root")));
    for root in [&open, &link] {
        let w = World::with_redis();
        let w = fake(w, Behavior::Reply(spec_reply("exp_20261121_root")))
            .set("FULLSEND_WORK_DIR", root.to_str().expect("utf8"));
        let r = w.run(&["design", "--idea", "x", "--dry-run"], "");
        assert_ne!(r.code, 0, "{}: {}", root.display(), r.stdout);
        assert!(
            r.stdout.contains("work root") || r.stderr.contains("work root"),
            "{}\n{}",
            r.stdout,
            r.stderr
        );
    }
    // The default root is made private, and each design's dir in it too.
    let r = w.run(&["design", "--idea", "x", "--dry-run"], "");
    assert_eq!(r.code, 0, "{}", r.stderr);
    let root = w.path("work");
    let mode =
        |p: &std::path::Path| std::fs::metadata(p).expect("meta").permissions().mode() & 0o777;
    assert_eq!(mode(&root), 0o700);
    for entry in std::fs::read_dir(&root).expect("root") {
        assert_eq!(mode(&entry.expect("entry").path()), 0o700);
    }
}

#[test]
fn ralph_mode_runs_the_six_task_design() {
    let script = format!(
        "python3 - <<'PY'\nimport re\nt=open('TASKS.md').read()\nm=re.search(r'^- \\[ \\] (TASK-\\d+)', t, re.M)\nif m:\n    t=t.replace('- [ ] '+m.group(1), '- [x] '+m.group(1), 1)\n    open('TASKS.md','w').write(t)\n    if m.group(1)=='TASK-006':\n        open('experiment_spec.yaml','w').write({})\nPY\nFAKE_TASK_DONE=true\nemit_result '**TASK_DONE**'",
        py_string(&spec_yaml("exp_20261121_ralph"))
    );
    let w = fake(World::with_redis(), Behavior::Script(script));
    let r = w.run(
        &["design", "--idea", "x", "--mode", "ralph", "--dry-run"],
        "",
    );
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert_eq!(r.json()["spec"]["id"], "exp_20261121_ralph");
    assert_eq!(
        fake_claude::argv_log(&w.path("fake")).len(),
        6,
        "one fresh agent per task"
    );
}

fn py_string(s: &str) -> String {
    format!("{:?}", s)
}

#[test]
fn the_api_engine_needs_no_claude() {
    let mock = MockApi::sequence(vec![Reply::text(spec_reply("exp_20261121_api"))]);
    let w = World::with_redis().mock(mock);
    let r = w.run(
        &["design", "--engine", "api", "--idea", "x", "--dry-run"],
        "",
    );
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert_eq!(r.json()["spec"]["id"], "exp_20261121_api");
}

#[test]
fn tactical_learnings_in_the_design_are_recorded_for_the_experiment() {
    let reply = format!(
        "{}\n\n```yaml\ntactical_learnings:\n  - \"Company names in subjects lift opens\"\n  - text: \"Tuesday sends beat Friday\"\n```\n",
        spec_reply("exp_20261121_learn")
    );
    let w = fake(World::with_redis(), Behavior::Reply(reply));
    let r = w.run(&["design", "--idea", "x"], "");
    assert_eq!(r.code, 0, "{}", r.stderr);
    let mut c = w.conn();
    let keys: Vec<String> = redis::cmd("ZRANGE")
        .arg("learnings:tactical:index")
        .arg(0)
        .arg(-1)
        .query(&mut c)
        .expect("zrange");
    assert_eq!(keys.len(), 2);
    let mut texts = Vec::new();
    for k in &keys {
        let h: HashMap<String, String> =
            redis::cmd("HGETALL").arg(k).query(&mut c).expect("hgetall");
        assert_eq!(h["experiment_id"], "exp_20261121_learn");
        texts.push(h["text"].clone());
    }
    texts.sort();
    assert_eq!(
        texts,
        vec![
            "Company names in subjects lift opens",
            "Tuesday sends beat Friday"
        ]
    );
}

#[test]
fn the_orchestrators_brief_and_memory_reach_the_designers_prompt() {
    let mock = MockApi::sequence(vec![Reply::text(spec_reply("exp_20261202_brief"))]);
    let w = World::with_redis().mock(mock);
    let request = serde_json::json!({
        "type": "experiment_request",
        "request_id": "req_brief",
        "idea": {"idea": "Email HN Who is Hiring founders"},
        "context": "the raw context, replaced by the brief",
        "brief": "The Orchestrator is sending you an idea. Founders who are hiring have budget.",
        "similar_experiments": [{"experiment_id": "exp_20261101_hn_v1", "state": "archived", "hypothesis": "HN founders reply to generic email", "results": {"response_rate": "0.01"}, "archived_reason": "too generic"}],
        "relevant_learnings": [{"source": "strategic", "text": "Specific beats generic for HN founders"}, "a bare string learning"],
    });
    let r = w.run(
        &["design", "--engine", "api", "--dry-run"],
        &request.to_string(),
    );
    assert_eq!(r.code, 0, "{}", r.stderr);
    let prompt = crate::common::mock_api::user_text(&w.mock_api().requests()[0]);
    for part in [
        "Founders who are hiring have budget.",
        "- exp_20261101_hn_v1 (archived): HN founders reply to generic email. Results: response_rate=0.01. Archived because: too generic",
        "- (strategic) Specific beats generic for HN founders",
        "- a bare string learning",
    ] {
        assert!(
            prompt.contains(part),
            "{part:?} not in the prompt:\n{prompt}"
        );
    }
    assert!(
        !prompt.contains("replaced by the brief"),
        "the brief stands in for the context"
    );
}
