//! Runs the configured roundtable command: the request as JSON on stdin, the
//! result (`{transcript, summary}`) as JSON on stdout, within a timeout.
//!
//! The request carries chat-derived text, so the command is treated like any
//! model-driven child: an allow-listed environment with no key and no Redis
//! URL, its own process group, its stdin written while its output is read (a
//! command that never reads stdin cannot hold a slot past the timeout), and at
//! most [`MAX_OUTPUT`] bytes of output.

use std::time::Duration;

use anyhow::bail;
use serde_json::Value;

use crate::support::process::{ChildSpec, PLAIN_ENV_ALLOW, plain_env, run_captured};

/// The most the command may print on stdout (or stderr): a transcript and a summary.
pub const MAX_OUTPUT: usize = 4 * 1024 * 1024;

/// Runs `command` (split into words, no shell) with `request` on stdin.
pub async fn run(command: &str, request: &Value, timeout: Duration) -> anyhow::Result<Value> {
    let argv = crate::support::process::parse_agent_command(command)?;
    let Some((program, args)) = argv.split_first() else {
        bail!("the roundtable command is empty")
    };
    let spec = ChildSpec {
        program: program.clone(),
        args: args.to_vec(),
        env: plain_env(PLAIN_ENV_ALLOW),
        stdin: request.to_string().into_bytes(),
        timeout,
        max_output: MAX_OUTPUT,
        cwd: None,
    };
    let output = run_captured(&spec)
        .await
        .map_err(|e| anyhow::anyhow!("the roundtable command: {e:#}"))?;
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
