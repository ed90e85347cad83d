//! SMS replies through the real hub and workers against a fake Twilio Messages API that speaks
//! PROVIDERS.md 2.7: the exact request, retry on 20429, an invalid number dead-lettered at
//! once, a provider down for the whole retry budget and a replay after it recovers, a provider
//! that does not answer in time, and signed status callbacks to the URL the hub gave Twilio.

use reqwest::Method;
use serde_json::Value;

use crate::fake_providers::flow::{reply, settled, sms_customer, status_becomes};
use crate::fake_providers::{TWILIO_SID, fake_twilio, twilio_basic_auth, twilio_error, twilio_sid};
use crate::helpers::{Backend, PUBLIC_URL, Site, eventually};
use crate::on_both_backends;

on_both_backends!(an_sms_reply_goes_out_as_twilio_expects_and_fails_clearly,);

const CUSTOMER: &str = "+14155550199";

async fn dead_letters(hub: &crate::helpers::TestHub, token: &str) -> Vec<Value> {
    let (status, body) = hub
        .call(Method::GET, "/v1/admin/dead-letters", token, None)
        .await;
    assert_eq!(status, 200, "{body}");
    body["data"].as_array().unwrap().clone()
}

async fn an_sms_reply_goes_out_as_twilio_expects_and_fails_clearly(backend: Backend) {
    let (twilio, addr) = fake_twilio().await;
    let site = Site::new(backend);
    let hub = crate::helpers::TestHub::start_with(
        &site,
        &format!(
            "[outbound]\ntwilio_base_url = \"http://{addr}\"\nretry_base_ms = 50\nmax_attempts = 2\n\
             request_timeout_secs = 1\ntwilio_per_number_per_second = 100\n"
        ),
    )
    .await;
    let agent = site.user("super_admin", None, &[]).await;
    let conversation = sms_customer(&hub, CUSTOMER).await;

    // The request carries exactly Twilio's fields, form-encoded, with Basic auth.
    let first = reply(&hub, &agent.token, &conversation, "Your order ships today.").await;
    let sent = status_becomes(&hub, &conversation, &first, "sent").await;
    assert_eq!(sent["provider_message_id"], twilio_sid(1));
    let seen = twilio.seen();
    assert_eq!(seen.len(), 1, "sent exactly once: {seen:?}");
    assert_eq!(
        seen[0].path,
        format!("/2010-04-01/Accounts/{TWILIO_SID}/Messages.json")
    );
    assert_eq!(
        seen[0].content_type.as_deref(),
        Some("application/x-www-form-urlencoded")
    );
    assert_eq!(
        seen[0].authorization.as_deref(),
        Some(twilio_basic_auth().as_str())
    );
    let callback = format!("{PUBLIC_URL}/webhooks/twilio/support-sms/status");
    let mut form = seen[0].form();
    form.sort();
    let mut expected = vec![
        ("Body".to_owned(), "Your order ships today.".to_owned()),
        ("From".to_owned(), "+14155550100".to_owned()),
        ("StatusCallback".to_owned(), callback.clone()),
        ("To".to_owned(), CUSTOMER.to_owned()),
    ];
    expected.sort();
    assert_eq!(form, expected);

    // Twilio's status callbacks, signed for the URL the hub gave it, move it to delivered.
    let path = callback.strip_prefix(PUBLIC_URL).unwrap().to_owned();
    let sid = twilio_sid(1);
    for status in ["sent", "delivered"] {
        let params = [
            ("AccountSid", TWILIO_SID),
            ("ApiVersion", "2010-04-01"),
            ("From", "+14155550100"),
            ("MessageSid", sid.as_str()),
            ("MessageStatus", status),
            ("SmsSid", sid.as_str()),
            ("SmsStatus", status),
            ("To", CUSTOMER),
        ];
        assert_eq!(hub.post_twilio(&path, &params).await.status(), 200);
    }
    settled(&hub).await;
    status_becomes(&hub, &conversation, &first, "delivered").await;

    // 20429 (too many concurrent requests, not processed): retried, then sent once.
    twilio.then(429, twilio_error(429, 20429, "Too Many Requests"));
    let throttled = reply(&hub, &agent.token, &conversation, "Second").await;
    let sent = status_becomes(&hub, &conversation, &throttled, "sent").await;
    assert_eq!(sent["provider_message_id"], twilio_sid(3));
    assert_eq!(twilio.count(), 3, "one throttled attempt and one that went");
    let bodies: Vec<String> = twilio
        .seen()
        .iter()
        .filter_map(|r| r.field("Body"))
        .collect();
    assert_eq!(bodies, ["Your order ships today.", "Second", "Second"]);

    // 21211 (invalid 'To'): failed at once with the code and a reason for people, listed as
    // a dead letter.
    twilio.then(
        400,
        twilio_error(400, 21211, "Invalid 'To' Phone Number: +1415555019"),
    );
    let invalid = reply(&hub, &agent.token, &conversation, "Third").await;
    let failed = status_becomes(&hub, &conversation, &invalid, "failed").await;
    let error: Value = serde_json::from_str(failed["error"].as_str().unwrap()).unwrap();
    assert_eq!(error[0]["code"], "21211", "{failed}");
    let title = error[0]["title"].as_str().unwrap();
    assert!(
        title.contains("not a valid phone number") && title.contains("Invalid 'To' Phone Number"),
        "{title}"
    );
    assert_eq!(twilio.count(), 4, "a permanent error is not retried");
    let dead = dead_letters(&hub, &agent.token).await;
    assert_eq!(dead.len(), 1, "{dead:?}");
    assert_eq!(dead[0]["id"], invalid.as_str());
    assert_eq!(dead[0]["code"], "21211");
    assert_eq!(dead[0]["attempts"], 1);
    assert!(
        dead[0]["reason"]
            .as_str()
            .unwrap()
            .contains("not a valid phone number")
    );

    // Down for the whole retry budget: exactly max_attempts calls, then failed and listed.
    twilio.set_down(true);
    let down = reply(&hub, &agent.token, &conversation, "Fourth").await;
    let failed = status_becomes(&hub, &conversation, &down, "failed").await;
    assert!(
        failed["error"].as_str().unwrap().contains("20503"),
        "{failed}"
    );
    let dead = eventually("the dead letter", || async {
        let dead = dead_letters(&hub, &agent.token).await;
        (dead.len() == 2).then_some(dead)
    })
    .await;
    let listed = dead.iter().find(|d| d["id"] == down.as_str()).unwrap();
    assert_eq!(listed["attempts"], 2, "{listed}");
    assert_eq!(listed["code"], "20503");
    assert_eq!(twilio.count(), 6, "max_attempts = 2");

    // Recovered and replayed: delivered once.
    twilio.set_down(false);
    let replay = format!("/v1/admin/dead-letters/{down}/replay");
    let (status, replayed) = hub.call(Method::POST, &replay, &agent.token, None).await;
    assert_eq!(status, 202, "{replayed}");
    let sent = status_becomes(&hub, &conversation, &down, "sent").await;
    assert_eq!(sent["provider_message_id"], twilio_sid(7));
    assert_eq!(twilio.count(), 7);
    assert_eq!(twilio.seen()[6].field("Body").as_deref(), Some("Fourth"));
    let (status, _) = hub.call(Method::POST, &replay, &agent.token, None).await;
    assert_eq!(status, 404, "a dead letter is replayed once");
    let dead = dead_letters(&hub, &agent.token).await;
    assert_eq!(dead.len(), 1, "only the invalid number is left: {dead:?}");

    // No answer within request_timeout_secs: a retry, never a silent loss. (Twilio takes no
    // idempotency key, so had it accepted the first, the customer would get two copies:
    // docs/OUTBOUND.md, "Duplicates".)
    let hold = twilio.hold_next();
    let slow = reply(&hub, &agent.token, &conversation, "Fifth").await;
    let sent = status_becomes(&hub, &conversation, &slow, "sent").await;
    assert_eq!(sent["provider_message_id"], twilio_sid(9));
    assert_eq!(twilio.count(), 9, "the unanswered attempt and its retry");
    drop(hold);

    hub.stop().await;
    site.cleanup().await;
}
