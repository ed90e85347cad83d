//! Twilio Programmable Messaging webhooks end to end: SMS, MMS and status callbacks.

use serde_json::{Value, json};

use crate::helpers::*;
use crate::on_both_backends;

on_both_backends!(
    sms_and_mms_thread_into_one_conversation,
    status_callback_is_recorded,
    json_bodies_are_verified_by_body_hash_and_kept,
);

const INBOUND: &str = "/webhooks/twilio/support-sms";

fn sms(sid: &str, body: &str) -> Vec<(&'static str, String)> {
    vec![
        ("AccountSid", "AC0123456789abcdef0123456789abcdef".into()),
        ("ApiVersion", "2010-04-01".into()),
        ("Body", body.into()),
        ("From", "+14155550199".into()),
        ("MessageSid", sid.into()),
        ("NumMedia", "0".into()),
        ("NumSegments", "1".into()),
        ("SmsMessageSid", sid.into()),
        ("SmsSid", sid.into()),
        ("SmsStatus", "received".into()),
        ("To", "+14155550100".into()),
        ("FromCountry", "US".into()),
    ]
}

fn borrowed<'a>(params: &'a [(&'static str, String)]) -> Vec<(&'static str, &'a str)> {
    params.iter().map(|(k, v)| (*k, v.as_str())).collect()
}

async fn sms_and_mms_thread_into_one_conversation(backend: Backend) {
    let site = Site::new(backend);
    let hub = TestHub::start(&site).await;
    let r = hub
        .post_twilio(
            INBOUND,
            &borrowed(&sms("SM0123456789abcdef0123456789abcdef", "Hello there")),
        )
        .await;
    assert_eq!(r.status(), 200);
    assert!(
        r.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/xml")
    );
    assert_eq!(
        r.text().await.unwrap(),
        r#"<?xml version="1.0" encoding="UTF-8"?><Response></Response>"#
    );

    let mut mms = sms("MM0123456789abcdef0123456789abcdef", "see pics");
    mms.retain(|(k, _)| *k != "NumMedia");
    mms.extend([
        ("NumMedia", "2".to_owned()),
        ("MediaUrl0", "https://api.twilio.com/media/ME1".to_owned()),
        ("MediaContentType0", "image/jpeg".to_owned()),
        ("MediaUrl1", "https://api.twilio.com/media/ME2".to_owned()),
        ("MediaContentType1", "application/pdf".to_owned()),
    ]);
    assert_eq!(
        hub.post_twilio(INBOUND, &borrowed(&mms)).await.status(),
        200
    );

    let stored = hub.wait_for_messages(2).await;
    let conversations = hub.conversations().await;
    assert_eq!(conversations.len(), 1);
    assert_eq!(conversations[0]["channel"], "sms");
    let by_id = |sid: &str| -> &Value {
        stored
            .iter()
            .find(|m| m["provider_message_id"] == sid)
            .unwrap()
    };
    assert_eq!(
        by_id("SM0123456789abcdef0123456789abcdef")["content"],
        json!({ "type": "text", "text": "Hello there" })
    );
    let media = &by_id("MM0123456789abcdef0123456789abcdef")["content"];
    assert_eq!(media["type"], "media");
    assert_eq!(media["caption"], "see pics");
    assert_eq!(media["attachments"].as_array().unwrap().len(), 2);
    assert_eq!(
        media["attachments"][0]["url"],
        "https://api.twilio.com/media/ME1"
    );
    assert_eq!(media["attachments"][1]["kind"], "document");
    let (_, contact) = hub
        .get(&format!(
            "/v1/contacts/{}",
            conversations[0]["contact_id"].as_str().unwrap()
        ))
        .await;
    assert_eq!(
        contact["identities"],
        json!([{ "kind": "phone", "value": "+14155550199" }])
    );
    hub.stop().await;
    site.cleanup().await;
}

async fn status_callback_is_recorded(backend: Backend) {
    let site = Site::new(backend);
    let hub = TestHub::start(&site).await;
    let params = [
        ("AccountSid", "AC0123456789abcdef0123456789abcdef"),
        ("ApiVersion", "2010-04-01"),
        ("ErrorCode", "30003"),
        ("From", "+14155550100"),
        ("MessageSid", "SM0123456789abcdef0123456789abcdef"),
        ("MessageStatus", "undelivered"),
        ("SmsSid", "SM0123456789abcdef0123456789abcdef"),
        ("SmsStatus", "undelivered"),
        ("To", "+14155550199"),
    ];
    for _ in 0..3 {
        let r = hub
            .post_twilio("/webhooks/twilio/support-sms/status", &params)
            .await;
        assert_eq!(r.status(), 200);
    }
    let processed = eventually("the status event", || async {
        let events = hub.events("processed").await;
        (!events.is_empty()).then_some(events)
    })
    .await;
    assert_eq!(processed.len(), 1, "redelivered callbacks are one event");
    assert_eq!(processed[0]["source"], "twilio-status:support-sms");
    hub.stop().await;
    site.cleanup().await;
}

/// Twilio's JSON-bodied webhooks sign the URL, whose `bodySHA256` query parameter is the body's
/// hash. Messaging never sends JSON, so a genuine one is kept and quarantined for an operator;
/// a body that does not match its hash is refused.
async fn json_bodies_are_verified_by_body_hash_and_kept(backend: Backend) {
    use sha2::{Digest, Sha256};
    let site = Site::new(backend);
    let hub = TestHub::start(&site).await;
    let body = r#"{"MessageSid":"SM9","MessageStatus":"delivered"}"#;
    let hash = hex::encode(Sha256::digest(body.as_bytes()));
    let path = format!("/webhooks/twilio/support-sms/status?bodySHA256={hash}");
    let signature = switchboard_connectors::twilio::compute_signature(
        TWILIO_TOKEN.as_bytes(),
        &format!("{PUBLIC_URL}{path}"),
        &[],
    );
    let send = |body: &'static str| {
        hub.client
            .post(hub.url(&path))
            .header("x-twilio-signature", signature.clone())
            .header("content-type", "application/json")
            .body(body)
            .send()
    };
    let tampered = send(r#"{"MessageSid":"SM9","MessageStatus":"read"}"#)
        .await
        .unwrap();
    assert_eq!(
        tampered.status(),
        403,
        "a body that does not match bodySHA256"
    );
    assert_eq!(send(body).await.unwrap().status(), 200);
    let kept = eventually("the JSON event to be quarantined", || async {
        let events = hub.events("quarantined").await;
        (!events.is_empty()).then_some(events)
    })
    .await;
    assert_eq!(kept.len(), 1);
    assert_eq!(kept[0]["body"], body);
    assert_eq!(kept[0]["content_type"], "application/json");
    hub.stop().await;
    site.cleanup().await;
}
