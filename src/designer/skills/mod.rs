//! The agent's skills: the PRD's `redis_tools`, `file_tools` and `browserbase`, as a small set
//! of domain tools over shared state, scoped to one run. `fullsend mcp` serves them to Claude
//! Code over MCP; this module knows nothing of MCP itself.
//!
//! What the agent may read: the tools registry (`tools:*`), experiments (`experiments:*`),
//! tactical learnings (`learnings:tactical:*`), the product context and the strategic
//! learnings. What it may write, each write carrying an idempotency key and the run's request
//! or experiment id: one tactical learning at a time, a tool request and the experiment spec
//! (both staged in the run's private state, where the designer picks them up and commits them
//! with the rest of the design). Nothing else: no generic key access, no other prefix.

use std::path::PathBuf;
use std::sync::atomic::{AtomicU32, Ordering};

use serde_json::{Map, Value, json};

use crate::bus::store::Conn;

mod catalogue;
mod read;
pub mod research;
mod wiring;
mod write;

pub use catalogue::{ToolSpec, catalogue};
pub use research::Research;
pub use wiring::{
    McpWiring, SERVER_NAME, SUBMITTED_DIR, allowed_tool_names, skills_prompt, submitted,
};

/// The most bytes one tool answer may hold; longer lists are cut and say so.
pub const MAX_ANSWER_BYTES: usize = 48 * 1024;

/// The most tactical learnings one agent call may append.
pub const MAX_LEARNINGS_PER_CALL: u32 = 20;

/// The most tool requests one agent call may record.
pub const MAX_TOOL_REQUESTS_PER_CALL: u32 = 5;

/// The run the skills serve: every write carries these ids, and staged files go under
/// `work_dir/.fullsend/submitted/`.
#[derive(Debug, Clone)]
pub struct Scope {
    /// The run (the agent call's session or the design's id): scopes idempotency keys.
    pub run_id: String,
    /// The design request this run works on.
    pub request_id: String,
    /// The experiment this run works on, when there is one (direct runs, re-designs).
    pub experiment_id: Option<String>,
    /// The run's work dir.
    pub work_dir: PathBuf,
}

/// What a tool call can go wrong with.
#[derive(Debug)]
pub enum ToolError {
    /// No such tool: a protocol error, not something the model can fix by retrying.
    Unknown(String),
    /// The call was refused or its input is wrong; the text tells the model what to change.
    Refused(String),
    /// Redis or the filesystem failed; the model may try again later.
    Failed(String),
}

impl std::fmt::Display for ToolError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ToolError::Unknown(name) => write!(f, "unknown tool {name:?}"),
            ToolError::Refused(why) | ToolError::Failed(why) => f.write_str(why),
        }
    }
}

/// The skills of one run.
pub struct Skills {
    /// Redis, for the registry, experiments and learnings; None: it was unreachable at start,
    /// and those skills answer with an error while the file skills keep working.
    pub conn: Option<Conn>,
    /// The run's scope.
    pub scope: Scope,
    /// product_context.md.
    pub product_context: PathBuf,
    /// learnings.md.
    pub learnings: PathBuf,
    /// Web research through Browserbase, when a key is configured.
    pub research: Option<Research>,
    /// A dry run: nothing is written to Redis.
    pub read_only: bool,
    learnings_written: AtomicU32,
    tool_requests_written: AtomicU32,
}

impl Skills {
    /// Skills over `conn` for `scope`.
    pub fn new(
        conn: Option<Conn>,
        scope: Scope,
        product_context: PathBuf,
        learnings: PathBuf,
        research: Option<Research>,
    ) -> Skills {
        Skills {
            conn,
            scope,
            product_context,
            learnings,
            research,
            read_only: false,
            learnings_written: AtomicU32::new(0),
            tool_requests_written: AtomicU32::new(0),
        }
    }

    /// The tools this run offers.
    pub fn tools(&self) -> Vec<ToolSpec> {
        catalogue(self.research.is_some())
    }

    /// Calls one tool with its arguments (a JSON object).
    pub async fn call(&self, name: &str, args: &Map<String, Value>) -> Result<Value, ToolError> {
        let redis = || {
            self.conn.clone().ok_or_else(|| {
                ToolError::Failed(
                    "Redis is unavailable in this run: the registry, experiments and tactical \
                     learnings cannot be read or written; design from the context you have"
                        .into(),
                )
            })
        };
        match name {
            "tool_registry" => read::registry(&mut redis()?, args).await,
            "list_experiments" => read::list_experiments(&mut redis()?, args).await,
            "get_experiment" => read::get_experiment(&mut redis()?, args).await,
            "search_learnings" => read::search_learnings(&mut redis()?, args).await,
            "product_context" => read::file_text(&self.product_context, "product context"),
            "strategic_learnings" => read::strategic(&self.learnings, args),
            "append_learning" if self.read_only => Err(ToolError::Refused(
                "this is a dry run: nothing is written to Redis; put the learning in your \
                 answer's tactical_learnings instead"
                    .into(),
            )),
            "append_learning" => {
                let slots = &self.learnings_written;
                take_slot(slots, MAX_LEARNINGS_PER_CALL, "learnings")?;
                let written = match redis() {
                    Ok(mut conn) => write::append_learning(&mut conn, &self.scope, args).await,
                    Err(e) => Err(e),
                };
                // Only what was recorded uses a slot: a refusal or a duplicate gives it back.
                if !matches!(&written, Ok(v) if v["recorded"] == true) {
                    give_back(slots);
                }
                written
            }
            "request_tool" => {
                let slots = &self.tool_requests_written;
                take_slot(slots, MAX_TOOL_REQUESTS_PER_CALL, "tool requests")?;
                let staged = write::request_tool(&self.scope, args);
                if staged.is_err() {
                    give_back(slots);
                }
                staged
            }
            "submit_spec" => write::submit_spec(&self.scope, args),
            "web_fetch" => match &self.research {
                Some(r) => r.fetch(args).await,
                None => Err(ToolError::Unknown(name.to_string())),
            },
            other => Err(ToolError::Unknown(other.to_string())),
        }
    }
}

/// Counts one more write of a kind, refusing past its limit.
fn take_slot(counter: &AtomicU32, limit: u32, what: &str) -> Result<(), ToolError> {
    counter
        .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |used| {
            (used < limit).then_some(used + 1)
        })
        .map(|_| ())
        .map_err(|_| {
            ToolError::Refused(format!(
                "this run may record at most {limit} {what}; keep the most important ones"
            ))
        })
}

/// Returns a slot that a write did not use.
fn give_back(counter: &AtomicU32) {
    let _ = counter.fetch_update(Ordering::SeqCst, Ordering::SeqCst, |used| {
        used.checked_sub(1)
    });
}

/// An optional text argument, trimmed; empty means absent.
fn text_arg<'a>(args: &'a Map<String, Value>, name: &str) -> Option<&'a str> {
    args.get(name)
        .and_then(Value::as_str)
        .map(str::trim)
        .filter(|s| !s.is_empty())
}

/// A required text argument of at most `max` characters.
fn required_text<'a>(
    args: &'a Map<String, Value>,
    name: &str,
    max: usize,
) -> Result<&'a str, ToolError> {
    let text = text_arg(args, name)
        .ok_or_else(|| ToolError::Refused(format!("`{name}` is required (a non-empty string)")))?;
    if text.chars().count() > max {
        return Err(ToolError::Refused(format!(
            "`{name}` is longer than {max} characters"
        )));
    }
    Ok(text)
}

/// An optional `limit` between 1 and `max` (default `default`).
fn limit_arg(args: &Map<String, Value>, default: usize, max: usize) -> usize {
    args.get("limit")
        .and_then(Value::as_u64)
        .map_or(default, |n| usize::try_from(n).unwrap_or(max))
        .clamp(1, max)
}

/// Keeps the first items of `items` whose JSON fits in [`MAX_ANSWER_BYTES`], and says so.
fn bounded_list(key: &str, items: Vec<Value>) -> Value {
    let total = items.len();
    let mut kept = Vec::new();
    let mut bytes = 0;
    for item in items {
        let size = item.to_string().len() + 1;
        if bytes + size > MAX_ANSWER_BYTES {
            break;
        }
        bytes += size;
        kept.push(item);
    }
    let truncated = kept.len() < total;
    json!({ key: kept, "total": total, "truncated": truncated })
}

/// `text` cut to at most `max` bytes on a character boundary.
fn cut(text: &str, max: usize) -> (String, bool) {
    if text.len() <= max {
        return (text.to_string(), false);
    }
    let mut end = max;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    (text[..end].to_string(), true)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_long_list_is_cut_and_says_so() {
        let items: Vec<Value> = (0..2000)
            .map(|i| json!({"n": i, "pad": "x".repeat(100)}))
            .collect();
        let v = bounded_list("items", items);
        assert_eq!(v["truncated"], true);
        assert_eq!(v["total"], 2000);
        assert!(v.to_string().len() <= MAX_ANSWER_BYTES + 100);
    }

    #[test]
    fn cutting_respects_characters() {
        let (s, cut_off) = cut("ééé", 3);
        assert_eq!(s, "é");
        assert!(cut_off);
    }

    #[test]
    fn slots_run_out() {
        let counter = AtomicU32::new(0);
        assert!(take_slot(&counter, 2, "x").is_ok());
        assert!(take_slot(&counter, 2, "x").is_ok());
        assert!(matches!(
            take_slot(&counter, 2, "x"),
            Err(ToolError::Refused(_))
        ));
        assert_eq!(counter.load(Ordering::SeqCst), 2, "a refusal takes no slot");
        give_back(&counter);
        assert!(
            take_slot(&counter, 2, "x").is_ok(),
            "a slot given back is free again"
        );
        give_back(&counter);
        give_back(&counter);
        give_back(&counter);
        assert_eq!(counter.load(Ordering::SeqCst), 0);
    }
}
