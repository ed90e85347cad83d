//! Alert destinations (PROVIDERS.md §5–6): Slack incoming webhooks and PagerDuty Events API v2.
//!
//! Like the rest of the crate this is pure: [`slack::request`] and [`pagerduty::request`] build
//! the `POST` for one [`Notice`] (an alert firing or resolving), and each module's `outcome`
//! classifies the HTTP answer. The caller owns the HTTP client, the base URL, pacing (Slack:
//! one message per second per webhook URL) and the retry schedule.
//!
//! An answer is `Ok(())` or a [`SendFailure`], shared with outbound messages: `Transient` is
//! worth another attempt (429 with its `Retry-After`, 5xx, no answer); `Permanent` means the
//! destination itself is refusing (a revoked Slack webhook, a PagerDuty 400 for a bad routing
//! key or event) and must not be retried until someone fixes it.

use std::time::Duration;

use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use crate::outbound::{ProviderRequest, Retry, SendFailure, parse_retry_after};

/// How loud an alert is. PagerDuty's four severities; Slack shows it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Severity {
    Critical,
    Error,
    Warning,
    Info,
}

impl Severity {
    pub fn as_str(self) -> &'static str {
        match self {
            Severity::Critical => "critical",
            Severity::Error => "error",
            Severity::Warning => "warning",
            Severity::Info => "info",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "critical" => Some(Severity::Critical),
            "error" => Some(Severity::Error),
            "warning" => Some(Severity::Warning),
            "info" => Some(Severity::Info),
            _ => None,
        }
    }
}

/// Whether a notice opens or closes an alert.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Transition {
    Firing,
    Resolved,
}

/// One thing to tell a destination: an alert of `rule` over `scope` fired or resolved.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Notice {
    pub transition: Transition,
    /// Stable across the alert's life: PagerDuty's `dedup_key` (≤ 255 characters), so a
    /// resolve closes exactly the incident its trigger opened. See [`dedup_key`].
    pub key: String,
    /// The rule's name, for people.
    pub rule: String,
    /// What the signal is about: `account`, an inbox, a team, a provider.
    pub scope: String,
    pub severity: Severity,
    /// One line for people: "Queue backlog 812 > 500 for 1 min (support-wa)".
    pub summary: String,
    /// The hub that saw it (its public URL or host name): PagerDuty's `source`.
    pub source: String,
    /// The signal's value and threshold, and anything else worth a look.
    #[serde(default)]
    pub details: Value,
    /// RFC 3339 time of the transition.
    pub at: String,
    /// Where to look (the hub's alert history), when known.
    #[serde(default)]
    pub link: Option<String>,
}

/// The key an alert keeps for its whole life: `switchboard/{account}/{rule}/{scope}`, cut to
/// PagerDuty's 255 characters on a character boundary.
pub fn dedup_key(account: &str, rule: &str, scope: &str) -> String {
    let mut key = format!("switchboard/{account}/{rule}/{scope}");
    if key.len() > 255 {
        let mut end = 255;
        while !key.is_char_boundary(end) {
            end -= 1;
        }
        key.truncate(end);
    }
    key
}

/// Cuts `s` to at most `max` characters.
fn clip(s: &str, max: usize) -> String {
    match s.char_indices().nth(max) {
        Some((i, _)) => s[..i].to_owned(),
        None => s.to_owned(),
    }
}

/// A transient failure from a status alone.
fn transient(status: u16, retry_after: Option<Duration>, reason: String) -> SendFailure {
    SendFailure {
        code: format!("http_{status}"),
        reason,
        retry: Retry::Transient { after: retry_after },
    }
}

pub mod slack {
    //! Slack incoming webhooks: `POST` JSON `{text, blocks}` to the webhook URL, which is the
    //! whole secret; `200 ok` on success, a plain-text error code otherwise.

    use super::*;

    /// Slack answers these when the webhook can never work again until someone reinstalls
    /// or reconfigures it.
    const DEAD: [&str; 5] = [
        "no_service",
        "invalid_token",
        "channel_is_archived",
        "team_disabled",
        "no_active_hooks",
    ];

    /// The request for `notice`. `path_and_query` is empty: the caller posts to the webhook URL
    /// as configured. `text` is always set (Slack uses it for notifications and screen
    /// readers); the blocks carry the same facts laid out.
    pub fn request(notice: &Notice) -> ProviderRequest {
        let (mark, word) = match notice.transition {
            Transition::Firing => (":rotating_light:", "FIRING"),
            Transition::Resolved => (":white_check_mark:", "RESOLVED"),
        };
        let text = clip(
            &format!("[{word}] {} — {}", notice.rule, notice.summary),
            3000,
        );
        let mut fields = vec![
            json!({ "type": "mrkdwn", "text": format!("*Severity*\n{}", notice.severity.as_str()) }),
            json!({ "type": "mrkdwn", "text": format!("*Scope*\n{}", clip(&notice.scope, 500)) }),
            json!({ "type": "mrkdwn", "text": format!("*Since*\n{}", notice.at) }),
            json!({ "type": "mrkdwn", "text": format!("*Source*\n{}", clip(&notice.source, 500)) }),
        ];
        if let Some(link) = &notice.link {
            fields.push(json!({ "type": "mrkdwn", "text": format!("*History*\n<{link}|alerts>") }));
        }
        let body = json!({
            "text": text,
            "blocks": [
                { "type": "section", "text": { "type": "mrkdwn",
                    "text": clip(&format!("{mark} *{word}: {}*\n{}", notice.rule, notice.summary), 3000) } },
                { "type": "section", "fields": fields },
            ],
        });
        ProviderRequest {
            path_and_query: String::new(),
            content_type: "application/json",
            body: body.to_string().into_bytes(),
        }
    }

    /// What Slack's answer means. 200 is delivered whatever the body (Slack says `ok`); 429
    /// and 5xx retry (429 after its `Retry-After`); any other 4xx is permanent, with Slack's
    /// error code (`no_service`, `invalid_payload`, …) and whether the webhook is dead.
    pub fn outcome(status: u16, retry_after: Option<&str>, body: &[u8]) -> Result<(), SendFailure> {
        if (200..300).contains(&status) {
            return Ok(());
        }
        let said = String::from_utf8_lossy(body).trim().to_owned();
        let code = Some(clip(&said, 100))
            .filter(|c| !c.is_empty() && c.bytes().all(|b| b.is_ascii_lowercase() || b == b'_'));
        if status == 429 || (500..600).contains(&status) {
            return Err(transient(
                status,
                parse_retry_after(retry_after),
                format!("Slack answered HTTP {status}; will retry."),
            ));
        }
        let code = code.unwrap_or_else(|| format!("http_{status}"));
        let reason = if DEAD.contains(&code.as_str()) {
            format!(
                "Slack refused the webhook ({code}): it was revoked, archived or disabled; \
                 configure a new webhook URL."
            )
        } else {
            format!("Slack refused the message with HTTP {status} ({code}).")
        };
        Err(SendFailure {
            code,
            reason,
            retry: Retry::Permanent,
        })
    }
}

pub mod pagerduty {
    //! PagerDuty Events API v2: `POST /v2/enqueue` with the integration's `routing_key` in the
    //! body (no auth header); `trigger` and `resolve` share the alert's `dedup_key`.

    use super::*;

    pub const API_BASE_URL: &str = "https://events.pagerduty.com";

    /// The event for `notice`, for the integration `routing_key`.
    pub fn request(routing_key: &str, notice: &Notice) -> ProviderRequest {
        let body = match notice.transition {
            Transition::Firing => json!({
                "routing_key": routing_key,
                "event_action": "trigger",
                "dedup_key": notice.key,
                "payload": {
                    "summary": clip(&format!("{}: {}", notice.rule, notice.summary), 1024),
                    "source": clip(&notice.source, 255),
                    "severity": notice.severity.as_str(),
                    "timestamp": notice.at,
                    "component": "switchboard",
                    "group": clip(&notice.scope, 255),
                    "class": clip(&notice.rule, 255),
                    "custom_details": notice.details,
                },
                "client": "Switchboard",
                "client_url": notice.link,
            }),
            Transition::Resolved => json!({
                "routing_key": routing_key,
                "event_action": "resolve",
                "dedup_key": notice.key,
            }),
        };
        let mut body = body;
        if let Some(map) = body.as_object_mut()
            && map.get("client_url").is_some_and(Value::is_null)
        {
            map.remove("client_url");
        }
        ProviderRequest {
            path_and_query: "/v2/enqueue".to_owned(),
            content_type: "application/json",
            body: body.to_string().into_bytes(),
        }
    }

    /// What PagerDuty's answer means: 2xx (202 "Event processed") delivered; 429 and 5xx
    /// retry (after `Retry-After`, or 30 s for a 429, as PagerDuty's rate-limit page suggests);
    /// 400 and other 4xx never retried, with PagerDuty's message and errors.
    pub fn outcome(status: u16, retry_after: Option<&str>, body: &[u8]) -> Result<(), SendFailure> {
        if (200..300).contains(&status) {
            return Ok(());
        }
        let after = parse_retry_after(retry_after);
        if status == 429 {
            return Err(transient(
                status,
                after.or(Some(Duration::from_secs(30))),
                "PagerDuty is rate limiting this integration key; will retry.".to_owned(),
            ));
        }
        if (500..600).contains(&status) {
            return Err(transient(
                status,
                after,
                format!("PagerDuty answered HTTP {status}; will retry."),
            ));
        }
        let parsed: Value = serde_json::from_slice(body).unwrap_or(Value::Null);
        let message = parsed["message"].as_str().unwrap_or_default();
        let errors: Vec<&str> = parsed["errors"]
            .as_array()
            .map(|a| a.iter().filter_map(Value::as_str).collect())
            .unwrap_or_default();
        let mut reason = format!("PagerDuty refused the event with HTTP {status}");
        if !message.is_empty() {
            reason.push_str(&format!(": {message}"));
        }
        if !errors.is_empty() {
            reason.push_str(&format!(" ({})", errors.join("; ")));
        }
        reason.push_str(". Not retried: check the integration's routing key.");
        Err(SendFailure {
            code: format!("http_{status}"),
            reason,
            retry: Retry::Permanent,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn notice(transition: Transition) -> Notice {
        Notice {
            transition,
            key: dedup_key("acc_1", "queue_backlog", "account"),
            rule: "queue_backlog".to_owned(),
            scope: "account".to_owned(),
            severity: Severity::Warning,
            summary: "812 waiting > 500 for 60 s".to_owned(),
            source: "https://hub.example.com".to_owned(),
            details: json!({ "value": 812, "threshold": 500 }),
            at: "2026-12-03T14:00:00Z".to_owned(),
            link: Some("https://hub.example.com/v1/admin/alerts".to_owned()),
        }
    }

    fn body(r: &ProviderRequest) -> Value {
        serde_json::from_slice(&r.body).unwrap()
    }

    #[test]
    fn dedup_keys_are_stable_and_fit_pagerduty() {
        assert_eq!(
            dedup_key("acc_1", "queue_backlog", "account"),
            "switchboard/acc_1/queue_backlog/account"
        );
        let long = dedup_key("acc_1", "r", &"é".repeat(300));
        assert!(long.len() <= 255 && long.starts_with("switchboard/acc_1/r/"));
    }

    #[test]
    fn slack_gets_text_and_blocks() {
        let r = slack::request(&notice(Transition::Firing));
        assert_eq!(r.path_and_query, "");
        assert_eq!(r.content_type, "application/json");
        let b = body(&r);
        assert_eq!(
            b["text"],
            "[FIRING] queue_backlog — 812 waiting > 500 for 60 s"
        );
        assert_eq!(b["blocks"][0]["type"], "section");
        assert!(
            b["blocks"][0]["text"]["text"]
                .as_str()
                .unwrap()
                .contains("*FIRING: queue_backlog*")
        );
        assert_eq!(b["blocks"][1]["fields"].as_array().unwrap().len(), 5);
        let resolved = body(&slack::request(&notice(Transition::Resolved)));
        assert!(resolved["text"].as_str().unwrap().starts_with("[RESOLVED]"));
    }

    #[test]
    fn slack_answers_are_classified() {
        assert_eq!(slack::outcome(200, None, b"ok"), Ok(()));
        let throttled = slack::outcome(429, Some("3"), b"rate_limited").unwrap_err();
        assert_eq!(
            throttled.retry,
            Retry::Transient {
                after: Some(Duration::from_secs(3))
            }
        );
        assert!(
            slack::outcome(500, None, b"rollup_error")
                .unwrap_err()
                .is_transient()
        );
        let dead = slack::outcome(404, None, b"no_service").unwrap_err();
        assert_eq!(
            (dead.code.as_str(), dead.retry),
            ("no_service", Retry::Permanent)
        );
        assert!(dead.reason.contains("configure a new webhook"));
        let bad = slack::outcome(400, None, b"invalid_payload").unwrap_err();
        assert_eq!(bad.code, "invalid_payload");
        assert!(!bad.is_transient());
        assert_eq!(
            slack::outcome(403, None, b"<html>").unwrap_err().code,
            "http_403"
        );
    }

    #[test]
    fn pagerduty_trigger_and_resolve_share_the_key() {
        let trigger = pagerduty::request(
            "0123456789abcdef0123456789abcdef",
            &notice(Transition::Firing),
        );
        assert_eq!(trigger.path_and_query, "/v2/enqueue");
        let t = body(&trigger);
        assert_eq!(
            t,
            json!({
                "routing_key": "0123456789abcdef0123456789abcdef",
                "event_action": "trigger",
                "dedup_key": "switchboard/acc_1/queue_backlog/account",
                "payload": {
                    "summary": "queue_backlog: 812 waiting > 500 for 60 s",
                    "source": "https://hub.example.com",
                    "severity": "warning",
                    "timestamp": "2026-12-03T14:00:00Z",
                    "component": "switchboard",
                    "group": "account",
                    "class": "queue_backlog",
                    "custom_details": { "value": 812, "threshold": 500 },
                },
                "client": "Switchboard",
                "client_url": "https://hub.example.com/v1/admin/alerts",
            })
        );
        let r = body(&pagerduty::request(
            "0123456789abcdef0123456789abcdef",
            &notice(Transition::Resolved),
        ));
        assert_eq!(
            r,
            json!({ "routing_key": "0123456789abcdef0123456789abcdef", "event_action": "resolve",
                    "dedup_key": "switchboard/acc_1/queue_backlog/account" })
        );
    }

    #[test]
    fn pagerduty_answers_are_classified() {
        assert_eq!(
            pagerduty::outcome(
                202,
                None,
                br#"{"status":"success","message":"Event processed","dedup_key":"k"}"#
            ),
            Ok(())
        );
        let limited = pagerduty::outcome(429, None, b"").unwrap_err();
        assert_eq!(
            limited.retry,
            Retry::Transient {
                after: Some(Duration::from_secs(30))
            }
        );
        assert!(
            pagerduty::outcome(503, Some("5"), b"")
                .unwrap_err()
                .is_transient()
        );
        let bad = pagerduty::outcome(
            400,
            None,
            br#"{"status":"invalid event","message":"Event object is invalid","errors":["Length of 'routing_key' is incorrect (should be 32 characters)"]}"#,
        )
        .unwrap_err();
        assert_eq!(bad.retry, Retry::Permanent);
        assert!(
            bad.reason.contains("Event object is invalid"),
            "{}",
            bad.reason
        );
        assert!(bad.reason.contains("routing_key"), "{}", bad.reason);
    }
}
