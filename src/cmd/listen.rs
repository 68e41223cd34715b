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
    /// The role to run (orchestrator: think → dispatch; fullsend: design → save → announce),
    /// or, with --exec and --group, any channel (e.g. fullsend:to_orchestrator).
    #[arg(value_name = "ROLE|CHANNEL")]
    pub role: String,
    /// Run this shell pipeline (bash) for each message instead of the built-in role: the
    /// message on stdin, its delivery in FULLSEND_DELIVERY. Exit 0 done, 2 bad input
    /// (dead-lettered), 3 transient (retried), 4 a limit (waits); the first failing stage
    /// decides.
    #[arg(long, value_name = "PIPELINE")]
    pub exec: Option<String>,
    /// Consumer group (default: the role's name; required for a channel).
    #[arg(long)]
    pub group: Option<String>,
    /// Seconds a pipeline may run per message before it is killed (a transient failure).
    #[arg(long, default_value_t = 900.0, env = "FULLSEND_EXEC_TIMEOUT")]
    pub exec_timeout: f64,
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
    /// Serve `/metrics` (Prometheus text format) on this address, e.g. 127.0.0.1:9464.
    #[arg(long, value_name = "ADDR", env = "FULLSEND_METRICS_ADDR")]
    pub metrics: Option<std::net::SocketAddr>,
    /// Don't bridge PUBLISHed messages into the stream.
    #[arg(long)]
    pub no_ingest: bool,
    /// Model provider for the role [env: ORCHESTRATOR_PROVIDER / FULLSEND_PROVIDER].
    #[arg(long)]
    pub provider: Option<String>,
    /// Design mode for the fullsend role.
    #[arg(long, value_enum, default_value_t = ModeArg::Auto, env = "FULLSEND_DESIGN_MODE")]
    pub mode: ModeArg,
    /// Design engine for the fullsend role.
    #[arg(long, value_enum, default_value_t = EngineArg::Claude, env = "FULLSEND_ENGINE")]
    pub engine: EngineArg,
    /// Coding agent command instead of claude (no shell; the prompt is on its stdin).
    #[arg(long)]
    pub agent: Option<String>,
}

/// The Orchestrator role from configuration, checked: a missing key or a prompt override that
/// does not render stops here, rather than failing (and dead-lettering) every message.
pub fn orchestrator_role(
    env: &Env,
    provider: Option<&str>,
    keys: ChannelKeys,
    group: &str,
    tracked: bool,
) -> anyhow::Result<crate::orchestrator::listener::OrchestratorRole> {
    let orchestrator =
        crate::orchestrator::think::Orchestrator::from_config(&env.config, provider, None)?;
    orchestrator
        .provider
        .ready()
        .map_err(crate::llm::LlmError::into_anyhow)?;
    orchestrator.check_prompts()?;
    Ok(crate::orchestrator::listener::OrchestratorRole {
        orchestrator,
        target: crate::cmd::dispatch::target(env)?,
        decision_log: decision_log(env.config.decision_log()),
        keys,
        group: group.to_string(),
        // A listener keeps the Redis context and follows its changes; a pipeline stage lives
        // for one message, so it reads it once.
        loader: tokio::sync::Mutex::new(if tracked {
            crate::context::loader::Loader::tracked(&env.config.redis_url())
        } else {
            crate::context::loader::Loader::default()
        }),
        gate: crate::bus::spend::Gate::from_config(&env.config)?,
    })
}

/// The FULLSEND role from configuration, checked like the Orchestrator's.
#[allow(clippy::too_many_arguments)]
pub fn fullsend_role(
    env: &Env,
    mode: crate::designer::design::ModePolicy,
    engine: crate::designer::design::Engine,
    agent: Option<&str>,
    provider: Option<&str>,
    max_iterations: u32,
    keys: ChannelKeys,
    group: &str,
) -> anyhow::Result<crate::designer::listener::FullsendRole> {
    let designer =
        crate::cmd::design::designer(env, mode, engine, agent, provider, max_iterations)?;
    crate::designer::design::check_prompts(&designer.prompts)?;
    if let Some((provider, _)) = &designer.api {
        provider
            .ready()
            .map_err(crate::llm::LlmError::into_anyhow)?;
    }
    Ok(crate::designer::listener::FullsendRole {
        designer,
        keys,
        group: group.to_string(),
        gate: crate::bus::spend::Gate::from_config(&env.config)?,
    })
}

/// The listener's decision log, made durable once a second by a background task.
fn decision_log(path: std::path::PathBuf) -> Arc<crate::orchestrator::log::DecisionLog> {
    let log = Arc::new(crate::orchestrator::log::DecisionLog::new(path));
    let syncing = Arc::downgrade(&log);
    tokio::spawn(async move {
        loop {
            tokio::time::sleep(Duration::from_secs(1)).await;
            let Some(log) = syncing.upgrade() else { return };
            let _ = tokio::task::spawn_blocking(move || log.sync()).await;
        }
    });
    log
}

/// What a stage inside a `listen --exec` pipeline exits with when its delivered message did
/// not complete: the same outcome the listener gives it (see `bus::exec::outcome`).
pub fn stage_exit(error: crate::bus::runner::JobError) -> anyhow::Error {
    use crate::bus::runner::JobError;
    match error {
        JobError::Permanent(e) => Fail::usage(format!("{e:#}")),
        JobError::Transient(e) | JobError::Conflict(e) => Fail::upstream(format!("{e:#}")),
        JobError::Paused(e) => Fail::limit(format!("{e:#}")),
    }
}

/// The pipeline's environment: the listener's own, with the directory of this binary first on
/// PATH, so `fullsend` in a pipeline is the same version as the listener.
fn pipeline_env() -> anyhow::Result<Vec<(String, std::ffi::OsString)>> {
    let mut env: Vec<(String, std::ffi::OsString)> = std::env::vars_os()
        .filter_map(|(k, v)| Some((k.into_string().ok()?, v)))
        .filter(|(k, _)| k != "PATH")
        .collect();
    let exe = std::env::current_exe()?;
    let mut dirs: Vec<std::path::PathBuf> = exe
        .parent()
        .map(|d| vec![d.to_path_buf()])
        .unwrap_or_default();
    if let Some(path) = std::env::var_os("PATH") {
        dirs.extend(std::env::split_paths(&path));
    }
    env.push(("PATH".into(), std::env::join_paths(dirs)?));
    Ok(env)
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
    let role = match args.role.as_str() {
        "orchestrator" => Some(Role::Orchestrator),
        "fullsend" => Some(Role::Fullsend),
        _ => None,
    };
    let (group, channel) = match (role, &args.group) {
        (Some(Role::Orchestrator), g) => (
            g.clone().unwrap_or_else(|| "orchestrator".into()),
            channels.to_orchestrator.clone(),
        ),
        (Some(Role::Fullsend), g) => (
            g.clone().unwrap_or_else(|| "fullsend".into()),
            channels.to_fullsend.clone(),
        ),
        (None, Some(g)) if args.exec.is_some() => (g.clone(), args.role.clone()),
        (None, _) => {
            return Err(Fail::usage(format!(
                "{:?} is not a role (orchestrator, fullsend); a channel needs --exec and --group",
                args.role
            )));
        }
    };
    if !crate::support::msg::valid_key_id(&group) {
        return Err(Fail::usage(format!(
            "--group {group:?} is not a valid name"
        )));
    }
    let group = group.as_str();
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
        // FULLSEND also acts on what the Executor and the Builder report, in either form.
        also_ingest: if channel == channels.to_fullsend {
            vec![EXPERIMENT_RESULTS.to_string(), BUILDER_RESULTS.to_string()]
        } else {
            Vec::new()
        },
    };
    if let Some(addr) = args.metrics {
        crate::cmd::metrics::serve(
            addr,
            env.config.redis_url(),
            vec![(group.to_string(), channel.clone())],
        )
        .await?;
    }
    // With OTEL_EXPORTER_OTLP_ENDPOINT set, each message's spans are exported.
    let exporting = crate::support::trace::init(&format!("fullsend-{group}"))
        .map_err(|e| Fail::usage(format!("{e:#}")))?;
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
    let stats = match (role, &args.exec) {
        (_, Some(pipeline)) => {
            let role = crate::bus::exec::ExecRole {
                pipeline: pipeline.clone(),
                channel: channel.clone(),
                timeout: secs(args.exec_timeout, "exec-timeout")?,
                env: pipeline_env()?,
                bash: which::which("bash")
                    .map_err(|_| Fail::usage("--exec needs bash on PATH"))?
                    .to_string_lossy()
                    .into_owned(),
            };
            runner::run(opts, Arc::new(role), shutdown, output).await?
        }
        (Some(Role::Orchestrator), None) => {
            let role = orchestrator_role(&env, args.provider.as_deref(), keys, group, true)?;
            runner::run(opts, Arc::new(role), shutdown, output).await?
        }
        (_, None) => {
            let role = fullsend_role(
                &env,
                args.mode.into(),
                args.engine.into(),
                args.agent.as_deref(),
                args.provider.as_deref(),
                50,
                keys,
                group,
            )?;
            runner::run(opts, Arc::new(role), shutdown, output).await?
        }
    };
    if let Some(exporting) = exporting {
        exporting.shutdown().await;
    }
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
