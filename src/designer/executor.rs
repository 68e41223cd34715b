//! What the Executor reports (`fullsend:experiment_results`), turned into the messages the
//! Orchestrator and the Builder expect: success, an error, a missing API key, or a missing tool
//! (the experiment waits for it and the Builder is asked for it, once).

use serde_json::{Map, Value, json};

use crate::bus::effects::{self, Effect, publish};
use crate::bus::runner::Job;

fn obj(v: Value) -> Map<String, Value> {
    match v {
        Value::Object(m) => m,
        _ => Map::new(),
    }
}

/// What the Executor reported (`fullsend:experiment_results`), turned into
/// the messages the Orchestrator and Builder expect (docs/system-contract.md §3, §8).
pub fn executor_result(
    job: &Job,
    channels: &crate::support::config::Channels,
) -> (Vec<Effect>, Value) {
    let msg = &job.message;
    let text = |k: &str| {
        msg.get(k)
            .map(|v| {
                v.as_str()
                    .map(str::to_string)
                    .unwrap_or_else(|| v.to_string())
            })
            .unwrap_or_default()
    };
    let exp = text("experiment_id");
    let to_orchestrator = |body: Value| publish(&channels.to_orchestrator, obj(body), msg);
    if msg.get("type").and_then(Value::as_str) == Some("experiment_completed") {
        let effect = to_orchestrator(
            json!({"type": "experiment_success", "source": "fullsend_listener", "experiment_id": exp, "run_id": text("run_id"), "duration": msg.get("duration")}),
        );
        return (
            vec![effect],
            json!({"experiment_id": exp, "reported": "experiment_success"}),
        );
    }
    let error = text("error");
    if let Some(tool) = missing_tool(&error)
        .filter(|t| crate::support::msg::valid_key_id(t))
        .filter(|_| crate::support::msg::valid_key_id(&exp))
    {
        // Wait for the tool, and ask the Builder for it (once per experiment and tool).
        let request_id = format!("auto_{exp}_{tool}");
        let mut prd = obj(json!({
            "prd": {"tool_name": tool, "description": format!("Tool required by experiment {exp}"), "auto_requested": true},
            "requested_by": "fullsend_listener",
            "request_id": request_id,
            "priority": "high",
        }));
        prd.insert("msg_id".into(), json!(request_id));
        let effects = vec![
            Effect::SetAdd {
                key: format!("pending_experiments:{tool}"),
                members: vec![exp.clone()],
            },
            // Back to draft: it waits for its tool, and only a draft is released by tool_built.
            Effect::HashSet {
                key: format!("experiments:{exp}"),
                fields: [("state", "draft"), ("status", "draft")]
                    .iter()
                    .map(|(k, v)| ((*k).to_string(), (*v).to_string()))
                    .collect(),
                guard: effects::Guard::MustExist,
            },
            publish(&channels.builder_tasks, prd, msg),
        ];
        return (
            effects,
            json!({"experiment_id": exp, "missing_tool": tool, "requested": request_id}),
        );
    }
    let effect = if is_auth_error(&error) {
        to_orchestrator(
            json!({"type": "api_key_required", "source": "fullsend_listener", "experiment_id": exp, "error": error, "suggestion": "Please set the required API key in .env"}),
        )
    } else if error.contains("ToolNotFound")
        || error.to_ascii_lowercase().contains("not found") && error.contains("Tool")
    {
        to_orchestrator(
            json!({"type": "experiment_error", "source": "fullsend_listener", "experiment_id": exp, "error": error, "error_type": text("error_type"), "note": "Could not auto-request tool build"}),
        )
    } else {
        to_orchestrator(
            json!({"type": "experiment_error", "source": "fullsend_listener", "experiment_id": exp, "run_id": text("run_id"), "error": error, "error_type": text("error_type")}),
        )
    };
    (
        vec![effect],
        json!({"experiment_id": exp, "reported": "experiment_error"}),
    )
}

/// The tool an Executor error says is missing: `Tool not found: x (…)` (the
/// Executor's real text) or `Tool 'x' not found`.
fn missing_tool(error: &str) -> Option<String> {
    let word = |rest: &str| -> Option<String> {
        let name: String = rest
            .chars()
            .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
            .collect();
        (!name.is_empty()).then_some(name)
    };
    if let Some(i) = error.find("Tool not found: ") {
        return word(&error[i + "Tool not found: ".len()..]);
    }
    if let Some(i) = error.find("Tool '") {
        let rest = &error[i + "Tool '".len()..];
        if let Some(end) = rest.find('\'')
            && rest[end..].starts_with("' not found")
        {
            return word(&rest[..end]);
        }
    }
    None
}

/// `401` or `Unauthorized` as a token, not a substring ("capital" is no "api").
fn is_auth_error(error: &str) -> bool {
    error
        .split(|c: char| !c.is_ascii_alphanumeric())
        .any(|t| t == "401" || t.eq_ignore_ascii_case("unauthorized"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn executor_error_texts() {
        assert_eq!(
            missing_tool("Tool not found: hn_scraper (looked in /app/tools)").as_deref(),
            Some("hn_scraper")
        );
        assert_eq!(
            missing_tool("ToolNotFoundError: Tool 'gh_stars' not found").as_deref(),
            Some("gh_stars")
        );
        assert_eq!(missing_tool("ToolNotFoundError"), None);
        assert!(is_auth_error("HTTP 401 from resend"));
        assert!(is_auth_error("401 Unauthorized"));
        assert!(!is_auth_error("capital 4010 api"));
    }
}
