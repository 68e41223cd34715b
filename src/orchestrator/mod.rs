//! The Orchestrator: the strategic brain. It decides what to do about one
//! message and carries the decision out.
//!
//! A message flows [`think`] (context + prompt → the model → a JSON
//! [`decision`]) → [`dispatch`] (the decision → a plan of effects: dispatch to
//! FULLSEND or the Builder, a Discord reply, a worklist rewrite, a learning, a
//! kill, pause or resume through [`lifecycle`], a [`roundtable`]) → the bus's
//! fenced commit. [`listener`] is the
//! `listen orchestrator` role that chains these for each stream entry, and
//! [`log`] keeps the decision log. Depends on `context`, `bus`, `llm` and
//! `support`; never on `designer` or `cmd`.

pub mod decision;
pub mod dispatch;
pub mod lifecycle;
pub mod listener;
pub mod log;
pub mod roundtable;
pub mod think;
