//! One pump per account with sockets on this node.
//!
//! The pump holds the node's one broker subscription to the account's topic, parses each
//! payload once, and forwards events to a `broadcast` ring every socket of the account reads.
//! It keeps the ring in id order without gaps: an event ahead of the next expected id means
//! the ones between were committed (ids are taken under the account's head lock) but their
//! publish has not arrived, or never will (a Redis blip, a publisher that crashed): they are
//! read from the log and forwarded first; a late or repeated publish is dropped. A reported
//! broker gap (`Lagged`) and a periodic look at the log's head catch up the same way.
//!
//! The ring is each socket's bounded outgoing buffer: a socket more than `live.socket_buffer`
//! events behind finds it has lagged and is closed with 4008 (resume), and no socket ever holds
//! a queue of its own.

use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::Duration;

use dashmap::DashMap;
use tokio::sync::{OnceCell, broadcast};
use tokio_util::sync::CancellationToken;
use tracing::{debug, warn};

use super::LiveEvent;
use crate::broker::{Broker, Received, Subscription};
use crate::ingest::account_topic;
use crate::store::Store;

/// Log rows read per query while filling a hole.
const FILL_PAGE: i64 = 500;
/// How often an idle pump checks the log's head and whether anyone still listens.
const TIDY: Duration = Duration::from_secs(15);

pub struct Fanout {
    store: Store,
    broker: Broker,
    capacity: usize,
    shutdown: CancellationToken,
    pumps: DashMap<String, Arc<Pump>>,
}

struct Pump {
    tx: broadcast::Sender<Arc<LiveEvent>>,
    /// The last id forwarded: every event of the account up to it has been put in the ring.
    last: AtomicI64,
    started: OnceCell<()>,
}

/// A socket's place in its account's stream.
pub struct Joined {
    pub rx: broadcast::Receiver<Arc<LiveEvent>>,
    /// Every event with a larger id will arrive on `rx`.
    pub from: i64,
}

impl Fanout {
    pub fn new(
        store: Store,
        broker: Broker,
        capacity: usize,
        shutdown: CancellationToken,
    ) -> Arc<Self> {
        Arc::new(Fanout {
            store,
            broker,
            capacity,
            shutdown,
            pumps: DashMap::new(),
        })
    }

    /// Joins the account's stream, starting its pump if this is the node's first socket of it.
    pub async fn join(self: &Arc<Self>, account_id: &str) -> anyhow::Result<Joined> {
        // Subscribing under the map's entry lock means a pump that found no receivers and
        // removed itself cannot be the one we subscribe to.
        let (pump, rx) = {
            let entry = self.pumps.entry(account_id.to_owned()).or_insert_with(|| {
                Arc::new(Pump {
                    tx: broadcast::channel(self.capacity).0,
                    last: AtomicI64::new(0),
                    started: OnceCell::new(),
                })
            });
            (entry.clone(), entry.tx.subscribe())
        };
        pump.started
            .get_or_try_init(|| self.clone().start(account_id.to_owned(), pump.clone()))
            .await?;
        // Read after subscribing: whatever is forwarded after this value reaches `rx`.
        let from = pump.last.load(Ordering::Acquire);
        Ok(Joined { rx, from })
    }

    async fn start(self: Arc<Self>, account_id: String, pump: Arc<Pump>) -> anyhow::Result<()> {
        // Subscribe before reading the head: an event committed after the read is published
        // after the subscription and arrives; one committed before is at or below the head.
        let sub = self.broker.subscribe(&account_topic(&account_id)).await?;
        let head = self.store.event_head(&account_id).await?;
        pump.last.store(head.last_id, Ordering::Release);
        debug!(account = %account_id, head = head.last_id, "Pump started.");
        tokio::spawn(self.run(account_id, pump, sub));
        Ok(())
    }

    /// The number of accounts with a pump on this node.
    pub fn pumps(&self) -> usize {
        self.pumps.len()
    }

    async fn run(self: Arc<Self>, account_id: String, pump: Arc<Pump>, mut sub: Subscription) {
        let mut tidy = tokio::time::interval(TIDY);
        tidy.tick().await;
        loop {
            tokio::select! {
                () = self.shutdown.cancelled() => break,
                received = sub.recv() => match received {
                    None => break,
                    Some(Received::Message(payload)) => {
                        if let Some(event) = LiveEvent::parse(&payload) {
                            self.forward(&account_id, &pump, event).await;
                        }
                    }
                    Some(Received::Lagged(_)) => self.fill(&account_id, &pump, i64::MAX).await,
                },
                _ = tidy.tick() => {
                    if pump.tx.receiver_count() == 0
                        && self
                            .pumps
                            .remove_if(&account_id, |_, p| {
                                Arc::ptr_eq(p, &pump) && p.tx.receiver_count() == 0
                            })
                            .is_some()
                    {
                        debug!(account = %account_id, "Pump stopped: no sockets left.");
                        return;
                    }
                    // A publish that never came (its node died after committing) is caught here.
                    if let Ok(head) = self.store.event_head(&account_id).await
                        && head.last_id > pump.last.load(Ordering::Acquire)
                    {
                        self.fill(&account_id, &pump, head.last_id + 1).await;
                    }
                }
            }
        }
        self.pumps
            .remove_if(&account_id, |_, p| Arc::ptr_eq(p, &pump));
    }

    async fn forward(&self, account_id: &str, pump: &Pump, event: LiveEvent) {
        let Some(id) = event.id else {
            let _ = pump.tx.send(Arc::new(event));
            return;
        };
        let last = pump.last.load(Ordering::Acquire);
        if id <= last {
            return; // a repeat, or a late publish already filled from the log
        }
        if id > last + 1 {
            self.fill(account_id, pump, id).await;
            if id <= pump.last.load(Ordering::Acquire) {
                return;
            }
        }
        put(pump, Arc::new(event));
    }

    /// Forwards every logged event after the pump's last and before `before`, from the log.
    async fn fill(&self, account_id: &str, pump: &Pump, before: i64) {
        let mut failures = 0;
        loop {
            let after = pump.last.load(Ordering::Acquire);
            if after + 1 >= before {
                return;
            }
            match self
                .store
                .events_between(account_id, after, before, FILL_PAGE)
                .await
            {
                Ok(rows) if rows.is_empty() => {
                    // Nothing between (erased events): the hole is empty.
                    if before != i64::MAX {
                        pump.last.store(before - 1, Ordering::Release);
                    }
                    return;
                }
                Ok(rows) => {
                    for row in rows {
                        put(pump, Arc::new(LiveEvent::from_logged(row)));
                    }
                }
                Err(e) if failures < 3 => {
                    failures += 1;
                    warn!(error = %e, account = %account_id, "Could not read the event log to fill a gap; retrying.");
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
                Err(e) => {
                    // Sockets are told they missed something and must refetch.
                    warn!(error = %e, account = %account_id, "Gave up filling a gap; sockets will resync.");
                    let last = if before == i64::MAX {
                        after
                    } else {
                        before - 1
                    };
                    pump.last.store(last, Ordering::Release);
                    let _ = pump.tx.send(Arc::new(LiveEvent::local(
                        "resync.required",
                        serde_json::json!({ "reason": "gap", "last_event_id": last }),
                    )));
                    return;
                }
            }
        }
    }
}

fn put(pump: &Pump, event: Arc<LiveEvent>) {
    if let Some(id) = event.id {
        pump.last.store(id, Ordering::Release);
    }
    let _ = pump.tx.send(event);
}
