//! The assignment engine end to end, on both backends: real webhooks land on agents by rule,
//! skill and load; freed capacity is filled from the queue; offers are declined, lapse and are
//! accepted; offline agents keep conversations for the grace period; silent assignees lose
//! them; manual changes; traces and queue statistics; and a two-node storm whose invariants
//! are checked in the database.

use std::collections::{HashMap, HashSet};
use std::time::{Duration, Instant};

use futures::StreamExt;

use reqwest::Method;
use serde_json::{Value, json};
use sqlx::Row;

use crate::admin::assert_error;
use crate::helpers::*;
use crate::on_both_backends;

on_both_backends!(
    freed_capacity_is_filled_from_the_queue_with_a_trace,
    skills_and_steps_pick_the_best_fit_and_widen_on_timeout,
    offers_are_declined_lapse_and_are_accepted,
    grace_period_and_no_reply_return_conversations_to_the_queue,
    manual_assignment_frees_and_unassignment_requeues,
    storm_keeps_the_invariants,
    the_commit_refuses_what_changed_since_the_decision,
    an_sla_warning_puts_a_later_arrival_first,
);

/// The hub, an admin and helpers to drive agents and customers.
struct Floor {
    site: Site,
    hub: TestHub,
    admin: TestUser,
    seen: HashSet<String>,
    customers: u64,
}

impl Floor {
    async fn open(backend: Backend, extra: &str) -> Floor {
        let site = Site::new(backend);
        let hub = TestHub::start_with(&site, extra).await;
        let admin = site.user("super_admin", None, &[]).await;
        Floor {
            site,
            hub,
            admin,
            seen: HashSet::new(),
            customers: 0,
        }
    }

    async fn admin(&self, method: Method, path: &str, body: Option<Value>) -> (u16, Value) {
        self.hub.call(method, path, &self.admin.token, body).await
    }

    /// An agent with `capacity` WhatsApp slots and `skills`, online.
    async fn agent(&self, capacity: u32, skills: Value) -> TestUser {
        let agent = self.site.user("agent", None, &[]).await;
        self.profile(&agent, capacity, skills).await;
        self.presence(&agent, "online").await;
        agent
    }

    async fn profile(&self, agent: &TestUser, capacity: u32, skills: Value) {
        let (status, body) = self
            .admin(
                Method::PUT,
                &format!("/v1/admin/agents/{}/profile", agent.id),
                Some(json!({ "capacity": { "whatsapp": capacity }, "skills": skills })),
            )
            .await;
        assert_eq!(status, 200, "{body}");
    }

    /// Sets the agent's presence; returns the server's `changed_at_ms`.
    async fn presence(&self, agent: &TestUser, status: &str) -> i64 {
        let (code, body) = self
            .hub
            .call(
                Method::PUT,
                "/v1/agents/me/presence",
                &agent.token,
                Some(json!({ "status": status })),
            )
            .await;
        assert_eq!(code, 200, "{body}");
        body["changed_at_ms"].as_i64().unwrap()
    }

    /// A new customer writes on WhatsApp; returns the new conversation's id.
    async fn arrive(&mut self) -> String {
        self.customers += 1;
        let n = self.customers;
        // Sent now, so its 24-hour reply window is open (and far from urgent).
        let wa_id = format!("1555{n:07}");
        let sent = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs();
        let body = wa_envelope(
            PHONE_NUMBER_ID,
            json!([{ "profile": { "name": "Ada Tester" }, "wa_id": wa_id }]),
            json!([{ "from": wa_id, "id": format!("wamid.engine.{n}"), "timestamp": sent.to_string(),
                     "type": "text", "text": { "body": "Hello, I need help with my bill" } }]),
            json!([]),
        );
        assert_eq!(self.hub.post_whatsapp(&body).await.status(), 200);
        let seen = self.seen.clone();
        let this = &*self;
        let id = eventually("the new conversation", || {
            let seen = &seen;
            async move {
                let (_, list) = this
                    .admin(Method::GET, "/v1/conversations?limit=100", None)
                    .await;
                list["data"]
                    .as_array()?
                    .iter()
                    .filter_map(|c| c["id"].as_str())
                    .find(|id| !seen.contains(*id))
                    .map(str::to_owned)
            }
        })
        .await;
        self.seen.insert(id.clone());
        id
    }

    async fn reply(&self, agent: &TestUser, conv: &str) {
        let (status, body) = self
            .hub
            .call(
                Method::POST,
                &format!("/v1/conversations/{conv}/messages"),
                &agent.token,
                Some(json!({ "text": "Hi, looking at your bill now." })),
            )
            .await;
        assert_eq!(status, 201, "{body}");
    }

    async fn conversation(&self, id: &str) -> Value {
        let (status, body) = self
            .admin(Method::GET, &format!("/v1/conversations/{id}"), None)
            .await;
        assert_eq!(status, 200, "{body}");
        body
    }

    /// Waits until the conversation is in `state` with `assignee` (None: nobody).
    async fn until(&self, id: &str, state: &str, assignee: Option<&str>) -> Value {
        let what = format!("{id} to be {state} by {assignee:?}");
        eventually(&what, || async {
            let c = self.conversation(id).await;
            (c["routing_state"] == state && c["assignee_id"].as_str() == assignee).then_some(c)
        })
        .await
    }

    async fn trace(&self, id: &str) -> Vec<Value> {
        let (status, body) = self
            .admin(
                Method::GET,
                &format!("/v1/conversations/{id}/routing-trace"),
                None,
            )
            .await;
        assert_eq!(status, 200, "{body}");
        body["entries"].as_array().unwrap().clone()
    }

    fn kinds(entries: &[Value]) -> Vec<String> {
        entries
            .iter()
            .map(|e| e["kind"].as_str().unwrap().to_owned())
            .collect()
    }

    async fn close(self) {
        self.hub.stop().await;
    }
}

async fn freed_capacity_is_filled_from_the_queue_with_a_trace(backend: Backend) {
    let mut floor = Floor::open(backend, "").await;
    let ana = floor.agent(1, json!({})).await;

    let first = floor.arrive().await;
    floor.until(&first, "assigned", Some(&ana.id)).await;
    let trace = floor.trace(&first).await;
    assert_eq!(Floor::kinds(&trace), ["assigned"], "{trace:?}");
    let why = &trace[0]["trace"];
    assert_eq!(
        why["rule"]["id"],
        Value::Null,
        "no rule: the default: {why}"
    );
    assert_eq!(why["chosen"], ana.id.as_str());
    assert_eq!(why["counts"]["with_capacity"], 1, "{why}");
    assert_eq!(why["decided_by"], "only_candidate");
    assert_eq!(why["top"][0]["agent_id"], ana.id.as_str());

    // Ana is full: the next customer waits, and the trace says why.
    let second = floor.arrive().await;
    let waiting = floor.until(&second, "waiting", None).await;
    let trace = eventually("the waiting trace", || async {
        let t = floor.trace(&second).await;
        (!t.is_empty()).then_some(t)
    })
    .await;
    assert_eq!(Floor::kinds(&trace), ["waiting"]);
    assert_eq!(trace[0]["trace"]["counts"]["online"], 1);
    assert_eq!(trace[0]["trace"]["counts"]["with_capacity"], 0);

    let (status, stats) = floor.admin(Method::GET, "/v1/queues/stats", None).await;
    assert_eq!(status, 200, "{stats}");
    let inbox = stats["inboxes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|i| i["channel"] == "whatsapp")
        .unwrap()
        .clone();
    assert_eq!(inbox["waiting"], 1, "{stats}");
    assert_eq!(inbox["assigned"], 1, "{stats}");
    assert_eq!(inbox["available_agents"], 0, "{stats}");
    assert_eq!(inbox["capacity_total"], 1, "{stats}");
    assert_eq!(inbox["capacity_free"], 0, "{stats}");
    assert!(inbox["longest_wait_ms"].as_i64().unwrap() >= 0);

    // Ana resolves the first: the freed slot takes the waiting one, by the event, not a sweep
    // (the safety-net resync is 30 s away).
    let started = Instant::now();
    let (status, body) = floor
        .hub
        .call(
            Method::POST,
            &format!("/v1/conversations/{first}/resolve"),
            &ana.token,
            None,
        )
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["status"], "resolved");
    assert_eq!(body["routing_state"], "idle");
    let second_now = floor.until(&second, "assigned", Some(&ana.id)).await;
    assert!(started.elapsed() < Duration::from_secs(5));
    assert_eq!(
        second_now["queued_at_ms"], waiting["queued_at_ms"],
        "its queue position is kept"
    );
    // Resolving again changes nothing.
    let (status, again) = floor
        .hub
        .call(
            Method::POST,
            &format!("/v1/conversations/{first}/resolve"),
            &ana.token,
            None,
        )
        .await;
    assert_eq!((status, &again["status"]), (200, &json!("resolved")));

    // Presence: an agent coming online pulls from the queue too.
    let third = floor.arrive().await;
    floor.until(&third, "waiting", None).await;
    let ben = floor.agent(1, json!({})).await;
    floor.until(&third, "assigned", Some(&ben.id)).await;
    // And so does an agent gaining capacity.
    let fourth = floor.arrive().await;
    floor.until(&fourth, "waiting", None).await;
    floor.profile(&ana, 2, json!({})).await;
    floor.until(&fourth, "assigned", Some(&ana.id)).await;

    // Priority over the API orders the queue: the later arrival, raised, goes first.
    let fifth = floor.arrive().await;
    let sixth = floor.arrive().await;
    floor.until(&sixth, "waiting", None).await;
    let (status, body) = floor
        .admin(
            Method::PATCH,
            &format!("/v1/conversations/{sixth}"),
            Some(json!({ "priority": 50 })),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    let (status, _) = floor
        .hub
        .call(
            Method::POST,
            &format!("/v1/conversations/{fourth}/resolve"),
            &ana.token,
            None,
        )
        .await;
    assert_eq!(status, 200);
    floor.until(&sixth, "assigned", Some(&ana.id)).await;
    assert_eq!(floor.conversation(&fifth).await["routing_state"], "waiting");
    floor.close().await;
}

async fn skills_and_steps_pick_the_best_fit_and_widen_on_timeout(backend: Backend) {
    let mut floor = Floor::open(backend, "").await;
    let (status, body) = floor
        .admin(
            Method::POST,
            "/v1/admin/skills",
            Some(json!({ "name": "billing" })),
        )
        .await;
    assert_eq!(status, 201, "{body}");
    let (status, body) = floor
        .admin(
            Method::POST,
            "/v1/admin/routing-rules",
            Some(json!({
                "name": "billing first",
                "match": "conv.channel == \"whatsapp\" and keyword(\"bill\")",
                "steps": [
                    { "target": "skill(\"billing\") >= 3", "priority": 50, "timeout_secs": 1 },
                    { "target": "true", "priority": 50, "timeout_secs": null }
                ]
            })),
        )
        .await;
    assert_eq!(status, 201, "{body}");
    let rule_id = body["id"].as_str().unwrap().to_owned();
    let expert = floor.agent(1, json!({ "billing": 5 })).await;
    let fair = floor.agent(1, json!({ "billing": 3 })).await;
    let novice = floor.agent(1, json!({})).await;

    // The best fit first.
    let first = floor.arrive().await;
    floor.until(&first, "assigned", Some(&expert.id)).await;
    let why = floor.trace(&first).await[0]["trace"].clone();
    assert_eq!(why["rule"]["id"], rule_id.as_str(), "{why}");
    assert_eq!(why["step"], 0);
    assert_eq!(why["counts"]["indexed"], 2, "only billing ≥ 3: {why}");
    assert_eq!(why["decided_by"], "skill_fit", "{why}");
    assert_eq!(why["top"][0]["skill_fit"], 2);
    assert_eq!(why["top"][1]["agent_id"], fair.id.as_str());

    let second = floor.arrive().await;
    floor.until(&second, "assigned", Some(&fair.id)).await;

    // Both billing agents are full: the third waits at step 0, then the wider step takes the
    // novice once the step's second has passed (a deadline, not a sweep).
    let third = floor.arrive().await;
    floor.until(&third, "assigned", Some(&novice.id)).await;
    let trace = floor.trace(&third).await;
    assert_eq!(Floor::kinds(&trace), ["waiting", "assigned"], "{trace:?}");
    assert_eq!(trace[0]["trace"]["step"], 0);
    assert_eq!(trace[1]["trace"]["step"], 1);
    assert!(trace[1]["trace"]["waited_ms"].as_i64().unwrap() >= 1000);

    // Contact attributes rules read: declared and typed.
    let contact = floor.conversation(&third).await["contact_id"]
        .as_str()
        .unwrap()
        .to_owned();
    let path = format!("/v1/contacts/{contact}/attributes");
    let (status, body) = floor
        .admin(
            Method::PUT,
            &path,
            Some(json!({ "attributes": { "vip": true, "tier": "gold" } })),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["attributes"], json!({ "vip": true, "tier": "gold" }));
    let (status, body) = floor
        .admin(
            Method::PUT,
            &path,
            Some(json!({ "attributes": { "tier": null } })),
        )
        .await;
    assert_eq!(
        (status, &body["attributes"]),
        (200, &json!({ "vip": true }))
    );
    let bad = floor
        .admin(
            Method::PUT,
            &path,
            Some(json!({ "attributes": { "vip": "yes" } })),
        )
        .await;
    assert_error(&bad, 422, "validation_failed", Some("attributes.vip"));
    let bad = floor
        .admin(
            Method::PUT,
            &path,
            Some(json!({ "attributes": { "shoe_size": 44 } })),
        )
        .await;
    assert_error(&bad, 422, "validation_failed", Some("attributes.shoe_size"));

    // The simulation explains the same decision without making it.
    let (status, sim) = floor
        .admin(
            Method::POST,
            "/v1/admin/routing-rules/simulate",
            Some(json!({ "conversation": {
                "channel": "sms", "inbox": "sms-support", "first_message": "hi"
            } })),
        )
        .await;
    assert_eq!(status, 200, "{sim}");
    assert_eq!(sim["rule"], Value::Null, "{sim}");
    assert_eq!(sim["decision"]["rule"]["id"], Value::Null, "{sim}");
    assert_eq!(
        sim["decision"]["counts"]["with_capacity"], 0,
        "nobody has SMS slots: {sim}"
    );
    floor.close().await;
}

async fn offers_are_declined_lapse_and_are_accepted(backend: Backend) {
    let mut floor = Floor::open(backend, "").await;
    let (status, body) = floor
        .admin(
            Method::POST,
            "/v1/admin/routing-rules",
            Some(json!({
                "name": "offer everything",
                "match": "true",
                "steps": [{ "target": "true", "priority": 10, "timeout_secs": null }],
                "mode": "offer",
                "offer_timeout_secs": 1
            })),
        )
        .await;
    assert_eq!(status, 201, "{body}");
    let one = floor.agent(1, json!({})).await;
    let two = floor.agent(1, json!({})).await;
    let (first, second) = if one.id < two.id {
        (&one, &two)
    } else {
        (&two, &one)
    };

    let conv = floor.arrive().await;
    floor.until(&conv, "offered", None).await;
    let offers = |agent: &TestUser| {
        let token = agent.token.clone();
        let hub = &floor.hub;
        async move {
            let (status, body) = hub.call(Method::GET, "/v1/offers", &token, None).await;
            assert_eq!(status, 200, "{body}");
            body["data"].as_array().unwrap().clone()
        }
    };
    // Equal on every score part: the agent id decides, and the trace says so.
    let mine = offers(first).await;
    assert_eq!(mine.len(), 1, "{mine:?}");
    assert_eq!(mine[0]["conversation_id"], conv.as_str());
    let offer = mine[0]["id"].as_str().unwrap().to_owned();
    assert_eq!(
        floor.trace(&conv).await[0]["trace"]["decided_by"],
        "agent_id"
    );
    // Only the offered agent may answer.
    let (status, _) = floor
        .hub
        .call(
            Method::POST,
            &format!("/v1/offers/{offer}/accept"),
            &second.token,
            None,
        )
        .await;
    assert_eq!(status, 404);
    let (status, body) = floor
        .hub
        .call(
            Method::POST,
            &format!("/v1/offers/{offer}/decline"),
            &first.token,
            None,
        )
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["state"], "declined");
    // Declined: at once to the other agent, who lets it lapse.
    let theirs = eventually("the offer to the second agent", || async {
        let o = offers(second).await;
        (!o.is_empty()).then_some(o)
    })
    .await;
    let lapsed = theirs[0]["id"].as_str().unwrap().to_owned();
    floor.until(&conv, "waiting", None).await;
    let (status, body) = floor
        .hub
        .call(
            Method::POST,
            &format!("/v1/offers/{lapsed}/accept"),
            &second.token,
            None,
        )
        .await;
    assert_error(&(status, body), 409, "conflict", None);
    let (status, body) = floor
        .hub
        .call(
            Method::POST,
            &format!("/v1/offers/{offer}/accept"),
            &first.token,
            None,
        )
        .await;
    assert_error(&(status, body), 409, "conflict", None);

    // Both are excluded now; a third agent gets the offer and accepts it.
    let third = floor.agent(1, json!({})).await;
    let offer = eventually("the offer to the third agent", || async {
        offers(&third).await.first().cloned()
    })
    .await;
    let (status, body) = floor
        .hub
        .call(
            Method::POST,
            &format!("/v1/offers/{}/accept", offer["id"].as_str().unwrap()),
            &third.token,
            None,
        )
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["assignee_id"], third.id.as_str());
    assert_eq!(body["routing_state"], "assigned");
    let kinds = Floor::kinds(&floor.trace(&conv).await);
    assert_eq!(
        kinds,
        [
            "offered",
            "offer_declined",
            "offered",
            "offer_expired",
            "waiting",
            "offered",
            "offer_accepted"
        ]
    );
    // API keys have no user to receive offers.
    let (status, _) = floor
        .hub
        .call(Method::GET, "/v1/offers", &floor.hub.key, None)
        .await;
    assert_eq!(status, 403);
    floor.close().await;
}

async fn grace_period_and_no_reply_return_conversations_to_the_queue(backend: Backend) {
    // Periods are checked on the server's clock (trace times against the presence change), and
    // each phase starts from a state the next deadline cannot race: a loaded machine makes the
    // test slower, never wrong.
    let mut floor = Floor::open(backend, "[routing]\ngrace_secs = 1\nno_reply_secs = 4\n").await;
    let ana = floor.agent(1, json!({})).await;
    let conv = floor.arrive().await;
    let assigned = floor.until(&conv, "assigned", Some(&ana.id)).await;
    // Ana answers, so this assignment has no no-reply limit left.
    floor.reply(&ana, &conv).await;

    // Ana goes offline; Ben is online with a free slot, yet Ana keeps it for the grace period.
    let ben = floor.agent(1, json!({})).await;
    let went = floor.presence(&ana, "offline").await;
    // Then it returns to the queue at its original position and Ben takes it.
    let moved = floor.until(&conv, "assigned", Some(&ben.id)).await;
    assert_eq!(moved["queued_at_ms"], assigned["queued_at_ms"]);
    let trace = floor.trace(&conv).await;
    assert_eq!(
        Floor::kinds(&trace),
        ["assigned", "grace_expired", "assigned"]
    );
    let at = |i: usize| trace[i]["at_ms"].as_i64().unwrap();
    assert!(
        at(1) - went >= 1000,
        "grace ended after {} ms",
        at(1) - went
    );

    // Ben does not reply within 4 s: routed again without him. Ana is offline, so it waits;
    // when she is back it is hers (the grace period did not exclude her).
    let trace = eventually("the trace of its wait", || async {
        let trace = floor.trace(&conv).await;
        (Floor::kinds(&trace).last().map(String::as_str) == Some("waiting")).then_some(trace)
    })
    .await;
    let at = |i: usize| trace[i]["at_ms"].as_i64().unwrap();
    assert!(at(3) - at(2) >= 4000, "no reply after {} ms", at(3) - at(2));
    floor.presence(&ana, "online").await;
    floor.until(&conv, "assigned", Some(&ana.id)).await;
    // Ana replies: she keeps it past the no-reply limit.
    floor.reply(&ana, &conv).await;
    let trace = floor.trace(&conv).await;
    let kinds = Floor::kinds(&trace);
    assert_eq!(
        kinds,
        [
            "assigned",
            "grace_expired",
            "assigned",
            "no_reply",
            "waiting",
            "assigned"
        ]
    );
    let back = trace[5]["at_ms"].as_i64().unwrap();
    let limit = std::time::UNIX_EPOCH + Duration::from_millis((back + 4500) as u64);
    if let Ok(left) = limit.duration_since(std::time::SystemTime::now()) {
        tokio::time::sleep(left).await;
    }
    let c = floor.conversation(&conv).await;
    assert_eq!(
        (c["routing_state"].as_str(), c["assignee_id"].as_str()),
        (Some("assigned"), Some(ana.id.as_str()))
    );
    floor.close().await;
}

async fn manual_assignment_frees_and_unassignment_requeues(backend: Backend) {
    let mut floor = Floor::open(backend, "").await;
    let ana = floor.agent(1, json!({})).await;
    let ben = floor.agent(0, json!({})).await;
    let first = floor.arrive().await;
    floor.until(&first, "assigned", Some(&ana.id)).await;
    let second = floor.arrive().await;
    floor.until(&second, "waiting", None).await;

    // A supervisor moves the first to Ben (no capacity: an override is not refused); Ana's
    // slot is free at once and the waiting one lands on her.
    let path = format!("/v1/conversations/{first}/assignment");
    let (status, body) = floor
        .admin(Method::PUT, &path, Some(json!({ "assignee_id": ben.id })))
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["assignee_id"], ben.id.as_str());
    floor.until(&second, "assigned", Some(&ana.id)).await;

    // Unassigned: back to the queue, Ben excluded; nobody is free, so it waits.
    let (status, body) = floor
        .admin(Method::PUT, &path, Some(json!({ "assignee_id": null })))
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["routing_state"], "waiting");
    let kinds = Floor::kinds(&floor.trace(&first).await);
    assert_eq!(
        kinds[..3],
        ["assigned", "manual", "unassigned"],
        "{kinds:?}"
    );
    // Both manual changes are on record, with who held it before and after.
    let (status, audit) = floor
        .admin(
            Method::GET,
            "/v1/audit?action=conversation.reassigned",
            None,
        )
        .await;
    assert_eq!(status, 200, "{audit}");
    let records = audit["data"].as_array().unwrap();
    assert_eq!(records.len(), 2, "{audit}");
    let assigned_to_ben = records
        .iter()
        .find(|r| r["after"]["assignee_id"] == ben.id.as_str())
        .expect("the assignment to Ben");
    assert_eq!(assigned_to_ben["before"]["assignee_id"], ana.id.as_str());
    assert_eq!(assigned_to_ben["actor_id"], floor.admin.id.as_str());

    // What rules read of the conversation: priority, labels, language.
    let conv_path = format!("/v1/conversations/{first}");
    let (status, body) = floor
        .admin(
            Method::PATCH,
            &conv_path,
            Some(json!({ "priority": 40, "labels": ["billing", " vip ", "billing"], "language": "es" })),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        (&body["priority"], &body["labels"], &body["language"]),
        (&json!(40), &json!(["billing", "vip"]), &json!("es"))
    );
    let (status, body) = floor
        .admin(Method::PATCH, &conv_path, Some(json!({ "language": null })))
        .await;
    assert_eq!((status, &body["language"]), (200, &Value::Null), "{body}");
    assert_eq!(
        body["labels"],
        json!(["billing", "vip"]),
        "absent fields stay"
    );
    for (bad, field) in [
        (json!({ "priority": 101 }), "priority"),
        (json!({ "labels": [""] }), "labels[0]"),
        (json!({ "language": "Spanish" }), "language"),
    ] {
        let r = floor.admin(Method::PATCH, &conv_path, Some(bad)).await;
        assert_error(&r, 422, "validation_failed", Some(field));
    }
    let r = floor
        .hub
        .call(
            Method::PATCH,
            &conv_path,
            &ana.token,
            Some(json!({ "priority": 90 })),
        )
        .await;
    assert_error(&r, 403, "forbidden", None);

    // A team lead may not hand a conversation to someone outside their scope.
    let store = floor.site.store().await;
    let account: String = sqlx::query("SELECT id FROM accounts WHERE slug = 'default'")
        .fetch_one(store.pool())
        .await
        .unwrap()
        .get(0);
    store.close().await;
    let (status, team) = floor
        .admin(
            Method::POST,
            "/v1/admin/teams",
            Some(json!({ "name": "payments" })),
        )
        .await;
    assert_eq!(status, 201, "{team}");
    let team_id = team["id"].as_str().unwrap();
    let lead = floor.site.user("team_lead", None, &[team_id]).await;
    let store = floor.site.store().await;
    sqlx::query("UPDATE conversations SET team_id = $1 WHERE id = $2 AND account_id = $3")
        .bind(team_id)
        .bind(&first)
        .bind(&account)
        .execute(store.pool())
        .await
        .unwrap();
    store.close().await;
    let (status, body) = floor
        .hub
        .call(
            Method::PUT,
            &path,
            &lead.token,
            Some(json!({ "assignee_id": ana.id })),
        )
        .await;
    assert_error(&(status, body), 403, "forbidden", None);
    floor.close().await;
}

const AGENTS: u32 = 12;

/// Many arrivals and presence flaps at once (on two nodes sharing PostgreSQL and Redis in the
/// distributed mode); then the invariants, in SQL.
async fn storm_keeps_the_invariants(backend: Backend) {
    let floor = Floor::open(backend, "").await;
    let second = match backend {
        Backend::Distributed => Some(TestHub::start(&floor.site).await),
        Backend::Embedded => None,
    };
    let mut agents = Vec::new();
    for i in 0..AGENTS {
        agents.push(floor.agent(1 + i % 3, json!({})).await);
    }
    // Thousands on two nodes; fewer on the one embedded node, where SQLite has one writer.
    let conversations = match backend {
        Backend::Distributed => 1500,
        Backend::Embedded => 300,
    };
    let hubs: Vec<&TestHub> = std::iter::once(&floor.hub).chain(second.as_ref()).collect();
    let posts = futures::stream::iter(0..conversations)
        .map(|n| {
            let hub = hubs[n % hubs.len()];
            async move {
                let body = wa_text(&format!("wamid.storm.{n}"), &format!("1666{n:07}"), "storm");
                assert_eq!(hub.post_whatsapp(&body).await.status(), 200);
            }
        })
        .buffer_unordered(32)
        .collect::<Vec<()>>();
    let flaps = agents.iter().enumerate().map(|(i, agent)| {
        let hub = hubs[i % hubs.len()];
        async move {
            for round in 0..12 {
                let status = if round % 2 == 0 { "offline" } else { "online" };
                let (code, _) = hub
                    .call(
                        Method::PUT,
                        "/v1/agents/me/presence",
                        &agent.token,
                        Some(json!({ "status": status })),
                    )
                    .await;
                assert_eq!(code, 200);
                tokio::time::sleep(Duration::from_millis(15)).await;
            }
        }
    });
    // Agents resolve what they hold as they go, freeing slots for the queue.
    let resolver = async {
        for _ in 0..30 {
            let (_, list) = floor
                .admin(Method::GET, "/v1/conversations?status=open&limit=100", None)
                .await;
            for c in list["data"].as_array().unwrap() {
                if c["routing_state"] == "assigned" && c["id"].as_str().unwrap().ends_with('7') {
                    let (status, _) = floor
                        .admin(
                            Method::POST,
                            &format!("/v1/conversations/{}/resolve", c["id"].as_str().unwrap()),
                            None,
                        )
                        .await;
                    assert_eq!(status, 200);
                }
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    };
    tokio::join!(posts, futures::future::join_all(flaps), resolver);
    // Everyone online again (round 11 was online); wait for the queue to settle: either empty,
    // or every agent full.
    let store = floor.site.store().await;
    let total_capacity: i64 = (0..AGENTS).map(|i| i64::from(1 + i % 3)).sum();
    // However loaded the machine, a settled queue is the point here, not how fast it settles:
    // the deadline scales with the storm, and a timeout says where the queue stood.
    let settle_started = std::time::Instant::now();
    let mut last: HashMap<String, i64> = HashMap::new();
    let settled = tokio::time::timeout(Duration::from_secs(120), async {
        loop {
            let rows = sqlx::query(
                "SELECT routing_state, count(*) FROM conversations GROUP BY routing_state",
            )
            .fetch_all(store.pool())
            .await
            .unwrap();
            last = rows.iter().map(|r| (r.get(0), r.get(1))).collect();
            let total: i64 = last.values().sum();
            let held = last.get("assigned").copied().unwrap_or(0);
            let waiting = last.get("waiting").copied().unwrap_or(0);
            if total == conversations as i64 && (waiting == 0 || held == total_capacity) {
                return;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await;
    assert!(
        settled.is_ok(),
        "the queue did not settle: {last:?} of {conversations}, capacity {total_capacity}"
    );
    eprintln!(
        "storm settled {:?} after the posts",
        settle_started.elapsed()
    );

    // One assignee, never more: at most one open assignment per conversation, and it names
    // the conversation's assignee.
    let doubles: i64 = sqlx::query(
        "SELECT count(*) FROM (SELECT conversation_id FROM assignments WHERE ended_at IS NULL \
         GROUP BY conversation_id HAVING count(*) > 1) d",
    )
    .fetch_one(store.pool())
    .await
    .unwrap()
    .get(0);
    assert_eq!(doubles, 0);
    let mismatched: i64 = sqlx::query(
        "SELECT count(*) FROM conversations c WHERE c.routing_state = 'assigned' AND NOT EXISTS \
         (SELECT 1 FROM assignments a WHERE a.conversation_id = c.id AND a.ended_at IS NULL \
         AND a.agent_id = c.assignee_id)",
    )
    .fetch_one(store.pool())
    .await
    .unwrap()
    .get(0);
    assert_eq!(mismatched, 0);
    // Capacity never exceeded, and the live count is exactly what is held.
    for r in sqlx::query(
        "SELECT l.user_id, l.capacity, l.active, (SELECT count(*) FROM conversations c \
         WHERE c.assignee_id = l.user_id AND c.channel = l.channel AND c.routing_state = 'assigned') \
         + (SELECT count(*) FROM offers o WHERE o.agent_id = l.user_id AND o.channel = l.channel \
         AND o.state = 'pending') FROM agent_load l",
    )
    .fetch_all(store.pool())
    .await
    .unwrap()
    {
        let (user, capacity, active, held): (String, i64, i64, i64) =
            (r.get(0), r.get(1), r.get(2), r.get(3));
        assert!(active <= capacity, "{user}: {active} > {capacity}");
        assert_eq!(active, held, "{user}: the count drifted");
    }
    // Every engine assignment went to an agent online at that moment: its trace counted the
    // agent among the online candidates with capacity.
    let traces = sqlx::query("SELECT trace FROM routing_traces WHERE kind = 'assigned'")
        .fetch_all(store.pool())
        .await
        .unwrap();
    assert!(!traces.is_empty());
    for r in traces {
        let t: Value = serde_json::from_str(&r.get::<String, _>(0)).unwrap();
        assert!(t["counts"]["with_capacity"].as_i64().unwrap() >= 1, "{t}");
    }
    store.close().await;
    if let Some(second) = second {
        second.stop().await;
    }
    floor.close().await;
}

/// The store is the arbiter: a placement decided on a stale picture is refused by the commit's
/// own guards (offline a moment ago, stale heartbeat, full, taken, excluded), and of two
/// concurrent placements that cannot both hold, exactly one commits. Driven on the store
/// itself, with no dispatcher running, so nothing else moves the rows.
async fn the_commit_refuses_what_changed_since_the_decision(backend: Backend) {
    use switchboard::store::Store;
    use switchboard::store::routing::{Placed, Placement};

    let site = Site::new(backend);
    let store = Store::connect(&site.config("").database).await.unwrap();
    let account = store.ensure_account("default").await.unwrap();
    // One at a time: each fixture user opens a store of its own, and five writing at once
    // collide on SQLite's lock or PostgreSQL's deadlock detector (a flake, not what is tested).
    let mut agents: Vec<TestUser> = Vec::new();
    for _ in 0..5 {
        agents.push(site.user("agent", None, &[]).await);
    }
    let now = 1_000_000_000_000i64;
    let pool = store.pool();
    sqlx::query(
        "INSERT INTO inboxes (id, account_id, slug, channel, name, created_at, updated_at) \
                 VALUES ('inb_guard', $1, 'guard', 'whatsapp', 'Guard', $2, $2)",
    )
    .bind(&account)
    .bind(now)
    .execute(pool)
    .await
    .unwrap();
    sqlx::query("INSERT INTO contacts (id, account_id, created_at, updated_at) VALUES ('ctc_guard', $1, $2, $2)")
        .bind(&account).bind(now).execute(pool).await.unwrap();
    for n in 0..6 {
        // One open conversation per contact and inbox: each its own contact.
        let contact = format!("ctc_guard{n}");
        sqlx::query(
            "INSERT INTO contacts (id, account_id, created_at, updated_at) VALUES ($1, $2, $3, $3)",
        )
        .bind(&contact)
        .bind(&account)
        .bind(now)
        .execute(pool)
        .await
        .unwrap();
        sqlx::query("INSERT INTO conversations (id, account_id, inbox_id, contact_id, channel, status, \
                     last_message_at, created_at, updated_at, routing_state, queued_at) \
                     VALUES ($1, $2, 'inb_guard', $3, 'whatsapp', 'open', $4, $4, $4, 'waiting', $4)")
            .bind(format!("conv_guard{n}")).bind(&account).bind(&contact).bind(now)
            .execute(pool).await.unwrap();
    }
    // Agents 0–3: one WhatsApp slot, online with a fresh heartbeat; 1 then goes offline; 2's
    // heartbeat is stale; 4 has no presence at all.
    for (i, agent) in agents.iter().enumerate() {
        sqlx::query("INSERT INTO agent_load (account_id, user_id, channel, capacity) VALUES ($1, $2, 'whatsapp', 1)")
            .bind(&account).bind(&agent.id).execute(pool).await.unwrap();
        if i < 4 {
            let (status, heartbeat) = match i {
                1 => ("offline", now),
                2 => ("online", now - 120_000),
                _ => ("online", now),
            };
            sqlx::query("INSERT INTO presence (account_id, user_id, status, heartbeat_at, changed_at) VALUES ($1, $2, $3, $4, $4)")
                .bind(&account).bind(&agent.id).bind(status).bind(heartbeat)
                .execute(pool).await.unwrap();
        }
    }
    let place = |conversation: String, agent: String| {
        let (store, account) = (store.clone(), account.clone());
        async move {
            store
                .place(&Placement {
                    account_id: &account,
                    conversation_id: &conversation,
                    agent_id: &agent,
                    channel: "whatsapp",
                    step: 0,
                    offer_expires_at: None,
                    fresh_after: now - 90_000,
                    trace: "{}",
                    now,
                })
                .await
                .unwrap()
        }
    };
    let lost = |p: Placed| match p {
        Placed::Lost(what) => what,
        other => panic!("expected a refusal, got {other:?}"),
    };
    let id = |i: usize| agents[i].id.clone();
    let conv = |n: usize| format!("conv_guard{n}");
    assert_eq!(
        lost(place(conv(0), id(1)).await),
        "agent",
        "offline a moment ago"
    );
    assert_eq!(
        lost(place(conv(0), id(2)).await),
        "agent",
        "stale heartbeat"
    );
    assert_eq!(lost(place(conv(0), id(4)).await), "agent", "never online");
    assert!(matches!(place(conv(0), id(0)).await, Placed::Assigned(_)));
    assert_eq!(lost(place(conv(1), id(0)).await), "agent", "full");
    assert_eq!(lost(place(conv(0), id(3)).await), "conversation", "taken");
    sqlx::query("INSERT INTO routing_exclusions (account_id, conversation_id, agent_id, reason, at) VALUES ($1, $2, $3, 'offer_declined', $4)")
        .bind(&account).bind(conv(1)).bind(id(3)).bind(now).execute(pool).await.unwrap();
    assert_eq!(
        lost(place(conv(1), id(3)).await),
        "conversation",
        "excluded"
    );

    // Races: two conversations for agent 3's one slot; two agents for one conversation.
    let (a, b) = tokio::join!(place(conv(2), id(3)), place(conv(3), id(3)));
    let won = [&a, &b]
        .iter()
        .filter(|p| matches!(p, Placed::Assigned(_)))
        .count();
    assert_eq!(won, 1, "one slot, one winner: {a:?} / {b:?}");
    sqlx::query("UPDATE agent_load SET capacity = 5")
        .execute(pool)
        .await
        .unwrap();
    let (a, b) = tokio::join!(place(conv(4), id(0)), place(conv(4), id(3)));
    let won = [&a, &b]
        .iter()
        .filter(|p| matches!(p, Placed::Assigned(_)))
        .count();
    assert_eq!(won, 1, "one conversation, one assignee: {a:?} / {b:?}");
    let active: i64 = sqlx::query("SELECT CAST(sum(active) AS BIGINT) FROM agent_load")
        .fetch_one(pool)
        .await
        .unwrap()
        .get(0);
    assert_eq!(active, 3, "the live counts match the three commits");
    store.close().await;
}

async fn an_sla_warning_puts_a_later_arrival_first(backend: Backend) {
    let mut floor = Floor::open(backend, "").await;
    // First response within an hour, warned a second after the customer wrote.
    let (status, policy) = floor
        .admin(
            Method::POST,
            "/v1/admin/sla-policies",
            Some(json!({ "name": "WhatsApp", "inbox_id": "inb_support-wa",
                         "first_response_secs": 3600, "warning_secs": 3599 })),
        )
        .await;
    assert_eq!(status, 201, "{policy}");
    // The first arrival is answered while it waits, so its response clock has stopped; the
    // second's is running and reaches its warning.
    let first = floor.arrive().await;
    floor.until(&first, "waiting", None).await;
    let (status, body) = floor
        .admin(
            Method::POST,
            &format!("/v1/conversations/{first}/messages"),
            Some(json!({ "text": "We will be with you shortly." })),
        )
        .await;
    assert_eq!(status, 201, "{body}");
    let second = floor.arrive().await;
    floor.until(&second, "waiting", None).await;
    eventually("the second's SLA warning", || async {
        let (_, sla) = floor
            .admin(
                Method::GET,
                &format!("/v1/conversations/{second}/sla"),
                None,
            )
            .await;
        (sla["clocks"][0]["state"] == "warning").then_some(())
    })
    .await;
    // One slot: the urgent one takes it, ahead of the earlier arrival.
    let ana = floor.agent(1, json!({})).await;
    floor.until(&second, "assigned", Some(&ana.id)).await;
    assert_eq!(floor.conversation(&first).await["routing_state"], "waiting");
    floor.close().await;
}
