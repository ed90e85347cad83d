//! What the browser front-ends stand on, over plain HTTP: the embedded pages and their security
//! headers, first-run setup, the refresh cookie's CSRF guard, and the widget's cross-origin API
//! with its history for page reloads. The pages themselves are driven in `browser.rs`.

use std::time::Duration;

use reqwest::Method;
use reqwest::header::{
    ACCESS_CONTROL_ALLOW_ORIGIN, CACHE_CONTROL, CONTENT_SECURITY_POLICY, CONTENT_TYPE, ETAG,
    IF_NONE_MATCH,
};
use serde_json::{Value, json};

use crate::console::Console;
use crate::helpers::*;
use crate::on_both_backends;

on_both_backends!(first_run_setup_creates_one_administrator);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pages_are_embedded_with_strict_headers() {
    let site = Site::new(Backend::Embedded);
    let hub = TestHub::start(&site).await;
    for (path, marker) in [("/", "/ui/app/"), ("/admin", "/ui/admin/")] {
        let r = hub.client.get(hub.url(path)).send().await.unwrap();
        assert_eq!(r.status(), 200, "{path}");
        let h = r.headers().clone();
        assert!(h[CONTENT_TYPE].to_str().unwrap().starts_with("text/html"));
        let csp = h[CONTENT_SECURITY_POLICY].to_str().unwrap();
        for part in [
            "script-src 'self'",
            "style-src 'self'",
            "frame-ancestors 'none'",
            "object-src 'none'",
        ] {
            assert!(csp.contains(part), "{path}: {csp}");
        }
        assert!(!csp.contains("unsafe-inline"), "{csp}");
        assert_eq!(h["x-frame-options"], "DENY");
        assert_eq!(h["referrer-policy"], "no-referrer");
        assert_eq!(h["x-content-type-options"], "nosniff");
        let page = r.text().await.unwrap();
        assert!(page.contains(marker), "{path} loads its module: {page}");
        // No inline script or style may run under the policy: the pages have none.
        assert!(
            !page.contains("<script>") && !page.contains("<style"),
            "{page}"
        );
        assert!(
            !page.contains(" style=\"") && !page.contains(" onclick="),
            "{page}"
        );
    }

    // The widget loads on businesses' sites.
    let r = hub.client.get(hub.url("/widget.js")).send().await.unwrap();
    assert_eq!(r.status(), 200);
    assert!(
        r.headers()[CONTENT_TYPE]
            .to_str()
            .unwrap()
            .contains("javascript")
    );
    assert_eq!(r.headers()[ACCESS_CONTROL_ALLOW_ORIGIN], "*");
    assert_eq!(r.headers()["cross-origin-resource-policy"], "cross-origin");

    // Files revalidate by content hash.
    let r = hub
        .client
        .get(hub.url("/ui/shared/api.js"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()[CACHE_CONTROL], "no-cache");
    let etag = r.headers()[ETAG].clone();
    let again = hub
        .client
        .get(hub.url("/ui/shared/api.js"))
        .header(IF_NONE_MATCH, etag)
        .send()
        .await
        .unwrap();
    assert_eq!(again.status(), 304);

    // Nothing outside web/ and no unknown file: the usual envelope.
    for path in [
        "/ui/nothing-here.js",
        "/ui/shared/../../Cargo.toml",
        "/ui/shared/%2e%2e/%2e%2e/Cargo.toml",
        "/ui/%2fetc%2fpasswd",
        "/ui/shared//api.js",
    ] {
        let r = hub.client.get(hub.url(path)).send().await.unwrap();
        assert_eq!(r.status(), 404, "{path}");
        let body: Value = r.json().await.unwrap();
        assert_eq!(body["error"]["code"], "not_found", "{path}");
    }
    hub.stop().await;
    site.cleanup().await;
}

const SETUP_TOKEN: &str = "first-run-setup-token-0123";

async fn first_run_setup_creates_one_administrator(backend: Backend) {
    let site = Site::new(backend);
    let extra = format!("[auth]\nsetup_token = \"{SETUP_TOKEN}\"\n");
    let hub = TestHub::start_with(&site, &extra).await;
    let (_, status) = hub.get("/v1/setup").await;
    assert_eq!(status["needed"], true);
    let setup = |body: Value| {
        let hub = &hub;
        async move {
            let r = hub
                .client
                .post(hub.url("/v1/setup"))
                .json(&body)
                .send()
                .await
                .unwrap();
            let status = r.status().as_u16();
            (status, r.json::<Value>().await.unwrap())
        }
    };
    let admin = json!({"token": SETUP_TOKEN, "email": "Owner@Example.com", "name": "Owner",
                       "password": TEST_PASSWORD});

    let (status, body) = setup(
        json!({"token": "not-the-token", "email": "owner@example.com",
                                      "name": "Owner", "password": TEST_PASSWORD}),
    )
    .await;
    assert_eq!(
        (status, &body["error"]["code"]),
        (401, &json!("invalid_setup_token"))
    );
    let (status, body) = setup(json!({"token": SETUP_TOKEN, "email": "owner@example.com",
                                      "name": "Owner", "password": "short"}))
    .await;
    assert_eq!(status, 422);
    assert_eq!(body["error"]["details"][0]["field"], "password");
    let (status, body) = setup(json!({"token": SETUP_TOKEN, "email": "no-at-sign",
                                      "name": "Owner", "password": TEST_PASSWORD}))
    .await;
    assert_eq!(
        (status, &body["error"]["details"][0]["field"]),
        (422, &json!("email"))
    );

    let (status, body) = setup(admin.clone()).await;
    assert_eq!(status, 201, "{body}");
    assert_eq!(body["email"], "owner@example.com");
    // Once only, on this node and on any node started later.
    let (status, _) = setup(admin.clone()).await;
    assert_eq!(status, 409);
    let (_, status) = hub.get("/v1/setup").await;
    assert_eq!(status["needed"], false);
    let other = TestHub::start_with(&site, &extra).await;
    let (_, status) = other.get("/v1/setup").await;
    assert_eq!(status["needed"], false);
    other.stop().await;

    // The administrator signs in and holds every permission.
    let r = hub
        .client
        .post(hub.url("/v1/auth/login"))
        .json(
            &json!({"email": "owner@example.com", "password": TEST_PASSWORD, "refresh_in": "body"}),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let token = r.json::<Value>().await.unwrap()["access_token"]
        .as_str()
        .unwrap()
        .to_owned();
    let (status, me) = hub.call(Method::GET, "/v1/auth/me", &token, None).await;
    assert_eq!(status, 200);
    assert_eq!(me["role"], "super_admin");
    hub.stop().await;
    site.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_refresh_cookie_is_spent_only_by_the_hubs_own_pages() {
    let site = Site::new(Backend::Embedded);
    let hub = TestHub::start(&site).await;
    let user = site.user("agent", None, &[]).await;
    let cookie = |r: &reqwest::Response| {
        r.headers()
            .get_all("set-cookie")
            .iter()
            .map(|v| v.to_str().unwrap().split(';').next().unwrap().to_owned())
            .find(|c| c.starts_with("sb_refresh=") && c.len() > "sb_refresh=".len())
            .expect("a refresh cookie")
    };
    let r = hub
        .client
        .post(hub.url("/v1/auth/login"))
        .header("origin", PUBLIC_URL)
        .json(&json!({"email": user.email, "password": user.password}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let mut jar = cookie(&r);
    let refresh = |headers: Vec<(&'static str, &'static str)>, jar: String| {
        let hub = &hub;
        async move {
            let mut request = hub
                .client
                .post(hub.url("/v1/auth/refresh"))
                .header("cookie", jar);
            for (k, v) in headers {
                request = request.header(k, v);
            }
            request.send().await.unwrap()
        }
    };
    // Another site making the browser spend the cookie: refused, and the cookie still works.
    for headers in [
        vec![("sec-fetch-site", "cross-site")],
        vec![("sec-fetch-site", "same-site")],
        vec![("origin", "https://evil.example")],
    ] {
        let r = refresh(headers.clone(), jar.clone()).await;
        assert_eq!(r.status(), 403, "{headers:?}");
        let body: Value = r.json().await.unwrap();
        assert_eq!(body["error"]["code"], "forbidden");
    }
    for headers in [
        vec![("sec-fetch-site", "same-origin"), ("origin", PUBLIC_URL)],
        vec![("origin", PUBLIC_URL)],
    ] {
        let r = refresh(headers.clone(), jar.clone()).await;
        assert_eq!(r.status(), 200, "{headers:?}");
        jar = cookie(&r);
    }
    hub.stop().await;
    site.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_widget_api_is_cross_origin_and_restores_history() {
    let site = Site::new(Backend::Embedded);
    let hub = TestHub::start(&site).await;
    let admin = site.user("super_admin", None, &[]).await;

    // The browser's preflight from a business's site.
    for path in [
        "/v1/webchat/website/sessions",
        "/v1/webchat/website/messages",
    ] {
        let r = hub
            .client
            .request(Method::OPTIONS, hub.url(path))
            .header("origin", "https://shop.example")
            .header("access-control-request-method", "POST")
            .header(
                "access-control-request-headers",
                "authorization,content-type",
            )
            .send()
            .await
            .unwrap();
        assert!(r.status().is_success(), "{path}: {}", r.status());
        assert_eq!(r.headers()[ACCESS_CONTROL_ALLOW_ORIGIN], "*");
        let allowed = r.headers()["access-control-allow-headers"]
            .to_str()
            .unwrap()
            .to_owned();
        assert!(allowed.contains("authorization") && allowed.contains("content-type"));
    }

    let r = hub
        .client
        .post(hub.url("/v1/webchat/website/sessions"))
        .header("origin", "https://shop.example")
        .json(&json!({"name": "Lin"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    assert_eq!(r.headers()[ACCESS_CONTROL_ALLOW_ORIGIN], "*");
    let token = r.json::<Value>().await.unwrap()["visitor_token"]
        .as_str()
        .unwrap()
        .to_owned();
    let history = |limit: Option<&'static str>| {
        let (hub, token) = (&hub, token.clone());
        async move {
            let path = match limit {
                Some(l) => format!("/v1/webchat/website/messages?limit={l}"),
                None => "/v1/webchat/website/messages".to_owned(),
            };
            let r = hub
                .client
                .get(hub.url(&path))
                .bearer_auth(token)
                .send()
                .await
                .unwrap();
            let status = r.status().as_u16();
            (status, r.json::<Value>().await.unwrap())
        }
    };
    // Before the first message: empty, with a point to resume from.
    let (status, before) = history(None).await;
    assert_eq!(status, 200, "{before}");
    assert_eq!(before["data"], json!([]));
    assert!(before["last_event_id"].is_i64());

    let r = hub
        .client
        .post(hub.url("/v1/webchat/website/messages"))
        .bearer_auth(&token)
        .json(&json!({"client_message_id": "w1", "text": "Do you ship to Lisbon?"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 202);
    let conversation = eventually("the visitor's message", || async {
        let (_, page) = history(None).await;
        page["data"][0]["conversation_id"]
            .as_str()
            .map(str::to_owned)
    })
    .await;
    let path = format!("/v1/conversations/{conversation}/messages");
    let (status, _) = hub
        .call(
            Method::POST,
            &path,
            &admin.token,
            Some(json!({"text": "We do!"})),
        )
        .await;
    assert_eq!(status, 201);
    let (status, _) = hub
        .call(
            Method::POST,
            &path,
            &admin.token,
            Some(json!({"text": "VIP, be nice", "private": true})),
        )
        .await;
    assert_eq!(status, 201);

    // A reload: the history holds both public messages, oldest first, and never the note.
    let (_, page) = history(None).await;
    let texts: Vec<(&str, &str)> = page["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| {
            (
                m["direction"].as_str().unwrap(),
                m["content"]["text"].as_str().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        texts,
        [
            ("inbound", "Do you ship to Lisbon?"),
            ("outbound", "We do!")
        ]
    );
    assert!(page["data"][0].get("provider_message_id").is_none());
    // The widget matches its own sends by its own id.
    assert_eq!(page["data"][0]["client_message_id"], "w1");
    assert!(page["data"][1].get("client_message_id").is_none());
    let (_, last) = history(Some("1")).await;
    assert_eq!(last["data"].as_array().unwrap().len(), 1);
    assert_eq!(last["data"][0]["content"]["text"], "We do!");

    // Resuming from the history's id: exactly the later messages.
    let seam = page["last_event_id"].as_i64().unwrap();
    let (status, _) = hub
        .call(
            Method::POST,
            &path,
            &admin.token,
            Some(json!({"text": "Anything else?"})),
        )
        .await;
    assert_eq!(status, 201);
    let mut socket = Console::open_request(crate::console::request(
        &hub,
        &format!("/v1/webchat/website/ws?token={token}&last_event_id={seam}"),
        None,
    ))
    .await;
    let next = socket.next_of("message.created").await;
    assert_eq!(next["data"]["content"]["text"], "Anything else?");
    socket.silent_for(Duration::from_millis(300)).await;

    // Bad input: the envelope, and nothing else.
    for (limit, code) in [("0", 422), ("201", 422), ("x", 422)] {
        let (status, body) = history(Some(limit)).await;
        assert_eq!(status, code, "limit={limit}: {body}");
        assert_eq!(body["error"]["details"][0]["field"], "limit");
    }
    let r = hub
        .client
        .get(hub.url("/v1/webchat/website/messages"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    let r = hub
        .client
        .get(hub.url("/v1/webchat/website/messages"))
        .bearer_auth("vst_not-a-token")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["error"]["code"], "invalid_visitor_token");
    hub.stop().await;
    site.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_admin_console_learns_where_providers_call() {
    let site = Site::new(Backend::Embedded);
    let hub = TestHub::start(&site).await;
    let admin = site.user("super_admin", None, &[]).await;
    let (status, page) = hub
        .call(
            Method::GET,
            "/v1/admin/inboxes?limit=100",
            &admin.token,
            None,
        )
        .await;
    assert_eq!(status, 200, "{page}");
    let urls = |slug: &str| {
        page["data"]
            .as_array()
            .unwrap()
            .iter()
            .find(|i| i["slug"] == slug)
            .unwrap()["webhook_urls"]
            .clone()
    };
    assert_eq!(
        urls("support-wa"),
        json!({"callback": format!("{PUBLIC_URL}/webhooks/whatsapp/demo")})
    );
    assert_eq!(
        urls("support-sms"),
        json!({"incoming": format!("{PUBLIC_URL}/webhooks/twilio/support-sms"),
               "status": format!("{PUBLIC_URL}/webhooks/twilio/support-sms/status")})
    );
    assert_eq!(
        urls("website")["widget_script"],
        format!("<script src=\"{PUBLIC_URL}/widget.js\" data-inbox=\"website\" async></script>")
    );
    let (status, apps) = hub
        .call(Method::GET, "/v1/admin/whatsapp-apps", &admin.token, None)
        .await;
    assert_eq!(status, 200);
    assert_eq!(
        apps,
        json!({"data": [{"name": "demo", "callback_url": format!("{PUBLIC_URL}/webhooks/whatsapp/demo")}]})
    );
    assert!(!apps.to_string().contains("secret"));
    let agent = site.user("agent", None, &[]).await;
    let (status, _) = hub
        .call(Method::GET, "/v1/admin/whatsapp-apps", &agent.token, None)
        .await;
    assert_eq!(status, 403);
    hub.stop().await;
    site.cleanup().await;
}
