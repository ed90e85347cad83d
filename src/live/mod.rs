//! Live events (docs/LIVE.md): written to the event log, published through the broker, pumped
//! in id order to the node's sockets, and admitted per socket by scope.
//!
//! - [`Events`] is how the hub announces a change: `publish` appends the event to the log
//!   (group commit, one writer task per node) and then publishes it on the account's broker
//!   topic; `ephemeral` publishes a frame that is not history (`typing`, `queue.stats`).
//! - [`Fanout`] runs one pump per account with sockets on this node: one broker subscription,
//!   parsed once, put in id order (holes filled from the log, repeats dropped), and handed to
//!   the sockets through one bounded ring they all read.
//! - [`Viewer`] answers whether a socket may see an event.

pub mod fanout;
pub mod viewer;

use std::sync::{Arc, OnceLock};
use std::time::Duration;

use axum::extract::ws::Utf8Bytes;
use serde::{Deserialize, Serialize};
use tokio::sync::mpsc;
use tracing::warn;

use crate::broker::Broker;
use crate::ingest::account_topic;
use crate::store::Store;
use crate::store::live::{EventScope, LoggedEvent, NewEvent};

pub use fanout::Fanout;
pub use viewer::Viewer;

/// This node's live side: its id, its pumps, and the sessions shutdown waits for.
pub struct Node {
    pub node_id: String,
    pub fanout: Arc<Fanout>,
    pub sessions: tokio_util::task::TaskTracker,
    pub shutdown: tokio_util::sync::CancellationToken,
}

/// Events waiting for the log writer before publishers wait for room.
const APPEND_QUEUE: usize = 4096;
/// Most events one log transaction takes.
const APPEND_BATCH: usize = 512;

/// One event as a node's sockets see it: parsed once per node, shared by every socket.
#[derive(Debug)]
pub struct LiveEvent {
    /// The log id; `None` for an ephemeral frame.
    pub id: Option<i64>,
    pub kind: Box<str>,
    pub scope: EventScope,
    /// The console that caused an ephemeral frame (not echoed back to it).
    pub origin: Option<Box<str>>,
    /// The frame as sent: `{"type", "id", "data"}`.
    pub frame: Utf8Bytes,
    /// The frame as visitors see it, made by the first visitor socket that needs it.
    visitor: OnceLock<Utf8Bytes>,
}

/// What travels on the broker: the routing envelope on the first line, the frame after it, so
/// a pump parses only the envelope and never re-serialises the frame.
#[derive(Debug, Serialize, Deserialize)]
struct Envelope {
    id: Option<i64>,
    kind: String,
    #[serde(flatten)]
    scope: WireScope,
    origin: Option<String>,
}

#[derive(Debug, Default, Serialize, Deserialize)]
struct WireScope {
    conversation_id: Option<String>,
    contact_id: Option<String>,
    inbox_id: Option<String>,
    team_id: Option<String>,
    branch_id: Option<String>,
    assignee_id: Option<String>,
    agent_id: Option<String>,
}

impl From<EventScope> for WireScope {
    fn from(s: EventScope) -> Self {
        WireScope {
            conversation_id: s.conversation_id,
            contact_id: s.contact_id,
            inbox_id: s.inbox_id,
            team_id: s.team_id,
            branch_id: s.branch_id,
            assignee_id: s.assignee_id,
            agent_id: s.agent_id,
        }
    }
}

impl From<WireScope> for EventScope {
    fn from(s: WireScope) -> Self {
        EventScope {
            conversation_id: s.conversation_id,
            contact_id: s.contact_id,
            inbox_id: s.inbox_id,
            team_id: s.team_id,
            branch_id: s.branch_id,
            assignee_id: s.assignee_id,
            agent_id: s.agent_id,
        }
    }
}

/// `{"type": kind, "id": id, "data": data}` with `data` already JSON.
pub fn frame_text(kind: &str, id: Option<i64>, data: &str) -> String {
    let kind = serde_json::Value::from(kind);
    match id {
        Some(id) => format!(r#"{{"type":{kind},"id":{id},"data":{data}}}"#),
        None => format!(r#"{{"type":{kind},"data":{data}}}"#),
    }
}

impl LiveEvent {
    pub fn new(
        id: Option<i64>,
        kind: &str,
        scope: EventScope,
        origin: Option<Box<str>>,
        frame: Utf8Bytes,
    ) -> Self {
        LiveEvent {
            id,
            kind: kind.into(),
            scope,
            origin,
            frame,
            visitor: OnceLock::new(),
        }
    }

    /// The visitor's view of the event, made once (by `make`) and shared by every visitor
    /// socket of the node.
    pub fn visitor_frame(&self, make: impl FnOnce(&LiveEvent) -> Utf8Bytes) -> Utf8Bytes {
        self.visitor.get_or_init(|| make(self)).clone()
    }

    pub fn from_logged(e: LoggedEvent) -> Self {
        LiveEvent::new(
            Some(e.id),
            &e.kind,
            e.scope,
            None,
            frame_text(&e.kind, Some(e.id), &e.data).into(),
        )
    }

    /// A frame for this node's sockets only, not from the broker (`resync.required`).
    pub fn local(kind: &str, data: serde_json::Value) -> Self {
        LiveEvent::new(
            None,
            kind,
            EventScope::default(),
            None,
            frame_text(kind, None, &data.to_string()).into(),
        )
    }

    /// Parses a broker payload; `None` for something that is not one.
    fn parse(payload: &str) -> Option<Self> {
        let (head, frame) = payload.split_once('\n')?;
        let envelope: Envelope = serde_json::from_str(head).ok()?;
        Some(LiveEvent::new(
            envelope.id,
            &envelope.kind,
            envelope.scope.into(),
            envelope.origin.map(Into::into),
            frame.to_owned().into(),
        ))
    }
}

fn wire(
    id: Option<i64>,
    kind: &str,
    scope: EventScope,
    origin: Option<&str>,
    frame: &str,
) -> Arc<str> {
    let envelope = Envelope {
        id,
        kind: kind.to_owned(),
        scope: scope.into(),
        origin: origin.map(str::to_owned),
    };
    let head = serde_json::to_string(&envelope).unwrap_or_default();
    format!("{head}\n{frame}").into()
}

/// The hub's way to announce changes. Cheap to clone.
#[derive(Clone)]
pub struct Events {
    broker: Broker,
    jobs: mpsc::Sender<NewEvent>,
}

impl Events {
    /// Starts the node's log writer.
    pub fn start(store: Store, broker: Broker) -> Self {
        let (jobs, inbox) = mpsc::channel(APPEND_QUEUE);
        tokio::spawn(writer(store, broker.clone(), inbox));
        Events { broker, jobs }
    }

    pub fn broker(&self) -> &Broker {
        &self.broker
    }

    /// Logs `{"type": kind, "data": data}` for the account and publishes it, after the change it
    /// describes has committed. The event is queued for the node's log writer, which logs and
    /// publishes events in the order they were queued (batching a publisher's run of events
    /// into one transaction). Who may see it is read from `data` ([`new_event`]). A failure is
    /// logged, not returned: the change itself has committed.
    pub async fn publish(&self, account_id: &str, kind: &str, data: serde_json::Value) {
        let event = new_event(account_id, kind, &data);
        // Queued, not awaited: the writer batches what one publisher sends in a row (the
        // dispatcher's placements) into one transaction, in order. A full queue waits.
        if self.jobs.send(event).await.is_err() {
            warn!(
                kind,
                "The event log writer is gone; the event is not logged."
            );
        }
        if crate::dispatch::wakes(kind) {
            crate::dispatch::wake(&self.broker, account_id).await;
        }
    }

    /// Publishes events a caller appended in its own transaction (`append_events_in`), after
    /// that transaction committed, in id order; wakes the dispatchers where `publish` would.
    pub async fn published(&self, logged: Vec<(String, LoggedEvent)>) {
        metrics::counter!("switchboard_events_logged_total").increment(logged.len() as u64);
        let mut woken: Vec<String> = Vec::new();
        for (account, event) in logged {
            let wakes = crate::dispatch::wakes(&event.kind);
            announce(&self.broker, &account, event).await;
            if wakes && !woken.contains(&account) {
                woken.push(account);
            }
        }
        for account in woken {
            crate::dispatch::wake(&self.broker, &account).await;
        }
    }

    /// Publishes a frame that is not part of the account's history (no id, not logged, not
    /// resumed): `typing`, `queue.stats`. `origin` is the console that caused it.
    pub async fn ephemeral(
        &self,
        account_id: &str,
        kind: &str,
        data: serde_json::Value,
        scope: EventScope,
        origin: Option<&str>,
    ) {
        let frame = frame_text(kind, None, &data.to_string());
        let payload = wire(None, kind, scope, origin, &frame);
        if let Err(e) = self
            .broker
            .publish(&account_topic(account_id), payload)
            .await
        {
            warn!(error = %e, kind, "Could not publish an ephemeral event.");
        }
    }
}

/// The node's log writer: takes every event waiting (up to a batch), appends them in one
/// transaction, then publishes each in id order.
async fn writer(store: Store, broker: Broker, mut inbox: mpsc::Receiver<NewEvent>) {
    let mut jobs = Vec::with_capacity(APPEND_BATCH);
    // (`jobs` is taken each round; recv_many refills it.)
    while inbox.recv_many(&mut jobs, APPEND_BATCH).await > 0 {
        let batch: Vec<NewEvent> = std::mem::take(&mut jobs);
        let mut logged = None;
        for attempt in 0..5u32 {
            match store.append_events(&batch).await {
                Ok(events) => {
                    logged = Some(events);
                    break;
                }
                Err(e) => {
                    warn!(error = %e, attempt, events = batch.len(), "Could not append to the event log.");
                    tokio::time::sleep(Duration::from_millis(50 << attempt)).await;
                }
            }
        }
        let logged = logged.unwrap_or_default();
        metrics::counter!("switchboard_events_logged_total").increment(logged.len() as u64);
        for (event, account) in logged
            .into_iter()
            .zip(batch.iter().map(|e| e.account_id.as_str()))
        {
            announce(&broker, account, event).await;
        }
    }
}

/// The log row for `{"type": kind, "data": data}`. Who may see it is read from `data`: its
/// conversation (`conversation_id`, or `id` for `conversation.*`; `message_id` for a message's
/// status) and its agent (`previous_assignee_id`, `agent_id` or `user_id`).
pub fn new_event(account_id: &str, kind: &str, data: &serde_json::Value) -> NewEvent {
    let text = |key: &str| data.get(key).and_then(|v| v.as_str()).map(str::to_owned);
    let conversation_id = text("conversation_id").or_else(|| {
        kind.starts_with("conversation.")
            .then(|| text("id"))
            .flatten()
    });
    NewEvent {
        account_id: account_id.to_owned(),
        kind: kind.to_owned(),
        message_id: text("message_id"),
        agent_id: text("previous_assignee_id")
            .or_else(|| text("agent_id"))
            .or_else(|| text("user_id")),
        conversation_id,
        data: data.to_string(),
    }
}

/// Publishes one logged event on its account's topic. A failure leaves a hole the pumps fill
/// from the log.
async fn announce(broker: &Broker, account: &str, event: LoggedEvent) {
    let frame = frame_text(&event.kind, Some(event.id), &event.data);
    let payload = wire(Some(event.id), &event.kind, event.scope, None, &frame);
    if let Err(e) = broker.publish(&account_topic(account), payload).await {
        warn!(error = %e, kind = event.kind, "Could not publish an event; consoles fill the hole from the log.");
    }
}
