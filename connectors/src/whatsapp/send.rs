//! Sending through the WhatsApp Cloud API (PROVIDERS.md §1.7): the `POST
//! /{version}/{phone-number-id}/messages` body, and the classification of Meta's answer.
//!
//! The caller sends the request to [`API_BASE_URL`] with `Authorization: Bearer <token>`
//! (a system-user or business token for the WABA that owns the phone number).
//!
//! A 200 only means Meta accepted the message. Many failures (131047, 131026, 131049, …)
//! arrive later as a `failed` status webhook, which [`parse`](super::parse) already turns into
//! a [`StatusUpdate`](crate::StatusUpdate) with its errors.

use std::borrow::Cow;
use std::time::Duration;

use serde::Serialize;
use serde_json::Value;

use crate::outbound::{
    OutboundContent, OutboundMediaKind, OutboundMessage, ProviderRequest, Retry, SendFailure,
    SendOutcome, code_of, malformed_success, parse_retry_after, path_segment, reason,
    status_only_failure, transient_status,
};

pub const API_BASE_URL: &str = "https://graph.facebook.com";

const PROVIDER: &str = "WhatsApp";

/// The pair rate limit (131056) allows about one message per 6 s to the same recipient
/// (PROVIDERS.md §1.7, second-hand), so retrying sooner is pointless.
const PAIR_RATE_WAIT: Duration = Duration::from_secs(6);

/// Our choice, not a number Meta publishes: how long to hold off after a spam rate limit
/// (131048) or a register/deregister throttle (133016), which both ask for a long pause.
const LONG_BACKOFF: Duration = Duration::from_secs(15 * 60);

#[derive(Serialize)]
struct Body<'a> {
    messaging_product: &'static str,
    recipient_type: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    to: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    recipient: Option<&'a str>,
    #[serde(rename = "type")]
    kind: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    text: Option<Text<'a>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    image: Option<Media<'a>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    video: Option<Media<'a>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    audio: Option<Media<'a>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    document: Option<Media<'a>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    template: Option<Template<'a>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    context: Option<Context<'a>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    biz_opaque_callback_data: Option<&'a str>,
}

#[derive(Serialize)]
struct Text<'a> {
    preview_url: bool,
    body: &'a str,
}

#[derive(Serialize)]
struct Media<'a> {
    link: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    caption: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    filename: Option<&'a str>,
}

#[derive(Serialize)]
struct Template<'a> {
    name: &'a str,
    language: Language<'a>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    components: Vec<Component<'a>>,
}

#[derive(Serialize)]
struct Language<'a> {
    code: &'a str,
}

#[derive(Serialize)]
struct Component<'a> {
    #[serde(rename = "type")]
    kind: &'static str,
    parameters: Vec<Parameter<'a>>,
}

#[derive(Serialize)]
struct Parameter<'a> {
    #[serde(rename = "type")]
    kind: &'static str,
    text: &'a str,
}

#[derive(Serialize)]
struct Context<'a> {
    message_id: &'a str,
}

/// A business-scoped user id (`US.13491208655302741918`) has a `.`; a `wa_id` or phone
/// number never does.
fn is_bsuid(to: &str) -> bool {
    to.contains('.')
}

fn present(s: Option<&str>) -> Option<&str> {
    s.filter(|s| !s.is_empty())
}

/// The send request for `msg`, for the phone number `phone_number_id`, on Graph API version
/// `api_version` (`"v23.0"`). Both are percent-encoded into the path.
///
/// Text goes out with `preview_url: false`: link previews are the agent UI's business, not a
/// surprise on the customer's phone. A BSUID recipient is addressed with `recipient` instead of
/// `to`. WhatsApp cannot caption audio and names only documents, so those fields are dropped
/// elsewhere; a caller that must not lose an audio caption sends it as its own text. Empty
/// captions, filenames, `reply_to` and `reference` are left out rather than sent empty.
pub fn send_request(
    api_version: &str,
    phone_number_id: &str,
    msg: &OutboundMessage,
) -> ProviderRequest {
    let bsuid = is_bsuid(&msg.to);
    let mut body = Body {
        messaging_product: "whatsapp",
        recipient_type: "individual",
        to: (!bsuid).then_some(msg.to.as_str()),
        recipient: bsuid.then_some(msg.to.as_str()),
        kind: "text",
        text: None,
        image: None,
        video: None,
        audio: None,
        document: None,
        template: None,
        context: present(msg.reply_to.as_deref()).map(|message_id| Context { message_id }),
        biz_opaque_callback_data: Some(msg.reference.as_str()).filter(|r| !r.is_empty()),
    };
    match &msg.content {
        OutboundContent::Text { text } => {
            body.text = Some(Text {
                preview_url: false,
                body: text,
            });
        }
        OutboundContent::Media {
            kind,
            url,
            caption,
            filename,
        } => {
            let media = Media {
                link: url,
                caption: present(caption.as_deref()).filter(|_| *kind != OutboundMediaKind::Audio),
                filename: present(filename.as_deref())
                    .filter(|_| *kind == OutboundMediaKind::Document),
            };
            body.kind = kind.as_str();
            let slot = match kind {
                OutboundMediaKind::Image => &mut body.image,
                OutboundMediaKind::Video => &mut body.video,
                OutboundMediaKind::Audio => &mut body.audio,
                OutboundMediaKind::Document => &mut body.document,
            };
            *slot = Some(media);
        }
        OutboundContent::Template {
            name,
            language,
            parameters,
        } => {
            body.kind = "template";
            let components = if parameters.is_empty() {
                Vec::new()
            } else {
                vec![Component {
                    kind: "body",
                    parameters: parameters
                        .iter()
                        .map(|text| Parameter { kind: "text", text })
                        .collect(),
                }]
            };
            body.template = Some(Template {
                name,
                language: Language { code: language },
                components,
            });
        }
    }
    ProviderRequest {
        path_and_query: format!(
            "/{}/{}/messages",
            path_segment(api_version),
            path_segment(phone_number_id)
        ),
        content_type: "application/json",
        body: serde_json::to_vec(&body).expect("plain structs with string keys always serialize"),
    }
}

fn str_at<'v>(v: &'v Value, key: &str) -> Option<&'v str> {
    v.get(key)?.as_str().filter(|s| !s.is_empty())
}

/// What Meta's answer to a send means. `retry_after` is the raw `Retry-After` header.
///
/// A body with a Graph `error` object is classified by `error.code` (PROVIDERS.md §1.7 says
/// the HTTP status alone does not tell throttling from permanent errors); a code outside the
/// table is transient only with a 429 or 5xx. A 2xx needs `messages[0].id`. A body that is not
/// Meta's JSON is judged by its status alone. A transient failure waits for `Retry-After` when
/// given, else for the minimum its code calls for (6 s for the pair rate limit 131056).
///
/// Meta documents no idempotency key for sends either: a retry after a 5xx that Meta had in
/// fact processed, or after a timeout, can deliver the message twice.
pub fn send_outcome(http_status: u16, retry_after: Option<&str>, body: &[u8]) -> SendOutcome {
    let retry_after = parse_retry_after(retry_after);
    let root: Option<Value> = serde_json::from_slice(body).ok();
    if let Some(error) = root
        .as_ref()
        .and_then(|r| r.get("error"))
        .filter(|e| e.is_object())
    {
        return SendOutcome::Failed(classify(http_status, retry_after, error));
    }
    if !(200..=299).contains(&http_status) {
        return SendOutcome::Failed(status_only_failure(PROVIDER, http_status, retry_after));
    }
    let message = root
        .as_ref()
        .and_then(|r| r.get("messages"))
        .and_then(|m| m.get(0));
    match message.and_then(|m| str_at(m, "id")) {
        Some(id) => SendOutcome::Accepted {
            provider_message_id: id.to_owned(),
            provider_status: message
                .and_then(|m| str_at(m, "message_status"))
                .map(str::to_owned),
        },
        None => SendOutcome::Failed(malformed_success(PROVIDER, http_status)),
    }
}

enum Class {
    /// Transient, waiting at least this long when the provider gave no `Retry-After`.
    Transient(Option<Duration>),
    Permanent,
}

/// Our sentence and retry class for the codes of PROVIDERS.md §1.7.
fn known(code: i64) -> Option<(&'static str, Class)> {
    use Class::{Permanent, Transient};
    Some(match code {
        130429 => (
            "WhatsApp's message throughput limit for this phone number was reached.",
            Transient(None),
        ),
        131056 => (
            "Too many messages were sent to this customer in a short time.",
            Transient(Some(PAIR_RATE_WAIT)),
        ),
        80007 => (
            "The WhatsApp Business Account reached its rate limit.",
            Transient(None),
        ),
        4 => ("The app reached its Graph API call limit.", Transient(None)),
        131048 => (
            "Sending is limited because too many recent messages were blocked or reported as \
             spam; slow down.",
            Transient(Some(LONG_BACKOFF)),
        ),
        131016 => (
            "The WhatsApp service is temporarily unavailable.",
            Transient(None),
        ),
        131000 => (
            "WhatsApp failed to send the message for an unknown reason.",
            Transient(None),
        ),
        133016 => (
            "Too many register/deregister attempts for this phone number.",
            Transient(Some(LONG_BACKOFF)),
        ),
        1 => ("The Graph API reported an unknown error.", Transient(None)),
        2 => ("The Graph API is temporarily unavailable.", Transient(None)),
        131047 => (
            "More than 24 hours have passed since the customer last wrote; send a template \
             instead.",
            Permanent,
        ),
        131026 => (
            "The message is undeliverable: the number may not be on WhatsApp, the customer may \
             use an outdated app, or may have blocked the business.",
            Permanent,
        ),
        131049 => (
            "WhatsApp held the message back to keep engagement healthy (per-customer marketing \
             limit); do not resend soon.",
            Permanent,
        ),
        131050 => (
            "The customer has stopped marketing messages from this business.",
            Permanent,
        ),
        131051 => ("WhatsApp does not support this message type.", Permanent),
        131052 => (
            "WhatsApp could not download the media; check that the URL is public and the file \
             type is supported.",
            Permanent,
        ),
        131053 => (
            "WhatsApp could not process the uploaded media; check its type and size.",
            Permanent,
        ),
        131008 => (
            "A required parameter is missing from the request.",
            Permanent,
        ),
        131009 => ("A parameter value in the request is invalid.", Permanent),
        131030 => (
            "The customer is not in this test number's allowed recipient list.",
            Permanent,
        ),
        131042 => (
            "The business account has a payment problem; check its payment method.",
            Permanent,
        ),
        131031 => ("The business account is locked.", Permanent),
        368 => (
            "The business account is temporarily blocked for policy violations.",
            Permanent,
        ),
        130497 => (
            "The business account may not message customers in this country.",
            Permanent,
        ),
        132000 => (
            "The number of template parameters does not match the template.",
            Permanent,
        ),
        132001 => (
            "The template does not exist in this language or is not approved.",
            Permanent,
        ),
        132005 => (
            "The template text is too long once its parameters are filled in.",
            Permanent,
        ),
        132007 => (
            "The template content violates a WhatsApp policy.",
            Permanent,
        ),
        132008 => (
            "A template parameter value is formatted incorrectly.",
            Permanent,
        ),
        132012 => (
            "A template parameter does not match the template's parameter format.",
            Permanent,
        ),
        132015 => ("The template is paused because of low quality.", Permanent),
        132016 => (
            "The template is permanently disabled because of low quality.",
            Permanent,
        ),
        190 => (
            "The WhatsApp access token has expired or is invalid; replace it in the inbox \
             settings.",
            Permanent,
        ),
        0 => ("Authentication with the Graph API failed.", Permanent),
        3 => (
            "The app lacks the capability this API call needs.",
            Permanent,
        ),
        10 | 200..=299 => (
            "The access token lacks the permission this API call needs.",
            Permanent,
        ),
        _ => return None,
    })
}

/// Whether a failure's code says Meta refused the inbox's credentials (an expired or revoked
/// token, a missing permission): the inbox needs an operator, not a retry.
pub fn credentials_rejected(code: &str) -> bool {
    code.parse::<i64>()
        .is_ok_and(|c| matches!(c, 190 | 0 | 3 | 10 | 200..=299))
}

fn classify(status: u16, retry_after: Option<Duration>, error: &Value) -> SendFailure {
    let code = code_of(error.get("code"));
    let message = str_at(error, "message");
    let details = error.get("error_data").and_then(|d| str_at(d, "details"));
    let (ours, class) = match code.as_deref().and_then(|c| c.parse().ok()).and_then(known) {
        Some((ours, class)) => (Cow::Borrowed(ours), class),
        None => {
            let label = code.as_deref().unwrap_or("none");
            if transient_status(status) {
                let ours =
                    format!("WhatsApp could not take the message (HTTP {status}, error {label}).");
                (Cow::Owned(ours), Class::Transient(None))
            } else {
                let ours = format!("WhatsApp rejected the message (HTTP {status}, error {label}).");
                (Cow::Owned(ours), Class::Permanent)
            }
        }
    };
    SendFailure {
        code: code.unwrap_or_else(|| format!("http_{status}")),
        reason: reason(&ours, message, details),
        retry: match class {
            Class::Transient(wait) => Retry::Transient {
                after: retry_after.or(wait),
            },
            Class::Permanent => Retry::Permanent,
        },
    }
}

#[cfg(test)]
mod tests;
