//! The web-chat channel: visitor sessions with and without identity, idempotent sends.

use serde_json::{Value, json};
use switchboard_connectors::webchat;

use crate::helpers::*;
use crate::on_both_backends;

on_both_backends!(anonymous_and_identified_visitors);

async fn session(hub: &TestHub, body: Option<Value>) -> reqwest::Response {
    let mut request = hub.client.post(hub.url("/v1/webchat/website/sessions"));
    if let Some(body) = body {
        request = request.json(&body);
    }
    request.send().await.unwrap()
}

async fn send(hub: &TestHub, token: &str, id: &str, text: &str) -> reqwest::Response {
    hub.client
        .post(hub.url("/v1/webchat/website/messages"))
        .bearer_auth(token)
        .json(&json!({ "client_message_id": id, "text": text }))
        .send()
        .await
        .unwrap()
}

async fn anonymous_and_identified_visitors(backend: Backend) {
    let site = Site::new(backend);
    let hub = TestHub::start(&site).await;

    let anonymous = session(&hub, None).await;
    assert_eq!(anonymous.status(), 201);
    let anonymous: Value = anonymous.json().await.unwrap();
    assert_eq!(anonymous["identified"], false);
    let token = anonymous["visitor_token"].as_str().unwrap();
    for _ in 0..3 {
        // A retried send with the same client_message_id is one message.
        assert_eq!(
            send(&hub, token, "c1", "hello from the website")
                .await
                .status(),
            202
        );
    }
    assert_eq!(send(&hub, token, "c2", "anyone there?").await.status(), 202);

    let hash = webchat::identity_hash(IDENTITY_SECRET.as_bytes(), "customer-42");
    let identified = session(
        &hub,
        Some(json!({ "identifier": "customer-42", "identifier_hash": hash, "name": "Lin" })),
    )
    .await;
    assert_eq!(identified.status(), 201);
    let identified: Value = identified.json().await.unwrap();
    assert_eq!(identified["identified"], true);
    let token2 = identified["visitor_token"].as_str().unwrap();
    assert_eq!(
        send(&hub, token2, "c1", "I am a known customer")
            .await
            .status(),
        202
    );
    // A second session of the same customer threads into the same conversation.
    let again = session(
        &hub,
        Some(json!({ "identifier": "customer-42", "identifier_hash": hash })),
    )
    .await
    .json::<Value>()
    .await
    .unwrap();
    assert_eq!(
        send(
            &hub,
            again["visitor_token"].as_str().unwrap(),
            "c1",
            "me again"
        )
        .await
        .status(),
        202
    );

    let stored = hub.wait_for_messages(4).await;
    assert_eq!(stored.len(), 4, "{stored:#?}");
    let conversations = hub.conversations().await;
    assert_eq!(conversations.len(), 2, "one per visitor identity");
    let lin = conversations
        .iter()
        .find(|c| {
            stored
                .iter()
                .filter(|m| m["conversation_id"] == c["id"])
                .count()
                == 2
                && stored
                    .iter()
                    .any(|m| m["conversation_id"] == c["id"] && m["content"]["text"] == "me again")
        })
        .expect("the identified customer's two sessions share a conversation");
    let (_, conversation) = hub
        .get(&format!(
            "/v1/conversations/{}",
            lin["id"].as_str().unwrap()
        ))
        .await;
    assert_eq!(conversation["contact"]["name"], "Lin");

    // Wrong identity hash: 401, and no session.
    let forged = session(
        &hub,
        Some(json!({ "identifier": "customer-42", "identifier_hash": "00".repeat(32) })),
    )
    .await;
    assert_eq!(forged.status(), 401);
    let body: Value = forged.json().await.unwrap();
    assert_eq!(body["error"]["code"], "invalid_identifier_hash");

    // Bad tokens and bad bodies.
    assert_eq!(send(&hub, "vst_nope", "c9", "x").await.status(), 401);
    let empty = send(&hub, token, "c9", "   ").await;
    assert_eq!(empty.status(), 422);
    let body: Value = empty.json().await.unwrap();
    assert_eq!(body["error"]["details"][0]["field"], "text");
    hub.stop().await;
    site.cleanup().await;
}
