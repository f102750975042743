//! Deployments: creation behind the gates, approvals, people's operations (pause, resume,
//! promote, abort, rollback), driver callbacks, live updates and what runs where.

use std::{convert::Infallible, time::Duration};

use axum::{
    extract::{Path, State},
    http::{HeaderMap, HeaderValue, StatusCode, header},
    response::{
        IntoResponse, Response,
        sse::{Event, KeepAlive, Sse},
    },
};

use crate::json::Json;
use futures::{Stream, StreamExt as _};
use rp_proto::release::v1 as pb;

use super::{ApiQuery, AppState, PROBLEM, expected_revision, idempotency_key};
use crate::{
    dto::*,
    extract::{ApiJson, Caller},
    problem::Problem,
};

/// A deployment with its revision as `ETag`, for `If-Match`.
fn deployment(status: StatusCode, deployment: pb::Deployment) -> Response {
    let deployment = Deployment::from(deployment);
    let mut response = (status, Json(&deployment)).into_response();
    if let Ok(etag) = HeaderValue::from_str(&format!("\"{}\"", deployment.revision)) {
        response.headers_mut().insert(header::ETAG, etag);
    }
    response
}

/// List deployments, newest first.
#[utoipa::path(get, path = "/api/v1/deployments", tag = "deployments", security(("bearer" = [])),
    params(DeploymentListQuery),
    responses(
        (status = 200, description = "A page of deployments", body = DeploymentPage),
        (status = 404, description = "No such app or environment", body = Problem, content_type = PROBLEM),
    ))]
pub async fn list_deployments(
    State(state): State<AppState>,
    caller: Caller,
    ApiQuery(query): ApiQuery<DeploymentListQuery>,
) -> Result<Json<DeploymentPage>, Problem> {
    caller.require_token()?;
    let request = caller.grpc(pb::ListDeploymentsRequest {
        app: query.app.unwrap_or_default(),
        environment: query.environment.unwrap_or_default(),
        state: query.state.map(|s| s.as_str().to_owned()).unwrap_or_default(),
        page_size: check_page_size(query.page_size)?,
        page_token: check_page_token(query.page_token)?,
    });
    let page = state.clients.release.clone().list_deployments(request).await?.into_inner();
    Ok(Json(DeploymentPage {
        items: page.deployments.into_iter().map(Deployment::from).collect(),
        next_page_token: next_token(page.next_page_token),
    }))
}

/// Deploy a release to an environment. The environment's gates decide: deployer roles (403),
/// freeze windows, promotion order and quality thresholds (409, naming the gate); with required
/// approvals the deployment waits in `awaiting_approval`. A newer request replaces one that has
/// not started. Send `Idempotency-Key` to make retries safe.
#[utoipa::path(post, path = "/api/v1/deployments", tag = "deployments", security(("bearer" = [])),
    params(("Idempotency-Key" = Option<String>, Header, nullable = false, pattern = "^[!-~]{1,200}$",
        description = "Retries with the same key return the first result")),
    request_body = CreateDeploymentRequest,
    responses(
        (status = 201, description = "Deployment created (pending or awaiting approval)", body = Deployment,
            headers(("ETag" = String, description = "The deployment's revision, for `If-Match`"))),
        (status = 403, description = "A gate refused: you may not deploy here", body = Problem, content_type = PROBLEM),
        (status = 404, description = "No such app, environment or release", body = Problem, content_type = PROBLEM),
        (status = 409, description = "A gate refused (freeze, promotion order, quality), or the app has no target there",
            body = Problem, content_type = PROBLEM),
    ))]
pub async fn create_deployment(
    State(state): State<AppState>,
    caller: Caller,
    headers: HeaderMap,
    ApiJson(body): ApiJson<CreateDeploymentRequest>,
) -> Result<Response, Problem> {
    caller.require_token()?;
    let request = body.into_pb(idempotency_key(&headers)?)?;
    let created = state.clients.release.clone().create_deployment(caller.grpc(request)).await?.into_inner();
    Ok(deployment(StatusCode::CREATED, created))
}

/// Get a deployment.
#[utoipa::path(get, path = "/api/v1/deployments/{id}", tag = "deployments", security(("bearer" = [])),
    params(("id" = uuid::Uuid, Path, description = "Deployment id")),
    responses(
        (status = 200, description = "The deployment", body = Deployment,
            headers(("ETag" = String, description = "The deployment's revision, for `If-Match`"))),
        (status = 404, description = "No such deployment", body = Problem, content_type = PROBLEM),
    ))]
pub async fn get_deployment(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<Response, Problem> {
    caller.require_token()?;
    let found =
        state.clients.release.clone().get_deployment(caller.grpc(pb::GetDeploymentRequest { id })).await?;
    Ok(deployment(StatusCode::OK, found.into_inner()))
}

/// How often an idle event stream carries a comment, so proxies keep it open.
const KEEP_ALIVE: Duration = Duration::from_secs(10);

fn deployment_event(deployment: pb::Deployment) -> Event {
    let revision = deployment.revision.to_string();
    let event = Event::default().event("deployment").id(revision);
    match serde_json::to_string(&Deployment::from(deployment)) {
        Ok(json) => event.data(json),
        Err(_) => error_event(&Problem::internal()),
    }
}

fn error_event(problem: &Problem) -> Event {
    Event::default().event("error").data(serde_json::to_string(problem).unwrap_or_default())
}

/// Follow a deployment live, as Server-Sent Events: a `deployment` event (the deployment as
/// JSON, `id` its revision) now and after every change; the stream ends when the deployment
/// reaches a final state (`succeeded`, `failed`, `rolled_back`, `aborted`, `superseded`). An
/// `error` event (a problem document) ends it early. Comments keep an idle stream open.
#[utoipa::path(get, path = "/api/v1/deployments/{id}/events", tag = "deployments", security(("bearer" = [])),
    params(("id" = uuid::Uuid, Path, description = "Deployment id")),
    responses(
        (status = 200, description = "The event stream; each event as described", body = DeploymentEvent,
            content_type = "text/event-stream"),
        (status = 404, description = "No such deployment", body = Problem, content_type = PROBLEM),
    ))]
pub async fn deployment_events(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<impl IntoResponse, Problem> {
    caller.require_token()?;
    let request = caller.grpc(pb::GetDeploymentRequest { id });
    let updates = state.clients.release.clone().watch_deployment(request).await?.into_inner();
    let events = futures::stream::unfold(Some(updates), |updates| async move {
        let mut updates = updates?;
        match updates.next().await? {
            Ok(deployment) => Some((deployment_event(deployment), Some(updates))),
            Err(status) => Some((error_event(&Problem::from_status(&status)), None)),
        }
    });
    // Stops at shutdown too, so a watcher does not hold the server open.
    let events = events.take_until(state.shutdown.clone().cancelled_owned());
    let stream: std::pin::Pin<Box<dyn Stream<Item = Result<Event, Infallible>> + Send>> =
        Box::pin(events.map(Ok));
    Ok((
        [(header::HeaderName::from_static("x-accel-buffering"), "no")],
        Sse::new(stream).keep_alive(KeepAlive::new().interval(KEEP_ALIVE)),
    ))
}

/// Approve or reject a deployment waiting for approval (or a blue-green switch). Approvers need
/// one of the environment's approver roles, and nobody approves their own deployment (403).
#[utoipa::path(post, path = "/api/v1/deployments/{id}/approvals", tag = "deployments", security(("bearer" = [])),
    params(
        ("id" = uuid::Uuid, Path, description = "Deployment id"),
        ("Idempotency-Key" = Option<String>, Header, nullable = false, pattern = "^[!-~]{1,200}$",
            description = "Retries with the same key return the first result"),
    ),
    request_body = ApprovalRequest,
    responses(
        (status = 200, description = "Decision recorded; the deployment as it is now", body = Deployment,
            headers(("ETag" = String, description = "The deployment's revision"))),
        (status = 403, description = "Not an approver here, or your own deployment (four-eyes)", body = Problem,
            content_type = PROBLEM),
        (status = 409, description = "Needs no approval, or you have decided already", body = Problem,
            content_type = PROBLEM),
    ))]
pub async fn approve_deployment(
    State(state): State<AppState>,
    caller: Caller,
    headers: HeaderMap,
    Path(id): Path<String>,
    ApiJson(body): ApiJson<ApprovalRequest>,
) -> Result<Response, Problem> {
    caller.require_token()?;
    let request = pb::ApproveDeploymentRequest {
        id,
        decision: body.decision.as_str().to_owned(),
        comment: body.comment,
        idempotency_key: idempotency_key(&headers)?,
    };
    let approved = state.clients.release.clone().approve_deployment(caller.grpc(request)).await?.into_inner();
    Ok(deployment(StatusCode::OK, approved))
}

/// Pause a deployment holding a step: the hold stops counting until it resumes.
#[utoipa::path(post, path = "/api/v1/deployments/{id}/pause", tag = "deployments", security(("bearer" = [])),
    params(
        ("id" = uuid::Uuid, Path, description = "Deployment id"),
        ("If-Match" = Option<String>, Header, nullable = false, pattern = r#"^(\*|[1-9][0-9]{0,17}|"[1-9][0-9]{0,17}")$"#,
            description = "Act only if the deployment is still at this revision (its `ETag`); else 409"),
        ("Idempotency-Key" = Option<String>, Header, nullable = false, pattern = "^[!-~]{1,200}$",
            description = "Retries with the same key return the first result"),
    ),
    request_body = ReasonRequest,
    responses(
        (status = 200, description = "Paused", body = Deployment,
            headers(("ETag" = String, description = "The deployment's revision"))),
        (status = 409, description = "Not holding a step, or changed since the `If-Match` revision", body = Problem,
            content_type = PROBLEM),
    ))]
pub async fn pause_deployment(
    State(state): State<AppState>,
    caller: Caller,
    headers: HeaderMap,
    Path(id): Path<String>,
    ApiJson(body): ApiJson<ReasonRequest>,
) -> Result<Response, Problem> {
    caller.require_token()?;
    let request = pb::DeploymentActionRequest {
        id,
        reason: body.reason,
        expected_revision: expected_revision(&headers)?,
        idempotency_key: idempotency_key(&headers)?,
    };
    let paused = state.clients.release.clone().pause_deployment(caller.grpc(request)).await?.into_inner();
    Ok(deployment(StatusCode::OK, paused))
}

/// Resume a paused deployment where it stopped.
#[utoipa::path(post, path = "/api/v1/deployments/{id}/resume", tag = "deployments", security(("bearer" = [])),
    params(
        ("id" = uuid::Uuid, Path, description = "Deployment id"),
        ("If-Match" = Option<String>, Header, nullable = false, pattern = r#"^(\*|[1-9][0-9]{0,17}|"[1-9][0-9]{0,17}")$"#,
            description = "Act only if the deployment is still at this revision (its `ETag`); else 409"),
        ("Idempotency-Key" = Option<String>, Header, nullable = false, pattern = "^[!-~]{1,200}$",
            description = "Retries with the same key return the first result"),
    ),
    responses(
        (status = 200, description = "Resumed", body = Deployment,
            headers(("ETag" = String, description = "The deployment's revision"))),
        (status = 409, description = "Not paused, or changed since the `If-Match` revision", body = Problem,
            content_type = PROBLEM),
    ))]
pub async fn resume_deployment(
    State(state): State<AppState>,
    caller: Caller,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Result<Response, Problem> {
    caller.require_token()?;
    let request = pb::DeploymentActionRequest {
        id,
        reason: String::new(),
        expected_revision: expected_revision(&headers)?,
        idempotency_key: idempotency_key(&headers)?,
    };
    let resumed = state.clients.release.clone().resume_deployment(caller.grpc(request)).await?.into_inner();
    Ok(deployment(StatusCode::OK, resumed))
}

/// End the current hold now (on to the next step), or with `full` go straight to 100%.
#[utoipa::path(post, path = "/api/v1/deployments/{id}/promote", tag = "deployments", security(("bearer" = [])),
    params(
        ("id" = uuid::Uuid, Path, description = "Deployment id"),
        ("If-Match" = Option<String>, Header, nullable = false, pattern = r#"^(\*|[1-9][0-9]{0,17}|"[1-9][0-9]{0,17}")$"#,
            description = "Act only if the deployment is still at this revision (its `ETag`); else 409"),
        ("Idempotency-Key" = Option<String>, Header, nullable = false, pattern = "^[!-~]{1,200}$",
            description = "Retries with the same key return the first result"),
    ),
    request_body = PromoteRequest,
    responses(
        (status = 200, description = "Promoted", body = Deployment,
            headers(("ETag" = String, description = "The deployment's revision"))),
        (status = 409, description = "Not holding a step, or changed since the `If-Match` revision", body = Problem,
            content_type = PROBLEM),
    ))]
pub async fn promote_deployment(
    State(state): State<AppState>,
    caller: Caller,
    headers: HeaderMap,
    Path(id): Path<String>,
    ApiJson(body): ApiJson<PromoteRequest>,
) -> Result<Response, Problem> {
    caller.require_token()?;
    let request = pb::PromoteDeploymentRequest {
        id,
        full: body.full,
        expected_revision: expected_revision(&headers)?,
        idempotency_key: idempotency_key(&headers)?,
    };
    let promoted = state.clients.release.clone().promote_deployment(caller.grpc(request)).await?.into_inner();
    Ok(deployment(StatusCode::OK, promoted))
}

/// Stop a deployment. One that had taken traffic gives it back to the previous version first.
#[utoipa::path(post, path = "/api/v1/deployments/{id}/abort", tag = "deployments", security(("bearer" = [])),
    params(
        ("id" = uuid::Uuid, Path, description = "Deployment id"),
        ("If-Match" = Option<String>, Header, nullable = false, pattern = r#"^(\*|[1-9][0-9]{0,17}|"[1-9][0-9]{0,17}")$"#,
            description = "Act only if the deployment is still at this revision (its `ETag`); else 409"),
        ("Idempotency-Key" = Option<String>, Header, nullable = false, pattern = "^[!-~]{1,200}$",
            description = "Retries with the same key return the first result"),
    ),
    request_body = ReasonRequest,
    responses(
        (status = 200, description = "Aborted", body = Deployment,
            headers(("ETag" = String, description = "The deployment's revision"))),
        (status = 409, description = "Already finished, or changed since the `If-Match` revision", body = Problem,
            content_type = PROBLEM),
    ))]
pub async fn abort_deployment(
    State(state): State<AppState>,
    caller: Caller,
    headers: HeaderMap,
    Path(id): Path<String>,
    ApiJson(body): ApiJson<ReasonRequest>,
) -> Result<Response, Problem> {
    caller.require_token()?;
    let request = pb::DeploymentActionRequest {
        id,
        reason: body.reason,
        expected_revision: expected_revision(&headers)?,
        idempotency_key: idempotency_key(&headers)?,
    };
    let aborted = state.clients.release.clone().abort_deployment(caller.grpc(request)).await?.into_inner();
    Ok(deployment(StatusCode::OK, aborted))
}

/// Roll a deployment back: traffic goes to the version serving before (or `target_version`)
/// first, then the deployment is marked `rolled_back`. Repeating it returns the same result.
#[utoipa::path(post, path = "/api/v1/deployments/{id}/rollback", tag = "deployments", security(("bearer" = [])),
    params(
        ("id" = uuid::Uuid, Path, description = "Deployment id"),
        ("Idempotency-Key" = Option<String>, Header, nullable = false, pattern = "^[!-~]{1,200}$",
            description = "Retries with the same key return the first result"),
    ),
    request_body = RollbackDeploymentRequest,
    responses(
        (status = 200, description = "Rolled back", body = Deployment,
            headers(("ETag" = String, description = "The deployment's revision"))),
        (status = 409, description = "Nothing to roll back to, or not running or succeeded", body = Problem,
            content_type = PROBLEM),
    ))]
pub async fn rollback_deployment(
    State(state): State<AppState>,
    caller: Caller,
    headers: HeaderMap,
    Path(id): Path<String>,
    ApiJson(body): ApiJson<RollbackDeploymentRequest>,
) -> Result<Response, Problem> {
    caller.require_token()?;
    let request = pb::RollbackRequest {
        deployment_id: id,
        app: String::new(),
        environment: String::new(),
        target_version: body.target_version.unwrap_or_default(),
        reason: body.reason,
        trigger: String::new(),
        idempotency_key: idempotency_key(&headers)?,
    };
    let rolled = state.clients.release.clone().rollback_deployment(caller.grpc(request)).await?.into_inner();
    Ok(deployment(StatusCode::OK, rolled))
}

/// Report how a step an external deployer accepted (HTTP 202) went: the webhook driver's
/// callback (`callback_url` of its call).
#[utoipa::path(post, path = "/api/v1/deployments/{id}/driver-result", tag = "deployments", security(("bearer" = [])),
    params(("id" = uuid::Uuid, Path, description = "Deployment id")),
    request_body = DriverResultRequest,
    responses(
        (status = 200, description = "Recorded; the deployment as it is now", body = Deployment,
            headers(("ETag" = String, description = "The deployment's revision"))),
        (status = 409, description = "The deployment is not waiting for this step", body = Problem,
            content_type = PROBLEM),
    ))]
pub async fn report_driver_result(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
    ApiJson(body): ApiJson<DriverResultRequest>,
) -> Result<Response, Problem> {
    caller.require_token()?;
    let request = body.into_pb(id)?;
    let updated =
        state.clients.release.clone().report_driver_result(caller.grpc(request)).await?.into_inner();
    Ok(deployment(StatusCode::OK, updated))
}

/// What runs where: for each app and environment, the version serving, since when, and the
/// deployment in flight.
#[utoipa::path(get, path = "/api/v1/status", tag = "deployments", security(("bearer" = [])),
    params(StatusQuery),
    responses(
        (status = 200, description = "App × environment", body = StatusList),
        (status = 404, description = "No such app", body = Problem, content_type = PROBLEM),
    ))]
pub async fn get_status(
    State(state): State<AppState>,
    caller: Caller,
    ApiQuery(query): ApiQuery<StatusQuery>,
) -> Result<Json<StatusList>, Problem> {
    caller.require_token()?;
    let request = caller.grpc(pb::GetStatusRequest { app: query.app.unwrap_or_default() });
    let status = state.clients.release.clone().get_status(request).await?.into_inner();
    Ok(Json(status.into()))
}
