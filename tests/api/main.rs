//! Whole-service tests: the real hub on port 0, on SQLite and on PostgreSQL + Redis.

#![allow(clippy::unwrap_used)]

mod browser;
mod console;
mod fake_providers;
mod helpers;

mod access;
mod admin;
mod agents;
mod alerts;
mod audit;
mod auth;
mod bad_input;
mod consoles;
mod durability;
mod engine;
mod exactly_once;
mod health;
mod inboxes;
mod limits;
mod live;
mod live_edges;
mod metrics;
mod openapi;
mod outbound;
mod outbound_pacing;
mod outbound_status;
mod outbound_twilio;
mod privacy;
mod replies;
mod reports;
mod routing_rules;
mod sla;
mod twilio;
mod web;
mod webchat;
mod webhooks_out;
mod whatsapp;
mod workspace;
