//! In-process broker: one `broadcast` channel per topic. Single node — a publish reaches only
//! this process's subscribers — so it suits the embedded setup and nothing else.

use std::sync::Arc;

use dashmap::DashMap;
use tokio::sync::broadcast;
use tokio_util::sync::CancellationToken;

use super::{BrokerError, Received, Subscription, TOPIC_CAPACITY, TopicGuard};

type Topics = DashMap<String, broadcast::Sender<Received>>;

#[derive(Clone)]
pub struct MemoryBroker {
    topics: Arc<Topics>,
    shutdown: CancellationToken,
}

impl MemoryBroker {
    pub fn new(shutdown: CancellationToken) -> Self {
        Self {
            topics: Arc::default(),
            shutdown,
        }
    }

    pub(super) fn publish(&self, topic: &str, payload: Arc<str>) -> Result<(), BrokerError> {
        if self.shutdown.is_cancelled() {
            return Err(BrokerError::Closed);
        }
        if let Some(tx) = self.topics.get(topic) {
            // An error only means nobody is listening, which at-most-once allows.
            let _ = tx.send(Received::Message(payload));
        }
        Ok(())
    }

    pub(super) fn subscribe(&self, topic: &str) -> Result<Subscription, BrokerError> {
        if self.shutdown.is_cancelled() {
            return Err(BrokerError::Closed);
        }
        // Created under the shard lock, so a concurrent `Guard::drop` cannot remove the
        // sender between lookup and subscribe.
        let rx = self
            .topics
            .entry(topic.to_owned())
            .or_insert_with(|| broadcast::channel(TOPIC_CAPACITY).0)
            .subscribe();
        let guard = Guard {
            topics: self.topics.clone(),
            topic: topic.to_owned(),
        };
        Ok(Subscription::new(
            rx,
            self.shutdown.clone(),
            TopicGuard::Memory(guard),
        ))
    }
}

/// Removes the topic once its last subscriber is gone.
pub(super) struct Guard {
    topics: Arc<Topics>,
    topic: String,
}

impl Drop for Guard {
    fn drop(&mut self) {
        self.topics
            .remove_if(&self.topic, |_, tx| tx.receiver_count() == 0);
    }
}

#[cfg(test)]
impl MemoryBroker {
    pub(super) fn topic_count(&self) -> usize {
        self.topics.len()
    }
}
