//! The integration test binary: black-box runs of `fullsend` against a real
//! redis-server, an HTTP mock of the Messages API and fake `claude` executables.

mod architecture;
mod common;
mod context;
mod design;
mod dispatch;
mod docs;
mod effects;
mod eval;
mod exec;
mod learn;
mod listen;
mod mcp;
mod metrics;
mod providers;
mod ralph;
mod real_claude;
mod skills;
mod support;
mod think;
mod traces;
mod web;
