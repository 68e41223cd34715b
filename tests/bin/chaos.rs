//! Chaos runs for `fullsend listen orchestrator`: the long versions of the
//! delivery targets of docs/redis.md §10 (R1, R2, R4/R5, R6, poison messages, R8,
//! R13) and mixed traffic of every message kind through both roles, black-box
//! against the real `fullsend` binary, a real `redis-server` and the in-process
//! Messages-API mock. Each scenario counts what every input message caused (the
//! mixed one every effect type, through `tests/common/ledger.rs`), prints one
//! row of each table, and the run exits non-zero if any scenario failed.
//!
//! `chaos [--quick] [--only r1,r4,...] [--seed N] [--keep] [--bin PATH]`;
//! normally run through `scripts/chaos`.

#[path = "../common/ledger.rs"]
mod ledger;
#[path = "../common/mock_api.rs"]
mod mock_api;
#[path = "../common/mock_http.rs"]
mod mock_http;
#[path = "../common/redis_server.rs"]
mod redis_server;
#[path = "../common/specs.rs"]
mod specs;
#[path = "../common/traffic.rs"]
mod traffic;

use std::collections::{BTreeSet, HashMap, HashSet};
use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use mock_api::{MockApi, Recorded, Reply};
use redis_server::RedisServer;

/// The input stream of the orchestrator group and its dead letters.
const STREAM: &str = "fullsend:{to_orchestrator}:stream";
const DLQ: &str = "fullsend:{to_orchestrator}:dlq";
/// Where the `experiment_request`s the model's decisions cause end up.
const OUTPUT_STREAM: &str = "fullsend:{to_fullsend}:stream";
const GROUP: &str = "orchestrator";

// ---------------------------------------------------------------------------
// Process bookkeeping: every child this driver starts is killed when it ends,
// whether a scenario finishes, panics, or the driver gets a signal.
// ---------------------------------------------------------------------------

/// Pids of the children that may still run (listeners and redis-server).
static LIVE: Mutex<BTreeSet<u32>> = Mutex::new(BTreeSet::new());

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // A panicking scenario must not stop the cleanup that follows it.
    m.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// Scenario and redis-server dirs to remove if a signal ends the run
/// (process::exit skips the destructors that would).
static DIRS: Mutex<BTreeSet<PathBuf>> = Mutex::new(BTreeSet::new());

fn track(pid: u32) {
    lock(&LIVE).insert(pid);
}

fn untrack(pid: u32) {
    lock(&LIVE).remove(&pid);
}

fn send_signal(pid: u32, sig: i32) {
    // SAFETY: kill(2) with a pid of a child we started and have not reaped.
    unsafe {
        libc::kill(pid as i32, sig);
    }
}

fn stop_signals() -> libc::sigset_t {
    // SAFETY: sigset_t is plain data initialised by sigemptyset.
    unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        for sig in [libc::SIGINT, libc::SIGTERM, libc::SIGHUP] {
            libc::sigaddset(&mut set, sig);
        }
        set
    }
}

/// Blocks SIGINT/SIGTERM/SIGHUP in every thread and handles them on one
/// thread with sigwait, where taking the LIVE lock is safe (a signal handler
/// could not). Must run before any other thread starts, so they inherit the mask.
fn guard_signals() {
    let set = stop_signals();
    // SAFETY: blocking signals in the calling (only) thread.
    unsafe {
        libc::pthread_sigmask(libc::SIG_BLOCK, &set, std::ptr::null_mut());
    }
    std::thread::spawn(move || {
        let mut sig: libc::c_int = 0;
        // SAFETY: sigwait on a set that every thread blocks.
        while unsafe { libc::sigwait(&set, &mut sig) } != 0 {}
        let pids: Vec<u32> = lock(&LIVE).iter().copied().collect();
        for pid in &pids {
            send_signal(*pid, libc::SIGKILL);
        }
        for dir in lock(&DIRS).iter() {
            let _ = std::fs::remove_dir_all(dir);
        }
        eprintln!(
            "chaos: signal {sig}: killed {} child process(es), stopping",
            pids.len()
        );
        std::process::exit(128 + sig);
    });
}

/// Children get the default signal mask back (listeners must see SIGTERM) and
/// die with the driver thread that started them, even if it is SIGKILLed.
fn child_setup(cmd: &mut Command) {
    let set = stop_signals();
    // SAFETY: only async-signal-safe calls between fork and exec.
    unsafe {
        cmd.pre_exec(move || {
            libc::sigprocmask(libc::SIG_UNBLOCK, &set, std::ptr::null_mut());
            libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
            Ok(())
        });
    }
}

// ---------------------------------------------------------------------------
// Messages and the model.
// ---------------------------------------------------------------------------

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    /// The model answers `dispatch_to_fullsend`: one experiment_request.
    Dispatch,
    /// The model answers `record_learning`: one learnings.md entry.
    Learn,
    /// The model answers 529 every time.
    Poison,
}

impl Kind {
    fn word(self) -> &'static str {
        match self {
            Kind::Dispatch => "dispatch",
            Kind::Learn => "learn",
            Kind::Poison => "poison",
        }
    }
    fn parse(word: &str) -> Option<Kind> {
        [Kind::Dispatch, Kind::Learn, Kind::Poison]
            .into_iter()
            .find(|k| k.word() == word)
    }
}

/// One input message. Its `msg_id` is set by us, so a producer whose publish
/// failed can retry it without creating a second message.
#[derive(Debug, Clone)]
struct Msg {
    id: String,
    kind: Kind,
}

impl Msg {
    fn content(&self) -> String {
        format!("chaos {} {}", self.id, self.kind.word())
    }
    fn json(&self) -> String {
        json!({
            "type": "escalation",
            "source": "watcher",
            "priority": "high",
            "msg_id": self.id,
            "original_message": {"username": "tester", "content": self.content()},
        })
        .to_string()
    }
}

/// `n` messages numbered from `from`; every 10th one records a learning.
fn batch(prefix: &str, from: usize, n: usize) -> Vec<Msg> {
    (from..from + n)
        .map(|seq| Msg {
            id: format!("{prefix}-{seq:05}"),
            kind: if seq % 10 == 9 {
                Kind::Learn
            } else {
                Kind::Dispatch
            },
        })
        .collect()
}

fn learning_text(id: &str) -> String {
    format!("Chaos learning {id}")
}

/// One model call as the mock saw it.
struct Call {
    /// The caller's API key: each listener process gets its own, so calls can
    /// be attributed to processes.
    key: String,
    id: String,
    at: Instant,
    latency: Duration,
}

/// The scripted model: routes on the content of the incoming message only
/// (not the context, which holds earlier learnings), and logs every call.
struct Model {
    latency_ms: AtomicU64,
    calls: Mutex<Vec<Call>>,
    /// Answer with the mixed-traffic script (`traffic::answer`) instead of the kinds above.
    mixed: bool,
}

impl Model {
    fn new(latency: Duration) -> Model {
        Model {
            latency_ms: AtomicU64::new(latency.as_millis() as u64),
            calls: Mutex::new(Vec::new()),
            mixed: false,
        }
    }
    fn mixed(latency: Duration) -> Model {
        Model {
            mixed: true,
            ..Model::new(latency)
        }
    }
    fn latency(&self) -> Duration {
        Duration::from_millis(self.latency_ms.load(Ordering::Relaxed))
    }
    fn set_latency(&self, latency: Duration) {
        self.latency_ms
            .store(latency.as_millis() as u64, Ordering::Relaxed);
    }

    fn respond(&self, req: &Recorded) -> Reply {
        if self.mixed {
            let latency = self.latency();
            lock(&self.calls).push(Call {
                key: req.header("x-api-key").unwrap_or_default().to_string(),
                id: traffic::incoming(&mock_api::user_text(req))
                    .map(|(id, _)| id)
                    .unwrap_or_else(|| "(other)".into()),
                at: Instant::now(),
                latency,
            });
            return Reply::Delay(latency, Box::new(traffic::answer(req)));
        }
        let incoming = incoming_token(&mock_api::user_text(req));
        let latency = self.latency();
        let (id, kind) = match &incoming {
            Some((id, kind)) => (id.clone(), Some(*kind)),
            None => (String::new(), None),
        };
        lock(&self.calls).push(Call {
            key: req.header("x-api-key").unwrap_or_default().to_string(),
            id: id.clone(),
            at: Instant::now(),
            latency: if kind == Some(Kind::Poison) {
                Duration::ZERO
            } else {
                latency
            },
        });
        let decision = match kind {
            Some(Kind::Poison) => return Reply::error(529, "overloaded_error", "Overloaded"),
            Some(Kind::Learn) => json!({
                "action": "record_learning",
                "reasoning": "a pattern worth keeping",
                "payload": {"learning": learning_text(&id)},
            }),
            Some(Kind::Dispatch) => json!({
                "action": "dispatch_to_fullsend",
                "reasoning": "worth an experiment",
                "payload": {"idea": format!("Experiment for {id}")},
                "priority": "high",
                "context_for_fullsend": "chaos run",
            }),
            None => json!({"action": "no_action", "reasoning": "not a chaos message"}),
        };
        let reply = Reply::text(decision.to_string());
        if latency.is_zero() {
            reply
        } else {
            Reply::Delay(latency, Box::new(reply))
        }
    }

    /// Calls of `key` whose answer is still being delayed at `now`, with a
    /// margin so a kill issued now lands before the answer.
    fn in_flight(&self, key: &str, now: Instant) -> Vec<String> {
        let margin = Duration::from_millis(60);
        lock(&self.calls)
            .iter()
            .filter(|c| c.key == key && c.at + c.latency > now + margin)
            .map(|c| c.id.clone())
            .collect()
    }
    fn first_call_after(&self, key: &str, t: Instant) -> Option<Instant> {
        lock(&self.calls)
            .iter()
            .filter(|c| c.key == key && c.at > t)
            .map(|c| c.at)
            .min()
    }
    /// Every call, whatever it was about.
    fn total_all(&self) -> usize {
        lock(&self.calls).len()
    }
    fn calls_of(&self, id: &str) -> usize {
        lock(&self.calls).iter().filter(|c| c.id == id).count()
    }
    fn total(&self) -> usize {
        lock(&self.calls)
            .iter()
            .filter(|c| !c.id.is_empty())
            .count()
    }
    /// Calls made by a process for a message it was already waiting on the
    /// model for: one process handling the same message twice at once.
    fn overlapping(&self) -> usize {
        let calls = lock(&self.calls);
        calls
            .iter()
            .enumerate()
            .filter(|(i, c)| {
                !c.id.is_empty()
                    && calls[..*i]
                        .iter()
                        .any(|p| p.key == c.key && p.id == c.id && c.at < p.at + p.latency)
            })
            .count()
    }
    /// Calls that started after `t` (any caller).
    fn started_after(&self, t: Instant) -> usize {
        lock(&self.calls).iter().filter(|c| c.at > t).count()
    }
}

/// `(msg_id, kind)` from the "Incoming Message" part of a prompt.
fn incoming_token(prompt: &str) -> Option<(String, Kind)> {
    let section = &prompt[prompt.find("## Incoming Message")?..];
    let start = section.find("chaos ")? + "chaos ".len();
    let rest = &section[start..];
    let text = &rest[..rest.find('"')?];
    let mut words = text.split_whitespace();
    let id = words.next()?.to_string();
    let kind = Kind::parse(words.next()?)?;
    Some((id, kind))
}

// ---------------------------------------------------------------------------
// Processes under test.
// ---------------------------------------------------------------------------

/// How to run the binary against this scenario's services.
#[derive(Clone)]
struct Env {
    bin: PathBuf,
    root: PathBuf,
    redis_url: String,
    api_url: String,
    extra: Vec<(String, String)>,
}

impl Env {
    fn command(&self, api_key: &str, args: &[&str]) -> Command {
        let mut c = Command::new(&self.bin);
        c.env_clear()
            .env(
                "PATH",
                std::env::var("PATH").unwrap_or_else(|_| "/usr/bin:/bin".into()),
            )
            .env("HOME", self.root.join("home"))
            .env("REDIS_URL", &self.redis_url)
            .env("CONTEXT_PATH", self.root.join("context"))
            .env("FULLSEND_WORK_DIR", self.root.join("work"))
            .env("ORCHESTRATOR_MODEL", "claude-opus-5-5")
            .env("ANTHROPIC_BASE_URL", &self.api_url)
            .env("ANTHROPIC_API_KEY", api_key)
            // A fixed host name gives stable consumer names (chaos:0, chaos:1, ...).
            .env("FULLSEND_HOSTNAME", "chaos")
            .env("NO_COLOR", "1");
        for (k, v) in &self.extra {
            c.env(k, v);
        }
        c.current_dir(&self.root).arg("--no-config").args(args);
        child_setup(&mut c);
        c
    }

    /// One `fullsend publish` attempt, killed after `limit`.
    fn publish_once(&self, msg: &Msg, limit: Duration) -> Result<(), String> {
        let mut child = self
            .command(
                "chaos-producer",
                &[
                    "publish",
                    "fullsend:to_orchestrator",
                    "--message",
                    &msg.json(),
                ],
            )
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|e| format!("spawning fullsend publish: {e}"))?;
        let start = Instant::now();
        let status = loop {
            match child.try_wait() {
                Ok(Some(status)) => break status,
                Ok(None) if start.elapsed() < limit => {
                    std::thread::sleep(Duration::from_millis(5));
                }
                _ => {
                    let _ = child.kill();
                    let _ = child.wait();
                    return Err(format!("publish of {} timed out", msg.id));
                }
            }
        };
        if status.success() {
            Ok(())
        } else {
            let mut err = String::new();
            if let Some(mut e) = child.stderr.take() {
                let _ = e.read_to_string(&mut err);
            }
            Err(format!("publish of {} failed: {}", msg.id, err.trim()))
        }
    }

    /// Publishes until acknowledged (the same msg_id every time, so a retry
    /// after a lost reply adds nothing), or gives up after `limit`.
    fn publish(&self, msg: &Msg, limit: Duration) -> Result<(), String> {
        let start = Instant::now();
        loop {
            let attempt = self.publish_once(msg, Duration::from_secs(20));
            match attempt {
                Ok(()) => return Ok(()),
                // Only Redis-side failures are worth a retry.
                Err(e) if e.starts_with("spawning") || start.elapsed() >= limit => return Err(e),
                Err(_) => std::thread::sleep(Duration::from_millis(100)),
            }
        }
    }
}

type Lines = Arc<Mutex<Vec<(Instant, Value)>>>;

/// One `fullsend listen` process and the JSON lines it printed.
struct Listener {
    key: String,
    child: Child,
    lines: Lines,
    log: PathBuf,
    spawned: Instant,
    status: Option<ExitStatus>,
}

impl Listener {
    fn pid(&self) -> u32 {
        self.child.id()
    }
    /// Whether it still runs (reaping it if it exited by itself).
    fn running(&mut self) -> bool {
        if self.status.is_some() {
            return false;
        }
        match self.child.try_wait() {
            Ok(None) => true,
            Ok(Some(status)) => {
                self.status = Some(status);
                untrack(self.pid());
                false
            }
            Err(_) => false,
        }
    }
    /// SIGKILL and reap (reaping matters: a restarted listener may take over
    /// the consumer name only once the old pid is gone).
    fn kill(&mut self) {
        if self.running() {
            let _ = self.child.kill();
            if let Ok(status) = self.child.wait() {
                self.status = Some(status);
            }
            untrack(self.pid());
        }
    }
    /// SIGTERM; waits up to `limit` for the exit. Returns the exit code (None:
    /// killed by a signal or by us after the limit) and how long it took.
    fn terminate(&mut self, limit: Duration) -> (Option<i32>, Duration) {
        let start = Instant::now();
        if !self.running() {
            return (self.status.and_then(|s| s.code()), Duration::ZERO);
        }
        send_signal(self.pid(), libc::SIGTERM);
        loop {
            if !self.running() {
                return (self.status.and_then(|s| s.code()), start.elapsed());
            }
            if start.elapsed() > limit {
                self.kill();
                return (None, start.elapsed());
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }
    /// Committed messages (msg_id and when the line was read).
    fn committed(&self) -> Vec<(Instant, String)> {
        lock(&self.lines)
            .iter()
            .filter_map(|(t, v)| v["msg_id"].as_str().map(|id| (*t, id.to_string())))
            .collect()
    }
    fn dead_lettered(&self) -> usize {
        lock(&self.lines)
            .iter()
            .filter(|(_, v)| v["status"] == "dead_lettered")
            .count()
    }
    fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Listener {
    fn drop(&mut self) {
        if self.status.is_none() {
            let _ = self.child.kill();
            let _ = self.child.wait();
            untrack(self.pid());
        }
    }
}

/// Reads `/proc/<pid>/status` VmRSS, in MB.
fn rss_mb(pid: u32) -> Option<f64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    let kb: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb / 1024.0)
}

// ---------------------------------------------------------------------------
// A scenario's world: temp dir, redis-server, mock, listeners.
// ---------------------------------------------------------------------------

struct Rig {
    name: String,
    dir: Option<tempfile::TempDir>,
    /// Keep the dir (logs, context) after the scenario; cleared on success.
    keep: bool,
    redis: RedisServer,
    redis_pid: Option<u32>,
    _mock: MockApi,
    model: Arc<Model>,
    env: Env,
    /// Every listener ever started (killed ones too: their output counts).
    procs: Vec<Listener>,
    /// The current listener of each slot, as an index into `procs`.
    slots: Vec<usize>,
}

impl Rig {
    fn new(name: &str, cfg: &Cfg, latency: Duration, extra: &[(&str, &str)]) -> Rig {
        Rig::with_model(name, cfg, Model::new(latency), extra)
    }

    fn with_model(name: &str, cfg: &Cfg, model: Model, extra: &[(&str, &str)]) -> Rig {
        let dir = tempfile::Builder::new()
            .prefix(&format!("fullsend-chaos-{name}-"))
            .tempdir()
            .expect("creating the scenario dir");
        for sub in ["context", "home", "work"] {
            std::fs::create_dir_all(dir.path().join(sub)).expect("creating scenario subdirs");
        }
        // The designer refuses a work root others can read.
        std::fs::set_permissions(
            dir.path().join("work"),
            std::os::unix::fs::PermissionsExt::from_mode(0o700),
        )
        .expect("chmod the work dir");
        let redis = RedisServer::start();
        lock(&DIRS).insert(dir.path().to_path_buf());
        lock(&DIRS).insert(redis.dir().to_path_buf());
        let redis_pid = redis.pid();
        if let Some(pid) = redis_pid {
            track(pid);
        }
        let model = Arc::new(model);
        let responder = model.clone();
        let mock = MockApi::start(move |req, _| responder.respond(req));
        let env = Env {
            bin: cfg.bin.clone(),
            root: dir.path().to_path_buf(),
            redis_url: redis.url(),
            api_url: mock.base_url(),
            extra: extra
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        };
        Rig {
            name: name.to_string(),
            dir: Some(dir),
            keep: true,
            redis,
            redis_pid,
            _mock: mock,
            model,
            env,
            procs: Vec::new(),
            slots: Vec::new(),
        }
    }

    /// Starts a listener in a new slot.
    fn spawn(&mut self, args: &[&str]) -> usize {
        let index = self.start_listener(args);
        self.slots.push(index);
        self.slots.len() - 1
    }

    /// Starts a fresh listener in `slot` (whose previous one must be gone).
    fn respawn(&mut self, slot: usize, args: &[&str]) {
        let index = self.start_listener(args);
        self.slots[slot] = index;
    }

    fn start_listener(&mut self, args: &[&str]) -> usize {
        let n = self.procs.len();
        let key = format!("chaos-listener-{n}");
        let log = self.env.root.join(format!("listener-{n}.log"));
        let err = std::fs::File::create(&log).expect("creating a listener log");
        let mut all = vec!["-v", "--log-format", "json"];
        all.extend_from_slice(args);
        let mut child = self
            .env
            .command(&key, &all)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(err)
            .spawn()
            .expect("spawning fullsend listen");
        track(child.id());
        let lines: Lines = Arc::new(Mutex::new(Vec::new()));
        if let Some(stdout) = child.stdout.take() {
            let sink = lines.clone();
            // A copy on disk, for reading a kept scenario dir afterwards.
            let mut copy =
                std::fs::File::create(self.env.root.join(format!("listener-{n}.out"))).ok();
            std::thread::spawn(move || {
                for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                    if let Some(f) = copy.as_mut() {
                        let _ = writeln!(f, "{line}");
                    }
                    if let Ok(v) = serde_json::from_str::<Value>(&line) {
                        lock(&sink).push((Instant::now(), v));
                    }
                }
            });
        }
        self.procs.push(Listener {
            key,
            child,
            lines,
            log,
            spawned: Instant::now(),
            status: None,
        });
        n
    }

    fn current(&mut self, slot: usize) -> &mut Listener {
        let i = self.slots[slot];
        &mut self.procs[i]
    }

    /// Slots whose listener exited although nobody stopped it.
    fn exited_slots(&mut self) -> Vec<String> {
        let mut gone = Vec::new();
        for slot in 0..self.slots.len() {
            let l = self.current(slot);
            if !l.running() {
                gone.push(format!(
                    "listener {} (pid {}) exited: {:?}",
                    l.key,
                    l.pid(),
                    l.status
                ));
            }
        }
        gone
    }

    /// SIGTERMs every current listener; notes any that does not exit 0.
    fn stop_all(&mut self, checks: &mut Checks) {
        for slot in 0..self.slots.len() {
            let l = self.current(slot);
            let (code, took) = l.terminate(Duration::from_secs(20));
            let key = l.key.clone();
            checks.check(
                code == Some(0),
                format!(
                    "{key}: exit {code:?} after SIGTERM ({:.1} s)",
                    took.as_secs_f64()
                ),
            );
        }
    }

    fn conn(&self) -> Option<redis::Connection> {
        let client = redis::Client::open(self.redis.url()).ok()?;
        client
            .get_connection_with_timeout(Duration::from_secs(2))
            .ok()
    }

    fn kill_redis(&mut self) {
        if let Some(pid) = self.redis_pid.take() {
            untrack(pid);
        }
        self.redis.kill();
    }

    fn restart_redis(&mut self) {
        self.redis.restart();
        self.redis_pid = self.redis.pid();
        if let Some(pid) = self.redis_pid {
            track(pid);
        }
    }

    /// Publishes `msgs` on `threads` threads; returns the ones not acknowledged.
    fn publish_all(&self, msgs: &[Msg], threads: usize) -> Vec<String> {
        let failed = Mutex::new(Vec::new());
        let chunk = msgs.len().div_ceil(threads.max(1)).max(1);
        std::thread::scope(|s| {
            for part in msgs.chunks(chunk) {
                let env = &self.env;
                let failed = &failed;
                s.spawn(move || {
                    for m in part {
                        if let Err(e) = env.publish(m, Duration::from_secs(60)) {
                            lock(failed).push(e);
                        }
                    }
                });
            }
        });
        failed.into_inner().unwrap_or_else(|p| p.into_inner())
    }

    /// experiment_requests per causation_id.
    fn requests(&self) -> Option<HashMap<String, usize>> {
        let mut conn = self.conn()?;
        let entries: Vec<(String, Vec<(String, String)>)> = redis::cmd("XRANGE")
            .arg(OUTPUT_STREAM)
            .arg("-")
            .arg("+")
            .query(&mut conn)
            .ok()?;
        let mut counts = HashMap::new();
        for (_, fields) in entries {
            let Some((_, data)) = fields.into_iter().find(|(k, _)| k == "data") else {
                continue;
            };
            let Ok(v) = serde_json::from_str::<Value>(&data) else {
                continue;
            };
            if v["type"] == "experiment_request" {
                let cause = v["causation_id"].as_str().unwrap_or("(none)").to_string();
                *counts.entry(cause).or_insert(0) += 1;
            }
        }
        Some(counts)
    }

    /// learnings.md entries per msg_id.
    fn learnings(&self) -> HashMap<String, usize> {
        let text = std::fs::read_to_string(self.env.root.join("context").join("learnings.md"))
            .unwrap_or_default();
        let mut counts = HashMap::new();
        for line in text.lines() {
            if let Some(id) = line.strip_prefix("Chaos learning ") {
                *counts.entry(id.trim().to_string()).or_insert(0) += 1;
            }
        }
        counts
    }

    /// Committed output lines per msg_id over every listener ever started.
    fn committed(&self) -> HashMap<String, usize> {
        let mut counts = HashMap::new();
        for p in &self.procs {
            for (_, id) in p.committed() {
                *counts.entry(id).or_insert(0) += 1;
            }
        }
        counts
    }

    fn tally(&self, msgs: &[Msg]) -> Option<Tally> {
        let requests = self.requests()?;
        let learnings = self.learnings();
        let lines = self.committed();
        let dead = self.dead_letters();
        let mut t = Tally::default();
        let mut known = HashSet::new();
        for m in msgs.iter().filter(|m| m.kind != Kind::Poison) {
            known.insert(m.id.as_str());
            t.sent += 1;
            let (wanted, other) = match m.kind {
                Kind::Learn => (&learnings, &requests),
                _ => (&requests, &learnings),
            };
            let effects = wanted.get(&m.id).copied().unwrap_or(0);
            let wrong = other.get(&m.id).copied().unwrap_or(0);
            let printed = lines.get(&m.id).copied().unwrap_or(0);
            if effects == 0 {
                t.lost.push(m.id.clone());
                if let Some(d) = dead.get(&m.id) {
                    t.dead_lettered.push(format!("{} ({d})", m.id));
                }
            } else if let Some(d) = dead.get(&m.id) {
                // Its file effect was written, then the commit failed and it
                // was dead-lettered: not lost, but the DLQ now holds a
                // message that was handled.
                t.dead_after_effect.push(format!("{} ({d})", m.id));
                t.processed += 1;
            } else {
                t.processed += 1;
            }
            let extra = effects.saturating_sub(1) + wrong + printed.saturating_sub(1);
            if extra > 0 {
                t.duplicated += extra;
                t.dup_ids.push(format!(
                    "{} (effects {effects}, wrong-kind {wrong}, committed lines {printed})",
                    m.id
                ));
            }
        }
        // Effects nobody asked for (a cause we never sent) count as duplicates.
        for (id, n) in requests.iter().chain(learnings.iter()) {
            if !known.contains(id.as_str()) && !msgs.iter().any(|m| &m.id == id) {
                t.duplicated += n;
                t.dup_ids
                    .push(format!("{id} (unexpected cause, {n} effects)"));
            }
        }
        Some(t)
    }

    /// Polls until every message in `msgs` has its effect or was
    /// dead-lettered (then it will never have one), or `deadline`.
    fn wait_all(&self, msgs: &[Msg], deadline: Instant) -> bool {
        let wanted = msgs.iter().filter(|m| m.kind != Kind::Poison).count();
        loop {
            if self
                .tally(msgs)
                .is_some_and(|t| t.processed + t.dead_lettered.len() >= wanted)
            {
                return true;
            }
            if Instant::now() >= deadline {
                return false;
            }
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    fn heartbeats(&self) -> usize {
        let Some(mut conn) = self.conn() else {
            return 0;
        };
        let keys: Vec<String> = redis::cmd("KEYS")
            .arg(format!("fullsend:listeners:{GROUP}:*"))
            .query(&mut conn)
            .unwrap_or_default();
        keys.len()
    }

    fn subscribers(&self) -> i64 {
        let Some(mut conn) = self.conn() else {
            return 0;
        };
        let subs: Vec<(String, i64)> = redis::cmd("PUBSUB")
            .arg("NUMSUB")
            .arg("fullsend:to_orchestrator")
            .query(&mut conn)
            .unwrap_or_default();
        subs.first().map(|s| s.1).unwrap_or(0)
    }

    fn pending(&self) -> Option<u64> {
        let mut conn = self.conn()?;
        let (n, _, _, _): (u64, redis::Value, redis::Value, redis::Value) = redis::cmd("XPENDING")
            .arg(STREAM)
            .arg(GROUP)
            .query(&mut conn)
            .ok()?;
        Some(n)
    }

    fn dlq(&self) -> Vec<HashMap<String, String>> {
        let Some(mut conn) = self.conn() else {
            return Vec::new();
        };
        let entries: Vec<(String, HashMap<String, String>)> = redis::cmd("XRANGE")
            .arg(DLQ)
            .arg("-")
            .arg("+")
            .query(&mut conn)
            .unwrap_or_default();
        entries.into_iter().map(|(_, f)| f).collect()
    }

    /// Dead-lettered messages by msg_id: "deliveries N: error".
    fn dead_letters(&self) -> HashMap<String, String> {
        self.dlq()
            .into_iter()
            .filter_map(|f| {
                let data: Value = serde_json::from_str(f.get("data")?).ok()?;
                let id = data["msg_id"].as_str()?.to_string();
                let text = format!(
                    "dead-lettered, deliveries {}: {}",
                    f.get("deliveries").map_or("?", String::as_str),
                    f.get("error").map_or("?", String::as_str)
                );
                Some((id, text))
            })
            .collect()
    }

    /// For lost messages that are not dead-lettered: their stream entry, who
    /// holds it, how often it was delivered, and the seen/memo markers.
    fn diagnose(&self, ids: &[String]) -> Vec<String> {
        let Some(mut conn) = self.conn() else {
            return vec!["redis unreachable for diagnosis".into()];
        };
        let entries: Vec<(String, Vec<(String, String)>)> = redis::cmd("XRANGE")
            .arg(STREAM)
            .arg("-")
            .arg("+")
            .query(&mut conn)
            .unwrap_or_default();
        let mut out = Vec::new();
        for id in ids {
            let needle = format!("\"msg_id\":\"{id}\"");
            let entry = entries
                .iter()
                .find(|(_, f)| f.iter().any(|(_, v)| v.contains(&needle)))
                .map(|(e, _)| e.clone());
            let Some(entry) = entry else {
                out.push(format!("{id}: not in the input stream"));
                continue;
            };
            let pending: Vec<(String, String, u64, u64)> = redis::cmd("XPENDING")
                .arg(STREAM)
                .arg(GROUP)
                .arg(&entry)
                .arg(&entry)
                .arg(1)
                .query(&mut conn)
                .unwrap_or_default();
            let exists = |conn: &mut redis::Connection, key: String| -> bool {
                redis::cmd("EXISTS")
                    .arg(key)
                    .query::<i64>(conn)
                    .is_ok_and(|n| n > 0)
            };
            let seen = exists(
                &mut conn,
                format!("fullsend:{{to_orchestrator}}:seen:{GROUP}:{id}"),
            );
            let memo = exists(
                &mut conn,
                format!("fullsend:{{to_orchestrator}}:memo:{GROUP}:{id}"),
            );
            let state = match pending.first() {
                Some((_, owner, idle, n)) => {
                    format!("pending at {owner}, idle {idle} ms, delivered {n}×")
                }
                None => "acknowledged".into(),
            };
            out.push(format!(
                "{id}: entry {entry} {state}, seen marker {seen}, memo {memo}"
            ));
        }
        out
    }

    /// Lines of every listener log containing `needle`.
    fn log_count(&self, needle: &str) -> usize {
        self.procs
            .iter()
            .map(|p| p.log_text().matches(needle).count())
            .sum()
    }

    fn check_logs(&self, checks: &mut Checks) {
        for p in &self.procs {
            let text = p.log_text();
            if let Some(line) = text.lines().find(|l| l.contains("panicked")) {
                checks.fail(format!("{} panicked: {line}", p.key));
            }
        }
    }

    /// The final count, with lost messages explained.
    fn final_tally(&self, msgs: &[Msg]) -> Tally {
        let mut t = self.tally(msgs).unwrap_or_default();
        let dead: HashSet<&str> = t
            .dead_lettered
            .iter()
            .filter_map(|d| d.split(' ').next())
            .collect();
        let stuck: Vec<String> = t
            .lost
            .iter()
            .filter(|id| !dead.contains(id.as_str()))
            .cloned()
            .collect();
        if !stuck.is_empty() {
            t.stuck = self.diagnose(&stuck);
        }
        let requests = self.requests().unwrap_or_default();
        let learnings = self.learnings();
        for (name, kind, counts) in [
            ("experiment_request", Kind::Dispatch, &requests),
            ("learning", Kind::Learn, &learnings),
        ] {
            let of_kind: Vec<&Msg> = msgs.iter().filter(|m| m.kind == kind).collect();
            let got = of_kind
                .iter()
                .filter(|m| counts.contains_key(&m.id))
                .count();
            let extra: usize = counts.values().map(|n| n.saturating_sub(1)).sum();
            t.effects
                .push((name.to_string(), effect_cell(got, of_kind.len(), extra)));
        }
        t
    }

    fn finish(&mut self, checks: &Checks, cfg: &Cfg) {
        self.keep = cfg.keep || !checks.pass();
    }
}

impl Drop for Rig {
    fn drop(&mut self) {
        for p in &mut self.procs {
            p.kill();
        }
        if let Some(pid) = self.redis_pid.take() {
            untrack(pid);
        }
        lock(&DIRS).remove(&self.env.root);
        lock(&DIRS).remove(self.redis.dir());
        if let Some(dir) = self.dir.take()
            && self.keep
        {
            let path = dir.keep();
            eprintln!(
                "  {}: kept {} (listener logs, context)",
                self.name,
                path.display()
            );
        }
    }
}

// ---------------------------------------------------------------------------
// Results.
// ---------------------------------------------------------------------------

#[derive(Default, Debug)]
struct Tally {
    sent: usize,
    processed: usize,
    lost: Vec<String>,
    /// Lost ones that sit in the DLQ, with the reason it gives.
    dead_lettered: Vec<String>,
    /// Ones whose effect exists although the DLQ holds them.
    dead_after_effect: Vec<String>,
    /// What Redis says about lost ones that are not in the DLQ.
    stuck: Vec<String>,
    duplicated: usize,
    dup_ids: Vec<String>,
    /// One cell per effect type counted: `got/expected`, with `+n` for extras.
    effects: Vec<(String, String)>,
}

/// The effects-table cell of one effect type.
fn effect_cell(got: usize, expected: usize, extra: usize) -> String {
    if extra > 0 {
        format!("{got}/{expected} +{extra}")
    } else {
        format!("{got}/{expected}")
    }
}

/// Collected failure reasons of one scenario.
#[derive(Default)]
struct Checks {
    failures: Vec<String>,
}

impl Checks {
    fn check(&mut self, ok: bool, what: impl Into<String>) {
        if !ok {
            self.failures.push(what.into());
        }
    }
    fn fail(&mut self, what: impl Into<String>) {
        self.failures.push(what.into());
    }
    fn pass(&self) -> bool {
        self.failures.is_empty()
    }
    fn tally(&mut self, t: &Tally) {
        if !t.lost.is_empty() {
            self.fail(format!("lost {}: {}", t.lost.len(), preview_list(&t.lost)));
        }
        for d in &t.dead_lettered {
            self.fail(format!("lost to the DLQ: {d}"));
        }
        for d in &t.stuck {
            self.fail(format!("lost: {d}"));
        }
        if t.duplicated > 0 {
            self.fail(format!(
                "duplicated {}: {}",
                t.duplicated,
                preview_list(&t.dup_ids)
            ));
        }
    }
}

fn preview_list(items: &[String]) -> String {
    let shown: Vec<&str> = items.iter().take(8).map(String::as_str).collect();
    let more = items.len().saturating_sub(shown.len());
    if more > 0 {
        format!("{} … (+{more})", shown.join(", "))
    } else {
        shown.join(", ")
    }
}

struct Row {
    /// Cells of the effects table.
    effects: Vec<(String, String)>,
    scenario: String,
    sent: usize,
    processed: usize,
    lost: usize,
    duplicated: usize,
    extra: String,
    pass: bool,
    notes: Vec<String>,
}

impl Row {
    fn new(scenario: &str, t: &Tally, extra: String, checks: &Checks) -> Row {
        Row {
            effects: t.effects.clone(),
            scenario: scenario.to_string(),
            sent: t.sent,
            processed: t.processed,
            lost: t.lost.len(),
            duplicated: t.duplicated,
            extra,
            pass: checks.pass(),
            notes: checks.failures.clone(),
        }
    }
}

fn print_table(rows: &[Row]) {
    let header = [
        "scenario",
        "sent",
        "processed",
        "lost",
        "duplicated",
        "extra",
        "result",
    ];
    let cells: Vec<Vec<String>> = rows
        .iter()
        .map(|r| {
            [
                r.scenario.clone(),
                r.sent.to_string(),
                r.processed.to_string(),
                r.lost.to_string(),
                r.duplicated.to_string(),
                r.extra.clone(),
                if r.pass { "PASS" } else { "FAIL" }.to_string(),
            ]
            .to_vec()
        })
        .collect();
    print_grid(&header, &cells);
}

/// The effects table: one column per effect type, `got/expected` (+extras) per scenario; `–`
/// where a scenario's traffic has no such effect.
fn print_effects_table(rows: &[Row]) {
    let mut names: Vec<&str> = Vec::new();
    for r in rows {
        for (name, _) in &r.effects {
            if !names.contains(&name.as_str()) {
                names.push(name);
            }
        }
    }
    let mut header = vec!["scenario"];
    header.extend(names.iter().copied());
    let cells: Vec<Vec<String>> = rows
        .iter()
        .map(|r| {
            let mut row = vec![r.scenario.clone()];
            for name in &names {
                row.push(
                    r.effects
                        .iter()
                        .find(|(n, _)| n == name)
                        .map_or_else(|| "–".to_string(), |(_, c)| c.clone()),
                );
            }
            row
        })
        .collect();
    print_grid(&header, &cells);
}

fn print_grid(header: &[&str], cells: &[Vec<String>]) {
    let mut widths: Vec<usize> = header.iter().map(|h| h.chars().count()).collect();
    for row in cells {
        for (w, c) in widths.iter_mut().zip(row.iter()) {
            *w = (*w).max(c.chars().count());
        }
    }
    let line = |cols: Vec<&str>| {
        let padded: Vec<String> = cols
            .iter()
            .zip(&widths)
            .map(|(c, w)| format!("{c}{}", " ".repeat(w - c.chars().count())))
            .collect();
        println!("{}", padded.join(" | ").trim_end());
    };
    line(header.to_vec());
    println!(
        "{}",
        widths
            .iter()
            .map(|w| "-".repeat(*w))
            .collect::<Vec<_>>()
            .join("-|-")
    );
    for row in cells {
        line(row.iter().map(String::as_str).collect());
    }
}

// ---------------------------------------------------------------------------
// Run configuration.
// ---------------------------------------------------------------------------

struct Cfg {
    quick: bool,
    keep: bool,
    bin: PathBuf,
}

/// xorshift64*: enough randomness for picking victims and pauses, with a
/// printed seed so a run can be repeated.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }
    fn millis(&mut self, lo: u64, hi: u64) -> Duration {
        Duration::from_millis(lo + self.next() % (hi - lo).max(1))
    }
}

fn secs(d: Duration) -> f64 {
    d.as_secs_f64()
}

fn sleep(d: Duration) {
    std::thread::sleep(d);
}

/// Polls `f` every 20 ms until it is true or `limit` passes.
fn wait_for(limit: Duration, mut f: impl FnMut() -> bool) -> bool {
    let end = Instant::now() + limit;
    loop {
        if f() {
            return true;
        }
        if Instant::now() >= end {
            return false;
        }
        sleep(Duration::from_millis(20));
    }
}

/// Waits until the stream looks settled after the last effect: no late
/// commit by a stale listener can arrive after two leases.
fn settle(lease: Duration) {
    sleep(lease * 2 + Duration::from_secs(1));
}

// ---------------------------------------------------------------------------
// R1 + R2: SIGKILLed listeners, and one SIGKILLed redis-server, in one run.
// ---------------------------------------------------------------------------

fn r1(cfg: &Cfg, rng: &mut Rng) -> Vec<Row> {
    let (messages, kills_wanted, latency) = if cfg.quick {
        (60, 20, Duration::from_millis(900))
    } else {
        (150, 50, Duration::from_millis(1200))
    };
    let lease = Duration::from_secs(2);
    let deadline = Instant::now() + Duration::from_secs(if cfg.quick { 150 } else { 300 });
    let mut checks = Checks::default();
    let mut r2 = Checks::default();
    let mut rig = Rig::new("r1", cfg, latency, &[]);
    let msgs = batch("r1", 0, messages);
    for e in rig.publish_all(&msgs, 2) {
        checks.fail(e);
    }
    let args = [
        "listen",
        "orchestrator",
        "--lease",
        "2",
        "--no-ingest",
        "--concurrency",
        "2",
    ];
    for _ in 0..3 {
        rig.spawn(&args);
    }

    let mut kills = 0;
    let mut in_flight_at_kills = 0;
    let mut crash: Option<(f64, Vec<f64>, usize)> = None;
    let mut crash_calls_bound = 0;
    let mut last_progress = Instant::now();
    // Kills every half model call on average spread the 50 over the whole
    // drain (3 listeners × 2 slots take about latency/6 per message).
    let pace = latency.as_millis() as u64;
    while kills < kills_wanted && Instant::now() < deadline {
        sleep(rng.millis(pace * 3 / 10, pace * 7 / 10));
        if rig
            .tally(&msgs)
            .is_some_and(|t| t.processed + t.dead_lettered.len() == t.sent)
        {
            break;
        }
        if crash.is_none() && kills >= kills_wanted / 2 {
            let (report, bound) = crash_redis(&mut rig, &mut r2, latency);
            crash = Some(report);
            crash_calls_bound = bound;
            continue;
        }
        let now = Instant::now();
        let mut candidates = Vec::new();
        for slot in 0..rig.slots.len() {
            let key = rig.current(slot).key.clone();
            let flying = rig.model.in_flight(&key, now).len();
            if flying > 0 && rig.current(slot).running() {
                candidates.push((slot, flying));
            }
        }
        if candidates.is_empty() {
            continue;
        }
        let (slot, flying) = candidates[rng.below(candidates.len())];
        rig.current(slot).kill();
        rig.respawn(slot, &args);
        kills += 1;
        in_flight_at_kills += flying;
        if last_progress.elapsed() > Duration::from_secs(5) {
            last_progress = Instant::now();
            let done = rig.tally(&msgs).map(|t| t.processed).unwrap_or(0);
            eprintln!("  r1: {kills} kills, {done}/{messages} processed");
        }
    }
    for gone in rig.exited_slots() {
        checks.fail(gone);
    }
    if !rig.wait_all(&msgs, deadline) {
        checks.fail("timed out waiting for every message");
    }
    settle(lease);
    let t = rig.final_tally(&msgs);
    checks.tally(&t);
    checks.check(
        kills == kills_wanted,
        format!("only {kills} of {kills_wanted} kills landed mid-message before the drain"),
    );
    for gone in rig.exited_slots() {
        checks.fail(gone);
    }
    rig.stop_all(&mut checks);
    rig.check_logs(&mut checks);

    let calls = rig.model.total();
    let reexec = calls.saturating_sub(t.sent);
    let bound = in_flight_at_kills + crash_calls_bound;
    let most = rig
        .procs
        .iter()
        .flat_map(|p| {
            lock(&p.lines)
                .iter()
                .filter(|(_, v)| v["msg_id"].is_string())
                .filter_map(|(_, v)| v["deliveries"].as_u64())
                .max()
        })
        .max()
        .unwrap_or(0);
    let overlapping = rig.model.overlapping();
    let r1_extra = format!(
        "3 listeners, {kills} SIGKILLs mid-message; model calls {calls}, re-executions {reexec} (in flight at kills + crash: {bound}; {overlapping} while the same process already waited on that message); most deliveries of a committed message {most}; dead-lettered {} (+{} after their effect)",
        t.dead_lettered.len(),
        t.dead_after_effect.len()
    );
    for d in &t.dead_after_effect {
        eprintln!("  r1: note: dead-lettered after its effect was written: {d}");
    }
    let r1_row = Row::new("R1 SIGKILL listeners", &t, r1_extra, &checks);

    // R2 shares the run: its numbers are the run's, plus the crash checks.
    let r2_extra = match &crash {
        Some((down, resumes, same)) => {
            let worst = resumes.iter().copied().fold(0.0_f64, f64::max);
            format!(
                "redis down {down:.1} s; resume max {worst:.2} s ({}); same pids {same}/3; not counted here: {} dead-lettered by the listener kills (R1)",
                resumes
                    .iter()
                    .map(|r| format!("{r:.2}"))
                    .collect::<Vec<_>>()
                    .join(", "),
                t.dead_lettered.len()
            )
        }
        None => {
            r2.fail("the run drained before redis-server could be killed");
            "no crash".to_string()
        }
    };
    // A message the listener kills dead-lettered (see R1) is not one the
    // crash lost: R2 counts what vanished or stayed stuck.
    let r2_tally = Tally {
        sent: t.sent,
        processed: t.processed,
        lost: t
            .lost
            .iter()
            .filter(|id| !t.dead_lettered.iter().any(|d| d.starts_with(id.as_str())))
            .cloned()
            .collect(),
        dead_lettered: Vec::new(),
        dead_after_effect: Vec::new(),
        stuck: t.stuck.clone(),
        duplicated: t.duplicated,
        dup_ids: t.dup_ids.clone(),
        effects: t.effects.clone(),
    };
    r2.tally(&r2_tally);
    r2.failures.extend(
        checks
            .failures
            .iter()
            .filter(|f| f.contains("exit") || f.contains("panicked"))
            .cloned(),
    );
    let r2_row = Row::new("R2 SIGKILL redis-server", &r2_tally, r2_extra, &r2);
    rig.finish(&checks, cfg);
    if !r2.pass() {
        rig.keep = true;
    }
    vec![r1_row, r2_row]
}

/// Kills redis-server, restarts it after 2 s on the same port and dir, and
/// measures how soon each (unrestarted) listener works again. Returns (down
/// seconds, resume seconds per listener, listeners with unchanged pids) and
/// the number of model calls whose result the crash may void.
fn crash_redis(
    rig: &mut Rig,
    checks: &mut Checks,
    latency: Duration,
) -> ((f64, Vec<f64>, usize), usize) {
    let slots = rig.slots.len();
    let pids: Vec<u32> = (0..slots).map(|s| rig.current(s).pid()).collect();
    let killed_at = Instant::now();
    // Calls answered in the last second before the crash may lose their
    // memo and commit (AOF everysec), calls in flight lose their commit.
    let voidable = rig
        .model
        .started_after(killed_at - latency - Duration::from_millis(1100));
    eprintln!("  r1: SIGKILL redis-server");
    rig.kill_redis();
    sleep(Duration::from_secs(2));
    rig.restart_redis();
    let back = Instant::now();
    let down = secs(back - killed_at);
    let mut resumes = vec![f64::NAN; slots];
    let limit = Duration::from_secs(15);
    wait_for(limit, || {
        for (slot, resume) in resumes.iter_mut().enumerate() {
            if !resume.is_nan() {
                continue;
            }
            let l = &rig.procs[rig.slots[slot]];
            let call = rig.model.first_call_after(&l.key, back);
            let line = l
                .committed()
                .into_iter()
                .map(|(t, _)| t)
                .filter(|t| *t > back)
                .min();
            if let Some(t) = [call, line].into_iter().flatten().min() {
                *resume = secs(t - back);
            }
        }
        resumes.iter().all(|r| !r.is_nan())
    });
    let mut same = 0;
    for (slot, pid) in pids.iter().enumerate() {
        let l = rig.current(slot);
        if l.pid() == *pid && l.running() {
            same += 1;
        } else {
            checks.fail(format!(
                "listener pid {pid} did not survive the redis crash"
            ));
        }
    }
    for (slot, r) in resumes.iter_mut().enumerate() {
        if r.is_nan() {
            checks.fail(format!(
                "listener {slot} did not resume within {} s of redis returning",
                limit.as_secs()
            ));
            *r = secs(limit);
        } else {
            checks.check(
                *r <= 5.0,
                format!("listener {slot} resumed {r:.2} s after redis returned (> 5 s)"),
            );
        }
    }
    // Before more kills: every survivor holds its consumer name again, so a
    // restarted listener cannot pick a name whose heartbeat the crash lost.
    let registered = wait_for(Duration::from_secs(10), || rig.heartbeats() >= slots);
    checks.check(registered, "listeners did not re-register within 10 s");
    eprintln!(
        "  r1: redis back after {down:.1} s; listeners resumed in {:?} s",
        resumes
            .iter()
            .map(|r| (r * 100.0).round() / 100.0)
            .collect::<Vec<_>>()
    );
    ((down, resumes, same), voidable)
}

// ---------------------------------------------------------------------------
// R4/R5: dropped connections every second, then a paused server.
// ---------------------------------------------------------------------------

fn r4(cfg: &Cfg, _rng: &mut Rng) -> Vec<Row> {
    let (chaos_secs, pause_ms) = if cfg.quick { (10, 4000) } else { (30, 10_000) };
    let lease = Duration::from_secs(2);
    let deadline = Instant::now() + Duration::from_secs(if cfg.quick { 90 } else { 180 });
    let mut checks = Checks::default();
    let mut rig = Rig::new("r4", cfg, Duration::from_millis(300), &[]);
    // Ingest stays on: the listeners then hold pub/sub connections to drop.
    let args = [
        "listen",
        "orchestrator",
        "--lease",
        "2",
        "--concurrency",
        "2",
    ];
    rig.spawn(&args);
    rig.spawn(&args);
    let ready = wait_for(Duration::from_secs(20), || {
        rig.heartbeats() >= 2 && rig.subscribers() >= 2
    });
    checks.check(
        ready,
        "listeners not ready (heartbeat and subscription) within 20 s",
    );

    let env = rig.env.clone();
    let stop = AtomicBool::new(false);
    let sent: Mutex<Vec<Msg>> = Mutex::new(Vec::new());
    let unacked: Mutex<Vec<String>> = Mutex::new(Vec::new());
    let (mut dropped_normal, mut dropped_pubsub) = (0_u64, 0_u64);
    let (mut resub_max, mut resub_late) = (0.0_f64, 0);
    std::thread::scope(|s| {
        s.spawn(|| {
            let mut seq = 0;
            while !stop.load(Ordering::Relaxed) {
                let m = batch("r4", seq, 1).remove(0);
                seq += 1;
                match env.publish(&m, Duration::from_secs(40)) {
                    Ok(()) => lock(&sent).push(m),
                    Err(e) => {
                        lock(&unacked).push(e);
                        lock(&sent).push(m);
                    }
                }
                sleep(Duration::from_millis(250));
            }
        });
        for _ in 0..chaos_secs {
            let round = Instant::now();
            let n = rig.redis.cli(&["CLIENT", "KILL", "TYPE", "normal"]);
            dropped_normal += n.parse::<u64>().unwrap_or(0);
            let n = rig.redis.cli(&["CLIENT", "KILL", "TYPE", "pubsub"]);
            dropped_pubsub += n.parse::<u64>().unwrap_or(0);
            // How soon both bridges are subscribed again (R4: within 1 s).
            let killed = Instant::now();
            if wait_for(Duration::from_millis(950), || rig.subscribers() >= 2) {
                resub_max = resub_max.max(secs(killed.elapsed()));
            } else {
                resub_late += 1;
            }
            sleep(Duration::from_secs(1).saturating_sub(round.elapsed()));
        }
        eprintln!("  r4: CLIENT PAUSE {pause_ms} ALL");
        let ok = rig
            .redis
            .cli(&["CLIENT", "PAUSE", &pause_ms.to_string(), "ALL"]);
        if ok != "OK" {
            eprintln!("  r4: CLIENT PAUSE answered {ok:?}");
        }
        // Messages keep being produced during the pause (their publishes
        // wait for it) and for a second after it.
        sleep(Duration::from_millis(pause_ms + 1000));
        stop.store(true, Ordering::Relaxed);
    });
    checks.check(
        resub_late == 0,
        format!(
            "{resub_late} of {chaos_secs} pub/sub kills not followed by a resubscription within 1 s"
        ),
    );
    checks.check(
        wait_for(Duration::from_secs(5), || rig.subscribers() >= 2),
        "listeners not subscribed 5 s after the pause",
    );
    let msgs = sent.into_inner().unwrap_or_else(|p| p.into_inner());
    let unacked = unacked.into_inner().unwrap_or_else(|p| p.into_inner());
    for e in &unacked {
        checks.fail(format!("never acknowledged: {e}"));
    }
    for gone in rig.exited_slots() {
        checks.fail(gone);
    }
    if !rig.wait_all(&msgs, deadline) {
        checks.fail("timed out waiting for every message");
    }
    settle(lease);
    let t = rig.final_tally(&msgs);
    checks.tally(&t);
    let exits = rig.exited_slots();
    let no_exit = exits.is_empty();
    for gone in exits {
        checks.fail(gone);
    }
    rig.stop_all(&mut checks);
    rig.check_logs(&mut checks);
    let extra = format!(
        "CLIENT KILL normal+pubsub every 1 s for {chaos_secs} s ({dropped_normal}+{dropped_pubsub} conns), resubscribed within {resub_max:.2} s; PAUSE {pause_ms} ms ALL; {}",
        if no_exit {
            "no listener exited"
        } else {
            "listeners exited"
        }
    );
    let row = Row::new("R4/R5 dropped conns + pause", &t, extra, &checks);
    rig.finish(&checks, cfg);
    vec![row]
}

// ---------------------------------------------------------------------------
// R6: a listener stopped for twice its lease, then continued.
// ---------------------------------------------------------------------------

fn r6(cfg: &Cfg, rng: &mut Rng) -> Vec<Row> {
    let rounds = if cfg.quick { 3 } else { 6 };
    let lease = Duration::from_secs(2);
    let deadline = Instant::now() + Duration::from_secs(if cfg.quick { 90 } else { 180 });
    let mut checks = Checks::default();
    let mut rig = Rig::new("r6", cfg, Duration::from_millis(1000), &[]);
    let msgs = batch("r6", 0, rounds * 16);
    for e in rig.publish_all(&msgs, 2) {
        checks.fail(e);
    }
    let args = [
        "listen",
        "orchestrator",
        "--lease",
        "2",
        "--no-ingest",
        "--concurrency",
        "2",
    ];
    rig.spawn(&args);
    rig.spawn(&args);
    let mut stopped = 0;
    let mut stopped_calls = 0;
    for _ in 0..rounds {
        // Pick a listener that is waiting on the model right now.
        let mut victim = None;
        wait_for(Duration::from_secs(10), || {
            let now = Instant::now();
            let busy: Vec<usize> = (0..rig.slots.len())
                .filter(|s| {
                    let key = &rig.procs[rig.slots[*s]].key;
                    !rig.model.in_flight(key, now).is_empty()
                })
                .collect();
            if busy.is_empty() {
                return false;
            }
            victim = Some(busy[rng.below(busy.len())]);
            true
        });
        let Some(slot) = victim else {
            checks.fail("no listener had work in flight to stop");
            break;
        };
        let l = rig.current(slot);
        let pid = l.pid();
        stopped_calls += rig
            .model
            .in_flight(&rig.procs[rig.slots[slot]].key, Instant::now())
            .len();
        send_signal(pid, libc::SIGSTOP);
        sleep(lease * 2);
        send_signal(pid, libc::SIGCONT);
        stopped += 1;
        sleep(Duration::from_secs(1));
    }
    for gone in rig.exited_slots() {
        checks.fail(gone);
    }
    if !rig.wait_all(&msgs, deadline) {
        checks.fail("timed out waiting for every message");
    }
    settle(lease);
    let t = rig.final_tally(&msgs);
    checks.tally(&t);
    rig.stop_all(&mut checks);
    rig.check_logs(&mut checks);
    let aborted = rig.log_count("lost to another consumer");
    let refused = rig.log_count("nothing committed by this listener");
    let extra = format!(
        "{stopped} SIGSTOPs of 4 s (lease 2 s) with {stopped_calls} model calls in flight; renewals aborted {aborted}, stale commits refused {refused}"
    );
    let row = Row::new("R6 SIGSTOP past lease", &t, extra, &checks);
    rig.finish(&checks, cfg);
    vec![row]
}

// ---------------------------------------------------------------------------
// R7: a poison message among healthy ones.
// ---------------------------------------------------------------------------

fn poison(cfg: &Cfg, _rng: &mut Rng) -> Vec<Row> {
    let healthy_n = if cfg.quick { 20 } else { 40 };
    let max_deliveries = 3;
    let lease = Duration::from_secs(1);
    let deadline = Instant::now() + Duration::from_secs(90);
    let mut checks = Checks::default();
    // No SDK retries: one model call per delivery.
    let mut rig = Rig::new(
        "poison",
        cfg,
        Duration::from_millis(300),
        &[("FULLSEND_API_MAX_RETRIES", "0")],
    );
    let max = max_deliveries.to_string();
    let args = [
        "listen",
        "orchestrator",
        "--lease",
        "1",
        "--max-deliveries",
        &max,
        "--no-ingest",
        "--concurrency",
        "2",
    ];
    rig.spawn(&args);
    rig.spawn(&args);
    checks.check(
        wait_for(Duration::from_secs(20), || rig.heartbeats() >= 2),
        "listeners not ready within 20 s",
    );
    let bad = Msg {
        id: "poison-00000".into(),
        kind: Kind::Poison,
    };
    let healthy = batch("poison", 1, healthy_n);
    let env = rig.env.clone();
    if let Err(e) = env.publish(&bad, Duration::from_secs(30)) {
        checks.fail(e);
    }
    let first = Instant::now();
    let mut dead_at = None;
    std::thread::scope(|s| {
        s.spawn(|| {
            for m in &healthy {
                if let Err(e) = env.publish(m, Duration::from_secs(30)) {
                    eprintln!("  poison: {e}");
                }
                sleep(Duration::from_millis(100));
            }
        });
        if wait_for(Duration::from_secs(30), || !rig.dlq().is_empty()) {
            dead_at = Some(Instant::now());
        }
    });
    if !rig.wait_all(&healthy, deadline) {
        checks.fail("timed out waiting for the healthy messages");
    }
    settle(lease);
    let mut t = rig.final_tally(&healthy);
    checks.tally(&t);
    let dlq = rig.dlq();
    let calls = rig.model.calls_of(&bad.id);
    let deliveries = dlq
        .first()
        .and_then(|f| f.get("deliveries"))
        .cloned()
        .unwrap_or_default();
    let poisoned = dlq
        .first()
        .and_then(|f| f.get("data"))
        .is_some_and(|d| d.contains(&bad.id));
    checks.check(
        dlq.len() == 1,
        format!("DLQ holds {} entries, not 1", dlq.len()),
    );
    checks.check(poisoned, "the DLQ entry is not the poison message");
    // The entry is dead-lettered on the delivery after the last attempt:
    // `max` model calls, and the count recorded at dead-lettering is max + 1.
    checks.check(
        calls == max_deliveries,
        format!("poison got {calls} model calls, not --max-deliveries {max_deliveries}"),
    );
    checks.check(
        deliveries == (max_deliveries + 1).to_string(),
        format!(
            "DLQ deliveries field {deliveries:?}, expected {} (dead-lettered on the delivery after the {max_deliveries}th)",
            max_deliveries + 1
        ),
    );
    let dl_lines: usize = rig.procs.iter().map(Listener::dead_lettered).sum();
    checks.check(
        dl_lines == 1,
        format!("{dl_lines} dead_lettered lines, not 1"),
    );
    let requests = rig.requests().unwrap_or_default();
    checks.check(
        !requests.contains_key(&bad.id),
        "the poison message caused an experiment_request",
    );
    let flowed = match dead_at {
        Some(end) => rig
            .procs
            .iter()
            .flat_map(Listener::committed)
            .filter(|(at, _)| *at > first && *at < end)
            .count(),
        None => {
            checks.fail("the poison message was not dead-lettered within 30 s");
            0
        }
    };
    checks.check(
        flowed > 0,
        "no healthy message was committed while the poison message was retried",
    );
    rig.stop_all(&mut checks);
    rig.check_logs(&mut checks);
    t.sent += 1;
    if poisoned && dlq.len() == 1 {
        t.processed += 1;
    } else {
        t.lost.push(bad.id.clone());
    }
    let took = dead_at.map(|d| secs(d - first)).unwrap_or(f64::NAN);
    let extra = format!(
        "dead-lettered after {calls} model calls (--max-deliveries {max_deliveries}, field deliveries={deliveries}) in {took:.1} s (lease 1 s); {flowed} healthy committed meanwhile"
    );
    let row = Row::new("R7 poison message", &t, extra, &checks);
    rig.finish(&checks, cfg);
    vec![row]
}

// ---------------------------------------------------------------------------
// R8: SIGTERM with work in flight.
// ---------------------------------------------------------------------------

fn r8(cfg: &Cfg, _rng: &mut Rng) -> Vec<Row> {
    let deadline = Instant::now() + Duration::from_secs(120);
    let mut checks = Checks::default();
    let mut rig = Rig::new("r8", cfg, Duration::from_millis(2000), &[]);

    // A: the work in flight finishes within the grace period.
    let a = batch("r8a", 0, 8);
    for e in rig.publish_all(&a, 2) {
        checks.fail(e);
    }
    let args_a = [
        "listen",
        "orchestrator",
        "--no-ingest",
        "--concurrency",
        "4",
        "--lease",
        "5",
        "--grace",
        "10",
    ];
    let slot = rig.spawn(&args_a);
    let key = rig.current(slot).key.clone();
    let busy = wait_for(Duration::from_secs(10), || {
        rig.model.in_flight(&key, Instant::now()).len() >= 4
    });
    checks.check(busy, "A: the listener never had 4 messages in flight");
    let flying = rig.model.in_flight(&key, Instant::now());
    let (code_a, took_a) = rig.current(slot).terminate(Duration::from_secs(15));
    checks.check(
        code_a == Some(0),
        format!("A: exit {code_a:?} after SIGTERM"),
    );
    checks.check(
        took_a <= Duration::from_secs(11),
        format!("A: exit after {:.1} s, grace 10 s", secs(took_a)),
    );
    let done = rig.committed();
    let finished = flying.iter().filter(|id| done.contains_key(*id)).count();
    checks.check(
        finished == flying.len(),
        format!(
            "A: {finished} of {} messages in flight finished before the exit",
            flying.len()
        ),
    );
    rig.respawn(slot, &args_a);
    if !rig.wait_all(&a, deadline) {
        checks.fail("A: timed out waiting for every message");
    }
    let (code, _) = rig.current(slot).terminate(Duration::from_secs(15));
    checks.check(
        code == Some(0),
        format!("A: restarted listener exit {code:?}"),
    );

    // B: the grace period is shorter than the work; it stays pending and a
    // restart takes it up from its own PEL at once.
    rig.model.set_latency(Duration::from_millis(4000));
    let b = batch("r8b", 0, 4);
    for e in rig.publish_all(&b, 2) {
        checks.fail(e);
    }
    let args_b = [
        "listen",
        "orchestrator",
        "--no-ingest",
        "--concurrency",
        "4",
        "--lease",
        "5",
        "--grace",
        "1",
    ];
    rig.respawn(slot, &args_b);
    let key = rig.current(slot).key.clone();
    let busy = wait_for(Duration::from_secs(10), || {
        rig.model.in_flight(&key, Instant::now()).len() >= 4
    });
    checks.check(busy, "B: the listener never had 4 messages in flight");
    let (code_b, took_b) = rig.current(slot).terminate(Duration::from_secs(15));
    checks.check(
        code_b == Some(0),
        format!("B: exit {code_b:?} after SIGTERM"),
    );
    checks.check(
        took_b <= Duration::from_secs(2),
        format!("B: exit after {:.1} s, grace 1 s", secs(took_b)),
    );
    let left = rig.pending().unwrap_or(0);
    checks.check(
        left == 4,
        format!("B: {left} entries left pending, expected 4"),
    );
    rig.respawn(slot, &args_b);
    let spawned = rig.current(slot).spawned;
    let key = rig.current(slot).key.clone();
    let resumed = wait_for(Duration::from_secs(10), || {
        rig.model.first_call_after(&key, spawned).is_some()
    });
    let resume = rig
        .model
        .first_call_after(&key, spawned)
        .map(|t| secs(t - spawned))
        .unwrap_or(f64::NAN);
    checks.check(
        resumed && resume <= 1.0,
        format!(
            "B: the restarted listener took {resume:.3} s to resume its pending entries (> 1 s)"
        ),
    );
    let all: Vec<Msg> = a.iter().chain(b.iter()).cloned().collect();
    if !rig.wait_all(&all, deadline) {
        checks.fail("B: timed out waiting for every message");
    }
    settle(Duration::from_secs(1));
    let t = rig.final_tally(&all);
    checks.tally(&t);
    rig.stop_all(&mut checks);
    rig.check_logs(&mut checks);
    let extra = format!(
        "A: exit {} in {:.1} s (grace 10 s), {finished}/{} in flight finished; B: exit {} in {:.1} s (grace 1 s), {left} left pending, restart resumed its PEL in {:.0} ms",
        code_a.map_or("?".into(), |c| c.to_string()),
        secs(took_a),
        flying.len(),
        code_b.map_or("?".into(), |c| c.to_string()),
        secs(took_b),
        resume * 1000.0,
    );
    let row = Row::new("R8 SIGTERM in flight", &t, extra, &checks);
    rig.finish(&checks, cfg);
    vec![row]
}

// ---------------------------------------------------------------------------
// R13: a queued backlog, drain time and memory.
// ---------------------------------------------------------------------------

fn r13(cfg: &Cfg, _rng: &mut Rng) -> Vec<Row> {
    let n = if cfg.quick { 300 } else { 1000 };
    let latency = Duration::from_millis(200);
    let (listeners, concurrency) = (2, 8);
    let ideal = latency.as_secs_f64() * n as f64 / (listeners * concurrency) as f64;
    let mut checks = Checks::default();
    let mut rig = Rig::new("r13", cfg, latency, &[]);
    let msgs = batch("r13", 0, n);
    let queued_at = Instant::now();
    for e in rig.publish_all(&msgs, 2) {
        checks.fail(e);
    }
    eprintln!(
        "  r13: {n} messages queued in {:.1} s",
        secs(queued_at.elapsed())
    );
    let conc = concurrency.to_string();
    let args = [
        "listen",
        "orchestrator",
        "--no-ingest",
        "--lease",
        "30",
        "--concurrency",
        &conc,
    ];
    let start = Instant::now();
    for _ in 0..listeners {
        rig.spawn(&args);
    }
    let pids: Vec<u32> = (0..listeners).map(|s| rig.current(s).pid()).collect();
    let deadline = start + Duration::from_secs_f64(ideal * 4.0 + 30.0);
    let mut rss: Vec<Vec<f64>> = vec![Vec::new(); listeners];
    let mut next_quarter = 1;
    let mut max_pel = 0;
    let mut last_pel = Instant::now() - Duration::from_secs(1);
    let total = |rig: &Rig| -> usize { rig.procs.iter().map(|p| p.committed().len()).sum() };
    while next_quarter <= 4 && Instant::now() < deadline {
        let done = total(&rig);
        while next_quarter <= 4 && done * 4 >= n * next_quarter {
            for (i, pid) in pids.iter().enumerate() {
                rss[i].push(rss_mb(*pid).unwrap_or(f64::NAN));
            }
            next_quarter += 1;
        }
        if last_pel.elapsed() >= Duration::from_millis(250) {
            last_pel = Instant::now();
            max_pel = max_pel.max(rig.pending().unwrap_or(0));
        }
        sleep(Duration::from_millis(20));
    }
    let last_line = rig
        .procs
        .iter()
        .flat_map(Listener::committed)
        .map(|(t, _)| t)
        .max();
    let drain = last_line.map(|t| secs(t - start)).unwrap_or(f64::NAN);
    let ratio = drain / ideal;
    if next_quarter <= 4 {
        checks.fail(format!(
            "drain incomplete after {:.0} s",
            secs(start.elapsed())
        ));
    }
    settle(Duration::from_millis(500));
    let t = rig.final_tally(&msgs);
    checks.tally(&t);
    checks.check(
        ratio <= 1.2,
        format!("drain {drain:.1} s is {ratio:.2}× the ideal {ideal:.1} s (> 1.2)"),
    );
    checks.check(
        max_pel <= (listeners * concurrency) as u64,
        format!("PEL reached {max_pel}, above {listeners} × {concurrency}"),
    );
    let mut rss_text = Vec::new();
    for (i, samples) in rss.iter().enumerate() {
        let (first, last) = (
            samples.first().copied().unwrap_or(f64::NAN),
            samples.last().copied().unwrap_or(f64::NAN),
        );
        rss_text.push(format!("{first:.1}→{last:.1}"));
        // Flat: no more than 20% (and 2 MB of slack) above the 25% sample.
        checks.check(
            last <= first * 1.2 + 2.0,
            format!("listener {i}: RSS grew {first:.1} → {last:.1} MB (samples {samples:.1?})"),
        );
    }
    for gone in rig.exited_slots() {
        checks.fail(gone);
    }
    rig.stop_all(&mut checks);
    rig.check_logs(&mut checks);
    let extra = format!(
        "{listeners}×c{concurrency}, latency 200 ms: drain {drain:.1} s / ideal {ideal:.1} s = {ratio:.2}; RSS MB {}; PEL max {max_pel}",
        rss_text.join(", ")
    );
    let row = Row::new("R13 backlog drain", &t, extra, &checks);
    rig.finish(&checks, cfg);
    vec![row]
}

// ---------------------------------------------------------------------------
// Main.
// ---------------------------------------------------------------------------

type Scenario = fn(&Cfg, &mut Rng) -> Vec<Row>;

/// Mixed traffic: every message kind of `tests/common/traffic.rs` (escalations the model answers
/// with each action, status notices, `tool_built`) in bursts through 3 Orchestrator listeners and
/// a FULLSEND listener designing with `--engine api`, with SIGKILLs of listeners that have model
/// calls in flight and one redis-server SIGKILL and restart. Every effect type of every input is
/// counted by `ledger.rs`: published messages through their causation chain, learnings and
/// worklist lines, roundtable runs, and experiment state changes from the AOF.
fn mixed(cfg: &Cfg, rng: &mut Rng) -> Vec<Row> {
    mixed_in(cfg, rng, false)
}

/// The same traffic through both daemons in their pipeline form (`listen CHANNEL --exec`),
/// with SIGKILLs of pipeline stages (`think`, `design`) as well as of listeners.
fn mixed_exec(cfg: &Cfg, rng: &mut Rng) -> Vec<Row> {
    mixed_in(cfg, rng, true)
}

/// Stage processes (`fullsend think` / `fullsend design`) of this rig, found by its Redis URL
/// in their environment.
fn stages(rig: &Rig) -> Vec<u32> {
    let url = format!("REDIS_URL={}", rig.env.redis_url);
    let has = |hay: &[u8], n: &[u8]| hay.windows(n.len()).any(|x| x == n);
    let mut out = Vec::new();
    for entry in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let cmdline = std::fs::read(entry.path().join("cmdline")).unwrap_or_default();
        if !(has(&cmdline, b"\0think\0") || has(&cmdline, b"\0design\0")) {
            continue;
        }
        let environ = std::fs::read(entry.path().join("environ")).unwrap_or_default();
        if has(&environ, url.as_bytes()) {
            out.push(pid);
        }
    }
    out
}

fn mixed_in(cfg: &Cfg, rng: &mut Rng, exec: bool) -> Vec<Row> {
    let (bursts, per_burst, kills_wanted) = if cfg.quick { (4, 27, 12) } else { (6, 45, 30) };
    let latency = Duration::from_millis(600);
    let lease = Duration::from_secs(2);
    let deadline = Instant::now() + Duration::from_secs(if cfg.quick { 150 } else { 300 });
    let mut checks = Checks::default();
    let root = tempfile::Builder::new()
        .prefix("fullsend-chaos-roundtable-")
        .tempdir()
        .expect("roundtable dir");
    let runs = root.path().join("runs.log");
    let command = traffic::roundtable_command(root.path(), &runs);
    let command = command.to_string_lossy().to_string();
    let mut rig = Rig::with_model(
        if exec { "mixed-exec" } else { "mixed" },
        cfg,
        Model::mixed(latency),
        &[
            ("FULLSEND_ENGINE", "api"),
            ("FULLSEND_ROUNDTABLE_CMD", &command),
        ],
    );
    let inputs = traffic::mixed("x", 0, bursts * per_burst);
    match rig.conn() {
        Some(mut c) => {
            if let Err(e) = traffic::seed(&mut c, &inputs) {
                checks.fail(format!("seeding: {e}"));
            }
            if let Err(e) = traffic::seed_worklist(&rig.env.root.join("context"), &inputs) {
                checks.fail(format!("seeding the worklist: {e}"));
            }
        }
        None => checks.fail("no connection for seeding"),
    }
    let common = ["--lease", "2", "--concurrency", "2", "--no-ingest"];
    let form = |role: &'static str, channel: &'static str, pipeline: &'static str| {
        let mut args = if exec {
            vec!["listen", channel, "--group", role, "--exec", pipeline]
        } else {
            vec!["listen", role]
        };
        args.extend(common);
        args
    };
    let orchestrator = form(
        "orchestrator",
        "fullsend:to_orchestrator",
        "fullsend think | fullsend dispatch",
    );
    let fullsend = form("fullsend", "fullsend:to_fullsend", "fullsend design");
    for _ in 0..3 {
        rig.spawn(&orchestrator);
    }
    let fullsend_slot = rig.spawn(&fullsend);
    let args_of = |slot: usize| {
        if slot == fullsend_slot {
            &fullsend[..]
        } else {
            &orchestrator[..]
        }
    };
    let aof = rig.redis.dir().join("appendonlydir");
    let context = rig.env.root.join("context");
    let tallies = |rig: &Rig| -> Option<Vec<ledger::Tally>> {
        let mut conn = rig.conn()?;
        let sources = ledger::Sources {
            aof_dir: &aof,
            context: &context,
            runs: &runs,
        };
        let l = ledger::read(&mut conn, &inputs, &sources).ok()?;
        Some(ledger::compare(&inputs, &l))
    };

    let mut kills = 0;
    let mut stage_kills = 0;
    let mut crashed = None;
    let mut faults = Vec::new();
    for (n, burst) in inputs.chunks(per_burst).enumerate() {
        // A durable producer: XADD until acknowledged (the msg_id is ours, so an answer lost
        // with a dying server adds nothing the listeners would act on twice).
        for input in burst {
            let stream = format!(
                "fullsend:{{{}}}:stream",
                input.channel().trim_start_matches("fullsend:")
            );
            let sent = wait_for(Duration::from_secs(30), || {
                rig.conn().is_some_and(|mut c| {
                    redis::cmd("XADD")
                        .arg(&stream)
                        .arg("*")
                        .arg("data")
                        .arg(input.json())
                        .query::<String>(&mut c)
                        .is_ok()
                })
            });
            checks.check(sent, format!("publishing {} failed", input.id));
        }
        if n == bursts / 2 && crashed.is_none() {
            sleep(latency / 2);
            rig.kill_redis();
            sleep(Duration::from_secs(2));
            rig.restart_redis();
            crashed = Some(Instant::now());
        }
        if n == bursts / 2 + 1 {
            // Every connection dropped, then the server paused.
            sleep(latency / 2);
            for kind in ["normal", "pubsub"] {
                rig.redis.cli(&["CLIENT", "KILL", "TYPE", kind]);
            }
            rig.redis.cli(&["CLIENT", "PAUSE", "1500", "ALL"]);
            faults.push("CLIENT KILL + PAUSE 1.5 s");
        }
        if n == bursts - 1 {
            // An Orchestrator listener stopped past its lease (2 s) and its name lease (8 s)
            // with calls in flight: the others take its entries; it must commit none of them.
            sleep(latency / 2);
            let pid = rig.current(0).pid();
            send_signal(pid, libc::SIGSTOP);
            sleep(Duration::from_secs(11));
            send_signal(pid, libc::SIGCONT);
            faults.push("SIGSTOP 11 s");
        }
        let target = kills_wanted * (n + 1) / bursts;
        let burst_end = Instant::now() + Duration::from_secs(20);
        while kills < target && Instant::now() < burst_end {
            sleep(rng.millis(latency.as_millis() as u64 / 3, latency.as_millis() as u64));
            let now = Instant::now();
            let mut candidates = Vec::new();
            for slot in 0..rig.slots.len() {
                let key = rig.current(slot).key.clone();
                if !rig.model.in_flight(&key, now).is_empty() && rig.current(slot).running() {
                    candidates.push(slot);
                }
            }
            if candidates.is_empty() {
                continue;
            }
            // In the pipeline form every other kill takes a stage instead of a listener.
            if exec && kills % 2 == 1 {
                let victims = stages(&rig);
                if let Some(pid) = victims.get(rng.below(victims.len().max(1))) {
                    send_signal(*pid, libc::SIGKILL);
                    stage_kills += 1;
                    kills += 1;
                    continue;
                }
            }
            let slot = candidates[rng.below(candidates.len())];
            rig.current(slot).kill();
            rig.respawn(slot, args_of(slot));
            kills += 1;
        }
        eprintln!("  mixed: burst {}/{bursts} sent, {kills} kills", n + 1);
    }
    let complete = wait_for(deadline.saturating_duration_since(Instant::now()), || {
        tallies(&rig).is_some_and(|t| ledger::complete(&t))
    });
    if !complete {
        checks.fail("timed out waiting for every effect");
    }
    settle(lease);
    let tallies = tallies(&rig).unwrap_or_default();
    for f in ledger::failures(&tallies) {
        checks.fail(f);
    }
    checks.check(
        kills == kills_wanted,
        format!("only {kills} of {kills_wanted} kills landed mid-call"),
    );
    checks.check(crashed.is_some(), "redis-server was not restarted");
    let dead = rig.dlq().len();
    checks.check(dead == 0, format!("{dead} dead-lettered"));
    for gone in rig.exited_slots() {
        checks.fail(gone);
    }
    rig.stop_all(&mut checks);
    rig.check_logs(&mut checks);

    let mut t = Tally {
        sent: inputs.len(),
        ..Tally::default()
    };
    let mut lost_ids: BTreeSet<String> = BTreeSet::new();
    for x in &tallies {
        lost_ids.extend(x.lost.iter().cloned());
        t.duplicated += x.duplicated.len();
        t.dup_ids
            .extend(x.duplicated.iter().map(|d| format!("{}: {d}", x.effect)));
        t.effects.push((
            x.effect.clone(),
            effect_cell(x.got, x.expected, x.duplicated.len()),
        ));
    }
    t.lost = lost_ids.into_iter().collect();
    t.processed = t.sent - t.lost.len();
    let kinds = traffic::Kind::ALL.len();
    let extra = format!(
        "{} kinds × {} in {bursts} bursts; 3 orchestrator + 1 fullsend listeners{}, {kills} SIGKILLs mid-call ({stage_kills} of stages), one redis-server SIGKILL and restart, {}; model calls {}; {} effect types counted",
        kinds,
        inputs.len() / kinds,
        if exec { " as --exec pipelines" } else { "" },
        faults.join(", "),
        rig.model.total_all(),
        tallies.len()
    );
    let title = if exec {
        "MX mixed traffic, --exec pipelines"
    } else {
        "M mixed traffic, every effect"
    };
    let row = Row::new(title, &t, extra, &checks);
    rig.finish(&checks, cfg);
    vec![row]
}

const SCENARIOS: [(&str, &[&str], &str, Scenario); 8] = [
    (
        "r1",
        &["r2"],
        "R1+R2: SIGKILL listeners and redis-server",
        r1,
    ),
    ("r4", &["r5"], "R4/R5: CLIENT KILL and CLIENT PAUSE", r4),
    ("r6", &[], "R6: SIGSTOP past the lease", r6),
    ("poison", &["r7"], "R7: poison message", poison),
    ("r8", &[], "R8: SIGTERM with work in flight", r8),
    ("r13", &[], "R13: a queued backlog", r13),
    (
        "mixed",
        &["m"],
        "M: mixed traffic, every effect type",
        mixed,
    ),
    (
        "mixed-exec",
        &["mx"],
        "MX: mixed traffic through the --exec pipelines",
        mixed_exec,
    ),
];

const USAGE: &str =
    "usage: chaos [--quick] [--only r1,r4,r6,poison,r8,r13,mixed,mixed-exec] [--seed N] [--keep] [--bin PATH]
  --quick   smaller runs (about 2 minutes)
  --only    scenarios to run (aliases: r2=r1, r5=r4, r7=poison)
  --seed    seed of the random victims and pauses
  --keep    keep every scenario's dir (listener logs, context); failed ones are always kept
  --bin     the fullsend binary (default: next to this driver's target dir)";

fn default_bin() -> PathBuf {
    // The example lives in target/<profile>/examples/; the binary in target/<profile>/.
    std::env::current_exe()
        .ok()
        .and_then(|p| p.parent()?.parent().map(|d| d.join("fullsend")))
        .unwrap_or_else(|| PathBuf::from("target/release/fullsend"))
}

fn usage_error(text: &str) -> ! {
    eprintln!("chaos: {text}\n{USAGE}");
    std::process::exit(2);
}

fn main() {
    let mut quick = false;
    let mut keep = false;
    let mut only: Option<Vec<String>> = None;
    let mut seed: Option<u64> = None;
    let mut bin = std::env::var_os("FULLSEND_BIN").map(PathBuf::from);
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        match a.as_str() {
            "--quick" => quick = true,
            "--keep" => keep = true,
            "--only" => {
                let v = args
                    .next()
                    .unwrap_or_else(|| usage_error("--only needs a value"));
                only = Some(v.split(',').map(|s| s.trim().to_lowercase()).collect());
            }
            "--seed" => {
                let v = args
                    .next()
                    .unwrap_or_else(|| usage_error("--seed needs a value"));
                seed = Some(
                    v.parse()
                        .unwrap_or_else(|_| usage_error("--seed needs a number")),
                );
            }
            "--bin" => {
                bin = Some(PathBuf::from(
                    args.next()
                        .unwrap_or_else(|| usage_error("--bin needs a path")),
                ));
            }
            "-h" | "--help" => {
                println!("{USAGE}");
                return;
            }
            other => usage_error(&format!("unknown argument {other:?}")),
        }
    }
    let selected: Vec<_> = SCENARIOS
        .iter()
        .filter(|(id, aliases, _, _)| {
            only.as_ref()
                .is_none_or(|o| o.iter().any(|w| w == id || aliases.contains(&w.as_str())))
        })
        .collect();
    if let Some(o) = &only {
        for w in o {
            if !SCENARIOS
                .iter()
                .any(|(id, aliases, _, _)| w == id || aliases.contains(&w.as_str()))
            {
                usage_error(&format!("unknown scenario {w:?}"));
            }
        }
    }
    let bin = bin.unwrap_or_else(default_bin);
    // Absolute: the children run in their scenario's dir.
    let bin = match std::fs::canonicalize(&bin) {
        Ok(b) if b.is_file() => b,
        _ => usage_error(&format!("no fullsend binary at {}", bin.display())),
    };
    if !redis_server::redis_server_available() {
        eprintln!(
            "chaos: redis-server and redis-cli are needed (Debian: apt-get install redis-server)"
        );
        std::process::exit(2);
    }
    guard_signals();
    let seed = seed.unwrap_or_else(|| {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or(1);
        nanos ^ u64::from(std::process::id())
    });
    let mut rng = Rng(seed | 1);
    let cfg = Cfg { quick, keep, bin };
    eprintln!(
        "chaos: {} run of {} scenario(s), seed {seed}, binary {}",
        if quick { "quick" } else { "full" },
        selected.len(),
        cfg.bin.display()
    );
    let started = Instant::now();
    let mut rows = Vec::new();
    for (id, _, title, run) in selected {
        eprintln!("▸ {title}");
        let t0 = Instant::now();
        let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| run(&cfg, &mut rng)));
        match result {
            Ok(r) => rows.extend(r),
            Err(panic) => {
                let text = panic
                    .downcast_ref::<String>()
                    .cloned()
                    .or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string()))
                    .unwrap_or_else(|| "unknown panic".into());
                rows.push(Row {
                    effects: Vec::new(),
                    scenario: id.to_string(),
                    sent: 0,
                    processed: 0,
                    lost: 0,
                    duplicated: 0,
                    extra: "driver panicked".into(),
                    pass: false,
                    notes: vec![format!("driver panicked: {text}")],
                });
            }
        }
        eprintln!("  done in {:.0} s", secs(t0.elapsed()));
    }
    println!();
    print_table(&rows);
    println!();
    print_effects_table(&rows);
    let failed: Vec<&Row> = rows.iter().filter(|r| !r.pass).collect();
    for r in &failed {
        for n in &r.notes {
            eprintln!("FAIL {}: {n}", r.scenario);
        }
    }
    eprintln!(
        "chaos: {} of {} passed in {:.0} s (seed {seed})",
        rows.len() - failed.len(),
        rows.len(),
        secs(started.elapsed())
    );
    std::process::exit(if failed.is_empty() { 0 } else { 1 });
}
