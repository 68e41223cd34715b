//! `fullsend dlq list|requeue`: inspect dead-lettered messages and put them
//! back on their stream once the cause is fixed.

use serde_json::json;

use crate::bus::queues::{self, Requeue, RequeueError};
use crate::bus::store::ChannelKeys;
use crate::cmd::Env;
use crate::cmd::args::GlobalArgs;
use crate::cmd::listen::Role;
use crate::support::exit::{Exit, Fail};

/// Examples shown in `--help` and the man page.
pub const EXAMPLES: &str = "\
Examples:
  fullsend dlq list orchestrator
  fullsend dlq requeue orchestrator 1763719200000-0
  fullsend dlq requeue fullsend --all

Output of list (one line per dead letter):
  {\"dlq_id\":\"1763719200000-0\",\"dlq\":\"fullsend:{to_orchestrator}:dlq\",\"fields\":{\"data\":\"not json\",
   \"error\":\"message is not JSON …\",\"deliveries\":\"1\",\"consumer\":\"host:0\",\"entry_id\":\"…\",\"dead_at\":\"…\"}}";

/// Arguments of `fullsend dlq list`.
#[derive(Debug, clap::Args)]
#[command(after_help = EXAMPLES)]
pub struct ListArgs {
    /// Whose dead letters.
    #[arg(value_enum)]
    pub role: Role,
    /// Most entries to show.
    #[arg(long, default_value_t = 100)]
    pub count: usize,
}

/// Arguments of `fullsend dlq requeue`.
#[derive(Debug, clap::Args)]
#[command(after_help = EXAMPLES)]
pub struct RequeueArgs {
    /// Whose dead letters.
    #[arg(value_enum)]
    pub role: Role,
    /// Dead-letter entry ids to requeue.
    #[arg(required_unless_present = "all")]
    pub ids: Vec<String>,
    /// Requeue every dead letter.
    #[arg(long)]
    pub all: bool,
}

fn channel(env: &Env, role: Role) -> String {
    let c = env.config.channels();
    match role {
        Role::Orchestrator => c.to_orchestrator,
        Role::Fullsend => c.to_fullsend,
    }
}

/// Lists dead letters, one JSON line each.
pub async fn list(args: ListArgs, global: &GlobalArgs) -> anyhow::Result<Exit> {
    let env = Env::load(global, Vec::new())?;
    let channel = channel(&env, args.role);
    let mut conn = crate::bus::store::connect(&env.config.redis_url()).await?;
    let dlq = ChannelKeys::new(&channel).dlq();
    for (id, fields) in queues::dead_letters(&mut conn, &channel, args.count).await? {
        env.emit(&json!({"dlq_id": id, "dlq": dlq, "fields": fields}))?;
    }
    Ok(Exit::Success)
}

/// Moves dead letters back to their stream (new entries, fresh delivery count).
pub async fn requeue(args: RequeueArgs, global: &GlobalArgs) -> anyhow::Result<Exit> {
    let env = Env::load(global, Vec::new())?;
    let channel = channel(&env, args.role);
    let mut conn = crate::bus::store::connect(&env.config.redis_url()).await?;
    let which = if args.all {
        Requeue::All
    } else {
        Requeue::Ids(args.ids)
    };
    let moved = queues::requeue(&mut conn, &channel, &which)
        .await
        .map_err(|e| match e {
            RequeueError::Unknown(m) => Fail::usage(m),
            RequeueError::Redis(e) => e,
        })?;
    for line in &moved {
        env.emit(line)?;
    }
    tracing::info!("requeued {} dead letters", moved.len());
    Ok(Exit::Success)
}
