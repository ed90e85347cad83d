//! Bad input gets a clear answer in the error envelope and leaves nothing behind.

use serde_json::Value;
use switchboard_connectors::whatsapp;

use crate::helpers::*;
use crate::on_both_backends;

on_both_backends!(forged_unsigned_oversized_and_unknown);

async fn assert_envelope(r: reqwest::Response, status: u16, code: &str) {
    assert_eq!(r.status().as_u16(), status);
    let header = r.headers()["x-correlation-id"].to_str().unwrap().to_owned();
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["error"]["code"], code, "{body}");
    assert_eq!(body["error"]["correlation_id"], header.as_str());
}

async fn forged_unsigned_oversized_and_unknown(backend: Backend) {
    let site = Site::new(backend);
    let hub = TestHub::start(&site).await;
    let body = wa_text("wamid.FORGED", "15555550123", "let me in");
    let post = |signature: Option<String>, body: Vec<u8>, path: &'static str| {
        let mut request = hub.client.post(hub.url(path)).body(body);
        if let Some(s) = signature {
            request = request.header(whatsapp::SIGNATURE_HEADER, s);
        }
        request.send()
    };

    let forged = whatsapp::sign(b"not the app secret", body.as_bytes());
    assert_envelope(
        post(Some(forged), body.clone().into(), "/webhooks/whatsapp/demo")
            .await
            .unwrap(),
        403,
        "forbidden",
    )
    .await;
    assert_envelope(
        post(None, body.clone().into(), "/webhooks/whatsapp/demo")
            .await
            .unwrap(),
        401,
        "invalid_signature",
    )
    .await;
    assert_envelope(
        post(
            Some("sha256=zz".into()),
            body.clone().into(),
            "/webhooks/whatsapp/demo",
        )
        .await
        .unwrap(),
        401,
        "invalid_signature",
    )
    .await;
    // A signature over other bytes (a re-serialized body) does not verify.
    let tampered = body.replace("let me in", "let me IN");
    let signed_other = whatsapp::sign(APP_SECRET.as_bytes(), body.as_bytes());
    assert_envelope(
        post(
            Some(signed_other),
            tampered.into(),
            "/webhooks/whatsapp/demo",
        )
        .await
        .unwrap(),
        403,
        "forbidden",
    )
    .await;

    let huge = vec![b'x'; 1024 * 1024 + 1];
    let signed_huge = whatsapp::sign(APP_SECRET.as_bytes(), &huge);
    assert_envelope(
        post(Some(signed_huge), huge, "/webhooks/whatsapp/demo")
            .await
            .unwrap(),
        413,
        "payload_too_large",
    )
    .await;

    let twilio = hub
        .client
        .post(hub.url("/webhooks/twilio/support-sms"))
        .header("x-twilio-signature", "RSOYDt4T1cUTdK1PDd93/VVr8B8=")
        .form(&[("MessageSid", "SM1"), ("Body", "hi")])
        .send()
        .await
        .unwrap();
    assert_envelope(twilio, 403, "forbidden").await;

    assert_envelope(
        post(None, b"{}".to_vec(), "/webhooks/whatsapp/nosuchapp")
            .await
            .unwrap(),
        404,
        "not_found",
    )
    .await;
    assert_envelope(
        post(None, b"{}".to_vec(), "/webhooks/twilio/nosuchinbox")
            .await
            .unwrap(),
        404,
        "not_found",
    )
    .await;
    assert_envelope(
        hub.client
            .get(hub.url("/v1/nothing-here"))
            .send()
            .await
            .unwrap(),
        404,
        "not_found",
    )
    .await;

    // Read API: no key, a wrong key, bad parameters.
    assert_envelope(
        hub.client
            .get(hub.url("/v1/conversations"))
            .send()
            .await
            .unwrap(),
        401,
        "missing_credentials",
    )
    .await;
    assert_envelope(
        hub.client
            .get(hub.url("/v1/conversations"))
            .bearer_auth("sbk_nope_nope")
            .send()
            .await
            .unwrap(),
        401,
        "invalid_api_key",
    )
    .await;
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
