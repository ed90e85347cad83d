//! Inbox administration over REST, end to end: sealed credentials that the webhooks then check,
//! rotation, deactivation, the registry reload across nodes, team/branch inheritance, validation,
//! permissions and the audit trail.

use reqwest::Method;
use serde_json::{Value, json};
use sqlx::Row;
use switchboard::store::audit::AuditFilter;
use switchboard::store::org;
use switchboard_connectors::twilio;

use crate::helpers::*;
use crate::on_both_backends;

on_both_backends!(
    sms_inbox_created_over_rest_checks_its_own_token,
    an_inbox_created_on_one_node_works_on_another,
    conversations_inherit_the_inbox_team_and_branch,
    invalid_inboxes_are_refused_with_the_field,
);

const ADMIN: &str = "/v1/admin/inboxes";
const FRESH_TOKEN: &str = "fresh-twilio-token-0123456789abcd";
const ROTATED_TOKEN: &str = "rotated-twilio-token-9876543210wxyz";

/// Posts a Twilio form webhook signed with `token` (the public URL, as Twilio signs).
async fn post_twilio_with(hub: &TestHub, token: &str, path: &str, sid: &str) -> u16 {
    let params: Vec<(String, String)> = [
        ("AccountSid", "AC0123456789abcdef0123456789abcdef"),
        ("Body", "hello from a REST inbox"),
        ("From", "+14155550199"),
        ("MessageSid", sid),
        ("NumMedia", "0"),
        ("SmsStatus", "received"),
        ("To", "+14155550177"),
    ]
    .iter()
    .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
    .collect();
    let signature =
        twilio::compute_signature(token.as_bytes(), &format!("{PUBLIC_URL}{path}"), &params);
    hub.client
        .post(hub.url(path))
        .header(twilio::SIGNATURE_HEADER, signature)
        .form(&params)
        .send()
        .await
        .unwrap()
        .status()
        .as_u16()
}

fn sms_inbox(slug: &str, number: &str, token: &str) -> Value {
    json!({
        "slug": slug,
        "name": "REST SMS",
        "channel": "sms",
        "phone_number": number,
        "credentials": { "twilio_auth_token": token, "twilio_account_sid": "AC0123456789abcdef0123456789abcdef" },
    })
}

async fn create(hub: &TestHub, body: Value) -> Value {
    let (status, created) = hub.call(Method::POST, ADMIN, &hub.key, Some(body)).await;
    assert_eq!(status, 201, "{created}");
    created
}

/// The stored messages of conversations in `inbox_id`, once there are `n`.
async fn messages_in(hub: &TestHub, inbox_id: &str, n: usize) -> Vec<Value> {
    eventually(&format!("{n} messages in {inbox_id}"), || async {
        let mut all = Vec::new();
        for c in hub.conversations().await {
            if c["inbox_id"] == inbox_id {
                all.extend(hub.messages(c["id"].as_str().unwrap()).await);
            }
        }
        (all.len() >= n).then_some(all)
    })
    .await
}

fn assert_field(body: &Value, code: &str, field: &str) {
    assert_eq!(body["error"]["code"], code, "{body}");
    assert_eq!(body["error"]["details"][0]["field"], field, "{body}");
}

async fn sms_inbox_created_over_rest_checks_its_own_token(backend: Backend) {
    let site = Site::new(backend);
    let hub = TestHub::start(&site).await;
    let created = create(&hub, sms_inbox("rest-sms", "+14155550177", FRESH_TOKEN)).await;
    let id = created["id"].as_str().unwrap().to_owned();
    assert_eq!(created["managed_by"], "api");
    assert_eq!(created["active"], true);
    assert_eq!(created["phone_number"], "+14155550177");
    assert_eq!(created["credentials_hint"]["twilio_auth_token"], "••••abcd");
    assert!(!created.to_string().contains(FRESH_TOKEN));
    let path = "/webhooks/twilio/rest-sms";

    // Only the inbox's own token verifies.
    assert_eq!(
        post_twilio_with(
            &hub,
            TWILIO_TOKEN,
            path,
            "SM00000000000000000000000000000001"
        )
        .await,
        403
    );
    assert_eq!(
        post_twilio_with(
            &hub,
            FRESH_TOKEN,
            path,
            "SM00000000000000000000000000000001"
        )
        .await,
        200
    );
    let stored = messages_in(&hub, &id, 1).await;
    assert_eq!(
        stored[0]["provider_message_id"],
        "SM00000000000000000000000000000001"
    );

    // At rest the token is sealed; reads show the hint only.
    let store = site.store().await;
    let sealed: String = sqlx::query("SELECT credentials FROM inboxes WHERE id = $1")
        .bind(&id)
        .fetch_one(store.pool())
        .await
        .unwrap()
        .get(0);
    assert!(
        sealed.starts_with("v1:") && !sealed.contains(FRESH_TOKEN),
        "{sealed}"
    );
    let (status, one) = hub
        .call(Method::GET, &format!("{ADMIN}/{id}"), &hub.key, None)
        .await;
    assert_eq!(status, 200, "{one}");
    assert_eq!(one, created);
    let (status, list) = hub.call(Method::GET, ADMIN, &hub.key, None).await;
    assert_eq!(status, 200, "{list}");
    assert!(
        list["data"]
            .as_array()
            .unwrap()
            .iter()
            .any(|i| i["id"] == id)
    );
    assert!(
        list["data"]
            .as_array()
            .unwrap()
            .iter()
            .any(|i| i["managed_by"] == "config")
    );
    assert!(list.get("next_cursor").is_some());
    assert!(!list.to_string().contains(FRESH_TOKEN));

    // A rename and a rotation: the old token stops working, the new one works.
    let (status, patched) = hub
        .call(
            Method::PATCH,
            &format!("{ADMIN}/{id}"),
            &hub.key,
            Some(
                json!({ "name": "Renamed", "credentials": { "twilio_auth_token": ROTATED_TOKEN } }),
            ),
        )
        .await;
    assert_eq!(status, 200, "{patched}");
    assert_eq!(patched["name"], "Renamed");
    assert_eq!(
        patched["credentials_hint"],
        json!({ "twilio_auth_token": "••••wxyz" })
    );
    assert_eq!(
        post_twilio_with(
            &hub,
            FRESH_TOKEN,
            path,
            "SM00000000000000000000000000000002"
        )
        .await,
        403
    );
    assert_eq!(
        post_twilio_with(
            &hub,
            ROTATED_TOKEN,
            path,
            "SM00000000000000000000000000000002"
        )
        .await,
        200
    );
    messages_in(&hub, &id, 2).await;

    // Deactivated: answered as an unknown inbox.
    let (status, _) = hub
        .call(Method::DELETE, &format!("{ADMIN}/{id}"), &hub.key, None)
        .await;
    assert_eq!(status, 204);
    assert_eq!(
        post_twilio_with(
            &hub,
            ROTATED_TOKEN,
            path,
            "SM00000000000000000000000000000003"
        )
        .await,
        404
    );
    let unknown = post_twilio_with(&hub, ROTATED_TOKEN, "/webhooks/twilio/never-was", "SM4").await;
    assert_eq!(unknown, 404);
    let (_, one) = hub
        .call(Method::GET, &format!("{ADMIN}/{id}"), &hub.key, None)
        .await;
    assert_eq!(one["active"], false);

    // One audit record per change, none holding a secret.
    let account = store.ensure_account("default").await.unwrap();
    let filter = AuditFilter {
        entity_id: Some(id.clone()),
        ..AuditFilter::default()
    };
    let records = store
        .list_audit(&account, &filter, None, 100)
        .await
        .unwrap();
    let mut actions: Vec<&str> = records.iter().map(|r| r.action.as_str()).collect();
    actions.sort_unstable();
    assert_eq!(
        actions,
        [
            "inbox.created",
            "inbox.credentials_rotated",
            "inbox.deactivated",
            "inbox.updated"
        ]
    );
    for record in &records {
        let text = serde_json::to_string(record).unwrap();
        assert!(
            !text.contains(FRESH_TOKEN) && !text.contains(ROTATED_TOKEN) && !text.contains("v1:"),
            "{text}"
        );
        assert_eq!(record.entity_type, "inbox");
        assert_eq!(record.actor_type, "api_key");
    }
    let updated = records
        .iter()
        .find(|r| r.action == "inbox.updated")
        .unwrap();
    assert_eq!(updated.before.as_ref().unwrap()["name"], "REST SMS");
    assert_eq!(updated.after.as_ref().unwrap()["name"], "Renamed");
    store.close().await;
    hub.stop().await;
    site.cleanup().await;
}

async fn an_inbox_created_on_one_node_works_on_another(backend: Backend) {
    let site = Site::new(backend);
    let node_a = TestHub::start(&site).await;
    let node_b = TestHub::start(&site).await;
    let created = create(&node_a, sms_inbox("two-nodes", "+14155550177", FRESH_TOKEN)).await;
    let id = created["id"].as_str().unwrap().to_owned();
    let path = "/webhooks/twilio/two-nodes";
    // Node B learns of the inbox from the announcement (distributed) or the shared database
    // (embedded); until then it answers 404, which Twilio would retry.
    eventually("node B to accept the new inbox", || async {
        (post_twilio_with(
            &node_b,
            FRESH_TOKEN,
            path,
            "SM00000000000000000000000000000010",
        )
        .await
            == 200)
            .then_some(())
    })
    .await;
    let stored = messages_in(&node_b, &id, 1).await;
    assert_eq!(stored.len(), 1);

    // And a deactivation on B reaches A.
    let (status, _) = node_b
        .call(Method::DELETE, &format!("{ADMIN}/{id}"), &node_b.key, None)
        .await;
    assert_eq!(status, 204);
    eventually("node A to drop the inbox", || async {
        (post_twilio_with(
            &node_a,
            FRESH_TOKEN,
            path,
            "SM00000000000000000000000000000011",
        )
        .await
            == 404)
            .then_some(())
    })
    .await;
    node_b.stop().await;
    node_a.stop().await;
    site.cleanup().await;
}

async fn conversations_inherit_the_inbox_team_and_branch(backend: Backend) {
    let site = Site::new(backend);
    let hub = TestHub::start(&site).await;
    let store = site.store().await;
    let account = store.ensure_account("default").await.unwrap();
    let mut tx = store.begin().await.unwrap();
    let branch = org::insert_branch(&mut tx, &account, "North")
        .await
        .unwrap();
    let team = org::insert_team(&mut tx, &account, "Billing", Some(&branch))
        .await
        .unwrap();
    tx.commit().await.unwrap();

    let mut body = sms_inbox("team-sms", "+14155550177", FRESH_TOKEN);
    body["team_id"] = json!(team);
    body["branch_id"] = json!(branch);
    let created = create(&hub, body).await;
    assert_eq!(created["team_id"], team.as_str());
    let id = created["id"].as_str().unwrap().to_owned();
    let path = "/webhooks/twilio/team-sms";
    assert_eq!(
        post_twilio_with(
            &hub,
            FRESH_TOKEN,
            path,
            "SM00000000000000000000000000000020"
        )
        .await,
        200
    );
    let stored = messages_in(&hub, &id, 1).await;
    let conversation_id = stored[0]["conversation_id"].as_str().unwrap();
    let (status, conversation) = hub
        .get(&format!("/v1/conversations/{conversation_id}"))
        .await;
    assert_eq!(status, 200, "{conversation}");
    assert_eq!(conversation["team_id"], team.as_str());
    let row = sqlx::query("SELECT team_id, branch_id FROM conversations WHERE id = $1")
        .bind(conversation_id)
        .fetch_one(store.pool())
        .await
        .unwrap();
    assert_eq!(
        row.get::<Option<String>, _>(0).as_deref(),
        Some(team.as_str())
    );
    assert_eq!(
        row.get::<Option<String>, _>(1).as_deref(),
        Some(branch.as_str())
    );

    // A config inbox takes a team, but keeps the name and secrets the config declares.
    let config_inbox = "/v1/admin/inboxes/inb_support-sms";
    let (status, body) = hub
        .call(
            Method::PATCH,
            config_inbox,
            &hub.key,
            Some(json!({ "team_id": team })),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["team_id"], team.as_str());
    assert_eq!(body["managed_by"], "config");
    for (patch, field) in [
        (json!({ "name": "Mine now" }), "name"),
        (
            json!({ "credentials": { "twilio_auth_token": FRESH_TOKEN } }),
            "credentials",
        ),
    ] {
        let (status, body) = hub
            .call(Method::PATCH, config_inbox, &hub.key, Some(patch))
            .await;
        assert_eq!(status, 422, "{body}");
        assert_field(&body, "validation_failed", field);
    }
    let sms = vec![
        ("From", "+14155550198"),
        ("MessageSid", "SM00000000000000000000000000000021"),
        ("Body", "to the config inbox"),
        ("To", "+14155550100"),
    ];
    assert_eq!(
        hub.post_twilio("/webhooks/twilio/support-sms", &sms)
            .await
            .status(),
        200
    );
    let stored = messages_in(&hub, "inb_support-sms", 1).await;
    let conversation_id = stored[0]["conversation_id"].as_str().unwrap();
    let (_, conversation) = hub
        .get(&format!("/v1/conversations/{conversation_id}"))
        .await;
    assert_eq!(conversation["team_id"], team.as_str());
    store.close().await;
    hub.stop().await;
    site.cleanup().await;
}

async fn invalid_inboxes_are_refused_with_the_field(backend: Backend) {
    let site = Site::new(backend);
    let hub = TestHub::start(&site).await;
    let good = sms_inbox("valid-sms", "+14155550177", FRESH_TOKEN);
    let with = |changes: Value| {
        let mut body = good.clone();
        for (k, v) in changes.as_object().unwrap() {
            if v.is_null() {
                body.as_object_mut().unwrap().remove(k);
            } else {
                body[k] = v.clone();
            }
        }
        body
    };
    let cases = [
        (
            with(json!({ "channel": "fax" })),
            422,
            "validation_failed",
            "channel",
        ),
        (
            with(json!({ "credentials": null })),
            422,
            "validation_failed",
            "credentials.twilio_auth_token",
        ),
        (
            with(json!({ "credentials": { "twilio_auth_token": "" } })),
            422,
            "validation_failed",
            "credentials.twilio_auth_token",
        ),
        (
            with(json!({ "phone_number": "4155550177" })),
            422,
            "validation_failed",
            "phone_number",
        ),
        (
            with(json!({ "slug": "Not A Slug" })),
            422,
            "validation_failed",
            "slug",
        ),
        (
            with(json!({ "slug": null })),
            422,
            "validation_failed",
            "slug",
        ),
        (
            with(json!({ "team_id": "team_nope" })),
            422,
            "validation_failed",
            "team_id",
        ),
        (
            with(json!({ "slug": "support-sms" })),
            409,
            "conflict",
            "slug",
        ),
        (
            with(json!({ "phone_number": "+14155550100" })),
            409,
            "conflict",
            "phone_number",
        ),
        (
            json!({ "slug": "wa2", "name": "WA", "channel": "whatsapp", "phone_number_id": "800000000000009", "whatsapp_app": "nope" }),
            422,
            "validation_failed",
            "whatsapp_app",
        ),
        (
            json!({ "slug": "wa3", "name": "WA", "channel": "whatsapp", "phone_number_id": "800000000000001", "whatsapp_app": "demo" }),
            409,
            "conflict",
            "phone_number_id",
        ),
        (
            json!({ "slug": "chat2", "name": "Chat", "channel": "webchat", "credentials": { "twilio_auth_token": "x" } }),
            422,
            "validation_failed",
            "credentials.twilio_auth_token",
        ),
    ];
    for (body, status, code, field) in cases {
        let (got, answer) = hub
            .call(Method::POST, ADMIN, &hub.key, Some(body.clone()))
            .await;
        assert_eq!(got, status, "{body} gave {answer}");
        assert_field(&answer, code, field);
    }
    // None of the refused requests left an inbox behind.
    let (_, list) = hub
        .call(Method::GET, "/v1/admin/inboxes?limit=100", &hub.key, None)
        .await;
    assert_eq!(list["data"].as_array().unwrap().len(), 3, "{list}");

    // A valid WhatsApp inbox on the configured app is fine; then a page of 1 has a cursor.
    create(
        &hub,
        json!({ "slug": "wa-rest", "name": "WA", "channel": "whatsapp", "phone_number_id": "800000000000009", "whatsapp_app": "demo", "credentials": { "access_token": "EAAG-long-access-token" } }),
    )
    .await;
    let (_, page) = hub
        .call(Method::GET, "/v1/admin/inboxes?limit=1", &hub.key, None)
        .await;
    assert_eq!(page["data"].as_array().unwrap().len(), 1);
    assert!(page["next_cursor"].is_string(), "{page}");

    // Agents may not configure inboxes; strangers are not let in at all.
    let agent = site.user("agent", None, &[]).await;
    assert!(
        agent.id.starts_with("usr_") && agent.email.contains('@') && !agent.password.is_empty()
    );
    for (method, path) in [
        (Method::POST, ADMIN.to_owned()),
        (Method::GET, ADMIN.to_owned()),
        (Method::GET, format!("{ADMIN}/inb_support-sms")),
        (Method::PATCH, format!("{ADMIN}/inb_support-sms")),
        (Method::DELETE, format!("{ADMIN}/inb_support-sms")),
    ] {
        let (status, body) = hub
            .call(method.clone(), &path, &agent.token, Some(good.clone()))
            .await;
        assert_eq!(status, 403, "{method} {path}: {body}");
        assert_eq!(body["error"]["code"], "forbidden");
    }
    let (status, _) = hub.call(Method::GET, ADMIN, "not-a-token", None).await;
    assert_eq!(status, 401);
    let (status, _) = hub
        .call(Method::GET, &format!("{ADMIN}/inb_nope"), &hub.key, None)
        .await;
    assert_eq!(status, 404);
    hub.stop().await;
    site.cleanup().await;
}
