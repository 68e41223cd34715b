//! Context: what the agents know before they decide, and how it becomes a prompt.
//!
//! [`loader`] reads the markdown context files (product context, worklist,
//! strategic learnings) and the Redis state (experiments, tools, metrics,
//! tactical learnings), and in a listener keeps the Redis part, reloading
//! only the keys Redis says changed; [`prompt`] holds the embedded, overridable
//! templates and renders them; [`prompt_cache`] keeps the rendered context
//! blocks while the context is unchanged; [`rank`] finds the past experiments and learnings
//! that bear on an idea; [`learn`] turns a learning into effects. Both services
//! use this layer. It depends on `bus`, `llm` and `support`, never on the
//! services or `cmd`.

pub mod learn;
pub mod loader;
pub mod prompt;
pub mod prompt_cache;
pub mod rank;
