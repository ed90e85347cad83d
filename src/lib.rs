//! Switchboard: a real-time omnichannel messaging hub.
//!
//! This crate is the composition root: configuration, startup and roles ([`app::run`]), the
//! HTTP adapters, the SQL store, the dedup and broker seams, and API keys. Provider protocols
//! live in `switchboard-connectors`; background jobs in `switchboard-workers`.

pub mod access;
pub mod alerts;
pub mod app;
pub mod auth;
pub mod broker;
pub mod config;
pub mod crypto;
pub mod dedup;
pub mod dispatch;
pub mod error;
pub mod http;
pub mod ids;
pub mod inboxes;
pub mod ingest;
pub mod intake;
pub mod limits;
pub mod live;
pub mod outbound;
#[cfg(test)]
mod redis_testing;
pub mod sla;
pub mod ssrf;
pub mod store;
pub mod telemetry;
pub mod webhooks_out;

pub use app::{Roles, run};
pub use config::Config;
