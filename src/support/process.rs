//! Child processes: a configured command line split into argv (shell quoting, no shell), and the process
//! groups every child runs in, so that a timeout, a cancel or a dropped future kills the whole
//! tree and leaves no orphans.

use std::time::Duration;

use anyhow::bail;

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

/// SIGKILLs the child's group when dropped, so an abandoned `spawn` future leaves no orphans either.
pub struct GroupGuard(pub i32);

impl Drop for GroupGuard {
    fn drop(&mut self) {
        kill_group(self.0, libc::SIGKILL);
    }
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
