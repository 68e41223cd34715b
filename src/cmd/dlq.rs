//! `fullsend dlq list|requeue`: inspect dead-lettered messages and put them
//! back on their stream once the cause is fixed.

use std::collections::HashMap;

use serde_json::json;

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

type Entries = Vec<(String, HashMap<String, String>)>;

/// Lists dead letters, one JSON line each.
pub async fn list(args: ListArgs, global: &GlobalArgs) -> anyhow::Result<Exit> {
    let env = Env::load(global, Vec::new())?;
    let keys = ChannelKeys::new(&channel(&env, args.role));
    let mut conn = crate::bus::store::connect(&env.config.redis_url()).await?;
    let entries: Entries = redis::cmd("XRANGE")
        .arg(keys.dlq())
        .arg("-")
        .arg("+")
        .arg("COUNT")
        .arg(args.count)
        .query_async(&mut conn)
        .await?;
    for (id, fields) in entries {
        env.emit(&json!({"dlq_id": id, "dlq": keys.dlq(), "fields": fields}))?;
    }
    Ok(Exit::Success)
}

/// Moves dead letters back to their stream (new entries, fresh delivery count).
pub async fn requeue(args: RequeueArgs, global: &GlobalArgs) -> anyhow::Result<Exit> {
    let env = Env::load(global, Vec::new())?;
    let keys = ChannelKeys::new(&channel(&env, args.role));
    let mut conn = crate::bus::store::connect(&env.config.redis_url()).await?;
    let entries: Entries = if args.all {
        redis::cmd("XRANGE")
            .arg(keys.dlq())
            .arg("-")
            .arg("+")
            .query_async(&mut conn)
            .await?
    } else {
        let mut found = Vec::new();
        for id in &args.ids {
            let mut one: Entries = redis::cmd("XRANGE")
                .arg(keys.dlq())
                .arg(id)
                .arg(id)
                .query_async(&mut conn)
                .await?;
            if one.is_empty() {
                return Err(Fail::usage(format!(
                    "no dead letter {id} in {}",
                    keys.dlq()
                )));
            }
            found.append(&mut one);
        }
        found
    };
    let mut requeued = 0;
    for (id, fields) in entries {
        let data = fields.get("data").cloned().unwrap_or_default();
        // Add and delete in one transaction so a crash cannot lose or double it.
        let new_id: (String,) = redis::pipe()
            .atomic()
            .cmd("XADD")
            .arg(keys.stream())
            .arg("*")
            .arg("data")
            .arg(&data)
            .cmd("XDEL")
            .arg(keys.dlq())
            .arg(&id)
            .ignore()
            .query_async(&mut conn)
            .await?;
        env.emit(&json!({"dlq_id": id, "requeued_as": new_id.0, "stream": keys.stream()}))?;
        requeued += 1;
    }
    tracing::info!("requeued {requeued} dead letters");
    Ok(Exit::Success)
}
