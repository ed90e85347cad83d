//! Redis broker: `PUBLISH` through the shared connection manager, and one dedicated pub/sub
//! connection per node that holds one `SUBSCRIBE` per live topic and fans messages out to local
//! subscribers through per-topic `broadcast` channels.
//!
//! Channels are `{prefix}broker:{topic}`. A single connection task owns the pub/sub connection
//! and serialises (un)subscribes, so a topic's Redis subscription and its local sender never
//! disagree for long. Redis pub/sub stores nothing: whatever is published while the connection
//! is down is gone, and every local subscriber is told so with `Received::Lagged(0)` once the
//! connection is back and all topics are subscribed again.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use ::redis::aio::{ConnectionManager, PubSubSink, PubSubStream};
use ::redis::{Client, Msg, RedisError, RedisResult};
use dashmap::DashMap;
use futures::StreamExt;
use std::collections::HashSet;
use tokio::sync::{broadcast, mpsc, oneshot};
use tokio_util::sync::CancellationToken;

use super::{BrokerError, Received, Subscription, TOPIC_CAPACITY, TopicGuard};

const BACKOFF_MIN: Duration = Duration::from_millis(100);
const BACKOFF_MAX: Duration = Duration::from_secs(5);
/// Bounds every pub/sub round trip so a half-open connection is noticed and replaced.
const COMMAND_TIMEOUT: Duration = Duration::from_secs(5);
const HEALTH_INTERVAL: Duration = Duration::from_secs(15);
/// How long `subscribe` waits, including for a reconnect, before giving up.
const SUBSCRIBE_TIMEOUT: Duration = Duration::from_secs(10);

#[derive(Clone)]
pub struct RedisBroker {
    inner: Arc<Inner>,
}

struct Inner {
    conn: ConnectionManager,
    channel_prefix: String,
    hub: Arc<Hub>,
    commands: mpsc::UnboundedSender<Command>,
    shutdown: CancellationToken,
}

/// State shared between handles and the connection task. The task holds no command sender, so
/// it also stops once every handle and subscription is gone.
struct Hub {
    topics: DashMap<String, broadcast::Sender<Received>>,
    connected: AtomicBool,
}

enum Command {
    Subscribe {
        channel: String,
        ack: oneshot::Sender<RedisResult<()>>,
    },
    /// A subscription went away; unsubscribe if it was the topic's last.
    Release { channel: String },
}

impl RedisBroker {
    pub async fn start(
        client: Client,
        conn: ConnectionManager,
        prefix: &str,
        shutdown: CancellationToken,
    ) -> Result<Self, BrokerError> {
        // Connect once up front so a wrong URL fails startup instead of retrying forever.
        let first = tokio::time::timeout(COMMAND_TIMEOUT, client.get_async_pubsub())
            .await
            .map_err(|_| timed_out("connecting the pub/sub connection"))??;
        let hub = Arc::new(Hub {
            topics: DashMap::new(),
            connected: AtomicBool::new(true),
        });
        let (commands, inbox) = mpsc::unbounded_channel();
        let task = ConnectionTask {
            client,
            hub: hub.clone(),
            inbox,
            shutdown: shutdown.clone(),
            subscribed: HashSet::new(),
        };
        tokio::spawn(task.run(first.split()));
        Ok(Self {
            inner: Arc::new(Inner {
                conn,
                channel_prefix: format!("{prefix}broker:"),
                hub,
                commands,
                shutdown,
            }),
        })
    }

    fn channel(&self, topic: &str) -> String {
        format!("{}{topic}", self.inner.channel_prefix)
    }

    pub(super) async fn publish(&self, topic: &str, payload: Arc<str>) -> Result<(), BrokerError> {
        if self.inner.shutdown.is_cancelled() {
            return Err(BrokerError::Closed);
        }
        ::redis::cmd("PUBLISH")
            .arg(self.channel(topic))
            .arg(payload.as_bytes())
            .query_async::<()>(&mut self.inner.conn.clone())
            .await?;
        Ok(())
    }

    pub(super) async fn subscribe(&self, topic: &str) -> Result<Subscription, BrokerError> {
        if self.inner.shutdown.is_cancelled() {
            return Err(BrokerError::Closed);
        }
        let channel = self.channel(topic);
        let rx = self
            .inner
            .hub
            .topics
            .entry(channel.clone())
            .or_insert_with(|| broadcast::channel(TOPIC_CAPACITY).0)
            .subscribe();
        // Built before the wait so that giving up below releases the topic again.
        let subscription = Subscription::new(
            rx,
            self.inner.shutdown.clone(),
            TopicGuard::Redis(Guard {
                channel: channel.clone(),
                commands: self.inner.commands.clone(),
            }),
        );
        let (ack, acked) = oneshot::channel();
        self.inner
            .commands
            .send(Command::Subscribe { channel, ack })
            .map_err(|_| BrokerError::Closed)?;
        match tokio::time::timeout(SUBSCRIBE_TIMEOUT, acked).await {
            Ok(Ok(Ok(()))) => Ok(subscription),
            Ok(Ok(Err(err))) => Err(err.into()),
            Ok(Err(_)) => Err(BrokerError::Closed),
            Err(_) => Err(timed_out("waiting for SUBSCRIBE").into()),
        }
    }

    /// Checks both the command connection and this node's pub/sub connection.
    pub(super) async fn ping(&self) -> Result<(), BrokerError> {
        if self.inner.shutdown.is_cancelled() {
            return Err(BrokerError::Closed);
        }
        ::redis::cmd("PING")
            .query_async::<()>(&mut self.inner.conn.clone())
            .await?;
        if !self.inner.hub.connected.load(Ordering::Relaxed) {
            return Err(RedisError::from(std::io::Error::new(
                std::io::ErrorKind::NotConnected,
                "the pub/sub connection is down",
            ))
            .into());
        }
        Ok(())
    }
}

fn timed_out(what: &str) -> RedisError {
    std::io::Error::new(std::io::ErrorKind::TimedOut, format!("timed out {what}")).into()
}

pub(super) struct Guard {
    channel: String,
    commands: mpsc::UnboundedSender<Command>,
}

impl Drop for Guard {
    fn drop(&mut self) {
        // The task may be gone after shutdown; then there is nothing left to release.
        let _ = self.commands.send(Command::Release {
            channel: std::mem::take(&mut self.channel),
        });
    }
}

enum Ended {
    Stop,
    Lost(RedisError),
}

struct ConnectionTask {
    client: Client,
    hub: Arc<Hub>,
    inbox: mpsc::UnboundedReceiver<Command>,
    shutdown: CancellationToken,
    /// Channels the current connection has confirmed.
    subscribed: HashSet<String>,
}

impl ConnectionTask {
    async fn run(mut self, first: (PubSubSink, PubSubStream)) {
        let mut next = Some(first);
        let mut backoff = BACKOFF_MIN;
        let mut reconnected = false;
        loop {
            let (mut sink, mut stream) = match next.take() {
                Some(connection) => connection,
                None => {
                    tokio::select! {
                        _ = self.shutdown.cancelled() => break,
                        _ = tokio::time::sleep(backoff) => {}
                    }
                    backoff = (backoff * 2).min(BACKOFF_MAX);
                    match tokio::time::timeout(COMMAND_TIMEOUT, self.client.get_async_pubsub())
                        .await
                    {
                        Ok(Ok(pubsub)) => pubsub.split(),
                        Ok(Err(err)) => {
                            tracing::warn!(error = %err, "Broker pub/sub reconnect failed.");
                            continue;
                        }
                        Err(_) => {
                            tracing::warn!("Broker pub/sub reconnect timed out.");
                            continue;
                        }
                    }
                }
            };
            if let Err(err) = self.resubscribe(&mut sink).await {
                tracing::warn!(error = %err, "Broker re-subscribe failed.");
                continue;
            }
            self.hub.connected.store(true, Ordering::Relaxed);
            if reconnected {
                tracing::info!(
                    topics = self.subscribed.len(),
                    "Broker pub/sub reconnected."
                );
                for tx in self.hub.topics.iter() {
                    let _ = tx.send(Received::Lagged(0));
                }
            }
            backoff = BACKOFF_MIN;
            reconnected = true;
            let ended = self.serve(&mut sink, &mut stream).await;
            self.hub.connected.store(false, Ordering::Relaxed);
            match ended {
                Ended::Stop => break,
                Ended::Lost(err) => {
                    tracing::warn!(error = %err, "Broker pub/sub connection lost.");
                }
            }
        }
        // Dropping every sender ends subscriptions that do not watch the token themselves.
        self.hub.topics.clear();
    }

    async fn resubscribe(&mut self, sink: &mut PubSubSink) -> RedisResult<()> {
        self.subscribed.clear();
        let channels: Vec<String> = self.hub.topics.iter().map(|e| e.key().clone()).collect();
        if !channels.is_empty() {
            with_timeout(sink.subscribe(&channels)).await?;
        }
        self.subscribed.extend(channels);
        Ok(())
    }

    async fn serve(&mut self, sink: &mut PubSubSink, stream: &mut PubSubStream) -> Ended {
        let mut health = tokio::time::interval(HEALTH_INTERVAL);
        health.tick().await;
        loop {
            tokio::select! {
                biased;
                _ = self.shutdown.cancelled() => return Ended::Stop,
                command = self.inbox.recv() => match command {
                    None => return Ended::Stop,
                    Some(command) => {
                        if let Err(err) = self.handle(sink, command).await {
                            return Ended::Lost(err);
                        }
                    }
                },
                msg = stream.next() => match msg {
                    None => return Ended::Lost(std::io::Error::from(
                        std::io::ErrorKind::ConnectionReset,
                    ).into()),
                    Some(msg) => self.dispatch(&msg),
                },
                _ = health.tick() => {
                    if let Err(err) = with_timeout(sink.ping::<()>()).await {
                        return Ended::Lost(err);
                    }
                }
            }
        }
    }

    async fn handle(&mut self, sink: &mut PubSubSink, command: Command) -> RedisResult<()> {
        match command {
            Command::Subscribe { channel, ack } => {
                if self.subscribed.contains(&channel) {
                    let _ = ack.send(Ok(()));
                    return Ok(());
                }
                match with_timeout(sink.subscribe(&channel)).await {
                    Ok(()) => {
                        self.subscribed.insert(channel);
                        let _ = ack.send(Ok(()));
                        Ok(())
                    }
                    Err(err) => {
                        // The caller gets an error; waiters that queued behind it are served
                        // by the re-subscribe after the reconnect.
                        let _ = ack.send(Err(err.clone()));
                        Err(err)
                    }
                }
            }
            Command::Release { channel } => {
                self.hub
                    .topics
                    .remove_if(&channel, |_, tx| tx.receiver_count() == 0);
                // Checked apart from the removal: a subscriber that gave up before its SUBSCRIBE
                // was handled leaves a Redis subscription without a local topic.
                if !self.hub.topics.contains_key(&channel) && self.subscribed.remove(&channel) {
                    with_timeout(sink.unsubscribe(&channel)).await?;
                }
                Ok(())
            }
        }
    }

    fn dispatch(&self, msg: &Msg) {
        if let Some(tx) = self.hub.topics.get(msg.get_channel_name()) {
            let payload: Arc<str> = String::from_utf8_lossy(msg.get_payload_bytes()).into();
            let _ = tx.send(Received::Message(payload));
        }
    }
}

async fn with_timeout<T>(request: impl Future<Output = RedisResult<T>>) -> RedisResult<T> {
    tokio::time::timeout(COMMAND_TIMEOUT, request)
        .await
        .map_err(|_| timed_out("on the pub/sub connection"))?
}

#[cfg(test)]
impl RedisBroker {
    pub(super) fn topic_count(&self) -> usize {
        self.inner.hub.topics.len()
    }
}
