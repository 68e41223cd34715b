//! The structured verdict each RALPH task call is asked for (`--json-schema`): whether the
//! task is done, and what the call found on the way (learnings, the spec file's name).

use crate::designer::spawn::SpawnResult;

/// The structured verdict of a task call says the task is done.
pub(super) fn verdict_says_done(r: &SpawnResult) -> bool {
    r.ok && r
        .structured_output
        .as_ref()
        .and_then(|v| v.get("task_done"))
        .and_then(serde_json::Value::as_bool)
        .unwrap_or(false)
}

/// What the confirmed verdicts of a run reported.
#[derive(Debug, Default)]
pub(super) struct Verdicts {
    /// Tactical learnings, in order, each once.
    pub(super) learnings: Vec<String>,
    /// The spec file the last confirmed verdict named.
    pub(super) spec_path: Option<String>,
}

impl Verdicts {
    /// Keeps what a confirmed verdict reported.
    pub(super) fn keep(&mut self, r: &SpawnResult) {
        let Some(verdict) = r.structured_output.as_ref() else {
            return;
        };
        for learning in verdict["learnings"].as_array().into_iter().flatten() {
            if let Some(text) = learning.as_str().map(str::trim).filter(|t| !t.is_empty())
                && !self.learnings.iter().any(|l| l == text)
            {
                self.learnings.push(text.to_string());
            }
        }
        if let Some(path) = verdict["spec_path"]
            .as_str()
            .map(str::trim)
            .filter(|p| !p.is_empty())
        {
            self.spec_path = Some(path.to_string());
        }
    }
}

/// The verdict each RALPH task call is asked for (`--json-schema`).
pub fn verdict_schema() -> serde_json::Value {
    serde_json::json!({
        "type": "object",
        "properties": {
            "task_done": {"type": "boolean", "description": "the task is finished and its box is ticked"},
            "summary": {"type": "string", "description": "what was done, one or two sentences"},
            "spec_path": {"type": "string", "description": "the spec file, once it is written"},
            "learnings": {"type": "array", "items": {"type": "string"}, "description": "tactical learnings found"}
        },
        "required": ["task_done", "summary"],
        "additionalProperties": false
    })
}
