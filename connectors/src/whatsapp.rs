//! WhatsApp Business Cloud API webhooks (Meta Graph, PROVIDERS.md §1).
//!
//! Owns the `X-Hub-Signature-256` check, the cheap dedup pass the request path runs before
//! acking, and the full normalization of the `entry[] → changes[] → messages[]/statuses[]`
//! envelope into an [`InboundBatch`]. Sending is in [`send`].
//!
//! Only a body that is not JSON, or not a `whatsapp_business_account` envelope, fails as a
//! whole. Anything wrong inside a valid envelope becomes an [`InboundItem::Notice`] carrying
//! the offending JSON, with one of these kinds:
//!
//! * `message_without_sender`: a message with neither `from` nor `from_user_id`;
//! * `malformed_message` / `malformed_status`: an item missing its id, timestamp, type or
//!   type-specific payload;
//! * `malformed_change` / `malformed_entry`: an envelope level that is not the expected shape
//!   (including a `messages` change without `metadata.phone_number_id`);
//! * `errors`: one per item of a change's top-level `value.errors[]`;
//! * the change's `field` (`account_update`, …) for every change other than `messages`, and
//!   `messages` for a `messages` change holding none of the three arrays.

use std::borrow::Cow;

use hmac::{Hmac, Mac};
use serde::Deserialize;
use serde_json::Value;
use sha2::Sha256;

use crate::model::*;
use crate::{ParseError, SignatureError, json_error};

pub mod send;
pub use send::{API_BASE_URL, send_outcome, send_request};

pub const SIGNATURE_HEADER: &str = "x-hub-signature-256";

const OBJECT: &str = "whatsapp_business_account";
const PREFIX: &str = "sha256=";

type HmacSha256 = Hmac<Sha256>;

fn mac(key: &[u8]) -> HmacSha256 {
    HmacSha256::new_from_slice(key).expect("HMAC accepts keys of any length")
}

/// The header value Meta sends for `body`: `sha256=<64 lowercase hex>`.
pub fn sign(app_secret: &[u8], body: &[u8]) -> String {
    let mut mac = mac(app_secret);
    mac.update(body);
    format!("{PREFIX}{}", hex::encode(mac.finalize().into_bytes()))
}

/// Checks `X-Hub-Signature-256` against the raw body bytes (never re-serialized JSON: Meta
/// signs its escaped-unicode encoding). Hex case is not significant.
pub fn verify_signature(
    app_secret: &[u8],
    body: &[u8],
    header: Option<&str>,
) -> Result<(), SignatureError> {
    let header = header.map(str::trim).unwrap_or_default();
    if header.is_empty() {
        return Err(SignatureError::Missing);
    }
    let digest = header
        .get(..PREFIX.len())
        .filter(|p| p.eq_ignore_ascii_case(PREFIX))
        .and_then(|_| hex::decode(&header[PREFIX.len()..]).ok())
        .filter(|d| d.len() == 32)
        .ok_or(SignatureError::Malformed)?;
    let mut mac = mac(app_secret);
    mac.update(body);
    mac.verify_slice(&digest)
        .map_err(|_| SignatureError::Mismatch)
}

// The cheap pass reads only ids and statuses, borrowing from the body where it can.
#[derive(Deserialize)]
struct Str<'a>(#[serde(borrow)] Cow<'a, str>);

#[derive(Deserialize)]
struct KeyEnvelope<'a> {
    #[serde(borrow)]
    object: Option<Str<'a>>,
    #[serde(borrow)]
    entry: Option<Vec<KeyEntry<'a>>>,
}

#[derive(Deserialize)]
struct KeyEntry<'a> {
    #[serde(borrow, default)]
    changes: Vec<KeyChange<'a>>,
}

#[derive(Deserialize)]
struct KeyChange<'a> {
    #[serde(borrow)]
    field: Option<Str<'a>>,
    #[serde(borrow)]
    value: Option<KeyValue<'a>>,
}

#[derive(Deserialize)]
struct KeyValue<'a> {
    #[serde(borrow, default)]
    messages: Vec<KeyItem<'a>>,
    #[serde(borrow, default)]
    statuses: Vec<KeyItem<'a>>,
}

#[derive(Deserialize)]
struct KeyItem<'a> {
    #[serde(borrow)]
    id: Option<Str<'a>>,
    #[serde(borrow)]
    status: Option<Str<'a>>,
}

/// Idempotency keys for every message (`msg:{id}`) and status (`status:{id}:{status}`) in
/// the body, in payload order, without normalizing anything.
///
/// Agrees with [`parse`] on what is an error: a well-typed body takes the cheap path; a body
/// with a malformed item somewhere falls back to a lenient walk that skips that item.
pub fn dedup_keys(body: &[u8]) -> Result<Vec<String>, ParseError> {
    let envelope: KeyEnvelope<'_> = match serde_json::from_slice(body) {
        Ok(envelope) => envelope,
        Err(err) if err.is_data() => return dedup_keys_lenient(body),
        Err(err) => return Err(json_error(err)),
    };
    if envelope.object.as_ref().map(|o| o.0.as_ref()) != Some(OBJECT) {
        return Err(not_whatsapp());
    }
    let entries = envelope.entry.ok_or_else(no_entry)?;
    let mut keys = Vec::new();
    for change in entries.iter().flat_map(|e| &e.changes) {
        let (Some(Str(field)), Some(value)) = (&change.field, &change.value) else {
            continue;
        };
        if field != "messages" {
            continue;
        }
        for message in &value.messages {
            if let Some(Str(id)) = &message.id {
                keys.push(format!("msg:{id}"));
            }
        }
        for status in &value.statuses {
            if let (Some(Str(id)), Some(Str(st))) = (&status.id, &status.status) {
                keys.push(format!("status:{id}:{st}"));
            }
        }
    }
    Ok(keys)
}

fn dedup_keys_lenient(body: &[u8]) -> Result<Vec<String>, ParseError> {
    let root: Value = serde_json::from_slice(body).map_err(json_error)?;
    let mut keys = Vec::new();
    for change in envelope(&root)?.iter().flat_map(changes_of) {
        let Some(value) = change
            .get("value")
            .filter(|_| str_at(change, "field") == Some("messages"))
        else {
            continue;
        };
        for message in array_at(value, "messages") {
            if let Some(id) = str_at(message, "id") {
                keys.push(format!("msg:{id}"));
            }
        }
        for status in array_at(value, "statuses") {
            if let (Some(id), Some(st)) = (str_at(status, "id"), str_at(status, "status")) {
                keys.push(format!("status:{id}:{st}"));
            }
        }
    }
    Ok(keys)
}

fn not_whatsapp() -> ParseError {
    ParseError::shape(format!("`object` is not \"{OBJECT}\""))
}

fn no_entry() -> ParseError {
    ParseError::shape("`entry` is not an array")
}

fn envelope(root: &Value) -> Result<&Vec<Value>, ParseError> {
    if str_at(root, "object") != Some(OBJECT) {
        return Err(not_whatsapp());
    }
    root.get("entry")
        .and_then(Value::as_array)
        .ok_or_else(no_entry)
}

fn changes_of(entry: &Value) -> &[Value] {
    array_at(entry, "changes")
}

fn str_at<'v>(v: &'v Value, key: &str) -> Option<&'v str> {
    v.get(key)?.as_str()
}

/// A string field, with `""` treated as absent.
fn text_at(v: &Value, key: &str) -> Option<String> {
    str_at(v, key).filter(|s| !s.is_empty()).map(str::to_owned)
}

fn array_at<'v>(v: &'v Value, key: &str) -> &'v [Value] {
    v.get(key)
        .and_then(Value::as_array)
        .map(Vec::as_slice)
        .unwrap_or_default()
}

fn notice(route: Option<&RouteKey>, kind: &str, raw: &Value) -> InboundItem {
    InboundItem::Notice(Notice {
        route: route.cloned(),
        kind: kind.to_owned(),
        raw: raw.clone(),
    })
}

/// Normalizes a webhook body into messages, statuses and notices, in payload order.
pub fn parse(body: &[u8]) -> Result<InboundBatch, ParseError> {
    let root: Value = serde_json::from_slice(body).map_err(json_error)?;
    let mut items = Vec::new();
    for entry in envelope(&root)? {
        if entry.get("changes").and_then(Value::as_array).is_none() {
            items.push(notice(None, "malformed_entry", entry));
            continue;
        }
        for change in changes_of(entry) {
            parse_change(change, &mut items);
        }
    }
    Ok(InboundBatch { items })
}

fn parse_change(change: &Value, out: &mut Vec<InboundItem>) {
    let value = change.get("value").filter(|v| v.is_object());
    let route = value
        .and_then(|v| v.get("metadata"))
        .and_then(|m| text_at(m, "phone_number_id"))
        .map(|phone_number_id| RouteKey::PhoneNumberId { phone_number_id });
    let route = route.as_ref();
    let field = str_at(change, "field");
    if let Some(field) = field.filter(|f| *f != "messages") {
        out.push(notice(route, field, change));
        return;
    }
    let (Some("messages"), Some(value), Some(route)) = (field, value, route) else {
        out.push(notice(route, "malformed_change", change));
        return;
    };

    let contacts: Vec<Contact<'_>> = array_at(value, "contacts")
        .iter()
        .filter(|c| c.is_object())
        .map(|c| Contact {
            wa_id: str_at(c, "wa_id").filter(|s| !s.is_empty()),
            user_id: str_at(c, "user_id").filter(|s| !s.is_empty()),
            name: c
                .get("profile")
                .and_then(|p| str_at(p, "name"))
                .filter(|s| !s.is_empty()),
        })
        .collect();

    let mut any = false;
    for key in ["messages", "statuses", "errors"] {
        let Some(list) = value.get(key) else { continue };
        any = true;
        let Some(list) = list.as_array() else {
            out.push(notice(Some(route), "malformed_change", change));
            continue;
        };
        for item in list {
            out.push(match key {
                "messages" => match parse_message(route, &contacts, item) {
                    Ok(message) => InboundItem::Message(Box::new(message)),
                    Err(kind) => notice(Some(route), kind, item),
                },
                "statuses" => match parse_status(route, item) {
                    Some(status) => InboundItem::Status(status),
                    None => notice(Some(route), "malformed_status", item),
                },
                _ => notice(Some(route), "errors", item),
            });
        }
    }
    if !any {
        out.push(notice(Some(route), "messages", change));
    }
}

struct Contact<'v> {
    wa_id: Option<&'v str>,
    user_id: Option<&'v str>,
    name: Option<&'v str>,
}

impl Contact<'_> {
    fn matches(&self, from: Option<&str>, from_user_id: Option<&str>) -> bool {
        (from.is_some() && self.wa_id == from)
            || (from_user_id.is_some() && self.user_id == from_user_id)
    }

    fn contradicts(&self, from: Option<&str>, from_user_id: Option<&str>) -> bool {
        let differ =
            |a: Option<&str>, b: Option<&str>| matches!((a, b), (Some(a), Some(b)) if a != b);
        differ(self.wa_id, from) || differ(self.user_id, from_user_id)
    }
}

/// A lone contact describes every message of its change unless its ids say otherwise.
fn contact_for<'c, 'v>(
    contacts: &'c [Contact<'v>],
    from: Option<&str>,
    from_user_id: Option<&str>,
) -> Option<&'c Contact<'v>> {
    contacts
        .iter()
        .find(|c| c.matches(from, from_user_id))
        .or(match contacts {
            [only] if !only.contradicts(from, from_user_id) => Some(only),
            _ => None,
        })
}

/// Unix seconds as Meta sends them (a string; a bare integer is tolerated) → milliseconds.
fn timestamp_ms(v: Option<&Value>) -> Option<i64> {
    let secs = match v? {
        Value::String(s) => s.parse::<i64>().ok()?,
        Value::Number(n) => n.as_i64()?,
        _ => return None,
    };
    secs.checked_mul(1000)
}

fn parse_message(
    route: &RouteKey,
    contacts: &[Contact<'_>],
    m: &Value,
) -> Result<InboundMessage, &'static str> {
    const MALFORMED: &str = "malformed_message";
    if !m.is_object() {
        return Err(MALFORMED);
    }
    let from = str_at(m, "from").filter(|s| !s.is_empty());
    let from_user_id = str_at(m, "from_user_id").filter(|s| !s.is_empty());
    if from.is_none() && from_user_id.is_none() {
        return Err("message_without_sender");
    }
    let id = text_at(m, "id").ok_or(MALFORMED)?;
    let sent_at_ms = timestamp_ms(m.get("timestamp")).ok_or(MALFORMED)?;
    let kind = str_at(m, "type")
        .filter(|s| !s.is_empty())
        .ok_or(MALFORMED)?;
    let content = content(kind, m).ok_or(MALFORMED)?;

    let contact = contact_for(contacts, from, from_user_id);
    let bsuid = from_user_id.or(contact.and_then(|c| c.user_id));
    let wa_id = from.or(contact.and_then(|c| c.wa_id));
    let mut identities = Vec::with_capacity(2);
    if let Some(bsuid) = bsuid {
        identities.push(Identity {
            kind: IdentityKind::WhatsappBsuid,
            value: bsuid.to_owned(),
        });
    }
    if let Some(wa_id) = wa_id {
        identities.push(Identity {
            kind: IdentityKind::WhatsappWaId,
            value: wa_id.to_owned(),
        });
    }

    let context = m.get("context");
    let flag = |key| context.and_then(|c| c.get(key)).and_then(Value::as_bool) == Some(true);
    Ok(InboundMessage {
        route: route.clone(),
        provider_message_id: id,
        sender: ContactRef {
            identities,
            display_name: contact.and_then(|c| c.name).map(str::to_owned),
            phone: wa_id.map(|w| format!("+{w}")),
        },
        sent_at_ms,
        content,
        reply_to: context.and_then(|c| text_at(c, "id")),
        forwarded: flag("forwarded") || flag("frequently_forwarded"),
        raw: m.clone(),
    })
}

/// `None` when a known type lacks what it needs; unknown types are never an error.
fn content(kind: &str, m: &Value) -> Option<MessageContent> {
    let part = m.get(kind).filter(|p| p.is_object());
    Some(match kind {
        "text" => MessageContent::Text {
            text: str_at(part?, "body")?.to_owned(),
        },
        "image" | "audio" | "video" | "document" | "sticker" => {
            let part = part?;
            let media_kind = match kind {
                "image" => MediaKind::Image,
                "audio" => MediaKind::Audio,
                "video" => MediaKind::Video,
                "document" => MediaKind::Document,
                _ => MediaKind::Sticker,
            };
            let provider_media_id = text_at(part, "id");
            let url = text_at(part, "url");
            if provider_media_id.is_none() && url.is_none() {
                return None;
            }
            MessageContent::Media {
                attachments: vec![Attachment {
                    kind: media_kind,
                    provider_media_id,
                    url,
                    mime_type: text_at(part, "mime_type"),
                    sha256: text_at(part, "sha256"),
                    filename: text_at(part, "filename"),
                    voice: part.get("voice").and_then(Value::as_bool).unwrap_or(false),
                }],
                caption: text_at(part, "caption"),
            }
        }
        "location" => {
            let part = part?;
            MessageContent::Location {
                latitude: number_at(part, "latitude")?,
                longitude: number_at(part, "longitude")?,
                name: text_at(part, "name"),
                address: text_at(part, "address"),
                url: text_at(part, "url"),
            }
        }
        "interactive" => {
            let part = part?;
            let reply_kind = str_at(part, "type").filter(|s| !s.is_empty())?;
            let reply = part.get(reply_kind).filter(|r| r.is_object());
            let field = |key| reply.and_then(|r| text_at(r, key));
            let (id, title, description) = if reply_kind == "nfm_reply" {
                // A Flow submission: the answers are in `response_json`, kept in `raw`.
                (None, field("name"), None)
            } else {
                (field("id"), field("title"), field("description"))
            };
            MessageContent::Interactive {
                kind: reply_kind.to_owned(),
                id,
                title,
                description,
            }
        }
        "button" => {
            let part = part?;
            MessageContent::Interactive {
                kind: "button".to_owned(),
                id: text_at(part, "payload"),
                title: text_at(part, "text"),
                description: None,
            }
        }
        "reaction" => {
            let part = part?;
            MessageContent::Reaction {
                target_message_id: text_at(part, "message_id")?,
                emoji: text_at(part, "emoji"),
            }
        }
        "contacts" => MessageContent::Contacts {
            contacts: m.get("contacts").filter(|c| c.is_array())?.clone(),
        },
        other => MessageContent::Unsupported {
            provider_type: other.to_owned(),
        },
    })
}

fn number_at(v: &Value, key: &str) -> Option<f64> {
    match v.get(key)? {
        Value::Number(n) => n.as_f64(),
        Value::String(s) => s.parse().ok(),
        _ => None,
    }
}

fn parse_status(route: &RouteKey, s: &Value) -> Option<StatusUpdate> {
    let provider_status = text_at(s, "status")?;
    let status = match provider_status.as_str() {
        "sent" => Some(DeliveryStatus::Sent),
        "delivered" => Some(DeliveryStatus::Delivered),
        // `played` is a voice note listened to: it implies read.
        "read" | "played" => Some(DeliveryStatus::Read),
        "failed" => Some(DeliveryStatus::Failed),
        _ => None,
    };
    Some(StatusUpdate {
        route: route.clone(),
        provider_message_id: text_at(s, "id")?,
        status,
        provider_status,
        at_ms: timestamp_ms(s.get("timestamp"))?,
        recipient: text_at(s, "recipient_id").or_else(|| text_at(s, "recipient_user_id")),
        errors: array_at(s, "errors").iter().map(provider_error).collect(),
        raw: s.clone(),
    })
}

fn provider_error(e: &Value) -> ProviderError {
    let code = match e.get("code") {
        Some(Value::Number(n)) => n.to_string(),
        Some(Value::String(s)) if !s.is_empty() => s.clone(),
        _ => "unknown".to_owned(),
    };
    ProviderError {
        code,
        title: text_at(e, "title").or_else(|| text_at(e, "message")),
        details: e.get("error_data").and_then(|d| text_at(d, "details")),
    }
}

#[cfg(test)]
mod tests;
