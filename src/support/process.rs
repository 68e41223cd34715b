//! Child processes: a configured command line split into argv (shell quoting, no shell), the
//! process groups every child runs in (so that a timeout, a cancel or a dropped future kills
//! the whole tree and leaves no orphans), and [`run_captured`] for a child that takes its input
//! on stdin and answers on stdout, with an allow-listed environment and bounded output.

use std::ffi::OsString;
use std::path::PathBuf;
use std::process::{ExitStatus, Stdio};
use std::time::Duration;

use anyhow::{Context as _, bail};
use tokio::io::{AsyncRead, AsyncReadExt as _, AsyncWriteExt as _};

/// What a child that is not a coding agent (the roundtable command) may see of the parent's
/// environment. No key, no token, no Redis URL: its input is chat-derived.
pub const PLAIN_ENV_ALLOW: &[&str] = &[
    "PATH", "HOME", "USER", "LOGNAME", "LANG", "LC_ALL", "LC_CTYPE", "TZ", "TERM", "TMPDIR",
];

/// The allow-listed part of the parent's environment.
pub fn plain_env(allow: &[&str]) -> Vec<(String, OsString)> {
    allow
        .iter()
        .filter_map(|name| std::env::var_os(name).map(|v| ((*name).to_owned(), v)))
        .collect()
}

/// One child run to completion: program, arguments, environment (nothing else is inherited),
/// what goes on its stdin, and its limits.
#[derive(Debug, Clone)]
pub struct ChildSpec {
    /// The program (a path, or a name looked up on the allow-listed PATH).
    pub program: String,
    /// Its arguments.
    pub args: Vec<String>,
    /// The whole environment the child gets.
    pub env: Vec<(String, OsString)>,
    /// Written to stdin concurrently with reading the output, then closed.
    pub stdin: Vec<u8>,
    /// Wall-clock limit for everything: writing, running, reading.
    pub timeout: Duration,
    /// Most bytes read from stdout (and, separately, stderr) before the child is killed.
    pub max_output: usize,
    /// Working directory, if not the parent's.
    pub cwd: Option<PathBuf>,
}

/// How a captured child ended.
#[derive(Debug)]
pub struct Captured {
    /// Its exit status.
    pub status: ExitStatus,
    /// Everything it printed on stdout (at most `max_output` bytes).
    pub stdout: Vec<u8>,
    /// Everything it printed on stderr (at most `max_output` bytes).
    pub stderr: Vec<u8>,
}

/// Runs a child in its own process group and kills the group when it exits, times out, prints
/// too much, or when this future is dropped.
pub async fn run_captured(spec: &ChildSpec) -> anyhow::Result<Captured> {
    let mut cmd = tokio::process::Command::new(&spec.program);
    cmd.args(&spec.args)
        .env_clear()
        .envs(spec.env.iter().map(|(k, v)| (k, v)))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0)
        .kill_on_drop(true);
    if let Some(dir) = &spec.cwd {
        cmd.current_dir(dir);
    }
    let mut child = spawn_child(&mut cmd).with_context(|| format!("starting {}", spec.program))?;
    let pgid = child
        .id()
        .and_then(|p| i32::try_from(p).ok())
        .context("the child has no pid")?;
    let _guard = GroupGuard::new(pgid);
    let mut stdin = child.stdin.take().context("the child has no stdin")?;
    let stdout = child.stdout.take().context("the child has no stdout")?;
    let stderr = child.stderr.take().context("the child has no stderr")?;
    let input = spec.stdin.clone();
    let write = async move {
        // A child that exits without reading all of it is not an error: its answer decides.
        let _ = stdin.write_all(&input).await;
        let _ = stdin.shutdown().await;
    };
    let max = spec.max_output;
    let all = async {
        let ((), out, err, status) = tokio::join!(
            write,
            read_bounded(stdout, max),
            read_bounded(stderr, max),
            child.wait()
        );
        anyhow::Ok((out?, err?, status.context("waiting for the child")?))
    };
    let outcome = tokio::time::timeout(spec.timeout, all).await;
    // Whatever happened, nothing it started outlives it.
    kill_group(pgid, libc::SIGKILL);
    match outcome {
        Err(_) => bail!(
            "{} timed out after {}s",
            spec.program,
            spec.timeout.as_secs_f64()
        ),
        Ok(result) => {
            let (stdout, stderr, status) = result?;
            Ok(Captured {
                status,
                stdout,
                stderr,
            })
        }
    }
}

/// Reads a stream to its end, failing once it passes `max` bytes.
async fn read_bounded(stream: impl AsyncRead + Unpin, max: usize) -> anyhow::Result<Vec<u8>> {
    let mut buf = Vec::new();
    let limit = u64::try_from(max).unwrap_or(u64::MAX).saturating_add(1);
    stream
        .take(limit)
        .read_to_end(&mut buf)
        .await
        .context("reading the child's output")?;
    if buf.len() > max {
        bail!("the child printed more than {max} bytes");
    }
    Ok(buf)
}

/// Splits a configured command line (`--agent`, `roundtable_command`) into argv with POSIX
/// shell quoting rules (`'...'`, `"..."`, backslashes, `#` comments) but no shell: nothing is
/// expanded, substituted or run on the way.
pub fn parse_agent_command(cmd: &str) -> anyhow::Result<Vec<String>> {
    let Some(args) = shlex::split(cmd) else {
        bail!("unterminated quote or trailing backslash in command: {cmd}");
    };
    if args.is_empty() {
        bail!("the agent command is empty");
    }
    Ok(args)
}

/// Spawns the command, retrying briefly on ETXTBSY: a just-written agent script can be "busy" while another
/// thread's fork still holds its write descriptor.
pub fn spawn_child(cmd: &mut tokio::process::Command) -> std::io::Result<tokio::process::Child> {
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

/// Sends `sig` to the process group `pgid`. A pgid ≤ 1 would address our own group or init: never.
pub fn kill_group(pgid: i32, sig: libc::c_int) {
    if pgid > 1 {
        // SAFETY: killpg only sends a signal; an already-empty group yields ESRCH, which is fine.
        unsafe {
            libc::killpg(pgid, sig);
        }
    }
}

/// Every process group a live [`GroupGuard`] holds: what [`exit_now`] kills on the way out.
static LIVE_GROUPS: std::sync::Mutex<Vec<i32>> = std::sync::Mutex::new(Vec::new());

fn live_groups() -> std::sync::MutexGuard<'static, Vec<i32>> {
    LIVE_GROUPS
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// SIGKILLs the child's group when dropped, so an abandoned `spawn` future leaves no orphans
/// either; and registers the group, so that an exit that skips every destructor (a second
/// signal, a closed stdout) still kills it.
pub struct GroupGuard(i32);

impl GroupGuard {
    /// Guards the group `pgid`.
    pub fn new(pgid: i32) -> GroupGuard {
        live_groups().push(pgid);
        GroupGuard(pgid)
    }

    /// Forgets the group without signalling it (it was already killed and reaped).
    pub fn disarm(self) {
        unregister(self.0);
        std::mem::forget(self);
    }
}

fn unregister(pgid: i32) {
    let mut groups = live_groups();
    if let Some(at) = groups.iter().position(|g| *g == pgid) {
        groups.swap_remove(at);
    }
}

impl Drop for GroupGuard {
    fn drop(&mut self) {
        kill_group(self.0, libc::SIGKILL);
        unregister(self.0);
    }
}

/// Kills every guarded child group, then exits with `code`: the one way out that does not
/// unwind (a second signal, EPIPE on stdout), so no coding agent outlives fullsend.
pub fn exit_now(code: i32) -> ! {
    for pgid in live_groups().iter() {
        kill_group(*pgid, libc::SIGKILL);
    }
    std::process::exit(code)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn agent_command_parsing() {
        assert_eq!(
            parse_agent_command("echo hello").unwrap(),
            ["echo", "hello"]
        );
        assert_eq!(
            parse_agent_command(r#"  my-agent --flag 'a b' "c \"d\"" e'f g'h "" "#).unwrap(),
            ["my-agent", "--flag", "a b", "c \"d\"", "ef gh", ""]
        );
        assert_eq!(parse_agent_command(r"a\ b c").unwrap(), ["a b", "c"]);
        assert!(parse_agent_command("   ").is_err());
        assert!(parse_agent_command("echo 'oops").is_err());
        assert!(parse_agent_command("echo \"oops").is_err());
    }
}
