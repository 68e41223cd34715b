//! The Redis context a listener keeps: it follows changes made by any client through Redis's
//! client-side caching, and it is never stale after its tracking connection is killed.

use std::time::Duration;

use serde_json::json;

use crate::common::mock_api::{self, MockApi, Reply};
use crate::listen::{Listener, wait_ready};
use crate::support::{World, eventually};

fn no_action() -> Reply {
    Reply::text(json!({"action": "no_action", "reasoning": "looking"}).to_string())
}

/// Publishes an escalation and returns the prompt the model got for it.
fn prompt_for(w: &World, content: &str) -> String {
    let before = w.mock_api().request_count();
    let r = w.run(
        &["publish", "fullsend:to_orchestrator"],
        &json!({"type": "escalation", "source": "watcher", "original_message": {"content": content}}).to_string(),
    );
    assert_eq!(r.code, 0, "{}", r.stderr);
    eventually(Duration::from_secs(20), "the model call", || {
        let requests = w.mock_api().requests();
        requests
            .iter()
            .skip(before)
            .map(mock_api::user_text)
            .find(|t| t.contains(content))
    })
}

fn hset(w: &World, key: &str, field: &str, value: &str) {
    let reply = w.redis().cli(&["HSET", key, field, value]);
    assert!(reply.parse::<i64>().is_ok(), "HSET {key}: {reply}");
}

#[test]
fn writes_by_any_client_are_in_the_next_prompt() {
    let w = World::with_redis().mock(MockApi::start(|_, _| no_action()));
    hset(
        &w,
        "experiments:exp_20261202_alpha",
        "name",
        "Alpha outreach",
    );
    hset(&w, "experiments:exp_20261202_alpha", "state", "running");
    let l = Listener::start(&w, &["orchestrator", "--no-ingest"], "l.log");
    wait_ready(&w, "orchestrator", "fullsend:to_orchestrator", 0);
    assert!(prompt_for(&w, "first look").contains("Alpha outreach"));
    // Another component (the Redis Agent, the Executor) changes things.
    hset(
        &w,
        "experiments:exp_20261202_alpha",
        "name",
        "Alpha outreach v2",
    );
    hset(&w, "experiments:exp_20261202_beta", "name", "Beta test");
    hset(
        &w,
        "tools:hn_scraper",
        "description",
        "scrapes HN hiring posts",
    );
    hset(&w, "metrics_aggregated:exp_20261202_alpha", "replies", "7");
    let p = prompt_for(&w, "second look");
    for seen in [
        "Alpha outreach v2",
        "Beta test",
        "scrapes HN hiring posts",
        "replies=7",
    ] {
        assert!(p.contains(seen), "{seen} in the next prompt:\n{p}");
    }
    // Archived and deleted ones leave it.
    hset(&w, "experiments:exp_20261202_alpha", "state", "archived");
    w.redis().cli(&["DEL", "experiments:exp_20261202_beta"]);
    let p = prompt_for(&w, "third look");
    assert!(
        !p.contains("Alpha outreach") && !p.contains("Beta test"),
        "{p}"
    );
    // An unchanged context is not read again: no SCAN, no reads of the context's keys.
    let stat = |name: &str| -> u64 {
        let info = w.redis().cli(&["INFO", "commandstats"]);
        info.lines()
            .find(|l| l.starts_with(&format!("cmdstat_{name}:")))
            .and_then(|l| l.split("calls=").nth(1))
            .and_then(|v| v.split(',').next())
            .and_then(|v| v.parse().ok())
            .unwrap_or(0)
    };
    let (scans, hgetalls, types) = (stat("scan"), stat("hgetall"), stat("type"));
    for i in 0..5 {
        prompt_for(&w, &format!("unchanged {i}"));
    }
    assert_eq!(stat("scan"), scans, "no SCAN for an unchanged context");
    assert_eq!(
        stat("hgetall"),
        hgetalls,
        "no hash read for an unchanged context"
    );
    assert_eq!(stat("type"), types, "no TYPE for an unchanged context");
    assert_eq!(l.stop(), 0);
}

#[test]
fn a_killed_tracking_connection_never_leaves_a_stale_prompt() {
    let w = World::with_redis().mock(MockApi::start(|_, _| no_action()));
    hset(&w, "experiments:exp_20261202_gamma", "name", "Gamma before");
    let l = Listener::start(&w, &["orchestrator", "--no-ingest"], "l.log");
    assert!(prompt_for(&w, "warm up").contains("Gamma before"));
    for round in 0..3 {
        // Kill the listener's tracking connection (the RESP3 one), then change an experiment
        // before the listener can notice.
        let clients = w.redis().cli(&["CLIENT", "LIST"]);
        let ids: Vec<&str> = clients
            .lines()
            .filter(|l| l.contains("resp=3"))
            .filter_map(|l| l.split_whitespace().find_map(|f| f.strip_prefix("id=")))
            .collect();
        assert!(
            !ids.is_empty(),
            "a tracking connection: {clients}\n{}",
            crate::support::read(&w.path("l.log"))
        );
        for id in ids {
            w.redis().cli(&["CLIENT", "KILL", "ID", id]);
        }
        let name = format!("Gamma after {round}");
        hset(&w, "experiments:exp_20261202_gamma", "name", &name);
        let p = prompt_for(&w, &format!("look {round}"));
        assert!(
            p.contains(&name),
            "round {round}: {name} in the prompt:\n{p}"
        );
    }
    assert_eq!(l.stop(), 0);
}
