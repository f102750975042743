//! The rollback service's core: what the watcher, the evaluator, the actions and the API share.

mod actions;
mod evaluator;
mod external;
mod notifications;
mod queries;
mod traffic;
mod watcher;

use std::{
    collections::{HashMap, HashSet},
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
    time::Duration,
};

use rp_config::Config;
use rp_db::Database;
use rp_events::{Event, SharedBus, outbox::Outbox};
use rp_proto::release::v1::release_service_client::ReleaseServiceClient;
use rp_runtime::{CancellationToken, ServiceError};
use rp_telemetry::grpc::{TracedChannel, traced};
use sea_orm::{ConnectionTrait, DbErr};
use serde::Serialize;
use tokio::{sync::Notify, task::JoinHandle};
use uuid::Uuid;

pub use actions::ManualRollback;
pub use queries::PolicyView;
pub use queries::{AnalysisQuery, ListFilter};
pub(crate) use traffic::TrafficStore;
pub(crate) use watcher::analysis_to_pb;

use crate::domain::policy::Rule;

pub(crate) const SOURCE: &str = "rollback";

pub type Result<T, E = ServiceError> = std::result::Result<T, E>;

/// Metric names of the rollback service.
pub mod names {
    pub const EVALUATIONS_TOTAL: &str = "rp_rollback_evaluations_total";
    pub const DECISIONS_TOTAL: &str = "rp_rollback_decisions_total";
    pub const ROLLBACKS_TOTAL: &str = "rp_rollback_automatic_rollbacks_total";
    pub const WATCHED: &str = "rp_rollback_watched_analyses";
    pub const EVALUATION_SECONDS: &str = "rp_rollback_evaluation_pass_seconds";
    pub const DECISION_LAG_SECONDS: &str = "rp_rollback_decision_lag_seconds";
    pub const REACTION_SECONDS: &str = "rp_rollback_reaction_seconds";
    pub const SAMPLES_TOTAL: &str = "rp_rollback_traffic_samples_total";
}

/// A value read from Prometheus or a probe, kept until the evaluator uses it.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct ExternalReading {
    pub value: Option<f64>,
    pub baseline: Option<f64>,
    pub samples: u64,
    pub query: String,
    /// Consecutive failed probes (probes only).
    pub consecutive_failures: u32,
    pub at: chrono::DateTime<chrono::Utc>,
}

/// An external rule the poller reads for an analysis.
#[derive(Debug, Clone)]
pub(crate) struct ExternalJob {
    pub analysis_id: Uuid,
    pub app: String,
    pub environment: String,
    pub version: String,
    pub stable_version: String,
    pub rule: Rule,
}

/// Shared state of one rollback replica.
pub struct RollbackCore {
    pub(crate) db: Database,
    pub(crate) outbox: Outbox,
    pub(crate) bus: SharedBus,
    pub(crate) config: Arc<Config>,
    pub(crate) release: ReleaseServiceClient<TracedChannel>,
    /// This replica's lease-holder name.
    pub(crate) replica: String,
    pub(crate) traffic: TrafficStore,
    /// Wakes the evaluator (new samples, new analyses, alerts, policy changes).
    pub(crate) wake: Notify,
    /// Apps × environments with samples the evaluator has not looked at yet.
    pub(crate) dirty: Mutex<HashSet<(String, String)>>,
    /// Ask the evaluator to claim and reload its analyses at its next pass.
    pub(crate) reload: AtomicBool,
    /// Bumped when policies or alerts change, so cached copies are refreshed.
    pub(crate) policy_generation: AtomicU64,
    pub(crate) alert_generation: AtomicU64,
    pub(crate) external: Mutex<HashMap<(Uuid, String), ExternalReading>>,
    pub(crate) external_jobs: Mutex<Vec<ExternalJob>>,
    /// Analyses with an action in flight (not evaluated again until it finishes).
    pub(crate) acting: Mutex<HashSet<Uuid>>,
    pub(crate) http: reqwest::Client,
}

/// Telemetry topic the replicas use to tell each other that alerts or policies changed.
pub(crate) const CHANGES_TOPIC: &str = "rollback.changes";

impl RollbackCore {
    pub fn new(
        db: Database,
        outbox: Outbox,
        bus: SharedBus,
        config: Arc<Config>,
    ) -> anyhow::Result<Arc<Self>> {
        let deadline = Duration::from_secs(10);
        let channel = tonic::transport::Endpoint::from_shared(config.endpoints.release.clone())?
            .connect_timeout(Duration::from_secs(3))
            .timeout(deadline)
            .tcp_nodelay(true)
            .connect_lazy();
        let http = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(2))
            .pool_idle_timeout(Duration::from_secs(30))
            .build()?;
        Ok(Arc::new(Self {
            db,
            outbox,
            bus,
            release: ReleaseServiceClient::new(traced(channel)),
            replica: format!("rollback-{}", Uuid::now_v7()),
            traffic: TrafficStore::default(),
            wake: Notify::new(),
            dirty: Mutex::default(),
            reload: AtomicBool::new(true),
            policy_generation: AtomicU64::new(0),
            alert_generation: AtomicU64::new(0),
            external: Mutex::default(),
            external_jobs: Mutex::default(),
            acting: Mutex::default(),
            http,
            config,
        }))
    }

    /// Starts the background work: the deployment watcher, the traffic-sample subscriber, the
    /// evaluator, the external-source poller and the decision-record retention.
    pub fn spawn(self: &Arc<Self>, shutdown: CancellationToken) -> Vec<JoinHandle<()>> {
        vec![
            tokio::spawn(watcher::run(self.clone(), shutdown.clone())),
            tokio::spawn(traffic::run(self.clone(), shutdown.clone())),
            tokio::spawn(evaluator::run(self.clone(), shutdown.clone())),
            tokio::spawn(external::run(self.clone(), shutdown.clone())),
            tokio::spawn(notifications::run(self.clone(), shutdown.clone())),
            tokio::spawn(queries::run_retention(self.clone(), shutdown)),
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

    /// Tells every replica (this one included) that policies or alerts changed.
    pub(crate) async fn announce_change(&self, what: &'static str) {
        match what {
            "alerts" => self.alert_generation.fetch_add(1, Ordering::SeqCst),
            _ => self.policy_generation.fetch_add(1, Ordering::SeqCst),
        };
        self.wake.notify_one();
        if let Err(err) =
            self.bus.publish_ephemeral(CHANGES_TOPIC, bytes::Bytes::from_static(what.as_bytes())).await
        {
            tracing::debug!(error = %err, "change announcement not sent; other replicas refresh on their timer");
        }
    }

    /// The rules of an app in an environment when no policy was set.
    pub(crate) fn default_rules(&self) -> Vec<Rule> {
        crate::domain::policy::default_rules(self.config.rollback.prometheus_url.as_deref(), None)
    }
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    // A panic while holding one of these locks leaves plain data behind; keep going.
    mutex.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}
