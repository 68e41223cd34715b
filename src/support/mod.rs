//! Support: the plumbing every part of fullsend stands on, and nothing above it.
//!
//! Configuration and its precedence, the exit-code table, stdout JSON and stdin
//! readers, logging and terminal detection, signals, locked and atomic file
//! writes, message ids and timestamps, and child-process groups. Modules here
//! depend only on each other and on external crates: never on `bus`, `llm`,
//! `context`, the services or `cmd`.

pub mod config;
pub mod exit;
pub mod files;
pub mod http_serve;
pub mod io;
pub mod metrics;
pub mod msg;
pub mod process;
pub mod signal;
pub mod term;
pub mod trace;
