//! Shared integration-test harness: a real `redis-server`, strict mocks of the model APIs (on one
//! small HTTP layer, `mock_http`) and fake `claude` executables, so `fullsend` is tested black-box on
//! loopback only, never the network.

// Every test module uses a different subset of the harness, and `common` is private to the test
// binary, so `pub` items would otherwise warn as dead or unreachable.
#![allow(dead_code, unreachable_pub)]

pub mod browser;
pub mod fake_claude;
pub mod ledger;
pub mod mock_api;
pub mod mock_gemini;
pub mod mock_http;
pub mod mock_openai;
pub mod redis_server;
pub mod specs;
pub mod traffic;
