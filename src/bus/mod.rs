//! The bus: how messages travel between the services through Redis, and how a
//! message's effects are committed exactly once.
//!
//! A listener ([`runner`]) reads a role's stream through its consumer group,
//! holds a lease on each entry while a handler works, and commits the
//! handler's effects ([`effects`]) in one fenced script that also acknowledges
//! the entry. [`store`] holds connections, key names and publishing;
//! [`spend`] is the daily spend gate both roles share; [`queues`] is what an
//! operator sees of them and the dead-letter requeue. The bus knows nothing
//! of what a message means: it depends on `support` only, never on the
//! services, `context` or `cmd`.

pub mod delivery;
pub mod effects;
pub mod exec;
pub mod queues;
pub mod runner;
pub mod spend;
pub mod store;
pub mod tracking;
