//! WhatsApp Cloud API webhooks end to end: handshake, every message type, batches, statuses,
//! business-scoped user ids, unknown numbers.

use serde_json::{Value, json};

use crate::helpers::*;
use crate::on_both_backends;

on_both_backends!(
    handshake,
    every_message_type_in_one_batch,
    bsuid_threads_and_statuses_are_recorded,
    unknown_phone_number_is_kept_and_visible,
    signed_garbage_is_quarantined_and_visible,
);

async fn handshake(backend: Backend) {
    let site = Site::new(backend);
    let hub = TestHub::start(&site).await;
    let ok = hub
        .client
        .get(hub.url(&format!(
            "/webhooks/whatsapp/demo?hub.mode=subscribe&hub.verify_token={VERIFY_TOKEN}&hub.challenge=1158201444"
        )))
        .send()
        .await
        .unwrap();
    assert_eq!(ok.status(), 200);
    assert_eq!(ok.text().await.unwrap(), "1158201444");

    let wrong = hub
        .client
        .get(hub.url(
            "/webhooks/whatsapp/demo?hub.mode=subscribe&hub.verify_token=nope&hub.challenge=1",
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(wrong.status(), 403);
    let body: Value = wrong.json().await.unwrap();
    assert_eq!(body["error"]["code"], "forbidden");

    let unknown = hub
        .client
        .get(hub.url(
            "/webhooks/whatsapp/nosuchapp?hub.mode=subscribe&hub.verify_token=x&hub.challenge=1",
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(unknown.status(), 404);
    hub.stop().await;
    site.cleanup().await;
}

async fn every_message_type_in_one_batch(backend: Backend) {
    let site = Site::new(backend);
    let hub = TestHub::start(&site).await;
    let from = "15555550123";
    let m = |id: &str, ts: &str, kind: &str, part: Value| {
        let mut v = json!({ "from": from, "id": id, "timestamp": ts, "type": kind });
        v[kind] = part;
        v
    };
    let messages = json!([
        m("wamid.T1", "1760000000", "text", json!({ "body": "Hi, is my order shipped?" })),
        m("wamid.T2", "1760000001", "image", json!({ "id": "4400000000000001", "mime_type": "image/jpeg", "sha256": "abc", "caption": "receipt" })),
        m("wamid.T7", "1760000002", "location", json!({ "latitude": 52.52, "longitude": 13.405, "name": "Shop", "address": "Main St 1" })),
        {
            "from": from, "id": "wamid.T8", "timestamp": "1760000003", "type": "interactive",
            "context": { "from": "15555550100", "id": "wamid.SENT1" },
            "interactive": { "type": "button_reply", "button_reply": { "id": "confirm_yes", "title": "Yes" } }
        },
        m("wamid.T11", "1760000004", "reaction", json!({ "message_id": "wamid.SENT1", "emoji": "\u{1f44d}" })),
        m("wamid.T12", "1760000005", "order", json!({ "catalog_id": "1", "product_items": [] })),
    ]);
    let body = wa_envelope(
        PHONE_NUMBER_ID,
        json!([{ "profile": { "name": "Ada Tester" }, "wa_id": from }]),
        messages,
        json!([]),
    );
    let r = hub.post_whatsapp(&body).await;
    assert_eq!(r.status(), 200);

    let stored = hub.wait_for_messages(6).await;
    assert_eq!(stored.len(), 6, "{stored:#?}");
    let conversations = hub.conversations().await;
    assert_eq!(
        conversations.len(),
        1,
        "one open conversation for the contact"
    );
    assert_eq!(conversations[0]["channel"], "whatsapp");
    assert_eq!(conversations[0]["inbox_id"], "inb_support-wa");

    // Provider order is kept.
    let ids: Vec<&str> = stored
        .iter()
        .map(|m| m["provider_message_id"].as_str().unwrap())
        .collect();
    assert_eq!(
        ids,
        [
            "wamid.T1",
            "wamid.T2",
            "wamid.T7",
            "wamid.T8",
            "wamid.T11",
            "wamid.T12"
        ]
    );
    let content: Vec<&Value> = stored.iter().map(|m| &m["content"]).collect();
    assert_eq!(
        content[0],
        &json!({ "type": "text", "text": "Hi, is my order shipped?" })
    );
    assert_eq!(content[1]["type"], "media");
    assert_eq!(content[1]["caption"], "receipt");
    assert_eq!(
        content[1]["attachments"][0]["provider_media_id"],
        "4400000000000001"
    );
    assert_eq!(content[1]["attachments"][0]["kind"], "image");
    assert_eq!(content[2]["type"], "location");
    assert_eq!(content[2]["latitude"], 52.52);
    assert_eq!(content[3]["type"], "interactive");
    assert_eq!(content[3]["id"], "confirm_yes");
    assert_eq!(stored[3]["reply_to"], "wamid.SENT1");
    assert_eq!(
        content[4],
        &json!({ "type": "reaction", "target_message_id": "wamid.SENT1", "emoji": "\u{1f44d}" })
    );
    assert_eq!(
        content[5],
        &json!({ "type": "unsupported", "provider_type": "order" })
    );

    let (status, conversation) = hub
        .get(&format!(
            "/v1/conversations/{}",
            conversations[0]["id"].as_str().unwrap()
        ))
        .await;
    assert_eq!(status, 200);
    assert_eq!(conversation["contact"]["name"], "Ada Tester");
    assert_eq!(conversation["contact"]["phone"], "+15555550123");
    let contact_id = conversation["contact_id"].as_str().unwrap();
    let (status, contact) = hub.get(&format!("/v1/contacts/{contact_id}")).await;
    assert_eq!(status, 200);
    assert_eq!(
        contact["identities"],
        json!([{ "kind": "whatsapp_wa_id", "value": from }])
    );

    // The whole POST is one processed event.
    let processed = hub.events("processed").await;
    assert_eq!(processed.len(), 1);
    hub.stop().await;
    site.cleanup().await;
}

async fn bsuid_threads_and_statuses_are_recorded(backend: Backend) {
    let site = Site::new(backend);
    let hub = TestHub::start(&site).await;
    // A user who adopted a username: no phone number at all, only a business-scoped id.
    let bsuid = "US.13491208655302741918";
    let first = wa_envelope(
        PHONE_NUMBER_ID,
        json!([{ "profile": { "name": "Grace" }, "user_id": bsuid }]),
        json!([{ "from_user_id": bsuid, "id": "wamid.B1", "timestamp": "1760000100", "type": "text", "text": { "body": "one" } }]),
        json!([{ "id": "wamid.SENT9", "status": "delivered", "timestamp": "1760000101", "recipient_id": "15555550999" }]),
    );
    let second = wa_envelope(
        PHONE_NUMBER_ID,
        json!([{ "profile": { "name": "Grace" }, "user_id": bsuid, "wa_id": "15555550777" }]),
        json!([{ "from": "15555550777", "from_user_id": bsuid, "id": "wamid.B2", "timestamp": "1760000200", "type": "text", "text": { "body": "two" } }]),
        json!([]),
    );
    assert_eq!(hub.post_whatsapp(&first).await.status(), 200);
    hub.wait_for_messages(1).await;
    assert_eq!(hub.post_whatsapp(&second).await.status(), 200);
    let stored = hub.wait_for_messages(2).await;
    assert_eq!(stored.len(), 2);
    let conversations = hub.conversations().await;
    assert_eq!(conversations.len(), 1, "both messages thread on the BSUID");
    let (_, contact) = hub
        .get(&format!(
            "/v1/contacts/{}",
            conversations[0]["contact_id"].as_str().unwrap()
        ))
        .await;
    let kinds: Vec<&str> = contact["identities"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["kind"].as_str().unwrap())
        .collect();
    assert!(
        kinds.contains(&"whatsapp_bsuid") && kinds.contains(&"whatsapp_wa_id"),
        "{contact}"
    );
    // The status for a message the hub never sent is recorded, not dropped.
    assert_eq!(hub.events("processed").await.len(), 2);
    hub.stop().await;
    site.cleanup().await;
}

async fn unknown_phone_number_is_kept_and_visible(backend: Backend) {
    let site = Site::new(backend);
    let hub = TestHub::start(&site).await;
    let body = wa_envelope(
        "999999999999999",
        json!([{ "profile": { "name": "Lost" }, "wa_id": "15555550000" }]),
        json!([{ "from": "15555550000", "id": "wamid.LOST", "timestamp": "1760000000", "type": "text", "text": { "body": "hello?" } }]),
        json!([]),
    );
    assert_eq!(hub.post_whatsapp(&body).await.status(), 200);
    let unrouted = eventually("the event to be unrouted", || async {
        let events = hub.events("unrouted").await;
        (!events.is_empty()).then_some(events)
    })
    .await;
    assert!(
        unrouted[0]["error"]
            .as_str()
            .unwrap()
            .contains("999999999999999")
    );
    assert!(
        unrouted[0]["body"].as_str().unwrap().contains("wamid.LOST"),
        "the raw body is kept"
    );
    assert!(hub.conversations().await.is_empty());
    hub.stop().await;
    site.cleanup().await;
}

async fn signed_garbage_is_quarantined_and_visible(backend: Backend) {
    let site = Site::new(backend);
    let hub = TestHub::start(&site).await;
    let r = hub.post_whatsapp("this is {not json").await;
    assert_eq!(
        r.status(),
        200,
        "a signed body is acknowledged even when unreadable"
    );
    let quarantined = eventually("the event to be quarantined", || async {
        let events = hub.events("quarantined").await;
        (!events.is_empty()).then_some(events)
    })
    .await;
    assert_eq!(quarantined[0]["body"], "this is {not json");
    assert!(quarantined[0]["error"].as_str().unwrap().contains("JSON"));
    hub.stop().await;
    site.cleanup().await;
}
