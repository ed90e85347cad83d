//! Routing rules for Switchboard's assignment engine (ROUTING.md §10).
//!
//! This crate is pure: no I/O, no async, no storage. It owns the rule language the engine
//! evaluates ([`expr`]); the engine (presence, capacity, scoring, offers) builds on it.

pub mod engine;
pub mod expr;
