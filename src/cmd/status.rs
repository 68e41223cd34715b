//! `fullsend status`: listeners alive, stream lengths, pending and dead-letter
//! counts, last errors, and warnings about Redis settings durability needs.

use std::collections::HashMap;

use redis::streams::StreamInfoGroupsReply;
use serde_json::{Value, json};

use crate::bus::store::{ChannelKeys, Conn};
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

/// Version and the settings durability relies on, with warnings.
pub async fn redis_health(conn: &mut Conn) -> anyhow::Result<Value> {
    let info: String = redis::cmd("INFO").arg("server").query_async(conn).await?;
    let version = info
        .lines()
        .find_map(|l| l.strip_prefix("redis_version:"))
        .unwrap_or("")
        .trim()
        .to_string();
    let mut settings = HashMap::new();
    let mut warnings = Vec::new();
    for name in ["appendonly", "appendfsync", "maxmemory-policy"] {
        let got: Result<Vec<String>, _> = redis::cmd("CONFIG")
            .arg("GET")
            .arg(name)
            .query_async(conn)
            .await;
        match got {
            Ok(v) if v.len() >= 2 => {
                settings.insert(name, v[1].clone());
            }
            _ => warnings.push(format!("cannot read {name} (CONFIG GET not allowed?)")),
        }
    }
    let expect = [
        ("appendonly", "yes"),
        ("appendfsync", "everysec"),
        ("maxmemory-policy", "noeviction"),
    ];
    for (name, want) in expect {
        if let Some(have) = settings.get(name) {
            let ok = if name == "appendfsync" {
                have == "everysec" || have == "always"
            } else {
                have == want
            };
            if !ok {
                warnings.push(format!("{name} is {have}; durable delivery needs {want}"));
            }
        }
    }
    let major: u32 = version
        .split('.')
        .next()
        .and_then(|m| m.parse().ok())
        .unwrap_or(0);
    if major < 7 {
        warnings.push(format!(
            "Redis {version} is older than 7.0, which fullsend needs"
        ));
    }
    Ok(json!({"reachable": true, "version": version, "settings": settings, "warnings": warnings}))
}

pub async fn role_status(conn: &mut Conn, group: &str, channel: &str) -> anyhow::Result<Value> {
    let keys = ChannelKeys::new(channel);
    let stream = keys.stream();
    let length: u64 = redis::cmd("XLEN")
        .arg(&stream)
        .query_async(conn)
        .await
        .unwrap_or(0);
    let dlq_length: u64 = redis::cmd("XLEN")
        .arg(keys.dlq())
        .query_async(conn)
        .await
        .unwrap_or(0);
    let mut pending = 0u64;
    let mut lag = Value::Null;
    // A stream that does not exist yet has no groups: nothing is pending.
    let groups: Option<StreamInfoGroupsReply> = redis::cmd("XINFO")
        .arg("GROUPS")
        .arg(&stream)
        .query_async(conn)
        .await
        .ok();
    if let Some(info) = groups
        .into_iter()
        .flat_map(|g| g.groups)
        .find(|g| g.name == group)
    {
        pending = info.pending as u64;
        lag = info.lag.map(Value::from).unwrap_or(Value::Null);
    }
    let listener_keys =
        crate::bus::store::scan_keys(conn, &format!("fullsend:listeners:{group}:*")).await?;
    let mut listeners = Vec::new();
    let mut last_error = String::new();
    for key in listener_keys {
        let mut h: HashMap<String, String> =
            redis::cmd("HGETALL").arg(&key).query_async(conn).await?;
        h.remove("token");
        if let Some(e) = h.get("last_error").filter(|e| !e.is_empty()) {
            last_error = e.clone();
        }
        listeners.push(json!(h));
    }
    let errors: HashMap<String, String> = redis::cmd("HGETALL")
        .arg(format!(
            "{}:errors:{group}",
            stream.trim_end_matches(":stream")
        ))
        .query_async(conn)
        .await
        .unwrap_or_default();
    Ok(json!({
        "role": group,
        "channel": channel,
        "stream": stream,
        "length": length,
        "pending": pending,
        "lag": lag,
        "dead_letters": dlq_length,
        "listeners_alive": listeners.len(),
        "listeners": listeners,
        "failing_entries": errors.len(),
        "last_error": if last_error.is_empty() { Value::Null } else { json!(last_error) },
    }))
}
