//! `fullsend listen ROLE`: the daemons. Messages of the role's channel travel
//! on a Redis stream (PUBLISH-only producers are bridged in); each is handled
//! through the same code as the subcommands, and one JSON line per handled
//! message goes to stdout. Pipelines: `commands/<role>.sh`.

use std::sync::Arc;
use std::time::Duration;

use crate::bus::runner::{self, Options};
use crate::bus::store::ChannelKeys;
use crate::cmd::Env;
use crate::cmd::args::{EngineArg, GlobalArgs, ModeArg};
use crate::support::exit::{Exit, Fail};

/// Examples shown in `--help` and the man page.
pub const EXAMPLES: &str = "\
Examples:
  fullsend listen orchestrator
  fullsend listen fullsend --concurrency 2
  fullsend listen orchestrator --once      # drain what is queued, then exit

Output (one line per handled message, abridged):
  {\"v\":1,\"role\":\"orchestrator\",\"msg_id\":\"019a…\",\"type\":\"escalation\",\"action\":\"dispatch_to_fullsend\",
   \"entry_id\":\"1763719200000-0\",\"deliveries\":1,\"commit\":{\"status\":{\"status\":\"ok\"},…}}";

/// Where the Executor reports runs.
pub const EXPERIMENT_RESULTS: &str = "fullsend:experiment_results";
/// Where the Builder reports tools.
pub const BUILDER_RESULTS: &str = "fullsend:builder_results";

/// Which daemon.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Role {
    /// The strategic brain: think → dispatch.
    Orchestrator,
    /// The experiment designer: design → save → announce.
    Fullsend,
}

/// Arguments of `fullsend listen`.
#[derive(Debug, clap::Args)]
#[command(after_help = EXAMPLES)]
pub struct Args {
    /// The role to run.
    #[arg(value_enum)]
    pub role: Role,
    /// Messages handled at once.
    #[arg(long, default_value_t = 1, env = "FULLSEND_CONCURRENCY")]
    pub concurrency: usize,
    /// Consumer name (default: <host>:<n>, the first one free).
    #[arg(long, env = "FULLSEND_CONSUMER")]
    pub consumer: Option<String>,
    /// Seconds a message stays ours without renewal.
    #[arg(long, default_value_t = 60.0, env = "FULLSEND_LEASE")]
    pub lease: f64,
    /// Deliveries before a message is dead-lettered.
    #[arg(long, default_value_t = 5, env = "FULLSEND_MAX_DELIVERIES")]
    pub max_deliveries: u64,
    /// Seconds in-flight work may finish after SIGTERM.
    #[arg(long, default_value_t = 90.0, env = "FULLSEND_GRACE")]
    pub grace: f64,
    /// Exit once the stream is drained.
    #[arg(long)]
    pub once: bool,
    /// Don't bridge PUBLISHed messages into the stream.
    #[arg(long)]
    pub no_ingest: bool,
    /// Model provider for the role [env: ORCHESTRATOR_PROVIDER / FULLSEND_PROVIDER].
    #[arg(long)]
    pub provider: Option<String>,
    /// Design mode for the fullsend role.
    #[arg(long, value_enum, default_value_t = ModeArg::Single)]
    pub mode: ModeArg,
    /// Design engine for the fullsend role.
    #[arg(long, value_enum, default_value_t = EngineArg::Claude, env = "FULLSEND_ENGINE")]
    pub engine: EngineArg,
    /// Coding agent command instead of claude (no shell; the prompt is on its stdin).
    #[arg(long)]
    pub agent: Option<String>,
}

/// Runs `listen`.
pub async fn run(args: Args, global: &GlobalArgs) -> anyhow::Result<Exit> {
    let env = Env::load(global, Vec::new())?;
    if args.concurrency == 0 || args.concurrency > 1024 {
        return Err(Fail::usage("--concurrency must be between 1 and 1024"));
    }
    let secs = |v: f64, name: &str| -> anyhow::Result<Duration> {
        if v > 0.0 && v.is_finite() {
            Ok(Duration::from_secs_f64(v))
        } else {
            Err(Fail::usage(format!(
                "--{name} must be a positive number of seconds"
            )))
        }
    };
    let channels = env.config.channels();
    let (group, channel) = match args.role {
        Role::Orchestrator => ("orchestrator", channels.to_orchestrator.clone()),
        Role::Fullsend => ("fullsend", channels.to_fullsend.clone()),
    };
    let opts = Options {
        group: group.to_string(),
        channel: channel.clone(),
        redis_url: env.config.redis_url(),
        consumer: args.consumer.clone(),
        concurrency: args.concurrency,
        lease: secs(args.lease, "lease")?,
        max_deliveries: args.max_deliveries.max(1),
        grace: secs(args.grace, "grace")?,
        block: Duration::from_secs(2),
        once: args.once,
        ingest: !args.no_ingest,
        // FULLSEND also acts on what the Executor and the Builder report.
        also_ingest: match args.role {
            Role::Orchestrator => Vec::new(),
            Role::Fullsend => vec![EXPERIMENT_RESULTS.to_string(), BUILDER_RESULTS.to_string()],
        },
    };
    let shutdown = crate::support::signal::shutdown_channel();
    let pretty = global.pretty;
    let output: runner::Output = Arc::new(move |line| {
        if let Err(err) = crate::support::io::emit(line, pretty) {
            if crate::support::exit::is_broken_pipe(&err) {
                crate::support::process::exit_now(0);
            }
            tracing::error!("writing output: {err:#}");
        }
    });
    let keys = ChannelKeys::new(&channel);
    let stats = match args.role {
        Role::Orchestrator => {
            let orchestrator = crate::orchestrator::think::Orchestrator::from_config(
                &env.config,
                args.provider.as_deref(),
                None,
            )?;
            // A missing key or a broken prompt override stops the daemon here,
            // rather than failing (and dead-lettering) every message.
            orchestrator
                .provider
                .ready()
                .map_err(crate::llm::LlmError::into_anyhow)?;
            orchestrator.prompt(
                &serde_json::Map::new(),
                &crate::context::loader::Context::default(),
            )?;
            let role = crate::orchestrator::listener::OrchestratorRole {
                orchestrator,
                target: crate::cmd::dispatch::target(&env)?,
                decision_log: env.config.decision_log(),
                keys,
                group: group.to_string(),
                loader: tokio::sync::Mutex::new(crate::context::loader::Loader::default()),
                gate: crate::bus::spend::Gate::from_config(&env.config)?,
            };
            runner::run(opts, Arc::new(role), shutdown, output).await?
        }
        Role::Fullsend => {
            let designer = crate::cmd::design::designer(
                &env,
                args.mode.into(),
                args.engine.into(),
                args.agent.as_deref(),
                args.provider.as_deref(),
                50,
            )?;
            crate::designer::design::check_prompts(&designer.prompts)?;
            if let Some((provider, _)) = &designer.api {
                provider
                    .ready()
                    .map_err(crate::llm::LlmError::into_anyhow)?;
            }
            let role = crate::designer::listener::FullsendRole {
                designer,
                keys,
                group: group.to_string(),
                gate: crate::bus::spend::Gate::from_config(&env.config)?,
            };
            runner::run(opts, Arc::new(role), shutdown, output).await?
        }
    };
    tracing::info!(
        "stopped: {} processed, {} failed, {} dead-lettered",
        stats.processed.load(std::sync::atomic::Ordering::Relaxed),
        stats.failed.load(std::sync::atomic::Ordering::Relaxed),
        stats
            .dead_lettered
            .load(std::sync::atomic::Ordering::Relaxed)
    );
    Ok(Exit::Success)
}
