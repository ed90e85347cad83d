//! Replies that go out (docs/OUTBOUND.md), through the real server and workers, against a fake
//! Graph API that speaks WhatsApp Cloud API's send protocol (PROVIDERS.md 1.7).

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use reqwest::Method;
use serde_json::{Value, json};

use crate::helpers::{Backend, PHONE_NUMBER_ID, Site, TestHub, eventually, wa_envelope};
use crate::on_both_backends;

/// What the fake Graph API saw: the path, the `Authorization` header and the JSON body.
#[derive(Debug, Clone)]
struct Seen {
    path: String,
    auth: Option<String>,
    body: Value,
}

#[derive(Default)]
struct Graph {
    seen: Mutex<Vec<Seen>>,
    /// Answers to give, in order (status, body); then success.
    script: Mutex<VecDeque<(u16, Value)>>,
}

/// A fake `POST /{version}/{phone-number-id}/messages` on port 0.
async fn fake_graph() -> (Arc<Graph>, SocketAddr) {
    async fn send(
        State(graph): State<Arc<Graph>>,
        Path((version, number)): Path<(String, String)>,
        headers: HeaderMap,
        body: axum::body::Bytes,
    ) -> (StatusCode, axum::Json<Value>) {
        let body: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
        let n = {
            let mut seen = graph.seen.lock().unwrap();
            seen.push(Seen {
                path: format!("/{version}/{number}/messages"),
                auth: headers
                    .get("authorization")
                    .and_then(|v| v.to_str().ok())
                    .map(str::to_owned),
                body: body.clone(),
            });
            seen.len()
        };
        if let Some((status, answer)) = graph.script.lock().unwrap().pop_front() {
            return (StatusCode::from_u16(status).unwrap(), axum::Json(answer));
        }
        let to = body["to"].clone();
        (
            StatusCode::OK,
            axum::Json(json!({
                "messaging_product": "whatsapp",
                "contacts": [{ "input": to, "wa_id": to }],
                "messages": [{ "id": format!("wamid.out.{n}") }],
            })),
        )
    }
    let graph = Arc::new(Graph::default());
    let app = axum::Router::new()
        .route("/{version}/{number}/messages", axum::routing::post(send))
        .with_state(graph.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (graph, addr)
}

fn graph_error(code: u64, message: &str) -> Value {
    json!({ "error": { "message": message, "type": "OAuthException", "code": code,
                       "error_data": { "messaging_product": "whatsapp", "details": message },
                       "fbtrace_id": "AbCdEf" } })
}

/// A customer writes at `sent` (Unix seconds); returns their conversation's id.
async fn customer_wrote(hub: &TestHub, wa_id: &str, sent: u64) -> String {
    let body = wa_envelope(
        PHONE_NUMBER_ID,
        json!([{ "profile": { "name": "Ada" }, "wa_id": wa_id }]),
        json!([{ "from": wa_id, "id": format!("wamid.in.{wa_id}.{sent}"), "timestamp": sent.to_string(),
                 "type": "text", "text": { "body": "hello" } }]),
        json!([]),
    );
    assert_eq!(hub.post_whatsapp(&body).await.status(), 200);
    eventually("the conversation", || async {
        let (_, page) = hub.get("/v1/conversations").await;
        // Each test's site holds this one conversation.
        page["data"][0]["id"].as_str().map(str::to_owned)
    })
    .await
}

fn now_secs() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

async fn message(hub: &TestHub, conversation: &str, id: &str) -> Value {
    let (_, page) = hub
        .get(&format!("/v1/conversations/{conversation}/messages"))
        .await;
    page["data"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["id"] == id)
        .cloned()
        .unwrap_or(Value::Null)
}

async fn status_becomes(hub: &TestHub, conversation: &str, id: &str, status: &str) -> Value {
    eventually(&format!("{id} to be {status}"), || async {
        let m = message(hub, conversation, id).await;
        (m["status"] == status).then_some(m)
    })
    .await
}

async fn a_reply_is_sent_once_retried_when_throttled_and_dead_lettered_when_refused(
    backend: Backend,
) {
    let (graph, addr) = fake_graph().await;
    let site = Site::new(backend);
    let hub = TestHub::start_with(
        &site,
        &format!(
            "[outbound]\nwhatsapp_base_url = \"http://{addr}\"\nretry_base_ms = 50\nmax_attempts = 3\n"
        ),
    )
    .await;
    let agent = site.user("super_admin", None, &[]).await;
    let conversation = customer_wrote(&hub, "15555550123", now_secs()).await;
    let path = format!("/v1/conversations/{conversation}/messages");

    // A text reply, with an idempotency key, sent again by a client that did not hear back.
    let send = |key: &'static str, text: &'static str| {
        hub.client
            .post(hub.url(&path))
            .bearer_auth(&agent.token)
            .header("Idempotency-Key", key)
            .json(&json!({ "text": text }))
            .send()
    };
    let first = send("reply-1", "Your order ships today.").await.unwrap();
    assert_eq!(first.status(), 201);
    let first: Value = first.json().await.unwrap();
    assert_eq!(first["status"], "pending");
    let again = send("reply-1", "Your order ships today.").await.unwrap();
    assert_eq!(again.status(), 200);
    assert_eq!(again.headers()["idempotent-replayed"], "true");
    let again: Value = again.json().await.unwrap();
    assert_eq!(again["id"], first["id"]);
    let reused = send("reply-1", "Something else").await.unwrap();
    assert_eq!(reused.status(), 422);
    let reused: Value = reused.json().await.unwrap();
    assert_eq!(reused["error"]["code"], "idempotency_key_reused");

    let id = first["id"].as_str().unwrap();
    let sent = status_becomes(&hub, &conversation, id, "sent").await;
    assert_eq!(sent["provider_message_id"], "wamid.out.1");
    {
        let seen = graph.seen.lock().unwrap();
        assert_eq!(seen.len(), 1, "sent exactly once: {seen:?}");
        assert_eq!(seen[0].path, format!("/v23.0/{PHONE_NUMBER_ID}/messages"));
        assert_eq!(
            seen[0].auth.as_deref(),
            Some("Bearer demo-graph-access-token")
        );
        assert_eq!(
            seen[0].body,
            json!({ "messaging_product": "whatsapp", "recipient_type": "individual",
                    "to": "15555550123", "type": "text",
                    "text": { "preview_url": false, "body": "Your order ships today." },
                    "biz_opaque_callback_data": id })
        );
    }

    // Throttled (130429) once, then accepted: retried, sent once more in all.
    graph
        .script
        .lock()
        .unwrap()
        .push_back((400, graph_error(130429, "(#130429) Rate limit hit")));
    let (status, throttled) = hub
        .call(
            Method::POST,
            &path,
            &agent.token,
            Some(json!({ "text": "Second" })),
        )
        .await;
    assert_eq!(status, 201, "{throttled}");
    let throttled_id = throttled["id"].as_str().unwrap();
    let sent = status_becomes(&hub, &conversation, throttled_id, "sent").await;
    assert_eq!(sent["provider_message_id"], "wamid.out.3");
    assert_eq!(graph.seen.lock().unwrap().len(), 3);

    // Outside the 24-hour window (131047 from the provider): failed at once, with the code.
    graph
        .script
        .lock()
        .unwrap()
        .push_back((400, graph_error(131047, "Re-engagement message")));
    let (_, refused) = hub
        .call(
            Method::POST,
            &path,
            &agent.token,
            Some(json!({ "text": "Third" })),
        )
        .await;
    let refused_id = refused["id"].as_str().unwrap();
    let failed = status_becomes(&hub, &conversation, refused_id, "failed").await;
    assert!(
        failed["error"].as_str().unwrap().contains("131047"),
        "{failed}"
    );
    assert_eq!(
        graph.seen.lock().unwrap().len(),
        4,
        "a permanent error is not retried"
    );

    // A private note is stored and never sent.
    let (status, note) = hub
        .call(
            Method::POST,
            &path,
            &agent.token,
            Some(json!({ "text": "VIP customer", "private": true })),
        )
        .await;
    assert_eq!(status, 201);
    assert_eq!(note["direction"], "note");
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    assert_eq!(graph.seen.lock().unwrap().len(), 4);

    // The refused reply is a dead letter; replayed once the cause is fixed, it goes out once.
    let (status, dead) = hub
        .call(Method::GET, "/v1/admin/dead-letters", &agent.token, None)
        .await;
    assert_eq!(status, 200, "{dead}");
    assert_eq!(dead["data"][0]["id"], refused_id, "{dead}");
    assert_eq!(dead["data"][0]["code"], "131047");
    let replay = format!("/v1/admin/dead-letters/{refused_id}/replay");
    let (status, replayed) = hub.call(Method::POST, &replay, &agent.token, None).await;
    assert_eq!(status, 202, "{replayed}");
    assert_eq!(replayed["status"], "pending");
    let sent = status_becomes(&hub, &conversation, refused_id, "sent").await;
    assert_eq!(sent["provider_message_id"], "wamid.out.5");
    let (status, _) = hub.call(Method::POST, &replay, &agent.token, None).await;
    assert_eq!(status, 404, "a dead letter is replayed once");

    // A provider down for the whole retry budget: every attempt made, then failed and listed;
    // a replay after it recovers delivers once.
    for _ in 0..3 {
        graph.script.lock().unwrap().push_back((503, json!({})));
    }
    let (_, down) = hub
        .call(
            Method::POST,
            &path,
            &agent.token,
            Some(json!({ "text": "Fourth" })),
        )
        .await;
    let down_id = down["id"].as_str().unwrap();
    status_becomes(&hub, &conversation, down_id, "failed").await;
    assert_eq!(graph.seen.lock().unwrap().len(), 8, "max_attempts = 3");
    let (_, dead) = hub
        .call(Method::GET, "/v1/admin/dead-letters", &agent.token, None)
        .await;
    assert_eq!(dead["data"][0]["id"], down_id, "{dead}");
    assert_eq!(dead["data"][0]["attempts"], 3);
    let (status, _) = hub
        .call(
            Method::POST,
            &format!("/v1/admin/dead-letters/{down_id}/replay"),
            &agent.token,
            None,
        )
        .await;
    assert_eq!(status, 202);
    status_becomes(&hub, &conversation, down_id, "sent").await;
    assert_eq!(graph.seen.lock().unwrap().len(), 9);

    hub.stop().await;
    site.cleanup().await;
}

async fn a_free_form_reply_outside_the_window_is_refused(backend: Backend) {
    let site = Site::new(backend);
    let hub = TestHub::start(&site).await;
    let agent = site.user("super_admin", None, &[]).await;
    let conversation = customer_wrote(&hub, "15555550999", now_secs() - 25 * 3600).await;
    let (status, body) = hub
        .call(
            Method::POST,
            &format!("/v1/conversations/{conversation}/messages"),
            &agent.token,
            Some(json!({ "text": "Are you still there?" })),
        )
        .await;
    assert_eq!(status, 422, "{body}");
    assert_eq!(body["error"]["code"], "whatsapp_window_closed");
    hub.stop().await;
    site.cleanup().await;
}

on_both_backends!(
    a_reply_is_sent_once_retried_when_throttled_and_dead_lettered_when_refused,
    a_free_form_reply_outside_the_window_is_refused,
);
