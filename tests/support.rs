//! A hermetic runner for the `fullsend` binary: a clean environment, a temp
//! context dir, and optional real Redis and Messages-API mock.

#![allow(dead_code, unreachable_pub)]

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::common::mock_api::MockApi;
use crate::common::redis_server::RedisServer;

/// The binary under test.
pub fn bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_fullsend"))
}

/// A test world: temp dirs, and the services a test asked for.
pub struct World {
    pub dir: tempfile::TempDir,
    pub redis: Option<RedisServer>,
    pub mock: Option<MockApi>,
    pub env: Vec<(String, String)>,
    /// Pass `--no-config` (the default: tests ignore config files).
    pub no_config: bool,
}

/// What a run printed and how it exited.
pub struct Run {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

impl Run {
    /// stdout as one JSON value.
    pub fn json(&self) -> Value {
        serde_json::from_str(self.stdout.trim()).unwrap_or_else(|e| {
            panic!(
                "stdout is not one JSON document ({e}):\n{}\nstderr:\n{}",
                self.stdout, self.stderr
            )
        })
    }
    /// stdout as JSON lines.
    pub fn lines(&self) -> Vec<Value> {
        self.stdout
            .lines()
            .filter(|l| !l.trim().is_empty())
            .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("bad JSON line {l:?}: {e}")))
            .collect()
    }
}

impl World {
    /// No services: Redis points at a closed port.
    pub fn bare() -> World {
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::create_dir_all(dir.path().join("context")).expect("context dir");
        std::fs::create_dir_all(dir.path().join("home")).expect("home dir");
        World {
            dir,
            redis: None,
            mock: None,
            env: Vec::new(),
            no_config: true,
        }
    }
    /// With a real redis-server.
    pub fn with_redis() -> World {
        let mut w = World::bare();
        w.redis = Some(RedisServer::start());
        w
    }
    /// Adds a mock of the Messages API.
    pub fn mock(mut self, mock: MockApi) -> World {
        self.mock = Some(mock);
        self
    }
    /// Points `FULLSEND_CLAUDE_BIN` at a fake `claude` (in `fake/`) with this behaviour.
    pub fn with_fake_claude(self, behavior: crate::common::fake_claude::Behavior) -> World {
        let dir = self.path("fake");
        std::fs::create_dir_all(&dir).expect("fake dir");
        let claude = crate::common::fake_claude::write_fake_claude(&dir, behavior);
        self.set("FULLSEND_CLAUDE_BIN", claude.to_str().expect("utf8"))
    }
    pub fn set(mut self, key: &str, value: &str) -> World {
        self.env.push((key.into(), value.into()));
        self
    }
    pub fn context(&self) -> PathBuf {
        self.dir.path().join("context")
    }
    pub fn path(&self, rel: &str) -> PathBuf {
        self.dir.path().join(rel)
    }
    pub fn redis(&self) -> &RedisServer {
        self.redis.as_ref().expect("this world has no redis")
    }
    pub fn redis_mut(&mut self) -> &mut RedisServer {
        self.redis.as_mut().expect("this world has no redis")
    }
    pub fn mock_api(&self) -> &MockApi {
        self.mock.as_ref().expect("this world has no mock")
    }
    pub fn redis_url(&self) -> String {
        match &self.redis {
            Some(r) => r.url(),
            // A port nobody listens on.
            None => "redis://127.0.0.1:1/0".into(),
        }
    }
    /// A sync Redis connection for assertions.
    pub fn conn(&self) -> redis::Connection {
        redis::Client::open(self.redis_url())
            .expect("client")
            .get_connection()
            .expect("connection")
    }

    /// The command with a hermetic environment.
    pub fn cmd(&self, args: &[&str]) -> Command {
        let mut c = Command::new(bin());
        c.env_clear();
        c.env(
            "PATH",
            std::env::var("PATH").unwrap_or_else(|_| "/usr/bin:/bin".into()),
        );
        c.env("HOME", self.dir.path().join("home"));
        c.env("REDIS_URL", self.redis_url());
        c.env("CONTEXT_PATH", self.context());
        c.env("FULLSEND_WORK_DIR", self.dir.path().join("work"));
        c.env("ORCHESTRATOR_MODEL", "claude-opus-5-5");
        if let Some(m) = &self.mock {
            c.env("ANTHROPIC_BASE_URL", m.base_url());
            c.env("ANTHROPIC_API_KEY", "test-key-not-secret");
        }
        for (k, v) in &self.env {
            c.env(k, v);
        }
        c.current_dir(self.dir.path());
        if self.no_config {
            c.arg("--no-config");
        }
        c.args(args);
        c
    }

    /// Runs to completion with `stdin`.
    pub fn run(&self, args: &[&str], stdin: &str) -> Run {
        let mut child = self
            .cmd(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn fullsend");
        {
            let mut input = child.stdin.take().expect("stdin");
            let _ = input.write_all(stdin.as_bytes());
        }
        let out = wait_output(child, Duration::from_secs(120));
        Run {
            code: out.status.code().unwrap_or(-1),
            stdout: String::from_utf8_lossy(&out.stdout).into(),
            stderr: String::from_utf8_lossy(&out.stderr).into(),
        }
    }

    /// Starts a long-running command (stdout piped, stderr to a file).
    pub fn spawn(&self, args: &[&str], log: &str) -> Child {
        let err = std::fs::File::create(self.path(log)).expect("log file");
        self.cmd(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(err)
            .spawn()
            .expect("spawn fullsend")
    }
}

/// Waits for a child with a hard limit (reading its output meanwhile, so a
/// large output cannot block it), killing it on overrun.
pub fn wait_output(child: Child, limit: Duration) -> Output {
    let pid = child.id();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(child.wait_with_output());
    });
    match rx.recv_timeout(limit) {
        Ok(out) => out.expect("output"),
        Err(_) => {
            signal(pid, libc::SIGKILL);
            panic!("command did not finish within {limit:?}");
        }
    }
}

/// Polls `check` until it returns Some, or panics after `limit`.
pub fn eventually<T>(limit: Duration, what: &str, mut check: impl FnMut() -> Option<T>) -> T {
    let start = Instant::now();
    loop {
        if let Some(v) = check() {
            return v;
        }
        if start.elapsed() > limit {
            panic!("timed out after {limit:?} waiting for {what}");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Entries of a stream as parsed JSON `data` fields.
pub fn stream_messages(conn: &mut redis::Connection, stream: &str) -> Vec<Value> {
    let entries: Vec<(String, Vec<(String, String)>)> = redis::cmd("XRANGE")
        .arg(stream)
        .arg("-")
        .arg("+")
        .query(conn)
        .unwrap_or_default();
    entries
        .into_iter()
        .filter_map(|(_, fields)| {
            fields
                .into_iter()
                .find(|(k, _)| k == "data")
                .and_then(|(_, v)| serde_json::from_str(&v).ok())
        })
        .collect()
}

/// Messages of `type` on a channel's stream.
pub fn of_type(conn: &mut redis::Connection, channel: &str, kind: &str) -> Vec<Value> {
    let stream = match channel.strip_prefix("fullsend:") {
        Some(rest) => format!("fullsend:{{{rest}}}:stream"),
        None => format!("{{{channel}}}:stream"),
    };
    stream_messages(conn, &stream)
        .into_iter()
        .filter(|m| m["type"] == kind)
        .collect()
}

/// A model answer that rambles around a decision.
pub fn rambling(decision: &Value) -> String {
    format!(
        "Let me think about {{this}} carefully. The user wants {{x}}.\n\nHere is my decision:\n```json\n{}\n```\nI hope that helps — note the {{braces}} above.",
        serde_json::to_string_pretty(decision).expect("json")
    )
}

pub fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_default()
}

/// SIGTERM/SIGKILL/SIGSTOP/SIGCONT by pid.
pub fn signal(pid: u32, sig: i32) {
    unsafe {
        libc::kill(pid as i32, sig);
    }
}
