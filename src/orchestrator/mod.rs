//! The Orchestrator: the strategic brain. It decides what to do about one
//! message and carries the decision out.
//!
//! A message flows [`think`] (context + prompt → the model → a JSON
//! [`decision`], each dispatch to FULLSEND given its [`brief`]) → [`dispatch`] (the decision → a plan of effects: dispatch to
//! FULLSEND or the Builder, a Discord [`reply`] or question, a worklist rewrite, a learning, a
//! kill, pause or resume through [`lifecycle`], a [`roundtable`]) → the bus's
//! fenced commit. [`listener`] is the
//! `listen orchestrator` role that chains these for each stream entry, and
//! [`log`] keeps the decision log; [`eval`] holds the decision quality cases. Depends on `context`, `bus`, `llm` and
//! `support`; never on `designer` or `cmd`.

pub mod brief;
pub mod decision;
pub mod dispatch;
pub mod eval;
pub mod lifecycle;
pub mod listener;
pub mod log;
pub mod reply;
pub mod roundtable;
pub mod think;
