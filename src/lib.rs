//! fullsend: the Orchestrator and FULLSEND services of the Fullsend GTM agent
//! system, as composable subcommands over Redis, the Messages API and the
//! Claude Code CLI.
//!
//! The folders are the parts of the system, and dependencies point one way:
//!
//! ```text
//! cli → cmd → console → orchestrator, designer → context → bus, llm → support
//! ```
//!
//! `cmd/` is the CLI glue (one file per subcommand); `orchestrator/` and
//! `designer/` are the two services; `console/` is the operator's web console
//! over both; `context/` is what they know and how it
//! becomes a prompt; `bus/` is delivery and the exactly-once commit over
//! Redis; `llm/` speaks to model providers; `support/` is the plumbing
//! (configuration, exit codes, stdout, files, processes). Nothing below
//! `cmd/` knows of clap or writes to stdout except `support::io`.
//! `docs/architecture.md` follows one message through these folders.

pub mod bus;
pub mod cli;
pub mod cmd;
pub mod console;
pub mod context;
pub mod designer;
pub mod llm;
pub mod orchestrator;
pub mod support;

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
                support::exit::Exit::Usage
            } else {
                support::exit::Exit::Success
            };
            let _ = err.print();
            return code.into();
        }
    };
    support::term::init_logging(cli.global.logging());
    install_crypto_provider();
    let name = cli::name(&cli.command);
    match cli::run(cli) {
        Ok(code) => code.into(),
        Err(err) => {
            let code = support::exit::classify(&err);
            if !support::exit::is_broken_pipe(&err) {
                support::term::report_error(&name, &err);
            }
            code.into()
        }
    }
}
