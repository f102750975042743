//! Transactional outbox. A service writes its state change and the event row in one transaction
//! ([`enqueue`]); the relay publishes committed rows in id order, waits for the bus to confirm,
//! then marks them sent. A crash between publish and mark re-publishes the same event id, which
//! the bus drops as a duplicate, so subscribers see each committed event once and never an event
//! of a rolled-back transaction.

use std::{sync::Arc, time::Duration};

use chrono::Utc;
use rp_db::Database;
use sea_orm::{
    ActiveValue::Set,
    ColumnTrait, ConnectionTrait, DbErr, EntityTrait, PaginatorTrait, QueryFilter, QueryOrder, QuerySelect,
    TransactionTrait,
    sea_query::{Expr, ExprTrait as _, LockBehavior, LockType},
};
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use crate::{Event, SharedBus};

pub mod entity {
    //! `outbox` table, present in every service's schema.
    use sea_orm::entity::prelude::*;

    #[derive(Clone, Debug, PartialEq, DeriveEntityModel)]
    #[sea_orm(table_name = "outbox")]
    pub struct Model {
        #[sea_orm(primary_key, auto_increment = false)]
        pub id: Uuid,
        pub event_type: String,
        pub subject: String,
        pub source: String,
        pub time: DateTimeUtc,
        pub traceparent: Option<String>,
        #[sea_orm(column_type = "Text")]
        pub data: String,
        pub created_at: DateTimeUtc,
        pub published_at: Option<DateTimeUtc>,
        pub attempts: i32,
        pub last_error: Option<String>,
    }

    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}

    impl ActiveModelBehavior for ActiveModel {}
}

pub mod migration {
    //! Creates the `outbox` and `inbox` tables; every service's migrator lists it first.
    use sea_orm_migration::{prelude::*, schema::*};

    #[derive(DeriveMigrationName)]
    pub struct Migration;

    #[async_trait::async_trait]
    impl MigrationTrait for Migration {
        async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
            manager
                .create_table(
                    Table::create()
                        .table("outbox")
                        .if_not_exists()
                        .col(uuid("id").primary_key())
                        .col(string("event_type"))
                        .col(string("subject"))
                        .col(string("source"))
                        .col(timestamp_with_time_zone("time"))
                        .col(text_null("traceparent"))
                        .col(text("data"))
                        .col(timestamp_with_time_zone("created_at"))
                        .col(timestamp_with_time_zone_null("published_at"))
                        .col(integer("attempts").default(0))
                        .col(text_null("last_error"))
                        .to_owned(),
                )
                .await?;
            // Partial index: the relay only ever looks for unpublished rows.
            manager
                .get_connection()
                .execute_unprepared(
                    "CREATE INDEX IF NOT EXISTS outbox_unpublished ON outbox (id) WHERE published_at IS NULL",
                )
                .await?;
            manager
                .create_table(
                    Table::create()
                        .table("inbox")
                        .if_not_exists()
                        .col(string("consumer"))
                        .col(uuid("event_id"))
                        .col(timestamp_with_time_zone("processed_at"))
                        .primary_key(Index::create().col("consumer").col("event_id"))
                        .to_owned(),
                )
                .await?;
            Ok(())
        }

        async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
            manager.drop_table(Table::drop().table("inbox").to_owned()).await?;
            manager.drop_table(Table::drop().table("outbox").to_owned()).await
        }
    }
}

/// Adds `event` to the outbox inside the caller's transaction.
pub async fn enqueue<C: ConnectionTrait>(conn: &C, event: &Event) -> Result<(), DbErr> {
    let row = entity::ActiveModel {
        id: Set(event.id),
        event_type: Set(event.event_type.clone()),
        subject: Set(event.subject.clone()),
        source: Set(event.source.clone()),
        time: Set(event.time),
        traceparent: Set(event.traceparent.clone()),
        data: Set(event.data.to_string()),
        created_at: Set(Utc::now()),
        published_at: Set(None),
        attempts: Set(0),
        last_error: Set(None),
    };
    entity::Entity::insert(row).exec_without_returning(conn).await?;
    Ok(())
}

fn to_event(row: &entity::Model) -> Event {
    Event {
        id: row.id,
        source: row.source.clone(),
        event_type: row.event_type.clone(),
        subject: row.subject.clone(),
        time: row.time,
        traceparent: row.traceparent.clone(),
        data: serde_json::from_str(&row.data).unwrap_or(serde_json::Value::Null),
    }
}

/// A service's outbox: wake the relay after committing, run the relay in the background.
#[derive(Clone)]
pub struct Outbox {
    db: Database,
    wake: Arc<Notify>,
}

impl Outbox {
    pub fn new(db: Database) -> Self {
        Self { db, wake: Arc::new(Notify::new()) }
    }

    /// Tells the relay that a transaction with events committed.
    pub fn wake(&self) {
        self.wake.notify_one();
    }

    /// Rows committed but not yet published.
    pub async fn pending(&self) -> Result<u64, DbErr> {
        entity::Entity::find().filter(entity::Column::PublishedAt.is_null()).count(&self.db.conn).await
    }

    /// Publishes committed rows until `shutdown`, then makes one last attempt.
    pub fn spawn_relay(
        &self,
        bus: SharedBus,
        config: rp_config::OutboxConfig,
        shutdown: CancellationToken,
    ) -> tokio::task::JoinHandle<()> {
        let outbox = self.clone();
        tokio::spawn(async move { outbox.relay(bus, config, shutdown).await })
    }

    async fn relay(&self, bus: SharedBus, config: rp_config::OutboxConfig, shutdown: CancellationToken) {
        let poll = Duration::from_millis(config.poll_interval_ms);
        let backoff = Duration::from_millis(config.retry_backoff_ms);
        let mut last_cleanup = std::time::Instant::now();
        // The pending gauge costs a count query: once a second is enough for a dashboard, and
        // keeps it off the path of a busy relay.
        let mut last_gauge: Option<std::time::Instant> = None;
        loop {
            let wait = match self.publish_batch(&bus, config.batch_size).await {
                // A full batch means more may be waiting.
                Ok(count) if count as u64 == config.batch_size => Duration::ZERO,
                Ok(_) => poll,
                Err(err) => {
                    tracing::warn!(service = self.db.service, error = %err, "outbox relay could not publish; retrying");
                    backoff
                }
            };
            if last_gauge.is_none_or(|at| at.elapsed() >= Duration::from_secs(1)) {
                last_gauge = Some(std::time::Instant::now());
                if let Ok(pending) = self.pending().await {
                    metrics::gauge!(rp_telemetry::metric_names::OUTBOX_PENDING, "service" => self.db.service)
                        .set(pending as f64);
                }
            }
            if last_cleanup.elapsed() > Duration::from_secs(600) {
                last_cleanup = std::time::Instant::now();
                self.delete_published_before(
                    Utc::now() - chrono::Duration::hours(config.retention_hours as i64),
                )
                .await;
            }
            if wait.is_zero() {
                continue;
            }
            tokio::select! {
                _ = shutdown.cancelled() => break,
                _ = self.wake.notified() => {}
                _ = tokio::time::sleep(wait) => {}
            }
        }
        // Publish what the last requests committed before the process goes away.
        let _ =
            tokio::time::timeout(Duration::from_secs(2), self.publish_batch(&bus, config.batch_size)).await;
    }

    /// Publishes up to `limit` rows in id order; stops at the first failure so order is kept.
    pub async fn publish_batch(&self, bus: &SharedBus, limit: u64) -> Result<usize, RelayError> {
        if self.db.is_postgres() {
            // Several replicas may relay the same schema: each locks the rows it publishes.
            let txn = self.db.conn.begin().await?;
            // Marking rows published need not wait for the WAL flush: should the server lose the
            // mark in a crash, the relay publishes those rows again under the same ids and the bus
            // drops them as duplicates. The next batch does not queue behind an fsync.
            txn.execute_unprepared("SET LOCAL synchronous_commit TO OFF").await?;
            let rows = entity::Entity::find()
                .filter(entity::Column::PublishedAt.is_null())
                .order_by_asc(entity::Column::Id)
                .limit(limit)
                .lock_with_behavior(LockType::Update, LockBehavior::SkipLocked)
                .all(&txn)
                .await?;
            let outcome = self.publish_rows(bus, &rows, &txn).await;
            txn.commit().await?;
            outcome
        } else {
            // One process owns a SQLite file; publishing outside a transaction keeps the write lock
            // free while waiting for the bus.
            let rows = entity::Entity::find()
                .filter(entity::Column::PublishedAt.is_null())
                .order_by_asc(entity::Column::Id)
                .limit(limit)
                .all(&self.db.conn)
                .await?;
            self.publish_rows(bus, &rows, &self.db.conn).await
        }
    }

    async fn publish_rows<C: ConnectionTrait>(
        &self,
        bus: &SharedBus,
        rows: &[entity::Model],
        conn: &C,
    ) -> Result<usize, RelayError> {
        let events: Vec<Event> = rows.iter().map(to_event).collect();
        let (confirmed, failure) = bus.publish_in_order(&events).await;
        for event in &events[..confirmed] {
            metrics::counter!(rp_telemetry::metric_names::EVENTS_PUBLISHED_TOTAL,
                "service" => self.db.service, "type" => event.event_type.clone())
            .increment(1);
        }
        let published: Vec<uuid::Uuid> = rows[..confirmed].iter().map(|row| row.id).collect();
        if let (Some(err), Some(row)) = (&failure, rows.get(confirmed)) {
            entity::Entity::update_many()
                .col_expr(entity::Column::Attempts, Expr::col(entity::Column::Attempts).add(1))
                .col_expr(entity::Column::LastError, Expr::value(err.to_string()))
                .filter(entity::Column::Id.eq(row.id))
                .exec(conn)
                .await?;
        }
        if !published.is_empty() {
            entity::Entity::update_many()
                .col_expr(entity::Column::PublishedAt, Expr::value(Utc::now()))
                .filter(entity::Column::Id.is_in(published))
                .exec(conn)
                .await?;
        }
        match failure {
            Some(err) => Err(RelayError::Bus(err)),
            None => Ok(confirmed),
        }
    }

    async fn delete_published_before(&self, cutoff: chrono::DateTime<Utc>) {
        let result = entity::Entity::delete_many()
            .filter(entity::Column::PublishedAt.lt(cutoff))
            .exec(&self.db.conn)
            .await;
        if let Err(err) = result {
            tracing::warn!(service = self.db.service, error = %err, "outbox cleanup failed");
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum RelayError {
    #[error(transparent)]
    Db(#[from] DbErr),
    #[error(transparent)]
    Bus(#[from] crate::BusError),
}
