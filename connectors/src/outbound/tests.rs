#![allow(clippy::unwrap_used)]

use serde_json::json;

use super::*;

#[test]
fn media_kind_names_round_trip() {
    for kind in [
        OutboundMediaKind::Image,
        OutboundMediaKind::Video,
        OutboundMediaKind::Audio,
        OutboundMediaKind::Document,
    ] {
        assert_eq!(kind.as_str().parse::<OutboundMediaKind>(), Ok(kind));
        assert_eq!(kind.to_string(), kind.as_str());
        assert_eq!(serde_json::to_value(kind).unwrap(), json!(kind.as_str()));
    }
    assert_eq!(
        "sticker".parse::<OutboundMediaKind>(),
        Err(UnknownMediaKind("sticker".to_owned()))
    );
    assert!("Image".parse::<OutboundMediaKind>().is_err());
}

#[test]
fn outbound_message_serde_shape_and_round_trip() {
    let msg = OutboundMessage {
        to: "15555550123".to_owned(),
        content: OutboundContent::Media {
            kind: OutboundMediaKind::Document,
            url: "https://cdn.example.com/invoice.pdf".to_owned(),
            caption: None,
            filename: Some("invoice.pdf".to_owned()),
        },
        reply_to: None,
        reference: "msg_01".to_owned(),
    };
    let value = serde_json::to_value(&msg).unwrap();
    assert_eq!(
        value,
        json!({
            "to": "15555550123",
            "content": {
                "type": "media",
                "kind": "document",
                "url": "https://cdn.example.com/invoice.pdf",
                "filename": "invoice.pdf"
            },
            "reference": "msg_01"
        })
    );
    assert_eq!(
        serde_json::from_value::<OutboundMessage>(value).unwrap(),
        msg
    );

    // Optional fields may be absent from a stored payload.
    let template: OutboundMessage = serde_json::from_value(json!({
        "to": "+14155550199",
        "content": {"type": "template", "name": "HX123", "language": "en"},
        "reference": "msg_02"
    }))
    .unwrap();
    assert_eq!(
        template.content,
        OutboundContent::Template {
            name: "HX123".to_owned(),
            language: "en".to_owned(),
            parameters: vec![],
        }
    );
    assert_eq!(template.reply_to, None);
}

#[test]
fn failure_serde_round_trip() {
    let transient = SendFailure {
        code: "131056".to_owned(),
        reason: "slow down".to_owned(),
        retry: Retry::Transient {
            after: Some(Duration::from_secs(6)),
        },
    };
    let value = serde_json::to_value(&transient).unwrap();
    assert_eq!(
        value["retry"],
        json!({"kind": "transient", "after": {"secs": 6, "nanos": 0}})
    );
    assert_eq!(
        serde_json::from_value::<SendFailure>(value).unwrap(),
        transient
    );

    let permanent = SendFailure {
        retry: Retry::Permanent,
        ..transient
    };
    let value = serde_json::to_value(&permanent).unwrap();
    assert_eq!(value["retry"], json!({"kind": "permanent"}));
    assert_eq!(
        serde_json::from_value::<SendFailure>(value).unwrap(),
        permanent
    );
    assert_eq!(
        serde_json::from_value::<Retry>(json!({"kind": "transient"})).unwrap(),
        Retry::Transient { after: None }
    );
}

#[test]
fn transport_failures_are_transient() {
    let timeout = SendFailure::timeout();
    assert_eq!(timeout.code, "timeout");
    assert_eq!(timeout.retry, Retry::Transient { after: None });
    assert!(timeout.is_transient());
    assert!(timeout.reason.contains("may or may not have been sent"));

    let unreachable = SendFailure::unreachable("connection refused");
    assert_eq!(unreachable.code, "unreachable");
    assert_eq!(unreachable.retry, Retry::Transient { after: None });
    assert_eq!(
        unreachable.reason,
        "Could not reach the provider: connection refused"
    );
    assert_eq!(
        unreachable.to_string(),
        "Could not reach the provider: connection refused (code unreachable)"
    );
}

#[test]
fn retry_after_takes_delta_seconds_only() {
    assert_eq!(parse_retry_after(Some("6")), Some(Duration::from_secs(6)));
    assert_eq!(
        parse_retry_after(Some(" 120 ")),
        Some(Duration::from_secs(120))
    );
    assert_eq!(parse_retry_after(Some("0")), Some(Duration::ZERO));
    for ignored in [
        None,
        Some(""),
        Some("-1"),
        Some("+5"),
        Some("1.5"),
        Some("Wed, 21 Oct 2015 07:28:00 GMT"),
        Some("99999999999999999999999"),
    ] {
        assert_eq!(parse_retry_after(ignored), None, "{ignored:?}");
    }
}

#[test]
fn reason_joins_without_repeating() {
    assert_eq!(reason("Ours.", None, None), "Ours.");
    assert_eq!(
        reason("Ours.", Some("(#1) Theirs"), Some("More.")),
        "Ours. Provider said: (#1) Theirs (More.)"
    );
    assert_eq!(
        reason("Ours.", Some("Rate limit hit: more"), Some("more")),
        "Ours. Provider said: Rate limit hit: more"
    );
    assert_eq!(
        reason("Ours.", Some("  "), Some("Only details")),
        "Ours. Provider said: Only details"
    );
}

#[test]
fn path_segments_are_encoded() {
    assert_eq!(path_segment("v23.0"), "v23.0");
    assert_eq!(path_segment("800000000000001"), "800000000000001");
    assert_eq!(path_segment("../x?y=1/ü"), "..%2Fx%3Fy%3D1%2F%C3%BC");
}

#[test]
fn status_only_failures() {
    let f = status_only_failure("X", 503, Some(Duration::from_secs(2)));
    assert_eq!(f.code, "http_503");
    assert_eq!(
        f.retry,
        Retry::Transient {
            after: Some(Duration::from_secs(2))
        }
    );
    let f = status_only_failure("X", 429, None);
    assert_eq!(f.retry, Retry::Transient { after: None });
    for status in [400, 404, 302] {
        let f = status_only_failure("X", status, Some(Duration::from_secs(2)));
        assert_eq!(f.code, format!("http_{status}"));
        assert_eq!(f.retry, Retry::Permanent);
    }
}
