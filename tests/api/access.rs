//! The role × scope matrix of the access-control issue, walked against the real server.
//!
//! The expected grants are written out here from the issue's table, independently of
//! `switchboard::access::builtin`, so the test checks the code against the specification. For
//! each role and each permission it exercises the permission on a record inside the caller's
//! scope, on one of the same account outside it, and on one of another account:
//!
//! - no grant: 403 on every record;
//! - `all`: inside and outside succeed, the other account's record is 404;
//! - `team`, `branch`, `assigned`, `self`: inside succeeds, outside and the other account's
//!   record are 404 (indistinguishable from a missing record).

use reqwest::Method;
use serde_json::{Value, json};
use switchboard::store::org;

use crate::helpers::*;
use crate::on_both_backends;

on_both_backends!(role_scope_matrix, api_key_scopes_follow_its_role);

#[derive(Debug, Clone, Copy, PartialEq)]
enum S {
    No,
    All,
    Team,
    Branch,
    Assigned,
    Own,
}

const PERMISSIONS: [&str; 8] = [
    "view_conversations",
    "reply_to_customer",
    "reassign_conversations",
    "configure_routing",
    "manage_users",
    "view_sla_reports",
    "export_raw_data",
    "view_audit_log",
];

/// The issue's table, row by row: (role, [scope per permission in PERMISSIONS order]).
const MATRIX: [(&str, [S; 8]); 5] = {
    use S::*;
    [
        ("super_admin", [All, All, All, All, All, All, All, All]),
        ("operations", [All, All, All, All, No, All, All, All]),
        ("team_lead", [Team, Team, Team, No, No, Team, No, No]),
        ("agent", [Assigned, Assigned, No, No, No, Own, No, No]),
        (
            "branch_manager",
            [Branch, No, Branch, No, No, Branch, No, No],
        ),
    ]
};

/// The records the probes use.
pub struct World {
    pub team_1: String,
    pub branch_1: String,
    /// Team 1, branch 1, assigned to `agent_1`.
    pub inside: String,
    /// Team 2, branch 2, assigned to `agent_2`.
    pub outside: String,
    /// A conversation, contact, user and inbox of another account.
    pub foreign_conversation: String,
    pub foreign_contact: String,
    pub foreign_user: String,
    pub agent_1: TestUser,
    pub agent_2: TestUser,
    pub admin: TestUser,
}

/// Builds the world: two branches with a team each, two agents, two conversations made by real
/// webhooks and placed in them, and a second account with records of its own.
pub async fn world(site: &Site, hub: &TestHub) -> World {
    let store = site.store().await;
    let account = store.ensure_account("default").await.unwrap();
    let mut tx = store.begin().await.unwrap();
    let branch_1 = org::insert_branch(&mut tx, &account, "North")
        .await
        .unwrap();
    let branch_2 = org::insert_branch(&mut tx, &account, "South")
        .await
        .unwrap();
    let team_1 = org::insert_team(&mut tx, &account, "Payments", Some(&branch_1))
        .await
        .unwrap();
    let team_2 = org::insert_team(&mut tx, &account, "Returns", Some(&branch_2))
        .await
        .unwrap();
    tx.commit().await.unwrap();
    let agent_1 = site.user("agent", Some(&branch_1), &[&team_1]).await;
    let agent_2 = site.user("agent", Some(&branch_2), &[&team_2]).await;
    let admin = site.user("super_admin", None, &[]).await;

    for (id, wa) in [("wamid.in", "15555550001"), ("wamid.out", "15555550002")] {
        // Written now, so that replies are inside WhatsApp's 24-hour window.
        let r = hub.post_whatsapp(&wa_text_now(id, wa, "hello")).await;
        assert_eq!(r.status(), 200);
    }
    let conversations = eventually("two conversations", || async {
        let c = hub.conversations().await;
        (c.len() == 2).then_some(c)
    })
    .await;
    // Which is which does not matter: teams, branches and assignees are set next.
    let mut ids: Vec<String> = conversations
        .iter()
        .map(|c| c["id"].as_str().unwrap().to_owned())
        .collect();
    ids.sort();
    let (inside, outside) = (ids[0].clone(), ids[1].clone());
    for (conversation, team, branch, agent) in [
        (&inside, &team_1, &branch_1, &agent_1.id),
        (&outside, &team_2, &branch_2, &agent_2.id),
    ] {
        sqlx::query(
            "UPDATE conversations SET team_id = $1, branch_id = $2, assignee_id = $3 WHERE id = $4",
        )
        .bind(team)
        .bind(branch)
        .bind(agent)
        .bind(conversation)
        .execute(store.pool())
        .await
        .unwrap();
    }

    let foreign = store.ensure_account("other").await.unwrap();
    let now = 1_760_000_000_000i64;
    for sql in [
        "INSERT INTO inboxes (id, account_id, slug, channel, name, created_at, updated_at) \
         VALUES ('inb_foreign', $1, 'foreign', 'webchat', 'Foreign', $2, $2)",
        "INSERT INTO contacts (id, account_id, name, created_at, updated_at) \
         VALUES ('ctc_foreign', $1, 'Foreign Contact', $2, $2)",
        "INSERT INTO conversations (id, account_id, inbox_id, contact_id, channel, status, \
         last_message_at, created_at, updated_at) \
         VALUES ('conv_foreign', $1, 'inb_foreign', 'ctc_foreign', 'webchat', 'open', $2, $2, $2)",
        "INSERT INTO users (id, account_id, email, name, password_hash, role, created_at, updated_at) \
         VALUES ('usr_foreign', $1, 'foreign@example.com', 'Foreign', 'x', 'agent', $2, $2)",
    ] {
        sqlx::query(sql)
            .bind(&foreign)
            .bind(now)
            .execute(store.pool())
            .await
            .unwrap();
    }
    store.close().await;
    World {
        team_1,
        branch_1,
        inside,
        outside,
        foreign_conversation: "conv_foreign".into(),
        foreign_contact: "ctc_foreign".into(),
        foreign_user: "usr_foreign".into(),
        agent_1,
        agent_2,
        admin,
    }
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum Target {
    Inside,
    Outside,
    Foreign,
}

/// Exercises `permission` on the target record; returns the status (and body for counts).
async fn probe(
    hub: &TestHub,
    w: &World,
    token: &str,
    permission: &str,
    target: Target,
) -> (u16, Value) {
    let conversation = match target {
        Target::Inside => &w.inside,
        Target::Outside => &w.outside,
        Target::Foreign => &w.foreign_conversation,
    };
    match permission {
        "view_conversations" => {
            hub.call(
                Method::GET,
                &format!("/v1/conversations/{conversation}"),
                token,
                None,
            )
            .await
        }
        "reply_to_customer" => {
            hub.call(
                Method::POST,
                &format!("/v1/conversations/{conversation}/messages"),
                token,
                Some(json!({ "text": "We are on it." })),
            )
            .await
        }
        "reassign_conversations" => {
            // Each conversation is reassigned to the agent it already has, so the world stays
            // as built for the other probes.
            let assignee = match target {
                Target::Inside => &w.agent_1.id,
                _ => &w.agent_2.id,
            };
            hub.call(
                Method::PUT,
                &format!("/v1/conversations/{conversation}/assignment"),
                token,
                Some(json!({ "assignee_id": assignee })),
            )
            .await
        }
        "view_sla_reports" => {
            // A report covers the scope: "inside" must be counted and "outside" must not be;
            // the answer is folded into a status so the matrix reads the same for every row.
            let (status, body) = hub.call(Method::GET, "/v1/reports/sla", token, None).await;
            if status != 200 {
                return (status, body);
            }
            let count = body["totals"]["conversations"].as_i64().unwrap();
            let counted = match target {
                Target::Inside => count >= 1,
                Target::Outside => count == 2,
                // Another account's conversations never count: at most the two of this one.
                Target::Foreign => return (if count <= 2 { 404 } else { 200 }, body),
            };
            (if counted { 200 } else { 404 }, body)
        }
        "export_raw_data" => match target {
            Target::Foreign => {
                hub.call(
                    Method::DELETE,
                    &format!("/v1/contacts/{}", w.foreign_contact),
                    token,
                    None,
                )
                .await
            }
            _ => {
                hub.call(Method::GET, "/v1/inbound-events?limit=5", token, None)
                    .await
            }
        },
        "manage_users" => {
            let user = match target {
                Target::Inside => &w.agent_1.id,
                Target::Outside => &w.agent_2.id,
                Target::Foreign => &w.foreign_user,
            };
            hub.call(Method::GET, &format!("/v1/admin/users/{user}"), token, None)
                .await
        }
        "view_audit_log" => match target {
            Target::Foreign => {
                let (status, body) = hub
                    .call(Method::GET, "/v1/audit?limit=100", token, None)
                    .await;
                if status != 200 {
                    return (status, body);
                }
                // Another account's audit records never appear.
                let leaked = body["data"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .any(|r| r["account_id"] != body["data"][0]["account_id"]);
                (if leaked { 200 } else { 404 }, body)
            }
            _ => {
                hub.call(Method::GET, "/v1/audit?limit=5", token, None)
                    .await
            }
        },
        "configure_routing" => match target {
            Target::Foreign => {
                hub.call(Method::GET, "/v1/admin/inboxes/inb_foreign", token, None)
                    .await
            }
            _ => {
                hub.call(Method::GET, "/v1/admin/inboxes/inb_support-wa", token, None)
                    .await
            }
        },
        other => panic!("no probe for {other}"),
    }
}

fn expected(scope: S, target: Target) -> u16 {
    match (scope, target) {
        (S::No, _) => 403,
        (_, Target::Foreign) => 404,
        (_, Target::Inside) => 200,
        (S::All, Target::Outside) => 200,
        (_, Target::Outside) => 404,
    }
}

async fn role_scope_matrix(backend: Backend) {
    let site = Site::new(backend);
    let hub = TestHub::start(&site).await;
    let w = world(&site, &hub).await;
    // A custom role from the same permissions, made over the admin API, walks the same matrix.
    let custom = [
        S::Branch,
        S::Team,
        S::No,
        S::No,
        S::No,
        S::Branch,
        S::No,
        S::All,
    ];
    let (status, role) = hub
        .call(
            Method::POST,
            "/v1/admin/roles",
            &w.admin.token,
            Some(json!({
                "name": "night_shift",
                "grants": {
                    "view_conversations": "branch",
                    "reply_to_customer": "team",
                    "view_sla_reports": "branch",
                    "view_audit_log": "all",
                }
            })),
        )
        .await;
    assert_eq!(status, 201, "{role}");
    let custom_id = role["id"].as_str().unwrap().to_owned();
    let mut rows: Vec<(&str, [S; 8])> = MATRIX.to_vec();
    rows.push((&custom_id, custom));

    let mut failures = Vec::new();
    for (role, scopes) in rows {
        // Each role's caller sits where "inside" is: team 1, branch 1; the agent is agent_1,
        // to whom the inside conversation is assigned.
        let caller = match role {
            "agent" => w.agent_1.token.clone(),
            "super_admin" => w.admin.token.clone(),
            _ => site.user(role, Some(&w.branch_1), &[&w.team_1]).await.token,
        };
        for (permission, scope) in PERMISSIONS.iter().zip(scopes) {
            for target in [Target::Inside, Target::Outside, Target::Foreign] {
                let (status, body) = probe(&hub, &w, &caller, permission, target).await;
                let want = expected(scope, target);
                let ok = match want {
                    200 => (200..300).contains(&status),
                    _ => status == want,
                };
                if !ok {
                    failures.push(format!(
                        "{role} × {permission} on {target:?}: got {status}, want {want} ({body})"
                    ));
                } else if want == 403 {
                    assert_eq!(body["error"]["code"], "forbidden", "{role} {permission}");
                }
            }
        }
    }
    assert!(
        failures.is_empty(),
        "matrix mismatches:\n{}",
        failures.join("\n")
    );

    // Lists are filtered the same way: the agent sees exactly the conversation assigned to it.
    let (status, list) = hub
        .call(Method::GET, "/v1/conversations", &w.agent_1.token, None)
        .await;
    assert_eq!(status, 200);
    let ids: Vec<&str> = list["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, [w.inside.as_str()]);
    // And a team lead cannot hand its conversation to someone outside its teams.
    let lead = site
        .user("team_lead", Some(&w.branch_1), &[&w.team_1])
        .await;
    let (status, body) = hub
        .call(
            Method::PUT,
            &format!("/v1/conversations/{}/assignment", w.inside),
            &lead.token,
            Some(json!({ "assignee_id": w.agent_2.id })),
        )
        .await;
    // The issue's rule: assigning to an agent outside the caller's scope is a 403.
    assert_eq!(status, 403, "{body}");
    assert_eq!(body["error"]["code"], "forbidden");
    hub.stop().await;
    site.cleanup().await;
}

/// An API key carries a role but no user, team or branch: `all` grants work, narrower ones
/// reach nothing.
async fn api_key_scopes_follow_its_role(backend: Backend) {
    let site = Site::new(backend);
    let hub = TestHub::start(&site).await;
    let w = world(&site, &hub).await;
    let store = site.store().await;
    let account = store.ensure_account("default").await.unwrap();
    let minted = switchboard::auth::mint_key();
    store
        .create_api_key(
            &account,
            "lead-key",
            "team_lead",
            &minted.prefix,
            &minted.hash,
            None,
        )
        .await
        .unwrap();
    store.close().await;
    let (status, _) = probe(&hub, &w, &minted.key, "view_conversations", Target::Inside).await;
    assert_eq!(status, 404);
    let (status, body) = probe(&hub, &w, &minted.key, "view_audit_log", Target::Inside).await;
    assert_eq!(status, 403, "{body}");
    let (status, _) = probe(&hub, &w, &hub.key, "view_conversations", Target::Outside).await;
    assert_eq!(status, 200, "the super_admin key sees the whole account");
    hub.stop().await;
    site.cleanup().await;
}

on_both_backends!(
    managing_users_confers_no_more_than_you_hold,
    a_tenants_signature_cannot_post_into_another_tenants_number,
);

/// Holding `manage_users` through a custom role does not lead to more: the roles a caller gives
/// to users and keys, writes into roles, or takes over by resetting a password, must be
/// covered by the caller's own grants.
async fn managing_users_confers_no_more_than_you_hold(backend: Backend) {
    let site = Site::new(backend);
    let hub = TestHub::start(&site).await;
    let admin = site.user("super_admin", None, &[]).await;
    let (status, role) = hub
        .call(
            Method::POST,
            "/v1/admin/roles",
            &admin.token,
            Some(json!({ "name": "people_ops", "grants": {
                "manage_users": "all", "view_conversations": "team",
                "reply_to_customer": "team", "view_sla_reports": "team",
            }})),
        )
        .await;
    assert_eq!(status, 201, "{role}");
    let manager = site.user(role["id"].as_str().unwrap(), None, &[]).await;
    let user = |role: &str, email: &str| json!({ "email": email, "name": "N", "password": "Orchid-Lantern-77", "role": role });
    let refused = [
        (
            Method::POST,
            "/v1/admin/users".to_owned(),
            user("super_admin", "a@example.com"),
        ),
        (
            Method::POST,
            "/v1/admin/users".to_owned(),
            user("team_lead", "b@example.com"),
        ),
        (
            Method::POST,
            "/v1/admin/api-keys".to_owned(),
            json!({ "name": "k", "role": "operations" }),
        ),
        (
            Method::PATCH,
            format!("/v1/admin/users/{}", manager.id),
            json!({ "role": "super_admin" }),
        ),
        (
            Method::POST,
            "/v1/admin/roles".to_owned(),
            json!({ "name": "wider", "grants": { "export_raw_data": "all" } }),
        ),
        (
            Method::POST,
            format!("/v1/admin/users/{}/password", admin.id),
            json!({ "password": "Orchid-Lantern-77" }),
        ),
        (
            Method::PATCH,
            format!("/v1/admin/users/{}", admin.id),
            json!({ "active": false }),
        ),
    ];
    for (method, path, body) in refused {
        let (status, reply) = hub
            .call(method.clone(), &path, &manager.token, Some(body))
            .await;
        assert_eq!(
            (status, reply["error"]["code"].as_str()),
            (403, Some("forbidden")),
            "{method} {path}: {reply}"
        );
    }
    // What the role does cover is allowed: an agent (assigned ⊂ team, self ⊂ team).
    let (status, body) = hub
        .call(
            Method::POST,
            "/v1/admin/users",
            &manager.token,
            Some(user("agent", "c@example.com")),
        )
        .await;
    assert_eq!(status, 201, "{body}");
    hub.stop().await;
    site.cleanup().await;
}

/// A WhatsApp event is routed only to inboxes of the account whose app secret signed it.
async fn a_tenants_signature_cannot_post_into_another_tenants_number(backend: Backend) {
    let site = Site::new(backend);
    // Arrays replace the demo config's, so the default account's app is declared again.
    let extra = r#"
[[whatsapp_apps]]
name = "demo"
app_secret = "test_app_secret_0123456789abcdef"
verify_token = "demo-verify-token"
[[whatsapp_apps]]
name = "tenant-b"
app_secret = "tenant_b_secret_0123456789abcdef"
verify_token = "b"
account = "tenant-b"
[[inboxes]]
slug = "b-wa"
channel = "whatsapp"
account = "tenant-b"
whatsapp_app = "tenant-b"
phone_number_id = "800000000000222"
"#;
    let hub = TestHub::start_with(&site, extra).await;
    // Signed with the default account's app secret, naming tenant B's number.
    let body = wa_envelope(
        "800000000000222",
        json!([{ "profile": { "name": "Mallory" }, "wa_id": "15555550666" }]),
        json!([{ "from": "15555550666", "id": "wamid.cross", "timestamp": "1760000000", "type": "text", "text": { "body": "pay here" } }]),
        json!([]),
    );
    assert_eq!(hub.post_whatsapp(&body).await.status(), 200);
    let unrouted = eventually("the event to be marked unrouted", || async {
        let e = hub.events("unrouted").await;
        (!e.is_empty()).then_some(e)
    })
    .await;
    assert_eq!(unrouted.len(), 1);
    let store = site.store().await;
    let n: i64 = sqlx::Row::get(
        &sqlx::query("SELECT COUNT(*) FROM messages")
            .fetch_one(store.pool())
            .await
            .unwrap(),
        0,
    );
    assert_eq!(n, 0, "nothing reached tenant B's inbox");
    store.close().await;
    hub.stop().await;
    site.cleanup().await;
}
