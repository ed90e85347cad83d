//! Twilio Programmable Messaging webhooks (PROVIDERS.md §2): inbound SMS/MMS (also WhatsApp
//! via Twilio) and status callbacks.
//!
//! Owns form decoding, the `X-Twilio-Signature` check exactly as the official SDKs compute it
//! (including their port tolerance and the `bodySHA256` JSON variant), the dedup key and the
//! normalization of one event per request. Twilio sends no event timestamp, so the caller
//! passes the time it received the request. Sending is in [`send`].

use std::collections::{BTreeMap, BTreeSet};

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use hmac::{Hmac, Mac};
use serde_json::{Map, Value};
use sha1::Sha1;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use crate::model::*;
use crate::{ParseError, SignatureError};

pub mod send;
pub use send::{API_BASE_URL, send_outcome, send_request};

pub const SIGNATURE_HEADER: &str = "x-twilio-signature";

type HmacSha1 = Hmac<Sha1>;

/// Decodes an `application/x-www-form-urlencoded` body, keeping order and repeated names.
pub fn parse_form(body: &[u8]) -> Vec<(String, String)> {
    form_urlencoded::parse(body).into_owned().collect()
}

fn mac_for(auth_token: &[u8], url: &str, params: &[(String, String)]) -> HmacSha1 {
    // Names sorted by code point; each name's values de-duplicated and sorted (the SDKs'
    // `sorted(set(values))`), then `name + value` appended with no separators.
    let mut sorted: BTreeMap<&str, BTreeSet<&str>> = BTreeMap::new();
    for (name, value) in params {
        sorted.entry(name).or_default().insert(value);
    }
    let mut mac = HmacSha1::new_from_slice(auth_token).expect("HMAC accepts keys of any length");
    mac.update(url.as_bytes());
    for (name, values) in sorted {
        for value in values {
            mac.update(name.as_bytes());
            mac.update(value.as_bytes());
        }
    }
    mac
}

/// The `X-Twilio-Signature` Twilio would send for this exact URL and decoded form pairs.
pub fn compute_signature(auth_token: &[u8], url: &str, params: &[(String, String)]) -> String {
    STANDARD.encode(mac_for(auth_token, url, params).finalize().into_bytes())
}

/// Checks `X-Twilio-Signature` for a form POST. `url` must be the public URL Twilio called,
/// query string exactly as received. Like the SDKs, a match is also accepted with the port
/// removed or the scheme's default port added, because Twilio is inconsistent about ports.
pub fn verify_signature(
    auth_token: &[u8],
    url: &str,
    params: &[(String, String)],
    header: Option<&str>,
) -> Result<(), SignatureError> {
    let expected = decode_header(header)?;
    verify_any_url(auth_token, url, params, &expected)
}

/// Checks a JSON-bodied webhook (§2.4): Twilio signs only the URL, which carries
/// `bodySHA256=<hex sha256 of the raw body>`; both the signature and that hash must match.
pub fn verify_json_signature(
    auth_token: &[u8],
    url: &str,
    body: &[u8],
    header: Option<&str>,
) -> Result<(), SignatureError> {
    let expected = decode_header(header)?;
    let signed_hash = query_of(url)
        .and_then(|q| {
            form_urlencoded::parse(q.as_bytes())
                .find(|(name, _)| name == "bodySHA256")
                .map(|(_, value)| value.into_owned())
        })
        .ok_or(SignatureError::Mismatch)?;
    let body_hash = hex::encode(Sha256::digest(body));
    let hash_ok: bool = body_hash.as_bytes().ct_eq(signed_hash.as_bytes()).into();
    let signature_ok = verify_any_url(auth_token, url, &[], &expected).is_ok();
    if hash_ok && signature_ok {
        Ok(())
    } else {
        Err(SignatureError::Mismatch)
    }
}

fn decode_header(header: Option<&str>) -> Result<Vec<u8>, SignatureError> {
    let header = header.map(str::trim).unwrap_or_default();
    if header.is_empty() {
        return Err(SignatureError::Missing);
    }
    STANDARD
        .decode(header)
        .ok()
        .filter(|d| d.len() == 20)
        .ok_or(SignatureError::Malformed)
}

fn verify_any_url(
    auth_token: &[u8],
    url: &str,
    params: &[(String, String)],
    expected: &[u8],
) -> Result<(), SignatureError> {
    let mut ok = false;
    for candidate in url_variants(url) {
        // Not short-circuited, so timing does not reveal which variant matched.
        ok |= mac_for(auth_token, &candidate, params)
            .verify_slice(expected)
            .is_ok();
    }
    if ok {
        Ok(())
    } else {
        Err(SignatureError::Mismatch)
    }
}

fn query_of(url: &str) -> Option<&str> {
    let without_fragment = url.split('#').next().unwrap_or(url);
    without_fragment.split_once('?').map(|(_, q)| q)
}

/// The URL as given, without its port, and with the default port added. Done on the string
/// rather than with `url::Url`, which would drop default ports and re-encode the query.
fn url_variants(url: &str) -> Vec<String> {
    let mut variants = vec![url.to_owned()];
    let Some(scheme_end) = url.find("://") else {
        return variants;
    };
    let authority_start = scheme_end + 3;
    let authority_end = url[authority_start..]
        .find(['/', '?', '#'])
        .map_or(url.len(), |i| authority_start + i);
    let authority = &url[authority_start..authority_end];
    let host_start = authority.rfind('@').map_or(0, |i| i + 1);
    let host_port = &authority[host_start..];
    let port_colon = match host_port.rfind(']') {
        Some(bracket) => host_port[bracket..].find(':').map(|i| bracket + i),
        None => host_port.rfind(':'),
    };
    let (before, after) = (&url[..authority_start + host_start], &url[authority_end..]);
    match port_colon {
        Some(colon) if host_port[colon + 1..].bytes().all(|b| b.is_ascii_digit()) => {
            variants.push(format!("{before}{}{after}", &host_port[..colon]));
        }
        Some(_) => {}
        None => {
            let scheme = &url[..scheme_end];
            let port = if scheme.eq_ignore_ascii_case("https") {
                443
            } else if scheme.eq_ignore_ascii_case("http") {
                80
            } else {
                return variants;
            };
            variants.push(format!("{before}{host_port}:{port}{after}"));
        }
    }
    variants
}

fn param<'p>(params: &'p [(String, String)], name: &str) -> Option<&'p str> {
    params
        .iter()
        .find(|(n, _)| n == name)
        .map(|(_, v)| v.as_str())
}

fn non_empty<'p>(params: &'p [(String, String)], name: &str) -> Option<&'p str> {
    param(params, name).filter(|v| !v.is_empty())
}

/// `status:{MessageSid}:{MessageStatus}` for status callbacks, `msg:{MessageSid}` otherwise.
pub fn dedup_key(params: &[(String, String)]) -> Option<String> {
    let sid = non_empty(params, "MessageSid")?;
    Some(match non_empty(params, "MessageStatus") {
        Some(status) => format!("status:{sid}:{status}"),
        None => format!("msg:{sid}"),
    })
}

/// All params as one JSON object; a repeated name becomes an array of its values.
fn raw_object(params: &[(String, String)]) -> Value {
    let mut map = Map::new();
    for (name, value) in params {
        let value = Value::String(value.clone());
        match map.get_mut(name) {
            None => {
                map.insert(name.clone(), value);
            }
            Some(Value::Array(values)) => values.push(value),
            Some(first) => *first = Value::Array(vec![first.take(), value]),
        }
    }
    Value::Object(map)
}

fn sender(from: &str, profile_name: Option<&str>) -> ContactRef {
    let (identity, phone) = match from.strip_prefix("whatsapp:") {
        Some(number) => {
            let digits = number.trim_start_matches('+');
            (
                Identity {
                    kind: IdentityKind::WhatsappWaId,
                    value: digits.to_owned(),
                },
                Some(format!("+{digits}")),
            )
        }
        // Alphanumeric senders and short codes are kept as-is but are not phone numbers.
        None => (
            Identity {
                kind: IdentityKind::Phone,
                value: from.to_owned(),
            },
            from.starts_with('+').then(|| from.to_owned()),
        ),
    };
    ContactRef {
        identities: vec![identity],
        display_name: profile_name.map(str::to_owned),
        phone,
    }
}

fn media_kind(content_type: Option<&str>) -> MediaKind {
    let content_type = content_type.unwrap_or_default().to_ascii_lowercase();
    match content_type.split('/').next().unwrap_or_default() {
        "image" => MediaKind::Image,
        "audio" => MediaKind::Audio,
        "video" => MediaKind::Video,
        _ if content_type.starts_with("application/pdf") => MediaKind::Document,
        _ => MediaKind::File,
    }
}

/// Normalizes an inbound message webhook. Beyond SMS/MMS it understands the WhatsApp-via-
/// Twilio extras that have a model equivalent: `Latitude`/`Longitude` (location),
/// `ButtonPayload`/`ButtonText` (template quick reply), `OriginalRepliedMessageSid`,
/// `Forwarded`/`FrequentlyForwarded`.
pub fn parse_inbound(
    params: &[(String, String)],
    received_at_ms: i64,
) -> Result<InboundMessage, ParseError> {
    let sid = non_empty(params, "MessageSid").ok_or_else(|| ParseError::shape("no MessageSid"))?;
    let from = non_empty(params, "From").ok_or_else(|| ParseError::shape("no From"))?;
    let body = param(params, "Body").unwrap_or_default();
    let num_media: usize = match non_empty(params, "NumMedia") {
        None => 0,
        Some(n) => n
            .parse()
            .map_err(|_| ParseError::shape(format!("NumMedia is not a count: {n:?}")))?,
    };

    let content = if num_media > 0 {
        let attachments = (0..num_media)
            .map(|i| {
                let url = non_empty(params, &format!("MediaUrl{i}"))
                    .ok_or_else(|| ParseError::shape(format!("no MediaUrl{i}")))?;
                let mime_type = non_empty(params, &format!("MediaContentType{i}"));
                Ok(Attachment {
                    kind: media_kind(mime_type),
                    provider_media_id: None,
                    url: Some(url.to_owned()),
                    mime_type: mime_type.map(str::to_owned),
                    sha256: None,
                    filename: None,
                    voice: false,
                })
            })
            .collect::<Result<Vec<_>, ParseError>>()?;
        MessageContent::Media {
            attachments,
            caption: (!body.is_empty()).then(|| body.to_owned()),
        }
    } else if let (Some(lat), Some(lon)) = (
        non_empty(params, "Latitude").and_then(|v| v.parse().ok()),
        non_empty(params, "Longitude").and_then(|v| v.parse().ok()),
    ) {
        MessageContent::Location {
            latitude: lat,
            longitude: lon,
            name: non_empty(params, "Label").map(str::to_owned),
            address: non_empty(params, "Address").map(str::to_owned),
            url: None,
        }
    } else if let Some(payload) = non_empty(params, "ButtonPayload") {
        MessageContent::Interactive {
            kind: "button".to_owned(),
            id: Some(payload.to_owned()),
            title: non_empty(params, "ButtonText").map(str::to_owned),
            description: None,
        }
    } else {
        MessageContent::Text {
            text: body.to_owned(),
        }
    };

    let flag = |name| param(params, name).is_some_and(|v| v.eq_ignore_ascii_case("true"));
    Ok(InboundMessage {
        route: RouteKey::Inbox,
        provider_message_id: sid.to_owned(),
        sender: sender(from, non_empty(params, "ProfileName")),
        sent_at_ms: received_at_ms,
        content,
        reply_to: non_empty(params, "OriginalRepliedMessageSid").map(str::to_owned),
        forwarded: flag("Forwarded") || flag("FrequentlyForwarded"),
        raw: raw_object(params),
    })
}

/// Normalizes a status callback. `MessageStatus` is required (`SmsStatus` is accepted in its
/// absence); states that do not move the lifecycle map to `status: None`.
pub fn parse_status(
    params: &[(String, String)],
    received_at_ms: i64,
) -> Result<StatusUpdate, ParseError> {
    let sid = non_empty(params, "MessageSid").ok_or_else(|| ParseError::shape("no MessageSid"))?;
    let provider_status = non_empty(params, "MessageStatus")
        .or_else(|| non_empty(params, "SmsStatus"))
        .ok_or_else(|| ParseError::shape("no MessageStatus"))?;
    let status = match provider_status {
        "sent" => Some(DeliveryStatus::Sent),
        "delivered" => Some(DeliveryStatus::Delivered),
        "read" => Some(DeliveryStatus::Read),
        "failed" | "undelivered" => Some(DeliveryStatus::Failed),
        _ => None,
    };
    let errors = non_empty(params, "ErrorCode")
        .map(|code| ProviderError {
            code: code.to_owned(),
            title: non_empty(params, "ErrorMessage").map(str::to_owned),
            details: None,
        })
        .into_iter()
        .collect();
    Ok(StatusUpdate {
        route: RouteKey::Inbox,
        provider_message_id: sid.to_owned(),
        status,
        provider_status: provider_status.to_owned(),
        at_ms: received_at_ms,
        recipient: non_empty(params, "To").map(str::to_owned),
        errors,
        raw: raw_object(params),
    })
}

#[cfg(test)]
mod tests;
