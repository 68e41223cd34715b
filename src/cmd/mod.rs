//! Command glue: one module per subcommand (the path mirrors the command),
//! each with its `Args` and `run`, plus what they share: the global flags
//! ([`args`]), the effective configuration ([`Env`]) and a runtime per command.
//! The dispatch match is in `cli.rs`.
//!
//! This is the only layer that knows of clap and stdout formatting; it may use
//! every part below it (services, `context`, `bus`, `llm`, `support`), and
//! nothing below may use it.

pub mod args;
pub mod completions;
pub mod config;
pub mod design;
pub mod dispatch;
pub mod dlq;
pub mod doctor;
pub mod eval;
pub mod generate;
pub mod learn;
pub mod listen;
pub mod mcp;
pub mod metrics;
pub mod publish;
pub mod ralph;
pub mod status;
pub mod think;
pub mod web;
pub mod worklist;

use crate::cmd::args::GlobalArgs;
use crate::support::config::{Config, FlagValues};
use crate::support::exit::Exit;

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
        crate::support::io::emit(value, self.global.pretty)
    }
}

/// Runs a one-off command with its spans exported when an OTLP endpoint is configured (see
/// `support::trace`), flushing them before it returns.
pub async fn traced<F>(service: &str, command: F) -> anyhow::Result<Exit>
where
    F: std::future::Future<Output = anyhow::Result<Exit>>,
{
    let exporting = crate::support::trace::init(service)
        .map_err(|e| crate::support::exit::Fail::usage(format!("{e:#}")))?;
    // Started with a `TRACEPARENT` (a `listen --exec` stage, a caller that traces): a part of
    // that trace; otherwise a trace of its own.
    let span = match std::env::var("TRACEPARENT")
        .ok()
        .and_then(|tp| tp.split('-').nth(1).map(|t| (t.to_string(), tp.clone())))
    {
        Some((trace_id, tp)) => crate::support::trace::Span::message(
            service.to_string(),
            &trace_id,
            Some(&tp),
            Vec::new(),
        ),
        None => crate::support::trace::Span::child(
            service.to_string(),
            crate::support::trace::INTERNAL,
            Vec::new(),
        ),
    };
    let result = span.run(command).await;
    drop(span);
    if let Some(exporting) = exporting {
        exporting.shutdown().await;
    }
    result
}

/// Runs a future on a runtime built for it (multi-threaded for daemons).
pub fn block_on<F: std::future::Future<Output = anyhow::Result<Exit>>>(
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
pub async fn optional_redis(config: &Config) -> Option<crate::bus::store::Conn> {
    optional_redis_url(&config.redis_url()).await
}

/// [`optional_redis`] for a URL.
pub async fn optional_redis_url(url: &str) -> Option<crate::bus::store::Conn> {
    let url = url.to_string();
    // A Redis that is not there is known from one refused connect.
    if let Err(err) = crate::bus::store::answers(&url).await {
        tracing::warn!(
            "Redis unavailable ({}); continuing without it: {err:#}",
            crate::support::config::redacted_url(&url)
        );
        return None;
    }
    match tokio::time::timeout(
        std::time::Duration::from_secs(5),
        crate::bus::store::connect(&url),
    )
    .await
    {
        Ok(Ok(conn)) => Some(conn),
        Ok(Err(err)) => {
            tracing::warn!(
                "Redis unavailable ({}); continuing without it: {err:#}",
                crate::support::config::redacted_url(&url)
            );
            None
        }
        Err(_) => {
            tracing::warn!(
                "Redis at {} did not answer; continuing without it",
                crate::support::config::redacted_url(&url)
            );
            None
        }
    }
}
