//! In-process TTL map. Single node: marks are neither shared with other nodes nor survive a
//! restart, which the seam tolerates (a false "not seen" only costs a store lookup).

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use dashmap::DashMap;

/// Below this size sweeping is not worth a full pass.
pub(super) const SWEEP_MIN: usize = 1024;

#[derive(Clone, Default)]
pub struct MemoryDedup {
    inner: Arc<Inner>,
}

#[derive(Default)]
struct Inner {
    expires_at: DashMap<String, Instant>,
    inserts_since_sweep: AtomicUsize,
    len_after_sweep: AtomicUsize,
}

impl MemoryDedup {
    pub fn new() -> Self {
        Self::default()
    }

    pub(super) fn all_seen(&self, keys: &[String]) -> bool {
        let now = Instant::now();
        keys.iter().all(|k| {
            self.inner
                .expires_at
                .get(k)
                .is_some_and(|expiry| *expiry > now)
        })
    }

    pub(super) fn mark(&self, keys: &[String], ttl: Duration) {
        let now = Instant::now();
        let expiry = now + ttl.max(Duration::from_millis(1));
        for key in keys {
            self.inner.expires_at.insert(key.clone(), expiry);
        }
        // Sweep once the inserts since the last sweep outnumber the entries it left: each O(len)
        // pass is paid for by as many inserts (amortised O(1)), and the map stays within about
        // twice the keys marked during one TTL.
        let inserted = self
            .inner
            .inserts_since_sweep
            .fetch_add(keys.len(), Ordering::Relaxed)
            + keys.len();
        let survivors = self.inner.len_after_sweep.load(Ordering::Relaxed);
        if inserted >= survivors.max(SWEEP_MIN) {
            self.inner.inserts_since_sweep.store(0, Ordering::Relaxed);
            self.inner.expires_at.retain(|_, expiry| *expiry > now);
            self.inner
                .len_after_sweep
                .store(self.inner.expires_at.len(), Ordering::Relaxed);
        }
    }

    #[cfg(test)]
    pub(super) fn len(&self) -> usize {
        self.inner.expires_at.len()
    }
}
