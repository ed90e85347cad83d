//! The request path after the signature check: fast dedup → durable record → queue → 2xx.
//!
//! Order matters for the guarantees. A provider event is marked in the fast dedup path only
//! *after* its durable write, so a crash can never leave an event "seen" but unstored (which
//! would turn the provider's retry into a loss). The queue push comes after the durable write
//! too; if it fails, or the process dies between the two, the event is still `received` in the
//! store and the recovery sweep queues it again. The answer is sent only after the write.

use std::time::Duration;

use sha2::{Digest, Sha256};
use switchboard_workers::{NormalizeInbound, Queue};
use tracing::warn;

use crate::dedup::Dedup;
use crate::error::ApiError;
use crate::store::Store;
use crate::store::inbound::{NewEvent, Recorded};

#[derive(Clone)]
pub struct Intake {
    pub store: Store,
    pub dedup: Dedup,
    pub queue: Queue,
    pub dedup_ttl: Duration,
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
        let keys: Vec<String> = dedup_keys
            .iter()
            .map(|k| format!("{}:{k}", event.source))
            .collect();
        match self.dedup.all_seen(&keys).await {
            Ok(true) => {
                metrics::counter!("switchboard_webhooks_total", "channel" => event.channel.to_owned(), "outcome" => "duplicate").increment(1);
                return Ok(Accepted::Duplicate);
            }
            Ok(false) => {}
            Err(e) => {
                warn!(error = %e, "Fast dedup unavailable; relying on the store's unique key.")
            }
        }
        let channel = event.channel.to_owned();
        let outcome = match self.store.record_event(&event).await? {
            Recorded::New(id) => {
                if let Err(e) = self.queue.enqueue(NormalizeInbound::new(&id)).await {
                    warn!(event = %id, error = %e, "Queue push failed; the recovery sweep will queue the event.");
                }
                Accepted::New
            }
            Recorded::AlreadyRecorded => Accepted::Duplicate,
        };
        if let Err(e) = self.dedup.mark(&keys, self.dedup_ttl).await {
            warn!(error = %e, "Could not mark events in the fast dedup path.");
        }
        metrics::counter!("switchboard_webhooks_total", "channel" => channel, "outcome" => outcome.as_str()).increment(1);
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
