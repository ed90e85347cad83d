//! The SQL store: PostgreSQL (distributed) or SQLite (embedded) behind one type.
//!
//! Decision, written down once: queries are runtime `sqlx::query` over the `Any` driver, with
//! `$N` placeholders (both drivers accept them), BIGINT Unix-millisecond timestamps and JSON as
//! TEXT. One SQL text therefore serves both databases; where the dialects differ (transaction
//! start, schema selection, pragmas) this module says so. No compile-time `query!` macros: they
//! would need a live database or offline data per dialect, and the portable subset is small
//! enough to review by eye and is covered by the same test suite on both backends.
//!
//! SQL lives here, one file per aggregate; handlers and workers never write SQL. Every table
//! carries `account_id` and every read is filtered by it.

// First, so that its `in_scope!` scope filter is in scope for the modules after it.
#[macro_use]
pub mod conversations;
pub mod accounts;
pub mod agents;
pub mod alerts;
pub mod api_keys;
pub mod audit;
pub mod inbound;
pub mod inboxes;
pub mod live;
pub mod org;
pub mod outbound;
pub mod privacy;
pub mod reports;
pub mod roles;
pub mod routing;
pub mod routing_rules;
pub mod saved_replies;
pub mod sessions;
pub mod signin;
pub mod sla;
pub mod user_admin;
pub mod users;
pub mod webchat;
pub mod webhooks_out;

use std::str::FromStr;
use std::time::Duration;

use secrecy::ExposeSecret;
use sqlx::any::{AnyConnectOptions, AnyPoolOptions};
use sqlx::{Any, AnyPool, AssertSqlSafe, Transaction};

use crate::config::DatabaseConfig;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("database: {0}")]
    Sql(sqlx::Error),
    #[error("migration: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    #[error("{0}")]
    Setup(String),
    /// A concurrent writer got there between a read and a write; the caller retries.
    #[error("raced: {0}")]
    Raced(&'static str),
}

/// Every database error passes here, so here it is counted (`switchboard_database_errors_total`),
/// except a unique violation, which callers expect and turn into a conflict.
impl From<sqlx::Error> for StoreError {
    fn from(e: sqlx::Error) -> Self {
        let kind = match &e {
            sqlx::Error::Database(d) if d.is_unique_violation() => None,
            sqlx::Error::Database(_) => Some("database"),
            sqlx::Error::PoolTimedOut | sqlx::Error::PoolClosed => Some("pool"),
            sqlx::Error::Io(_) | sqlx::Error::Tls(_) => Some("connection"),
            _ => Some("other"),
        };
        if let Some(kind) = kind {
            metrics::counter!("switchboard_database_errors_total", "kind" => kind).increment(1);
        }
        StoreError::Sql(e)
    }
}

impl StoreError {
    /// True when a unique constraint refused the write (a duplicate name or email): callers map
    /// it to their own conflict.
    pub fn is_unique_violation(&self) -> bool {
        matches!(self, StoreError::Sql(sqlx::Error::Database(e)) if e.is_unique_violation())
    }

    /// True when trying again soon can succeed: the database was busy (SQLite's write lock not
    /// had within the busy timeout, PostgreSQL's deadlock or serialization failure), the pool
    /// had no connection in time, the connection broke, or a concurrent writer raced us. The
    /// API answers these with 503 and `Retry-After` rather than 500.
    pub fn is_transient(&self) -> bool {
        match self {
            StoreError::Sql(sqlx::Error::Database(e)) => matches!(
                e.code().as_deref(),
                // SQLite: BUSY, LOCKED, BUSY_RECOVERY, BUSY_SNAPSHOT, BUSY_TIMEOUT.
                Some("5" | "6" | "261" | "517" | "773")
                    // PostgreSQL: serialization_failure, deadlock_detected, lock_not_available.
                    | Some("40001" | "40P01" | "55P03")
            ),
            StoreError::Sql(
                sqlx::Error::PoolTimedOut | sqlx::Error::Io(_) | sqlx::Error::PoolClosed,
            ) => true,
            StoreError::Raced(_) => true,
            _ => false,
        }
    }
}

/// The rows admin mutations lock before reading their audit "before".
#[derive(Debug, Clone, Copy)]
pub(crate) enum Locked {
    Users,
    Teams,
    Branches,
    Roles,
    Inboxes,
    ApiKeys,
    Conversations,
}

/// Takes the row lock of one account's row for the rest of the transaction and says whether
/// the row exists. A no-op UPDATE works on both databases (SQLite has no `FOR UPDATE`; its
/// `BEGIN IMMEDIATE` transaction already holds the write lock), so two concurrent edits
/// serialise and each audit record's "before" is exactly the row that was replaced.
pub(crate) async fn lock_row(
    conn: &mut sqlx::AnyConnection,
    table: Locked,
    account_id: &str,
    id: &str,
) -> Result<bool, StoreError> {
    let sql = match table {
        Locked::Users => {
            "UPDATE users SET updated_at = updated_at WHERE account_id = $1 AND id = $2"
        }
        Locked::Teams => {
            "UPDATE teams SET updated_at = updated_at WHERE account_id = $1 AND id = $2"
        }
        Locked::Branches => {
            "UPDATE branches SET updated_at = updated_at WHERE account_id = $1 AND id = $2"
        }
        Locked::Roles => {
            "UPDATE roles SET updated_at = updated_at WHERE account_id = $1 AND id = $2"
        }
        Locked::Inboxes => {
            "UPDATE inboxes SET updated_at = updated_at WHERE account_id = $1 AND id = $2"
        }
        Locked::Conversations => {
            "UPDATE conversations SET updated_at = updated_at WHERE account_id = $1 AND id = $2"
        }
        Locked::ApiKeys => {
            "UPDATE api_keys SET revoked_at = revoked_at WHERE account_id = $1 AND id = $2"
        }
    };
    let touched = sqlx::query(sql)
        .bind(account_id)
        .bind(id)
        .execute(conn)
        .await?
        .rows_affected();
    Ok(touched > 0)
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dialect {
    Sqlite,
    Postgres,
}

#[derive(Clone)]
pub struct Store {
    pool: AnyPool,
    /// SQLite only: the one connection write transactions take, so that this process's
    /// writers queue for it in order (the pool's fair wait) instead of polling SQLite's lock
    /// in its busy handler, which sleeps 1, 2, 5, 10 … ms between tries and let a writer wait
    /// hundreds of milliseconds behind a stream of others.
    writer: Option<AnyPool>,
    dialect: Dialect,
}

static SQLITE_MIGRATIONS: sqlx::migrate::Migrator = sqlx::migrate!("./migrations/sqlite");
static POSTGRES_MIGRATIONS: sqlx::migrate::Migrator = sqlx::migrate!("./migrations/postgres");

impl Store {
    /// Connects and applies pending migrations.
    pub async fn connect(config: &DatabaseConfig) -> Result<Self, StoreError> {
        let store = Self::open(config).await?;
        store.migrate().await?;
        Ok(store)
    }

    /// Connects without migrating.
    pub async fn open(config: &DatabaseConfig) -> Result<Self, StoreError> {
        sqlx::any::install_default_drivers();
        let raw = config.url.expose_secret();
        let (url, dialect) = if let Some(path) = raw.strip_prefix("sqlite://") {
            (sqlite_url(path)?, Dialect::Sqlite)
        } else {
            (raw.to_owned(), Dialect::Postgres)
        };
        let options = AnyConnectOptions::from_str(&url)?;
        let schema = config.schema.clone();
        if dialect == Dialect::Postgres && schema != "public" {
            // Created before the pool so that `search_path` points at something real.
            let pool = AnyPoolOptions::new()
                .max_connections(1)
                .connect_with(options.clone())
                .await?;
            // `schema` is validated as [a-z0-9_] by the config.
            sqlx::raw_sql(AssertSqlSafe(format!(
                "CREATE SCHEMA IF NOT EXISTS \"{schema}\""
            )))
            .execute(&pool)
            .await?;
            pool.close().await;
        }
        let setup = move |max_connections: u32| {
            let schema = schema.clone();
            AnyPoolOptions::new()
                .max_connections(max_connections)
                .acquire_timeout(Duration::from_secs(10))
                .after_connect(move |conn, _| {
                    let setup = match dialect {
                        // WAL lets readers run beside the one writer; FULL makes a commit survive
                        // power loss, not just a process crash; the busy timeout queues writers.
                        Dialect::Sqlite => "PRAGMA journal_mode = WAL; PRAGMA synchronous = FULL; \
                         PRAGMA busy_timeout = 10000; PRAGMA foreign_keys = ON;"
                            .to_owned(),
                        Dialect::Postgres => format!("SET search_path TO \"{schema}\""),
                    };
                    Box::pin(async move {
                        sqlx::raw_sql(AssertSqlSafe(setup))
                            .execute(&mut *conn)
                            .await?;
                        Ok(())
                    })
                })
        };
        let pool = setup(config.max_connections)
            .connect_with(options.clone())
            .await?;
        let writer = match dialect {
            // Handed from writer to writer without a ping in between: it is never idle long.
            Dialect::Sqlite => Some(
                setup(1)
                    .test_before_acquire(false)
                    .connect_with(options)
                    .await?,
            ),
            Dialect::Postgres => None,
        };
        Ok(Store {
            pool,
            writer,
            dialect,
        })
    }

    pub async fn migrate(&self) -> Result<(), StoreError> {
        match self.dialect {
            Dialect::Sqlite => SQLITE_MIGRATIONS.run(&self.pool).await?,
            Dialect::Postgres => POSTGRES_MIGRATIONS.run(&self.pool).await?,
        }
        Ok(())
    }

    pub fn dialect(&self) -> Dialect {
        self.dialect
    }

    pub fn pool(&self) -> &AnyPool {
        &self.pool
    }

    /// Starts a write transaction. On SQLite it takes the write lock up front (`BEGIN
    /// IMMEDIATE`): a deferred transaction that reads and then writes can fail with `SQLITE_BUSY`
    /// when another writer got there first, whereas an immediate one simply waits its turn.
    pub async fn begin(&self) -> Result<Transaction<'static, Any>, StoreError> {
        Ok(match self.dialect {
            Dialect::Sqlite => {
                let writer = self.writer.as_ref().unwrap_or(&self.pool);
                writer.begin_with("BEGIN IMMEDIATE").await?
            }
            Dialect::Postgres => self.pool.begin().await?,
        })
    }

    /// A read transaction for one account's request. On PostgreSQL it sets
    /// `switchboard.account_id` for the transaction, so row-level security (migration 0002)
    /// hides every other account's rows even from a query that forgot its own filter.
    pub async fn scoped(&self, account_id: &str) -> Result<Transaction<'static, Any>, StoreError> {
        let mut tx = self.pool.begin().await?;
        if self.dialect == Dialect::Postgres {
            sqlx::query("SELECT set_config('switchboard.account_id', $1, true)")
                .bind(account_id)
                .execute(&mut *tx)
                .await?;
        }
        Ok(tx)
    }

    /// [`Store::begin`] with the account set for row-level security, for request writes.
    pub async fn begin_scoped(
        &self,
        account_id: &str,
    ) -> Result<Transaction<'static, Any>, StoreError> {
        let mut tx = self.begin().await?;
        if self.dialect == Dialect::Postgres {
            sqlx::query("SELECT set_config('switchboard.account_id', $1, true)")
                .bind(account_id)
                .execute(&mut *tx)
                .await?;
        }
        Ok(tx)
    }

    pub async fn ping(&self) -> Result<(), StoreError> {
        sqlx::query("SELECT 1").execute(&self.pool).await?;
        Ok(())
    }

    pub async fn close(&self) {
        self.pool.close().await;
    }
}

/// `sqlite://data/switchboard.db` → a URL that creates the file (and its folder) if missing.
fn sqlite_url(path: &str) -> Result<String, StoreError> {
    let file = path.split('?').next().unwrap_or(path);
    if file != ":memory:"
        && let Some(parent) = std::path::Path::new(file).parent()
        && !parent.as_os_str().is_empty()
    {
        std::fs::create_dir_all(parent)
            .map_err(|e| StoreError::Setup(format!("cannot create {}: {e}", parent.display())))?;
    }
    Ok(if path.contains("mode=") {
        format!("sqlite://{path}")
    } else if path.contains('?') {
        format!("sqlite://{path}&mode=rwc")
    } else {
        format!("sqlite://{path}?mode=rwc")
    })
}
