#![allow(clippy::unwrap_used)]

use serde_json::json;

use super::*;
use crate::OutboundMediaKind;

const ACCOUNT: &str = "AC0123456789abcdef0123456789abcdef";
const FROM: &str = "+14155550100";
const TO: &str = "+14155550199";

fn msg(content: OutboundContent) -> OutboundMessage {
    OutboundMessage {
        to: TO.to_owned(),
        content,
        reply_to: Some("SMignored".to_owned()),
        reference: "msg_01".to_owned(),
    }
}

fn pairs(req: &ProviderRequest) -> Vec<(String, String)> {
    form_urlencoded::parse(&req.body).into_owned().collect()
}

fn expected(list: &[(&str, &str)]) -> Vec<(String, String)> {
    list.iter()
        .map(|(n, v)| ((*n).to_owned(), (*v).to_owned()))
        .collect()
}

fn failure(outcome: SendOutcome) -> SendFailure {
    match outcome {
        SendOutcome::Failed(f) => f,
        other => panic!("expected a failure, got {other:?}"),
    }
}

fn legacy_error(code: i64, status: u16, message: &str) -> Vec<u8> {
    serde_json::to_vec(&json!({
        "code": code,
        "message": message,
        "more_info": format!("https://www.twilio.com/docs/errors/{code}"),
        "status": status
    }))
    .unwrap()
}

#[test]
fn text_request() {
    let req = send_request(
        ACCOUNT,
        FROM,
        None,
        &msg(OutboundContent::Text {
            text: "Your code is 1234 & more".to_owned(),
        }),
    );
    assert_eq!(
        req.path_and_query,
        "/2010-04-01/Accounts/AC0123456789abcdef0123456789abcdef/Messages.json"
    );
    assert_eq!(req.content_type, "application/x-www-form-urlencoded");
    assert_eq!(
        std::str::from_utf8(&req.body).unwrap(),
        "To=%2B14155550199&From=%2B14155550100&Body=Your+code+is+1234+%26+more"
    );
    assert_eq!(
        pairs(&req),
        expected(&[
            ("To", TO),
            ("From", FROM),
            ("Body", "Your code is 1234 & more")
        ])
    );
}

#[test]
fn media_request_with_caption_and_status_callback() {
    let callback = "https://hub.example.com/webhooks/twilio/inbox_1/status?ref=msg_01";
    let req = send_request(
        ACCOUNT,
        FROM,
        Some(callback),
        &msg(OutboundContent::Media {
            kind: OutboundMediaKind::Image,
            url: "https://cdn.example.com/a b.jpg".to_owned(),
            caption: Some("Here it is".to_owned()),
            filename: Some("ignored.jpg".to_owned()),
        }),
    );
    assert_eq!(
        pairs(&req),
        expected(&[
            ("To", TO),
            ("From", FROM),
            ("Body", "Here it is"),
            ("MediaUrl", "https://cdn.example.com/a b.jpg"),
            ("StatusCallback", callback),
        ])
    );

    // No caption: no Body at all.
    let req = send_request(
        ACCOUNT,
        FROM,
        Some(""),
        &msg(OutboundContent::Media {
            kind: OutboundMediaKind::Document,
            url: "https://cdn.example.com/x.pdf".to_owned(),
            caption: None,
            filename: None,
        }),
    );
    assert_eq!(
        pairs(&req),
        expected(&[
            ("To", TO),
            ("From", FROM),
            ("MediaUrl", "https://cdn.example.com/x.pdf"),
        ])
    );
}

#[test]
fn template_request_has_content_variables() {
    let parameters: Vec<String> = [
        "A-1001",
        "Fri \"day\"",
        "3",
        "4",
        "5",
        "6",
        "7",
        "8",
        "9",
        "ten",
    ]
    .iter()
    .map(|s| (*s).to_owned())
    .collect();
    let req = send_request(
        ACCOUNT,
        "whatsapp:+14155550100",
        None,
        &OutboundMessage {
            to: "whatsapp:+14155550199".to_owned(),
            content: OutboundContent::Template {
                name: "HX0123456789abcdef0123456789abcdef".to_owned(),
                language: "en".to_owned(),
                parameters,
            },
            reply_to: None,
            reference: "msg_01".to_owned(),
        },
    );
    let vars = r#"{"1":"A-1001","2":"Fri \"day\"","3":"3","4":"4","5":"5","6":"6","7":"7","8":"8","9":"9","10":"ten"}"#;
    assert_eq!(
        pairs(&req),
        expected(&[
            ("To", "whatsapp:+14155550199"),
            ("From", "whatsapp:+14155550100"),
            ("ContentSid", "HX0123456789abcdef0123456789abcdef"),
            ("ContentVariables", vars),
        ])
    );
    // It is valid JSON with the same meaning.
    let parsed: serde_json::Value = serde_json::from_str(vars).unwrap();
    assert_eq!(parsed["2"], "Fri \"day\"");
    assert_eq!(parsed["10"], "ten");

    // No parameters: no ContentVariables.
    let req = send_request(
        ACCOUNT,
        FROM,
        None,
        &msg(OutboundContent::Template {
            name: "HX1".to_owned(),
            language: "en".to_owned(),
            parameters: vec![],
        }),
    );
    assert_eq!(
        pairs(&req),
        expected(&[("To", TO), ("From", FROM), ("ContentSid", "HX1")])
    );
}

#[test]
fn messaging_service_sid_is_sent_as_such() {
    let service = "MG0123456789abcdef0123456789abcdef";
    let req = send_request(
        ACCOUNT,
        service,
        None,
        &msg(OutboundContent::Text {
            text: "hi".to_owned(),
        }),
    );
    assert_eq!(
        pairs(&req),
        expected(&[("To", TO), ("MessagingServiceSid", service), ("Body", "hi")])
    );
    // Not a SID: stays `From`.
    for from in [
        "MGshort",
        "MG0123456789abcdef0123456789abcdeZ",
        "Switchboard",
    ] {
        let req = send_request(
            ACCOUNT,
            from,
            None,
            &msg(OutboundContent::Text {
                text: "hi".to_owned(),
            }),
        );
        assert_eq!(pairs(&req)[1], ("From".to_owned(), from.to_owned()));
    }
}

#[test]
fn account_sid_is_encoded_into_the_path() {
    let req = send_request(
        "AC1/../x",
        FROM,
        None,
        &msg(OutboundContent::Text {
            text: "x".to_owned(),
        }),
    );
    assert_eq!(
        req.path_and_query,
        "/2010-04-01/Accounts/AC1%2F..%2Fx/Messages.json"
    );
}

#[test]
fn documented_success_is_accepted() {
    let body = br#"{"sid":"SM0123456789abcdef0123456789abcdef","account_sid":"AC0123","messaging_service_sid":null,
   "from":"+14155550100","to":"+14155550199","body":"Your code is 1234","status":"queued",
   "direction":"outbound-api","num_segments":"1","num_media":"0","price":null,"price_unit":null,
   "error_code":null,"error_message":null,"api_version":"2010-04-01",
   "date_created":"Thu, 24 Aug 2023 05:01:45 +0000","date_sent":null,"date_updated":"Thu, 24 Aug 2023 05:01:45 +0000",
   "uri":"/2010-04-01/Accounts/AC/Messages/SM.json","subresource_uris":{"media":"/2010-04-01/Accounts/AC/Messages/SM/Media.json"}}"#;
    let accepted = SendOutcome::Accepted {
        provider_message_id: "SM0123456789abcdef0123456789abcdef".to_owned(),
        provider_status: Some("queued".to_owned()),
    };
    assert_eq!(send_outcome(201, None, body), accepted);
    assert_eq!(send_outcome(200, None, body), accepted);
}

#[test]
fn success_without_a_sid_is_not_retried() {
    for body in [&br#"{"status":"queued"}"#[..], b"", b"<xml/>"] {
        let f = failure(send_outcome(201, None, body));
        assert_eq!(f.code, "malformed_response");
        assert_eq!(f.retry, Retry::Permanent);
    }
}

#[test]
fn too_many_requests_is_transient() {
    let body = legacy_error(20429, 429, "Too Many Requests");
    let f = failure(send_outcome(429, None, &body));
    assert_eq!(f.code, "20429");
    assert_eq!(f.retry, Retry::Transient { after: None });
    assert!(f.reason.contains("not processed"));
    let f = failure(send_outcome(429, Some("2"), &body));
    assert_eq!(
        f.retry,
        Retry::Transient {
            after: Some(Duration::from_secs(2))
        }
    );
}

#[test]
fn invalid_to_is_permanent() {
    let body = legacy_error(21211, 400, "Invalid 'To' Phone Number: +1555");
    let f = failure(send_outcome(400, None, &body));
    assert_eq!(f.code, "21211");
    assert_eq!(f.retry, Retry::Permanent);
    assert_eq!(
        f.reason,
        "The 'To' number is not a valid phone number. Provider said: Invalid 'To' Phone Number: \
         +1555 (https://www.twilio.com/docs/errors/21211)"
    );
}

#[test]
fn unsubscribed_recipient_is_permanent() {
    let body = legacy_error(21610, 400, "Attempt to send to unsubscribed recipient");
    let f = failure(send_outcome(400, Some("60"), &body));
    assert_eq!(f.code, "21610");
    assert_eq!(f.retry, Retry::Permanent);
    assert!(f.reason.contains("STOP"));
}

#[test]
fn problem_json_is_read() {
    let body = br#"{"type":"https://www.twilio.com/docs/errors/21211","title":"Invalid 'To' Phone Number","status":400,"code":21211,"detail":"The 'To' number +1555 is not a valid phone number.","instance":"/2010-04-01/Accounts/AC/Messages.json"}"#;
    let f = failure(send_outcome(400, None, body));
    assert_eq!(f.code, "21211");
    assert_eq!(f.retry, Retry::Permanent);
    assert_eq!(
        f.reason,
        "The 'To' number is not a valid phone number. Provider said: The 'To' number +1555 is \
         not a valid phone number. (https://www.twilio.com/docs/errors/21211)"
    );

    // Only a title, and a string code.
    let body = br#"{"type":"about:blank","title":"Too Many Requests","status":429,"code":"20429"}"#;
    let f = failure(send_outcome(429, None, body));
    assert_eq!(f.code, "20429");
    assert!(f.is_transient());
    assert!(f.reason.contains("Provider said: Too Many Requests"));
}

#[test]
fn server_errors_are_transient_and_say_they_may_have_sent() {
    let body = legacy_error(20500, 500, "Internal Server Error");
    let f = failure(send_outcome(500, Some("4"), &body));
    assert_eq!(f.code, "20500");
    assert_eq!(
        f.retry,
        Retry::Transient {
            after: Some(Duration::from_secs(4))
        }
    );
    assert!(f.reason.contains("may have been sent anyway"));

    let f = failure(send_outcome(502, None, b"<html>Bad Gateway</html>"));
    assert_eq!(f.code, "http_502");
    assert_eq!(f.retry, Retry::Transient { after: None });

    let f = failure(send_outcome(500, None, b""));
    assert_eq!(f.code, "http_500");
    assert!(f.is_transient());
}

#[test]
fn garbage_4xx_is_permanent() {
    let f = failure(send_outcome(400, None, b"nope"));
    assert_eq!(f.code, "http_400");
    assert_eq!(f.retry, Retry::Permanent);
    // JSON without any error field is garbage too.
    let f = failure(send_outcome(404, None, br#"{"status":404}"#));
    assert_eq!(f.code, "http_404");
    assert_eq!(f.retry, Retry::Permanent);
}

#[test]
fn code_table() {
    for (code, status) in [
        (20003, 401),
        (21211, 400),
        (21606, 400),
        (21608, 400),
        (21610, 400),
        (21612, 400),
        (21614, 400),
        (21635, 400),
        (21408, 400),
    ] {
        let f = failure(send_outcome(status, None, &legacy_error(code, status, "m")));
        assert_eq!(f.code, code.to_string());
        assert_eq!(f.retry, Retry::Permanent, "{code}");
        assert!(
            !f.reason.starts_with("Twilio rejected the message"),
            "{code}"
        );
    }
    // Any other 4xx code is permanent, with a generic sentence.
    let f = failure(send_outcome(
        400,
        None,
        &legacy_error(21602, 400, "Message body is required."),
    ));
    assert_eq!(f.code, "21602");
    assert_eq!(f.retry, Retry::Permanent);
    assert_eq!(
        f.reason,
        "Twilio rejected the message (HTTP 400, error 21602). Provider said: Message body is \
         required. (https://www.twilio.com/docs/errors/21602)"
    );
    // An unknown code on a 429 is still throttling.
    let f = failure(send_outcome(429, None, &legacy_error(12345, 429, "slow")));
    assert!(f.is_transient());
}
