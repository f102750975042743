//! Database connections for the services. Each service owns its data: on PostgreSQL a schema of
//! its own (`<schema_prefix><service>`, selected through `search_path`), in embedded mode a SQLite
//! file of its own (`<data_dir>/<service>.db`). Migrations belong to each service's `store`.

use std::time::Duration;

use rp_config::Config;
use sea_orm::{
    ConnectOptions, ConnectionTrait, DatabaseConnection, DatabaseTransaction, DbErr, SqlErr,
    SqliteTransactionMode, TransactionOptions, TransactionTrait,
};
use sea_orm_migration::MigratorTrait;

pub use reads::ReadPool;
pub use sea_orm;

mod reads;

#[derive(Debug, thiserror::Error)]
pub enum DbError {
    #[error("cannot prepare the data directory {path}: {source}")]
    DataDir { path: String, source: std::io::Error },
    #[error("cannot connect to the {service} database: {source}")]
    Connect { service: String, source: DbErr },
    #[error("cannot migrate the {service} database: {source}")]
    Migrate { service: String, source: DbErr },
}

/// Which engine a service's data lives in.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Backend {
    Postgres { schema: String },
    Sqlite { path: std::path::PathBuf },
}

/// A service's connection pool.
#[derive(Debug, Clone)]
pub struct Database {
    pub conn: DatabaseConnection,
    pub service: &'static str,
    pub backend: Backend,
    /// On PostgreSQL (unless `database.read_connections` is 0): connections for the hottest
    /// read-only statements, without sqlx's round trip on every release (see [`ReadPool`]).
    pub reads: Option<ReadPool>,
}

/// Opens (creating if needed) the database of `service`.
pub async fn connect(config: &Config, service: &'static str) -> Result<Database, DbError> {
    let db = &config.database;
    let connect_err = |source| DbError::Connect { service: service.to_owned(), source };
    let (url, backend) = match &db.url {
        Some(url) => {
            let schema = format!("{}{}", db.schema_prefix, service);
            ensure_schema(url.expose(), &schema).await.map_err(connect_err)?;
            (url.expose().to_owned(), Backend::Postgres { schema })
        }
        None => {
            std::fs::create_dir_all(&config.data_dir)
                .map_err(|source| DbError::DataDir { path: config.data_dir.display().to_string(), source })?;
            let path = config.data_dir.join(format!("{service}.db"));
            (format!("sqlite://{}?mode=rwc", path.display()), Backend::Sqlite { path })
        }
    };

    let mut options = ConnectOptions::new(url);
    options
        .min_connections(db.min_connections)
        .max_connections(db.max_connections)
        .idle_timeout(Duration::from_secs(db.idle_timeout_secs))
        .connect_timeout(Duration::from_secs(db.connect_timeout_secs))
        // SQLite writers queue for the lock up to its busy timeout (10 s) while holding their
        // connection: the others must be able to wait at least as long for one.
        .acquire_timeout(Duration::from_secs(match backend {
            Backend::Sqlite { .. } => db.acquire_timeout_secs.max(SQLITE_BUSY_TIMEOUT_SECS + 5),
            Backend::Postgres { .. } => db.acquire_timeout_secs,
        }))
        .sqlx_logging(false)
        // sqlx pings every connection it hands out by default: one more round trip to the
        // database before every statement or transaction. Only connections idle long enough
        // for a server, proxy or firewall to have dropped them are tested now; a broken hot
        // connection still fails its statement, and sqlx replaces it.
        .test_before_acquire_if_idle_for(TEST_IDLE_CONNECTION_AFTER)
        .set_application_name(format!("release-pilot-{service}"));
    match &backend {
        Backend::Postgres { schema } => {
            options.set_schema_search_path(schema.clone());
        }
        Backend::Sqlite { .. } => {
            // WAL lets readers run beside the single writer; the busy timeout makes writers queue
            // instead of failing while another transaction commits.
            options.map_sqlx_sqlite_opts(|opts| {
                opts.journal_mode(sea_orm::sqlx::sqlite::SqliteJournalMode::Wal)
                    .synchronous(sea_orm::sqlx::sqlite::SqliteSynchronous::Normal)
                    .busy_timeout(Duration::from_secs(SQLITE_BUSY_TIMEOUT_SECS))
                    .foreign_keys(true)
            });
        }
    }
    let conn = sea_orm::Database::connect(options).await.map_err(connect_err)?;
    let reads = match (&backend, &db.url) {
        (Backend::Postgres { schema }, Some(url)) if db.read_connections > 0 => Some(
            ReadPool::new(
                url.expose(),
                schema,
                &format!("release-pilot-{service}-reads"),
                db.read_connections as usize,
                Duration::from_secs(db.connect_timeout_secs),
                Duration::from_secs(db.acquire_timeout_secs),
            )
            .map_err(connect_err)?,
        ),
        _ => None,
    };
    Ok(Database { conn, service, backend, reads })
}

/// Pooled connections (of both pools) idle at least this long are pinged before use.
const TEST_IDLE_CONNECTION_AFTER: Duration = Duration::from_secs(30);

/// How long an SQLite writer waits for the write lock.
const SQLITE_BUSY_TIMEOUT_SECS: u64 = 10;

async fn ensure_schema(url: &str, schema: &str) -> Result<(), DbErr> {
    let mut options = ConnectOptions::new(url.to_owned());
    options.max_connections(1).min_connections(0).sqlx_logging(false).connect_timeout(Duration::from_secs(5));
    let admin = sea_orm::Database::connect(options).await?;
    let statement = format!("CREATE SCHEMA IF NOT EXISTS \"{schema}\"");
    let result = admin.execute_unprepared(&statement).await;
    admin.close().await?;
    match result {
        Ok(_) => Ok(()),
        // Two services starting together may race to create it; losing that race is fine.
        Err(err) if is_unique_violation(&err) => Ok(()),
        Err(err) => Err(err),
    }
}

impl Database {
    pub fn is_postgres(&self) -> bool {
        matches!(self.backend, Backend::Postgres { .. })
    }

    /// Begins a transaction that will write. On SQLite it takes the write lock up front
    /// (`BEGIN IMMEDIATE`) so two writers queue on the busy timeout instead of deadlocking on
    /// a read-to-write upgrade.
    pub async fn begin_write(&self) -> Result<DatabaseTransaction, DbErr> {
        let sqlite_transaction_mode = match self.backend {
            Backend::Sqlite { .. } => Some(SqliteTransactionMode::Immediate),
            Backend::Postgres { .. } => None,
        };
        // No access mode: read-write is the default, and on PostgreSQL naming it costs a
        // `SET TRANSACTION` round trip in every transaction.
        self.conn
            .begin_with_options(TransactionOptions {
                isolation_level: None,
                access_mode: None,
                sqlite_transaction_mode,
            })
            .await
    }

    /// Round-trips a trivial query and reports how long it took.
    pub async fn ping(&self) -> Result<Duration, DbErr> {
        let started = std::time::Instant::now();
        self.conn.execute_unprepared("SELECT 1").await?;
        Ok(started.elapsed())
    }

    /// Applies pending migrations of `M`.
    pub async fn migrate<M: MigratorTrait>(&self) -> Result<(), DbError> {
        M::up(&self.conn, None)
            .await
            .map_err(|source| DbError::Migrate { service: self.service.to_owned(), source })
    }

    /// Publishes the pool's size to `db_pool_connections{service,state}`.
    pub fn record_pool_metrics(&self, max_connections: u32) {
        let (size, idle) = match self.backend {
            Backend::Postgres { .. } => {
                let pool = self.conn.get_postgres_connection_pool();
                (pool.size(), pool.num_idle() as u32)
            }
            Backend::Sqlite { .. } => {
                let pool = self.conn.get_sqlite_connection_pool();
                (pool.size(), pool.num_idle() as u32)
            }
        };
        let gauge = |state: &'static str, value: u32| {
            metrics::gauge!(rp_telemetry::metric_names::DB_POOL_CONNECTIONS, "service" => self.service, "state" => state)
                .set(f64::from(value));
        };
        gauge("idle", idle);
        gauge("in_use", size.saturating_sub(idle));
        gauge("max", max_connections);
    }

    /// Pool utilisation in percent (in-use / max), the input of the seed's "DB pool > 95%" rule.
    pub fn pool_utilisation(&self, max_connections: u32) -> f64 {
        let (size, idle) = match self.backend {
            Backend::Postgres { .. } => {
                let pool = self.conn.get_postgres_connection_pool();
                (pool.size(), pool.num_idle() as u32)
            }
            Backend::Sqlite { .. } => {
                let pool = self.conn.get_sqlite_connection_pool();
                (pool.size(), pool.num_idle() as u32)
            }
        };
        f64::from(size.saturating_sub(idle)) * 100.0 / f64::from(max_connections.max(1))
    }
}

/// True for a unique-constraint violation (duplicate key) on either engine.
pub fn is_unique_violation(err: &DbErr) -> bool {
    matches!(err.sql_err(), Some(SqlErr::UniqueConstraintViolation(_)))
}

/// Parses a page token: the id (UUIDv7, so time-ordered) of the last item of the previous page.
pub fn parse_page_token(token: &str) -> Option<uuid::Uuid> {
    uuid::Uuid::parse_str(token).ok()
}

/// Clamps a requested page size into 1..=max, with `default` for 0.
pub fn page_size(requested: i32, default: u64, max: u64) -> u64 {
    match requested {
        n if n <= 0 => default,
        n => (n as u64).min(max),
    }
}
