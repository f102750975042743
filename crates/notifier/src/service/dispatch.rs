//! The dispatcher: claims due deliveries (compare-and-set with a lease, so of several replicas
//! exactly one makes an attempt; a replica that dies mid-attempt loses its lease and another
//! retries with the same `webhook-id`), sends them, logs every attempt, and schedules the next
//! one (backoff with jitter, or the receiver's `Retry-After`), dead-letters, or disables a
//! channel whose receiver answered 410 Gone. Per-channel rate limits are counted over the
//! attempt log, so they hold across replicas.

use std::{collections::HashMap, sync::Arc, time::Duration};

use chrono::{DateTime, Utc};
use rand::Rng as _;
use rp_proto::events::v1 as ev;
use rp_runtime::CancellationToken;
use sea_orm::{
    ActiveValue::Set,
    ColumnTrait, Condition, ConnectionTrait, DbErr, EntityTrait, PaginatorTrait, QueryFilter, QueryOrder,
    QuerySelect,
    sea_query::{Expr, ExprTrait as _},
};
use tokio::task::JoinSet;
use uuid::Uuid;

use super::{NotifierCore, escalate::steps_of, item_status, status};
use crate::{
    channels::{Answer, EscalationInfo, SendError},
    metrics as names,
    store::{attempts, channels, deliveries, escalations, items},
};

/// Attempt outcomes, as logged.
pub mod outcome {
    pub const SENDING: &str = "sending";
    pub const SUCCESS: &str = "success";
    pub const FAILURE: &str = "failure";
    pub const RATE_LIMITED: &str = "rate_limited";
    pub const GONE: &str = "gone";
    pub const REFUSED: &str = "refused";
    pub const ABANDONED: &str = "abandoned";
    /// Nothing was sent: every event of the message had been suppressed.
    pub const SUPPRESSED: &str = "suppressed";
}

/// A claimed delivery's channel and queued items, as read in the transaction that claimed it.
pub(super) struct Known {
    pub channel: channels::Model,
    pub items: Vec<items::Model>,
}

/// What an attempt came to.
#[derive(Debug)]
enum Outcome {
    Delivered(Answer),
    /// Worth another attempt (unless the schedule is exhausted).
    Failed {
        answer: Option<Answer>,
        error: String,
        retry_after: Option<Duration>,
        result: &'static str,
    },
    /// The receiver answered 410 Gone: the channel is disabled.
    Gone(Answer),
    /// Never worth another attempt.
    Dead {
        answer: Option<Answer>,
        error: String,
        result: &'static str,
    },
    /// Nothing left to send.
    Suppressed,
}

pub async fn run(core: Arc<NotifierCore>, shutdown: CancellationToken) {
    let slots = core.slots.clone();
    let mut in_flight: JoinSet<()> = JoinSet::new();
    let idle = core.settings.dispatch_interval;
    loop {
        while in_flight.try_join_next().is_some() {}
        let free = slots.available_permits();
        let mut next_due = None;
        if free > 0 {
            match core.claim_due(free).await {
                Ok((claimed, next)) => {
                    next_due = next;
                    for (delivery, attempt_id) in claimed {
                        let Ok(permit) = slots.clone().acquire_owned().await else { break };
                        let core = core.clone();
                        in_flight.spawn(async move {
                            core.attempt(delivery, attempt_id).await;
                            drop(permit);
                        });
                    }
                }
                Err(err) => tracing::warn!(error = %err, "cannot claim deliveries; retrying"),
            }
        }
        let wait = next_due
            .map(|at: DateTime<Utc>| (at - Utc::now()).to_std().unwrap_or(Duration::ZERO))
            .unwrap_or(idle)
            .min(idle);
        tokio::select! {
            _ = shutdown.cancelled() => break,
            _ = core.wake.notified() => {}
            _ = tokio::time::sleep(wait) => {}
            Some(_) = in_flight.join_next(), if free == 0 => {}
        }
    }
    // Let attempts in flight record their answers; a lease covers any that cannot.
    let grace = core.settings.request_timeout + Duration::from_secs(1);
    let _ = tokio::time::timeout(grace, async {
        while in_flight.join_next().await.is_some() {}
        // Attempts the consumer started hold slots too.
        let _ = slots.acquire_many(core.settings.max_in_flight as u32).await;
    })
    .await;
}

fn due_condition(now: DateTime<Utc>) -> Condition {
    Condition::any()
        .add(
            Condition::all()
                .add(deliveries::Column::Status.is_in(status::CLAIMABLE))
                .add(deliveries::Column::DueAt.lte(now)),
        )
        .add(
            Condition::all()
                .add(deliveries::Column::Status.eq(status::SENDING))
                .add(deliveries::Column::LeaseExpiresAt.lt(now)),
        )
}

impl NotifierCore {
    /// Claims up to `limit` due deliveries whose channels may be called now; returns them and
    /// when the next delivery is due.
    async fn claim_due(
        &self,
        limit: usize,
    ) -> Result<(Vec<(deliveries::Model, Uuid)>, Option<DateTime<Utc>>), DbErr> {
        let now = Self::now();
        let conn = &self.db.conn;
        let candidates = deliveries::Entity::find()
            .filter(due_condition(now))
            .order_by_asc(deliveries::Column::DueAt)
            // A stable order: replicas claiming together lock rows in the same order.
            .order_by_asc(deliveries::Column::Id)
            .limit(limit as u64 * 2)
            .all(conn)
            .await?;
        let mut channel_rows: HashMap<Uuid, Option<channels::Model>> = HashMap::new();
        let mut window_counts: HashMap<Uuid, u64> = HashMap::new();
        let mut claimed = Vec::new();
        let mut eligible = Vec::new();
        for candidate in candidates {
            if eligible.len() >= limit {
                break;
            }
            if let std::collections::hash_map::Entry::Vacant(entry) = channel_rows.entry(candidate.channel_id)
            {
                entry.insert(channels::Entity::find_by_id(candidate.channel_id).one(conn).await?);
            }
            if let Some(Some(channel)) = channel_rows.get(&candidate.channel_id) {
                if let Some(until) = channel.throttled_until.filter(|until| *until > now) {
                    self.defer(&candidate, until).await?;
                    continue;
                }
                if channel.rate_limit_per_minute > 0 {
                    let window_start = now - chrono::Duration::seconds(60);
                    let used = match window_counts.get(&channel.id) {
                        Some(used) => *used,
                        None => {
                            attempts::Entity::find()
                                .filter(attempts::Column::ChannelId.eq(channel.id))
                                .filter(attempts::Column::StartedAt.gt(window_start))
                                .count(conn)
                                .await?
                        }
                    };
                    if used >= channel.rate_limit_per_minute as u64 {
                        let oldest = attempts::Entity::find()
                            .filter(attempts::Column::ChannelId.eq(channel.id))
                            .filter(attempts::Column::StartedAt.gt(window_start))
                            .order_by_asc(attempts::Column::StartedAt)
                            .one(conn)
                            .await?;
                        let free_at = oldest.map_or(now, |a| a.started_at) + chrono::Duration::seconds(60);
                        window_counts.insert(channel.id, used);
                        self.defer(&candidate, Ord::max(free_at, now + chrono::Duration::milliseconds(10)))
                            .await?;
                        continue;
                    }
                    window_counts.insert(channel.id, used + 1);
                }
            }
            eligible.push(candidate);
        }
        // One transaction for the pass: each claim a compare-and-set, its attempt logged at once
        // (so the next pass, and other replicas, count it against the rate limit).
        if !eligible.is_empty() {
            let lease_until = now + super::chrono_duration(self.settings.lease);
            let txn = self.db.begin_write().await?;
            for candidate in eligible {
                let taken = deliveries::Entity::update_many()
                    .col_expr(deliveries::Column::Status, Expr::value(status::SENDING))
                    .col_expr(deliveries::Column::LeaseHolder, Expr::value(Some(self.replica.clone())))
                    .col_expr(deliveries::Column::LeaseExpiresAt, Expr::value(Some(lease_until)))
                    .col_expr(deliveries::Column::Attempts, Expr::col(deliveries::Column::Attempts).add(1))
                    .col_expr(deliveries::Column::UpdatedAt, Expr::value(now))
                    .filter(deliveries::Column::Id.eq(candidate.id))
                    .filter(due_condition(now))
                    .exec(&txn)
                    .await?;
                if taken.rows_affected == 1 {
                    let taken_over = candidate.status == status::SENDING;
                    let mut delivery = candidate;
                    delivery.attempts += 1;
                    delivery.status = status::SENDING.into();
                    delivery.lease_holder = Some(self.replica.clone());
                    delivery.lease_expires_at = Some(lease_until);
                    let attempt_id = self.log_attempt_start(&txn, &delivery, taken_over, now).await?;
                    claimed.push((delivery, attempt_id));
                }
            }
            txn.commit().await?;
        }
        let next_due = deliveries::Entity::find()
            .filter(deliveries::Column::Status.is_in(status::CLAIMABLE))
            .order_by_asc(deliveries::Column::DueAt)
            .one(conn)
            .await?
            .map(|d| d.due_at);
        let next_expiry = deliveries::Entity::find()
            .filter(deliveries::Column::Status.eq(status::SENDING))
            .order_by_asc(deliveries::Column::LeaseExpiresAt)
            .one(conn)
            .await?
            .and_then(|d| d.lease_expires_at);
        let next = match (next_due, next_expiry) {
            (Some(a), Some(b)) => Some(Ord::min(a, b)),
            (a, b) => a.or(b),
        };
        Ok((claimed, next))
    }

    /// Moves a delivery that may not be sent yet to `until`.
    async fn defer(&self, delivery: &deliveries::Model, until: DateTime<Utc>) -> Result<(), DbErr> {
        deliveries::Entity::update_many()
            .col_expr(deliveries::Column::DueAt, Expr::value(until))
            .filter(deliveries::Column::Id.eq(delivery.id))
            .filter(deliveries::Column::Status.is_in(status::CLAIMABLE))
            .exec(&self.db.conn)
            .await?;
        Ok(())
    }

    /// Logs the start of an attempt (claimed just now); an earlier attempt still "sending" was
    /// abandoned by a replica that stopped.
    pub(super) async fn log_attempt_start<C: ConnectionTrait>(
        &self,
        conn: &C,
        delivery: &deliveries::Model,
        taken_over: bool,
        now: DateTime<Utc>,
    ) -> Result<Uuid, DbErr> {
        if taken_over {
            attempts::Entity::update_many()
                .col_expr(attempts::Column::Outcome, Expr::value(outcome::ABANDONED))
                .col_expr(
                    attempts::Column::Error,
                    Expr::value("the replica making this attempt stopped before recording the answer"),
                )
                .filter(attempts::Column::DeliveryId.eq(delivery.id))
                .filter(attempts::Column::Outcome.eq(outcome::SENDING))
                .exec(conn)
                .await?;
        }
        let attempt_id = Uuid::now_v7();
        attempts::Entity::insert(attempts::ActiveModel {
            id: Set(attempt_id),
            delivery_id: Set(delivery.id),
            channel_id: Set(delivery.channel_id),
            attempt: Set(delivery.attempts),
            started_at: Set(now),
            latency_ms: Set(0),
            status_code: Set(0),
            outcome: Set(outcome::SENDING.into()),
            error: Set(String::new()),
            response_excerpt: Set(String::new()),
            replica: Set(self.replica.clone()),
        })
        .exec_without_returning(conn)
        .await?;
        Ok(attempt_id)
    }

    /// Makes one attempt of a claimed delivery and records it.
    pub(super) async fn attempt(&self, delivery: deliveries::Model, attempt_id: Uuid) {
        self.attempt_known(delivery, attempt_id, None).await;
    }

    /// Makes one attempt of a delivery whose channel and items the caller read in the
    /// transaction that claimed it (`None`: read them now).
    pub(super) async fn attempt_known(
        &self,
        delivery: deliveries::Model,
        attempt_id: Uuid,
        known: impl Into<Option<Known>>,
    ) {
        if let Err(err) = self.try_attempt(&delivery, attempt_id, known.into()).await {
            // The lease expires and the attempt is made again.
            tracing::warn!(delivery = %delivery.id, error = %err, "delivery attempt not recorded");
        }
    }

    async fn try_attempt(
        &self,
        delivery: &deliveries::Model,
        attempt_id: Uuid,
        known: Option<Known>,
    ) -> Result<(), DbErr> {
        let conn = &self.db.conn;
        let started_at = Self::now();
        let (channel, queued) = match known {
            Some(Known { channel, items }) => (Some(channel), items),
            None => (
                channels::Entity::find_by_id(delivery.channel_id).one(conn).await?,
                items::Entity::find()
                    .filter(items::Column::DeliveryId.eq(delivery.id))
                    .filter(items::Column::Status.eq(item_status::QUEUED))
                    .order_by_asc(items::Column::EventTime)
                    .order_by_asc(items::Column::Id)
                    .all(conn)
                    .await?,
            ),
        };
        let event_ids: Vec<String> = queued.iter().map(|i| i.event_id.to_string()).collect();
        let outcome = match &channel {
            None => Outcome::Dead {
                answer: None,
                error: "the channel was deleted".into(),
                result: outcome::FAILURE,
            },
            Some(row) if !row.enabled => Outcome::Dead {
                answer: None,
                error: format!("the channel is disabled{}", reason_suffix(&row.disabled_reason)),
                result: outcome::FAILURE,
            },
            Some(_) if queued.is_empty() => Outcome::Suppressed,
            Some(row) => match self.resolve_channel(row) {
                Err(error) => Outcome::Dead { answer: None, error, result: outcome::FAILURE },
                Ok(resolved) => {
                    let escalation = self.escalation_info(delivery).await?;
                    let message = self.message(delivery, &queued, &resolved, escalation);
                    let budget = self.settings.request_timeout + Duration::from_secs(2);
                    let sent = tokio::time::timeout(budget, self.senders.send(&resolved, &message))
                        .await
                        .unwrap_or_else(|_| Err(SendError::Transient("timed out".into())));
                    self.judge(sent)
                }
            },
        };
        self.record(delivery, channel.as_ref(), attempt_id, started_at, outcome, event_ids).await
    }

    async fn escalation_info(&self, delivery: &deliveries::Model) -> Result<Option<EscalationInfo>, DbErr> {
        let Ok(id) = Uuid::parse_str(&delivery.escalation_id) else { return Ok(None) };
        let Some(row) = escalations::Entity::find_by_id(id).one(&self.db.conn).await? else {
            return Ok(None);
        };
        let levels: Vec<crate::domain::escalation::Level> =
            serde_json::from_str(&row.levels).unwrap_or_default();
        let name = steps_of(&row)
            .into_iter()
            .find(|s| s.level == delivery.escalation_level)
            .map(|s| s.name)
            .unwrap_or_default();
        Ok(Some(EscalationInfo {
            id: row.id.to_string(),
            level: delivery.escalation_level,
            levels: levels.len() as i32,
            name,
            policy: row.policy_name,
        }))
    }

    fn judge(&self, sent: Result<Answer, SendError>) -> Outcome {
        match sent {
            Ok(answer) if (200..300).contains(&answer.status_code) => Outcome::Delivered(answer),
            Ok(answer) if answer.status_code == 410 => Outcome::Gone(answer),
            Ok(answer) => {
                let rate_limited = matches!(answer.status_code, 429 | 503);
                let retry_after = answer
                    .retry_after
                    .as_deref()
                    .filter(|_| rate_limited)
                    .and_then(|value| self.settings.retry.retry_after(value, Utc::now()));
                Outcome::Failed {
                    error: format!("the receiver answered {}", answer.status_code),
                    retry_after,
                    result: if answer.status_code == 429 { outcome::RATE_LIMITED } else { outcome::FAILURE },
                    answer: Some(answer),
                }
            }
            Err(SendError::Transient(error)) => {
                Outcome::Failed { answer: None, error, retry_after: None, result: outcome::FAILURE }
            }
            Err(SendError::Refused(error)) => Outcome::Dead { answer: None, error, result: outcome::REFUSED },
            Err(SendError::Permanent(error)) => {
                Outcome::Dead { answer: None, error, result: outcome::FAILURE }
            }
        }
    }

    #[allow(clippy::too_many_arguments)]
    async fn record(
        &self,
        delivery: &deliveries::Model,
        channel: Option<&channels::Model>,
        attempt_id: Uuid,
        started_at: DateTime<Utc>,
        result: Outcome,
        event_ids: Vec<String>,
    ) -> Result<(), DbErr> {
        let now = Self::now();
        let elapsed_ms = Ord::max((now - started_at).num_milliseconds(), 0);
        let (answer, logged_outcome, error) = match &result {
            Outcome::Delivered(answer) => (Some(answer), outcome::SUCCESS, String::new()),
            Outcome::Failed { answer, error, result, .. } => (answer.as_ref(), *result, error.clone()),
            Outcome::Gone(answer) => {
                (Some(answer), outcome::GONE, "the receiver answered 410 Gone".to_owned())
            }
            Outcome::Dead { answer, error, result } => (answer.as_ref(), *result, error.clone()),
            Outcome::Suppressed => (None, outcome::SUPPRESSED, "nothing left to send".to_owned()),
        };
        let latency_ms = answer.map_or(elapsed_ms, |a| a.latency.as_millis() as i64);
        let status_code = answer.map_or(0, |a| i32::from(a.status_code));
        let txn = self.db.begin_write().await?;
        attempts::Entity::update_many()
            .col_expr(attempts::Column::LatencyMs, Expr::value(latency_ms))
            .col_expr(attempts::Column::StatusCode, Expr::value(status_code))
            .col_expr(attempts::Column::Outcome, Expr::value(logged_outcome))
            .col_expr(attempts::Column::Error, Expr::value(error.clone()))
            .col_expr(
                attempts::Column::ResponseExcerpt,
                Expr::value(answer.map(|a| a.excerpt.clone()).unwrap_or_default()),
            )
            .filter(attempts::Column::Id.eq(attempt_id))
            .exec(&txn)
            .await?;
        let failed_since_replay = Ord::max(delivery.attempts - delivery.retry_base, 1) as u32;
        let (new_status, due_at, last_error) = match &result {
            Outcome::Delivered(_) => (status::DELIVERED, now, String::new()),
            Outcome::Suppressed => (status::SUPPRESSED, now, "every event was superseded".to_owned()),
            Outcome::Failed { retry_after, .. } => {
                let scheduled =
                    self.settings.retry.next_delay(failed_since_replay, rand::thread_rng().r#gen::<f64>());
                match scheduled {
                    None => (status::DEAD, now, format!("attempts exhausted; last: {error}")),
                    Some(wait) => {
                        let wait = retry_after.unwrap_or(wait);
                        (status::RETRYING, now + super::chrono_duration(wait), error.clone())
                    }
                }
            }
            Outcome::Gone(_) => {
                (status::DEAD, now, "the receiver answered 410 Gone; the channel is disabled".to_owned())
            }
            Outcome::Dead { .. } => (status::DEAD, now, error.clone()),
        };
        let moved = deliveries::Entity::update_many()
            .col_expr(deliveries::Column::Status, Expr::value(new_status))
            .col_expr(deliveries::Column::DueAt, Expr::value(due_at))
            .col_expr(deliveries::Column::LastError, Expr::value(last_error.clone()))
            .col_expr(deliveries::Column::LastStatusCode, Expr::value(status_code))
            .col_expr(deliveries::Column::LeaseHolder, Expr::value(Option::<String>::None))
            .col_expr(deliveries::Column::LeaseExpiresAt, Expr::value(Option::<DateTime<Utc>>::None))
            .col_expr(
                deliveries::Column::DeliveredAt,
                Expr::value(if new_status == status::DELIVERED { Some(now) } else { None }),
            )
            .col_expr(deliveries::Column::UpdatedAt, Expr::value(now))
            .filter(deliveries::Column::Id.eq(delivery.id))
            .filter(deliveries::Column::Status.eq(status::SENDING))
            .filter(deliveries::Column::LeaseHolder.eq(self.replica.as_str()))
            .exec(&txn)
            .await?;
        let (channel_name, channel_kind) =
            channel.map_or((String::new(), String::new()), |c| (c.name.clone(), c.kind.clone()));
        if moved.rows_affected == 0 {
            // The lease expired meanwhile and another replica owns the delivery: keep the log only.
            txn.commit().await?;
            tracing::warn!(delivery = %delivery.id, "lease lost during the attempt; another replica owns the delivery");
            return Ok(());
        }
        if !matches!(result, Outcome::Suppressed) {
            metrics::counter!(names::NOTIFICATIONS_SENT_TOTAL, "channel" => channel_name.clone(),
                "kind" => channel_kind.clone(), "result" => logged_outcome)
            .increment(1);
            metrics::histogram!(names::ATTEMPT_DURATION_SECONDS, "kind" => channel_kind.clone())
                .record(latency_ms as f64 / 1000.0);
        }
        if let (
            Outcome::Failed { result: outcome::RATE_LIMITED, retry_after: Some(wait), .. },
            Some(channel),
        ) = (&result, channel)
        {
            channels::Entity::update_many()
                .col_expr(
                    channels::Column::ThrottledUntil,
                    Expr::value(Some(now + super::chrono_duration(*wait))),
                )
                .filter(channels::Column::Id.eq(channel.id))
                .exec(&txn)
                .await?;
            super::routing_config::bump(&txn).await?;
        }
        let payload = |status_code: i32, error: String| ev::NotificationChanged {
            delivery_id: delivery.id.to_string(),
            channel_id: delivery.channel_id.to_string(),
            channel_name: channel_name.clone(),
            channel_kind: channel_kind.clone(),
            source_event_id: event_ids.first().cloned().unwrap_or_else(|| delivery.event_id.to_string()),
            source_event_type: delivery.event_type.clone(),
            source_subject: delivery.subject.clone(),
            source_event_ids: event_ids.clone(),
            attempts: delivery.attempts,
            latency_ms: Ord::max((now - delivery.first_event_at).num_milliseconds(), 0),
            attempt_latency_ms: latency_ms,
            status_code,
            error,
            incident_id: delivery.incident_id.clone(),
            app: delivery.app.clone(),
            environment: delivery.environment.clone(),
            severity: delivery.severity.clone(),
            escalation_id: delivery.escalation_id.clone(),
        };
        let subject = format!("deliveries/{}", delivery.id);
        match new_status {
            status::DELIVERED => {
                self.emit(&txn, "rp.notification.delivered", subject, &payload(status_code, String::new()))
                    .await?;
                metrics::histogram!(names::NOTIFICATION_LATENCY_SECONDS, "kind" => channel_kind.clone())
                    .record(Ord::max((now - delivery.first_event_at).num_milliseconds(), 0) as f64 / 1000.0);
            }
            status::DEAD => {
                self.emit(&txn, "rp.notification.failed", subject, &payload(status_code, last_error.clone()))
                    .await?;
                metrics::counter!(names::DEAD_LETTERS_TOTAL, "kind" => channel_kind.clone(), "reason" => logged_outcome)
                    .increment(1);
            }
            _ => {}
        }
        if let (Outcome::Gone(_), Some(channel)) = (&result, channel) {
            self.disable_gone_channel(&txn, channel, now).await?;
        }
        self.commit(txn).await?;
        if new_status == status::RETRYING {
            // The dispatcher may be asleep past the new due time.
            self.wake.notify_one();
        }
        Ok(())
    }

    /// A receiver answered 410 Gone: disable the channel and dead-letter what waits for it.
    async fn disable_gone_channel<C: ConnectionTrait>(
        &self,
        conn: &C,
        channel: &channels::Model,
        now: DateTime<Utc>,
    ) -> Result<(), DbErr> {
        let reason = format!(
            "the receiver answered 410 Gone at {}",
            now.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
        );
        channels::Entity::update_many()
            .col_expr(channels::Column::Enabled, Expr::value(false))
            .col_expr(channels::Column::DisabledReason, Expr::value(reason.clone()))
            .col_expr(channels::Column::UpdatedAt, Expr::value(Some(now)))
            .filter(channels::Column::Id.eq(channel.id))
            .exec(conn)
            .await?;
        super::routing_config::bump(conn).await?;
        let waiting = deliveries::Entity::find()
            .filter(deliveries::Column::ChannelId.eq(channel.id))
            .filter(deliveries::Column::Status.is_in(status::CLAIMABLE))
            .all(conn)
            .await?;
        for delivery in waiting {
            deliveries::Entity::update_many()
                .col_expr(deliveries::Column::Status, Expr::value(status::DEAD))
                .col_expr(
                    deliveries::Column::LastError,
                    Expr::value(format!("the channel is disabled: {reason}")),
                )
                .col_expr(deliveries::Column::UpdatedAt, Expr::value(now))
                .filter(deliveries::Column::Id.eq(delivery.id))
                .filter(deliveries::Column::Status.is_in(status::CLAIMABLE))
                .exec(conn)
                .await?;
        }
        tracing::warn!(channel = %channel.name, "channel disabled: its receiver answered 410 Gone");
        Ok(())
    }
}

fn reason_suffix(reason: &str) -> String {
    if reason.is_empty() { String::new() } else { format!(": {reason}") }
}
