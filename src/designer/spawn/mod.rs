//! The one spawner for every coding-agent call: builds a safe argv and environment, runs the agent in its
//! own process group with a wall-clock limit, logs prompt/stdout/stderr to files and parses the result.

use std::io::Write as _;
use std::os::unix::process::ExitStatusExt as _;
use std::path::{Path, PathBuf};
use std::process::{ExitStatus, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use serde_json::Value;
use tokio::sync::watch;

use crate::support::process::{GroupGuard, kill_group, spawn_child};
use crate::support::signal::wait_cancelled;

mod argv;
mod confine;
mod env;
mod result;
mod stream;
#[cfg(test)]
mod tests;

use argv::build_argv;
pub use argv::{check_options, find_claude};
pub use env::ENV_ALLOW;
use env::child_env;
use result::fill_result;
pub use result::parse_result_object;
pub use stream::{AgentEvent, Observer};
use stream::{Seen, pump};

/// Tools allowed by default: enough to read the work dir and write files, no shell.
pub const DEFAULT_ALLOWED_TOOLS: &[&str] = &["Read", "Write", "Edit", "Glob", "Grep"];

/// Default wall-clock limit per call (the PRD's 300 s).
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(300);

/// Default time between SIGTERM and SIGKILL of the child's process group.
pub const DEFAULT_KILL_GRACE: Duration = Duration::from_secs(5);

/// Default longest silence on the agent's stdout before the call counts as hung. Generous on
/// purpose: a healthy run can think quietly for minutes before its last line.
pub const DEFAULT_STALL_TIMEOUT: Duration = Duration::from_secs(240);

/// An MCP server given to the agent through a generated `--mcp-config` (stdio transport).
#[derive(Clone)]
pub struct McpServer {
    /// Its name: the agent sees its tools as `mcp__<name>__<tool>`.
    pub name: String,
    /// The program.
    pub command: PathBuf,
    /// Its arguments.
    pub args: Vec<String>,
    /// Its own environment (secrets allowed: the agent never sees it).
    pub env: Vec<(String, String)>,
}

impl std::fmt::Debug for McpServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let names: Vec<&str> = self.env.iter().map(|(n, _)| n.as_str()).collect();
        f.debug_struct("McpServer")
            .field("name", &self.name)
            .field("command", &self.command)
            .field("args", &self.args)
            .field("env", &names)
            .finish()
    }
}

/// How the agent is invoked.
#[derive(Debug, Clone)]
pub enum Agent {
    /// The Claude Code CLI (or a compatible fake) at this path; gets the claude flags.
    Claude(PathBuf),
    /// An arbitrary command (program + args, no shell); the prompt is appended as the last argv element;
    /// stdout is taken as the result text.
    Raw(Vec<String>),
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
    /// The tools that exist for the agent at all (`--tools=Read,Write,...`, one argv element: the
    /// flag is variadic). What they may touch is set by the generated settings (see `confine`).
    pub allowed_tools: Vec<String>,
    /// Directories the agent may read but not change (e.g. the built tools), besides its work dir.
    pub read_dirs: Vec<PathBuf>,
    /// Narrow Bash permission rules (`Bash(python3 tools/*)`); empty: Bash is denied.
    pub bash_allow: Vec<String>,
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
    /// The most the call may print on stdout or stderr before it is stopped.
    pub max_output: u64,
    /// The MCP server the agent gets (its tools are allowed; no other server is loaded).
    pub mcp: Option<McpServer>,
    /// `--session-id`: assigned before the run (a fresh UUID when None).
    pub session_id: Option<String>,
    /// `--json-schema`: the answer must fit it and arrives as `structured_output`.
    pub json_schema: Option<Value>,
    /// The longest silence on stdout before the call is stopped as hung.
    pub stall_timeout: Duration,
    /// Gets progress events; None: they are logged.
    pub observer: Option<Observer>,
    /// `TRACEPARENT` for the child, so Claude Code's own spans join the message's trace.
    pub traceparent: Option<String>,
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
            read_dirs: Vec::new(),
            bash_allow: Vec::new(),
            max_turns: None,
            max_budget_usd: None,
            append_system_prompt: None,
            skip_permissions: false,
            sandbox: false,
            timeout: DEFAULT_TIMEOUT,
            kill_grace: DEFAULT_KILL_GRACE,
            env_allow: Vec::new(),
            label: "call".to_owned(),
            max_output: MAX_AGENT_OUTPUT,
            mcp: None,
            session_id: None,
            json_schema: None,
            stall_timeout: DEFAULT_STALL_TIMEOUT,
            observer: None,
            traceparent: None,
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
    /// The stream went silent for longer than the stall timeout and the group was killed.
    pub stalled: bool,
    /// The result object's `is_error`.
    pub is_error: bool,
    /// The result object's `subtype` (`success`, `error_max_turns`, `error_max_budget_usd`, ...).
    pub subtype: Option<String>,
    /// Whether a result object was found at all (a run can end without one).
    pub result_found: bool,
    /// The result object's `structured_output` (with `--json-schema`).
    pub structured_output: Option<Value>,
    /// How many tool calls the stream showed.
    pub tool_calls: u64,
    /// MCP servers that did not connect, from the session's init event.
    pub mcp_failed: Vec<String>,
    /// The result text (Claude: `result`, "" when absent; Raw: stdout without trailing whitespace).
    pub result: String,
    /// The result object's `session_id`.
    pub session_id: Option<String>,
    /// The result object's `num_turns`.
    pub num_turns: Option<u64>,
    /// The result object's `total_cost_usd`; for a call killed before its result line, the
    /// price of the usage its assistant events reported (see `cost_estimated`).
    pub total_cost_usd: f64,
    /// True when `total_cost_usd` was priced from the assistant events of a call that never
    /// printed its result (killed on a timeout, a stall or too much output).
    pub cost_estimated: bool,
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

impl SpawnResult {
    /// A call that has not run (yet): nothing happened, nothing was spent. `error` says why it
    /// never will, when it will not.
    pub fn not_run(
        error: Option<String>,
        prompt_path: PathBuf,
        stdout_path: PathBuf,
        stderr_path: PathBuf,
    ) -> SpawnResult {
        SpawnResult {
            ok: false,
            exit_code: None,
            signal: None,
            timed_out: false,
            cancelled: false,
            stalled: false,
            is_error: false,
            subtype: None,
            result_found: false,
            structured_output: None,
            tool_calls: 0,
            mcp_failed: Vec::new(),
            result: String::new(),
            session_id: None,
            num_turns: None,
            total_cost_usd: 0.0,
            cost_estimated: false,
            api_error_status: None,
            permission_denials: 0,
            usage: None,
            duration_ms: 0,
            error,
            prompt_path,
            stdout_path,
            stderr_path,
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

/// The most an agent call may print on stdout or stderr. A real result is a few kilobytes; past
/// this the call is stopped, so a runaway child cannot fill the disk or fullsend's memory.
pub const MAX_AGENT_OUTPUT: u64 = 64 * 1024 * 1024;

/// How the wait ended.
enum End {
    Exited(ExitStatus),
    TimedOut,
    Cancelled,
    TooMuchOutput,
    Stalled,
}

/// Resolves once stdout or the stderr log grows past `max` bytes (checked ten times a second).
async fn output_exceeds(stdout: &Seen, stderr: &Path, max: u64) {
    loop {
        tokio::time::sleep(Duration::from_millis(100)).await;
        if stdout.bytes.load(std::sync::atomic::Ordering::SeqCst) > max
            || tokio::fs::metadata(stderr)
                .await
                .is_ok_and(|m| m.len() > max)
        {
            return;
        }
    }
}

/// Resolves once stdout has been silent for `stall` (checked once a second).
async fn stalls(seen: &Seen, started: Instant, stall: Duration) {
    loop {
        tokio::time::sleep(Duration::from_millis(250).min(stall)).await;
        let last = Duration::from_millis(seen.last_ms.load(std::sync::atomic::Ordering::SeqCst));
        if started.elapsed().saturating_sub(last) >= stall {
            return;
        }
    }
}

/// A log file's first `max` bytes, as text.
async fn read_capped(path: &Path, max: u64) -> String {
    use tokio::io::AsyncReadExt as _;
    let mut bytes = Vec::new();
    if let Ok(file) = tokio::fs::File::open(path).await {
        let _ = file.take(max).read_to_end(&mut bytes).await;
    }
    String::from_utf8_lossy(&bytes).into_owned()
}

/// Runs one agent call. `cancel` flips to true on Ctrl-C/SIGTERM: then the group is killed and `cancelled`
/// set. Errors are setup failures (bad options, unwritable log dir, program not startable); everything the
/// agent does wrong comes back as `ok == false` with `error` set.
pub async fn spawn(
    opts: &SpawnOptions,
    prompt: &str,
    cancel: watch::Receiver<bool>,
) -> anyhow::Result<SpawnResult> {
    use crate::support::trace::{self, kv};
    // An `invoke_agent` span per call; the CLI gets it as TRACEPARENT, so Claude Code's own
    // spans nest under it.
    let span = trace::Span::child(
        "invoke_agent claude-code",
        trace::CLIENT,
        vec![
            kv(trace::GEN_AI_OPERATION, "invoke_agent"),
            kv(trace::GEN_AI_PROVIDER, "anthropic"),
            kv(trace::GEN_AI_AGENT_NAME, "claude-code"),
            kv(trace::GEN_AI_REQUEST_MODEL, billed_model(opts).to_string()),
            kv(trace::AGENT_LABEL, opts.label.clone()),
        ],
    );
    let mut opts = opts.clone();
    if let Some(tp) = span.traceparent() {
        opts.traceparent = Some(tp);
    }
    let result = span.run(run_agent(&opts, prompt, cancel)).await;
    match &result {
        Ok(r) => {
            if let Some(id) = &r.session_id {
                span.set(trace::GEN_AI_CONVERSATION_ID, id.clone());
            }
            span.set(trace::COST_USD, r.total_cost_usd);
            if let Some(usage) = &r.usage {
                for (key, field) in [
                    (trace::GEN_AI_INPUT_TOKENS, "input_tokens"),
                    (trace::GEN_AI_OUTPUT_TOKENS, "output_tokens"),
                ] {
                    let n = usage.get(field).and_then(Value::as_i64).unwrap_or(0);
                    span.set(key, n);
                }
            }
            if !r.ok {
                span.fail(
                    r.error
                        .clone()
                        .unwrap_or_else(|| "the agent call failed".into()),
                );
            }
        }
        Err(err) => span.fail(format!("{err:#}")),
    }
    result
}

/// [`spawn`] without its span.
async fn run_agent(
    opts: &SpawnOptions,
    prompt: &str,
    mut cancel: watch::Receiver<bool>,
) -> anyhow::Result<SpawnResult> {
    check_options(opts)?;
    let mut opts = opts.clone();
    // Named before the run, so logs, progress and traces can be tied to it from the start.
    let session_id = opts
        .session_id
        .get_or_insert_with(|| uuid::Uuid::now_v7().to_string())
        .clone();
    let opts = &opts;
    let confinement = confine::prepare(opts)?;
    let (program, args) = build_argv(opts, prompt, &confinement)?;

    // The call logs sit in fullsend's state dir, which the agent's rules deny.
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
    std::fs::File::create(&stdout_path)
        .with_context(|| format!("creating {}", stdout_path.display()))?;
    let stderr_file = std::fs::File::create(&stderr_path)
        .with_context(|| format!("creating {}", stderr_path.display()))?;

    let mut result = SpawnResult::not_run(None, prompt_path, stdout_path, stderr_path);
    result.session_id = Some(session_id);
    if *cancel.borrow_and_update() {
        result.cancelled = true;
        result.error = Some("cancelled before start".to_owned());
        return Ok(result);
    }

    let mut cmd = tokio::process::Command::new(&program);
    cmd.args(&args)
        .current_dir(&opts.work_dir)
        // The prompt goes on stdin, so its size is bounded by the model's context, not by argv.
        .stdin(Stdio::piped())
        // Read as it arrives: progress, the stall timer and the output cap all need it live.
        .stdout(Stdio::piped())
        .stderr(Stdio::from(stderr_file))
        .env_clear()
        .envs(child_env(opts, &confinement, |n| std::env::var_os(n)))
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
    let guard = GroupGuard::new(pgid);
    let seen = std::sync::Arc::new(Seen::default());
    let reader = child.stdout.take().map(|stdout| {
        tokio::spawn(pump(
            stdout,
            result.stdout_path.clone(),
            opts.max_output,
            started,
            seen.clone(),
            opts.observer.clone(),
            opts.label.clone(),
        ))
    });
    // Written concurrently with the wait, inside the same limits: a child that never reads its
    // stdin cannot hold the call past its timeout. Closing stdin ends the prompt.
    let writer = child.stdin.take().map(|mut stdin| {
        let bytes = prompt.as_bytes().to_vec();
        tokio::spawn(async move {
            use tokio::io::AsyncWriteExt as _;
            let _ = stdin.write_all(&bytes).await;
            let _ = stdin.shutdown().await;
        })
    });

    let end = tokio::select! {
        biased;
        st = child.wait() => End::Exited(st.context("waiting for the agent")?),
        () = tokio::time::sleep(opts.timeout) => End::TimedOut,
        () = wait_cancelled(&mut cancel) => End::Cancelled,
        () = output_exceeds(&seen, &result.stderr_path, opts.max_output) => End::TooMuchOutput,
        () = stalls(&seen, started, opts.stall_timeout) => End::Stalled,
    };
    let too_much = matches!(end, End::TooMuchOutput);
    let status = match end {
        End::Exited(st) => st,
        End::TimedOut | End::Cancelled | End::TooMuchOutput | End::Stalled => {
            result.timed_out = matches!(end, End::TimedOut);
            result.stalled = matches!(end, End::Stalled);
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
    if let Some(writer) = writer {
        writer.abort();
    }
    // Always: grandchildren that outlived the CLI (or ignored SIGTERM) must not become orphans.
    kill_group(pgid, libc::SIGKILL);
    // The group is gone, so the pipe closes: the reader drains what is left and ends.
    if let Some(reader) = reader {
        let _ = tokio::time::timeout(Duration::from_secs(5), reader).await;
    }
    result.tool_calls = seen.tool_calls.load(std::sync::atomic::Ordering::SeqCst);
    result.mcp_failed = seen
        .mcp_failed
        .lock()
        .map(|f| f.clone())
        .unwrap_or_default();
    // Already killed above; disarming avoids a second signal to a group id that may soon be free.
    guard.disarm();
    result.duration_ms = u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX);
    result.exit_code = status.code();
    result.signal = status.signal();

    let stdout = read_capped(&result.stdout_path, opts.max_output).await;
    let stderr = read_capped(&result.stderr_path, opts.max_output).await;
    fill_result(&mut result, opts, &stdout, &stderr);
    if too_much {
        result.ok = false;
        result.error = Some(format!(
            "the agent printed more than {} bytes and was stopped",
            opts.max_output
        ));
    }
    // The server config holds secrets (the Redis URL): gone once the call is over.
    if let Some(path) = &confinement.mcp_config {
        let _ = std::fs::remove_file(path);
    }
    record_metrics(opts, &result);
    Ok(result)
}

/// The model a call's spend is counted under: the one asked for, else the CLI's default.
pub fn billed_model(opts: &SpawnOptions) -> &str {
    opts.model.as_deref().unwrap_or("claude-code")
}

/// One finished call's outcome, tokens and cost in the process's metrics.
fn record_metrics(opts: &SpawnOptions, r: &SpawnResult) {
    use crate::support::metrics;
    let outcome = if r.ok {
        "ok"
    } else if r.cancelled {
        "cancelled"
    } else if r.timed_out {
        "timeout"
    } else if r.stalled {
        "stalled"
    } else if r
        .subtype
        .as_deref()
        .is_some_and(|s| s.starts_with("error_max"))
    {
        "limit"
    } else {
        "error"
    };
    metrics::agent_run(outcome);
    let model = billed_model(opts);
    if let Some(usage) = &r.usage {
        for (kind, field) in [
            ("input", "input_tokens"),
            ("output", "output_tokens"),
            ("cache_write", "cache_creation_input_tokens"),
            ("cache_read", "cache_read_input_tokens"),
        ] {
            metrics::tokens(
                "fullsend",
                model,
                kind,
                usage.get(field).and_then(Value::as_u64).unwrap_or(0),
            );
        }
    }
    metrics::cost("fullsend", model, r.total_cost_usd);
}
