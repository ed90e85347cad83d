//! The dedup fast path: sheds provider retries before the durable write.
//!
//! A key is marked only *after* the event it names is durable, so a "seen" answer always means
//! "already stored". The seam is allowed to forget (TTL expiry, a restart of the memory map, a
//! Redis flush): a false "not seen" costs one more trip to the store, whose unique keys are the
//! final word. It must never invent a "seen", which would drop an event.
//!
//! - [`Dedup::memory`]: an in-process TTL map. Single node only — another node, or this node
//!   after a restart, has not seen anything.
//! - [`Dedup::redis`]: `SET key 1 PX ttl` under a caller-given prefix, shared by every node.

pub mod memory;
pub mod redis;

use std::time::Duration;

#[derive(Debug, thiserror::Error)]
pub enum DedupError {
    #[error("redis: {0}")]
    Redis(::redis::RedisError),
}

/// Counted where it is made: `switchboard_redis_errors_total{use="dedup"}`.
impl From<::redis::RedisError> for DedupError {
    fn from(e: ::redis::RedisError) -> Self {
        metrics::counter!("switchboard_redis_errors_total", "use" => "dedup").increment(1);
        DedupError::Redis(e)
    }
}

#[derive(Clone)]
pub enum Dedup {
    Memory(memory::MemoryDedup),
    Redis(self::redis::RedisDedup),
}

impl Dedup {
    pub fn memory() -> Self {
        Self::Memory(memory::MemoryDedup::new())
    }

    /// Keys live at `{prefix}dedup:{key}`.
    pub fn redis(conn: ::redis::aio::ConnectionManager, prefix: &str) -> Self {
        Self::Redis(self::redis::RedisDedup::new(conn, prefix))
    }

    /// True only if every key is currently marked (an empty slice → false).
    pub async fn all_seen(&self, keys: &[String]) -> Result<bool, DedupError> {
        if keys.is_empty() {
            return Ok(false);
        }
        match self {
            Self::Memory(m) => Ok(m.all_seen(keys)),
            Self::Redis(r) => r.all_seen(keys).await,
        }
    }

    /// Marks `keys` as seen for `ttl` (at least one millisecond). Call only once the event is
    /// durable.
    pub async fn mark(&self, keys: &[String], ttl: Duration) -> Result<(), DedupError> {
        if keys.is_empty() {
            return Ok(());
        }
        match self {
            Self::Memory(m) => {
                m.mark(keys, ttl);
                Ok(())
            }
            Self::Redis(r) => r.mark(keys, ttl).await,
        }
    }

    pub async fn ping(&self) -> Result<(), DedupError> {
        match self {
            Self::Memory(_) => Ok(()),
            Self::Redis(r) => r.ping().await,
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::redis_testing::{redis_url, unique_prefix};
    use std::time::Instant;

    #[derive(Clone, Copy)]
    enum Backend {
        Memory,
        Redis,
    }

    async fn redis_conn() -> ::redis::aio::ConnectionManager {
        let client = ::redis::Client::open(redis_url()).unwrap();
        ::redis::aio::ConnectionManager::new(client).await.unwrap()
    }

    async fn dedup(backend: Backend) -> Dedup {
        match backend {
            Backend::Memory => Dedup::memory(),
            Backend::Redis => Dedup::redis(redis_conn().await, &unique_prefix()),
        }
    }

    fn keys(names: &[&str]) -> Vec<String> {
        names.iter().map(|s| s.to_string()).collect()
    }

    const LONG: Duration = Duration::from_secs(60);

    async fn unmarked_keys_are_not_seen(backend: Backend) {
        let d = dedup(backend).await;
        assert!(!d.all_seen(&keys(&["a"])).await.unwrap());
        assert!(!d.all_seen(&keys(&["a", "b"])).await.unwrap());
    }

    async fn empty_slice_is_not_seen(backend: Backend) {
        let d = dedup(backend).await;
        d.mark(&[], LONG).await.unwrap();
        assert!(!d.all_seen(&[]).await.unwrap());
    }

    async fn marked_keys_are_seen(backend: Backend) {
        let d = dedup(backend).await;
        d.mark(&keys(&["a", "b"]), LONG).await.unwrap();
        assert!(d.all_seen(&keys(&["a"])).await.unwrap());
        assert!(d.all_seen(&keys(&["a", "b"])).await.unwrap());
        assert!(d.all_seen(&keys(&["b", "a", "a"])).await.unwrap());
    }

    async fn one_unmarked_key_makes_all_seen_false(backend: Backend) {
        let d = dedup(backend).await;
        d.mark(&keys(&["a", "b"]), LONG).await.unwrap();
        assert!(!d.all_seen(&keys(&["a", "b", "c"])).await.unwrap());
        assert!(!d.all_seen(&keys(&["c", "a"])).await.unwrap());
    }

    async fn marks_expire_after_ttl(backend: Backend) {
        let d = dedup(backend).await;
        d.mark(&keys(&["short"]), Duration::from_millis(200))
            .await
            .unwrap();
        d.mark(&keys(&["long"]), LONG).await.unwrap();
        assert!(d.all_seen(&keys(&["short"])).await.unwrap());
        let deadline = Instant::now() + Duration::from_secs(5);
        while d.all_seen(&keys(&["short"])).await.unwrap() {
            assert!(Instant::now() < deadline, "mark did not expire");
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
        assert!(d.all_seen(&keys(&["long"])).await.unwrap());
    }

    async fn ping_answers(backend: Backend) {
        dedup(backend).await.ping().await.unwrap();
    }

    #[tokio::test]
    async fn redis_prefixes_do_not_collide() {
        let conn = redis_conn().await;
        let (a, b) = (unique_prefix(), unique_prefix());
        let one = Dedup::redis(conn.clone(), &a);
        let other = Dedup::redis(conn.clone(), &b);
        one.mark(&keys(&["k"]), LONG).await.unwrap();
        assert!(one.all_seen(&keys(&["k"])).await.unwrap());
        assert!(!other.all_seen(&keys(&["k"])).await.unwrap());
        // Two nodes on one prefix share their marks.
        assert!(
            Dedup::redis(conn, &a)
                .all_seen(&keys(&["k"]))
                .await
                .unwrap()
        );
    }

    #[test]
    fn memory_sweeps_expired_entries() {
        let m = memory::MemoryDedup::new();
        for round in 0..20 {
            let batch: Vec<String> = (0..1000).map(|i| format!("{round}:{i}")).collect();
            m.mark(&batch, Duration::from_millis(1));
            // Real time must pass for entries to expire; nothing else is awaited here.
            std::thread::sleep(Duration::from_millis(2));
        }
        assert!(m.len() < 4 * memory::SWEEP_MIN, "len = {}", m.len());
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
        unmarked_keys_are_not_seen,
        empty_slice_is_not_seen,
        marked_keys_are_seen,
        one_unmarked_key_makes_all_seen_false,
        marks_expire_after_ttl,
        ping_answers,
    );
}
