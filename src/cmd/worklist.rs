//! `fullsend worklist …`.

pub mod set;
