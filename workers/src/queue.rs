//! The job queue: apalis on SQLite (embedded) or on Redis (distributed).
//!
//! Guarantees, on both backends: a pushed job is durable when `enqueue_many` returns; a job whose
//! worker dies is handed out again (apalis heartbeats and orphan recovery), so handlers must be
//! idempotent — ours are. The queue is not the record of truth for inbound events: the
//! `inbound_events` table is, and the service's recovery sweep re-enqueues any event left in
//! `received` (for example after a crash between the durable write and the push).
//!
//! The embedded queue lives in its own SQLite file so that queue polling never contends with the
//! store's writers for the database lock.

use std::sync::Arc;
use std::time::Duration;

use apalis::prelude::*;
use apalis_core::backend::Vacuum;
use apalis_redis::RedisStorage;
use apalis_sqlite::{SqlitePool, SqliteStorage};
use redis::aio::ConnectionManager;
use tokio_util::sync::CancellationToken;
use tracing::{error, info, warn};

use crate::jobs::{DeliverOutbound, NormalizeInbound};
use crate::normalize;
use crate::ports::{InboundPort, OutboundPort, PortError};

#[derive(Debug, thiserror::Error)]
pub enum QueueError {
    #[error("sqlite queue: {0}")]
    Sqlite(String),
    #[error("redis queue: {0}")]
    Redis(String),
}

fn nanos() -> u128 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or_default()
}

#[derive(Clone)]
pub enum Queue {
    Sqlite {
        pool: SqlitePool,
        normalize: SqliteStorage<NormalizeInbound>,
        deliver: SqliteStorage<DeliverOutbound>,
    },
    Redis {
        conn: ConnectionManager,
        normalize: RedisStorage<NormalizeInbound>,
        deliver: RedisStorage<DeliverOutbound>,
    },
}

/// How often an idle worker looks for new jobs: the bound on queue latency when idle.
const POLL: Duration = Duration::from_millis(20);

/// The same on Redis, a network round trip (one fetch script) per look and queue. Without an
/// interval an idle Redis worker only looked again at its heartbeat, so a job waited up to
/// `HEARTBEAT` (5 s) before it ran.
const REDIS_POLL: Duration = Duration::from_millis(50);

/// How long a fetched job may run without a heartbeat before another worker takes it over.
const HEARTBEAT: Duration = Duration::from_secs(5);

/// A worker whose heartbeat is this old is wedged, and is replaced.
const STALLED_AFTER: Duration = Duration::from_secs(30);

impl Queue {
    /// Opens (creating if needed) the embedded queue at `path`.
    pub async fn sqlite(path: &str) -> Result<Self, QueueError> {
        // A fresh machine has no data directory yet, and the database may live elsewhere.
        if let Some(dir) = std::path::Path::new(path).parent()
            && !dir.as_os_str().is_empty()
        {
            std::fs::create_dir_all(dir)
                .map_err(|e| QueueError::Sqlite(format!("{}: {e}", dir.display())))?;
        }
        let options = apalis_sqlite::SqliteConnectOptions::new()
            .filename(path)
            .create_if_missing(true)
            .journal_mode(sqlx::sqlite::SqliteJournalMode::Wal)
            .busy_timeout(Duration::from_secs(10));
        let pool = apalis_sqlite::SqlitePoolOptions::new()
            .max_connections(4)
            .connect_with(options)
            .await
            .map_err(|e| QueueError::Sqlite(e.to_string()))?;
        SqliteStorage::<()>::setup(&pool)
            .await
            .map_err(|e| QueueError::Sqlite(e.to_string()))?;
        let config = |queue: &str| {
            apalis_sqlite::Config::default()
                .queue(queue)
                .heartbeat_interval(HEARTBEAT)
        };
        let normalize = SqliteStorage::new(&pool).with_config(config("normalize-inbound"));
        let deliver = SqliteStorage::new(&pool).with_config(config("deliver-outbound"));
        Ok(Queue::Sqlite {
            pool,
            normalize,
            deliver,
        })
    }

    /// Uses Redis; every queue key lives under `prefix` (which ends with `:`).
    pub fn redis(conn: ConnectionManager, prefix: &str) -> Self {
        let config = |queue: &str| {
            apalis_redis::Config::default()
                .queue(format!("{prefix}queue:{queue}"))
                .heartbeat_interval(HEARTBEAT)
        };
        let normalize = RedisStorage::new(conn.clone()).with_config(config("normalize-inbound"));
        let deliver = RedisStorage::new(conn.clone()).with_config(config("deliver-outbound"));
        Queue::Redis {
            conn,
            normalize,
            deliver,
        }
    }

    /// Pushes many jobs in one write (one transaction on SQLite, one round trip on Redis).
    pub async fn enqueue_many(&self, jobs: Vec<NormalizeInbound>) -> Result<(), QueueError> {
        if jobs.is_empty() {
            return Ok(());
        }
        match self {
            Queue::Sqlite { normalize, .. } => normalize
                .clone()
                .push_bulk(jobs)
                .await
                .map_err(|e| QueueError::Sqlite(e.to_string())),
            Queue::Redis { normalize, .. } => normalize
                .clone()
                .push_bulk(jobs)
                .await
                .map_err(|e| QueueError::Redis(e.to_string())),
        }
    }

    /// Pushes delivery jobs in one write.
    pub async fn enqueue_deliveries(&self, jobs: Vec<DeliverOutbound>) -> Result<(), QueueError> {
        if jobs.is_empty() {
            return Ok(());
        }
        match self {
            Queue::Sqlite { deliver, .. } => deliver
                .clone()
                .push_bulk(jobs)
                .await
                .map_err(|e| QueueError::Sqlite(e.to_string())),
            Queue::Redis { deliver, .. } => deliver
                .clone()
                .push_bulk(jobs)
                .await
                .map_err(|e| QueueError::Redis(e.to_string())),
        }
    }

    /// Readiness: the queue's backing store answers.
    pub async fn ping(&self) -> Result<(), QueueError> {
        match self {
            Queue::Sqlite { pool, .. } => sqlx_ping(pool).await,
            Queue::Redis { conn, .. } => {
                let mut conn = conn.clone();
                redis_ping(&mut conn).await
            }
        }
    }

    /// Runs `concurrency` normalize handlers and `delivery_concurrency` delivery handlers until
    /// `shutdown` is cancelled, then lets in-flight jobs finish.
    pub async fn run_workers(
        &self,
        port: Arc<dyn InboundPort>,
        outbound: Arc<dyn OutboundPort>,
        concurrency: usize,
        delivery_concurrency: usize,
        shutdown: CancellationToken,
    ) -> Result<(), QueueError> {
        tokio::spawn(self.clone().prune_finished(shutdown.clone()));
        if let Queue::Redis { .. } = self {
            tokio::spawn(self.clone().promote_due(shutdown.clone()));
        }
        // One monitor per queue: a worker whose backend failed (apalis ends a worker on its
        // first fetch error: a Redis blip) is started again on its own, while the other
        // queue's worker carries on. In one shared monitor it stayed dead for good.
        let normalize = self.supervise(
            "normalize-inbound",
            STALLED_AFTER,
            shutdown.clone(),
            |queue, name, stop| queue.run_normalize(name, port.clone(), concurrency, stop),
        );
        let deliver = self.supervise(
            "deliver-outbound",
            STALLED_AFTER,
            shutdown.clone(),
            |queue, name, stop| {
                queue.run_deliver(name, outbound.clone(), delivery_concurrency, stop)
            },
        );
        tokio::join!(normalize, deliver);
        info!("Workers stopped.");
        Ok(())
    }

    /// Runs one queue's worker until `shutdown`, starting it again (after a growing pause)
    /// whenever it ends early.
    async fn supervise<F, Fut>(
        &self,
        queue: &'static str,
        stall_after: Duration,
        shutdown: CancellationToken,
        run: F,
    ) where
        F: Fn(Queue, String, CancellationToken) -> Fut,
        Fut: std::future::Future<Output = Result<(), std::io::Error>>,
    {
        let mut backoff = Duration::from_millis(100);
        loop {
            let name = format!("{queue}-{}-{}", std::process::id(), nanos());
            let stop = shutdown.child_token();
            let running = run(self.clone(), name.clone(), stop.clone());
            tokio::pin!(running);
            let outcome = tokio::select! {
                outcome = &mut running => outcome,
                () = self.clone().stalled(queue, name, stall_after) => {
                    metrics::counter!("switchboard_worker_restarts_total", "queue" => queue, "reason" => "stalled").increment(1);
                    warn!(queue, "A worker stopped heart-beating; starting it again.");
                    stop.cancel();
                    running.await
                }
            };
            if shutdown.is_cancelled() {
                return;
            }
            match outcome {
                Ok(()) => warn!(queue, "A worker ended unexpectedly; starting it again."),
                Err(e) => warn!(queue, error = %e, "A worker failed; starting it again."),
            }
            metrics::counter!("switchboard_worker_restarts_total", "queue" => queue, "reason" => "ended").increment(1);
            tokio::select! {
                () = shutdown.cancelled() => return,
                () = tokio::time::sleep(backoff) => {}
            }
            backoff = (backoff * 2).min(Duration::from_secs(5));
        }
    }

    /// Resolves when the worker `name` of `queue` has stopped heart-beating. apalis 1.0 can
    /// wedge a worker for good without ending it (apalis-sqlite#58: the worker neither fetches
    /// nor beats, and nothing is logged); seen here as replies left `pending` minutes after a
    /// start. The worker's own heartbeat row (SQLite `Workers`, Redis `…:workers`) tells.
    async fn stalled(self, queue: &'static str, name: String, after: Duration) {
        let started = std::time::Instant::now();
        loop {
            tokio::time::sleep(HEARTBEAT.min(after)).await;
            let now = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_secs() as i64)
                .unwrap_or_default();
            let seen = match self.last_seen(queue, &name).await {
                Ok(seen) => seen,
                // The backend is down: the worker's own fetch fails and it is restarted then.
                Err(_) => continue,
            };
            let quiet = match seen {
                Some(at) => Duration::from_secs(u64::try_from(now - at).unwrap_or(0)),
                None => started.elapsed(),
            };
            if quiet > after {
                return;
            }
        }
    }

    /// When the worker `name` last beat, in Unix seconds (None: not registered).
    async fn last_seen(&self, queue: &str, name: &str) -> Result<Option<i64>, QueueError> {
        match self {
            Queue::Sqlite { pool, .. } => {
                sqlx::query_scalar::<_, i64>("SELECT last_seen FROM Workers WHERE id = ?1")
                    .bind(name)
                    .fetch_optional(pool)
                    .await
                    .map_err(|e| QueueError::Sqlite(e.to_string()))
            }
            Queue::Redis {
                conn,
                normalize,
                deliver,
            } => {
                let config = if queue == "normalize-inbound" {
                    normalize.get_config()
                } else {
                    deliver.get_config()
                };
                let score: Option<f64> = redis::cmd("ZSCORE")
                    .arg(config.workers_set())
                    .arg(name)
                    .query_async(&mut conn.clone())
                    .await
                    .map_err(|e| QueueError::Redis(e.to_string()))?;
                // Seconds; tolerate milliseconds.
                Ok(score.map(|s| {
                    if s > 1e11 {
                        (s / 1000.0) as i64
                    } else {
                        s as i64
                    }
                }))
            }
        }
    }

    async fn prune_finished(self, shutdown: CancellationToken) {
        let period = match self {
            Queue::Sqlite { .. } => Duration::from_secs(1),
            Queue::Redis { .. } => Duration::from_secs(10),
        };
        loop {
            tokio::select! {
                () = shutdown.cancelled() => return,
                () = tokio::time::sleep(period) => {}
            }
            let pruned = match &self {
                Queue::Sqlite { pool, .. } => sqlx::query(
                    "DELETE FROM Jobs WHERE status IN ('Done', 'Killed') \
                     OR (status = 'Failed' AND attempts >= max_attempts)",
                )
                .execute(pool)
                .await
                .map(drop)
                .map_err(|e| e.to_string()),
                Queue::Redis {
                    normalize, deliver, ..
                } => match normalize.clone().vacuum().await {
                    Ok(_) => deliver.clone().vacuum().await.map(drop),
                    Err(e) => Err(e),
                }
                .map_err(|e| e.to_string()),
            };
            if let Err(e) = pruned {
                warn!(error = %e, "Could not prune finished jobs.");
            }
        }
    }

    /// The normalize worker in a monitor of its own; returns when the worker ends.
    async fn run_normalize(
        self,
        name: String,
        port: Arc<dyn InboundPort>,
        concurrency: usize,
        shutdown: CancellationToken,
    ) -> Result<(), std::io::Error> {
        let monitor = Monitor::new().shutdown_timeout(Duration::from_secs(10));
        let signal = async move {
            shutdown.cancelled().await;
            Ok(())
        };
        match self {
            Queue::Sqlite { normalize, .. } => {
                monitor
                    .register(move |_| {
                        WorkerBuilder::new(name.clone())
                            .backend(normalize.clone().poll_with_interval(POLL))
                            .data(port.clone())
                            .concurrency(concurrency)
                            .build(run_normalize)
                    })
                    .run_with_signal(signal)
                    .await
            }
            Queue::Redis { normalize, .. } => {
                monitor
                    .register(move |_| {
                        WorkerBuilder::new(name.clone())
                            .backend(normalize.clone().poll_with_interval(REDIS_POLL))
                            .data(port.clone())
                            .concurrency(concurrency)
                            .build(run_normalize)
                    })
                    .run_with_signal(signal)
                    .await
            }
        }
        .map_err(|e| std::io::Error::other(e.to_string()))
    }

    /// The outbound delivery worker in a monitor of its own; returns when the worker ends.
    async fn run_deliver(
        self,
        name: String,
        outbound: Arc<dyn OutboundPort>,
        concurrency: usize,
        shutdown: CancellationToken,
    ) -> Result<(), std::io::Error> {
        let monitor = Monitor::new().shutdown_timeout(Duration::from_secs(10));
        let signal = async move {
            shutdown.cancelled().await;
            Ok(())
        };
        match self {
            Queue::Sqlite { deliver, .. } => {
                monitor
                    .register(move |_| {
                        WorkerBuilder::new(name.clone())
                            .backend(deliver.clone().poll_with_interval(POLL))
                            .data(outbound.clone())
                            .concurrency(concurrency)
                            .build(run_deliver)
                    })
                    .run_with_signal(signal)
                    .await
            }
            Queue::Redis { deliver, .. } => {
                monitor
                    .register(move |_| {
                        WorkerBuilder::new(name.clone())
                            .backend(deliver.clone().poll_with_interval(REDIS_POLL))
                            .data(outbound.clone())
                            .concurrency(concurrency)
                            .build(run_deliver)
                    })
                    .run_with_signal(signal)
                    .await
            }
        }
        .map_err(|e| std::io::Error::other(e.to_string()))
    }

    /// apalis-redis pushes every job into the queue's scheduled set, and a worker's fetch moves
    /// all that are due to the active list in one Lua call that unpacks them as arguments: past
    /// about 8,000 due jobs (a backlog built while workers were busy or down) that call fails,
    /// and with it every fetch, for good. Due jobs are moved here in bounded chunks instead,
    /// every poll, so the set never grows that far.
    async fn promote_due(self, shutdown: CancellationToken) {
        let Queue::Redis {
            conn,
            normalize,
            deliver,
        } = self
        else {
            return;
        };
        let script = redis::Script::new(PROMOTE_DUE);
        let queues = [normalize.get_config().clone(), deliver.get_config().clone()];
        loop {
            tokio::select! {
                () = shutdown.cancelled() => return,
                () = tokio::time::sleep(REDIS_POLL) => {}
            }
            for config in &queues {
                loop {
                    let now = std::time::SystemTime::now()
                        .duration_since(std::time::UNIX_EPOCH)
                        .map(|d| d.as_secs())
                        .unwrap_or_default();
                    let moved: Result<u64, _> = script
                        .key(config.scheduled_jobs_set())
                        .key(config.active_jobs_list())
                        .key(config.signal_list())
                        .arg(now)
                        .arg(PROMOTE_CHUNK)
                        .invoke_async(&mut conn.clone())
                        .await;
                    match moved {
                        Ok(n) if n == PROMOTE_CHUNK => continue,
                        Ok(_) => break,
                        Err(e) => {
                            warn!(error = %e, "Could not move due jobs to the active list.");
                            break;
                        }
                    }
                }
            }
        }
    }
}

/// Jobs moved per call of [`PROMOTE_DUE`], well under Lua's unpack limit.
const PROMOTE_CHUNK: u64 = 1000;

/// KEYS: scheduled set, active list, signal list; ARGV: now (the set's score unit), most to
/// move. What apalis-redis's fetch does with due jobs, a bounded chunk at a time.
const PROMOTE_DUE: &str = r#"
local due = redis.call("zrangebyscore", KEYS[1], 0, ARGV[1], "LIMIT", 0, ARGV[2])
if #due > 0 then
    redis.call("rpush", KEYS[2], unpack(due))
    redis.call("zrem", KEYS[1], unpack(due))
    redis.call("del", KEYS[3])
    redis.call("lpush", KEYS[3], 1)
end
return #due
"#;

async fn run_normalize(
    job: NormalizeInbound,
    port: Data<Arc<dyn InboundPort>>,
) -> Result<(), BoxDynError> {
    let started = std::time::Instant::now();
    let (outcome, result) = match normalize::handle(&job, &port).await {
        Ok(()) => ("ok", Ok(())),
        Err(PortError::Permanent(reason)) => {
            error!(event = %job.event_id, %reason, "Normalization failed for good; quarantining.");
            let quarantined = port
                .quarantine(&job.event_id, &reason)
                .await
                .map_err(|e| Box::new(e) as BoxDynError);
            ("quarantined", quarantined)
        }
        Err(e) => ("retry", Err(Box::new(e) as BoxDynError)),
    };
    observe("normalize_inbound", outcome, started);
    result
}

/// Counts a job's outcome and times it (`switchboard_jobs_total`, `switchboard_job_seconds`).
fn observe(job: &'static str, outcome: &'static str, started: std::time::Instant) {
    metrics::counter!("switchboard_jobs_total", "job" => job, "outcome" => outcome).increment(1);
    metrics::histogram!("switchboard_job_seconds", "job" => job)
        .record(started.elapsed().as_secs_f64());
}

async fn run_deliver(
    job: DeliverOutbound,
    port: Data<Arc<dyn OutboundPort>>,
) -> Result<(), BoxDynError> {
    // The delivery record carries its own retry schedule; a failure here is the hub's (the
    // store), and the hub's sweep queues the delivery again, so the job itself is not retried.
    let started = std::time::Instant::now();
    let outcome = match port.deliver(&job.message_id).await {
        Ok(()) => "ok",
        Err(e) => {
            warn!(message = %job.message_id, error = %e, "A delivery attempt could not run; the sweep will queue it again.");
            "retry"
        }
    };
    observe("deliver_outbound", outcome, started);
    Ok(())
}

async fn sqlx_ping(pool: &SqlitePool) -> Result<(), QueueError> {
    sqlx::query("SELECT 1")
        .execute(pool)
        .await
        .map(drop)
        .map_err(|e| QueueError::Sqlite(e.to_string()))
}

async fn redis_ping(conn: &mut ConnectionManager) -> Result<(), QueueError> {
    redis::cmd("PING")
        .query_async::<String>(conn)
        .await
        .map(drop)
        .map_err(|e| QueueError::Redis(e.to_string()))
}

/// The queue's behavioural suite, run against SQLite and Redis: every pushed job is handled,
/// bulk pushes and delivery jobs included, and the workers stop cleanly on shutdown.
#[cfg(test)]
mod tests {
    use std::collections::HashSet;
    use std::sync::Mutex;
    use std::time::Instant;

    use async_trait::async_trait;
    use switchboard_connectors::InboundBatch;

    use super::*;
    use crate::ports::RawEvent;

    /// Counts the event ids the handler asked for; every event is "gone", so jobs end at once.
    #[derive(Default)]
    struct Seen(Mutex<Vec<String>>);

    #[async_trait]
    impl InboundPort for Seen {
        async fn load(&self, event_id: &str) -> Result<Option<RawEvent>, PortError> {
            self.0.lock().unwrap().push(event_id.to_owned());
            Ok(None)
        }
        async fn apply(&self, _: &RawEvent, _: InboundBatch) -> Result<(), PortError> {
            Ok(())
        }
        async fn quarantine(&self, _: &str, _: &str) -> Result<(), PortError> {
            Ok(())
        }
    }

    #[async_trait]
    impl OutboundPort for Seen {
        async fn deliver(&self, message_id: &str) -> Result<(), PortError> {
            self.0.lock().unwrap().push(message_id.to_owned());
            Ok(())
        }
    }

    async fn every_job_is_handled_and_shutdown_is_clean(queue: Queue) {
        let seen = Arc::new(Seen::default());
        let shutdown = CancellationToken::new();
        let workers = tokio::spawn({
            let (queue, port, shutdown) = (queue.clone(), seen.clone(), shutdown.clone());
            async move { queue.run_workers(port.clone(), port, 4, 2, shutdown).await }
        });
        for i in 0..20 {
            let single = vec![NormalizeInbound::new(format!("evt_single_{i}"))];
            queue.enqueue_many(single).await.unwrap();
        }
        let bulk = (0..30)
            .map(|i| NormalizeInbound::new(format!("evt_bulk_{i}")))
            .collect();
        queue.enqueue_many(bulk).await.unwrap();
        queue.enqueue_many(Vec::new()).await.unwrap();
        let deliveries = (0..10)
            .map(|i| DeliverOutbound::new(format!("msg_{i}")))
            .collect();
        queue.enqueue_deliveries(deliveries).await.unwrap();
        queue.ping().await.unwrap();

        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let handled: HashSet<String> = seen.0.lock().unwrap().iter().cloned().collect();
            if handled.len() == 60 {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "only {} of 60 jobs handled",
                handled.len()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        shutdown.cancel();
        workers.await.unwrap().unwrap();
    }

    /// A backlog pushed while no worker ran (worker nodes down, or busy) is worked off once
    /// they start. On Redis, more than about 8,000 due jobs once broke apalis-redis's fetch for
    /// good (its Lua unpack limit), and the dead worker was never started again.
    async fn a_large_backlog_is_worked_off(queue: Queue) {
        const BACKLOG: usize = 9_000;
        for chunk in 0..(BACKLOG / 1000) {
            let jobs = (0..1000)
                .map(|i| NormalizeInbound::new(format!("evt_{chunk}_{i}")))
                .collect();
            queue.enqueue_many(jobs).await.unwrap();
        }
        let seen = Arc::new(Seen::default());
        let shutdown = CancellationToken::new();
        let workers = tokio::spawn({
            let (queue, port, shutdown) = (queue.clone(), seen.clone(), shutdown.clone());
            async move { queue.run_workers(port.clone(), port, 16, 2, shutdown).await }
        });
        let deadline = Instant::now() + Duration::from_secs(120);
        loop {
            let handled = seen.0.lock().unwrap().iter().collect::<HashSet<_>>().len();
            if handled == BACKLOG {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "only {handled} of {BACKLOG} jobs handled"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        shutdown.cancel();
        workers.await.unwrap().unwrap();
    }

    /// A worker that never beats (as a wedged apalis worker does) is stopped and started again.
    #[tokio::test]
    async fn a_wedged_worker_is_started_again() {
        let dir =
            std::env::temp_dir().join(format!("sb-wedged-{}-{}", std::process::id(), nanos()));
        let queue = Queue::sqlite(dir.join("queue.db").to_str().unwrap())
            .await
            .unwrap();
        let starts = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let shutdown = CancellationToken::new();
        let counted = starts.clone();
        let supervised = tokio::spawn({
            let (queue, shutdown) = (queue.clone(), shutdown.clone());
            async move {
                queue
                    .supervise(
                        "deliver-outbound",
                        Duration::from_millis(300),
                        shutdown,
                        move |_, _, stop| {
                            let counted = counted.clone();
                            async move {
                                counted.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                                stop.cancelled().await;
                                Ok(())
                            }
                        },
                    )
                    .await
            }
        });
        let deadline = std::time::Instant::now() + Duration::from_secs(20);
        while starts.load(std::sync::atomic::Ordering::SeqCst) < 2 {
            assert!(std::time::Instant::now() < deadline, "never restarted");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        shutdown.cancel();
        supervised.await.unwrap();
        let _ = std::fs::remove_dir_all(dir);
    }

    async fn redis_queue() -> (Queue, ConnectionManager, String) {
        let url = std::env::var("REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".into());
        let conn = ConnectionManager::new(redis::Client::open(url).unwrap())
            .await
            .unwrap();
        let prefix = format!("test:queue:{}:{}:", std::process::id(), nanos());
        (Queue::redis(conn.clone(), &prefix), conn, prefix)
    }

    async fn forget(mut conn: ConnectionManager, prefix: &str) {
        let keys: Vec<String> = redis::cmd("KEYS")
            .arg(format!("{prefix}*"))
            .query_async(&mut conn)
            .await
            .unwrap();
        if !keys.is_empty() {
            let _: () = redis::cmd("DEL")
                .arg(keys)
                .query_async(&mut conn)
                .await
                .unwrap();
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_large_backlog_on_redis() {
        let (queue, conn, prefix) = redis_queue().await;
        a_large_backlog_is_worked_off(queue).await;
        forget(conn, &prefix).await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn on_sqlite() {
        let dir = std::env::temp_dir().join(format!("sb-queue-{}-{}", std::process::id(), nanos()));
        std::fs::create_dir_all(&dir).unwrap();
        let queue = Queue::sqlite(dir.join("queue.db").to_str().unwrap())
            .await
            .unwrap();
        every_job_is_handled_and_shutdown_is_clean(queue).await;
        let _ = std::fs::remove_dir_all(dir);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn on_redis() {
        let (queue, conn, prefix) = redis_queue().await;
        every_job_is_handled_and_shutdown_is_clean(queue).await;
        forget(conn, &prefix).await;
    }
}
