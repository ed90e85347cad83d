//! Routing rules over admin REST, on both backends: the CRUD and reorder round trip with its
//! audit trail, expressions refused with field, line and column before anything is written,
//! validate, and the simulation of which agents a conversation would reach.

use reqwest::Method;
use serde_json::{Value, json};
use sqlx::Row;
use switchboard::store::audit::AuditFilter;
use switchboard::store::org;

use crate::admin::assert_error;
use crate::helpers::*;
use crate::on_both_backends;

on_both_backends!(
    rules_round_trip_with_audit_and_refuse_bad_expressions,
    simulate_finds_the_rule_and_the_eligible_agents,
);

const RULES: &str = "/v1/admin/routing-rules";
const BILLING_TARGET: &str = r#"skill("billing") >= 3 and team == "payments""#;

fn rule_body(name: &str) -> Value {
    json!({
        "name": name,
        "match": r#"conv.channel == "whatsapp""#,
        "steps": [
            { "target": BILLING_TARGET, "priority": 50, "timeout_secs": 60 },
            { "target": "true", "priority": 10, "timeout_secs": null },
        ],
    })
}

fn ids_of(page: &Value) -> Vec<String> {
    page["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["id"].as_str().unwrap().to_owned())
        .collect()
}

async fn rules_round_trip_with_audit_and_refuse_bad_expressions(backend: Backend) {
    let site = Site::new(backend);
    let hub = TestHub::start(&site).await;
    let admin = site.user("super_admin", None, &[]).await;
    let agent = site.user("agent", None, &[]).await;
    let call = |method: Method, path: String, body: Option<Value>| {
        let (hub, token) = (&hub, admin.token.clone());
        async move { hub.call(method, &path, &token, body).await }
    };

    // A rule may name only the account's skills and teams: refused, with positions.
    let (status, early) = call(Method::POST, RULES.to_owned(), Some(rule_body("early"))).await;
    assert_eq!(status, 422, "{early}");
    let details = &early["error"]["details"];
    assert_eq!(details[0]["field"], "steps[0].target", "{early}");
    assert_eq!(
        (&details[0]["line"], &details[0]["column"]),
        (&json!(1), &json!(7))
    );
    assert!(
        details[0]["message"]
            .as_str()
            .unwrap()
            .starts_with("unknown skill `billing`")
    );
    assert_eq!(details[1]["column"], 35, "{early}");
    assert!(
        details[1]["message"]
            .as_str()
            .unwrap()
            .starts_with("unknown team `payments`")
    );
    let (status, body) = call(
        Method::POST,
        "/v1/admin/skills".to_owned(),
        Some(json!({ "name": "billing" })),
    )
    .await;
    assert_eq!(status, 201, "{body}");
    let (status, body) = call(
        Method::POST,
        "/v1/admin/teams".to_owned(),
        Some(json!({ "name": "payments" })),
    )
    .await;
    assert_eq!(status, 201, "{body}");

    // Create two; they go to the end of the order.
    let (status, first) = call(Method::POST, RULES.to_owned(), Some(rule_body("first"))).await;
    assert_eq!(status, 201, "{first}");
    let first_id = first["id"].as_str().unwrap().to_owned();
    assert!(first_id.starts_with("rr_"), "{first}");
    assert_eq!(first["position"], 1);
    assert_eq!(first["mode"], "auto");
    assert_eq!(first["offer_timeout_secs"], 30);
    assert_eq!(first["steps"][0]["target"], BILLING_TARGET);
    assert_eq!(first["steps"][1]["timeout_secs"], Value::Null);
    let mut second_body = rule_body("second");
    second_body["mode"] = json!("offer");
    second_body["offer_timeout_secs"] = json!(20);
    let (status, second) = call(Method::POST, RULES.to_owned(), Some(second_body)).await;
    assert_eq!(status, 201, "{second}");
    let second_id = second["id"].as_str().unwrap().to_owned();
    assert_eq!(second["position"], 2);
    assert_eq!(second["mode"], "offer");

    // List by position; get one.
    let (status, list) = call(Method::GET, RULES.to_owned(), None).await;
    assert_eq!(status, 200, "{list}");
    assert_eq!(ids_of(&list), [first_id.clone(), second_id.clone()]);
    let (status, got) = call(Method::GET, format!("{RULES}/{first_id}"), None).await;
    assert_eq!(status, 200, "{got}");
    assert_eq!(got, first);

    // Patch any field.
    let (status, patched) = call(
        Method::PATCH,
        format!("{RULES}/{second_id}"),
        Some(json!({ "name": "second, renamed", "match": "contact.vip" })),
    )
    .await;
    assert_eq!(status, 200, "{patched}");
    assert_eq!(patched["name"], "second, renamed");
    assert_eq!(patched["match"], "contact.vip");
    assert_eq!(patched["steps"], second["steps"]);

    // Reorder: exactly the account's ids, else 422 `ids`.
    for bad in [
        json!({ "ids": [first_id] }),
        json!({ "ids": [first_id, first_id] }),
        json!({ "ids": [first_id, second_id, "rr_nope"] }),
        json!({}),
    ] {
        let got = call(Method::PUT, format!("{RULES}/order"), Some(bad)).await;
        assert_error(&got, 422, "validation_failed", Some("ids"));
    }
    let (status, reordered) = call(
        Method::PUT,
        format!("{RULES}/order"),
        Some(json!({ "ids": [second_id, first_id] })),
    )
    .await;
    assert_eq!(status, 200, "{reordered}");
    assert_eq!(ids_of(&reordered), [second_id.clone(), first_id.clone()]);
    assert_eq!(reordered["data"][0]["position"], 1);
    let (_, list) = call(Method::GET, RULES.to_owned(), None).await;
    assert_eq!(ids_of(&list), [second_id.clone(), first_id.clone()]);

    // A type error in a step target: 422 naming the step, with line and column; nothing saved.
    let mut bad = rule_body("bad types");
    bad["steps"][1]["target"] = json!(r#"skill("billing") >= "3""#);
    let (status, body) = call(Method::POST, RULES.to_owned(), Some(bad)).await;
    assert_eq!(status, 422, "{body}");
    assert_eq!(body["error"]["code"], "validation_failed");
    let detail = &body["error"]["details"][0];
    assert_eq!(detail["field"], "steps[1].target", "{body}");
    assert_eq!(detail["line"], 1, "{body}");
    assert!(detail["column"].as_u64().unwrap() >= 1, "{body}");
    assert!(detail["offset"].is_u64(), "{body}");
    // A syntax error in the match, on line 1 at the dangling `and`'s end.
    let mut bad = rule_body("bad syntax");
    let src = r#"conv.channel == "whatsapp" and"#;
    bad["match"] = json!(src);
    let (status, body) = call(Method::POST, RULES.to_owned(), Some(bad)).await;
    assert_eq!(status, 422, "{body}");
    let detail = &body["error"]["details"][0];
    assert_eq!(detail["field"], "match", "{body}");
    assert_eq!(detail["line"], 1, "{body}");
    assert_eq!(
        detail["column"].as_u64().unwrap() as usize,
        src.len() + 1,
        "{body}"
    );
    // A multi-line syntax error is placed on its line.
    let mut bad = rule_body("bad line 2");
    bad["match"] = json!("conv.channel == \"whatsapp\"\n  and (");
    let (status, body) = call(Method::POST, RULES.to_owned(), Some(bad)).await;
    assert_eq!(status, 422, "{body}");
    assert_eq!(body["error"]["details"][0]["line"], 2, "{body}");
    // Empty steps; a bad patch leaves the rule as it was.
    let mut empty = rule_body("no steps");
    empty["steps"] = json!([]);
    let got = call(Method::POST, RULES.to_owned(), Some(empty)).await;
    assert_error(&got, 422, "validation_failed", Some("steps"));
    let got = call(
        Method::PATCH,
        format!("{RULES}/{first_id}"),
        Some(json!({ "name": "changed", "steps": [{ "target": "nope(", "priority": 1 }] })),
    )
    .await;
    assert_error(&got, 422, "validation_failed", Some("steps[0].target"));
    let (_, unchanged) = call(Method::GET, format!("{RULES}/{first_id}"), None).await;
    assert_eq!(unchanged["name"], "first");
    let (_, list) = call(Method::GET, RULES.to_owned(), None).await;
    assert_eq!(list["data"].as_array().unwrap().len(), 2, "nothing created");

    // Validate, saving nothing.
    let (status, good) = call(
        Method::POST,
        format!("{RULES}/validate"),
        Some(json!({ "match": "contact.tier == \"gold\"", "steps": [{ "target": BILLING_TARGET, "priority": 5 }] })),
    )
    .await;
    assert_eq!(status, 200, "{good}");
    assert_eq!(good, json!({ "valid": true, "errors": [] }));
    let (status, bad) = call(
        Method::POST,
        format!("{RULES}/validate"),
        Some(json!({ "match": "contact.tier == 3", "steps": [{ "target": "skill(\"billing\") >= \"3\"", "priority": 5 }] })),
    )
    .await;
    assert_eq!(status, 200, "{bad}");
    assert_eq!(bad["valid"], false);
    let fields: Vec<&str> = bad["errors"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["field"].as_str().unwrap())
        .collect();
    assert_eq!(fields, ["match", "steps[0].target"], "{bad}");
    assert_eq!(bad["errors"][0]["line"], 1);
    assert!(bad["errors"][0]["column"].is_u64());

    // Delete; then it is gone.
    let (status, _) = call(Method::DELETE, format!("{RULES}/{second_id}"), None).await;
    assert_eq!(status, 204);
    let got = call(Method::GET, format!("{RULES}/{second_id}"), None).await;
    assert_error(&got, 404, "not_found", None);
    let got = call(Method::DELETE, format!("{RULES}/{second_id}"), None).await;
    assert_error(&got, 404, "not_found", None);

    // An agent (no configure_routing) is refused everything.
    for (method, path, body) in [
        (Method::POST, RULES.to_owned(), Some(rule_body("x"))),
        (Method::GET, RULES.to_owned(), None),
        (Method::GET, format!("{RULES}/{first_id}"), None),
        (
            Method::PATCH,
            format!("{RULES}/{first_id}"),
            Some(json!({ "name": "x" })),
        ),
        (Method::DELETE, format!("{RULES}/{first_id}"), None),
        (
            Method::PUT,
            format!("{RULES}/order"),
            Some(json!({ "ids": [first_id] })),
        ),
        (
            Method::POST,
            format!("{RULES}/validate"),
            Some(json!({ "match": "true" })),
        ),
        (
            Method::POST,
            format!("{RULES}/simulate"),
            Some(json!({ "conversation": { "channel": "sms", "inbox": "x" } })),
        ),
    ] {
        let got = hub.call(method, &path, &agent.token, body).await;
        assert_error(&got, 403, "forbidden", None);
    }

    // The audit trail: one record per change, with before and after.
    let store = site.store().await;
    let account = store.ensure_account("default").await.unwrap();
    let filter = AuditFilter {
        entity_type: Some("routing_rule".to_owned()),
        ..AuditFilter::default()
    };
    let mut records = store.list_audit(&account, &filter, None, 20).await.unwrap();
    records.reverse();
    let actions: Vec<&str> = records.iter().map(|r| r.action.as_str()).collect();
    assert_eq!(
        actions,
        [
            "routing_rule.created",
            "routing_rule.created",
            "routing_rule.updated",
            "routing_rule.reordered",
            "routing_rule.deleted",
        ]
    );
    assert!(
        records
            .iter()
            .all(|r| r.actor_id.as_deref() == Some(admin.id.as_str()))
    );
    assert_eq!(records[0].after.as_ref().unwrap()["name"], "first");
    let updated = &records[2];
    assert_eq!(updated.entity_id.as_deref(), Some(second_id.as_str()));
    assert_eq!(updated.before.as_ref().unwrap()["name"], "second");
    assert_eq!(updated.after.as_ref().unwrap()["name"], "second, renamed");
    assert_eq!(
        records[3].before.as_ref().unwrap()["ids"],
        json!([first_id, second_id])
    );
    assert_eq!(
        records[3].after.as_ref().unwrap()["ids"],
        json!([second_id, first_id])
    );
    assert_eq!(
        records[4].before.as_ref().unwrap()["name"],
        "second, renamed"
    );
    assert!(records[4].after.is_none());
    // On PostgreSQL, the table is behind the row-level security wall.
    if backend == Backend::Distributed {
        let row = sqlx::query(
            "SELECT c.relrowsecurity::text, c.relforcerowsecurity::text, \
             (SELECT COUNT(*) FROM pg_policies p WHERE p.schemaname = $1 \
              AND p.tablename = 'routing_rules' AND p.policyname = 'account_wall') \
             FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace \
             WHERE n.nspname = $1 AND c.relname = 'routing_rules'",
        )
        .bind(&site.schema)
        .fetch_one(store.pool())
        .await
        .unwrap();
        let (enabled, forced, policies): (String, String, i64) =
            (row.get(0), row.get(1), row.get(2));
        assert_eq!(
            (enabled.as_str(), forced.as_str(), policies),
            ("true", "true", 1)
        );
    }
    store.close().await;

    hub.stop().await;
    site.cleanup().await;
}

async fn simulate_finds_the_rule_and_the_eligible_agents(backend: Backend) {
    let site = Site::new(backend);
    let hub = TestHub::start(&site).await;
    let admin = site.user("super_admin", None, &[]).await;
    let store = site.store().await;
    let account = store.ensure_account("default").await.unwrap();
    let mut tx = store.begin().await.unwrap();
    let payments = org::insert_team(&mut tx, &account, "payments", None)
        .await
        .unwrap();
    let other = org::insert_team(&mut tx, &account, "sales", None)
        .await
        .unwrap();
    tx.commit().await.unwrap();
    store.close().await;
    // alice qualifies; bob's skill is too low; carol is in the wrong team; dave qualifies on
    // paper but is offline; erin qualifies but has no WhatsApp capacity.
    let alice = site.user("agent", None, &[payments.as_str()]).await;
    let bob = site.user("agent", None, &[payments.as_str()]).await;
    let carol = site.user("agent", None, &[other.as_str()]).await;
    let dave = site.user("agent", None, &[payments.as_str()]).await;
    let erin = site.user("agent", None, &[payments.as_str()]).await;
    let call = |method: Method, path: String, body: Option<Value>| {
        let (hub, token) = (&hub, admin.token.clone());
        async move { hub.call(method, &path, &token, body).await }
    };

    let (status, body) = call(
        Method::POST,
        "/v1/admin/skills".to_owned(),
        Some(json!({ "name": "billing" })),
    )
    .await;
    assert_eq!(status, 201, "{body}");
    for (user, level, whatsapp) in [
        (&alice, 4, 2),
        (&bob, 2, 2),
        (&carol, 5, 2),
        (&dave, 5, 2),
        (&erin, 5, 0),
    ] {
        let profile = json!({
            "skills": { "billing": level },
            "capacity": { "whatsapp": whatsapp, "sms": 1 },
        });
        let path = format!("/v1/admin/agents/{}/profile", user.id);
        let (status, body) = call(Method::PUT, path, Some(profile)).await;
        assert_eq!(status, 200, "{body}");
    }
    for user in [&alice, &bob, &carol, &erin] {
        let (status, body) = hub
            .call(
                Method::PUT,
                "/v1/agents/me/presence",
                &user.token,
                Some(json!({ "status": "online" })),
            )
            .await;
        assert_eq!(status, 200, "{body}");
    }

    let (status, rule) = call(Method::POST, RULES.to_owned(), Some(rule_body("billing"))).await;
    assert_eq!(status, 201, "{rule}");

    let simulate = |conversation: Value| {
        call(
            Method::POST,
            format!("{RULES}/simulate"),
            Some(json!({ "conversation": conversation })),
        )
    };
    let (status, sim) = simulate(json!({
        "channel": "whatsapp",
        "inbox": "support",
        "contact": { "vip": true },
    }))
    .await;
    assert_eq!(status, 200, "{sim}");
    assert_eq!(sim["rule"]["id"], rule["id"], "{sim}");
    assert_eq!(sim["rule"]["name"], "billing");
    // The engine's decision: the first step's only candidate.
    assert_eq!(sim["decision"]["rule"]["id"], rule["id"], "{sim}");
    assert_eq!(sim["decision"]["step"], 0);
    assert_eq!(sim["decision"]["chosen"], alice.id.as_str(), "{sim}");
    assert_eq!(sim["decision"]["decided_by"], "only_candidate");
    assert_eq!(sim["steps"][0]["index"], 0);
    assert_eq!(sim["steps"][0]["target"], BILLING_TARGET);
    assert_eq!(
        sim["steps"][0]["eligible"],
        json!([{ "user_id": alice.id, "name": "Test User" }]),
        "{sim}"
    );
    assert_eq!(sim["steps"][0]["eligible_count"], 1);
    // The catch-all step: every online agent with WhatsApp capacity, never dave (offline) or
    // erin (no capacity).
    let mut everyone: Vec<&str> = sim["steps"][1]["eligible"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["user_id"].as_str().unwrap())
        .collect();
    everyone.sort_unstable();
    let mut expected = vec![alice.id.as_str(), bob.id.as_str(), carol.id.as_str()];
    expected.sort_unstable();
    assert_eq!(everyone, expected, "{sim}");
    assert_eq!(sim["steps"][1]["eligible_count"], 3);

    // A conversation no rule matches: the default rule.
    let (status, sim) = simulate(json!({ "channel": "sms", "inbox": "support" })).await;
    assert_eq!(status, 200, "{sim}");
    assert_eq!(sim["rule"], Value::Null, "{sim}");
    assert_eq!(sim["steps"], json!([]));
    // A bad conversation names its field; nothing about the rules changes.
    let got = simulate(json!({ "channel": "fax", "inbox": "support" })).await;
    assert_error(&got, 422, "validation_failed", Some("conversation.channel"));

    hub.stop().await;
    site.cleanup().await;
}
