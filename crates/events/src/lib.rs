//! Events: the bus (NATS JetStream in distributed mode, in-process in embedded mode), the
//! CloudEvents envelope, the transactional outbox that publishes what a transaction committed,
//! and the inbox that makes consumers idempotent.

mod envelope;
pub mod inbox;
mod jetstream;
mod memory;
pub mod outbox;
mod subject;

use std::{pin::Pin, sync::Arc, time::Duration};

use async_trait::async_trait;
use bytes::Bytes;
use futures::Stream;

pub use envelope::{Event, headers};
pub use jetstream::JetStreamBus;
pub use memory::InProcessBus;
pub use subject::subject_matches;

#[derive(Debug, thiserror::Error)]
pub enum BusError {
    #[error("cannot connect to NATS: {0}")]
    Connect(String),
    #[error("cannot publish {event_type}: {reason}")]
    Publish { event_type: String, reason: String },
    #[error("cannot subscribe {consumer}: {reason}")]
    Subscribe { consumer: String, reason: String },
    #[error("malformed message on {subject}: {reason}")]
    Malformed { subject: String, reason: String },
    #[error("event bus unavailable: {0}")]
    Unavailable(String),
}

/// Where a consumer seen for the first time starts reading.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StartFrom {
    /// Every event the bus still holds.
    Beginning,
    /// Only events published after the consumer was created.
    New,
}

/// A durable consumer's settings.
#[derive(Debug, Clone)]
pub struct ConsumerSpec {
    /// Durable name; subscribers sharing it share the work (each event goes to one of them).
    pub name: String,
    /// Subject filter without the deployment's subject prefix, e.g. `rp.deployment.>`. One filter
    /// per consumer: NATS servers before 2.10 accept no more.
    pub filter: String,
    pub start_from: StartFrom,
    /// Redelivery after this long without an ack.
    pub ack_wait: Duration,
    /// A consumer of one process instance (e.g. each router replica needs every update):
    /// the bus forgets it after this long without a subscriber.
    pub inactive_after: Option<Duration>,
}

impl ConsumerSpec {
    pub fn new(name: impl Into<String>, filter: impl Into<String>) -> Self {
        Self {
            name: name.into(),
            filter: filter.into(),
            start_from: StartFrom::New,
            ack_wait: Duration::from_secs(30),
            inactive_after: None,
        }
    }

    pub fn ephemeral(mut self, inactive_after: Duration) -> Self {
        self.inactive_after = Some(inactive_after);
        self
    }

    pub fn from_beginning(mut self) -> Self {
        self.start_from = StartFrom::Beginning;
        self
    }

    pub fn ack_wait(mut self, ack_wait: Duration) -> Self {
        self.ack_wait = ack_wait;
        self
    }
}

/// Settles a delivery.
#[async_trait]
pub trait Acker: Send + Sync {
    async fn ack(&self) -> Result<(), BusError>;
    /// Asks for redelivery after `delay`.
    async fn nak(&self, delay: Duration) -> Result<(), BusError>;
}

/// One event handed to a consumer; settle it with [`Delivery::ack`] or [`Delivery::nak`].
pub struct Delivery {
    pub event: Event,
    /// 1 for the first delivery, more for redeliveries.
    pub attempt: u64,
    acker: Box<dyn Acker>,
}

impl Delivery {
    pub fn new(event: Event, attempt: u64, acker: Box<dyn Acker>) -> Self {
        Self { event, attempt, acker }
    }

    pub async fn ack(self) -> Result<(), BusError> {
        self.acker.ack().await
    }

    pub async fn nak(self, delay: Duration) -> Result<(), BusError> {
        self.acker.nak(delay).await
    }
}

pub type Subscription = Pin<Box<dyn Stream<Item = Result<Delivery, BusError>> + Send>>;

/// The event bus: confirmed publishing and durable, shared subscriptions.
#[async_trait]
pub trait EventBus: Send + Sync + 'static {
    /// Publishes and waits until the bus has stored the event. Publishing an id twice within the
    /// de-duplication window stores it once.
    async fn publish(&self, event: &Event) -> Result<(), BusError>;

    /// Publishes `events` in order and returns how many, from the first, the bus confirmed,
    /// with the error that stopped it. A bus may keep several publishes in flight at once (the
    /// relay's batch then costs one round trip, not one per event).
    async fn publish_in_order(&self, events: &[Event]) -> (usize, Option<BusError>) {
        for (index, event) in events.iter().enumerate() {
            if let Err(err) = self.publish(event).await {
                return (index, Some(err));
            }
        }
        (events.len(), None)
    }

    async fn subscribe(&self, spec: &ConsumerSpec) -> Result<Subscription, BusError>;

    /// Checks the bus answers; returns the round-trip time.
    async fn ping(&self) -> Result<Duration, BusError>;

    /// `jetstream` or `in-process`.
    fn kind(&self) -> &'static str;

    /// Telemetry channel (traffic samples, live progress): fire-and-forget, not stored, no
    /// redelivery; every subscriber sees every message published after it subscribed. On NATS
    /// this is core pub/sub on subjects outside the event stream.
    async fn publish_ephemeral(&self, topic: &str, payload: Bytes) -> Result<(), BusError>;

    /// Messages of `topic` (NATS wildcards allowed) as (topic, payload).
    async fn subscribe_ephemeral(&self, topic: &str) -> Result<EphemeralSubscription, BusError>;
}

pub type EphemeralSubscription = Pin<Box<dyn Stream<Item = (String, Bytes)> + Send>>;

pub type SharedBus = Arc<dyn EventBus>;

/// Opens the bus the configuration asks for: JetStream when `nats.url` is set, else a new
/// in-process bus (callers running several services in one process share one instance).
pub async fn connect(config: &rp_config::NatsConfig) -> Result<SharedBus, BusError> {
    match &config.url {
        Some(_) => Ok(Arc::new(JetStreamBus::connect(config).await?)),
        None => Ok(Arc::new(InProcessBus::new())),
    }
}
