//! Live sockets with bad input: credentials, tickets, frames, expiry; and the commands.

use std::time::Duration;

use futures::SinkExt;

use reqwest::Method;
use serde_json::json;
use tokio_tungstenite::tungstenite::Message;

use crate::console::{Closed, Console, refused, request};
use crate::helpers::{Backend, Site, TEST_SECRET_KEY, TestHub};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_credentials_are_refused_before_the_upgrade() {
    let site = Site::new(Backend::Embedded);
    let hub = TestHub::start(&site).await;
    let agent = site.user("agent", None, &[]).await;

    let (status, body) = refused(request(&hub, "/v1/ws", None)).await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (401, Some("missing_credentials")),
        "{body}"
    );
    let (status, _) = refused(request(&hub, "/v1/ws", Some("not-a-token"))).await;
    assert_eq!(status, 401);
    let (status, _) = refused(request(&hub, "/v1/ws", Some(&hub.key))).await;
    assert_eq!(status, 403, "API keys have no console");
    let (status, body) =
        refused(request(&hub, "/v1/ws?last_event_id=-3", Some(&agent.token))).await;
    assert_eq!(status, 422, "{body}");

    // A ticket opens one socket, once.
    let (status, ticket) = hub
        .call(Method::POST, "/v1/ws/ticket", &agent.token, None)
        .await;
    assert_eq!(status, 201, "{ticket}");
    let path = format!("/v1/ws?ticket={}", ticket["ticket"].as_str().unwrap());
    let console = Console::open_request(request(&hub, &path, None)).await;
    assert_eq!(console.hello["data"]["user_id"], agent.id.as_str());
    let (status, body) = refused(request(&hub, &path, None)).await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (401, Some("invalid_ticket"))
    );
    // A browser's cookie from another origin is not a credential.
    let mut cross = request(&hub, "/v1/ws", None);
    cross.headers_mut().insert(
        "cookie",
        format!("sb_access={}", agent.token).parse().unwrap(),
    );
    cross
        .headers_mut()
        .insert("origin", "https://evil.example".parse().unwrap());
    assert_eq!(refused(cross).await.0, 401);
    let mut same = request(&hub, "/v1/ws", None);
    same.headers_mut().insert(
        "cookie",
        format!("sb_access={}", agent.token).parse().unwrap(),
    );
    same.headers_mut()
        .insert("origin", crate::helpers::PUBLIC_URL.parse().unwrap());
    Console::open_request(same).await;
    hub.stop().await;
    site.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_frames_get_errors_then_a_policy_close_and_big_ones_1009() {
    let site = Site::new(Backend::Embedded);
    let hub = TestHub::start_with(&site, "[live]\nmax_frame_bytes = 1024").await;
    let agent = site.user("agent", None, &[]).await;
    let mut console = Console::open(&hub, &agent.token, None).await;
    console
        .ws
        .send(Message::Text("not json".into()))
        .await
        .unwrap();
    let error = console.next_of("error").await;
    assert_eq!(error["data"]["code"], "malformed_frame");
    let unknown = console.command(json!({"type": "fly"})).await;
    assert_eq!(unknown["data"]["code"], "unknown_command", "{unknown}");
    let missing = console.command(json!({"type": "subscribe"})).await;
    assert_eq!(missing["data"]["code"], "validation_failed", "{missing}");
    // Still open and answering.
    console.send(json!({"type": "ping"})).await;
    assert_eq!(console.next_of("pong").await["type"], "pong");
    for _ in 0..7 {
        console
            .ws
            .send(Message::Binary(vec![1, 2, 3].into()))
            .await
            .unwrap();
    }
    assert_eq!(console.closed().await, Closed::Code(1008));

    let mut big = Console::open(&hub, &agent.token, None).await;
    big.ws
        .send(Message::Text(
            format!("{{\"type\":\"ping\",\"pad\":\"{}\"}}", "x".repeat(4000)).into(),
        ))
        .await
        .unwrap();
    assert_eq!(big.closed().await, Closed::Code(1009));
    hub.stop().await;
    site.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_expired_token_closes_with_4001_unless_renewed() {
    let site = Site::new(Backend::Embedded);
    let hub = TestHub::start(&site).await;
    let agent = site.user("agent", None, &[]).await;
    let keys = switchboard::crypto::Keys::from_master(TEST_SECRET_KEY.as_bytes());
    let claims = switchboard::auth::tokens::verify(&keys, &agent.token).unwrap();
    let short = |secs| {
        switchboard::auth::tokens::issue(&keys, secs, &claims.sub, &claims.acc, &claims.sid)
            .unwrap()
            .0
    };
    let mut lapsing = Console::open(&hub, &short(2), None).await;
    assert_eq!(lapsing.closed().await, Closed::Code(4001));

    let mut renewed = Console::open(&hub, &short(2), None).await;
    let ack = renewed
        .command(json!({"type": "auth", "token": short(600)}))
        .await;
    assert_eq!(ack["type"], "ack", "{ack}");
    tokio::time::sleep(Duration::from_secs(3)).await;
    renewed.send(json!({"type": "ping"})).await;
    assert_eq!(renewed.next_of("pong").await["type"], "pong");
    hub.stop().await;
    site.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn typing_and_presence_commands() {
    let site = Site::new(Backend::Embedded);
    let hub = TestHub::start(&site).await;
    let admin = site.user("super_admin", None, &[]).await;
    let agent = site.user("agent", None, &[]).await;
    let mut watch = Console::open(&hub, &admin.token, None).await;
    let body = crate::helpers::wa_text("wamid.typing.1", "15550001111", "hello");
    assert_eq!(hub.post_whatsapp(&body).await.status(), 200);
    let created = watch.next_of("conversation.created").await;
    let conversation = created["data"]["conversation_id"]
        .as_str()
        .unwrap()
        .to_owned();
    // Queue watchers see the queue move.
    loop {
        let stats = watch.next_of("queue.stats").await;
        if stats["data"]["waiting"] == 1 {
            assert!(stats.get("id").is_none(), "queue figures are not history");
            break;
        }
    }

    // An agent may not subscribe to a conversation outside their scope.
    let mut console = Console::open(&hub, &agent.token, None).await;
    let denied = console
        .command(json!({"type": "subscribe", "conversation_id": conversation}))
        .await;
    assert_eq!(denied["data"]["code"], "not_found", "{denied}");
    let away = console
        .command(json!({"type": "presence", "status": "away"}))
        .await;
    assert_eq!(away["data"]["presence"]["status"], "away", "{away}");
    let bad = console
        .command(json!({"type": "presence", "status": "asleep"}))
        .await;
    assert_eq!(bad["data"]["code"], "validation_failed");

    // The admin subscribes and types; a second admin console subscribed sees it.
    let sub = watch
        .command(json!({"type": "subscribe", "conversation_id": conversation}))
        .await;
    assert_eq!(sub["data"]["may_type"], true, "{sub}");
    let mut other = Console::open(&hub, &admin.token, None).await;
    other
        .command(json!({"type": "subscribe", "conversation_id": conversation}))
        .await;
    watch
        .command(json!({"type": "typing", "conversation_id": conversation, "typing": true}))
        .await;
    let typing = other.next_of("typing").await;
    assert_eq!(typing["data"]["conversation_id"], conversation.as_str());
    assert_eq!(typing["data"]["typing"], true);
    hub.stop().await;
    site.cleanup().await;
}
