//! Startup and roles: builds the backends a configuration selects, then runs the API server,
//! the workers, or both, until `shutdown` is cancelled.
//!
//! Tests call [`run`] exactly as `main` does, with a listener bound to port 0.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use secrecy::ExposeSecret;
use switchboard_workers::{InboundPort, NormalizeInbound, OutboundPort, Queue};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use crate::broker::Broker;
use crate::config::{Config, Mode};
use crate::dedup::Dedup;
use crate::http::{self, AppState};
use crate::ids;
use crate::inboxes::Registry;
use crate::ingest::{Ingest, Normalizer};
use crate::intake::{Intake, Journal};
use crate::limits::Limits;
use crate::store::Store;

/// What this process does. A node may be an API node, a worker node, or both (the default).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Roles {
    pub api: bool,
    pub worker: bool,
}

impl Roles {
    pub const ALL: Roles = Roles {
        api: true,
        worker: true,
    };

    /// Parses `api`, `worker` or `api,worker`.
    pub fn parse(s: &str) -> Result<Self, String> {
        let mut roles = Roles {
            api: false,
            worker: false,
        };
        for role in s.split(',').map(str::trim) {
            match role {
                "api" => roles.api = true,
                "worker" => roles.worker = true,
                other => return Err(format!("unknown role `{other}` (expected api, worker)")),
            }
        }
        Ok(roles)
    }
}

/// Everything a running node holds.
#[derive(Clone)]
pub struct Backends {
    pub store: Store,
    pub dedup: Dedup,
    pub broker: Broker,
    pub queue: Queue,
    /// The Redis connection and normalized key prefix (distributed mode).
    pub redis: Option<(redis::aio::ConnectionManager, String)>,
}

impl Backends {
    pub async fn connect(config: &Config, shutdown: &CancellationToken) -> anyhow::Result<Self> {
        let store = Store::connect(&config.database).await?;
        let (dedup, broker, queue, redis) = match config.mode() {
            Mode::Embedded => (
                Dedup::memory(),
                Broker::memory_with_shutdown(shutdown.clone()),
                Queue::sqlite(&config.queue.sqlite_path).await?,
                None,
            ),
            Mode::Distributed => {
                let client = redis::Client::open(config.redis.url.expose_secret())?;
                let conn = redis::aio::ConnectionManager::new(client.clone()).await?;
                // Keys read `{prefix}:dedup:…`, `{prefix}:queue:…` whether or not the
                // configured prefix ends with a colon.
                let prefix = match config.redis.key_prefix.as_str() {
                    p if p.ends_with(':') => p.to_owned(),
                    p => format!("{p}:"),
                };
                let prefix = &prefix;
                (
                    Dedup::redis(conn.clone(), prefix),
                    Broker::redis(client, conn.clone(), prefix, shutdown.clone()).await?,
                    Queue::redis(conn.clone(), prefix),
                    Some((conn, prefix.clone())),
                )
            }
        };
        Ok(Backends {
            store,
            dedup,
            broker,
            queue,
            redis,
        })
    }
}

/// Runs the hub until `shutdown` is cancelled. `listener` is required for the API role.
pub async fn run(
    config: Config,
    roles: Roles,
    listener: Option<TcpListener>,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    let config = Arc::new(config);
    let keys = Arc::new(crate::crypto::Keys::load(&config.auth)?);
    let backends = Backends::connect(&config, &shutdown).await?;
    let registry = Arc::new(Registry::load(&config, &backends.store, keys.clone()).await?);
    info!(mode = ?config.mode(), api = roles.api, worker = roles.worker, configured_inboxes = config.inboxes.len(), "Switchboard starting.");

    let events = crate::live::Events::start(backends.store.clone(), backends.broker.clone());
    let mut tasks = tokio::task::JoinSet::new();
    // Every node counts what it sees for the alert signals and flushes it to the store.
    let tally = Arc::new(crate::alerts::watch::Tally::default());
    let (flushed, store, token) = (tally.clone(), backends.store.clone(), shutdown.clone());
    tasks.spawn(async move {
        flushed.run(store, token).await;
        Ok(())
    });
    // Every node, whatever its roles, routes with the registry and keeps it current.
    let (watched, broker, token) = (registry.clone(), backends.broker.clone(), shutdown.clone());
    tasks.spawn(async move {
        crate::inboxes::watch(watched, broker, token).await;
        Ok(())
    });
    // A node that runs workers normalizes its own intake at once, with jobs as the fallback.
    let mut normalizer = None;
    if roles.worker {
        let local = Normalizer::start(Arc::new(Ingest {
            store: backends.store.clone(),
            events: events.clone(),
            registry: registry.clone(),
            tally: tally.clone(),
        }));
        normalizer = Some(local.clone());
        let port: Arc<dyn InboundPort> = Arc::new(local);
        let pacing = Arc::new(crate::outbound::Pacing::new(&config.outbound));
        let outbound: Arc<dyn OutboundPort> = Arc::new(crate::outbound::Deliverer {
            store: backends.store.clone(),
            events: events.clone(),
            registry: registry.clone(),
            config: config.clone(),
            http: crate::outbound::http_client(&config.outbound)?,
            pacing: pacing.clone(),
            tally: tally.clone(),
        });
        let queue = backends.queue.clone();
        let (concurrency, delivery_concurrency) =
            (config.queue.concurrency, config.outbound.concurrency);
        let token = shutdown.clone();
        tasks.spawn(async move {
            queue
                .run_workers(port, outbound, concurrency, delivery_concurrency, token)
                .await
                .map_err(anyhow::Error::from)
        });
        let (store, queue, token) = (
            backends.store.clone(),
            backends.queue.clone(),
            shutdown.clone(),
        );
        let swept = config.clone();
        tasks.spawn(async move {
            crate::outbound::sweep(store, queue, swept, token).await;
            Ok(())
        });
        let token = shutdown.clone();
        tasks.spawn(async move {
            loop {
                tokio::select! {
                    () = token.cancelled() => return Ok(()),
                    () = tokio::time::sleep(Duration::from_secs(60)) => pacing.shrink(),
                }
            }
        });
        let (store, token) = (backends.store.clone(), shutdown.clone());
        tasks.spawn(async move {
            crate::telemetry::watch_backlogs(store, token).await;
            Ok(())
        });
        let watcher = crate::sla::watch::Watcher {
            store: backends.store.clone(),
            events: events.clone(),
            tally: tally.clone(),
            every: Duration::from_millis(config.sla.check_every_ms),
        };
        let token = shutdown.clone();
        tasks.spawn(async move {
            watcher.run(token).await;
            Ok(())
        });
        let queued = Arc::new(tokio::sync::Notify::new());
        let evaluator =
            crate::alerts::watch::Evaluator::new(backends.store.clone(), &config, queued.clone())
                .await?;
        let sender =
            crate::alerts::notify::Sender::new(backends.store.clone(), &config, queued).await?;
        let token = shutdown.clone();
        tasks.spawn(async move {
            evaluator.run(token).await;
            Ok(())
        });
        let token = shutdown.clone();
        tasks.spawn(async move {
            sender.run(token).await;
            Ok(())
        });
        let webhooks = Arc::new(crate::webhooks_out::deliver::Worker::new(
            backends.store.clone(),
            &config,
            keys.clone(),
            tally.clone(),
        )?);
        let token = shutdown.clone();
        tasks.spawn(async move {
            webhooks.run(token).await;
            Ok(())
        });
        let dispatcher = crate::dispatch::Dispatcher {
            store: backends.store.clone(),
            broker: backends.broker.clone(),
            events: events.clone(),
            config: config.clone(),
        };
        let token = shutdown.clone();
        tasks.spawn(async move {
            dispatcher.run(token).await;
            Ok(())
        });
        let (store, queue, token) = (
            backends.store.clone(),
            backends.queue.clone(),
            shutdown.clone(),
        );
        let after = Duration::from_secs(config.queue.recovery_after_secs);
        tasks.spawn(async move {
            recovery_sweep(store, queue, after, token).await;
            Ok(())
        });
        let (store, woke, token) = (backends.store.clone(), events.clone(), shutdown.clone());
        tasks.spawn(async move {
            wake_snoozed(store, woke, token).await;
            Ok(())
        });
        let (store, token) = (backends.store.clone(), shutdown.clone());
        let retention_ms = config.live.retention_secs.saturating_mul(1000) as i64;
        tasks.spawn(async move {
            prune_events(store, retention_ms, token).await;
            Ok(())
        });
    }
    if roles.api {
        let listener = listener.ok_or_else(|| anyhow::anyhow!("the api role needs a listener"))?;
        // Sessions get their own token, cancelled once the server stops taking requests, so
        // that they close with "reconnect elsewhere" and shutdown waits for their close frames.
        let live = Arc::new(crate::live::Node {
            node_id: ids::new("node"),
            fanout: crate::live::Fanout::new(
                backends.store.clone(),
                backends.broker.clone(),
                config.live.socket_buffer,
                shutdown.child_token(),
            ),
            sessions: tokio_util::task::TaskTracker::new(),
            shutdown: shutdown.child_token(),
        });
        let state = AppState {
            config: config.clone(),
            store: backends.store.clone(),
            broker: backends.broker.clone(),
            queue: backends.queue.clone(),
            intake: Intake {
                journal: Journal::start(backends.store.clone(), backends.queue.clone(), normalizer),
                dedup: backends.dedup.clone(),
                dedup_ttl: Duration::from_secs(config.intake.dedup_ttl_secs),
                tally: tally.clone(),
            },
            registry,
            metrics: crate::telemetry::metrics_handle(),
            keys,
            limits: Arc::new(Limits::new(&config.rate_limits, backends.redis.clone())),
            events: events.clone(),
            live: live.clone(),
            media: crate::http::compose::media_client()?,
            setup: Arc::default(),
        };
        let account = backends
            .store
            .ensure_account(&config.accounts.default)
            .await?;
        println!(
            "Switchboard is up: agent workspace {url}/ · admin console {url}/admin",
            url = config.server.public_url
        );
        if let Some(token) = state.setup.open_if_empty(
            backends.store.count_users(&account).await?,
            config.auth.setup_token.expose_secret(),
        ) {
            // On standard output only, for whoever started the hub: it is a credential.
            println!(
                "\n  No administrator yet. Open {}/#setup={token} to create the first one.\n",
                config.server.public_url
            );
        }
        let (store, node, token) = (backends.store.clone(), live.clone(), shutdown.clone());
        let period = Duration::from_secs(config.live.ping_secs);
        let forget_after_ms = config.routing.presence_timeout_ms().saturating_mul(10);
        tasks.spawn(async move {
            loop {
                tokio::select! {
                    () = token.cancelled() => return Ok(()),
                    () = tokio::time::sleep(period) => {}
                }
                let now = ids::now_ms();
                if let Err(e) = store
                    .refresh_consoles(&node.node_id, now, now - forget_after_ms)
                    .await
                {
                    warn!(error = %e, "Could not refresh the consoles' presence.");
                }
            }
        });
        let (limits, token) = (state.limits.clone(), shutdown.clone());
        tasks.spawn(async move {
            loop {
                tokio::select! {
                    () = token.cancelled() => return Ok(()),
                    () = tokio::time::sleep(Duration::from_secs(60)) => limits.shrink(),
                }
            }
        });
        info!(addr = %listener.local_addr()?, "Listening.");
        let token = shutdown.clone();
        tasks.spawn(async move {
            let app = http::router(state).into_make_service_with_connect_info::<SocketAddr>();
            let served = axum::serve(listener, app)
                .with_graceful_shutdown(async move { token.cancelled().await })
                .await
                .map_err(anyhow::Error::from);
            // Upgraded sockets are not the server's connections: wait for their close frames.
            live.sessions.close();
            if tokio::time::timeout(Duration::from_secs(5), live.sessions.wait())
                .await
                .is_err()
            {
                warn!("Some sockets did not close within 5 s.");
            }
            served
        });
    }
    let mut result = Ok(());
    while let Some(joined) = tasks.join_next().await {
        let outcome = joined.map_err(anyhow::Error::from).and_then(|r| r);
        if let Err(e) = outcome {
            warn!(error = %e, "A role stopped with an error; shutting down.");
            shutdown.cancel();
            if result.is_ok() {
                result = Err(e);
            }
        }
    }
    backends.store.close().await;
    info!("Switchboard stopped.");
    result
}

/// Deletes events older than the retention, once a minute (worker nodes; harmless on many).
async fn prune_events(store: Store, retention_ms: i64, shutdown: CancellationToken) {
    loop {
        match store.prune_events(ids::now_ms() - retention_ms).await {
            Ok(0) => {}
            Ok(n) => info!(events = n, "Pruned the event log."),
            Err(e) => warn!(error = %e, "Could not prune the event log."),
        }
        tokio::select! {
            () = shutdown.cancelled() => return,
            () = tokio::time::sleep(Duration::from_secs(60)) => {}
        }
    }
}

/// How often worker nodes look for snoozed conversations whose time has come.
const SNOOZE_CHECK: Duration = Duration::from_secs(1);
/// Most conversations woken by one statement (the rest wake on the next check).
const SNOOZE_BATCH: i64 = 500;

/// Wakes snoozed conversations whose time has come and announces each (`conversation.updated`,
/// which also wakes the dispatchers for the ones that wait for an agent again). Every worker
/// node runs it; the store's guarded update wakes each conversation once, whichever node gets
/// there first.
async fn wake_snoozed(store: Store, events: crate::live::Events, shutdown: CancellationToken) {
    loop {
        tokio::select! {
            () = shutdown.cancelled() => return,
            () = tokio::time::sleep(SNOOZE_CHECK) => {}
        }
        match store.wake_due_snoozed(ids::now_ms(), SNOOZE_BATCH).await {
            Ok(woken) => {
                for conv in woken {
                    let account = conv.account_id.clone();
                    let data = serde_json::to_value(&conv).unwrap_or_default();
                    events.publish(&account, "conversation.updated", data).await;
                }
            }
            Err(e) => warn!(error = %e, "Could not wake snoozed conversations."),
        }
    }
}

/// Queues again every event left in `received` longer than `after`: the answer to a crash
/// between the durable write and the queue push, or a job that exhausted its retries while the
/// database was down. Runs once at start (catching up after a crash at once) and then
/// periodically. Handlers are idempotent, so an extra job for an event in flight is harmless.
async fn recovery_sweep(store: Store, queue: Queue, after: Duration, shutdown: CancellationToken) {
    let period = (after / 2).max(Duration::from_millis(200));
    let mut first = true;
    loop {
        let horizon = if first {
            ids::now_ms()
        } else {
            ids::now_ms() - after.as_millis() as i64
        };
        first = false;
        match store.claim_stale_events(horizon, 1000).await {
            Ok(stale) => {
                if !stale.is_empty() {
                    info!(count = stale.len(), "Re-queueing events left unprocessed.");
                }
                let jobs = stale.into_iter().map(NormalizeInbound::new).collect();
                if let Err(e) = queue.enqueue_many(jobs).await {
                    warn!(error = %e, "Recovery sweep could not queue events.");
                }
            }
            Err(e) => warn!(error = %e, "Recovery sweep could not read the store."),
        }
        tokio::select! {
            () = shutdown.cancelled() => return,
            () = tokio::time::sleep(period) => {}
        }
    }
}
