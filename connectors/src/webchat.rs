//! The hub's own web-chat channel.
//!
//! The widget talks to the hub, which builds a [`VisitorMessage`] and hands its JSON to the
//! same pipeline as provider webhooks, so web chat gets the same `parse` seam as WhatsApp and
//! Twilio. Owns identity verification too: a business that knows its customer signs their
//! `identifier` with a per-inbox secret (`hex HMAC-SHA256`), and only then may the hub thread
//! on that identifier instead of on the anonymous visitor id.

use hmac::{Hmac, Mac};
use serde::{Deserialize, Serialize};
use sha2::Sha256;

use crate::model::*;
use crate::{ParseError, SignatureError, json_error};

type HmacSha256 = Hmac<Sha256>;

fn mac(secret: &[u8], identifier: &str) -> HmacSha256 {
    let mut mac = HmacSha256::new_from_slice(secret).expect("HMAC accepts keys of any length");
    mac.update(identifier.as_bytes());
    mac
}

/// The hash a business backend computes for `identifier`, lowercase hex.
pub fn identity_hash(secret: &[u8], identifier: &str) -> String {
    hex::encode(mac(secret, identifier).finalize().into_bytes())
}

/// Checks a widget-supplied identity hash in constant time. Hex case is not significant.
pub fn verify_identity(
    secret: &[u8],
    identifier: &str,
    hash_hex: &str,
) -> Result<(), SignatureError> {
    let hash_hex = hash_hex.trim();
    if hash_hex.is_empty() {
        return Err(SignatureError::Missing);
    }
    let digest = hex::decode(hash_hex)
        .ok()
        .filter(|d| d.len() == 32)
        .ok_or(SignatureError::Malformed)?;
    mac(secret, identifier)
        .verify_slice(&digest)
        .map_err(|_| SignatureError::Mismatch)
}

/// One message typed by a visitor, as the hub records it. `identifier` is set only once the
/// session's identity hash has been verified.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct VisitorMessage {
    pub visitor_id: String,
    pub identifier: Option<String>,
    pub name: Option<String>,
    pub email: Option<String>,
    pub client_message_id: String,
    pub text: String,
    pub sent_at_ms: i64,
}

/// Normalizes a serialized [`VisitorMessage`] into a one-message batch.
///
/// The message id is scoped by visitor (`{visitor_id}:{client_message_id}`) because
/// `client_message_id` is minted by the browser. `email` has no place in [`ContactRef`]; it is
/// kept in `raw`.
pub fn parse(body: &[u8]) -> Result<InboundBatch, ParseError> {
    let raw: serde_json::Value = serde_json::from_slice(body).map_err(json_error)?;
    let message = VisitorMessage::deserialize(&raw).map_err(json_error)?;
    if message.visitor_id.is_empty() || message.client_message_id.is_empty() {
        return Err(ParseError::shape(
            "visitor_id and client_message_id must not be empty",
        ));
    }
    let identifier = message.identifier.filter(|i| !i.is_empty());
    let identities = identifier
        .into_iter()
        .chain([message.visitor_id.clone()])
        .map(|value| Identity {
            kind: IdentityKind::WebVisitor,
            value,
        })
        .collect();
    let inbound = InboundMessage {
        route: RouteKey::Inbox,
        provider_message_id: format!("{}:{}", message.visitor_id, message.client_message_id),
        sender: ContactRef {
            identities,
            display_name: message.name.filter(|n| !n.is_empty()),
            phone: None,
        },
        sent_at_ms: message.sent_at_ms,
        content: MessageContent::Text { text: message.text },
        reply_to: None,
        forwarded: false,
        raw,
    };
    Ok(InboundBatch {
        items: vec![InboundItem::Message(Box::new(inbound))],
    })
}

#[cfg(test)]
mod tests;
