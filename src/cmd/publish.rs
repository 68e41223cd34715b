//! `fullsend publish CHANNEL`: a durable producer. The JSON message (stdin or
//! `--message`) is stamped with a `msg_id`, added to the channel's stream and
//! PUBLISHed, in one atomic step.

use crate::cmd::Env;
use crate::cmd::args::GlobalArgs;
use crate::support::exit::{Exit, Fail};

/// Examples shown in `--help` and the man page.
pub const EXAMPLES: &str = "\
Examples:
  echo '{\"type\":\"escalation\",\"source\":\"watcher\",\"original_message\":{\"content\":\"Scrape HN Who is Hiring posts\"}}' \\
    | fullsend publish fullsend:to_orchestrator

Output:
  {\"channel\":\"fullsend:to_orchestrator\",\"stream_id\":\"1763719200000-0\",\"receivers\":1,\"msg_id\":\"019a…\"}";

/// Arguments of `fullsend publish`.
#[derive(Debug, clap::Args)]
#[command(after_help = EXAMPLES)]
pub struct Args {
    /// The channel.
    pub channel: String,
    /// The message as JSON (instead of stdin).
    #[arg(long, value_name = "JSON")]
    pub message: Option<String>,
}

/// `publish` inside a `listen --exec` pipeline: the message is the delivered message's effect,
/// published under an id derived from the delivery, in the fenced commit that acknowledges the
/// entry, so a redelivery publishes nothing twice.
async fn publish_delivered(
    env: &Env,
    conn: &mut crate::bus::store::Conn,
    channel: &str,
    message: serde_json::Map<String, serde_json::Value>,
    delivery: crate::bus::delivery::Delivery,
) -> anyhow::Result<Exit> {
    use crate::bus::effects::{self, CommitStatus};
    let mut cause = serde_json::Map::new();
    cause.insert("msg_id".into(), delivery.identity.clone().into());
    let effect = effects::publish(channel, message, &cause);
    let done = effects::commit(
        conn,
        &[effect],
        Some(&delivery.seen()),
        Some(&delivery.fence),
    )
    .await
    .map_err(|e| Fail::upstream(format!("{e:#}")))?;
    env.emit(&serde_json::json!({
        "v": 1,
        "channel": channel,
        "commit": done.status,
        "stream_id": done.stream_ids.first(),
    }))?;
    Ok(match done.status {
        CommitStatus::LostLease => Exit::Upstream,
        _ => Exit::Success,
    })
}

/// Runs `publish`.
pub async fn run(args: Args, global: &GlobalArgs) -> anyhow::Result<Exit> {
    let env = Env::load(global, Vec::new())?;
    if args.channel.is_empty()
        || args.channel.len() > 200
        || args
            .channel
            .chars()
            .any(|c| c.is_control() || c == '{' || c == '}' || c == ' ')
    {
        return Err(Fail::usage(format!(
            "invalid channel name {:?}",
            crate::support::msg::preview(&args.channel, 60)
        )));
    }
    let text = match args.message {
        Some(m) => m,
        None => crate::support::io::read_stdin("the message")?,
    };
    let message = crate::support::io::parse_json_object(&text, "the message")?;
    let mut conn = crate::bus::store::connect(&env.config.redis_url()).await?;
    if let Some(delivery) = crate::bus::delivery::Delivery::from_env()? {
        return publish_delivered(&env, &mut conn, &args.channel, message, delivery).await;
    }
    let published =
        crate::bus::effects::publish_now(&mut conn, &args.channel, message, None).await?;
    env.emit(&published)?;
    Ok(Exit::Success)
}
