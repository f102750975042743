//! The acknowledge link of escalation messages, served on the notifier's admin port:
//! `GET /ack/{token}` shows the escalation and a button (so link scanners that follow every URL
//! in an e-mail acknowledge nothing), `POST /ack/{token}` acknowledges. The token is signed; it
//! is the only credential. Behind a gateway, set `notifier.ack_base_url` to the public URL that
//! forwards to `AcknowledgeEscalationByToken`.

use std::sync::Arc;

use axum::{
    Router,
    extract::{Path, State},
    http::{StatusCode, header},
    response::{Html, IntoResponse, Response},
    routing::get,
};
use rp_runtime::ServiceError;

use super::NotifierCore;

pub fn router(core: Arc<NotifierCore>) -> Router {
    Router::new().route("/ack/{token}", get(show).post(acknowledge)).with_state(core)
}

fn escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
        .replace('\'', "&#39;")
}

fn page(status: StatusCode, title: &str, body: &str) -> Response {
    let html = format!(
        "<!doctype html><html><head><meta charset=\"utf-8\"><meta name=\"robots\" content=\"noindex\">\
         <title>{title}</title></head><body style=\"font-family: sans-serif; max-width: 40em; margin: 3em auto\">\
         <h1>{title}</h1>{body}</body></html>",
        title = escape(title)
    );
    (status, [(header::CACHE_CONTROL, "no-store"), (header::REFERRER_POLICY, "no-referrer")], Html(html))
        .into_response()
}

async fn show(State(core): State<Arc<NotifierCore>>, Path(token): Path<String>) -> Response {
    let Some(id) = core.key.verify_ack_token(&token) else {
        return page(StatusCode::NOT_FOUND, "Link not valid", "<p>This acknowledge link is not valid.</p>");
    };
    match core.get_escalation(id).await {
        Ok(row) => {
            let summary = format!(
                "<p><strong>{}</strong></p><p>{} · {} · severity {} · status <strong>{}</strong> · {} level(s) fired</p>",
                escape(&row.summary),
                escape(&row.app),
                escape(&row.environment),
                escape(&row.severity),
                escape(&row.status),
                row.levels_fired
            );
            let form = if matches!(row.status.as_str(), "active" | "exhausted") {
                "<form method=\"post\"><button type=\"submit\">Acknowledge</button></form>"
            } else {
                ""
            };
            page(StatusCode::OK, "Escalation", &format!("{summary}{form}"))
        }
        Err(_) => page(StatusCode::NOT_FOUND, "Not found", "<p>This escalation no longer exists.</p>"),
    }
}

async fn acknowledge(State(core): State<Arc<NotifierCore>>, Path(token): Path<String>) -> Response {
    match core.acknowledge_by_token(&token).await {
        Ok(row) => page(
            StatusCode::OK,
            "Acknowledged",
            &format!(
                "<p>{} is acknowledged ({}). No further level will fire.</p>",
                escape(&row.summary),
                escape(&row.acknowledged_by)
            ),
        ),
        Err(ServiceError::NotFound(message)) => {
            page(StatusCode::NOT_FOUND, "Not found", &format!("<p>{}</p>", escape(&message)))
        }
        Err(ServiceError::Precondition(message)) => {
            page(StatusCode::CONFLICT, "Nothing to acknowledge", &format!("<p>{}</p>", escape(&message)))
        }
        Err(err) => {
            tracing::warn!(error = %err, "acknowledge link failed");
            page(
                StatusCode::SERVICE_UNAVAILABLE,
                "Try again",
                "<p>The acknowledgement could not be recorded; try again.</p>",
            )
        }
    }
}
