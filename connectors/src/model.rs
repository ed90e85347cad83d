//! The normalized model: what every connector turns a provider payload into.
//!
//! Everything downstream of a connector (workers, the store, consoles) speaks only these types,
//! so a new provider is a new connector and nothing else. The model is deliberately lossless in
//! one direction: whatever a connector does not understand is kept as raw JSON next to what it
//! does (`InboundMessage::raw`, [`MessageContent::Unsupported`], [`InboundItem::Notice`]), so the
//! hub never drops what a provider sent just because it is unfamiliar.

use serde::{Deserialize, Serialize};

/// The customer-facing channel a conversation runs on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Channel {
    Whatsapp,
    Sms,
    Webchat,
}

impl Channel {
    pub fn as_str(self) -> &'static str {
        match self {
            Channel::Whatsapp => "whatsapp",
            Channel::Sms => "sms",
            Channel::Webchat => "webchat",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "whatsapp" => Some(Channel::Whatsapp),
            "sms" => Some(Channel::Sms),
            "webchat" => Some(Channel::Webchat),
            _ => None,
        }
    }
}

/// How a contact is known on a channel. A contact may carry several identities (a WhatsApp
/// business-scoped user id *and* a `wa_id`, a phone number used on SMS and WhatsApp, …).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum IdentityKind {
    /// WhatsApp business-scoped user id (`user_id`/`from_user_id`, e.g. `US.1349…`).
    WhatsappBsuid,
    /// WhatsApp `wa_id` (digits only, no `+`).
    WhatsappWaId,
    /// An E.164 phone number (`+14155550199`), as SMS providers send it.
    Phone,
    /// A web-chat visitor id minted by the hub, or the business's own `identifier` for the
    /// customer when the session was identity-verified.
    WebVisitor,
}

impl IdentityKind {
    pub fn as_str(self) -> &'static str {
        match self {
            IdentityKind::WhatsappBsuid => "whatsapp_bsuid",
            IdentityKind::WhatsappWaId => "whatsapp_wa_id",
            IdentityKind::Phone => "phone",
            IdentityKind::WebVisitor => "web_visitor",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Identity {
    pub kind: IdentityKind,
    pub value: String,
}

/// The sender of an inbound message as the provider describes them.
///
/// `identities` is ordered by preference: the first one is the key the hub threads on (for
/// WhatsApp the BSUID when present, else the `wa_id`, per PROVIDERS.md §1.3); the others are
/// attached to the same contact.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ContactRef {
    pub identities: Vec<Identity>,
    pub display_name: Option<String>,
    /// E.164 phone number when the provider reveals one (`+` added for WhatsApp `wa_id`s).
    pub phone: Option<String>,
}

/// What a connector extracted from one provider request, in provider order.
#[derive(Debug, Clone, PartialEq)]
pub struct InboundBatch {
    pub items: Vec<InboundItem>,
}

/// One unit of work inside a provider request.
#[derive(Debug, Clone, PartialEq)]
pub enum InboundItem {
    Message(Box<InboundMessage>),
    Status(StatusUpdate),
    /// Something the provider sent that is neither a customer message nor a delivery status
    /// (a WhatsApp `account_update` change, a top-level `errors[]` entry, …). Kept and made
    /// visible, never acted on.
    Notice(Notice),
}

/// Which inbox an item belongs to, as the provider names it.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(tag = "by", rename_all = "snake_case")]
pub enum RouteKey {
    /// WhatsApp: `value.metadata.phone_number_id`.
    PhoneNumberId { phone_number_id: String },
    /// The inbox is known from the request path (Twilio, web chat).
    Inbox,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct InboundMessage {
    pub route: RouteKey,
    /// The provider's id for this message: WhatsApp `wamid.…`, Twilio `SM…`/`MM…`, or
    /// `client_message_id` scoped by visitor for web chat. Final dedup key with the inbox.
    pub provider_message_id: String,
    pub sender: ContactRef,
    /// Provider timestamp, Unix milliseconds (WhatsApp sends string seconds).
    pub sent_at_ms: i64,
    pub content: MessageContent,
    /// The provider message this one replies to (WhatsApp `context.id`).
    pub reply_to: Option<String>,
    /// `true` when WhatsApp marks the message forwarded or frequently forwarded.
    pub forwarded: bool,
    /// The provider's own object for this message, kept verbatim.
    pub raw: serde_json::Value,
}

/// Message content, tagged by `type` when serialized.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum MessageContent {
    Text {
        text: String,
    },
    /// One or more attachments (WhatsApp: exactly one; Twilio MMS: `NumMedia` of them), with the
    /// optional caption (WhatsApp `caption`, Twilio `Body`).
    Media {
        attachments: Vec<Attachment>,
        caption: Option<String>,
    },
    Location {
        latitude: f64,
        longitude: f64,
        name: Option<String>,
        address: Option<String>,
        url: Option<String>,
    },
    /// A tap on an interactive element: WhatsApp `interactive` (`button_reply`, `list_reply`,
    /// `nfm_reply`) or a template quick-reply `button`.
    Interactive {
        kind: String,
        id: Option<String>,
        title: Option<String>,
        description: Option<String>,
    },
    /// A reaction to an earlier message; `emoji: None` is an un-react.
    Reaction {
        target_message_id: String,
        emoji: Option<String>,
    },
    /// Shared contact cards, kept as the provider sent them.
    Contacts {
        contacts: serde_json::Value,
    },
    /// An approved provider template sent by an agent (WhatsApp message template; Twilio
    /// Content SID): how a business writes first or after the 24-hour window.
    Template {
        name: String,
        language: String,
        parameters: Vec<String>,
    },
    /// A message type the connector does not model (WhatsApp `order`, `system`,
    /// `unsupported`, or a type invented after this code was written). The raw object is on
    /// [`InboundMessage::raw`].
    Unsupported {
        provider_type: String,
    },
}

impl MessageContent {
    /// The `type` tag, also stored in its own column for filtering.
    pub fn kind(&self) -> &'static str {
        match self {
            MessageContent::Text { .. } => "text",
            MessageContent::Media { .. } => "media",
            MessageContent::Location { .. } => "location",
            MessageContent::Interactive { .. } => "interactive",
            MessageContent::Reaction { .. } => "reaction",
            MessageContent::Contacts { .. } => "contacts",
            MessageContent::Template { .. } => "template",
            MessageContent::Unsupported { .. } => "unsupported",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum MediaKind {
    Image,
    Audio,
    Video,
    Document,
    Sticker,
    /// Twilio MMS media whose content type is none of the above.
    File,
}

/// Media is kept by reference: a provider media id (WhatsApp) or URL (Twilio), never bytes.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Attachment {
    pub kind: MediaKind,
    pub provider_media_id: Option<String>,
    pub url: Option<String>,
    pub mime_type: Option<String>,
    pub sha256: Option<String>,
    pub filename: Option<String>,
    /// WhatsApp push-to-talk voice note.
    pub voice: bool,
}

/// Delivery state of an outbound message. The derive order is the forward order used for
/// monotonic updates: a status only ever moves to a higher [`DeliveryStatus::rank`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DeliveryStatus {
    Pending,
    Sent,
    Delivered,
    Read,
    Failed,
}

impl DeliveryStatus {
    /// `pending → sent → delivered → read`; `failed` is terminal and outranks everything.
    pub fn rank(self) -> i64 {
        match self {
            DeliveryStatus::Pending => 0,
            DeliveryStatus::Sent => 1,
            DeliveryStatus::Delivered => 2,
            DeliveryStatus::Read => 3,
            DeliveryStatus::Failed => 4,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            DeliveryStatus::Pending => "pending",
            DeliveryStatus::Sent => "sent",
            DeliveryStatus::Delivered => "delivered",
            DeliveryStatus::Read => "read",
            DeliveryStatus::Failed => "failed",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "pending" => Some(DeliveryStatus::Pending),
            "sent" => Some(DeliveryStatus::Sent),
            "delivered" => Some(DeliveryStatus::Delivered),
            "read" => Some(DeliveryStatus::Read),
            "failed" => Some(DeliveryStatus::Failed),
            _ => None,
        }
    }
}

/// A provider's report on a message the hub sent.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StatusUpdate {
    pub route: RouteKey,
    pub provider_message_id: String,
    /// `None` for provider states that do not move the lifecycle (Twilio `queued`, `sending`,
    /// `accepted`, …); such updates are recorded but change nothing.
    pub status: Option<DeliveryStatus>,
    /// The provider's own word for the state (`delivered`, `undelivered`, `played`, …).
    pub provider_status: String,
    pub at_ms: i64,
    pub recipient: Option<String>,
    pub errors: Vec<ProviderError>,
    pub raw: serde_json::Value,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ProviderError {
    pub code: String,
    pub title: Option<String>,
    pub details: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Notice {
    pub route: Option<RouteKey>,
    /// What kind of thing this is (`account_update`, `errors`, …).
    pub kind: String,
    pub raw: serde_json::Value,
}
