//! Escalation policies and escalations: who is told, and when, until someone acknowledges — here,
//! with `rpctl ack`, or through the signed link in the message (`/api/v1/ack/{token}`, no sign-in).

use axum::{
    extract::{Path, State},
    http::{HeaderMap, StatusCode, header},
    response::{Html, IntoResponse, Response},
};

use crate::json::Json;
use rp_proto::notifier::v1 as pb;

use super::{ApiQuery, AppState, PROBLEM};
use crate::{
    dto::*,
    extract::{ApiJson, Caller},
    problem::Problem,
};

/// List escalation policies.
#[utoipa::path(get, path = "/api/v1/escalation-policies", tag = "notifications", security(("bearer" = [])),
    responses((status = 200, description = "Escalation policies, oldest first", body = EscalationPolicyList)))]
pub async fn list_escalation_policies(
    State(state): State<AppState>,
    caller: Caller,
) -> Result<Json<EscalationPolicyList>, Problem> {
    caller.require_token()?;
    let request = caller.grpc(pb::ListEscalationPoliciesRequest {});
    let list = state.clients.notifier.clone().list_escalation_policies(request).await?.into_inner();
    Ok(Json(EscalationPolicyList { items: list.policies.into_iter().map(EscalationPolicy::from).collect() }))
}

/// Create an escalation policy (admins).
#[utoipa::path(post, path = "/api/v1/escalation-policies", tag = "notifications", security(("bearer" = [])),
    request_body = EscalationPolicyRequest,
    responses(
        (status = 201, description = "Created", body = EscalationPolicy),
        (status = 403, description = "Not an admin", body = Problem, content_type = PROBLEM),
        (status = 422, description = "Invalid policy, or a channel that does not exist", body = Problem,
            content_type = PROBLEM),
    ))]
pub async fn create_escalation_policy(
    State(state): State<AppState>,
    caller: Caller,
    ApiJson(body): ApiJson<EscalationPolicyRequest>,
) -> Result<(StatusCode, Json<EscalationPolicy>), Problem> {
    caller.require_token()?;
    let request = caller.grpc(body.into_pb()?);
    let policy = state.clients.notifier.clone().create_escalation_policy(request).await?.into_inner();
    Ok((StatusCode::CREATED, Json(policy.into())))
}

/// Replace an escalation policy (admins); running escalations keep the levels they started with.
#[utoipa::path(put, path = "/api/v1/escalation-policies/{id}", tag = "notifications", security(("bearer" = [])),
    params(("id" = uuid::Uuid, Path, description = "Policy id")),
    request_body = EscalationPolicyRequest,
    responses(
        (status = 200, description = "The policy", body = EscalationPolicy),
        (status = 403, description = "Not an admin", body = Problem, content_type = PROBLEM),
        (status = 404, description = "No such policy", body = Problem, content_type = PROBLEM),
        (status = 422, description = "Invalid policy", body = Problem, content_type = PROBLEM),
    ))]
pub async fn update_escalation_policy(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
    ApiJson(body): ApiJson<EscalationPolicyRequest>,
) -> Result<Json<EscalationPolicy>, Problem> {
    caller.require_token()?;
    path_id(&id)?;
    let request = caller.grpc(pb::UpdateEscalationPolicyRequest { id, policy: Some(body.into_pb()?) });
    let policy = state.clients.notifier.clone().update_escalation_policy(request).await?.into_inner();
    Ok(Json(policy.into()))
}

/// Delete an escalation policy (admins).
#[utoipa::path(delete, path = "/api/v1/escalation-policies/{id}", tag = "notifications", security(("bearer" = [])),
    params(("id" = uuid::Uuid, Path, description = "Policy id")),
    responses(
        (status = 204, description = "Deleted"),
        (status = 403, description = "Not an admin", body = Problem, content_type = PROBLEM),
        (status = 404, description = "No such policy", body = Problem, content_type = PROBLEM),
    ))]
pub async fn delete_escalation_policy(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<StatusCode, Problem> {
    caller.require_token()?;
    path_id(&id)?;
    let request = caller.grpc(pb::DeleteEscalationPolicyRequest { id });
    state.clients.notifier.clone().delete_escalation_policy(request).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// List escalations, newest first.
#[utoipa::path(get, path = "/api/v1/escalations", tag = "notifications", security(("bearer" = [])),
    params(EscalationQuery),
    responses(
        (status = 200, description = "Escalations", body = EscalationList),
        (status = 422, description = "Invalid filter", body = Problem, content_type = PROBLEM),
    ))]
pub async fn list_escalations(
    State(state): State<AppState>,
    caller: Caller,
    ApiQuery(query): ApiQuery<EscalationQuery>,
) -> Result<Json<EscalationList>, Problem> {
    caller.require_token()?;
    let request = caller.grpc(query.into_pb()?);
    let list = state.clients.notifier.clone().list_escalations(request).await?.into_inner();
    Ok(Json(EscalationList { items: list.escalations.into_iter().map(Escalation::from).collect() }))
}

/// Get an escalation with the levels fired so far.
#[utoipa::path(get, path = "/api/v1/escalations/{id}", tag = "notifications", security(("bearer" = [])),
    params(("id" = uuid::Uuid, Path, description = "Escalation id")),
    responses(
        (status = 200, description = "The escalation", body = Escalation),
        (status = 404, description = "No such escalation", body = Problem, content_type = PROBLEM),
    ))]
pub async fn get_escalation(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<Json<Escalation>, Problem> {
    caller.require_token()?;
    path_id(&id)?;
    let request = caller.grpc(pb::GetEscalationRequest { id });
    let escalation = state.clients.notifier.clone().get_escalation(request).await?.into_inner();
    Ok(Json(escalation.into()))
}

/// Acknowledge an escalation (incident commanders, release managers, admins): no later level
/// fires. Acknowledging an acknowledged escalation returns it unchanged.
#[utoipa::path(post, path = "/api/v1/escalations/{id}/acknowledge", tag = "notifications", security(("bearer" = [])),
    params(("id" = uuid::Uuid, Path, description = "Escalation id")),
    request_body = AcknowledgeRequest,
    responses(
        (status = 200, description = "The escalation", body = Escalation),
        (status = 403, description = "Not an incident commander, release manager or admin", body = Problem,
            content_type = PROBLEM),
        (status = 404, description = "No such escalation", body = Problem, content_type = PROBLEM),
        (status = 409, description = "The escalation has ended (resolved or exhausted)", body = Problem,
            content_type = PROBLEM),
    ))]
pub async fn acknowledge_escalation(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
    ApiJson(body): ApiJson<AcknowledgeRequest>,
) -> Result<Json<Escalation>, Problem> {
    caller.require_token()?;
    let request = caller.grpc(body.into_pb(id)?);
    let escalation = state.clients.notifier.clone().acknowledge_escalation(request).await?.into_inner();
    Ok(Json(escalation.into()))
}

fn page(title: &str, body: &str) -> Html<String> {
    Html(format!(
        "<!doctype html><html><head><meta charset=\"utf-8\"><meta name=\"robots\" content=\"noindex\">\
         <title>{title}</title></head><body style=\"font-family: sans-serif; max-width: 40em; margin: 3em auto\">\
         <h1>{title}</h1>{body}</body></html>"
    ))
}

fn html_headers(response: impl IntoResponse) -> Response {
    let mut response = response.into_response();
    let headers = response.headers_mut();
    headers.insert(header::CACHE_CONTROL, header::HeaderValue::from_static("no-store"));
    headers.insert(header::REFERRER_POLICY, header::HeaderValue::from_static("no-referrer"));
    response
}

/// The acknowledge link of an escalation message: a page with a button. Opening the link
/// acknowledges nothing, so mail scanners that follow every link stop no escalation.
#[utoipa::path(get, path = "/api/v1/ack/{token}", tag = "notifications",
    params(("token" = String, Path, description = "The signed token of the link")),
    responses((status = 200, description = "A page with an Acknowledge button", content_type = "text/html", body = String)))]
pub async fn ack_page(Path(_token): Path<String>) -> Response {
    // The form posts to this same URL; the token stays out of the page.
    html_headers(page(
        "Acknowledge the escalation",
        "<p>Acknowledging stops the escalation: nobody else is paged for this incident.</p>\
         <form method=\"post\"><button type=\"submit\">Acknowledge</button></form>",
    ))
}

/// Acknowledge through the signed link of an escalation message; the token is the credential,
/// no sign-in needed. A browser (`Accept: text/html`) gets a page, other clients the escalation.
#[utoipa::path(post, path = "/api/v1/ack/{token}", tag = "notifications",
    params(("token" = String, Path, description = "The signed token of the link")),
    responses(
        (status = 200, description = "Acknowledged (or acknowledged already)", body = Escalation),
        (status = 403, description = "The token is forged or expired", body = Problem, content_type = PROBLEM),
        (status = 404, description = "The escalation no longer exists", body = Problem, content_type = PROBLEM),
        (status = 409, description = "The escalation has ended", body = Problem, content_type = PROBLEM),
        (status = 422, description = "Not a token", body = Problem, content_type = PROBLEM),
    ))]
pub async fn ack_by_link(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path(token): Path<String>,
) -> Result<Response, Problem> {
    let browser = headers
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|accept| accept.contains("text/html"));
    let request = tonic::Request::new(pb::AcknowledgeByTokenRequest { token });
    match state.clients.notifier.clone().acknowledge_escalation_by_token(request).await {
        Ok(escalation) => {
            let escalation = Escalation::from(escalation.into_inner());
            if browser {
                let who = escalation.acknowledged_by.clone().unwrap_or_default();
                let body = format!(
                    "<p>The escalation of incident {} ({}) is acknowledged{}.</p>",
                    html_escape(&escalation.incident_id),
                    html_escape(&escalation.summary),
                    if who.is_empty() { String::new() } else { format!(" by {}", html_escape(&who)) }
                );
                Ok(html_headers((StatusCode::OK, page("Acknowledged", &body))))
            } else {
                Ok(Json(escalation).into_response())
            }
        }
        Err(status) if browser => {
            let problem = Problem::from(status);
            let code = StatusCode::from_u16(problem.status).unwrap_or(StatusCode::BAD_REQUEST);
            let body = format!("<p>{}</p>", html_escape(problem.detail.as_deref().unwrap_or(&problem.title)));
            Ok(html_headers((code, page("Not acknowledged", &body))))
        }
        Err(status) => Err(status.into()),
    }
}

fn html_escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
        .replace('\'', "&#39;")
}
