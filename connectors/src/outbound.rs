//! The outbound side: what the hub asks a provider to send, the request that asks it, and
//! what the provider's answer means for the send job.
//!
//! Like the rest of the crate this is pure. Each provider module builds a [`ProviderRequest`]
//! (`whatsapp::send_request`, `twilio::send_request`) and classifies the HTTP answer into a
//! [`SendOutcome`] (`whatsapp::send_outcome`, `twilio::send_outcome`); the caller owns the HTTP
//! client, the base URL, authentication and the retry schedule. When the HTTP call itself
//! fails there is no body to classify, so [`SendFailure::timeout`] and
//! [`SendFailure::unreachable`] stand in for the provider's answer.
//!
//! Neither provider offers an idempotency key for sends, so "transient" means "worth another
//! attempt", not "certainly not sent": see [`SendFailure::timeout`].

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use serde::{Deserialize, Serialize};

/// What an agent's reply asks a provider to send, tagged by `type` when serialized.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum OutboundContent {
    Text {
        text: String,
    },
    /// Media by public URL: the provider fetches it, so it must be reachable from the
    /// internet. WhatsApp needs the kind to pick the message type; Twilio only sends the URL.
    Media {
        kind: OutboundMediaKind,
        url: String,
        /// Sent as WhatsApp `caption` (not for audio, which WhatsApp cannot caption) or as
        /// the Twilio `Body`.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        caption: Option<String>,
        /// The name shown for a WhatsApp document; ignored otherwise.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        filename: Option<String>,
    },
    /// A pre-approved template, the only thing a business may send outside WhatsApp's 24-hour
    /// window. WhatsApp: template `name`, `language` code and positional text body
    /// parameters. Twilio: `name` is a Content SID (`HX…`), `language` is unused (a Content
    /// template's language is part of it) and the parameters become `ContentVariables`
    /// `{"1":…,"2":…}`.
    Template {
        name: String,
        language: String,
        #[serde(default)]
        parameters: Vec<String>,
    },
}

/// The kind of media an [`OutboundContent::Media`] carries. Named apart from the inbound
/// [`MediaKind`](crate::MediaKind), which also has kinds the hub never sends.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OutboundMediaKind {
    Image,
    Video,
    Audio,
    Document,
}

impl OutboundMediaKind {
    /// The snake_case name, which is also the WhatsApp message `type`.
    pub fn as_str(self) -> &'static str {
        match self {
            OutboundMediaKind::Image => "image",
            OutboundMediaKind::Video => "video",
            OutboundMediaKind::Audio => "audio",
            OutboundMediaKind::Document => "document",
        }
    }
}

impl fmt::Display for OutboundMediaKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A media kind name that is not one of `image`, `video`, `audio`, `document`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown media kind {0:?} (expected image, video, audio or document)")]
pub struct UnknownMediaKind(pub String);

impl FromStr for OutboundMediaKind {
    type Err = UnknownMediaKind;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "image" => Ok(OutboundMediaKind::Image),
            "video" => Ok(OutboundMediaKind::Video),
            "audio" => Ok(OutboundMediaKind::Audio),
            "document" => Ok(OutboundMediaKind::Document),
            other => Err(UnknownMediaKind(other.to_owned())),
        }
    }
}

/// One message to send, as stored in a send job.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OutboundMessage {
    /// WhatsApp: a `wa_id`/phone number, or a business-scoped user id (`US.1349…`, recognized
    /// by its `.`). Twilio: an E.164 number, or `whatsapp:+…` for WhatsApp via Twilio.
    pub to: String,
    pub content: OutboundContent,
    /// The provider message id to thread under (WhatsApp `context.message_id`). Twilio has
    /// no reply threading and ignores it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reply_to: Option<String>,
    /// The hub's own id for the message (`msg_…`). WhatsApp echoes it in status webhooks as
    /// `biz_opaque_callback_data`; Twilio has no such field, so put it in the status callback
    /// URL instead if it is wanted back.
    pub reference: String,
}

/// A provider HTTP request, always a `POST`, minus the base URL and credentials (the provider
/// modules document which of each the caller adds).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProviderRequest {
    /// Starts with `/`; append it to the provider's base URL.
    pub path_and_query: String,
    pub content_type: &'static str,
    pub body: Vec<u8>,
}

/// What the provider's answer to a send means.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SendOutcome {
    /// The provider took the message. This is not delivery: failures can still arrive later
    /// as a status webhook.
    Accepted {
        provider_message_id: String,
        /// The provider's word for the message's state at acceptance (WhatsApp
        /// `message_status`, Twilio `status`), when it gave one.
        provider_status: Option<String>,
    },
    Failed(SendFailure),
}

/// Why a send did not go through, and whether trying again can help.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
#[error("{reason} (code {code})")]
pub struct SendFailure {
    /// The provider's error code as a string (`"131047"`, `"21211"`), or one of ours:
    /// `http_{status}` when the body named no code, `malformed_response`, `timeout`,
    /// `unreachable`.
    pub code: String,
    /// For people: our sentence for the code, followed by what the provider said.
    pub reason: String,
    pub retry: Retry,
}

/// Whether a failed send is worth another attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Retry {
    /// Try again. `after` is the provider's `Retry-After`, or a minimum wait the error code
    /// calls for; `None` leaves the delay to the caller's backoff.
    Transient {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        after: Option<Duration>,
    },
    /// The same request will fail the same way; something must change first.
    Permanent,
}

impl SendFailure {
    /// The HTTP call timed out. Transient, but the provider may well have accepted the
    /// message: neither WhatsApp nor Twilio offers an idempotency key for sends, so retrying
    /// after a timeout (or a 5xx) can deliver the message twice. The caller decides whether a
    /// possible duplicate is better than a possible loss.
    pub fn timeout() -> Self {
        SendFailure {
            code: "timeout".to_owned(),
            reason: "The provider did not answer in time; the message may or may not have been \
                     sent."
                .to_owned(),
            retry: Retry::Transient { after: None },
        }
    }

    /// The provider could not be reached (DNS, connect, TLS, connection reset…). Transient.
    /// A failure before the request was written cannot duplicate the message; one after it
    /// (a reset while waiting for the answer) is as ambiguous as [`SendFailure::timeout`].
    pub fn unreachable(detail: impl fmt::Display) -> Self {
        SendFailure {
            code: "unreachable".to_owned(),
            reason: format!("Could not reach the provider: {detail}"),
            retry: Retry::Transient { after: None },
        }
    }

    pub fn is_transient(&self) -> bool {
        matches!(self.retry, Retry::Transient { .. })
    }
}

/// The delay a `Retry-After` header asks for. Only the delta-seconds form is understood: an
/// HTTP-date would need a clock, which this crate does not read, so it yields `None` and the
/// caller's backoff applies.
pub(crate) fn parse_retry_after(header: Option<&str>) -> Option<Duration> {
    let value = header?.trim();
    if value.is_empty() || !value.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    value.parse().ok().map(Duration::from_secs)
}

/// Whether an HTTP status alone says "try again later": throttled or a server-side error.
pub(crate) fn transient_status(status: u16) -> bool {
    status == 429 || (500..=599).contains(&status)
}

/// The outcome for a failure status whose body could not be read as the provider's error.
pub(crate) fn status_only_failure(
    provider: &str,
    status: u16,
    retry_after: Option<Duration>,
) -> SendFailure {
    let (reason, retry) = if transient_status(status) {
        (
            format!("{provider} answered HTTP {status} without a readable error; will retry."),
            Retry::Transient { after: retry_after },
        )
    } else {
        (
            format!("{provider} answered HTTP {status} without a readable error."),
            Retry::Permanent,
        )
    };
    SendFailure {
        code: format!("http_{status}"),
        reason,
        retry,
    }
}

/// A 2xx answer without a message id. Not retried: the provider may have sent the message,
/// and a retry could send it again.
pub(crate) fn malformed_success(provider: &str, status: u16) -> SendFailure {
    SendFailure {
        code: "malformed_response".to_owned(),
        reason: format!(
            "{provider} answered HTTP {status} but the body has no message id; not retried \
             because the message may have been sent."
        ),
        retry: Retry::Permanent,
    }
}

/// `ours`, then whatever the provider said, without repeating a detail the message already
/// contains.
pub(crate) fn reason(ours: &str, message: Option<&str>, details: Option<&str>) -> String {
    let message = message.map(str::trim).filter(|m| !m.is_empty());
    let details = details
        .map(str::trim)
        .filter(|d| !d.is_empty() && !message.is_some_and(|m| m.contains(d)));
    match (message, details) {
        (Some(m), Some(d)) => format!("{ours} Provider said: {m} ({d})"),
        (Some(s), None) | (None, Some(s)) => format!("{ours} Provider said: {s}"),
        (None, None) => ours.to_owned(),
    }
}

/// Percent-encodes one path segment (everything but RFC 3986 unreserved characters), so a
/// configured id can never change the request path.
pub(crate) fn path_segment(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// A JSON error code as a string: Meta sends numbers, some Twilio bodies strings.
pub(crate) fn code_of(v: Option<&serde_json::Value>) -> Option<String> {
    match v? {
        serde_json::Value::Number(n) => Some(n.to_string()),
        serde_json::Value::String(s) if !s.trim().is_empty() => Some(s.trim().to_owned()),
        _ => None,
    }
}

#[cfg(test)]
mod tests;
