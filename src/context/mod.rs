//! Context: what the agents know before they decide, and how it becomes a prompt.
//!
//! [`loader`] reads the markdown context files (product context, worklist,
//! strategic learnings) and the Redis state (experiments, tools, metrics,
//! tactical learnings); [`prompt`] holds the embedded, overridable templates
//! and renders them; [`learn`] turns a learning into effects. Both services
//! use this layer. It depends on `bus`, `llm` and `support`, never on the
//! services or `cmd`.

pub mod learn;
pub mod loader;
pub mod prompt;
