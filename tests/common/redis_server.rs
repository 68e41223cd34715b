//! A real `redis-server` per test: free loopback port, fresh temp dir, AOF on, killable and restartable
//! on the same port and dir so tests can check durability and reconnection (see docs/redis.md §10).

// Every test uses a different subset of these helpers, and the harness module is private to the test
// binary, so `pub` items would otherwise warn as dead or unreachable.
#![allow(dead_code, unreachable_pub)]

use std::fs::{File, OpenOptions};
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// How long a start or restart may take before the test fails (an AOF reload is included).
const START_TIMEOUT: Duration = Duration::from_secs(10);

/// How many free ports `start` tries before giving up; another process can grab the port between
/// our probe and redis-server's bind.
const PORT_ATTEMPTS: usize = 5;

/// A running `redis-server` owned by one test; it is SIGKILLed on drop.
pub struct RedisServer {
    port: u16,
    dir: tempfile::TempDir,
    child: Option<Child>,
}

/// Why a spawn attempt failed: the port race is retryable, anything else is a test failure.
enum SpawnError {
    AddrInUse,
    Other(String),
}

impl RedisServer {
    /// Starts `redis-server` on a free 127.0.0.1 port in a fresh temp dir (AOF `everysec`, no RDB
    /// snapshots, `noeviction`, DEBUG allowed from loopback) and waits until PING answers.
    pub fn start() -> Self {
        let dir = tempfile::Builder::new()
            .prefix("fullsend-redis-")
            .tempdir()
            .expect("creating a temp dir for redis-server");
        let mut last_error = String::new();
        for _ in 0..PORT_ATTEMPTS {
            let port = free_port();
            match spawn_and_wait(port, dir.path()) {
                Ok(child) => {
                    return Self {
                        port,
                        dir,
                        child: Some(child),
                    };
                }
                Err(SpawnError::AddrInUse) => {
                    last_error = format!("port {port} was taken");
                }
                Err(SpawnError::Other(message)) => {
                    panic!("redis-server failed to start: {message}")
                }
            }
        }
        panic!("redis-server failed to start after {PORT_ATTEMPTS} ports: {last_error}");
    }

    /// The connection URL for database 0, e.g. `redis://127.0.0.1:6379/0`.
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/0", self.port)
    }

    /// The TCP port the server listens on (stable across `restart`).
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The data directory (holds `appendonlydir/` and `redis.log`).
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// The server's process id, or `None` while it is killed.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// SIGKILLs the server (a crash: no shutdown save) and waits until it has exited.
    /// Does nothing if it is not running.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            // kill() fails only if the process already exited, which is fine here.
            let _ = child.kill();
            child.wait().expect("waiting for redis-server to exit");
        }
    }

    /// Starts the server again on the same port and dir, so it reloads the AOF, and waits for PING.
    /// A still-running server is killed first.
    pub fn restart(&mut self) {
        self.kill();
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            match spawn_and_wait(self.port, self.dir.path()) {
                Ok(child) => {
                    self.child = Some(child);
                    return;
                }
                // The old socket is normally free at once (redis sets SO_REUSEADDR), but give a
                // lingering process a moment before declaring the port stolen.
                Err(SpawnError::AddrInUse) if Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(100));
                }
                Err(SpawnError::AddrInUse) => {
                    panic!(
                        "redis-server restart: port {} is taken by another process",
                        self.port
                    )
                }
                Err(SpawnError::Other(message)) => panic!("redis-server restart failed: {message}"),
            }
        }
    }

    /// Restarts the server with `extra` arguments and returns while it still answers `-LOADING`
    /// (for example with `--key-load-delay`, which slows loading each key of the AOF's base).
    pub fn restart_loading(&mut self, extra: &[&str]) {
        self.kill();
        match spawn_until(self.port, self.dir.path(), extra, b"-LOADING") {
            Ok(child) => self.child = Some(child),
            Err(SpawnError::AddrInUse) => {
                panic!("redis-server restart: port {} is taken", self.port)
            }
            Err(SpawnError::Other(message)) => panic!("redis-server restart failed: {message}"),
        }
    }

    /// Runs `redis-cli -p PORT args...` and returns its trimmed stdout. Error replies are returned as
    /// text (e.g. `ERR unknown command ...`), not panics, so tests can assert on them.
    pub fn cli(&self, args: &[&str]) -> String {
        let output = Command::new("redis-cli")
            .arg("-p")
            .arg(self.port.to_string())
            .args(args)
            .stdin(Stdio::null())
            .output()
            .expect("running redis-cli (is it installed?)");
        let stdout = String::from_utf8_lossy(&output.stdout).trim().to_owned();
        if stdout.is_empty() && !output.status.success() {
            // Connection failures only go to stderr; surface them instead of an empty string.
            return String::from_utf8_lossy(&output.stderr).trim().to_owned();
        }
        stdout
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// True if `redis-server --version` and `redis-cli --version` both run, so tests can skip cleanly
/// on machines without Redis.
pub fn redis_server_available() -> bool {
    ["redis-server", "redis-cli"].iter().all(|program| {
        Command::new(program)
            .arg("--version")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|status| status.success())
    })
}

/// Asks the kernel for a free port. Racy by nature (the port is released before redis binds it),
/// which is why callers retry on "Address already in use".
fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|listener| listener.local_addr())
        .expect("binding 127.0.0.1:0 to find a free port")
        .port()
}

/// Spawns redis-server on `port` with data in `dir` and waits for PONG.
fn spawn_and_wait(port: u16, dir: &Path) -> Result<Child, SpawnError> {
    spawn_until(port, dir, &[], b"+PONG")
}

/// Spawns redis-server with `extra` arguments and waits until a PING's reply starts with `ready`.
fn spawn_until(port: u16, dir: &Path, extra: &[&str], ready: &[u8]) -> Result<Child, SpawnError> {
    let log_path = dir.join("redis.log");
    // Append, so the log of a run before `restart` stays readable next to the new one.
    let log = OpenOptions::new()
        .create(true)
        .append(true)
        .open(&log_path)
        .expect("opening redis.log");
    let log_offset = log.metadata().map(|m| m.len()).unwrap_or(0);
    let log_err = log.try_clone().expect("duplicating the redis.log handle");
    let mut child = Command::new("redis-server")
        .args(["--port", &port.to_string()])
        .args(["--bind", "127.0.0.1"])
        .args(["--save", ""])
        .args(["--appendonly", "yes"])
        .args(["--appendfsync", "everysec"])
        // No rewrites: the AOF stays a log of every write, which `ledger.rs` counts.
        .args(["--auto-aof-rewrite-percentage", "0"])
        .arg("--dir")
        .arg(dir)
        .args(["--maxmemory-policy", "noeviction"])
        .args(["--enable-debug-command", "local"])
        .args(["--daemonize", "no"])
        .args(extra)
        .stdin(Stdio::null())
        .stdout(log)
        .stderr(log_err)
        .spawn()
        .map_err(|e| SpawnError::Other(format!("spawning redis-server: {e} (is it installed?)")))?;

    let deadline = Instant::now() + START_TIMEOUT;
    loop {
        if let Some(status) = child.try_wait().expect("polling redis-server") {
            let text = read_log_from(&log_path, log_offset);
            return Err(if text.contains("Address already in use") {
                SpawnError::AddrInUse
            } else {
                SpawnError::Other(format!("exited with {status} on port {port}; log:\n{text}"))
            });
        }
        if ping_reply(port).is_some_and(|r| r.starts_with(ready)) {
            return Ok(child);
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            let text = read_log_from(&log_path, log_offset);
            return Err(SpawnError::Other(format!(
                "no PONG on port {port} within {START_TIMEOUT:?}; log:\n{text}"
            )));
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// One PING over raw RESP. A `-LOADING` reply (AOF still loading) counts as not ready.
fn ping(port: u16) -> bool {
    ping_reply(port).is_some_and(|r| r.starts_with(b"+PONG"))
}

/// The first line of the server's answer to one PING, if it answered.
fn ping_reply(port: u16) -> Option<Vec<u8>> {
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    let mut stream = TcpStream::connect_timeout(&addr, Duration::from_millis(200)).ok()?;
    let _ = stream.set_read_timeout(Some(Duration::from_secs(1)));
    let _ = stream.set_write_timeout(Some(Duration::from_secs(1)));
    stream.write_all(b"*1\r\n$4\r\nPING\r\n").ok()?;
    let mut reply = Vec::new();
    let mut byte = [0u8; 1];
    // A reply line is short; read up to CRLF.
    while reply.len() < 256 {
        match stream.read(&mut byte) {
            Ok(1) => {
                reply.push(byte[0]);
                if reply.ends_with(b"\r\n") {
                    break;
                }
            }
            _ => return None,
        }
    }
    Some(reply)
}

fn read_log_from(path: &Path, offset: u64) -> String {
    let mut text = String::new();
    if let Ok(mut file) = File::open(path) {
        let _ = file.read_to_string(&mut text);
    }
    text.get(usize::try_from(offset).unwrap_or(0)..)
        .unwrap_or(&text)
        .to_owned()
}
