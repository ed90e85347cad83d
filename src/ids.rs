//! Prefixed opaque ids (`acc_…`, `inb_…`, `conv_…`, `msg_…`, `ctc_…`, `evt_…`, `key_…`, `vis_…`).
//!
//! The part after the prefix is a lowercase ULID, so ids sort by creation time: list endpoints
//! page by id and get a stable, time-ordered cursor for free.

pub const ACCOUNT: &str = "acc";
pub const INBOX: &str = "inb";
pub const CONTACT: &str = "ctc";
pub const CONVERSATION: &str = "conv";
pub const MESSAGE: &str = "msg";
pub const INBOUND_EVENT: &str = "evt";
pub const STATUS_EVENT: &str = "sts";
pub const API_KEY: &str = "key";
pub const WEBCHAT_SESSION: &str = "wcs";
pub const VISITOR: &str = "vis";
pub const USER: &str = "usr";
pub const TEAM: &str = "team";
pub const BRANCH: &str = "br";
pub const ROLE: &str = "rol";
pub const SESSION: &str = "ses";
pub const REFRESH_TOKEN: &str = "rft";
pub const AUDIT: &str = "aud";
pub const ROUTING_RULE: &str = "rr";
pub const OFFER: &str = "ofr";
pub const ASSIGNMENT: &str = "asg";
pub const TRACE: &str = "rtr";
pub const CANNED_RESPONSE: &str = "cnd";
pub const TEMPLATE: &str = "tpl";
pub const ALERT: &str = "alr";
pub const ALERT_DELIVERY: &str = "ald";
pub const SLA_POLICY: &str = "sla";
pub const SLA_EVENT: &str = "sle";
pub const WEBHOOK_ENDPOINT: &str = "whe";
pub const WEBHOOK_DELIVERY: &str = "whd";
/// A webhook message (the `webhook-id` header), the same on every attempt and on a replay.
pub const WEBHOOK_MESSAGE: &str = "whm";

pub fn new(prefix: &str) -> String {
    format!(
        "{prefix}_{}",
        ulid::Ulid::new().to_string().to_ascii_lowercase()
    )
}

/// Ids of records declared in config are derived from their slug, so every node that reads the
/// same config agrees on them without coordination.
pub fn from_slug(prefix: &str, slug: &str) -> String {
    format!("{prefix}_{slug}")
}

/// True when `id` has the given prefix and a plausible body; used to answer 404 early.
pub fn has_prefix(id: &str, prefix: &str) -> bool {
    id.strip_prefix(prefix)
        .and_then(|rest| rest.strip_prefix('_'))
        .is_some_and(|body| !body.is_empty() && body.len() <= 64)
}

pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or_default()
}
