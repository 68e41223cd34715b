//! The ecosystem around the commands: man pages (generated, committed, up to
//! date), completions, help with examples, `doctor`, and configuration
//! precedence.

use std::collections::BTreeMap;

use crate::common::mock_api::{MockApi, Reply};
use crate::support::World;

#[test]
fn man_pages_are_up_to_date() {
    let w = World::bare();
    let out = w.path("man");
    let r = w.run(&["generate", "man", out.to_str().expect("utf8")], "");
    assert_eq!(r.code, 0, "{}", r.stderr);
    let read_dir = |dir: &std::path::Path| -> BTreeMap<String, String> {
        std::fs::read_dir(dir)
            .expect("dir")
            .filter_map(Result::ok)
            .map(|e| {
                (
                    e.file_name().to_string_lossy().into_owned(),
                    std::fs::read_to_string(e.path()).unwrap_or_default(),
                )
            })
            .collect()
    };
    let committed = read_dir(&std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("man"));
    let fresh = read_dir(&out);
    assert_eq!(
        committed.keys().collect::<Vec<_>>(),
        fresh.keys().collect::<Vec<_>>(),
        "run scripts/gen-docs"
    );
    for (name, text) in &fresh {
        assert_eq!(
            committed.get(name),
            Some(text),
            "man/{name} is stale: run scripts/gen-docs"
        );
    }
    for page in [
        "fullsend-think.1",
        "fullsend-dispatch.1",
        "fullsend-learn-append.1",
        "fullsend-worklist-set.1",
        "fullsend-listen.1",
        "fullsend-design.1",
        "fullsend-ralph-run.1",
    ] {
        let text = &fresh[page];
        assert!(
            text.contains(".SH EXAMPLES") && text.contains("Output"),
            "{page} has examples with JSON out"
        );
    }
    assert!(fresh["fullsend.1"].contains(".SH EXIT STATUS"));
}

#[test]
fn completions_for_three_shells() {
    let w = World::bare();
    for shell in ["bash", "zsh", "fish"] {
        let r = w.run(&["completions", shell], "");
        assert_eq!(r.code, 0);
        assert!(
            r.stdout.contains("fullsend") && r.stdout.contains("dispatch"),
            "{shell}"
        );
    }
    assert_eq!(w.run(&["completions", "powershell"], "").code, 2);
}

#[test]
fn every_subcommand_documents_examples_and_exit_codes_are_in_help() {
    let w = World::bare();
    for cmd in [
        vec!["think"],
        vec!["dispatch"],
        vec!["learn", "append"],
        vec!["worklist", "set"],
        vec!["listen"],
        vec!["publish"],
        vec!["design"],
        vec!["ralph", "run"],
        vec!["ralph", "spawn"],
        vec!["status"],
        vec!["doctor"],
        vec!["config"],
    ] {
        let mut args = cmd.clone();
        args.push("--help");
        let r = w.run(&args, "");
        assert_eq!(r.code, 0);
        assert!(
            r.stdout.contains("Examples:"),
            "{cmd:?} --help has examples"
        );
    }
    let r = w.run(&["--help"], "");
    assert!(r.stdout.contains("Exit codes:") && r.stdout.contains("143"));
    assert_eq!(w.run(&["no-such-command"], "").code, 2);
    assert_eq!(w.run(&["--version"], "").code, 0);
}

#[test]
fn doctor_names_what_is_missing_with_exit_codes() {
    let w = World::bare().set("PATH", "/usr/bin:/bin");
    let r = w.run(&["doctor"], "");
    assert_eq!(
        r.code, 2,
        "a missing key and claude are configuration problems: {}",
        r.stderr
    );
    let out = r.json();
    assert_eq!(out["ready"], false);
    let check = |name: &str| {
        out["checks"]
            .as_array()
            .expect("checks")
            .iter()
            .find(|c| c["name"] == name)
            .cloned()
            .expect(name)
    };
    assert_eq!(check("redis")["kind"], "unreachable");
    assert_eq!(check("api_key")["kind"], "missing");
    assert!(
        check("api_key")["detail"]
            .as_str()
            .unwrap_or("")
            .contains("ANTHROPIC_API_KEY")
    );
    assert_eq!(check("claude")["kind"], "missing");
    assert!(
        check("claude")["detail"]
            .as_str()
            .unwrap_or("")
            .contains("npm install")
    );
    assert_eq!(check("prompts")["ok"], true);
    assert!(r.stderr.contains("FAIL"), "a human summary on stderr");

    // Everything present: ready, exit 0; the key itself is never printed.
    let fake_dir = w.path("fake");
    std::fs::create_dir_all(&fake_dir).expect("dir");
    let claude = crate::common::fake_claude::write_fake_claude(
        &fake_dir,
        crate::common::fake_claude::Behavior::Reply("x".into()),
    );
    let mock = MockApi::sequence(vec![Reply::text("ok")]);
    let w = World::with_redis()
        .mock(mock)
        .set("FULLSEND_CLAUDE_BIN", claude.to_str().expect("utf8"));
    let r = w.run(&["doctor", "--online"], "");
    assert!(!r.stdout.contains("test-key-not-secret") && !r.stderr.contains("test-key-not-secret"));
    let out = r.json();
    let names: Vec<(String, bool)> = out["checks"]
        .as_array()
        .expect("checks")
        .iter()
        .map(|c| {
            (
                c["name"].as_str().unwrap_or("").to_string(),
                c["ok"].as_bool().unwrap_or(false),
            )
        })
        .collect();
    assert!(names.iter().all(|(_, ok)| *ok), "{names:?}\n{}", r.stderr);
    assert_eq!(r.code, 0);
}

#[test]
fn configuration_precedence_is_flag_env_file_default() {
    let mut w = World::bare();
    w.no_config = false;
    std::fs::write(w.path("fullsend.toml"), "orchestrator_model = \"from-file\"\norchestrator_timeout = 42\ncontext_path = \"ctx-from-file\"\n").expect("write");
    let w = w
        .set("ORCHESTRATOR_TIMEOUT", "7")
        .set("ANTHROPIC_API_KEY", "sk-very-secret");
    let r = w.run(&["config", "--context-path", "/flag/ctx"], "");
    assert_eq!(r.code, 0, "{}", r.stderr);
    let s = &r.json()["settings"];
    assert_eq!(
        s["orchestrator_model"]["source"], "env",
        "the test env sets ORCHESTRATOR_MODEL"
    );
    assert_eq!(s["orchestrator_timeout"]["value"], "7");
    assert_eq!(s["orchestrator_timeout"]["source"], "env");
    assert_eq!(s["context_path"]["value"], "/flag/ctx");
    assert_eq!(s["context_path"]["source"], "flag");
    assert_eq!(s["orchestrator_thinking_budget"]["source"], "default");
    assert_eq!(s["anthropic_api_key"]["value"], "<set>");
    assert!(!r.stdout.contains("sk-very-secret"));
    let w2 = {
        let mut w = World::bare();
        w.no_config = false;
        w
    };
    std::fs::write(w2.path("fullsend.toml"), "orchestrator_effort = \"low\"\n").expect("write");
    let s = w2.run(&["config"], "").json();
    assert_eq!(s["settings"]["orchestrator_effort"]["source"], "file");
    std::fs::write(w2.path("fullsend.toml"), "anthropic_api_key = \"nope\"\n").expect("write");
    assert_eq!(
        w2.run(&["config"], "").code,
        2,
        "secrets are refused in files"
    );
    std::fs::write(w2.path("fullsend.toml"), "no_such_key = 1\n").expect("write");
    assert_eq!(w2.run(&["config"], "").code, 2);
}

#[test]
fn a_config_file_others_can_write_is_refused() {
    use std::os::unix::fs::PermissionsExt as _;
    let mut w = World::bare();
    w.no_config = false;
    let file = w.path("fullsend.toml");
    std::fs::write(&file, "claude_bin = \"/tmp/evil-claude\"\n").expect("write");
    for mode in [0o666, 0o620, 0o602] {
        std::fs::set_permissions(&file, std::fs::Permissions::from_mode(mode)).expect("chmod");
        let r = w.run(&["config"], "");
        assert_eq!(r.code, 2, "mode {mode:o}: {}", r.stdout);
        assert!(
            r.stderr.contains("writable by group or others"),
            "{}",
            r.stderr
        );
    }
    std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o644)).expect("chmod");
    let s = w.run(&["config"], "").json();
    assert_eq!(s["settings"]["claude_bin"]["source"], "file");
}

#[test]
fn redis_urls_keep_password_and_db_and_refuse_insecure_tls() {
    let w = World::bare().set("REDIS_URL", "redis://user:hunter2@127.0.0.1:1/3");
    let r = w.run(&["status"], "");
    assert_eq!(r.code, 3);
    assert!(
        !r.stdout.contains("hunter2") && !r.stderr.contains("hunter2"),
        "never logged"
    );
    assert!(r.stdout.contains("127.0.0.1:1/3"));
    let w = World::bare().set("REDIS_URL", "rediss://127.0.0.1:1/0#insecure");
    let r = w.run(&["publish", "fullsend:x"], "{}");
    assert_eq!(r.code, 2, "{}", r.stderr);
    assert!(r.stderr.contains("insecure"));
}
