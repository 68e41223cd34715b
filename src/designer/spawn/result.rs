//! Reading a finished call: the CLI's JSON result object (cost, turns, session, errors) found in
//! its stdout, filled into a [`SpawnResult`] with a short tail of what went wrong.

use std::time::Duration;

use serde_json::Value;

use super::{Agent, SpawnOptions, SpawnResult};

/// How many characters of stderr (or stdout) end up in `SpawnResult::error`.
const ERROR_TAIL_CHARS: usize = 1000;
/// The last `n` characters of `s`, trimmed.
fn tail(s: &str, n: usize) -> String {
    let s = s.trim();
    let count = s.chars().count();
    if count <= n {
        s.to_owned()
    } else {
        s.chars().skip(count - n).collect()
    }
}
/// "300s" for whole seconds, else milliseconds.
fn fmt_duration(d: Duration) -> String {
    if d.subsec_nanos() == 0 {
        format!("{}s", d.as_secs())
    } else {
        format!("{}ms", d.as_millis())
    }
}
/// Finds the Claude result object in stdout: one object; an array (`--verbose`) → its `type=="result"`
/// element; NDJSON → the last `type=="result"` line. Non-JSON noise lines are skipped.
pub fn parse_result_object(stdout: &str) -> Option<Value> {
    let is_result = |v: &Value| v.get("type").and_then(Value::as_str) == Some("result");
    let text = stdout.trim();
    if text.is_empty() {
        return None;
    }
    if let Ok(v) = serde_json::from_str::<Value>(text) {
        match v {
            Value::Array(items) => return items.into_iter().rev().find(is_result),
            // A single object without a type is accepted: compatible fakes and older CLIs omit it.
            Value::Object(ref m) if is_result(&v) || !m.contains_key("type") => return Some(v),
            _ => return None,
        }
    }
    text.lines()
        .rev()
        .filter_map(|l| serde_json::from_str::<Value>(l.trim()).ok())
        .find(is_result)
}
/// The cost of a call that printed no result line: each assistant message's `usage` (once per
/// message id: the CLI repeats it on every content block of the message) priced at its model's
/// rates, and the summed usage. `(0, None)` when nothing was printed or no price is known.
pub(super) fn cost_of_unfinished(stdout: &str, asked: Option<&str>) -> (f64, Option<Value>) {
    let mut by_message: std::collections::BTreeMap<String, (String, crate::llm::Usage)> =
        Default::default();
    for (n, line) in stdout.lines().enumerate() {
        let Ok(v) = serde_json::from_str::<Value>(line.trim()) else {
            continue;
        };
        if v.get("type").and_then(Value::as_str) != Some("assistant") {
            continue;
        }
        let Some(usage) = v
            .pointer("/message/usage")
            .and_then(|u| serde_json::from_value::<crate::llm::Usage>(u.clone()).ok())
        else {
            continue;
        };
        let model = v
            .pointer("/message/model")
            .and_then(Value::as_str)
            .or(asked)
            .unwrap_or_default()
            .to_string();
        let id = v
            .pointer("/message/id")
            .and_then(Value::as_str)
            .map_or_else(|| format!("line-{n}"), str::to_string);
        by_message.insert(id, (model, usage));
    }
    if by_message.is_empty() {
        return (0.0, None);
    }
    let mut total = crate::llm::Usage::default();
    let mut usd = 0.0;
    for (model, u) in by_message.values() {
        usd += crate::llm::price::cost(model, u).unwrap_or(0.0);
        total.input_tokens += u.input_tokens;
        total.output_tokens += u.output_tokens;
        total.cache_creation_input_tokens += u.cache_creation_input_tokens;
        total.cache_read_input_tokens += u.cache_read_input_tokens;
    }
    (usd, serde_json::to_value(total).ok())
}

/// Fills the parsed fields, `ok` and `error` from the captured output.
pub(super) fn fill_result(r: &mut SpawnResult, opts: &SpawnOptions, stdout: &str, stderr: &str) {
    let mut found = true;
    let mut agent_errors = String::new();
    match opts.agent {
        Agent::Raw(_) => r.result = stdout.trim_end().to_owned(),
        Agent::Claude(_) => match parse_result_object(stdout) {
            Some(obj) => {
                r.result_found = true;
                r.subtype = obj
                    .get("subtype")
                    .and_then(Value::as_str)
                    .map(str::to_owned);
                r.structured_output = obj
                    .get("structured_output")
                    .filter(|v| !v.is_null())
                    .cloned();
                r.is_error = obj
                    .get("is_error")
                    .and_then(Value::as_bool)
                    .unwrap_or(false);
                r.result = obj
                    .get("result")
                    .and_then(Value::as_str)
                    .unwrap_or_default()
                    .to_owned();
                if let Some(id) = obj.get("session_id").and_then(Value::as_str) {
                    r.session_id = Some(id.to_owned());
                }
                r.num_turns = obj.get("num_turns").and_then(Value::as_u64);
                r.total_cost_usd = obj
                    .get("total_cost_usd")
                    .and_then(Value::as_f64)
                    .unwrap_or(0.0);
                r.api_error_status = obj
                    .get("api_error_status")
                    .and_then(Value::as_u64)
                    .and_then(|s| u16::try_from(s).ok());
                r.permission_denials = obj
                    .get("permission_denials")
                    .and_then(Value::as_array)
                    .map_or(0, Vec::len);
                r.usage = obj.get("usage").filter(|u| !u.is_null()).cloned();
                if let Some(errs) = obj.get("errors").and_then(Value::as_array) {
                    agent_errors = errs
                        .iter()
                        .filter_map(Value::as_str)
                        .collect::<Vec<_>>()
                        .join("; ");
                }
            }
            None => {
                found = false;
                // Killed before its result line (a timeout, a stall, too much output): what
                // the model was paid for is still in the assistant events it printed.
                let (usd, usage) = cost_of_unfinished(stdout, opts.model.as_deref());
                r.total_cost_usd = usd;
                r.cost_estimated = usd > 0.0;
                if usage.is_some() {
                    r.usage = usage;
                }
            }
        },
    }
    // Where an error explanation lives: stderr normally, the result text for API errors, else stdout.
    let detail = || {
        if !stderr.trim().is_empty() {
            tail(stderr, ERROR_TAIL_CHARS)
        } else if !r.result.trim().is_empty() {
            tail(&r.result, ERROR_TAIL_CHARS)
        } else if !agent_errors.is_empty() {
            tail(&agent_errors, ERROR_TAIL_CHARS)
        } else {
            tail(stdout, ERROR_TAIL_CHARS)
        }
    };
    // The subtype names the limit that ended a run (`error_max_turns`, `error_max_budget_usd`).
    let subtype = r
        .subtype
        .as_deref()
        .filter(|s| *s != "success")
        .map(|s| format!(" ({s})"))
        .unwrap_or_default();
    let error = if r.cancelled {
        Some("cancelled".to_owned())
    } else if r.timed_out {
        Some(format!("timed out after {}", fmt_duration(opts.timeout)))
    } else if r.stalled {
        Some(format!(
            "the agent printed nothing for {} and was stopped as hung",
            fmt_duration(opts.stall_timeout)
        ))
    } else if let Some(sig) = r.signal {
        Some(format!("killed by signal {sig}: {}", detail()))
    } else if r.exit_code != Some(0) {
        let code = r
            .exit_code
            .map_or_else(|| "?".to_owned(), |c| c.to_string());
        Some(format!("exit {code}{subtype}: {}", detail()))
    } else if let Some(mcp) = opts.mcp.as_ref().filter(|m| {
        r.mcp_failed
            .iter()
            .any(|f| f.split(':').next() == Some(m.name.as_str()))
    }) {
        Some(format!(
            "the {} MCP server did not connect ({}); the agent ran without its skills",
            mcp.name,
            r.mcp_failed.join(", ")
        ))
    } else if r.is_error {
        let status = r
            .api_error_status
            .map(|s| format!(" (API status {s})"))
            .unwrap_or_default();
        let text = if r.result.trim().is_empty() {
            agent_errors.clone()
        } else {
            tail(&r.result, ERROR_TAIL_CHARS)
        };
        Some(format!("agent reported an error{status}{subtype}: {text}"))
    } else if !subtype.is_empty() {
        Some(format!("the agent's run ended{subtype}"))
    } else if !found {
        Some("no result object in output".to_owned())
    } else {
        None
    };
    r.ok = error.is_none();
    r.error = error;
}
