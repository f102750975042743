//! A local deployer: receives the webhook driver's signed POSTs, checks their signature, and
//! answers as scripted (done, fail, accept and report through a status URL).

use std::{
    collections::VecDeque,
    net::SocketAddr,
    sync::{Arc, Mutex},
};

use axum::{
    Json, Router,
    extract::{Path, State},
    http::{HeaderMap, StatusCode},
    routing::{get, post},
};
use serde_json::{Value, json};

/// How the deployer answers the next call.
#[derive(Debug, Clone)]
pub enum Answer {
    /// 200: applied.
    Done,
    /// This status code.
    Status(u16),
    /// 202 with a status URL that reports in-progress `polls` times, then `succeeded`/`failed`.
    Accept { polls: usize, outcome: &'static str },
}

#[derive(Debug, Clone)]
pub struct Call {
    pub body: Value,
    pub signature_valid: bool,
    pub webhook_id: String,
}

impl Call {
    pub fn weight(&self) -> i64 {
        self.body["canary_weight"].as_i64().unwrap_or(-1)
    }

    pub fn version(&self) -> &str {
        self.body["canary"]["version"].as_str().unwrap_or_default()
    }

    pub fn action(&self) -> &str {
        self.body["action"].as_str().unwrap_or_default()
    }
}

#[derive(Default)]
struct Shared {
    calls: Vec<Call>,
    script: VecDeque<Answer>,
    default: Option<Answer>,
    /// Remaining in-progress answers per accepted call id.
    pending: Vec<(String, usize, &'static str)>,
}

#[derive(Clone)]
pub struct Receiver {
    pub secret: String,
    addr: SocketAddr,
    shared: Arc<Mutex<Shared>>,
}

impl Receiver {
    pub async fn start() -> Self {
        let shared = Arc::new(Mutex::new(Shared::default()));
        let secret = rp_webhooks::generate_secret();
        let state = (shared.clone(), secret.clone());
        let app =
            Router::new().route("/deploy", post(deploy)).route("/status/{id}", get(status)).with_state(state);
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        Self { secret, addr, shared }
    }

    pub fn deploy_url(&self) -> String {
        format!("http://{}/deploy", self.addr)
    }

    /// Answers for the next calls, in order; then `Done`.
    pub fn script(&self, answers: &[Answer]) {
        self.shared.lock().unwrap().script.extend(answers.iter().cloned());
    }

    /// The answer once the script is exhausted.
    pub fn always(&self, answer: Answer) {
        self.shared.lock().unwrap().default = Some(answer);
    }

    pub fn calls(&self) -> Vec<Call> {
        self.shared.lock().unwrap().calls.clone()
    }

    /// Calls about one deployment.
    pub fn calls_for(&self, deployment_id: &str) -> Vec<Call> {
        self.calls().into_iter().filter(|c| c.body["deployment_id"] == deployment_id).collect()
    }
}

type AppState = (Arc<Mutex<Shared>>, String);

async fn deploy(
    State((shared, secret)): State<AppState>,
    headers: HeaderMap,
    body: String,
) -> (StatusCode, Json<Value>) {
    let header = |name: &str| headers.get(name).and_then(|v| v.to_str().ok()).unwrap_or_default().to_owned();
    let id = header(rp_webhooks::HEADER_ID);
    let timestamp: i64 = header(rp_webhooks::HEADER_TIMESTAMP).parse().unwrap_or_default();
    let signature_valid = rp_webhooks::verify(
        &secret,
        &id,
        timestamp,
        body.as_bytes(),
        &header(rp_webhooks::HEADER_SIGNATURE),
        chrono::Utc::now().timestamp(),
        300,
    )
    .is_ok();
    let mut shared = shared.lock().unwrap();
    shared.calls.push(Call {
        body: serde_json::from_str(&body).unwrap_or(Value::Null),
        signature_valid,
        webhook_id: id.clone(),
    });
    let answer = shared.script.pop_front().or_else(|| shared.default.clone()).unwrap_or(Answer::Done);
    match answer {
        Answer::Done => (StatusCode::OK, Json(json!({"applied": true}))),
        Answer::Status(code) => {
            (StatusCode::from_u16(code).unwrap(), Json(json!({"error": "scripted failure"})))
        }
        Answer::Accept { polls, outcome } => {
            let token = uuid::Uuid::new_v4().to_string();
            shared.pending.push((token.clone(), polls, outcome));
            let port = headers.get("host").and_then(|h| h.to_str().ok()).unwrap_or_default().to_owned();
            (StatusCode::ACCEPTED, Json(json!({"status_url": format!("http://{port}/status/{token}")})))
        }
    }
}

async fn status(State((shared, _)): State<AppState>, Path(token): Path<String>) -> Json<Value> {
    let mut shared = shared.lock().unwrap();
    let Some(entry) = shared.pending.iter_mut().find(|(t, _, _)| *t == token) else {
        return Json(json!({"status": "failed", "message": "unknown job"}));
    };
    if entry.1 > 0 {
        entry.1 -= 1;
        Json(json!({"status": "in_progress"}))
    } else {
        Json(json!({"status": entry.2, "message": "scripted outcome"}))
    }
}
