//! Command glue: one module per subcommand (the path mirrors the command),
//! each with its `Args` and `run`. This file holds the single dispatch match.

pub mod completions;
pub mod config;
pub mod design;
pub mod dispatch;
pub mod dlq;
pub mod doctor;
pub mod generate;
pub mod learn;
pub mod listen;
pub mod publish;
pub mod ralph;
pub mod status;
pub mod think;
pub mod worklist;

use crate::cli::{
    Cli, Command, DlqCommand, GlobalArgs, LearnCommand, RalphCommand, WorklistCommand,
};
use crate::config::{Config, FlagValues};
use crate::exit::Exit;

/// What every command gets: the global flags and the effective configuration.
#[derive(Debug, Clone)]
pub struct Env {
    /// Global flags.
    pub global: GlobalArgs,
    /// Effective configuration.
    pub config: Config,
}

impl Env {
    /// Loads the configuration with these extra flag overrides.
    pub fn load(global: &GlobalArgs, mut flags: FlagValues) -> anyhow::Result<Env> {
        if let Some(p) = &global.context_path {
            flags.push(("context_path", p.display().to_string()));
        }
        if let Some(p) = &global.prompts_dir {
            flags.push(("prompts_dir", p.display().to_string()));
        }
        let config = Config::load(&flags, global.config.as_deref(), global.no_config)?;
        Ok(Env {
            global: global.clone(),
            config,
        })
    }

    /// Writes one JSON document on stdout.
    pub fn emit(&self, value: &impl serde::Serialize) -> anyhow::Result<()> {
        crate::io::emit(value, self.global.pretty)
    }
}

/// The command's name for error messages (`fullsend learn append: …`).
pub fn name(command: &Command) -> String {
    match command {
        Command::Think(_) => "think",
        Command::Dispatch(_) => "dispatch",
        Command::Learn(LearnCommand::Append(_)) => "learn append",
        Command::Worklist(WorklistCommand::Set(_)) => "worklist set",
        Command::Listen(_) => "listen",
        Command::Publish(_) => "publish",
        Command::Status(_) => "status",
        Command::Dlq(_) => "dlq",
        Command::Ralph(RalphCommand::Run(_)) => "ralph run",
        Command::Ralph(RalphCommand::Spawn(_)) => "ralph spawn",
        Command::Design(_) => "design",
        Command::Config(_) => "config",
        Command::Doctor(_) => "doctor",
        Command::Completions(_) => "completions",
        Command::Generate(_) => "generate",
    }
    .to_string()
}

/// Runs a parsed command line.
pub fn run(cli: Cli) -> anyhow::Result<Exit> {
    let g = &cli.global;
    match cli.command {
        // Parsing needs no runtime, configuration or network: keep it instant.
        Command::Think(args) if args.parse => think::parse(args, g),
        Command::Think(args) => block_on(false, think::run(args, g)),
        Command::Dispatch(args) => block_on(false, dispatch::run(args, g)),
        Command::Learn(LearnCommand::Append(args)) => block_on(false, learn::append::run(args, g)),
        Command::Worklist(WorklistCommand::Set(args)) => worklist::set::run(args, g),
        Command::Listen(args) => block_on(true, listen::run(args, g)),
        Command::Publish(args) => block_on(false, publish::run(args, g)),
        Command::Status(args) => block_on(false, status::run(args, g)),
        Command::Dlq(DlqCommand::List(args)) => block_on(false, dlq::list(args, g)),
        Command::Dlq(DlqCommand::Requeue(args)) => block_on(false, dlq::requeue(args, g)),
        Command::Ralph(RalphCommand::Run(args)) => block_on(true, ralph::run::run(args, g)),
        Command::Ralph(RalphCommand::Spawn(args)) => block_on(true, ralph::spawn::run(args, g)),
        Command::Design(args) if args.parse => design::parse(args, g),
        Command::Design(args) => block_on(true, design::run(args, g)),
        Command::Config(args) => config::run(args, g),
        Command::Doctor(args) => block_on(false, doctor::run(args, g)),
        Command::Completions(args) => completions::run(args, g),
        Command::Generate(args) => generate::run(args, g),
    }
}

/// Runs a future on a runtime built for it (multi-threaded for daemons).
fn block_on<F: std::future::Future<Output = anyhow::Result<Exit>>>(
    multi: bool,
    future: F,
) -> anyhow::Result<Exit> {
    let runtime = if multi {
        tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .build()?
    } else {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?
    };
    let result = runtime.block_on(future);
    // Don't wait for stray blocking tasks (e.g. a stdin reader) at exit.
    runtime.shutdown_timeout(std::time::Duration::from_millis(100));
    result
}

/// Connects to Redis, or returns None with a warning (for commands where Redis is optional).
pub async fn optional_redis(config: &Config) -> Option<crate::store::Conn> {
    let url = config.redis_url();
    match tokio::time::timeout(
        std::time::Duration::from_secs(5),
        crate::store::connect(&url),
    )
    .await
    {
        Ok(Ok(conn)) => Some(conn),
        Ok(Err(err)) => {
            tracing::warn!(
                "Redis unavailable ({}); continuing without it: {err:#}",
                crate::store::redacted_url(&url)
            );
            None
        }
        Err(_) => {
            tracing::warn!(
                "Redis at {} did not answer; continuing without it",
                crate::store::redacted_url(&url)
            );
            None
        }
    }
}
