//! The three front-ends end to end in headless Chromium (see `browser.rs`): an agent handles a
//! WhatsApp conversation live, an admin fixes and simulates a routing rule, a visitor chats
//! through the widget.

use serde_json::{Value, json};

use crate::browser::Browser;
use crate::fake_providers::{fake_graph, wamid};
use crate::helpers::*;

fn now_secs() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

const CUSTOMER: &str = "15555550142";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_agent_answers_a_whatsapp_customer_live_in_the_browser() {
    let (graph, addr) = fake_graph().await;
    let site = Site::new(Backend::Embedded);
    let hub = TestHub::start_with(
        &site,
        &format!("[outbound]\nwhatsapp_base_url = \"http://{addr}\"\n"),
    )
    .await;
    let agent = site.user("super_admin", None, &[]).await;
    let browser = Browser::start(1280, 800).await;
    browser.goto(&hub.url("/")).await;
    browser.sign_in(&agent.email, &agent.password).await;
    browser.shown("#connection[data-state=\"live\"]").await;

    // A customer writes: the conversation appears without a reload.
    let t = now_secs();
    let body = wa_envelope(
        PHONE_NUMBER_ID,
        json!([{ "profile": { "name": "Ada Lovelace" }, "wa_id": CUSTOMER }]),
        json!([{ "from": CUSTOMER, "id": "wamid.in.browser.1", "timestamp": t.to_string(),
                 "type": "text", "text": { "body": "Is my order shipped?" } }]),
        json!([]),
    );
    assert_eq!(hub.post_whatsapp(&body).await.status(), 200);
    let item = browser
        .text_appears("[data-conversation-id]", "Ada Lovelace")
        .await;
    let conversation = item
        .attr("data-conversation-id")
        .await
        .unwrap()
        .expect("the item names its conversation");
    item.click().await.unwrap();
    browser
        .text_appears(
            "[data-message-id][data-direction=\"inbound\"]",
            "Is my order shipped?",
        )
        .await;

    // The agent replies; the fake Graph API receives exactly that.
    browser.fill("#reply", "It ships today.").await;
    browser.click("#send").await;
    eventually("the reply at the provider", || async {
        (graph.count() == 1).then_some(())
    })
    .await;
    let sent = &graph.seen()[0];
    assert_eq!(sent.json()["to"], CUSTOMER);
    assert_eq!(sent.json()["text"]["body"], "It ships today.");
    let outbound = "[data-message-id][data-direction=\"outbound\"]";
    browser.text_appears(outbound, "It ships today.").await;
    browser
        .until(
            "the reply to show sent",
            "return [...document.querySelectorAll(arguments[0])].some(e => e.dataset.status === 'sent' || e.dataset.status === 'delivered')",
            vec![json!(outbound)],
        )
        .await;

    // WhatsApp reports it delivered: the page shows it, live.
    let report = json!({ "id": wamid(1), "status": "delivered",
                         "timestamp": (t + 2).to_string(), "recipient_id": CUSTOMER });
    let body = wa_envelope(PHONE_NUMBER_ID, json!([]), json!([]), json!([report]));
    assert_eq!(hub.post_whatsapp(&body).await.status(), 200);
    browser
        .shown(&format!("{outbound}[data-status=\"delivered\"]"))
        .await;
    let (_, messages) = hub
        .get(&format!("/v1/conversations/{conversation}/messages"))
        .await;
    assert!(
        messages["data"]
            .as_array()
            .unwrap()
            .iter()
            .any(|m| m["direction"] == "outbound" && m["status"] == "delivered"),
        "{messages}"
    );
    browser.screenshot("workspace").await;

    // Snooze for an hour, reopen, resolve, reopen: each button does what the API says.
    let status_is = |want: &'static str| {
        let (hub, conversation) = (&hub, conversation.clone());
        async move {
            eventually(&format!("the conversation to be {want}"), || async {
                let (_, c) = hub.get(&format!("/v1/conversations/{conversation}")).await;
                (c["status"] == want).then_some(())
            })
            .await
        }
    };
    browser.click("#snooze").await;
    browser.click(".snooze-preset[data-snooze=\"hour\"]").await;
    status_is("snoozed").await;
    browser.shown("#thread-snoozed").await;
    browser.click("#reopen").await;
    status_is("open").await;
    browser.click("#resolve").await;
    status_is("resolved").await;
    browser.click("#reopen").await;
    status_is("open").await;
    browser.assert_clean(&[]).await;
    browser.close().await;
    hub.stop().await;
    site.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_admin_fixes_a_routing_rule_and_simulates_it() {
    let site = Site::new(Backend::Embedded);
    let hub = TestHub::start(&site).await;
    let admin = site.user("super_admin", None, &[]).await;
    let browser = Browser::start(1280, 800).await;
    browser.goto(&hub.url("/admin#/routing")).await;
    browser.sign_in(&admin.email, &admin.password).await;
    browser.click("a[href=\"#/routing\"]").await;
    browser.click("#new-rule").await;
    browser.fill("#rule-name", "VIP WhatsApp").await;

    // A deliberate mistake: the error shows at its position, next to the field.
    let field = "[data-field=\"match\"]";
    browser.fill(field, "conv.chanel == \"whatsapp\"").await;
    let error = browser
        .text_appears("[data-error-for=\"match\"]", "1:")
        .await;
    let shown = error.text().await.unwrap();
    assert!(shown.contains("1:1") && shown.contains("chanel"), "{shown}");
    browser.screenshot("admin-routing-error").await;

    browser.fill(field, "conv.channel == \"whatsapp\"").await;
    browser
        .until(
            "the error to clear",
            "const e = document.querySelector('[data-error-for=\"match\"]'); return e && e.textContent.trim() === ''",
            vec![],
        )
        .await;
    browser.click("#save-rule").await;
    browser.shown(".rule-editor .saved-note").await;
    eventually("the rule to be saved", || async {
        let (_, rules) = hub.get("/v1/admin/routing-rules").await;
        rules["data"]
            .as_array()
            .unwrap()
            .iter()
            .any(|r| r["name"] == "VIP WhatsApp")
            .then_some(())
    })
    .await;
    browser.click("#simulate").await;
    browser
        .text_appears("#simulate-result .decision", "Decision")
        .await;
    browser.screenshot("admin-routing").await;
    browser.assert_clean(&["422"]).await;
    browser.close().await;
    hub.stop().await;
    site.cleanup().await;
}

/// A script run in the page against the widget's shadow root.
const IN_WIDGET: &str = "const root = document.querySelector('#switchboard-widget'); \
                         const s = root && root.shadowRoot; if (!s) return null; ";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_visitor_chats_through_the_widget() {
    let site = Site::new(Backend::Embedded);
    let hub = TestHub::start(&site).await;
    let admin = site.user("super_admin", None, &[]).await;
    let browser = Browser::start(1280, 800).await;
    browser
        .goto(&hub.url("/ui/widget/demo.html?inbox=website"))
        .await;
    let widget = |body: &str| format!("{IN_WIDGET}{body}");
    browser
        .until(
            "the launcher",
            &widget("const b = s.querySelector('#sb-launcher'); if (!b) return null; b.click(); return true;"),
            vec![],
        )
        .await;
    browser
        .until(
            "the chat window",
            &widget("const w = s.querySelector('#sb-window'); return w && !w.hidden;"),
            vec![],
        )
        .await;
    browser
        .until(
            "the message to be written and sent",
            &widget(
                "const i = s.querySelector('#sb-input'); if (!i) return null; \
                 i.value = 'Do you ship to Lisbon?'; i.dispatchEvent(new Event('input', {bubbles: true})); \
                 s.querySelector('#sb-send').click(); return true;",
            ),
            vec![],
        )
        .await;

    // The message reaches the hub as a web-chat conversation; the agent answers.
    let conversation = eventually("the visitor's conversation", || async {
        for c in hub.conversations().await {
            let id = c["id"].as_str().unwrap().to_owned();
            if hub.messages(&id).await.iter().any(|m| {
                m["content"]["text"] == "Do you ship to Lisbon?" && m["direction"] == "inbound"
            }) {
                return Some(id);
            }
        }
        None
    })
    .await;
    let (status, _) = hub
        .call(
            reqwest::Method::POST,
            &format!("/v1/conversations/{conversation}/messages"),
            &admin.token,
            Some(json!({"text": "We do, in 2 days."})),
        )
        .await;
    assert_eq!(status, 201);
    let agent_says = widget(
        "return [...s.querySelectorAll('[data-author=\"agent\"]')].some(e => e.textContent.includes(arguments[0]));",
    );
    browser
        .until(
            "the agent's reply in the widget",
            &agent_says,
            vec![json!("We do, in 2 days.")],
        )
        .await;
    browser.screenshot("widget").await;

    // A reload keeps the conversation, and live replies still arrive.
    browser.client.refresh().await.unwrap();
    browser
        .until(
            "the launcher after the reload",
            &widget("const b = s.querySelector('#sb-launcher'); if (!b) return null; const w = s.querySelector('#sb-window'); if (w && w.hidden) b.click(); return true;"),
            vec![],
        )
        .await;
    browser
        .until(
            "the history after the reload",
            &agent_says,
            vec![json!("We do, in 2 days.")],
        )
        .await;
    let (status, _) = hub
        .call(
            reqwest::Method::POST,
            &format!("/v1/conversations/{conversation}/messages"),
            &admin.token,
            Some(json!({"text": "Anything else?"})),
        )
        .await;
    assert_eq!(status, 201);
    browser
        .until(
            "a live reply after the reload",
            &agent_says,
            vec![json!("Anything else?")],
        )
        .await;
    let own: Value = browser
        .until(
            "the visitor's own message",
            &widget("return [...s.querySelectorAll('[data-author=\"visitor\"]')].filter(e => e.textContent.includes('Do you ship to Lisbon?')).length;"),
            vec![],
        )
        .await;
    assert_eq!(
        own,
        json!(1),
        "the visitor's message shows once after the reload"
    );
    browser.assert_clean(&[]).await;
    browser.close().await;
    hub.stop().await;
    site.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_hub_is_set_up_from_the_printed_link() {
    const TOKEN: &str = "browser-first-run-token-42";
    let site = Site::new(Backend::Embedded);
    let hub = TestHub::start_with(&site, &format!("[auth]\nsetup_token = \"{TOKEN}\"\n")).await;
    let browser = Browser::start(1280, 800).await;
    // The link the hub prints at start.
    browser.goto(&hub.url(&format!("/#setup={TOKEN}"))).await;
    browser.fill("#setup-name", "Grace Owner").await;
    browser.fill("#email", "grace@example.com").await;
    // The policy's refusal shows next to the field; nothing is created.
    browser.fill("#password", "short").await;
    browser.click("#sign-in").await;
    browser.text_appears("#password-error", "12").await;
    browser.fill("#password", TEST_PASSWORD).await;
    browser.click("#sign-in").await;
    browser.shown("#connection[data-state=\"live\"]").await;
    let url = browser.client.current_url().await.unwrap();
    assert!(
        !url.as_str().contains("setup"),
        "the token leaves the address bar: {url}"
    );
    let (_, setup) = hub.get("/v1/setup").await;
    assert_eq!(setup["needed"], false);

    // A reload keeps the session (the refresh cookie), without asking again.
    browser.client.refresh().await.unwrap();
    browser.shown("#connection[data-state=\"live\"]").await;
    assert!(
        browser
            .client
            .find(fantoccini::Locator::Css("#password"))
            .await
            .is_err(),
        "no sign-in form after a reload"
    );
    browser
        .assert_clean(&["/v1/setup - Failed to load resource"])
        .await;
    browser.close().await;
    hub.stop().await;
    site.cleanup().await;
}
