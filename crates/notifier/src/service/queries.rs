//! Reading deliveries, their attempts and escalations; replaying dead letters.

use std::collections::HashMap;

use chrono::Utc;
use rp_runtime::ServiceError;
use sea_orm::{ColumnTrait, Condition, EntityTrait, QueryFilter, QueryOrder, QuerySelect, sea_query::Expr};
use uuid::Uuid;

use super::{NotifierCore, Result, escalation_status, item_status, status};
use crate::store::{attempts, channels, deliveries, escalations, items};

/// Filters of a delivery listing.
#[derive(Debug, Clone, Default)]
pub struct DeliveryFilter {
    pub channel_id: Option<Uuid>,
    pub status: Option<String>,
    /// An event type, or a pattern ending in `.*` / `.>`.
    pub event_type: Option<String>,
    pub incident_id: Option<String>,
    pub event_id: Option<Uuid>,
    pub page_size: u64,
    /// Deliveries older than this id (the previous page's last).
    pub before: Option<Uuid>,
}

/// A delivery with what the API shows beside it.
#[derive(Debug, Clone)]
pub struct DeliveryView {
    pub row: deliveries::Model,
    pub channel_name: String,
    pub channel_kind: String,
    pub event_ids: Vec<String>,
    pub event_types: Vec<String>,
    pub suppressed_events: i32,
    pub attempts: Vec<attempts::Model>,
}

impl NotifierCore {
    pub async fn list_deliveries(&self, filter: DeliveryFilter) -> Result<(Vec<DeliveryView>, Option<Uuid>)> {
        let mut query = deliveries::Entity::find();
        if let Some(channel_id) = filter.channel_id {
            query = query.filter(deliveries::Column::ChannelId.eq(channel_id));
        }
        if let Some(wanted) = filter.status.as_deref().filter(|s| !s.is_empty()) {
            if !status::ALL.contains(&wanted) {
                return Err(ServiceError::Invalid(format!(
                    "status must be one of {}",
                    status::ALL.join(", ")
                )));
            }
            query = query.filter(deliveries::Column::Status.eq(wanted));
        }
        if let Some(pattern) = filter.event_type.as_deref().filter(|s| !s.is_empty()) {
            query = match pattern.strip_suffix(".*").or_else(|| pattern.strip_suffix(".>")) {
                Some(prefix) => query.filter(deliveries::Column::EventType.starts_with(format!("{prefix}."))),
                None => query.filter(deliveries::Column::EventType.eq(pattern)),
            };
        }
        if let Some(incident) = filter.incident_id.as_deref().filter(|s| !s.is_empty()) {
            query = query.filter(deliveries::Column::IncidentId.eq(incident));
        }
        if let Some(event_id) = filter.event_id {
            let ids: Vec<Option<Uuid>> = items::Entity::find()
                .select_only()
                .column(items::Column::DeliveryId)
                .filter(items::Column::EventId.eq(event_id))
                .into_tuple()
                .all(&self.db.conn)
                .await?;
            query = query.filter(deliveries::Column::Id.is_in(ids.into_iter().flatten()));
        }
        if let Some(before) = filter.before {
            query = query.filter(deliveries::Column::Id.lt(before));
        }
        let size = filter.page_size.clamp(1, 500);
        let mut rows = query.order_by_desc(deliveries::Column::Id).limit(size + 1).all(&self.db.conn).await?;
        let next = if rows.len() as u64 > size {
            rows.truncate(size as usize);
            rows.last().map(|r| r.id)
        } else {
            None
        };
        Ok((self.views(rows, false).await?, next))
    }

    pub async fn get_delivery(&self, id: Uuid) -> Result<DeliveryView> {
        let row = deliveries::Entity::find_by_id(id)
            .one(&self.db.conn)
            .await?
            .ok_or_else(|| ServiceError::NotFound(format!("delivery {id} not found")))?;
        Ok(self.views(vec![row], true).await?.remove(0))
    }

    async fn views(&self, rows: Vec<deliveries::Model>, with_attempts: bool) -> Result<Vec<DeliveryView>> {
        let ids: Vec<Uuid> = rows.iter().map(|r| r.id).collect();
        let channel_ids: Vec<Uuid> = rows.iter().map(|r| r.channel_id).collect();
        let channel_rows = channels::Entity::find()
            .filter(channels::Column::Id.is_in(channel_ids))
            .all(&self.db.conn)
            .await?;
        let names: HashMap<Uuid, (String, String)> =
            channel_rows.into_iter().map(|c| (c.id, (c.name, c.kind))).collect();
        let mut by_delivery: HashMap<Uuid, Vec<items::Model>> = HashMap::new();
        for item in items::Entity::find()
            .filter(items::Column::DeliveryId.is_in(ids.clone()))
            .order_by_asc(items::Column::EventTime)
            .order_by_asc(items::Column::Id)
            .all(&self.db.conn)
            .await?
        {
            if let Some(delivery_id) = item.delivery_id {
                by_delivery.entry(delivery_id).or_default().push(item);
            }
        }
        let mut attempt_log: HashMap<Uuid, Vec<attempts::Model>> = HashMap::new();
        if with_attempts {
            for attempt in attempts::Entity::find()
                .filter(attempts::Column::DeliveryId.is_in(ids))
                .order_by_asc(attempts::Column::Attempt)
                .order_by_asc(attempts::Column::Id)
                .all(&self.db.conn)
                .await?
            {
                attempt_log.entry(attempt.delivery_id).or_default().push(attempt);
            }
        }
        Ok(rows
            .into_iter()
            .map(|row| {
                let items = by_delivery.remove(&row.id).unwrap_or_default();
                let (queued, other): (Vec<_>, Vec<_>) =
                    items.into_iter().partition(|i| i.status == item_status::QUEUED);
                let (channel_name, channel_kind) = names.get(&row.channel_id).cloned().unwrap_or_default();
                DeliveryView {
                    channel_name,
                    channel_kind,
                    event_ids: queued.iter().map(|i| i.event_id.to_string()).collect(),
                    event_types: queued.iter().map(|i| i.event_type.clone()).collect(),
                    suppressed_events: other.len() as i32,
                    attempts: attempt_log.remove(&row.id).unwrap_or_default(),
                    row,
                }
            })
            .collect())
    }

    /// Sends dead letters again, with a fresh retry schedule and the same id.
    pub async fn replay(&self, ids: Vec<Uuid>, channel_id: Option<Uuid>) -> Result<Vec<Uuid>> {
        if ids.is_empty() && channel_id.is_none() {
            return Err(ServiceError::Invalid("name delivery_ids or a channel_id".into()));
        }
        let mut query = deliveries::Entity::find().filter(deliveries::Column::Status.eq(status::DEAD));
        if !ids.is_empty() {
            query = query.filter(deliveries::Column::Id.is_in(ids.clone()));
        }
        if let Some(channel_id) = channel_id {
            query = query.filter(deliveries::Column::ChannelId.eq(channel_id));
        }
        let dead = query.all(&self.db.conn).await?;
        if let Some(missing) = ids.iter().find(|id| !dead.iter().any(|d| d.id == **id)) {
            return Err(ServiceError::Precondition(format!("delivery {missing} is not a dead letter")));
        }
        let mut replayed = Vec::new();
        let now = Utc::now();
        for delivery in dead {
            let channel = channels::Entity::find_by_id(delivery.channel_id).one(&self.db.conn).await?;
            match channel {
                None => {
                    return Err(ServiceError::Precondition(format!(
                        "the channel of delivery {} was deleted",
                        delivery.id
                    )));
                }
                Some(c) if !c.enabled => {
                    return Err(ServiceError::Precondition(format!(
                        "channel {} is disabled; enable it before replaying its dead letters",
                        c.name
                    )));
                }
                Some(_) => {}
            }
            let updated = deliveries::Entity::update_many()
                .col_expr(deliveries::Column::Status, Expr::value(status::PENDING))
                .col_expr(deliveries::Column::DueAt, Expr::value(now))
                .col_expr(deliveries::Column::RetryBase, Expr::col(deliveries::Column::Attempts))
                .col_expr(deliveries::Column::LastError, Expr::value(""))
                .col_expr(deliveries::Column::UpdatedAt, Expr::value(now))
                .filter(deliveries::Column::Id.eq(delivery.id))
                .filter(deliveries::Column::Status.eq(status::DEAD))
                .exec(&self.db.conn)
                .await?;
            if updated.rows_affected == 1 {
                replayed.push(delivery.id);
            }
        }
        self.wake.notify_one();
        Ok(replayed)
    }

    pub async fn list_escalations(&self, wanted: &str, incident_id: &str) -> Result<Vec<escalations::Model>> {
        let mut query = escalations::Entity::find();
        if !wanted.is_empty() {
            let known = [
                escalation_status::ACTIVE,
                escalation_status::ACKNOWLEDGED,
                escalation_status::RESOLVED,
                escalation_status::EXHAUSTED,
            ];
            if !known.contains(&wanted) {
                return Err(ServiceError::Invalid(format!("status must be one of {}", known.join(", "))));
            }
            query = query.filter(escalations::Column::Status.eq(wanted));
        }
        if !incident_id.is_empty() {
            query = query.filter(escalations::Column::IncidentId.eq(incident_id));
        }
        Ok(query
            .filter(Condition::all())
            .order_by_desc(escalations::Column::CreatedAt)
            .limit(500)
            .all(&self.db.conn)
            .await?)
    }

    pub async fn get_escalation(&self, id: Uuid) -> Result<escalations::Model> {
        escalations::Entity::find_by_id(id)
            .one(&self.db.conn)
            .await?
            .ok_or_else(|| ServiceError::NotFound(format!("escalation {id} not found")))
    }
}
