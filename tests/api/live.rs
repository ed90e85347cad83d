//! Live consoles over WebSocket (docs/LIVE.md), through the real server: scope, resume, cross
//! node delivery, backpressure, presence, shutdown and visitors.

use std::time::Duration;

use reqwest::Method;
use serde_json::{Value, json};

use crate::console::{Closed, Console};
use crate::helpers::{Backend, PHONE_NUMBER_ID, Site, TestHub, TestUser, eventually, wa_envelope};
use crate::on_both_backends;

/// A WhatsApp customer `n` writes `text` now (an open reply window).
fn customer_writes(n: u64, message: u64, text: &str) -> String {
    let wa_id = format!("1666{n:07}");
    let sent = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    wa_envelope(
        PHONE_NUMBER_ID,
        json!([{ "profile": { "name": "Ada Tester" }, "wa_id": wa_id }]),
        json!([{ "from": wa_id, "id": format!("wamid.live.{n}.{message}"), "timestamp": sent.to_string(),
                 "type": "text", "text": { "body": text } }]),
        json!([]),
    )
}

async fn write(hub: &TestHub, n: u64, message: u64, text: &str) {
    let r = hub.post_whatsapp(&customer_writes(n, message, text)).await;
    assert_eq!(r.status(), 200);
}

async fn call(
    hub: &TestHub,
    user: &TestUser,
    method: Method,
    path: &str,
    body: Option<Value>,
) -> Value {
    let (status, body) = hub.call(method, path, &user.token, body).await;
    assert!((200..300).contains(&status), "{path}: {status} {body}");
    body
}

/// Gives `agent` WhatsApp slots (their console will make them online).
async fn slots(hub: &TestHub, admin: &TestUser, agent: &TestUser, capacity: u32) {
    call(
        hub,
        admin,
        Method::PUT,
        &format!("/v1/admin/agents/{}/profile", agent.id),
        Some(json!({ "capacity": { "whatsapp": capacity } })),
    )
    .await;
}

/// The text of a `message.created` frame.
fn text_of(frame: &Value) -> &str {
    frame["data"]["content"]["text"]
        .as_str()
        .unwrap_or_default()
}

/// Frames until one `message.created` with `text` arrives; returns it.
async fn until_message(console: &mut Console, text: &str) -> Value {
    loop {
        let frame = console.next_of("message.created").await;
        if text_of(&frame) == text {
            return frame;
        }
    }
}

async fn a_webhook_reaches_the_assigned_agent_and_no_socket_outside_scope(backend: Backend) {
    let site = Site::new(backend);
    let hub = TestHub::start(&site).await;
    let admin = site.user("super_admin", None, &[]).await;
    let team = call(
        &hub,
        &admin,
        Method::POST,
        "/v1/admin/teams",
        Some(json!({"name": "Payments"})),
    )
    .await;
    let other = call(
        &hub,
        &admin,
        Method::POST,
        "/v1/admin/teams",
        Some(json!({"name": "Sales"})),
    )
    .await;
    let (team, other) = (team["id"].as_str().unwrap(), other["id"].as_str().unwrap());
    call(
        &hub,
        &admin,
        Method::PATCH,
        "/v1/admin/inboxes/inb_support-wa",
        Some(json!({"team_id": team})),
    )
    .await;
    let agent = site.user("agent", None, &[team]).await;
    let bystander = site.user("agent", None, &[team]).await;
    let lead = site.user("team_lead", None, &[team]).await;
    let far_lead = site.user("team_lead", None, &[other]).await;
    slots(&hub, &admin, &agent, 3).await;

    let mut watch = Console::open(&hub, &admin.token, None).await;
    let mut mine = Console::open(&hub, &agent.token, None).await;
    let mut idle = Console::open(&hub, &bystander.token, None).await;
    let mut lead_console = Console::open(&hub, &lead.token, None).await;
    let mut far = Console::open(&hub, &far_lead.token, None).await;

    write(&hub, 1, 1, "Hello, my card was charged twice").await;
    let created = watch.next_of("conversation.created").await;
    let conversation = created["data"]["conversation_id"]
        .as_str()
        .unwrap()
        .to_owned();
    // The engine gives it to the only agent with slots; their console is told.
    let assigned = mine.next_of("conversation.assigned").await;
    assert_eq!(assigned["data"]["id"], conversation.as_str());
    assert_eq!(assigned["data"]["assignee_id"], agent.id.as_str());

    write(&hub, 1, 2, "Are you there?").await;
    let pushed = until_message(&mut mine, "Are you there?").await;
    assert_eq!(pushed["data"]["conversation_id"], conversation.as_str());
    assert_eq!(pushed["data"]["direction"], "inbound");
    until_message(&mut lead_console, "Are you there?").await;
    let seen = until_message(&mut watch, "Are you there?").await;
    assert_eq!(
        seen["id"], pushed["id"],
        "one event, one id, for every socket"
    );

    // Once the admin has everything, nothing about the conversation can still be on its way
    // to the others: the same pump fed them all, in order.
    // (They may see their own presence going online; nothing of the conversation.)
    for other in [&mut idle, &mut far] {
        while let Some(frame) = other.next_within(Duration::from_millis(300)).await {
            assert_ne!(
                frame["data"]["conversation_id"],
                conversation.as_str(),
                "{frame}"
            );
            assert_ne!(frame["data"]["id"], conversation.as_str(), "{frame}");
        }
    }
    hub.stop().await;
    site.cleanup().await;
}

async fn a_reconnecting_console_gets_exactly_what_it_missed(backend: Backend) {
    let site = Site::new(backend);
    let hub = TestHub::start(&site).await;
    let admin = site.user("super_admin", None, &[]).await;
    let mut console = Console::open(&hub, &admin.token, None).await;
    write(&hub, 2, 1, "first").await;
    until_message(&mut console, "first").await;
    let seen_up_to = console.last_id;
    console.close().await;

    // While it is away: new messages, a new conversation, a label change.
    write(&hub, 2, 2, "second").await;
    write(&hub, 3, 1, "third").await;
    let conversations = hub.conversations().await;
    let id = conversations[0]["id"].as_str().unwrap();
    call(
        &hub,
        &admin,
        Method::PATCH,
        &format!("/v1/conversations/{id}"),
        Some(json!({"labels": ["vip"]})),
    )
    .await;
    let missed = eventually("the missed events to be logged", || async {
        let store = site.store().await;
        let account = store.ensure_account("default").await.unwrap();
        let rows = store
            .events_between(&account, seen_up_to, i64::MAX, 100)
            .await
            .unwrap();
        store.close().await;
        (rows.iter().filter(|r| r.kind == "message.created").count() == 2
            && rows.iter().any(|r| r.kind == "conversation.updated"))
        .then_some(rows)
    })
    .await;

    let mut back = Console::open(&hub, &admin.token, Some(seen_up_to)).await;
    assert_eq!(back.hello["data"]["resumed"], true);
    for expected in &missed {
        let frame = back.next().await;
        assert_eq!(frame["id"], expected.id, "{frame}");
        assert_eq!(frame["type"], expected.kind.as_str());
    }
    // Then live, with nothing repeated at the seam.
    write(&hub, 2, 3, "fourth").await;
    let live = until_message(&mut back, "fourth").await;
    assert!(live["id"].as_i64().unwrap() > missed.last().unwrap().id);

    // An id older than what is kept asks for a resync; so does one from the future.
    let store = site.store().await;
    store
        .prune_events(switchboard::ids::now_ms() + 1)
        .await
        .unwrap();
    store.close().await;
    let mut old = Console::open(&hub, &admin.token, Some(seen_up_to)).await;
    assert_eq!(old.hello["data"]["resumed"], false);
    let resync = old.next().await;
    assert_eq!(resync["type"], "resync.required");
    assert_eq!(resync["data"]["reason"], "expired");
    let mut ahead = Console::open(
        &hub,
        &admin.token,
        Some(live["id"].as_i64().unwrap() + 1000),
    )
    .await;
    assert_eq!(ahead.next().await["data"]["reason"], "unknown");
    hub.stop().await;
    site.cleanup().await;
}

/// Two nodes on one PostgreSQL + Redis: an event written on one reaches sockets on the other.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_cross_nodes_through_the_broker() {
    let site = Site::new(Backend::Distributed);
    let one = TestHub::start(&site).await;
    let two = TestHub::start(&site).await;
    let admin = site.user("super_admin", None, &[]).await;
    let mut on_two = Console::open(&two, &admin.token, None).await;
    let mut on_one = Console::open(&one, &admin.token, None).await;
    for i in 0..20 {
        let hub = if i % 2 == 0 { &one } else { &two };
        write(hub, 4, i, &format!("cross {i}")).await;
    }
    // Both sockets see all twenty, in the same id order, whichever node wrote them.
    let mut ids = [Vec::new(), Vec::new()];
    for (k, console) in [&mut on_one, &mut on_two].into_iter().enumerate() {
        while ids[k].len() < 20 {
            let frame = console.next_of("message.created").await;
            ids[k].push(frame["id"].as_i64().unwrap());
        }
    }
    assert_eq!(ids[0], ids[1]);
    one.stop().await;
    two.stop().await;
    site.cleanup().await;
}

async fn a_slow_consumer_is_cut_off_and_others_are_not(backend: Backend) {
    use futures::StreamExt;
    use tokio_tungstenite::tungstenite::Message;
    let site = Site::new(backend);
    let hub = TestHub::start_with(&site, "[live]\nsocket_buffer = 64").await;
    let admin = site.user("super_admin", None, &[]).await;
    let mut fast = Console::open(&hub, &admin.token, None).await;
    // A client with a tiny receive window that reads one frame for every two messages written:
    // slower than events arrive however loaded the machine is, so the server's writes to it back
    // up until it falls behind the ring.
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.set_recv_buffer_size(2048).unwrap();
    let stream = socket.connect(hub.addr).await.unwrap();
    let (mut slow, _) = tokio_tungstenite::client_async(
        crate::console::request(&hub, "/v1/ws", Some(&admin.token)),
        tokio_tungstenite::MaybeTlsStream::Plain(stream),
    )
    .await
    .unwrap();
    let (written, mut allowance) = tokio::sync::watch::channel(0usize);
    let reader = tokio::spawn(async move {
        let mut read = 0;
        loop {
            match slow.next().await {
                Some(Ok(Message::Close(frame))) => return frame.map(|f| u16::from(f.code)),
                Some(Ok(_)) => {
                    read += 1;
                    // Once the writer is done (the sender dropped), read freely.
                    let _ = allowance.wait_for(|&w| w >= 2 * read).await;
                }
                _ => return None,
            }
        }
    });

    // The fast console reads as it should, all along, and the writer stays at most a few
    // messages ahead of it: only the slow socket can fall behind the ring, however loaded the
    // machine is. (Messages are normalized concurrently, so they may arrive in any order.)
    let (got, mut arrived) = tokio::sync::mpsc::unbounded_channel::<String>();
    let fast_reader = tokio::spawn(async move {
        loop {
            let frame = fast.next_of("message.created").await;
            let _ = got.send(text_of(&frame).to_owned());
        }
    });
    let mut seen = std::collections::HashSet::new();
    let mut receive = async |seen: &mut std::collections::HashSet<String>| {
        let Some(text) = arrived.recv().await else {
            let mut numbers: Vec<&str> = seen.iter().filter_map(|t| t.rsplit(' ').next()).collect();
            numbers.sort();
            panic!("the fast console stopped; it had {numbers:?}");
        };
        assert!(seen.insert(text), "the fast console saw a message twice");
    };
    // Large messages, so that the kernel's socket buffers (megabytes on loopback) fill soon.
    let long = "x".repeat(60_000);
    let mut sent = 0;
    while !reader.is_finished() {
        assert!(sent < 1000, "the slow socket was never cut off");
        write(&hub, 5, sent as u64, &format!("{long} {sent}")).await;
        sent += 1;
        written.send_replace(sent);
        while sent - seen.len() > 8 {
            receive(&mut seen).await;
        }
    }
    drop(written);
    assert_eq!(
        reader.await.unwrap(),
        Some(4008),
        "closed with \"too slow, resume\""
    );
    // The fast one got every event and is still served.
    write(&hub, 5, 5000, "after").await;
    while seen.len() < sent + 1 {
        receive(&mut seen).await;
    }
    for n in 0..sent {
        assert!(seen.contains(&format!("{long} {n}")), "message {n} missing");
    }
    assert!(seen.contains("after"));
    fast_reader.abort();
    hub.stop().await;
    site.cleanup().await;
}

async fn presence_follows_the_last_console(backend: Backend) {
    let site = Site::new(backend);
    let hub = TestHub::start_with(&site, "[routing]\ngrace_secs = 2").await;
    let admin = site.user("super_admin", None, &[]).await;
    let agent = site.user("agent", None, &[]).await;
    slots(&hub, &admin, &agent, 2).await;
    let mut watch = Console::open(&hub, &admin.token, None).await;
    let presence = |status: &'static str| {
        let hub = &hub;
        let agent = &agent;
        async move {
            eventually(&format!("the agent to be {status}"), || async {
                let me = call(hub, agent, Method::GET, "/v1/agents/me", None).await;
                (me["presence"]["status"] == status).then_some(me)
            })
            .await
        }
    };
    presence("offline").await;
    let first = Console::open(&hub, &agent.token, None).await;
    presence("online").await;
    // (The admin's own console makes the admin online too.)
    let mut changed = watch.next_of("presence.changed").await;
    while changed["data"]["user_id"] != agent.id.as_str() {
        changed = watch.next_of("presence.changed").await;
    }
    assert_eq!(
        changed["data"],
        json!({"user_id": agent.id, "status": "online"})
    );

    // Work arrives and is theirs.
    write(&hub, 6, 1, "help").await;
    let conversation = watch.next_of("conversation.assigned").await["data"]["id"]
        .as_str()
        .unwrap()
        .to_owned();

    let second = Console::open(&hub, &agent.token, None).await;
    first.close().await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    presence("online").await; // one console is still open
    second.close().await;
    let me = presence("offline").await;
    let offline = watch.next_of("presence.changed").await;
    assert_eq!(offline["data"]["status"], "offline");
    assert!(me["presence"]["changed_at_ms"].as_i64().is_some(), "{me}");

    // The grace period runs from the close: still theirs now, requeued after it.
    let (_, conv) = hub
        .call(
            Method::GET,
            &format!("/v1/conversations/{conversation}"),
            &admin.token,
            None,
        )
        .await;
    assert_eq!(
        conv["assignee_id"],
        agent.id.as_str(),
        "within the grace period"
    );
    let requeued = watch.next_of("conversation.requeued").await;
    assert_eq!(requeued["data"]["id"], conversation.as_str());
    assert_eq!(requeued["data"]["previous_assignee_id"], agent.id.as_str());
    hub.stop().await;
    site.cleanup().await;
}

async fn a_node_restart_loses_and_repeats_nothing(backend: Backend) {
    let site = Site::new(backend);
    let hub = TestHub::start(&site).await;
    let admin = site.user("super_admin", None, &[]).await;
    let mut console = Console::open(&hub, &admin.token, None).await;
    write(&hub, 7, 1, "before").await;
    until_message(&mut console, "before").await;
    hub.stop().await;
    assert_eq!(
        console.closed().await,
        Closed::Code(1012),
        "reconnect elsewhere"
    );
    let seen = console.last_id;

    let hub = TestHub::start(&site).await;
    write(&hub, 7, 2, "while away").await;
    eventually("the message to be stored", || async {
        (hub.conversations().await.len() == 1).then_some(())
    })
    .await;
    let mut back = Console::open(&hub, &admin.token, Some(seen)).await;
    let frame = back.next_of("message.created").await;
    assert_eq!(text_of(&frame), "while away");
    assert_eq!(frame["id"], seen + 1, "nothing in between was lost");
    write(&hub, 7, 3, "after").await;
    let next = back.next_of("message.created").await;
    assert_eq!(text_of(&next), "after");
    hub.stop().await;
    site.cleanup().await;
}

async fn the_visitor_socket_pushes_replies_and_resumes(backend: Backend) {
    let site = Site::new(backend);
    let hub = TestHub::start(&site).await;
    let admin = site.user("super_admin", None, &[]).await;
    let visitor = |name: &'static str| {
        let hub = &hub;
        async move {
            let r = hub
                .client
                .post(hub.url("/v1/webchat/website/sessions"))
                .json(&json!({ "name": name }))
                .send()
                .await
                .unwrap();
            assert_eq!(r.status(), 201);
            let body: Value = r.json().await.unwrap();
            body["visitor_token"].as_str().unwrap().to_owned()
        }
    };
    let (ada, bob) = (visitor("Ada").await, visitor("Bob").await);
    let say = |token: String, id: &'static str, text: &'static str| {
        let hub = &hub;
        async move {
            let r = hub
                .client
                .post(hub.url("/v1/webchat/website/messages"))
                .bearer_auth(token)
                .json(&json!({ "client_message_id": id, "text": text }))
                .send()
                .await
                .unwrap();
            assert!(r.status().is_success());
        }
    };
    let open = |token: String, last: Option<i64>| {
        let hub = &hub;
        async move {
            let path = match last {
                Some(id) => format!("/v1/webchat/website/ws?token={token}&last_event_id={id}"),
                None => format!("/v1/webchat/website/ws?token={token}"),
            };
            Console::open_request(crate::console::request(hub, &path, None)).await
        }
    };
    // Ada's socket opens before she has written: her contact does not exist yet.
    let mut ada_socket = open(ada.clone(), None).await;
    let mut bob_socket = open(bob.clone(), None).await;
    say(ada.clone(), "a1", "Hi, where is my order?").await;
    let own = ada_socket.next_of("message.created").await;
    assert_eq!(text_of(&own), "Hi, where is my order?");
    assert!(
        own["data"].get("provider_message_id").is_none(),
        "public fields only: {own}"
    );
    let conversation = own["data"]["conversation_id"].as_str().unwrap().to_owned();

    let path = format!("/v1/conversations/{conversation}/messages");
    call(
        &hub,
        &admin,
        Method::POST,
        &path,
        Some(json!({"text": "On its way!"})),
    )
    .await;
    let reply = ada_socket.next_of("message.created").await;
    assert_eq!(text_of(&reply), "On its way!");
    assert_eq!(reply["data"]["direction"], "outbound");
    let seen = ada_socket.last_id;
    ada_socket.close().await;

    call(
        &hub,
        &admin,
        Method::POST,
        &path,
        Some(json!({"text": "Tracking: 42"})),
    )
    .await;
    let mut back = open(ada, Some(seen)).await;
    assert_eq!(
        text_of(&back.next_of("message.created").await),
        "Tracking: 42"
    );
    // Bob saw none of it.
    bob_socket.silent_for(Duration::from_millis(300)).await;
    hub.stop().await;
    site.cleanup().await;
}

on_both_backends!(
    a_webhook_reaches_the_assigned_agent_and_no_socket_outside_scope,
    a_reconnecting_console_gets_exactly_what_it_missed,
    a_slow_consumer_is_cut_off_and_others_are_not,
    presence_follows_the_last_console,
    a_node_restart_loses_and_repeats_nothing,
    the_visitor_socket_pushes_replies_and_resumes,
);
