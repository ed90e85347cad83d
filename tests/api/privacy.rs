//! Contact erasure, the row-level-security wall on PostgreSQL, and the upgrade from the
//! foundation's API-key-only schema.

use std::borrow::Cow;

use reqwest::Method;
use serde_json::json;
use switchboard::store::Store;

use crate::helpers::*;
use crate::on_both_backends;

on_both_backends!(
    erasure_keeps_structure_and_drops_personal_data,
    api_keys_from_before_identity_keep_working
);

async fn erasure_keeps_structure_and_drops_personal_data(backend: Backend) {
    let site = Site::new(backend);
    let hub = TestHub::start(&site).await;
    let wa = "15555550777";
    for (id, text) in [
        ("wamid.e1", "my card 4111 is lost"),
        ("wamid.e2", "call me at home"),
    ] {
        assert_eq!(
            hub.post_whatsapp(&wa_text(id, wa, text)).await.status(),
            200
        );
    }
    let messages = hub.wait_for_messages(2).await;
    let conversation_id = messages[0]["conversation_id"].as_str().unwrap().to_owned();
    let (_, conversation) = hub
        .get(&format!("/v1/conversations/{conversation_id}"))
        .await;
    let contact_id = conversation["contact"]["id"].as_str().unwrap().to_owned();
    assert_eq!(conversation["contact"]["name"], "Ada Tester");

    // Who may erase: the export permission (operations yes, agents no).
    let agent = site.user("agent", None, &[]).await;
    let (status, body) = hub
        .call(
            Method::DELETE,
            &format!("/v1/contacts/{contact_id}"),
            &agent.token,
            None,
        )
        .await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (403, Some("forbidden"))
    );
    let ops = site.user("operations", None, &[]).await;
    let (status, body) = hub
        .call(Method::DELETE, "/v1/contacts/ctc_nosuch", &ops.token, None)
        .await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (404, Some("not_found"))
    );

    let (status, erasure) = hub
        .call(
            Method::DELETE,
            &format!("/v1/contacts/{contact_id}"),
            &ops.token,
            None,
        )
        .await;
    assert_eq!(status, 200, "{erasure}");
    assert_eq!(erasure["messages_erased"], 2);
    assert_eq!(erasure["conversations"], 1);
    assert!(erasure["raw_events_redacted"].as_i64().unwrap() >= 1);
    assert_eq!(erasure["identities_removed"], 1);

    // The structure stays: same conversation, same message ids, times and statuses.
    let (status, contact) = hub.get(&format!("/v1/contacts/{contact_id}")).await;
    assert_eq!(status, 200);
    assert!(
        contact["name"].is_null() && contact["phone"].is_null(),
        "{contact}"
    );
    assert_eq!(contact["identities"], json!([]));
    assert!(contact["erased_at_ms"].is_i64());
    let after = hub.messages(&conversation_id).await;
    assert_eq!(after.len(), 2);
    for (before, now) in messages.iter().zip(&after) {
        assert_eq!(before["id"], now["id"]);
        assert_eq!(before["sent_at_ms"], now["sent_at_ms"]);
        assert_eq!(now["content"], json!({ "type": "erased" }));
    }
    // The raw provider bodies are redacted too, and nothing personal is left in the store.
    for event in hub.events("processed").await {
        assert_eq!(event["body"], r#"{"erased":true}"#, "{event}");
    }
    let store = site.store().await;
    for (table, column) in [
        ("messages", "content"),
        ("contacts", "name"),
        ("contact_identities", "value"),
    ] {
        let sql = format!(
            "SELECT COUNT(*) FROM {table} WHERE {column} LIKE '%4111%' OR {column} LIKE '%{wa}%' OR {column} LIKE '%Ada%'"
        );
        let n: i64 = sqlx::Row::get(
            &sqlx::query(sqlx::AssertSqlSafe(sql))
                .fetch_one(store.pool())
                .await
                .unwrap(),
            0,
        );
        assert_eq!(n, 0, "{table}.{column} still holds personal data");
    }
    // The erasure itself is on record, without personal data.
    let account = store.ensure_account("default").await.unwrap();
    let records = store
        .list_audit(&account, &Default::default(), None, 100)
        .await
        .unwrap();
    let record = records
        .iter()
        .find(|r| r.action == "contact.erased")
        .unwrap();
    assert_eq!(record.entity_id.as_deref(), Some(contact_id.as_str()));
    assert_eq!(record.actor_id.as_deref(), Some(ops.id.as_str()));
    assert!(!record.after.as_ref().unwrap().to_string().contains(wa));
    store.close().await;

    // The number writing again is a new contact: nothing links it to the erased one.
    assert_eq!(
        hub.post_whatsapp(&wa_text("wamid.e3", wa, "hi again"))
            .await
            .status(),
        200
    );
    let conversations = eventually("a second conversation", || async {
        let c = hub.conversations().await;
        (c.len() == 2).then_some(c)
    })
    .await;
    assert!(
        conversations
            .iter()
            .any(|c| c["contact_id"] != contact_id.as_str())
    );
    hub.stop().await;
    site.cleanup().await;
}

/// A database migrated and keyed by the foundation (migration 0001 only, an API key made by
/// `switchboard api-key create`) upgrades in place: the key keeps its role and keeps working.
async fn api_keys_from_before_identity_keep_working(backend: Backend) {
    let site = Site::new(backend);
    let config = site.config("");
    let store = Store::open(&config.database).await.unwrap();
    let dir = match store.dialect() {
        switchboard::store::Dialect::Sqlite => "sqlite",
        switchboard::store::Dialect::Postgres => "postgres",
    };
    let path = format!("{}/migrations/{dir}", env!("CARGO_MANIFEST_DIR"));
    let mut foundation = sqlx::migrate::Migrator::new(std::path::Path::new(&path))
        .await
        .unwrap();
    foundation.migrations = Cow::Owned(
        foundation
            .migrations
            .iter()
            .filter(|m| m.version == 1)
            .cloned()
            .collect(),
    );
    foundation.run(store.pool()).await.unwrap();
    let account = store.ensure_account("default").await.unwrap();
    let minted = switchboard::auth::mint_key();
    // The foundation's own insert, column for column.
    sqlx::query(
        "INSERT INTO api_keys (id, account_id, name, role, prefix, key_hash, created_at) \
         VALUES ('key_legacy', $1, 'legacy', 'operations', $2, $3, 1)",
    )
    .bind(&account)
    .bind(&minted.prefix)
    .bind(&minted.hash)
    .execute(store.pool())
    .await
    .unwrap();
    store.close().await;

    let hub = TestHub::start(&site).await;
    for path in ["/v1/conversations", "/v1/inbound-events", "/v1/reports/sla"] {
        let (status, body) = hub.call(Method::GET, path, &minted.key, None).await;
        assert_eq!(status, 200, "{path}: {body}");
    }
    hub.stop().await;
    site.cleanup().await;
}

/// PostgreSQL's row-level security hides other accounts' rows from an ordinary database role
/// that has `switchboard.account_id` set, whatever the query says.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn row_level_security_is_a_second_wall() {
    let site = Site::new(Backend::Distributed);
    let hub = TestHub::start(&site).await;
    let store = site.store().await;
    let mine = store.ensure_account("default").await.unwrap();
    let theirs = store.ensure_account("other").await.unwrap();
    for (id, account) in [("ctc_mine", &mine), ("ctc_theirs", &theirs)] {
        sqlx::query(
            "INSERT INTO contacts (id, account_id, created_at, updated_at) VALUES ($1, $2, 1, 1)",
        )
        .bind(id)
        .bind(account)
        .execute(store.pool())
        .await
        .unwrap();
    }
    let schema = &site.schema;
    for sql in [
        "DO $$ BEGIN CREATE ROLE sb_rls_probe NOLOGIN; \
         EXCEPTION WHEN duplicate_object OR unique_violation THEN NULL; END $$"
            .to_owned(),
        format!("GRANT USAGE ON SCHEMA \"{schema}\" TO sb_rls_probe"),
        format!("GRANT SELECT ON ALL TABLES IN SCHEMA \"{schema}\" TO sb_rls_probe"),
    ] {
        sqlx::raw_sql(sqlx::AssertSqlSafe(sql))
            .execute(store.pool())
            .await
            .unwrap();
    }
    // As the ordinary role, with the account set the way Store::scoped sets it.
    let mut tx = store.scoped(&mine).await.unwrap();
    sqlx::query("SET LOCAL ROLE sb_rls_probe")
        .execute(&mut *tx)
        .await
        .unwrap();
    assert_eq!(
        count(&mut tx).await,
        1,
        "only this account's contact is visible"
    );
    tx.rollback().await.unwrap();
    // Unset (background work such as the intake and workers): every account.
    let mut tx = store.pool().begin().await.unwrap();
    sqlx::query("SET LOCAL ROLE sb_rls_probe")
        .execute(&mut *tx)
        .await
        .unwrap();
    assert_eq!(count(&mut tx).await, 2);
    tx.rollback().await.unwrap();
    store.close().await;
    hub.stop().await;
    site.cleanup().await;
}

async fn count(tx: &mut sqlx::Transaction<'static, sqlx::Any>) -> i64 {
    let row = sqlx::query("SELECT COUNT(*) FROM contacts WHERE id IN ('ctc_mine', 'ctc_theirs')")
        .fetch_one(&mut **tx)
        .await
        .unwrap();
    sqlx::Row::get::<i64, _>(&row, 0)
}
