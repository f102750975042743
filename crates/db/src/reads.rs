//! A few PostgreSQL connections for the hottest read-only statements (ADR 0006).
//!
//! sqlx's pool sends a Sync and waits for the server's ReadyForQuery every time a connection
//! goes back to it (sqlx 0.9 does it unconditionally, for the case of a statement's future
//! dropped half-way). That is one more round trip, and one more wake-up of a server process,
//! per statement: a quarter of PostgreSQL's throughput on the page-of-releases query (pgbench,
//! docs/benchmarks.md, stop 16). Here a connection whose last statement did not run to its end
//! (the caller's future was dropped, or it failed) is closed rather than reused, and one that
//! sat idle long enough for a server, proxy or firewall to have dropped it is pinged before
//! use. The pooling itself is deadpool's.

use std::time::Duration;

use deadpool::managed::{self, Metrics, RecycleError, RecycleResult};

use crate::TEST_IDLE_CONNECTION_AFTER;
use sea_orm::{
    ConnAcquireErr, DbErr, RuntimeErr,
    sqlx::{
        self, ConnectOptions as _, Connection as _, PgConnection, Postgres,
        postgres::{PgArguments, PgConnectOptions, PgRow},
        query::Query,
    },
};

/// A pool of PostgreSQL connections for read-only statements that must be cheap.
#[derive(Clone)]
pub struct ReadPool {
    pool: managed::Pool<Manager>,
}

impl std::fmt::Debug for ReadPool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let status = self.pool.status();
        f.debug_struct("ReadPool").field("size", &status.size).field("max_size", &status.max_size).finish()
    }
}

struct Manager {
    options: PgConnectOptions,
}

/// A pooled connection, and whether its last statement ran to its end.
struct ReadConnection {
    conn: PgConnection,
    settled: bool,
}

impl managed::Manager for Manager {
    type Type = ReadConnection;
    type Error = sqlx::Error;

    async fn create(&self) -> Result<ReadConnection, sqlx::Error> {
        Ok(ReadConnection { conn: PgConnection::connect_with(&self.options).await?, settled: true })
    }

    async fn recycle(
        &self,
        connection: &mut ReadConnection,
        metrics: &Metrics,
    ) -> RecycleResult<sqlx::Error> {
        if !connection.settled {
            // Its statement may still be running: waiting for it to end (as sqlx's pool does)
            // would make the next caller wait for a result nobody wants. It is closed instead,
            // and deadpool opens another.
            return Err(RecycleError::message("its last statement did not run to its end"));
        }
        if metrics.last_used() >= TEST_IDLE_CONNECTION_AFTER {
            // An error here makes deadpool drop it and try another.
            connection.conn.ping().await?;
        }
        Ok(())
    }
}

impl ReadPool {
    /// `size` connections at most to the database at `url`, working in `schema`.
    pub(crate) fn new(
        url: &str,
        schema: &str,
        application_name: &str,
        size: usize,
        connect_timeout: Duration,
        acquire_timeout: Duration,
    ) -> Result<Self, DbErr> {
        let options = url
            .parse::<PgConnectOptions>()
            .map_err(|err| DbErr::Conn(RuntimeErr::SqlxError(err.into())))?
            .application_name(application_name)
            .options([("search_path", format!("\"{schema}\""))])
            .disable_statement_logging();
        let pool = managed::Pool::builder(Manager { options })
            .max_size(size)
            .runtime(deadpool::Runtime::Tokio1)
            .create_timeout(Some(connect_timeout))
            .wait_timeout(Some(acquire_timeout))
            .recycle_timeout(Some(connect_timeout))
            .build()
            .map_err(|err| DbErr::Custom(format!("cannot build the read pool: {err}")))?;
        Ok(Self { pool })
    }

    /// Runs `query` and returns all its rows.
    pub async fn fetch_all(&self, query: Query<'_, Postgres, PgArguments>) -> Result<Vec<PgRow>, DbErr> {
        let mut connection = self.pool.get().await.map_err(|err| match err {
            managed::PoolError::Timeout(_) => DbErr::ConnectionAcquire(ConnAcquireErr::Timeout),
            managed::PoolError::Backend(err) => DbErr::Conn(RuntimeErr::SqlxError(err.into())),
            managed::PoolError::Closed => DbErr::ConnectionAcquire(ConnAcquireErr::ConnectionClosed),
            other => DbErr::Custom(format!("read pool: {other}")),
        })?;
        connection.settled = false;
        let rows = query
            .fetch_all(&mut connection.conn)
            .await
            .map_err(|err| DbErr::Query(RuntimeErr::SqlxError(err.into())))?;
        connection.settled = true;
        Ok(rows)
    }
}
