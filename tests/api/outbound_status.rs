//! Status reports in every order (docs/OUTBOUND.md, "Status lifecycle"): WhatsApp status
//! webhooks and Twilio status callbacks that come out of order, twice, late, or before the
//! send answer was stored, through the real hub, ending in the right state, with a console
//! that sees each message's `message.status` events only ever move forward. And the same across
//! two nodes: sent on one, reported to the other, seen on the first.

use std::collections::HashMap;

use serde_json::{Value, json};
use switchboard_connectors::DeliveryStatus;

use crate::console::Console;
use crate::fake_providers::flow::{
    message, note, reply, settled, sms_customer, status_becomes, whatsapp_customer,
};
use crate::fake_providers::{TWILIO_SID, fake_graph, fake_twilio, twilio_sid, wamid};
use crate::helpers::{Backend, PHONE_NUMBER_ID, Site, TestHub, eventually, wa_envelope};
use crate::on_both_backends;

on_both_backends!(
    whatsapp_statuses_in_any_order_only_move_forward,
    twilio_status_callbacks_in_any_order_only_move_forward,
);

const WA_CUSTOMER: &str = "15555550123";
const SMS_CUSTOMER: &str = "+14155550199";
const TWILIO_STATUS: &str = "/webhooks/twilio/support-sms/status";

/// A WhatsApp status webhook for `id` (PROVIDERS.md 1.5), stamped `ts`.
async fn wa_status(hub: &TestHub, id: &str, status: &str, ts: u64, errors: Option<Value>) {
    let mut report = json!({ "id": id, "status": status, "timestamp": ts.to_string(),
                             "recipient_id": WA_CUSTOMER });
    if let Some(errors) = errors {
        report["errors"] = errors;
    }
    let body = wa_envelope(PHONE_NUMBER_ID, json!([]), json!([]), json!([report]));
    assert_eq!(hub.post_whatsapp(&body).await.status(), 200);
}

/// A signed Twilio status callback for `sid` (PROVIDERS.md 2.2), plus `extra` fields.
async fn twilio_status(hub: &TestHub, sid: &str, status: &str, extra: &[(&str, &str)]) {
    let mut params = vec![
        ("AccountSid", TWILIO_SID),
        ("ApiVersion", "2010-04-01"),
        ("From", "+14155550100"),
        ("MessageSid", sid),
        ("MessageStatus", status),
        ("SmsSid", sid),
        ("SmsStatus", status),
        ("To", SMS_CUSTOMER),
    ];
    params.extend_from_slice(extra);
    assert_eq!(hub.post_twilio(TWILIO_STATUS, &params).await.status(), 200);
}

/// Every `message.status` event the console receives until the `note.created` of `note_id`
/// (published after everything the test did before it), by message.
async fn statuses_until(console: &mut Console, note_id: &str) -> HashMap<String, Vec<Value>> {
    let mut by_message: HashMap<String, Vec<Value>> = HashMap::new();
    loop {
        let frame = console.next().await;
        match frame["type"].as_str() {
            Some("note.created") if frame["data"]["id"] == note_id => return by_message,
            Some("message.status") => by_message
                .entry(frame["data"]["message_id"].as_str().unwrap().to_owned())
                .or_default()
                .push(frame["data"].clone()),
            _ => {}
        }
    }
}

/// The statuses of `events`, after checking that each outranks the one before (no step back,
/// no repeat).
fn forward_only(events: &[Value]) -> Vec<&str> {
    let names: Vec<&str> = events
        .iter()
        .map(|e| e["status"].as_str().unwrap())
        .collect();
    let ranks: Vec<i64> = names
        .iter()
        .map(|s| DeliveryStatus::parse(s).unwrap().rank())
        .collect();
    assert!(
        ranks.windows(2).all(|w| w[0] < w[1]),
        "statuses must only move forward: {names:?}"
    );
    names
}

fn now_secs() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

async fn whatsapp_statuses_in_any_order_only_move_forward(backend: Backend) {
    let (graph, addr) = fake_graph().await;
    let site = Site::new(backend);
    let hub = TestHub::start_with(
        &site,
        &format!(
            "[outbound]\nwhatsapp_base_url = \"http://{addr}\"\nretry_base_ms = 50\n\
             whatsapp_pair_burst = 100\n"
        ),
    )
    .await;
    let agent = site.user("super_admin", None, &[]).await;
    let mut console = Console::open(&hub, &agent.token, None).await;
    let conversation = whatsapp_customer(&hub, WA_CUSTOMER).await;
    let t = now_secs();

    // Read before delivered, then duplicates (a redelivered webhook, and the same report in
    // another webhook), then a late `sent`: read it stays.
    let first = reply(&hub, &agent.token, &conversation, "First").await;
    let sent = status_becomes(&hub, &conversation, &first, "sent").await;
    assert_eq!(sent["provider_message_id"], wamid(1));
    for (status, ts) in [
        ("read", t + 3),
        ("delivered", t + 2),
        ("read", t + 3),
        ("read", t + 4),
        ("sent", t + 1),
    ] {
        wa_status(&hub, &wamid(1), status, ts, None).await;
        settled(&hub).await;
    }
    assert_eq!(message(&hub, &conversation, &first).await["status"], "read");

    // Reports that arrive before the send answer is stored: the fake Graph API holds its answer
    // until both were taken in and processed.
    let release = graph.hold_next();
    let early = reply(&hub, &agent.token, &conversation, "Second").await;
    eventually("the held send", || async {
        (graph.count() == 2).then_some(())
    })
    .await;
    wa_status(&hub, &wamid(2), "read", t + 6, None).await;
    wa_status(&hub, &wamid(2), "delivered", t + 5, None).await;
    settled(&hub).await;
    let pending = message(&hub, &conversation, &early).await;
    assert_eq!(pending["status"], "pending", "{pending}");
    release.send(()).unwrap();
    let read = status_becomes(&hub, &conversation, &early, "read").await;
    assert_eq!(read["provider_message_id"], wamid(2));

    // `failed` with the provider's error: final, code visible; a later `delivered` (another
    // device) changes nothing.
    let refused = reply(&hub, &agent.token, &conversation, "Third").await;
    status_becomes(&hub, &conversation, &refused, "sent").await;
    let errors = json!([{ "code": 131047, "title": "Re-engagement message",
        "message": "Re-engagement message",
        "error_data": { "details": "Message failed to send because more than 24 hours have passed since the customer last replied to this number." },
        "href": "https://developers.facebook.com/docs/whatsapp/cloud-api/support/error-codes/" }]);
    wa_status(&hub, &wamid(3), "delivered", t + 7, None).await;
    settled(&hub).await;
    wa_status(&hub, &wamid(3), "failed", t + 8, Some(errors)).await;
    settled(&hub).await;
    wa_status(&hub, &wamid(3), "delivered", t + 9, None).await;
    settled(&hub).await;
    let failed = message(&hub, &conversation, &refused).await;
    assert_eq!(failed["status"], "failed", "{failed}");
    let error: Value = serde_json::from_str(failed["error"].as_str().unwrap()).unwrap();
    assert_eq!(error[0]["code"], "131047", "{failed}");
    assert_eq!(error[0]["title"], "Re-engagement message");

    // `failed` before the send answer is stored: failed once the answer comes, with the code.
    let release = graph.hold_next();
    let undeliverable = reply(&hub, &agent.token, &conversation, "Fourth").await;
    eventually("the held send", || async {
        (graph.count() == 4).then_some(())
    })
    .await;
    let errors = json!([{ "code": 131026, "title": "Message undeliverable",
                          "message": "Message undeliverable",
                          "error_data": { "details": "Message Undeliverable." } }]);
    wa_status(&hub, &wamid(4), "failed", t + 10, Some(errors)).await;
    settled(&hub).await;
    assert_eq!(
        message(&hub, &conversation, &undeliverable).await["status"],
        "pending"
    );
    release.send(()).unwrap();
    let failed = status_becomes(&hub, &conversation, &undeliverable, "failed").await;
    assert_eq!(failed["provider_message_id"], wamid(4));
    assert!(
        failed["error"].as_str().unwrap().contains("131026"),
        "{failed}"
    );
    assert_eq!(graph.count(), 4, "each reply sent once");

    // What the console saw, up to a note written after all of it.
    let barrier = note(&hub, &agent.token, &conversation, "barrier").await;
    let seen = statuses_until(&mut console, &barrier).await;
    assert_eq!(forward_only(&seen[&first]), ["sent", "read"]);
    assert_eq!(forward_only(&seen[&early]), ["sent", "delivered", "read"]);
    assert_eq!(
        forward_only(&seen[&refused]),
        ["sent", "delivered", "failed"]
    );
    assert_eq!(seen[&refused][2]["error"][0]["code"], "131047");
    assert_eq!(forward_only(&seen[&undeliverable]), ["sent", "failed"]);
    assert_eq!(seen[&undeliverable][1]["error"][0]["code"], "131026");
    for event in seen.values().flatten() {
        assert_eq!(event["conversation_id"], conversation.as_str());
    }

    hub.stop().await;
    site.cleanup().await;
}

async fn twilio_status_callbacks_in_any_order_only_move_forward(backend: Backend) {
    let (twilio, addr) = fake_twilio().await;
    let site = Site::new(backend);
    let hub = TestHub::start_with(
        &site,
        &format!(
            "[outbound]\ntwilio_base_url = \"http://{addr}\"\nretry_base_ms = 50\n\
             twilio_per_number_per_second = 100\n"
        ),
    )
    .await;
    let agent = site.user("super_admin", None, &[]).await;
    let mut console = Console::open(&hub, &agent.token, None).await;
    let conversation = sms_customer(&hub, SMS_CUSTOMER).await;

    // Delivered first, twice (a redelivered callback, and one with the carrier's done date),
    // states that move nothing, then a late `sent`: delivered it stays.
    let first = reply(&hub, &agent.token, &conversation, "First").await;
    let sent = status_becomes(&hub, &conversation, &first, "sent").await;
    assert_eq!(sent["provider_message_id"], twilio_sid(1));
    let sid = twilio_sid(1);
    for (status, extra) in [
        ("delivered", &[][..]),
        ("delivered", &[][..]),
        ("delivered", &[("RawDlrDoneDate", "2612031405")][..]),
        ("sending", &[][..]),
        ("sent", &[][..]),
    ] {
        twilio_status(&hub, &sid, status, extra).await;
        settled(&hub).await;
    }
    assert_eq!(
        message(&hub, &conversation, &first).await["status"],
        "delivered"
    );

    // Callbacks before the send answer is stored.
    let release = twilio.hold_next();
    let early = reply(&hub, &agent.token, &conversation, "Second").await;
    eventually("the held send", || async {
        (twilio.count() == 2).then_some(())
    })
    .await;
    twilio_status(&hub, &twilio_sid(2), "delivered", &[]).await;
    twilio_status(&hub, &twilio_sid(2), "sent", &[]).await;
    settled(&hub).await;
    let pending = message(&hub, &conversation, &early).await;
    assert_eq!(pending["status"], "pending", "{pending}");
    release.send(()).unwrap();
    let delivered = status_becomes(&hub, &conversation, &early, "delivered").await;
    assert_eq!(delivered["provider_message_id"], twilio_sid(2));

    // `undelivered` with the carrier's code: failed, code visible; a late `delivered` changes
    // nothing.
    let lost = reply(&hub, &agent.token, &conversation, "Third").await;
    status_becomes(&hub, &conversation, &lost, "sent").await;
    twilio_status(
        &hub,
        &twilio_sid(3),
        "undelivered",
        &[("ErrorCode", "30003")],
    )
    .await;
    settled(&hub).await;
    twilio_status(&hub, &twilio_sid(3), "delivered", &[]).await;
    settled(&hub).await;
    let failed = message(&hub, &conversation, &lost).await;
    assert_eq!(failed["status"], "failed", "{failed}");
    let error: Value = serde_json::from_str(failed["error"].as_str().unwrap()).unwrap();
    assert_eq!(error[0]["code"], "30003", "{failed}");
    assert_eq!(twilio.count(), 3, "each reply sent once");

    let barrier = note(&hub, &agent.token, &conversation, "barrier").await;
    let seen = statuses_until(&mut console, &barrier).await;
    assert_eq!(forward_only(&seen[&first]), ["sent", "delivered"]);
    assert_eq!(forward_only(&seen[&early]), ["sent", "delivered"]);
    assert_eq!(forward_only(&seen[&lost]), ["sent", "failed"]);
    assert_eq!(seen[&lost][1]["error"][0]["code"], "30003");

    hub.stop().await;
    site.cleanup().await;
}

/// Two nodes of one deployment (PostgreSQL + Redis): the reply is written on node A, its status
/// webhooks reach node B, and a console on node A sees it delivered and read.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_status_taken_in_on_one_node_reaches_a_console_on_the_other() {
    let (graph, addr) = fake_graph().await;
    let site = Site::new(Backend::Distributed);
    let config = format!(
        "[outbound]\nwhatsapp_base_url = \"http://{addr}\"\nretry_base_ms = 50\n\
         whatsapp_pair_burst = 100\n"
    );
    let a = TestHub::start_with(&site, &config).await;
    let b = TestHub::start_with(&site, &config).await;
    let agent = site.user("super_admin", None, &[]).await;
    let mut on_a = Console::open(&a, &agent.token, None).await;
    let conversation = whatsapp_customer(&a, WA_CUSTOMER).await;

    let id = reply(&a, &agent.token, &conversation, "Sent from node A").await;
    status_becomes(&a, &conversation, &id, "sent").await;
    assert_eq!(graph.count(), 1, "sent once, by whichever node's worker");
    let t = now_secs();
    let mut seen = Vec::new();
    for (status, ts) in [("delivered", t + 1), ("read", t + 2)] {
        wa_status(&b, &wamid(1), status, ts, None).await;
        loop {
            let frame = on_a.next_of("message.status").await;
            if frame["data"]["message_id"] == id.as_str() {
                let reached = frame["data"]["status"] == status;
                seen.push(frame["data"].clone());
                if reached {
                    break;
                }
            }
        }
    }
    assert_eq!(forward_only(&seen), ["sent", "delivered", "read"]);
    status_becomes(&b, &conversation, &id, "read").await;
    status_becomes(&a, &conversation, &id, "read").await;

    a.stop().await;
    b.stop().await;
    site.cleanup().await;
}
