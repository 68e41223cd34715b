//! Model providers behind `think`, `listen` and `design --engine api`: Gemini and
//! OpenAI-compatible servers, black-box against strict mocks and a real
//! redis-server. Same request in, same decision out, whichever provider answers.

use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::common::mock_gemini::{self, MockGemini};
use crate::common::mock_openai::{self, MockOpenAi, ReasoningField};
use crate::design::spec_reply;
use crate::support::{World, of_type, rambling, read};

const ESCALATION: &str = r#"{"type":"escalation","source":"watcher","priority":"high","reason":"New GTM idea from user","original_message":{"username":"jake","user_id":"42","content":"Scrape HN Who is Hiring posts","channel_name":"ideas","channel_id":"1234567890","message_id":"998877","mentions_bot":true},"context":{"channel":"ideas","user":"jake","summary":"HN idea"},"timestamp":"2026-11-21T00:00:00Z"}"#;

const GEMINI_KEY: &str = "gemini-test-key-not-secret";
const OPENAI_KEY: &str = "sk-openai-test-key-not-secret";

fn decision_text(action: &str) -> String {
    rambling(
        &json!({"action": action, "reasoning": "HN hiring posts list CTOs {who} hire", "payload": {"idea": "Scrape HN Who is Hiring"}, "priority": "high", "context_for_fullsend": "developer outreach works"}),
    )
}

/// `think` and `listen orchestrator` on Gemini, with the mock's URL and key.
fn gemini_world(w: World, mock: &MockGemini, model: &str) -> World {
    w.set("ORCHESTRATOR_PROVIDER", "gemini")
        .set("GEMINI_BASE_URL", &mock.base_url())
        .set("GEMINI_API_KEY", GEMINI_KEY)
        .set("ORCHESTRATOR_MODEL", model)
}

/// `think` and `listen orchestrator` on an OpenAI-compatible server without a key (Ollama).
fn openai_world(w: World, mock: &MockOpenAi, model: &str) -> World {
    w.set("ORCHESTRATOR_PROVIDER", "openai")
        .set("OPENAI_BASE_URL", &mock.base_url())
        .set("ORCHESTRATOR_MODEL", model)
}

fn gemini_decision(thoughts: &str, usage: mock_gemini::Usage) -> mock_gemini::Reply {
    mock_gemini::Reply::Answer {
        text: decision_text("dispatch_to_fullsend"),
        thoughts: Some(thoughts.into()),
        usage,
        finish_reason: "STOP".into(),
    }
}

fn openai_decision(reasoning: &str, field: ReasoningField) -> mock_openai::Reply {
    mock_openai::Reply::Answer {
        content: decision_text("dispatch_to_fullsend"),
        reasoning: Some(reasoning.into()),
        field,
        usage: mock_openai::Usage {
            prompt_tokens: 5000,
            cached_tokens: 3000,
            completion_tokens: 400,
            reasoning_tokens: 250,
        },
        finish_reason: "stop".into(),
    }
}

#[test]
fn gemini_2_5_decides_with_a_thinking_budget_and_reports_thoughts_and_cached_usage() {
    let mock = MockGemini::start_with_key(GEMINI_KEY, |_, _| {
        gemini_decision(
            "The user wants an experiment, so I should dispatch it.",
            mock_gemini::Usage {
                prompt: 5000,
                cached: 4000,
                candidates: 300,
                thoughts: 700,
            },
        )
    });
    let w = gemini_world(World::with_redis(), &mock, "gemini-2.5-flash");
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
    assert_eq!(d["provider"], "gemini");
    assert_eq!(d["model"], "gemini-2.5-flash");
    assert_eq!(d["usage"]["input_tokens"], 1000, "prompt minus cached");
    assert_eq!(d["usage"]["cache_read_input_tokens"], 4000);
    assert_eq!(
        d["usage"]["output_tokens"], 1000,
        "candidates plus thoughts"
    );
    assert!(
        d["thinking"].as_str().unwrap_or("").contains("dispatch it"),
        "thought parts become the thinking text: {d}"
    );
    assert!(
        !d["reasoning"]
            .as_str()
            .unwrap_or("")
            .contains("dispatch it"),
        "thoughts never reach the decision text"
    );

    let requests = mock.requests();
    assert_eq!(requests.len(), 1);
    let req = &requests[0];
    assert_eq!(
        req.path,
        "/v1beta/models/gemini-2.5-flash:streamGenerateContent?alt=sse"
    );
    assert_eq!(req.header("x-goog-api-key"), Some(GEMINI_KEY));
    let config = mock_gemini::thinking_config(req);
    assert_eq!(config["thinkingBudget"], 10000);
    assert!(
        config.get("thinkingLevel").is_none(),
        "never both: {config}"
    );
    assert_eq!(config["includeThoughts"], true);
    assert!(
        req.body["generationConfig"]["maxOutputTokens"]
            .as_u64()
            .unwrap_or(0)
            > 10000
    );
    assert_eq!(req.body["contents"][0]["role"], "user");
    assert!(mock_gemini::system_text(req).contains("CTOs respond"));
    assert!(mock_gemini::user_text(req).contains("\"message_id\": \"998877\""));
    let log = read(&w.context().join("decisions.jsonl"));
    assert!(
        log.contains("dispatch it") && log.contains("HN hiring posts list CTOs"),
        "the decision log has the reasoning and the thinking"
    );
}

#[test]
fn gemini_thinking_is_set_per_model() {
    let mock = MockGemini::sequence(vec![gemini_decision(
        "thinking about it",
        mock_gemini::Usage::typical(),
    )]);
    // (model, extra environment, expected thinkingBudget, expected thinkingLevel)
    type Case<'a> = (&'a str, &'a [(&'a str, &'a str)], Value, Value);
    let cases: [Case; 5] = [
        ("gemini-3.5-flash", &[], json!(null), json!("HIGH")),
        (
            "gemini-3.5-flash",
            &[("ORCHESTRATOR_EFFORT", "low")],
            json!(null),
            json!("LOW"),
        ),
        (
            "gemini-3.1-pro-preview",
            &[("ORCHESTRATOR_EFFORT", "medium")],
            json!(null),
            json!("HIGH"),
        ),
        (
            "gemini-2.5-pro",
            &[("ORCHESTRATOR_THINKING_BUDGET", "2000")],
            json!(2000),
            json!(null),
        ),
        (
            "gemini-2.5-flash",
            &[("ORCHESTRATOR_THINKING", "disabled")],
            json!(0),
            json!(null),
        ),
    ];
    for (i, (model, env, budget, level)) in cases.iter().enumerate() {
        let mut w = gemini_world(World::bare(), &mock, model);
        for (k, v) in env.iter() {
            w = w.set(k, v);
        }
        let r = w.run(&["think", "--no-log"], ESCALATION);
        assert_eq!(r.code, 0, "{model} {env:?}: {}", r.stderr);
        let config = mock_gemini::thinking_config(&mock.requests()[i]);
        assert_eq!(
            config.get("thinkingBudget").cloned().unwrap_or(Value::Null),
            *budget,
            "{model} {env:?}: {config}"
        );
        assert_eq!(
            config.get("thinkingLevel").cloned().unwrap_or(Value::Null),
            *level,
            "{model} {env:?}: {config}"
        );
        let thinking = r.json()["thinking"].clone();
        if env.contains(&("ORCHESTRATOR_THINKING", "disabled")) {
            assert_eq!(config["includeThoughts"], false);
            assert!(thinking.is_null(), "no thoughts asked, none shown");
        } else {
            assert_eq!(thinking, "thinking about it");
        }
    }
    assert_eq!(mock.request_count(), cases.len(), "every request was valid");
}

#[test]
fn gemini_rate_limits_are_retried_honouring_retry_info() {
    let mock = MockGemini::sequence(vec![
        mock_gemini::Reply::rate_limited("1s"),
        mock_gemini::Reply::error(503, "UNAVAILABLE", "The model is overloaded."),
        gemini_decision("ok", mock_gemini::Usage::typical()),
    ]);
    let w = gemini_world(World::with_redis(), &mock, "gemini-2.5-flash")
        .set("FULLSEND_API_MAX_RETRIES", "3");
    let started = Instant::now();
    let r = w.run(&["think", "--no-log"], ESCALATION);
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert_eq!(r.json()["action"], "dispatch_to_fullsend");
    assert_eq!(mock.request_count(), 3);
    assert!(
        started.elapsed() >= Duration::from_millis(900),
        "RetryInfo.retryDelay was honoured"
    );
}

#[test]
fn gemini_auth_and_request_errors_name_the_setting_and_are_not_retried() {
    // 403 PERMISSION_DENIED, as for a key without access.
    let mock = MockGemini::sequence(vec![mock_gemini::Reply::error(
        403,
        "PERMISSION_DENIED",
        "Your API key was reported as leaked. Please use another API key.",
    )]);
    let w = gemini_world(World::with_redis(), &mock, "gemini-2.5-flash");
    let r = w.run(&["think", "--no-log"], ESCALATION);
    assert_eq!(r.code, 3, "{}", r.stderr);
    assert!(
        r.stderr.contains("gemini") && r.stderr.contains("GEMINI_API_KEY"),
        "{}",
        r.stderr
    );
    assert!(!r.stderr.contains(GEMINI_KEY), "the key is never printed");
    let d = r.json();
    assert_eq!(d["action"], "no_action");
    assert_eq!(d["fallback"], "model_error");
    assert_eq!(mock.request_count(), 1, "403 is never retried");

    // A wrong key: the real service answers 400 INVALID_ARGUMENT / API_KEY_INVALID.
    let mock = MockGemini::start_with_key("the-right-key", |_, _| {
        mock_gemini::Reply::text("unreachable")
    });
    let w = gemini_world(World::bare(), &mock, "gemini-2.5-flash");
    let r = w.run(&["think", "--no-log"], ESCALATION);
    assert_eq!(r.code, 3, "{}", r.stderr);
    assert!(r.stderr.contains("GEMINI_API_KEY"), "{}", r.stderr);
    assert_eq!(mock.request_count(), 1, "400 is never retried");

    // A model that does not exist: 404 names the model and the base URL.
    let mock = MockGemini::sequence(vec![mock_gemini::Reply::text("unreachable")]);
    let w = gemini_world(World::bare(), &mock, "not-a-gemini-model");
    let r = w.run(&["think", "--no-log"], ESCALATION);
    assert_eq!(r.code, 3, "{}", r.stderr);
    assert!(r.stderr.contains("GEMINI_BASE_URL"), "{}", r.stderr);
    assert_eq!(mock.request_count(), 1);

    // No key at all is a configuration error before any request.
    let mock = MockGemini::sequence(vec![mock_gemini::Reply::text("unreachable")]);
    let w = World::bare()
        .set("ORCHESTRATOR_PROVIDER", "gemini")
        .set("GEMINI_BASE_URL", &mock.base_url())
        .set("ORCHESTRATOR_MODEL", "gemini-2.5-flash");
    let r = w.run(&["think", "--no-log"], ESCALATION);
    assert_eq!(r.code, 2, "{}", r.stderr);
    assert!(
        r.stderr.contains("GEMINI_API_KEY is not set"),
        "{}",
        r.stderr
    );
    assert_eq!(mock.request_count(), 0);
}

#[test]
fn gemini_answers_without_text_become_no_action_with_the_reason() {
    let cases = [
        (mock_gemini::Reply::blocked("SAFETY"), "SAFETY"),
        (
            mock_gemini::Reply::PromptBlocked("PROHIBITED_CONTENT".into()),
            "PROHIBITED_CONTENT",
        ),
        (
            mock_gemini::Reply::Answer {
                text: String::new(),
                thoughts: Some("so much to consider".into()),
                usage: mock_gemini::Usage {
                    prompt: 1000,
                    cached: 0,
                    candidates: 0,
                    thoughts: 12000,
                },
                finish_reason: "MAX_TOKENS".into(),
            },
            "MAX_TOKENS",
        ),
    ];
    for (reply, reason) in cases {
        let mock = MockGemini::sequence(vec![reply]);
        let w = gemini_world(World::with_redis(), &mock, "gemini-2.5-flash");
        let r = w.run(&["think"], ESCALATION);
        assert_eq!(r.code, 3, "{reason}: {}", r.stderr);
        let d = r.json();
        assert_eq!(d["action"], "no_action", "{reason}");
        assert_eq!(d["payload"]["error_type"], "protocol_error", "{reason}");
        assert!(
            d["reasoning"].as_str().unwrap_or("").contains(reason),
            "the reason is kept: {d}"
        );
        assert_eq!(mock.request_count(), 1, "{reason} is not retried");
        assert!(
            read(&w.context().join("decisions.jsonl")).contains(reason),
            "the decision log says why"
        );
    }
}

#[test]
fn openai_compatible_server_without_a_key_decides_with_reasoning_and_cached_usage() {
    let mock = MockOpenAi::start(|_, _| {
        openai_decision(
            "The user wants an experiment; dispatch.",
            ReasoningField::Reasoning,
        )
    });
    let w = openai_world(World::with_redis(), &mock, "gpt-oss:20b");
    std::fs::write(
        w.context().join("learnings.md"),
        "# Strategic Learnings\n\n## 2024-01-14\nCTOs respond",
    )
    .expect("write");
    let r = w.run(&["think"], ESCALATION);
    assert_eq!(r.code, 0, "{}", r.stderr);
    let d = r.json();
    assert_eq!(d["action"], "dispatch_to_fullsend");
    assert_eq!(d["provider"], "openai");
    assert_eq!(d["model"], "gpt-oss:20b");
    assert_eq!(d["usage"]["input_tokens"], 2000, "prompt minus cached");
    assert_eq!(d["usage"]["cache_read_input_tokens"], 3000);
    assert_eq!(d["usage"]["output_tokens"], 400);
    assert!(
        d["thinking"]
            .as_str()
            .unwrap_or("")
            .contains("wants an experiment")
    );

    let req = &mock.requests()[0];
    assert_eq!(req.path, "/v1/chat/completions");
    assert!(
        req.header("authorization").is_none(),
        "no key, no Authorization header"
    );
    let body = &req.body;
    assert_eq!(body["model"], "gpt-oss:20b");
    assert_eq!(body["stream"], true);
    assert_eq!(body["stream_options"]["include_usage"], true);
    assert_eq!(body["max_tokens"], 16000);
    assert_eq!(
        body["reasoning_effort"], "high",
        "the 10k budget maps to high"
    );
    assert_eq!(body["messages"][0]["role"], "system");
    assert_eq!(body["messages"][1]["role"], "user");
    assert!(mock_openai::text_of_role(req, "system").contains("CTOs respond"));
    assert!(mock_openai::text_of_role(req, "user").contains("\"message_id\": \"998877\""));
    let log = read(&w.context().join("decisions.jsonl"));
    assert!(log.contains("wants an experiment"), "thinking is logged");
}

#[test]
fn openai_base_ending_in_v1_with_a_key_reads_reasoning_content_and_sets_effort_per_config() {
    let mock = MockOpenAi::start_with_key(OPENAI_KEY, |_, _| {
        openai_decision("weighing it up", ReasoningField::ReasoningContent)
    });
    let base = format!("{}/v1", mock.base_url());
    let w = World::bare()
        .set("ORCHESTRATOR_PROVIDER", "openai")
        .set("OPENAI_BASE_URL", &base)
        .set("OPENAI_API_KEY", OPENAI_KEY)
        .set("ORCHESTRATOR_MODEL", "gpt-5.2")
        .set("ORCHESTRATOR_EFFORT", "low");
    let r = w.run(&["think", "--no-log"], ESCALATION);
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert_eq!(r.json()["thinking"], "weighing it up");
    let req = &mock.requests()[0];
    assert_eq!(req.path, "/v1/chat/completions", "/v1 is not doubled");
    assert_eq!(
        req.header("authorization"),
        Some(format!("Bearer {OPENAI_KEY}").as_str())
    );
    assert_eq!(req.body["reasoning_effort"], "low");

    let w = w.set("ORCHESTRATOR_THINKING", "disabled");
    let r = w.run(&["think", "--no-log"], ESCALATION);
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert!(
        mock.requests()[1].body.get("reasoning_effort").is_none(),
        "no reasoning_effort when thinking is disabled"
    );
}

#[test]
fn openai_rate_limits_are_retried_honouring_retry_after() {
    let mock = MockOpenAi::sequence(vec![
        mock_openai::Reply::rate_limited(1),
        mock_openai::Reply::error(502, "server_error", "Bad gateway"),
        openai_decision("ok", ReasoningField::Reasoning),
    ]);
    let w = openai_world(World::with_redis(), &mock, "gpt-oss:20b")
        .set("FULLSEND_API_MAX_RETRIES", "3");
    let started = Instant::now();
    let r = w.run(&["think", "--no-log"], ESCALATION);
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert_eq!(r.json()["action"], "dispatch_to_fullsend");
    assert_eq!(mock.request_count(), 3);
    assert!(
        started.elapsed() >= Duration::from_millis(900),
        "retry-after was honoured"
    );
}

#[test]
fn openai_auth_errors_name_the_setting_and_are_not_retried() {
    let mock =
        MockOpenAi::start_with_key(OPENAI_KEY, |_, _| mock_openai::Reply::text("unreachable"));
    let w = openai_world(World::with_redis(), &mock, "gpt-5.2").set("OPENAI_API_KEY", "sk-wrong");
    let r = w.run(&["think", "--no-log"], ESCALATION);
    assert_eq!(r.code, 3, "{}", r.stderr);
    assert!(
        r.stderr.contains("openai") && r.stderr.contains("check OPENAI_API_KEY"),
        "{}",
        r.stderr
    );
    assert!(!r.stderr.contains("sk-wrong"), "the key is never printed");
    assert_eq!(r.json()["action"], "no_action");
    assert_eq!(mock.request_count(), 1, "401 is never retried");

    // A server that needs a key when none is set says so.
    let w = openai_world(World::bare(), &mock, "gpt-5.2");
    let r = w.run(&["think", "--no-log"], ESCALATION);
    assert_eq!(r.code, 3, "{}", r.stderr);
    assert!(
        r.stderr.contains("OPENAI_API_KEY is not set"),
        "{}",
        r.stderr
    );

    // A base URL that points at the wrong path: 404 names OPENAI_BASE_URL.
    let w = World::bare()
        .set("ORCHESTRATOR_PROVIDER", "openai")
        .set("OPENAI_BASE_URL", &format!("{}/api", mock.base_url()))
        .set("OPENAI_API_KEY", OPENAI_KEY)
        .set("ORCHESTRATOR_MODEL", "gpt-5.2");
    let r = w.run(&["think", "--no-log"], ESCALATION);
    assert_eq!(r.code, 3, "{}", r.stderr);
    assert!(r.stderr.contains("OPENAI_BASE_URL"), "{}", r.stderr);
}

#[test]
fn openai_reasoning_that_uses_every_token_is_no_action_with_the_reason() {
    let mock = MockOpenAi::sequence(vec![mock_openai::Reply::reasoning_only(
        "step one, step two, step three",
    )]);
    let w = openai_world(World::with_redis(), &mock, "qwen3:32b");
    let r = w.run(&["think"], ESCALATION);
    assert_eq!(r.code, 3, "{}", r.stderr);
    let d = r.json();
    assert_eq!(d["action"], "no_action");
    assert_eq!(d["payload"]["error_type"], "protocol_error");
    let reasoning = d["reasoning"].as_str().unwrap_or("");
    assert!(
        reasoning.contains("max_tokens") && reasoning.contains("finish_reason length"),
        "{d}"
    );
    assert_eq!(mock.request_count(), 1, "not retried: it would fail again");
}

/// A model that dispatches escalations and answers anything else with no_action.
fn dispatches(user_text: &str) -> String {
    if user_text.contains("\"escalation\"") {
        decision_text("dispatch_to_fullsend")
    } else {
        json!({"action": "no_action", "reasoning": "nothing to do"}).to_string()
    }
}

fn escalation(content: &str) -> String {
    json!({"type": "escalation", "source": "watcher", "priority": "high", "original_message": {"username": "jake", "content": content}}).to_string()
}

/// Publishes one escalation, runs the listener once, and returns the experiment requests.
fn listen_once(w: &World) -> Vec<Value> {
    let r = w.run(
        &["publish", "fullsend:to_orchestrator"],
        &escalation("Scrape HN Who is Hiring posts"),
    );
    assert_eq!(r.code, 0, "{}", r.stderr);
    let r = w.run(&["listen", "orchestrator", "--once", "--no-ingest"], "");
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert_eq!(r.lines().len(), 1, "{}", r.stdout);
    let mut c = w.conn();
    of_type(&mut c, "fullsend:to_fullsend", "experiment_request")
}

#[test]
fn listen_orchestrator_runs_on_gemini() {
    let mock = MockGemini::start(|req, _| mock_gemini::Reply::Answer {
        text: dispatches(&mock_gemini::user_text(req)),
        thoughts: Some("an idea worth testing".into()),
        usage: mock_gemini::Usage::typical(),
        finish_reason: "STOP".into(),
    });
    let w = gemini_world(World::with_redis(), &mock, "gemini-3.5-flash");
    let requests = listen_once(&w);
    assert_eq!(requests.len(), 1);
    assert_eq!(requests[0]["idea"]["idea"], "Scrape HN Who is Hiring");
    assert_eq!(mock.request_count(), 1);
    let log = read(&w.context().join("decisions.jsonl"));
    assert!(log.contains("\"provider\":\"gemini\"") && log.contains("an idea worth testing"));
}

#[test]
fn listen_orchestrator_runs_on_openai() {
    let mock = MockOpenAi::start(|req, _| mock_openai::Reply::Answer {
        content: dispatches(&mock_openai::text_of_role(req, "user")),
        reasoning: Some("an idea worth testing".into()),
        field: ReasoningField::Reasoning,
        usage: mock_openai::Usage::typical(),
        finish_reason: "stop".into(),
    });
    let w = openai_world(World::with_redis(), &mock, "gpt-oss:20b");
    let requests = listen_once(&w);
    assert_eq!(requests.len(), 1);
    assert_eq!(requests[0]["idea"]["idea"], "Scrape HN Who is Hiring");
    assert_eq!(mock.request_count(), 1);
    let log = read(&w.context().join("decisions.jsonl"));
    assert!(log.contains("\"provider\":\"openai\"") && log.contains("an idea worth testing"));
}

#[test]
fn design_api_engine_runs_on_gemini_and_openai() {
    let gemini = MockGemini::sequence(vec![mock_gemini::Reply::text(spec_reply(
        "exp_20261121_gemini",
    ))]);
    let openai = MockOpenAi::sequence(vec![mock_openai::Reply::text(spec_reply(
        "exp_20261121_openai",
    ))]);
    for (provider, model, id) in [
        ("gemini", "gemini-2.5-pro", "exp_20261121_gemini"),
        ("openai", "gpt-oss:120b", "exp_20261121_openai"),
    ] {
        let w = World::with_redis()
            .set("GEMINI_BASE_URL", &gemini.base_url())
            .set("GEMINI_API_KEY", GEMINI_KEY)
            .set("OPENAI_BASE_URL", &openai.base_url())
            .set("FULLSEND_API_MODEL", model);
        let r = w.run(
            &[
                "design",
                "--engine",
                "api",
                "--provider",
                provider,
                "--idea",
                "x",
                "--dry-run",
            ],
            "",
        );
        assert_eq!(r.code, 0, "{provider}: {}", r.stderr);
        let out = r.json();
        assert_eq!(out["status"], "ready", "{provider}: {out}");
        assert_eq!(out["spec"]["id"], id);
    }
    assert_eq!(gemini.request_count(), 1);
    assert_eq!(openai.request_count(), 1);
    let g = &gemini.requests()[0];
    assert_eq!(
        g.path,
        "/v1beta/models/gemini-2.5-pro:streamGenerateContent?alt=sse"
    );
    assert!(
        g.body.get("systemInstruction").is_none(),
        "design sends no system prompt"
    );
    assert_eq!(mock_gemini::thinking_config(g)["thinkingBudget"], 4000);
    assert_eq!(openai.requests()[0].body["model"], "gpt-oss:120b");
}

#[test]
fn providers_are_named_in_errors_and_keys_stay_out_of_files() {
    let w = World::bare();
    let r = w.run(&["think", "--no-log", "--provider", "nope"], ESCALATION);
    assert_eq!(r.code, 2, "{}", r.stderr);
    assert!(
        r.stderr.contains("gemini") && r.stderr.contains("openai"),
        "{}",
        r.stderr
    );

    let w = World::bare()
        .set("GEMINI_API_KEY", "AIza-very-secret")
        .set("OPENAI_API_KEY", "sk-very-secret");
    let r = w.run(&["config"], "");
    assert_eq!(r.code, 0, "{}", r.stderr);
    let s = &r.json()["settings"];
    assert_eq!(s["gemini_api_key"]["value"], "<set>");
    assert_eq!(s["openai_api_key"]["value"], "<set>");
    assert_eq!(
        s["gemini_base_url"]["value"],
        "https://generativelanguage.googleapis.com"
    );
    assert_eq!(s["openai_base_url"]["value"], "https://api.openai.com");
    assert!(!r.stdout.contains("very-secret"));

    let mut w = World::bare();
    w.no_config = false;
    for key in ["gemini_api_key", "openai_api_key"] {
        std::fs::write(w.path("fullsend.toml"), format!("{key} = \"nope\"\n")).expect("write");
        let r = w.run(&["config"], "");
        assert_eq!(r.code, 2, "{key} is refused in files");
        assert!(r.stderr.contains("secret"), "{}", r.stderr);
    }
    std::fs::write(
        w.path("fullsend.toml"),
        "orchestrator_provider = \"openai\"\nopenai_base_url = \"http://127.0.0.1:11434/v1\"\n",
    )
    .expect("write");
    let s = w.run(&["config"], "").json();
    assert_eq!(s["settings"]["orchestrator_provider"]["value"], "openai");
    assert_eq!(s["settings"]["openai_base_url"]["source"], "file");
}
