//! The admin API: users, branches, teams, custom roles and API keys, on both backends.

use reqwest::Method;
use serde_json::{Value, json};
use switchboard::access::Grants;
use switchboard::store::{Store, api_keys, org, roles, users};

use crate::helpers::{Site, TestHub};
use crate::on_both_backends;

pub const USER_AGENT: &str = "switchboard-admin-tests/1.0";

/// A request with a user agent and a correlation id, as a browser or integration would send.
pub async fn send_traced(
    hub: &TestHub,
    method: Method,
    path: &str,
    token: &str,
    body: Option<Value>,
    correlation_id: &str,
) -> (u16, Value) {
    let mut request = hub
        .client
        .request(method, hub.url(path))
        .bearer_auth(token)
        .header("user-agent", USER_AGENT)
        .header("x-correlation-id", correlation_id);
    if let Some(body) = body {
        request = request.json(&body);
    }
    let r = request.send().await.unwrap();
    let status = r.status().as_u16();
    (status, r.json().await.unwrap_or(Value::Null))
}

/// Asserts an error response: status, machine code and (for 422) the field it names.
#[track_caller]
pub fn assert_error(got: &(u16, Value), status: u16, code: &str, field: Option<&str>) {
    let (s, body) = got;
    assert_eq!(*s, status, "{body}");
    assert_eq!(body["error"]["code"], code, "{body}");
    if let Some(field) = field {
        assert_eq!(body["error"]["details"][0]["field"], field, "{body}");
    }
}

/// Records of a second account, made straight in the store: every admin route must 404 them.
pub struct Foreign {
    pub branch: String,
    pub team: String,
    pub user: String,
    pub role: String,
    pub key: String,
}

pub async fn foreign(site: &Site) -> Foreign {
    let store = site.store().await;
    let account = store.ensure_account("other").await.unwrap();
    let mut tx = store.begin().await.unwrap();
    let branch = org::insert_branch(&mut tx, &account, "Elsewhere")
        .await
        .unwrap();
    let team = org::insert_team(&mut tx, &account, "Elsewhere team", Some(&branch))
        .await
        .unwrap();
    let email = format!("{}@other.example.com", ulid::Ulid::new()).to_lowercase();
    let user = Store::insert_user(
        &mut tx,
        &users::NewUser {
            account_id: &account,
            email: &email,
            name: "Stranger",
            password_hash: "x",
            role: "agent",
            branch_id: None,
        },
    )
    .await
    .unwrap();
    let role = roles::insert_role(&mut tx, &account, "Elsewhere role", "", &Grants::default())
        .await
        .unwrap();
    let key = api_keys::insert_api_key(
        &mut tx,
        &api_keys::NewApiKey {
            account_id: &account,
            name: "elsewhere",
            role: "agent",
            prefix: "zzzzzzzz",
            key_hash: &ulid::Ulid::new().to_string(),
            expires_at: None,
            created_by: None,
        },
    )
    .await
    .unwrap();
    tx.commit().await.unwrap();
    store.close().await;
    Foreign {
        branch,
        team,
        user,
        role,
        key: key.id,
    }
}

fn unique_email(tag: &str) -> String {
    format!("{tag}.{}@Example.COM", ulid::Ulid::new())
}

async fn create(hub: &TestHub, token: &str, path: &str, body: Value) -> Value {
    let (status, created) = hub.call(Method::POST, path, token, Some(body)).await;
    assert_eq!(status, 201, "{path}: {created}");
    created
}

on_both_backends!(
    users_round_trip_with_validation,
    deactivation_and_password_reset_end_sessions,
    non_admins_are_refused_everywhere,
    branches_and_teams_round_trip,
    custom_roles_grant_exactly_their_permissions,
    api_keys_work_until_revoked,
);

async fn users_round_trip_with_validation(backend: crate::helpers::Backend) {
    let site = Site::new(backend);
    let hub = TestHub::start(&site).await;
    let admin = site.user("super_admin", None, &[]).await;
    let t = admin.token.as_str();
    let branch = create(&hub, t, "/v1/admin/branches", json!({"name": "North"})).await;
    let team = create(&hub, t, "/v1/admin/teams", json!({"name": "Sales"})).await;
    let (branch_id, team_id) = (branch["id"].as_str().unwrap(), team["id"].as_str().unwrap());

    let email = unique_email("Ada");
    let good = json!({"email": email, "name": "Ada", "password": "Tangerine-Kite-42",
        "role": "agent", "branch_id": branch_id, "team_ids": [team_id]});
    let with = |key: &str, value: Value| {
        let mut body = good.clone();
        body[key] = value;
        Some(body)
    };
    let post = |body| hub.call(Method::POST, "/v1/admin/users", t, body);
    assert_error(
        &post(with("email", json!("not-an-email"))).await,
        422,
        "validation_failed",
        Some("email"),
    );
    let weak = post(with("password", json!("short"))).await;
    assert_error(&weak, 422, "validation_failed", Some("password"));
    assert!(
        weak.1["error"]["message"]
            .as_str()
            .unwrap()
            .contains("at least 12"),
        "{}",
        weak.1
    );
    assert_error(
        &post(with("role", json!("root"))).await,
        422,
        "validation_failed",
        Some("role"),
    );
    assert_error(
        &post(with("branch_id", json!("br_nope"))).await,
        422,
        "validation_failed",
        Some("branch_id"),
    );
    assert_error(
        &post(with("team_ids", json!(["team_nope"]))).await,
        422,
        "validation_failed",
        Some("team_ids[0]"),
    );
    assert_error(
        &post(with("name", json!(""))).await,
        422,
        "validation_failed",
        Some("name"),
    );
    assert_error(
        &post(with("surprise", json!(1))).await,
        422,
        "validation_failed",
        None,
    );

    let (status, user) = post(Some(good.clone())).await;
    assert_eq!(status, 201, "{user}");
    let id = user["id"].as_str().unwrap().to_owned();
    assert!(id.starts_with("usr_"));
    assert_eq!(user["email"], email.to_lowercase());
    assert_eq!(user["role"], "agent");
    assert_eq!(user["branch_id"], branch_id);
    assert_eq!(user["team_ids"], json!([team_id]));
    assert_eq!(user["active"], true);
    assert!(user.get("password_hash").is_none() && !user.to_string().contains("argon2"));

    // The same email in another case is a duplicate.
    let dup = post(with("email", json!(email.to_uppercase()))).await;
    assert_error(&dup, 409, "conflict", None);

    let (status, got) = hub
        .call(Method::GET, &format!("/v1/admin/users/{id}"), t, None)
        .await;
    assert_eq!((status, &got), (200, &user));

    // Filters and paging.
    let h = &hub;
    let list = |q: String| async move {
        let (status, body) = h
            .call(Method::GET, &format!("/v1/admin/users?{q}"), t, None)
            .await;
        assert_eq!(status, 200, "{body}");
        body
    };
    let ids = |body: &Value| -> Vec<String> {
        body["data"]
            .as_array()
            .unwrap()
            .iter()
            .map(|u| u["id"].as_str().unwrap().to_owned())
            .collect()
    };
    assert_eq!(
        ids(&list(format!("team_id={team_id}")).await),
        vec![id.clone()]
    );
    assert_eq!(
        ids(&list(format!("branch_id={branch_id}")).await),
        vec![id.clone()]
    );
    assert_eq!(ids(&list("role=agent".into()).await), vec![id.clone()]);
    assert_eq!(
        ids(&list("role=super_admin".into()).await),
        vec![admin.id.clone()]
    );
    assert!(ids(&list("active=false".into()).await).is_empty());
    let first = list("limit=1".into()).await;
    assert_eq!(ids(&first).len(), 1);
    let cursor = first["next_cursor"].as_str().unwrap();
    let second = list(format!("limit=1&cursor={cursor}")).await;
    assert_eq!(ids(&second).len(), 1);
    assert_ne!(ids(&first), ids(&second));
    assert!(second["next_cursor"].is_null());
    assert_error(
        &hub.call(Method::GET, "/v1/admin/users?limit=0", t, None)
            .await,
        422,
        "validation_failed",
        Some("limit"),
    );
    assert_error(
        &hub.call(Method::GET, "/v1/admin/users?active=maybe", t, None)
            .await,
        422,
        "validation_failed",
        Some("active"),
    );
    assert_error(
        &hub.call(Method::GET, "/v1/admin/users?colour=red", t, None)
            .await,
        422,
        "validation_failed",
        None,
    );

    // PATCH: rename, clear the branch, replace the teams, change the role.
    let other_team = create(&hub, t, "/v1/admin/teams", json!({"name": "Support"})).await;
    let path = format!("/v1/admin/users/{id}");
    let (status, patched) = hub
        .call(
            Method::PATCH,
            &path,
            t,
            Some(json!({"name": "Ada L.", "branch_id": null,
            "team_ids": [other_team["id"]], "role": "team_lead"})),
        )
        .await;
    assert_eq!(status, 200, "{patched}");
    assert_eq!(patched["name"], "Ada L.");
    assert!(patched["branch_id"].is_null());
    assert_eq!(patched["team_ids"], json!([other_team["id"]]));
    assert_eq!(patched["role"], "team_lead");
    // Absent fields are kept.
    let (_, kept) = hub
        .call(Method::PATCH, &path, t, Some(json!({"name": "Ada"})))
        .await;
    assert_eq!(
        (kept["role"].as_str(), kept["team_ids"].clone()),
        (Some("team_lead"), json!([other_team["id"]]))
    );
    assert_error(
        &hub.call(Method::PATCH, &path, t, Some(json!({"role": "root"})))
            .await,
        422,
        "validation_failed",
        Some("role"),
    );
    assert_error(
        &hub.call(Method::PATCH, &path, t, Some(json!({"active": "no"})))
            .await,
        422,
        "validation_failed",
        Some("active"),
    );
    assert_error(
        &hub.call(
            Method::PATCH,
            &path,
            t,
            Some(json!({"team_ids": ["team_nope"]})),
        )
        .await,
        422,
        "validation_failed",
        Some("team_ids[0]"),
    );

    // Unknown and other accounts' users are 404 on every user route.
    let f = foreign(&site).await;
    for missing in [f.user.as_str(), "usr_nope"] {
        let p = format!("/v1/admin/users/{missing}");
        assert_error(
            &hub.call(Method::GET, &p, t, None).await,
            404,
            "not_found",
            None,
        );
        assert_error(
            &hub.call(Method::PATCH, &p, t, Some(json!({"name": "x"})))
                .await,
            404,
            "not_found",
            None,
        );
        assert_error(
            &hub.call(
                Method::POST,
                &format!("{p}/password"),
                t,
                Some(json!({"password": "Tangerine-Kite-43"})),
            )
            .await,
            404,
            "not_found",
            None,
        );
    }
    // Another account's branch, team and role are not references this account can use.
    assert_error(
        &post(with("branch_id", json!(f.branch))).await,
        422,
        "validation_failed",
        Some("branch_id"),
    );
    assert_error(
        &post(with("team_ids", json!([f.team]))).await,
        422,
        "validation_failed",
        Some("team_ids[0]"),
    );
    assert_error(
        &post(with("role", json!(f.role))).await,
        422,
        "validation_failed",
        Some("role"),
    );

    hub.stop().await;
    site.cleanup().await;
}

async fn deactivation_and_password_reset_end_sessions(backend: crate::helpers::Backend) {
    let site = Site::new(backend);
    let hub = TestHub::start(&site).await;
    let admin = site.user("super_admin", None, &[]).await;
    let t = admin.token.as_str();

    // A super_admin cannot lock themself out.
    let me = format!("/v1/admin/users/{}", admin.id);
    assert_error(
        &hub.call(Method::PATCH, &me, t, Some(json!({"active": false})))
            .await,
        422,
        "validation_failed",
        Some("active"),
    );
    assert_error(
        &hub.call(Method::PATCH, &me, t, Some(json!({"role": "operations"})))
            .await,
        422,
        "validation_failed",
        Some("role"),
    );
    let (status, _) = hub.call(Method::GET, "/v1/admin/users", t, None).await;
    assert_eq!(status, 200);

    // Deactivation: the agent's token works, then stops on the very next request.
    let agent = site.user("agent", None, &[]).await;
    let (status, _) = hub
        .call(Method::GET, "/v1/conversations", &agent.token, None)
        .await;
    assert_eq!(status, 200);
    let path = format!("/v1/admin/users/{}", agent.id);
    let (status, body) = hub
        .call(Method::PATCH, &path, t, Some(json!({"active": false})))
        .await;
    assert_eq!((status, &body["active"]), (200, &json!(false)), "{body}");
    assert_error(
        &hub.call(Method::GET, "/v1/conversations", &agent.token, None)
            .await,
        401,
        "invalid_token",
        None,
    );
    let (_, inactive) = hub
        .call(Method::GET, "/v1/admin/users?active=false", t, None)
        .await;
    assert_eq!(inactive["data"][0]["id"], agent.id);
    // Every session was revoked, so reactivation does not revive the old token.
    let (status, _) = hub
        .call(Method::PATCH, &path, t, Some(json!({"active": true})))
        .await;
    assert_eq!(status, 200);
    assert_error(
        &hub.call(Method::GET, "/v1/conversations", &agent.token, None)
            .await,
        401,
        "invalid_token",
        None,
    );

    // Password reset: policy checked, then sessions end.
    let other = site.user("agent", None, &[]).await;
    let reset = format!("/v1/admin/users/{}/password", other.id);
    let weak = hub
        .call(
            Method::POST,
            &reset,
            t,
            Some(json!({"password": "alllowercaseletters"})),
        )
        .await;
    assert_error(&weak, 422, "validation_failed", Some("password"));
    assert!(
        weak.1["error"]["message"]
            .as_str()
            .unwrap()
            .contains("three of")
    );
    assert_error(
        &hub.call(Method::POST, &reset, t, Some(json!({}))).await,
        422,
        "validation_failed",
        None,
    );
    let (status, _) = hub
        .call(Method::GET, "/v1/conversations", &other.token, None)
        .await;
    assert_eq!(status, 200, "a refused reset changes nothing");
    let (status, _) = hub
        .call(
            Method::POST,
            &reset,
            t,
            Some(json!({"password": "Marmalade-Orbit-77"})),
        )
        .await;
    assert_eq!(status, 204);
    assert_error(
        &hub.call(Method::GET, "/v1/conversations", &other.token, None)
            .await,
        401,
        "invalid_token",
        None,
    );
    let store = site.store().await;
    let creds = store
        .credentials_by_email(&other.email)
        .await
        .unwrap()
        .unwrap();
    assert!(switchboard::auth::passwords::verify(
        "Marmalade-Orbit-77",
        &creds.password_hash
    ));
    assert!(!switchboard::auth::passwords::verify(
        &other.password,
        &creds.password_hash
    ));
    store.close().await;

    hub.stop().await;
    site.cleanup().await;
}

async fn non_admins_are_refused_everywhere(backend: crate::helpers::Backend) {
    let site = Site::new(backend);
    let hub = TestHub::start(&site).await;
    let agent = site.user("agent", None, &[]).await;
    let operations = site.user("operations", None, &[]).await;
    let routes: Vec<(Method, &str, Option<Value>)> = vec![
        (Method::POST, "/v1/admin/users", Some(json!({}))),
        (Method::GET, "/v1/admin/users", None),
        (Method::GET, "/v1/admin/users/usr_x", None),
        (Method::PATCH, "/v1/admin/users/usr_x", Some(json!({}))),
        (
            Method::POST,
            "/v1/admin/users/usr_x/password",
            Some(json!({})),
        ),
        (Method::POST, "/v1/admin/branches", Some(json!({}))),
        (Method::GET, "/v1/admin/branches", None),
        (Method::GET, "/v1/admin/branches/br_x", None),
        (Method::PATCH, "/v1/admin/branches/br_x", Some(json!({}))),
        (Method::POST, "/v1/admin/teams", Some(json!({}))),
        (Method::GET, "/v1/admin/teams", None),
        (Method::GET, "/v1/admin/teams/team_x", None),
        (Method::PATCH, "/v1/admin/teams/team_x", Some(json!({}))),
        (
            Method::PUT,
            "/v1/admin/teams/team_x/members",
            Some(json!({})),
        ),
        (Method::GET, "/v1/admin/roles", None),
        (Method::POST, "/v1/admin/roles", Some(json!({}))),
        (Method::GET, "/v1/admin/roles/agent", None),
        (Method::PATCH, "/v1/admin/roles/rol_x", Some(json!({}))),
        (Method::DELETE, "/v1/admin/roles/rol_x", None),
        (Method::POST, "/v1/admin/api-keys", Some(json!({}))),
        (Method::GET, "/v1/admin/api-keys", None),
        (Method::GET, "/v1/admin/api-keys/key_x", None),
        (Method::DELETE, "/v1/admin/api-keys/key_x", None),
    ];
    for token in [&agent.token, &operations.token] {
        for (method, path, body) in &routes {
            let got = hub.call(method.clone(), path, token, body.clone()).await;
            assert_eq!(got.0, 403, "{method} {path}: {}", got.1);
            assert_eq!(got.1["error"]["code"], "forbidden", "{method} {path}");
        }
    }
    // No credentials at all is 401, before anything else.
    let r = hub
        .client
        .get(hub.url("/v1/admin/users"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 401);
    // And nothing was written.
    let (_, audit) = hub.get("/v1/audit").await;
    assert_eq!(audit["data"], json!([]));
    hub.stop().await;
    site.cleanup().await;
}

async fn branches_and_teams_round_trip(backend: crate::helpers::Backend) {
    let site = Site::new(backend);
    let hub = TestHub::start(&site).await;
    let admin = site.user("super_admin", None, &[]).await;
    let t = admin.token.as_str();

    // Branches.
    let north = create(&hub, t, "/v1/admin/branches", json!({"name": " North "})).await;
    assert_eq!(north["name"], "North");
    assert!(north["id"].as_str().unwrap().starts_with("br_"));
    let south = create(&hub, t, "/v1/admin/branches", json!({"name": "South"})).await;
    assert_error(
        &hub.call(
            Method::POST,
            "/v1/admin/branches",
            t,
            Some(json!({"name": "North"})),
        )
        .await,
        409,
        "conflict",
        None,
    );
    assert_error(
        &hub.call(
            Method::POST,
            "/v1/admin/branches",
            t,
            Some(json!({"name": "  "})),
        )
        .await,
        422,
        "validation_failed",
        Some("name"),
    );
    assert_error(
        &hub.call(
            Method::POST,
            "/v1/admin/branches",
            t,
            Some(json!({"name": 7})),
        )
        .await,
        422,
        "validation_failed",
        Some("name"),
    );
    let south_path = format!("/v1/admin/branches/{}", south["id"].as_str().unwrap());
    assert_error(
        &hub.call(
            Method::PATCH,
            &south_path,
            t,
            Some(json!({"name": "North"})),
        )
        .await,
        409,
        "conflict",
        None,
    );
    let (status, renamed) = hub
        .call(
            Method::PATCH,
            &south_path,
            t,
            Some(json!({"name": "Southwest", "active": false})),
        )
        .await;
    assert_eq!(status, 200, "{renamed}");
    assert_eq!(
        (renamed["name"].as_str(), &renamed["active"]),
        (Some("Southwest"), &json!(false))
    );
    let (status, got) = hub.call(Method::GET, &south_path, t, None).await;
    assert_eq!((status, &got), (200, &renamed));
    let (_, page1) = hub
        .call(Method::GET, "/v1/admin/branches?limit=1", t, None)
        .await;
    assert_eq!(page1["data"][0]["id"], north["id"]);
    let cursor = page1["next_cursor"].as_str().unwrap();
    let (_, page2) = hub
        .call(
            Method::GET,
            &format!("/v1/admin/branches?limit=1&cursor={cursor}"),
            t,
            None,
        )
        .await;
    assert_eq!(page2["data"][0]["id"], south["id"]);
    assert!(page2["next_cursor"].is_null());

    // Teams: a branch must be this account's and active.
    assert_error(
        &hub.call(
            Method::POST,
            "/v1/admin/teams",
            t,
            Some(json!({"name": "A", "branch_id": south["id"]})),
        )
        .await,
        422,
        "validation_failed",
        Some("branch_id"),
    );
    let sales = create(
        &hub,
        t,
        "/v1/admin/teams",
        json!({"name": "Sales", "branch_id": north["id"]}),
    )
    .await;
    assert!(sales["id"].as_str().unwrap().starts_with("team_"));
    assert_eq!(sales["branch_id"], north["id"]);
    assert_error(
        &hub.call(
            Method::POST,
            "/v1/admin/teams",
            t,
            Some(json!({"name": "Sales"})),
        )
        .await,
        409,
        "conflict",
        None,
    );
    let team_path = format!("/v1/admin/teams/{}", sales["id"].as_str().unwrap());
    let (status, moved) = hub
        .call(
            Method::PATCH,
            &team_path,
            t,
            Some(json!({"branch_id": null, "name": "Sales EU"})),
        )
        .await;
    assert_eq!(status, 200, "{moved}");
    assert!(moved["branch_id"].is_null());
    assert_eq!(moved["name"], "Sales EU");
    assert_error(
        &hub.call(
            Method::PATCH,
            &team_path,
            t,
            Some(json!({"branch_id": "br_nope"})),
        )
        .await,
        422,
        "validation_failed",
        Some("branch_id"),
    );
    let (_, filtered) = hub
        .call(
            Method::GET,
            &format!(
                "/v1/admin/teams?branch_id={}",
                north["id"].as_str().unwrap()
            ),
            t,
            None,
        )
        .await;
    assert_eq!(filtered["data"], json!([]));

    // Members: replaced wholesale; unknown users are named.
    let ann = site.user("agent", None, &[]).await;
    let bob = site.user("agent", None, &[]).await;
    let members = format!("{team_path}/members");
    let (status, team) = hub
        .call(
            Method::PUT,
            &members,
            t,
            Some(json!({"user_ids": [ann.id, bob.id, ann.id]})),
        )
        .await;
    assert_eq!(status, 200, "{team}");
    let mut expected = vec![ann.id.clone(), bob.id.clone()];
    expected.sort();
    assert_eq!(team["member_ids"], json!(expected));
    let (_, got) = hub.call(Method::GET, &team_path, t, None).await;
    assert_eq!(got["member_ids"], json!(expected));
    let (_, ann_now) = hub
        .call(Method::GET, &format!("/v1/admin/users/{}", ann.id), t, None)
        .await;
    assert_eq!(ann_now["team_ids"], json!([sales["id"]]));
    let f = foreign(&site).await;
    assert_error(
        &hub.call(
            Method::PUT,
            &members,
            t,
            Some(json!({"user_ids": [bob.id, f.user]})),
        )
        .await,
        422,
        "validation_failed",
        Some("user_ids[1]"),
    );
    assert_error(
        &hub.call(Method::PUT, &members, t, Some(json!({"users": []})))
            .await,
        422,
        "validation_failed",
        None,
    );
    let (_, team) = hub
        .call(
            Method::PUT,
            &members,
            t,
            Some(json!({"user_ids": [bob.id]})),
        )
        .await;
    assert_eq!(team["member_ids"], json!([bob.id]));

    // Other accounts' branches and teams are 404.
    for path in [
        format!("/v1/admin/branches/{}", f.branch),
        format!("/v1/admin/teams/{}", f.team),
    ] {
        assert_error(
            &hub.call(Method::GET, &path, t, None).await,
            404,
            "not_found",
            None,
        );
        assert_error(
            &hub.call(Method::PATCH, &path, t, Some(json!({"name": "Mine"})))
                .await,
            404,
            "not_found",
            None,
        );
    }
    assert_error(
        &hub.call(
            Method::PUT,
            &format!("/v1/admin/teams/{}/members", f.team),
            t,
            Some(json!({"user_ids": []})),
        )
        .await,
        404,
        "not_found",
        None,
    );
    let (_, all) = hub.call(Method::GET, "/v1/admin/teams", t, None).await;
    assert_eq!(all["data"].as_array().unwrap().len(), 1);

    hub.stop().await;
    site.cleanup().await;
}

async fn custom_roles_grant_exactly_their_permissions(backend: crate::helpers::Backend) {
    let site = Site::new(backend);
    let hub = TestHub::start(&site).await;
    let admin = site.user("super_admin", None, &[]).await;
    let t = admin.token.as_str();

    let (status, list) = hub.call(Method::GET, "/v1/admin/roles", t, None).await;
    assert_eq!(status, 200);
    let builtins: Vec<&Value> = list["data"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|r| r["builtin"] == true)
        .collect();
    assert_eq!(builtins.len(), 5);
    let agent = builtins.iter().find(|r| r["id"] == "agent").unwrap();
    assert_eq!(agent["name"], "agent");
    assert_eq!(
        agent["grants"],
        json!({"view_conversations": "assigned", "reply_to_customer": "assigned", "view_sla_reports": "self"})
    );

    let post = |body: Value| hub.call(Method::POST, "/v1/admin/roles", t, Some(body));
    assert_error(
        &post(json!({"name": "Auditor", "grants": {"manage_users": "team"}})).await,
        422,
        "validation_failed",
        Some("grants.manage_users"),
    );
    assert_error(
        &post(json!({"name": "Auditor", "grants": {"fly": "all"}})).await,
        422,
        "validation_failed",
        Some("grants.fly"),
    );
    assert_error(
        &post(json!({"name": "Auditor", "grants": []})).await,
        422,
        "validation_failed",
        Some("grants"),
    );
    assert_error(
        &post(json!({"name": "", "grants": {}})).await,
        422,
        "validation_failed",
        Some("name"),
    );
    assert_error(
        &post(json!({"name": "Super_Admin", "grants": {}})).await,
        409,
        "conflict",
        None,
    );
    let (status, role) = post(json!({"name": "Auditor", "description": "Reads the log", "grants": {"view_audit_log": "all"}})).await;
    assert_eq!(status, 201, "{role}");
    let role_id = role["id"].as_str().unwrap().to_owned();
    assert!(role_id.starts_with("rol_"));
    assert_eq!(
        (role["builtin"].clone(), role["grants"].clone()),
        (json!(false), json!({"view_audit_log": "all"}))
    );
    assert_error(
        &post(json!({"name": "Auditor", "grants": {}})).await,
        409,
        "conflict",
        None,
    );
    let (_, got) = hub
        .call(Method::GET, &format!("/v1/admin/roles/{role_id}"), t, None)
        .await;
    assert_eq!(got, role);

    // A user given the role has exactly its permissions, on the next request after a change.
    let auditor = site.user(&role_id, None, &[]).await;
    let (status, _) = hub
        .call(Method::GET, "/v1/audit", &auditor.token, None)
        .await;
    assert_eq!(status, 200);
    assert_error(
        &hub.call(Method::GET, "/v1/admin/users", &auditor.token, None)
            .await,
        403,
        "forbidden",
        None,
    );
    let path = format!("/v1/admin/roles/{role_id}");
    let (status, updated) = hub
        .call(
            Method::PATCH,
            &path,
            t,
            Some(json!({"grants": {"manage_users": "all"}})),
        )
        .await;
    assert_eq!(status, 200, "{updated}");
    assert_eq!(updated["description"], "Reads the log");
    let (status, _) = hub
        .call(Method::GET, "/v1/admin/users", &auditor.token, None)
        .await;
    assert_eq!(status, 200);
    assert_error(
        &hub.call(Method::GET, "/v1/audit", &auditor.token, None)
            .await,
        403,
        "forbidden",
        None,
    );
    // Its holder cannot take manage_users away from the role they hold.
    assert_error(
        &hub.call(
            Method::PATCH,
            &path,
            &auditor.token,
            Some(json!({"grants": {}})),
        )
        .await,
        422,
        "validation_failed",
        Some("grants"),
    );
    assert_error(
        &hub.call(
            Method::PATCH,
            &path,
            t,
            Some(json!({"grants": {"view_audit_log": "team"}})),
        )
        .await,
        422,
        "validation_failed",
        Some("grants.view_audit_log"),
    );
    assert_error(
        &hub.call(Method::PATCH, &path, t, Some(json!({"name": "agent"})))
            .await,
        409,
        "conflict",
        None,
    );

    // Built-ins are read-only.
    assert_error(
        &hub.call(
            Method::PATCH,
            "/v1/admin/roles/agent",
            t,
            Some(json!({"name": "x"})),
        )
        .await,
        409,
        "conflict",
        None,
    );
    assert_error(
        &hub.call(Method::DELETE, "/v1/admin/roles/super_admin", t, None)
            .await,
        409,
        "conflict",
        None,
    );

    // Deleting a role someone holds is refused; once nobody does, it goes.
    assert_error(
        &hub.call(Method::DELETE, &path, t, None).await,
        409,
        "conflict",
        None,
    );
    let (status, _) = hub
        .call(
            Method::PATCH,
            &format!("/v1/admin/users/{}", auditor.id),
            t,
            Some(json!({"role": "agent"})),
        )
        .await;
    assert_eq!(status, 200);
    let (status, key) = hub
        .call(
            Method::POST,
            "/v1/admin/api-keys",
            t,
            Some(json!({"name": "k", "role": role_id})),
        )
        .await;
    assert_eq!(status, 201, "{key}");
    assert_error(
        &hub.call(Method::DELETE, &path, t, None).await,
        409,
        "conflict",
        None,
    );
    let (status, _) = hub
        .call(
            Method::DELETE,
            &format!("/v1/admin/api-keys/{}", key["id"].as_str().unwrap()),
            t,
            None,
        )
        .await;
    assert_eq!(status, 200);
    let (status, _) = hub.call(Method::DELETE, &path, t, None).await;
    assert_eq!(status, 204);
    assert_error(
        &hub.call(Method::GET, &path, t, None).await,
        404,
        "not_found",
        None,
    );
    assert_error(
        &hub.call(Method::DELETE, &path, t, None).await,
        404,
        "not_found",
        None,
    );

    let f = foreign(&site).await;
    let theirs = format!("/v1/admin/roles/{}", f.role);
    assert_error(
        &hub.call(Method::GET, &theirs, t, None).await,
        404,
        "not_found",
        None,
    );
    assert_error(
        &hub.call(Method::PATCH, &theirs, t, Some(json!({"name": "Mine"})))
            .await,
        404,
        "not_found",
        None,
    );
    assert_error(
        &hub.call(Method::DELETE, &theirs, t, None).await,
        404,
        "not_found",
        None,
    );
    let (_, list) = hub.call(Method::GET, "/v1/admin/roles", t, None).await;
    assert_eq!(list["data"].as_array().unwrap().len(), 5, "{list}");

    hub.stop().await;
    site.cleanup().await;
}

async fn api_keys_work_until_revoked(backend: crate::helpers::Backend) {
    let site = Site::new(backend);
    let hub = TestHub::start(&site).await;
    let admin = site.user("super_admin", None, &[]).await;
    let t = admin.token.as_str();
    let post = |body: Value| hub.call(Method::POST, "/v1/admin/api-keys", t, Some(body));
    assert_error(
        &post(json!({"name": "ci", "role": "root"})).await,
        422,
        "validation_failed",
        Some("role"),
    );
    assert_error(
        &post(json!({"name": "ci", "role": "operations", "expires_at": "2020-01-01T00:00:00Z"}))
            .await,
        422,
        "validation_failed",
        Some("expires_at"),
    );
    assert_error(
        &post(json!({"name": "ci", "role": "operations", "expires_at": 1000})).await,
        422,
        "validation_failed",
        Some("expires_at"),
    );
    assert_error(
        &post(json!({"name": "ci", "role": "operations", "expires_at": "next week"})).await,
        422,
        "validation_failed",
        Some("expires_at"),
    );
    assert_error(
        &post(json!({"role": "operations"})).await,
        422,
        "validation_failed",
        None,
    );

    let (status, created) =
        post(json!({"name": "ci", "role": "operations", "expires_at": "2999-01-01T00:00:00Z"}))
            .await;
    assert_eq!(status, 201, "{created}");
    let key = created["key"].as_str().unwrap().to_owned();
    let id = created["id"].as_str().unwrap().to_owned();
    assert!(key.starts_with(&format!("sbk_{}_", created["prefix"].as_str().unwrap())));
    assert!(id.starts_with("key_"));
    assert_eq!(created["role"], "operations");
    assert_eq!(created["expires_at"], json!(32_472_144_000_000_i64));
    assert_eq!(created["created_by"], admin.id);

    // The key works with its role's permissions, and its use is recorded.
    let (status, _) = hub.call(Method::GET, "/v1/audit", &key, None).await;
    assert_eq!(status, 200);
    assert_error(
        &hub.call(Method::GET, "/v1/admin/users", &key, None).await,
        403,
        "forbidden",
        None,
    );
    let path = format!("/v1/admin/api-keys/{id}");
    let (status, record) = hub.call(Method::GET, &path, t, None).await;
    assert_eq!(status, 200, "{record}");
    assert!(record["last_used_at"].as_i64().unwrap() >= record["created_at"].as_i64().unwrap());
    assert!(record["revoked_at"].is_null());
    assert!(record.get("key").is_none() && record.get("key_hash").is_none());

    let (_, list) = hub.call(Method::GET, "/v1/admin/api-keys", t, None).await;
    let listed = list["data"].as_array().unwrap();
    assert_eq!(listed.len(), 2, "the harness key and this one: {list}");
    assert!(!list.to_string().contains(&key));
    for k in listed {
        for field in [
            "id",
            "name",
            "role",
            "prefix",
            "created_at",
            "created_by",
            "expires_at",
            "revoked_at",
            "last_used_at",
        ] {
            assert!(k.get(field).is_some(), "{field} missing: {k}");
        }
        assert!(k.get("key_hash").is_none());
    }
    // Ms expiry works too.
    let (status, _) =
        post(json!({"name": "ms", "role": "agent", "expires_at": 32_472_144_000_000_i64})).await;
    assert_eq!(status, 201);

    // Revocation takes effect on the very next request.
    let (status, revoked) = hub.call(Method::DELETE, &path, t, None).await;
    assert_eq!(status, 200, "{revoked}");
    assert!(revoked["revoked_at"].is_i64());
    assert_error(
        &hub.call(Method::GET, "/v1/audit", &key, None).await,
        401,
        "invalid_api_key",
        None,
    );
    assert_error(
        &hub.call(Method::DELETE, &path, t, None).await,
        409,
        "conflict",
        None,
    );

    let f = foreign(&site).await;
    let theirs = format!("/v1/admin/api-keys/{}", f.key);
    assert_error(
        &hub.call(Method::GET, &theirs, t, None).await,
        404,
        "not_found",
        None,
    );
    assert_error(
        &hub.call(Method::DELETE, &theirs, t, None).await,
        404,
        "not_found",
        None,
    );
    assert_error(
        &hub.call(Method::GET, "/v1/admin/api-keys/key_nope", t, None)
            .await,
        404,
        "not_found",
        None,
    );
    assert_error(
        &hub.call(Method::GET, "/v1/admin/api-keys?cursor=usr_1", t, None)
            .await,
        422,
        "validation_failed",
        Some("cursor"),
    );

    hub.stop().await;
    site.cleanup().await;
}
