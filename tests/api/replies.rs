//! Composing replies (docs/OUTBOUND.md, "Composing a reply"): media by URL, registered
//! templates and canned responses, through the real hub against the fake Graph API of
//! `outbound.rs` and a fake media host; and everything a provider would refuse, refused up
//! front with a 422 naming the field and nothing sent.

use std::net::SocketAddr;

use axum::http::{HeaderMap, StatusCode, header};
use reqwest::Method;
use serde_json::{Value, json};

use crate::fake_providers::flow::{sms_customer, status_becomes, whatsapp_customer};
use crate::fake_providers::{TWILIO_SID, fake_graph, fake_twilio, twilio_basic_auth};
use crate::helpers::{Backend, Site, TestHub, TestUser, eventually};
use crate::on_both_backends;

const WA_INBOX: &str = "inb_support-wa";

/// A media host on port 0: `/photo.jpg` (HEAD and GET), `/missing.jpg` (404), `/page.html`
/// (an HTML page), `/huge.mp4` (a 20 MiB video by its headers), and `/report.pdf`, which
/// refuses HEAD (405) and answers a ranged GET with 206 like many object stores do.
async fn fake_media() -> SocketAddr {
    async fn file(
        axum::extract::Path(name): axum::extract::Path<String>,
        method: axum::http::Method,
        headers: HeaderMap,
    ) -> (StatusCode, HeaderMap, &'static str) {
        let mut out = HeaderMap::new();
        let (status, kind, length) = match name.as_str() {
            "photo.jpg" => (StatusCode::OK, "image/jpeg", "1000"),
            "page.html" => (StatusCode::OK, "text/html; charset=utf-8", "300"),
            "huge.mp4" => (StatusCode::OK, "video/mp4", "20971520"),
            "report.pdf" if method == axum::http::Method::HEAD => {
                return (StatusCode::METHOD_NOT_ALLOWED, out, "");
            }
            "report.pdf" => {
                assert_eq!(headers["range"], "bytes=0-0");
                out.insert(header::CONTENT_RANGE, "bytes 0-0/2048".parse().unwrap());
                (StatusCode::PARTIAL_CONTENT, "application/pdf", "1")
            }
            _ => return (StatusCode::NOT_FOUND, out, ""),
        };
        out.insert(header::CONTENT_TYPE, kind.parse().unwrap());
        out.insert(header::CONTENT_LENGTH, length.parse().unwrap());
        (status, out, "")
    }
    let app = axum::Router::new().route("/media/{name}", axum::routing::get(file).head(file));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    addr
}

fn now_secs() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

/// A hub with `extra` config on a fresh site, and a super admin.
async fn start(backend: Backend, extra: &str) -> (Site, TestHub, TestUser) {
    let site = Site::new(backend);
    let hub = TestHub::start_with(&site, extra).await;
    let admin = site.user("super_admin", None, &[]).await;
    (site, hub, admin)
}

/// Posts a reply; returns status and body.
async fn reply(hub: &TestHub, agent: &TestUser, conversation: &str, body: Value) -> (u16, Value) {
    hub.call(
        Method::POST,
        &format!("/v1/conversations/{conversation}/messages"),
        &agent.token,
        Some(body),
    )
    .await
}

/// Asserts a 422 that names `field`.
fn refused(result: (u16, Value), field: &str) -> String {
    let (status, body) = result;
    assert_eq!(status, 422, "{field}: {body}");
    assert_eq!(body["error"]["code"], "validation_failed", "{body}");
    assert_eq!(body["error"]["details"][0]["field"], field, "{body}");
    body["error"]["message"].as_str().unwrap().to_owned()
}

async fn media_and_template_replies_carry_exactly_what_whatsapp_expects(backend: Backend) {
    let (graph, graph_addr) = fake_graph().await;
    let media = fake_media().await;
    let (site, hub, admin) = start(backend, &format!("[outbound]\nwhatsapp_base_url = \"http://{graph_addr}\"\nretry_base_ms = 50\nallow_private_media_urls = true\n")).await;
    let conversation = whatsapp_customer(&hub, "15555550123").await;
    let first = hub.messages(&conversation).await[0].clone();
    let (inbound, inbound_wamid) = (first["id"].as_str().unwrap(), &first["provider_message_id"]);
    let url = |name: &str| format!("http://{media}/media/{name}");

    // An image with a caption, threaded under the customer's message.
    let (status, image) = reply(
        &hub,
        &admin,
        &conversation,
        json!({ "media": { "kind": "image", "url": url("photo.jpg"), "caption": "Your parcel" },
                "in_reply_to": inbound }),
    )
    .await;
    assert_eq!(status, 201, "{image}");
    assert_eq!(image["content_type"], "media");
    assert_eq!(
        image["content"]["attachments"][0]["mime_type"],
        "image/jpeg"
    );
    assert_eq!(&image["reply_to"], inbound_wamid);
    let image_id = image["id"].as_str().unwrap();
    status_becomes(&hub, &conversation, image_id, "sent").await;

    // A document from a host that refuses HEAD: the ranged GET proves it is there.
    let (status, doc) = reply(
        &hub,
        &admin,
        &conversation,
        json!({ "media": { "kind": "document", "url": url("report.pdf"), "filename": "report.pdf" } }),
    )
    .await;
    assert_eq!(status, 201, "{doc}");
    status_becomes(&hub, &conversation, doc["id"].as_str().unwrap(), "sent").await;

    // A template registered for the inbox, its parameter count read from the body.
    let (status, template) = hub
        .call(
            Method::POST,
            "/v1/admin/templates",
            &admin.token,
            Some(
                json!({ "inbox_id": WA_INBOX, "name": "order_update", "language": "en_US",
                         "body": "Order {{1}} ships {{2}}." }),
            ),
        )
        .await;
    assert_eq!(status, 201, "{template}");
    assert_eq!(template["parameters"], 2);
    let (status, sent) = reply(
        &hub,
        &admin,
        &conversation,
        json!({ "template": { "name": "order_update", "language": "en_US",
                              "parameters": ["A-1001", "Friday"] } }),
    )
    .await;
    assert_eq!(status, 201, "{sent}");
    assert_eq!(sent["content"]["type"], "template");
    status_becomes(&hub, &conversation, sent["id"].as_str().unwrap(), "sent").await;

    {
        let seen: Vec<Value> = graph.seen().iter().map(|r| r.json()).collect();
        assert_eq!(seen.len(), 3, "{seen:?}");
        assert_eq!(
            seen[0],
            json!({ "messaging_product": "whatsapp", "recipient_type": "individual",
                    "to": "15555550123", "type": "image",
                    "image": { "link": url("photo.jpg"), "caption": "Your parcel" },
                    "context": { "message_id": inbound_wamid },
                    "biz_opaque_callback_data": image_id })
        );
        assert_eq!(
            seen[1]["document"],
            json!({ "link": url("report.pdf"), "filename": "report.pdf" })
        );
        assert_eq!(seen[1]["type"], "document");
        assert_eq!(
            seen[2],
            json!({ "messaging_product": "whatsapp", "recipient_type": "individual",
                    "to": "15555550123", "type": "template",
                    "template": { "name": "order_update", "language": { "code": "en_US" },
                                  "components": [{ "type": "body", "parameters": [
                                      { "type": "text", "text": "A-1001" },
                                      { "type": "text", "text": "Friday" } ] }] },
                    "biz_opaque_callback_data": sent["id"] })
        );
    }

    // What the provider would refuse is refused here, each naming its field.
    let cases = [
        (
            json!({ "template": { "name": "order_updates", "language": "en_US", "parameters": ["A", "B"] } }),
            "template.name",
        ),
        (
            json!({ "template": { "name": "order_update", "language": "pt_BR", "parameters": ["A", "B"] } }),
            "template.name",
        ),
        (
            json!({ "template": { "name": "order_update", "language": "en_US", "parameters": ["A"] } }),
            "template.parameters",
        ),
        (
            json!({ "template": { "name": "order_update", "language": "en_US", "parameters": ["A", "two\nlines"] } }),
            "template.parameters[1]",
        ),
        (
            json!({ "media": { "kind": "image", "url": url("missing.jpg") } }),
            "media.url",
        ),
        (
            json!({ "media": { "kind": "image", "url": url("page.html") } }),
            "media.url",
        ),
        (
            json!({ "media": { "kind": "video", "url": url("huge.mp4") } }),
            "media.url",
        ),
        (
            json!({ "media": { "kind": "image", "url": "ftp://example.com/a.jpg" } }),
            "media.url",
        ),
        (
            json!({ "media": { "kind": "sticker", "url": url("photo.jpg") } }),
            "media.kind",
        ),
        (
            json!({ "media": { "kind": "audio", "url": url("photo.jpg"), "caption": "listen" } }),
            "media.caption",
        ),
        (
            json!({ "media": { "kind": "image", "url": url("photo.jpg"), "filename": "a.jpg" } }),
            "media.filename",
        ),
        (
            json!({ "text": "hi", "media": { "kind": "image", "url": url("photo.jpg") } }),
            "text",
        ),
        (json!({}), "text"),
        (
            json!({ "text": "hi", "variables": { "a": "b" } }),
            "variables",
        ),
        (
            json!({ "media": { "kind": "image", "url": url("photo.jpg") }, "private": true }),
            "private",
        ),
        (
            json!({ "text": "hi", "in_reply_to": "msg_nope" }),
            "in_reply_to",
        ),
    ];
    for (body, field) in cases {
        let message = refused(
            reply(&hub, &admin, &conversation, body.clone()).await,
            field,
        );
        assert!(!message.is_empty(), "{body}");
    }
    let message = refused(
        reply(
            &hub,
            &admin,
            &conversation,
            json!({ "media": { "kind": "image", "url": url("missing.jpg") } }),
        )
        .await,
        "media.url",
    );
    assert!(message.contains("404"), "{message}");
    let message = refused(
        reply(
            &hub,
            &admin,
            &conversation,
            json!({ "media": { "kind": "image", "url": url("page.html") } }),
        )
        .await,
        "media.url",
    );
    assert!(message.contains("text/html"), "{message}");

    // More than 24 hours after the customer wrote, free text is refused but the template goes.
    let late =
        customer_wrote_in_another(&hub, "15555550777", now_secs() - 30 * 3600, &conversation).await;
    let (status, body) = reply(&hub, &admin, &late, json!({ "text": "Still there?" })).await;
    assert_eq!(status, 422, "{body}");
    assert_eq!(body["error"]["code"], "whatsapp_window_closed");
    let (status, body) = reply(
        &hub,
        &admin,
        &late,
        json!({ "media": { "kind": "image", "url": url("photo.jpg") } }),
    )
    .await;
    assert_eq!(
        body["error"]["code"], "whatsapp_window_closed",
        "{status} {body}"
    );
    let (status, late_template) = reply(
        &hub,
        &admin,
        &late,
        json!({ "template": { "name": "order_update", "language": "en_US", "parameters": ["A-2002", "Monday"] } }),
    )
    .await;
    assert_eq!(status, 201, "{late_template}");
    status_becomes(&hub, &late, late_template["id"].as_str().unwrap(), "sent").await;
    // Nothing refused reached the provider.
    assert_eq!(graph.count(), 4);

    hub.stop().await;
    site.cleanup().await;
}

/// A second customer writes at `sent`; returns their conversation (not `first`).
async fn customer_wrote_in_another(hub: &TestHub, wa_id: &str, sent: u64, first: &str) -> String {
    let body = crate::helpers::wa_envelope(
        crate::helpers::PHONE_NUMBER_ID,
        json!([{ "profile": { "name": "Bea" }, "wa_id": wa_id }]),
        json!([{ "from": wa_id, "id": format!("wamid.in.{wa_id}.{sent}"), "timestamp": sent.to_string(),
                 "type": "text", "text": { "body": "hello?" } }]),
        json!([]),
    );
    assert_eq!(hub.post_whatsapp(&body).await.status(), 200);
    eventually("the second conversation", || async {
        hub.conversations()
            .await
            .into_iter()
            .filter_map(|c| c["id"].as_str().map(str::to_owned))
            .find(|id| id != first)
    })
    .await
}

async fn media_urls_a_provider_cannot_reach_are_refused(backend: Backend) {
    let media = fake_media().await;
    let (site, hub, admin) = start(backend, "").await;
    let conversation = whatsapp_customer(&hub, "15555550124").await;
    let message = refused(
        reply(
            &hub,
            &admin,
            &conversation,
            json!({ "media": { "kind": "image", "url": format!("http://{media}/media/photo.jpg") } }),
        )
        .await,
        "media.url",
    );
    assert!(message.contains("private address"), "{message}");
    hub.stop().await;
    site.cleanup().await;
}

async fn canned_responses_and_templates_are_managed_and_fill_replies(backend: Backend) {
    let (graph, graph_addr) = fake_graph().await;
    let (site, hub, admin) = start(
        backend,
        &format!("[outbound]\nwhatsapp_base_url = \"http://{graph_addr}\"\nretry_base_ms = 50\n"),
    )
    .await;
    let agent = site.user("agent", None, &[]).await;
    let conversation = whatsapp_customer(&hub, "15555550125").await;
    let call = |method: Method, path: &str, token: &str, body: Option<Value>| {
        let path = path.to_owned();
        let token = token.to_owned();
        let hub = &hub;
        async move { hub.call(method, &path, &token, body).await }
    };

    // Admin REST: create, conflicts, bad bodies, list, change.
    let body = "Hi {{contact.name}}, order {{ order_id }} ships today. {{agent.name}}";
    let (status, canned) = call(
        Method::POST,
        "/v1/admin/canned-responses",
        &admin.token,
        Some(json!({ "short_code": "shipping", "body": body })),
    )
    .await;
    assert_eq!(status, 201, "{canned}");
    let canned_id = canned["id"].as_str().unwrap().to_owned();
    assert!(canned_id.starts_with("cnd_"));
    let (status, dup) = call(
        Method::POST,
        "/v1/admin/canned-responses",
        &admin.token,
        Some(json!({ "short_code": "shipping", "body": "again" })),
    )
    .await;
    assert_eq!(status, 409, "{dup}");
    assert_eq!(dup["error"]["details"][0]["field"], "short_code");
    for (bad, field) in [
        (
            json!({ "short_code": "Ship It", "body": "x" }),
            "short_code",
        ),
        (json!({ "short_code": "x", "body": "  " }), "body"),
        (
            json!({ "short_code": "x", "body": "Hi {{contact.email}}" }),
            "body",
        ),
        (json!({ "short_code": "x", "body": "Hi {{name" }), "body"),
        (json!({ "short_code": "x" }), "body"),
    ] {
        let (status, out) = call(
            Method::POST,
            "/v1/admin/canned-responses",
            &admin.token,
            Some(bad),
        )
        .await;
        assert_eq!(status, 422, "{out}");
        assert_eq!(out["error"]["details"][0]["field"], field, "{out}");
    }
    let (status, _) = call(
        Method::POST,
        "/v1/admin/canned-responses",
        &admin.token,
        Some(json!({ "short_code": "greeting", "body": "Hello!" })),
    )
    .await;
    assert_eq!(status, 201);
    // Agents read them (a "/sh" picker) but cannot change them.
    let (status, page) = call(
        Method::GET,
        "/v1/canned-responses?short_code_prefix=sh",
        &agent.token,
        None,
    )
    .await;
    assert_eq!(status, 200, "{page}");
    assert_eq!(page["data"].as_array().unwrap().len(), 1);
    assert_eq!(page["data"][0]["short_code"], "shipping");
    let (status, _) = call(
        Method::POST,
        "/v1/admin/canned-responses",
        &agent.token,
        Some(json!({ "short_code": "mine", "body": "x" })),
    )
    .await;
    assert_eq!(status, 403);
    let (status, changed) = call(
        Method::PUT,
        &format!("/v1/admin/canned-responses/{canned_id}"),
        &admin.token,
        Some(json!({ "short_code": "shipping", "body": format!("{body} Thanks!") })),
    )
    .await;
    assert_eq!(status, 200, "{changed}");
    let (status, _) = call(
        Method::PUT,
        "/v1/admin/canned-responses/cnd_nope",
        &admin.token,
        Some(json!({ "short_code": "x", "body": "x" })),
    )
    .await;
    assert_eq!(status, 404);

    // Used in a reply: built-ins from the conversation, the rest from `variables`.
    let (status, sent) = reply(
        &hub,
        &admin,
        &conversation,
        json!({ "canned_response": "shipping", "variables": { "order_id": "A-1001" } }),
    )
    .await;
    assert_eq!(status, 201, "{sent}");
    let text = "Hi Ada, order A-1001 ships today. Test User Thanks!";
    assert_eq!(sent["content"], json!({ "type": "text", "text": text }));
    status_becomes(&hub, &conversation, sent["id"].as_str().unwrap(), "sent").await;
    assert_eq!(graph.seen()[0].json()["text"]["body"], text);
    // By id too, with a built-in overridden.
    let (status, by_id) = reply(
        &hub,
        &admin,
        &conversation,
        json!({ "canned_response": canned_id, "variables": { "order_id": "B-7", "contact.name": "Ms Lovelace" } }),
    )
    .await;
    assert_eq!(status, 201, "{by_id}");
    assert!(
        by_id["content"]["text"]
            .as_str()
            .unwrap()
            .starts_with("Hi Ms Lovelace, order B-7")
    );
    // As a private note: never sent.
    let (status, note) = reply(
        &hub,
        &admin,
        &conversation,
        json!({ "canned_response": "greeting", "private": true }),
    )
    .await;
    assert_eq!(status, 201, "{note}");
    assert_eq!(note["direction"], "note");

    for (bad, field) in [
        (
            json!({ "canned_response": "shipping" }),
            "variables.order_id",
        ),
        (
            json!({ "canned_response": "shipping", "variables": { "order_id": "1", "oder": "2" } }),
            "variables.oder",
        ),
        (json!({ "canned_response": "nope" }), "canned_response"),
    ] {
        refused(reply(&hub, &admin, &conversation, bad).await, field);
    }
    // An API key is nobody: `agent.name` must then be given.
    let key = site.api_key().await;
    let (status, out) = hub
        .call(
            Method::POST,
            &format!("/v1/conversations/{conversation}/messages"),
            &key,
            Some(json!({ "canned_response": "shipping", "variables": { "order_id": "1" } })),
        )
        .await;
    assert_eq!(status, 422, "{out}");
    assert_eq!(out["error"]["details"][0]["field"], "variables.agent.name");

    // Removed: no longer usable; every change was audited.
    let (status, _) = call(
        Method::DELETE,
        &format!("/v1/admin/canned-responses/{canned_id}"),
        &admin.token,
        None,
    )
    .await;
    assert_eq!(status, 204);
    refused(
        reply(
            &hub,
            &admin,
            &conversation,
            json!({ "canned_response": "shipping", "variables": { "order_id": "1" } }),
        )
        .await,
        "canned_response",
    );
    for action in [
        "canned_response.created",
        "canned_response.updated",
        "canned_response.deleted",
    ] {
        let (status, page) = call(
            Method::GET,
            &format!("/v1/audit?action={action}&entity_id={canned_id}"),
            &admin.token,
            None,
        )
        .await;
        assert_eq!(status, 200, "{page}");
        assert_eq!(
            page["data"].as_array().unwrap().len(),
            1,
            "{action}: {page}"
        );
    }

    // Templates: checked against their inbox's channel, unique per inbox, name and language.
    for (bad, field) in [
        (
            json!({ "inbox_id": "inb_website", "name": "hello", "language": "en", "parameters": 0 }),
            "inbox_id",
        ),
        (
            json!({ "name": "hello", "language": "en", "parameters": 0 }),
            "inbox_id",
        ),
        (
            json!({ "inbox_id": WA_INBOX, "name": "Hello World", "language": "en", "parameters": 0 }),
            "name",
        ),
        (
            json!({ "inbox_id": WA_INBOX, "name": "hello", "language": "english", "parameters": 0 }),
            "language",
        ),
        (
            json!({ "inbox_id": WA_INBOX, "name": "hello", "language": "en", "parameters": 3, "body": "Hi {{1}}" }),
            "parameters",
        ),
        (
            json!({ "inbox_id": WA_INBOX, "name": "hello", "language": "en", "body": "Hi {{2}}" }),
            "body",
        ),
        (
            json!({ "inbox_id": WA_INBOX, "name": "hello", "language": "en" }),
            "parameters",
        ),
        (
            json!({ "inbox_id": "inb_support-sms", "name": "hello", "language": "en", "parameters": 0 }),
            "name",
        ),
    ] {
        let (status, out) = call(
            Method::POST,
            "/v1/admin/templates",
            &admin.token,
            Some(bad.clone()),
        )
        .await;
        assert_eq!(status, 422, "{bad}: {out}");
        assert_eq!(out["error"]["details"][0]["field"], field, "{bad}: {out}");
    }
    let (status, sms_template) = call(
        Method::POST,
        "/v1/admin/templates",
        &admin.token,
        Some(
            json!({ "inbox_id": "inb_support-sms", "name": "HX0123456789abcdef0123456789abcdef",
                     "language": "en", "parameters": 1 }),
        ),
    )
    .await;
    assert_eq!(status, 201, "{sms_template}");
    let (status, wa_template) = call(
        Method::POST,
        "/v1/admin/templates",
        &admin.token,
        Some(json!({ "inbox_id": WA_INBOX, "name": "hello", "language": "en", "parameters": 0 })),
    )
    .await;
    assert_eq!(status, 201, "{wa_template}");
    let (status, _) = call(
        Method::POST,
        "/v1/admin/templates",
        &admin.token,
        Some(json!({ "inbox_id": WA_INBOX, "name": "hello", "language": "en", "parameters": 1 })),
    )
    .await;
    assert_eq!(status, 409);
    let (status, page) = call(
        Method::GET,
        &format!("/v1/templates?inbox_id={WA_INBOX}"),
        &agent.token,
        None,
    )
    .await;
    assert_eq!(status, 200, "{page}");
    assert_eq!(page["data"].as_array().unwrap().len(), 1);
    let wa_id = wa_template["id"].as_str().unwrap();
    let (status, changed) = call(
        Method::PUT,
        &format!("/v1/admin/templates/{wa_id}"),
        &admin.token,
        Some(json!({ "name": "hello", "language": "en", "body": "Hello {{1}}!" })),
    )
    .await;
    assert_eq!(status, 200, "{changed}");
    assert_eq!(changed["parameters"], 1);
    let (status, _) = call(
        Method::PUT,
        &format!("/v1/admin/templates/{wa_id}"),
        &admin.token,
        Some(json!({ "inbox_id": "inb_support-sms", "name": "hello", "language": "en", "parameters": 0 })),
    )
    .await;
    assert_eq!(status, 422);
    let (status, _) = call(
        Method::DELETE,
        &format!("/v1/admin/templates/{wa_id}"),
        &admin.token,
        None,
    )
    .await;
    assert_eq!(status, 204);
    refused(
        reply(
            &hub,
            &admin,
            &conversation,
            json!({ "template": { "name": "hello", "language": "en", "parameters": ["x"] } }),
        )
        .await,
        "template.name",
    );

    hub.stop().await;
    site.cleanup().await;
}

async fn media_and_template_replies_carry_exactly_what_twilio_expects(backend: Backend) {
    let (twilio, twilio_addr) = fake_twilio().await;
    let media = fake_media().await;
    let (site, hub, admin) = start(backend, &format!("[outbound]\ntwilio_base_url = \"http://{twilio_addr}\"\nretry_base_ms = 50\nallow_private_media_urls = true\n")).await;
    let customer = "+14155550199";
    let conversation = sms_customer(&hub, customer).await;
    let content_sid = "HX0123456789abcdef0123456789abcdef";
    let (status, template) = hub
        .call(
            Method::POST,
            "/v1/admin/templates",
            &admin.token,
            Some(
                json!({ "inbox_id": "inb_support-sms", "name": content_sid, "language": "en",
                         "body": "Order {{1}} ships {{2}}." }),
            ),
        )
        .await;
    assert_eq!(status, 201, "{template}");
    let url = format!("http://{media}/media/photo.jpg");

    let (status, image) = reply(
        &hub,
        &admin,
        &conversation,
        json!({ "media": { "kind": "image", "url": url, "caption": "Your parcel" } }),
    )
    .await;
    assert_eq!(status, 201, "{image}");
    status_becomes(&hub, &conversation, image["id"].as_str().unwrap(), "sent").await;
    let (status, sent) = reply(
        &hub,
        &admin,
        &conversation,
        json!({ "template": { "name": content_sid, "language": "en", "parameters": ["A-1001", "Friday"] } }),
    )
    .await;
    assert_eq!(status, 201, "{sent}");
    status_becomes(&hub, &conversation, sent["id"].as_str().unwrap(), "sent").await;

    let seen = twilio.seen();
    assert_eq!(seen.len(), 2, "{seen:?}");
    let callback = format!(
        "{}/webhooks/twilio/support-sms/status",
        crate::helpers::PUBLIC_URL
    );
    let owned = |pairs: &[(&str, &str)]| -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    };
    for r in &seen {
        assert_eq!(
            r.path,
            format!("/2010-04-01/Accounts/{TWILIO_SID}/Messages.json")
        );
        assert_eq!(
            r.authorization.as_deref(),
            Some(twilio_basic_auth().as_str())
        );
    }
    assert_eq!(
        seen[0].form(),
        owned(&[
            ("To", customer),
            ("From", "+14155550100"),
            ("Body", "Your parcel"),
            ("MediaUrl", &url),
            ("StatusCallback", &callback)
        ])
    );
    assert_eq!(
        seen[1].form(),
        owned(&[
            ("To", customer),
            ("From", "+14155550100"),
            ("ContentSid", content_sid),
            ("ContentVariables", r#"{"1":"A-1001","2":"Friday"}"#),
            ("StatusCallback", &callback)
        ])
    );

    // SMS limits: 1600 characters of text, and of a caption.
    let long = "x".repeat(1601);
    refused(
        reply(&hub, &admin, &conversation, json!({ "text": long })).await,
        "text",
    );
    refused(
        reply(
            &hub,
            &admin,
            &conversation,
            json!({ "media": { "kind": "image", "url": url, "caption": long } }),
        )
        .await,
        "media.caption",
    );
    assert_eq!(twilio.count(), 2);
    hub.stop().await;
    site.cleanup().await;
}

async fn a_customer_known_only_by_bsuid_is_addressed_by_recipient(backend: Backend) {
    let (graph, graph_addr) = fake_graph().await;
    let (site, hub, admin) = start(
        backend,
        &format!("[outbound]\nwhatsapp_base_url = \"http://{graph_addr}\"\nretry_base_ms = 50\n"),
    )
    .await;
    let bsuid = "US.13491208655302741918";
    let body = crate::helpers::wa_envelope(
        crate::helpers::PHONE_NUMBER_ID,
        json!([{ "profile": { "name": "Grace" }, "user_id": bsuid }]),
        json!([{ "from_user_id": bsuid, "id": "wamid.bsuid.1", "timestamp": now_secs().to_string(),
                 "type": "text", "text": { "body": "hello" } }]),
        json!([]),
    );
    assert_eq!(hub.post_whatsapp(&body).await.status(), 200);
    let conversation = eventually("the conversation", || async {
        hub.conversations()
            .await
            .first()
            .and_then(|c| c["id"].as_str().map(str::to_owned))
    })
    .await;
    let (status, sent) = reply(&hub, &admin, &conversation, json!({ "text": "Hi Grace" })).await;
    assert_eq!(status, 201, "{sent}");
    status_becomes(&hub, &conversation, sent["id"].as_str().unwrap(), "sent").await;
    let body = graph.seen()[0].json();
    assert_eq!(body["recipient"], bsuid, "{body}");
    assert!(body.get("to").is_none(), "{body}");
    hub.stop().await;
    site.cleanup().await;
}

on_both_backends!(
    a_customer_known_only_by_bsuid_is_addressed_by_recipient,
    media_and_template_replies_carry_exactly_what_twilio_expects,
    media_and_template_replies_carry_exactly_what_whatsapp_expects,
    canned_responses_and_templates_are_managed_and_fill_replies,
);

mod media_urls_a_provider_cannot_reach_are_refused {
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn embedded() {
        super::media_urls_a_provider_cannot_reach_are_refused(crate::helpers::Backend::Embedded)
            .await
    }
}

async fn a_web_chat_visitor_gets_a_media_reply_live(backend: Backend) {
    let media = fake_media().await;
    let (site, hub, admin) = start(backend, "[outbound]\nallow_private_media_urls = true\n").await;
    let session: Value = hub
        .client
        .post(hub.url("/v1/webchat/website/sessions"))
        .json(&json!({ "name": "Ada" }))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let token = session["visitor_token"].as_str().unwrap();
    let mut socket = crate::console::Console::open_request(crate::console::request(
        &hub,
        &format!("/v1/webchat/website/ws?token={token}"),
        None,
    ))
    .await;
    let said = hub
        .client
        .post(hub.url("/v1/webchat/website/messages"))
        .bearer_auth(token)
        .json(&json!({ "client_message_id": "m1", "text": "Can I see it?" }))
        .send()
        .await
        .unwrap();
    assert!(said.status().is_success());
    let own = socket.next_of("message.created").await;
    let conversation = own["data"]["conversation_id"].as_str().unwrap().to_owned();

    let url = format!("http://{media}/media/photo.jpg");
    let (status, sent) = reply(
        &hub,
        &admin,
        &conversation,
        json!({ "media": { "kind": "image", "url": url, "caption": "Here it is" } }),
    )
    .await;
    assert_eq!(status, 201, "{sent}");
    assert_eq!(sent["status"], "sent");
    let pushed = socket.next_of("message.created").await;
    assert_eq!(pushed["data"]["content"]["attachments"][0]["url"], url);
    assert_eq!(pushed["data"]["content"]["caption"], "Here it is");
    // Web chat has no templates.
    refused(
        reply(
            &hub,
            &admin,
            &conversation,
            json!({ "template": { "name": "hello", "language": "en" } }),
        )
        .await,
        "template",
    );
    hub.stop().await;
    site.cleanup().await;
}

on_both_backends!(a_web_chat_visitor_gets_a_media_reply_live);
