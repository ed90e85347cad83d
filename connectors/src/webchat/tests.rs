// Tests may unwrap (no workspace clippy.toml sets `allow-unwrap-in-tests`), and the tables
// spell out their row types where they are used.
#![allow(clippy::unwrap_used, clippy::type_complexity)]

use super::*;

const SECRET: &[u8] = b"webchat-secret";

fn visitor(identifier: Option<&str>) -> VisitorMessage {
    VisitorMessage {
        visitor_id: "v_01HZX".to_owned(),
        identifier: identifier.map(str::to_owned),
        name: Some("Ada".to_owned()),
        email: Some("ada@example.com".to_owned()),
        client_message_id: "c-1".to_owned(),
        text: "Hello from the site".to_owned(),
        sent_at_ms: 1_760_000_000_456,
    }
}

fn only_message(batch: InboundBatch) -> InboundMessage {
    match <[InboundItem; 1]>::try_from(batch.items) {
        Ok([InboundItem::Message(m)]) => *m,
        other => panic!("expected one message, got {other:?}"),
    }
}

#[test]
fn identity_hash_vector() {
    // python3 -c 'import hmac,hashlib;print(hmac.new(b"webchat-secret",b"customer-42",hashlib.sha256).hexdigest())'
    let hash = "075510e2338f8d0355f3c3ca79b95a4453ffea112f230091f662717b883e9756";
    assert_eq!(identity_hash(SECRET, "customer-42"), hash);
    let upper = hash.to_uppercase();
    let cases: &[(&[u8], &str, &str, Result<(), SignatureError>)] = &[
        (SECRET, "customer-42", hash, Ok(())),
        (SECRET, "customer-42", &upper, Ok(())),
        (SECRET, "customer-43", hash, Err(SignatureError::Mismatch)),
        (
            b"other-secret",
            "customer-42",
            hash,
            Err(SignatureError::Mismatch),
        ),
        (SECRET, "customer-42", "", Err(SignatureError::Missing)),
        (SECRET, "customer-42", "xyz", Err(SignatureError::Malformed)),
        (
            SECRET,
            "customer-42",
            &hash[..62],
            Err(SignatureError::Malformed),
        ),
    ];
    for (secret, identifier, given, expected) in cases {
        assert_eq!(
            &verify_identity(secret, identifier, given),
            expected,
            "{identifier} {given}"
        );
    }
}

#[test]
fn anonymous_visitor() {
    let body = serde_json::to_vec(&visitor(None)).unwrap();
    let msg = only_message(parse(&body).unwrap());
    assert_eq!(msg.route, RouteKey::Inbox);
    assert_eq!(msg.provider_message_id, "v_01HZX:c-1");
    assert_eq!(
        msg.sender,
        ContactRef {
            identities: vec![Identity {
                kind: IdentityKind::WebVisitor,
                value: "v_01HZX".to_owned()
            }],
            display_name: Some("Ada".to_owned()),
            phone: None,
        }
    );
    assert_eq!(msg.sent_at_ms, 1_760_000_000_456);
    assert_eq!(
        msg.content,
        MessageContent::Text {
            text: "Hello from the site".to_owned()
        }
    );
    assert_eq!(msg.raw["email"], "ada@example.com");
    assert_eq!(
        serde_json::from_value::<VisitorMessage>(msg.raw).unwrap(),
        visitor(None)
    );
}

#[test]
fn verified_customer_leads_identities() {
    let body = serde_json::to_vec(&visitor(Some("customer-42"))).unwrap();
    let msg = only_message(parse(&body).unwrap());
    let values: Vec<_> = msg
        .sender
        .identities
        .iter()
        .map(|i| (i.kind, i.value.as_str()))
        .collect();
    assert_eq!(
        values,
        vec![
            (IdentityKind::WebVisitor, "customer-42"),
            (IdentityKind::WebVisitor, "v_01HZX")
        ]
    );
}

#[test]
fn optional_fields_may_be_absent() {
    let body = br#"{"visitor_id":"v1","client_message_id":"c1","text":"hi","sent_at_ms":1}"#;
    let msg = only_message(parse(body).unwrap());
    assert_eq!(msg.sender.display_name, None);
    assert_eq!(msg.sender.identities.len(), 1);
}

#[test]
fn errors() {
    let cases: &[(&[u8], fn(&ParseError) -> bool)] = &[
        (b"{", |e| matches!(e, ParseError::Json(_))),
        (b"[]", |e| matches!(e, ParseError::Shape(_))),
        (br#"{"visitor_id":"v1"}"#, |e| {
            matches!(e, ParseError::Shape(_))
        }),
        (
            br#"{"visitor_id":"v1","client_message_id":"c1","text":"hi","sent_at_ms":"1"}"#,
            |e| matches!(e, ParseError::Shape(_)),
        ),
        (
            br#"{"visitor_id":"","client_message_id":"c1","text":"hi","sent_at_ms":1}"#,
            |e| matches!(e, ParseError::Shape(_)),
        ),
        (
            br#"{"visitor_id":"v1","client_message_id":"","text":"hi","sent_at_ms":1}"#,
            |e| matches!(e, ParseError::Shape(_)),
        ),
    ];
    for (body, is_expected) in cases {
        let err = parse(body).unwrap_err();
        assert!(
            is_expected(&err),
            "{}: {err:?}",
            String::from_utf8_lossy(body)
        );
    }
}
