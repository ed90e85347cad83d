//! What an agent's reply becomes (docs/OUTBOUND.md, "Composing a reply"): the request body of
//! `POST /v1/conversations/{id}/messages`, checked against the conversation's channel, turned
//! into the content that is stored and the content a provider is asked to send.
//!
//! Everything a provider would refuse later is refused here, up front, with a 422 naming the
//! field: text too long for the channel, a template the inbox has not registered or the wrong
//! number of parameters, a media URL the provider could not fetch, a canned response's variable
//! left unfilled. A reply that passes is one the provider should accept; what it still refuses
//! (it is the judge of its own rules) ends as a clear `failed` status.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use reqwest::header::{CONTENT_LENGTH, CONTENT_TYPE, RANGE};
use serde::Deserialize;
use switchboard_connectors::{
    Attachment, Channel, MediaKind, MessageContent, OutboundContent, OutboundMediaKind,
};
use utoipa::ToSchema;

use super::AppState;
use crate::access::Principal;
use crate::config::OutboundConfig;
use crate::error::ApiError;
use crate::store::conversations::Conversation;

/// An agent's reply: exactly one of `text`, `media`, `template` or `canned_response`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ReplyBody {
    /// Free text: 1 to 4096 characters after trimming (1600 on SMS).
    pub text: Option<String>,
    pub media: Option<MediaIn>,
    /// WhatsApp and SMS: a template registered for the inbox (`/v1/admin/templates`). The one
    /// kind of reply WhatsApp accepts more than 24 hours after the customer last wrote.
    pub template: Option<TemplateSend>,
    /// A canned response's id (`cnd_…`) or short code; its `{{variables}}` are filled from the
    /// conversation (`contact.name`, `contact.phone`, `agent.name`) and from `variables`.
    pub canned_response: Option<String>,
    /// Values for the canned response's own variables (and overrides of the built-in ones).
    #[serde(default)]
    pub variables: BTreeMap<String, String>,
    /// The id (`msg_…`) of the customer's message this answers: WhatsApp shows the reply
    /// threaded under it. Ignored by SMS and web chat.
    pub in_reply_to: Option<String>,
    /// An internal note (text or canned response only): shown to agents as `note.created`,
    /// never sent to the customer.
    #[serde(default)]
    pub private: bool,
}

/// Media by URL. The URL must be reachable from the internet: the provider fetches it. The hub
/// checks that it answers before accepting the reply.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct MediaIn {
    /// `image`, `video`, `audio` or `document`.
    pub kind: String,
    /// An absolute `http(s)` URL.
    pub url: String,
    /// Shown under the media (up to 1024 characters; not for WhatsApp audio).
    pub caption: Option<String>,
    /// The file name a WhatsApp document is shown with (documents only).
    pub filename: Option<String>,
}

/// A template send: WhatsApp `name` and `language` as approved by Meta, or for SMS the Twilio
/// Content SID (`HX…`) and the language it was registered with.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct TemplateSend {
    pub name: String,
    pub language: String,
    /// Positional body parameters, `{{1}}` first.
    #[serde(default)]
    pub parameters: Vec<String>,
}

/// A reply, checked.
#[derive(Debug)]
pub struct Composed {
    /// What is stored and shown to agents.
    pub content: MessageContent,
    /// What the provider is asked to send (nothing is, for a note).
    pub outbound: OutboundContent,
    /// Free-form content, which WhatsApp accepts only inside the 24-hour window.
    pub free_form: bool,
    /// The provider id of the message replied to (WhatsApp context).
    pub reply_to: Option<String>,
}

/// Text length limits: WhatsApp and web chat 4096, SMS 1600 (Twilio's `Body` limit).
fn text_limit(channel: Option<Channel>) -> usize {
    if channel == Some(Channel::Sms) {
        1600
    } else {
        4096
    }
}

fn checked_text(field: &str, text: &str, channel: Option<Channel>) -> Result<String, ApiError> {
    let text = text.trim();
    if text.is_empty() {
        return Err(ApiError::invalid_field(field, "must not be empty"));
    }
    let limit = text_limit(channel);
    if text.chars().count() > limit {
        return Err(ApiError::invalid_field(
            field,
            format!("must be at most {limit} characters on this channel"),
        ));
    }
    Ok(text.to_owned())
}

/// Checks `body` against the conversation and builds what is stored and sent.
pub async fn compose(
    state: &AppState,
    who: &Principal,
    conversation: &Conversation,
    body: ReplyBody,
) -> Result<Composed, ApiError> {
    let given = [
        body.text.is_some(),
        body.media.is_some(),
        body.template.is_some(),
        body.canned_response.is_some(),
    ];
    if given.iter().filter(|g| **g).count() != 1 {
        return Err(ApiError::invalid_field(
            "text",
            "give exactly one of text, media, template or canned_response",
        ));
    }
    if !body.variables.is_empty() && body.canned_response.is_none() {
        return Err(ApiError::invalid_field(
            "variables",
            "only go with canned_response",
        ));
    }
    if body.private && (body.media.is_some() || body.template.is_some()) {
        return Err(ApiError::invalid_field(
            "private",
            "a note is text: use text or canned_response",
        ));
    }
    let channel = Channel::parse(&conversation.channel);
    let reply_to = match body.in_reply_to.as_deref() {
        None => None,
        Some(id) => state
            .store
            .provider_message_id(&conversation.account_id, &conversation.id, id)
            .await?
            .ok_or_else(|| {
                ApiError::invalid_field("in_reply_to", "is not a message of this conversation")
            })?,
    };
    let text = |text: String| Composed {
        content: MessageContent::Text { text: text.clone() },
        outbound: OutboundContent::Text { text },
        free_form: true,
        reply_to: reply_to.clone(),
    };
    if let Some(t) = body.text {
        return Ok(text(checked_text("text", &t, channel)?));
    }
    if let Some(key) = body.canned_response {
        let canned = state
            .store
            .find_canned(&conversation.account_id, &key)
            .await?
            .ok_or_else(|| {
                ApiError::invalid_field(
                    "canned_response",
                    "no canned response has that id or short code",
                )
            })?;
        let rendered = fill(state, who, conversation, &canned.body, body.variables).await?;
        return Ok(text(checked_text("canned_response", &rendered, channel)?));
    }
    if let Some(media) = body.media {
        let (content, outbound) =
            media_reply(&state.media, &state.config.outbound, channel, media).await?;
        return Ok(Composed {
            content,
            outbound,
            free_form: true,
            reply_to,
        });
    }
    let Some(template) = body.template else {
        return Err(ApiError::internal("a reply of no kind passed the count"));
    };
    if !matches!(channel, Some(Channel::Whatsapp | Channel::Sms)) {
        return Err(ApiError::invalid_field(
            "template",
            "templates are sent on WhatsApp and SMS inboxes only",
        ));
    }
    let known = state
        .store
        .find_template(
            &conversation.account_id,
            &conversation.inbox_id,
            &template.name,
            &template.language,
        )
        .await?
        .ok_or_else(|| {
            ApiError::invalid_field(
                "template.name",
                format!(
                    "the inbox has no template {:?} in language {:?} (register it at /v1/admin/templates)",
                    template.name, template.language
                ),
            )
        })?;
    let given = template.parameters.len();
    if i64::try_from(given).ok() != Some(known.parameters) {
        return Err(ApiError::invalid_field(
            "template.parameters",
            format!(
                "the template takes {} parameters, {given} given",
                known.parameters
            ),
        ));
    }
    for (i, p) in template.parameters.iter().enumerate() {
        check_parameter(channel, p)
            .map_err(|m| ApiError::invalid_field(&format!("template.parameters[{i}]"), m))?;
    }
    Ok(Composed {
        content: MessageContent::Template {
            name: template.name.clone(),
            language: template.language.clone(),
            parameters: template.parameters.clone(),
        },
        outbound: OutboundContent::Template {
            name: template.name,
            language: template.language,
            parameters: template.parameters,
        },
        free_form: false,
        reply_to,
    })
}

/// WhatsApp refuses a body parameter that is empty, has a new line or tab, or more than four
/// spaces in a row (error 132018); Twilio takes any non-empty text.
fn check_parameter(channel: Option<Channel>, p: &str) -> Result<(), &'static str> {
    if p.trim().is_empty() {
        return Err("must not be empty");
    }
    if p.chars().count() > 1024 {
        return Err("must be at most 1024 characters");
    }
    if channel == Some(Channel::Whatsapp) && (p.contains(['\n', '\t']) || p.contains("     ")) {
        return Err(
            "WhatsApp refuses new lines, tabs and more than four spaces in a row in a parameter",
        );
    }
    Ok(())
}

// ---- canned responses -------------------------------------------------------------------------

/// The variables the hub fills in itself.
pub const BUILT_IN_VARIABLES: [&str; 3] = ["contact.name", "contact.phone", "agent.name"];

/// The `{{name}}` placeholders of a canned response body, in order of first use, or why the
/// body is malformed. A name is lowercase letters, digits and `_`, optionally with one dotted
/// part (`contact.name`); dotted names must be built-in ones. Spaces inside the braces are
/// allowed (`{{ order_id }}`).
pub fn placeholders(body: &str) -> Result<Vec<String>, String> {
    let mut names = Vec::new();
    let mut rest = body;
    while let Some(start) = rest.find("{{") {
        let after = &rest[start + 2..];
        let end = after
            .find("}}")
            .ok_or_else(|| "has a {{ without its closing }}".to_owned())?;
        let name = after[..end].trim();
        let valid_part = |p: &str| {
            p.chars()
                .next()
                .is_some_and(|c| c.is_ascii_lowercase() || c == '_')
                && p.chars()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
        };
        let parts: Vec<&str> = name.split('.').collect();
        if parts.len() > 2 || !parts.iter().all(|p| valid_part(p)) {
            return Err(format!(
                "{{{{{name}}}}} is not a variable name (lowercase letters, digits and _)"
            ));
        }
        if parts.len() == 2 && !BUILT_IN_VARIABLES.contains(&name) {
            return Err(format!(
                "{{{{{name}}}}} is not a built-in variable (those are {})",
                BUILT_IN_VARIABLES.join(", ")
            ));
        }
        if !names.iter().any(|n| n == name) {
            names.push(name.to_owned());
        }
        rest = &after[end + 2..];
    }
    Ok(names)
}

/// Fills a canned response's placeholders: given `variables` first, then the built-in ones
/// from the conversation. Every placeholder must get a value and every given variable must be
/// used (a misspelt name would otherwise vanish silently).
async fn fill(
    state: &AppState,
    who: &Principal,
    conversation: &Conversation,
    body: &str,
    mut variables: BTreeMap<String, String>,
) -> Result<String, ApiError> {
    let names = placeholders(body)
        .map_err(|m| ApiError::invalid_field("canned_response", format!("its body {m}")))?;
    let used: BTreeSet<&str> = names.iter().map(String::as_str).collect();
    if let Some(unused) = variables.keys().find(|k| !used.contains(k.as_str())) {
        return Err(ApiError::invalid_field(
            &format!("variables.{unused}"),
            "is not used by this canned response",
        ));
    }
    let wanted: Vec<&str> = BUILT_IN_VARIABLES
        .into_iter()
        .filter(|n| used.contains(n) && !variables.contains_key(*n))
        .collect();
    let needs = |n: &str| wanted.contains(&n);
    if needs("contact.name") || needs("contact.phone") {
        let contact = state
            .store
            .get_contact(
                &conversation.account_id,
                &crate::access::RecordScope::all(),
                &conversation.contact_id,
            )
            .await?;
        for (name, value) in [
            (
                "contact.name",
                contact.as_ref().and_then(|c| c.name.clone()),
            ),
            (
                "contact.phone",
                contact.as_ref().and_then(|c| c.phone.clone()),
            ),
        ] {
            if let (true, Some(v)) = (needs(name), value) {
                variables.insert(name.to_owned(), v);
            }
        }
    }
    if needs("agent.name")
        && let Some(user_id) = who.user_id.as_deref()
        && let Some(user) = state.store.get_user(&who.account_id, user_id).await?
    {
        variables.insert("agent.name".to_owned(), user.name);
    }
    if let Some(missing) = names.iter().find(|n| !variables.contains_key(n.as_str())) {
        let message = if BUILT_IN_VARIABLES.contains(&missing.as_str()) {
            "is not on record for this conversation; give it here"
        } else {
            "is required by this canned response"
        };
        return Err(ApiError::invalid_field(
            &format!("variables.{missing}"),
            message,
        ));
    }
    let mut out = String::with_capacity(body.len());
    let mut rest = body;
    while let Some(start) = rest.find("{{") {
        out.push_str(&rest[..start]);
        let after = &rest[start + 2..];
        let end = after.find("}}").unwrap_or(after.len());
        if let Some(value) = variables.get(after[..end].trim()) {
            out.push_str(value);
        }
        rest = after.get(end + 2..).unwrap_or_default();
    }
    out.push_str(rest);
    Ok(out)
}

// ---- media -----------------------------------------------------------------------------------

/// What the media URL answered.
struct Probe {
    mime: Option<String>,
    bytes: Option<u64>,
}

/// The largest file each channel takes, by kind: WhatsApp's media limits, Twilio's 5 MB per
/// MMS. Web chat has none of its own (the visitor's browser fetches the URL).
fn size_limit(channel: Option<Channel>, kind: OutboundMediaKind) -> Option<u64> {
    const MB: u64 = 1024 * 1024;
    match channel? {
        Channel::Whatsapp => Some(match kind {
            OutboundMediaKind::Image => 5 * MB,
            OutboundMediaKind::Video | OutboundMediaKind::Audio => 16 * MB,
            OutboundMediaKind::Document => 100 * MB,
        }),
        Channel::Sms => Some(5 * MB),
        Channel::Webchat => None,
    }
}

async fn media_reply(
    client: &reqwest::Client,
    config: &OutboundConfig,
    channel: Option<Channel>,
    media: MediaIn,
) -> Result<(MessageContent, OutboundContent), ApiError> {
    let kind: OutboundMediaKind =
        media
            .kind
            .parse()
            .map_err(|e: switchboard_connectors::UnknownMediaKind| {
                ApiError::invalid_field("media.kind", e.to_string())
            })?;
    let caption = media
        .caption
        .as_deref()
        .map(str::trim)
        .filter(|c| !c.is_empty())
        .map(str::to_owned);
    if let Some(c) = &caption {
        let limit = if channel == Some(Channel::Sms) {
            1600
        } else {
            1024
        };
        if c.chars().count() > limit {
            return Err(ApiError::invalid_field(
                "media.caption",
                format!("must be at most {limit} characters"),
            ));
        }
        if channel == Some(Channel::Whatsapp) && kind == OutboundMediaKind::Audio {
            return Err(ApiError::invalid_field(
                "media.caption",
                "WhatsApp cannot caption audio; send the text as a reply of its own",
            ));
        }
    }
    let filename = media.filename.filter(|f| !f.trim().is_empty());
    if let Some(f) = &filename {
        if kind != OutboundMediaKind::Document {
            return Err(ApiError::invalid_field(
                "media.filename",
                "only a document has a file name",
            ));
        }
        if f.chars().count() > 240 || f.contains(['/', '\\']) {
            return Err(ApiError::invalid_field(
                "media.filename",
                "must be a file name of at most 240 characters, without / or \\",
            ));
        }
    }
    let url = url::Url::parse(media.url.trim())
        .ok()
        .filter(|u| matches!(u.scheme(), "http" | "https") && u.host().is_some())
        .ok_or_else(|| ApiError::invalid_field("media.url", "must be an absolute http(s) URL"))?;
    let probe = probe(client, config, &url)
        .await
        .map_err(|m| ApiError::invalid_field("media.url", m))?;
    if let Some(mime) = probe.mime.as_deref() {
        let family = mime.split('/').next().unwrap_or_default();
        let fits = match kind {
            OutboundMediaKind::Image => family == "image",
            OutboundMediaKind::Video => family == "video",
            OutboundMediaKind::Audio => family == "audio",
            OutboundMediaKind::Document => true,
        };
        // A server that does not know says application/octet-stream; that proves nothing.
        if !fits && mime != "application/octet-stream" {
            return Err(ApiError::invalid_field(
                "media.url",
                format!("serves {mime}, which is not {kind}"),
            ));
        }
    }
    if let (Some(bytes), Some(limit)) = (probe.bytes, size_limit(channel, kind))
        && bytes > limit
    {
        return Err(ApiError::invalid_field(
            "media.url",
            format!("is {bytes} bytes; this channel takes at most {limit} bytes for {kind}"),
        ));
    }
    let stored_kind = match kind {
        OutboundMediaKind::Image => MediaKind::Image,
        OutboundMediaKind::Video => MediaKind::Video,
        OutboundMediaKind::Audio => MediaKind::Audio,
        OutboundMediaKind::Document => MediaKind::Document,
    };
    let content = MessageContent::Media {
        attachments: vec![Attachment {
            kind: stored_kind,
            provider_media_id: None,
            url: Some(url.to_string()),
            mime_type: probe.mime,
            sha256: None,
            filename: filename.clone(),
            voice: false,
        }],
        caption: caption.clone(),
    };
    let outbound = OutboundContent::Media {
        kind,
        url: url.to_string(),
        caption,
        filename,
    };
    Ok((content, outbound))
}

/// The client for [`probe`]: a few redirects at most; the timeout is per request.
pub fn media_client() -> anyhow::Result<reqwest::Client> {
    Ok(reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::limited(3))
        .user_agent(concat!("switchboard/", env!("CARGO_PKG_VERSION")))
        .build()?)
}

/// Asks the media URL whether it answers: `HEAD`, or a one-byte ranged `GET` where the server
/// does not do `HEAD`. Addresses the provider could never reach (loopback, private, link-local)
/// are refused unless `outbound.allow_private_media_urls` is set, which also keeps the check
/// from probing the hub's own network. The name is resolved here and again by the HTTP client,
/// so a name that changes its answer in between could still slip through: this check is about
/// mistakes, not a firewall.
async fn probe(
    client: &reqwest::Client,
    config: &OutboundConfig,
    url: &url::Url,
) -> Result<Probe, String> {
    if !config.allow_private_media_urls {
        let host = url.host_str().unwrap_or_default();
        let port = url.port_or_known_default().unwrap_or(443);
        let addrs = tokio::net::lookup_host((host.trim_matches(['[', ']']), port))
            .await
            .map_err(|e| format!("could not be resolved: {e}"))?;
        for addr in addrs {
            if !crate::ssrf::is_public(addr.ip()) {
                return Err(format!(
                    "points at {}, a private address the provider cannot fetch",
                    addr.ip()
                ));
            }
        }
    }
    let timeout = Duration::from_millis(config.media_check_timeout_ms);
    let send = |request: reqwest::RequestBuilder| async move {
        request
            .timeout(timeout)
            .send()
            .await
            .map_err(|e| format!("could not be fetched: {}", without_url(&e)))
    };
    let mut response = send(client.head(url.clone())).await?;
    if matches!(response.status().as_u16(), 403 | 405 | 501) {
        response = send(client.get(url.clone()).header(RANGE, "bytes=0-0")).await?;
    }
    let status = response.status();
    if !status.is_success() {
        return Err(format!("answered HTTP {status}"));
    }
    let header = |name| {
        response
            .headers()
            .get(name)
            .and_then(|v: &reqwest::header::HeaderValue| v.to_str().ok())
            .map(str::to_owned)
    };
    let mime = header(CONTENT_TYPE)
        .and_then(|v| v.split(';').next().map(|m| m.trim().to_ascii_lowercase()))
        .filter(|m| m.contains('/'));
    // A ranged answer's length is the range's; the whole size is after the `/` of
    // `Content-Range: bytes 0-0/12345`.
    let bytes = if status == reqwest::StatusCode::PARTIAL_CONTENT {
        header(reqwest::header::CONTENT_RANGE)
            .and_then(|r| r.rsplit('/').next().and_then(|n| n.parse().ok()))
    } else {
        header(CONTENT_LENGTH).and_then(|n| n.parse().ok())
    };
    Ok(Probe { mime, bytes })
}

/// reqwest's error text repeats the URL, which the field already names.
fn without_url(e: &reqwest::Error) -> String {
    if e.is_timeout() {
        "no answer in time".to_owned()
    } else if e.is_connect() {
        "the connection was refused or failed".to_owned()
    } else if e.is_redirect() {
        "it redirects too often".to_owned()
    } else {
        "the request failed".to_owned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn placeholders_are_read_in_order_once_each() {
        assert_eq!(
            placeholders(
                "Hi {{contact.name}}, order {{ order_id }} ({{order_id}}) by {{agent.name}}"
            )
            .unwrap(),
            vec!["contact.name", "order_id", "agent.name"]
        );
        assert_eq!(placeholders("no variables").unwrap(), Vec::<String>::new());
    }

    #[test]
    fn malformed_placeholders_are_named() {
        assert!(placeholders("Hi {{name").unwrap_err().contains("closing"));
        assert!(placeholders("{{Order}}").unwrap_err().contains("{{Order}}"));
        assert!(placeholders("{{a.b.c}}").unwrap_err().contains("{{a.b.c}}"));
        assert!(
            placeholders("{{contact.email}}")
                .unwrap_err()
                .contains("not a built-in")
        );
        assert!(placeholders("{{}}").is_err());
    }

    #[test]
    fn whatsapp_parameters_follow_metas_rules() {
        let wa = Some(Channel::Whatsapp);
        assert!(check_parameter(wa, "A-1001").is_ok());
        assert!(check_parameter(wa, " ").is_err());
        assert!(check_parameter(wa, "two\nlines").is_err());
        assert!(check_parameter(wa, "wide     gap").is_err());
        assert!(check_parameter(Some(Channel::Sms), "two\nlines").is_ok());
    }
}
