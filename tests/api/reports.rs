//! Reports (`/v1/reports/volume`, `/v1/reports/sla`): grouped volumes over what the caller's
//! scope reaches, and the CSV export of both.

use reqwest::Method;
use serde_json::{Value, json};

use crate::fake_providers::flow::{sms_customer, whatsapp_customer};
use crate::helpers::{Backend, Site, TestHub};
use crate::on_both_backends;

async fn get_text(hub: &TestHub, token: &str, path: &str) -> (u16, String, String) {
    let r = hub
        .client
        .get(hub.url(path))
        .bearer_auth(token)
        .send()
        .await
        .unwrap();
    let status = r.status().as_u16();
    let kind = r
        .headers()
        .get("content-type")
        .map(|v| v.to_str().unwrap().to_owned())
        .unwrap_or_default();
    (status, kind, r.text().await.unwrap())
}

/// The report's rows by key.
fn by_key(report: &Value) -> Vec<(Value, i64, i64, i64)> {
    report["rows"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            (
                r["key"].clone(),
                r["conversations"].as_i64().unwrap(),
                r["inbound_messages"].as_i64().unwrap(),
                r["outbound_messages"].as_i64().unwrap(),
            )
        })
        .collect()
}

async fn volume_and_sla_reports_follow_scope_and_export_csv(backend: Backend) {
    let site = Site::new(backend);
    let hub = TestHub::start(&site).await;
    let admin = site.user("super_admin", None, &[]).await;
    let agent = site.user("agent", None, &[]).await;
    let mine = whatsapp_customer(&hub, "15555550601").await;
    whatsapp_customer(&hub, "15555550602").await;
    sms_customer(&hub, "+14155550603").await;
    let (status, body) = hub
        .call(
            Method::PUT,
            &format!("/v1/conversations/{mine}/assignment"),
            &admin.token,
            Some(json!({ "assignee_id": agent.id })),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    let (status, body) = hub
        .call(
            Method::POST,
            &format!("/v1/conversations/{mine}/messages"),
            &agent.token,
            Some(json!({ "text": "On it." })),
        )
        .await;
    assert_eq!(status, 201, "{body}");
    // A note is not volume.
    let (status, _) = hub
        .call(
            Method::POST,
            &format!("/v1/conversations/{mine}/messages"),
            &agent.token,
            Some(json!({ "text": "VIP", "private": true })),
        )
        .await;
    assert_eq!(status, 201);

    let report = |token: String, query: &'static str| {
        let hub = &hub;
        async move {
            let (status, body) = hub
                .call(
                    Method::GET,
                    &format!("/v1/reports/volume{query}"),
                    &token,
                    None,
                )
                .await;
            assert_eq!(status, 200, "{body}");
            body
        }
    };
    let by_channel = report(admin.token.clone(), "").await;
    assert_eq!(by_channel["group_by"], "channel");
    assert_eq!(
        by_key(&by_channel),
        vec![(json!("sms"), 1, 1, 0), (json!("whatsapp"), 2, 2, 1)]
    );
    let by_agent = report(admin.token.clone(), "?group_by=agent").await;
    assert_eq!(
        by_key(&by_agent),
        vec![(Value::Null, 2, 2, 0), (json!(agent.id), 1, 1, 1)]
    );
    // An agent's scope is their own conversations.
    let own = report(agent.token.clone(), "?group_by=inbox").await;
    assert_eq!(own["scope"], "self");
    assert_eq!(by_key(&own), vec![(json!("inb_support-wa"), 1, 1, 1)]);

    let (status, kind, csv) = get_text(&hub, &admin.token, "/v1/reports/volume?format=csv").await;
    assert_eq!(status, 200);
    assert!(kind.starts_with("text/csv"), "{kind}");
    assert_eq!(
        csv,
        "channel,conversations,resolved,inbound_messages,outbound_messages\nsms,1,0,1,0\nwhatsapp,2,0,2,1\n"
    );
    let (status, kind, csv) = get_text(&hub, &admin.token, "/v1/reports/sla?format=csv").await;
    assert_eq!(status, 200);
    assert!(kind.starts_with("text/csv"), "{kind}");
    let lines: Vec<&str> = csv.lines().collect();
    assert_eq!(
        lines[0],
        "assignee_id,conversations,open,resolved,responded,first_response_median_ms,first_response_p90_ms"
    );
    assert!(lines.last().unwrap().starts_with("total,3,3,0,1,"), "{csv}");

    for (query, field) in [
        ("?group_by=planet", "group_by"),
        ("?format=xml", "format"),
        (
            "?since=2026-01-02T00:00:00Z&until=2026-01-01T00:00:00Z",
            "since",
        ),
    ] {
        let (status, body) = hub
            .call(
                Method::GET,
                &format!("/v1/reports/volume{query}"),
                &admin.token,
                None,
            )
            .await;
        assert_eq!(status, 422, "{query}: {body}");
        assert_eq!(body["error"]["details"][0]["field"], field, "{body}");
    }
    hub.stop().await;
    site.cleanup().await;
}

on_both_backends!(volume_and_sla_reports_follow_scope_and_export_csv);
