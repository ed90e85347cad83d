// Tests may unwrap (no workspace clippy.toml sets `allow-unwrap-in-tests`), and the tables
// spell out their row types where they are used.
#![allow(clippy::unwrap_used, clippy::type_complexity)]

use serde_json::json;

use super::*;

const TOKEN: &[u8] = b"12345";
const URL: &str = "https://mycompany.com/myapp.php?foo=1&bar=2";
const HUB_TOKEN: &[u8] = b"0123456789abcdef0123456789abcdef";
const SID: &str = "SM0123456789abcdef0123456789abcdef";

fn pairs(list: &[(&str, &str)]) -> Vec<(String, String)> {
    list.iter()
        .map(|(n, v)| ((*n).to_owned(), (*v).to_owned()))
        .collect()
}

fn sdk_params() -> Vec<(String, String)> {
    pairs(&[
        ("CallSid", "CA1234567890ABCDE"),
        ("Caller", "+14158675309"),
        ("Digits", "1234"),
        ("From", "+14158675309"),
        ("To", "+18005551212"),
    ])
}

#[test]
fn sdk_vector_and_port_variants() {
    let params = sdk_params();
    let cases = [
        (URL, "RSOYDt4T1cUTdK1PDd93/VVr8B8="),
        (
            "https://mycompany.com:443/myapp.php?foo=1&bar=2",
            "kvajT1Ptam85bY51eRf/AJRuM3w=",
        ),
        (
            "http://mycompany.com:80/myapp.php?foo=1&bar=2",
            "0ZXoZLH/DfblKGATFgpif+LLRf4=",
        ),
        (
            "http://mycompany.com:1234/myapp.php?foo=1&bar=2",
            "Zmvh+3yNM1Phv2jhDCwEM3q5ebU=",
        ),
        (
            "https://user:pass@mycompany.com/myapp.php?foo=1&bar=2",
            "CukzLTc1tT5dXEDIHm/tKBanW10=",
        ),
        (
            "https://user@mycompany.com/myapp.php?foo=1&bar=2",
            "2YRLlVAflCqxaNicjMpJcSTgzSs=",
        ),
    ];
    for (url, sig) in cases {
        assert_eq!(compute_signature(TOKEN, url, &params), sig, "{url}");
        assert_eq!(
            verify_signature(TOKEN, url, &params, Some(sig)),
            Ok(()),
            "{url}"
        );
    }
}

#[test]
fn port_tolerance_as_the_sdks() {
    let params = sdk_params();
    let cases = [
        // (URL the hub reconstructs, signature Twilio sent, valid?)
        (
            "https://mycompany.com:1234/myapp.php?foo=1&bar=2",
            "RSOYDt4T1cUTdK1PDd93/VVr8B8=",
            true,
        ),
        (
            "http://mycompany.com/myapp.php?foo=1&bar=2",
            "0ZXoZLH/DfblKGATFgpif+LLRf4=",
            true,
        ),
        (
            "https://mycompany.com/myapp.php?foo=1&bar=2",
            "kvajT1Ptam85bY51eRf/AJRuM3w=",
            true,
        ),
        (
            "https://mycompany.com:443/myapp.php?foo=1&bar=2",
            "RSOYDt4T1cUTdK1PDd93/VVr8B8=",
            true,
        ),
        (
            "http://mycompany.com:80/myapp.php?foo=1&bar=2",
            "0ZXoZLH/DfblKGATFgpif+LLRf4=",
            true,
        ),
        (
            "http://mycompany.com/myapp.php?foo=1&bar=2",
            "Zmvh+3yNM1Phv2jhDCwEM3q5ebU=",
            false,
        ),
        // Userinfo is signed: the SDKs strip or add the port, never the user.
        (
            "https://user:pass@mycompany.com:443/myapp.php?foo=1&bar=2",
            "CukzLTc1tT5dXEDIHm/tKBanW10=",
            true,
        ),
        (
            "https://mycompany.com/myapp.php?foo=1&bar=2",
            "CukzLTc1tT5dXEDIHm/tKBanW10=",
            false,
        ),
        // The scheme is signed too.
        (
            "http://mycompany.com/myapp.php?foo=1&bar=2",
            "RSOYDt4T1cUTdK1PDd93/VVr8B8=",
            false,
        ),
        // So is the query, as received.
        (
            "https://mycompany.com/myapp.php?bar=2&foo=1",
            "RSOYDt4T1cUTdK1PDd93/VVr8B8=",
            false,
        ),
    ];
    for (url, sig, valid) in cases {
        let expected = if valid {
            Ok(())
        } else {
            Err(SignatureError::Mismatch)
        };
        assert_eq!(
            verify_signature(TOKEN, url, &params, Some(sig)),
            expected,
            "{url} {sig}"
        );
    }
}

#[test]
fn url_variants_table() {
    let cases: &[(&str, &[&str])] = &[
        (
            "https://a.com/p?q=1",
            &["https://a.com/p?q=1", "https://a.com:443/p?q=1"],
        ),
        ("http://a.com", &["http://a.com", "http://a.com:80"]),
        (
            "https://a.com:8443/p",
            &["https://a.com:8443/p", "https://a.com/p"],
        ),
        (
            "https://u:p@a.com:443/p",
            &["https://u:p@a.com:443/p", "https://u:p@a.com/p"],
        ),
        (
            "https://u:p@a.com/p",
            &["https://u:p@a.com/p", "https://u:p@a.com:443/p"],
        ),
        (
            "https://[::1]:8080/p",
            &["https://[::1]:8080/p", "https://[::1]/p"],
        ),
        (
            "https://[::1]/p",
            &["https://[::1]/p", "https://[::1]:443/p"],
        ),
        (
            "https://a.com?x=a:1",
            &["https://a.com?x=a:1", "https://a.com:443?x=a:1"],
        ),
        ("ftp://a.com/p", &["ftp://a.com/p"]),
        ("not a url", &["not a url"]),
    ];
    for (url, expected) in cases {
        assert_eq!(url_variants(url), *expected, "{url}");
    }
}

#[test]
fn duplicate_keys() {
    let params = pairs(&[
        ("Sid", "CA123"),
        ("SidAccount", "AC123"),
        ("Digits", "5678"),
        ("Digits", "1234"),
        ("Digits", "1234"),
    ]);
    let sig = "IK+Dwps556ElfBT0I3Rgjkr1wJU=";
    assert_eq!(compute_signature(TOKEN, URL, &params), sig);
    assert_eq!(verify_signature(TOKEN, URL, &params, Some(sig)), Ok(()));
    // Parameter order on the wire does not matter.
    let mut reversed = params.clone();
    reversed.reverse();
    assert_eq!(compute_signature(TOKEN, URL, &reversed), sig);
    // The same pairs decoded from a body.
    let from_form = parse_form(b"Sid=CA123&SidAccount=AC123&Digits=5678&Digits=1234&Digits=1234");
    assert_eq!(from_form, params);
}

#[test]
fn json_body_variant() {
    let body = br#"{"property": "value", "boolean": true}"#;
    let hash = "0a1ff7634d9ab3b95db5c9a2dfe9416e41502b283a80c7cf19632632f96e6620";
    assert_eq!(hex::encode(Sha256::digest(body)), hash);
    let url = format!("{URL}&bodySHA256={hash}");
    let sig = "a9nBmqA0ju/hNViExpshrM61xv4=";
    assert_eq!(compute_signature(TOKEN, &url, &[]), sig);
    assert_eq!(verify_json_signature(TOKEN, &url, body, Some(sig)), Ok(()));
    // Short URL (node).
    let short = format!("https://mycompany.com/myapp.php?bodySHA256={hash}");
    assert_eq!(
        verify_json_signature(TOKEN, &short, body, Some("y77kIzt2vzLz71DgmJGsen2scGs=")),
        Ok(())
    );
    // Node's `{}` vector only matches with `:443` inserted.
    let empty_hash = "44136fa355b3678a1146ad16f7e8649e94fb4fc21fe77e8310c060f61caaff8a";
    assert_eq!(hex::encode(Sha256::digest(b"{}")), empty_hash);
    let empty_url = format!("{URL}&bodySHA256={empty_hash}");
    let empty_sig = "Ldidvp12m26NI7eqEvxnEpkd9Hc=";
    assert_ne!(compute_signature(TOKEN, &empty_url, &[]), empty_sig);
    assert_eq!(
        verify_json_signature(TOKEN, &empty_url, b"{}", Some(empty_sig)),
        Ok(())
    );
    // api-snippets body hash.
    assert_eq!(
        hex::encode(Sha256::digest(
            br#"{"CallSid":"CA1234567890ABCDE","Caller":"+12349013030"}"#
        )),
        "5ccde7145dfb8f56479710896586cb9d5911809d83afbe34627818790db0aec9"
    );

    let cases: &[(&str, &[u8], Option<&str>, Result<(), SignatureError>)] = &[
        // A different body under a validly signed URL.
        (
            &url,
            br#"{"property": "value", "boolean": false}"#,
            Some(sig),
            Err(SignatureError::Mismatch),
        ),
        // Re-serialized JSON is not the raw body.
        (
            &url,
            br#"{"property":"value","boolean":true}"#,
            Some(sig),
            Err(SignatureError::Mismatch),
        ),
        // No bodySHA256 in the URL: nothing ties the body to the signature.
        (URL, body, Some(sig), Err(SignatureError::Mismatch)),
        (
            &url,
            body,
            Some("RSOYDt4T1cUTdK1PDd93/VVr8B8="),
            Err(SignatureError::Mismatch),
        ),
        (&url, body, None, Err(SignatureError::Missing)),
        (&url, body, Some("???"), Err(SignatureError::Malformed)),
    ];
    for (url, body, header, expected) in cases {
        assert_eq!(
            &verify_json_signature(TOKEN, url, body, *header),
            expected,
            "{url} {header:?}"
        );
    }
}

fn hub_inbound() -> Vec<(String, String)> {
    pairs(&[
        ("AccountSid", "AC0123456789abcdef0123456789abcdef"),
        ("ApiVersion", "2010-04-01"),
        ("Body", "Hello there"),
        ("From", "+14155550199"),
        ("FromCity", "SAN FRANCISCO"),
        ("FromCountry", "US"),
        ("FromState", "CA"),
        ("FromZip", "94105"),
        ("MessageSid", SID),
        ("MessagingServiceSid", "MG0123456789abcdef0123456789abcdef"),
        ("NumMedia", "0"),
        ("NumSegments", "1"),
        ("SmsMessageSid", SID),
        ("SmsSid", SID),
        ("SmsStatus", "received"),
        ("To", "+14155550100"),
        ("ToCity", "SAN FRANCISCO"),
        ("ToCountry", "US"),
        ("ToState", "CA"),
        ("ToZip", "94107"),
    ])
}

fn hub_status() -> Vec<(String, String)> {
    pairs(&[
        ("AccountSid", "AC0123456789abcdef0123456789abcdef"),
        ("ApiVersion", "2010-04-01"),
        ("ErrorCode", "30003"),
        ("From", "+14155550100"),
        ("MessageSid", SID),
        ("MessageStatus", "undelivered"),
        ("SmsSid", SID),
        ("SmsStatus", "undelivered"),
        ("To", "+14155550199"),
    ])
}

#[test]
fn hub_shaped_vectors() {
    let url = "https://hub.example.com/webhooks/twilio/sms";
    let sig = "eYmdrC5qaKVjRdXfwkfmHuGCFzA=";
    let params = hub_inbound();
    assert_eq!(compute_signature(HUB_TOKEN, url, &params), sig);
    assert_eq!(verify_signature(HUB_TOKEN, url, &params, Some(sig)), Ok(()));

    // From the wire: `+` arrives as %2B, spaces as `+`.
    let body = "AccountSid=AC0123456789abcdef0123456789abcdef&ApiVersion=2010-04-01&Body=Hello+there\
        &From=%2B14155550199&FromCity=SAN+FRANCISCO&FromCountry=US&FromState=CA&FromZip=94105\
        &MessageSid=SM0123456789abcdef0123456789abcdef&MessagingServiceSid=MG0123456789abcdef0123456789abcdef\
        &NumMedia=0&NumSegments=1&SmsMessageSid=SM0123456789abcdef0123456789abcdef\
        &SmsSid=SM0123456789abcdef0123456789abcdef&SmsStatus=received&To=%2B14155550100\
        &ToCity=SAN+FRANCISCO&ToCountry=US&ToState=CA&ToZip=94107";
    let decoded = parse_form(body.as_bytes());
    assert_eq!(decoded, params);
    assert_eq!(
        verify_signature(HUB_TOKEN, url, &decoded, Some(sig)),
        Ok(())
    );

    let status_url = "https://hub.example.com/webhooks/twilio/status?tenant=42";
    let status_sig = "aZdjKckh1I2JkNq5EBB6sGcmqFY=";
    assert_eq!(
        compute_signature(HUB_TOKEN, status_url, &hub_status()),
        status_sig
    );
    assert_eq!(
        verify_signature(HUB_TOKEN, status_url, &hub_status(), Some(status_sig)),
        Ok(())
    );
    assert_eq!(
        verify_signature(
            HUB_TOKEN,
            "https://hub.example.com/webhooks/twilio/status",
            &hub_status(),
            Some(status_sig)
        ),
        Err(SignatureError::Mismatch)
    );
}

#[test]
fn forged_missing_and_malformed_headers() {
    let url = "https://hub.example.com/webhooks/twilio/sms";
    let params = hub_inbound();
    let good = "eYmdrC5qaKVjRdXfwkfmHuGCFzA=";
    let mut extra = params.clone();
    extra.push(("Injected".to_owned(), "1".to_owned()));
    let mut trimmed = params.clone();
    trimmed[2].1 = "Hello there ".to_owned();
    let cases: Vec<(
        &[u8],
        &[(String, String)],
        Option<&str>,
        Result<(), SignatureError>,
    )> = vec![
        (HUB_TOKEN, &params, Some(good), Ok(())),
        (
            HUB_TOKEN,
            &params,
            Some(" eYmdrC5qaKVjRdXfwkfmHuGCFzA= "),
            Ok(()),
        ),
        (HUB_TOKEN, &params, None, Err(SignatureError::Missing)),
        (HUB_TOKEN, &params, Some(""), Err(SignatureError::Missing)),
        (
            HUB_TOKEN,
            &params,
            Some("not base64!"),
            Err(SignatureError::Malformed),
        ),
        (
            HUB_TOKEN,
            &params,
            Some("c2hvcnQ="),
            Err(SignatureError::Malformed),
        ),
        (
            HUB_TOKEN,
            &params,
            Some("eYmdrC5qaKVjRdXfwkfmHuGCFzA"),
            Err(SignatureError::Malformed),
        ),
        (
            b"wrong token",
            &params,
            Some(good),
            Err(SignatureError::Mismatch),
        ),
        (HUB_TOKEN, &extra, Some(good), Err(SignatureError::Mismatch)),
        (
            HUB_TOKEN,
            &trimmed,
            Some(good),
            Err(SignatureError::Mismatch),
        ),
        (
            HUB_TOKEN,
            &params,
            Some("RSOYDt4T1cUTdK1PDd93/VVr8B8="),
            Err(SignatureError::Mismatch),
        ),
    ];
    for (i, (token, params, header, expected)) in cases.into_iter().enumerate() {
        assert_eq!(
            verify_signature(token, url, params, header),
            expected,
            "case {i}"
        );
    }
}

#[test]
fn dedup_key_table() {
    let cases: &[(&[(&str, &str)], Option<&str>)] = &[
        (&[("MessageSid", "SM1"), ("Body", "hi")], Some("msg:SM1")),
        (
            &[("MessageSid", "SM1"), ("MessageStatus", "delivered")],
            Some("status:SM1:delivered"),
        ),
        (
            &[("MessageSid", "SM1"), ("MessageStatus", "")],
            Some("msg:SM1"),
        ),
        (&[("SmsSid", "SM1"), ("MessageStatus", "sent")], None),
        (&[("MessageSid", "")], None),
        (&[], None),
    ];
    for (params, expected) in cases {
        assert_eq!(
            dedup_key(&pairs(params)).as_deref(),
            *expected,
            "{params:?}"
        );
    }
    assert_eq!(
        dedup_key(&hub_status()).as_deref(),
        Some(&*format!("status:{SID}:undelivered"))
    );
}

#[test]
fn inbound_sms() {
    let msg = parse_inbound(&hub_inbound(), 1_760_000_000_123).unwrap();
    assert_eq!(msg.route, RouteKey::Inbox);
    assert_eq!(msg.provider_message_id, SID);
    assert_eq!(
        msg.sender,
        ContactRef {
            identities: vec![Identity {
                kind: IdentityKind::Phone,
                value: "+14155550199".to_owned()
            }],
            display_name: None,
            phone: Some("+14155550199".to_owned()),
        }
    );
    assert_eq!(msg.sent_at_ms, 1_760_000_000_123);
    assert_eq!(
        msg.content,
        MessageContent::Text {
            text: "Hello there".to_owned()
        }
    );
    assert_eq!(msg.reply_to, None);
    assert!(!msg.forwarded);
    assert_eq!(msg.raw["FromCity"], "SAN FRANCISCO");
    assert_eq!(msg.raw.as_object().unwrap().len(), 20);
}

#[test]
fn inbound_mms_with_two_media() {
    let mut params = hub_inbound();
    params.retain(|(n, _)| n != "NumMedia" && n != "Body");
    params.extend(pairs(&[
        ("Body", "look"),
        ("NumMedia", "2"),
        ("MediaContentType0", "image/jpeg"),
        (
            "MediaUrl0",
            "https://api.twilio.com/2010-04-01/Accounts/AC1/Messages/MM1/Media/ME0",
        ),
        ("MediaContentType1", "application/pdf"),
        (
            "MediaUrl1",
            "https://api.twilio.com/2010-04-01/Accounts/AC1/Messages/MM1/Media/ME1",
        ),
    ]));
    let msg = parse_inbound(&params, 0).unwrap();
    let attachment = |kind, url: &str, mime: &str| Attachment {
        kind,
        provider_media_id: None,
        url: Some(url.to_owned()),
        mime_type: Some(mime.to_owned()),
        sha256: None,
        filename: None,
        voice: false,
    };
    assert_eq!(
        msg.content,
        MessageContent::Media {
            attachments: vec![
                attachment(
                    MediaKind::Image,
                    "https://api.twilio.com/2010-04-01/Accounts/AC1/Messages/MM1/Media/ME0",
                    "image/jpeg"
                ),
                attachment(
                    MediaKind::Document,
                    "https://api.twilio.com/2010-04-01/Accounts/AC1/Messages/MM1/Media/ME1",
                    "application/pdf"
                ),
            ],
            caption: Some("look".to_owned()),
        }
    );

    // An empty Body is no caption.
    for (n, v) in params.iter_mut() {
        if n == "Body" {
            v.clear();
        }
    }
    let MessageContent::Media { caption, .. } = parse_inbound(&params, 0).unwrap().content else {
        panic!("expected media");
    };
    assert_eq!(caption, None);
}

#[test]
fn media_kinds() {
    let cases = [
        (Some("image/png"), MediaKind::Image),
        (Some("IMAGE/GIF"), MediaKind::Image),
        (Some("audio/amr"), MediaKind::Audio),
        (Some("video/3gpp"), MediaKind::Video),
        (Some("application/pdf"), MediaKind::Document),
        (Some("text/vcard"), MediaKind::File),
        (None, MediaKind::File),
    ];
    for (content_type, kind) in cases {
        assert_eq!(media_kind(content_type), kind, "{content_type:?}");
    }
}

#[test]
fn inbound_whatsapp_via_twilio() {
    let params = pairs(&[
        ("MessageSid", "SM1"),
        ("From", "whatsapp:+14155550199"),
        ("To", "whatsapp:+14155550100"),
        ("WaId", "14155550199"),
        ("ProfileName", "Ada"),
        ("Body", "hi"),
        ("NumMedia", "0"),
        ("OriginalRepliedMessageSid", "SM0"),
        ("Forwarded", "true"),
    ]);
    let msg = parse_inbound(&params, 5).unwrap();
    assert_eq!(
        msg.sender,
        ContactRef {
            identities: vec![Identity {
                kind: IdentityKind::WhatsappWaId,
                value: "14155550199".to_owned()
            }],
            display_name: Some("Ada".to_owned()),
            phone: Some("+14155550199".to_owned()),
        }
    );
    assert_eq!(msg.reply_to.as_deref(), Some("SM0"));
    assert!(msg.forwarded);

    let location = pairs(&[
        ("MessageSid", "SM2"),
        ("From", "whatsapp:+14155550199"),
        ("Latitude", "52.52"),
        ("Longitude", "13.405"),
        ("Label", "Shop"),
        ("Address", "Main St 1"),
    ]);
    assert_eq!(
        parse_inbound(&location, 0).unwrap().content,
        MessageContent::Location {
            latitude: 52.52,
            longitude: 13.405,
            name: Some("Shop".to_owned()),
            address: Some("Main St 1".to_owned()),
            url: None
        }
    );
    let button = pairs(&[
        ("MessageSid", "SM3"),
        ("From", "whatsapp:+14155550199"),
        ("Body", "Stop promotions"),
        ("ButtonPayload", "STOP_PROMOS"),
        ("ButtonText", "Stop promotions"),
    ]);
    assert_eq!(
        parse_inbound(&button, 0).unwrap().content,
        MessageContent::Interactive {
            kind: "button".to_owned(),
            id: Some("STOP_PROMOS".to_owned()),
            title: Some("Stop promotions".to_owned()),
            description: None
        }
    );
}

#[test]
fn inbound_shape_errors() {
    let cases: &[&[(&str, &str)]] = &[
        &[("From", "+1")],
        &[("MessageSid", "SM1")],
        &[("MessageSid", "SM1"), ("From", "+1"), ("NumMedia", "two")],
        &[("MessageSid", "SM1"), ("From", "+1"), ("NumMedia", "1")],
    ];
    for params in cases {
        assert!(
            matches!(parse_inbound(&pairs(params), 0), Err(ParseError::Shape(_))),
            "{params:?}"
        );
    }
    // Alphanumeric senders are kept but are not phone numbers.
    let msg = parse_inbound(&pairs(&[("MessageSid", "SM1"), ("From", "ACME")]), 0).unwrap();
    assert_eq!(msg.sender.phone, None);
    assert_eq!(msg.sender.identities[0].value, "ACME");
    assert_eq!(
        msg.content,
        MessageContent::Text {
            text: String::new()
        }
    );
}

#[test]
fn status_callback_with_error_code() {
    let status = parse_status(&hub_status(), 1_760_000_000_000).unwrap();
    assert_eq!(
        status,
        StatusUpdate {
            route: RouteKey::Inbox,
            provider_message_id: SID.to_owned(),
            status: Some(DeliveryStatus::Failed),
            provider_status: "undelivered".to_owned(),
            at_ms: 1_760_000_000_000,
            recipient: Some("+14155550199".to_owned()),
            errors: vec![ProviderError {
                code: "30003".to_owned(),
                title: None,
                details: None
            }],
            raw: json!({
                "AccountSid": "AC0123456789abcdef0123456789abcdef",
                "ApiVersion": "2010-04-01",
                "ErrorCode": "30003",
                "From": "+14155550100",
                "MessageSid": SID,
                "MessageStatus": "undelivered",
                "SmsSid": SID,
                "SmsStatus": "undelivered",
                "To": "+14155550199",
            }),
        }
    );
}

#[test]
fn status_mapping() {
    let cases = [
        ("sent", Some(DeliveryStatus::Sent)),
        ("delivered", Some(DeliveryStatus::Delivered)),
        ("read", Some(DeliveryStatus::Read)),
        ("failed", Some(DeliveryStatus::Failed)),
        ("undelivered", Some(DeliveryStatus::Failed)),
        ("queued", None),
        ("sending", None),
        ("accepted", None),
        ("scheduled", None),
        ("receiving", None),
        ("received", None),
        ("canceled", None),
        ("partially_delivered", None),
        ("something_new", None),
    ];
    for (provider_status, expected) in cases {
        let params = pairs(&[("MessageSid", "SM1"), ("MessageStatus", provider_status)]);
        let update = parse_status(&params, 0).unwrap();
        assert_eq!(update.status, expected, "{provider_status}");
        assert_eq!(update.provider_status, provider_status);
        assert!(update.errors.is_empty());
    }
    assert!(matches!(
        parse_status(&pairs(&[("MessageSid", "SM1")]), 0),
        Err(ParseError::Shape(_))
    ));
    assert!(matches!(
        parse_status(&pairs(&[("MessageStatus", "sent")]), 0),
        Err(ParseError::Shape(_))
    ));
}

#[test]
fn raw_keeps_repeated_names() {
    let raw = raw_object(&pairs(&[("A", "1"), ("B", "x"), ("A", "2"), ("A", "3")]));
    assert_eq!(raw, json!({"A": ["1", "2", "3"], "B": "x"}));
}
