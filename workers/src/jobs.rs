//! Job payloads. Names are verb + noun; each payload carries a version so that a payload written
//! by an older binary is still understood (or refused loudly) by a newer one.

use serde::{Deserialize, Serialize};

/// Turn one durable inbound event (a raw provider request) into contacts, conversations,
/// messages and status transitions.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NormalizeInbound {
    /// Payload version; 1 is the only one so far.
    #[serde(default = "version_one")]
    pub v: u32,
    pub event_id: String,
}

fn version_one() -> u32 {
    1
}

impl NormalizeInbound {
    pub fn new(event_id: impl Into<String>) -> Self {
        Self {
            v: 1,
            event_id: event_id.into(),
        }
    }
}

/// Make one delivery attempt for an outbound message (an agent's reply). The delivery record in
/// the store says what to send and whether an attempt is due, so a duplicate or stale job is
/// harmless: it finds nothing to claim.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeliverOutbound {
    /// Payload version; 1 is the only one so far.
    #[serde(default = "version_one")]
    pub v: u32,
    pub message_id: String,
}

impl DeliverOutbound {
    pub fn new(message_id: impl Into<String>) -> Self {
        Self {
            v: 1,
            message_id: message_id.into(),
        }
    }
}
