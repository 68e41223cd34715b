//! `fullsend status`: listeners alive, stream lengths, pending and dead-letter
//! counts, last errors, and warnings about Redis settings durability needs.

use serde_json::json;

use crate::bus::queues::{redis_health, role_status};
use crate::cmd::Env;
use crate::cmd::args::GlobalArgs;
use crate::support::exit::Exit;

/// Examples shown in `--help` and the man page.
pub const EXAMPLES: &str = "\
Examples:
  fullsend status | jq '.roles[] | {role, pending, dead_letters, listeners_alive}'

Output (abridged):
  {\"v\":1,\"redis\":{\"reachable\":true,\"version\":\"7.0.15\",\"warnings\":[\"appendonly is no; durable delivery needs yes\"]},
   \"roles\":[{\"role\":\"orchestrator\",\"length\":42,\"pending\":1,\"dead_letters\":0,\"listeners_alive\":2,\"last_error\":null,…}],
   \"spend\":{\"spent_today_usd\":1.23,\"daily_limit_usd\":25.0,\"day\":\"2026-11-21\"}}";

/// Arguments of `fullsend status`.
#[derive(Debug, clap::Args)]
#[command(after_help = EXAMPLES)]
pub struct Args {}

/// Runs `status`.
pub async fn run(_args: Args, global: &GlobalArgs) -> anyhow::Result<Exit> {
    let env = Env::load(global, Vec::new())?;
    let url = env.config.redis_url();
    let mut conn = match crate::bus::store::connect(&url).await {
        Ok(c) => c,
        Err(err) => {
            env.emit(&json!({"v": 1, "redis": {"url": crate::support::config::redacted_url(&url), "reachable": false, "error": format!("{err:#}")}}))?;
            return Ok(Exit::Upstream);
        }
    };
    let redis = redis_health(&mut conn).await?;
    for w in redis["warnings"].as_array().into_iter().flatten() {
        tracing::warn!("{}", w.as_str().unwrap_or_default());
    }
    let channels = env.config.channels();
    let mut roles = Vec::new();
    for (group, channel) in [
        ("orchestrator", channels.to_orchestrator.clone()),
        ("fullsend", channels.to_fullsend.clone()),
    ] {
        roles.push(role_status(&mut conn, group, &channel).await?);
    }
    let spent = crate::bus::spend::spent_today(&mut conn)
        .await
        .unwrap_or(0.0);
    let mut report = json!({"v": 1, "redis": redis, "roles": roles, "spend": crate::bus::spend::report(spent, env.config.daily_spend_limit()?)});
    report["redis"]["url"] = json!(crate::support::config::redacted_url(&url));
    env.emit(&report)?;
    Ok(Exit::Success)
}
