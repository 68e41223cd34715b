//! `fullsend think`: one incoming message (JSON on stdin or `--message`) in,
//! one decision (JSON) out. `--parse` turns a raw model answer into a decision
//! without any call; `--context-only` prints the loaded context.

use std::io::IsTerminal;
use std::path::PathBuf;

use serde_json::{Map, Value};

use crate::cmd::Env;
use crate::cmd::args::GlobalArgs;
use crate::orchestrator::think::{Orchestrator, Outcome};
use crate::support::exit::{Exit, Fail};

/// Examples shown in `--help` and the man page.
pub const EXAMPLES: &str = "\
Examples:
  echo '{\"type\":\"escalation\",\"source\":\"watcher\",\"original_message\":{\"content\":\"Scrape HN Who is Hiring posts\"}}' \\
    | fullsend think | fullsend dispatch
  echo 'Thinking... {\"action\":\"no_action\",\"reasoning\":\"nothing to do\"}' | fullsend think --parse
  fullsend think --context-only | jq '.experiments | length'

Output (abridged):
  {\"v\":1,\"action\":\"dispatch_to_fullsend\",\"reasoning\":\"HN hiring posts list CTOs who are buying\",
   \"payload\":{\"idea\":\"Scrape HN Who is Hiring posts\"},\"priority\":\"high\",\"experiment_id\":null,
   \"context_for_fullsend\":\"dev outreach works\",\"message\":{…the incoming message…},\"model\":\"claude-opus-5-5\",
   \"usage\":{\"input_tokens\":350,\"output_tokens\":600,\"cache_creation_input_tokens\":0,\"cache_read_input_tokens\":3900},
   \"cost_usd\":0.0142,\"thinking\":\"…\",\"elapsed_ms\":8421}";

/// Arguments of `fullsend think`.
#[derive(Debug, clap::Args)]
#[command(after_help = EXAMPLES)]
pub struct Args {
    /// The incoming message as JSON (instead of stdin).
    #[arg(long, value_name = "JSON")]
    pub message: Option<String>,
    /// Read a raw model answer on stdin and print the decision; no API call.
    #[arg(long, conflicts_with = "context_only")]
    pub parse: bool,
    /// Print the loaded context as JSON; no model call.
    #[arg(long)]
    pub context_only: bool,
    /// Print the prompt that would be sent (blocks, cache markers, size, what was cut); no model call.
    #[arg(long, conflicts_with_all = ["parse", "context_only"])]
    pub prompt_only: bool,
    /// Model id [env: ORCHESTRATOR_MODEL].
    #[arg(long)]
    pub model: Option<String>,
    /// Model provider: anthropic, gemini, openai or replay:FILE [env: ORCHESTRATOR_PROVIDER].
    #[arg(long)]
    pub provider: Option<String>,
    /// Seconds the decision may take before the fallback reply [env: ORCHESTRATOR_TIMEOUT].
    #[arg(long, value_name = "SECS")]
    pub timeout: Option<f64>,
    /// Decision log path [env: FULLSEND_DECISION_LOG].
    #[arg(long, value_name = "FILE")]
    pub decision_log: Option<PathBuf>,
    /// Don't append to the decision log.
    #[arg(long)]
    pub no_log: bool,
}

/// `think --parse`: no configuration, no runtime, no network.
pub fn parse(args: Args, global: &GlobalArgs) -> anyhow::Result<Exit> {
    let text = crate::support::io::read_stdin("a model answer")?;
    let message = match &args.message {
        Some(m) => crate::support::io::parse_json_object(m, "--message")?,
        None => Map::new(),
    };
    let decision = crate::orchestrator::decision::Decision::from_model_text(&text, message);
    crate::support::io::emit(&decision, global.pretty)?;
    Ok(Exit::Success)
}

/// `think` and `think --context-only`.
pub async fn run(args: Args, global: &GlobalArgs) -> anyhow::Result<Exit> {
    let mut flags = Vec::new();
    if let Some(p) = &args.decision_log {
        flags.push(("decision_log", p.display().to_string()));
    }
    if let Some(t) = args.timeout {
        flags.push(("orchestrator_timeout", t.to_string()));
    }
    let env = Env::load(global, flags)?;
    let mut conn = crate::cmd::optional_redis(&env.config).await;
    let mut loader = crate::context::loader::Loader::default();
    let context_path = env.config.context_path();
    if args.context_only {
        let ctx = loader.load(&context_path, conn.as_mut()).await;
        for w in &ctx.warnings {
            tracing::warn!("{w}");
        }
        env.emit(&ctx)?;
        return Ok(Exit::Success);
    }
    let message = read_message(args.message.as_deref())?;
    if let Some(delivery) = crate::bus::delivery::Delivery::from_env()?
        && !args.prompt_only
    {
        return think_delivered(&env, &args, delivery, message).await;
    }
    let orchestrator =
        Orchestrator::from_config(&env.config, args.provider.as_deref(), args.model.as_deref())?;
    if args.prompt_only {
        let started = std::time::Instant::now();
        let ctx = loader.load(&context_path, conn.as_mut()).await;
        let load_ms = started.elapsed().as_secs_f64() * 1000.0;
        let rendered = std::time::Instant::now();
        let built = orchestrator.prompt(&message, &ctx)?;
        let render_ms = rendered.elapsed().as_secs_f64() * 1000.0;
        let block = |b: &crate::llm::PromptBlock| serde_json::json!({"cache": b.cache, "chars": b.text.len(), "text": b.text});
        env.emit(&serde_json::json!({
            "v": 1,
            "model": orchestrator.model,
            "system": built.system.iter().map(block).collect::<Vec<_>>(),
            "user": built.user.iter().map(block).collect::<Vec<_>>(),
            "estimated_tokens": built.estimated_tokens,
            "omitted": built.omitted,
            "load_ms": load_ms,
            "render_ms": render_ms,
            "warnings": ctx.warnings,
        }))?;
        return Ok(Exit::Success);
    }
    let ctx = loader.load(&context_path, conn.as_mut()).await;
    for w in &ctx.warnings {
        tracing::warn!("{w}");
    }
    if let Some(conn) = conn.as_mut()
        && let Some(reason) = crate::bus::spend::Gate::from_config(&env.config)?
            .blocked(conn)
            .await?
    {
        let mut decision =
            crate::orchestrator::decision::Decision::no_action(message, reason.clone());
        decision.fallback = Some("spend_limit".into());
        env.emit(&decision)?;
        return Err(Fail::limit(reason));
    }
    let bar = crate::support::term::spinner(
        crate::support::term::progress_enabled(global.quiet),
        "thinking",
    );
    let progress_bar = bar.clone();
    // Streaming deltas arrive as text; about four characters make a token.
    let progress = move |chars: usize| progress_bar.set_position(chars.div_ceil(4) as u64);
    let outcome = orchestrator.decide(&message, &ctx, Some(&progress)).await?;
    bar.finish_and_clear();
    let (decision, exit) = match outcome {
        Outcome::Decided(d) => (d, Exit::Success),
        Outcome::Failed { decision, error } => {
            tracing::error!("{error}");
            if let crate::llm::LlmError::Config(m) = &error {
                return Err(Fail::usage(m));
            }
            (decision, Exit::Upstream)
        }
    };
    if let (Some(conn), Some(cost)) = (conn.as_mut(), decision.cost_usd)
        && let Err(err) = crate::bus::spend::add(
            conn,
            cost,
            "orchestrator",
            if decision.model.is_empty() {
                &decision.provider
            } else {
                &decision.model
            },
        )
        .await
    {
        tracing::warn!("recording spend: {err:#}");
    }
    if !args.no_log
        && let Err(err) =
            crate::orchestrator::log::log_decision(&env.config.decision_log(), &decision)
    {
        tracing::warn!("decision log: {err:#}");
    }
    env.emit(&decision)?;
    Ok(exit)
}

/// `think` inside a `listen --exec` pipeline: this delivery's memoised decision, or a new one,
/// memoised before it is printed (the built-in role's think stage). A message that did not get
/// a decision prints nothing and exits as the listener maps it: 2 bad input, 3 transient, 4 a
/// limit, so the next stage has nothing to act on.
async fn think_delivered(
    env: &Env,
    args: &Args,
    delivery: crate::bus::delivery::Delivery,
    message: Map<String, Value>,
) -> anyhow::Result<Exit> {
    let keys = crate::bus::store::ChannelKeys::new(&delivery.channel);
    let role = crate::cmd::listen::orchestrator_role(
        env,
        args.provider.as_deref(),
        keys,
        &delivery.fence.group,
        false,
    )?;
    let mut conn = crate::bus::store::connect(&env.config.redis_url())
        .await
        .map_err(|e| Fail::upstream(format!("{e:#}")))?;
    if let Some(reason) = role.gate.pause_reason(conn.clone()).await {
        return Err(Fail::limit(reason));
    }
    let job = delivery.job(message);
    let (_keep, cancel) = tokio::sync::watch::channel(false);
    match role.think_stage(&job, &mut conn, cancel).await {
        Ok(decision) => {
            env.emit(&decision)?;
            Ok(Exit::Success)
        }
        Err(error) => Err(crate::cmd::listen::stage_exit(error)),
    }
}

/// The incoming message from `--message` or stdin: a JSON object, or exit 2.
fn read_message(flag: Option<&str>) -> anyhow::Result<Map<String, Value>> {
    let text = match flag {
        Some(m) => m.to_string(),
        None => {
            if std::io::stdin().is_terminal() {
                return Err(Fail::usage(
                    "expected the incoming message as JSON on stdin or --message",
                ));
            }
            crate::support::io::read_stdin("the incoming message")?
        }
    };
    crate::support::io::parse_json_object(&text, "the incoming message")
}
