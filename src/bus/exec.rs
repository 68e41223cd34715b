//! `listen CHANNEL --group G --exec PIPELINE`: a role whose handler is a shell pipeline. Each
//! message goes to the pipeline's stdin. Its delivery goes in `FULLSEND_DELIVERY`, so
//! `fullsend think`, `dispatch` and `design` inside the pipeline memoise, fence and acknowledge
//! under it, as the built-in roles do. The pipeline's exit code decides the outcome. The lease
//! is renewed while the pipeline runs. The pipeline runs in its own process group, which is
//! killed on timeout, on a lost lease and on shutdown.

use std::ffi::OsString;
use std::time::Duration;

use serde_json::{Value, json};
use tokio::sync::watch;

use crate::bus::delivery::{self, Delivery};
use crate::bus::effects::{self, CommitStatus, Fence};
use crate::bus::runner::{Handled, Handler, Job, JobError};
use crate::bus::store::Conn;
use crate::support::process::{ChildSpec, run_captured};

/// The most a pipeline may print on stdout (or stderr) per message.
const MAX_OUTPUT: usize = 16 * 1024 * 1024;

/// A pipeline role.
pub struct ExecRole {
    /// The shell command line, run by bash.
    pub pipeline: String,
    /// The consumed channel.
    pub channel: String,
    /// The wall-clock limit per message.
    pub timeout: Duration,
    /// The pipeline's environment (the listener's own, with this binary first on PATH).
    pub env: Vec<(String, OsString)>,
    /// The bash that runs it.
    pub bash: String,
}

/// The script bash runs: the pipeline, then its first failing stage's exit code (bash's
/// `pipefail` would give the last one: in `think | dispatch`, a dispatch that found no decision
/// would hide the model outage that `think` reported).
pub fn script(pipeline: &str) -> String {
    format!(
        "{pipeline}\n__fullsend_status=(\"${{PIPESTATUS[@]}}\")\n\
         for __fullsend_code in \"${{__fullsend_status[@]}}\"; do\n  \
         if [ \"$__fullsend_code\" -ne 0 ]; then exit \"$__fullsend_code\"; fi\ndone\nexit 0\n"
    )
}

/// What a pipeline's exit code means for its message: 0 done, 2 bad input (dead-lettered),
/// 3 transient (retried with backoff), 4 a limit (the role waits, the attempt not counted);
/// anything else, a crash or a signal, is a failed delivery.
pub fn outcome(code: Option<i32>, stderr: &str) -> Result<(), JobError> {
    let said = if stderr.is_empty() {
        String::new()
    } else {
        format!(": {stderr}")
    };
    match code {
        Some(0) => Ok(()),
        Some(2) => Err(JobError::Permanent(anyhow::anyhow!(
            "the pipeline refused the message (exit 2){said}"
        ))),
        Some(3) => Err(JobError::Transient(anyhow::anyhow!(
            "the pipeline met a transient failure (exit 3){said}"
        ))),
        Some(4) => Err(JobError::Paused(anyhow::anyhow!(
            "the pipeline hit a limit (exit 4){said}"
        ))),
        Some(c) => Err(JobError::Transient(anyhow::anyhow!(
            "the pipeline failed (exit {c}){said}"
        ))),
        None => Err(JobError::Transient(anyhow::anyhow!(
            "the pipeline was killed by a signal{said}"
        ))),
    }
}

impl Handler for ExecRole {
    async fn handle(
        &self,
        job: Job,
        mut conn: Conn,
        fence: Fence,
        mut cancel: watch::Receiver<bool>,
    ) -> Result<Handled, JobError> {
        let delivery = Delivery {
            channel: self.channel.clone(),
            identity: job.identity.clone(),
            fence: fence.clone(),
        };
        let mut env = self.env.clone();
        env.retain(|(k, _)| k != delivery::ENV && k != "TRACEPARENT" && k != "TRACESTATE");
        env.push((delivery::ENV.to_string(), delivery.to_env().into()));
        // The stages' spans (each is a `fullsend` command) join this message's trace.
        let trace_id = crate::support::msg::trace_id_of(&job.message, Some(&job.identity));
        env.push((
            "TRACEPARENT".to_string(),
            crate::support::msg::traceparent(&trace_id).into(),
        ));
        let spec = ChildSpec {
            program: self.bash.clone(),
            args: vec!["-c".into(), script(&self.pipeline)],
            env,
            stdin: serde_json::to_vec(&job.message).unwrap_or_default(),
            timeout: self.timeout,
            max_output: MAX_OUTPUT,
            cwd: None,
        };
        // Dropping the run (a lost lease, shutdown) kills the pipeline's process group.
        let captured = tokio::select! {
            r = run_captured(&spec) => r.map_err(JobError::Transient)?,
            _ = cancel.wait_for(|c| *c) => {
                return Err(JobError::Transient(anyhow::anyhow!("lease lost while the pipeline ran")))
            }
        };
        let stderr = String::from_utf8_lossy(&captured.stderr);
        let stderr = crate::support::msg::preview(stderr.trim(), 500);
        outcome(captured.status.code(), &stderr)?;
        let stdout = String::from_utf8_lossy(&captured.stdout);
        let output = stdout
            .lines()
            .rev()
            .find_map(|l| {
                serde_json::from_str::<Value>(l.trim())
                    .ok()
                    .filter(Value::is_object)
            })
            .unwrap_or_else(|| json!(crate::support::msg::preview(stdout.trim(), 500)));
        // A stage committed under the delivery (and so acknowledged the entry), or the pipeline
        // dropped the message on purpose (a filter): then it is acknowledged here.
        let (commit, dropped) = match effects::pending_owner(&mut conn, &fence)
            .await
            .map_err(JobError::Transient)?
        {
            None => (CommitStatus::Ok, false),
            Some((owner, count)) if owner == fence.consumer && count == fence.deliveries => {
                tracing::warn!(
                    "{}: the pipeline exited 0 without committing; acknowledging it as dropped",
                    job.identity
                );
                let done = effects::commit(&mut conn, &[], Some(&delivery.seen()), Some(&fence))
                    .await
                    .map_err(JobError::Transient)?;
                (done.status, true)
            }
            Some(_) => (CommitStatus::LostLease, false),
        };
        let line = json!({
            "v": 1,
            "role": "exec",
            "msg_id": job.identity,
            "type": job.message.get("type"),
            "dropped": dropped,
            "output": output,
        });
        Ok(Handled { commit, line })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exit_codes_map_to_outcomes() {
        assert!(outcome(Some(0), "").is_ok());
        assert!(matches!(outcome(Some(2), "x"), Err(JobError::Permanent(_))));
        assert!(matches!(outcome(Some(3), ""), Err(JobError::Transient(_))));
        assert!(matches!(outcome(Some(4), ""), Err(JobError::Paused(_))));
        assert!(matches!(
            outcome(Some(137), ""),
            Err(JobError::Transient(_))
        ));
        assert!(matches!(outcome(None, ""), Err(JobError::Transient(_))));
    }

    #[test]
    fn the_first_failing_stage_decides() {
        let run = |pipeline: &str| {
            std::process::Command::new("bash")
                .arg("-c")
                .arg(script(pipeline))
                .status()
                .expect("bash")
                .code()
        };
        assert_eq!(run("true | true"), Some(0));
        assert_eq!(run("(exit 3) | (exit 2)"), Some(3));
        assert_eq!(run("true | (exit 2)"), Some(2));
        assert_eq!(run("exit 4"), Some(4));
    }
}
