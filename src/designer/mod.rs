//! FULLSEND, the experiment designer: an idea in, a complete, validated
//! experiment spec out.
//!
//! [`design`] drives the coding agent ([`spawn`], the Claude Code CLI) single
//! shot or in [`ralph`] task loops, or the Messages API directly; [`spec`]
//! extracts, normalises and validates the YAML it produced ([`cron`] checks
//! its schedule); the result is saved to Redis and announced to the Executor,
//! the Builder and the Orchestrator. [`listener`] is the `listen fullsend`
//! role; [`eval`] holds the experiment quality cases. [`skills`] are the
//! agent's domain tools (served by `fullsend mcp`), [`purse`] what a design may
//! spend, [`progress`] a RALPH design's reports. Depends on `context`,
//! `bus`, `llm` and `support`; never on
//! `orchestrator` or `cmd`.

pub mod cron;
pub mod design;
pub mod direct;
pub mod eval;
pub mod executor;
pub mod feedback;
pub mod listener;
pub mod progress;
pub mod purse;
pub mod ralph;
pub mod skills;
pub mod spawn;
pub mod spec;
