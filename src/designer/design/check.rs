//! Judging what the designer produced: the spec extracted, normalised and validated, the
//! problems a repair round is told about, and the tactical learnings it wrote down.

use serde_json::{Map, Value, json};

use super::{Checked, Designed};

/// Why an output is not a valid spec.
#[derive(Debug, Clone)]
pub struct Problems {
    /// Rule violations (empty when extraction itself failed).
    pub violations: Vec<crate::designer::spec::Violation>,
    /// Extraction error.
    pub error: Option<String>,
}
impl Problems {
    /// One line per problem.
    pub fn summary(&self) -> String {
        let mut lines: Vec<String> = self
            .violations
            .iter()
            .map(|v| format!("- {} ({}): {}", v.rule, v.field, v.message))
            .collect();
        if let Some(e) = &self.error {
            lines.insert(0, format!("- {e}"));
        }
        lines.join("\n")
    }
}
/// Extracts, normalises and validates a spec (and its tool request) from model output.
pub fn check(text: &str) -> Result<Checked, Problems> {
    let extracted = crate::designer::spec::extract(text).map_err(|e| Problems {
        violations: Vec::new(),
        error: Some(e),
    })?;
    let mut spec = extracted.experiment;
    crate::designer::spec::normalize(&mut spec);
    let mut violations = crate::designer::spec::validate(&spec);
    if let Some(tool) = &extracted.tool_request {
        violations.extend(crate::designer::spec::validate_tool_request(tool));
    }
    if violations.is_empty() {
        Ok((spec, extracted.tool_request))
    } else {
        Err(Problems {
            violations,
            error: None,
        })
    }
}
pub(super) fn finish(
    mut designed: Designed,
    mut spec: Map<String, Value>,
    tool: Option<Map<String, Value>>,
    output: &str,
) -> Designed {
    // Learnings gathered earlier in the run (a RALPH loop's verdicts) are kept.
    for learning in tactical_learnings(output) {
        if !designed.learnings.contains(&learning) {
            designed.learnings.push(learning);
        }
    }
    spec.entry("created_at")
        .or_insert_with(|| json!(crate::support::msg::now_iso_seconds()));
    designed.status = "ready";
    designed.spec = Some(spec);
    designed.tool_request = tool;
    designed.violations.clear();
    designed
}
/// Tactical learnings the designer wrote alongside the spec: a
/// `tactical_learnings:` list (of text, or of `{text}`/`{learning}` maps) in any
/// YAML block. At most ten, each at most 1,000 characters.
pub fn tactical_learnings(output: &str) -> Vec<String> {
    let mut docs: Vec<String> = crate::llm::extract::fenced_blocks(output)
        .into_iter()
        .map(|(_, body)| body)
        .collect();
    docs.push(output.to_string());
    let mut out: Vec<String> = Vec::new();
    for doc in docs {
        let Ok(Value::Object(map)) = serde_yaml_ng::from_str::<Value>(&doc) else {
            continue;
        };
        let Some(Value::Array(items)) = map.get("tactical_learnings") else {
            continue;
        };
        for item in items {
            let text = match item {
                Value::String(s) => s.clone(),
                Value::Object(o) => o
                    .get("text")
                    .or_else(|| o.get("learning"))
                    .and_then(Value::as_str)
                    .unwrap_or("")
                    .to_string(),
                _ => String::new(),
            };
            let text = text.trim().chars().take(1000).collect::<String>();
            if !text.is_empty() && !out.contains(&text) && out.len() < 10 {
                out.push(text);
            }
        }
    }
    out
}
pub(super) fn sanitize(text: &str) -> String {
    text.chars()
        .filter(|c| c.is_ascii_alphanumeric() || *c == '_' || *c == '-')
        .take(40)
        .collect()
}
