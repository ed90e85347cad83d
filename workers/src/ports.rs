//! The ports the handlers need, implemented by the service crate over its store and broker.
//! Trait docs are contracts: implementations must keep them on every backend.

use async_trait::async_trait;
use switchboard_connectors::InboundBatch;

/// Which protocol a raw inbound event speaks; stored as the prefix of the event's `source`
/// (`whatsapp:{app}`, `twilio:{inbox}`, `twilio-status:{inbox}`, `webchat:{inbox}`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SourceKind {
    Whatsapp,
    TwilioMessage,
    TwilioStatus,
    Webchat,
}

impl SourceKind {
    pub fn prefix(self) -> &'static str {
        match self {
            SourceKind::Whatsapp => "whatsapp",
            SourceKind::TwilioMessage => "twilio",
            SourceKind::TwilioStatus => "twilio-status",
            SourceKind::Webchat => "webchat",
        }
    }

    /// `whatsapp:demo` → (`Whatsapp`, `demo`).
    pub fn split(source: &str) -> Option<(Self, &str)> {
        let (prefix, name) = source.split_once(':')?;
        let kind = match prefix {
            "whatsapp" => SourceKind::Whatsapp,
            "twilio" => SourceKind::TwilioMessage,
            "twilio-status" => SourceKind::TwilioStatus,
            "webchat" => SourceKind::Webchat,
            _ => return None,
        };
        Some((kind, name))
    }

    pub fn source(self, name: &str) -> String {
        format!("{}:{name}", self.prefix())
    }
}

/// A provider request as it was made durable on the request path.
#[derive(Debug, Clone)]
pub struct RawEvent {
    pub id: String,
    pub account_id: String,
    pub source: String,
    pub inbox_id: Option<String>,
    pub body: Vec<u8>,
    pub status: String,
    pub received_at_ms: i64,
}

#[derive(Debug, thiserror::Error)]
pub enum PortError {
    /// Worth retrying: a database or broker hiccup.
    #[error("transient: {0}")]
    Transient(String),
    /// Retrying cannot help; the event is marked failed and left for an operator.
    #[error("permanent: {0}")]
    Permanent(String),
}

/// What normalization needs from the hub.
#[async_trait]
pub trait InboundPort: Send + Sync + 'static {
    /// The event, or `None` if no such event exists (a job for a vanished event is dropped).
    async fn load(&self, event_id: &str) -> Result<Option<RawEvent>, PortError>;

    /// Stores everything in `batch` for `event` and marks the event processed (or `unrouted`
    /// when some items matched no inbox), in one unit of work per item. Must be idempotent: a
    /// second call for the same event creates nothing and publishes nothing new.
    async fn apply(&self, event: &RawEvent, batch: InboundBatch) -> Result<(), PortError>;

    /// Marks a signed event that could not be parsed as quarantined, keeping its body.
    async fn quarantine(&self, event_id: &str, reason: &str) -> Result<(), PortError>;
}

/// What outbound delivery needs from the hub.
#[async_trait]
pub trait OutboundPort: Send + Sync + 'static {
    /// Claims the message's delivery if an attempt is due, makes the attempt and records the
    /// outcome (sent, a retry with its due time, or dead). A message with nothing due (already
    /// sent, claimed by another worker, not yet due) is left alone and is not an error.
    /// `Transient` means the hub itself failed (a database blip); the delivery stays claimable
    /// and the hub's sweep queues it again.
    async fn deliver(&self, message_id: &str) -> Result<(), PortError>;
}
