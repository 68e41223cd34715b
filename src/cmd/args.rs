//! Arguments shared by every subcommand (the global flags), kept apart from
//! the subcommand tree so that `cmd` modules never depend on `cli`.

use std::path::PathBuf;

use clap::{Args, ValueEnum};

use crate::designer::design::{Engine, ModePolicy};
use crate::support::term::{LogFormat as TermFormat, Logging};

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

impl GlobalArgs {
    /// The logging settings these flags ask for.
    pub fn logging(&self) -> Logging {
        Logging {
            quiet: self.quiet,
            verbose: self.verbose,
            format: match self.log_format {
                LogFormat::Text => TermFormat::Text,
                LogFormat::Json => TermFormat::Json,
            },
        }
    }
}

/// `--mode` of `design` and `listen fullsend`: how the spec is produced when the request does
/// not say (`mode` in an `experiment_request` always wins).
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ModeArg {
    /// RALPH for high/urgent priority or a request marked complex, single-shot otherwise.
    Auto,
    /// One coding-agent call with the design prompt.
    Single,
    /// The PRD's six-task RALPH loop.
    Ralph,
}

impl From<ModeArg> for ModePolicy {
    fn from(arg: ModeArg) -> ModePolicy {
        match arg {
            ModeArg::Auto => ModePolicy::Auto,
            ModeArg::Single => ModePolicy::Single,
            ModeArg::Ralph => ModePolicy::Ralph,
        }
    }
}

/// `--engine` of `design` and `listen fullsend`: who produces the spec.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum EngineArg {
    /// The Claude Code CLI.
    Claude,
    /// One Messages API call (hosts without Claude Code).
    Api,
}

impl From<EngineArg> for Engine {
    fn from(arg: EngineArg) -> Engine {
        match arg {
            EngineArg::Claude => Engine::Claude,
            EngineArg::Api => Engine::Api,
        }
    }
}
