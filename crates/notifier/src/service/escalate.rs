//! Escalations: an incident matching a policy starts one; each level tells its channels (with
//! the acknowledge link) when its delay has passed, until someone acknowledges, the incident is
//! resolved, or the levels run out. Each level fires once however many replicas run: firing is
//! a compare-and-set on the number of levels fired.

use std::{sync::Arc, time::Duration};

use chrono::{DateTime, Utc};
use rp_events::Event;
use rp_identity::Principal;
use rp_proto::events::v1 as ev;
use rp_runtime::{CancellationToken, ServiceError};
use sea_orm::{
    ActiveValue::Set, ColumnTrait, ConnectionTrait, DbErr, EntityTrait, QueryFilter, QueryOrder, QuerySelect,
    sea_query::Expr,
};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::{NotifierCore, escalation_status as st, ingest, status};
use crate::{
    domain::{
        classify::Labels,
        escalation::{self, Level},
    },
    metrics as names,
    store::{deliveries, escalation_policies, escalations, list},
};

/// One fired level, as kept in `escalations.steps`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Step {
    pub level: i32,
    pub name: String,
    pub fired_at: DateTime<Utc>,
    pub delivery_ids: Vec<String>,
}

pub async fn run(core: Arc<NotifierCore>, shutdown: CancellationToken) {
    let idle = core.settings.dispatch_interval;
    while !shutdown.is_cancelled() {
        let next = match core.fire_due_levels().await {
            Ok(next) => next,
            Err(err) => {
                tracing::warn!(error = %err, "escalation pass failed; retrying");
                Some(Utc::now() + chrono::Duration::seconds(1))
            }
        };
        let wait =
            next.map(|at| (at - Utc::now()).to_std().unwrap_or(Duration::ZERO)).unwrap_or(idle).min(idle);
        tokio::select! {
            _ = shutdown.cancelled() => break,
            _ = core.escalations_changed.notified() => {}
            _ = tokio::time::sleep(wait) => {}
        }
    }
}

pub(crate) fn policy_of(row: &escalation_policies::Model) -> escalation::Policy {
    escalation::Policy {
        name: row.name.clone(),
        severities: list(&row.severities)
            .iter()
            .filter_map(|s| crate::domain::classify::Severity::parse(s))
            .collect(),
        apps: list(&row.apps),
        environments: list(&row.environments),
        levels: serde_json::from_str(&row.levels).unwrap_or_default(),
    }
}

fn levels_of(row: &escalations::Model) -> Vec<Level> {
    serde_json::from_str(&row.levels).unwrap_or_default()
}

pub(crate) fn steps_of(row: &escalations::Model) -> Vec<Step> {
    serde_json::from_str(&row.steps).unwrap_or_default()
}

impl NotifierCore {
    /// Fires every level that is due; returns when the next one is.
    async fn fire_due_levels(&self) -> Result<Option<DateTime<Utc>>, DbErr> {
        let now = Self::now();
        let due = escalations::Entity::find()
            .filter(escalations::Column::Status.eq(st::ACTIVE))
            .filter(escalations::Column::NextLevelAt.lte(now))
            .order_by_asc(escalations::Column::NextLevelAt)
            .limit(100)
            .all(&self.db.conn)
            .await?;
        for row in due {
            let txn = self.db.begin_write().await?;
            let fired = self.fire_level(&txn, &row, now).await?;
            self.commit(txn).await?;
            if fired.is_some() {
                self.wake.notify_one();
            }
        }
        let next = escalations::Entity::find()
            .filter(escalations::Column::Status.eq(st::ACTIVE))
            .filter(escalations::Column::NextLevelAt.is_not_null())
            .order_by_asc(escalations::Column::NextLevelAt)
            .one(&self.db.conn)
            .await?;
        Ok(next.and_then(|row| row.next_level_at))
    }

    /// Fires the next level of `row` (as read): deliveries to its channels, the escalation
    /// moved on. Returns the channels told, or `None` when another replica (or an
    /// acknowledgement) got there first.
    pub(crate) async fn fire_level<C: ConnectionTrait>(
        &self,
        conn: &C,
        row: &escalations::Model,
        now: DateTime<Utc>,
    ) -> Result<Option<Vec<Uuid>>, DbErr> {
        let levels = levels_of(row);
        let index = row.levels_fired as usize;
        let Some(level) = levels.get(index) else { return Ok(None) };
        let number = index as i32 + 1;
        let last = index + 1 == levels.len();
        let next_at = escalation::due_at(row.created_at, &levels, index + 1);
        let targets = self.level_channels(conn, level).await?;
        let event = serde_json::from_str(&row.event).ok().and_then(|v| Event::from_cloudevent(&v));
        let Some(event) = event else {
            tracing::error!(escalation = %row.id, "escalation without a readable incident event");
            return Ok(None);
        };
        let labels = crate::domain::classify::classify(&event.event_type, &event.subject, &event.data)
            .unwrap_or_else(|| Labels { incident_id: row.incident_id.clone(), ..Labels::default() });
        let mut delivery_ids = Vec::new();
        let mut steps = steps_of(row);
        // Compare-and-set first: if this loses, nothing else is written.
        let moved = escalations::Entity::update_many()
            .col_expr(escalations::Column::LevelsFired, Expr::value(number))
            .col_expr(escalations::Column::NextLevelAt, Expr::value(next_at))
            .col_expr(escalations::Column::Status, Expr::value(if last { st::EXHAUSTED } else { st::ACTIVE }))
            .filter(escalations::Column::Id.eq(row.id))
            .filter(escalations::Column::Status.eq(st::ACTIVE))
            .filter(escalations::Column::LevelsFired.eq(row.levels_fired))
            .exec(conn)
            .await?;
        if moved.rows_affected == 0 {
            return Ok(None);
        }
        for channel_id in &targets {
            let id = Uuid::now_v7();
            let key = format!("escalation:{}:{number}", row.id);
            let mut delivery = ingest::delivery(
                id,
                &event,
                &labels,
                *channel_id,
                None,
                key.clone(),
                status::PENDING,
                now,
                now,
            );
            delivery.escalation_id = Set(row.id.to_string());
            delivery.escalation_level = Set(number);
            deliveries::Entity::insert(delivery).exec_without_returning(conn).await?;
            let mut item = ingest::item(&event, &labels, &row.event, *channel_id, None, key, now);
            item.delivery_id = Set(Some(id));
            crate::store::items::Entity::insert(item).exec_without_returning(conn).await?;
            delivery_ids.push(id.to_string());
        }
        steps.push(Step {
            level: number,
            name: level.name.clone(),
            fired_at: now,
            delivery_ids: delivery_ids.clone(),
        });
        escalations::Entity::update_many()
            .col_expr(
                escalations::Column::Steps,
                Expr::value(serde_json::to_string(&steps).unwrap_or_default()),
            )
            .filter(escalations::Column::Id.eq(row.id))
            .exec(conn)
            .await?;
        if targets.is_empty() {
            tracing::warn!(escalation = %row.id, level = number, "escalation level has no enabled channel");
        }
        let mut payload = escalation_event(row, if last { st::EXHAUSTED } else { st::ACTIVE }, "");
        payload.level = number;
        payload.level_name = level.name.clone();
        payload.delivery_ids = delivery_ids;
        self.emit(conn, "rp.escalation.level_fired", format!("escalations/{}", row.id), &payload).await?;
        metrics::counter!(names::ESCALATIONS_TOTAL, "transition" => "level_fired").increment(1);
        if last {
            self.emit(conn, "rp.escalation.exhausted", format!("escalations/{}", row.id), &payload).await?;
            metrics::counter!(names::ESCALATIONS_TOTAL, "transition" => "exhausted").increment(1);
        }
        Ok(Some(targets))
    }

    async fn level_channels<C: ConnectionTrait>(&self, conn: &C, level: &Level) -> Result<Vec<Uuid>, DbErr> {
        let config = self.routing.get(conn).await?;
        Ok(config
            .refs
            .iter()
            .filter(|c| c.enabled)
            .filter(|c| {
                level.channel_ids.contains(&c.id.to_string()) || level.channel_kinds.contains(&c.kind)
            })
            .map(|c| c.id)
            .collect())
    }

    /// Starts the escalations an opened incident matches and fires their immediate levels;
    /// returns the channels those told.
    pub(crate) async fn start_escalations<C: ConnectionTrait>(
        &self,
        conn: &C,
        event: &Event,
        labels: &Labels,
        cloudevent: &str,
        now: DateTime<Utc>,
    ) -> Result<Vec<Uuid>, DbErr> {
        if labels.incident_id.is_empty() {
            return Ok(Vec::new());
        }
        let policies = escalation_policies::Entity::find()
            .filter(escalation_policies::Column::Enabled.eq(true))
            .order_by_asc(escalation_policies::Column::CreatedAt)
            .all(conn)
            .await?;
        let mut told = Vec::new();
        for policy_row in policies {
            let policy = policy_of(&policy_row);
            if !policy.matches(labels) || policy.levels.is_empty() {
                continue;
            }
            let exists = escalations::Entity::find()
                .filter(escalations::Column::PolicyId.eq(policy_row.id))
                .filter(escalations::Column::IncidentId.eq(labels.incident_id.as_str()))
                .one(conn)
                .await?;
            if exists.is_some() {
                continue;
            }
            let summary =
                event.data.get("summary").and_then(|s| s.as_str()).unwrap_or(&labels.summary).to_owned();
            let row = escalations::Model {
                id: Uuid::now_v7(),
                policy_id: policy_row.id,
                policy_name: policy_row.name.clone(),
                incident_id: labels.incident_id.clone(),
                deployment_id: labels.deployment_id.clone(),
                app: labels.app.clone(),
                environment: labels.environment.clone(),
                severity: labels.severity.as_str().to_owned(),
                summary,
                status: st::ACTIVE.into(),
                levels_fired: 0,
                levels: policy_row.levels.clone(),
                next_level_at: escalation::due_at(now, &policy.levels, 0),
                created_at: now,
                acknowledged_at: None,
                acknowledged_by: String::new(),
                resolved_at: None,
                steps: "[]".into(),
                event: cloudevent.to_owned(),
            };
            escalations::Entity::insert(escalations::ActiveModel::from(row.clone()))
                .exec_without_returning(conn)
                .await?;
            self.emit(
                conn,
                "rp.escalation.started",
                format!("escalations/{}", row.id),
                &escalation_event(&row, st::ACTIVE, ""),
            )
            .await?;
            metrics::counter!(names::ESCALATIONS_TOTAL, "transition" => "started").increment(1);
            // Levels due at once fire in this transaction.
            let mut current = row;
            while current.next_level_at.is_some_and(|at| at <= now) {
                let Some(channels) = self.fire_level(conn, &current, now).await? else { break };
                told.extend(channels);
                let Some(reloaded) = escalations::Entity::find_by_id(current.id).one(conn).await? else {
                    break;
                };
                if reloaded.status != st::ACTIVE {
                    break;
                }
                current = reloaded;
            }
        }
        self.escalations_changed.notify_one();
        Ok(told)
    }

    /// Ends the escalations of a resolved incident.
    pub(crate) async fn resolve_escalations<C: ConnectionTrait>(
        &self,
        conn: &C,
        labels: &Labels,
        now: DateTime<Utc>,
    ) -> Result<(), DbErr> {
        if labels.incident_id.is_empty() {
            return Ok(());
        }
        let open = escalations::Entity::find()
            .filter(escalations::Column::IncidentId.eq(labels.incident_id.as_str()))
            .filter(escalations::Column::Status.is_in([st::ACTIVE, st::EXHAUSTED, st::ACKNOWLEDGED]))
            .all(conn)
            .await?;
        for row in open {
            escalations::Entity::update_many()
                .col_expr(escalations::Column::Status, Expr::value(st::RESOLVED))
                .col_expr(escalations::Column::ResolvedAt, Expr::value(Some(now)))
                .col_expr(escalations::Column::NextLevelAt, Expr::value(Option::<DateTime<Utc>>::None))
                .filter(escalations::Column::Id.eq(row.id))
                .exec(conn)
                .await?;
            self.emit(
                conn,
                "rp.escalation.resolved",
                format!("escalations/{}", row.id),
                &escalation_event(&row, st::RESOLVED, ""),
            )
            .await?;
            metrics::counter!(names::ESCALATIONS_TOTAL, "transition" => "resolved").increment(1);
        }
        Ok(())
    }

    /// Acknowledges an escalation (idempotent): no further level fires.
    pub async fn acknowledge(
        &self,
        id: Uuid,
        principal: &Principal,
        via: &str,
        note: &str,
    ) -> super::Result<escalations::Model> {
        let txn = self.db.begin_write().await?;
        let row = escalations::Entity::find_by_id(id)
            .one(&txn)
            .await?
            .ok_or_else(|| ServiceError::NotFound(format!("escalation {id} not found")))?;
        if row.status == st::ACKNOWLEDGED {
            return Ok(row);
        }
        if row.status == st::RESOLVED {
            return Err(ServiceError::Precondition(
                "the incident is resolved; nothing to acknowledge".into(),
            ));
        }
        let now = Self::now();
        let who = match (principal.email.is_empty(), via) {
            (_, "link") => "acknowledge link".to_owned(),
            (true, _) => principal.actor_id().to_owned(),
            (false, _) => principal.email.clone(),
        };
        let who = if note.is_empty() { who } else { format!("{who}: {note}") };
        let updated = escalations::Entity::update_many()
            .col_expr(escalations::Column::Status, Expr::value(st::ACKNOWLEDGED))
            .col_expr(escalations::Column::AcknowledgedAt, Expr::value(Some(now)))
            .col_expr(escalations::Column::AcknowledgedBy, Expr::value(who.clone()))
            .col_expr(escalations::Column::NextLevelAt, Expr::value(Option::<DateTime<Utc>>::None))
            .filter(escalations::Column::Id.eq(id))
            .filter(escalations::Column::Status.is_in([st::ACTIVE, st::EXHAUSTED]))
            .exec(&txn)
            .await?;
        if updated.rows_affected == 0 {
            return Err(ServiceError::Aborted("the escalation changed meanwhile; try again".into()));
        }
        let mut payload = escalation_event(&row, st::ACKNOWLEDGED, via);
        payload.actor = Some(principal.actor());
        self.emit(&txn, "rp.escalation.acknowledged", format!("escalations/{id}"), &payload).await?;
        self.commit(txn).await?;
        metrics::counter!(names::ESCALATIONS_TOTAL, "transition" => "acknowledged").increment(1);
        self.escalations_changed.notify_one();
        escalations::Entity::find_by_id(id)
            .one(&self.db.conn)
            .await?
            .ok_or_else(|| ServiceError::NotFound(format!("escalation {id} not found")))
    }

    /// Acknowledges through a signed link.
    pub async fn acknowledge_by_token(&self, token: &str) -> super::Result<escalations::Model> {
        let id = self
            .key
            .verify_ack_token(token)
            .ok_or_else(|| ServiceError::NotFound("this acknowledge link is not valid".into()))?;
        let mut principal = Principal::system();
        principal.subject = "acknowledge-link".into();
        self.acknowledge(id, &principal, "link", "").await
    }
}

fn escalation_event(row: &escalations::Model, status: &str, via: &str) -> ev::EscalationChanged {
    ev::EscalationChanged {
        actor: Some(Principal::system().actor()),
        escalation_id: row.id.to_string(),
        policy_id: row.policy_id.to_string(),
        incident_id: row.incident_id.clone(),
        app: row.app.clone(),
        environment: row.environment.clone(),
        severity: row.severity.clone(),
        status: status.to_owned(),
        level: row.levels_fired,
        level_name: String::new(),
        delivery_ids: Vec::new(),
        via: via.to_owned(),
    }
}
