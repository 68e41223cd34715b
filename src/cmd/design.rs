//! `fullsend design`: an idea (`--idea` or an `experiment_request` on stdin) →
//! a validated experiment spec, saved to Redis and announced (unless
//! `--dry-run`). Prints a JSON report: spec, tool request, keys written,
//! messages published, work dir. `--parse` validates model output only.

use serde_json::{Map, Value, json};

use crate::bus::effects::{self, CommitStatus};
use crate::cmd::Env;
use crate::cmd::args::{EngineArg, GlobalArgs, ModeArg};
use crate::designer::design::{self, Designer, Engine, ModePolicy, Request};
use crate::designer::spawn::Agent;
use crate::support::exit::{Exit, Fail};

/// Examples shown in `--help` and the man page.
pub const EXAMPLES: &str = "\
Examples:
  fullsend design --idea 'Scrape HN Who is Hiring posts and email CTOs' --dry-run
  echo '{\"type\":\"experiment_request\",\"idea\":\"GitHub stargazers of our competitor\"}' | fullsend design
  fullsend design --engine api --idea 'Conference attendee outreach'
  fullsend design --parse < model-output.txt

Output (abridged):
  {\"v\":1,\"status\":\"ready\",\"spec\":{\"id\":\"exp_20261121_hn_hiring\",\"hypothesis\":\"…\",…},\"tool_request\":null,
   \"keys_written\":[\"experiments:exp_20261121_hn_hiring\",\"metrics_specs:exp_20261121_hn_hiring\",\"schedules:exp_20261121_hn_hiring\"],
   \"messages\":[{\"channel\":\"fullsend:to_orchestrator\",\"type\":\"experiment_ready\"},…],\"work_dir\":\"/tmp/fullsend/design_…\"}";

/// Arguments of `fullsend design`.
#[derive(Debug, clap::Args)]
#[command(after_help = EXAMPLES)]
pub struct Args {
    /// The idea (default: an experiment_request JSON on stdin).
    #[arg(long)]
    pub idea: Option<String>,
    /// Context for the designer (with --idea).
    #[arg(long, default_value = "")]
    pub context: String,
    /// Single-shot or the six-task RALPH design.
    #[arg(long, value_enum, default_value_t = ModeArg::Auto, env = "FULLSEND_DESIGN_MODE")]
    pub mode: ModeArg,
    /// Claude Code or one Messages API call.
    #[arg(long, value_enum, default_value_t = EngineArg::Claude, env = "FULLSEND_ENGINE")]
    pub engine: EngineArg,
    /// Read model output on stdin and print the extracted, validated spec.
    #[arg(long)]
    pub parse: bool,
    /// Design and validate, but write nothing to Redis and publish nothing.
    #[arg(long)]
    pub dry_run: bool,
    /// Coding agent command instead of claude (no shell; the prompt is on its stdin).
    #[arg(long)]
    pub agent: Option<String>,
    /// Model provider for --engine api [env: FULLSEND_PROVIDER].
    #[arg(long)]
    pub provider: Option<String>,
    /// Max RALPH iterations.
    #[arg(long, default_value_t = 50)]
    pub max_iterations: u32,
    /// Path of the claude executable [env: FULLSEND_CLAUDE_BIN].
    #[arg(long)]
    pub claude_bin: Option<std::path::PathBuf>,
}

/// `design --parse`: model output on stdin → the validated spec, or exit 1 with the violations.
pub fn parse(_args: Args, global: &GlobalArgs) -> anyhow::Result<Exit> {
    let text = crate::support::io::read_stdin("model output")?;
    match design::check(&text) {
        Ok((spec, tool)) => {
            crate::support::io::emit(
                &json!({"v": 1, "valid": true, "spec": spec, "tool_request": tool}),
                global.pretty,
            )?;
            Ok(Exit::Success)
        }
        Err(problems) => {
            crate::support::io::emit(
                &json!({"v": 1, "valid": false, "error": problems.error, "violations": problems.violations}),
                global.pretty,
            )?;
            tracing::error!("invalid spec:\n{}", problems.summary());
            Ok(Exit::Failed)
        }
    }
}

/// `design` inside a `listen --exec` pipeline: the FULLSEND role's stage for the delivered
/// message, whatever its type (an `experiment_request` is designed, saved and announced;
/// `tool_built`, Executor and Builder reports are acted on), memoised, fenced and
/// acknowledging in its commit, exactly as `fullsend listen fullsend` does.
async fn design_delivered(
    env: &Env,
    args: &Args,
    delivery: crate::bus::delivery::Delivery,
) -> anyhow::Result<Exit> {
    use crate::bus::runner::Handler;
    let message = crate::support::io::parse_json_object(
        &crate::support::io::read_stdin("the delivered message")?,
        "the delivered message",
    )?;
    let role = crate::cmd::listen::fullsend_role(
        env,
        args.mode.into(),
        args.engine.into(),
        args.agent.as_deref(),
        args.provider.as_deref(),
        args.max_iterations,
        crate::bus::store::ChannelKeys::new(&delivery.channel),
        &delivery.fence.group,
    )?;
    let conn = crate::bus::store::connect(&env.config.redis_url())
        .await
        .map_err(|e| Fail::upstream(format!("{e:#}")))?;
    if let Some(reason) = role.paused(conn.clone()).await {
        return Err(Fail::limit(reason));
    }
    let (_keep, cancel) = tokio::sync::watch::channel(false);
    let fence = delivery.fence.clone();
    let handled = role
        .handle(delivery.job(message), conn, fence, cancel)
        .await
        .map_err(crate::cmd::listen::stage_exit)?;
    env.emit(&handled.line)?;
    Ok(match handled.commit {
        effects::CommitStatus::LostLease => Exit::Upstream,
        _ => Exit::Success,
    })
}

/// Runs `design`.
pub async fn run(args: Args, global: &GlobalArgs) -> anyhow::Result<Exit> {
    let flags = args
        .claude_bin
        .iter()
        .map(|p| ("claude_bin", p.display().to_string()))
        .collect();
    let env = Env::load(global, flags)?;
    if !args.dry_run
        && args.idea.is_none()
        && let Some(delivery) = crate::bus::delivery::Delivery::from_env()?
    {
        return design_delivered(&env, &args, delivery).await;
    }
    let original: Map<String, Value> = match &args.idea {
        Some(idea) => {
            let r = Request::from_idea(idea, &args.context).map_err(Fail::usage)?;
            r.original
        }
        None => crate::support::io::parse_json_object(
            &crate::support::io::read_stdin("an experiment_request")?,
            "the experiment_request",
        )?,
    };
    let mut conn = if args.dry_run {
        crate::cmd::optional_redis(&env.config).await
    } else {
        Some(crate::bus::store::connect(&env.config.redis_url()).await?)
    };
    let channels = env.config.channels();
    let request = match Request::from_message(&original) {
        Ok(r) => r,
        Err(reason) => {
            if let (false, Some(conn)) = (args.dry_run, conn.as_mut()) {
                let fx = design::failed_effects(&reason, None, &original, &channels, None);
                effects::commit(conn, &fx, None, None).await?;
            }
            env.emit(&json!({"v": 1, "status": "failed", "reason": reason}))?;
            return Err(Fail::usage(reason));
        }
    };
    let mut designer = designer(
        &env,
        args.mode.into(),
        args.engine.into(),
        args.agent.as_deref(),
        args.provider.as_deref(),
        args.max_iterations,
    )?;
    // A dry run writes nothing to Redis: neither may the agent's skills.
    if let (true, Some(skills)) = (args.dry_run, designer.skills.as_mut()) {
        skills.read_only = true;
    }
    if let Some(conn) = &conn {
        designer.spend = Some(crate::designer::purse::DailySpend {
            conn: conn.clone(),
            limit: env.config.daily_spend_limit()?,
        });
    }
    let ctx = design::load_context(conn.as_mut(), &designer.product_context).await;
    if let Some(conn) = conn.as_mut()
        && let Some(reason) = crate::bus::spend::Gate::from_config(&env.config)?
            .blocked(conn)
            .await?
    {
        return Err(Fail::limit(reason));
    }
    let cancel = crate::support::signal::shutdown_channel();
    let bar = crate::support::term::spinner(
        crate::support::term::progress_enabled(global.quiet),
        "designing",
    );
    // Each tool call and API retry of the agent, as it happens, above the spinner.
    if let Some(spawn) = designer.spawn.as_mut()
        && !global.quiet
    {
        let shown = bar.clone();
        spawn.observer = Some(crate::designer::spawn::Observer(std::sync::Arc::new(
            move |event| {
                use crate::designer::spawn::AgentEvent;
                let line = match event {
                    AgentEvent::Started {
                        session_id,
                        mcp_failed,
                    } if mcp_failed.is_empty() => {
                        format!("agent session {}", session_id.as_deref().unwrap_or("?"))
                    }
                    AgentEvent::Started { mcp_failed, .. } => {
                        format!("MCP servers not connected: {}", mcp_failed.join(", "))
                    }
                    AgentEvent::ToolCall { name } => format!("  tool call {name}"),
                    AgentEvent::Retry { attempt, error } => {
                        format!("  API retry {attempt} ({error})")
                    }
                };
                if shown.is_hidden() {
                    eprintln!("{line}");
                } else {
                    shown.println(line);
                }
            },
        )));
    }
    let designed = designer.design(&request, &ctx, cancel).await?;
    bar.finish_and_clear();
    let mut report = json!({
        "v": 1,
        "status": designed.status,
        "dry_run": args.dry_run,
        "engine": designed.engine,
        "mode": designed.mode,
        "spec": designed.spec,
        "tool_request": designed.tool_request,
        "reason": designed.reason,
        "violations": designed.violations,
        "repaired": designed.repaired,
        "work_dir": designed.work_dir,
        "cost_usd": designed.cost_usd,
        "learnings": designed.learnings,
        "session_ids": designed.session_ids,
        "request_id": request.request_id,
    });
    let Some(mut spec) = designed.spec.clone() else {
        let reason = designed
            .reason
            .clone()
            .unwrap_or_else(|| "design failed".into());
        if let (false, Some(conn)) = (args.dry_run, conn.as_mut()) {
            let fx = design::failed_effects(
                &reason,
                Some(&request),
                &original,
                &channels,
                Some(&designed.work_dir),
            );
            effects::commit(conn, &fx, None, None).await?;
            report["messages"] = json!(design::messages(&fx));
        }
        env.emit(&report)?;
        tracing::error!("{reason}");
        return Ok(if reason.starts_with("Timeout") {
            Exit::Upstream
        } else {
            Exit::Failed
        });
    };
    if let (false, Some(conn)) = (args.dry_run, conn.as_mut()) {
        let id = spec
            .get("id")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_string();
        let unique = design::unique_id(conn, &id).await?;
        spec.insert("id".into(), json!(unique));
        let fx = design::effects(
            &spec,
            designed.tool_request.as_ref(),
            &designed.learnings,
            &request,
            &channels,
            &original,
        )?;
        let commit = effects::commit(conn, &fx, None, None).await?;
        if commit.status != CommitStatus::Ok {
            return Err(Fail::upstream(format!(
                "saving the spec: {:?}",
                commit.status
            )));
        }
        report["spec"] = json!(spec);
        report["keys_written"] = json!(design::keys_written(&fx));
        report["messages"] = json!(design::messages(&fx));
    }
    env.emit(&report)?;
    Ok(Exit::Success)
}

/// A designer from configuration and flags.
pub fn designer(
    env: &Env,
    mode: ModePolicy,
    engine: Engine,
    agent: Option<&str>,
    provider: Option<&str>,
    max_iterations: u32,
) -> anyhow::Result<Designer> {
    let cfg = &env.config;
    let work_root = cfg.work_root();
    let agent = match agent {
        Some(cmd) => Some(Agent::Raw(crate::support::process::parse_agent_command(
            cmd,
        )?)),
        None => None,
    };
    // The Claude engine needs the CLI (found now, so a missing one fails
    // before any work); the API engine needs none.
    let timeout = cfg.fullsend_timeout()?;
    let spawn = match engine {
        Engine::Api => None,
        Engine::Claude => Some(design::spawn_options(cfg, agent, work_root.clone())?),
    };
    // The skills server is this very executable, started by the agent with `mcp`.
    let skills = match (engine, cfg.agent_skills()?) {
        (Engine::Claude, true) => Some(crate::designer::skills::McpWiring {
            program: std::env::current_exe()
                .map_err(|e| Fail::usage(format!("finding the fullsend executable: {e}")))?,
            redis_url: cfg.redis_url(),
            product_context: absolute(cfg.context_path().join("product_context.md")),
            learnings: absolute(cfg.context_path().join("learnings.md")),
            browserbase_key: cfg.browserbase_api_key(),
            browserbase_url: Some(cfg.browserbase_url()),
            read_only: false,
        }),
        _ => None,
    };
    let api = match engine {
        Engine::Api => {
            let spec = provider
                .map(str::to_string)
                .unwrap_or_else(|| cfg.fullsend_provider());
            Some((
                crate::llm::Provider::from_spec(&spec, cfg)?,
                cfg.fullsend_api_model(),
            ))
        }
        Engine::Claude => None,
    };
    Ok(Designer {
        prompts: crate::context::prompt::Prompts::new(cfg.prompts_dir()),
        mode,
        engine,
        spawn,
        timeout,
        work_root,
        product_context: cfg.context_path().join("product_context.md"),
        api,
        channels: cfg.channels(),
        max_iterations,
        skills,
        tools_dir: Some(absolute(cfg.tools_path())),
        cli_web: cfg.agent_web()?,
        budget_usd: cfg.design_budget_usd()?,
        ralph_deadline: Some(cfg.ralph_total_timeout()?),
        max_turns: Some(cfg.agent_max_turns()?),
        spend: None,
        progress: None,
    })
}

/// A path made absolute against the current directory (the agent runs elsewhere).
fn absolute(path: std::path::PathBuf) -> std::path::PathBuf {
    if path.is_absolute() {
        path
    } else {
        std::env::current_dir()
            .map(|d| d.join(&path))
            .unwrap_or(path)
    }
}
