//! Outbound webhooks (docs/WEBHOOKS_OUT.md) through the real hub, to a receiver on port 0
//! that checks every delivery's signature with its own implementation of the Standard
//! Webhooks algorithm (HMAC-SHA256 over `id.timestamp.body`, base64, `v1,` prefixes), not the
//! hub's: retried until the receiver recovers, `Retry-After` honoured, failed and the endpoint
//! disabled (with an alert) when it never does, replayed once more, secrets rotated with an
//! overlap, hanging and huge answers cut, and bad input refused with the field named.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::IntoResponse;
use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use futures::StreamExt;
use hmac::{Hmac, Mac};
use reqwest::Method;
use serde_json::{Value, json};
use sha2::Sha256;

use crate::alerts::fake_destinations;
use crate::helpers::{Backend, Site, TestHub, eventually, wa_text_now};
use crate::on_both_backends;

/// One request the receiver got.
#[derive(Debug, Clone)]
struct Hit {
    id: String,
    timestamp: String,
    signature: String,
    body: Vec<u8>,
    answered: u16,
    at: Instant,
}

impl Hit {
    fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap()
    }
}

/// A customer's receiver: `/hook` answers from its script first (status, `Retry-After`), then
/// 500 while `down`, else 200; `/hang` never answers; `/huge` answers 200 with 64 MiB.
#[derive(Default)]
struct Receiver {
    hits: Mutex<Vec<Hit>>,
    script: Mutex<VecDeque<(u16, Option<&'static str>)>>,
    down: AtomicBool,
}

impl Receiver {
    fn hits(&self) -> Vec<Hit> {
        self.hits.lock().unwrap().clone()
    }
}

async fn receiver() -> (Arc<Receiver>, SocketAddr) {
    async fn hook(
        State(r): State<Arc<Receiver>>,
        headers: HeaderMap,
        body: axum::body::Bytes,
    ) -> axum::response::Response {
        assert_eq!(headers["content-type"], "application/json");
        let header = |name: &str| headers[name].to_str().unwrap().to_owned();
        let scripted = r.script.lock().unwrap().pop_front();
        let (status, retry_after) = scripted.unwrap_or(if r.down.load(Ordering::SeqCst) {
            (500, None)
        } else {
            (200, None)
        });
        r.hits.lock().unwrap().push(Hit {
            id: header("webhook-id"),
            timestamp: header("webhook-timestamp"),
            signature: header("webhook-signature"),
            body: body.to_vec(),
            answered: status,
            at: Instant::now(),
        });
        let said = if status == 500 { "down" } else { "ok" };
        let mut response = (StatusCode::from_u16(status).unwrap(), said).into_response();
        if let Some(after) = retry_after {
            response
                .headers_mut()
                .insert("retry-after", after.parse().unwrap());
        }
        response
    }
    async fn hang() -> &'static str {
        tokio::time::sleep(Duration::from_secs(120)).await;
        "too late"
    }
    async fn huge() -> axum::body::Body {
        let chunk = axum::body::Bytes::from(vec![b'x'; 64 * 1024]);
        let stream =
            futures::stream::repeat_with(move || Ok::<_, std::io::Error>(chunk.clone())).take(1024);
        axum::body::Body::from_stream(stream)
    }
    let r = Arc::new(Receiver::default());
    let app = axum::Router::new()
        .route("/hook", axum::routing::post(hook))
        .route("/hang", axum::routing::post(hang))
        .route("/huge", axum::routing::post(huge))
        .with_state(r.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (r, addr)
}

/// The receiver's own Standard Webhooks check: which of the header's signatures `secret`
/// made, after checking the timestamp is recent.
fn verified_by(secret: &str, hit: &Hit) -> Vec<bool> {
    let ts: i64 = hit.timestamp.parse().unwrap();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    assert!((now - ts).abs() <= 300, "timestamp {ts} is not recent");
    let key = STANDARD
        .decode(secret.strip_prefix("whsec_").unwrap())
        .unwrap();
    let mut mac = Hmac::<Sha256>::new_from_slice(&key).unwrap();
    mac.update(format!("{}.{}.", hit.id, hit.timestamp).as_bytes());
    mac.update(&hit.body);
    let expected = STANDARD.encode(mac.finalize().into_bytes());
    hit.signature
        .split(' ')
        .map(|s| s.strip_prefix("v1,") == Some(expected.as_str()))
        .collect()
}

const FAST: &str = r#"
[webhooks_out]
schedule_ms = [0, 50, 50, 50, 50]
allow_http = true
allowed_hosts = ["127.0.0.1"]
poll_ms = 50
request_timeout_ms = 5000
"#;

async fn create(hub: &TestHub, body: Value) -> (String, String) {
    let (status, created) = hub
        .call(
            Method::POST,
            "/v1/admin/webhook-endpoints",
            &hub.key,
            Some(body),
        )
        .await;
    assert_eq!(status, 201, "{created}");
    let secret = created["secret"].as_str().unwrap().to_owned();
    assert!(secret.starts_with("whsec_"));
    (
        created["endpoint"]["id"].as_str().unwrap().to_owned(),
        secret,
    )
}

async fn deliveries(hub: &TestHub, endpoint: &str) -> Vec<Value> {
    let (status, page) = hub
        .call(
            Method::GET,
            &format!("/v1/admin/webhook-endpoints/{endpoint}/deliveries?limit=100"),
            &hub.key,
            None,
        )
        .await;
    assert_eq!(status, 200, "{page}");
    page["data"].as_array().unwrap().clone()
}

/// Waits until the delivery `id` of `endpoint` is in `state`.
async fn delivery_in(hub: &TestHub, endpoint: &str, id: &str, state: &str) -> Value {
    eventually(&format!("delivery {id} {state}"), || async {
        deliveries(hub, endpoint)
            .await
            .into_iter()
            .find(|d| d["id"] == id && d["state"] == state)
    })
    .await
}

async fn send_test(hub: &TestHub, endpoint: &str) -> String {
    let (status, queued) = hub
        .call(
            Method::POST,
            &format!("/v1/admin/webhook-endpoints/{endpoint}/test"),
            &hub.key,
            None,
        )
        .await;
    assert_eq!(status, 202, "{queued}");
    queued["id"].as_str().unwrap().to_owned()
}

async fn deliveries_are_signed_ordered_and_retried_until_the_receiver_recovers(backend: Backend) {
    let (r, addr) = receiver().await;
    let site = Site::new(backend);
    let hub = TestHub::start_with(&site, FAST).await;
    let (endpoint, secret) = create(
        &hub,
        json!({ "url": format!("http://{addr}/hook"), "description": "CRM",
                "event_types": ["conversation.created", "message.*"], "ordered": true }),
    )
    .await;
    // Down for the first attempt, then busy for a second.
    r.script
        .lock()
        .unwrap()
        .extend([(503, None), (429, Some("1"))]);

    let body = wa_text_now("wamid.hooks.1", "15555550301", "where is my order?");
    assert_eq!(hub.post_whatsapp(&body).await.status(), 200);

    let hits = eventually("both events delivered", || async {
        let hits = r.hits();
        (hits.iter().filter(|h| h.answered == 200).count() >= 2).then_some(hits)
    })
    .await;
    for hit in &hits {
        assert_eq!(verified_by(&secret, hit), vec![true], "{hit:?}");
    }
    // The first event took three attempts, the same message each time; the second waited for
    // it (ordered), so it arrived after.
    let types: Vec<Value> = hits.iter().map(|h| h.json()["type"].clone()).collect();
    assert_eq!(
        types,
        [
            "conversation.created",
            "conversation.created",
            "conversation.created",
            "message.created"
        ]
    );
    assert_eq!(
        hits.iter().map(|h| h.answered).collect::<Vec<_>>(),
        [503, 429, 200, 200]
    );
    assert!(hits[0].id == hits[1].id && hits[1].id == hits[2].id);
    assert!(hits[0].body == hits[2].body);
    assert_ne!(hits[2].id, hits[3].id);
    assert!(
        hits[2].at - hits[1].at >= Duration::from_millis(950),
        "Retry-After honoured: {:?}",
        hits[2].at - hits[1].at
    );
    let message = hits[3].json();
    assert_eq!(message["data"]["content"]["text"], "where is my order?");
    assert!(message["timestamp"].as_str().unwrap().ends_with('Z'));

    let list = eventually("both deliveries succeeded", || async {
        let list = deliveries(&hub, &endpoint).await;
        (list.len() == 2 && list.iter().all(|d| d["state"] == "succeeded")).then_some(list)
    })
    .await;
    // Newest first.
    assert_eq!(list[1]["event_type"], "conversation.created");
    assert_eq!(list[1]["attempts"], 3);
    assert_eq!(list[1]["response_status"], 200);
    assert_eq!(list[1]["response_body"], "ok");
    assert_eq!(list[1]["msg_id"], hits[0].id.as_str());
    assert_eq!(list[0]["event_type"], "message.created");
    assert_eq!(list[0]["attempts"], 1);

    // Audited, and the secret is in no record.
    let (status, page) = hub
        .call(
            Method::GET,
            "/v1/audit?action=webhook_endpoint.created",
            &hub.key,
            None,
        )
        .await;
    assert_eq!(status, 200, "{page}");
    assert_eq!(page["data"].as_array().unwrap().len(), 1, "{page}");
    assert!(!page.to_string().contains(&secret[6..]));
    let (_, shown) = hub
        .call(
            Method::GET,
            &format!("/v1/admin/webhook-endpoints/{endpoint}"),
            &hub.key,
            None,
        )
        .await;
    assert!(!shown.to_string().contains(&secret[6..]));
    assert_eq!(shown["consecutive_failures"], 0);

    hub.stop().await;
    site.cleanup().await;
}

async fn a_receiver_down_for_the_whole_schedule_disables_the_endpoint_and_alerts(backend: Backend) {
    let (r, addr) = receiver().await;
    let (slack, slack_addr) = fake_destinations().await;
    let site = Site::new(backend);
    let hub = TestHub::start_with(
        &site,
        &format!(
            r#"
[webhooks_out]
schedule_ms = [0, 50, 50]
allow_http = true
allowed_hosts = ["127.0.0.1"]
poll_ms = 50
disable_after_failures = 1
[alerts]
evaluate_every_ms = 100
default_rules = false
[[alerts.destinations]]
name = "ops-slack"
kind = "slack"
url = "http://{slack_addr}/services/T000/B000/XXXX"
[[alerts.rules]]
name = "webhooks_disabled"
signal = "webhook_endpoints_disabled"
threshold = 0
window_secs = 600
destinations = ["ops-slack"]
"#
        ),
    )
    .await;
    let (endpoint, secret) = create(
        &hub,
        json!({ "url": format!("http://{addr}/hook"), "event_types": ["*"] }),
    )
    .await;
    r.down.store(true, Ordering::SeqCst);
    let delivery = send_test(&hub, &endpoint).await;

    let failed = delivery_in(&hub, &endpoint, &delivery, "failed").await;
    assert_eq!(failed["attempts"], 3, "{failed}");
    assert_eq!(failed["response_status"], 500);
    assert_eq!(failed["response_body"], "down");
    assert_eq!(failed["last_error"], "HTTP 500");
    assert_eq!(r.hits().len(), 3);
    let (_, shown) = hub
        .call(
            Method::GET,
            &format!("/v1/admin/webhook-endpoints/{endpoint}"),
            &hub.key,
            None,
        )
        .await;
    assert_eq!(shown["enabled"], false, "{shown}");
    assert_eq!(shown["consecutive_failures"], 1);
    assert!(
        shown["disabled_reason"]
            .as_str()
            .unwrap()
            .contains(&delivery)
    );
    let paged = eventually("the alert to reach Slack", || async {
        slack.hits("/services/").into_iter().next()
    })
    .await;
    assert_eq!(
        paged.body["text"],
        "[FIRING] webhooks_disabled — 1 webhook endpoints disabled for failing deliveries over 600 s (threshold 0)"
    );

    // The receiver is back. A disabled endpoint replays nothing until it is enabled.
    r.down.store(false, Ordering::SeqCst);
    let replay = format!("/v1/admin/webhook-endpoints/{endpoint}/deliveries/{delivery}/replay");
    let (status, refused) = hub.call(Method::POST, &replay, &hub.key, None).await;
    assert_eq!(status, 409, "{refused}");
    let (status, enabled) = hub
        .call(
            Method::PATCH,
            &format!("/v1/admin/webhook-endpoints/{endpoint}"),
            &hub.key,
            Some(json!({ "enabled": true })),
        )
        .await;
    assert_eq!(status, 200, "{enabled}");
    assert_eq!(enabled["consecutive_failures"], 0);
    assert_eq!(enabled["disabled_reason"], Value::Null);
    let (status, queued) = hub.call(Method::POST, &replay, &hub.key, None).await;
    assert_eq!(status, 202, "{queued}");
    assert_eq!(queued["replay_of"], delivery.as_str());
    let replayed = delivery_in(&hub, &endpoint, queued["id"].as_str().unwrap(), "succeeded").await;
    assert_eq!(replayed["attempts"], 1);
    // Once more: the same message (id and body), freshly signed, and only once.
    let hits = r.hits();
    assert_eq!(hits.len(), 4);
    assert_eq!(hits[3].answered, 200);
    assert_eq!(hits[3].id, hits[0].id);
    assert_eq!(hits[3].body, hits[0].body);
    assert_eq!(verified_by(&secret, &hits[3]), vec![true]);
    assert_eq!(hits[3].json()["type"], "webhook.test");
    assert_eq!(hits[3].json()["data"]["endpoint_id"], endpoint.as_str());

    hub.stop().await;
    site.cleanup().await;
}

async fn secret_rotation_signs_with_both_during_the_overlap_and_the_new_one_after(
    backend: Backend,
) {
    let (r, addr) = receiver().await;
    let site = Site::new(backend);
    let hub = TestHub::start_with(&site, FAST).await;
    let (endpoint, first) = create(
        &hub,
        json!({ "url": format!("http://{addr}/hook"), "event_types": ["message.created"] }),
    )
    .await;
    let rotate = |overlap: u64| {
        let hub = &hub;
        let endpoint = &endpoint;
        async move {
            let (status, rotated) = hub
                .call(
                    Method::POST,
                    &format!("/v1/admin/webhook-endpoints/{endpoint}/rotate-secret"),
                    &hub.key,
                    Some(json!({ "overlap_secs": overlap })),
                )
                .await;
            assert_eq!(status, 200, "{rotated}");
            rotated["secret"].as_str().unwrap().to_owned()
        }
    };
    let delivered = |n: usize| {
        let r = &r;
        async move {
            eventually(&format!("{n} deliveries"), || async {
                let hits = r.hits();
                (hits.len() >= n).then(|| hits[n - 1].clone())
            })
            .await
        }
    };

    send_test(&hub, &endpoint).await;
    let hit = delivered(1).await;
    assert_eq!(verified_by(&first, &hit), vec![true]);

    // During the overlap: the new secret's signature, then the previous one's.
    let second = rotate(3600).await;
    assert_ne!(second, first);
    send_test(&hub, &endpoint).await;
    let hit = delivered(2).await;
    assert_eq!(verified_by(&second, &hit), vec![true, false]);
    assert_eq!(verified_by(&first, &hit), vec![false, true]);

    // After it (no overlap): only the new one, which the older secrets do not verify.
    let third = rotate(0).await;
    send_test(&hub, &endpoint).await;
    let hit = delivered(3).await;
    assert_eq!(verified_by(&third, &hit), vec![true]);
    assert_eq!(verified_by(&second, &hit), vec![false]);
    assert_eq!(verified_by(&first, &hit), vec![false]);

    let (status, page) = hub
        .call(
            Method::GET,
            "/v1/audit?action=webhook_endpoint.secret_rotated",
            &hub.key,
            None,
        )
        .await;
    assert_eq!(status, 200);
    assert_eq!(page["data"].as_array().unwrap().len(), 2, "{page}");
    for s in [&first, &second, &third] {
        assert!(!page.to_string().contains(&s[6..]));
    }

    hub.stop().await;
    site.cleanup().await;
}

async fn a_hanging_receiver_is_cut_and_a_huge_answer_is_read_only_up_to_the_cap(backend: Backend) {
    let (_r, addr) = receiver().await;
    let site = Site::new(backend);
    let hub = TestHub::start_with(
        &site,
        r#"
[webhooks_out]
schedule_ms = [0]
allow_http = true
allowed_hosts = ["127.0.0.1"]
poll_ms = 50
request_timeout_ms = 500
max_response_bytes = 1024
"#,
    )
    .await;
    let (hanging, _) = create(
        &hub,
        json!({ "url": format!("http://{addr}/hang"), "event_types": ["*"] }),
    )
    .await;
    let (huge, _) = create(
        &hub,
        json!({ "url": format!("http://{addr}/huge"), "event_types": ["*"] }),
    )
    .await;
    let cut = send_test(&hub, &hanging).await;
    let big = send_test(&hub, &huge).await;

    let failed = delivery_in(&hub, &hanging, &cut, "failed").await;
    assert_eq!(failed["attempts"], 1);
    assert_eq!(failed["response_status"], Value::Null);
    assert!(
        failed["last_error"]
            .as_str()
            .unwrap()
            .starts_with("timeout"),
        "{failed}"
    );
    let read = delivery_in(&hub, &huge, &big, "succeeded").await;
    assert_eq!(read["response_status"], 200);
    assert_eq!(read["response_body"].as_str().unwrap().len(), 1024);

    hub.stop().await;
    site.cleanup().await;
}

async fn bad_input_and_guarded_urls_are_refused_naming_the_field(backend: Backend) {
    let site = Site::new(backend);
    // HTTPS required; only 10.0.0.1 is allow-listed (not the rest of 10/8).
    let hub = TestHub::start_with(&site, "[webhooks_out]\nallowed_hosts = [\"10.0.0.1\"]\n").await;
    let good = || json!({ "url": "https://10.0.0.1/hook", "event_types": ["conversation.*"] });
    let with = |field: &str, value: Value| {
        let mut body = good();
        body[field] = value;
        body
    };
    let cases = [
        (with("url", json!("not a url")), "url"),
        (with("url", json!("ftp://10.0.0.1/hook")), "url"),
        (with("url", json!("http://10.0.0.1/hook")), "url"),
        (with("url", json!("https://127.0.0.1/hook")), "url"),
        (
            with("url", json!("https://169.254.169.254/latest/meta-data")),
            "url",
        ),
        (with("url", json!("https://localhost/hook")), "url"),
        (with("url", json!("https://[::1]/hook")), "url"),
        (with("url", json!("https://10.0.0.2/hook")), "url"),
        (
            with("url", json!("https://crm:hunter2@10.0.0.1/hook")),
            "url",
        ),
        (
            with(
                "event_types",
                json!(["message.created", "conversation.deleted"]),
            ),
            "event_types[1]",
        ),
        (with("event_types", json!([])), "event_types"),
        (with("description", json!("x".repeat(501))), "description"),
    ];
    for (body, field) in cases {
        let (status, refused) = hub
            .call(
                Method::POST,
                "/v1/admin/webhook-endpoints",
                &hub.key,
                Some(body.clone()),
            )
            .await;
        assert_eq!(status, 422, "{body}: {refused}");
        assert_eq!(refused["error"]["details"][0]["field"], field, "{refused}");
    }
    let (status, refused) = hub
        .call(
            Method::POST,
            "/v1/admin/webhook-endpoints",
            &hub.key,
            Some(with("url", json!("https://127.0.0.1/hook"))),
        )
        .await;
    assert_eq!(status, 422);
    assert!(
        refused["error"]["message"]
            .as_str()
            .unwrap()
            .contains("points at 127.0.0.1"),
        "{refused}"
    );

    // The allow-listed address passes.
    let (endpoint, _) = create(&hub, good()).await;
    let path = format!("/v1/admin/webhook-endpoints/{endpoint}");
    let (status, refused) = hub
        .call(
            Method::PATCH,
            &path,
            &hub.key,
            Some(json!({ "url": "https://169.254.169.254/" })),
        )
        .await;
    assert_eq!(status, 422, "{refused}");
    assert_eq!(refused["error"]["details"][0]["field"], "url");
    let (status, changed) = hub
        .call(
            Method::PATCH,
            &path,
            &hub.key,
            Some(json!({ "event_types": ["*"], "ordered": true })),
        )
        .await;
    assert_eq!(status, 200, "{changed}");
    assert_eq!(changed["event_types"], json!(["*"]));
    assert_eq!(changed["ordered"], true);
    assert_eq!(changed["url"], "https://10.0.0.1/hook");
    let (status, refused) = hub
        .call(
            Method::GET,
            &format!("{path}/deliveries?state=lost"),
            &hub.key,
            None,
        )
        .await;
    assert_eq!(status, 422);
    assert_eq!(refused["error"]["details"][0]["field"], "state");
    let (status, page) = hub
        .call(Method::GET, "/v1/admin/webhook-endpoints", &hub.key, None)
        .await;
    assert_eq!(status, 200);
    assert_eq!(page["data"].as_array().unwrap().len(), 1);
    let (status, _) = hub
        .call(
            Method::GET,
            "/v1/admin/webhook-endpoints/whe_nope",
            &hub.key,
            None,
        )
        .await;
    assert_eq!(status, 404);
    let (status, _) = hub.call(Method::DELETE, &path, &hub.key, None).await;
    assert_eq!(status, 204);
    let (status, _) = hub.call(Method::DELETE, &path, &hub.key, None).await;
    assert_eq!(status, 404);
    for action in [
        "webhook_endpoint.created",
        "webhook_endpoint.updated",
        "webhook_endpoint.deleted",
    ] {
        let (_, page) = hub
            .call(
                Method::GET,
                &format!("/v1/audit?action={action}"),
                &hub.key,
                None,
            )
            .await;
        assert_eq!(
            page["data"].as_array().unwrap().len(),
            1,
            "{action}: {page}"
        );
    }

    hub.stop().await;
    site.cleanup().await;
}

async fn every_event_is_queued_and_sent_once_whatever_the_nodes(backend: Backend) {
    let (r, addr) = receiver().await;
    let site = Site::new(backend);
    let hub = TestHub::start_with(&site, FAST).await;
    // Distributed: a second node tails and sends beside the first, from the same store.
    let node_b = if backend == Backend::Distributed {
        Some(TestHub::start_with(&site, FAST).await)
    } else {
        None
    };
    let (endpoint, secret) = create(
        &hub,
        json!({ "url": format!("http://{addr}/hook"),
                "event_types": ["message.created", "conversation.resolved"] }),
    )
    .await;
    const N: usize = 12;
    for i in 0..N {
        let sender = match (&node_b, i % 2) {
            (Some(b), 1) => b,
            _ => &hub,
        };
        let body = wa_text_now(
            &format!("wamid.hooks.once.{i}"),
            &format!("155555504{i:02}"),
            "hi",
        );
        assert_eq!(sender.post_whatsapp(&body).await.status(), 200);
    }
    let list = eventually(&format!("{N} deliveries succeeded"), || async {
        let list = deliveries(&hub, &endpoint).await;
        (list.len() == N && list.iter().all(|d| d["state"] == "succeeded")).then_some(list)
    })
    .await;
    assert!(list.iter().all(|d| d["attempts"] == 1), "{list:?}");
    // Pages of 5, newest first, cover every delivery once.
    let (mut paged, mut cursor) = (Vec::new(), None::<String>);
    loop {
        let after = cursor.map(|c| format!("&cursor={c}")).unwrap_or_default();
        let (status, page) = hub
            .call(
                Method::GET,
                &format!("/v1/admin/webhook-endpoints/{endpoint}/deliveries?limit=5{after}"),
                &hub.key,
                None,
            )
            .await;
        assert_eq!(status, 200, "{page}");
        paged.extend(
            page["data"]
                .as_array()
                .unwrap()
                .iter()
                .map(|d| d["id"].clone()),
        );
        match page["next_cursor"].as_str() {
            Some(next) => cursor = Some(next.to_owned()),
            None => break,
        }
    }
    assert_eq!(
        paged,
        list.iter().map(|d| d["id"].clone()).collect::<Vec<_>>()
    );
    let hits = r.hits();
    assert_eq!(hits.len(), N, "each event once");
    let mut ids: Vec<&str> = hits.iter().map(|h| h.id.as_str()).collect();
    ids.sort_unstable();
    ids.dedup();
    assert_eq!(ids.len(), N);
    for hit in &hits {
        assert_eq!(verified_by(&secret, hit), vec![true]);
        assert_eq!(hit.json()["type"], "message.created");
    }
    // Resolving is one `conversation.resolved` (with the conversation as data).
    let conversation = hits[0].json()["data"]["conversation_id"]
        .as_str()
        .unwrap()
        .to_owned();
    let (status, resolved) = hub
        .call(
            Method::POST,
            &format!("/v1/conversations/{conversation}/resolve"),
            &hub.key,
            None,
        )
        .await;
    assert_eq!(status, 200, "{resolved}");
    let hit = eventually("the resolution delivered", || async {
        r.hits().get(N).cloned()
    })
    .await;
    let event = hit.json();
    assert_eq!(event["type"], "conversation.resolved");
    assert_eq!(event["data"]["id"], conversation.as_str());
    assert_eq!(event["data"]["status"], "resolved");
    assert_eq!(verified_by(&secret, &hit), vec![true]);

    if let Some(b) = node_b {
        b.stop().await;
    }
    hub.stop().await;
    site.cleanup().await;
}

/// `contact.updated` reaches a subscribed endpoint when a contact's attributes change, and no
/// console: it names no conversation.
async fn a_contact_update_is_delivered(backend: Backend) {
    let (r, addr) = receiver().await;
    let site = Site::new(backend);
    let hub = TestHub::start_with(&site, FAST).await;
    let (_, secret) = create(
        &hub,
        json!({ "url": format!("http://{addr}/hook"), "event_types": ["contact.*"] }),
    )
    .await;
    let admin = site.user("super_admin", None, &[]).await;
    let mut console = crate::console::Console::open(&hub, &admin.token, None).await;
    let body = wa_text_now("wamid.hooks.contact", "15555550399", "hello");
    assert_eq!(hub.post_whatsapp(&body).await.status(), 200);
    let created = console.next_of("message.created").await;
    let conversation = created["data"]["conversation_id"]
        .as_str()
        .unwrap()
        .to_owned();
    let (_, conv) = hub
        .call(
            reqwest::Method::GET,
            &format!("/v1/conversations/{conversation}"),
            &admin.token,
            None,
        )
        .await;
    let contact = conv["contact_id"].as_str().unwrap().to_owned();
    let (status, _) = hub
        .call(
            reqwest::Method::PUT,
            &format!("/v1/contacts/{contact}/attributes"),
            &admin.token,
            Some(json!({ "attributes": { "vip": true } })),
        )
        .await;
    assert_eq!(status, 200);
    let hit = eventually("the contact update delivered", || async {
        r.hits().into_iter().find(|h| h.answered == 200)
    })
    .await;
    assert_eq!(verified_by(&secret, &hit), vec![true], "{hit:?}");
    let event = hit.json();
    assert_eq!(event["type"], "contact.updated");
    assert_eq!(event["data"]["contact_id"], contact.as_str());
    assert_eq!(event["data"]["attributes"], json!({ "vip": true }));
    // Only the contact event was subscribed; and the console never saw it: a later message
    // comes after it in the log, and the console reaches that message without it.
    assert_eq!(r.hits().len(), 1);
    let later = wa_text_now("wamid.hooks.contact.2", "15555550399", "still there?");
    assert_eq!(hub.post_whatsapp(&later).await.status(), 200);
    loop {
        let frame = console.next().await;
        assert_ne!(frame["type"], "contact.updated", "{frame}");
        if frame["type"] == "message.created" && frame["data"]["content"]["text"] == "still there?"
        {
            break;
        }
    }
    hub.stop().await;
    site.cleanup().await;
}

on_both_backends!(
    a_contact_update_is_delivered,
    deliveries_are_signed_ordered_and_retried_until_the_receiver_recovers,
    a_receiver_down_for_the_whole_schedule_disables_the_endpoint_and_alerts,
    secret_rotation_signs_with_both_during_the_overlap_and_the_new_one_after,
    a_hanging_receiver_is_cut_and_a_huge_answer_is_read_only_up_to_the_cap,
    bad_input_and_guarded_urls_are_refused_naming_the_field,
    every_event_is_queued_and_sent_once_whatever_the_nodes,
);
