//! Bad input gets a clear answer in the error envelope and leaves nothing behind.

use serde_json::Value;
use switchboard_connectors::whatsapp;

use crate::helpers::*;
use crate::on_both_backends;

on_both_backends!(forged_unsigned_oversized_and_unknown);

async fn forged_unsigned_oversized_and_unknown(backend: Backend) {
    let site = Site::new(backend);
    let hub = TestHub::start(&site).await;
    let body = wa_text("wamid.FORGED", "15555550123", "let me in");
    let whatsapp_post = |signature: Option<String>, body: Vec<u8>| {
        let request = hub
            .client
            .post(hub.url("/webhooks/whatsapp/demo"))
            .body(body);
        match signature {
            Some(s) => request.header(whatsapp::SIGNATURE_HEADER, s),
            None => request,
        }
    };
    let huge = vec![b'x'; 1024 * 1024 + 1];
    let cases: Vec<(&str, reqwest::RequestBuilder, u16, &str)> = vec![
        (
            "signed with another secret",
            whatsapp_post(
                Some(whatsapp::sign(b"not the app secret", body.as_bytes())),
                body.clone().into(),
            ),
            403,
            "forbidden",
        ),
        (
            "unsigned",
            whatsapp_post(None, body.clone().into()),
            401,
            "invalid_signature",
        ),
        (
            "malformed signature",
            whatsapp_post(Some("sha256=zz".into()), body.clone().into()),
            401,
            "invalid_signature",
        ),
        (
            // A signature over other bytes (a re-serialized body) does not verify.
            "signature of other bytes",
            whatsapp_post(
                Some(whatsapp::sign(APP_SECRET.as_bytes(), body.as_bytes())),
                body.replace("let me in", "let me IN").into(),
            ),
            403,
            "forbidden",
        ),
        (
            "over 1 MiB, correctly signed",
            whatsapp_post(
                Some(whatsapp::sign(APP_SECRET.as_bytes(), &huge)),
                huge.clone(),
            ),
            413,
            "payload_too_large",
        ),
        (
            "Twilio signature for another URL",
            hub.client
                .post(hub.url("/webhooks/twilio/support-sms"))
                .header("x-twilio-signature", "RSOYDt4T1cUTdK1PDd93/VVr8B8=")
                .form(&[("MessageSid", "SM1"), ("Body", "hi")]),
            403,
            "forbidden",
        ),
        (
            "unknown Meta app",
            hub.client
                .post(hub.url("/webhooks/whatsapp/nosuchapp"))
                .body("{}"),
            404,
            "not_found",
        ),
        (
            "unknown Twilio inbox",
            hub.client
                .post(hub.url("/webhooks/twilio/nosuchinbox"))
                .body("{}"),
            404,
            "not_found",
        ),
        (
            "unknown route",
            hub.client.get(hub.url("/v1/nothing-here")),
            404,
            "not_found",
        ),
        (
            "no API key",
            hub.client.get(hub.url("/v1/conversations")),
            401,
            "missing_credentials",
        ),
        (
            "unknown API key",
            hub.client
                .get(hub.url("/v1/conversations"))
                .bearer_auth("sbk_nope_nope"),
            401,
            "invalid_api_key",
        ),
        (
            "web chat without a visitor token",
            hub.client
                .post(hub.url("/v1/webchat/website/messages"))
                .body("{}"),
            401,
            "missing_visitor_token",
        ),
        (
            "web chat session with malformed JSON",
            hub.client
                .post(hub.url("/v1/webchat/website/sessions"))
                .body("{nope"),
            400,
            "malformed_json",
        ),
    ];
    for (name, request, status, code) in cases {
        let r = request.send().await.unwrap();
        assert_eq!(r.status().as_u16(), status, "{name}");
        let header = r.headers()["x-correlation-id"].to_str().unwrap().to_owned();
        let body: Value = r.json().await.unwrap();
        assert_eq!(body["error"]["code"], code, "{name}: {body}");
        assert_eq!(body["error"]["correlation_id"], header.as_str(), "{name}");
    }

    let (status, body) = hub.get("/v1/conversations?limit=500").await;
    assert_eq!(
        (status, body["error"]["details"][0]["field"].as_str()),
        (422, Some("limit"))
    );
    let (status, _) = hub.get("/v1/conversations?status=sideways").await;
    assert_eq!(status, 422);
    let (status, _) = hub.get("/v1/conversations/conv_doesnotexist").await;
    assert_eq!(status, 404);

    // Nothing was stored by any of it, and the refusals were counted.
    assert!(hub.events("received").await.is_empty());
    assert!(hub.events("processed").await.is_empty());
    assert!(hub.conversations().await.is_empty());
    let metrics = hub
        .client
        .get(hub.url("/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(metrics.contains("outcome=\"bad_signature\""), "{metrics}");
    hub.stop().await;
    site.cleanup().await;
}

/// A database too busy to take a write within its busy timeout is a reason to try again, not
/// an internal error: 503 with `Retry-After`, in the one envelope; and the write goes through
/// once the lock is free. (SQLite: another connection holds the write lock past the hub's
/// 10 s busy timeout.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_busy_database_answers_503_with_retry_after() {
    let site = Site::new(Backend::Embedded);
    let hub = TestHub::start(&site).await;
    let admin = site.user("super_admin", None, &[]).await;
    let store = site.store().await;
    let mut holder = store.pool().acquire().await.unwrap();
    sqlx::query("BEGIN IMMEDIATE")
        .execute(&mut *holder)
        .await
        .unwrap();
    let refused = hub
        .client
        .post(hub.url("/v1/admin/teams"))
        .bearer_auth(&admin.token)
        .json(&serde_json::json!({"name": "Ops"}))
        .send()
        .await
        .unwrap();
    assert_eq!(refused.status(), 503);
    assert_eq!(refused.headers()["retry-after"], "1");
    let body: Value = refused.json().await.unwrap();
    assert_eq!(body["error"]["code"], "unavailable", "{body}");
    sqlx::query("ROLLBACK").execute(&mut *holder).await.unwrap();
    drop(holder);
    let (status, team) = hub
        .call(
            reqwest::Method::POST,
            "/v1/admin/teams",
            &admin.token,
            Some(serde_json::json!({"name": "Ops"})),
        )
        .await;
    assert_eq!(status, 201, "{team}");
    hub.stop().await;
    site.cleanup().await;
}
