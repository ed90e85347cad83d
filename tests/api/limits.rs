//! Rate limits: per API key or user on the REST API, per client IP on webhooks; 429 with
//! `Retry-After` and `X-RateLimit-*`, in the error envelope. (Sign-in limits, counted in Redis
//! across nodes, are in `auth`.)

use reqwest::Method;

use crate::helpers::*;
use crate::on_both_backends;

on_both_backends!(rest_api_is_limited_per_caller, webhooks_are_limited_per_ip);

const API_LIMIT: &str = "[rate_limits]\napi_per_second = 3\n";
const WEBHOOK_LIMIT: &str = "[rate_limits]\nwebhooks_per_second = 2\n";

async fn rest_api_is_limited_per_caller(backend: Backend) {
    let site = Site::new(backend);
    let hub = TestHub::start_with(&site, API_LIMIT).await;
    let user = site.user("operations", None, &[]).await;
    let mut limited = None;
    for _ in 0..10 {
        let r = hub
            .client
            .get(hub.url("/v1/conversations"))
            .bearer_auth(&user.token)
            .send()
            .await
            .unwrap();
        if r.status() == 429 {
            limited = Some(r);
            break;
        }
        assert_eq!(r.status(), 200);
    }
    let r = limited.expect("ten requests at once exceed 3 per second");
    let header = |name: &str| r.headers()[name].to_str().unwrap().to_owned();
    assert!(header("retry-after").parse::<u64>().unwrap() >= 1);
    assert_eq!(header("x-ratelimit-limit"), "3");
    assert_eq!(header("x-ratelimit-remaining"), "0");
    let body: serde_json::Value = r.json().await.unwrap();
    assert_eq!(body["error"]["code"], "rate_limited");
    // Another caller has its own budget.
    let (status, _) = hub
        .call(Method::GET, "/v1/conversations", &hub.key, None)
        .await;
    assert_eq!(status, 200);
    // And the limited one gets its budget back after the wait it was told.
    tokio::time::sleep(std::time::Duration::from_millis(1100)).await;
    let (status, _) = hub
        .call(Method::GET, "/v1/conversations", &user.token, None)
        .await;
    assert_eq!(status, 200);
    hub.stop().await;
    site.cleanup().await;
}

async fn webhooks_are_limited_per_ip(backend: Backend) {
    let site = Site::new(backend);
    let hub = TestHub::start_with(&site, WEBHOOK_LIMIT).await;
    let mut statuses = Vec::new();
    let mut limited = None;
    for i in 0..8 {
        let r = hub
            .post_whatsapp(&wa_text(&format!("wamid.rl{i}"), "15555550100", "hi"))
            .await;
        statuses.push(r.status().as_u16());
        if r.status() == 429 && limited.is_none() {
            limited = Some(r);
        }
    }
    assert!(statuses.contains(&200), "{statuses:?}");
    let r = limited.unwrap_or_else(|| panic!("no 429 in {statuses:?}"));
    assert!(r.headers().contains_key("retry-after"));
    assert_eq!(r.headers()["x-ratelimit-limit"], "2");
    // A refused delivery is not lost: the provider retries it later, and it is accepted then.
    tokio::time::sleep(std::time::Duration::from_millis(1100)).await;
    let accepted = statuses.iter().filter(|s| **s == 200).count();
    let retry = hub
        .post_whatsapp(&wa_text("wamid.rl7", "15555550100", "hi"))
        .await;
    assert_eq!(retry.status(), 200);
    let expected = if statuses[7] == 200 {
        accepted
    } else {
        accepted + 1
    };
    hub.wait_for_messages(expected).await;
    hub.stop().await;
    site.cleanup().await;
}
