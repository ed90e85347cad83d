#![allow(clippy::unwrap_used)]

use serde_json::{Value, json};

use super::*;

const VERSION: &str = "v23.0";
const PHONE_NUMBER_ID: &str = "800000000000001";

fn msg(to: &str, content: OutboundContent) -> OutboundMessage {
    OutboundMessage {
        to: to.to_owned(),
        content,
        reply_to: None,
        reference: String::new(),
    }
}

fn text(body: &str) -> OutboundContent {
    OutboundContent::Text {
        text: body.to_owned(),
    }
}

fn media(
    kind: OutboundMediaKind,
    caption: Option<&str>,
    filename: Option<&str>,
) -> OutboundContent {
    OutboundContent::Media {
        kind,
        url: "https://cdn.example.com/f".to_owned(),
        caption: caption.map(str::to_owned),
        filename: filename.map(str::to_owned),
    }
}

fn body_json(req: &ProviderRequest) -> Value {
    serde_json::from_slice(&req.body).unwrap()
}

fn body_str(req: &ProviderRequest) -> &str {
    std::str::from_utf8(&req.body).unwrap()
}

fn failure(outcome: SendOutcome) -> SendFailure {
    match outcome {
        SendOutcome::Failed(f) => f,
        other => panic!("expected a failure, got {other:?}"),
    }
}

fn graph_error(code: i64, message: &str, details: Option<&str>) -> Vec<u8> {
    let mut error = json!({
        "message": message,
        "type": "OAuthException",
        "code": code,
        "fbtrace_id": "Atrace"
    });
    if let Some(details) = details {
        error["error_data"] = json!({"messaging_product": "whatsapp", "details": details});
    }
    serde_json::to_vec(&json!({ "error": error })).unwrap()
}

#[test]
fn text_body_is_exactly_the_documented_one() {
    let req = send_request(
        VERSION,
        PHONE_NUMBER_ID,
        &msg("15555550123", text("Your order ships today.")),
    );
    assert_eq!(req.path_and_query, "/v23.0/800000000000001/messages");
    assert_eq!(req.content_type, "application/json");
    assert_eq!(
        body_str(&req),
        r#"{"messaging_product":"whatsapp","recipient_type":"individual","to":"15555550123","type":"text","text":{"preview_url":false,"body":"Your order ships today."}}"#
    );
}

#[test]
fn reference_and_reply_context() {
    let mut m = msg("15555550123", text("Yes, today."));
    m.reply_to = Some("wamid.T1".to_owned());
    m.reference = "msg_01J9".to_owned();
    let req = send_request(VERSION, PHONE_NUMBER_ID, &m);
    assert_eq!(
        body_str(&req),
        r#"{"messaging_product":"whatsapp","recipient_type":"individual","to":"15555550123","type":"text","text":{"preview_url":false,"body":"Yes, today."},"context":{"message_id":"wamid.T1"},"biz_opaque_callback_data":"msg_01J9"}"#
    );

    // Empty values are left out, not sent empty.
    m.reply_to = Some(String::new());
    m.reference = String::new();
    let body = body_json(&send_request(VERSION, PHONE_NUMBER_ID, &m));
    assert!(body.get("context").is_none());
    assert!(body.get("biz_opaque_callback_data").is_none());
}

#[test]
fn bsuid_goes_in_recipient() {
    let req = send_request(
        VERSION,
        PHONE_NUMBER_ID,
        &msg("US.13491208655302741918", text("Hi")),
    );
    assert_eq!(
        body_str(&req),
        r#"{"messaging_product":"whatsapp","recipient_type":"individual","recipient":"US.13491208655302741918","type":"text","text":{"preview_url":false,"body":"Hi"}}"#
    );
    // A phone number with `+` is still a `to`.
    let body = body_json(&send_request(
        VERSION,
        PHONE_NUMBER_ID,
        &msg("+15555550123", text("Hi")),
    ));
    assert_eq!(body["to"], "+15555550123");
    assert!(body.get("recipient").is_none());
}

#[test]
fn media_bodies_for_each_kind() {
    let cases = [
        (
            media(OutboundMediaKind::Image, Some("Look"), Some("ignored.png")),
            json!({"type": "image", "image": {"link": "https://cdn.example.com/f", "caption": "Look"}}),
        ),
        (
            media(OutboundMediaKind::Video, Some("Clip"), None),
            json!({"type": "video", "video": {"link": "https://cdn.example.com/f", "caption": "Clip"}}),
        ),
        (
            media(
                OutboundMediaKind::Audio,
                Some("no captions on audio"),
                Some("a.ogg"),
            ),
            json!({"type": "audio", "audio": {"link": "https://cdn.example.com/f"}}),
        ),
        (
            media(
                OutboundMediaKind::Document,
                Some("Invoice"),
                Some("invoice.pdf"),
            ),
            json!({"type": "document", "document": {
                "link": "https://cdn.example.com/f", "caption": "Invoice", "filename": "invoice.pdf"
            }}),
        ),
        (
            media(OutboundMediaKind::Image, None, None),
            json!({"type": "image", "image": {"link": "https://cdn.example.com/f"}}),
        ),
        (
            media(OutboundMediaKind::Document, Some(""), Some("")),
            json!({"type": "document", "document": {"link": "https://cdn.example.com/f"}}),
        ),
    ];
    for (content, payload) in cases {
        let mut expected = json!({
            "messaging_product": "whatsapp",
            "recipient_type": "individual",
            "to": "15555550123"
        });
        for (k, v) in payload.as_object().unwrap() {
            expected[k] = v.clone();
        }
        let req = send_request(VERSION, PHONE_NUMBER_ID, &msg("15555550123", content));
        assert_eq!(body_json(&req), expected);
    }

    // Exact bytes for one: `type` precedes its payload object.
    let req = send_request(
        VERSION,
        PHONE_NUMBER_ID,
        &msg(
            "15555550123",
            media(
                OutboundMediaKind::Document,
                Some("Invoice"),
                Some("invoice.pdf"),
            ),
        ),
    );
    assert_eq!(
        body_str(&req),
        r#"{"messaging_product":"whatsapp","recipient_type":"individual","to":"15555550123","type":"document","document":{"link":"https://cdn.example.com/f","caption":"Invoice","filename":"invoice.pdf"}}"#
    );
}

#[test]
fn template_body_is_exactly_the_documented_one() {
    let req = send_request(
        VERSION,
        PHONE_NUMBER_ID,
        &msg(
            "15555550123",
            OutboundContent::Template {
                name: "order_update".to_owned(),
                language: "en_US".to_owned(),
                parameters: vec!["A-1001".to_owned(), "Friday".to_owned()],
            },
        ),
    );
    assert_eq!(
        body_str(&req),
        r#"{"messaging_product":"whatsapp","recipient_type":"individual","to":"15555550123","type":"template","template":{"name":"order_update","language":{"code":"en_US"},"components":[{"type":"body","parameters":[{"type":"text","text":"A-1001"},{"type":"text","text":"Friday"}]}]}}"#
    );
}

#[test]
fn template_without_parameters_has_no_components() {
    let req = send_request(
        VERSION,
        PHONE_NUMBER_ID,
        &msg(
            "15555550123",
            OutboundContent::Template {
                name: "hello_world".to_owned(),
                language: "en_US".to_owned(),
                parameters: vec![],
            },
        ),
    );
    assert_eq!(
        body_json(&req)["template"],
        json!({"name": "hello_world", "language": {"code": "en_US"}})
    );
}

#[test]
fn text_is_escaped_as_json() {
    let body = "Quote \" backslash \\ newline \n café 🚚";
    let req = send_request(VERSION, PHONE_NUMBER_ID, &msg("1", text(body)));
    assert_eq!(body_json(&req)["text"]["body"], body);
}

#[test]
fn path_segments_are_encoded() {
    let req = send_request("v23.0", "80/../1?x", &msg("1", text("x")));
    assert_eq!(req.path_and_query, "/v23.0/80%2F..%2F1%3Fx/messages");
}

#[test]
fn documented_success_is_accepted() {
    let body = br#"{"messaging_product":"whatsapp",
        "contacts":[{"input":"15555550123","wa_id":"15555550123"}],
        "messages":[{"id":"wamid.HBgL...","message_status":"accepted"}]}"#;
    assert_eq!(
        send_outcome(200, None, body),
        SendOutcome::Accepted {
            provider_message_id: "wamid.HBgL...".to_owned(),
            provider_status: Some("accepted".to_owned()),
        }
    );
    // `message_status` is often absent.
    let body = br#"{"messaging_product":"whatsapp","contacts":[],"messages":[{"id":"wamid.X"}]}"#;
    assert_eq!(
        send_outcome(200, None, body),
        SendOutcome::Accepted {
            provider_message_id: "wamid.X".to_owned(),
            provider_status: None,
        }
    );
}

#[test]
fn success_without_an_id_is_not_retried() {
    for body in [
        &br#"{"success":true}"#[..],
        br#"{"messages":[]}"#,
        b"",
        b"not json",
    ] {
        let f = failure(send_outcome(200, None, body));
        assert_eq!(f.code, "malformed_response");
        assert_eq!(f.retry, Retry::Permanent);
    }
}

#[test]
fn throughput_limit_is_transient() {
    let body = graph_error(
        130429,
        "(#130429) Rate limit hit",
        Some("Cloud API message throughput has been reached."),
    );
    let f = failure(send_outcome(400, None, &body));
    assert_eq!(f.code, "130429");
    assert_eq!(f.retry, Retry::Transient { after: None });
    assert_eq!(
        f.reason,
        "WhatsApp's message throughput limit for this phone number was reached. Provider said: \
         (#130429) Rate limit hit (Cloud API message throughput has been reached.)"
    );
}

#[test]
fn closed_window_is_permanent_and_says_so() {
    let body = graph_error(
        131047,
        "(#131047) Re-engagement message",
        Some(
            "Message failed to send because more than 24 hours have passed since the customer last replied to this number.",
        ),
    );
    let f = failure(send_outcome(400, Some("30"), &body));
    assert_eq!(f.code, "131047");
    assert_eq!(f.retry, Retry::Permanent);
    assert!(f.reason.starts_with(
        "More than 24 hours have passed since the customer last wrote; send a template instead."
    ));
    assert!(f.reason.contains("(#131047) Re-engagement message"));
}

#[test]
fn pair_rate_limit_waits() {
    let body = graph_error(
        131056,
        "(#131056) (Business Account, Consumer Account) pair rate limit hit",
        None,
    );
    let f = failure(send_outcome(400, None, &body));
    assert_eq!(f.code, "131056");
    assert_eq!(
        f.retry,
        Retry::Transient {
            after: Some(Duration::from_secs(6))
        }
    );
    // The provider's Retry-After wins over our default.
    let f = failure(send_outcome(429, Some("20"), &body));
    assert_eq!(
        f.retry,
        Retry::Transient {
            after: Some(Duration::from_secs(20))
        }
    );
}

#[test]
fn retry_after_is_honoured() {
    let body = graph_error(80007, "(#80007) Rate limit issues", None);
    let f = failure(send_outcome(429, Some("120"), &body));
    assert_eq!(f.code, "80007");
    assert_eq!(
        f.retry,
        Retry::Transient {
            after: Some(Duration::from_secs(120))
        }
    );
    // Also for a body that is not Meta's JSON.
    let f = failure(send_outcome(503, Some("7"), b"<html>oops</html>"));
    assert_eq!(
        f.retry,
        Retry::Transient {
            after: Some(Duration::from_secs(7))
        }
    );
    // An HTTP-date is not understood and leaves the delay to the caller.
    let f = failure(send_outcome(
        429,
        Some("Wed, 21 Oct 2015 07:28:00 GMT"),
        &body,
    ));
    assert_eq!(f.retry, Retry::Transient { after: None });
}

#[test]
fn garbage_bodies_are_judged_by_status() {
    let f = failure(send_outcome(503, None, b"Service Unavailable"));
    assert_eq!(f.code, "http_503");
    assert_eq!(f.retry, Retry::Transient { after: None });

    let f = failure(send_outcome(429, None, b""));
    assert_eq!(f.code, "http_429");
    assert!(f.is_transient());

    let f = failure(send_outcome(400, None, b"<html>Bad Request</html>"));
    assert_eq!(f.code, "http_400");
    assert_eq!(f.retry, Retry::Permanent);

    // JSON, but not a Graph error envelope.
    let f = failure(send_outcome(502, None, br#"{"error":"bad gateway"}"#));
    assert_eq!(f.code, "http_502");
    assert!(f.is_transient());
}

#[test]
fn code_table() {
    let long = Some(Duration::from_secs(15 * 60));
    let transient: &[(i64, Option<Duration>)] = &[
        (130429, None),
        (131056, Some(Duration::from_secs(6))),
        (80007, None),
        (4, None),
        (131048, long),
        (131016, None),
        (131000, None),
        (133016, long),
        (1, None),
        (2, None),
    ];
    for &(code, after) in transient {
        // The code decides, whatever the status.
        for status in [400, 500] {
            let f = failure(send_outcome(status, None, &graph_error(code, "m", None)));
            assert_eq!(f.code, code.to_string());
            assert_eq!(f.retry, Retry::Transient { after }, "{code}");
            assert!(
                !f.reason.starts_with("WhatsApp rejected the message"),
                "{code}"
            );
        }
    }
    let permanent = [
        131047, 131026, 131049, 131050, 131051, 131052, 131053, 131008, 131009, 131030, 131042,
        131031, 368, 130497, 132000, 132001, 132005, 132007, 132008, 132012, 132015, 132016, 190,
        0, 3, 10, 200, 250, 299,
    ];
    for code in permanent {
        for status in [400, 401, 403, 500] {
            let f = failure(send_outcome(
                status,
                Some("5"),
                &graph_error(code, "m", None),
            ));
            assert_eq!(f.code, code.to_string());
            assert_eq!(f.retry, Retry::Permanent, "{code} with {status}");
            assert!(
                !f.reason.starts_with("WhatsApp rejected the message"),
                "{code}"
            );
        }
    }
}

#[test]
fn unknown_codes_follow_the_status() {
    let body = graph_error(999999, "(#999999) Something new", None);
    let f = failure(send_outcome(400, None, &body));
    assert_eq!(f.code, "999999");
    assert_eq!(f.retry, Retry::Permanent);
    assert_eq!(
        f.reason,
        "WhatsApp rejected the message (HTTP 400, error 999999). Provider said: (#999999) \
         Something new"
    );
    for status in [429, 500, 503] {
        let f = failure(send_outcome(status, Some("3"), &body));
        assert_eq!(
            f.retry,
            Retry::Transient {
                after: Some(Duration::from_secs(3))
            }
        );
    }
    // An envelope without a code takes the status as its code.
    let f = failure(send_outcome(500, None, br#"{"error":{"message":"boom"}}"#));
    assert_eq!(f.code, "http_500");
    assert!(f.is_transient());
    assert!(f.reason.ends_with("Provider said: boom"));
    // A string code is read too.
    let f = failure(send_outcome(
        400,
        None,
        br#"{"error":{"message":"m","code":"131047"}}"#,
    ));
    assert_eq!(f.code, "131047");
    assert_eq!(f.retry, Retry::Permanent);
}

#[test]
fn error_envelope_wins_over_a_2xx() {
    let f = failure(send_outcome(
        200,
        None,
        &graph_error(131026, "(#131026) Message undeliverable", None),
    ));
    assert_eq!(f.code, "131026");
    assert_eq!(f.retry, Retry::Permanent);
}
