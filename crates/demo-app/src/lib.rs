//! A tiny HTTP service to deploy in demos and tests. Every answer names its version; runtime
//! knobs make it fail a share of requests, answer slowly, or fail its health check.

use std::{
    net::SocketAddr,
    sync::{Arc, RwLock},
    time::Duration,
};

use axum::{
    Json, Router,
    body::Body,
    extract::{Request, State},
    http::StatusCode,
    response::{IntoResponse, Response},
    routing::{get, post},
};
use serde::{Deserialize, Serialize};

/// Behaviour that can change while the app runs.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(default)]
pub struct Knobs {
    /// Share of requests answered 500, 0.0-1.0.
    pub error_rate: f64,
    /// Added to every answer.
    pub latency_ms: u64,
    /// The health check answers 503.
    pub health_failing: bool,
}

/// Partial update of the knobs.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct KnobsUpdate {
    pub error_rate: Option<f64>,
    pub latency_ms: Option<u64>,
    pub health_failing: Option<bool>,
}

#[derive(Clone)]
struct AppState {
    version: Arc<str>,
    /// The listen address, so load balancing is visible.
    instance: Arc<str>,
    knobs: Arc<RwLock<Knobs>>,
}

/// A running demo app.
pub struct DemoApp {
    pub addr: SocketAddr,
    pub version: String,
    knobs: Arc<RwLock<Knobs>>,
    task: tokio::task::JoinHandle<()>,
}

impl DemoApp {
    pub fn set(&self, knobs: Knobs) {
        *self.knobs.write().expect("knobs lock") = knobs;
    }

    pub fn knobs(&self) -> Knobs {
        self.knobs.read().expect("knobs lock").clone()
    }
}

impl Drop for DemoApp {
    fn drop(&mut self) {
        self.task.abort();
    }
}

pub fn router(version: &str, instance: &str, knobs: Arc<RwLock<Knobs>>) -> Router {
    let state = AppState { version: Arc::from(version), instance: Arc::from(instance), knobs };
    Router::new()
        .route("/health", get(health))
        .route("/headers", get(headers))
        .route("/admin/knobs", get(read_knobs).post(update_knobs))
        .route("/echo", post(echo))
        .fallback(answer)
        .with_state(state)
}

/// Starts a demo app on `addr` (port 0 for any).
pub async fn spawn(version: &str, addr: SocketAddr, knobs: Knobs) -> anyhow::Result<DemoApp> {
    let knobs = Arc::new(RwLock::new(knobs));
    let listener = tokio::net::TcpListener::bind(addr).await?;
    let addr = listener.local_addr()?;
    let app = router(version, &addr.to_string(), knobs.clone());
    let task = tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    Ok(DemoApp { addr, version: version.to_owned(), knobs, task })
}

async fn answer(State(state): State<AppState>, request: Request) -> Response {
    let knobs = state.knobs.read().expect("knobs lock").clone();
    if knobs.latency_ms > 0 {
        tokio::time::sleep(Duration::from_millis(knobs.latency_ms)).await;
    }
    let fail = knobs.error_rate > 0.0 && rand::random::<f64>() < knobs.error_rate;
    let status = if fail { StatusCode::INTERNAL_SERVER_ERROR } else { StatusCode::OK };
    let body = serde_json::json!({
        "version": &*state.version,
        "instance": &*state.instance,
        "path": request.uri().path(),
        "ok": !fail,
    });
    (status, [("x-demo-version", state.version.to_string())], Json(body)).into_response()
}

async fn health(State(state): State<AppState>) -> impl IntoResponse {
    if state.knobs.read().expect("knobs lock").health_failing {
        (StatusCode::SERVICE_UNAVAILABLE, "failing\n")
    } else {
        (StatusCode::OK, "ok\n")
    }
}

async fn read_knobs(State(state): State<AppState>) -> Json<Knobs> {
    Json(state.knobs.read().expect("knobs lock").clone())
}

async fn update_knobs(
    State(state): State<AppState>,
    Json(update): Json<KnobsUpdate>,
) -> Result<Json<Knobs>, (StatusCode, String)> {
    if let Some(rate) = update.error_rate
        && !(0.0..=1.0).contains(&rate)
    {
        return Err((StatusCode::UNPROCESSABLE_ENTITY, "error_rate must be between 0 and 1".into()));
    }
    let mut knobs = state.knobs.write().expect("knobs lock");
    if let Some(rate) = update.error_rate {
        knobs.error_rate = rate;
    }
    if let Some(latency) = update.latency_ms {
        knobs.latency_ms = latency.min(60_000);
    }
    if let Some(failing) = update.health_failing {
        knobs.health_failing = failing;
    }
    Ok(Json(knobs.clone()))
}

/// The request headers as received (for proxy header tests).
async fn headers(request: Request) -> Json<serde_json::Value> {
    let map: serde_json::Map<String, serde_json::Value> = request
        .headers()
        .iter()
        .map(|(k, v)| (k.to_string(), serde_json::Value::String(v.to_str().unwrap_or_default().to_owned())))
        .collect();
    Json(serde_json::Value::Object(map))
}

/// Streams the request body back as it arrives (for proxy streaming tests).
async fn echo(request: Request) -> Response {
    Response::new(Body::from_stream(request.into_body().into_data_stream()))
}
