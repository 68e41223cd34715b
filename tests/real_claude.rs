//! The spawner against the real Claude Code CLI (installed from npm by
//! scripts/test into target/claude-code; never vendored), pointed at the
//! strict Messages-API mock. Skipped, with a note, where the CLI is absent.

use crate::common::mock_api::{self, MockApi, Reply};
use crate::support::World;

fn real_claude() -> Option<String> {
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

fn world(claude: &str, reply: String) -> World {
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
