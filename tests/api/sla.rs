//! SLA clocks through the real hub: policies over REST checked field by field, a clock that
//! warns and then breaches pushes `sla.warning` and `sla.breached` to a console once each, a
//! reply in time meets it, and breaches feed the `sla_breaches` alert signal.

use std::time::Duration;

use reqwest::Method;
use serde_json::{Value, json};

use crate::alerts::fake_destinations;
use crate::console::Console;
use crate::fake_providers::flow::whatsapp_customer;
use crate::helpers::{Backend, Site, TestHub, eventually};
use crate::on_both_backends;

async fn a_late_first_response_warns_then_breaches_once(backend: Backend) {
    let (slack, addr) = fake_destinations().await;
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
url = "http://{addr}/services/T/B/sla"
[[alerts.rules]]
name = "breaches"
signal = "sla_breaches"
threshold = 0
window_secs = 600
hold_down_secs = 600
destinations = ["ops"]
"#
        ),
    )
    .await;
    let admin = site.user("super_admin", None, &[]).await;
    let call = |method: Method, path: &str, body: Option<Value>| {
        let (hub, token, path) = (&hub, admin.token.clone(), path.to_owned());
        async move { hub.call(method, &path, &token, body).await }
    };
    let policy = json!({ "name": "WhatsApp", "inbox_id": "inb_support-wa",
                         "first_response_secs": 20, "warning_secs": 18, "resolution_secs": 3600 });
    let with = |field: &str, value: Value| {
        let mut p = policy.clone();
        p[field] = value;
        p
    };
    for (bad, field) in [
        (with("first_response_secs", json!(0)), "first_response_secs"),
        (with("warning_secs", json!(20)), "warning_secs"),
        (with("inbox_id", json!("inb_nope")), "inbox_id"),
        (with("team_id", json!("team_x")), "inbox_id"),
        (
            with(
                "business_hours",
                json!({ "time_zone": "Mars/Base", "week": { "mon": "09:00-17:00" } }),
            ),
            "business_hours.time_zone",
        ),
        (
            with(
                "business_hours",
                json!({ "time_zone": "UTC", "week": { "mon": "17:00-09:00" } }),
            ),
            "business_hours.week.mon",
        ),
    ] {
        let (status, out) = call(Method::POST, "/v1/admin/sla-policies", Some(bad.clone())).await;
        assert_eq!(status, 422, "{bad}: {out}");
        assert_eq!(out["error"]["details"][0]["field"], field, "{bad}: {out}");
    }
    let (status, created) =
        call(Method::POST, "/v1/admin/sla-policies", Some(policy.clone())).await;
    assert_eq!(status, 201, "{created}");
    let (status, _) = call(Method::POST, "/v1/admin/sla-policies", Some(policy.clone())).await;
    assert_eq!(status, 409);

    let mut console = Console::open(&hub, &admin.token, None).await;
    // Ada is answered in time; Bob is not.
    let ada = whatsapp_customer(&hub, "15555550701").await;
    let (status, body) = call(
        Method::POST,
        &format!("/v1/conversations/{ada}/messages"),
        Some(json!({ "text": "Hello Ada!" })),
    )
    .await;
    assert_eq!(status, 201, "{body}");
    let bob = whatsapp_customer(&hub, "15555550702").await;
    // Bob's clock warns, then breaches. (Provider timestamps are whole seconds, so Ada's clock
    // may warn before her reply lands; it must not breach.)
    let mut seen: Vec<(String, String)> = Vec::new();
    while seen.last().is_none_or(|(kind, _)| kind != "sla.breached") {
        let e = console
            .next_within(Duration::from_secs(60))
            .await
            .expect("an SLA event within a minute");
        let kind = e["type"].as_str().unwrap().to_owned();
        if kind.starts_with("sla.") {
            assert_eq!(e["data"]["metric"], "first_response", "{e}");
            assert_eq!(e["data"]["policy_id"], created["id"], "{e}");
            let conversation = e["data"]["conversation_id"].as_str().unwrap().to_owned();
            assert!(conversation == bob || kind == "sla.warning", "{e}");
            seen.push((kind, conversation));
        }
    }
    let bob_events: Vec<&str> = seen
        .iter()
        .filter(|(_, c)| *c == bob)
        .map(|(k, _)| k.as_str())
        .collect();
    assert_eq!(bob_events, ["sla.warning", "sla.breached"]);

    let clocks = |conversation: String| {
        let call = &call;
        async move {
            let (status, sla) = call(
                Method::GET,
                &format!("/v1/conversations/{conversation}/sla"),
                None,
            )
            .await;
            assert_eq!(status, 200, "{sla}");
            sla
        }
    };
    let bob_sla = clocks(bob.clone()).await;
    assert_eq!(bob_sla["policy_id"], created["id"]);
    assert_eq!(bob_sla["clocks"][0]["metric"], "first_response");
    assert_eq!(bob_sla["clocks"][0]["state"], "breached");
    assert_eq!(bob_sla["clocks"][1]["metric"], "resolution");
    assert_eq!(bob_sla["clocks"][1]["state"], "running");
    let ada_sla = clocks(ada.clone()).await;
    assert_eq!(ada_sla["clocks"][0]["state"], "met", "{ada_sla}");

    // Once each, whatever the number of checks since; and the breach paged the alert rule.
    console.silent_for(Duration::from_millis(600)).await;
    eventually("the breach alert", || async {
        (slack.hits("/services/").len() == 1).then_some(())
    })
    .await;
    assert!(
        slack.hits("/services/")[0].body["text"]
            .as_str()
            .unwrap()
            .starts_with("[FIRING] breaches"),
    );

    // Changed and removed over REST, each audited; a policy that is gone stops covering.
    let id = created["id"].as_str().unwrap();
    let (status, changed) = call(
        Method::PUT,
        &format!("/v1/admin/sla-policies/{id}"),
        Some(with("name", json!("WhatsApp, day shift"))),
    )
    .await;
    assert_eq!(status, 200, "{changed}");
    assert_eq!(changed["name"], "WhatsApp, day shift");
    let (status, _) = call(
        Method::PUT,
        "/v1/admin/sla-policies/sla_nope",
        Some(policy.clone()),
    )
    .await;
    assert_eq!(status, 404);
    let (status, _) = call(
        Method::DELETE,
        &format!("/v1/admin/sla-policies/{id}"),
        None,
    )
    .await;
    assert_eq!(status, 204);
    let (status, _) = call(
        Method::DELETE,
        &format!("/v1/admin/sla-policies/{id}"),
        None,
    )
    .await;
    assert_eq!(status, 404);
    assert_eq!(clocks(bob.clone()).await["policy_id"], Value::Null);
    for action in [
        "sla_policy.created",
        "sla_policy.updated",
        "sla_policy.deleted",
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

on_both_backends!(a_late_first_response_warns_then_breaches_once);
