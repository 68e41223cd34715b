//! The write skills. A tactical learning is committed to Redis at once, under a seen marker
//! made of the run and the caller's idempotency key, so a repeated call writes nothing new.
//! A tool request and the spec are validated and staged as files in the run's private state
//! (`.fullsend/submitted/`, which the agent's own file tools cannot touch); the designer
//! commits them with the rest of the design, once.

use std::collections::BTreeMap;
use std::io::Write as _;
use std::path::{Path, PathBuf};

use serde_json::{Map, Value, json};

use super::{Scope, ToolError, required_text};
use crate::bus::effects::{self, CommitStatus};
use crate::bus::store::Conn;

/// The longest learning, in characters.
const MAX_LEARNING_CHARS: usize = 1000;
/// The longest spec, in characters.
const MAX_SPEC_CHARS: usize = 256 * 1024;

/// The idempotency key of a write: a safe id.
fn idempotency_key(args: &Map<String, Value>) -> Result<&str, ToolError> {
    let key = required_text(args, "idempotency_key", 128)?;
    if !crate::support::msg::is_safe_id(key) {
        return Err(ToolError::Refused(
            "idempotency_key may hold letters, digits, `_`, `-`, `.` and `:` only".into(),
        ));
    }
    Ok(key)
}

/// Up to five short tags, lower-cased.
fn tags(args: &Map<String, Value>) -> Result<Vec<String>, ToolError> {
    let Some(list) = args.get("tags") else {
        return Ok(Vec::new());
    };
    let Some(list) = list.as_array() else {
        return Err(ToolError::Refused("`tags` is a list of strings".into()));
    };
    let mut out = Vec::new();
    for tag in list.iter().take(5) {
        let tag = tag.as_str().unwrap_or_default().trim().to_ascii_lowercase();
        let ok = !tag.is_empty()
            && tag.len() <= 40
            && tag
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-'));
        if !ok {
            return Err(ToolError::Refused(
                "a tag is 1-40 letters, digits, `_` or `-`".into(),
            ));
        }
        out.push(tag);
    }
    Ok(out)
}

/// `append_learning`: one `learnings:tactical:*` hash and its index entry, once per key.
pub(super) async fn append_learning(
    conn: &mut Conn,
    scope: &Scope,
    args: &Map<String, Value>,
) -> Result<Value, ToolError> {
    let text = required_text(args, "text", MAX_LEARNING_CHARS)?;
    let key = idempotency_key(args)?;
    let tags = tags(args)?;
    let mut extra = BTreeMap::from([
        ("request_id".to_string(), scope.request_id.clone()),
        ("run_id".to_string(), scope.run_id.clone()),
    ]);
    if !tags.is_empty() {
        extra.insert("tags".into(), tags.join(","));
    }
    let planned = crate::context::learn::tactical_effects_with(
        text,
        scope.experiment_id.as_deref(),
        "fullsend_agent",
        extra,
    );
    let seen = format!("fullsend:skills:seen:{}:{key}", scope.run_id);
    let commit = effects::commit(conn, &planned, Some(&seen), None)
        .await
        .map_err(|e| ToolError::Failed(format!("the learning was not recorded: {e:#}")))?;
    match commit.status {
        CommitStatus::Ok => Ok(json!({
            "recorded": true,
            "key": planned.iter().find_map(|e| match e {
                effects::Effect::HashSet { key, .. } => Some(key.clone()),
                _ => None,
            }),
            "request_id": scope.request_id,
            "experiment_id": scope.experiment_id,
        })),
        CommitStatus::Duplicate => Ok(json!({
            "recorded": false,
            "duplicate": true,
            "note": "a learning with this idempotency_key was already recorded",
        })),
        other => Err(ToolError::Failed(format!(
            "the learning was not recorded: {other:?}"
        ))),
    }
}

/// `request_tool`: a validated tool request, staged for the design's commit.
pub(super) fn request_tool(scope: &Scope, args: &Map<String, Value>) -> Result<Value, ToolError> {
    let key = idempotency_key(args)?;
    let mut request = Map::new();
    request.insert("name".into(), json!(required_text(args, "name", 64)?));
    request.insert(
        "description".into(),
        json!(required_text(args, "description", 4000)?),
    );
    for field in ["inputs", "outputs"] {
        if let Some(v) = args.get(field).filter(|v| !v.is_null()) {
            if v.to_string().len() > 8000 {
                return Err(ToolError::Refused(format!("`{field}` is too large")));
            }
            request.insert(field.into(), v.clone());
        }
    }
    let violations = crate::designer::spec::validate_tool_request(&request);
    if !violations.is_empty() {
        return Err(ToolError::Refused(violation_lines(&violations)));
    }
    request.insert("requested_by".into(), json!("fullsend_agent"));
    request.insert("request_id".into(), json!(scope.request_id));
    request.insert("idempotency_key".into(), json!(key));
    let yaml = serde_yaml_ng::to_string(&json!({ "tool_request": request }))
        .map_err(|e| ToolError::Failed(format!("the request cannot be written: {e}")))?;
    // A design carries one tool request: a later one replaces the earlier, and says so.
    let earlier = staged_tool_name(&scope.work_dir)
        .filter(|n| Some(n.as_str()) != request.get("name").and_then(Value::as_str));
    stage(&scope.work_dir, super::wiring::TOOL_REQUEST_FILE, &yaml)?;
    let mut answer = json!({
        "staged": true,
        "tool": request.get("name"),
        "note": "the Builder is asked for it when the design is saved (one tool request per design: a later request replaces this one)",
    });
    if let Some(name) = earlier {
        answer["replaced"] = json!(name);
    }
    Ok(answer)
}

/// `submit_spec`: validated like `design --parse`; valid specs are staged, invalid ones come
/// back with every violation.
pub(super) fn submit_spec(scope: &Scope, args: &Map<String, Value>) -> Result<Value, ToolError> {
    let text = required_text(args, "spec_yaml", MAX_SPEC_CHARS)?;
    let key = idempotency_key(args)?;
    match crate::designer::design::check(text) {
        Ok((spec, tool)) => {
            stage(&scope.work_dir, super::wiring::SPEC_FILE, text)?;
            Ok(json!({
                "accepted": true,
                "experiment_id": spec.get("id"),
                "needs_tool": tool.and_then(|t| t.get("name").cloned()),
                "idempotency_key": key,
                "note": "valid; it is saved when the run ends (a later valid submission replaces it)",
            }))
        }
        Err(problems) => Err(ToolError::Refused(format!(
            "the spec is not valid yet; fix every point and submit again:\n{}",
            problems.summary()
        ))),
    }
}

fn violation_lines(violations: &[crate::designer::spec::Violation]) -> String {
    violations
        .iter()
        .map(|v| format!("- {} ({}): {}", v.rule, v.field, v.message))
        .collect::<Vec<_>>()
        .join("\n")
}

/// Writes `name` in the run's staging dir, whole or not at all (temp file, fsync, rename).
/// The name of the tool request staged so far, if any.
fn staged_tool_name(work_dir: &Path) -> Option<String> {
    let path = super::wiring::submitted_dir(work_dir).join(super::wiring::TOOL_REQUEST_FILE);
    let text = std::fs::read_to_string(path).ok()?;
    let v: Value = serde_yaml_ng::from_str(&text).ok()?;
    v["tool_request"]["name"].as_str().map(str::to_string)
}

fn stage(work_dir: &Path, name: &str, content: &str) -> Result<PathBuf, ToolError> {
    let failed = |e: std::io::Error| ToolError::Failed(format!("staging {name} failed: {e}"));
    let dir = super::wiring::submitted_dir(work_dir);
    for d in [work_dir.join(".fullsend"), dir.clone()] {
        crate::support::files::private_dir(&d, true)
            .map_err(|e| ToolError::Failed(format!("staging {name} failed: {e:#}")))?;
    }
    let mut tmp = tempfile::NamedTempFile::new_in(&dir).map_err(failed)?;
    tmp.write_all(content.as_bytes()).map_err(failed)?;
    tmp.as_file().sync_all().map_err(failed)?;
    let path = dir.join(name);
    tmp.persist(&path).map_err(|e| failed(e.error))?;
    Ok(path)
}
