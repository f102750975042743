//! Per-version traffic statistics: lock-free counters on the request path, exported on
//! `/metrics` (with a `version` label) and sent as samples to the rollback service.

use std::{
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    time::Duration,
};

use rp_events::SharedBus;
use rp_proto::events::v1 as ev;
use tokio_util::sync::CancellationToken;

use crate::{metrics as names, table::Routes};

/// Latency bucket upper bounds in milliseconds (the rollback service uses the same).
pub const LATENCY_BUCKETS_MS: [u64; 18] =
    [1, 2, 5, 10, 20, 50, 100, 200, 300, 400, 450, 500, 750, 1000, 1500, 2000, 5000, 10000];

fn bucket(elapsed: Duration) -> usize {
    let ms = elapsed.as_micros() as f64 / 1000.0;
    LATENCY_BUCKETS_MS.iter().position(|bound| ms <= *bound as f64).unwrap_or(LATENCY_BUCKETS_MS.len())
}

/// Counters of one app version in one environment.
#[derive(Debug)]
pub struct VersionStats {
    pub app: String,
    pub environment: String,
    pub version: String,
    requests: AtomicU64,
    errors: AtomicU64,
    buckets: [AtomicU64; LATENCY_BUCKETS_MS.len() + 1],
    by_class: [metrics::Counter; 5],
    duration: metrics::Histogram,
}

impl VersionStats {
    pub fn new(app: &str, environment: &str, version: &str) -> Self {
        let labels = |class: &'static str| {
            metrics::counter!(names::REQUESTS_TOTAL, "app" => app.to_owned(), "env" => environment.to_owned(),
                "version" => version.to_owned(), "class" => class)
        };
        Self {
            app: app.to_owned(),
            environment: environment.to_owned(),
            version: version.to_owned(),
            requests: AtomicU64::new(0),
            errors: AtomicU64::new(0),
            buckets: std::array::from_fn(|_| AtomicU64::new(0)),
            by_class: [labels("1xx"), labels("2xx"), labels("3xx"), labels("4xx"), labels("5xx")],
            duration: metrics::histogram!(names::REQUEST_DURATION_SECONDS, "app" => app.to_owned(),
                "env" => environment.to_owned(), "version" => version.to_owned()),
        }
    }

    /// Counts one answered request (status as sent to the client, latency to the first byte).
    pub fn record(&self, status: u16, elapsed: Duration) {
        self.requests.fetch_add(1, Ordering::Relaxed);
        if status >= 500 {
            self.errors.fetch_add(1, Ordering::Relaxed);
        }
        self.buckets[bucket(elapsed)].fetch_add(1, Ordering::Relaxed);
        let class = (usize::from(status / 100)).clamp(1, 5) - 1;
        self.by_class[class].increment(1);
        self.duration.record(elapsed.as_secs_f64());
    }

    /// The counts since the previous call.
    pub(crate) fn take(&self) -> (u64, u64, Vec<u64>) {
        let requests = self.requests.swap(0, Ordering::Relaxed);
        let errors = self.errors.swap(0, Ordering::Relaxed);
        let buckets = self.buckets.iter().map(|b| b.swap(0, Ordering::Relaxed)).collect();
        (requests, errors, buckets)
    }
}

/// Every `interval`, sends one sample per version of every route to `traffic.<app>.<env>`.
pub fn spawn_publisher(
    routes: Arc<Routes>,
    bus: SharedBus,
    router_id: String,
    interval: Duration,
    shutdown: CancellationToken,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut ticker = tokio::time::interval(interval);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => break,
                _ = ticker.tick() => {}
            }
            let table = routes.snapshot();
            let now_ms = chrono::Utc::now().timestamp_millis();
            for route in &table.routes {
                for (track, pool) in [("stable", &route.stable), ("canary", &route.canary)] {
                    let Some(pool) = pool else { continue };
                    let (requests, errors, latency_buckets) = pool.stats.take();
                    let failures = pool
                        .upstreams
                        .iter()
                        .map(|u| u.check_failures.load(Ordering::Relaxed))
                        .max()
                        .unwrap_or(0);
                    let healthy =
                        pool.upstreams.iter().filter(|u| u.healthy.load(Ordering::Relaxed)).count() as u32;
                    let sample = ev::TrafficSample {
                        app: route.app.clone(),
                        environment: route.environment.clone(),
                        version: pool.version.clone(),
                        track: track.into(),
                        deployment_id: route.deployment_id.clone(),
                        router: router_id.clone(),
                        at_unix_ms: now_ms,
                        interval_ms: interval.as_millis() as i64,
                        requests,
                        errors,
                        latency_buckets,
                        health_failures: failures,
                        healthy_upstreams: healthy,
                        upstreams: pool.upstreams.len() as u32,
                    };
                    send(&bus, &sample).await;
                }
            }
            // The last counts of versions that just left their route.
            for stats in routes.take_retired() {
                let (requests, errors, latency_buckets) = stats.take();
                if requests == 0 {
                    continue;
                }
                let sample = ev::TrafficSample {
                    app: stats.app.clone(),
                    environment: stats.environment.clone(),
                    version: stats.version.clone(),
                    track: "retired".into(),
                    router: router_id.clone(),
                    at_unix_ms: now_ms,
                    interval_ms: interval.as_millis() as i64,
                    requests,
                    errors,
                    latency_buckets,
                    ..Default::default()
                };
                send(&bus, &sample).await;
            }
        }
    })
}

async fn send(bus: &SharedBus, sample: &ev::TrafficSample) {
    let Ok(payload) = serde_json::to_vec(sample) else { return };
    let topic = format!("traffic.{}.{}", sample.app, sample.environment);
    if let Err(err) = bus.publish_ephemeral(&topic, payload.into()).await {
        tracing::debug!(error = %err, "traffic sample not sent");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn latencies_land_in_their_bucket() {
        assert_eq!(bucket(Duration::from_micros(500)), 0);
        assert_eq!(bucket(Duration::from_millis(1)), 0);
        assert_eq!(bucket(Duration::from_millis(3)), 2);
        assert_eq!(bucket(Duration::from_millis(1000)), 13);
        assert_eq!(bucket(Duration::from_secs(60)), 18);
        let stats = VersionStats::new("a", "e", "1");
        stats.record(200, Duration::from_millis(3));
        stats.record(503, Duration::from_millis(3));
        let (requests, errors, buckets) = stats.take();
        assert_eq!((requests, errors, buckets[2]), (2, 1, 2));
        assert_eq!(stats.take().0, 0, "taking resets");
    }
}
