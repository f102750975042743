//! Retention: finished deliveries with their items and attempt log, dead letters, stray items
//! and ended escalations are deleted after `notifier.retention_days`.

use std::{sync::Arc, time::Duration};

use chrono::{DateTime, Utc};
use rp_runtime::CancellationToken;
use sea_orm::{ColumnTrait, DbErr, EntityTrait, QueryFilter, QuerySelect};
use uuid::Uuid;

use super::{NotifierCore, escalation_status, status};
use crate::store::{attempts, deliveries, escalations, items};

const EVERY: Duration = Duration::from_secs(600);
const BATCH: u64 = 1000;

pub async fn run(core: Arc<NotifierCore>, shutdown: CancellationToken) {
    loop {
        let cutoff = Utc::now() - chrono::Duration::days(core.config.notifier.retention_days.max(1) as i64);
        if let Err(err) = core.delete_before(cutoff).await {
            tracing::warn!(error = %err, "notification retention pass failed");
        }
        tokio::select! {
            _ = shutdown.cancelled() => break,
            _ = tokio::time::sleep(EVERY) => {}
        }
    }
}

impl NotifierCore {
    /// Deletes what ended before `cutoff`, in batches.
    pub async fn delete_before(&self, cutoff: DateTime<Utc>) -> Result<u64, DbErr> {
        let conn = &self.db.conn;
        let mut deleted = 0;
        loop {
            let ids: Vec<Uuid> = deliveries::Entity::find()
                .select_only()
                .column(deliveries::Column::Id)
                .filter(deliveries::Column::Status.is_in([
                    status::DELIVERED,
                    status::DEAD,
                    status::SUPPRESSED,
                ]))
                .filter(deliveries::Column::UpdatedAt.lt(cutoff))
                .limit(BATCH)
                .into_tuple()
                .all(conn)
                .await?;
            if ids.is_empty() {
                break;
            }
            let txn = self.db.begin_write().await?;
            attempts::Entity::delete_many()
                .filter(attempts::Column::DeliveryId.is_in(ids.clone()))
                .exec(&txn)
                .await?;
            items::Entity::delete_many()
                .filter(items::Column::DeliveryId.is_in(ids.clone()))
                .exec(&txn)
                .await?;
            deleted += deliveries::Entity::delete_many()
                .filter(deliveries::Column::Id.is_in(ids))
                .exec(&txn)
                .await?
                .rows_affected;
            txn.commit().await?;
        }
        items::Entity::delete_many()
            .filter(items::Column::DeliveryId.is_null())
            .filter(items::Column::CreatedAt.lt(cutoff))
            .exec(conn)
            .await?;
        escalations::Entity::delete_many()
            .filter(escalations::Column::Status.is_in([
                escalation_status::ACKNOWLEDGED,
                escalation_status::RESOLVED,
                escalation_status::EXHAUSTED,
            ]))
            .filter(escalations::Column::CreatedAt.lt(cutoff))
            .exec(conn)
            .await?;
        if deleted > 0 {
            tracing::info!(deleted, "old deliveries deleted");
        }
        Ok(deleted)
    }
}
