//! Alerts (docs/ALERTS.md) through the real hub, against fake Slack incoming-webhook and
//! PagerDuty Events v2 servers that answer as the real ones do (PROVIDERS.md §5–6): an alert
//! pages once when its condition holds, once more when it clears, and a destination's refusal
//! is honoured (429 retried after `Retry-After`, 400 never retried, visible either way).

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::IntoResponse;
use reqwest::Method;
use serde_json::{Value, json};

use crate::helpers::{Backend, Site, TestHub, eventually, wa_text_now};
use crate::on_both_backends;

const ROUTING_KEY: &str = "0123456789abcdef0123456789abcdef";

/// One request a fake destination got, and when.
#[derive(Debug, Clone)]
pub(crate) struct Hit {
    path: String,
    pub body: Value,
    at: Instant,
}

/// A fake Slack (`POST /services/…`, `200 ok`) and PagerDuty (`POST /v2/enqueue`, `202`) on
/// port 0, each answering from its script first: (status, `Retry-After`, body).
#[derive(Default)]
pub(crate) struct Destinations {
    hits: Mutex<Vec<Hit>>,
    slack_script: Mutex<VecDeque<(u16, Option<&'static str>, &'static str)>>,
    pagerduty_script: Mutex<VecDeque<(u16, &'static str)>>,
}

impl Destinations {
    pub(crate) fn hits(&self, prefix: &str) -> Vec<Hit> {
        self.hits
            .lock()
            .unwrap()
            .iter()
            .filter(|h| h.path.starts_with(prefix))
            .cloned()
            .collect()
    }
}

pub(crate) async fn fake_destinations() -> (Arc<Destinations>, SocketAddr) {
    async fn slack(
        State(d): State<Arc<Destinations>>,
        uri: axum::http::Uri,
        headers: HeaderMap,
        body: axum::body::Bytes,
    ) -> axum::response::Response {
        assert_eq!(headers["content-type"], "application/json");
        d.hits.lock().unwrap().push(Hit {
            path: uri.path().to_owned(),
            body: serde_json::from_slice(&body).unwrap(),
            at: Instant::now(),
        });
        match d.slack_script.lock().unwrap().pop_front() {
            Some((status, retry_after, said)) => {
                let mut response = (StatusCode::from_u16(status).unwrap(), said).into_response();
                if let Some(after) = retry_after {
                    response
                        .headers_mut()
                        .insert("retry-after", after.parse().unwrap());
                }
                response
            }
            None => (StatusCode::OK, "ok").into_response(),
        }
    }
    async fn pagerduty(
        State(d): State<Arc<Destinations>>,
        body: axum::body::Bytes,
    ) -> axum::response::Response {
        let body: Value = serde_json::from_slice(&body).unwrap();
        d.hits.lock().unwrap().push(Hit {
            path: "/v2/enqueue".to_owned(),
            body: body.clone(),
            at: Instant::now(),
        });
        match d.pagerduty_script.lock().unwrap().pop_front() {
            Some((status, said)) => (
                StatusCode::from_u16(status).unwrap(),
                [("content-type", "application/json")],
                said,
            )
                .into_response(),
            None => (
                StatusCode::ACCEPTED,
                axum::Json(json!({ "status": "success", "message": "Event processed",
                                   "dedup_key": body["dedup_key"] })),
            )
                .into_response(),
        }
    }
    let d = Arc::new(Destinations::default());
    let app = axum::Router::new()
        .route("/services/{*rest}", axum::routing::post(slack))
        .route("/v2/enqueue", axum::routing::post(pagerduty))
        .with_state(d.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (d, addr)
}

/// Waits until the prefix has `n` hits; then checks it stays at `n` for a few evaluation
/// rounds (an alert must not page again while it holds).
async fn exactly(d: &Destinations, prefix: &str, n: usize) -> Vec<Hit> {
    eventually(&format!("{n} requests to {prefix}"), || async {
        (d.hits(prefix).len() >= n).then_some(())
    })
    .await;
    tokio::time::sleep(Duration::from_millis(600)).await;
    let hits = d.hits(prefix);
    assert_eq!(
        hits.len(),
        n,
        "{:#?}",
        hits.iter().map(|h| &h.body).collect::<Vec<_>>()
    );
    hits
}

async fn alerts(hub: &TestHub, token: &str) -> Vec<Value> {
    let (status, page) = hub.call(Method::GET, "/v1/admin/alerts", token, None).await;
    assert_eq!(status, 200, "{page}");
    page["data"].as_array().unwrap().clone()
}

async fn a_backlog_pages_slack_once_and_resolves_once(backend: Backend) {
    let (d, addr) = fake_destinations().await;
    let site = Site::new(backend);
    let hub = TestHub::start_with(
        &site,
        &format!(
            r#"
[alerts]
evaluate_every_ms = 100
retry_base_ms = 50
default_rules = false
[[alerts.destinations]]
name = "ops-slack"
kind = "slack"
url = "http://{addr}/services/T000/B000/XXXX"
[[alerts.rules]]
name = "backlog"
signal = "queue_backlog"
threshold = 2
for_secs = 0
hold_down_secs = 1
severity = "warning"
destinations = ["ops-slack"]
"#
        ),
    )
    .await;
    let admin = site.user("super_admin", None, &[]).await;
    // Slack is busy the first time: the notice waits out its Retry-After.
    d.slack_script
        .lock()
        .unwrap()
        .push_back((429, Some("1"), "rate_limited"));

    // No agent is online: three customers write and all three wait.
    for i in 0..3 {
        let wa_id = format!("1555555020{i}");
        let body = wa_text_now(&format!("wamid.backlog.{i}"), &wa_id, "anyone there?");
        assert_eq!(hub.post_whatsapp(&body).await.status(), 200);
    }
    let hits = exactly(&d, "/services/", 2).await;
    assert_eq!(
        hits[0].body, hits[1].body,
        "the retry sends the same notice"
    );
    assert!(
        hits[1].at - hits[0].at >= Duration::from_millis(950),
        "Retry-After honoured: {:?}",
        hits[1].at - hits[0].at
    );
    let fired = &hits[1].body;
    assert_eq!(
        fired["text"],
        "[FIRING] backlog — 3 conversations waiting for an agent (threshold 2)"
    );
    assert_eq!(fired["blocks"][0]["type"], "section");
    let history = alerts(&hub, &admin.token).await;
    assert_eq!(history.len(), 1);
    assert_eq!(history[0]["state"], "firing");
    assert_eq!(history[0]["value"], 3.0);
    assert_eq!(history[0]["deliveries"][0]["state"], "sent");
    assert_eq!(history[0]["deliveries"][0]["attempts"], 2);

    // Drained: two are resolved; once clear for the hold-down, one resolve.
    let conversations = hub.conversations().await;
    for c in conversations.iter().take(2) {
        let (status, body) = hub
            .call(
                Method::POST,
                &format!("/v1/conversations/{}/resolve", c["id"].as_str().unwrap()),
                &admin.token,
                None,
            )
            .await;
        assert_eq!(status, 200, "{body}");
    }
    let hits = exactly(&d, "/services/", 3).await;
    assert!(
        hits[2].body["text"]
            .as_str()
            .unwrap()
            .starts_with("[RESOLVED] backlog"),
        "{}",
        hits[2].body
    );
    let history = alerts(&hub, &admin.token).await;
    assert_eq!(history[0]["state"], "resolved");
    assert!(history[0]["resolved_at_ms"].as_i64().is_some());
    let deliveries = history[0]["deliveries"].as_array().unwrap();
    assert_eq!(deliveries.len(), 2);
    assert!(
        deliveries.iter().all(|d| d["state"] == "sent"),
        "{deliveries:?}"
    );

    hub.stop().await;
    site.cleanup().await;
}

async fn forged_webhooks_page_pagerduty_with_a_stable_key(backend: Backend) {
    let (d, addr) = fake_destinations().await;
    let site = Site::new(backend);
    let hub = TestHub::start_with(
        &site,
        &format!(
            r#"
[alerts]
evaluate_every_ms = 100
retry_base_ms = 50
pagerduty_base_url = "http://{addr}"
[[alerts.destinations]]
name = "oncall"
kind = "pagerduty"
routing_key = "{ROUTING_KEY}"
[[alerts.rules]]
name = "webhook_errors"
signal = "webhook_error_ratio"
threshold = 5
window_secs = 600
hold_down_secs = 1
severity = "error"
destinations = ["oncall"]
"#
        ),
    )
    .await;
    let admin = site.user("super_admin", None, &[]).await;
    let forged = |n: usize| {
        let hub = &hub;
        async move {
            for i in 0..n {
                let r = hub
                    .client
                    .post(hub.url("/webhooks/whatsapp/demo"))
                    .header("x-hub-signature-256", format!("sha256={}", "0".repeat(64)))
                    .header("content-type", "application/json")
                    .body(format!("{{\"forged\":{i}}}"))
                    .send()
                    .await
                    .unwrap();
                assert_eq!(r.status(), 403);
            }
        }
    };
    let genuine = |from: usize, n: usize| {
        let hub = &hub;
        async move {
            for i in from..from + n {
                let body = wa_text_now(&format!("wamid.ok.{i}"), "15555550300", "fine");
                assert_eq!(hub.post_whatsapp(&body).await.status(), 200);
            }
        }
    };

    // One genuine webhook and a burst of forged ones: 5 of 6 refused.
    genuine(0, 1).await;
    forged(5).await;
    let hits = exactly(&d, "/v2/enqueue", 1).await;
    let key = "switchboard/acc_default/webhook_errors/account";
    let trigger = &hits[0].body;
    assert_eq!(trigger["routing_key"], ROUTING_KEY);
    assert_eq!(trigger["event_action"], "trigger");
    assert_eq!(trigger["dedup_key"], key);
    assert_eq!(trigger["payload"]["severity"], "error");
    assert_eq!(trigger["payload"]["source"], crate::helpers::PUBLIC_URL);
    assert_eq!(
        trigger["payload"]["custom_details"]["signal"],
        "webhook_error_ratio"
    );

    // Genuine traffic brings the ratio under 5%: the same key resolves it.
    genuine(1, 100).await;
    let hits = exactly(&d, "/v2/enqueue", 2).await;
    assert_eq!(
        hits[1].body,
        json!({ "routing_key": ROUTING_KEY, "event_action": "resolve", "dedup_key": key })
    );

    // A PagerDuty that refuses the event (400) is not asked again, and it shows.
    d.pagerduty_script.lock().unwrap().push_back((
        400,
        r#"{"status":"invalid event","message":"Event object is invalid","errors":["Length of 'routing_key' is incorrect (should be 32 characters)"]}"#,
    ));
    forged(10).await;
    exactly(&d, "/v2/enqueue", 3).await;
    let history = eventually("the refused notice recorded", || async {
        let history = alerts(&hub, &admin.token).await;
        (history.len() == 2 && history[0]["deliveries"][0]["state"] == "broken").then_some(history)
    })
    .await;
    let refused = &history[0]["deliveries"][0];
    assert_eq!(refused["attempts"], 1);
    assert_eq!(refused["last_code"], "http_400");
    assert!(
        refused["last_reason"]
            .as_str()
            .unwrap()
            .contains("Event object is invalid"),
        "{refused}"
    );
    assert_eq!(history[1]["state"], "resolved");

    // The rules in force, without secrets.
    let (status, rules) = hub
        .call(Method::GET, "/v1/admin/alert-rules", &admin.token, None)
        .await;
    assert_eq!(status, 200, "{rules}");
    assert_eq!(rules["rules"][0]["name"], "webhook_errors");
    // The refusal shows on the destination too.
    assert_eq!(rules["destinations"][0]["name"], "oncall");
    assert_eq!(rules["destinations"][0]["status"], "broken");
    assert!(
        rules["destinations"][0]["last_error"]
            .as_str()
            .unwrap()
            .starts_with("http_400: PagerDuty refused"),
        "{rules}"
    );
    assert!(!rules.to_string().contains(ROUTING_KEY));

    hub.stop().await;
    site.cleanup().await;
}

async fn alert_rules_over_rest_are_checked_audited_and_evaluated(backend: Backend) {
    let (d, addr) = fake_destinations().await;
    let site = Site::new(backend);
    let hub = TestHub::start_with(
        &site,
        &format!(
            "[alerts]\nevaluate_every_ms = 100\n[[alerts.destinations]]\nname = \"ops-slack\"\nkind = \"slack\"\nurl = \"http://{addr}/services/T1/B1/y\"\n"
        ),
    )
    .await;
    let admin = site.user("super_admin", None, &[]).await;
    let agent = site.user("agent", None, &[]).await;
    let call = |method: Method, path: &str, body: Option<Value>| {
        let (hub, token, path) = (&hub, admin.token.clone(), path.to_owned());
        async move { hub.call(method, &path, &token, body).await }
    };
    let rules = || async {
        let (status, out) = call(Method::GET, "/v1/admin/alert-rules", None).await;
        assert_eq!(status, 200, "{out}");
        out["rules"].as_array().unwrap().clone()
    };
    // The shipped backlog rule came with the Slack destination.
    let shipped = rules().await;
    assert_eq!(shipped.len(), 1);
    assert_eq!(
        (&shipped[0]["name"], &shipped[0]["source"]),
        (&json!("queue_backlog"), &json!("config"))
    );

    let rule = json!({ "name": "any_wait", "signal": "queue_backlog", "threshold": 0,
                       "hold_down_secs": 0, "destinations": ["ops-slack"] });
    let with = |field: &str, value: Value| {
        let mut r = rule.clone();
        r[field] = value;
        r
    };
    for (bad, field) in [
        (with("signal", json!("cpu_load")), "signal"),
        (with("threshold", json!(-1)), "threshold"),
        (with("destinations", json!(["nowhere"])), "destinations[0]"),
        (with("signal", json!("webhook_error_ratio")), "window_secs"),
        (with("severity", json!("loud")), "severity"),
        (with("account", json!("default")), "account"),
        (with("for_secs", json!("soon")), "for_secs"),
    ] {
        let (status, out) = call(Method::POST, "/v1/admin/alert-rules", Some(bad.clone())).await;
        assert_eq!(status, 422, "{bad}: {out}");
        assert_eq!(out["error"]["details"][0]["field"], field, "{bad}: {out}");
    }
    let (status, out) = call(
        Method::POST,
        "/v1/admin/alert-rules",
        Some(with("name", json!("queue_backlog"))),
    )
    .await;
    assert_eq!(status, 409, "{out}");
    let (status, _) = hub
        .call(
            Method::POST,
            "/v1/admin/alert-rules",
            &agent.token,
            Some(rule.clone()),
        )
        .await;
    assert_eq!(status, 403);
    assert_eq!(rules().await.len(), 1, "nothing refused was kept");

    let (status, out) = call(Method::POST, "/v1/admin/alert-rules", Some(rule.clone())).await;
    assert_eq!(status, 201, "{out}");
    let (status, _) = call(Method::POST, "/v1/admin/alert-rules", Some(rule.clone())).await;
    assert_eq!(status, 409);
    assert_eq!(rules().await[1]["source"], "api");

    // Evaluated from the next round: one waiting conversation is above 0.
    let body = wa_text_now("wamid.rest.1", "15555550400", "hello?");
    assert_eq!(hub.post_whatsapp(&body).await.status(), 200);
    let hits = exactly(&d, "/services/", 1).await;
    assert!(
        hits[0].body["text"]
            .as_str()
            .unwrap()
            .starts_with("[FIRING] any_wait"),
        "{}",
        hits[0].body
    );

    // Raised above the value, it resolves (no hold-down).
    let (status, out) = call(
        Method::PUT,
        "/v1/admin/alert-rules/any_wait",
        Some(with("threshold", json!(5))),
    )
    .await;
    assert_eq!(status, 200, "{out}");
    let hits = exactly(&d, "/services/", 2).await;
    assert!(
        hits[1].body["text"]
            .as_str()
            .unwrap()
            .starts_with("[RESOLVED] any_wait"),
        "{}",
        hits[1].body
    );
    let (status, _) = call(
        Method::PUT,
        "/v1/admin/alert-rules/other",
        Some(rule.clone()),
    )
    .await;
    assert_eq!(status, 422);
    let (status, _) = call(
        Method::PUT,
        "/v1/admin/alert-rules/other",
        Some(with("name", json!("other"))),
    )
    .await;
    assert_eq!(status, 404);
    let (status, _) = call(Method::DELETE, "/v1/admin/alert-rules/any_wait", None).await;
    assert_eq!(status, 204);
    let (status, _) = call(Method::DELETE, "/v1/admin/alert-rules/any_wait", None).await;
    assert_eq!(status, 404);
    for action in [
        "alert_rule.created",
        "alert_rule.updated",
        "alert_rule.deleted",
    ] {
        let (status, page) = call(Method::GET, &format!("/v1/audit?action={action}"), None).await;
        assert_eq!(status, 200, "{page}");
        assert_eq!(
            page["data"].as_array().unwrap().len(),
            1,
            "{action}: {page}"
        );
    }

    hub.stop().await;
    site.cleanup().await;
}

async fn an_expired_whatsapp_token_pages_once(backend: Backend) {
    use crate::fake_providers::{fake_graph, flow, graph_error};
    let (d, addr) = fake_destinations().await;
    let (graph, graph_addr) = fake_graph().await;
    let site = Site::new(backend);
    let hub = TestHub::start_with(
        &site,
        &format!(
            r#"
[outbound]
whatsapp_base_url = "http://{graph_addr}"
[alerts]
evaluate_every_ms = 100
default_rules = false
[[alerts.destinations]]
name = "ops-slack"
kind = "slack"
url = "http://{addr}/services/T/B/creds"
[[alerts.rules]]
name = "whatsapp_token"
signal = "credentials_rejected"
threshold = 0
window_secs = 600
severity = "critical"
destinations = ["ops-slack"]
"#
        ),
    )
    .await;
    let admin = site.user("super_admin", None, &[]).await;
    graph.then(
        401,
        graph_error(190, "Error validating access token: Session has expired"),
    );
    let conversation = flow::whatsapp_customer(&hub, "15555550801").await;
    let id = flow::reply(&hub, &admin.token, &conversation, "Hello").await;
    let failed = flow::status_becomes(&hub, &conversation, &id, "failed").await;
    assert!(
        failed["error"].as_str().unwrap().contains("190"),
        "{failed}"
    );
    let hits = exactly(&d, "/services/", 1).await;
    let text = hits[0].body["text"].as_str().unwrap();
    assert!(text.starts_with("[FIRING] whatsapp_token"), "{text}");
    assert!(text.contains("replace the token"), "{text}");
    hub.stop().await;
    site.cleanup().await;
}

on_both_backends!(
    an_expired_whatsapp_token_pages_once,
    a_backlog_pages_slack_once_and_resolves_once,
    forged_webhooks_page_pagerduty_with_a_stable_key,
    alert_rules_over_rest_are_checked_audited_and_evaluated,
);
