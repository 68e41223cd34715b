//! `listen --metrics ADDR`: `/metrics` in the Prometheus text format, scraped over plain HTTP
//! after a listener handled a design and dead-lettered a bad message.

use std::io::{Read, Write};
use std::time::Duration;

use serde_json::json;

use crate::common::fake_claude::Behavior;
use crate::listen::{Listener, wait_ready};
use crate::support::{World, eventually, of_type};

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

/// GET `path` on 127.0.0.1:`port`: (status line, content type, body).
fn get(port: u16, path: &str) -> Option<(String, String, String)> {
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(10))).ok()?;
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n"
    )
    .ok()?;
    let mut text = String::new();
    s.read_to_string(&mut text).ok()?;
    let (head, body) = text.split_once("\r\n\r\n")?;
    let status = head.lines().next()?.to_string();
    let content_type = head
        .lines()
        .find_map(|l| {
            l.to_ascii_lowercase()
                .strip_prefix("content-type: ")
                .map(str::to_string)
        })
        .unwrap_or_default();
    Some((status, content_type, body.to_string()))
}

#[test]
fn metrics_count_messages_agent_runs_cost_and_read_the_queue() {
    let w = World::with_redis().with_fake_claude(Behavior::Reply(crate::design::spec_reply(
        "exp_20261202_metrics",
    )));
    let port = free_port();
    let addr = format!("127.0.0.1:{port}");
    let l = Listener::start(
        &w,
        &[
            "fullsend",
            "--lease",
            "10",
            "--max-deliveries",
            "1",
            "--metrics",
            &addr,
        ],
        "l.log",
    );
    wait_ready(&w, "fullsend", "fullsend:to_fullsend", 1);
    let publish = |msg: serde_json::Value| {
        let r = w.run(&["publish", "fullsend:to_fullsend"], &msg.to_string());
        assert_eq!(r.code, 0, "{}", r.stderr);
    };
    publish(json!({"type": "experiment_request", "idea": "x", "mode": "single"}));
    publish(json!({"type": "tool_feedback", "feedback": "no tool named"}));
    let mut c = w.conn();
    eventually(Duration::from_secs(30), "the design", || {
        (!of_type(&mut c, "fullsend:to_orchestrator", "experiment_ready").is_empty()).then_some(())
    });
    let body = eventually(Duration::from_secs(30), "a dead letter counted", || {
        let (status, content_type, body) = get(port, "/metrics")?;
        assert!(status.contains("200"), "{status}");
        assert!(content_type.contains("openmetrics-text"), "{content_type}");
        body.contains("fullsend_messages_total{role=\"fullsend\",outcome=\"dead_lettered\"} 1")
            .then_some(body)
    });
    for expected in [
        "fullsend_messages_total{role=\"fullsend\",outcome=\"processed\"} 1",
        "fullsend_agent_runs_total{outcome=\"ok\"} 1",
        "fullsend_cost_usd_total{role=\"fullsend\",model=\"sonnet\"} 0.0123",
        "fullsend_model_tokens_total{role=\"fullsend\",model=\"sonnet\",kind=\"input\"} 1000",
        "fullsend_dead_letters{role=\"fullsend\"} 1",
        "fullsend_stream_pending{role=\"fullsend\"} 0",
        "fullsend_listeners_alive{role=\"fullsend\"} 1",
        "# TYPE fullsend_decision_seconds histogram",
    ] {
        assert!(body.contains(expected), "{expected} missing:\n{body}");
    }
    let (status, _, _) = get(port, "/other").expect("answer");
    assert!(status.contains("404"), "{status}");
    assert_eq!(l.stop(), 0);
}
