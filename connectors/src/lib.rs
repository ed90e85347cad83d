//! Provider protocols for Switchboard: signature checks, cheap dedup keys and payload
//! normalization into the [`model`].
//!
//! This crate is pure. It owns the byte-level knowledge of each provider (PROVIDERS.md) and
//! nothing else: no database, queue, broker, network or async. The HTTP layer calls the
//! signature check and the cheap dedup pass on the request path; workers call `parse` later.
//! Every provider module has the same parts: signature check, dedup key(s), `parse`; the
//! providers the hub replies through also have a `send` half ([`outbound`]) that builds the
//! send request and classifies the answer, leaving the HTTP call to the caller. The alert
//! destinations (Slack, PagerDuty) follow the same split in [`alerts`].

pub mod alerts;
pub mod model;
pub mod outbound;
pub mod twilio;
pub mod webchat;
pub mod whatsapp;

pub use model::*;
pub use outbound::*;

/// Why a webhook's signature was rejected. Every variant should become a 401/403.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SignatureError {
    #[error("the signature header is missing")]
    Missing,
    #[error("the signature header is malformed")]
    Malformed,
    #[error("the signature does not match")]
    Mismatch,
}

/// Why a provider body could not be normalized at all. Problems confined to one item of a
/// batch never surface here; they become [`InboundItem::Notice`]s.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ParseError {
    #[error("the body is not valid JSON: {0}")]
    Json(String),
    #[error("the payload has an unexpected shape: {0}")]
    Shape(String),
}

impl ParseError {
    fn shape(msg: impl Into<String>) -> Self {
        ParseError::Shape(msg.into())
    }
}

/// Maps a serde_json failure: broken syntax is `Json`, well-formed JSON of the wrong shape is
/// `Shape`.
fn json_error(err: serde_json::Error) -> ParseError {
    match err.classify() {
        serde_json::error::Category::Data => ParseError::Shape(err.to_string()),
        _ => ParseError::Json(err.to_string()),
    }
}
