//! `/metrics` is valid Prometheus text and its series move as traffic is driven (the catalogue
//! is in docs/METRICS.md). The recorder is one per process and every test's hubs share it, so
//! this checks that counters rose by at least what this test drove.

use std::collections::HashMap;

use serde_json::json;

use crate::helpers::{Backend, Site, TestHub, eventually, wa_text_now};

/// Parses the exposition strictly: `# HELP`/`# TYPE` lines, and samples
/// `name{label="value",…} number`. Returns each sample's value by its full series text.
fn parse(text: &str) -> HashMap<String, f64> {
    let name_ok = |n: &str| {
        !n.is_empty()
            && n.chars()
                .next()
                .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
            && n.chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':')
    };
    let mut samples = HashMap::new();
    for line in text.lines().filter(|l| !l.trim().is_empty()) {
        if let Some(rest) = line.strip_prefix("# ") {
            let mut parts = rest.splitn(3, ' ');
            let (kind, name) = (parts.next().unwrap(), parts.next().unwrap_or_default());
            assert!(matches!(kind, "HELP" | "TYPE"), "{line}");
            assert!(name_ok(name), "{line}");
            if kind == "TYPE" {
                let t = parts.next().unwrap_or_default();
                assert!(
                    matches!(t, "counter" | "gauge" | "histogram" | "summary" | "untyped"),
                    "{line}"
                );
            }
            continue;
        }
        let (series, value) = line.rsplit_once(' ').unwrap_or_else(|| panic!("{line}"));
        let value: f64 = match value {
            "+Inf" => f64::INFINITY,
            "-Inf" => f64::NEG_INFINITY,
            v => v.parse().unwrap_or_else(|_| panic!("bad value: {line}")),
        };
        let name = series.split('{').next().unwrap();
        assert!(name_ok(name), "{line}");
        if let Some(labels) = series.strip_prefix(name)
            && !labels.is_empty()
        {
            let inner = labels
                .strip_prefix('{')
                .and_then(|l| l.strip_suffix('}'))
                .unwrap_or_else(|| panic!("{line}"));
            for pair in inner.split("\",").filter(|p| !p.is_empty()) {
                let (k, _) = pair.split_once("=\"").unwrap_or_else(|| panic!("{line}"));
                assert!(name_ok(k), "{line}");
            }
        }
        samples.insert(series.to_owned(), value);
    }
    samples
}

async fn scrape(hub: &TestHub) -> HashMap<String, f64> {
    let r = hub.client.get(hub.url("/metrics")).send().await.unwrap();
    assert_eq!(r.status(), 200);
    parse(&r.text().await.unwrap())
}

fn get(samples: &HashMap<String, f64>, series: &str) -> f64 {
    samples.get(series).copied().unwrap_or(0.0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_parse_and_move_with_traffic() {
    let site = Site::new(Backend::Embedded);
    let hub = TestHub::start(&site).await;
    let admin = site.user("super_admin", None, &[]).await;
    let mut console = crate::console::Console::open(&hub, &admin.token, None).await;
    let before = scrape(&hub).await;

    for i in 0..2 {
        let body = wa_text_now(&format!("wamid.metrics.{i}"), "15555550500", "hi");
        assert_eq!(hub.post_whatsapp(&body).await.status(), 200);
    }
    let forged = hub
        .client
        .post(hub.url("/webhooks/whatsapp/demo"))
        .header("x-hub-signature-256", format!("sha256={}", "0".repeat(64)))
        .body(json!({ "forged": true }).to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(forged.status(), 403);
    hub.wait_for_messages(2).await;
    console.next_of("message.created").await;
    console.next_of("message.created").await;

    let moved = |after: &HashMap<String, f64>, series: &str, by: f64| {
        get(after, series) - get(&before, series) >= by
    };
    eventually("the series to move", || async {
        let after = scrape(&hub).await;
        let all = [
            (
                "switchboard_webhooks_total{channel=\"whatsapp\",outcome=\"accepted\"}",
                2.0,
            ),
            (
                "switchboard_webhooks_total{channel=\"whatsapp\",outcome=\"bad_signature\"}",
                1.0,
            ),
            (
                "switchboard_intake_seconds_count{channel=\"whatsapp\"}",
                2.0,
            ),
            // A node running both roles hands its intake to its own normalizer (no job).
            (
                "switchboard_intake_handovers_total{outcome=\"handed_over\"}",
                2.0,
            ),
            ("switchboard_normalize_batch_size_count", 1.0),
            (
                "switchboard_messages_stored_total{channel=\"whatsapp\"}",
                2.0,
            ),
            ("switchboard_ws_frames_total", 2.0),
        ]
        .iter()
        .all(|(series, by)| moved(&after, series, *by));
        // The backlog gauges are set by the worker every five seconds.
        let gauges = after.contains_key("switchboard_queue_depth{job=\"normalize_inbound\"}")
            && after.contains_key("switchboard_queue_oldest_seconds{job=\"deliver_outbound\"}")
            && after.contains_key("switchboard_waiting_conversations{account=\"acc_default\"}");
        (all && gauges).then_some(after)
    })
    .await;
    hub.stop().await;
    site.cleanup().await;
}
