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

/// Posts `body` to `path` as the admin and returns the created record.
async fn created(hub: &TestHub, token: &str, path: &str, body: Value) -> Value {
    let (status, out) = hub.call(Method::POST, path, token, Some(body)).await;
    assert_eq!(status, 201, "{path}: {out}");
    out
}

async fn one_failing_provider_pages_for_that_provider_only(backend: Backend) {
    use crate::fake_providers::{fake_graph, fake_twilio, flow, graph_error};
    let (d, addr) = fake_destinations().await;
    let (graph, graph_addr) = fake_graph().await;
    let (twilio, twilio_addr) = fake_twilio().await;
    let site = Site::new(backend);
    let hub = TestHub::start_with(
        &site,
        &format!(
            r#"
[outbound]
whatsapp_base_url = "http://{graph_addr}"
twilio_base_url = "http://{twilio_addr}"
[alerts]
evaluate_every_ms = 100
retry_base_ms = 50
default_rules = false
pagerduty_base_url = "http://{addr}"
[[alerts.destinations]]
name = "oncall"
kind = "pagerduty"
routing_key = "{ROUTING_KEY}"
[[alerts.rules]]
name = "outbound"
signal = "outbound_failure_ratio"
per = "provider"
threshold = 50
window_secs = 600
hold_down_secs = 1
severity = "error"
destinations = ["oncall"]
"#
        ),
    )
    .await;
    let admin = site.user("super_admin", None, &[]).await;
    // WhatsApp refuses the first reply for good; Twilio takes every one.
    graph.then(400, graph_error(131026, "Message undeliverable"));
    let wa = flow::whatsapp_customer(&hub, "15555550901").await;
    let sms = flow::sms_customer(&hub, "+15555550902").await;
    let failed = flow::reply(&hub, &admin.token, &wa, "Hello Ada").await;
    flow::status_becomes(&hub, &wa, &failed, "failed").await;
    let sent = flow::reply(&hub, &admin.token, &sms, "Hello Bob").await;
    flow::status_becomes(&hub, &sms, &sent, "sent").await;
    assert_eq!(twilio.count(), 1);

    // WhatsApp is at 100% failed: one incident, named for WhatsApp; Twilio's 0% pages nothing.
    let hits = exactly(&d, "/v2/enqueue", 1).await;
    let key = "switchboard/acc_default/outbound/provider:whatsapp";
    let trigger = &hits[0].body;
    assert_eq!(trigger["event_action"], "trigger");
    assert_eq!(trigger["dedup_key"], key);
    assert_eq!(trigger["payload"]["group"], "provider:whatsapp");
    assert_eq!(
        trigger["payload"]["custom_details"]["scope"],
        "provider:whatsapp"
    );
    assert_eq!(
        trigger["payload"]["summary"],
        "outbound: 100.0% of whatsapp send attempts failed over 600 s (threshold 50%)"
    );
    let history = alerts(&hub, &admin.token).await;
    assert_eq!(history.len(), 1, "{history:?}");
    assert_eq!(history[0]["scope"], "provider:whatsapp");
    assert_eq!(history[0]["dedup_key"], key);
    assert_eq!(history[0]["state"], "firing");

    // WhatsApp recovers: two sends go through, 1 failed of 3 is under 50%, and the same key
    // resolves the incident.
    for text in ["Still there?", "Sorry for the wait"] {
        let id = flow::reply(&hub, &admin.token, &wa, text).await;
        flow::status_becomes(&hub, &wa, &id, "sent").await;
    }
    let hits = exactly(&d, "/v2/enqueue", 2).await;
    assert_eq!(
        hits[1].body,
        json!({ "routing_key": ROUTING_KEY, "event_action": "resolve", "dedup_key": key })
    );
    let history = alerts(&hub, &admin.token).await;
    assert_eq!(history.len(), 1, "{history:?}");
    assert_eq!(history[0]["state"], "resolved");
    let (status, rules) = hub
        .call(Method::GET, "/v1/admin/alert-rules", &admin.token, None)
        .await;
    assert_eq!(status, 200, "{rules}");
    assert_eq!(rules["rules"][0]["per"], "provider");

    hub.stop().await;
    site.cleanup().await;
}

async fn sla_breaches_page_for_the_breaching_team_only(backend: Backend) {
    use crate::fake_providers::flow;
    let (d, addr) = fake_destinations().await;
    let site = Site::new(backend);
    let hub = TestHub::start_with(
        &site,
        &format!(
            r#"
[sla]
check_every_ms = 100
[alerts]
evaluate_every_ms = 100
default_rules = false
[[alerts.destinations]]
name = "ops"
kind = "slack"
url = "http://{addr}/services/T/B/teams"
[[alerts.rules]]
name = "team_breaches"
signal = "sla_breaches"
per = "team"
threshold = 1
window_secs = 600
hold_down_secs = 600
destinations = ["ops"]
[[alerts.rules]]
name = "all_breaches"
signal = "sla_breaches"
threshold = 2
window_secs = 600
hold_down_secs = 600
destinations = ["ops"]
"#
        ),
    )
    .await;
    let admin = site.user("super_admin", None, &[]).await;
    let t = admin.token.as_str();
    // Sales answers WhatsApp, Care answers SMS; both promise a first reply within a second.
    let sales = created(&hub, t, "/v1/admin/teams", json!({ "name": "Sales" })).await;
    let care = created(&hub, t, "/v1/admin/teams", json!({ "name": "Care" })).await;
    let (sales, care) = (sales["id"].as_str().unwrap(), care["id"].as_str().unwrap());
    for (inbox, team) in [("inb_support-wa", sales), ("inb_support-sms", care)] {
        let (status, out) = hub
            .call(
                Method::PATCH,
                &format!("/v1/admin/inboxes/{inbox}"),
                t,
                Some(json!({ "team_id": team })),
            )
            .await;
        assert_eq!(status, 200, "{out}");
        created(
            &hub,
            t,
            "/v1/admin/sla-policies",
            json!({ "name": team, "team_id": team, "first_response_secs": 1, "warning_secs": 0 }),
        )
        .await;
    }

    // Two Sales customers and one Care customer wait: 2 breaches for Sales (above 1), 1 for
    // Care (not above), 3 for the account (above 2).
    flow::whatsapp_customer(&hub, "15555550911").await;
    flow::whatsapp_customer(&hub, "15555550912").await;
    flow::sms_customer(&hub, "+15555550913").await;
    // The account-wide rule fires once all three breaches are counted, so Care's one breach
    // has been seen by the per-team rule too (Care's count can only stay at 1).
    let fired = eventually("the account-wide and the Sales alerts", || async {
        let history = alerts(&hub, t).await;
        let has = |rule: &str| history.iter().any(|a| a["rule"] == rule);
        (has("all_breaches") && has("team_breaches")).then_some(history)
    })
    .await;
    let mut scopes: Vec<(String, String)> = fired
        .iter()
        .map(|a| {
            (
                a["rule"].as_str().unwrap().to_owned(),
                a["scope"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    scopes.sort();
    assert_eq!(
        scopes,
        [
            ("all_breaches".to_owned(), "account".to_owned()),
            ("team_breaches".to_owned(), format!("team:{sales}")),
        ]
    );
    let hits = exactly(&d, "/services/", 2).await;
    let texts: Vec<&str> = hits
        .iter()
        .map(|h| h.body["text"].as_str().unwrap())
        .collect();
    let team_page = texts
        .iter()
        .find(|t| t.starts_with("[FIRING] team_breaches"))
        .unwrap_or_else(|| panic!("{texts:?}"));
    assert!(
        team_page.contains(&format!("2 SLA breaches in team Sales ({sales})")),
        "{team_page}"
    );
    assert!(!texts.iter().any(|t| t.contains(care)), "{texts:?}");

    hub.stop().await;
    site.cleanup().await;
}

/// Opening hours in UTC, whole days, open on the given weekdays counted from today (0), so a
/// test can be open now or closed now whatever day it runs.
fn hours_around_today(days_from_today: &[u64]) -> Value {
    const DAYS: [&str; 7] = ["mon", "tue", "wed", "thu", "fri", "sat", "sun"];
    let since_epoch = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
        / 86_400;
    // 1970-01-01 was a Thursday.
    let today = (since_epoch + 3) % 7;
    let week: serde_json::Map<String, Value> = days_from_today
        .iter()
        .map(|d| {
            let day = usize::try_from((today + d) % 7).unwrap();
            (DAYS[day].to_owned(), json!("00:00-24:00"))
        })
        .collect();
    json!({ "time_zone": "UTC", "week": week })
}

async fn a_silent_inbox_pages_in_business_hours_only(backend: Backend) {
    let (d, addr) = fake_destinations().await;
    let site = Site::new(backend);
    let hub = TestHub::start_with(
        &site,
        &format!(
            "[alerts]\nevaluate_every_ms = 100\ndefault_rules = false\n[[alerts.destinations]]\nname = \"ops\"\nkind = \"slack\"\nurl = \"http://{addr}/services/T/B/quiet\"\n"
        ),
    )
    .await;
    let admin = site.user("super_admin", None, &[]).await;
    let t = admin.token.as_str();
    // Open yesterday, today and tomorrow (UTC): open now, even across midnight. The other
    // rule's hours open three days from now only: closed now.
    let rule = |name: &str, hours: Value| {
        json!({ "name": name, "signal": "inbound_silence", "threshold": 3, "hold_down_secs": 0,
                "hours": hours, "destinations": ["ops"] })
    };
    created(
        &hub,
        t,
        "/v1/admin/alert-rules",
        rule("quiet_open", hours_around_today(&[6, 0, 1])),
    )
    .await;
    let mut closed = rule("quiet_closed", hours_around_today(&[3]));
    closed["inbox"] = json!("inb_support-wa");
    created(&hub, t, "/v1/admin/alert-rules", closed).await;
    let (status, rules) = hub
        .call(Method::GET, "/v1/admin/alert-rules", t, None)
        .await;
    assert_eq!(status, 200, "{rules}");
    let shown = rules["rules"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["name"] == "quiet_closed")
        .unwrap();
    assert_eq!(
        (&shown["name"], &shown["per"], &shown["only"]),
        (
            &json!("quiet_closed"),
            &json!("inbox"),
            &json!("inb_support-wa")
        )
    );

    // A customer writes on WhatsApp; then nothing. The SMS and web-chat inboxes never had a
    // customer message: unused, not silent, they never page.
    let write = |n: usize| {
        let hub = &hub;
        async move {
            let body = wa_text_now(&format!("wamid.quiet.{n}"), "15555550920", "hello");
            assert_eq!(hub.post_whatsapp(&body).await.status(), 200);
        }
    };
    write(0).await;
    let hits = exactly(&d, "/services/", 1).await;
    let text = hits[0].body["text"].as_str().unwrap();
    assert!(
        text.starts_with(
            "[FIRING] quiet_open — no customer message on inbox Support (WhatsApp) (inb_support-wa) for"
        ),
        "{text}"
    );
    let history = alerts(&hub, t).await;
    assert_eq!(history.len(), 1, "only in business hours: {history:?}");
    assert_eq!(history[0]["rule"], "quiet_open");
    assert_eq!(history[0]["scope"], "inbox:inb_support-wa");

    // The customer writes again: the silence is over and the alert resolves (no hold-down).
    // Silent again afterwards, it may page again: only the first two notices are looked at.
    write(1).await;
    let hits = eventually("the resolve", || async {
        let hits = d.hits("/services/");
        (hits.len() >= 2).then_some(hits)
    })
    .await;
    let text = hits[1].body["text"].as_str().unwrap();
    assert!(text.starts_with("[RESOLVED] quiet_open"), "{text}");
    let history = alerts(&hub, t).await;
    assert!(
        history.iter().all(|a| a["rule"] == "quiet_open"),
        "{history:?}"
    );

    hub.stop().await;
    site.cleanup().await;
}

async fn scoped_rules_refuse_fields_that_do_not_fit(backend: Backend) {
    let (_d, addr) = fake_destinations().await;
    let site = Site::new(backend);
    let hub = TestHub::start_with(
        &site,
        &format!(
            "[[alerts.destinations]]\nname = \"ops\"\nkind = \"slack\"\nurl = \"http://{addr}/services/T/B/bad\"\n"
        ),
    )
    .await;
    let admin = site.user("super_admin", None, &[]).await;
    let rule = |signal: &str, extra: Value| {
        let mut r = json!({ "name": "scoped", "signal": signal, "threshold": 1,
                            "destinations": ["ops"] });
        if !matches!(signal, "inbound_silence" | "queue_backlog") {
            r["window_secs"] = json!(600);
        }
        for (k, v) in extra.as_object().unwrap() {
            r[k] = v.clone();
        }
        r
    };
    let hours = |tz: &str| json!({ "time_zone": tz, "week": { "mon": "09:00-17:00" } });
    for (bad, field) in [
        (rule("sla_breaches", json!({ "scope": "team" })), "scope"),
        (
            rule("queue_backlog", json!({ "provider": "twilio" })),
            "provider",
        ),
        (
            rule("outbound_failure_ratio", json!({ "provider": "telegram" })),
            "provider",
        ),
        (
            rule("outbound_failure_ratio", json!({ "per": "team" })),
            "per",
        ),
        (rule("sla_breaches", json!({ "team": "team_nope" })), "team"),
        (
            rule("sla_breaches", json!({ "inbox": "inb_support-wa" })),
            "inbox",
        ),
        (
            rule("inbound_silence", json!({ "inbox": "inb_nope" })),
            "inbox",
        ),
        (
            rule("inbound_silence", json!({ "hours": hours("Mars/Base") })),
            "hours.time_zone",
        ),
        (
            rule("sla_breaches", json!({ "hours": hours("UTC") })),
            "hours",
        ),
        (
            rule("inbound_silence", json!({ "window_secs": 600 })),
            "window_secs",
        ),
    ] {
        let (status, out) = hub
            .call(
                Method::POST,
                "/v1/admin/alert-rules",
                &admin.token,
                Some(bad.clone()),
            )
            .await;
        assert_eq!(status, 422, "{bad}: {out}");
        assert_eq!(out["error"]["details"][0]["field"], field, "{bad}: {out}");
    }
    let (status, rules) = hub
        .call(Method::GET, "/v1/admin/alert-rules", &admin.token, None)
        .await;
    assert_eq!(status, 200, "{rules}");
    assert!(
        rules["rules"]
            .as_array()
            .unwrap()
            .iter()
            .all(|r| r["name"] != "scoped"),
        "nothing refused was kept: {rules}"
    );
    hub.stop().await;
    site.cleanup().await;
}

/// A database at migration 0009 upgrades in place: its counter buckets become the account
/// totals they were, an inbox that had customers is watched for silence at once, and the new
/// table is behind PostgreSQL's account wall.
async fn scopes_migrate_counts_and_seed_silence(backend: Backend) {
    use sqlx::Row;
    use switchboard::store::{Dialect, Store};
    let site = Site::new(backend);
    let store = Store::open(&site.config("").database).await.unwrap();
    let dir = match store.dialect() {
        Dialect::Sqlite => "sqlite",
        Dialect::Postgres => "postgres",
    };
    let path = format!("{}/migrations/{dir}", env!("CARGO_MANIFEST_DIR"));
    let mut before = sqlx::migrate::Migrator::new(std::path::Path::new(&path))
        .await
        .unwrap();
    before.migrations = std::borrow::Cow::Owned(
        before
            .migrations
            .iter()
            .filter(|m| m.version <= 9)
            .cloned()
            .collect(),
    );
    before.run(store.pool()).await.unwrap();
    let account = store.ensure_account("default").await.unwrap();
    for sql in [
        "INSERT INTO inboxes (id, account_id, slug, channel, name, created_at, updated_at) \
         VALUES ('inb_old', $1, 'old', 'sms', 'Old', 1, 1)",
        "INSERT INTO contacts (id, account_id, created_at, updated_at) VALUES ('ctc_old', $1, 1, 1)",
        "INSERT INTO conversations (id, account_id, inbox_id, contact_id, channel, status, \
         last_message_at, last_inbound_at, created_at, updated_at) \
         VALUES ('conv_old', $1, 'inb_old', 'ctc_old', 'sms', 'open', 5000, 5000, 1, 1)",
        "INSERT INTO signal_counts (account_id, name, bucket_ms, count) \
         VALUES ($1, 'webhooks.accepted', 10000, 7)",
    ] {
        sqlx::query(sql)
            .bind(&account)
            .execute(store.pool())
            .await
            .unwrap();
    }
    store.migrate().await.unwrap();

    assert_eq!(
        store
            .signal_sums(&account, "account", &["webhooks.accepted"], 0)
            .await
            .unwrap(),
        [7]
    );
    assert_eq!(
        store
            .signal_last_seen(&account, "inbound.messages", "inbox:")
            .await
            .unwrap(),
        [("inbox:inb_old".to_owned(), 5000)]
    );
    if backend == Backend::Distributed {
        for table in ["signal_counts", "signal_seen"] {
            let row = sqlx::query(
                "SELECT c.relrowsecurity::text, c.relforcerowsecurity::text, \
                 (SELECT COUNT(*) FROM pg_policies p WHERE p.schemaname = $1 \
                  AND p.tablename = $2 AND p.policyname = 'account_wall') \
                 FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace \
                 WHERE n.nspname = $1 AND c.relname = $2",
            )
            .bind(&site.schema)
            .bind(table)
            .fetch_one(store.pool())
            .await
            .unwrap();
            let (enabled, forced, policies): (String, String, i64) =
                (row.get(0), row.get(1), row.get(2));
            assert_eq!(
                (enabled.as_str(), forced.as_str(), policies),
                ("true", "true", 1),
                "{table}"
            );
        }
    }
    store.close().await;
    site.cleanup().await;
}

on_both_backends!(
    scopes_migrate_counts_and_seed_silence,
    one_failing_provider_pages_for_that_provider_only,
    sla_breaches_page_for_the_breaching_team_only,
    a_silent_inbox_pages_in_business_hours_only,
    scoped_rules_refuse_fields_that_do_not_fit,
    an_expired_whatsapp_token_pages_once,
    a_backlog_pages_slack_once_and_resolves_once,
    forged_webhooks_page_pagerduty_with_a_stable_key,
    alert_rules_over_rest_are_checked_audited_and_evaluated,
);
