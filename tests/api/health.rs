//! Readiness answers 503 naming the dependency that is down, and recovers with it; the node
//! survives the outage and processes new work once Redis is back.

use std::net::SocketAddr;
use std::time::Duration;

use serde_json::Value;
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinSet;

use crate::helpers::*;

/// A TCP proxy to Redis that the test can cut and restore, on a fixed port.
struct Proxy {
    addr: SocketAddr,
    tasks: JoinSet<()>,
}

impl Proxy {
    async fn start(addr: SocketAddr) -> Self {
        let listener = TcpListener::bind(addr).await.unwrap();
        let addr = listener.local_addr().unwrap();
        let mut tasks = JoinSet::new();
        tasks.spawn(async move {
            let mut connections = JoinSet::new();
            while let Ok((mut inbound, _)) = listener.accept().await {
                connections.spawn(async move {
                    if let Ok(mut upstream) = TcpStream::connect("127.0.0.1:6379").await {
                        let _ = tokio::io::copy_bidirectional(&mut inbound, &mut upstream).await;
                    }
                });
            }
        });
        Proxy { addr, tasks }
    }

    /// Drops the listener and every proxied connection.
    async fn cut(mut self) -> SocketAddr {
        self.tasks.shutdown().await;
        self.addr
    }
}

async fn ready(hub: &TestHub) -> (u16, Value) {
    let r = hub
        .client
        .get(hub.url("/health/ready"))
        .send()
        .await
        .unwrap();
    (r.status().as_u16(), r.json().await.unwrap())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readiness_reports_redis_down_and_recovers() {
    let site = Site::new(Backend::Distributed);
    let proxy = Proxy::start("127.0.0.1:0".parse().unwrap()).await;
    let extra = format!("[redis]\nurl = \"redis://{}\"\n", proxy.addr);
    let hub = TestHub::start_with(&site, &extra).await;
    let (status, body) = ready(&hub).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["checks"]["database"]["status"], "ok");

    let addr = proxy.cut().await;
    let body = eventually("readiness to report Redis down", || async {
        let (status, body) = ready(&hub).await;
        (status == 503).then_some(body)
    })
    .await;
    assert_eq!(body["status"], "unavailable");
    assert_eq!(body["checks"]["database"]["status"], "ok");
    let down: Vec<&String> = body["checks"]
        .as_object()
        .unwrap()
        .iter()
        .filter(|(_, v)| v["status"] == "down")
        .map(|(k, _)| k)
        .collect();
    assert!(
        !down.is_empty() && down.iter().all(|k| k.starts_with("redis") || *k == "queue"),
        "{body}"
    );
    // Liveness is not readiness: the process still answers.
    let live = hub
        .client
        .get(hub.url("/health/live"))
        .send()
        .await
        .unwrap();
    assert_eq!(live.status(), 200);

    let _proxy = Proxy::start(addr).await;
    eventually("readiness to recover", || async {
        tokio::time::sleep(Duration::from_millis(100)).await;
        (ready(&hub).await.0 == 200).then_some(())
    })
    .await;
    // The node kept running through the outage and its restarted workers take new work.
    let r = hub
        .post_whatsapp(&wa_text("wamid.AFTER", "15555550123", "back"))
        .await;
    assert_eq!(r.status(), 200);
    assert_eq!(hub.wait_for_messages(1).await.len(), 1);
    hub.stop().await;
    site.cleanup().await;
}
