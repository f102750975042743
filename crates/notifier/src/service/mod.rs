//! The notifier's core: what the consumer, the dispatcher, the escalator and the API share.

mod ack_http;
mod channel_admin;
mod dispatch;
mod escalate;
mod ingest;
mod keyfile;
mod message;
mod policies;
mod queries;
mod retention;
mod routing_config;
mod rules;

use std::{sync::Arc, time::Duration};

use rp_config::Config;
use rp_db::Database;
use rp_events::{Event, SharedBus, outbox::Outbox};
use rp_runtime::{CancellationToken, ServiceError};
use sea_orm::{ConnectionTrait, DbErr};
use serde::Serialize;
use tokio::{sync::Notify, task::JoinHandle};
use uuid::Uuid;

pub use ack_http::router as ack_router;
pub use channel_admin::{ChannelChange, NewChannel, TestOutcome};
pub use escalate::Step as EscalationStep;
pub use policies::PolicyInput;
pub use queries::DeliveryFilter;

/// Views the API returns.
pub mod queries_view {
    pub use super::queries::DeliveryView;
}
pub use rules::RuleInput;

use crate::{
    channels::Senders,
    domain::{crypto::SecretKey, schedule::RetryPolicy},
};

pub(crate) const SOURCE: &str = "notifier";

pub type Result<T, E = ServiceError> = std::result::Result<T, E>;

/// Delivery statuses.
pub mod status {
    /// Collecting events until its group_wait ends (then due like `pending`).
    pub const GROUPING: &str = "grouping";
    /// Due at `due_at` (escalation levels, replays).
    pub const PENDING: &str = "pending";
    /// Claimed by a replica (lease) while an attempt is in flight.
    pub const SENDING: &str = "sending";
    /// The last attempt failed; the next is due at `due_at`.
    pub const RETRYING: &str = "retrying";
    pub const DELIVERED: &str = "delivered";
    /// A dead letter: attempts exhausted, channel gone or refused. Replayable.
    pub const DEAD: &str = "dead";
    /// Every event in it was suppressed by a later one; nothing is sent.
    pub const SUPPRESSED: &str = "suppressed";
    pub const ALL: [&str; 7] = [GROUPING, PENDING, SENDING, RETRYING, DELIVERED, DEAD, SUPPRESSED];
    /// Statuses a replica may claim once due.
    pub const CLAIMABLE: [&str; 3] = [GROUPING, PENDING, RETRYING];
}

/// Item statuses.
pub mod item_status {
    pub const QUEUED: &str = "queued";
    pub const SUPPRESSED: &str = "suppressed";
    pub const DUPLICATE: &str = "duplicate";
}

/// Escalation statuses.
pub mod escalation_status {
    pub const ACTIVE: &str = "active";
    pub const ACKNOWLEDGED: &str = "acknowledged";
    pub const RESOLVED: &str = "resolved";
    pub const EXHAUSTED: &str = "exhausted";
}

/// Settings the notifier reads often, parsed once.
#[derive(Debug, Clone)]
pub struct Settings {
    pub retry: RetryPolicy,
    pub request_timeout: Duration,
    pub lease: Duration,
    pub dispatch_interval: Duration,
    pub max_in_flight: usize,
    pub rotation_overlap: Duration,
}

impl Settings {
    pub fn from_config(config: &rp_config::NotifierConfig) -> anyhow::Result<Self> {
        let schedule = crate::domain::schedule::parse_schedule(&config.retry_schedule)
            .map_err(|e| anyhow::anyhow!("notifier.retry_schedule: {e}"))?;
        anyhow::ensure!(
            (0.0..=1.0).contains(&config.retry_jitter),
            "notifier.retry_jitter must be between 0 and 1"
        );
        anyhow::ensure!(config.request_timeout_ms >= 10, "notifier.request_timeout_ms must be at least 10");
        anyhow::ensure!(
            config.delivery_lease_ms > config.request_timeout_ms,
            "notifier.delivery_lease_ms must exceed notifier.request_timeout_ms, or a slow attempt could be sent twice at once"
        );
        anyhow::ensure!(
            config.dispatch_interval_ms >= 10,
            "notifier.dispatch_interval_ms must be at least 10"
        );
        anyhow::ensure!(config.max_in_flight >= 1, "notifier.max_in_flight must be at least 1");
        Ok(Self {
            retry: RetryPolicy {
                schedule,
                jitter: config.retry_jitter,
                max_retry_after: Duration::from_secs(config.max_retry_after_secs),
            },
            request_timeout: Duration::from_millis(config.request_timeout_ms),
            lease: Duration::from_millis(config.delivery_lease_ms),
            dispatch_interval: Duration::from_millis(config.dispatch_interval_ms),
            max_in_flight: config.max_in_flight,
            rotation_overlap: Duration::from_secs(config.secret_rotation_overlap_secs),
        })
    }
}

/// Shared state of one notifier replica.
pub struct NotifierCore {
    pub(crate) db: Database,
    pub(crate) outbox: Outbox,
    pub(crate) bus: SharedBus,
    pub(crate) config: Arc<Config>,
    pub(crate) settings: Settings,
    pub(crate) key: SecretKey,
    pub(crate) senders: Senders,
    /// This replica's lease-holder name.
    pub(crate) replica: String,
    /// Wakes the dispatcher (new due work in this process).
    pub(crate) wake: Notify,
    /// Attempts in flight (`notifier.max_in_flight`), whether the dispatcher claimed them or the
    /// consumer did as it queued them.
    pub(crate) slots: Arc<tokio::sync::Semaphore>,
    /// Wakes the escalator.
    pub(crate) escalations_changed: Notify,
    /// Base of acknowledge links, without the trailing slash.
    pub(crate) ack_base: String,
    /// The dashboard, for links in messages.
    pub(crate) dashboard_url: String,
    /// Rules and channels as of the last configuration version this replica read.
    pub(crate) routing: routing_config::RoutingCache,
}

impl NotifierCore {
    /// Builds the core; `admin_addr` is where the acknowledge links are served by default.
    pub async fn new(
        db: Database,
        outbox: Outbox,
        bus: SharedBus,
        config: Arc<Config>,
        admin_addr: std::net::SocketAddr,
    ) -> anyhow::Result<Arc<Self>> {
        let settings = Settings::from_config(&config.notifier)?;
        let key = keyfile::load(&config)?;
        keyfile::check_stored_secrets(&db, &key).await?;
        let senders = Senders::new(
            config.notifier.allowed_private_networks.clone(),
            settings.request_timeout,
            config.notifier.response_excerpt_bytes,
        )?;
        let mut admin = admin_addr;
        if admin.ip().is_unspecified() {
            admin.set_ip([127, 0, 0, 1].into());
        }
        let ack_base = config
            .notifier
            .ack_base_url
            .clone()
            .unwrap_or_else(|| format!("http://{admin}/ack"))
            .trim_end_matches('/')
            .to_owned();
        crate::metrics::describe();
        Ok(Arc::new(Self {
            db,
            outbox,
            bus,
            dashboard_url: config.gateway.public_url.trim_end_matches('/').to_owned(),
            key,
            senders,
            replica: format!("notifier-{}", Uuid::now_v7()),
            wake: Notify::new(),
            slots: Arc::new(tokio::sync::Semaphore::new(settings.max_in_flight)),
            escalations_changed: Notify::new(),
            ack_base,
            config,
            settings,
            routing: routing_config::RoutingCache::default(),
        }))
    }

    /// Starts the consumer, the dispatcher, the escalator and the retention.
    pub fn spawn(self: &Arc<Self>, shutdown: CancellationToken) -> Vec<JoinHandle<()>> {
        vec![
            tokio::spawn(ingest::run(self.clone(), shutdown.clone())),
            tokio::spawn(dispatch::run(self.clone(), shutdown.clone())),
            tokio::spawn(escalate::run(self.clone(), shutdown.clone())),
            tokio::spawn(retention::run(self.clone(), shutdown)),
        ]
    }

    /// Enqueues an event in `conn`'s transaction.
    pub(crate) async fn emit<C: ConnectionTrait>(
        &self,
        conn: &C,
        event_type: &str,
        subject: String,
        payload: &impl Serialize,
    ) -> Result<(), DbErr> {
        rp_events::outbox::enqueue(conn, &Event::new(SOURCE, event_type, subject, payload)).await
    }

    /// Commits and lets the relay publish at once.
    pub(crate) async fn commit(&self, txn: sea_orm::DatabaseTransaction) -> Result<(), DbErr> {
        txn.commit().await?;
        self.outbox.wake();
        Ok(())
    }

    /// The acknowledge link of an escalation.
    pub fn ack_url(&self, escalation_id: Uuid) -> String {
        format!("{}/{}", self.ack_base, self.key.ack_token(escalation_id))
    }

    pub(crate) fn now() -> chrono::DateTime<chrono::Utc> {
        chrono::Utc::now()
    }
}

/// Parses an id from the API.
pub(crate) fn parse_id(field: &str, raw: &str) -> Result<Uuid> {
    Uuid::parse_str(raw.trim())
        .map_err(|_| ServiceError::Invalid(format!("{field} {raw:?} is not a valid id")))
}

pub(crate) fn chrono_duration(duration: Duration) -> chrono::Duration {
    chrono::Duration::from_std(duration).unwrap_or(chrono::Duration::MAX)
}
