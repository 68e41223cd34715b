//! `fullsend ralph …`.

pub mod run;
pub mod spawn;
