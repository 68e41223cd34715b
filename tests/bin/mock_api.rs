//! A standalone Messages-API mock for scripts (demo checks, bench, chaos) and
//! for pointing the real Claude Code CLI at: `mock_api [--latency-ms N]
//! [--replies FILE]`. Prints `MOCK_API_URL=http://127.0.0.1:PORT`, then serves
//! until killed. FILE uses the replay format (`match`, `text`, `thinking`,
//! `usage`); the first record whose `match` is in the prompt answers. A record
//! with `step: N` answers only the request that carries N tool results so far,
//! and one with `tool_use: {name, input}` calls that tool instead of answering
//! text: a scripted agent turn (`scripts/demo` drives the real Claude Code CLI
//! through its skills this way).

#![allow(dead_code, unreachable_pub)]

#[path = "../common/mock_api.rs"]
mod mock_api;
#[path = "../common/mock_http.rs"]
mod mock_http;

use std::io::Write;
use std::time::Duration;

use mock_api::{MockApi, Reply, Usage};

struct Record {
    matches: Option<String>,
    step: Option<usize>,
    tool_use: Option<(String, serde_json::Value)>,
    text: String,
    thinking: Option<String>,
    usage: Usage,
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let value = |flag: &str| {
        args.iter()
            .position(|a| a == flag)
            .and_then(|i| args.get(i + 1))
            .cloned()
    };
    let latency = Duration::from_millis(
        value("--latency-ms")
            .and_then(|v| v.parse().ok())
            .unwrap_or(0),
    );
    let records: Vec<Record> = match value("--replies") {
        Some(path) => std::fs::read_to_string(&path)
            .expect("reading --replies")
            .lines()
            .filter(|l| !l.trim().is_empty() && !l.trim_start().starts_with("//"))
            .map(|l| {
                let v: serde_json::Value = serde_json::from_str(l).expect("a JSON record per line");
                let u = &v["usage"];
                let n = |k: &str| u[k].as_u64().unwrap_or(0);
                Record {
                    matches: v["match"].as_str().map(str::to_string),
                    step: v["step"].as_u64().and_then(|n| usize::try_from(n).ok()),
                    tool_use: v["tool_use"]["name"]
                        .as_str()
                        .map(|n| (n.to_string(), v["tool_use"]["input"].clone())),
                    text: v["text"].as_str().unwrap_or("").to_string(),
                    thinking: v["thinking"].as_str().map(str::to_string),
                    usage: Usage {
                        input_tokens: n("input_tokens").max(1),
                        output_tokens: n("output_tokens").max(1),
                        cache_creation_input_tokens: n("cache_creation_input_tokens"),
                        cache_read_input_tokens: n("cache_read_input_tokens"),
                    },
                }
            })
            .collect(),
        None => vec![Record {
            matches: None,
            step: None,
            tool_use: None,
            text: r#"{"action":"no_action","reasoning":"mock"}"#.into(),
            thinking: None,
            usage: Usage::typical(),
        }],
    };
    let mock = MockApi::start(move |req, _| {
        let prompt = mock_api::user_text(req);
        // How far the conversation is: the tool results it carries.
        let step = req.body["messages"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|m| m["content"].as_array())
            .flatten()
            .filter(|b| b["type"] == "tool_result")
            .count();
        let at_step = |r: &&Record| r.step.is_none_or(|s| s == step);
        let record = records
            .iter()
            .filter(at_step)
            .find(|r| r.matches.as_deref().is_some_and(|m| prompt.contains(m)))
            .or_else(|| records.iter().filter(at_step).find(|r| r.matches.is_none()));
        let reply = match record {
            Some(Record {
                tool_use: Some((name, input)),
                ..
            }) => Reply::ToolUse {
                name: name.clone(),
                input: input.clone(),
            },
            Some(r) => Reply::Message {
                text: r.text.clone(),
                thinking: r.thinking.clone(),
                usage: r.usage,
            },
            None => Reply::error(400, "invalid_request_error", "no recorded reply matches"),
        };
        if latency.is_zero() {
            reply
        } else {
            Reply::Delay(latency, Box::new(reply))
        }
    });
    let mut out = std::io::stdout().lock();
    writeln!(out, "MOCK_API_URL={}", mock.base_url()).expect("stdout");
    out.flush().expect("flush");
    drop(out);
    // With MOCK_API_LOG set, every request (rejected ones too) is appended there as JSON.
    let log = std::env::var("MOCK_API_LOG").ok();
    let mut logged = 0;
    loop {
        std::thread::sleep(Duration::from_millis(100));
        let Some(path) = &log else { continue };
        let requests = mock.requests();
        if let Ok(mut f) = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
        {
            for req in &requests[logged..] {
                let _ = writeln!(
                    f,
                    "{}",
                    serde_json::json!({"method": req.method, "path": req.path, "headers": req.headers, "body": req.body})
                );
            }
        }
        logged = requests.len();
    }
}
