//! The admin HTTP server every service runs beside its API port.

use std::sync::Arc;

use axum::{Json, Router, extract::State, http::StatusCode, response::IntoResponse, routing::get};
use metrics_exporter_prometheus::PrometheusHandle;
use serde_json::json;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::health::Health;

type Collector = Arc<dyn Fn() + Send + Sync>;

/// What the admin endpoints report on.
#[derive(Clone)]
pub struct AdminState {
    pub health: Health,
    metrics: PrometheusHandle,
    /// Refresh gauges (pool sizes, queue depths) right before `/metrics` renders.
    collectors: Vec<Collector>,
}

impl AdminState {
    pub fn new(health: Health) -> Self {
        Self { health, metrics: rp_telemetry::metrics_handle(), collectors: Vec::new() }
    }

    pub fn with_collector(mut self, collector: impl Fn() + Send + Sync + 'static) -> Self {
        self.collectors.push(Arc::new(collector));
        self
    }
}

pub fn router(state: AdminState) -> Router {
    Router::new()
        .route("/live", get(live))
        .route("/ready", get(ready))
        .route("/health", get(health))
        .route("/health/detailed", get(detailed))
        .route("/metrics", get(metrics))
        .with_state(state)
}

/// Serves the admin endpoints on `listener` until `shutdown`.
pub async fn serve(
    listener: TcpListener,
    state: AdminState,
    shutdown: CancellationToken,
) -> std::io::Result<()> {
    axum::serve(listener, router(state)).with_graceful_shutdown(shutdown.cancelled_owned()).await
}

async fn live() -> impl IntoResponse {
    Json(json!({ "status": "ok" }))
}

async fn ready(State(state): State<AdminState>) -> impl IntoResponse {
    if !state.health.is_ready() {
        return (StatusCode::SERVICE_UNAVAILABLE, Json(json!({ "status": "starting" })));
    }
    let report = state.health.report().await;
    if report.healthy() {
        (StatusCode::OK, Json(json!({ "status": "ready" })))
    } else {
        let failing: Vec<_> =
            report.checks.iter().filter(|c| c.status != "ok").map(|c| c.name.clone()).collect();
        (StatusCode::SERVICE_UNAVAILABLE, Json(json!({ "status": "not_ready", "failing": failing })))
    }
}

async fn health(State(state): State<AdminState>) -> impl IntoResponse {
    let report = state.health.report().await;
    let code = if report.healthy() { StatusCode::OK } else { StatusCode::SERVICE_UNAVAILABLE };
    (
        code,
        Json(json!({
            "status": report.status,
            "service": report.service,
            "version": report.version,
            "uptime_secs": report.uptime_secs,
        })),
    )
}

async fn detailed(State(state): State<AdminState>) -> impl IntoResponse {
    let report = state.health.report().await;
    let code = if report.healthy() { StatusCode::OK } else { StatusCode::SERVICE_UNAVAILABLE };
    (code, Json(report))
}

async fn metrics(State(state): State<AdminState>) -> impl IntoResponse {
    for collector in &state.collectors {
        collector();
    }
    state.metrics.run_upkeep();
    ([(axum::http::header::CONTENT_TYPE, "text/plain; version=0.0.4; charset=utf-8")], state.metrics.render())
}
