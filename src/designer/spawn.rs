//! The one spawner for every coding-agent call: builds a safe argv and environment, runs the agent in its
//! own process group with a wall-clock limit, logs prompt/stdout/stderr to files and parses the result.

use std::ffi::OsString;
use std::io::Write as _;
use std::os::unix::process::ExitStatusExt as _;
use std::path::{Path, PathBuf};
use std::process::{ExitStatus, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use serde_json::Value;
use tokio::sync::watch;

/// Tools allowed by default: enough to read the work dir and write files, no shell.
pub const DEFAULT_ALLOWED_TOOLS: &[&str] = &["Read", "Write", "Edit", "Glob", "Grep"];

/// Default wall-clock limit per call (the PRD's 300 s).
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(300);

/// Default time between SIGTERM and SIGKILL of the child's process group.
pub const DEFAULT_KILL_GRACE: Duration = Duration::from_secs(5);

/// Parent environment variables a child may see. Everything else (REDIS_URL, admin credentials, ...) is
/// dropped because the child runs model-driven tools.
pub const ENV_ALLOW: &[&str] = &[
    "PATH",
    "HOME",
    "USER",
    "LOGNAME",
    "LANG",
    "LC_ALL",
    "LC_CTYPE",
    "TMPDIR",
    "TZ",
    "TERM",
    "ANTHROPIC_API_KEY",
    "ANTHROPIC_AUTH_TOKEN",
    "ANTHROPIC_BASE_URL",
    "ANTHROPIC_MODEL",
    "ANTHROPIC_CUSTOM_HEADERS",
    "ANTHROPIC_DEFAULT_OPUS_MODEL",
    "ANTHROPIC_DEFAULT_SONNET_MODEL",
    "ANTHROPIC_DEFAULT_HAIKU_MODEL",
    "CLAUDE_CONFIG_DIR",
    "API_TIMEOUT_MS",
    "CLAUDE_CODE_MAX_RETRIES",
    "HTTP_PROXY",
    "HTTPS_PROXY",
    "NO_PROXY",
    "NODE_EXTRA_CA_CERTS",
];

/// Variables always set in the child: no telemetry, no auto-update, and no traffic except to the API.
const ENV_FORCED: &[(&str, &str)] = &[
    ("DISABLE_TELEMETRY", "1"),
    ("DISABLE_AUTOUPDATER", "1"),
    ("DISABLE_ERROR_REPORTING", "1"),
    ("CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC", "1"),
];

/// How many characters of stderr (or stdout) end up in `SpawnResult::error`.
const ERROR_TAIL_CHARS: usize = 1000;

/// How the agent is invoked.
#[derive(Debug, Clone)]
pub enum Agent {
    /// The Claude Code CLI (or a compatible fake) at this path; gets the claude flags.
    Claude(PathBuf),
    /// An arbitrary command (program + args, no shell); the prompt is appended as the last argv element;
    /// stdout is taken as the result text.
    Raw(Vec<String>),
}

/// Finds claude: explicit path if given, else env FULLSEND_CLAUDE_BIN, else `which::which("claude")`.
///
/// A value without a `/` is looked up on PATH; a value with one must name an existing file.
pub fn find_claude(explicit: Option<&Path>) -> anyhow::Result<PathBuf> {
    const INSTALL: &str = "install it with `npm install -g @anthropic-ai/claude-code` \
                           (or set FULLSEND_CLAUDE_BIN / --claude-bin to its path)";
    let (candidate, source) = match explicit {
        Some(p) => (Some(p.to_path_buf()), "--claude-bin"),
        None => (
            std::env::var_os("FULLSEND_CLAUDE_BIN")
                .filter(|v| !v.is_empty())
                .map(PathBuf::from),
            "FULLSEND_CLAUDE_BIN",
        ),
    };
    match candidate {
        Some(p) if p.components().count() > 1 || p.is_absolute() => {
            if p.is_file() {
                Ok(p)
            } else {
                bail!(
                    "claude binary {} (from {source}) does not exist; {INSTALL}",
                    p.display()
                )
            }
        }
        Some(p) => which::which(&p).map_err(|e| {
            anyhow::anyhow!(
                "claude binary {:?} (from {source}) not found on PATH ({e}); {INSTALL}",
                p
            )
        }),
        None => which::which("claude").map_err(|e| {
            anyhow::anyhow!("the Claude Code CLI `claude` was not found on PATH ({e}); {INSTALL}")
        }),
    }
}

/// Everything that shapes one agent call.
#[derive(Debug, Clone)]
pub struct SpawnOptions {
    /// Which agent to run.
    pub agent: Agent,
    /// The child's cwd; log files go under `work_dir/.fullsend/calls/`.
    pub work_dir: PathBuf,
    /// `--model`.
    pub model: Option<String>,
    /// Passed as ONE argv element `--allowedTools=Read,Write,...` (the flag is variadic and the space form
    /// would swallow the prompt). Empty: the flag is omitted.
    pub allowed_tools: Vec<String>,
    /// `--max-turns N`.
    pub max_turns: Option<u32>,
    /// `--max-budget-usd X`.
    pub max_budget_usd: Option<f64>,
    /// `--append-system-prompt S`.
    pub append_system_prompt: Option<String>,
    /// Opt-in `--dangerously-skip-permissions`; as root the CLI refuses it unless `sandbox` is set.
    pub skip_permissions: bool,
    /// Pass IS_SANDBOX=1 to the child.
    pub sandbox: bool,
    /// Wall-clock limit per call.
    pub timeout: Duration,
    /// SIGTERM → wait this long → SIGKILL of the child's process group.
    pub kill_grace: Duration,
    /// Extra environment variable names to pass through (Redis variables are refused).
    pub env_allow: Vec<String>,
    /// Names the log files, e.g. "task-TASK-003-attempt-1"; sanitised to `[A-Za-z0-9_-]`.
    pub label: String,
}

impl SpawnOptions {
    /// Options with the defaults: read/write tools, 300 s timeout, 5 s kill grace, no limits, label "call".
    pub fn new(agent: Agent, work_dir: impl Into<PathBuf>) -> Self {
        Self {
            agent,
            work_dir: work_dir.into(),
            model: None,
            allowed_tools: DEFAULT_ALLOWED_TOOLS
                .iter()
                .map(|s| (*s).to_owned())
                .collect(),
            max_turns: None,
            max_budget_usd: None,
            append_system_prompt: None,
            skip_permissions: false,
            sandbox: false,
            timeout: DEFAULT_TIMEOUT,
            kill_grace: DEFAULT_KILL_GRACE,
            env_allow: Vec::new(),
            label: "call".to_owned(),
        }
    }
}

/// The outcome of one agent call.
#[derive(Debug, Clone, serde::Serialize)]
pub struct SpawnResult {
    /// Exit 0 AND not `is_error` AND (for Claude) a result object was found; never true on timeout/cancel.
    pub ok: bool,
    /// The exit code, if the child exited normally.
    pub exit_code: Option<i32>,
    /// The signal that ended the child, if any.
    pub signal: Option<i32>,
    /// The per-call timeout fired and the group was killed.
    pub timed_out: bool,
    /// The cancel signal fired and the group was killed.
    pub cancelled: bool,
    /// The result object's `is_error`.
    pub is_error: bool,
    /// The result text (Claude: `result`, "" when absent; Raw: stdout without trailing whitespace).
    pub result: String,
    /// The result object's `session_id`.
    pub session_id: Option<String>,
    /// The result object's `num_turns`.
    pub num_turns: Option<u64>,
    /// The result object's `total_cost_usd` (0 when absent).
    pub total_cost_usd: f64,
    /// The result object's `api_error_status` (429/529 mean rate limited or overloaded).
    pub api_error_status: Option<u16>,
    /// How many tool uses were denied.
    pub permission_denials: usize,
    /// The result object's `usage`.
    pub usage: Option<Value>,
    /// Wall-clock duration of the call.
    pub duration_ms: u64,
    /// Human reason when `!ok`.
    pub error: Option<String>,
    /// Where the prompt was written.
    pub prompt_path: PathBuf,
    /// Where stdout was captured.
    pub stdout_path: PathBuf,
    /// Where stderr was captured.
    pub stderr_path: PathBuf,
}

/// Checks options that would make the call fail in a known way, before anything is spawned.
///
/// Refuses `skip_permissions` as root without `sandbox` (the CLI exits 1 in that case), and Redis variables
/// in `env_allow` (a child must never get the Redis URL).
pub fn check_options(opts: &SpawnOptions) -> anyhow::Result<()> {
    if let Agent::Claude(_) = opts.agent {
        // SAFETY: geteuid has no preconditions and cannot fail.
        let root = unsafe { libc::geteuid() } == 0;
        if opts.skip_permissions && root && !opts.sandbox {
            bail!(
                "--dangerously-skip-permissions was requested while running as root: the Claude Code CLI \
                 refuses it as root unless IS_SANDBOX=1 is set; set FULLSEND_IS_SANDBOX=1 to confirm this host \
                 is a sandbox, or drop skip-permissions and rely on the allowed-tools list"
            );
        }
    }
    if let Agent::Raw(argv) = &opts.agent
        && argv.first().is_none_or(|p| p.is_empty())
    {
        bail!("the raw agent command is empty");
    }
    if let Some(name) = opts
        .env_allow
        .iter()
        .find(|n| n.to_ascii_uppercase().contains("REDIS"))
    {
        bail!("refusing to pass {name} to an agent: children never get Redis credentials");
    }
    if let Some(name) = opts
        .env_allow
        .iter()
        .find(|n| n.is_empty() || n.contains('='))
    {
        bail!("invalid environment variable name in env_allow: {name:?}");
    }
    Ok(())
}

/// Builds the child's environment from a snapshot of the parent's: the allow-list, forced switches and
/// IS_SANDBOX when asked. Split out so the filtering is testable without touching the process env.
fn child_env<F>(opts: &SpawnOptions, parent: F) -> Vec<(String, OsString)>
where
    F: Fn(&str) -> Option<OsString>,
{
    let mut env: Vec<(String, OsString)> = Vec::new();
    let names = ENV_ALLOW
        .iter()
        .copied()
        .chain(opts.env_allow.iter().map(String::as_str));
    for name in names {
        if env.iter().any(|(n, _)| n == name) {
            continue;
        }
        if let Some(v) = parent(name) {
            env.push((name.to_owned(), v));
        }
    }
    // Forced values win over anything passed through.
    env.retain(|(n, _)| !ENV_FORCED.iter().any(|(f, _)| f == n) && n != "IS_SANDBOX");
    for (n, v) in ENV_FORCED {
        env.push(((*n).to_owned(), OsString::from(v)));
    }
    if opts.sandbox {
        env.push(("IS_SANDBOX".to_owned(), OsString::from("1")));
    }
    env
}

/// The program and its arguments. The prompt is always exactly one argv element.
fn build_argv(opts: &SpawnOptions, prompt: &str) -> anyhow::Result<(PathBuf, Vec<String>)> {
    match &opts.agent {
        Agent::Claude(bin) => {
            if prompt.trim().is_empty() {
                bail!("refusing to call claude with an empty prompt");
            }
            // The prompt is a positional argument: one starting with '-' would be parsed as an option.
            let prompt = if prompt.starts_with('-') {
                format!(" {prompt}")
            } else {
                prompt.to_owned()
            };
            let mut args = vec![
                "-p".to_owned(),
                prompt,
                "--output-format".to_owned(),
                "json".to_owned(),
            ];
            if !opts.allowed_tools.is_empty() {
                args.push(format!("--allowedTools={}", opts.allowed_tools.join(",")));
            }
            if let Some(m) = &opts.model {
                args.extend(["--model".to_owned(), m.clone()]);
            }
            if let Some(n) = opts.max_turns {
                args.extend(["--max-turns".to_owned(), n.to_string()]);
            }
            if let Some(x) = opts.max_budget_usd {
                args.extend(["--max-budget-usd".to_owned(), x.to_string()]);
            }
            if let Some(s) = &opts.append_system_prompt {
                args.extend(["--append-system-prompt".to_owned(), s.clone()]);
            }
            if opts.skip_permissions {
                args.push("--dangerously-skip-permissions".to_owned());
            }
            Ok((bin.clone(), args))
        }
        Agent::Raw(argv) => {
            let Some((prog, rest)) = argv.split_first() else {
                bail!("the raw agent command is empty");
            };
            // Resolve here so the child gets an explicit path and a missing program is a clear error.
            let program = if prog.contains('/') {
                PathBuf::from(prog)
            } else {
                which::which(prog)
                    .with_context(|| format!("agent program {prog:?} not found on PATH"))?
            };
            let mut args = rest.to_vec();
            args.push(prompt.to_owned());
            Ok((program, args))
        }
    }
}

/// Keeps only `[A-Za-z0-9_-]` so a label can never escape the calls directory.
fn sanitize_label(label: &str) -> String {
    let s: String = label
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '_' || c == '-' {
                c
            } else {
                '_'
            }
        })
        .take(100)
        .collect();
    if s.is_empty() { "call".to_owned() } else { s }
}

/// Reserves the next `NNN-<label>` slot in `dir` by creating its prompt file exclusively.
fn reserve_call_files(dir: &Path, label: &str) -> anyhow::Result<(PathBuf, std::fs::File, String)> {
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    // Highest existing number + 1 equals "count + 1" when nothing was deleted, and never reuses a number.
    let mut next = 1u32;
    for entry in std::fs::read_dir(dir).with_context(|| format!("reading {}", dir.display()))? {
        let name = entry?.file_name();
        let name = name.to_string_lossy();
        if let Some((num, _)) = name.split_once('-')
            && let Ok(n) = num.parse::<u32>()
        {
            next = next.max(n.saturating_add(1));
        }
    }
    // create_new makes a concurrent caller that picked the same number move on instead of clobbering.
    for n in next..next.saturating_add(10_000) {
        let stem = format!("{n:03}-{label}");
        let path = dir.join(format!("{stem}.prompt.txt"));
        match std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&path)
        {
            Ok(f) => return Ok((path, f, stem)),
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => continue,
            Err(e) => return Err(e).with_context(|| format!("creating {}", path.display())),
        }
    }
    bail!("could not reserve a call log name in {}", dir.display())
}

/// Sends `sig` to the process group `pgid`. A pgid ≤ 1 would address our own group or init: never.
fn kill_group(pgid: i32, sig: libc::c_int) {
    if pgid > 1 {
        // SAFETY: killpg only sends a signal; an already-empty group yields ESRCH, which is fine.
        unsafe {
            libc::killpg(pgid, sig);
        }
    }
}

/// SIGKILLs the child's group when dropped, so an abandoned `spawn` future leaves no orphans either.
struct GroupGuard(i32);

impl Drop for GroupGuard {
    fn drop(&mut self) {
        kill_group(self.0, libc::SIGKILL);
    }
}

/// Resolves when the cancel flag is (or becomes) true; never if the sender is gone while false.
pub(crate) async fn wait_cancelled(rx: &mut watch::Receiver<bool>) {
    loop {
        if *rx.borrow_and_update() {
            return;
        }
        if rx.changed().await.is_err() {
            if *rx.borrow() {
                return;
            }
            std::future::pending::<()>().await;
        }
    }
}

/// The last `n` characters of `s`, trimmed.
fn tail(s: &str, n: usize) -> String {
    let s = s.trim();
    let count = s.chars().count();
    if count <= n {
        s.to_owned()
    } else {
        s.chars().skip(count - n).collect()
    }
}

/// "300s" for whole seconds, else milliseconds.
fn fmt_duration(d: Duration) -> String {
    if d.subsec_nanos() == 0 {
        format!("{}s", d.as_secs())
    } else {
        format!("{}ms", d.as_millis())
    }
}

/// Finds the Claude result object in stdout: one object; an array (`--verbose`) → its `type=="result"`
/// element; NDJSON → the last `type=="result"` line. Non-JSON noise lines are skipped.
pub fn parse_result_object(stdout: &str) -> Option<Value> {
    let is_result = |v: &Value| v.get("type").and_then(Value::as_str) == Some("result");
    let text = stdout.trim();
    if text.is_empty() {
        return None;
    }
    if let Ok(v) = serde_json::from_str::<Value>(text) {
        match v {
            Value::Array(items) => return items.into_iter().rev().find(is_result),
            // A single object without a type is accepted: compatible fakes and older CLIs omit it.
            Value::Object(ref m) if is_result(&v) || !m.contains_key("type") => return Some(v),
            _ => return None,
        }
    }
    text.lines()
        .rev()
        .filter_map(|l| serde_json::from_str::<Value>(l.trim()).ok())
        .find(is_result)
}

/// Spawns the command, retrying briefly on ETXTBSY: a just-written agent script can be "busy" while another
/// thread's fork still holds its write descriptor.
fn spawn_child(cmd: &mut tokio::process::Command) -> std::io::Result<tokio::process::Child> {
    let mut tries = 0;
    loop {
        match cmd.spawn() {
            Err(e) if e.raw_os_error() == Some(libc::ETXTBSY) && tries < 20 => {
                tries += 1;
                std::thread::sleep(Duration::from_millis(25));
            }
            other => return other,
        }
    }
}

/// How the wait ended.
enum End {
    Exited(ExitStatus),
    TimedOut,
    Cancelled,
}

/// Runs one agent call. `cancel` flips to true on Ctrl-C/SIGTERM: then the group is killed and `cancelled`
/// set. Errors are setup failures (bad options, unwritable log dir, program not startable); everything the
/// agent does wrong comes back as `ok == false` with `error` set.
pub async fn spawn(
    opts: &SpawnOptions,
    prompt: &str,
    mut cancel: watch::Receiver<bool>,
) -> anyhow::Result<SpawnResult> {
    check_options(opts)?;
    let (program, args) = build_argv(opts, prompt)?;

    let calls_dir = opts.work_dir.join(".fullsend").join("calls");
    let (prompt_path, mut prompt_file, stem) =
        reserve_call_files(&calls_dir, &sanitize_label(&opts.label))?;
    prompt_file
        .write_all(prompt.as_bytes())
        .and_then(|()| prompt_file.sync_all())
        .with_context(|| format!("writing {}", prompt_path.display()))?;
    drop(prompt_file);
    let stdout_path = calls_dir.join(format!("{stem}.stdout"));
    let stderr_path = calls_dir.join(format!("{stem}.stderr"));
    let stdout_file = std::fs::File::create(&stdout_path)
        .with_context(|| format!("creating {}", stdout_path.display()))?;
    let stderr_file = std::fs::File::create(&stderr_path)
        .with_context(|| format!("creating {}", stderr_path.display()))?;

    let mut result = SpawnResult {
        ok: false,
        exit_code: None,
        signal: None,
        timed_out: false,
        cancelled: false,
        is_error: false,
        result: String::new(),
        session_id: None,
        num_turns: None,
        total_cost_usd: 0.0,
        api_error_status: None,
        permission_denials: 0,
        usage: None,
        duration_ms: 0,
        error: None,
        prompt_path,
        stdout_path,
        stderr_path,
    };
    if *cancel.borrow_and_update() {
        result.cancelled = true;
        result.error = Some("cancelled before start".to_owned());
        return Ok(result);
    }

    let mut cmd = tokio::process::Command::new(&program);
    cmd.args(&args)
        .current_dir(&opts.work_dir)
        .stdin(Stdio::null())
        .stdout(Stdio::from(stdout_file))
        .stderr(Stdio::from(stderr_file))
        .env_clear()
        .envs(child_env(opts, |n| std::env::var_os(n)))
        // Own process group: timeouts and cancels kill every tool process and subagent, not just the CLI.
        .process_group(0)
        .kill_on_drop(true);

    let started = Instant::now();
    let mut child =
        spawn_child(&mut cmd).with_context(|| format!("starting agent {}", program.display()))?;
    let pgid = child
        .id()
        .and_then(|p| i32::try_from(p).ok())
        .context("the agent process has no pid")?;
    let guard = GroupGuard(pgid);

    let end = tokio::select! {
        biased;
        st = child.wait() => End::Exited(st.context("waiting for the agent")?),
        () = tokio::time::sleep(opts.timeout) => End::TimedOut,
        () = wait_cancelled(&mut cancel) => End::Cancelled,
    };
    let status = match end {
        End::Exited(st) => st,
        End::TimedOut | End::Cancelled => {
            result.timed_out = matches!(end, End::TimedOut);
            result.cancelled = matches!(end, End::Cancelled);
            kill_group(pgid, libc::SIGTERM);
            match tokio::time::timeout(opts.kill_grace, child.wait()).await {
                Ok(st) => st.context("waiting for the agent")?,
                Err(_) => {
                    kill_group(pgid, libc::SIGKILL);
                    child.wait().await.context("waiting for the killed agent")?
                }
            }
        }
    };
    // Always: grandchildren that outlived the CLI (or ignored SIGTERM) must not become orphans.
    kill_group(pgid, libc::SIGKILL);
    // Already killed above; skipping the guard avoids a second signal to a group id that may soon be free.
    std::mem::forget(guard);
    result.duration_ms = u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX);
    result.exit_code = status.code();
    result.signal = status.signal();

    let stdout = String::from_utf8_lossy(
        &tokio::fs::read(&result.stdout_path)
            .await
            .unwrap_or_default(),
    )
    .into_owned();
    let stderr = String::from_utf8_lossy(
        &tokio::fs::read(&result.stderr_path)
            .await
            .unwrap_or_default(),
    )
    .into_owned();
    fill_result(&mut result, opts, &stdout, &stderr);
    Ok(result)
}

/// Fills the parsed fields, `ok` and `error` from the captured output.
fn fill_result(r: &mut SpawnResult, opts: &SpawnOptions, stdout: &str, stderr: &str) {
    let mut found = true;
    let mut agent_errors = String::new();
    match opts.agent {
        Agent::Raw(_) => r.result = stdout.trim_end().to_owned(),
        Agent::Claude(_) => match parse_result_object(stdout) {
            Some(obj) => {
                r.is_error = obj
                    .get("is_error")
                    .and_then(Value::as_bool)
                    .unwrap_or(false);
                r.result = obj
                    .get("result")
                    .and_then(Value::as_str)
                    .unwrap_or_default()
                    .to_owned();
                r.session_id = obj
                    .get("session_id")
                    .and_then(Value::as_str)
                    .map(str::to_owned);
                r.num_turns = obj.get("num_turns").and_then(Value::as_u64);
                r.total_cost_usd = obj
                    .get("total_cost_usd")
                    .and_then(Value::as_f64)
                    .unwrap_or(0.0);
                r.api_error_status = obj
                    .get("api_error_status")
                    .and_then(Value::as_u64)
                    .and_then(|s| u16::try_from(s).ok());
                r.permission_denials = obj
                    .get("permission_denials")
                    .and_then(Value::as_array)
                    .map_or(0, Vec::len);
                r.usage = obj.get("usage").filter(|u| !u.is_null()).cloned();
                if let Some(errs) = obj.get("errors").and_then(Value::as_array) {
                    agent_errors = errs
                        .iter()
                        .filter_map(Value::as_str)
                        .collect::<Vec<_>>()
                        .join("; ");
                }
            }
            None => found = false,
        },
    }
    // Where an error explanation lives: stderr normally, the result text for API errors, else stdout.
    let detail = || {
        if !stderr.trim().is_empty() {
            tail(stderr, ERROR_TAIL_CHARS)
        } else if !r.result.trim().is_empty() {
            tail(&r.result, ERROR_TAIL_CHARS)
        } else if !agent_errors.is_empty() {
            tail(&agent_errors, ERROR_TAIL_CHARS)
        } else {
            tail(stdout, ERROR_TAIL_CHARS)
        }
    };
    let error = if r.cancelled {
        Some("cancelled".to_owned())
    } else if r.timed_out {
        Some(format!("timed out after {}", fmt_duration(opts.timeout)))
    } else if let Some(sig) = r.signal {
        Some(format!("killed by signal {sig}: {}", detail()))
    } else if r.exit_code != Some(0) {
        let code = r
            .exit_code
            .map_or_else(|| "?".to_owned(), |c| c.to_string());
        Some(format!("exit {code}: {}", detail()))
    } else if r.is_error {
        let status = r
            .api_error_status
            .map(|s| format!(" (API status {s})"))
            .unwrap_or_default();
        let text = if r.result.trim().is_empty() {
            agent_errors.clone()
        } else {
            tail(&r.result, ERROR_TAIL_CHARS)
        };
        Some(format!("agent reported an error{status}: {text}"))
    } else if !found {
        Some("no result object in output".to_owned())
    } else {
        None
    };
    r.ok = error.is_none();
    r.error = error;
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;
    use crate::support::process::parse_agent_command;
    use std::os::unix::fs::PermissionsExt as _;

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
        let arr = format!(
            r#"[{{"type":"system","subtype":"init"}},{{"type":"assistant"}},{RESULT_JSON}]"#
        );
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
            _ => None,
        };
        let env = child_env(&opts, parent);
        let get = |k: &str| env.iter().find(|(n, _)| n == k).map(|(_, v)| v.clone());
        assert_eq!(get("PATH"), Some("/usr/bin".into()));
        assert_eq!(get("MY_EXTRA"), Some("x".into()));
        assert_eq!(get("ANTHROPIC_API_KEY"), Some("k".into()));
        assert_eq!(get("DISABLE_TELEMETRY"), Some("1".into()));
        assert_eq!(
            get("CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC"),
            Some("1".into())
        );
        assert_eq!(get("REDIS_URL"), None);
        assert_eq!(get("IS_SANDBOX"), None);
        opts.sandbox = true;
        let env = child_env(&opts, parent);
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
                "printf '%s\\0' \"$@\" > argv.bin\nenv -0 > env.bin\necho 'some stderr' >&2\necho '{RESULT_JSON}'"
            ),
        );
        let mut opts = SpawnOptions::new(Agent::Claude(fake), dir.path());
        opts.model = Some("sonnet".into());
        opts.max_turns = Some(7);
        opts.label = "task TASK-001/attempt 1".into();
        let prompt =
            "Do it.\nLine two with 'quotes' and \"double\" and $HOME and `ticks`; rm -rf /";
        let r = spawn(&opts, prompt, no_cancel()).await.unwrap();
        assert!(r.ok, "{r:?}");
        assert_eq!(r.result, "done");
        assert_eq!(r.session_id.as_deref(), Some("s"));
        assert_eq!(r.num_turns, Some(1));
        assert!((r.total_cost_usd - 0.01).abs() < 1e-9);
        let argv_raw = std::fs::read(dir.path().join("argv.bin")).unwrap();
        let argv: Vec<String> = argv_raw
            .split(|b| *b == 0)
            .filter(|s| !s.is_empty())
            .map(|s| String::from_utf8(s.to_vec()).unwrap())
            .collect();
        assert_eq!(argv[0], "-p");
        assert_eq!(argv[1], prompt);
        assert!(
            argv.contains(&"--allowedTools=Read,Write,Edit,Glob,Grep".to_owned()),
            "{argv:?}"
        );
        assert!(!argv.contains(&"--allowedTools".to_owned()));
        assert!(argv.windows(2).any(|w| w == ["--output-format", "json"]));
        assert!(argv.windows(2).any(|w| w == ["--model", "sonnet"]));
        assert!(argv.windows(2).any(|w| w == ["--max-turns", "7"]));
        assert!(!argv.contains(&"--dangerously-skip-permissions".to_owned()));
        let env = String::from_utf8(std::fs::read(dir.path().join("env.bin")).unwrap()).unwrap();
        let env: Vec<&str> = env.split('\0').collect();
        assert!(env.contains(&"DISABLE_TELEMETRY=1"));
        assert!(!env.iter().any(|e| e.starts_with("REDIS_URL=")));
        assert!(!env.iter().any(|e| e.starts_with("IS_SANDBOX=")));
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
        let agent = Agent::Raw(vec!["echo".into()]);
        let r = spawn(
            &SpawnOptions::new(agent, dir.path()),
            "one  arg; $X",
            no_cancel(),
        )
        .await
        .unwrap();
        assert_eq!(r.result, "one  arg; $X");
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
            err.contains("IS_SANDBOX=1")
                && err.contains("root")
                && err.contains("FULLSEND_IS_SANDBOX"),
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
}
