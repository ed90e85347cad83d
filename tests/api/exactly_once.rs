//! Nothing duplicated: the same provider event delivered many times, concurrently, later, and
//! to a second node, is one message.

use futures::future::join_all;

use crate::helpers::*;
use crate::on_both_backends;

on_both_backends!(twenty_concurrent_redeliveries_are_one_message);

async fn twenty_concurrent_redeliveries_are_one_message(backend: Backend) {
    let site = Site::new(backend);
    let hub = TestHub::start(&site).await;
    let body = wa_text("wamid.DUP1", "15555550123", "only once please");
    let responses = join_all((0..20).map(|_| hub.post_whatsapp(&body))).await;
    assert!(responses.iter().all(|r| r.status() == 200));
    hub.wait_for_messages(1).await;

    // Days later, as far as the hub can tell: the fast path answers, the store agrees.
    let later = hub
        .post_whatsapp(&body)
        .await
        .json::<serde_json::Value>()
        .await
        .unwrap();
    assert_eq!(later["status"], "duplicate");
    // The same message re-batched with another one is still one message for it.
    let rebatched = wa_envelope(
        PHONE_NUMBER_ID,
        serde_json::json!([{ "wa_id": "15555550123" }]),
        serde_json::json!([
            { "from": "15555550123", "id": "wamid.DUP1", "timestamp": "1760000000", "type": "text", "text": { "body": "only once please" } },
            { "from": "15555550123", "id": "wamid.DUP2", "timestamp": "1760000001", "type": "text", "text": { "body": "new" } }
        ]),
        serde_json::json!([]),
    );
    assert_eq!(hub.post_whatsapp(&rebatched).await.status(), 200);
    let stored = hub.wait_for_messages(2).await;
    assert_eq!(stored.len(), 2);

    if backend == Backend::Distributed {
        // A second node sharing PostgreSQL and Redis: concurrent deliveries split across both.
        let node_b = TestHub::start(&site).await;
        let body = wa_text("wamid.DUP3", "15555550123", "two nodes");
        let sends = (0..20).map(|i| {
            let (hub, body) = (if i % 2 == 0 { &hub } else { &node_b }, &body);
            async move { hub.post_whatsapp(body).await.status() }
        });
        assert!(join_all(sends).await.iter().all(|s| *s == 200));
        let stored = node_b.wait_for_messages(3).await;
        assert_eq!(stored.len(), 3);
        node_b.stop().await;
    }
    // Nothing more arrives after the queue is drained. (An event is marked processed just
    // after its last message is stored, so the drain is waited for, not assumed.)
    crate::fake_providers::flow::settled(&hub).await;
    assert_eq!(
        hub.wait_for_messages(0).await.len(),
        if backend == Backend::Distributed {
            3
        } else {
            2
        }
    );
    hub.stop().await;
    site.cleanup().await;
}
