//! Dependency health checks behind `/health`, `/ready` and `/health/detailed`.

use std::{
    sync::{
        Arc, RwLock,
        atomic::{AtomicBool, Ordering},
    },
    time::{Duration, Instant},
};

use futures::future::BoxFuture;
use serde::Serialize;

/// How long one dependency check may take before it counts as failed.
const CHECK_TIMEOUT: Duration = Duration::from_secs(2);

type CheckFn = Arc<dyn Fn() -> BoxFuture<'static, Result<Duration, String>> + Send + Sync>;

/// A service's health: named dependency checks plus a readiness flag.
#[derive(Clone)]
pub struct Health {
    inner: Arc<Inner>,
}

struct Inner {
    service: String,
    checks: RwLock<Vec<(String, CheckFn)>>,
    ready: AtomicBool,
    started: Instant,
}

#[derive(Debug, Clone, Serialize)]
pub struct CheckReport {
    pub name: String,
    /// `ok` or `failing`.
    pub status: &'static str,
    pub latency_ms: f64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

#[derive(Debug, Clone, Serialize)]
pub struct HealthReport {
    pub service: String,
    /// `ok` when every dependency answers, else `degraded`.
    pub status: &'static str,
    pub ready: bool,
    pub uptime_secs: u64,
    pub version: &'static str,
    pub checks: Vec<CheckReport>,
}

impl HealthReport {
    pub fn healthy(&self) -> bool {
        self.status == "ok"
    }
}

impl Health {
    pub fn new(service: impl Into<String>) -> Self {
        Self {
            inner: Arc::new(Inner {
                service: service.into(),
                checks: RwLock::new(Vec::new()),
                ready: AtomicBool::new(false),
                started: Instant::now(),
            }),
        }
    }

    /// Registers a dependency check returning its round-trip time.
    pub fn add_check<F>(&self, name: impl Into<String>, check: F)
    where
        F: Fn() -> BoxFuture<'static, Result<Duration, String>> + Send + Sync + 'static,
    {
        self.inner.checks.write().expect("health lock").push((name.into(), Arc::new(check)));
    }

    pub fn set_ready(&self, ready: bool) {
        self.inner.ready.store(ready, Ordering::SeqCst);
    }

    pub fn is_ready(&self) -> bool {
        self.inner.ready.load(Ordering::SeqCst)
    }

    pub fn service(&self) -> &str {
        &self.inner.service
    }

    /// Runs every check concurrently.
    pub async fn report(&self) -> HealthReport {
        let checks: Vec<(String, CheckFn)> = self.inner.checks.read().expect("health lock").clone();
        let results = futures::future::join_all(checks.into_iter().map(|(name, check)| async move {
            let started = Instant::now();
            let outcome = tokio::time::timeout(CHECK_TIMEOUT, check()).await;
            let (status, latency, error) = match outcome {
                Ok(Ok(latency)) => ("ok", latency, None),
                Ok(Err(err)) => ("failing", started.elapsed(), Some(err)),
                Err(_) => ("failing", started.elapsed(), Some(format!("no answer within {CHECK_TIMEOUT:?}"))),
            };
            CheckReport { name, status, latency_ms: latency.as_secs_f64() * 1000.0, error }
        }))
        .await;
        let healthy = results.iter().all(|c| c.status == "ok");
        HealthReport {
            service: self.inner.service.clone(),
            status: if healthy { "ok" } else { "degraded" },
            ready: self.is_ready(),
            uptime_secs: self.inner.started.elapsed().as_secs(),
            version: env!("CARGO_PKG_VERSION"),
            checks: results,
        }
    }
}
