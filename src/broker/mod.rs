//! The broker seam: fire-and-forget pub/sub that carries live events from the node that wrote
//! them to the nodes holding the interested WebSocket sessions.
//!
//! Guarantees, for both implementations:
//! - **At most once.** Nothing is stored; a message published while nobody (or, for Redis, while
//!   this node's connection) is listening is gone. The durable event log is the record; consoles
//!   resume from it whenever they are told they missed something.
//! - **Per-topic order from one publisher**: messages one task publishes to one topic, awaiting
//!   each publish, arrive in that order. Nothing is promised across topics or publishers.
//! - **Subscribed means subscribed**: once [`Broker::subscribe`] returns, every later publish to
//!   the topic, from any node, reaches the subscription (until it lags).
//! - **Gaps are reported, never hidden**: a subscriber more than [`TOPIC_CAPACITY`] messages
//!   behind gets [`Received::Lagged`] with the count it missed; after a Redis reconnect every
//!   subscriber gets `Lagged(0)`, meaning "an unknown number".
//! - **Shutdown ends subscriptions**: once the broker's token is cancelled, `recv` returns
//!   `None` and `publish`/`subscribe` fail with [`BrokerError::Closed`].
//!
//! [`Broker::memory`] is single node: it only connects subscribers in this process.
//! [`Broker::redis`] spans nodes through Redis pub/sub on one connection per node.

pub mod memory;
pub mod redis;

use std::sync::Arc;

use tokio::sync::broadcast::{self, error::RecvError};
use tokio_util::sync::CancellationToken;

/// Messages a subscriber may fall behind by before it is told it lagged.
pub const TOPIC_CAPACITY: usize = 1024;

#[derive(Debug, thiserror::Error)]
pub enum BrokerError {
    #[error("redis: {0}")]
    Redis(::redis::RedisError),
    #[error("the broker is shut down")]
    Closed,
}

/// Counted where it is made: `switchboard_redis_errors_total{use="broker"}`.
impl From<::redis::RedisError> for BrokerError {
    fn from(e: ::redis::RedisError) -> Self {
        metrics::counter!("switchboard_redis_errors_total", "use" => "broker").increment(1);
        BrokerError::Redis(e)
    }
}

#[derive(Clone)]
pub enum Broker {
    Memory(memory::MemoryBroker),
    Redis(self::redis::RedisBroker),
}

impl Broker {
    /// A single-node broker that is only ever closed by dropping it.
    pub fn memory() -> Self {
        Self::memory_with_shutdown(CancellationToken::new())
    }

    /// A single-node broker that closes when `shutdown` is cancelled.
    pub fn memory_with_shutdown(shutdown: CancellationToken) -> Self {
        Self::Memory(memory::MemoryBroker::new(shutdown))
    }

    /// Starts the node's single pub/sub connection task (one Redis subscription per node per
    /// topic, not per subscriber). It reconnects with capped backoff, re-subscribes every live
    /// topic and stops when `shutdown` is cancelled. Fails if the first connection fails.
    pub async fn redis(
        client: ::redis::Client,
        conn: ::redis::aio::ConnectionManager,
        prefix: &str,
        shutdown: CancellationToken,
    ) -> Result<Self, BrokerError> {
        self::redis::RedisBroker::start(client, conn, prefix, shutdown)
            .await
            .map(Self::Redis)
    }

    pub async fn publish(&self, topic: &str, payload: Arc<str>) -> Result<(), BrokerError> {
        match self {
            Self::Memory(m) => m.publish(topic, payload),
            Self::Redis(r) => r.publish(topic, payload).await,
        }
    }

    /// Once this returns, later publishes (from any node) reach the subscription.
    pub async fn subscribe(&self, topic: &str) -> Result<Subscription, BrokerError> {
        match self {
            Self::Memory(m) => m.subscribe(topic),
            Self::Redis(r) => r.subscribe(topic).await,
        }
    }

    pub async fn ping(&self) -> Result<(), BrokerError> {
        match self {
            Self::Memory(_) => Ok(()),
            Self::Redis(r) => r.ping().await,
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Received {
    Message(Arc<str>),
    /// This many messages were missed; 0 means an unknown number (a Redis reconnect).
    Lagged(u64),
}

pub struct Subscription {
    rx: broadcast::Receiver<Received>,
    shutdown: CancellationToken,
    // Declared after `rx` so the receiver is gone when the guard checks for the last one.
    _topic: TopicGuard,
}

enum TopicGuard {
    Memory(#[allow(dead_code)] memory::Guard),
    Redis(#[allow(dead_code)] self::redis::Guard),
}

impl Subscription {
    fn new(
        rx: broadcast::Receiver<Received>,
        shutdown: CancellationToken,
        topic: TopicGuard,
    ) -> Self {
        Self {
            rx,
            shutdown,
            _topic: topic,
        }
    }

    /// A message or gap already waiting, without blocking: `None` when there is none,
    /// `Some(None)` once the broker is shut down.
    pub fn try_recv(&mut self) -> Option<Option<Received>> {
        match self.rx.try_recv() {
            Ok(received) => Some(Some(received)),
            Err(broadcast::error::TryRecvError::Empty) => None,
            Err(broadcast::error::TryRecvError::Lagged(missed)) => {
                Some(Some(Received::Lagged(missed)))
            }
            Err(broadcast::error::TryRecvError::Closed) => Some(None),
        }
    }

    /// The next message or gap; `None` once the broker is shut down.
    pub async fn recv(&mut self) -> Option<Received> {
        tokio::select! {
            biased;
            _ = self.shutdown.cancelled() => None,
            received = self.rx.recv() => match received {
                Ok(received) => Some(received),
                Err(RecvError::Lagged(missed)) => Some(Received::Lagged(missed)),
                Err(RecvError::Closed) => None,
            },
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::redis_testing::{redis_url, unique_prefix};
    use std::time::{Duration, Instant};

    const WAIT: Duration = Duration::from_secs(5);

    #[derive(Clone, Copy)]
    enum Backend {
        Memory,
        Redis,
    }

    /// A broker plus its shutdown token, cancelled on drop so no connection task outlives its
    /// test.
    struct Node {
        broker: Broker,
        shutdown: CancellationToken,
    }

    impl Drop for Node {
        fn drop(&mut self) {
            self.shutdown.cancel();
        }
    }

    async fn redis_node_at(url: &str, prefix: &str) -> Node {
        let shutdown = CancellationToken::new();
        let client = ::redis::Client::open(url).unwrap();
        let conn =
            ::redis::aio::ConnectionManager::new(::redis::Client::open(redis_url()).unwrap())
                .await
                .unwrap();
        let broker = Broker::redis(client, conn, prefix, shutdown.clone())
            .await
            .unwrap();
        Node { broker, shutdown }
    }

    async fn node(backend: Backend) -> Node {
        match backend {
            Backend::Memory => {
                let shutdown = CancellationToken::new();
                let broker = Broker::memory_with_shutdown(shutdown.clone());
                Node { broker, shutdown }
            }
            Backend::Redis => redis_node_at(&redis_url(), &unique_prefix()).await,
        }
    }

    async fn next(sub: &mut Subscription) -> Received {
        tokio::time::timeout(WAIT, sub.recv())
            .await
            .expect("nothing received in time")
            .expect("subscription closed")
    }

    fn msg(text: &str) -> Received {
        Received::Message(text.into())
    }

    async fn publish(broker: &Broker, topic: &str, text: &str) {
        broker.publish(topic, text.into()).await.unwrap();
    }

    fn topic_count(broker: &Broker) -> usize {
        match broker {
            Broker::Memory(m) => m.topic_count(),
            Broker::Redis(r) => r.topic_count(),
        }
    }

    async fn wait_for(what: &str, mut condition: impl FnMut() -> bool) {
        let deadline = Instant::now() + WAIT;
        while !condition() {
            assert!(Instant::now() < deadline, "timed out waiting for {what}");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    async fn publish_reaches_every_subscriber_of_the_topic_only(backend: Backend) {
        let node = node(backend).await;
        let b = &node.broker;
        let mut a1 = b.subscribe("a").await.unwrap();
        let mut a2 = b.subscribe("a").await.unwrap();
        let mut other = b.subscribe("b").await.unwrap();
        // "for b" goes first: had it leaked into "a", it would be what `a1` sees first.
        publish(b, "b", "for b").await;
        publish(b, "a", "for a").await;
        assert_eq!(next(&mut a1).await, msg("for a"));
        assert_eq!(next(&mut a2).await, msg("for a"));
        assert_eq!(next(&mut other).await, msg("for b"));
    }

    async fn publishing_to_a_topic_nobody_heeds_is_fine(backend: Backend) {
        let node = node(backend).await;
        publish(&node.broker, "empty", "into the void").await;
        node.broker.ping().await.unwrap();
    }

    async fn order_is_kept_for_one_publisher(backend: Backend) {
        let node = node(backend).await;
        let mut sub = node.broker.subscribe("t").await.unwrap();
        for i in 0..200 {
            publish(&node.broker, "t", &i.to_string()).await;
        }
        for i in 0..200 {
            assert_eq!(next(&mut sub).await, msg(&i.to_string()));
        }
    }

    async fn a_dropped_subscriber_does_not_break_others(backend: Backend) {
        let node = node(backend).await;
        let b = &node.broker;
        let mut kept = b.subscribe("t").await.unwrap();
        drop(b.subscribe("t").await.unwrap());
        publish(b, "t", "still here").await;
        assert_eq!(next(&mut kept).await, msg("still here"));
        // Once the last one goes, the topic is released — and can be taken up again.
        drop(kept);
        wait_for("the topic to be released", || topic_count(b) == 0).await;
        let mut again = b.subscribe("t").await.unwrap();
        publish(b, "t", "again").await;
        assert_eq!(next(&mut again).await, msg("again"));
    }

    async fn a_lagging_subscriber_is_told_how_many_it_missed(backend: Backend) {
        let node = node(backend).await;
        let b = &node.broker;
        let mut idle = b.subscribe("t").await.unwrap();
        // A reader that keeps up shows when every message has been handed out locally.
        let mut witness = b.subscribe("t").await.unwrap();
        let witnessed =
            tokio::spawn(async move { while next(&mut witness).await != msg("last") {} });
        let total = TOPIC_CAPACITY + 100;
        for i in 0..total - 1 {
            publish(b, "t", &i.to_string()).await;
        }
        publish(b, "t", "last").await;
        tokio::time::timeout(WAIT, witnessed)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(next(&mut idle).await, Received::Lagged(100));
        assert_eq!(next(&mut idle).await, msg("100"));
    }

    async fn shutdown_ends_subscriptions(backend: Backend) {
        let node = node(backend).await;
        let mut sub = node.broker.subscribe("t").await.unwrap();
        node.shutdown.cancel();
        assert_eq!(tokio::time::timeout(WAIT, sub.recv()).await.unwrap(), None);
        assert!(matches!(
            node.broker.publish("t", "late".into()).await,
            Err(BrokerError::Closed)
        ));
        assert!(matches!(
            node.broker.subscribe("t").await,
            Err(BrokerError::Closed)
        ));
    }

    macro_rules! suite {
        ($($name:ident),* $(,)?) => {
            mod on_memory {
                $(#[tokio::test] async fn $name() { super::$name(super::Backend::Memory).await })*
            }
            mod on_redis {
                $(#[tokio::test] async fn $name() { super::$name(super::Backend::Redis).await })*
            }
        };
    }

    suite!(
        publish_reaches_every_subscriber_of_the_topic_only,
        publishing_to_a_topic_nobody_heeds_is_fine,
        order_is_kept_for_one_publisher,
        a_dropped_subscriber_does_not_break_others,
        a_lagging_subscriber_is_told_how_many_it_missed,
        shutdown_ends_subscriptions,
    );

    #[tokio::test]
    async fn redis_nodes_on_one_prefix_see_each_others_publishes() {
        let prefix = unique_prefix();
        let one = redis_node_at(&redis_url(), &prefix).await;
        let two = redis_node_at(&redis_url(), &prefix).await;
        let mut on_one = one.broker.subscribe("t").await.unwrap();
        let mut on_two = two.broker.subscribe("t").await.unwrap();
        publish(&one.broker, "t", "from one").await;
        publish(&two.broker, "t", "from two").await;
        for sub in [&mut on_one, &mut on_two] {
            let mut got = vec![next(sub).await, next(sub).await];
            got.sort_by_key(|r| format!("{r:?}"));
            assert_eq!(got, vec![msg("from one"), msg("from two")]);
        }
    }

    #[tokio::test]
    async fn redis_subscribes_once_per_node_per_topic() {
        let prefix = unique_prefix();
        let channel = format!("{prefix}broker:t");
        let mut conn =
            ::redis::aio::ConnectionManager::new(::redis::Client::open(redis_url()).unwrap())
                .await
                .unwrap();
        let mut numsub = async || -> i64 {
            let (_, n): (String, i64) = ::redis::cmd("PUBSUB")
                .arg("NUMSUB")
                .arg(&channel)
                .query_async(&mut conn)
                .await
                .unwrap();
            n
        };
        let one = redis_node_at(&redis_url(), &prefix).await;
        let two = redis_node_at(&redis_url(), &prefix).await;
        let subs = [
            one.broker.subscribe("t").await.unwrap(),
            one.broker.subscribe("t").await.unwrap(),
            two.broker.subscribe("t").await.unwrap(),
        ];
        assert_eq!(numsub().await, 2);
        drop(subs);
        let deadline = Instant::now() + WAIT;
        while numsub().await != 0 {
            assert!(Instant::now() < deadline, "topic was not unsubscribed");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    #[tokio::test]
    async fn redis_prefixes_keep_brokers_apart() {
        let one = redis_node_at(&redis_url(), &unique_prefix()).await;
        let two = redis_node_at(&redis_url(), &unique_prefix()).await;
        let mut on_two = two.broker.subscribe("t").await.unwrap();
        publish(&one.broker, "t", "not for two").await;
        publish(&two.broker, "t", "for two").await;
        assert_eq!(next(&mut on_two).await, msg("for two"));
    }

    #[tokio::test]
    async fn redis_reconnect_resubscribes_and_reports_the_gap() {
        let proxy = Proxy::start(&redis_url()).await;
        let node = redis_node_at(&proxy.url(), &unique_prefix()).await;
        let mut sub = node.broker.subscribe("t").await.unwrap();
        publish(&node.broker, "t", "before").await;
        assert_eq!(next(&mut sub).await, msg("before"));

        proxy.cut();
        // Lagged(0) is sent only once every topic is subscribed again.
        assert_eq!(next(&mut sub).await, Received::Lagged(0));
        node.broker.ping().await.unwrap();
        publish(&node.broker, "t", "after").await;
        assert_eq!(next(&mut sub).await, msg("after"));
    }

    /// A TCP proxy in front of Redis whose open connections can be cut, to stand in for a
    /// network failure without disturbing other tests' connections.
    struct Proxy {
        addr: std::net::SocketAddr,
        cut: std::sync::Arc<std::sync::Mutex<CancellationToken>>,
        stop: CancellationToken,
    }

    impl Proxy {
        async fn start(redis_url: &str) -> Self {
            use tokio::net::{TcpListener, TcpStream};
            let upstream_addr = redis_url.trim_start_matches("redis://");
            let upstream_addr = upstream_addr.rsplit('@').next().unwrap();
            let upstream_addr = upstream_addr.split('/').next().unwrap().to_owned();
            let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
            let addr = listener.local_addr().unwrap();
            let cut = std::sync::Arc::new(std::sync::Mutex::new(CancellationToken::new()));
            let stop = CancellationToken::new();
            let (cuts, stopped) = (cut.clone(), stop.clone());
            tokio::spawn(async move {
                loop {
                    let client = tokio::select! {
                        _ = stopped.cancelled() => return,
                        accepted = listener.accept() => accepted.unwrap().0,
                    };
                    let severed = cuts.lock().unwrap().clone();
                    let upstream = TcpStream::connect(&upstream_addr).await.unwrap();
                    tokio::spawn(async move {
                        tokio::select! {
                            _ = severed.cancelled() => {}
                            _ = pump(&client, &upstream) => {}
                            _ = pump(&upstream, &client) => {}
                        }
                    });
                }
            });
            Self { addr, cut, stop }
        }

        fn url(&self) -> String {
            format!("redis://{}", self.addr)
        }

        fn cut(&self) {
            let mut current = self.cut.lock().unwrap();
            current.cancel();
            *current = CancellationToken::new();
        }
    }

    impl Drop for Proxy {
        fn drop(&mut self) {
            self.stop.cancel();
            self.cut();
        }
    }

    async fn pump(from: &tokio::net::TcpStream, to: &tokio::net::TcpStream) {
        use std::io::ErrorKind::WouldBlock;
        let mut buf = vec![0; 16 * 1024];
        loop {
            if from.readable().await.is_err() {
                return;
            }
            let n = match from.try_read(&mut buf) {
                Ok(0) => return,
                Ok(n) => n,
                Err(e) if e.kind() == WouldBlock => continue,
                Err(_) => return,
            };
            let mut sent = 0;
            while sent < n {
                if to.writable().await.is_err() {
                    return;
                }
                match to.try_write(&buf[sent..n]) {
                    Ok(k) => sent += k,
                    Err(e) if e.kind() == WouldBlock => continue,
                    Err(_) => return,
                }
            }
        }
    }
}
