//! Agents as routable resources, on both backends: the skill catalogue, routing profiles
//! (validation, audit, the live load left alone) and presence with heartbeats and staleness.

use reqwest::Method;
use serde_json::{Value, json};
use sqlx::Row;
use switchboard::store::audit::AuditFilter;

use crate::admin::{assert_error, foreign};
use crate::helpers::*;
use crate::on_both_backends;

on_both_backends!(
    skills_and_profiles_are_administered_with_their_rules,
    presence_follows_status_and_heartbeats,
);

const SKILLS: &str = "/v1/admin/skills";

fn profile_path(user_id: &str) -> String {
    format!("/v1/admin/agents/{user_id}/profile")
}

async fn skills_and_profiles_are_administered_with_their_rules(backend: Backend) {
    let site = Site::new(backend);
    let hub = TestHub::start(&site).await;
    let admin = site.user("super_admin", None, &[]).await;
    let agent = site.user("agent", None, &[]).await;
    let call = |method: Method, path: String, token: String, body: Option<Value>| {
        let hub = &hub;
        async move { hub.call(method, &path, &token, body).await }
    };
    let admin_call = |method: Method, path: &str, body: Option<Value>| {
        call(method, path.to_owned(), admin.token.clone(), body)
    };

    // The catalogue: create, refuse a duplicate and a bad name, list.
    for name in ["billing", "vip"] {
        let (status, body) = admin_call(Method::POST, SKILLS, Some(json!({ "name": name }))).await;
        assert_eq!(status, 201, "{body}");
        assert_eq!(body["name"], name);
    }
    let dup = admin_call(Method::POST, SKILLS, Some(json!({ "name": "billing" }))).await;
    assert_error(&dup, 409, "conflict", Some("name"));
    let bad = admin_call(Method::POST, SKILLS, Some(json!({ "name": "Bad Name" }))).await;
    assert_error(&bad, 422, "validation_failed", Some("name"));
    let (status, list) = admin_call(Method::GET, SKILLS, None).await;
    assert_eq!(status, 200, "{list}");
    let names: Vec<&str> = list["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["billing", "vip"]);

    // A profile round trip.
    let profile = json!({
        "skills": { "billing": 3 },
        "languages": { "es": 2, "pt-br": 5 },
        "capacity": { "whatsapp": 4, "sms": 6, "webchat": 3 },
    });
    let (status, put) =
        admin_call(Method::PUT, &profile_path(&agent.id), Some(profile.clone())).await;
    assert_eq!(status, 200, "{put}");
    let (status, got) =
        admin_call(Method::GET, &format!("/v1/admin/agents/{}", agent.id), None).await;
    assert_eq!(status, 200, "{got}");
    assert_eq!(got, put);
    assert_eq!(got["user_id"], agent.id.as_str());
    for key in ["skills", "languages", "capacity"] {
        assert_eq!(got[key], profile[key], "{key}");
    }
    assert_eq!(
        got["active"],
        json!({ "whatsapp": 0, "sms": 0, "webchat": 0 })
    );
    assert_eq!(got["presence"]["status"], "offline");
    let (status, all) = admin_call(Method::GET, "/v1/admin/agents", None).await;
    assert_eq!(status, 200, "{all}");
    let listed = all["data"]
        .as_array()
        .unwrap()
        .iter()
        .find(|a| a["user_id"] == agent.id.as_str())
        .expect("the agent is listed");
    assert_eq!(listed, &got);
    assert!(
        all["data"]
            .as_array()
            .unwrap()
            .iter()
            .any(|a| a["user_id"] == admin.id.as_str()),
        "every active user is an agent"
    );

    // A held skill cannot leave the catalogue; a missing one is 404.
    let held = admin_call(Method::DELETE, &format!("{SKILLS}/billing"), None).await;
    assert_error(&held, 409, "conflict", None);
    let missing = admin_call(Method::DELETE, &format!("{SKILLS}/nope"), None).await;
    assert_error(&missing, 404, "not_found", None);

    // Every validation error names its field, and changes nothing.
    for (body, field) in [
        (json!({ "skills": { "billing": 6 } }), "skills.billing"),
        (json!({ "skills": { "billing": -1 } }), "skills.billing"),
        (json!({ "skills": { "billing": 2.5 } }), "skills.billing"),
        (json!({ "skills": { "juggling": 1 } }), "skills.juggling"),
        (json!({ "capacity": { "fax": 1 } }), "capacity.fax"),
        (json!({ "capacity": { "sms": -1 } }), "capacity.sms"),
        (json!({ "capacity": { "sms": 101 } }), "capacity.sms"),
        (
            json!({ "languages": { "Spanish!": 1 } }),
            "languages.Spanish!",
        ),
        (json!({ "languages": { "es": 7 } }), "languages.es"),
        (json!({ "teams": [] }), "teams"),
    ] {
        let got = admin_call(Method::PUT, &profile_path(&agent.id), Some(body.clone())).await;
        assert_error(&got, 422, "validation_failed", Some(field));
    }
    let (_, unchanged) =
        admin_call(Method::GET, &format!("/v1/admin/agents/{}", agent.id), None).await;
    assert_eq!(unchanged, got);

    // Another account's user, and a user that does not exist, are 404.
    let stranger = foreign(&site).await;
    for path in [
        format!("/v1/admin/agents/{}", stranger.user),
        "/v1/admin/agents/usr_nobody".to_owned(),
    ] {
        let read = admin_call(Method::GET, &path, None).await;
        assert_error(&read, 404, "not_found", None);
        let write = admin_call(Method::PUT, &format!("{path}/profile"), Some(json!({}))).await;
        assert_error(&write, 404, "not_found", None);
    }

    // An agent (no configure_routing) is refused every admin route.
    for (method, path, body) in [
        (
            Method::POST,
            SKILLS.to_owned(),
            Some(json!({ "name": "x" })),
        ),
        (Method::GET, SKILLS.to_owned(), None),
        (Method::DELETE, format!("{SKILLS}/vip"), None),
        (Method::GET, "/v1/admin/agents".to_owned(), None),
        (Method::GET, format!("/v1/admin/agents/{}", agent.id), None),
        (Method::PUT, profile_path(&agent.id), Some(profile.clone())),
    ] {
        let got = call(method.clone(), path.clone(), agent.token.clone(), body).await;
        assert_error(&got, 403, "forbidden", None);
    }

    // The live load is the engine's: a capacity change leaves it alone.
    let store = site.store().await;
    sqlx::query("UPDATE agent_load SET active = 2 WHERE user_id = $1 AND channel = 'sms'")
        .bind(&agent.id)
        .execute(store.pool())
        .await
        .unwrap();
    let smaller = json!({ "languages": { "es": 2 }, "capacity": { "sms": 1 } });
    let (status, after) = admin_call(Method::PUT, &profile_path(&agent.id), Some(smaller)).await;
    assert_eq!(status, 200, "{after}");
    assert_eq!(after["skills"], json!({}));
    assert_eq!(
        after["capacity"],
        json!({ "whatsapp": 0, "sms": 1, "webchat": 0 })
    );
    assert_eq!(after["active"]["sms"], 2, "{after}");

    // One audit record per change, with before and after, by the admin.
    let account = store.ensure_account("default").await.unwrap();
    let filter = AuditFilter {
        action: Some("agent.profile_updated".to_owned()),
        entity_id: Some(agent.id.clone()),
        ..AuditFilter::default()
    };
    let records = store.list_audit(&account, &filter, None, 10).await.unwrap();
    assert_eq!(records.len(), 2, "{records:?}");
    let (last, first) = (&records[0], &records[1]);
    assert_eq!(first.actor_id.as_deref(), Some(admin.id.as_str()));
    assert_eq!(first.entity_type, "agent");
    let first_before = first.before.as_ref().unwrap();
    assert_eq!(first_before["skills"], json!({}));
    assert_eq!(first_before["capacity"]["whatsapp"], 0);
    assert_eq!(
        first.after.as_ref().unwrap()["skills"],
        json!({ "billing": 3 })
    );
    assert_eq!(last.before, first.after);
    assert_eq!(last.after.as_ref().unwrap()["capacity"]["sms"], 1);
    let skill_records = AuditFilter {
        entity_type: Some("skill".to_owned()),
        ..AuditFilter::default()
    };
    assert_eq!(
        store
            .list_audit(&account, &skill_records, None, 10)
            .await
            .unwrap()
            .len(),
        2,
        "skill.created twice"
    );
    // On PostgreSQL, the new tables are behind the row-level security wall too.
    if backend == Backend::Distributed {
        for table in [
            "skills",
            "agent_skills",
            "agent_languages",
            "agent_load",
            "presence",
        ] {
            let row = sqlx::query(
                "SELECT c.relrowsecurity::text, c.relforcerowsecurity::text, \
                 (SELECT COUNT(*) FROM pg_policies p WHERE p.schemaname = $1 \
                  AND p.tablename = $2 AND p.policyname = 'account_wall') \
                 FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace \
                 WHERE n.nspname = $1 AND c.relname = $2",
            )
            .bind(&site.schema)
            .bind(table)
            .fetch_one(store.pool())
            .await
            .unwrap();
            let (enabled, forced, policies): (String, String, i64) =
                (row.get(0), row.get(1), row.get(2));
            assert_eq!(
                (enabled.as_str(), forced.as_str(), policies),
                ("true", "true", 1),
                "{table}"
            );
        }
    }
    store.close().await;

    // Once nobody holds it, the skill goes.
    let (status, _) = admin_call(Method::DELETE, &format!("{SKILLS}/billing"), None).await;
    assert_eq!(status, 204);
    let (_, list) = admin_call(Method::GET, SKILLS, None).await;
    assert_eq!(list["data"].as_array().unwrap().len(), 1, "{list}");

    hub.stop().await;
    site.cleanup().await;
}

async fn presence_follows_status_and_heartbeats(backend: Backend) {
    let site = Site::new(backend);
    let hub = TestHub::start_with(&site, "[routing]\npresence_timeout_secs = 5").await;
    let agent = site.user("agent", None, &[]).await;
    let me = || async {
        hub.call(Method::GET, "/v1/agents/me", &agent.token, None)
            .await
    };

    // Never set: offline.
    let (status, body) = me().await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["user_id"], agent.id.as_str());
    assert_eq!(body["presence"]["status"], "offline");

    // Online, and a heartbeat keeps it.
    let (status, set) = hub
        .call(
            Method::PUT,
            "/v1/agents/me/presence",
            &agent.token,
            Some(json!({ "status": "online" })),
        )
        .await;
    assert_eq!(status, 200, "{set}");
    assert_eq!(set["status"], "online");
    assert_eq!(me().await.1["presence"]["status"], "online");
    let (status, _) = hub
        .call(Method::POST, "/v1/agents/me/heartbeat", &agent.token, None)
        .await;
    assert_eq!(status, 204);
    let (_, body) = me().await;
    assert_eq!(body["presence"]["status"], "online");
    assert_eq!(body["presence"]["chosen_status"], "online");

    // A heartbeat older than the timeout reads offline, to the agent and to admins.
    let store = site.store().await;
    let old = body["presence"]["heartbeat_at_ms"].as_i64().unwrap() - 6_000;
    sqlx::query("UPDATE presence SET heartbeat_at = $1 WHERE user_id = $2")
        .bind(old)
        .bind(&agent.id)
        .execute(store.pool())
        .await
        .unwrap();
    store.close().await;
    let (_, body) = me().await;
    assert_eq!(body["presence"]["status"], "offline", "{body}");
    assert_eq!(body["presence"]["chosen_status"], "online");
    let (_, seen) = hub
        .call(
            Method::GET,
            &format!("/v1/admin/agents/{}", agent.id),
            &hub.key,
            None,
        )
        .await;
    assert_eq!(seen["presence"]["status"], "offline", "{seen}");

    // The next heartbeat revives the chosen status; away is kept the same way.
    let (status, _) = hub
        .call(Method::POST, "/v1/agents/me/heartbeat", &agent.token, None)
        .await;
    assert_eq!(status, 204);
    assert_eq!(me().await.1["presence"]["status"], "online");
    let (_, away) = hub
        .call(
            Method::PUT,
            "/v1/agents/me/presence",
            &agent.token,
            Some(json!({ "status": "away" })),
        )
        .await;
    assert_eq!(away["status"], "away");

    // Bad statuses are 422 naming `status`.
    for body in [
        json!({ "status": "busy" }),
        json!({}),
        json!({ "status": 1 }),
    ] {
        let got = hub
            .call(
                Method::PUT,
                "/v1/agents/me/presence",
                &agent.token,
                Some(body),
            )
            .await;
        assert_error(&got, 422, "validation_failed", Some("status"));
    }

    // API keys have no user: 403 on every own-presence route.
    for (method, path, body) in [
        (Method::GET, "/v1/agents/me", None),
        (
            Method::PUT,
            "/v1/agents/me/presence",
            Some(json!({ "status": "online" })),
        ),
        (Method::POST, "/v1/agents/me/heartbeat", None),
    ] {
        let got = hub.call(method, path, &hub.key, body).await;
        assert_error(&got, 403, "forbidden", None);
    }

    hub.stop().await;
    site.cleanup().await;
}
