//! Redis marks shared by every node: `{prefix}dedup:{key}` with a millisecond TTL. Lost on a
//! Redis flush or failover, which the seam tolerates.

use std::time::Duration;

use ::redis::aio::ConnectionManager;

use super::DedupError;

#[derive(Clone)]
pub struct RedisDedup {
    conn: ConnectionManager,
    prefix: String,
}

impl RedisDedup {
    pub fn new(conn: ConnectionManager, prefix: &str) -> Self {
        Self {
            conn,
            prefix: format!("{prefix}dedup:"),
        }
    }

    fn key(&self, key: &str) -> String {
        format!("{}{key}", self.prefix)
    }

    pub(super) async fn all_seen(&self, keys: &[String]) -> Result<bool, DedupError> {
        let mut exists = ::redis::cmd("EXISTS");
        for key in keys {
            exists.arg(self.key(key));
        }
        // EXISTS counts a repeated key once per mention, so the count matches `keys.len()`
        // exactly when every mention exists.
        let found: usize = exists.query_async(&mut self.conn.clone()).await?;
        Ok(found == keys.len())
    }

    pub(super) async fn mark(&self, keys: &[String], ttl: Duration) -> Result<(), DedupError> {
        // PX rather than EX: sub-second TTLs stay meaningful (and testable).
        let millis = u64::try_from(ttl.as_millis()).unwrap_or(u64::MAX).max(1);
        let mut pipe = ::redis::pipe();
        for key in keys {
            pipe.cmd("SET")
                .arg(self.key(key))
                .arg(1)
                .arg("PX")
                .arg(millis)
                .ignore();
        }
        pipe.query_async::<()>(&mut self.conn.clone()).await?;
        Ok(())
    }

    pub(super) async fn ping(&self) -> Result<(), DedupError> {
        ::redis::cmd("PING")
            .query_async::<()>(&mut self.conn.clone())
            .await?;
        Ok(())
    }
}
