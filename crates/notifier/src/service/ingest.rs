//! The consumer: every event (`rp.>`) is classified, may suppress pending notifications it makes
//! pointless, may start or end escalations, and is routed to channels, where it joins its group
//! or waits as a duplicate. All of it, and the inbox claim, commit in one transaction before the
//! event is acknowledged.

use std::sync::Arc;

use chrono::{DateTime, Utc};
use rp_events::{ConsumerSpec, Event, inbox};
use rp_runtime::CancellationToken;
use sea_orm::{
    ActiveValue::Set,
    ColumnTrait, ConnectionTrait, DbErr, EntityTrait, QueryFilter, TryIntoModel as _,
    sea_query::{Expr, ExprTrait as _},
};
use uuid::Uuid;

use super::{NotifierCore, item_status, status};
use crate::{
    domain::{
        classify::{Labels, Severity, classify},
        grouping,
        routing::{self, Rule},
    },
    store::{channels, deliveries, items},
};

pub(crate) const CONSUMER: &str = "notifier";

/// Events handled at once. One at a time, each event's transaction (several round trips and a
/// commit) capped the notifier below 250 events/s on PostgreSQL.
const LANES: usize = 8;

/// Attempts in flight above which a new message waits for the dispatcher instead of being sent
/// by the consumer at once.
const AT_ONCE_MAX_IN_FLIGHT: usize = LANES;

/// What orders events: those about the same deployment (or incident) are handled one after
/// another; grouping and suppression tolerate any order across different ones.
fn lane_key(event: &Event) -> String {
    ["deployment_id", "incident_id"]
        .iter()
        .find_map(|key| event.data.get(*key).and_then(|v| v.as_str()).filter(|v| !v.is_empty()))
        .map_or_else(|| event.subject.clone(), str::to_owned)
}

pub async fn run(core: Arc<NotifierCore>, shutdown: CancellationToken) {
    let spec = ConsumerSpec::new(CONSUMER, "rp.>");
    let bus = core.bus.clone();
    inbox::run_consumer_in_lanes(
        bus,
        spec,
        LANES,
        lane_key,
        move |event| {
            let core = core.clone();
            async move { core.ingest(&event).await.map_err(|e| inbox::HandlerError::Retry(e.to_string())) }
        },
        shutdown,
    )
    .await;
}

/// A channel an event is routed to, under a rule.
struct Target<'a> {
    channel_id: Uuid,
    rule: &'a Rule,
    /// The channel's row when it is enabled, not rate-limited nor throttled: a message due now
    /// may be sent at once.
    sendable_at_once: Option<&'a channels::Model>,
}

/// A delivery the consumer claimed as it queued it, with its attempt and in-flight slot, and
/// what the attempt would otherwise read back: its channel and its one item.
struct ClaimedAtOnce {
    delivery: deliveries::Model,
    attempt_id: Uuid,
    slot: tokio::sync::OwnedSemaphorePermit,
    known: super::dispatch::Known,
}

/// A new item of `event` on a channel.
pub(crate) fn item(
    event: &Event,
    labels: &Labels,
    cloudevent: &str,
    channel_id: Uuid,
    rule_id: Option<Uuid>,
    dedup_key: String,
    now: DateTime<Utc>,
) -> items::ActiveModel {
    items::ActiveModel {
        id: Set(Uuid::now_v7()),
        delivery_id: Set(None),
        channel_id: Set(channel_id),
        rule_id: Set(rule_id),
        event_id: Set(event.id),
        event_type: Set(labels.event_type.clone()),
        subject: Set(labels.subject.clone()),
        severity: Set(labels.severity.as_str().to_owned()),
        app: Set(labels.app.clone()),
        environment: Set(labels.environment.clone()),
        deployment_id: Set(labels.deployment_id.clone()),
        incident_id: Set(labels.incident_id.clone()),
        dedup_key: Set(dedup_key),
        status: Set(item_status::QUEUED.into()),
        reason: Set(String::new()),
        event: Set(cloudevent.to_owned()),
        event_time: Set(event.time),
        created_at: Set(now),
    }
}

/// A new delivery of `labels` to a channel.
#[allow(clippy::too_many_arguments)]
pub(crate) fn delivery(
    id: Uuid,
    event: &Event,
    labels: &Labels,
    channel_id: Uuid,
    rule_id: Option<Uuid>,
    group_key: String,
    status: &str,
    due_at: DateTime<Utc>,
    now: DateTime<Utc>,
) -> deliveries::ActiveModel {
    deliveries::ActiveModel {
        id: Set(id),
        channel_id: Set(channel_id),
        rule_id: Set(rule_id),
        group_key: Set(group_key),
        status: Set(status.to_owned()),
        due_at: Set(due_at),
        attempts: Set(0),
        retry_base: Set(0),
        created_at: Set(now),
        delivered_at: Set(None),
        last_error: Set(String::new()),
        last_status_code: Set(0),
        lease_holder: Set(None),
        lease_expires_at: Set(None),
        event_id: Set(event.id),
        event_type: Set(labels.event_type.clone()),
        subject: Set(labels.subject.clone()),
        severity: Set(labels.severity.as_str().to_owned()),
        app: Set(labels.app.clone()),
        environment: Set(labels.environment.clone()),
        deployment_id: Set(labels.deployment_id.clone()),
        incident_id: Set(labels.incident_id.clone()),
        escalation_id: Set(String::new()),
        escalation_level: Set(0),
        item_count: Set(1),
        first_event_at: Set(event.time),
        updated_at: Set(now),
    }
}

impl NotifierCore {
    /// Handles one event (idempotent by event id).
    pub(crate) async fn ingest(self: &Arc<Self>, event: &Event) -> Result<(), DbErr> {
        let Some(labels) = classify(&event.event_type, &event.subject, &event.data) else {
            return Ok(());
        };
        let txn = self.db.begin_write().await?;
        if !inbox::claim(&txn, CONSUMER, event.id).await? {
            return Ok(());
        }
        let now = Self::now();
        let cloudevent = event.to_cloudevent().to_string();
        self.suppress_pending(&txn, event, &labels).await?;
        let mut escalated: Vec<Uuid> = Vec::new();
        match event.event_type.as_str() {
            "rp.incident.opened" => {
                escalated = self.start_escalations(&txn, event, &labels, &cloudevent, now).await?
            }
            "rp.incident.resolved" => self.resolve_escalations(&txn, &labels, now).await?,
            _ => {}
        }
        let config = self.routing.get(&txn).await?;
        let (rules, channels) = (&config.rules, &config.refs);
        let incident = labels.event_type.starts_with("rp.incident.");
        let mut at_once = Vec::new();
        let mut left_for_dispatcher = !escalated.is_empty() || incident;
        for (channel_id, index) in routing::route(rules, channels, &labels) {
            // An escalation level due at once tells these channels already, with the acknowledge link.
            if escalated.contains(&channel_id) {
                continue;
            }
            let sendable_at_once = config.sendable_at_once(channel_id, now);
            let target = Target { channel_id, rule: &rules[index], sendable_at_once };
            match self.queue(&txn, event, &labels, &cloudevent, target, now).await? {
                Some(claimed) => at_once.push(claimed),
                None => left_for_dispatcher = true,
            }
        }
        if incident {
            // Escalations emit events; nothing else here does, so the relay is left asleep.
            self.commit(txn).await?;
        } else {
            txn.commit().await?;
        }
        for claimed in at_once {
            let core = self.clone();
            tokio::spawn(async move {
                core.attempt_known(claimed.delivery, claimed.attempt_id, claimed.known).await;
                drop(claimed.slot);
            });
        }
        if left_for_dispatcher {
            self.wake.notify_one();
        }
        if !escalated.is_empty() || incident {
            self.escalations_changed.notify_one();
        }
        Ok(())
    }

    /// Takes pending notifications out of their groups when `event` makes them pointless
    /// (a rollback after "deployment succeeded"), as long as the group is not sent yet.
    async fn suppress_pending<C: ConnectionTrait>(
        &self,
        conn: &C,
        event: &Event,
        labels: &Labels,
    ) -> Result<(), DbErr> {
        let types = grouping::suppresses(&labels.event_type);
        if types.is_empty() || labels.deployment_id.is_empty() {
            return Ok(());
        }
        let pending = items::Entity::find()
            .filter(items::Column::DeploymentId.eq(labels.deployment_id.as_str()))
            .filter(items::Column::EventType.is_in(types))
            .filter(items::Column::Status.eq(item_status::QUEUED))
            .all(conn)
            .await?;
        for item in pending {
            let Some(delivery_id) = item.delivery_id else { continue };
            let taken = deliveries::Entity::update_many()
                .col_expr(deliveries::Column::ItemCount, Expr::col(deliveries::Column::ItemCount).sub(1))
                .col_expr(deliveries::Column::UpdatedAt, Expr::value(Self::now()))
                .filter(deliveries::Column::Id.eq(delivery_id))
                .filter(deliveries::Column::Status.eq(status::GROUPING))
                .exec(conn)
                .await?;
            if taken.rows_affected == 0 {
                continue; // already on its way
            }
            items::Entity::update_many()
                .col_expr(items::Column::Status, Expr::value(item_status::SUPPRESSED))
                .col_expr(
                    items::Column::Reason,
                    Expr::value(format!("superseded by {} ({})", labels.event_type, event.id)),
                )
                .filter(items::Column::Id.eq(item.id))
                .exec(conn)
                .await?;
            deliveries::Entity::update_many()
                .col_expr(deliveries::Column::Status, Expr::value(status::SUPPRESSED))
                .col_expr(
                    deliveries::Column::LastError,
                    Expr::value(format!("every event was superseded by {}", labels.event_type)),
                )
                .filter(deliveries::Column::Id.eq(delivery_id))
                .filter(deliveries::Column::Status.eq(status::GROUPING))
                .filter(deliveries::Column::ItemCount.lte(0))
                .exec(conn)
                .await?;
        }
        Ok(())
    }

    /// Puts `event` on a channel under its rule: a duplicate, suppressed, or into its group.
    /// A new message due at once is claimed here, in the same transaction (the dispatcher's
    /// claim pass is off the critical path), and returned to be sent after the commit.
    async fn queue<C: ConnectionTrait>(
        &self,
        conn: &C,
        event: &Event,
        labels: &Labels,
        cloudevent: &str,
        target: Target<'_>,
        now: DateTime<Utc>,
    ) -> Result<Option<ClaimedAtOnce>, DbErr> {
        let Target { channel_id, rule, sendable_at_once } = target;
        let dedup_key = grouping::dedup_key(labels, &event.data);
        let mut row = item(event, labels, cloudevent, channel_id, rule.id, dedup_key.clone(), now);
        let repeat = rule.repeat_interval();
        // No repeat interval, nothing to be a duplicate of.
        let earlier = if repeat.is_zero() {
            None
        } else {
            items::Entity::find()
                .filter(items::Column::ChannelId.eq(channel_id))
                .filter(items::Column::DedupKey.eq(dedup_key.as_str()))
                .filter(items::Column::Status.eq(item_status::QUEUED))
                .filter(items::Column::CreatedAt.gt(now - super::chrono_duration(repeat)))
                .one(conn)
                .await?
        };
        if let Some(earlier) = earlier {
            row.status = Set(item_status::DUPLICATE.into());
            row.reason = Set(format!(
                "the same notification was queued within the repeat interval (event {})",
                earlier.event_id
            ));
            items::Entity::insert(row).exec_without_returning(conn).await?;
            return Ok(None);
        }
        let suppressors = grouping::suppressed_by(&labels.event_type);
        if !suppressors.is_empty() && !labels.deployment_id.is_empty() {
            let later = items::Entity::find()
                .filter(items::Column::DeploymentId.eq(labels.deployment_id.as_str()))
                .filter(items::Column::EventType.is_in(suppressors.iter().copied()))
                .one(conn)
                .await?;
            if let Some(later) = later {
                row.status = Set(item_status::SUPPRESSED.into());
                row.reason = Set(format!("superseded by {} ({})", later.event_type, later.event_id));
                items::Entity::insert(row).exec_without_returning(conn).await?;
                return Ok(None);
            }
        }
        let group_key = grouping::group_key(&rule.group_by(), labels);
        let due = now + super::chrono_duration(rule.group_wait_for(labels.severity));
        let open = deliveries::Entity::find()
            .filter(deliveries::Column::ChannelId.eq(channel_id))
            .filter(deliveries::Column::GroupKey.eq(group_key.as_str()))
            .filter(deliveries::Column::Status.eq(status::GROUPING))
            .one(conn)
            .await?;
        let mut joined = None;
        if let Some(open) = open {
            let severity = Severity::parse(&open.severity).unwrap_or_default().max(labels.severity);
            // Compare-and-set: a replica may have just claimed the group for sending.
            let attached = deliveries::Entity::update_many()
                .col_expr(deliveries::Column::ItemCount, Expr::col(deliveries::Column::ItemCount).add(1))
                .col_expr(deliveries::Column::DueAt, Expr::value(Ord::min(open.due_at, due)))
                .col_expr(deliveries::Column::Severity, Expr::value(severity.as_str()))
                .col_expr(deliveries::Column::UpdatedAt, Expr::value(now))
                .filter(deliveries::Column::Id.eq(open.id))
                .filter(deliveries::Column::Status.eq(status::GROUPING))
                .exec(conn)
                .await?;
            if attached.rows_affected == 1 {
                joined = Some(open.id);
                // A message that carries an incident's event is about that incident (its
                // delivery events say so, and incident timelines record it), whichever event
                // opened the group.
                if open.incident_id.is_empty() && !labels.incident_id.is_empty() {
                    deliveries::Entity::update_many()
                        .col_expr(deliveries::Column::IncidentId, Expr::value(labels.incident_id.as_str()))
                        .filter(deliveries::Column::Id.eq(open.id))
                        .exec(conn)
                        .await?;
                }
            }
        }
        let mut claimed = None;
        let delivery_id = match joined {
            Some(id) => id,
            None => {
                let id = Uuid::now_v7();
                let mut new =
                    delivery(id, event, labels, channel_id, rule.id, group_key, status::GROUPING, due, now);
                // Only while few attempts are in flight: under a burst the dispatcher's batched
                // claims cost the database less than one claim per event.
                let busy =
                    self.settings.max_in_flight - self.slots.available_permits() >= AT_ONCE_MAX_IN_FLIGHT;
                let slot = sendable_at_once
                    .filter(|_| due <= now && !busy)
                    .and_then(|channel| Some((channel, self.slots.clone().try_acquire_owned().ok()?)));
                if let Some((channel, slot)) = slot {
                    new.status = Set(status::SENDING.into());
                    new.attempts = Set(1);
                    new.lease_holder = Set(Some(self.replica.clone()));
                    new.lease_expires_at = Set(Some(now + super::chrono_duration(self.settings.lease)));
                    let model = new.clone().try_into_model()?;
                    deliveries::Entity::insert(new).exec_without_returning(conn).await?;
                    let attempt_id = self.log_attempt_start(conn, &model, false, now).await?;
                    let mut only_item = row.clone();
                    only_item.delivery_id = Set(Some(id));
                    let known = super::dispatch::Known {
                        channel: channel.clone(),
                        items: vec![only_item.try_into_model()?],
                    };
                    claimed = Some(ClaimedAtOnce { delivery: model, attempt_id, slot, known });
                } else {
                    deliveries::Entity::insert(new).exec_without_returning(conn).await?;
                }
                id
            }
        };
        row.delivery_id = Set(Some(delivery_id));
        items::Entity::insert(row).exec_without_returning(conn).await?;
        Ok(claimed)
    }
}
