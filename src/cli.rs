//! The command line: the subcommand tree (clap derive) and the single match
//! that hands each subcommand to its module in `cmd/`. `cli` depends on `cmd`,
//! never the other way round.

use clap::{CommandFactory, Parser, Subcommand};

use crate::cmd::{self, args::GlobalArgs};
use crate::support::exit::Exit;

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
    /// Serve the agent's skills (registry, experiments, learnings, spec submission) over MCP stdio.
    Mcp(cmd::mcp::Args),
    /// Serve the operator's console: live trail, experiments, queues, spend, context, /metrics.
    Web(cmd::web::Args),
    /// Run decision and design cases (the PRD's quality tests) and report what passed.
    Eval(cmd::eval::Args),
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

/// The command's name for error messages (`fullsend learn append: …`).
pub fn name(command: &Command) -> String {
    match command {
        Command::Think(_) => "think",
        Command::Dispatch(_) => "dispatch",
        Command::Learn(LearnCommand::Append(_)) => "learn append",
        Command::Worklist(WorklistCommand::Set(_)) => "worklist set",
        Command::Listen(_) => "listen",
        Command::Publish(_) => "publish",
        Command::Mcp(_) => "mcp",
        Command::Status(_) => "status",
        Command::Dlq(_) => "dlq",
        Command::Ralph(RalphCommand::Run(_)) => "ralph run",
        Command::Ralph(RalphCommand::Spawn(_)) => "ralph spawn",
        Command::Design(_) => "design",
        Command::Eval(_) => "eval",
        Command::Web(_) => "web",
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
        Command::Think(args) if args.parse => cmd::think::parse(args, g),
        Command::Think(args) => cmd::block_on(
            false,
            cmd::traced("fullsend-think", cmd::think::run(args, g)),
        ),
        Command::Dispatch(args) => cmd::block_on(
            false,
            cmd::traced("fullsend-dispatch", cmd::dispatch::run(args, g)),
        ),
        Command::Learn(LearnCommand::Append(args)) => {
            cmd::block_on(false, cmd::learn::append::run(args, g))
        }
        Command::Worklist(WorklistCommand::Set(args)) => cmd::worklist::set::run(args, g),
        Command::Listen(args) => cmd::block_on(true, cmd::listen::run(args, g)),
        Command::Publish(args) => cmd::block_on(false, cmd::publish::run(args, g)),
        Command::Mcp(args) => cmd::block_on(true, cmd::mcp::run(args, g)),
        Command::Status(args) => cmd::block_on(false, cmd::status::run(args, g)),
        Command::Dlq(DlqCommand::List(args)) => cmd::block_on(false, cmd::dlq::list(args, g)),
        Command::Dlq(DlqCommand::Requeue(args)) => cmd::block_on(false, cmd::dlq::requeue(args, g)),
        Command::Ralph(RalphCommand::Run(args)) => cmd::block_on(
            true,
            cmd::traced("fullsend-ralph", cmd::ralph::run::run(args, g)),
        ),
        Command::Ralph(RalphCommand::Spawn(args)) => cmd::block_on(
            true,
            cmd::traced("fullsend-ralph", cmd::ralph::spawn::run(args, g)),
        ),
        Command::Design(args) if args.parse => cmd::design::parse(args, g),
        Command::Design(args) => cmd::block_on(
            true,
            cmd::traced("fullsend-design", cmd::design::run(args, g)),
        ),
        Command::Eval(args) => cmd::block_on(false, cmd::eval::run(args, g)),
        Command::Web(args) => cmd::block_on(true, cmd::web::run(args, g)),
        Command::Config(args) => cmd::config::run(args, g),
        Command::Doctor(args) => cmd::block_on(false, cmd::doctor::run(args, g)),
        Command::Completions(args) => cmd::completions::run(args, g, Cli::command()),
        Command::Generate(args) => cmd::generate::run(args, g, Cli::command()),
    }
}
