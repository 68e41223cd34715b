//! fullsend: the Orchestrator and FULLSEND services of the Fullsend GTM agent
//! system, as composable subcommands over Redis, the Messages API and the
//! Claude Code CLI.
//!
//! Domain modules (`context`, `prompt`, `decision`, `dispatch`, `design`,
//! `ralph`, `spawn`, `listen`, …) know nothing of clap or stdout; `cmd/` is the
//! glue; `io.rs` is the only writer of stdout; `exit.rs` holds the exit codes.

pub mod cli;
pub mod cmd;
pub mod config;
pub mod context;
pub mod cron;
pub mod decision;
pub mod design;
pub mod dispatch;
pub mod effects;
pub mod exit;
pub mod extract;
pub mod files;
pub mod io;
pub mod learn;
pub mod listen;
pub mod llm;
pub mod msg;
pub mod orchestrator;
pub mod price;
pub mod prompt;
pub mod ralph;
pub mod roundtable;
pub mod signal;
pub mod spawn;
pub mod spec;
pub mod spend;
pub mod store;
pub mod term;

use clap::Parser;

/// Installs the TLS crypto provider once (reqwest and redis share rustls/ring).
pub fn install_crypto_provider() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}

/// Runs the command line and returns the process exit code.
pub fn run() -> std::process::ExitCode {
    let cli = match cli::Cli::try_parse() {
        Ok(cli) => cli,
        Err(err) => {
            let code = if err.use_stderr() {
                exit::Exit::Usage
            } else {
                exit::Exit::Success
            };
            let _ = err.print();
            return code.into();
        }
    };
    term::init_logging(&cli.global);
    install_crypto_provider();
    let name = cmd::name(&cli.command);
    match cmd::run(cli) {
        Ok(code) => code.into(),
        Err(err) => {
            let code = exit::classify(&err);
            if !exit::is_broken_pipe(&err) {
                term::report_error(&name, &err);
            }
            code.into()
        }
    }
}
