//! The audit log: a record per admin mutation (with actor, snapshots, client and correlation
//! id), filters and paging, the CSV export, and the database refusing to change the log.

use std::collections::BTreeSet;

use reqwest::Method;
use serde_json::{Value, json};

use crate::admin::{USER_AGENT, assert_error, send_traced};
use crate::helpers::{Backend, Site, TestHub};
use crate::on_both_backends;

on_both_backends!(
    every_admin_mutation_is_audited,
    audit_filters_and_paging,
    audit_exports_csv,
    audit_log_is_append_only,
);

/// The audit records of the default account matching `query`, all pages.
async fn audit(hub: &TestHub, query: &str) -> Vec<Value> {
    let mut all = Vec::new();
    let mut cursor: Option<String> = None;
    loop {
        let path = match &cursor {
            Some(c) => format!("/v1/audit?limit=100&{query}&cursor={c}"),
            None => format!("/v1/audit?limit=100&{query}"),
        };
        let (status, body) = hub.get(&path).await;
        assert_eq!(status, 200, "{body}");
        all.extend(body["data"].as_array().unwrap().iter().cloned());
        match body["next_cursor"].as_str() {
            Some(c) => cursor = Some(c.to_owned()),
            None => return all,
        }
    }
}

async fn every_admin_mutation_is_audited(backend: Backend) {
    let site = Site::new(backend);
    let hub = TestHub::start(&site).await;
    let admin = site.user("super_admin", None, &[]).await;
    let t = admin.token.as_str();
    // Each mutation carries its own correlation id; the record must carry the same.
    let mut n = 0;
    let mut step = |method: Method, path: String, body: Option<Value>, expect: u16| {
        n += 1;
        let correlation = format!("corr-{n}");
        let hub = &hub;
        async move {
            let (status, json) = send_traced(hub, method, &path, t, body, &correlation).await;
            assert_eq!(status, expect, "{path}: {json}");
            (json, correlation)
        }
    };

    let (branch, c_branch) = step(
        Method::POST,
        "/v1/admin/branches".into(),
        Some(json!({"name": "North"})),
        201,
    )
    .await;
    let branch_id = branch["id"].as_str().unwrap().to_owned();
    step(
        Method::PATCH,
        format!("/v1/admin/branches/{branch_id}"),
        Some(json!({"name": "North East"})),
        200,
    )
    .await;
    let (team, _) = step(
        Method::POST,
        "/v1/admin/teams".into(),
        Some(json!({"name": "Sales"})),
        201,
    )
    .await;
    let team_id = team["id"].as_str().unwrap().to_owned();
    step(
        Method::PATCH,
        format!("/v1/admin/teams/{team_id}"),
        Some(json!({"branch_id": branch_id})),
        200,
    )
    .await;
    let password = "Tangerine-Kite-42";
    let (user, c_user) = step(
        Method::POST,
        "/v1/admin/users".into(),
        Some(
            json!({"email": format!("{}@example.com", ulid::Ulid::new()),
        "name": "Ada", "password": password, "role": "agent"}),
        ),
        201,
    )
    .await;
    let user_id = user["id"].as_str().unwrap().to_owned();
    step(
        Method::PUT,
        format!("/v1/admin/teams/{team_id}/members"),
        Some(json!({"user_ids": [user_id]})),
        200,
    )
    .await;
    let (_, c_update) = step(
        Method::PATCH,
        format!("/v1/admin/users/{user_id}"),
        Some(json!({"name": "Ada L."})),
        200,
    )
    .await;
    step(
        Method::POST,
        format!("/v1/admin/users/{user_id}/password"),
        Some(json!({"password": "Marmalade-Orbit-77"})),
        204,
    )
    .await;
    step(
        Method::PATCH,
        format!("/v1/admin/users/{user_id}"),
        Some(json!({"active": false})),
        200,
    )
    .await;
    let (role, _) = step(
        Method::POST,
        "/v1/admin/roles".into(),
        Some(json!({"name": "Auditor", "grants": {"view_audit_log": "all"}})),
        201,
    )
    .await;
    let role_id = role["id"].as_str().unwrap().to_owned();
    step(
        Method::PATCH,
        format!("/v1/admin/roles/{role_id}"),
        Some(json!({"description": "reads"})),
        200,
    )
    .await;
    step(
        Method::DELETE,
        format!("/v1/admin/roles/{role_id}"),
        None,
        204,
    )
    .await;
    let (key, c_key) = step(
        Method::POST,
        "/v1/admin/api-keys".into(),
        Some(json!({"name": "ci", "role": "agent"})),
        201,
    )
    .await;
    let key_id = key["id"].as_str().unwrap().to_owned();
    step(
        Method::DELETE,
        format!("/v1/admin/api-keys/{key_id}"),
        None,
        200,
    )
    .await;
    // Refused mutations write nothing.
    step(
        Method::POST,
        "/v1/admin/branches".into(),
        Some(json!({"name": "North East"})),
        409,
    )
    .await;
    step(
        Method::PATCH,
        format!("/v1/admin/users/{}", admin.id),
        Some(json!({"active": false})),
        422,
    )
    .await;

    let records = audit(&hub, "").await;
    let actions: BTreeSet<&str> = records
        .iter()
        .map(|r| r["action"].as_str().unwrap())
        .collect();
    let expected: BTreeSet<&str> = [
        "branch.created",
        "branch.updated",
        "team.created",
        "team.updated",
        "team.members_replaced",
        "user.created",
        "user.updated",
        "user.password_reset",
        "user.deactivated",
        "role.created",
        "role.updated",
        "role.deleted",
        "api_key.created",
        "api_key.revoked",
    ]
    .into_iter()
    .collect();
    assert_eq!(actions, expected);
    assert_eq!(
        records.len(),
        expected.len(),
        "one record per successful mutation"
    );
    for r in &records {
        assert_eq!(r["actor_type"], "user", "{r}");
        assert_eq!(r["actor_id"], admin.id, "{r}");
        assert_eq!(r["ip"], "127.0.0.1", "{r}");
        assert_eq!(r["user_agent"], USER_AGENT, "{r}");
        assert!(
            r["correlation_id"].as_str().unwrap().starts_with("corr-"),
            "{r}"
        );
        assert!(
            r["after"].is_object() || r["action"] == "role.deleted",
            "{r}"
        );
        let text = r.to_string();
        for secret in [
            "argon2",
            password,
            "Marmalade-Orbit-77",
            "password_hash",
            "key_hash",
            key["key"].as_str().unwrap(),
        ] {
            assert!(!text.contains(secret), "{secret} leaked: {r}");
        }
    }
    let find = |action: &str| {
        records
            .iter()
            .find(|r| r["action"] == action)
            .unwrap()
            .clone()
    };
    let created = find("branch.created");
    assert_eq!(
        (
            created["entity_type"].as_str(),
            created["entity_id"].as_str()
        ),
        (Some("branch"), Some(branch_id.as_str()))
    );
    assert_eq!(created["correlation_id"], c_branch);
    assert!(created["before"].is_null());
    assert_eq!(created["after"]["name"], "North");
    let renamed = find("branch.updated");
    assert_eq!(
        (
            renamed["before"]["name"].as_str(),
            renamed["after"]["name"].as_str()
        ),
        (Some("North"), Some("North East"))
    );
    let user_created = find("user.created");
    assert_eq!(user_created["correlation_id"], c_user);
    assert_eq!(user_created["after"]["id"], user_id);
    let updated = find("user.updated");
    assert_eq!(updated["correlation_id"], c_update);
    assert_eq!(
        (
            updated["before"]["name"].as_str(),
            updated["after"]["name"].as_str()
        ),
        (Some("Ada"), Some("Ada L."))
    );
    let deactivated = find("user.deactivated");
    assert_eq!(
        (
            deactivated["before"]["active"].clone(),
            deactivated["after"]["active"].clone()
        ),
        (json!(true), json!(false))
    );
    let members = find("team.members_replaced");
    assert_eq!(
        (
            members["before"]["member_ids"].clone(),
            members["after"]["member_ids"].clone()
        ),
        (json!([]), json!([user_id]))
    );
    let deleted = find("role.deleted");
    assert_eq!(deleted["before"]["name"], "Auditor");
    assert!(deleted["after"].is_null());
    let key_created = find("api_key.created");
    assert_eq!(key_created["correlation_id"], c_key);
    assert_eq!(key_created["after"]["prefix"], key["prefix"]);
    let revoked = find("api_key.revoked");
    assert!(revoked["before"]["revoked_at"].is_null() && revoked["after"]["revoked_at"].is_i64());

    // An API key's own mutations are attributed to the key.
    let (status, _) = hub
        .call(
            Method::POST,
            "/v1/admin/branches",
            &hub.key,
            Some(json!({"name": "By key"})),
        )
        .await;
    assert_eq!(status, 201);
    let by_key = audit(&hub, "action=branch.created").await;
    assert_eq!(by_key[0]["actor_type"], "api_key");
    assert!(by_key[0]["actor_id"].as_str().unwrap().starts_with("key_"));

    hub.stop().await;
    site.cleanup().await;
}

async fn audit_filters_and_paging(backend: Backend) {
    let site = Site::new(backend);
    let hub = TestHub::start(&site).await;
    let admin = site.user("super_admin", None, &[]).await;
    let other_admin = site.user("super_admin", None, &[]).await;
    let mut branch_ids = Vec::new();
    for i in 0..5 {
        let (status, b) = hub
            .call(
                Method::POST,
                "/v1/admin/branches",
                &admin.token,
                Some(json!({"name": format!("B{i}")})),
            )
            .await;
        assert_eq!(status, 201);
        branch_ids.push(b["id"].as_str().unwrap().to_owned());
    }
    let (status, _) = hub
        .call(
            Method::POST,
            "/v1/admin/teams",
            &other_admin.token,
            Some(json!({"name": "T"})),
        )
        .await;
    assert_eq!(status, 201);

    assert_eq!(audit(&hub, "action=branch.created").await.len(), 5);
    assert_eq!(audit(&hub, "entity_type=team").await.len(), 1);
    let one = audit(&hub, &format!("entity_id={}", branch_ids[2])).await;
    assert_eq!(
        (one.len(), one[0]["entity_id"].as_str()),
        (1, Some(branch_ids[2].as_str()))
    );
    let by_other = audit(&hub, &format!("actor_id={}", other_admin.id)).await;
    assert_eq!(
        (by_other.len(), by_other[0]["action"].as_str()),
        (1, Some("team.created"))
    );
    assert_eq!(audit(&hub, "since=2999-01-01T00:00:00Z").await.len(), 0);
    assert_eq!(audit(&hub, "until=2000-01-01T00:00:00Z").await.len(), 0);
    assert_eq!(
        audit(
            &hub,
            "since=2000-01-01T00:00:00Z&until=2999-01-01T00:00:00%2B02:00"
        )
        .await
        .len(),
        6
    );

    // Paging: newest first, pages partition the set.
    let mut seen = Vec::new();
    let mut cursor: Option<String> = None;
    let mut pages = 0;
    loop {
        let path = match &cursor {
            Some(c) => format!("/v1/audit?limit=2&cursor={c}"),
            None => "/v1/audit?limit=2".to_owned(),
        };
        let (status, body) = hub.get(&path).await;
        assert_eq!(status, 200, "{body}");
        pages += 1;
        seen.extend(
            body["data"]
                .as_array()
                .unwrap()
                .iter()
                .map(|r| r["id"].as_str().unwrap().to_owned()),
        );
        match body["next_cursor"].as_str() {
            Some(c) => cursor = Some(c.to_owned()),
            None => break,
        }
    }
    assert_eq!((pages, seen.len()), (3, 6));
    let mut sorted = seen.clone();
    sorted.sort();
    sorted.reverse();
    assert_eq!(seen, sorted, "ids (ULIDs, time-ordered) descend");
    sorted.dedup();
    assert_eq!(sorted.len(), 6);

    let get = |path: &'static str| hub.get(path);
    assert_error(
        &get("/v1/audit?since=yesterday").await,
        422,
        "validation_failed",
        Some("since"),
    );
    assert_error(
        &get("/v1/audit?until=2025-13-01T00:00:00Z").await,
        422,
        "validation_failed",
        Some("until"),
    );
    assert_error(
        &get("/v1/audit?since=2025-01-02T00:00:00Z&until=2025-01-01T00:00:00Z").await,
        422,
        "validation_failed",
        Some("until"),
    );
    assert_error(
        &get("/v1/audit?cursor=usr_1").await,
        422,
        "validation_failed",
        Some("cursor"),
    );
    assert_error(
        &get("/v1/audit?limit=101").await,
        422,
        "validation_failed",
        Some("limit"),
    );
    assert_error(
        &get("/v1/audit?who=me").await,
        422,
        "validation_failed",
        None,
    );

    // Only view_audit_log opens it; another account's records are not in it.
    let agent = site.user("agent", None, &[]).await;
    assert_error(
        &hub.call(Method::GET, "/v1/audit", &agent.token, None).await,
        403,
        "forbidden",
        None,
    );
    assert_error(
        &hub.call(Method::GET, "/v1/audit/export.csv", &agent.token, None)
            .await,
        403,
        "forbidden",
        None,
    );
    let f = crate::admin::foreign(&site).await;
    let store = site.store().await;
    let mut conn = store.pool().acquire().await.unwrap();
    let mut record = switchboard::store::audit::AuditRecord::new(
        Some(switchboard::ids::from_slug(
            switchboard::ids::ACCOUNT,
            "other",
        )),
        switchboard::store::audit::Actor::System,
        "branch.created",
        "branch",
        Some(&f.branch),
        &Default::default(),
    );
    record.after = Some(json!({"name": "Elsewhere"}));
    switchboard::store::audit::append(&mut conn, &record)
        .await
        .unwrap();
    drop(conn);
    store.close().await;
    assert_eq!(audit(&hub, "action=branch.created").await.len(), 5);
    assert!(
        audit(&hub, &format!("entity_id={}", f.branch))
            .await
            .is_empty()
    );

    hub.stop().await;
    site.cleanup().await;
}

async fn audit_exports_csv(backend: Backend) {
    let site = Site::new(backend);
    let hub = TestHub::start(&site).await;
    let admin = site.user("super_admin", None, &[]).await;
    for name in ["One", "Two, with a comma", "Three \"quoted\""] {
        let (status, _) = send_traced(
            &hub,
            Method::POST,
            "/v1/admin/branches",
            &admin.token,
            Some(json!({"name": name})),
            "corr-csv",
        )
        .await;
        assert_eq!(status, 201);
    }
    let (status, _) = hub
        .call(
            Method::POST,
            "/v1/admin/teams",
            &admin.token,
            Some(json!({"name": "T"})),
        )
        .await;
    assert_eq!(status, 201);

    let export = |query: &str| {
        let url = hub.url(&format!("/v1/audit/export.csv{query}"));
        let request = hub.client.get(url).bearer_auth(&hub.key);
        async move { request.send().await.unwrap() }
    };
    let r = export("?action=branch.created").await;
    assert_eq!(r.status().as_u16(), 200);
    let headers = r.headers().clone();
    assert!(
        headers["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/csv")
    );
    assert_eq!(headers["x-export-row-cap"], "100000");
    assert_eq!(headers["x-export-truncated"], "false");
    let body = r.text().await.unwrap();
    let mut reader = csv::Reader::from_reader(body.as_bytes());
    let header: Vec<String> = reader
        .headers()
        .unwrap()
        .iter()
        .map(str::to_owned)
        .collect();
    assert_eq!(
        header,
        [
            "id",
            "at",
            "actor_type",
            "actor_id",
            "action",
            "entity_type",
            "entity_id",
            "ip",
            "user_agent",
            "correlation_id",
            "before",
            "after"
        ]
    );
    let rows: Vec<csv::StringRecord> = reader.records().map(Result::unwrap).collect();
    assert_eq!(rows.len(), 3);
    let api = audit(&hub, "action=branch.created").await;
    let mut names = BTreeSet::new();
    for (row, record) in rows.iter().zip(&api) {
        assert_eq!(
            &row[0],
            record["id"].as_str().unwrap(),
            "same order as the API"
        );
        let at =
            time::OffsetDateTime::parse(&row[1], &time::format_description::well_known::Rfc3339)
                .unwrap();
        assert_eq!(
            (at.unix_timestamp_nanos() / 1_000_000) as i64,
            record["at"].as_i64().unwrap()
        );
        assert_eq!(
            (&row[2], &row[3], &row[4], &row[5]),
            ("user", admin.id.as_str(), "branch.created", "branch")
        );
        assert_eq!(
            (&row[7], &row[8], &row[9]),
            ("127.0.0.1", USER_AGENT, "corr-csv")
        );
        assert_eq!(&row[10], "");
        let after: Value = serde_json::from_str(&row[11]).unwrap();
        assert_eq!(after, record["after"]);
        names.insert(after["name"].as_str().unwrap().to_owned());
    }
    assert!(names.contains("Two, with a comma") && names.contains("Three \"quoted\""));

    // No filter: everything; a filter matching nothing: the header alone.
    let all = export("").await.text().await.unwrap();
    assert_eq!(
        csv::Reader::from_reader(all.as_bytes()).records().count(),
        4
    );
    let none = export("?since=2999-01-01T00:00:00Z")
        .await
        .text()
        .await
        .unwrap();
    assert_eq!(none.lines().count(), 1);
    let bad = export("?until=never").await;
    assert_eq!(bad.status().as_u16(), 422);
    let bad: Value = bad.json().await.unwrap();
    assert_eq!(bad["error"]["details"][0]["field"], "until");

    hub.stop().await;
    site.cleanup().await;
}

async fn audit_log_is_append_only(backend: Backend) {
    let site = Site::new(backend);
    let hub = TestHub::start(&site).await;
    let (status, branch) = hub
        .call(
            Method::POST,
            "/v1/admin/branches",
            &hub.key,
            Some(json!({"name": "Kept"})),
        )
        .await;
    assert_eq!(status, 201);
    let records = audit(&hub, "").await;
    assert_eq!(records.len(), 1);
    let id = records[0]["id"].as_str().unwrap();

    let store = site.store().await;
    let update =
        sqlx::query("UPDATE audit_log SET action = 'branch.forged', after = NULL WHERE id = $1")
            .bind(id)
            .execute(store.pool())
            .await;
    assert!(update.is_err(), "UPDATE must be refused: {update:?}");
    assert!(update.unwrap_err().to_string().contains("append-only"));
    let delete = sqlx::query("DELETE FROM audit_log WHERE id = $1")
        .bind(id)
        .execute(store.pool())
        .await;
    assert!(delete.is_err(), "DELETE must be refused: {delete:?}");
    let delete_all = sqlx::query("DELETE FROM audit_log")
        .execute(store.pool())
        .await;
    assert!(
        delete_all.is_err(),
        "DELETE must be refused: {delete_all:?}"
    );
    store.close().await;

    let after = audit(&hub, "").await;
    assert_eq!(after, records, "the row is unchanged");
    assert_eq!(after[0]["after"]["id"], branch["id"]);

    hub.stop().await;
    site.cleanup().await;
}
