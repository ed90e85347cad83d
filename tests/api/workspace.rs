//! What the agent workspace needs from the conversation API, end to end on both backends:
//! reopening and snoozing (with the wake sweep, a customer's message waking a snooze, and
//! routing picking a reopened conversation up), messages that say who wrote them (and visitors
//! who are not told), conversation lists with contacts, filters, search and activity order, and
//! offers that say who is waiting.

use reqwest::Method;
use serde_json::{Value, json};

use crate::admin::assert_error;
use crate::console::Console;
use crate::helpers::*;
use crate::on_both_backends;

on_both_backends!(
    conversations_snooze_wake_and_reopen,
    messages_say_who_wrote_them,
    conversation_lists_the_workspace_can_use,
    offers_say_who_is_waiting,
    assignable_agents_are_those_the_caller_may_assign_to,
);

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64
}

/// A WhatsApp customer `name` (`wa_id`) writes `id` at `at_secs` (Unix seconds).
async fn customer_writes(hub: &TestHub, wa_id: &str, name: &str, id: &str, at_secs: i64) {
    let body = wa_envelope(
        PHONE_NUMBER_ID,
        json!([{ "profile": { "name": name }, "wa_id": wa_id }]),
        json!([{ "from": wa_id, "id": id, "timestamp": at_secs.to_string(), "type": "text",
                 "text": { "body": "Hello there" } }]),
        json!([]),
    );
    assert_eq!(hub.post_whatsapp(&body).await.status(), 200);
}

/// The conversations (newest first) once there are `n` of them.
async fn conversations(hub: &TestHub, n: usize) -> Vec<Value> {
    eventually(&format!("{n} conversations"), || async {
        let all = hub.conversations().await;
        (all.len() == n).then_some(all)
    })
    .await
}

async fn conversation(hub: &TestHub, token: &str, id: &str) -> Value {
    let (status, body) = hub
        .call(Method::GET, &format!("/v1/conversations/{id}"), token, None)
        .await;
    assert_eq!(status, 200, "{body}");
    body
}

/// Waits until the conversation's `field` reads `value`.
async fn until(hub: &TestHub, token: &str, id: &str, field: &str, value: &str) -> Value {
    eventually(&format!("{id}.{field} = {value}"), || async {
        let c = conversation(hub, token, id).await;
        (c[field] == value).then_some(c)
    })
    .await
}

async fn post(hub: &TestHub, token: &str, path: &str, body: Option<Value>) -> (u16, Value) {
    hub.call(Method::POST, path, token, body).await
}

/// An agent (role `agent`) with WhatsApp `capacity`, online.
async fn online_agent(site: &Site, hub: &TestHub, admin: &TestUser, capacity: u32) -> TestUser {
    let agent = site.user("agent", None, &[]).await;
    let (status, body) = hub
        .call(
            Method::PUT,
            &format!("/v1/admin/agents/{}/profile", agent.id),
            &admin.token,
            Some(json!({ "capacity": { "whatsapp": capacity } })),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    let (status, body) = hub
        .call(
            Method::PUT,
            "/v1/agents/me/presence",
            &agent.token,
            Some(json!({ "status": "online" })),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    agent
}

/// The next `conversation.updated` frame about `id`.
async fn updated(console: &mut Console, id: &str) -> Value {
    loop {
        let frame = console.next_of("conversation.updated").await;
        if frame["data"]["id"] == id {
            return frame["data"].clone();
        }
    }
}

async fn conversations_snooze_wake_and_reopen(backend: Backend) {
    let site = Site::new(backend);
    let hub = TestHub::start(&site).await;
    let admin = site.user("super_admin", None, &[]).await;
    let t = &admin.token;
    let now_secs = now_ms() / 1000;
    customer_writes(
        &hub,
        "15550001001",
        "Ada Tester",
        "wamid.snooze.1",
        now_secs,
    )
    .await;
    let first = conversations(&hub, 1).await[0]["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let mut console = Console::open(&hub, t, None).await;
    let snooze = format!("/v1/conversations/{first}/snooze");
    let reopen = format!("/v1/conversations/{first}/reopen");

    // Bad input.
    let soon = now_ms() + 60_000;
    assert_error(
        &post(
            &hub,
            t,
            &snooze,
            Some(json!({ "until_ms": soon, "why": 1 })),
        )
        .await,
        422,
        "validation_failed",
        None,
    );
    assert_error(
        &post(&hub, t, &snooze, Some(json!({ "until_ms": now_ms() - 1 }))).await,
        422,
        "validation_failed",
        Some("until_ms"),
    );
    let too_far = now_ms() + 91 * 24 * 3_600_000;
    assert_error(
        &post(&hub, t, &snooze, Some(json!({ "until_ms": too_far }))).await,
        422,
        "validation_failed",
        Some("until_ms"),
    );
    assert_error(
        &post(&hub, t, &snooze, Some(json!({}))).await,
        422,
        "validation_failed",
        Some("until_ms"),
    );
    for path in [
        "/v1/conversations/conv_nope/snooze",
        "/v1/conversations/conv_nope/reopen",
    ] {
        let body = Some(json!({ "until_ms": soon }));
        assert_error(&post(&hub, t, path, body).await, 404, "not_found", None);
    }
    // Out of scope (an agent reaches only what is assigned to them) is a 404; without
    // `reply_to_customer` (a branch manager) a 403.
    let agent = site.user("agent", None, &[]).await;
    let body = Some(json!({ "until_ms": soon }));
    assert_error(
        &post(&hub, &agent.token, &snooze, body.clone()).await,
        404,
        "not_found",
        None,
    );
    assert_error(
        &post(&hub, &agent.token, &reopen, None).await,
        404,
        "not_found",
        None,
    );
    let manager = site.user("branch_manager", None, &[]).await;
    assert_error(
        &post(&hub, &manager.token, &reopen, None).await,
        403,
        "forbidden",
        None,
    );

    // Snoozed: out of the queue until it wakes.
    let (status, snoozed) = post(&hub, t, &snooze, Some(json!({ "until_ms": soon }))).await;
    assert_eq!(status, 200, "{snoozed}");
    assert_eq!(snoozed["status"], "snoozed");
    assert_eq!(snoozed["snoozed_until_ms"], soon);
    assert_eq!(snoozed["routing_state"], "idle");
    assert_eq!(updated(&mut console, &first).await["status"], "snoozed");
    let (_, listed) = hub.get("/v1/conversations?status=snoozed").await;
    assert_eq!(listed["data"][0]["id"], first.as_str(), "{listed}");

    // The customer writes: the same conversation wakes at once and waits for an agent again.
    customer_writes(
        &hub,
        "15550001001",
        "Ada Tester",
        "wamid.snooze.2",
        now_secs,
    )
    .await;
    let woken = updated(&mut console, &first).await;
    assert_eq!(woken["status"], "open", "{woken}");
    assert_eq!(woken["snoozed_until_ms"], Value::Null);
    assert_eq!(woken["routing_state"], "waiting");
    assert_eq!(hub.conversations().await.len(), 1);

    // Its time comes: the sweep wakes it.
    let shortly = now_ms() + 1_200;
    let (status, body) = post(&hub, t, &snooze, Some(json!({ "until_ms": shortly }))).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(updated(&mut console, &first).await["status"], "snoozed");
    let woken = updated(&mut console, &first).await;
    assert_eq!(woken["status"], "open", "{woken}");
    assert!(now_ms() >= shortly);
    assert_eq!(woken["routing_state"], "waiting");

    // Resolved: it cannot be snoozed; reopening it is refused while the contact has another
    // conversation open in the inbox, and names that conversation.
    let (status, body) = post(&hub, t, &format!("/v1/conversations/{first}/resolve"), None).await;
    assert_eq!(status, 200, "{body}");
    assert_error(
        &post(&hub, t, &snooze, Some(json!({ "until_ms": soon }))).await,
        409,
        "conflict",
        None,
    );
    customer_writes(
        &hub,
        "15550001001",
        "Ada Tester",
        "wamid.snooze.3",
        now_secs,
    )
    .await;
    let second = conversations(&hub, 2).await[0]["id"]
        .as_str()
        .unwrap()
        .to_owned();
    assert_ne!(second, first);
    let refused = post(&hub, t, &reopen, None).await;
    assert_error(&refused, 409, "conflict", Some("conversation_id"));
    assert_eq!(
        refused.1["error"]["details"][0]["conversation_id"],
        second.as_str()
    );
    assert!(
        refused.1["error"]["message"]
            .as_str()
            .unwrap()
            .contains(&second)
    );

    // With the other one resolved it reopens, unassigned: routing picks it up like a new one.
    let (status, body) = post(
        &hub,
        t,
        &format!("/v1/conversations/{second}/resolve"),
        None,
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let agent = online_agent(&site, &hub, &admin, 1).await;
    let (status, reopened) = post(&hub, t, &reopen, None).await;
    assert_eq!(status, 200, "{reopened}");
    assert_eq!(reopened["status"], "open");
    assert_eq!(reopened["resolved_at_ms"], Value::Null);
    assert_eq!(updated(&mut console, &first).await["status"], "open");
    let assigned = until(&hub, t, &first, "routing_state", "assigned").await;
    assert_eq!(assigned["assignee_id"], agent.id.as_str());
    // Reopening an open conversation changes nothing.
    let (status, again) = post(&hub, t, &reopen, None).await;
    assert_eq!(status, 200, "{again}");
    assert_eq!(again["updated_at_ms"], assigned["updated_at_ms"]);

    // Snoozing keeps the assignee (the agent may snooze what is theirs), and so does waking.
    let (status, kept) = post(
        &hub,
        &agent.token,
        &snooze,
        Some(json!({ "until_ms": soon })),
    )
    .await;
    assert_eq!(status, 200, "{kept}");
    assert_eq!(kept["assignee_id"], agent.id.as_str());
    assert_eq!(kept["routing_state"], "assigned");
    let (status, back) = post(&hub, &agent.token, &reopen, None).await;
    assert_eq!(status, 200, "{back}");
    assert_eq!(back["status"], "open");
    assert_eq!(back["assignee_id"], agent.id.as_str());
    assert_eq!(back["snoozed_until_ms"], Value::Null);

    // A resolved conversation reopens to its last assignee while they are active.
    let (status, body) = post(&hub, t, &format!("/v1/conversations/{first}/resolve"), None).await;
    assert_eq!(status, 200, "{body}");
    let (status, body) = post(&hub, t, &reopen, None).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["assignee_id"], agent.id.as_str());
    assert_eq!(body["routing_state"], "assigned");
    let (_, trace) = hub
        .call(
            Method::GET,
            &format!("/v1/conversations/{first}/routing-trace"),
            t,
            None,
        )
        .await;
    let kinds: Vec<&str> = trace["entries"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|e| e["kind"].as_str())
        .collect();
    assert!(
        kinds.contains(&"snoozed") && kinds.contains(&"reopened"),
        "{kinds:?}"
    );

    console.close().await;
    hub.stop().await;
    site.cleanup().await;
}

async fn messages_say_who_wrote_them(backend: Backend) {
    let site = Site::new(backend);
    let hub = TestHub::start(&site).await;
    let admin = site.user("super_admin", None, &[]).await;
    customer_writes(
        &hub,
        "15550002001",
        "Ada Tester",
        "wamid.author.1",
        now_ms() / 1000,
    )
    .await;
    let conv = conversations(&hub, 1).await[0]["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let mut console = Console::open(&hub, &admin.token, None).await;
    let path = format!("/v1/conversations/{conv}/messages");
    let (status, sent) = post(&hub, &admin.token, &path, Some(json!({ "text": "On it" }))).await;
    assert_eq!(status, 201, "{sent}");
    assert_eq!(sent["author_id"], admin.id.as_str());
    assert_eq!(sent["author_name"], "Test User");
    let frame = console.next_of("message.created").await;
    assert_eq!(frame["data"]["author_id"], admin.id.as_str(), "{frame}");
    assert_eq!(frame["data"]["author_name"], "Test User");
    let (status, note) = post(
        &hub,
        &admin.token,
        &path,
        Some(json!({ "text": "VIP, be nice", "private": true })),
    )
    .await;
    assert_eq!(status, 201, "{note}");
    let frame = console.next_of("note.created").await;
    assert_eq!(frame["data"]["author_id"], admin.id.as_str(), "{frame}");
    assert_eq!(frame["data"]["author_name"], "Test User");
    let listed = hub.messages(&conv).await;
    assert_eq!(listed.len(), 3, "{listed:?}");
    let inbound = listed.iter().find(|m| m["direction"] == "inbound").unwrap();
    assert_eq!(inbound["author_id"], Value::Null);
    assert_eq!(inbound["author_name"], Value::Null);
    assert!(inbound.as_object().unwrap().contains_key("author_name"));
    for m in listed.iter().filter(|m| m["direction"] != "inbound") {
        assert_eq!(m["author_id"], admin.id.as_str(), "{m}");
        assert_eq!(m["author_name"], "Test User", "{m}");
    }

    // A web-chat visitor sees the reply, not who on the team wrote it.
    let session: Value = hub
        .client
        .post(hub.url("/v1/webchat/website/sessions"))
        .json(&json!({ "name": "Vera" }))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let token = session["visitor_token"].as_str().unwrap();
    let mut visitor = Console::open_request(crate::console::request(
        &hub,
        &format!("/v1/webchat/website/ws?token={token}"),
        None,
    ))
    .await;
    let said = hub
        .client
        .post(hub.url("/v1/webchat/website/messages"))
        .bearer_auth(token)
        .json(&json!({ "client_message_id": "m1", "text": "Anyone there?" }))
        .send()
        .await
        .unwrap();
    assert!(said.status().is_success());
    let own = visitor.next_of("message.created").await;
    let chat = own["data"]["conversation_id"].as_str().unwrap().to_owned();
    let (status, sent) = post(
        &hub,
        &admin.token,
        &format!("/v1/conversations/{chat}/messages"),
        Some(json!({ "text": "Yes, hello Vera" })),
    )
    .await;
    assert_eq!(status, 201, "{sent}");
    assert_eq!(sent["author_name"], "Test User");
    let pushed = visitor.next_of("message.created").await;
    assert_eq!(pushed["data"]["id"], sent["id"], "{pushed}");
    let data = pushed["data"].as_object().unwrap();
    assert!(
        !data.contains_key("author_id") && !data.contains_key("author_name"),
        "{pushed}"
    );
    visitor.close().await;
    console.close().await;
    hub.stop().await;
    site.cleanup().await;
}

async fn conversation_lists_the_workspace_can_use(backend: Backend) {
    let site = Site::new(backend);
    let hub = TestHub::start(&site).await;
    let admin = site.user("super_admin", None, &[]).await;
    let t0 = now_ms() / 1000 - 3_600;
    // Created in this order, each a little later.
    let people = [
        ("15550003001", "Grace Hopper"),
        ("15550003002", "Ada LOVELACE"),
        ("15550003003", "100%_Real Bob"),
    ];
    for (i, (wa_id, name)) in people.iter().enumerate() {
        let id = format!("wamid.list.{i}");
        customer_writes(&hub, wa_id, name, &id, t0 + 10 * i as i64).await;
        conversations(&hub, i + 1).await;
    }
    let all = hub.conversations().await;
    let by_name = |name: &str| {
        all.iter()
            .find(|c| c["contact"]["name"] == name)
            .unwrap_or_else(|| panic!("{name} in {all:?}"))
            .clone()
    };
    let (grace, ada, bob) = (
        by_name("Grace Hopper"),
        by_name("Ada LOVELACE"),
        by_name("100%_Real Bob"),
    );
    assert_eq!(grace["contact"]["id"], grace["contact_id"]);
    assert_eq!(grace["contact"]["phone"], "+15550003001");
    let ids = |body: &Value| -> Vec<String> {
        body["data"]
            .as_array()
            .unwrap_or_else(|| panic!("{body}"))
            .iter()
            .map(|c| c["id"].as_str().unwrap().to_owned())
            .collect()
    };
    let id = |c: &Value| c["id"].as_str().unwrap().to_owned();
    let list = |query: String| {
        let hub = &hub;
        async move {
            let (status, body) = hub.get(&format!("/v1/conversations?{query}")).await;
            assert_eq!(status, 200, "{query}: {body}");
            ids(&body)
        }
    };

    // Search: name in any case, phone, identity; wildcards are literal.
    assert_eq!(list("q=grace".into()).await, vec![id(&grace)]);
    assert_eq!(list("q=LoveLace".into()).await, vec![id(&ada)]);
    assert_eq!(list("q=5550003001".into()).await, vec![id(&grace)]);
    assert_eq!(list("q=%25".into()).await, vec![id(&bob)]);
    assert_eq!(list("q=_".into()).await, vec![id(&bob)]);
    assert_eq!(list("q=%25_R".into()).await, vec![id(&bob)]);
    assert!(list("q=nobody".into()).await.is_empty());
    assert_eq!(list("q=%27%3B--".into()).await, Vec::<String>::new());
    let contact = grace["contact_id"].as_str().unwrap();
    assert_eq!(list(format!("contact={contact}")).await, vec![id(&grace)]);

    // Unassigned only, or one assignee's.
    let agent = site.user("agent", None, &[]).await;
    let (status, body) = hub
        .call(
            Method::PUT,
            &format!("/v1/conversations/{}/assignment", id(&ada)),
            &admin.token,
            Some(json!({ "assignee_id": agent.id })),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        list("assignee=none".into()).await,
        vec![id(&bob), id(&grace)]
    );
    assert_eq!(list(format!("assignee={}", agent.id)).await, vec![id(&ada)]);
    assert_eq!(
        list("assignee=none&q=ada".into()).await,
        Vec::<String>::new()
    );

    // Grace writes again: most recently active first, paged one at a time with no gap or
    // repeat; the default order is still by creation.
    customer_writes(
        &hub,
        "15550003001",
        "Grace Hopper",
        "wamid.list.again",
        t0 + 100,
    )
    .await;
    eventually("grace's second message", || async {
        (hub.messages(&id(&grace)).await.len() == 2).then_some(())
    })
    .await;
    assert_eq!(
        list("sort=last_activity".into()).await,
        vec![id(&grace), id(&bob), id(&ada)]
    );
    assert_eq!(list("".into()).await, vec![id(&bob), id(&ada), id(&grace)]);
    assert_eq!(
        list("sort=created".into()).await,
        vec![id(&bob), id(&ada), id(&grace)]
    );
    let mut paged = Vec::new();
    let mut cursor: Option<String> = None;
    let mut activity_cursor = String::new();
    loop {
        let query = match &cursor {
            Some(c) => format!("/v1/conversations?sort=last_activity&limit=1&cursor={c}"),
            None => "/v1/conversations?sort=last_activity&limit=1".to_owned(),
        };
        let (status, body) = hub.get(&query).await;
        assert_eq!(status, 200, "{body}");
        paged.extend(ids(&body));
        match body["next_cursor"].as_str() {
            Some(next) => {
                activity_cursor = next.to_owned();
                cursor = Some(next.to_owned());
            }
            None => break,
        }
    }
    assert_eq!(paged, vec![id(&grace), id(&bob), id(&ada)]);

    // A cursor belongs to its order.
    let (_, first_page) = hub.get("/v1/conversations?limit=1").await;
    let created_cursor = first_page["next_cursor"].as_str().unwrap().to_owned();
    for query in [
        format!("sort=last_activity&cursor={created_cursor}"),
        format!("cursor={activity_cursor}"),
        format!("sort=created&cursor={activity_cursor}"),
    ] {
        let got = hub.get(&format!("/v1/conversations?{query}")).await;
        assert_error(&got, 422, "validation_failed", Some("cursor"));
    }
    for (query, field) in [
        ("sort=oldest", "sort"),
        ("q=", "q"),
        ("contact=usr_1", "contact"),
        ("colour=red", ""),
    ] {
        let got = hub.get(&format!("/v1/conversations?{query}")).await;
        let field = (!field.is_empty()).then_some(field);
        assert_error(&got, 422, "validation_failed", field);
    }
    // The filters belong to the conversation list only.
    let got = hub
        .get(&format!("/v1/conversations/{}/messages?q=x", id(&grace)))
        .await;
    assert_error(&got, 422, "validation_failed", Some("q"));

    // An agent's list is their scope: only what is assigned to them, contact included.
    let (status, body) = hub
        .call(
            Method::GET,
            "/v1/conversations?sort=last_activity",
            &agent.token,
            None,
        )
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(ids(&body), vec![id(&ada)]);
    assert_eq!(body["data"][0]["contact"]["name"], "Ada LOVELACE");
    hub.stop().await;
    site.cleanup().await;
}

async fn offers_say_who_is_waiting(backend: Backend) {
    let site = Site::new(backend);
    let hub = TestHub::start(&site).await;
    let admin = site.user("super_admin", None, &[]).await;
    let (status, body) = hub
        .call(
            Method::POST,
            "/v1/admin/routing-rules",
            &admin.token,
            Some(json!({
                "name": "offer everything",
                "match": "true",
                "steps": [{ "target": "true", "priority": 10, "timeout_secs": null }],
                "mode": "offer",
                "offer_timeout_secs": 300
            })),
        )
        .await;
    assert_eq!(status, 201, "{body}");
    let agent = online_agent(&site, &hub, &admin, 1).await;
    let mut console = Console::open(&hub, &agent.token, None).await;
    customer_writes(
        &hub,
        "15550004001",
        "Ada Tester",
        "wamid.offer.1",
        now_ms() / 1000,
    )
    .await;
    let frame = console.next_of("offer.created").await;
    assert_eq!(frame["data"]["contact_name"], "Ada Tester", "{frame}");
    assert_eq!(frame["data"]["channel"], "whatsapp");
    let (status, body) = hub
        .call(Method::GET, "/v1/offers", &agent.token, None)
        .await;
    assert_eq!(status, 200, "{body}");
    let offers = body["data"].as_array().unwrap();
    assert_eq!(offers.len(), 1, "{body}");
    assert_eq!(offers[0]["contact_name"], "Ada Tester");
    assert_eq!(offers[0]["channel"], "whatsapp");
    assert_eq!(offers[0]["id"], frame["data"]["id"]);
    console.close().await;
    hub.stop().await;
    site.cleanup().await;
}

async fn assignable_agents_are_those_the_caller_may_assign_to(backend: Backend) {
    let site = Site::new(backend);
    let hub = TestHub::start(&site).await;
    let admin = site.user("super_admin", None, &[]).await;
    let create = |path: &'static str, name: &'static str| {
        let hub = &hub;
        let token = admin.token.clone();
        async move {
            let (status, body) = hub
                .call(Method::POST, path, &token, Some(json!({ "name": name })))
                .await;
            assert_eq!(status, 201, "{body}");
            body["id"].as_str().unwrap().to_owned()
        }
    };
    let payments = create("/v1/admin/teams", "Payments").await;
    let sales = create("/v1/admin/teams", "Sales").await;
    let north = create("/v1/admin/branches", "North").await;
    // The WhatsApp inbox's conversations belong to the Payments team and the North branch.
    let (_, inboxes) = hub
        .call(Method::GET, "/v1/admin/inboxes", &admin.token, None)
        .await;
    let inbox = inboxes["data"]
        .as_array()
        .unwrap()
        .iter()
        .find(|i| i["channel"] == "whatsapp")
        .unwrap()["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let (status, body) = hub
        .call(
            Method::PATCH,
            &format!("/v1/admin/inboxes/{inbox}"),
            &admin.token,
            Some(json!({ "team_id": payments, "branch_id": north })),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    let lead = site.user("team_lead", None, &[&payments]).await;
    let member = site.user("agent", Some(&north), &[&payments]).await;
    let outsider = site.user("agent", None, &[&sales]).await;
    let manager = site.user("branch_manager", Some(&north), &[]).await;
    let (status, body) = hub
        .call(
            Method::PUT,
            &format!("/v1/admin/agents/{}/profile", member.id),
            &admin.token,
            Some(json!({ "capacity": { "whatsapp": 3 } })),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    let (status, body) = hub
        .call(
            Method::PUT,
            "/v1/agents/me/presence",
            &member.token,
            Some(json!({ "status": "online" })),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    customer_writes(
        &hub,
        "15550005001",
        "Ada Tester",
        "wamid.assignable.1",
        now_ms() / 1000,
    )
    .await;
    let conv = conversations(&hub, 1).await[0]["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let path = format!("/v1/conversations/{conv}/assignable-agents");
    let listed = |token: String| {
        let hub = &hub;
        let path = path.clone();
        async move {
            let (status, body) = hub.call(Method::GET, &path, &token, None).await;
            assert_eq!(status, 200, "{body}");
            let mut ids: Vec<String> = body["data"]
                .as_array()
                .unwrap()
                .iter()
                .map(|a| a["id"].as_str().unwrap().to_owned())
                .collect();
            ids.sort();
            (ids, body)
        }
    };
    let sorted = |mut v: Vec<&str>| {
        v.sort();
        v.into_iter().map(str::to_owned).collect::<Vec<String>>()
    };
    // Everyone active for an `all` scope; the team's members for a team lead; the branch's
    // users for a branch manager.
    let (everyone, _) = listed(admin.token.clone()).await;
    for user in [&admin, &lead, &member, &outsider, &manager] {
        assert!(everyone.contains(&user.id), "{everyone:?}");
    }
    let (team, body) = listed(lead.token.clone()).await;
    assert_eq!(team, sorted(vec![&lead.id, &member.id]), "{body}");
    let one = body["data"]
        .as_array()
        .unwrap()
        .iter()
        .find(|a| a["id"] == member.id.as_str())
        .unwrap()
        .clone();
    assert_eq!(one["name"], "Test User");
    assert_eq!(one["presence"], "online");
    assert_eq!(one["capacity"]["whatsapp"], 3);
    assert!(one["load"]["whatsapp"].is_i64(), "{one}");
    let (branch, _) = listed(manager.token.clone()).await;
    assert_eq!(branch, sorted(vec![&member.id, &manager.id]));
    // Every one listed can be assigned by that caller.
    let (status, body) = hub
        .call(
            Method::PUT,
            &format!("/v1/conversations/{conv}/assignment"),
            &lead.token,
            Some(json!({ "assignee_id": member.id })),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    // An agent cannot reassign; a team lead of another team does not reach the conversation.
    let (status, _) = hub.call(Method::GET, &path, &member.token, None).await;
    assert_eq!(status, 403);
    let other_lead = site.user("team_lead", None, &[&sales]).await;
    let (status, _) = hub.call(Method::GET, &path, &other_lead.token, None).await;
    assert_eq!(status, 404);
    let (status, _) = hub
        .call(
            Method::GET,
            "/v1/conversations/conv_nope/assignable-agents",
            &admin.token,
            None,
        )
        .await;
    assert_eq!(status, 404);
    hub.stop().await;
    site.cleanup().await;
}
