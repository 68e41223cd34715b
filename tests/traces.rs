//! Traces over OTLP/HTTP: with `OTEL_EXPORTER_OTLP_ENDPOINT` pointing at an in-process
//! collector, one escalation through both listeners is one trace holding every span it caused
//! (receive, context load, the model call, each effect, the design, the agent call), each span's
//! parent is a span of the same trace, and the agent got the agent span as `TRACEPARENT`.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::{Value, json};

use crate::common::fake_claude::{self, Behavior};
use crate::common::mock_api::{self, MockApi, Reply};
use crate::common::mock_http::{Response, Server, header};
use crate::listen::{Listener, wait_ready};
use crate::support::{World, eventually};

/// One export: path, content type, body.
type Export = (String, String, Vec<u8>);

/// A collector: records every export's path, content type and body.
struct Collector {
    server: Server,
    exports: Arc<Mutex<Vec<Export>>>,
}

impl Collector {
    fn start() -> Collector {
        let exports = Arc::new(Mutex::new(Vec::new()));
        let sink = exports.clone();
        let server = Server::start("otlp collector", move |req| {
            if let Ok(req) = req {
                let content_type = req
                    .headers
                    .iter()
                    .find(|(k, _)| k == "content-type")
                    .map(|(_, v)| v.clone())
                    .unwrap_or_default();
                sink.lock().expect("exports").push((
                    req.path.clone(),
                    content_type,
                    req.body.to_vec(),
                ));
            }
            Response::Full {
                status: 200,
                headers: vec![header("content-type", "application/json")],
                body: b"{}".to_vec(),
            }
        });
        Collector { server, exports }
    }

    /// Every span of every JSON export, with its service's name added as `service`.
    fn spans(&self) -> Vec<Value> {
        let mut out = Vec::new();
        for (path, _, body) in self.exports.lock().expect("exports").iter() {
            assert_eq!(path, "/v1/traces");
            let v: Value = serde_json::from_slice(body).expect("an OTLP/JSON body");
            for rs in v["resourceSpans"].as_array().into_iter().flatten() {
                let service = attribute(&rs["resource"], "service.name");
                for ss in rs["scopeSpans"].as_array().into_iter().flatten() {
                    for span in ss["spans"].as_array().into_iter().flatten() {
                        let mut span = span.clone();
                        span["service"] = service.clone();
                        out.push(span);
                    }
                }
            }
        }
        out
    }
}

/// An attribute's value (string or int) from an OTLP/JSON object with `attributes`.
fn attribute(holder: &Value, key: &str) -> Value {
    holder["attributes"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|a| a["key"] == key)
        .map(|a| {
            let v = &a["value"];
            if let Some(s) = v["stringValue"].as_str() {
                json!(s)
            } else if let Some(i) = v["intValue"].as_str() {
                json!(i.parse::<i64>().unwrap_or_default())
            } else {
                v["intValue"].clone()
            }
        })
        .unwrap_or(Value::Null)
}

fn world(collector: &Collector, protocol: &str) -> World {
    World::with_redis()
        .mock(MockApi::start(|r, _| {
            if mock_api::user_text(r).contains("\"escalation\"") {
                Reply::text(
                    json!({"action": "dispatch_to_fullsend", "reasoning": "worth a test",
                           "payload": {"idea": "Email founders from HN Who is Hiring"}})
                    .to_string(),
                )
            } else {
                Reply::text(json!({"action": "no_action", "reasoning": "noted"}).to_string())
            }
        }))
        .with_fake_claude(Behavior::Reply(crate::design::spec_reply(
            "exp_20261203_traced",
        )))
        .set("FULLSEND_DESIGN_MODE", "single")
        .set("OTEL_EXPORTER_OTLP_ENDPOINT", &collector.server.base_url())
        .set("OTEL_EXPORTER_OTLP_PROTOCOL", protocol)
        .set("OTEL_BSP_SCHEDULE_DELAY", "100")
}

/// Runs one escalation through both listeners, stops them (which flushes their spans), and
/// returns the escalation's trace id.
fn one_escalation(w: &World) -> String {
    let orchestrator = Listener::start(w, &["orchestrator", "--lease", "10"], "o.log");
    let designer = Listener::start(w, &["fullsend", "--lease", "10"], "f.log");
    wait_ready(w, "orchestrator", "fullsend:to_orchestrator", 1);
    wait_ready(w, "fullsend", "fullsend:to_fullsend", 1);
    let escalation = json!({"type": "escalation", "source": "watcher",
        "original_message": {"username": "jake", "content": "HN hiring posts?"}});
    let r = w.run(
        &["publish", "fullsend:to_orchestrator"],
        &escalation.to_string(),
    );
    assert_eq!(r.code, 0, "{}", r.stderr);
    let trace = eventually(Duration::from_secs(60), "experiment_ready decided", || {
        let lines = orchestrator.lines();
        lines
            .iter()
            .any(|l| l["type"] == "experiment_ready")
            .then(|| {
                lines
                    .iter()
                    .find(|l| l["type"] == "escalation")
                    .expect("the escalation")["trace_id"]
                    .as_str()
                    .expect("trace_id")
                    .to_string()
            })
    });
    for line in orchestrator.lines().iter().chain(designer.lines().iter()) {
        assert_eq!(
            line["trace_id"], trace,
            "every line of the loop is in the trace: {line}"
        );
    }
    assert_eq!(orchestrator.stop(), 0);
    assert_eq!(designer.stop(), 0);
    trace
}

#[test]
fn one_escalation_is_one_trace_through_both_services_and_into_the_agent() {
    let collector = Collector::start();
    let w = world(&collector, "http/json");
    let trace = one_escalation(&w);
    let spans = eventually(Duration::from_secs(10), "the spans exported", || {
        let s = collector.spans();
        s.iter()
            .any(|s| s["name"] == "invoke_agent claude-code")
            .then_some(s)
    });
    let ids: std::collections::BTreeSet<&str> =
        spans.iter().filter_map(|s| s["traceId"].as_str()).collect();
    assert_eq!(
        ids.into_iter().collect::<Vec<_>>(),
        vec![trace.as_str()],
        "one trace"
    );
    let named = |service: &str, name: &str| -> Vec<&Value> {
        spans
            .iter()
            .filter(|s| s["service"] == service && s["name"] == name)
            .collect()
    };
    let o = "fullsend-orchestrator";
    let f = "fullsend-fullsend";
    // The escalation, then fullsend_started and experiment_ready, each received.
    assert!(
        named(o, "process fullsend:to_orchestrator").len() >= 2,
        "{spans:#?}"
    );
    assert!(!named(o, "context.load").is_empty());
    let chat = named(o, "chat claude-opus-5-5");
    assert!(!chat.is_empty(), "{spans:#?}");
    assert_eq!(attribute(chat[0], "gen_ai.operation.name"), "chat");
    assert_eq!(attribute(chat[0], "gen_ai.provider.name"), "anthropic");
    assert_eq!(
        attribute(chat[0], "gen_ai.request.model"),
        "claude-opus-5-5"
    );
    assert_eq!(attribute(chat[0], "gen_ai.usage.input_tokens"), 1000);
    assert_eq!(chat[0]["kind"], 3, "a client span");
    assert!(!named(o, "dispatch").is_empty());
    assert!(
        !named(o, "effect publish").is_empty(),
        "the experiment_request's effect: {spans:#?}"
    );
    let received = named(f, "process fullsend:to_fullsend");
    assert_eq!(received.len(), 1);
    assert_eq!(
        attribute(received[0], "fullsend.message.type"),
        "experiment_request"
    );
    let design = named(f, "design");
    assert_eq!(design.len(), 1);
    let agent = named(f, "invoke_agent claude-code");
    assert_eq!(agent.len(), 1);
    assert_eq!(attribute(agent[0], "gen_ai.operation.name"), "invoke_agent");
    // The tree: every parent is a span of this trace; the agent under the design under the
    // request's receipt, which is under the Orchestrator's handling of the escalation.
    let by_id: std::collections::HashMap<&str, &Value> = spans
        .iter()
        .filter_map(|s| s["spanId"].as_str().map(|id| (id, s)))
        .collect();
    for s in &spans {
        if let Some(parent) = s["parentSpanId"].as_str().filter(|p| !p.is_empty()) {
            assert!(
                by_id.contains_key(parent),
                "{} has a parent that was not exported",
                s["name"]
            );
        }
    }
    let parent_of =
        |s: &Value| -> Value { by_id[s["parentSpanId"].as_str().expect("a parent")].clone() };
    assert_eq!(parent_of(agent[0])["name"], "design");
    assert_eq!(parent_of(design[0])["name"], "process fullsend:to_fullsend");
    let cause = parent_of(received[0]);
    assert_eq!(cause["service"], o);
    assert_eq!(attribute(&cause, "fullsend.message.type"), "escalation");
    // Claude Code was given the agent span as its parent.
    let agent_span = agent[0]["spanId"].as_str().expect("span id");
    let env = fake_claude::env_log(&w.path("fake")).join("\n");
    assert!(
        env.contains(&format!("TRACEPARENT=00-{trace}-{agent_span}-01")),
        "{env}"
    );
}

#[test]
fn http_protobuf_exports_carry_the_trace() {
    let collector = Collector::start();
    let w = world(&collector, "http/protobuf");
    let trace = one_escalation(&w);
    let exports = eventually(Duration::from_secs(10), "an export", || {
        let e = collector.exports.lock().expect("exports").clone();
        (!e.is_empty()).then_some(e)
    });
    let trace_bytes: Vec<u8> = (0..16)
        .map(|i| u8::from_str_radix(&trace[2 * i..2 * i + 2], 16).expect("hex"))
        .collect();
    for (path, content_type, body) in &exports {
        assert_eq!(path, "/v1/traces");
        assert_eq!(content_type, "application/x-protobuf");
        assert!(
            body.windows(16).any(|w| w == trace_bytes.as_slice()),
            "the trace id is in the protobuf body"
        );
    }
}

#[test]
fn the_real_claude_codes_own_spans_nest_under_the_agent_span() {
    let Some(claude) = crate::real_claude::real_claude() else {
        return;
    };
    let collector = Collector::start();
    let w = crate::real_claude::world(&claude, "hello from the mock".into())
        .set("OTEL_EXPORTER_OTLP_ENDPOINT", &collector.server.base_url())
        .set("OTEL_EXPORTER_OTLP_PROTOCOL", "http/json")
        .set("OTEL_BSP_SCHEDULE_DELAY", "100");
    let r = w.run(&["ralph", "spawn", "--", "say hello"], "");
    assert_eq!(r.code, 0, "{}\n{}", r.stdout, r.stderr);
    let spans = eventually(Duration::from_secs(20), "Claude Code's spans", || {
        let s = collector.spans();
        (s.iter().any(|s| s["service"] == "claude-code")
            && s.iter().any(|s| s["name"] == "invoke_agent claude-code"))
        .then_some(s)
    });
    let agent = spans
        .iter()
        .find(|s| s["name"] == "invoke_agent claude-code")
        .expect("the agent span");
    let theirs: Vec<&Value> = spans
        .iter()
        .filter(|s| s["service"] == "claude-code")
        .collect();
    for s in &theirs {
        assert_eq!(
            s["traceId"], agent["traceId"],
            "Claude Code's {} joins the trace",
            s["name"]
        );
    }
    assert!(
        theirs.iter().any(|s| s["parentSpanId"] == agent["spanId"]),
        "one of Claude Code's spans is a child of the agent span: {theirs:#?}"
    );
}

#[test]
fn a_command_started_with_a_traceparent_joins_that_trace() {
    // As a `listen --exec` stage is started: `fullsend think` with the message's TRACEPARENT.
    let collector = Collector::start();
    let parent = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
    let w = World::bare()
        .mock(MockApi::sequence(vec![Reply::text(
            json!({"action": "no_action", "reasoning": "noted"}).to_string(),
        )]))
        .set("OTEL_EXPORTER_OTLP_ENDPOINT", &collector.server.base_url())
        .set("OTEL_EXPORTER_OTLP_PROTOCOL", "http/json")
        .set("TRACEPARENT", parent);
    let r = w.run(
        &["think", "--no-log"],
        &json!({"type": "escalation", "content": "x"}).to_string(),
    );
    assert_eq!(r.code, 0, "{}", r.stderr);
    // Flushed before the command exits: no waiting for a batch.
    let spans = collector.spans();
    let root = spans
        .iter()
        .find(|s| s["name"] == "fullsend-think")
        .unwrap_or_else(|| panic!("{spans:#?}"));
    assert_eq!(root["traceId"], "4bf92f3577b34da6a3ce929d0e0e4736");
    assert_eq!(root["parentSpanId"], "00f067aa0ba902b7");
    let chat = spans
        .iter()
        .find(|s| s["name"] == "chat claude-opus-5-5")
        .expect("the model call");
    assert_eq!(chat["parentSpanId"], root["spanId"]);
}
