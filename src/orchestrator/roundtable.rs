//! Runs the configured roundtable command: the request as JSON on stdin, the
//! result (`{transcript, summary}`) as JSON on stdout, within a timeout.

use std::process::Stdio;
use std::time::Duration;

use anyhow::{Context, bail};
use serde_json::Value;
use tokio::io::AsyncWriteExt;

/// Runs `command` (split into words, no shell) with `request` on stdin.
pub async fn run(command: &str, request: &Value, timeout: Duration) -> anyhow::Result<Value> {
    let argv = crate::support::process::parse_agent_command(command)?;
    let Some((program, args)) = argv.split_first() else {
        bail!("the roundtable command is empty")
    };
    let mut child = tokio::process::Command::new(program)
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0)
        .kill_on_drop(true)
        .spawn()
        .with_context(|| format!("starting the roundtable command {program}"))?;
    if let Some(mut stdin) = child.stdin.take() {
        stdin
            .write_all(request.to_string().as_bytes())
            .await
            .context("writing the roundtable request")?;
    }
    let pid = child.id();
    let output = match tokio::time::timeout(timeout, child.wait_with_output()).await {
        Ok(result) => result.context("waiting for the roundtable command")?,
        Err(_) => {
            if let Some(pid) = pid.and_then(|p| i32::try_from(p).ok()) {
                // The child leads its own group: end it and anything it started.
                unsafe { libc::killpg(pid, libc::SIGKILL) };
            }
            bail!(
                "the roundtable command timed out after {}s",
                timeout.as_secs()
            );
        }
    };
    if let Some(pid) = pid.and_then(|p| i32::try_from(p).ok()) {
        // Anything the command left running in its group goes with it.
        unsafe { libc::killpg(pid, libc::SIGKILL) };
    }
    if !output.status.success() {
        let stderr = String::from_utf8_lossy(&output.stderr);
        bail!(
            "the roundtable command failed ({}): {}",
            output.status,
            crate::support::msg::preview(stderr.trim(), 500)
        );
    }
    let text = String::from_utf8_lossy(&output.stdout);
    match crate::llm::extract::json_objects(&text).pop() {
        Some(obj) => Ok(Value::Object(obj)),
        None => bail!("the roundtable command printed no JSON object"),
    }
}
