//! Unit tests of the parent module.

use std::ffi::OsString;
use std::os::unix::fs::PermissionsExt as _;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use tokio::sync::watch;

use super::argv::{check_options, find_claude};
use super::env::child_env;
use super::result::parse_result_object;
use super::*;
use crate::support::process::parse_agent_command;

const RESULT_JSON: &str = r#"{"type":"result","subtype":"success","is_error":false,"result":"done","total_cost_usd":0.01,"session_id":"s","num_turns":1}"#;

fn script(dir: &Path, name: &str, body: &str) -> PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, format!("#!/usr/bin/env bash\n{body}\n")).unwrap();
    std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o755)).unwrap();
    p
}

fn no_cancel() -> watch::Receiver<bool> {
    // The sender is dropped: the flag stays false forever.
    watch::channel(false).1
}

/// True while `pid` exists and is not a zombie waiting for a (possibly lazy) init to reap it.
fn alive(pid: i32) -> bool {
    // SAFETY: signal 0 only checks for existence.
    if unsafe { libc::kill(pid, 0) } != 0 {
        return false;
    }
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(s) => s
            .rsplit_once(')')
            .is_none_or(|(_, rest)| !rest.trim_start().starts_with('Z')),
        Err(_) => false,
    }
}

async fn gone_within(pid: i32, d: Duration) -> bool {
    let end = Instant::now() + d;
    while Instant::now() < end {
        if !alive(pid) {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    !alive(pid)
}

#[test]
fn result_object_shapes() {
    let obj = parse_result_object(RESULT_JSON).unwrap();
    assert_eq!(obj["result"], "done");
    let arr =
        format!(r#"[{{"type":"system","subtype":"init"}},{{"type":"assistant"}},{RESULT_JSON}]"#);
    assert_eq!(parse_result_object(&arr).unwrap()["session_id"], "s");
    let nd = format!(
        "{{\"type\":\"system\"}}\nnoise\n{}\n{}\n",
        r#"{"type":"result","result":"first"}"#, r#"{"type":"result","result":"last"}"#
    );
    assert_eq!(parse_result_object(&nd).unwrap()["result"], "last");
    assert!(parse_result_object("").is_none());
    assert!(parse_result_object("API Error: 500").is_none());
    assert!(parse_result_object(r#"{"type":"assistant"}"#).is_none());
    assert!(parse_result_object(r#"[{"type":"assistant"}]"#).is_none());
}

#[test]
fn the_agent_exports_its_spans_only_where_fullsend_does() {
    let dir = tempfile::tempdir().unwrap();
    let opts = SpawnOptions::new(Agent::Claude("/bin/true".into()), dir.path());
    let confinement = super::confine::prepare(&opts).unwrap();
    let env_with = |off: bool| {
        let parent = move |n: &str| match n {
            "OTEL_EXPORTER_OTLP_ENDPOINT" => Some(OsString::from("http://collector:4318")),
            "OTEL_EXPORTER_OTLP_HEADERS" => Some(OsString::from("authorization=Bearer t")),
            "OTEL_RESOURCE_ATTRIBUTES" => Some(OsString::from("team=ops")),
            "FULLSEND_AGENT_TELEMETRY" if off => Some(OsString::from("false")),
            _ => None,
        };
        child_env(&opts, &confinement, parent)
    };
    let env = env_with(false);
    let get = |k: &str| env.iter().find(|(n, _)| n == k).map(|(_, v)| v.clone());
    assert_eq!(
        get("OTEL_EXPORTER_OTLP_ENDPOINT"),
        Some("http://collector:4318".into())
    );
    assert_eq!(
        get("OTEL_EXPORTER_OTLP_HEADERS"),
        Some("authorization=Bearer t".into())
    );
    assert_eq!(get("CLAUDE_CODE_ENABLE_TELEMETRY"), Some("1".into()));
    assert_eq!(get("OTEL_TRACES_EXPORTER"), Some("otlp".into()));
    assert_eq!(get("OTEL_SERVICE_NAME"), Some("claude-code".into()));
    assert_eq!(
        get("OTEL_RESOURCE_ATTRIBUTES"),
        None,
        "only the exporter's settings pass"
    );
    let off = env_with(true);
    assert!(
        !off.iter()
            .any(|(n, _)| n.starts_with("OTEL_") || n == "CLAUDE_CODE_ENABLE_TELEMETRY"),
        "{off:?}"
    );
    let none = child_env(&opts, &confinement, |_: &str| None);
    assert!(!none.iter().any(|(n, _)| n.starts_with("OTEL_")));
}

#[test]
fn env_is_an_allow_list() {
    let dir = tempfile::tempdir().unwrap();
    let mut opts = SpawnOptions::new(Agent::Claude("/bin/true".into()), dir.path());
    opts.env_allow = vec!["MY_EXTRA".into()];
    let parent = |n: &str| match n {
        "PATH" => Some(OsString::from("/usr/bin")),
        "REDIS_URL" => Some(OsString::from("redis://secret")),
        "MY_EXTRA" => Some(OsString::from("x")),
        "IS_SANDBOX" | "DISABLE_TELEMETRY" => Some(OsString::from("0")),
        "ANTHROPIC_API_KEY" => Some(OsString::from("k")),
        "TRACEPARENT" => Some(OsString::from(
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
        )),
        _ => None,
    };
    let confinement = super::confine::prepare(&opts).unwrap();
    let parent = |n: &str| match n {
        "HOME" => Some(OsString::from("/root")),
        "CLAUDE_CONFIG_DIR" => Some(OsString::from("/root/.claude")),
        other => parent(other),
    };
    opts.env_allow.push("HOME".into());
    let env = child_env(&opts, &confinement, parent);
    let get = |k: &str| env.iter().find(|(n, _)| n == k).map(|(_, v)| v.clone());
    // The operator's home and Claude config never reach the agent, even when asked for.
    assert_eq!(get("HOME"), Some(confinement.home.clone().into_os_string()));
    assert_eq!(
        get("CLAUDE_CONFIG_DIR"),
        Some(confinement.config_dir.clone().into_os_string())
    );
    assert_eq!(env.iter().filter(|(n, _)| n == "HOME").count(), 1);
    assert_eq!(get("PATH"), Some("/usr/bin".into()));
    assert_eq!(get("MY_EXTRA"), Some("x".into()));
    assert_eq!(get("ANTHROPIC_API_KEY"), Some("k".into()));
    // The caller's trace context, so Claude Code's own spans nest under it.
    assert!(get("TRACEPARENT").is_some());
    assert_eq!(get("DISABLE_TELEMETRY"), Some("1".into()));
    assert_eq!(
        get("CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC"),
        Some("1".into())
    );
    assert_eq!(get("REDIS_URL"), None);
    assert_eq!(get("IS_SANDBOX"), None);
    opts.sandbox = true;
    let env = child_env(&opts, &confinement, parent);
    assert!(env.iter().any(|(n, v)| n == "IS_SANDBOX" && v == "1"));
    opts.env_allow = vec!["REDIS_URL".into()];
    assert!(check_options(&opts).is_err());
}

#[test]
fn labels_are_sanitised() {
    assert_eq!(
        sanitize_label("task-TASK-003-attempt-1"),
        "task-TASK-003-attempt-1"
    );
    assert_eq!(sanitize_label("../../etc/passwd"), "______etc_passwd");
    assert_eq!(sanitize_label(""), "call");
}

#[test]
fn find_claude_explicit() {
    let dir = tempfile::tempdir().unwrap();
    let fake = script(dir.path(), "claude", "exit 0");
    assert_eq!(find_claude(Some(&fake)).unwrap(), fake);
    let err = find_claude(Some(&dir.path().join("missing")))
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("npm install -g @anthropic-ai/claude-code"),
        "{err}"
    );
    let err = find_claude(Some(Path::new("definitely-not-a-claude-binary")))
        .unwrap_err()
        .to_string();
    assert!(err.contains("FULLSEND_CLAUDE_BIN"), "{err}");
}

#[tokio::test]
async fn claude_argv_env_and_logs() {
    let dir = tempfile::tempdir().unwrap();
    let fake = script(
        dir.path(),
        "fake-claude",
        &format!(
            "printf '%s\\0' \"$@\" > argv.bin\ncat > stdin.txt\nenv -0 > env.bin\necho 'some stderr' >&2\necho '{RESULT_JSON}'"
        ),
    );
    let mut opts = SpawnOptions::new(Agent::Claude(fake), dir.path());
    opts.model = Some("sonnet".into());
    opts.max_turns = Some(7);
    opts.label = "task TASK-001/attempt 1".into();
    let prompt = "Do it.\nLine two with 'quotes' and \"double\" and $HOME and `ticks`; rm -rf /";
    let r = spawn(&opts, prompt, no_cancel()).await.unwrap();
    assert!(r.ok, "{r:?}");
    assert_eq!(r.result, "done");
    assert_eq!(r.session_id.as_deref(), Some("s"));
    assert_eq!(r.num_turns, Some(1));
    assert!((r.total_cost_usd - 0.01).abs() < 1e-9);
    let argv = logged_argv(dir.path());
    assert_eq!(argv[0], "-p");
    // The prompt travels on stdin, whole, and is in no argv element.
    assert_eq!(
        std::fs::read_to_string(dir.path().join("stdin.txt")).unwrap(),
        prompt
    );
    assert!(!argv.iter().any(|a| a.contains("Do it.")), "{argv:?}");
    for expected in [
        "--tools=Read,Write,Edit,Glob,Grep",
        "--setting-sources=user",
        "--strict-mcp-config",
    ] {
        assert!(argv.contains(&expected.to_owned()), "{expected}: {argv:?}");
    }
    let settings = argv
        .iter()
        .find_map(|a| a.strip_prefix("--settings="))
        .expect("a settings file");
    assert!(
        settings.ends_with(".fullsend/agent/settings.json"),
        "{settings}"
    );
    assert!(!argv.iter().any(|a| a.starts_with("--allowedTools")));
    assert!(
        argv.windows(2)
            .any(|w| w == ["--output-format", "stream-json"])
    );
    assert!(
        argv.contains(&"--verbose".to_owned()),
        "stream-json needs --verbose"
    );
    // The session is named before the run and reported (the result's own id wins).
    let named = argv
        .windows(2)
        .find(|w| w[0] == "--session-id")
        .map(|w| w[1].clone())
        .expect("--session-id");
    assert_eq!(named.len(), 36, "{named}");
    assert!(!argv.iter().any(|a| a.starts_with("--mcp-config")));
    assert!(argv.windows(2).any(|w| w == ["--model", "sonnet"]));
    assert!(argv.windows(2).any(|w| w == ["--max-turns", "7"]));
    assert!(!argv.contains(&"--dangerously-skip-permissions".to_owned()));
    let env = String::from_utf8(std::fs::read(dir.path().join("env.bin")).unwrap()).unwrap();
    let env: Vec<&str> = env.split('\0').collect();
    assert!(env.contains(&"DISABLE_TELEMETRY=1"));
    assert!(!env.iter().any(|e| e.starts_with("REDIS_URL=")));
    assert!(!env.iter().any(|e| e.starts_with("IS_SANDBOX=")));
    assert!(
        env.iter()
            .any(|e| e.starts_with("HOME=") && e.ends_with(".fullsend/agent/home")),
        "{env:?}"
    );
    // Log files: prompt written verbatim, output captured, numbered and sanitised names.
    assert!(
        r.prompt_path
            .ends_with(".fullsend/calls/001-task_TASK-001_attempt_1.prompt.txt"),
        "{:?}",
        r.prompt_path
    );
    assert_eq!(std::fs::read_to_string(&r.prompt_path).unwrap(), prompt);
    assert!(
        std::fs::read_to_string(&r.stdout_path)
            .unwrap()
            .contains("\"result\":\"done\"")
    );
    assert_eq!(
        std::fs::read_to_string(&r.stderr_path).unwrap(),
        "some stderr\n"
    );
    let r2 = spawn(&opts, "again", no_cancel()).await.unwrap();
    assert!(
        r2.prompt_path
            .file_name()
            .unwrap()
            .to_string_lossy()
            .starts_with("002-")
    );
}

#[tokio::test]
async fn claude_failures_are_classified() {
    let dir = tempfile::tempdir().unwrap();
    let api = script(
        dir.path(),
        "api-error",
        r#"echo '{"type":"result","subtype":"success","is_error":true,"api_error_status":429,"result":"API Error: Request rejected (429)","total_cost_usd":0}'; exit 1"#,
    );
    let r = spawn(
        &SpawnOptions::new(Agent::Claude(api), dir.path()),
        "x",
        no_cancel(),
    )
    .await
    .unwrap();
    assert!(!r.ok);
    assert!(r.is_error);
    assert_eq!(r.api_error_status, Some(429));
    assert_eq!(r.exit_code, Some(1));
    assert!(
        r.error.as_deref().unwrap().starts_with("exit 1: API Error"),
        "{r:?}"
    );

    // SIGINT case: exit 0 with empty stdout is a failure.
    let empty = script(dir.path(), "empty", "exit 0");
    let r = spawn(
        &SpawnOptions::new(Agent::Claude(empty), dir.path()),
        "x",
        no_cancel(),
    )
    .await
    .unwrap();
    assert!(!r.ok);
    assert_eq!(r.error.as_deref(), Some("no result object in output"));

    let crash = script(dir.path(), "crash", "echo 'boom happened' >&2; exit 3");
    let r = spawn(
        &SpawnOptions::new(Agent::Claude(crash), dir.path()),
        "x",
        no_cancel(),
    )
    .await
    .unwrap();
    assert_eq!(r.error.as_deref(), Some("exit 3: boom happened"));

    // is_error with exit 0 and no result text (max turns shape).
    let turns = script(
        dir.path(),
        "turns",
        r#"echo '{"type":"result","subtype":"error_max_turns","is_error":true,"errors":["Reached maximum number of turns (1)"],"total_cost_usd":0.2}'"#,
    );
    let r = spawn(
        &SpawnOptions::new(Agent::Claude(turns), dir.path()),
        "x",
        no_cancel(),
    )
    .await
    .unwrap();
    assert!(!r.ok);
    assert_eq!(r.result, "");
    assert!((r.total_cost_usd - 0.2).abs() < 1e-9);
    assert!(
        r.error
            .as_deref()
            .unwrap()
            .contains("Reached maximum number of turns"),
        "{r:?}"
    );
}

#[tokio::test]
async fn raw_agent_echo() {
    let dir = tempfile::tempdir().unwrap();
    let agent = Agent::Raw(parse_agent_command("echo hello").unwrap());
    let r = spawn(&SpawnOptions::new(agent, dir.path()), "", no_cancel())
        .await
        .unwrap();
    assert!(r.ok, "{r:?}");
    assert_eq!(r.result, "hello");
    // The prompt is on stdin, never an argument: `-rf` is not an option here.
    let agent = Agent::Raw(vec!["cat".into()]);
    let r = spawn(
        &SpawnOptions::new(agent, dir.path()),
        "-rf one  arg; $X",
        no_cancel(),
    )
    .await
    .unwrap();
    assert_eq!(r.result, "-rf one  arg; $X");
    // Past the 128 KiB a single argv element may hold.
    let agent = Agent::Raw(vec!["wc".into(), "-c".into()]);
    let big = "x".repeat(200 * 1024);
    let r = spawn(&SpawnOptions::new(agent, dir.path()), &big, no_cancel())
        .await
        .unwrap();
    assert_eq!(r.result.trim(), (200 * 1024).to_string());
    let agent = Agent::Raw(vec!["false".into()]);
    let r = spawn(&SpawnOptions::new(agent, dir.path()), "p", no_cancel())
        .await
        .unwrap();
    assert!(!r.ok);
    assert_eq!(r.exit_code, Some(1));
    let agent = Agent::Raw(vec!["no-such-agent-program-xyz".into()]);
    assert!(
        spawn(&SpawnOptions::new(agent, dir.path()), "p", no_cancel())
            .await
            .is_err()
    );
}

#[tokio::test]
async fn a_child_that_never_reads_its_stdin_cannot_outlive_the_timeout() {
    let dir = tempfile::tempdir().unwrap();
    let mut opts = SpawnOptions::new(Agent::Raw(vec!["sleep".into(), "30".into()]), dir.path());
    opts.timeout = Duration::from_millis(500);
    opts.kill_grace = Duration::from_millis(200);
    // Far more than a pipe holds: a writer outside the timeout would block forever.
    let prompt = "y".repeat(4 * 1024 * 1024);
    let r = tokio::time::timeout(Duration::from_secs(20), spawn(&opts, &prompt, no_cancel()))
        .await
        .expect("the call ends")
        .unwrap();
    assert!(r.timed_out, "{r:?}");
}

#[tokio::test]
async fn an_agent_that_prints_without_end_is_stopped() {
    let dir = tempfile::tempdir().unwrap();
    // About 6 MB/s, so that the bound is seen long before the disk fills.
    let body = "cat > /dev/null; while true; do head -c 65536 /dev/zero; sleep 0.01; done";
    let agent = Agent::Raw(vec!["sh".into(), "-c".into(), body.into()]);
    let mut opts = SpawnOptions::new(agent, dir.path());
    opts.max_output = 1024 * 1024;
    let r = tokio::time::timeout(Duration::from_secs(120), spawn(&opts, "go", no_cancel()))
        .await
        .expect("the call ends")
        .unwrap();
    assert!(!r.ok);
    assert!(
        r.error
            .as_deref()
            .unwrap_or_default()
            .contains("printed more than"),
        "{r:?}"
    );
    // Stopped near the bound, not left to fill the disk.
    let size = std::fs::metadata(&r.stdout_path).unwrap().len();
    assert!(size < 16 * 1024 * 1024, "{size}");
}

#[test]
fn bash_rules_must_be_narrow_and_not_combined_with_skip_permissions() {
    let dir = tempfile::tempdir().unwrap();
    let mut opts = SpawnOptions::new(Agent::Claude("/bin/true".into()), dir.path());
    for bad in ["Bash", "Bash()", "Read"] {
        opts.bash_allow = vec![bad.into()];
        assert!(check_options(&opts).is_err(), "{bad}");
    }
    opts.bash_allow = vec!["Bash(python3 tools/run.py:*)".into()];
    assert!(check_options(&opts).is_ok());
    opts.skip_permissions = true;
    opts.sandbox = true;
    assert!(check_options(&opts).is_err());
}

#[tokio::test]
async fn skip_permissions_as_root_fails_before_spawn() {
    // SAFETY: no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let fake = script(dir.path(), "fake", "touch ran; echo '{}'");
    let mut opts = SpawnOptions::new(Agent::Claude(fake), dir.path());
    opts.skip_permissions = true;
    let err = spawn(&opts, "x", no_cancel())
        .await
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("IS_SANDBOX=1") && err.contains("root") && err.contains("FULLSEND_IS_SANDBOX"),
        "{err}"
    );
    assert!(!dir.path().join("ran").exists());
    assert!(!dir.path().join(".fullsend").exists());
    // Confirmed sandbox: allowed, and the child gets IS_SANDBOX=1 plus the flag.
    opts.sandbox = true;
    let fake = script(
        dir.path(),
        "fake2",
        &format!("env > env.txt; echo \"$@\" > args.txt; echo '{RESULT_JSON}'"),
    );
    opts.agent = Agent::Claude(fake);
    let r = spawn(&opts, "x", no_cancel()).await.unwrap();
    assert!(r.ok, "{r:?}");
    assert!(
        std::fs::read_to_string(dir.path().join("env.txt"))
            .unwrap()
            .contains("IS_SANDBOX=1")
    );
    assert!(
        std::fs::read_to_string(dir.path().join("args.txt"))
            .unwrap()
            .contains("--dangerously-skip-permissions")
    );
}

/// A fake that forks a TERM-ignoring grandchild, records both pids and hangs.
fn hanging_fake(dir: &Path) -> PathBuf {
    script(
        dir,
        "hang",
        "echo $$ > child.pid\n(trap '' TERM; exec sleep 1000) &\necho $! > grandchild.pid\nsleep 1000 & wait",
    )
}

async fn read_pid(path: &Path) -> i32 {
    for _ in 0..200 {
        if let Ok(s) = std::fs::read_to_string(path)
            && let Ok(p) = s.trim().parse()
        {
            return p;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("no pid in {}", path.display());
}

#[tokio::test]
async fn timeout_kills_the_whole_group() {
    let dir = tempfile::tempdir().unwrap();
    let mut opts = SpawnOptions::new(Agent::Claude(hanging_fake(dir.path())), dir.path());
    opts.timeout = Duration::from_millis(800);
    opts.kill_grace = Duration::from_millis(300);
    let t0 = Instant::now();
    let r = spawn(&opts, "x", no_cancel()).await.unwrap();
    assert!(t0.elapsed() < Duration::from_secs(5));
    assert!(r.timed_out && !r.ok && !r.cancelled, "{r:?}");
    assert_eq!(r.error.as_deref(), Some("timed out after 800ms"));
    let child = read_pid(&dir.path().join("child.pid")).await;
    let grandchild = read_pid(&dir.path().join("grandchild.pid")).await;
    assert!(
        gone_within(child, Duration::from_secs(2)).await,
        "child {child} still alive"
    );
    assert!(
        gone_within(grandchild, Duration::from_secs(2)).await,
        "grandchild {grandchild} still alive"
    );
}

#[tokio::test]
async fn cancel_kills_the_whole_group() {
    let dir = tempfile::tempdir().unwrap();
    let mut opts = SpawnOptions::new(Agent::Claude(hanging_fake(dir.path())), dir.path());
    opts.kill_grace = Duration::from_millis(300);
    let (tx, rx) = watch::channel(false);
    let flip = tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(500)).await;
        tx.send(true).ok();
        tx
    });
    let r = spawn(&opts, "x", rx).await.unwrap();
    drop(flip.await);
    assert!(r.cancelled && !r.ok && !r.timed_out, "{r:?}");
    let grandchild = read_pid(&dir.path().join("grandchild.pid")).await;
    assert!(gone_within(grandchild, Duration::from_secs(2)).await);
}

#[tokio::test]
async fn normal_exit_reaps_stray_grandchildren() {
    let dir = tempfile::tempdir().unwrap();
    let fake = script(
        dir.path(),
        "leaky",
        &format!(
            "(trap '' TERM; exec sleep 1000) &\necho $! > grandchild.pid\necho '{RESULT_JSON}'"
        ),
    );
    let r = spawn(
        &SpawnOptions::new(Agent::Claude(fake), dir.path()),
        "x",
        no_cancel(),
    )
    .await
    .unwrap();
    assert!(r.ok, "{r:?}");
    let grandchild = read_pid(&dir.path().join("grandchild.pid")).await;
    assert!(gone_within(grandchild, Duration::from_secs(2)).await);
}

#[tokio::test]
async fn the_skills_server_tools_dir_and_verdict_schema_reach_the_cli_and_secrets_stay_in_its_config()
 {
    let dir = tempfile::tempdir().unwrap();
    let tools = tempfile::tempdir().unwrap();
    let fake = script(
        dir.path(),
        "fake-claude",
        &format!(
            "printf '%s\\0' \"$@\" > argv.bin\nenv -0 > env.bin\nfor a in \"$@\"; do case $a in --mcp-config=*) cp -p \"${{a#--mcp-config=}}\" mcp.copy;; esac; done\necho '{RESULT_JSON}'"
        ),
    );
    let mut opts = SpawnOptions::new(Agent::Claude(fake), dir.path());
    opts.mcp = Some(McpServer {
        name: "fullsend".into(),
        command: "/usr/bin/fullsend".into(),
        args: vec!["mcp".into(), "--run".into(), "r1".into()],
        env: vec![(
            "REDIS_URL".into(),
            "redis://:hunter2@10.0.0.1:6379/0".into(),
        )],
    });
    opts.read_dirs = vec![tools.path().to_path_buf()];
    opts.json_schema = Some(serde_json::json!({"type": "object"}));
    opts.session_id = Some("0190a0a0-0000-7000-8000-000000000001".into());
    let r = spawn(&opts, "go", no_cancel()).await.unwrap();
    assert!(r.ok, "{r:?}");
    let argv = logged_argv(dir.path());
    let config = argv
        .iter()
        .find_map(|a| a.strip_prefix("--mcp-config="))
        .expect("--mcp-config");
    assert!(config.ends_with(".fullsend/agent/mcp.json"), "{config}");
    assert!(
        argv.contains(&"--allowedTools=mcp__fullsend__*".to_owned()),
        "{argv:?}"
    );
    assert!(argv.contains(&"--strict-mcp-config".to_owned()));
    let tools_dir = std::fs::canonicalize(tools.path()).unwrap();
    assert!(
        argv.contains(&format!("--add-dir={}", tools_dir.display())),
        "{argv:?}"
    );
    assert!(
        argv.windows(2)
            .any(|w| w == ["--json-schema", "{\"type\":\"object\"}"])
    );
    assert!(
        argv.windows(2)
            .any(|w| w == ["--session-id", "0190a0a0-0000-7000-8000-000000000001"])
    );
    assert!(
        !argv.iter().any(|a| a.contains("hunter2")),
        "the secret is in argv"
    );
    assert!(
        !std::path::Path::new(config).exists(),
        "the secret config outlives the call"
    );
    let copy = dir.path().join("mcp.copy");
    let doc: serde_json::Value = serde_json::from_slice(&std::fs::read(&copy).unwrap()).unwrap();
    let server = &doc["mcpServers"]["fullsend"];
    assert_eq!(server["type"], "stdio");
    assert_eq!(server["command"], "/usr/bin/fullsend");
    assert_eq!(
        server["env"]["REDIS_URL"],
        "redis://:hunter2@10.0.0.1:6379/0"
    );
    assert_eq!(
        std::fs::metadata(&copy).unwrap().permissions().mode() & 0o777,
        0o600
    );
    let env = String::from_utf8(std::fs::read(dir.path().join("env.bin")).unwrap()).unwrap();
    assert!(
        !env.contains("hunter2"),
        "the agent's own environment holds the secret"
    );
    let settings: serde_json::Value = serde_json::from_slice(
        &std::fs::read(dir.path().join(".fullsend/agent/settings.json")).unwrap(),
    )
    .unwrap();
    let allow = settings["permissions"]["allow"].to_string();
    assert!(allow.contains("mcp__fullsend"), "{allow}");
    assert!(
        format!("{:?}", opts.mcp).contains("REDIS_URL")
            && !format!("{:?}", opts.mcp).contains("hunter2")
    );
}

/// The argv a fake logged as NUL-separated `argv.bin` in `dir`.
fn logged_argv(dir: &Path) -> Vec<String> {
    std::fs::read(dir.join("argv.bin"))
        .unwrap()
        .split(|b| *b == 0)
        .filter(|s| !s.is_empty())
        .map(|s| String::from_utf8(s.to_vec()).unwrap())
        .collect()
}

#[tokio::test]
async fn a_silent_stream_is_a_hung_call_and_a_busy_one_is_not() {
    let dir = tempfile::tempdir().unwrap();
    // One line, then silence: stopped by the stall timer long before the call's timeout.
    let mut opts = SpawnOptions::new(
        Agent::Raw(vec![
            "sh".into(),
            "-c".into(),
            "echo started; sleep 30".into(),
        ]),
        dir.path(),
    );
    opts.stall_timeout = Duration::from_millis(800);
    opts.timeout = Duration::from_secs(20);
    opts.kill_grace = Duration::from_millis(200);
    let started = Instant::now();
    let r = spawn(&opts, "go", no_cancel()).await.unwrap();
    assert!(r.stalled && !r.ok && !r.timed_out, "{r:?}");
    assert!(started.elapsed() < Duration::from_secs(10));
    assert!(
        r.error.as_deref().unwrap_or("").contains("hung"),
        "{:?}",
        r.error
    );
    // A line every 300 ms keeps the same timer from firing for 2 s.
    opts.agent = Agent::Raw(vec![
        "sh".into(),
        "-c".into(),
        "for i in 1 2 3 4 5 6 7; do echo $i; sleep 0.3; done".into(),
    ]);
    let r = spawn(&opts, "go", no_cancel()).await.unwrap();
    assert!(r.ok && !r.stalled, "{r:?}");
}

#[tokio::test]
async fn a_call_killed_before_its_result_is_charged_for_what_it_used() {
    let dir = tempfile::tempdir().unwrap();
    // Two assistant messages (the first printed twice, as the CLI repeats a message's usage on
    // each of its content blocks), then silence until the timeout.
    let event = |id: &str, input: u64, output: u64| {
        serde_json::json!({"type": "assistant", "message": {"id": id, "model": "claude-sonnet-4-5",
            "content": [{"type": "text", "text": "working"}],
            "usage": {"input_tokens": input, "output_tokens": output,
                      "cache_creation_input_tokens": 0, "cache_read_input_tokens": 0}}})
        .to_string()
    };
    let body = format!(
        "cat > /dev/null\necho '{}'\necho '{}'\necho '{}'\nexec sleep 30",
        event("msg_1", 100_000, 1_000),
        event("msg_1", 100_000, 1_000),
        event("msg_2", 200_000, 2_000)
    );
    let fake = script(dir.path(), "claude", &body);
    let mut opts = SpawnOptions::new(Agent::Claude(fake), dir.path());
    opts.timeout = Duration::from_millis(1500);
    opts.kill_grace = Duration::from_millis(200);
    let r = spawn(&opts, "x", no_cancel()).await.unwrap();
    assert!(r.timed_out && !r.result_found, "{r:?}");
    assert!(r.cost_estimated);
    let usage = crate::llm::Usage {
        input_tokens: 300_000,
        output_tokens: 3_000,
        cache_creation_input_tokens: 0,
        cache_read_input_tokens: 0,
    };
    let expected = crate::llm::price::cost("claude-sonnet-4-5", &usage).expect("priced");
    assert!(expected > 0.0);
    assert!(
        (r.total_cost_usd - expected).abs() < 1e-9,
        "{} vs {expected}",
        r.total_cost_usd
    );
    assert_eq!(
        r.usage.as_ref().and_then(|u| u["input_tokens"].as_u64()),
        Some(300_000)
    );
}
