//! Idempotent consumers: a consumer claims an event id in the same transaction as its effects;
//! a redelivered event finds its claim and is skipped.

use std::{future::Future, time::Duration};

use chrono::Utc;
use futures::StreamExt as _;
use sea_orm::{ActiveValue::Set, ConnectionTrait, DbErr, EntityTrait, sea_query::OnConflict};
use tokio_util::sync::CancellationToken;
use tracing::Instrument as _;
use uuid::Uuid;

use crate::{ConsumerSpec, Event, SharedBus};

pub mod entity {
    //! `inbox` table: (consumer, event id) pairs already processed.
    use sea_orm::entity::prelude::*;

    #[derive(Clone, Debug, PartialEq, DeriveEntityModel)]
    #[sea_orm(table_name = "inbox")]
    pub struct Model {
        #[sea_orm(primary_key, auto_increment = false)]
        pub consumer: String,
        #[sea_orm(primary_key, auto_increment = false)]
        pub event_id: Uuid,
        pub processed_at: DateTimeUtc,
    }

    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}

    impl ActiveModelBehavior for ActiveModel {}
}

/// Records that `consumer` processed `event_id`. Returns false when it already had, in which
/// case the caller must not repeat its effects.
pub async fn claim<C: ConnectionTrait>(conn: &C, consumer: &str, event_id: Uuid) -> Result<bool, DbErr> {
    let row = entity::ActiveModel {
        consumer: Set(consumer.to_owned()),
        event_id: Set(event_id),
        processed_at: Set(Utc::now()),
    };
    // ON CONFLICT DO NOTHING rather than catching the violation: on PostgreSQL a failed statement
    // would abort the caller's transaction.
    let inserted = entity::Entity::insert(row)
        .on_conflict(
            OnConflict::columns([entity::Column::Consumer, entity::Column::EventId]).do_nothing().to_owned(),
        )
        .exec_without_returning(conn)
        .await?;
    Ok(inserted == 1)
}

/// What a handler wants done with an event it could not process.
#[derive(Debug)]
pub enum HandlerError {
    /// Try again later (database down, dependency timeout…).
    Retry(String),
    /// The event can never be processed; log it and move on.
    Drop(String),
}

/// Runs `handler` on every event of `spec` until `shutdown`: ack on success, nak with exponential
/// backoff on `Retry`. Re-subscribes when the bus connection drops.
pub async fn run_consumer<H, F>(bus: SharedBus, spec: ConsumerSpec, handler: H, shutdown: CancellationToken)
where
    H: Fn(Event) -> F + Send + Sync,
    F: Future<Output = Result<(), HandlerError>> + Send,
{
    let consumer = spec.name.clone();
    while !shutdown.is_cancelled() {
        let Some(mut subscription) = subscribe(&bus, &spec, &shutdown).await else { return };
        loop {
            let next = tokio::select! {
                _ = shutdown.cancelled() => return,
                next = subscription.next() => next,
            };
            match next {
                Some(Ok(delivery)) => process(&consumer, &handler, delivery).await,
                Some(Err(err)) => tracing::warn!(consumer, error = %err, "bad delivery"),
                None => break,
            }
        }
        tracing::info!(consumer, "subscription ended; re-subscribing");
    }
}

/// Like [`run_consumer`], with `lanes` events handled at once: events with the same `key` (for
/// example a deployment id) go through the same lane, one after another and in order; events of
/// different keys overlap. Handlers must tolerate events of different keys in any order.
pub async fn run_consumer_in_lanes<H, F, K>(
    bus: SharedBus,
    spec: ConsumerSpec,
    lanes: usize,
    key: K,
    handler: H,
    shutdown: CancellationToken,
) where
    H: Fn(Event) -> F + Send + Sync + Clone + 'static,
    F: Future<Output = Result<(), HandlerError>> + Send,
    K: Fn(&Event) -> String + Send + Sync,
{
    let consumer = spec.name.clone();
    let lanes = lanes.max(1);
    let mut senders = Vec::with_capacity(lanes);
    let mut workers = Vec::with_capacity(lanes);
    for _ in 0..lanes {
        let (tx, mut rx) = tokio::sync::mpsc::channel::<crate::Delivery>(64);
        let (consumer, handler) = (consumer.clone(), handler.clone());
        workers.push(tokio::spawn(async move {
            while let Some(delivery) = rx.recv().await {
                process(&consumer, &handler, delivery).await;
            }
        }));
        senders.push(tx);
    }
    'outer: while !shutdown.is_cancelled() {
        let Some(mut subscription) = subscribe(&bus, &spec, &shutdown).await else { break };
        loop {
            let next = tokio::select! {
                _ = shutdown.cancelled() => break 'outer,
                next = subscription.next() => next,
            };
            match next {
                Some(Ok(delivery)) => {
                    use std::hash::{Hash as _, Hasher as _};
                    let mut hasher = std::collections::hash_map::DefaultHasher::new();
                    key(&delivery.event).hash(&mut hasher);
                    let lane = (hasher.finish() % lanes as u64) as usize;
                    // A full lane waits here: back-pressure on the subscription, nothing dropped.
                    if senders[lane].send(delivery).await.is_err() {
                        break 'outer;
                    }
                }
                Some(Err(err)) => tracing::warn!(consumer, error = %err, "bad delivery"),
                None => break,
            }
        }
        tracing::info!(consumer, "subscription ended; re-subscribing");
    }
    // Let the lanes finish what they hold (unacked events would be redelivered anyway).
    drop(senders);
    for worker in workers {
        let _ = worker.await;
    }
}

async fn subscribe(
    bus: &SharedBus,
    spec: &ConsumerSpec,
    shutdown: &CancellationToken,
) -> Option<crate::Subscription> {
    loop {
        match bus.subscribe(spec).await {
            Ok(subscription) => return Some(subscription),
            Err(err) => {
                tracing::warn!(consumer = %spec.name, error = %err, "cannot subscribe; retrying");
                tokio::select! {
                    _ = shutdown.cancelled() => return None,
                    _ = tokio::time::sleep(Duration::from_secs(1)) => {}
                }
            }
        }
    }
}

/// Handles one delivery and settles it: ack on success or drop, nak with backoff on retry.
async fn process<H, F>(consumer: &str, handler: &H, delivery: crate::Delivery)
where
    H: Fn(Event) -> F,
    F: Future<Output = Result<(), HandlerError>>,
{
    let event = delivery.event.clone();
    let span = tracing::info_span!("event.consume", otel.kind = "consumer", consumer = %consumer,
        event.id = %event.id, event.type = %event.event_type);
    if let Some(traceparent) = &event.traceparent {
        rp_telemetry::propagation::set_remote_parent(
            &span,
            rp_telemetry::propagation::context_from_traceparent(traceparent),
        );
    }
    let attempt = delivery.attempt;
    let result = handler(event).instrument(span).await;
    let label = match &result {
        Ok(()) => "ok",
        Err(HandlerError::Retry(_)) => "retry",
        Err(HandlerError::Drop(_)) => "dropped",
    };
    metrics::counter!(rp_telemetry::metric_names::EVENTS_CONSUMED_TOTAL,
        "consumer" => consumer.to_owned(), "result" => label)
    .increment(1);
    let settled = match result {
        Ok(()) => delivery.ack().await,
        Err(HandlerError::Drop(reason)) => {
            tracing::error!(consumer, reason, "event dropped: it cannot be processed");
            delivery.ack().await
        }
        Err(HandlerError::Retry(reason)) => {
            let delay = Duration::from_millis(200 * 2u64.saturating_pow(attempt.min(8) as u32));
            tracing::warn!(consumer, reason, attempt, ?delay, "event handling failed; will retry");
            delivery.nak(delay.min(Duration::from_secs(60))).await
        }
    };
    if let Err(err) = settled {
        tracing::warn!(consumer, error = %err, "cannot settle delivery; it will be redelivered");
    }
}
