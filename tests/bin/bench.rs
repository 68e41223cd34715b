//! scripts/bench: the speed and memory targets B1–B11, measured against a real
//! redis-server and the in-process Messages-API mock, printed as a table of
//! medians and ratios. Benchmarks, not tests: the machine is shared and noisy,
//! so each row reports what it saw and whether it met its target.

#![allow(dead_code, unreachable_pub)]

#[path = "../common/mock_api.rs"]
mod mock_api;
#[path = "../common/mock_http.rs"]
mod mock_http;
#[path = "../common/redis_server.rs"]
mod redis_server;

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use mock_api::{MockApi, Reply, Usage};
use redis_server::RedisServer;
use serde_json::json;

struct Row {
    id: &'static str,
    what: String,
    measured: String,
    target: String,
    ratio: String,
    pass: bool,
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let only: Option<String> = args
        .iter()
        .position(|a| a == "--only")
        .and_then(|i| args.get(i + 1))
        .map(|s| s.to_lowercase());
    let quick = args.iter().any(|a| a == "--quick");
    let bin = fullsend_bin();
    let mut rows = Vec::new();
    let run = |id: &str| {
        only.as_deref()
            .is_none_or(|o| o.split(',').any(|x| x == id))
    };
    if run("b1") {
        rows.extend(b1(&bin, if quick { 200 } else { 1000 }));
    }
    if run("b2") {
        rows.extend(b2(&bin, quick));
    }
    if run("b3") {
        rows.push(b3(&bin, quick));
    }
    if run("b4") {
        rows.push(b4(&bin));
    }
    if run("b5") {
        rows.extend(b5(&bin));
    }
    if run("b6") {
        rows.push(b6(&bin, if quick { 2000 } else { 10_000 }));
    }
    if run("b7") {
        rows.push(b7(&bin));
    }
    if run("b8") {
        rows.extend(b8(&bin, if quick { 50 } else { 200 }));
    }
    if run("b9") {
        rows.extend(b9(&bin, quick));
    }
    if run("b10") {
        rows.extend(b10(&bin, quick));
    }
    if run("b11") {
        rows.push(b11(&bin));
    }
    print_table(&rows);
    if rows.iter().any(|r| !r.pass) {
        std::process::exit(1);
    }
}

fn fullsend_bin() -> PathBuf {
    if let Ok(p) = std::env::var("FULLSEND_BIN") {
        return PathBuf::from(p);
    }
    let exe = std::env::current_exe().expect("current exe");
    exe.parent()
        .and_then(Path::parent)
        .map(|d| d.join("fullsend"))
        .expect("target dir")
}

fn print_table(rows: &[Row]) {
    println!("| # | benchmark | measured (median) | target | ratio | met |");
    println!("|---|---|---|---|---|---|");
    for r in rows {
        println!(
            "| {} | {} | {} | {} | {} | {} |",
            r.id,
            r.what,
            r.measured,
            r.target,
            r.ratio,
            if r.pass { "yes" } else { "NO" }
        );
    }
}

fn median(mut v: Vec<f64>) -> f64 {
    if v.is_empty() {
        return f64::NAN;
    }
    v.sort_by(|a, b| a.partial_cmp(b).unwrap_or(std::cmp::Ordering::Equal));
    v[v.len() / 2]
}

fn percentile(mut v: Vec<f64>, p: f64) -> f64 {
    if v.is_empty() {
        return f64::NAN;
    }
    v.sort_by(|a, b| a.partial_cmp(b).unwrap_or(std::cmp::Ordering::Equal));
    v[((v.len() - 1) as f64 * p).round() as usize]
}

/// A world: a redis-server, a context dir, env for fullsend.
struct World {
    redis: RedisServer,
    dir: tempfile::TempDir,
    env: Vec<(String, String)>,
}

impl World {
    fn new(mock: &MockApi) -> World {
        let redis = RedisServer::start();
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::create_dir_all(dir.path().join("context")).expect("context");
        let env = vec![
            ("REDIS_URL".into(), redis.url()),
            (
                "CONTEXT_PATH".into(),
                dir.path().join("context").display().to_string(),
            ),
            ("ANTHROPIC_BASE_URL".into(), mock.base_url()),
            ("ANTHROPIC_API_KEY".into(), "bench".into()),
            ("ORCHESTRATOR_MODEL".into(), "claude-opus-5-5".into()),
            ("HOME".into(), dir.path().display().to_string()),
        ];
        World { redis, dir, env }
    }
    fn cmd(&self, bin: &Path, args: &[&str]) -> Command {
        let mut c = Command::new(bin);
        c.env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default());
        for (k, v) in &self.env {
            c.env(k, v);
        }
        c.arg("--no-config").arg("-q").args(args);
        c
    }
    fn conn(&self) -> redis::Connection {
        redis::Client::open(self.redis.url())
            .expect("client")
            .get_connection()
            .expect("conn")
    }
}

fn decision_mock(latency_ms: Arc<AtomicU64>) -> MockApi {
    MockApi::start(move |req, _| {
        let text = mock_api::user_text(req);
        let reply = if text.contains("\"escalation\"") {
            Reply::text(json!({"action": "dispatch_to_fullsend", "reasoning": "bench", "payload": {"idea": "x"}, "priority": "high"}).to_string())
        } else {
            Reply::text(json!({"action": "no_action", "reasoning": "bench"}).to_string())
        };
        let ms = latency_ms.load(Ordering::Relaxed);
        if ms == 0 {
            reply
        } else {
            Reply::Delay(Duration::from_millis(ms), Box::new(reply))
        }
    })
}

fn escalation(i: usize) -> String {
    json!({"type": "escalation", "source": "watcher", "msg_id": format!("bench-{i}-{}", std::process::id()), "original_message": {"content": format!("idea {i}")}}).to_string()
}

const STREAM: &str = "fullsend:{to_orchestrator}:stream";

/// A listener whose output lines are timestamped on arrival.
struct Listener {
    child: Child,
    lines: Arc<Mutex<Vec<(Instant, String)>>>,
}

impl Listener {
    fn start(w: &World, bin: &Path, args: &[&str]) -> Listener {
        let mut all = vec!["listen", "orchestrator", "--no-ingest"];
        all.extend_from_slice(args);
        let mut child = w
            .cmd(bin, &all)
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .stdin(Stdio::null())
            .spawn()
            .expect("listener");
        let out = child.stdout.take().expect("stdout");
        let lines = Arc::new(Mutex::new(Vec::new()));
        let sink = lines.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(out).lines().map_while(Result::ok) {
                sink.lock().expect("lock").push((Instant::now(), line));
            }
        });
        Listener { child, lines }
    }
    fn count(&self) -> usize {
        self.lines.lock().expect("lock").len()
    }
    fn wait_for(&self, n: usize, limit: Duration) -> bool {
        let start = Instant::now();
        while self.count() < n {
            if start.elapsed() > limit {
                return false;
            }
            std::thread::sleep(Duration::from_micros(200));
        }
        true
    }
    fn rss_mb(&self) -> f64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id()))
            .unwrap_or_default();
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.split_whitespace().next())
            .and_then(|k| k.parse::<f64>().ok())
            .unwrap_or(0.0)
            / 1024.0
    }
    fn stop(mut self) {
        unsafe { libc::kill(self.child.id() as i32, libc::SIGTERM) };
        let _ = self.child.wait();
    }
}

fn wait_ready(w: &World) {
    let mut c = w.conn();
    let start = Instant::now();
    loop {
        let keys: Vec<String> = redis::cmd("KEYS")
            .arg("fullsend:listeners:orchestrator:*")
            .query(&mut c)
            .unwrap_or_default();
        if !keys.is_empty() || start.elapsed() > Duration::from_secs(10) {
            return;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// B1: per-message latency with an instant model, against the Redis floor.
fn b1(bin: &Path, n: usize) -> Vec<Row> {
    let latency = Arc::new(AtomicU64::new(0));
    let mock = decision_mock(latency);
    let w = World::new(&mock);
    let listener = Listener::start(&w, bin, &[]);
    wait_ready(&w);
    let mut c = w.conn();
    // Warm up (connections, caches).
    for i in 0..20 {
        let _: String = redis::cmd("XADD")
            .arg(STREAM)
            .arg("*")
            .arg("data")
            .arg(escalation(1_000_000 + i))
            .query(&mut c)
            .expect("xadd");
    }
    listener.wait_for(20, Duration::from_secs(30));
    let mut lat = Vec::with_capacity(n);
    for i in 0..n {
        let before = listener.count();
        let t0 = Instant::now();
        let _: String = redis::cmd("XADD")
            .arg(STREAM)
            .arg("*")
            .arg("data")
            .arg(escalation(i))
            .query(&mut c)
            .expect("xadd");
        if !listener.wait_for(before + 1, Duration::from_secs(10)) {
            break;
        }
        let arrived = listener
            .lines
            .lock()
            .expect("lock")
            .last()
            .map(|l| l.0)
            .unwrap_or_else(Instant::now);
        lat.push(arrived.duration_since(t0).as_secs_f64() * 1000.0);
    }
    // Throughput: a burst of n queued at once.
    let before = listener.count();
    let t0 = Instant::now();
    let mut pipe = redis::pipe();
    for i in 0..n {
        pipe.cmd("XADD")
            .arg(STREAM)
            .arg("*")
            .arg("data")
            .arg(escalation(2_000_000 + i))
            .ignore();
    }
    let _: () = pipe.query(&mut c).expect("burst");
    listener.wait_for(before + n, Duration::from_secs(120));
    let burst = t0.elapsed().as_secs_f64();
    listener.stop();
    // The floor: the Redis round trips one message needs, at this machine's RTT.
    let mut rtts = Vec::new();
    for _ in 0..2000 {
        let t = Instant::now();
        let _: String = redis::cmd("PING").query(&mut c).expect("ping");
        rtts.push(t.elapsed().as_secs_f64() * 1000.0);
    }
    let rtt = median(rtts);
    // XREADGROUP, memo GET, the context tracking PING, memo SET (with the spend), the commit
    // script.
    let trips = 5.0;
    let floor = rtt * trips;
    let p50 = median(lat.clone());
    let p99 = percentile(lat.clone(), 0.99);
    vec![
        Row {
            id: "B1",
            what: format!(
                "listen, instant model, {n} messages one at a time: PUBLISH → dispatched output"
            ),
            measured: format!("p50 {p50:.2} ms, p99 {p99:.2} ms"),
            target: "p50 ≤ 2 ms".into(),
            ratio: format!("{:.2}× target", p50 / 2.0),
            pass: p50 <= 2.0,
        },
        Row {
            id: "B1",
            what: format!("… against the floor: {trips} Redis round trips × RTT {rtt:.3} ms"),
            measured: format!("floor {floor:.2} ms"),
            target: "≤ 5× floor".into(),
            ratio: format!("{:.1}× floor", p50 / floor),
            pass: p50 <= 5.0 * floor,
        },
        Row {
            id: "B1",
            what: format!("… throughput, a burst of {n}"),
            measured: format!("{:.0} msg/s ({burst:.2} s)", n as f64 / burst),
            target: "(reported)".into(),
            ratio: "-".into(),
            pass: true,
        },
    ]
}

/// B2: drain time with a 100 ms model at concurrency 1, 8, 32.
fn b2(bin: &Path, quick: bool) -> Vec<Row> {
    let latency = Arc::new(AtomicU64::new(100));
    let mock = decision_mock(latency);
    let mut rows = Vec::new();
    for c in [1usize, 8, 32] {
        let n = if quick && c == 1 { 50 } else { 200 };
        let w = World::new(&mock);
        let mut conn = w.conn();
        let mut pipe = redis::pipe();
        for i in 0..n {
            pipe.cmd("XADD")
                .arg(STREAM)
                .arg("*")
                .arg("data")
                .arg(escalation(i))
                .ignore();
        }
        let _: () = pipe.query(&mut conn).expect("queue");
        let t0 = Instant::now();
        let status = w
            .cmd(
                bin,
                &[
                    "listen",
                    "orchestrator",
                    "--no-ingest",
                    "--once",
                    "--concurrency",
                    &c.to_string(),
                ],
            )
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .expect("listen");
        let drain = t0.elapsed().as_secs_f64();
        let ideal = n as f64 * 0.1 / c as f64;
        rows.push(Row {
            id: "B2",
            what: format!(
                "{n} messages, model 100 ms, concurrency {c} (exit {})",
                status.code().unwrap_or(-1)
            ),
            measured: format!("{drain:.2} s"),
            target: format!("≤ {:.2} s (ideal {ideal:.2} s + 15%)", ideal * 1.15),
            ratio: format!("{:.2}× ideal", drain / ideal),
            pass: drain <= ideal * 1.15,
        });
    }
    rows
}

/// B3: load + render of a large context.
fn b3(bin: &Path, quick: bool) -> Row {
    let mock = decision_mock(Arc::new(AtomicU64::new(0)));
    let w = World::new(&mock);
    let mut c = w.conn();
    let scale = if quick { 10 } else { 1 };
    let mut pipe = redis::pipe();
    for i in 0..10_000 / scale {
        pipe.cmd("HSET")
            .arg(format!("experiments:exp_2026{i:06}_x"))
            .arg("name")
            .arg(format!("experiment number {i}"))
            .arg("state")
            .arg(if i % 3 == 0 { "running" } else { "completed" })
            .arg("spec")
            .arg("x".repeat(500))
            .arg("updated_at")
            .arg(format!("2026-01-01T00:{:02}:00Z", i % 60))
            .ignore();
    }
    for i in 0..1000 / scale {
        pipe.cmd("HSET")
            .arg(format!("tools:tool_{i}"))
            .arg("description")
            .arg("does a useful thing for outreach")
            .arg("status")
            .arg("active")
            .ignore();
        pipe.cmd("HSET")
            .arg(format!("metrics_aggregated:exp_{i}"))
            .arg("emails_sent_count")
            .arg(i)
            .arg("replies_count")
            .arg(i / 10)
            .arg("last_updated")
            .arg(i)
            .ignore();
    }
    for i in 0..10_000 / scale {
        pipe.cmd("HSET")
            .arg(format!("learnings:tactical:2026{i:010}"))
            .arg("text")
            .arg("Template A beat template B on reply rate")
            .arg("experiment_id")
            .arg("exp_1")
            .arg("created_at")
            .arg(format!("2026-01-01T{:02}:00:00Z", i % 24))
            .ignore();
    }
    let _: () = pipe.query(&mut c).expect("seed");
    let mut learnings = String::from("# Strategic Learnings\n");
    let mut i = 0;
    while learnings.len() < 5_000_000 / scale {
        learnings.push_str(&format!("\n\n## 2026-01-01T00:00:{i:06}\n**Learning {i}**: event-based targeting outperforms cold lists by a wide margin in our tests."));
        i += 1;
    }
    std::fs::write(w.dir.path().join("context/learnings.md"), learnings).expect("learnings");
    let mut totals = Vec::new();
    let mut loads = Vec::new();
    let mut tokens = 0;
    for _ in 0..5 {
        let out = w
            .cmd(
                bin,
                &["think", "--prompt-only", "--message", &escalation(1)],
            )
            .output()
            .expect("think");
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap_or_default();
        loads.push(v["load_ms"].as_f64().unwrap_or(f64::NAN));
        totals.push(
            v["load_ms"].as_f64().unwrap_or(f64::NAN) + v["render_ms"].as_f64().unwrap_or(f64::NAN),
        );
        tokens = v["estimated_tokens"].as_u64().unwrap_or(u64::MAX);
    }
    let ms = median(totals);
    let load = median(loads);
    let budget = 24_000;
    Row {
        id: "B3",
        what: format!(
            "context: {} experiments, {} tools, {} metrics, {} tactical learnings, {:.1} MB learnings.md",
            10_000 / scale,
            1000 / scale,
            1000 / scale,
            10_000 / scale,
            5.0 / scale as f64
        ),
        measured: format!("load+render {ms:.1} ms (load {load:.1}); prompt {tokens} tokens"),
        target: format!("≤ 100 ms; ≤ {budget} tokens"),
        ratio: format!("{:.2}× target", ms / 100.0),
        pass: ms <= 100.0 && tokens <= budget,
    }
}

/// B4: RALPH loop overhead per iteration, against running the agent alone.
fn b4(bin: &Path) -> Row {
    let dir = tempfile::tempdir().expect("tempdir");
    let agent = dir.path().join("agent.sh");
    std::fs::write(&agent, "#!/bin/sh\nsed -i '0,/- \\[ \\] /s//- [x] /' TASKS.md\nprintf '{\"type\":\"result\",\"subtype\":\"success\",\"is_error\":false,\"result\":\"**TASK_DONE**\",\"total_cost_usd\":0,\"session_id\":\"s\",\"num_turns\":1}\\n'\n").expect("agent");
    std::fs::set_permissions(&agent, std::os::unix::fs::PermissionsExt::from_mode(0o755))
        .expect("chmod");
    let tasks: String = (1..=50)
        .map(|i| format!("- [ ] TASK-{i:03}: task {i}\n"))
        .collect();
    let mut overheads = Vec::new();
    for run in 0..3 {
        let floor_dir = dir.path().join(format!("floor{run}"));
        std::fs::create_dir_all(&floor_dir).expect("dir");
        std::fs::write(floor_dir.join("TASKS.md"), format!("# Tasks\n\n{tasks}")).expect("tasks");
        let t0 = Instant::now();
        for _ in 0..50 {
            let _ = Command::new(&agent)
                .current_dir(&floor_dir)
                .stdout(Stdio::null())
                .status();
        }
        let floor = t0.elapsed().as_secs_f64();
        let loop_dir = dir.path().join(format!("loop{run}"));
        std::fs::create_dir_all(&loop_dir).expect("dir");
        std::fs::write(loop_dir.join("TASKS.md"), format!("# Tasks\n\n{tasks}")).expect("tasks");
        let t0 = Instant::now();
        let out = Command::new(bin)
            .env("REDIS_URL", "redis://127.0.0.1:1/0")
            .args([
                "--no-config",
                "-q",
                "ralph",
                "run",
                "--work-dir",
                loop_dir.to_str().unwrap_or("."),
                "--agent",
                agent.to_str().unwrap_or(""),
            ])
            .output()
            .expect("ralph");
        let total = t0.elapsed().as_secs_f64();
        let ok = String::from_utf8_lossy(&out.stdout).contains("\"complete\"");
        if ok {
            overheads.push((total - floor) / 50.0 * 1000.0);
        }
    }
    let ms = median(overheads.clone());
    Row {
        id: "B4",
        what: "ralph run, 50 tasks, an agent that finishes at once (3 runs)".into(),
        measured: format!("{ms:.2} ms/iteration over the agent alone"),
        target: "≤ 10 ms".into(),
        ratio: format!("{:.2}× target", ms / 10.0),
        pass: overheads.len() == 3 && ms <= 10.0,
    }
}

/// Wall time and peak RSS of one process run. The peak is the child's own
/// VmHWM, read at its exit event under ptrace: `wait4`'s `ru_maxrss` would
/// include the resident set this (much larger) process had when it forked.
fn measure(mut cmd: Command, stdin: &[u8]) -> (f64, f64) {
    use std::os::unix::process::CommandExt;
    // SAFETY: PTRACE_TRACEME only marks the child as traced; it allocates nothing.
    unsafe {
        cmd.pre_exec(|| {
            libc::ptrace(libc::PTRACE_TRACEME, 0, 0, 0);
            Ok(())
        });
    }
    let t0 = Instant::now();
    let mut child = cmd
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn");
    let pid = child.id() as i32;
    let mut status = 0;
    let mut hwm_kb = 0.0;
    // The stop after exec.
    unsafe { libc::waitpid(pid, &mut status, 0) };
    unsafe { libc::ptrace(libc::PTRACE_SETOPTIONS, pid, 0, libc::PTRACE_O_TRACEEXIT) };
    unsafe { libc::ptrace(libc::PTRACE_CONT, pid, 0, 0) };
    if let Some(mut s) = child.stdin.take() {
        let _ = s.write_all(stdin);
    }
    loop {
        unsafe { libc::waitpid(pid, &mut status, 0) };
        if libc::WIFEXITED(status) || libc::WIFSIGNALED(status) {
            break;
        }
        if libc::WIFSTOPPED(status) {
            let event = (status >> 16) & 0xff;
            let mut deliver = 0;
            if event == libc::PTRACE_EVENT_EXIT {
                let text =
                    std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
                hwm_kb = text
                    .lines()
                    .find_map(|l| l.strip_prefix("VmHWM:"))
                    .and_then(|v| v.split_whitespace().next())
                    .and_then(|k| k.parse().ok())
                    .unwrap_or(0.0);
            } else if libc::WSTOPSIG(status) != libc::SIGTRAP {
                deliver = libc::WSTOPSIG(status);
            }
            unsafe { libc::ptrace(libc::PTRACE_CONT, pid, 0, deliver) };
        }
    }
    std::mem::forget(child);
    (t0.elapsed().as_secs_f64() * 1000.0, hwm_kb / 1024.0)
}

/// CPU seconds (user + system) of every reaped child so far, grandchildren included.
fn children_cpu() -> f64 {
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: getrusage fills the struct it is given.
    unsafe { libc::getrusage(libc::RUSAGE_CHILDREN, &mut usage) };
    let secs = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
    secs(usage.ru_utime) + secs(usage.ru_stime)
}

/// B8: what a message costs in each form of the Orchestrator daemon: the in-process role
/// (`listen orchestrator`) and the pipeline (`listen CHANNEL --exec 'fullsend think | fullsend
/// dispatch'`, one bash and two processes per message). `n` queued messages, an instant model,
/// drained with `--once`; wall time and CPU time (the listener and everything it started).
fn b8(bin: &Path, n: usize) -> Vec<Row> {
    let mock = decision_mock(Arc::new(AtomicU64::new(0)));
    let forms: [(&str, Vec<&str>); 2] = [
        ("listen orchestrator", vec!["listen", "orchestrator"]),
        (
            "listen --exec (the think → dispatch pipeline)",
            vec![
                "listen",
                "fullsend:to_orchestrator",
                "--group",
                "orchestrator",
                "--exec",
                "fullsend think | fullsend dispatch",
            ],
        ),
    ];
    let mut rows = Vec::new();
    let mut per_msg = Vec::new();
    for (name, args) in forms {
        let w = World::new(&mock);
        let mut c = w.conn();
        let mut pipe = redis::pipe();
        for i in 0..n {
            pipe.cmd("XADD")
                .arg(STREAM)
                .arg("*")
                .arg("data")
                .arg(escalation(3_000_000 + i))
                .ignore();
        }
        let _: () = pipe.query(&mut c).expect("queue");
        let mut all = args.clone();
        all.extend(["--no-ingest", "--once", "--concurrency", "4"]);
        let cpu0 = children_cpu();
        let t0 = Instant::now();
        let status = w
            .cmd(bin, &all)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .stdin(Stdio::null())
            .status()
            .expect("listener");
        let wall = t0.elapsed().as_secs_f64();
        let cpu = children_cpu() - cpu0;
        let requests: i64 = redis::cmd("XLEN")
            .arg("fullsend:{to_fullsend}:stream")
            .query(&mut c)
            .unwrap_or(0);
        let ms = |x: f64| x * 1000.0 / n as f64;
        per_msg.push(ms(cpu));
        rows.push(Row {
            id: "B8",
            what: format!("{name}: {n} queued messages, instant model, c=4, --once (mean)"),
            measured: format!("{:.2} ms wall, {:.2} ms CPU per message", ms(wall), ms(cpu)),
            target: "(reported)".into(),
            ratio: "-".into(),
            pass: status.success() && requests == n as i64,
        });
    }
    if let [inproc, exec] = per_msg[..] {
        rows.push(Row {
            id: "B8",
            what: "… CPU per message, pipeline against in-process".into(),
            measured: format!("{:.1}×", exec / inproc.max(1e-9)),
            target: "(reported)".into(),
            ratio: "-".into(),
            pass: true,
        });
    }
    rows
}

/// CPU seconds (user + system) the process `pid` itself has used.
fn process_cpu(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // Fields after the command name, which is in parentheses and may hold spaces.
    let rest = stat.rsplit_once(')').map_or("", |(_, r)| r);
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks = |i: usize| {
        fields
            .get(i)
            .and_then(|f| f.parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    // utime and stime are fields 14 and 15 of the whole line: 11 and 12 after the name.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64;
    (ticks(11) + ticks(12)) / hz.max(1.0)
}

/// Stores a context of `experiments` experiments, `tools` tools and `metrics` metrics keys.
fn seed_context(w: &World, experiments: usize, tools: usize, metrics: usize) {
    let mut c = w.conn();
    let mut pipe = redis::pipe();
    for i in 0..experiments {
        pipe.cmd("HSET")
            .arg(format!("experiments:exp_20261202_bench_{i}"))
            .arg(&[
                ("name", format!("Bench experiment {i}")),
                (
                    "hypothesis",
                    "CTOs who star dev tools answer cold email".to_string(),
                ),
                (
                    "state",
                    if i % 3 == 0 { "running" } else { "ready" }.to_string(),
                ),
                ("updated_at", format!("2026-12-01T{:02}:00:00Z", i % 24)),
                ("spec", "experiment:\n  id: x\n".repeat(20)),
            ])
            .ignore();
        if i % 500 == 499 {
            let _: () = pipe.query(&mut c).expect("seed");
            pipe = redis::pipe();
        }
    }
    for i in 0..tools {
        pipe.cmd("HSET")
            .arg(format!("tools:tool_{i}"))
            .arg(&[
                ("name", format!("tool_{i}")),
                ("description", "scrapes a site".into()),
                ("status", "active".into()),
            ])
            .ignore();
    }
    for i in 0..metrics {
        pipe.cmd("HSET")
            .arg(format!("metrics_aggregated:exp_20261202_bench_{i}"))
            .arg(&[
                ("sent", "100"),
                ("replies", "7"),
                ("last_updated", "2026-12-01T10:00:00Z"),
            ])
            .ignore();
    }
    let _: () = pipe.query(&mut c).expect("seed");
}

/// Mixed traffic: half ideas (escalations the model dispatches), half questions.
fn mixed_message(i: usize) -> String {
    if i.is_multiple_of(2) {
        escalation(i)
    } else {
        json!({"type": "question", "source": "discord", "msg_id": format!("bench-q-{i}-{}", std::process::id()), "content": format!("what is running? {i}")}).to_string()
    }
}

/// One measured run: `n` messages through a listener (concurrency 1, instant model) over
/// `w`'s context, after a warm-up; `change_every` > 0 changes one experiment every that many
/// messages. Returns (listener CPU ms per message, messages per second, RSS MB at the end).
fn drain_run(w: &World, bin: &Path, n: usize, change_every: usize, base: usize) -> (f64, f64, f64) {
    let listener = Listener::start(w, bin, &[]);
    wait_ready(w);
    let mut c = w.conn();
    let send = |c: &mut redis::Connection, from: usize, count: usize| {
        let mut pipe = redis::pipe();
        for i in from..from + count {
            pipe.cmd("XADD")
                .arg(STREAM)
                .arg("*")
                .arg("data")
                .arg(mixed_message(i))
                .ignore();
        }
        let _: () = pipe.query(c).expect("xadd");
    };
    send(&mut c, base, 20);
    listener.wait_for(20, Duration::from_secs(60));
    let pid = listener.child.id();
    let cpu0 = process_cpu(pid);
    let t0 = Instant::now();
    if change_every == 0 {
        send(&mut c, base + 20, n);
        listener.wait_for(20 + n, Duration::from_secs(300));
    } else {
        let mut done = 0;
        while done < n {
            let _: () = redis::cmd("HSET")
                .arg(format!("experiments:exp_20261202_bench_{}", done % 10))
                .arg("updated_at")
                .arg(format!("2026-12-02T00:00:{done:02}Z"))
                .query(&mut c)
                .expect("hset");
            let batch = change_every.min(n - done);
            send(&mut c, base + 20 + done, batch);
            done += batch;
            listener.wait_for(20 + done, Duration::from_secs(60));
        }
    }
    let wall = t0.elapsed().as_secs_f64();
    let cpu = process_cpu(pid) - cpu0;
    let rss = listener.rss_mb();
    listener.stop();
    (cpu * 1000.0 / n as f64, n as f64 / wall, rss)
}

/// Medians of `runs` drain runs, each on a fresh world with the given context.
fn drain_medians(
    bin: &Path,
    runs: usize,
    n: usize,
    context: (usize, usize, usize),
    change_every: usize,
) -> (f64, f64, f64) {
    let mock = decision_mock(Arc::new(AtomicU64::new(0)));
    let mut cpu = Vec::new();
    let mut rate = Vec::new();
    let mut rss = Vec::new();
    for r in 0..runs {
        let w = World::new(&mock);
        seed_context(&w, context.0, context.1, context.2);
        let (c, t, m) = drain_run(&w, bin, n, change_every, 10_000_000 * (r + 1));
        cpu.push(c);
        rate.push(t);
        rss.push(m);
    }
    (median(cpu), median(rate), median(rss))
}

/// B9: listener CPU per message and throughput, small and realistic context (1,000
/// experiments, 200 tools, 200 metrics keys), instant model, mixed traffic, concurrency 1.
fn b9(bin: &Path, quick: bool) -> Vec<Row> {
    let (runs, n) = if quick { (1, 300) } else { (3, 2000) };
    let mut rows = Vec::new();
    for (name, context, cpu_target) in [
        ("small context", (3, 2, 2), 0.25),
        (
            "realistic context (1,000 experiments, 200 tools, 200 metrics)",
            (1000, 200, 200),
            1.0,
        ),
    ] {
        let (cpu, rate, _) = drain_medians(bin, runs, n, context, 0);
        rows.push(Row {
            id: "B9",
            what: format!("listener CPU per message, {name}, {n} mixed messages × {runs} runs"),
            measured: format!("{cpu:.3} ms"),
            target: format!("≤ {cpu_target} ms"),
            ratio: format!("{:.2}× target", cpu / cpu_target),
            pass: cpu <= cpu_target,
        });
        rows.push(Row {
            id: "B9",
            what: format!("… throughput, {name}"),
            measured: format!("{rate:.0} msg/s"),
            target: "≥ 270 msg/s (100× the Python design's 2.7)".into(),
            ratio: format!("{:.1}× target", rate / 270.0),
            pass: rate >= 270.0,
        });
    }
    rows
}

/// B10: the cost curve: CPU per message at 10, 1,000 and 10,000 experiments with an unchanged
/// context, and at 10,000 with one experiment changing every 10 messages.
fn b10(bin: &Path, quick: bool) -> Vec<Row> {
    let (runs, n) = if quick { (1, 300) } else { (3, 1000) };
    let mut rows = Vec::new();
    let mut at_10 = f64::NAN;
    for (experiments, change_every) in [(10, 0), (1000, 0), (10_000, 0), (10_000, 10)] {
        let (cpu, _, rss) = drain_medians(bin, runs, n, (experiments, 20, 20), change_every);
        if experiments == 10 {
            at_10 = cpu;
        }
        let ratio = cpu / at_10;
        let changing = if change_every > 0 {
            ", one changing every 10 messages"
        } else {
            ", unchanged"
        };
        rows.push(Row {
            id: "B10",
            what: format!("CPU per message at {experiments} experiments{changing}"),
            measured: format!("{cpu:.3} ms, RSS {rss:.1} MB"),
            target: if experiments == 10_000 && change_every == 0 {
                "≤ 1.5× the cost at 10; RSS ≤ 30 MB".into()
            } else {
                "(reported)".into()
            },
            ratio: format!("{ratio:.2}× the cost at 10"),
            pass: !(experiments == 10_000 && change_every == 0) || (ratio <= 1.5 && rss <= 30.0),
        });
    }
    rows
}

/// B11: freshness: from an HSET on `experiments:{id}` by another client to the first prompt
/// that shows it (a message published right after the write), median of 20.
fn b11(bin: &Path) -> Row {
    let mock = decision_mock(Arc::new(AtomicU64::new(0)));
    let w = World::new(&mock);
    seed_context(&w, 1000, 200, 200);
    let listener = Listener::start(&w, bin, &[]);
    wait_ready(&w);
    let mut c = w.conn();
    let mut times = Vec::new();
    for i in 0..20 {
        let name = format!("Freshly renamed {i}");
        let seen_before = mock.request_count();
        let t0 = Instant::now();
        // Running and the newest, so it is at the top of the prompt's list, not cut.
        let _: () = redis::cmd("HSET")
            .arg("experiments:exp_20261202_bench_0")
            .arg("name")
            .arg(&name)
            .arg("updated_at")
            .arg(format!("2026-12-03T00:00:{i:02}Z"))
            .query(&mut c)
            .expect("hset");
        let _: String = redis::cmd("XADD")
            .arg(STREAM)
            .arg("*")
            .arg("data")
            .arg(escalation(20_000_000 + i))
            .query(&mut c)
            .expect("xadd");
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let requests = mock.requests();
            if requests
                .iter()
                .skip(seen_before)
                .any(|r| mock_api::user_text(r).contains(&name))
            {
                times.push(t0.elapsed().as_secs_f64() * 1000.0);
                break;
            }
            if Instant::now() > deadline {
                break;
            }
            std::thread::sleep(Duration::from_micros(500));
        }
    }
    listener.stop();
    let found = times.len();
    let p50 = median(times.clone());
    let worst = times.iter().copied().fold(0.0_f64, f64::max);
    Row {
        id: "B11",
        what: "freshness: HSET by another client → the next prompt shows it (20 tries)".into(),
        measured: format!("p50 {p50:.1} ms, max {worst:.1} ms, {found}/20 seen"),
        target: "≤ 1 s, every time".into(),
        ratio: format!("{:.3}× target", worst / 1000.0),
        pass: found == 20 && worst <= 1000.0,
    }
}

/// B5: start-up cost of the small commands.
fn b5(bin: &Path) -> Vec<Row> {
    let response = format!(
        "Let me think about {{this}}.\n```json\n{}\n```\nDone.",
        json!({"action": "dispatch_to_fullsend", "reasoning": "x".repeat(1500), "payload": {"idea": "HN"}, "priority": "high"})
    );
    let mut rows = Vec::new();
    for (name, args, input) in [
        (
            "think --parse (2 KB answer)",
            vec!["think", "--parse"],
            response.as_bytes().to_vec(),
        ),
        ("--version", vec!["--version"], Vec::new()),
    ] {
        let mut walls = Vec::new();
        let mut rss = Vec::new();
        for _ in 0..30 {
            let mut c = Command::new(bin);
            c.args(&args);
            let (w, r) = measure(c, &input);
            walls.push(w);
            rss.push(r);
        }
        let (w, r) = (median(walls), rss.iter().cloned().fold(0.0, f64::max));
        rows.push(Row {
            id: "B5",
            what: format!("fullsend {name}, 30 runs"),
            measured: format!("{w:.2} ms wall, {r:.1} MB peak RSS"),
            target: "≤ 10 ms, ≤ 10 MB".into(),
            ratio: format!("{:.2}× / {:.2}×", w / 10.0, r / 10.0),
            pass: w <= 10.0 && r <= 10.0,
        });
    }
    rows
}

/// B6: listener memory after many messages.
fn b6(bin: &Path, n: usize) -> Row {
    let mock = decision_mock(Arc::new(AtomicU64::new(0)));
    let w = World::new(&mock);
    let listener = Listener::start(&w, bin, &["--concurrency", "8"]);
    wait_ready(&w);
    let mut c = w.conn();
    let mut samples = Vec::new();
    let batch = n / 10;
    for b in 0..10 {
        let mut pipe = redis::pipe();
        for i in 0..batch {
            pipe.cmd("XADD")
                .arg(STREAM)
                .arg("*")
                .arg("data")
                .arg(escalation(b * batch + i))
                .ignore();
        }
        let _: () = pipe.query(&mut c).expect("batch");
        listener.wait_for((b + 1) * batch, Duration::from_secs(300));
        samples.push(listener.rss_mb());
    }
    listener.stop();
    let first = samples[0];
    let last = *samples.last().unwrap_or(&first);
    let peak = samples.iter().cloned().fold(0.0, f64::max);
    Row {
        id: "B6",
        what: format!("listen after {n} messages (RSS after each 10%)"),
        measured: format!("{first:.1} → {last:.1} MB (peak {peak:.1})"),
        target: "≤ 30 MB and flat".into(),
        ratio: format!("{:.2}× target; growth {:+.1} MB", peak / 30.0, last - first),
        pass: peak <= 30.0 && last - first <= 3.0,
    }
}

/// B7: share of input tokens read from the prompt cache across 20 decisions.
fn b7(bin: &Path) -> Row {
    // The mock caches like the API: a request whose cached prefix (every block up
    // to the last cache_control marker) was seen before reads it from the cache.
    let seen: Arc<Mutex<HashMap<String, u64>>> = Arc::new(Mutex::new(HashMap::new()));
    let totals = Arc::new(Mutex::new(Vec::<(u64, u64)>::new()));
    let (s2, t2) = (seen.clone(), totals.clone());
    let mock = MockApi::start(move |req, _| {
        let mut blocks: Vec<(String, bool)> = Vec::new();
        for b in req.body["system"].as_array().into_iter().flatten() {
            blocks.push((
                b["text"].as_str().unwrap_or("").to_string(),
                b.get("cache_control").is_some(),
            ));
        }
        for b in req.body["messages"][0]["content"]
            .as_array()
            .into_iter()
            .flatten()
        {
            blocks.push((
                b["text"].as_str().unwrap_or("").to_string(),
                b.get("cache_control").is_some(),
            ));
        }
        let last_marker = blocks.iter().rposition(|b| b.1);
        let tokens = |s: &str| (s.len() as u64).div_ceil(4);
        let (prefix, rest): (String, String) = match last_marker {
            Some(i) => (
                blocks[..=i].iter().map(|b| b.0.clone()).collect(),
                blocks[i + 1..].iter().map(|b| b.0.clone()).collect(),
            ),
            None => (String::new(), blocks.iter().map(|b| b.0.clone()).collect()),
        };
        let mut seen = s2.lock().expect("lock");
        let (read, write) = if seen.contains_key(&prefix) {
            (tokens(&prefix), 0)
        } else {
            seen.insert(prefix.clone(), 1);
            (0, tokens(&prefix))
        };
        let input = tokens(&rest);
        t2.lock().expect("lock").push((read, input + read + write));
        Reply::Message {
            text: json!({"action": "no_action", "reasoning": "bench"}).to_string(),
            thinking: None,
            usage: Usage {
                input_tokens: input,
                output_tokens: 50,
                cache_creation_input_tokens: write,
                cache_read_input_tokens: read,
            },
        }
    });
    let w = World::new(&mock);
    std::fs::write(
        w.dir.path().join("context/product_context.md"),
        "We sell a developer tool. ".repeat(200),
    )
    .expect("product");
    std::fs::write(
        w.dir.path().join("context/learnings.md"),
        format!(
            "# Strategic Learnings\n{}",
            (0..60)
                .map(|i| format!(
                    "\n\n## 2026-01-{:02}\nLearning {i}: CTOs respond to short, specific emails.",
                    i % 28 + 1
                ))
                .collect::<String>()
        ),
    )
    .expect("learnings");
    let mut c = w.conn();
    let mut pipe = redis::pipe();
    for i in 0..20 {
        pipe.cmd("XADD").arg(STREAM).arg("*").arg("data").arg(json!({"type": "question", "source": "manual", "msg_id": format!("b7-{i}"), "content": format!("question number {i}: what should we focus on?")}).to_string()).ignore();
    }
    let _: () = pipe.query(&mut c).expect("queue");
    let _ = w
        .cmd(bin, &["listen", "orchestrator", "--no-ingest", "--once"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status();
    let t = totals.lock().expect("lock").clone();
    let after: Vec<(u64, u64)> = t.iter().skip(1).cloned().collect();
    let read: u64 = after.iter().map(|x| x.0).sum();
    let total: u64 = after.iter().map(|x| x.1).sum();
    let share = if total == 0 {
        0.0
    } else {
        read as f64 / total as f64
    };
    Row {
        id: "B7",
        what: format!(
            "{} decisions in a row, the mock caching like the API",
            t.len()
        ),
        measured: format!(
            "{:.0}% of input tokens from cache after the first",
            share * 100.0
        ),
        target: "≥ 70%".into(),
        ratio: format!("{:.2}× target", share / 0.7),
        pass: t.len() == 20 && share >= 0.7,
    }
}
