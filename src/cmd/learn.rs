//! `fullsend learn …`.

pub mod append;
