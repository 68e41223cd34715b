//! `fullsend think`: parsing, context, the model call (thinking, retries,
//! timeouts, caching markers) against the strict Messages-API mock.

use std::time::Duration;

use serde_json::{Value, json};

use crate::common::mock_api::{self, MockApi, Reply, Usage};
use crate::support::{World, rambling};

const ESCALATION: &str = r#"{"type":"escalation","source":"watcher","priority":"high","reason":"New GTM idea from user","original_message":{"username":"jake","user_id":"42","content":"Scrape HN Who is Hiring posts","channel_name":"ideas","channel_id":"1234567890","message_id":"998877","mentions_bot":true},"context":{"channel":"ideas","user":"jake","summary":"HN idea"},"timestamp":"2026-11-21T00:00:00Z"}"#;

fn decision_reply(action: &str) -> Reply {
    Reply::Message {
        text: rambling(
            &json!({"action": action, "reasoning": "HN hiring posts list CTOs {who} hire", "payload": {"idea": "Scrape HN Who is Hiring"}, "priority": "high", "context_for_fullsend": "developer outreach works"}),
        ),
        thinking: Some("The user wants an experiment. I should dispatch.".into()),
        usage: Usage {
            input_tokens: 1200,
            output_tokens: 300,
            cache_creation_input_tokens: 0,
            cache_read_input_tokens: 4000,
        },
    }
}

#[test]
fn parse_needs_no_key_or_redis_and_is_string_aware() {
    let w = World::bare();
    let cases = [
        (
            r#"prose {x} then {"action":"respond_to_discord","reasoning":"a } in a string","payload":{"content":"hi {there}"},"priority":" URGENT "}"#,
            "respond_to_discord",
            "urgent",
        ),
        (
            "```json\n{\"action\": \"record_learning\", \"payload\": {\"learning\": \"x\"}}\n```\nthanks!",
            "record_learning",
            "medium",
        ),
        (
            r#"{"action": null, "reasoning": "unsure"}"#,
            "no_action",
            "medium",
        ),
        (
            r#"{"action": "launch_rockets", "priority": "whenever"}"#,
            "no_action",
            "medium",
        ),
        ("no json at all", "no_action", "medium"),
    ];
    for (text, action, priority) in cases {
        let r = w.run(&["think", "--parse"], text);
        assert_eq!(r.code, 0, "{text}: {}", r.stderr);
        let d = r.json();
        assert_eq!(d["action"], action, "{text}");
        assert_eq!(d["priority"], priority, "{text}");
    }
    let d = w
        .run(&["think", "--parse"], r#"{"action":"launch_rockets"}"#)
        .json();
    assert!(
        d["parse_note"]
            .as_str()
            .unwrap_or("")
            .contains("launch_rockets"),
        "reason kept: {d}"
    );
    let d = w
        .run(
            &["think", "--parse"],
            r#"{"action":"respond_to_discord","payload":"plain text"}"#,
        )
        .json();
    assert_eq!(d["payload"]["value"], "plain text");
    let d = w
        .run(
            &["think", "--parse"],
            r#"{"action":"kill_experiment","payload":{"experiment_id":"exp_1","reason":"r"}}"#,
        )
        .json();
    assert_eq!(d["experiment_id"], "exp_1");
}

#[test]
fn bad_input_exits_2_without_calling_the_model() {
    let mock = MockApi::sequence(vec![decision_reply("no_action")]);
    let w = World::bare().mock(mock);
    for input in ["", "not json", "[1,2]", "\"str\""] {
        let r = w.run(&["think", "--no-log"], input);
        assert_eq!(r.code, 2, "{input:?}: {}", r.stderr);
        assert!(r.stdout.is_empty());
        assert!(r.stderr.contains("fullsend think: error"), "{}", r.stderr);
    }
    assert_eq!(w.mock_api().request_count(), 0);
}

#[test]
fn context_only_reads_files_and_redis_without_a_key() {
    let w = World::with_redis();
    std::fs::write(w.context().join("product_context.md"), "We sell dev tools.").expect("write");
    let mut c = w.conn();
    let _: () = redis::cmd("HSET")
        .arg("experiments:exp_20240115_github_stars")
        .arg("name")
        .arg("GitHub stars")
        .arg("state")
        .arg("running")
        .query(&mut c)
        .expect("hset");
    let _: () = redis::cmd("HSET")
        .arg("experiments:exp_old")
        .arg("name")
        .arg("Old")
        .arg("state")
        .arg("archived")
        .query(&mut c)
        .expect("hset");
    let _: () = redis::cmd("SET")
        .arg("experiments:exp_json")
        .arg(r#"{"name":"From py","status":"draft"}"#)
        .query(&mut c)
        .expect("set");
    let _: () = redis::cmd("HSET")
        .arg("tools:github_scraper")
        .arg("description")
        .arg("scrapes")
        .query(&mut c)
        .expect("hset");
    let _: () = redis::cmd("HSET")
        .arg("tools:broken")
        .arg("name")
        .arg("broken")
        .arg("status")
        .arg("disabled")
        .query(&mut c)
        .expect("hset");
    let _: () = redis::cmd("HSET")
        .arg("learnings:tactical:20240115_101500")
        .arg("text")
        .arg("Template A 20%")
        .arg("created_at")
        .arg("2024-01-15T10:15:00Z")
        .query(&mut c)
        .expect("hset");
    let _: () = redis::cmd("HSET")
        .arg("metrics_aggregated:exp_20240115_github_stars")
        .arg("emails_sent_count")
        .arg("120")
        .query(&mut c)
        .expect("hset");
    let r = w.run(&["think", "--context-only"], "");
    assert_eq!(r.code, 0, "{}", r.stderr);
    let ctx = r.json();
    assert_eq!(ctx["product"], "We sell dev tools.");
    let ids: Vec<&str> = ctx["experiments"]
        .as_array()
        .expect("list")
        .iter()
        .filter_map(|e| e["id"].as_str())
        .collect();
    assert!(
        ids.contains(&"exp_20240115_github_stars") && ids.contains(&"exp_json"),
        "{ids:?}"
    );
    assert!(
        !ids.contains(&"exp_old"),
        "archived experiments are left out"
    );
    let tools: Vec<&str> = ctx["tools"]
        .as_array()
        .expect("list")
        .iter()
        .filter_map(|t| t["name"].as_str())
        .collect();
    assert_eq!(
        tools,
        vec!["github_scraper"],
        "named from the key; disabled left out"
    );
    assert_eq!(ctx["tactical_learnings"][0]["text"], "Template A 20%");
    assert_eq!(ctx["metrics"][0]["fields"]["emails_sent_count"], "120");
}

#[test]
fn context_only_survives_a_dead_redis_and_missing_files() {
    let w = World::bare();
    let r = w.run(&["think", "--context-only"], "");
    assert_eq!(r.code, 0, "{}", r.stderr);
    let ctx = r.json();
    assert!(
        ctx["warnings"].as_array().expect("warnings").len() >= 3,
        "{ctx}"
    );
}

#[test]
fn think_calls_the_api_with_the_contracted_request_and_reports_everything() {
    let mock = MockApi::sequence(vec![decision_reply("dispatch_to_fullsend")]);
    let w = World::with_redis().mock(mock);
    std::fs::write(
        w.context().join("learnings.md"),
        "# Strategic Learnings\n\n## 2024-01-14\nCTOs respond",
    )
    .expect("write");
    let r = w.run(&["think"], ESCALATION);
    assert_eq!(r.code, 0, "{}", r.stderr);
    let d = r.json();
    assert_eq!(d["action"], "dispatch_to_fullsend");
    assert_eq!(d["priority"], "high");
    assert_eq!(d["context_for_fullsend"], "developer outreach works");
    assert_eq!(
        d["message"]["original_message"]["content"],
        "Scrape HN Who is Hiring posts"
    );
    assert_eq!(d["usage"]["cache_read_input_tokens"], 4000);
    assert!(d["thinking"].as_str().unwrap_or("").contains("dispatch"));
    assert!(d["cost_usd"].as_f64().unwrap_or(0.0) > 0.0);
    let req = &w.mock_api().requests()[0];
    let body = &req.body;
    assert_eq!(body["stream"], true);
    assert_eq!(
        body["thinking"]["type"], "adaptive",
        "opus-5-5 takes adaptive thinking"
    );
    for banned in ["temperature", "top_p", "top_k"] {
        assert!(body.get(banned).is_none(), "{banned} must never be sent");
    }
    assert_eq!(body["system"][0]["cache_control"]["type"], "ephemeral");
    let system = mock_api::system_text(req);
    assert!(
        system.contains("CTOs respond"),
        "learnings reach the prompt"
    );
    assert!(!system.contains("{{"), "no unfilled placeholder is sent");
    let user = mock_api::user_text(req);
    assert!(
        user.contains("\"message_id\": \"998877\""),
        "the whole message is in the user turn"
    );
    let last = body["messages"][0]["content"]
        .as_array()
        .expect("blocks")
        .last()
        .cloned()
        .unwrap_or(Value::Null);
    assert!(
        last.get("cache_control").is_none(),
        "the incoming message comes last, uncached"
    );
    let log = crate::support::read(&w.context().join("decisions.jsonl"));
    assert!(
        log.contains("HN hiring posts list CTOs"),
        "decision log has the reasoning"
    );
}

#[test]
fn budget_models_get_enabled_thinking_below_max_tokens() {
    let mock = MockApi::sequence(vec![decision_reply("no_action")]);
    let w = World::bare()
        .mock(mock)
        .set("ORCHESTRATOR_MODEL", "claude-opus-4-5-20251101");
    let r = w.run(&["think", "--no-log"], ESCALATION);
    assert_eq!(r.code, 0, "{}", r.stderr);
    let body = &w.mock_api().requests()[0].body;
    assert_eq!(body["thinking"]["type"], "enabled");
    assert_eq!(body["thinking"]["budget_tokens"], 10000);
    assert!(body["max_tokens"].as_u64().unwrap_or(0) > 10000);
}

#[test]
fn rate_limits_are_retried_honouring_retry_after() {
    let mock = MockApi::sequence(vec![
        Reply::Error {
            status: 429,
            error_type: "rate_limit_error".into(),
            message: "slow down".into(),
            headers: vec![("retry-after".into(), "1".into())],
        },
        Reply::MidStreamError,
        decision_reply("no_action"),
    ]);
    let w = World::bare()
        .mock(mock)
        .set("FULLSEND_API_MAX_RETRIES", "3");
    let started = std::time::Instant::now();
    let r = w.run(&["think", "--no-log"], ESCALATION);
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert_eq!(w.mock_api().request_count(), 3);
    assert!(
        started.elapsed() >= Duration::from_millis(900),
        "retry-after was honoured"
    );
}

#[test]
fn overload_after_retries_is_no_action_with_exit_3() {
    let mock = MockApi::sequence(vec![Reply::error(529, "overloaded_error", "Overloaded")]);
    let w = World::bare()
        .mock(mock)
        .set("FULLSEND_API_MAX_RETRIES", "1");
    let r = w.run(&["think", "--no-log"], ESCALATION);
    assert_eq!(r.code, 3, "{}", r.stderr);
    let d = r.json();
    assert_eq!(d["action"], "no_action");
    assert_eq!(d["fallback"], "model_error");
    assert_eq!(d["payload"]["error_type"], "api_error");
    assert_eq!(w.mock_api().request_count(), 2);
}

#[test]
fn a_bad_request_is_not_retried() {
    let mock = MockApi::sequence(vec![Reply::error(400, "invalid_request_error", "bad")]);
    let w = World::bare().mock(mock);
    let r = w.run(&["think", "--no-log"], ESCALATION);
    assert_eq!(r.code, 3);
    assert_eq!(w.mock_api().request_count(), 1);
}

#[test]
fn a_slow_model_gets_the_still_thinking_fallback() {
    let mock = MockApi::sequence(vec![Reply::Delay(
        Duration::from_secs(30),
        Box::new(decision_reply("no_action")),
    )]);
    let w = World::bare().mock(mock);
    let started = std::time::Instant::now();
    let r = w.run(&["think", "--no-log", "--timeout", "1"], ESCALATION);
    assert!(started.elapsed() < Duration::from_secs(10));
    assert_eq!(r.code, 3, "{}", r.stderr);
    let d = r.json();
    assert_eq!(d["action"], "respond_to_discord");
    assert_eq!(d["fallback"], "timeout");
    assert_eq!(
        d["payload"]["content"],
        "I'm still thinking about this. Will update soon."
    );
}

#[test]
fn missing_api_key_is_a_usage_error() {
    let w = World::bare();
    let r = w.run(&["think", "--no-log"], ESCALATION);
    assert_eq!(r.code, 2);
    assert!(r.stderr.contains("ANTHROPIC_API_KEY"), "{}", r.stderr);
}

#[test]
fn status_notices_make_no_model_call() {
    let mock = MockApi::sequence(vec![decision_reply("no_action")]);
    let w = World::bare().mock(mock);
    for kind in ["fullsend_started", "builder_started", "design_started"] {
        let r = w.run(
            &["think", "--no-log"],
            &json!({"type": kind, "source": "fullsend_listener", "request_id": "r1"}).to_string(),
        );
        assert_eq!(r.code, 0);
        assert_eq!(r.json()["fallback"], "status_rule");
    }
    assert_eq!(w.mock_api().request_count(), 0);
}

#[test]
fn one_megabyte_message_fits_the_prompt_budget() {
    let mock = MockApi::sequence(vec![decision_reply("no_action")]);
    let w = World::bare().mock(mock);
    let big = json!({"type": "escalation", "source": "watcher", "original_message": {"content": "x".repeat(1_000_000)}});
    let r = w.run(&["think", "--no-log"], &big.to_string());
    assert_eq!(r.code, 0, "{}", r.stderr);
    let user = mock_api::user_text(&w.mock_api().requests()[0]);
    assert!(
        user.len() < 200_000,
        "the message was cut to fit: {} bytes",
        user.len()
    );
    assert!(user.contains("characters cut"));
}

#[test]
fn a_prompt_override_with_an_unknown_placeholder_fails_before_sending() {
    let mock = MockApi::sequence(vec![decision_reply("no_action")]);
    let w = World::bare().mock(mock);
    let prompts = w.path("prompts");
    std::fs::create_dir_all(&prompts).expect("dir");
    std::fs::write(
        prompts.join("system.txt"),
        "Hello {{ product_context }} {{ learnings }} {{ nonsense }}",
    )
    .expect("write");
    let r = w.run(
        &[
            "think",
            "--no-log",
            "--prompts-dir",
            prompts.to_str().expect("utf8"),
        ],
        ESCALATION,
    );
    assert_eq!(r.code, 2, "{}", r.stderr);
    assert!(r.stderr.contains("nonsense"), "{}", r.stderr);
    assert_eq!(w.mock_api().request_count(), 0);
}

#[test]
fn the_cached_prefix_is_stable_and_the_message_comes_last() {
    let mock = MockApi::sequence(vec![decision_reply("no_action")]);
    let w = World::with_redis().mock(mock);
    std::fs::write(
        w.context().join("learnings.md"),
        "# Strategic Learnings\n\n## 2024-01-14\nCTOs respond",
    )
    .expect("write");
    for content in ["first idea", "a completely different second idea"] {
        let msg = json!({"type": "escalation", "source": "watcher", "original_message": {"content": content}});
        assert_eq!(w.run(&["think", "--no-log"], &msg.to_string()).code, 0);
    }
    let reqs = w.mock_api().requests();
    let (a, b) = (&reqs[0].body, &reqs[1].body);
    assert_eq!(
        a["system"], b["system"],
        "system prompt (product, learnings) is byte-identical"
    );
    assert_eq!(
        a["messages"][0]["content"][0], b["messages"][0]["content"][0],
        "the context block is identical too"
    );
    assert_eq!(
        a["messages"][0]["content"][0]["cache_control"]["type"],
        "ephemeral"
    );
    assert_ne!(
        a["messages"][0]["content"][1], b["messages"][0]["content"][1],
        "only the last block differs"
    );
}

#[test]
fn prompt_only_shows_blocks_and_stays_within_budget_for_a_huge_context() {
    let w = World::with_redis().set("FULLSEND_PROMPT_BUDGET", "8000");
    let learnings: String = (0..40_000)
        .map(|i| {
            format!(
                "\n\n## 2026-01-01T00:00:{i:05}\nlearning {i}: event targeting beats cold lists"
            )
        })
        .collect();
    std::fs::write(
        w.context().join("learnings.md"),
        format!("# Strategic Learnings{learnings}"),
    )
    .expect("write");
    let mut c = w.conn();
    let mut pipe = redis::pipe();
    for i in 0..2000 {
        pipe.cmd("HSET")
            .arg(format!("experiments:exp_{i}"))
            .arg("name")
            .arg(format!("experiment {i}"))
            .arg("state")
            .arg(if i % 2 == 0 { "running" } else { "completed" })
            .ignore();
    }
    let _: () = pipe.query(&mut c).expect("pipe");
    let r = w.run(&["think", "--prompt-only"], ESCALATION);
    assert_eq!(r.code, 0, "{}", r.stderr);
    let out = r.json();
    assert!(
        out["estimated_tokens"].as_u64().unwrap_or(u64::MAX) <= 8000,
        "{}",
        out["estimated_tokens"]
    );
    let system = out["system"][0]["text"].as_str().unwrap_or("");
    assert!(
        system.contains("learning 39999"),
        "the newest learnings are kept"
    );
    assert!(!system.contains("learning 0:"), "the oldest are cut");
    let context = out["user"][0]["text"].as_str().unwrap_or("");
    assert!(
        context.contains("(state: running)"),
        "active experiments come first"
    );
    assert!(
        context.contains("Left out to fit the prompt budget"),
        "the prompt says what was left out"
    );
    assert!(out["omitted"].as_array().map(Vec::len).unwrap_or(0) > 0);
}

#[test]
fn the_spend_limit_stops_new_model_calls() {
    let mock = MockApi::sequence(vec![decision_reply("no_action")]);
    let w = World::with_redis()
        .mock(mock)
        .set("FULLSEND_DAILY_SPEND_LIMIT_USD", "0.5");
    // Each decision costs (1200×4 + 300×20 + 4000×0.2)/1e6 = $0.0116 at the built-in Opus 5.5 prices.
    assert_eq!(w.run(&["think", "--no-log"], ESCALATION).code, 0);
    let status = w.run(&["status"], "").json();
    let spent = status["spend"]["spent_today_usd"].as_f64().unwrap_or(0.0);
    assert!((spent - 0.0116).abs() < 1e-6, "{status}");
    let mut c = w.conn();
    let day: String = status["spend"]["day"].as_str().unwrap_or("").to_string();
    let _: () = redis::cmd("SET")
        .arg(format!("fullsend:spend:{day}"))
        .arg("0.75")
        .query(&mut c)
        .expect("set");
    let r = w.run(&["think", "--no-log"], ESCALATION);
    assert_eq!(r.code, 4, "{}", r.stderr);
    assert_eq!(r.json()["fallback"], "spend_limit");
    assert_eq!(
        w.mock_api().request_count(),
        1,
        "no model call past the limit"
    );
}

#[test]
fn a_message_deep_in_a_causation_chain_is_not_acted_on_and_costs_nothing() {
    let mock = MockApi::sequence(vec![decision_reply("dispatch_to_fullsend")]);
    let w = World::bare().mock(mock);
    let deep = json!({"type": "roundtable_result", "msg_id": "m-deep", "causation_depth": 12,
                      "result": "let us hold another roundtable"});
    let r = w.run(&["think", "--no-log"], &deep.to_string());
    assert_eq!(r.code, 0, "{}", r.stderr);
    let d = r.json();
    assert_eq!(d["action"], "no_action");
    assert_eq!(d["fallback"], "causation_limit");
    assert_eq!(w.mock_api().request_count(), 0, "no model call");
    // One hop less is still decided by the model.
    let shallow = json!({"type": "roundtable_result", "msg_id": "m-ok", "causation_depth": 11});
    let r = w.run(&["think", "--no-log"], &shallow.to_string());
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert_eq!(r.json()["action"], "dispatch_to_fullsend");
    assert_eq!(w.mock_api().request_count(), 1);
}
