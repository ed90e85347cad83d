// Tests may unwrap (no workspace clippy.toml sets `allow-unwrap-in-tests`), and the tables
// spell out their row types where they are used.
#![allow(clippy::unwrap_used, clippy::type_complexity)]

use serde_json::json;

use super::*;

macro_rules! fixture {
    ($name:literal) => {
        include_str!(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/fixtures/",
            $name
        ))
    };
}

const REALISTIC: &str = fixture!("whatsapp_realistic.json");
const REALISTIC_SECRET: &[u8] = b"test_app_secret_0123456789abcdef";
const REALISTIC_SIG: &str =
    "sha256=1cb8b2a2e2585f62b3ad0981293610d4b16f6d6fedd88e91a77f34fe99cbc26b";

fn route(id: &str) -> RouteKey {
    RouteKey::PhoneNumberId {
        phone_number_id: id.to_owned(),
    }
}

fn messages(batch: &InboundBatch) -> Vec<&InboundMessage> {
    batch
        .items
        .iter()
        .filter_map(|i| match i {
            InboundItem::Message(m) => Some(m.as_ref()),
            _ => None,
        })
        .collect()
}

fn notice_kinds(batch: &InboundBatch) -> Vec<&str> {
    batch
        .items
        .iter()
        .filter_map(|i| match i {
            InboundItem::Notice(n) => Some(n.kind.as_str()),
            _ => None,
        })
        .collect()
}

fn media(kind: MediaKind, id: &str, mime: &str) -> Attachment {
    Attachment {
        kind,
        provider_media_id: Some(id.to_owned()),
        url: None,
        mime_type: Some(mime.to_owned()),
        sha256: None,
        filename: None,
        voice: false,
    }
}

#[test]
fn signature_vectors() {
    // Official Node SDK vector (§1.9).
    assert_eq!(
        sign(b"TEST_APP_SECRET", b"test"),
        "sha256=0c61947b610d4f45e65f3d680e26027121ec2413e77598bcb6cfc6e0d9888221"
    );
    assert_eq!(REALISTIC.len(), 460);
    assert_eq!(sign(REALISTIC_SECRET, REALISTIC.as_bytes()), REALISTIC_SIG);

    // The same JSON value escaped and unescaped: only the raw bytes verify.
    let escaped = br#"{"text":"caf\u00e9"}"#;
    let utf8 = r#"{"text":"café"}"#.as_bytes();
    let escaped_sig = "sha256=637911c87607dbcdfde9c5dafbcf2271ede208a43864d69122ea520adf892de3";
    let utf8_sig = "sha256=816363a31f4cd183a5a1dc6cc9119bf7f4b9e50526a09941784c866db43d93cc";
    assert_eq!(sign(REALISTIC_SECRET, escaped), escaped_sig);
    assert_eq!(sign(REALISTIC_SECRET, utf8), utf8_sig);
    assert_ne!(escaped_sig, utf8_sig);
    assert_eq!(
        serde_json::from_slice::<Value>(escaped).unwrap(),
        serde_json::from_slice::<Value>(utf8).unwrap()
    );
    assert_eq!(
        verify_signature(REALISTIC_SECRET, utf8, Some(escaped_sig)),
        Err(SignatureError::Mismatch)
    );
}

#[test]
fn verify_signature_table() {
    let body = REALISTIC.as_bytes();
    let upper = format!("sha256={}", REALISTIC_SIG[7..].to_uppercase());
    let padded = format!(" {REALISTIC_SIG} ");
    let forged = sign(b"some other secret", body);
    let cases: &[(Option<&str>, Result<(), SignatureError>)] = &[
        (Some(REALISTIC_SIG), Ok(())),
        (Some(&upper), Ok(())),
        (Some(&padded), Ok(())),
        (None, Err(SignatureError::Missing)),
        (Some(""), Err(SignatureError::Missing)),
        (Some(&forged), Err(SignatureError::Mismatch)),
        (
            Some("sha256=0c61947b610d4f45e65f3d680e26027121ec2413e77598bcb6cfc6e0d9888221"),
            Err(SignatureError::Mismatch),
        ),
        (Some(&REALISTIC_SIG[7..]), Err(SignatureError::Malformed)),
        (
            Some("sha1=b4381c4ee6ec52de69a6194f77abe54b857ceea3"),
            Err(SignatureError::Malformed),
        ),
        (Some("sha256=zz"), Err(SignatureError::Malformed)),
        (Some("sha256=1cb8b2a2"), Err(SignatureError::Malformed)),
        (Some("sha256="), Err(SignatureError::Malformed)),
        (Some("é"), Err(SignatureError::Malformed)),
    ];
    for (header, expected) in cases {
        assert_eq!(
            &verify_signature(REALISTIC_SECRET, body, *header),
            expected,
            "header {header:?}"
        );
    }
    // One changed byte of body breaks it.
    let mut tampered = body.to_vec();
    tampered[100] ^= 1;
    assert_eq!(
        verify_signature(REALISTIC_SECRET, &tampered, Some(REALISTIC_SIG)),
        Err(SignatureError::Mismatch)
    );
}

#[test]
fn realistic_body_parses() {
    let batch = parse(REALISTIC.as_bytes()).unwrap();
    let expected = InboundMessage {
        route: route("800000000000001"),
        provider_message_id: "wamid.TEST0000000000000000000001".to_owned(),
        sender: ContactRef {
            identities: vec![Identity {
                kind: IdentityKind::WhatsappWaId,
                value: "15555550123".to_owned(),
            }],
            display_name: Some("Ada Tester".to_owned()),
            phone: Some("+15555550123".to_owned()),
        },
        sent_at_ms: 1_760_000_000_000,
        content: MessageContent::Text {
            text: "Hi, is my order shipped?".to_owned(),
        },
        reply_to: None,
        forwarded: false,
        raw: json!({"from":"15555550123","id":"wamid.TEST0000000000000000000001",
            "timestamp":"1760000000","type":"text","text":{"body":"Hi, is my order shipped?"}}),
    };
    assert_eq!(batch.items, vec![InboundItem::Message(Box::new(expected))]);
    assert_eq!(
        dedup_keys(REALISTIC.as_bytes()).unwrap(),
        vec!["msg:wamid.TEST0000000000000000000001"]
    );
}

#[test]
fn every_message_type() {
    let batch = parse(fixture!("whatsapp_message_types.json").as_bytes()).unwrap();
    let msgs = messages(&batch);
    assert_eq!(msgs.len(), batch.items.len(), "no notices expected");

    let interactive = |kind: &str, id: Option<&str>, title: &str, description: Option<&str>| {
        MessageContent::Interactive {
            kind: kind.to_owned(),
            id: id.map(str::to_owned),
            title: Some(title.to_owned()),
            description: description.map(str::to_owned),
        }
    };
    let unsupported = |t: &str| MessageContent::Unsupported {
        provider_type: t.to_owned(),
    };
    let text = |t: &str| MessageContent::Text { text: t.to_owned() };
    let reaction = |emoji: Option<&str>| MessageContent::Reaction {
        target_message_id: "wamid.SENT1".to_owned(),
        emoji: emoji.map(str::to_owned),
    };
    let cases: Vec<(&str, MessageContent, Option<&str>, bool)> = vec![
        ("wamid.T1", text("Hi, is my order shipped?"), None, false),
        (
            "wamid.T2",
            MessageContent::Media {
                attachments: vec![Attachment {
                    sha256: Some("aW1hZ2U=".to_owned()),
                    ..media(MediaKind::Image, "4400000000000001", "image/jpeg")
                }],
                caption: Some("receipt".to_owned()),
            },
            None,
            false,
        ),
        (
            "wamid.T3",
            MessageContent::Media {
                attachments: vec![Attachment {
                    sha256: Some("YXVkaW8=".to_owned()),
                    voice: true,
                    ..media(
                        MediaKind::Audio,
                        "4400000000000002",
                        "audio/ogg; codecs=opus",
                    )
                }],
                caption: None,
            },
            None,
            false,
        ),
        (
            "wamid.T4",
            MessageContent::Media {
                attachments: vec![Attachment {
                    sha256: Some("dmlkZW8=".to_owned()),
                    url: Some("https://lookaside.example/v".to_owned()),
                    ..media(MediaKind::Video, "4400000000000003", "video/mp4")
                }],
                caption: Some("unboxing".to_owned()),
            },
            None,
            false,
        ),
        (
            "wamid.T5",
            MessageContent::Media {
                attachments: vec![Attachment {
                    sha256: Some("ZG9j".to_owned()),
                    filename: Some("invoice.pdf".to_owned()),
                    ..media(MediaKind::Document, "4400000000000004", "application/pdf")
                }],
                caption: Some("pls check".to_owned()),
            },
            None,
            false,
        ),
        (
            "wamid.T6",
            MessageContent::Media {
                attachments: vec![Attachment {
                    sha256: Some("c3RpY2tlcg==".to_owned()),
                    ..media(MediaKind::Sticker, "4400000000000005", "image/webp")
                }],
                caption: None,
            },
            None,
            false,
        ),
        (
            "wamid.T7",
            MessageContent::Location {
                latitude: 52.52,
                longitude: 13.405,
                name: Some("Shop".to_owned()),
                address: Some("Main St 1".to_owned()),
                url: Some("https://example.com".to_owned()),
            },
            None,
            false,
        ),
        (
            "wamid.T8",
            interactive("button_reply", Some("confirm_yes"), "Yes", None),
            Some("wamid.SENT1"),
            false,
        ),
        (
            "wamid.T9",
            interactive("list_reply", Some("slot_2"), "10:00", Some("Tomorrow")),
            Some("wamid.SENT2"),
            false,
        ),
        (
            "wamid.T10",
            interactive("button", Some("STOP_PROMOS"), "Stop promotions", None),
            Some("wamid.TEMPLATE1"),
            false,
        ),
        ("wamid.T11", reaction(Some("\u{1f44d}")), None, false),
        ("wamid.T12", reaction(None), None, false),
        ("wamid.T13", reaction(None), None, false),
        (
            "wamid.T14",
            interactive("nfm_reply", None, "flow", None),
            Some("wamid.FLOW1"),
            false,
        ),
        (
            "wamid.T15",
            MessageContent::Contacts {
                contacts: json!([{"name":{"formatted_name":"Grace Hopper","first_name":"Grace"},
                    "phones":[{"phone":"+1 555 555 0199","type":"CELL","wa_id":"15555550199"}]}]),
            },
            None,
            false,
        ),
        ("wamid.T16", unsupported("order"), None, false),
        ("wamid.T17", unsupported("system"), None, false),
        ("wamid.T18", unsupported("unsupported"), None, false),
        ("wamid.T19", unsupported("request_welcome"), None, false),
        ("wamid.T20", unsupported("hologram"), None, false),
        ("wamid.T21", text("fwd"), None, true),
        ("wamid.T22", text("fwd many"), None, true),
    ];
    assert_eq!(msgs.len(), cases.len());
    for (i, (msg, (id, content, reply_to, forwarded))) in msgs.iter().zip(&cases).enumerate() {
        assert_eq!(msg.provider_message_id, *id);
        assert_eq!(&msg.content, content, "{id}");
        assert_eq!(msg.reply_to.as_deref(), *reply_to, "{id}");
        assert_eq!(msg.forwarded, *forwarded, "{id}");
        assert_eq!(msg.sent_at_ms, 1_760_000_000_000 + 1000 * i as i64, "{id}");
        assert_eq!(msg.route, route("800000000000001"));
        // The lone contact carries a BSUID, which leads.
        assert_eq!(
            msg.sender.identities,
            vec![
                Identity {
                    kind: IdentityKind::WhatsappBsuid,
                    value: "US.13491208655302741918".to_owned()
                },
                Identity {
                    kind: IdentityKind::WhatsappWaId,
                    value: "15555550123".to_owned()
                },
            ]
        );
        assert_eq!(msg.sender.display_name.as_deref(), Some("Ada Tester"));
        assert_eq!(msg.sender.phone.as_deref(), Some("+15555550123"));
        assert_eq!(msg.raw["id"], *id, "raw is the message object");
    }
    // Unknown parts stay reachable through `raw`.
    assert_eq!(
        msgs[13].raw["interactive"]["nfm_reply"]["response_json"],
        "{\"flow_token\":\"t1\",\"slot\":\"2\"}"
    );
    assert_eq!(msgs[17].raw["errors"][0]["code"], 131051);
}

#[test]
fn batch_of_entries_changes_messages_and_statuses() {
    let body = fixture!("whatsapp_batch.json").as_bytes();
    let batch = parse(body).unwrap();
    let summary: Vec<String> = batch
        .items
        .iter()
        .map(|item| match item {
            InboundItem::Message(m) => format!(
                "msg {} {:?} {:?}",
                m.provider_message_id, m.route, m.sender.display_name
            ),
            InboundItem::Status(s) => format!(
                "status {} {} {:?} {:?}",
                s.provider_message_id, s.provider_status, s.status, s.recipient
            ),
            InboundItem::Notice(n) => format!("notice {}", n.kind),
        })
        .collect();
    let r1 = format!("{:?}", route("800000000000001"));
    let r2 = format!("{:?}", route("800000000000002"));
    assert_eq!(
        summary,
        vec![
            format!("msg wamid.A1 {r1} Some(\"Ada\")"),
            format!("msg wamid.A2 {r1} Some(\"Bob\")"),
            format!("msg wamid.A3 {r1} Some(\"Ada\")"),
            "status wamid.SENT1 delivered Some(Delivered) Some(\"15555550123\")".to_owned(),
            "status wamid.SENT2 failed Some(Failed) Some(\"15555550123\")".to_owned(),
            format!("msg wamid.B1 {r2} Some(\"Cy\")"),
            format!("msg wamid.B2 {r2} Some(\"Cy\")"),
            "status wamid.SENT3 read Some(Read) Some(\"4915112345678\")".to_owned(),
            "status wamid.SENT4 played Some(Read) Some(\"4915112345678\")".to_owned(),
            "status wamid.SENT5 deleted None Some(\"DE.998877\")".to_owned(),
        ]
    );
    let InboundItem::Status(failed) = &batch.items[4] else {
        panic!("expected a status");
    };
    assert_eq!(failed.route, route("800000000000001"));
    assert_eq!(failed.at_ms, 1_760_000_200_000);
    assert_eq!(
        failed.errors,
        vec![ProviderError {
            code: "131047".to_owned(),
            title: Some("Re-engagement message".to_owned()),
            details: Some("Message failed to send because more than 24 hours have passed since the customer last replied to this number.".to_owned()),
        }]
    );
    assert_eq!(failed.raw["pricing"], Value::Null);
    let InboundItem::Status(delivered) = &batch.items[3] else {
        panic!("expected a status");
    };
    assert!(delivered.errors.is_empty());
    assert_eq!(delivered.raw["pricing"]["pricing_model"], "PMP");

    assert_eq!(
        dedup_keys(body).unwrap(),
        vec![
            "msg:wamid.A1",
            "msg:wamid.A2",
            "msg:wamid.A3",
            "status:wamid.SENT1:delivered",
            "status:wamid.SENT2:failed",
            "msg:wamid.B1",
            "msg:wamid.B2",
            "status:wamid.SENT3:read",
            "status:wamid.SENT4:played",
            "status:wamid.SENT5:deleted",
        ]
    );
}

#[test]
fn bsuid_only_sender() {
    let batch = parse(fixture!("whatsapp_bsuid_only.json").as_bytes()).unwrap();
    let msgs = messages(&batch);
    assert_eq!(msgs.len(), 1);
    assert_eq!(
        msgs[0].sender,
        ContactRef {
            identities: vec![Identity {
                kind: IdentityKind::WhatsappBsuid,
                value: "US.13491208655302741918".to_owned(),
            }],
            display_name: Some("ada_handle".to_owned()),
            phone: None,
        }
    );
}

#[test]
fn contacts_are_matched_by_id_not_position() {
    let body = json!({"object":"whatsapp_business_account","entry":[{"id":"1","changes":[{"field":"messages","value":{
    "metadata":{"phone_number_id":"800"},
    "contacts":[{"profile":{"name":"Lone"},"wa_id":"111"}],
    "messages":[
        {"from":"222","id":"m1","timestamp":"1","type":"text","text":{"body":"a"}},
        {"from":"111","from_user_id":"US.9","id":"m2","timestamp":"2","type":"text","text":{"body":"b"}}
    ]}}]}]});
    let batch = parse(&serde_json::to_vec(&body).unwrap()).unwrap();
    let msgs = messages(&batch);
    // A lone contact whose wa_id contradicts `from` does not name the sender.
    assert_eq!(msgs[0].sender.display_name, None);
    assert_eq!(msgs[0].sender.phone.as_deref(), Some("+222"));
    assert_eq!(msgs[1].sender.display_name.as_deref(), Some("Lone"));
    assert_eq!(
        msgs[1]
            .sender
            .identities
            .iter()
            .map(|i| (i.kind, i.value.as_str()))
            .collect::<Vec<_>>(),
        vec![
            (IdentityKind::WhatsappBsuid, "US.9"),
            (IdentityKind::WhatsappWaId, "111")
        ]
    );
}

#[test]
fn notices_for_other_fields_errors_and_malformed_items() {
    let body = fixture!("whatsapp_notices.json").as_bytes();
    let batch = parse(body).unwrap();
    assert_eq!(
        notice_kinds(&batch),
        vec![
            "account_update",
            "errors",
            "malformed_message",
            "message_without_sender",
            "malformed_message",
            "malformed_message",
            "malformed_message",
            "malformed_status",
            "malformed_status",
            "malformed_change",
            "malformed_change",
            "malformed_entry",
        ]
    );
    let msgs = messages(&batch);
    assert_eq!(msgs.len(), 1);
    assert_eq!(msgs[0].provider_message_id, "wamid.OK");
    assert_eq!(batch.items.len(), 13);

    let InboundItem::Notice(account) = &batch.items[0] else {
        panic!("expected a notice");
    };
    assert_eq!(account.route, None);
    assert_eq!(account.raw["value"]["event"], "VERIFIED_ACCOUNT");
    let InboundItem::Notice(errors) = &batch.items[1] else {
        panic!("expected a notice");
    };
    assert_eq!(errors.route, Some(route("800000000000001")));
    assert_eq!(errors.raw["code"], 130429);
    let InboundItem::Notice(no_sender) = &batch.items[3] else {
        panic!("expected a notice");
    };
    assert_eq!(no_sender.raw["id"], "wamid.NOSENDER");

    // The lenient fallback still finds every well-formed id.
    assert_eq!(
        dedup_keys(body).unwrap(),
        vec![
            "msg:wamid.NOSENDER",
            "msg:wamid.BADTS",
            "msg:wamid.NOTS",
            "msg:wamid.NOBODY",
            "msg:wamid.OK",
        ]
    );
}

#[test]
fn empty_messages_change_is_a_notice() {
    let body = br#"{"object":"whatsapp_business_account","entry":[{"id":"1","changes":[
        {"field":"messages","value":{"metadata":{"phone_number_id":"800"}}}]}]}"#;
    let batch = parse(body).unwrap();
    assert_eq!(notice_kinds(&batch), vec!["messages"]);
    assert_eq!(dedup_keys(body).unwrap(), Vec::<String>::new());
}

#[test]
fn envelope_errors() {
    let cases: &[(&[u8], fn(&ParseError) -> bool)] = &[
        (b"", |e| matches!(e, ParseError::Json(_))),
        (b"not json", |e| matches!(e, ParseError::Json(_))),
        (br#"{"object":"whatsapp_business_account","entry":["#, |e| {
            matches!(e, ParseError::Json(_))
        }),
        (b"[]", |e| matches!(e, ParseError::Shape(_))),
        (b"{}", |e| matches!(e, ParseError::Shape(_))),
        (br#"{"object":"page","entry":[]}"#, |e| {
            matches!(e, ParseError::Shape(_))
        }),
        (br#"{"entry":[]}"#, |e| matches!(e, ParseError::Shape(_))),
        (br#"{"object":"whatsapp_business_account"}"#, |e| {
            matches!(e, ParseError::Shape(_))
        }),
        (
            br#"{"object":"whatsapp_business_account","entry":{}}"#,
            |e| matches!(e, ParseError::Shape(_)),
        ),
        (br#"{"object":7,"entry":[]}"#, |e| {
            matches!(e, ParseError::Shape(_))
        }),
    ];
    for (body, is_expected) in cases {
        let name = String::from_utf8_lossy(body);
        let err = parse(body).unwrap_err();
        assert!(is_expected(&err), "parse {name}: {err:?}");
        let err = dedup_keys(body).unwrap_err();
        assert!(is_expected(&err), "dedup_keys {name}: {err:?}");
    }
    let empty = br#"{"object":"whatsapp_business_account","entry":[]}"#;
    assert_eq!(parse(empty).unwrap().items, vec![]);
    assert_eq!(dedup_keys(empty).unwrap(), Vec::<String>::new());
}

#[test]
fn dedup_keys_ignore_other_fields_and_handle_escapes() {
    let body = br#"{"object":"whatsapp_business_account","entry":[{"id":"1","changes":[
        {"field":"smb_message_echoes","value":{"messages":[{"id":"wamid.ECHO"}]}},
        {"field":"messages","value":{"metadata":{"phone_number_id":"800"},
          "messages":[{"from":"1","id":"wamid.HBg\/Lz+=","timestamp":"1","type":"text","text":{"body":"x"}}],
          "statuses":[{"id":"wamid.S","status":"sent","timestamp":"1"},{"id":"wamid.NOSTATUS"}]}}]}]}"#;
    assert_eq!(
        dedup_keys(body).unwrap(),
        vec!["msg:wamid.HBg/Lz+=", "status:wamid.S:sent"]
    );
    let batch = parse(body).unwrap();
    assert_eq!(messages(&batch)[0].provider_message_id, "wamid.HBg/Lz+=");
}

#[test]
fn cheap_pass_borrows_from_the_body() {
    let envelope: KeyEnvelope<'_> = serde_json::from_slice(REALISTIC.as_bytes()).unwrap();
    let entries = envelope.entry.unwrap();
    let id = &entries[0].changes[0].value.as_ref().unwrap().messages[0].id;
    assert!(matches!(id, Some(Str(Cow::Borrowed(_)))));
}
