//! `fullsend dispatch`: a decision (as `think` prints it) on stdin → its side
//! effects → a JSON report of what was published and written.

use crate::bus::store::ChannelKeys;
use crate::cmd::Env;
use crate::cmd::args::GlobalArgs;
use crate::orchestrator::decision::Decision;
use crate::orchestrator::dispatch::{self, Target};
use crate::support::exit::{Exit, Fail};

/// Examples shown in `--help` and the man page.
pub const EXAMPLES: &str = "\
Examples:
  fullsend think < msg.json | fullsend dispatch
  echo '{\"action\":\"record_learning\",\"payload\":{\"learning\":\"CTOs respond, CFOs ignore\"}}' | fullsend dispatch
  echo '{\"action\":\"kill_experiment\",\"experiment_id\":\"exp_20240115_github_stars\"}' | fullsend dispatch --dry-run

Output (abridged):
  {\"v\":1,\"action\":\"record_learning\",\"dry_run\":false,\"plan\":{\"effects\":[{\"effect\":\"append_learning\",…}],\"warnings\":[]},
   \"files\":[{\"effect\":\"append_learning\",\"appended\":true,\"timestamp\":\"2026-11-21T10:00:00.000000+00:00\"}]}";

/// Arguments of `fullsend dispatch`.
#[derive(Debug, clap::Args)]
#[command(after_help = EXAMPLES)]
pub struct Args {
    /// Print the plan without doing anything.
    #[arg(long)]
    pub dry_run: bool,
}

/// Runs `dispatch`.
pub async fn run(args: Args, global: &GlobalArgs) -> anyhow::Result<Exit> {
    let env = Env::load(global, Vec::new())?;
    let text = crate::support::io::read_stdin("a decision")?;
    if !args.dry_run
        && let Some(delivery) = crate::bus::delivery::Delivery::from_env()?
    {
        return dispatch_delivered(&env, delivery, &text).await;
    }
    let mut decision = read_decision(&text)?;
    let target = target(&env)?;
    let mut conn = if args.dry_run {
        crate::cmd::optional_redis(&env.config).await
    } else {
        Some(crate::bus::store::connect(&env.config.redis_url()).await?)
    };
    give_briefs(&env, &mut decision, conn.as_mut()).await?;
    let plan = dispatch::plan(&decision, &target, conn.as_mut()).await?;
    for w in &plan.warnings {
        tracing::warn!("{w}");
    }
    let rejected = plan.rejected.clone();
    if let Some(r) = &rejected {
        tracing::error!("{r}");
    }
    let report = match (args.dry_run, conn.as_mut()) {
        (true, _) => dispatch::dry_run(plan, &decision),
        (false, Some(conn)) => {
            let msg_id = crate::support::msg::msg_id_of(&decision.message).map(str::to_string);
            let seen = msg_id
                .as_deref()
                .map(|id| ChannelKeys::new(&target.channels.to_orchestrator).seen("dispatch", id));
            dispatch::execute(
                plan,
                &decision,
                &target,
                conn,
                msg_id.as_deref(),
                seen.as_deref(),
                None,
            )
            .await?
        }
        (false, None) => return Err(Fail::upstream("Redis is required to dispatch")),
    };
    env.emit(&report)?;
    Ok(if rejected.is_some() {
        Exit::Failed
    } else {
        Exit::Success
    })
}

/// `dispatch` inside a `listen --exec` pipeline: the built-in role's dispatch stage, fenced to
/// the delivery and acknowledging it in its commit. No decision on stdin (an earlier stage
/// failed, or a filter dropped it) commits nothing and exits 0; the listener then goes by the
/// earlier stage's exit code, or acknowledges a dropped message.
async fn dispatch_delivered(
    env: &Env,
    delivery: crate::bus::delivery::Delivery,
    text: &str,
) -> anyhow::Result<Exit> {
    if text.trim().is_empty() {
        tracing::info!("no decision on stdin: nothing to dispatch");
        env.emit(&serde_json::json!({"v": 1, "dispatched": false}))?;
        return Ok(Exit::Success);
    }
    let mut decision = read_decision(text)?;
    let target = target(env)?;
    let keys = ChannelKeys::new(&delivery.channel);
    let mut conn = crate::bus::store::connect(&env.config.redis_url())
        .await
        .map_err(|e| Fail::upstream(format!("{e:#}")))?;
    give_briefs(env, &mut decision, Some(&mut conn)).await?;
    let job = delivery.job(decision.message.clone());
    let handled = crate::orchestrator::listener::dispatch_stage(
        &target,
        &keys,
        &delivery.fence.group,
        &job,
        &decision,
        &mut conn,
        &delivery.fence,
    )
    .await
    .map_err(crate::cmd::listen::stage_exit)?;
    env.emit(&handled.line)?;
    Ok(match handled.commit {
        crate::bus::effects::CommitStatus::LostLease => Exit::Upstream,
        _ => Exit::Success,
    })
}

/// A decision written by hand (or by a filter) may dispatch to FULLSEND without the brief
/// `think` attaches: build it here, from the context as it is now.
async fn give_briefs(
    env: &Env,
    decision: &mut Decision,
    conn: Option<&mut crate::bus::store::Conn>,
) -> anyhow::Result<()> {
    if !crate::orchestrator::brief::missing(decision) {
        return Ok(());
    }
    let ctx = crate::context::loader::Loader::default()
        .load(&env.config.context_path(), conn)
        .await;
    let prompts = crate::context::prompt::Prompts::new(env.config.prompts_dir());
    crate::orchestrator::brief::attach(decision, &ctx, &prompts)
}

/// A decision from JSON: `think`'s output, or a bare `{action, payload, …}`.
pub fn read_decision(text: &str) -> anyhow::Result<Decision> {
    Decision::read(text)
}

/// Where effects go, from configuration.
pub fn target(env: &Env) -> anyhow::Result<Target> {
    Target::from_config(&env.config)
}
