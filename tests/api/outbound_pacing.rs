//! Outbound pacing under a burst (docs/OUTBOUND.md, "Pacing"), measured where it matters: in
//! the fake provider, by arrival time. A correctness check of the limiter, not a performance
//! figure: in every window of arrivals, the count stays within the configured burst plus rate
//! times the window, with a tolerance for the time between the limiter's decision and the
//! request's arrival. Every reply still ends `sent`, exactly once, including those whose wait
//! was longer than the 2 s a worker sleeps through and were handed back to the sweep.

use std::collections::HashMap;
use std::time::Instant;

use futures::future::join_all;

use crate::fake_providers::flow::{reply, sms_customer, status_becomes, whatsapp_customer};
use crate::fake_providers::{Request, fake_graph, fake_twilio};
use crate::helpers::{Backend, Site, TestHub};
use crate::on_both_backends;

on_both_backends!(
    whatsapp_pacing_holds_under_a_burst,
    twilio_pacing_holds_under_a_burst,
    waiting_for_the_number_does_not_spend_the_pair_allowance,
);

/// The limiter decides before the HTTP call, so two arrivals can be closer than the two
/// decisions by up to one call's latency: a window of arrivals may hold `rate × LATENCY` more
/// than the limit, plus one message for rounding. Far below what a missing limiter gives (a
/// whole burst within milliseconds) or one at twice the rate.
const LATENCY_SECS: f64 = 0.25;

/// Checks every window of `arrivals` (sorted) against `burst + rate × window` with the
/// tolerance above; returns the worst `count − (burst + rate × window)` seen, for the record.
fn within_limit(what: &str, arrivals: &[Instant], burst: f64, rate: f64) -> f64 {
    let tolerance = 1.0 + rate * LATENCY_SECS;
    let mut worst = f64::MIN;
    for i in 0..arrivals.len() {
        for j in i..arrivals.len() {
            let window = (arrivals[j] - arrivals[i]).as_secs_f64();
            let count = (j - i + 1) as f64;
            let excess = count - (burst + rate * window);
            worst = worst.max(excess);
            assert!(
                excess <= tolerance,
                "{what}: {count} arrivals within {window:.3} s, more than {burst} + {rate}/s"
            );
        }
    }
    let span = (arrivals[arrivals.len() - 1] - arrivals[0]).as_secs_f64();
    eprintln!(
        "{what}: {} arrivals over {span:.3} s; worst window {worst:+.2} over burst + rate × window",
        arrivals.len()
    );
    worst
}

fn arrivals(requests: &[&Request]) -> Vec<Instant> {
    let mut at: Vec<Instant> = requests.iter().map(|r| r.at).collect();
    at.sort();
    at
}

/// Sends `texts` replies to each conversation at once (named by `round`); waits until every reply is `sent`.
async fn burst(
    hub: &TestHub,
    token: &str,
    round: &str,
    conversations: &[String],
    texts: usize,
) -> usize {
    let sends = conversations.iter().flat_map(|c| {
        (0..texts).map(move |i| async move {
            let text = format!("{round} {c} {i}");
            (c, reply(hub, token, c, &text).await)
        })
    });
    let replies = join_all(sends).await;
    for (conversation, id) in &replies {
        status_becomes(hub, conversation, id, "sent").await;
    }
    replies.len()
}

/// `switchboard_outbound_paced_total` for `channel` (process-wide: at least this test's).
async fn paced(hub: &TestHub, channel: &str) -> f64 {
    let metrics = hub
        .client
        .get(hub.url("/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let series = format!("switchboard_outbound_paced_total{{channel=\"{channel}\"}} ");
    metrics
        .lines()
        .find_map(|l| l.strip_prefix(series.as_str()))
        .map_or(0.0, |v| v.trim().parse().unwrap())
}

async fn whatsapp_pacing_holds_under_a_burst(backend: Backend) {
    const PER_NUMBER: f64 = 4.0;
    const PAIR_BURST: f64 = 2.0;
    const PAIR_INTERVAL_MS: f64 = 2200.0;
    let (graph, addr) = fake_graph().await;
    let site = Site::new(backend);
    let hub = TestHub::start_with(
        &site,
        &format!(
            "[outbound]\nwhatsapp_base_url = \"http://{addr}\"\nretry_base_ms = 50\n\
             whatsapp_per_number_per_second = {PER_NUMBER}\nwhatsapp_pair_burst = {PAIR_BURST}\n\
             whatsapp_pair_interval_ms = {PAIR_INTERVAL_MS}\n"
        ),
    )
    .await;
    let agent = site.user("super_admin", None, &[]).await;
    let mut conversations = Vec::new();
    for k in 0..5 {
        conversations.push(whatsapp_customer(&hub, &format!("1555555020{k}")).await);
    }

    // Four to one customer: two go, and the pair limit's wait (2.2 s) is longer than a worker
    // sleeps through, so the others are handed back to the sweep and sent when due.
    let mut sent = burst(&hub, &agent.token, "one", &conversations[..1], 4).await;
    assert!(
        paced(&hub, "whatsapp").await > 0.0,
        "waits over 2 s were handed back"
    );
    // Two to each of four others: within their pair allowance, so the number's limit binds.
    sent += burst(&hub, &agent.token, "several", &conversations[1..], 2).await;

    let seen = graph.seen();
    let mut texts: Vec<String> = seen
        .iter()
        .map(|r| r.json()["text"]["body"].as_str().unwrap().to_owned())
        .collect();
    texts.sort();
    texts.dedup();
    assert_eq!(seen.len(), sent, "every reply sent exactly once");
    assert_eq!(texts.len(), sent, "every reply sent exactly once");

    let all: Vec<&Request> = seen.iter().collect();
    within_limit(
        "whatsapp per number",
        &arrivals(&all),
        PER_NUMBER,
        PER_NUMBER,
    );
    let mut by_customer: HashMap<String, Vec<&Request>> = HashMap::new();
    for r in &seen {
        let to = r.json()["to"].as_str().unwrap().to_owned();
        by_customer.entry(to).or_default().push(r);
    }
    assert_eq!(by_customer.len(), 5);
    for (to, requests) in &by_customer {
        within_limit(
            &format!("whatsapp pair to {to}"),
            &arrivals(requests),
            PAIR_BURST,
            1000.0 / PAIR_INTERVAL_MS,
        );
    }

    hub.stop().await;
    site.cleanup().await;
}

async fn twilio_pacing_holds_under_a_burst(backend: Backend) {
    const PER_NUMBER: f64 = 3.0;
    let (twilio, addr) = fake_twilio().await;
    let site = Site::new(backend);
    let hub = TestHub::start_with(
        &site,
        &format!(
            "[outbound]\ntwilio_base_url = \"http://{addr}\"\nretry_base_ms = 50\n\
             twilio_per_number_per_second = {PER_NUMBER}\n"
        ),
    )
    .await;
    let agent = site.user("super_admin", None, &[]).await;
    let mut conversations = Vec::new();
    for k in 0..3 {
        conversations.push(sms_customer(&hub, &format!("+1415555030{k}")).await);
    }

    // Nine to one customer, then two to each of three: one sender number throughout. (A wait
    // for the number is at most one interval, under a second: always slept through.)
    let mut sent = burst(&hub, &agent.token, "one", &conversations[..1], 9).await;
    sent += burst(&hub, &agent.token, "several", &conversations, 2).await;

    let seen = twilio.seen();
    let mut texts: Vec<String> = seen.iter().filter_map(|r| r.field("Body")).collect();
    texts.sort();
    texts.dedup();
    assert_eq!(seen.len(), sent, "every reply sent exactly once");
    assert_eq!(texts.len(), sent, "every reply sent exactly once");
    let all: Vec<&Request> = seen.iter().collect();
    within_limit("twilio per number", &arrivals(&all), PER_NUMBER, PER_NUMBER);

    hub.stop().await;
    site.cleanup().await;
}

/// A reply that takes its customer's pair slot and then waits for the phone number's pace
/// keeps that slot: it must not take another each time it looks again. With three messages a
/// minute allowed to one customer and two a second from the number, three replies to one
/// customer all go within a second or so; spending pair slots while waiting for the number
/// would push the third a minute out.
async fn waiting_for_the_number_does_not_spend_the_pair_allowance(backend: Backend) {
    let (graph, addr) = fake_graph().await;
    let site = Site::new(backend);
    let hub = TestHub::start_with(
        &site,
        &format!(
            "[outbound]\nwhatsapp_base_url = \"http://{addr}\"\nretry_base_ms = 50\n\
             whatsapp_per_number_per_second = 2\nwhatsapp_pair_burst = 3\n\
             whatsapp_pair_interval_ms = 60000\n"
        ),
    )
    .await;
    let agent = site.user("super_admin", None, &[]).await;
    let conversation = whatsapp_customer(&hub, "15555550300").await;
    let sent = burst(&hub, &agent.token, "three", &[conversation], 3).await;
    assert_eq!(graph.count(), sent);
    let seen = graph.seen();
    let all: Vec<&Request> = seen.iter().collect();
    within_limit("whatsapp per number", &arrivals(&all), 2.0, 2.0);
    hub.stop().await;
    site.cleanup().await;
}
