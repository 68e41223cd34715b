//! The command line: global flags and the subcommand tree (clap derive).

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};

use crate::cmd;

/// The exit-code table, shown by `fullsend --help` and in fullsend(1).
pub const EXIT_CODES: &str = "\
Exit codes:
  0    success (also when stdout is closed early, e.g. `| head`)
  1    the command ran but failed (a rejected action, an invalid spec, a stalled loop)
  2    usage, configuration or input error (bad JSON, a missing key, a hostile id)
  3    upstream or transient failure: model API, Redis, network, timeout (retrying may work)
  4    a limit was reached (max iterations, total timeout, cost budget, daily spend limit)
  130  interrupted (SIGINT); 143 terminated (SIGTERM)

Configuration: flags > environment > ./fullsend.toml > $XDG_CONFIG_HOME/fullsend/config.toml > defaults
(`fullsend config` shows each value and where it came from).";

/// Orchestrator and FULLSEND of the Fullsend GTM agent system, as composable
/// subcommands. Each reads JSON (stdin or flags) and writes JSON on stdout;
/// logs and progress go to stderr.
#[derive(Debug, Parser)]
#[command(
    name = "fullsend",
    version,
    propagate_version = true,
    max_term_width = 100,
    after_long_help = EXIT_CODES
)]
pub struct Cli {
    /// Options every subcommand takes.
    #[command(flatten)]
    pub global: GlobalArgs,
    /// The subcommand.
    #[command(subcommand)]
    pub command: Command,
}

/// Options shared by every subcommand.
#[derive(Debug, Clone, Args)]
pub struct GlobalArgs {
    /// Only print errors on stderr.
    #[arg(short, long, global = true, conflicts_with = "verbose")]
    pub quiet: bool,
    /// More detail on stderr (-v info, -vv debug).
    #[arg(short, long, global = true, action = clap::ArgAction::Count)]
    pub verbose: u8,
    /// Log format on stderr (json suits journald).
    #[arg(long, global = true, value_enum, default_value_t = LogFormat::Text, env = "FULLSEND_LOG_FORMAT")]
    pub log_format: LogFormat,
    /// Pretty-print JSON output.
    #[arg(long, global = true)]
    pub pretty: bool,
    /// Read configuration from this file only.
    #[arg(long, global = true, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Ignore configuration files.
    #[arg(long, global = true)]
    pub no_config: bool,
    /// Directory of product_context.md, worklist.md and learnings.md [env: CONTEXT_PATH].
    #[arg(long, global = true, value_name = "DIR")]
    pub context_path: Option<PathBuf>,
    /// Directory of prompt files overriding the built-in ones [env: FULLSEND_PROMPTS_DIR].
    #[arg(long, global = true, value_name = "DIR")]
    pub prompts_dir: Option<PathBuf>,
}

/// Log line format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line.
    Json,
}

/// The subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Decide what to do about one incoming message (JSON on stdin or --message).
    Think(cmd::think::Args),
    /// Carry out a decision (as `think` prints it) and report what was done.
    Dispatch(cmd::dispatch::Args),
    /// Strategic and tactical learnings.
    #[command(subcommand)]
    Learn(LearnCommand),
    /// The worklist.
    #[command(subcommand)]
    Worklist(WorklistCommand),
    /// Run a daemon role: take messages from Redis and handle each.
    Listen(cmd::listen::Args),
    /// Publish a message durably (PUBLISH + stream), JSON on stdin.
    Publish(cmd::publish::Args),
    /// Health of the listeners, streams and dead letters.
    Status(cmd::status::Args),
    /// Inspect or requeue dead-lettered messages.
    #[command(subcommand)]
    Dlq(DlqCommand),
    /// RALPH loops driving the Claude Code CLI.
    #[command(subcommand)]
    Ralph(RalphCommand),
    /// Design a complete experiment spec from an idea.
    Design(cmd::design::Args),
    /// Print the effective configuration and where each value came from.
    Config(cmd::config::Args),
    /// Check that this host is ready: Redis, API key, model, claude, context, prompts.
    Doctor(cmd::doctor::Args),
    /// Print a shell completion script (bash, zsh, fish).
    Completions(cmd::completions::Args),
    /// Generate man pages (for packaging).
    #[command(hide = true)]
    Generate(cmd::generate::Args),
}

/// `fullsend learn …`
#[derive(Debug, Subcommand)]
pub enum LearnCommand {
    /// Append a learning (args or stdin) to learnings.md, or to Redis with --tactical.
    Append(cmd::learn::append::Args),
}

/// `fullsend worklist …`
#[derive(Debug, Subcommand)]
pub enum WorklistCommand {
    /// Replace worklist.md atomically (stdin or --file), keeping the previous version.
    Set(cmd::worklist::set::Args),
}

/// `fullsend dlq …`
#[derive(Debug, Subcommand)]
pub enum DlqCommand {
    /// List dead letters of a role.
    List(cmd::dlq::ListArgs),
    /// Put dead letters back on their stream.
    Requeue(cmd::dlq::RequeueArgs),
}

/// `fullsend ralph …`
#[derive(Debug, Subcommand)]
pub enum RalphCommand {
    /// Run the task loop over TASKS.md / STATUS.md in a work dir.
    Run(cmd::ralph::run::Args),
    /// Run one coding-agent call and print its result.
    Spawn(cmd::ralph::spawn::Args),
}
