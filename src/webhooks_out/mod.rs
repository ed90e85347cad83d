//! Signed webhooks to customers' systems (issue 10, docs/WEBHOOKS_OUT.md), following the
//! Standard Webhooks conventions so receivers verify with existing libraries.
//!
//! This module owns the pure parts: the public event types and how an endpoint's filters match
//! them, the payload every receiver gets (`{type, timestamp, data}`), secrets (`whsec_` + base64
//! of the key bytes) and the signature (`v1,` + base64 HMAC-SHA256 over `id.timestamp.body`).
//! [`deliver`] runs the worker side: the tailer that turns event-log rows into delivery rows,
//! and the sender that attempts them on the schedule.
//!
//! Where events come from: the account's durable event log (docs/LIVE.md), the same events
//! consoles see. Log kinds are public types as they are, for the kinds listed in
//! [`EVENT_TYPES`]; console-only kinds (offers, presence, notes, queue figures) are never sent.
//! `conversation.resolved` is its own log kind (resolving publishes it, not a
//! `conversation.updated`), so a resolved conversation is one `conversation.resolved` event.

pub mod deliver;

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use hmac::{Hmac, Mac};
use rand::RngCore;
use sha2::Sha256;

/// The event types an endpoint may subscribe to. `contact.updated` is sent when a contact's
/// attributes change (`PUT /v1/contacts/{id}/attributes`).
pub const EVENT_TYPES: [&str; 9] = [
    "conversation.created",
    "conversation.updated",
    "conversation.assigned",
    "conversation.resolved",
    "message.created",
    "message.status",
    "contact.updated",
    "sla.warning",
    "sla.breached",
];

/// The type the test endpoint sends; it matches every subscription.
pub const TEST_EVENT: &str = "webhook.test";

/// Checks one subscription filter: a type, `group.*` for a known group, or `*`.
pub fn check_filter(filter: &str) -> Result<(), String> {
    if filter == "*" || EVENT_TYPES.contains(&filter) {
        return Ok(());
    }
    if let Some(group) = filter.strip_suffix(".*")
        && EVENT_TYPES
            .iter()
            .any(|t| t.split_once('.').is_some_and(|(g, _)| g == group))
    {
        return Ok(());
    }
    Err(format!(
        "{filter:?} is not an event type (one of {}, a group such as conversation.*, or *)",
        EVENT_TYPES.join(", ")
    ))
}

/// Whether an endpoint with `filters` gets events of `event_type`.
pub fn matches(filters: &[String], event_type: &str) -> bool {
    EVENT_TYPES.contains(&event_type)
        && filters.iter().any(|f| {
            f == "*"
                || f == event_type
                || f.strip_suffix(".*").is_some_and(|group| {
                    event_type.split_once('.').is_some_and(|(g, _)| g == group)
                })
        })
}

/// The body every receiver gets: `{"type", "timestamp" (RFC 3339, when the event happened),
/// "data"}`; `data` is already JSON.
pub fn payload(event_type: &str, at_ms: i64, data: &str) -> String {
    let kind = serde_json::Value::from(event_type);
    let at = serde_json::Value::from(rfc3339(at_ms));
    format!(r#"{{"type":{kind},"timestamp":{at},"data":{data}}}"#)
}

pub fn rfc3339(ms: i64) -> String {
    time::OffsetDateTime::from_unix_timestamp_nanos(i128::from(ms) * 1_000_000)
        .ok()
        .and_then(|t| {
            t.format(&time::format_description::well_known::Rfc3339)
                .ok()
        })
        .unwrap_or_default()
}

/// A new secret: `whsec_` + base64 of 32 random bytes.
pub fn new_secret() -> String {
    let mut key = [0u8; 32];
    rand::rng().fill_bytes(&mut key);
    format!("whsec_{}", STANDARD.encode(key))
}

/// The key bytes of a `whsec_…` secret.
pub fn secret_key(secret: &str) -> Option<Vec<u8>> {
    STANDARD
        .decode(secret.strip_prefix("whsec_").unwrap_or(secret))
        .ok()
}

/// One signature: `v1,` + base64(HMAC-SHA256(key, "{msg_id}.{timestamp}.{body}")).
pub fn sign(key: &[u8], msg_id: &str, timestamp: i64, body: &[u8]) -> String {
    // HMAC accepts keys of any length; `new_from_slice` cannot fail for it.
    let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(key)
        .unwrap_or_else(|_| unreachable!("HMAC takes any key length"));
    mac.update(msg_id.as_bytes());
    mac.update(b".");
    mac.update(timestamp.to_string().as_bytes());
    mac.update(b".");
    mac.update(body);
    format!("v1,{}", STANDARD.encode(mac.finalize().into_bytes()))
}

/// The `webhook-signature` header: the current secret's signature, then the previous
/// secret's while the rotation's overlap lasts (space-separated).
pub fn signature_header(
    current: &[u8],
    previous: Option<(&[u8], i64)>,
    now_ms: i64,
    msg_id: &str,
    timestamp: i64,
    body: &[u8],
) -> String {
    let mut header = sign(current, msg_id, timestamp, body);
    if let Some((key, until_ms)) = previous
        && now_ms < until_ms
    {
        header.push(' ');
        header.push_str(&sign(key, msg_id, timestamp, body));
    }
    header
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_standard_webhooks_test_vector_signs() {
        let key = secret_key("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw").unwrap();
        assert_eq!(
            sign(
                &key,
                "msg_p5jXN8AQM9LWM0D4loKWxJek",
                1614265330,
                br#"{"test": 2432232314}"#
            ),
            "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="
        );
    }

    #[test]
    fn a_rotated_out_secret_signs_only_during_its_overlap() {
        let (new, old) = (b"new-key".as_slice(), b"old-key".as_slice());
        let during = signature_header(new, Some((old, 2_000)), 1_999, "m", 1, b"{}");
        let after = signature_header(new, Some((old, 2_000)), 2_000, "m", 1, b"{}");
        assert_eq!(
            during,
            format!("{} {}", sign(new, "m", 1, b"{}"), sign(old, "m", 1, b"{}"))
        );
        assert_eq!(after, sign(new, "m", 1, b"{}"));
    }

    #[test]
    fn secrets_are_whsec_and_32_bytes() {
        let s = new_secret();
        assert!(s.starts_with("whsec_"));
        assert_eq!(secret_key(&s).unwrap().len(), 32);
        assert_ne!(s, new_secret());
    }

    #[test]
    fn filters_match_types_groups_and_everything() {
        let f = |v: &[&str]| v.iter().map(|s| (*s).to_owned()).collect::<Vec<_>>();
        assert!(matches(&f(&["*"]), "message.status"));
        assert!(matches(&f(&["conversation.*"]), "conversation.resolved"));
        assert!(!matches(&f(&["conversation.*"]), "message.created"));
        assert!(matches(&f(&["message.created"]), "message.created"));
        // Console-only kinds never go out, whatever the filter.
        assert!(!matches(&f(&["*"]), "offer.created"));
        assert!(!matches(&f(&["*"]), "note.created"));
        for ok in ["*", "sla.*", "contact.updated"] {
            assert!(check_filter(ok).is_ok(), "{ok}");
        }
        for bad in [
            "conversation.deleted",
            "offer.*",
            "",
            "conversation*",
            "*.*",
        ] {
            assert!(check_filter(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn the_payload_is_type_timestamp_data() {
        let p: serde_json::Value = serde_json::from_str(&payload(
            "message.created",
            1_614_265_330_000,
            r#"{"id":"m"}"#,
        ))
        .unwrap();
        assert_eq!(p["type"], "message.created");
        assert_eq!(p["timestamp"], "2021-02-25T15:02:10Z");
        assert_eq!(p["data"]["id"], "m");
    }
}
