//! `fullsend ralph spawn [--agent CMD] -- PROMPT`: one coding-agent call, its
//! JSON result on stdout (the PRD's `spawner --test` hook).

use std::path::PathBuf;

use crate::cmd::Env;
use crate::cmd::args::GlobalArgs;
use crate::designer::spawn::Agent;
use crate::support::exit::{Exit, Fail};

/// Examples shown in `--help` and the man page.
pub const EXAMPLES: &str = "\
Examples:
  fullsend ralph spawn --agent echo -- hello
  fullsend ralph spawn --work-dir /tmp/x -- 'Write hello.txt containing hi'

Output (abridged):
  {\"ok\":true,\"exit_code\":0,\"timed_out\":false,\"is_error\":false,\"result\":\"hello\",\"session_id\":null,
   \"total_cost_usd\":0.0,\"duration_ms\":3,\"prompt_path\":\"…/.fullsend/calls/001-spawn.prompt.txt\",…}";

/// Arguments of `fullsend ralph spawn`.
#[derive(Debug, clap::Args)]
#[command(after_help = EXAMPLES)]
pub struct Args {
    /// Run this command instead of claude (no shell; the prompt is on its stdin).
    #[arg(long)]
    pub agent: Option<String>,
    /// The agent's working dir (default: a new temp dir, kept).
    #[arg(long, value_name = "DIR")]
    pub work_dir: Option<PathBuf>,
    /// Seconds the call may take [env: FULLSEND_TIMEOUT].
    #[arg(long, value_name = "SECS")]
    pub timeout: Option<f64>,
    /// Path of the claude executable [env: FULLSEND_CLAUDE_BIN].
    #[arg(long)]
    pub claude_bin: Option<PathBuf>,
    /// Tools the agent may use (comma-separated).
    #[arg(long, value_delimiter = ',')]
    pub allowed_tools: Option<Vec<String>>,
    /// The prompt.
    #[arg(last = true, required = true)]
    pub prompt: Vec<String>,
}

/// Runs `ralph spawn`.
pub async fn run(args: Args, global: &GlobalArgs) -> anyhow::Result<Exit> {
    let mut flags = Vec::new();
    if let Some(t) = args.timeout {
        flags.push(("fullsend_timeout", t.to_string()));
    }
    if let Some(p) = &args.claude_bin {
        flags.push(("claude_bin", p.display().to_string()));
    }
    let env = Env::load(global, flags)?;
    let prompt = args.prompt.join(" ");
    if prompt.trim().is_empty() {
        return Err(Fail::usage("the prompt is empty"));
    }
    let work_dir = match args.work_dir {
        Some(d) => {
            std::fs::create_dir_all(&d)
                .map_err(|e| Fail::usage(format!("work dir {}: {e}", d.display())))?;
            d
        }
        None => tempfile::Builder::new()
            .prefix("fullsend_spawn_")
            .permissions(std::os::unix::fs::PermissionsExt::from_mode(0o700))
            .tempdir()?
            .keep(),
    };
    let agent = match &args.agent {
        Some(cmd) => Some(Agent::Raw(crate::support::process::parse_agent_command(
            cmd,
        )?)),
        None => None,
    };
    let mut opts = crate::designer::design::spawn_options(&env.config, agent, work_dir)?;
    if let Some(tools) = args.allowed_tools {
        opts.allowed_tools = tools;
    }
    opts.label = "spawn".into();
    let cancel = crate::support::signal::shutdown_channel();
    let result = crate::designer::spawn::spawn(&opts, &prompt, cancel).await?;
    env.emit(&result)?;
    Ok(if result.ok {
        Exit::Success
    } else if result.cancelled {
        crate::support::signal::received().unwrap_or(Exit::Interrupted)
    } else if result.timed_out {
        Exit::Upstream
    } else {
        Exit::Failed
    })
}
