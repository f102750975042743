//! Traffic samples from the routers, kept as sliding windows per app, environment and version.
//! Every replica keeps every series (samples are small and arrive on the telemetry channel), so
//! a replica taking over a lease has the history at once.

use std::{
    collections::HashMap,
    sync::{
        Arc, Mutex,
        atomic::{AtomicU64, Ordering},
    },
    time::Duration,
};

use chrono::{DateTime, Utc};
use futures::StreamExt as _;
use rp_proto::events::v1 as ev;
use rp_runtime::CancellationToken;

use super::{CHANGES_TOPIC, RollbackCore, lock, names};
use crate::domain::evaluate::{Aggregate, Sample, Series};

type Key = (String, String, String);

/// Series of every version the routers report.
pub struct TrafficStore {
    series: Mutex<HashMap<Key, Series>>,
    /// How long samples are kept: the longest router window of the policies in use.
    keep_seconds: AtomicU64,
}

impl Default for TrafficStore {
    fn default() -> Self {
        Self { series: Mutex::default(), keep_seconds: AtomicU64::new(60) }
    }
}

impl TrafficStore {
    pub fn push(&self, sample: &ev::TrafficSample) {
        let Some(at) = DateTime::<Utc>::from_timestamp_millis(sample.at_unix_ms) else { return };
        let keep = chrono::Duration::seconds(self.keep_seconds.load(Ordering::Relaxed) as i64);
        let key = (sample.app.clone(), sample.environment.clone(), sample.version.clone());
        lock(&self.series).entry(key).or_default().push(
            Sample {
                at,
                requests: sample.requests,
                errors: sample.errors,
                latency_buckets: sample.latency_buckets.clone(),
                health_failures: sample.health_failures,
                first_at: at,
            },
            keep,
        );
    }

    /// The aggregate of a version's samples over `window` before `now`.
    pub fn aggregate(
        &self,
        app: &str,
        environment: &str,
        version: &str,
        now: DateTime<Utc>,
        window: chrono::Duration,
    ) -> Aggregate {
        let key = (app.to_owned(), environment.to_owned(), version.to_owned());
        match lock(&self.series).get(&key) {
            Some(series) => series.aggregate(now, window),
            None => Series::default().aggregate(now, window),
        }
    }

    /// Runs `f` on a version's series (empty when unknown).
    pub fn with_series<R>(
        &self,
        app: &str,
        environment: &str,
        version: &str,
        f: impl FnOnce(&Series) -> R,
    ) -> R {
        let key = (app.to_owned(), environment.to_owned(), version.to_owned());
        let series = lock(&self.series);
        match series.get(&key) {
            Some(found) => f(found),
            None => f(&Series::default()),
        }
    }

    pub fn set_keep(&self, seconds: u64) {
        self.keep_seconds.store(seconds.max(60), Ordering::Relaxed);
    }

    /// Forgets versions that reported nothing for longer than the keep time.
    pub fn prune(&self, now: DateTime<Utc>) {
        let keep = chrono::Duration::seconds(self.keep_seconds.load(Ordering::Relaxed) as i64);
        lock(&self.series).retain(|_, series| series.newest().is_some_and(|at| now - at <= keep));
    }
}

/// Receives samples (`traffic.>`) and change announcements until shutdown.
pub async fn run(core: Arc<RollbackCore>, shutdown: CancellationToken) {
    while !shutdown.is_cancelled() {
        let subscribed = async {
            let samples = core.bus.subscribe_ephemeral("traffic.>").await?;
            let changes = core.bus.subscribe_ephemeral(CHANGES_TOPIC).await?;
            Ok::<_, rp_events::BusError>((samples, changes))
        };
        let (mut samples, mut changes) = match subscribed.await {
            Ok(both) => both,
            Err(err) => {
                tracing::warn!(error = %err, "cannot subscribe to traffic samples; retrying");
                tokio::select! {
                    _ = shutdown.cancelled() => return,
                    _ = tokio::time::sleep(Duration::from_secs(1)) => continue,
                }
            }
        };
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => return,
                message = samples.next() => {
                    let Some((_, payload)) = message else { break };
                    match serde_json::from_slice::<ev::TrafficSample>(&payload) {
                        Ok(sample) => {
                            core.traffic.push(&sample);
                            metrics::counter!(names::SAMPLES_TOTAL).increment(1);
                            lock(&core.dirty).insert((sample.app, sample.environment));
                            core.wake.notify_one();
                        }
                        Err(err) => tracing::debug!(error = %err, "malformed traffic sample"),
                    }
                }
                message = changes.next() => {
                    let Some((_, payload)) = message else { break };
                    let counter = if payload.as_ref() == b"alerts" {
                        &core.alert_generation
                    } else {
                        &core.policy_generation
                    };
                    counter.fetch_add(1, Ordering::SeqCst);
                    core.wake.notify_one();
                }
            }
        }
    }
}
