//! `fullsend learn append`: text (args or stdin) → a `## <ISO-8601>` entry in
//! learnings.md, appended under an exclusive lock; or, with `--tactical`, a
//! `learnings:tactical:*` hash plus its index in Redis.

use serde_json::json;

use crate::bus::effects::{self, CommitStatus, Effect};
use crate::cmd::Env;
use crate::cmd::args::GlobalArgs;
use crate::support::exit::{Exit, Fail};

/// Examples shown in `--help` and the man page.
pub const EXAMPLES: &str = "\
Examples:
  fullsend learn append 'CTOs respond, CFOs ignore: 8/50 vs 0/50 replies'
  echo 'Tuesday 9am PST is the best send time' | fullsend learn append
  fullsend learn append --tactical --experiment exp_20240115_github_stars 'Template A got 20% replies'

Output:
  {\"v\":1,\"kind\":\"strategic\",\"path\":\"context/learnings.md\",\"appended\":true,\"timestamp\":\"2026-11-21T10:00:00.000000+00:00\",\"bytes\":58}
  {\"v\":1,\"kind\":\"tactical\",\"key\":\"learnings:tactical:20261121_100000_000000_1a2b3c4d\",\"experiment_id\":\"exp_20240115_github_stars\",\"appended\":true}";

/// Arguments of `fullsend learn append`.
#[derive(Debug, clap::Args)]
#[command(after_help = EXAMPLES)]
pub struct Args {
    /// The learning (default: stdin).
    pub text: Vec<String>,
    /// Store as a tactical learning in Redis instead of learnings.md.
    #[arg(long)]
    pub tactical: bool,
    /// The experiment a tactical learning belongs to.
    #[arg(long, value_name = "ID", requires = "tactical")]
    pub experiment: Option<String>,
    /// An idempotency id: appending the same id twice adds one entry.
    #[arg(long, value_name = "ID")]
    pub id: Option<String>,
}

/// Runs `learn append`.
pub async fn run(args: Args, global: &GlobalArgs) -> anyhow::Result<Exit> {
    let env = Env::load(global, Vec::new())?;
    let text = if args.text.is_empty() {
        crate::support::io::read_stdin("the learning")?
    } else {
        args.text.join(" ")
    };
    let text = text.trim().to_string();
    if text.is_empty() {
        return Err(Fail::usage("the learning is empty"));
    }
    if let Some(id) = &args.id
        && !crate::support::msg::is_safe_id(id)
    {
        return Err(Fail::usage(format!(
            "--id {:?} is not a safe id",
            crate::support::msg::preview(id, 40)
        )));
    }
    if !args.tactical {
        let path = env.config.context_path().join("learnings.md");
        let done = crate::support::files::append_learning(&path, &text, args.id.as_deref())?;
        env.emit(&json!({"v": 1, "kind": "strategic", "path": done.path, "appended": done.appended, "timestamp": done.timestamp, "bytes": done.bytes}))?;
        return Ok(Exit::Success);
    }
    let mut conn = crate::bus::store::connect(&env.config.redis_url()).await?;
    let record = append_tactical(
        &mut conn,
        &text,
        args.experiment.as_deref(),
        "fullsend",
        args.id.as_deref(),
    )
    .await?;
    env.emit(&record)?;
    Ok(Exit::Success)
}

/// Writes one tactical learning (`learnings:tactical:<time>_<unique>` + index)
/// atomically; a repeated `id` writes nothing. Returns a JSON report.
pub async fn append_tactical(
    conn: &mut crate::bus::store::Conn,
    text: &str,
    experiment: Option<&str>,
    source: &str,
    id: Option<&str>,
) -> anyhow::Result<serde_json::Value> {
    if let Some(exp) = experiment
        && !crate::support::msg::valid_key_id(exp)
    {
        return Err(Fail::usage(format!(
            "invalid experiment id {:?}",
            crate::support::msg::preview(exp, 40)
        )));
    }
    let effects = crate::context::learn::tactical_effects(text, experiment, source);
    let key = match &effects[0] {
        Effect::HashSet { key, .. } => key.clone(),
        _ => String::new(),
    };
    let seen = id.map(|id| format!("fullsend:learn:seen:{id}"));
    let commit = effects::commit(conn, &effects, seen.as_deref(), None).await?;
    Ok(json!({
        "v": 1,
        "kind": "tactical",
        "key": key,
        "experiment_id": experiment,
        "appended": commit.status == CommitStatus::Ok,
        "status": commit.status,
    }))
}
