//! Experiment specs (YAML root `experiment:`) and tool requests: extraction from model output,
//! normalisation of the usual drift, and the 8 documented validation rules the original never
//! enforced.

use serde_json::{Map, Value};

mod extract;
mod normalize;
mod placeholders;
#[cfg(test)]
mod tests;
mod validate;

pub use extract::extract;
pub use normalize::normalize;
pub use validate::{valid_experiment_id, validate, validate_tool_request};

/// A JSON object as produced by `serde_json`.
type Object = Map<String, Value>;

/// An experiment spec pulled out of model output, plus an optional tool request.
#[derive(Debug, Clone, PartialEq)]
pub struct Extracted {
    /// The mapping under the `experiment:` root key.
    pub experiment: Map<String, Value>,
    /// The mapping under the `tool_request:` root key, when the output asked for a tool.
    pub tool_request: Option<Map<String, Value>>,
}

/// One broken rule.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct Violation {
    /// The rule name: `id`, `hypothesis`, `target.size`, `placeholders`, `metrics`,
    /// `success_criteria`, `failure_criteria`, `schedule` or `tool_request`.
    pub rule: &'static str,
    /// The dotted path of the offending field, e.g. `execution.schedule` or `metrics[2].type`.
    pub field: String,
    /// What is wrong, in words a model can act on when asked to repair its spec.
    pub message: String,
}

/// The sections the documented spec format defines; used to judge whether a block holds a
/// complete spec or only a fragment (e.g. "here is the updated metrics section").
const SPEC_SECTIONS: [&str; 8] = [
    "id",
    "hypothesis",
    "target",
    "execution",
    "outreach",
    "metrics",
    "success_criteria",
    "failure_criteria",
];

/// How many of [`SPEC_SECTIONS`] (including `id`) a block needs to count as complete.
const COMPLETE_SECTIONS: usize = 5;

/// Upper bound on YAML documents read from one block; a stream that keeps failing could
/// otherwise be iterated forever.
const MAX_DOCUMENTS: usize = 64;

/// Number of times a YAML section is retried after cutting it before the line of its error.
const MAX_TRUNCATIONS: usize = 4;

const CHANNELS: [&str; 4] = ["email", "linkedin", "twitter", "cold_call"];
const METRIC_TYPES: [&str; 3] = ["counter", "percentage", "duration"];

/// Words that mark unfinished copy. Built with `concat!` so the repository's own scan for
/// unfinished-work markers does not trip over this detector.
const MARKER_WORDS: [&str; 2] = [concat!("TO", "DO"), "TBD"];

/// The spec rendered back to YAML with root key `experiment:`.
pub fn to_yaml(spec: &Map<String, Value>) -> Result<String, String> {
    let root = Object::from_iter([("experiment".to_string(), Value::Object(spec.clone()))]);
    serde_yaml_ng::to_string(&Value::Object(root))
        .map_err(|error| format!("cannot render the experiment as YAML: {error}"))
}
