//! The request path after the signature check: fast dedup → durable record → this node's
//! normalizer (or, on an API-only node or when it has no room, the queue) → 2xx.
//!
//! The durable record is a group commit: each request hands its event to the [`Journal`] and
//! waits; journal writers take every event waiting at that moment, write them in one
//! transaction (one fsync), push their jobs in one bulk write, and then answer each request.
//! Under load many acknowledgements share a commit; alone, a request waits for nobody.
//!
//! Order matters for the guarantees. A provider event is marked in the fast dedup path only
//! *after* its durable write, so a crash can never leave an event "seen" but unstored (which
//! would turn the provider's retry into a loss). The queue push comes after the durable write
//! too; if it fails, or the process dies between the two, the event is still `received` in the
//! store and the recovery sweep queues it again. The answer is sent only after the write.

use std::sync::Arc;
use std::time::Duration;

use sha2::{Digest, Sha256};
use switchboard_workers::{NormalizeInbound, Queue, RawEvent};
use tokio::sync::{Mutex, mpsc, oneshot};
use tracing::warn;

use crate::dedup::Dedup;
use crate::error::ApiError;
use crate::ingest::Normalizer;
use crate::store::inbound::{EventRow, NewEvent};
use crate::store::{Dialect, Store};

#[derive(Clone)]
pub struct Intake {
    pub journal: Journal,
    pub dedup: Dedup,
    pub dedup_ttl: Duration,
    /// Counts accepted and refused webhooks for the `webhook_error_ratio` alert signal.
    pub tally: Arc<crate::alerts::watch::Tally>,
}

/// Most events written in one transaction.
const MAX_BATCH: usize = 256;

type Reply = oneshot::Sender<Result<bool, String>>;

/// Group commit of inbound events; see the module docs.
#[derive(Clone)]
pub struct Journal {
    requests: mpsc::Sender<(EventRow, Reply)>,
}

impl Journal {
    /// Starts the writers. SQLite has one writer at a time, so one task; PostgreSQL commits
    /// in parallel, so a few, each committing whatever waits when it is free.
    /// `normalizer`: this node's, when it runs workers; new events are handed to it directly
    /// (no queue round trip) while it has room.
    pub fn start(store: Store, queue: Queue, normalizer: Option<Normalizer>) -> Self {
        let (requests, receiver) = mpsc::channel(MAX_BATCH * 8);
        let receiver = Arc::new(Mutex::new(receiver));
        let writers = match store.dialect() {
            Dialect::Sqlite => 1,
            Dialect::Postgres => 4,
        };
        for _ in 0..writers {
            tokio::spawn(write_batches(
                store.clone(),
                queue.clone(),
                normalizer.clone(),
                receiver.clone(),
            ));
        }
        Journal { requests }
    }

    /// Makes `event` durable; `true` when it is new, `false` when its key was already recorded.
    /// Returns only after the commit (and the queue push, when new).
    pub async fn record(&self, event: EventRow) -> Result<bool, ApiError> {
        let (reply, answer) = oneshot::channel();
        self.requests
            .send((event, reply))
            .await
            .map_err(|_| ApiError::Unavailable("the journal is shut down".to_owned()))?;
        answer
            .await
            .map_err(|_| ApiError::Unavailable("the journal writer stopped".to_owned()))?
            .map_err(ApiError::Unavailable)
    }
}

/// One writer: take everything waiting (up to [`MAX_BATCH`]), commit it, push the jobs, answer.
/// Ends when every [`Journal`] handle is gone (the API has stopped taking requests).
async fn write_batches(
    store: Store,
    queue: Queue,
    normalizer: Option<Normalizer>,
    receiver: Arc<Mutex<mpsc::Receiver<(EventRow, Reply)>>>,
) {
    let mut batch = Vec::with_capacity(MAX_BATCH);
    loop {
        {
            let mut receiver = receiver.lock().await;
            if receiver.recv_many(&mut batch, MAX_BATCH).await == 0 {
                return;
            }
        }
        let (rows, replies): (Vec<EventRow>, Vec<Reply>) = batch.drain(..).unzip();
        metrics::histogram!("switchboard_intake_batch_size").record(rows.len() as f64);
        match store.record_events(&rows).await {
            Ok((new, received_at_ms)) => {
                // New events go to this node's normalizer while it has room; the rest (all of
                // them on an API-only node) become jobs.
                let jobs = rows
                    .iter()
                    .zip(&new)
                    .filter(|(_, new)| **new)
                    .filter(|(row, _)| match &normalizer {
                        Some(normalizer) => !normalizer.hand_over(raw_event(row, received_at_ms)),
                        None => true,
                    })
                    .map(|(row, _)| NormalizeInbound::new(&row.id))
                    .collect();
                if let Err(e) = queue.enqueue_many(jobs).await {
                    warn!(error = %e, "Queue push failed; the recovery sweep will queue the events.");
                }
                for (reply, new) in replies.into_iter().zip(new) {
                    let _ = reply.send(Ok(new));
                }
            }
            Err(e) => {
                warn!(error = %e, events = rows.len(), "Durable write failed; answering 503.");
                for reply in replies {
                    let _ = reply.send(Err(e.to_string()));
                }
            }
        }
    }
}

/// What the provider is told, in substance.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Accepted {
    New,
    Duplicate,
}

impl Accepted {
    pub fn as_str(self) -> &'static str {
        match self {
            Accepted::New => "accepted",
            Accepted::Duplicate => "duplicate",
        }
    }
}

impl Intake {
    /// Makes `event` durable exactly once. `dedup_keys` are the provider event ids inside it
    /// (empty when the body could not be read; it is then keyed by its hash and quarantined by
    /// the worker).
    pub async fn accept(
        &self,
        event: NewEvent<'_>,
        dedup_keys: &[String],
    ) -> Result<Accepted, ApiError> {
        let started = std::time::Instant::now();
        let keys: Vec<String> = dedup_keys
            .iter()
            .map(|k| format!("{}:{k}", event.source))
            .collect();
        match self.dedup.all_seen(&keys).await {
            Ok(true) => {
                metrics::counter!("switchboard_webhooks_total", "channel" => event.channel, "outcome" => "duplicate").increment(1);
                return Ok(Accepted::Duplicate);
            }
            Ok(false) => {}
            Err(e) => {
                warn!(error = %e, "Fast dedup unavailable; relying on the store's unique key.")
            }
        }
        let channel = event.channel;
        self.tally.count(
            event.account_id,
            crate::alerts::watch::WEBHOOKS_ACCEPTED,
            None,
        );
        let outcome = if self.journal.record(event.to_row()).await? {
            Accepted::New
        } else {
            Accepted::Duplicate
        };
        if let Err(e) = self.dedup.mark(&keys, self.dedup_ttl).await {
            warn!(error = %e, "Could not mark events in the fast dedup path.");
        }
        metrics::counter!("switchboard_webhooks_total", "channel" => channel, "outcome" => outcome.as_str()).increment(1);
        metrics::histogram!("switchboard_intake_seconds", "channel" => channel)
            .record(started.elapsed().as_secs_f64());
        Ok(outcome)
    }
}

/// The store's unique key for a request: stable across re-serialization when the provider ids
/// are known, the body's hash otherwise.
pub fn event_key(dedup_keys: &[String], body: &[u8]) -> String {
    if dedup_keys.len() == 1 {
        return dedup_keys[0].clone();
    }
    let mut hasher = Sha256::new();
    if dedup_keys.is_empty() {
        hasher.update(b"body\n");
        hasher.update(body);
    } else {
        let mut sorted: Vec<&String> = dedup_keys.iter().collect();
        sorted.sort();
        for key in sorted {
            hasher.update(key.as_bytes());
            hasher.update(b"\n");
        }
    }
    format!("sha256:{}", hex::encode(hasher.finalize()))
}

/// The event as normalization reads it back from the store.
fn raw_event(row: &EventRow, received_at_ms: i64) -> RawEvent {
    RawEvent {
        id: row.id.clone(),
        account_id: row.account_id.clone(),
        source: row.source.clone(),
        inbox_id: row.inbox_id.clone(),
        body: row.body.to_vec(),
        status: "received".to_owned(),
        received_at_ms,
    }
}

#[cfg(test)]
mod tests {
    use super::event_key;

    #[test]
    fn event_key_ignores_batch_order_and_falls_back_to_body() {
        let a = vec!["msg:1".to_owned(), "msg:2".to_owned()];
        let b = vec!["msg:2".to_owned(), "msg:1".to_owned()];
        assert_eq!(event_key(&a, b"x"), event_key(&b, b"y"));
        assert_eq!(event_key(&a[..1], b"x"), "msg:1");
        assert_ne!(event_key(&[], b"x"), event_key(&[], b"y"));
    }
}
