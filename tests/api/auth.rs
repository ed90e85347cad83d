//! Sign-in flows over HTTP: login (body and cookie delivery), uniform refusals, lockout,
//! refresh rotation with reuse detection, logout, bad access tokens, TOTP with backup codes,
//! password change, the per-IP login limit across nodes, and the `admin create` CLI.

use reqwest::Method;
use reqwest::header::HeaderMap;
use serde_json::{Value, json};
use switchboard::store::audit::AuditFilter;

use crate::helpers::*;
use crate::on_both_backends;

on_both_backends!(
    login_delivers_refresh_in_body_or_cookie,
    unknown_email_and_wrong_password_look_the_same,
    five_failures_lock_the_user,
    refresh_rotates_and_reuse_revokes_the_session,
    logout_and_logout_all_end_access_tokens,
    totp_enrol_verify_login_and_backup_codes,
    password_change_enforces_policy_and_ends_other_sessions,
    login_limit_holds_per_ip_across_nodes,
    cli_creates_an_admin_who_can_sign_in,
);

struct Reply {
    status: u16,
    headers: HeaderMap,
    body: Value,
}

impl Reply {
    fn code(&self) -> &str {
        self.body["error"]["code"].as_str().unwrap_or_default()
    }

    fn set_cookie(&self) -> Option<String> {
        self.headers
            .get("set-cookie")
            .map(|v| v.to_str().unwrap().to_owned())
    }

    fn access(&self) -> String {
        self.body["access_token"].as_str().unwrap().to_owned()
    }
}

async fn reply(r: reqwest::Response) -> Reply {
    Reply {
        status: r.status().as_u16(),
        headers: r.headers().clone(),
        body: r.json().await.unwrap_or(Value::Null),
    }
}

/// POSTs `body` to a `/v1/auth/…` route with optional extra headers.
async fn post(hub: &TestHub, path: &str, body: Value, headers: &[(&str, &str)]) -> Reply {
    let mut request = hub.client.post(hub.url(path)).json(&body);
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    reply(request.send().await.unwrap()).await
}

async fn login(hub: &TestHub, email: &str, password: &str) -> Reply {
    post(
        hub,
        "/v1/auth/login",
        json!({ "email": email, "password": password }),
        &[],
    )
    .await
}

async fn me(hub: &TestHub, token: &str) -> (u16, Value) {
    hub.call(Method::GET, "/v1/auth/me", token, None).await
}

async fn audit_actions(site: &Site, action: &str) -> Vec<switchboard::store::audit::AuditRecord> {
    let store = site.store().await;
    let records = store
        .list_audit(
            "acc_default",
            &AuditFilter {
                action: Some(action.to_owned()),
                ..AuditFilter::default()
            },
            None,
            100,
        )
        .await
        .unwrap();
    store.close().await;
    records
}

/// The `sb_refresh` value of a Set-Cookie header.
fn cookie_value(set_cookie: &str) -> String {
    set_cookie
        .split(';')
        .next()
        .unwrap()
        .strip_prefix("sb_refresh=")
        .unwrap()
        .to_owned()
}

async fn login_delivers_refresh_in_body_or_cookie(backend: Backend) {
    let site = Site::new(backend);
    let hub = TestHub::start(&site).await;
    let user = site.user("agent", None, &[]).await;

    // A non-browser client: the refresh token comes in the body, no cookie.
    let r = login(&hub, &user.email.to_uppercase(), &user.password).await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.body["token_type"], "Bearer");
    assert_eq!(r.body["expires_in"], 900);
    assert_eq!(r.body["user"]["id"], user.id.as_str());
    assert_eq!(r.body["user"]["role"], "agent");
    assert_eq!(r.body["user"]["account_id"], "acc_default");
    assert!(r.body["refresh_token"].as_str().unwrap().len() >= 43);
    assert!(r.set_cookie().is_none());
    assert_eq!(r.headers["cache-control"], "no-store");
    let (status, profile) = me(&hub, &r.access()).await;
    assert_eq!(status, 200, "{profile}");
    assert_eq!(profile["email"], user.email.as_str());
    assert_eq!(profile["grants"]["view_conversations"], "assigned");
    assert_eq!(profile["team_ids"], json!([]));
    assert!(profile["last_login_at"].as_i64().unwrap() > 0);

    // Asked for a cookie: the token is only in the cookie, with the attributes that keep it
    // away from scripts and other sites.
    let r = post(
        &hub,
        "/v1/auth/login",
        json!({ "email": user.email, "password": user.password, "refresh_in": "cookie" }),
        &[],
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert!(r.body.get("refresh_token").is_none(), "{}", r.body);
    let cookie = r.set_cookie().unwrap();
    let attributes: Vec<&str> = cookie.split("; ").collect();
    assert!(attributes[0].starts_with("sb_refresh=") && attributes[0].len() > 50);
    for expected in [
        "HttpOnly",
        "SameSite=Strict",
        "Secure",
        "Path=/v1/auth",
        "Max-Age=2592000",
    ] {
        assert!(attributes.contains(&expected), "{expected} in {cookie}");
    }

    // A browser (Origin present) gets the cookie by default; the cookie refreshes, and the new
    // token comes back as a cookie again.
    let r = post(
        &hub,
        "/v1/auth/login",
        json!({ "email": user.email, "password": user.password }),
        &[("origin", "https://app.example.com")],
    )
    .await;
    assert_eq!(r.status, 200);
    let first = cookie_value(&r.set_cookie().unwrap());
    let r = reply(
        hub.client
            .post(hub.url("/v1/auth/refresh"))
            .header("cookie", format!("theme=dark; sb_refresh={first}"))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert!(r.body.get("refresh_token").is_none());
    let second = cookie_value(&r.set_cookie().unwrap());
    assert_ne!(first, second);
    assert_eq!(me(&hub, &r.access()).await.0, 200);

    // An unknown refresh_in is refused naming the field.
    let r = post(
        &hub,
        "/v1/auth/login",
        json!({ "email": user.email, "password": user.password, "refresh_in": "pigeon" }),
        &[],
    )
    .await;
    assert_eq!((r.status, r.code()), (422, "validation_failed"));
    assert_eq!(r.body["error"]["details"][0]["field"], "refresh_in");

    let logins = audit_actions(&site, "auth.login").await;
    assert_eq!(logins.len(), 3);
    assert!(
        logins
            .iter()
            .all(|a| a.actor_id.as_deref() == Some(user.id.as_str()))
    );
    assert!(logins.iter().all(|a| a.ip.as_deref() == Some("127.0.0.1")));
    hub.stop().await;
    site.cleanup().await;
}

async fn unknown_email_and_wrong_password_look_the_same(backend: Backend) {
    let site = Site::new(backend);
    let hub = TestHub::start(&site).await;
    let user = site.user("agent", None, &[]).await;

    let wrong = login(&hub, &user.email, "Not-The-Password-1").await;
    let unknown = login(&hub, "nobody@example.com", &user.password).await;
    assert_eq!((wrong.status, wrong.code()), (401, "invalid_credentials"));
    assert_eq!(
        (unknown.status, unknown.code()),
        (wrong.status, wrong.code())
    );
    assert_eq!(
        wrong.body["error"]["message"],
        unknown.body["error"]["message"]
    );
    assert_eq!(
        wrong.body["error"]["message"],
        "wrong email or password, or the account is locked"
    );
    assert!(wrong.body.get("access_token").is_none());

    // The known user's failure is audited against it, without the password.
    let failed = audit_actions(&site, "auth.login_failed").await;
    assert_eq!(failed.len(), 1);
    assert_eq!(failed[0].actor_id.as_deref(), Some(user.id.as_str()));
    let after = failed[0].after.as_ref().unwrap().to_string();
    assert!(after.contains("wrong_password") && !after.contains("Not-The-Password"));

    // A malformed body is refused before anything is looked up.
    let r = post(&hub, "/v1/auth/login", json!({ "email": user.email }), &[]).await;
    assert_eq!((r.status, r.code()), (422, "validation_failed"));
    // Only JSON is taken: a cross-site form post cannot sign a browser in (login CSRF).
    let form = hub
        .client
        .post(hub.url("/v1/auth/login"))
        .header("content-type", "text/plain")
        .body(json!({ "email": user.email, "password": user.password }).to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(form.status(), 400);
    let body: Value = form.json().await.unwrap();
    assert_eq!(body["error"]["code"], "unsupported_media_type");
    hub.stop().await;
    site.cleanup().await;
}

async fn five_failures_lock_the_user(backend: Backend) {
    let site = Site::new(backend);
    let hub = TestHub::start(&site).await;
    let user = site.user("agent", None, &[]).await;
    let store = site.store().await;

    // Four failures, then a success: the count starts again.
    for _ in 0..4 {
        let r = login(&hub, &user.email, "Wrong-Password-99").await;
        assert_eq!((r.status, r.code()), (401, "invalid_credentials"));
    }
    let creds = store
        .credentials_by_email(&user.email)
        .await
        .unwrap()
        .unwrap();
    assert_eq!((creds.failed_logins, creds.locked_until), (4, None));
    assert_eq!(login(&hub, &user.email, &user.password).await.status, 200);
    let creds = store
        .credentials_by_email(&user.email)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(creds.failed_logins, 0);

    // Five in a row lock the user for 15 minutes; then even the right password fails, with
    // the same answer as any other failure.
    for _ in 0..5 {
        let r = login(&hub, &user.email, "Wrong-Password-99").await;
        assert_eq!((r.status, r.code()), (401, "invalid_credentials"));
    }
    let creds = store
        .credentials_by_email(&user.email)
        .await
        .unwrap()
        .unwrap();
    let now = switchboard::ids::now_ms();
    let until = creds.locked_until.expect("locked");
    assert!(until > now + 890_000 && until <= now + 900_000, "{until}");
    assert_eq!(creds.failed_logins, 0);
    let r = login(&hub, &user.email, &user.password).await;
    assert_eq!((r.status, r.code()), (401, "invalid_credentials"));
    assert!(r.body.get("access_token").is_none());
    // Attempts while locked do not extend the lock.
    let creds = store
        .credentials_by_email(&user.email)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(creds.locked_until, Some(until));

    assert_eq!(audit_actions(&site, "auth.locked").await.len(), 1);
    store.close().await;
    hub.stop().await;
    site.cleanup().await;
}

async fn refresh_rotates_and_reuse_revokes_the_session(backend: Backend) {
    let site = Site::new(backend);
    let hub = TestHub::start(&site).await;
    let user = site.user("agent", None, &[]).await;
    let r = login(&hub, &user.email, &user.password).await;
    let old = r.body["refresh_token"].as_str().unwrap().to_owned();

    let rotated = post(
        &hub,
        "/v1/auth/refresh",
        json!({ "refresh_token": old }),
        &[],
    )
    .await;
    assert_eq!(rotated.status, 200, "{}", rotated.body);
    assert!(rotated.set_cookie().is_none());
    let new = rotated.body["refresh_token"].as_str().unwrap().to_owned();
    assert_ne!(new, old);
    let access = rotated.access();
    assert_eq!(me(&hub, &access).await.0, 200);

    // The old token again: someone kept a copy. The whole session ends at once.
    let reused = post(
        &hub,
        "/v1/auth/refresh",
        json!({ "refresh_token": old }),
        &[],
    )
    .await;
    assert_eq!(
        (reused.status, reused.code()),
        (401, "refresh_token_reused")
    );
    let (status, body) = me(&hub, &access).await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (401, Some("invalid_token"))
    );
    let r = post(
        &hub,
        "/v1/auth/refresh",
        json!({ "refresh_token": new }),
        &[],
    )
    .await;
    assert_eq!((r.status, r.code()), (401, "invalid_refresh_token"));
    assert_eq!(
        audit_actions(&site, "auth.refresh_reuse_detected")
            .await
            .len(),
        1
    );

    // Unknown and missing tokens.
    let r = post(
        &hub,
        "/v1/auth/refresh",
        json!({ "refresh_token": "nope" }),
        &[],
    )
    .await;
    assert_eq!((r.status, r.code()), (401, "invalid_refresh_token"));
    let r = reply(
        hub.client
            .post(hub.url("/v1/auth/refresh"))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!((r.status, r.code()), (401, "missing_refresh_token"));

    // A deactivated user cannot refresh.
    let r = login(&hub, &user.email, &user.password).await;
    let token = r.body["refresh_token"].as_str().unwrap().to_owned();
    let store = site.store().await;
    sqlx::query("UPDATE users SET active = 0 WHERE id = $1")
        .bind(&user.id)
        .execute(store.pool())
        .await
        .unwrap();
    store.close().await;
    let r = post(
        &hub,
        "/v1/auth/refresh",
        json!({ "refresh_token": token }),
        &[],
    )
    .await;
    assert_eq!((r.status, r.code()), (401, "invalid_refresh_token"));
    let r = login(&hub, &user.email, &user.password).await;
    assert_eq!((r.status, r.code()), (401, "invalid_credentials"));
    hub.stop().await;
    site.cleanup().await;
}

async fn logout_and_logout_all_end_access_tokens(backend: Backend) {
    let site = Site::new(backend);
    let hub = TestHub::start(&site).await;
    let user = site.user("agent", None, &[]).await;
    let a = login(&hub, &user.email, &user.password).await;
    let b = login(&hub, &user.email, &user.password).await;

    let r = reply(
        hub.client
            .post(hub.url("/v1/auth/logout"))
            .bearer_auth(a.access())
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(r.status, 204);
    let cleared = r.set_cookie().unwrap();
    assert!(cleared.starts_with("sb_refresh=;") && cleared.contains("Max-Age=0"));
    assert_eq!(me(&hub, &a.access()).await.0, 401);
    let r = post(
        &hub,
        "/v1/auth/refresh",
        json!({ "refresh_token": a.body["refresh_token"] }),
        &[],
    )
    .await;
    assert_eq!((r.status, r.code()), (401, "invalid_refresh_token"));
    assert_eq!(me(&hub, &b.access()).await.0, 200);
    assert_eq!(me(&hub, &user.token).await.0, 200);

    // logout-all ends B and the helper's own session too.
    let (status, body) = hub
        .call(Method::POST, "/v1/auth/logout-all", &b.access(), None)
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["sessions_revoked"], 2);
    assert_eq!(me(&hub, &b.access()).await.0, 401);
    assert_eq!(me(&hub, &user.token).await.0, 401);
    assert_eq!(audit_actions(&site, "auth.logout").await.len(), 1);
    assert_eq!(audit_actions(&site, "auth.logout_all").await.len(), 1);

    // An API key has no session and no user.
    let (status, body) = hub
        .call(Method::POST, "/v1/auth/logout", &hub.key, None)
        .await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (403, Some("forbidden"))
    );
    let (status, _) = me(&hub, &hub.key).await;
    assert_eq!(status, 403);
    let (status, body) = hub.call(Method::POST, "/v1/auth/logout", "", None).await;
    assert_eq!(status, 401, "{body}");
    hub.stop().await;
    site.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn expired_tampered_and_foreign_access_tokens_are_refused() {
    use jsonwebtoken::{EncodingKey, Header, encode};
    use switchboard::auth::tokens::{AUDIENCE, AccessClaims, ISSUER};

    let site = Site::new(Backend::Embedded);
    let hub = TestHub::start(&site).await;
    let user = site.user("agent", None, &[]).await;
    let r = login(&hub, &user.email, &user.password).await;
    let good = r.access();
    assert_eq!(me(&hub, &good).await.0, 200);
    let claims = jsonwebtoken::dangerous::insecure_decode::<AccessClaims>(&good)
        .unwrap()
        .claims;
    let keys = switchboard::crypto::Keys::from_master(TEST_SECRET_KEY.as_bytes());
    let now = switchboard::ids::now_ms() / 1000;
    let craft = |aud: &str, exp: i64, key: &EncodingKey| {
        let c = AccessClaims {
            sub: claims.sub.clone(),
            acc: claims.acc.clone(),
            sid: claims.sid.clone(),
            aud: aud.to_owned(),
            iss: ISSUER.to_owned(),
            iat: now - 10,
            exp,
        };
        encode(&Header::default(), &c, key).unwrap()
    };
    // The crafting itself is right: a fresh, well-formed token of the same session works.
    assert_eq!(
        me(&hub, &craft(AUDIENCE, now + 600, &keys.jwt_encoding))
            .await
            .0,
        200
    );

    let foreign = switchboard::crypto::Keys::from_master(b"another-master-key-of-32-chars!!");
    let mut tampered = good.clone();
    let last = tampered.pop().unwrap();
    tampered.push(if last == 'A' { 'B' } else { 'A' });
    for (token, code) in [
        (
            craft(AUDIENCE, now - 5, &keys.jwt_encoding),
            "token_expired",
        ),
        (
            craft("someone-else", now + 600, &keys.jwt_encoding),
            "invalid_token",
        ),
        (
            craft(AUDIENCE, now + 600, &foreign.jwt_encoding),
            "invalid_token",
        ),
        (tampered, "invalid_token"),
        ("not.a.jwt".to_owned(), "invalid_token"),
    ] {
        let (status, body) = me(&hub, &token).await;
        assert_eq!(
            (status, body["error"]["code"].as_str()),
            (401, Some(code)),
            "{token}"
        );
    }
    hub.stop().await;
    site.cleanup().await;
}

fn totp_code(secret: &str, offset_steps: i64) -> String {
    let totp = totp_rs::Builder::new()
        .with_secret(totp_rs::Secret::try_from_base32(secret).unwrap())
        .build()
        .unwrap();
    let now = switchboard::ids::now_ms() / 1000;
    totp.generate((now + offset_steps * 30) as u64).to_string()
}

async fn totp_enrol_verify_login_and_backup_codes(backend: Backend) {
    let site = Site::new(backend);
    let hub = TestHub::start(&site).await;
    let user = site.user("agent", None, &[]).await;
    let token = user.token.clone();
    let call = |path: &'static str, token: String, body: Option<Value>| {
        let hub = &hub;
        async move { hub.call(Method::POST, path, &token, body).await }
    };

    // API keys have no user to enrol.
    let (status, _) = call("/v1/auth/totp/enrol", hub.key.clone(), None).await;
    assert_eq!(status, 403);

    // Enrolling needs the password again: a stolen access token alone cannot add a factor.
    let (status, body) = call(
        "/v1/auth/totp/enrol",
        token.clone(),
        Some(json!({ "password": "Not-The-Password-1" })),
    )
    .await;
    assert_eq!(
        (status, body["error"]["details"][0]["field"].as_str()),
        (422, Some("password"))
    );
    let (status, _) = call("/v1/auth/totp/enrol", token.clone(), None).await;
    assert_eq!(status, 400, "no body");
    let password = Some(json!({ "password": user.password }));

    // Enrolling twice replaces the pending secret; only the last one verifies.
    let (status, first) = call("/v1/auth/totp/enrol", token.clone(), password.clone()).await;
    assert_eq!(status, 200, "{first}");
    let (_, second) = call("/v1/auth/totp/enrol", token.clone(), password.clone()).await;
    let secret = second["secret"].as_str().unwrap().to_owned();
    assert_ne!(first["secret"], second["secret"]);
    assert_eq!(secret.len(), 32, "20 bytes in base32");
    let url = second["otpauth_url"].as_str().unwrap();
    assert!(url.starts_with("otpauth://totp/Switchboard:"), "{url}");
    assert!(url.contains(&format!("secret={secret}")));
    let stale = totp_code(first["secret"].as_str().unwrap(), 0);
    let (status, body) = call(
        "/v1/auth/totp/verify",
        token.clone(),
        Some(json!({ "code": stale })),
    )
    .await;
    assert_eq!(
        (status, body["error"]["details"][0]["field"].as_str()),
        (422, Some("code"))
    );

    // Not enabled yet: login needs no code.
    assert_eq!(login(&hub, &user.email, &user.password).await.status, 200);

    let verified_code = totp_code(&secret, 0);
    let (status, body) = call(
        "/v1/auth/totp/verify",
        token.clone(),
        Some(json!({ "code": verified_code })),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let backup: Vec<String> = serde_json::from_value(body["backup_codes"].clone()).unwrap();
    assert_eq!(backup.len(), 10);
    let (status, _) = call("/v1/auth/totp/enrol", token.clone(), password.clone()).await;
    assert_eq!(status, 422, "already enabled");

    // The right password alone is not enough now.
    let r = login(&hub, &user.email, &user.password).await;
    assert_eq!((r.status, r.code()), (401, "mfa_required"));
    assert!(r.body.get("access_token").is_none() && r.set_cookie().is_none());
    let with = |extra: Value| {
        let mut body = json!({ "email": user.email, "password": user.password });
        body.as_object_mut()
            .unwrap()
            .extend(extra.as_object().unwrap().clone());
        post(&hub, "/v1/auth/login", body, &[])
    };
    let r = with(json!({ "totp_code": totp_code(&secret, 10) })).await;
    assert_eq!((r.status, r.code()), (401, "invalid_mfa_code"));
    let store = site.store().await;
    let creds = store
        .credentials_by_email(&user.email)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        creds.failed_logins, 1,
        "a wrong code counts towards the lockout"
    );
    assert!(creds.totp_enabled);
    assert!(
        creds.totp_secret.as_deref().unwrap().starts_with("v1:"),
        "sealed"
    );
    store.close().await;
    // A code works once: the one that verified the enrolment cannot sign in, and a fresh one
    // (the next step's, inside the one-step skew) works once only.
    let r = with(json!({ "totp_code": verified_code })).await;
    assert_eq!((r.status, r.code()), (401, "invalid_mfa_code"));
    let next = totp_code(&secret, 1);
    let r = with(json!({ "totp_code": next })).await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(me(&hub, &r.access()).await.0, 200);
    let r = with(json!({ "totp_code": next })).await;
    assert_eq!((r.status, r.code()), (401, "invalid_mfa_code"));
    // A wrong password with the right code is still an ordinary failure.
    let r = post(
        &hub,
        "/v1/auth/login",
        json!({ "email": user.email, "password": "Wrong-Password-99", "totp_code": totp_code(&secret, 0) }),
        &[],
    )
    .await;
    assert_eq!((r.status, r.code()), (401, "invalid_credentials"));

    // A backup code works once (case and dashes do not matter).
    let r = with(json!({ "backup_code": backup[3].to_uppercase() })).await;
    assert_eq!(r.status, 200, "{}", r.body);
    let r = with(json!({ "backup_code": backup[3] })).await;
    assert_eq!((r.status, r.code()), (401, "invalid_mfa_code"));
    let r = with(json!({ "backup_code": backup[4] })).await;
    assert_eq!(r.status, 200);

    // Disabling needs the password.
    let (status, body) = call(
        "/v1/auth/totp/disable",
        token.clone(),
        Some(json!({ "password": "Wrong-Password-99" })),
    )
    .await;
    assert_eq!(
        (status, body["error"]["details"][0]["field"].as_str()),
        (422, Some("password"))
    );
    let (status, _) = call(
        "/v1/auth/totp/disable",
        token.clone(),
        Some(json!({ "password": user.password })),
    )
    .await;
    assert_eq!(status, 204);
    assert_eq!(login(&hub, &user.email, &user.password).await.status, 200);
    let r = with(json!({ "backup_code": backup[5] })).await;
    assert_eq!(r.status, 200, "codes are ignored once TOTP is off");

    assert_eq!(audit_actions(&site, "auth.totp_enabled").await.len(), 1);
    assert_eq!(audit_actions(&site, "auth.totp_disabled").await.len(), 1);

    // A user who lost the device: an administrator removes the second factor.
    let (status, enrolled) = call("/v1/auth/totp/enrol", token.clone(), password.clone()).await;
    assert_eq!(status, 200);
    let code = totp_code(enrolled["secret"].as_str().unwrap(), 0);
    let (status, _) = call(
        "/v1/auth/totp/verify",
        token.clone(),
        Some(json!({ "code": code })),
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(
        login(&hub, &user.email, &user.password).await.code(),
        "mfa_required"
    );
    let path = format!("/v1/admin/users/{}/second-factor", user.id);
    let lead = site.user("team_lead", None, &[]).await;
    let (status, _) = hub.call(Method::DELETE, &path, &lead.token, None).await;
    assert_eq!(status, 403);
    let (status, _) = hub.call(Method::DELETE, &path, &hub.key, None).await;
    assert_eq!(status, 204);
    assert_eq!(login(&hub, &user.email, &user.password).await.status, 200);
    assert_eq!(
        audit_actions(&site, "user.second_factor_reset").await.len(),
        1
    );
    hub.stop().await;
    site.cleanup().await;
}

async fn password_change_enforces_policy_and_ends_other_sessions(backend: Backend) {
    let site = Site::new(backend);
    let hub = TestHub::start(&site).await;
    let user = site.user("agent", None, &[]).await;
    let mine = login(&hub, &user.email, &user.password).await.access();
    let change = |current: &str, new: &str| {
        let body = json!({ "current_password": current, "new_password": new });
        let token = mine.clone();
        let hub = &hub;
        async move {
            hub.call(Method::POST, "/v1/auth/password", &token, Some(body))
                .await
        }
    };

    for (weak, rule) in [
        ("Short-1a", "must be at least 12 characters"),
        ("alllowercaseletters", "must mix at least three of"),
        ("Password-Kite-42", "common password `password`"),
    ] {
        let (status, body) = change(&user.password, weak).await;
        assert_eq!(status, 422, "{body}");
        assert_eq!(body["error"]["code"], "validation_failed");
        assert_eq!(body["error"]["details"][0]["field"], "new_password");
        let message = body["error"]["message"].as_str().unwrap();
        assert!(
            message.starts_with("new_password: ") && message.contains(rule),
            "{message}"
        );
    }
    let (status, body) = change("Not-My-Password-1", "Blueberry-Lamp-77").await;
    assert_eq!(
        (status, body["error"]["details"][0]["field"].as_str()),
        (422, Some("current_password"))
    );

    let (status, body) = change(&user.password, "Blueberry-Lamp-77").await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["sessions_revoked"], 1, "the helper's session");
    assert_eq!(me(&hub, &mine).await.0, 200, "the current session stays");
    assert_eq!(me(&hub, &user.token).await.0, 401);
    let r = login(&hub, &user.email, &user.password).await;
    assert_eq!((r.status, r.code()), (401, "invalid_credentials"));
    assert_eq!(
        login(&hub, &user.email, "Blueberry-Lamp-77").await.status,
        200
    );
    let changed = audit_actions(&site, "user.password_changed").await;
    assert_eq!(changed.len(), 1);
    assert_eq!(changed[0].entity_id.as_deref(), Some(user.id.as_str()));

    let (status, _) = hub
        .call(
            Method::POST,
            "/v1/auth/password",
            &hub.key,
            Some(json!({ "current_password": "x", "new_password": "y" })),
        )
        .await;
    assert_eq!(status, 403);
    hub.stop().await;
    site.cleanup().await;
}

async fn login_limit_holds_per_ip_across_nodes(backend: Backend) {
    let site = Site::new(backend);
    let limit = "[rate_limits]\nlogin_per_minute = 3";
    let first = TestHub::start_with(&site, limit).await;
    // In the distributed mode the attempts are split over two nodes: the limit is counted in
    // Redis, so it holds for the deployment. In the embedded mode there is one node.
    let second = match backend {
        Backend::Distributed => Some(TestHub::start_with(&site, limit).await),
        Backend::Embedded => None,
    };
    let nodes = [&first, second.as_ref().unwrap_or(&first)];
    let user = site.user("agent", None, &[]).await;

    // The Redis window is a calendar minute; starting close to its end would let the count
    // reset mid-test, so wait for the next window in that case.
    let into_minute = switchboard::ids::now_ms() % 60_000;
    if backend == Backend::Distributed && into_minute > 50_000 {
        tokio::time::sleep(std::time::Duration::from_millis(
            (60_000 - into_minute + 50) as u64,
        ))
        .await;
    }

    for i in 0..3 {
        let r = login(nodes[i % 2], &user.email, "Wrong-Password-99").await;
        assert_eq!(
            (r.status, r.code()),
            (401, "invalid_credentials"),
            "attempt {i}"
        );
    }
    // The fourth, even with the right password and on the other node, is refused.
    let r = login(nodes[1], &user.email, &user.password).await;
    assert_eq!((r.status, r.code()), (429, "rate_limited"), "{}", r.body);
    let retry: u64 = r.headers["retry-after"].to_str().unwrap().parse().unwrap();
    assert!((1..=60).contains(&retry), "{retry}");
    assert_eq!(r.headers["x-ratelimit-limit"], "3");
    assert_eq!(r.headers["x-ratelimit-remaining"], "0");
    let r = login(nodes[0], "nobody@example.com", "whatever").await;
    assert_eq!(r.status, 429);
    // Refused attempts never reached the user: only the three failures were counted.
    let store = site.store().await;
    let creds = store
        .credentials_by_email(&user.email)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(creds.failed_logins, 3);
    store.close().await;

    if let Some(second) = second {
        second.stop().await;
    }
    first.stop().await;
    site.cleanup().await;
}

async fn run_admin_create(
    site: &Site,
    email: &str,
    password: &str,
    stdin: bool,
) -> std::process::Output {
    use std::io::Write;
    use std::process::{Command, Stdio};
    let demo = concat!(env!("CARGO_MANIFEST_DIR"), "/examples/demo.toml");
    let mut command = Command::new(env!("CARGO_BIN_EXE_switchboard"));
    command
        .args([
            "--config",
            demo,
            "admin",
            "create",
            "--email",
            email,
            "--name",
            "Root Admin",
        ])
        .envs(site.env())
        .env_remove("SWITCHBOARD_ADMIN_PASSWORD")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    if !stdin {
        command.env("SWITCHBOARD_ADMIN_PASSWORD", password);
    }
    let password = password.to_owned();
    tokio::task::spawn_blocking(move || {
        let mut child = command.spawn().unwrap();
        let mut input = child.stdin.take().unwrap();
        if stdin {
            writeln!(input, "{password}").unwrap();
        }
        drop(input);
        child.wait_with_output().unwrap()
    })
    .await
    .unwrap()
}

async fn cli_creates_an_admin_who_can_sign_in(backend: Backend) {
    let site = Site::new(backend);
    let hub = TestHub::start(&site).await;

    let out = run_admin_create(&site, "Root@Example.com", "Granite-Falcon-51", false).await;
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stdout = String::from_utf8(out.stdout).unwrap();
    let id = stdout.lines().last().unwrap().trim().to_owned();
    assert!(id.starts_with("usr_"), "{stdout}");

    let r = login(&hub, "root@example.com", "Granite-Falcon-51").await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.body["user"]["id"], id.as_str());
    assert_eq!(r.body["user"]["role"], "super_admin");
    let (status, profile) = me(&hub, &r.access()).await;
    assert_eq!(status, 200);
    assert_eq!(profile["grants"]["manage_users"], "all");

    let created = audit_actions(&site, "user.created").await;
    assert_eq!(created.len(), 1);
    assert_eq!(created[0].actor_type, "system");
    assert_eq!(created[0].entity_id.as_deref(), Some(id.as_str()));

    // The same email again, and a weak password, are refused without creating anyone.
    let out = run_admin_create(&site, "root@example.com", "Granite-Falcon-52", false).await;
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("already exists"));
    let out = run_admin_create(&site, "other@example.com", "short", true).await;
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("at least 12 characters"));

    // The password can come on stdin.
    let out = run_admin_create(&site, "ops@example.com", "Copper-Heron-88", true).await;
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        login(&hub, "ops@example.com", "Copper-Heron-88")
            .await
            .status,
        200
    );
    assert_eq!(audit_actions(&site, "user.created").await.len(), 2);
    hub.stop().await;
    site.cleanup().await;
}
