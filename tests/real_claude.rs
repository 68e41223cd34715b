//! The spawner against the real Claude Code CLI (installed from npm by
//! scripts/test into target/claude-code; never vendored), pointed at the
//! strict Messages-API mock. Skipped, with a note, where the CLI is absent.

use std::sync::{Arc, Mutex};

use serde_json::json;

use crate::common::mock_api::{self, MockApi, Reply};
use crate::support::World;

pub(crate) fn real_claude() -> Option<String> {
    let path = std::env::var("FULLSEND_REAL_CLAUDE")
        .ok()
        .filter(|p| std::path::Path::new(p).exists());
    if path.is_none() {
        eprintln!(
            "note: the real Claude Code CLI is not installed (scripts/test installs it); skipping"
        );
    }
    path
}

pub(crate) fn world(claude: &str, reply: String) -> World {
    let mock = MockApi::start(move |_, _| Reply::text(reply.clone()));
    let w = World::bare().mock(mock);
    let config = w.path("claude-config");
    std::fs::create_dir_all(&config).expect("dir");
    w.set("FULLSEND_CLAUDE_BIN", claude)
        .set("CLAUDE_CONFIG_DIR", config.to_str().expect("utf8"))
        .set("CLAUDE_CODE_MAX_RETRIES", "0")
}

#[test]
fn design_dry_run_with_the_real_cli_prints_a_valid_spec() {
    let Some(claude) = real_claude() else { return };
    let w = world(&claude, crate::design::spec_reply("exp_20261121_hn_ctos"));
    let r = w.run(
        &[
            "design",
            "--idea",
            "Scrape HN Who is Hiring posts and email CTOs",
            "--dry-run",
        ],
        "",
    );
    assert_eq!(r.code, 0, "{}\n{}", r.stdout, r.stderr);
    let out = r.json();
    assert_eq!(out["status"], "ready");
    assert_eq!(out["spec"]["id"], "exp_20261121_hn_ctos");
    assert!(
        out["cost_usd"].as_f64().unwrap_or(0.0) > 0.0,
        "cost read from the CLI's JSON result"
    );
    let requests = w.mock_api().requests();
    assert!(!requests.is_empty());
    let prompt = mock_api::user_text(&requests[0]);
    assert!(
        prompt.contains("Scrape HN Who is Hiring posts"),
        "the prompt reached the model as one argv element"
    );
}

#[test]
fn spawn_reports_the_real_cli_result_object() {
    let Some(claude) = real_claude() else { return };
    let w = world(&claude, "hello from the mock".into());
    let r = w.run(&["ralph", "spawn", "--", "say hello"], "");
    assert_eq!(r.code, 0, "{}\n{}", r.stdout, r.stderr);
    let out = r.json();
    assert_eq!(out["result"], "hello from the mock");
    assert_eq!(out["is_error"], false);
    assert!(out["session_id"].is_string());
    assert!(out["num_turns"].as_u64().unwrap_or(0) >= 1);
}

#[test]
fn an_api_error_inside_the_real_cli_is_a_failed_call() {
    let Some(claude) = real_claude() else { return };
    let mock =
        MockApi::start(|_, _| Reply::error(401, "authentication_error", "invalid x-api-key"));
    let w = World::bare().mock(mock);
    let config = w.path("claude-config");
    std::fs::create_dir_all(&config).expect("dir");
    let w = w
        .set("FULLSEND_CLAUDE_BIN", &claude)
        .set("CLAUDE_CONFIG_DIR", config.to_str().expect("utf8"))
        .set("CLAUDE_CODE_MAX_RETRIES", "0");
    let r = w.run(
        &["ralph", "spawn", "--timeout", "120", "--", "say hello"],
        "",
    );
    assert_eq!(r.code, 1, "{}\n{}", r.stdout, r.stderr);
    let out = r.json();
    assert_eq!(out["ok"], false);
    assert_eq!(out["is_error"], true);
}

/// The key the CLI is given in these runs; it must never come back.
const SECRET_KEY: &str = "sk-ant-test-SECRET-9f3c1e";

/// One injected tool call: the tool's name and its input.
type Call = (&'static str, serde_json::Value);

/// A world whose scripted model makes `calls` (built from the world's own paths), one per turn,
/// as a prompt injection would, then answers "done". The operator's own `~/.claude` allows
/// everything, Bash included, in bypass mode, with a hook: none of it may apply.
fn injected(claude: &str, skip: bool, calls: impl FnOnce(&World) -> Vec<Call>) -> World {
    let script: Arc<Mutex<Vec<Call>>> = Arc::default();
    let shared = Arc::clone(&script);
    let mock = MockApi::start(move |_, index| {
        let script = shared.lock().unwrap_or_else(|p| p.into_inner());
        match script.get(index) {
            Some((name, input)) => Reply::ToolUse {
                name: (*name).to_string(),
                input: input.clone(),
            },
            None => Reply::text("done"),
        }
    });
    let w = World::bare().mock(mock);
    let operator = w.path("home/.claude");
    std::fs::create_dir_all(&operator).expect("dir");
    std::fs::write(
        operator.join("settings.json"),
        r#"{"permissions":{"allow":["Bash","Read","Edit","Write"],"defaultMode":"bypassPermissions"},
            "hooks":{"SessionStart":[{"hooks":[{"type":"command","command":"touch hook-ran"}]}]}}"#,
    )
    .expect("operator settings");
    std::fs::create_dir_all(w.path("outside")).expect("dir");
    std::fs::write(w.path("outside/secret.txt"), "OUTSIDE-SECRET-41").expect("secret");
    std::fs::create_dir_all(w.path("wd")).expect("dir");
    *script.lock().unwrap_or_else(|p| p.into_inner()) = calls(&w);
    let w = w
        .set("FULLSEND_CLAUDE_BIN", claude)
        .set("ANTHROPIC_API_KEY", SECRET_KEY)
        .set("CLAUDE_CONFIG_DIR", operator.to_str().expect("utf8"))
        .set("CLAUDE_CODE_MAX_RETRIES", "0");
    if skip {
        w.set("FULLSEND_SKIP_PERMISSIONS", "true")
            .set("FULLSEND_IS_SANDBOX", "true")
    } else {
        w
    }
}

/// `ralph spawn` in `wd/`, the way a design run calls the agent.
fn spawn_in_work_dir(w: &World) -> serde_json::Value {
    let wd = w.path("wd");
    let r = w.run(
        &[
            "ralph",
            "spawn",
            "--work-dir",
            wd.to_str().expect("utf8"),
            "--timeout",
            "120",
            "--",
            "Summarise the product context.",
        ],
        "",
    );
    assert!(
        !r.stdout.contains(SECRET_KEY) && !r.stderr.contains(SECRET_KEY),
        "the key is in fullsend's output"
    );
    assert_eq!(r.code, 0, "{}\n{}", r.stdout, r.stderr);
    assert!(!w.path("wd/hook-ran").exists(), "the operator's hook ran");
    r.json()
}

/// Every tool result the CLI sent back is an error, and nothing secret is in any request the
/// model received.
fn assert_all_denied(w: &World, expected: usize) {
    let requests = w.mock_api().requests();
    let results: Vec<serde_json::Value> =
        requests.iter().flat_map(mock_api::tool_results).collect();
    assert_eq!(
        results.len(),
        expected,
        "one result per injected call: {results:#?}"
    );
    for result in &results {
        assert_eq!(
            result["is_error"], true,
            "a tool call got through: {result}"
        );
    }
    for request in &requests {
        let body = request.body.to_string();
        assert!(!body.contains(SECRET_KEY), "the key reached the model");
        assert!(
            !body.contains("OUTSIDE-SECRET-41"),
            "a file outside the work dir was read"
        );
    }
}

fn reads_outside(w: &World) -> Vec<Call> {
    let outside = w.path("outside");
    vec![
        ("Read", json!({"file_path": "/proc/self/environ"})),
        (
            "Read",
            json!({"file_path": "/proc/self/cwd/../outside/secret.txt"}),
        ),
        ("Read", json!({"file_path": outside.join("secret.txt")})),
        ("Read", json!({"file_path": "../outside/secret.txt"})),
        (
            "Grep",
            json!({"pattern": "OUTSIDE-SECRET", "path": outside}),
        ),
        (
            "Grep",
            json!({"pattern": "sk-ant", "path": "/proc/self/environ"}),
        ),
        (
            "Read",
            json!({"file_path": "../home/.claude/settings.json"}),
        ),
        (
            "Read",
            json!({"file_path": ".fullsend/agent/settings.json"}),
        ),
    ]
}

fn writes_outside(w: &World) -> Vec<Call> {
    vec![
        (
            "Write",
            json!({"file_path": "../fullsend.toml", "content": "claude_bin = \"/tmp/evil\"\n"}),
        ),
        (
            "Write",
            json!({"file_path": w.path("outside/planted.txt"), "content": "x"}),
        ),
        (
            "Edit",
            json!({"file_path": w.path("outside/secret.txt"), "old_string": "OUTSIDE", "new_string": "CHANGED"}),
        ),
        (
            "Write",
            json!({"file_path": ".claude/settings.json", "content": "{\"permissions\":{\"allow\":[\"Bash\"]}}"}),
        ),
    ]
}

fn shell(w: &World) -> Vec<Call> {
    vec![
        (
            "Bash",
            json!({"command": format!("touch {}", w.path("marker").display())}),
        ),
        ("Bash", json!({"command": "env > leaked-env.txt"})),
    ]
}

fn confined_reads(skip: bool) {
    let Some(claude) = real_claude() else { return };
    let w = injected(&claude, skip, reads_outside);
    let out = spawn_in_work_dir(&w);
    assert!(!out.to_string().contains(SECRET_KEY));
    assert_all_denied(&w, reads_outside(&w).len());
}

fn confined_writes(skip: bool) {
    let Some(claude) = real_claude() else { return };
    let w = injected(&claude, skip, writes_outside);
    spawn_in_work_dir(&w);
    assert_all_denied(&w, writes_outside(&w).len());
    assert!(
        !w.path("fullsend.toml").exists(),
        "../fullsend.toml was written"
    );
    assert!(!w.path("outside/planted.txt").exists());
    assert!(!w.path("wd/.claude/settings.json").exists());
    assert_eq!(
        std::fs::read_to_string(w.path("outside/secret.txt")).expect("read"),
        "OUTSIDE-SECRET-41"
    );
}

fn no_shell(skip: bool) {
    let Some(claude) = real_claude() else { return };
    let w = injected(&claude, skip, shell);
    spawn_in_work_dir(&w);
    assert_all_denied(&w, 2);
    assert!(
        !w.path("marker").exists(),
        "Bash ran despite fullsend's settings"
    );
    assert!(!w.path("wd/leaked-env.txt").exists());
}

#[test]
fn the_real_cli_cannot_read_outside_its_work_dir_nor_the_key() {
    confined_reads(false);
}

#[test]
fn the_real_cli_cannot_write_outside_its_work_dir() {
    confined_writes(false);
}

#[test]
fn the_real_cli_has_no_shell_even_when_the_operator_allows_bash() {
    no_shell(false);
}

#[test]
fn skip_permissions_still_cannot_read_outside_nor_the_key() {
    confined_reads(true);
}

#[test]
fn skip_permissions_still_cannot_write_outside() {
    confined_writes(true);
}

#[test]
fn skip_permissions_still_has_no_shell() {
    no_shell(true);
}

#[test]
fn the_real_cli_writes_inside_its_work_dir() {
    let Some(claude) = real_claude() else { return };
    let w = injected(&claude, false, |w| {
        vec![(
            "Write",
            json!({"file_path": w.path("wd/notes.md"), "content": "inside"}),
        )]
    });
    spawn_in_work_dir(&w);
    let results: Vec<_> = w
        .mock_api()
        .requests()
        .iter()
        .flat_map(mock_api::tool_results)
        .collect();
    assert_eq!(results.len(), 1);
    assert_ne!(results[0]["is_error"], true, "{}", results[0]);
    assert_eq!(
        std::fs::read_to_string(w.path("wd/notes.md")).expect("written"),
        "inside"
    );
}

#[test]
fn a_200_kb_product_context_still_designs() {
    let Some(claude) = real_claude() else { return };
    let w = world(&claude, crate::design::spec_reply("exp_20261121_big_ctx"));
    let mut context = String::from("# Product\n\n");
    while context.len() < 200 * 1024 {
        context.push_str(
            "Fullsend sends outreach for B2B developer tools; every line is real context. ",
        );
    }
    std::fs::write(w.context().join("product_context.md"), &context).expect("context");
    let r = w.run(
        &["design", "--idea", "Email CTOs of YC startups", "--dry-run"],
        "",
    );
    assert_eq!(r.code, 0, "{}\n{}", r.stdout, r.stderr);
    assert_eq!(r.json()["status"], "ready");
}

/// The real CLI, its model scripted to use the skills: it reads the registry and the learnings
/// through `fullsend mcp`, submits a spec with a mistake, reads the violations, submits it
/// fixed, and answers "done". The tool results it got hold the seeded registry and learning;
/// the spec it submitted is the one saved, once.
#[test]
fn the_real_cli_uses_its_skills_and_a_spec_submitted_through_them_is_saved() {
    let Some(claude) = real_claude() else { return };
    let good = crate::common::specs::spec_yaml("exp_20261202_skills");
    let bad = good.replace(
        "  hypothesis: \"CTOs who starred competitor repos are high-intent prospects\"\n",
        "",
    );
    let script: Vec<(&str, serde_json::Value)> = vec![
        ("mcp__fullsend__tool_registry", json!({})),
        (
            "mcp__fullsend__search_learnings",
            json!({"query": "Tuesday replies"}),
        ),
        (
            "mcp__fullsend__submit_spec",
            json!({"spec_yaml": bad, "idempotency_key": "spec-1"}),
        ),
        (
            "mcp__fullsend__submit_spec",
            json!({"spec_yaml": good, "idempotency_key": "spec-2"}),
        ),
        (
            "mcp__fullsend__append_learning",
            json!({"text": "Stargazer lists are public and fresh", "idempotency_key": "l1"}),
        ),
    ];
    let mock = MockApi::start(move |_, index| match script.get(index) {
        Some((name, input)) => Reply::ToolUse {
            name: (*name).to_string(),
            input: input.clone(),
        },
        None => Reply::text("done: the spec is submitted"),
    });
    let w = World::with_redis().mock(mock);
    let config = w.path("claude-config");
    std::fs::create_dir_all(&config).expect("dir");
    w.redis().cli(&[
        "HSET",
        "tools:github_stargazer_scraper",
        "name",
        "github_stargazer_scraper",
        "status",
        "active",
        "description",
        "Lists the stargazers of a GitHub repo",
    ]);
    w.redis().cli(&[
        "HSET",
        "learnings:tactical:20261101_100000_000000_aaaa",
        "text",
        "Tuesday 9am sends got twice the replies",
    ]);
    let w = w
        .set("FULLSEND_CLAUDE_BIN", &claude)
        .set("CLAUDE_CONFIG_DIR", config.to_str().expect("utf8"))
        .set("CLAUDE_CODE_MAX_RETRIES", "0");
    let r = w.run(
        &[
            "design",
            "--idea",
            "Email CTOs who starred a competitor's repo",
            "--mode",
            "single",
        ],
        "",
    );
    assert_eq!(r.code, 0, "{}\n{}", r.stdout, r.stderr);
    let out = r.json();
    assert_eq!(out["status"], "ready", "{out}");
    assert_eq!(out["spec"]["id"], "exp_20261202_skills");
    // Progress on stderr as it happens, and the session named before the run.
    assert!(
        r.stderr.contains("tool call mcp__fullsend__tool_registry"),
        "{}",
        r.stderr
    );
    assert!(
        r.stderr.contains("tool call mcp__fullsend__submit_spec"),
        "{}",
        r.stderr
    );
    assert_eq!(
        out["session_ids"].as_array().map(Vec::len),
        Some(1),
        "{out}"
    );

    // The last request carries the whole conversation: every tool result the model was given.
    let requests = w.mock_api().requests();
    let results: Vec<serde_json::Value> = requests
        .last()
        .and_then(|r| r.body["messages"].as_array().cloned())
        .unwrap_or_default()
        .iter()
        .filter_map(|m| m["content"].as_array().cloned())
        .flatten()
        .filter(|b| b["type"] == "tool_result")
        .collect();
    assert_eq!(results.len(), 5, "one result per skill call: {results:#?}");
    let text = |i: usize| results[i].to_string();
    assert!(
        text(0).contains("github_stargazer_scraper"),
        "the registry: {}",
        text(0)
    );
    assert!(
        text(1).contains("Tuesday 9am"),
        "the learnings: {}",
        text(1)
    );
    assert_eq!(
        results[2]["is_error"],
        true,
        "the bad spec is refused: {}",
        text(2)
    );
    assert!(
        text(2).contains("hypothesis"),
        "with its violation: {}",
        text(2)
    );
    assert_ne!(
        results[3]["is_error"],
        true,
        "the fixed spec is accepted: {}",
        text(3)
    );
    assert_ne!(results[4]["is_error"], true, "{}", text(4));

    let mut c = w.conn();
    let state: Option<String> = redis::cmd("HGET")
        .arg("experiments:exp_20261202_skills")
        .arg("state")
        .query(&mut c)
        .expect("hget");
    assert_eq!(
        state.as_deref(),
        Some("ready"),
        "the submitted spec is saved"
    );
    let learnings: Vec<String> = redis::cmd("KEYS")
        .arg("learnings:tactical:2*")
        .query(&mut c)
        .expect("keys");
    assert_eq!(
        learnings.len(),
        2,
        "the seeded one and the agent's: {learnings:?}"
    );
    // The agent's environment never held the Redis URL: only the server's config did.
    for request in w.mock_api().requests() {
        assert!(
            !request.body.to_string().contains(&w.redis_url()),
            "the Redis URL reached the model"
        );
    }
}
