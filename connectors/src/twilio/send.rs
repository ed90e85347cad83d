//! Sending through Twilio's Messages API (PROVIDERS.md §2.7): the form body of `POST
//! /2010-04-01/Accounts/{AccountSid}/Messages.json`, and the classification of Twilio's
//! answer.
//!
//! The caller sends the request to [`API_BASE_URL`] with HTTP Basic auth
//! `AccountSid:AuthToken` (or `ApiKeySid:ApiKeySecret`).
//!
//! **Twilio has no idempotency key for Messages.** A 5xx may come back for a message Twilio
//! did process, and a timeout says nothing either way, so retrying after either can send the
//! customer the same message twice. Only 20429 is documented as "not processed, always safe to
//! retry". The classification below still calls 5xx transient (losing a reply is usually worse
//! than repeating one); a caller that prefers the opposite can treat `http_5xx` codes as final.

use std::borrow::Cow;
use std::time::Duration;

use serde_json::Value;

use crate::outbound::{
    OutboundContent, OutboundMessage, ProviderRequest, Retry, SendFailure, SendOutcome, code_of,
    malformed_success, parse_retry_after, path_segment, reason, status_only_failure,
    transient_status,
};

pub const API_BASE_URL: &str = "https://api.twilio.com";

const PROVIDER: &str = "Twilio";

/// A Messaging Service SID (`MG` + 32 hex digits) goes in `MessagingServiceSid`, which lets
/// Twilio pick the sender from the service's pool; anything else is a sender address.
fn is_messaging_service(from: &str) -> bool {
    from.len() == 34
        && from.starts_with("MG")
        && from.bytes().skip(2).all(|b| b.is_ascii_hexdigit())
}

/// `{"1":"…","2":"…"}`, numbered in parameter order. Built by hand because a `serde_json`
/// map would sort `"10"` before `"2"`.
fn content_variables(parameters: &[String]) -> String {
    let mut vars = String::from("{");
    for (i, value) in parameters.iter().enumerate() {
        if i > 0 {
            vars.push(',');
        }
        vars.push_str(&format!("\"{}\":{}", i + 1, Value::from(value.as_str())));
    }
    vars.push('}');
    vars
}

/// The send request for `msg` from the account `account_sid`.
///
/// `from` is a Twilio number (`+14155550100`), `whatsapp:+…`, an alphanumeric sender or short
/// code (sent as `From`), or a Messaging Service SID (sent as `MessagingServiceSid`).
/// `status_callback` becomes `StatusCallback`; Twilio has no field for our reference, so put
/// it in that URL's query if status callbacks must be matched without the `SM…` sid.
///
/// Text is `Body`; media is one `MediaUrl` with the caption as `Body` (the kind and filename
/// mean nothing to Twilio); a template is `ContentSid` = the template's `name`, plus
/// `ContentVariables` when it has parameters. `reply_to` is ignored: Twilio cannot thread.
pub fn send_request(
    account_sid: &str,
    from: &str,
    status_callback: Option<&str>,
    msg: &OutboundMessage,
) -> ProviderRequest {
    let mut form = form_urlencoded::Serializer::new(String::new());
    form.append_pair("To", &msg.to);
    if is_messaging_service(from) {
        form.append_pair("MessagingServiceSid", from);
    } else {
        form.append_pair("From", from);
    }
    match &msg.content {
        OutboundContent::Text { text } => {
            form.append_pair("Body", text);
        }
        OutboundContent::Media { url, caption, .. } => {
            if let Some(caption) = caption.as_deref().filter(|c| !c.is_empty()) {
                form.append_pair("Body", caption);
            }
            form.append_pair("MediaUrl", url);
        }
        OutboundContent::Template {
            name, parameters, ..
        } => {
            form.append_pair("ContentSid", name);
            if !parameters.is_empty() {
                form.append_pair("ContentVariables", &content_variables(parameters));
            }
        }
    }
    if let Some(url) = status_callback.filter(|u| !u.is_empty()) {
        form.append_pair("StatusCallback", url);
    }
    ProviderRequest {
        path_and_query: format!(
            "/2010-04-01/Accounts/{}/Messages.json",
            path_segment(account_sid)
        ),
        content_type: "application/x-www-form-urlencoded",
        body: form.finish().into_bytes(),
    }
}

fn str_at<'v>(v: &'v Value, key: &str) -> Option<&'v str> {
    v.get(key)?.as_str().filter(|s| !s.is_empty())
}

/// What Twilio's answer to a send means. `retry_after` is the raw `Retry-After` header.
///
/// A 2xx (Twilio answers `201 Created`) needs the Message resource's `sid`. An error body is
/// either the legacy `{code, message, more_info, status}` or RFC 9457 problem JSON `{type,
/// title, status, code, detail}`; it is classified by `code`, and a code outside the table by
/// status: 429 and 5xx transient, anything else permanent. See the module docs for why a
/// transient 5xx can still mean the message went out.
pub fn send_outcome(http_status: u16, retry_after: Option<&str>, body: &[u8]) -> SendOutcome {
    let retry_after = parse_retry_after(retry_after);
    let root = serde_json::from_slice::<Value>(body)
        .ok()
        .filter(Value::is_object);
    if (200..=299).contains(&http_status) {
        return match root.as_ref().and_then(|r| str_at(r, "sid")) {
            Some(sid) => SendOutcome::Accepted {
                provider_message_id: sid.to_owned(),
                provider_status: root
                    .as_ref()
                    .and_then(|r| str_at(r, "status"))
                    .map(str::to_owned),
            },
            None => SendOutcome::Failed(malformed_success(PROVIDER, http_status)),
        };
    }
    let error = root.filter(|r| {
        ["code", "message", "detail", "title"]
            .iter()
            .any(|k| r.get(k).is_some_and(|v| !v.is_null()))
    });
    SendOutcome::Failed(match error {
        Some(error) => classify(http_status, retry_after, &error),
        None => status_only_failure(PROVIDER, http_status, retry_after),
    })
}

/// Our sentence and retryability for the codes of PROVIDERS.md §2.7.
/// Whether a failure's code says Twilio refused the account's credentials (20003).
pub fn credentials_rejected(code: &str) -> bool {
    code == "20003"
}

fn known(code: i64) -> Option<(&'static str, bool)> {
    const TRANSIENT: bool = true;
    const PERMANENT: bool = false;
    Some(match code {
        20429 => (
            "Twilio is receiving too many concurrent requests from this account; the message \
             was not processed.",
            TRANSIENT,
        ),
        20003 => (
            "Twilio rejected the account credentials; check the Account SID and auth token.",
            PERMANENT,
        ),
        21211 => ("The 'To' number is not a valid phone number.", PERMANENT),
        21606 => (
            "The 'From' number is not a message-capable Twilio number for this destination.",
            PERMANENT,
        ),
        21608 => (
            "This Twilio trial account can only message verified numbers.",
            PERMANENT,
        ),
        21610 => (
            "The recipient replied STOP and has unsubscribed; do not message them until they \
             reply START.",
            PERMANENT,
        ),
        21612 => (
            "Twilio cannot route a message from this 'From' number to this 'To' number.",
            PERMANENT,
        ),
        21614 => ("The 'To' number is not a mobile number.", PERMANENT),
        21635 => (
            "The 'To' number is a landline and cannot receive messages.",
            PERMANENT,
        ),
        21408 => (
            "Sending to this region is not enabled in the Twilio account's geo permissions.",
            PERMANENT,
        ),
        _ => return None,
    })
}

fn classify(status: u16, retry_after: Option<Duration>, error: &Value) -> SendFailure {
    let code = code_of(error.get("code"));
    // Legacy bodies say `message`/`more_info`; problem JSON says `detail` (or `title`)/`type`.
    let message = str_at(error, "message")
        .or_else(|| str_at(error, "detail"))
        .or_else(|| str_at(error, "title"));
    let more_info = str_at(error, "more_info").or_else(|| str_at(error, "type"));
    let (ours, transient) = match code.as_deref().and_then(|c| c.parse().ok()).and_then(known) {
        Some((ours, transient)) => (Cow::Borrowed(ours), transient),
        None => {
            let label = code.as_deref().unwrap_or("none");
            if (500..=599).contains(&status) {
                let ours = format!(
                    "Twilio had an internal error (HTTP {status}, error {label}); the message \
                     may have been sent anyway."
                );
                (Cow::Owned(ours), true)
            } else if transient_status(status) {
                let ours = format!("Twilio throttled the request (HTTP {status}, error {label}).");
                (Cow::Owned(ours), true)
            } else {
                let ours = format!("Twilio rejected the message (HTTP {status}, error {label}).");
                (Cow::Owned(ours), false)
            }
        }
    };
    SendFailure {
        code: code.unwrap_or_else(|| format!("http_{status}")),
        reason: reason(&ours, message, more_info),
        retry: if transient {
            Retry::Transient { after: retry_after }
        } else {
            Retry::Permanent
        },
    }
}

#[cfg(test)]
mod tests;
