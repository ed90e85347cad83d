//! The hub's side of the normalize worker: stores a normalized batch and tells consoles.
//!
//! Items are routed to inboxes from the inbox registry (WhatsApp by `phone_number_id`, the
//! others by the inbox in the request path). An item whose inbox is unknown is not dropped: the
//! event is marked `unrouted` with the reason, its raw body stays, and operators see it at
//! `GET /v1/inbound-events?status=unrouted`. Events are published only for rows this run
//! actually created, so a re-run publishes nothing twice.

use std::hash::{BuildHasher, BuildHasherDefault, DefaultHasher};
use std::sync::Arc;

use async_trait::async_trait;
use serde_json::json;
use sqlx::{Any, Transaction};
use switchboard_connectors::{InboundBatch, InboundItem, RouteKey};
use switchboard_workers::normalize::decode;
use switchboard_workers::{InboundPort, PortError, RawEvent, SourceKind};
use tokio::sync::{mpsc, oneshot};
use tracing::{debug, info, warn};

use crate::inboxes::{InboxRuntime, Registry};
use crate::live::new_event;
use crate::store::conversations::{Target, store_inbound_in};
use crate::store::inbound::finish_event_in;
use crate::store::live::{NewEvent, append_events_in};
use crate::store::{Dialect, Store, StoreError};

pub struct Ingest {
    pub store: Store,
    pub events: crate::live::Events,
    pub registry: Arc<Registry>,
    /// Counts customer messages per inbox for the `inbound_silence` alert signal.
    pub tally: Arc<crate::alerts::watch::Tally>,
}

fn transient(e: StoreError) -> PortError {
    PortError::Transient(e.to_string())
}

/// The topic every change of an account is published on.
pub fn account_topic(account_id: &str) -> String {
    format!("account:{account_id}")
}

impl Ingest {
    fn route(&self, event: &RawEvent, route: &RouteKey) -> Option<Arc<InboxRuntime>> {
        let inbox = match route {
            RouteKey::PhoneNumberId { phone_number_id } => {
                self.registry.whatsapp_inbox(phone_number_id)
            }
            RouteKey::Inbox => event
                .inbox_id
                .as_deref()
                .and_then(|id| self.registry.inbox_by_id(id)),
        };
        // An event only reaches inboxes of the account whose secret signed it: one tenant's
        // Meta app cannot post into another tenant's number by naming its phone_number_id.
        inbox.filter(|i| i.account_id == event.account_id)
    }

    /// Routes an item; on a miss, reloads the registry once and tries again, so an inbox
    /// created on another node a moment ago is found even before its announcement arrives.
    async fn resolve(&self, event: &RawEvent, route: &RouteKey) -> Option<Arc<InboxRuntime>> {
        if let Some(inbox) = self.route(event, route) {
            return Some(inbox);
        }
        self.registry.reload_after_miss().await;
        self.route(event, route)
    }
}

fn route_name(route: &RouteKey) -> String {
    match route {
        RouteKey::PhoneNumberId { phone_number_id } => format!("phone_number_id {phone_number_id}"),
        RouteKey::Inbox => "the request's inbox".to_owned(),
    }
}

/// What storing an item does once its transaction has committed.
enum Announce {
    /// A customer message stored: counted, by channel and (for `inbound_silence`) by inbox.
    Stored {
        channel: &'static str,
        account_id: String,
        inbox_id: String,
    },
    Event {
        account_id: String,
        kind: &'static str,
        data: serde_json::Value,
    },
}

impl Ingest {
    /// Stores every item of every event and marks each event processed (or `unrouted`), all in
    /// one transaction, then publishes what was created. One commit for a whole batch is what
    /// makes normalization keep up with the intake: on SQLite, a commit is an fsync.
    ///
    /// Idempotent like [`InboundPort::apply`]: what is stored already is skipped, and events
    /// are published only for rows this call created. An error rolls back the whole batch.
    pub async fn apply_many(&self, items: &[(&RawEvent, &InboundBatch)]) -> Result<(), PortError> {
        let mut tx = self.store.begin().await.map_err(transient)?;
        let mut announce = Vec::new();
        for (event, batch) in items {
            self.apply_in(&mut tx, event, batch, &mut announce)
                .await
                .map_err(transient)?;
        }
        // On SQLite the live events commit with what they describe: one commit between the ack
        // and the consoles instead of two, and no second wait for the one write connection. On
        // PostgreSQL they stay with the node's log writer: appending here would hold the
        // account's head row in every lane's transaction and serialize the lanes on it (a first
        // run measured worse; docs/BENCHMARKS.md).
        let inline = self.store.dialect() == Dialect::Sqlite;
        let events: Vec<NewEvent> = announce
            .iter()
            .filter_map(|a| match a {
                Announce::Event {
                    account_id,
                    kind,
                    data,
                } if inline => Some(new_event(account_id, kind, data)),
                _ => None,
            })
            .collect();
        let logged = append_events_in(&mut tx, &events)
            .await
            .map_err(transient)?;
        tx.commit().await.map_err(|e| transient(e.into()))?;
        self.events
            .published(
                events
                    .into_iter()
                    .map(|e| e.account_id)
                    .zip(logged)
                    .collect(),
            )
            .await;
        for item in announce {
            match item {
                Announce::Stored {
                    channel,
                    account_id,
                    inbox_id,
                } => {
                    metrics::counter!("switchboard_messages_stored_total", "channel" => channel)
                        .increment(1);
                    self.tally.count(
                        &account_id,
                        crate::alerts::watch::INBOUND_MESSAGES,
                        Some(&crate::alerts::Dimension::Inbox.scope(&inbox_id)),
                    );
                }
                Announce::Event {
                    account_id,
                    kind,
                    data,
                } => {
                    if !inline {
                        self.events.publish(&account_id, kind, data).await;
                    }
                }
            }
        }
        Ok(())
    }

    async fn apply_in(
        &self,
        tx: &mut Transaction<'static, Any>,
        event: &RawEvent,
        batch: &InboundBatch,
        announce: &mut Vec<Announce>,
    ) -> Result<(), StoreError> {
        let kind = SourceKind::split(&event.source).map(|(k, _)| k);
        let mut unrouted = Vec::new();
        let mut notices = Vec::new();
        for item in &batch.items {
            match item {
                InboundItem::Message(message) => {
                    let Some(inbox) = self.resolve(event, &message.route).await else {
                        unrouted.push(route_name(&message.route));
                        continue;
                    };
                    let target = Target {
                        account_id: &inbox.account_id,
                        inbox_id: &inbox.id,
                        channel: inbox.channel.as_str(),
                        event_id: &event.id,
                        team_id: inbox.team_id.as_deref(),
                        branch_id: inbox.branch_id.as_deref(),
                    };
                    if let Some(stored) = store_inbound_in(tx, &target, message).await? {
                        announce.push(Announce::Stored {
                            channel: inbox.channel.as_str(),
                            account_id: inbox.account_id.clone(),
                            inbox_id: inbox.id.clone(),
                        });
                        if stored.conversation_created {
                            announce.push(Announce::Event {
                                account_id: stored.account_id.clone(),
                                kind: "conversation.created",
                                data: json!({ "conversation_id": stored.conversation_id, "inbox_id": inbox.id }),
                            });
                        }
                        if let Some(woken) = &stored.woken {
                            announce.push(Announce::Event {
                                account_id: stored.account_id.clone(),
                                kind: "conversation.updated",
                                data: json!(woken),
                            });
                        }
                        announce.push(Announce::Event {
                            account_id: stored.account_id,
                            kind: "message.created",
                            data: json!(stored.message),
                        });
                    }
                }
                InboundItem::Status(status) => {
                    let inbox = self.resolve(event, &status.route).await;
                    if inbox.is_none() {
                        unrouted.push(route_name(&status.route));
                    }
                    let (account_id, channel) = match &inbox {
                        Some(inbox) => (inbox.account_id.as_str(), inbox.channel.as_str()),
                        None if kind == Some(SourceKind::Whatsapp) => {
                            (event.account_id.as_str(), "whatsapp")
                        }
                        None => (event.account_id.as_str(), "sms"),
                    };
                    let moved = self
                        .store
                        .store_status_in(tx, account_id, channel, &event.id, status)
                        .await?;
                    if let Some(moved) = moved {
                        announce.push(Announce::Event {
                            account_id: account_id.to_owned(),
                            kind: "message.status",
                            data: crate::outbound::status_event(&moved),
                        });
                    }
                }
                InboundItem::Notice(notice) => notices.push(notice.kind.clone()),
            }
        }
        let (status, note) = if unrouted.is_empty() {
            let note = (!notices.is_empty()).then(|| format!("notices: {}", notices.join(", ")));
            ("processed", note)
        } else {
            unrouted.dedup();
            (
                "unrouted",
                Some(format!("no inbox for {}", unrouted.join(", "))),
            )
        };
        finish_event_in(tx, &event.id, status, note.as_deref()).await
    }
}

#[async_trait]
impl InboundPort for Ingest {
    async fn load(&self, event_id: &str) -> Result<Option<RawEvent>, PortError> {
        self.store.load_event(event_id).await.map_err(transient)
    }

    async fn apply(&self, event: &RawEvent, batch: InboundBatch) -> Result<(), PortError> {
        self.apply_many(&[(event, &batch)]).await
    }

    async fn quarantine(&self, event_id: &str, reason: &str) -> Result<(), PortError> {
        self.store
            .finish_event(event_id, "quarantined", Some(reason))
            .await
            .map_err(transient)
    }
}

/// One event to normalize: from a queue job, which waits for the outcome, or handed over by
/// this node's intake right after its durable write, which does not (the event stays
/// `received` until it is done, so if this node dies first the recovery sweep queues it).
struct Work {
    event: RawEvent,
    /// The parsed body, or why it does not parse (the event is then quarantined); `None`: not
    /// parsed yet (the writer parses it).
    batch: Option<Result<InboundBatch, String>>,
    reply: Option<oneshot::Sender<Result<(), PortError>>>,
}

type Reply = Option<oneshot::Sender<Result<(), PortError>>>;

/// Most events normalized in one transaction.
const NORMALIZE_BATCH: usize = 64;
/// Events waiting for a lane before a hand-over falls back to the queue.
const LANE_QUEUE: usize = 2048;

/// Group commit of normalization, the way the intake's journal commits events: each job (and
/// each event the intake hands over) joins a lane; the lane's writer takes everything waiting,
/// stores it in one transaction and answers. Under load many events share a commit; alone, an
/// event waits for nobody. It is the worker role's [`InboundPort`].
///
/// Events are put in lanes by their sender (or, for a status, by the message it is about), so
/// one contact's events are always stored by the same writer, in order, and two writers never
/// wait on each other's row locks (or deadlock) over one conversation.
#[derive(Clone)]
pub struct Normalizer {
    ingest: Arc<Ingest>,
    lanes: Arc<[mpsc::Sender<Work>]>,
}

impl Normalizer {
    /// Starts the lanes: one on SQLite (one writer at a time), four on PostgreSQL.
    pub fn start(ingest: Arc<Ingest>) -> Self {
        let count = match ingest.store.dialect() {
            Dialect::Sqlite => 1,
            Dialect::Postgres => 4,
        };
        let lanes = (0..count)
            .map(|_| {
                let (lane, receiver) = mpsc::channel(LANE_QUEUE);
                tokio::spawn(normalize_batches(ingest.clone(), receiver));
                lane
            })
            .collect();
        Normalizer { ingest, lanes }
    }

    fn lane(&self, work: &Work) -> &mpsc::Sender<Work> {
        if self.lanes.len() == 1 {
            return &self.lanes[0];
        }
        let first = match &work.batch {
            Some(Ok(batch)) => batch.items.first(),
            _ => None,
        };
        let key = match first {
            Some(InboundItem::Message(m)) => m
                .sender
                .identities
                .first()
                .map_or(m.provider_message_id.as_str(), |i| i.value.as_str()),
            Some(InboundItem::Status(s)) => s.provider_message_id.as_str(),
            _ => work.event.id.as_str(),
        };
        let hash = BuildHasherDefault::<DefaultHasher>::default().hash_one(key);
        &self.lanes[(hash % self.lanes.len() as u64) as usize]
    }

    /// Takes over an event the intake has just made durable, if its lane has room; `false`
    /// means the caller queues a job for it instead.
    pub fn hand_over(&self, event: RawEvent) -> bool {
        // Parsed here only when the lane depends on it; with one lane the writer parses, off
        // the intake's path.
        let batch = (self.lanes.len() > 1).then(|| decode(&event));
        let work = Work {
            event,
            batch,
            reply: None,
        };
        let handed = self.lane(&work).try_send(work).is_ok();
        metrics::counter!("switchboard_intake_handovers_total",
            "outcome" => if handed { "handed_over" } else { "queued" })
        .increment(1);
        handed
    }
}

#[async_trait]
impl InboundPort for Normalizer {
    async fn load(&self, event_id: &str) -> Result<Option<RawEvent>, PortError> {
        self.ingest.load(event_id).await
    }

    async fn apply(&self, event: &RawEvent, batch: InboundBatch) -> Result<(), PortError> {
        let (reply, outcome) = oneshot::channel();
        let work = Work {
            event: event.clone(),
            batch: Some(Ok(batch)),
            reply: Some(reply),
        };
        if self.lane(&work).send(work).await.is_err() {
            return Err(PortError::Transient(
                "the normalizer is shut down".to_owned(),
            ));
        }
        outcome.await.unwrap_or_else(|_| {
            Err(PortError::Transient(
                "the normalizer stopped before answering".to_owned(),
            ))
        })
    }

    async fn quarantine(&self, event_id: &str, reason: &str) -> Result<(), PortError> {
        self.ingest.quarantine(event_id, reason).await
    }
}

/// A lane's writer: take everything waiting (up to [`NORMALIZE_BATCH`]), store it in one
/// transaction, answer. A batch that fails (a message stored concurrently by another node, a
/// deadlock with one) is retried one event at a time, so one bad event fails alone.
async fn normalize_batches(ingest: Arc<Ingest>, mut receiver: mpsc::Receiver<Work>) {
    let mut waiting = Vec::with_capacity(NORMALIZE_BATCH);
    while receiver.recv_many(&mut waiting, NORMALIZE_BATCH).await > 0 {
        let mut ready: Vec<(RawEvent, InboundBatch, Reply)> = Vec::with_capacity(waiting.len());
        for work in waiting.drain(..) {
            match work.batch.unwrap_or_else(|| decode(&work.event)) {
                Ok(batch) => ready.push((work.event, batch, work.reply)),
                Err(reason) => {
                    info!(event = %work.event.id, %reason, "Quarantined a signed but unparseable event.");
                    let outcome = ingest.quarantine(&work.event.id, &reason).await;
                    answer(&work.event, work.reply, outcome);
                }
            }
        }
        if ready.is_empty() {
            continue;
        }
        metrics::histogram!("switchboard_normalize_batch_size").record(ready.len() as f64);
        let items: Vec<(&RawEvent, &InboundBatch)> = ready.iter().map(|(e, b, _)| (e, b)).collect();
        let together = ingest.apply_many(&items).await;
        drop(items);
        match together {
            Ok(()) => {
                for (event, _, reply) in ready {
                    answer(&event, reply, Ok(()));
                }
            }
            Err(e) if ready.len() == 1 => {
                let (event, _, reply) = ready.remove(0);
                answer(&event, reply, Err(e));
            }
            Err(e) => {
                debug!(error = %e, events = ready.len(), "A normalize batch failed; storing its events one by one.");
                for (event, batch, reply) in ready {
                    let outcome = ingest.apply_many(&[(&event, &batch)]).await;
                    answer(&event, reply, outcome);
                }
            }
        }
    }
}

/// Tells a job its event's outcome; a handed-over event's failure is only logged.
fn answer(event: &RawEvent, reply: Reply, outcome: Result<(), PortError>) {
    match reply {
        Some(reply) => {
            let _ = reply.send(outcome);
        }
        None => {
            if let Err(e) = outcome {
                warn!(event = %event.id, error = %e, "Could not normalize a handed-over event; the recovery sweep will queue it.");
            }
        }
    }
}
