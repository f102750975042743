//! Environments (the promotion pipeline), deployment targets and freeze windows.

use axum::{
    extract::{Path, State},
    http::{HeaderMap, StatusCode, header},
    response::IntoResponse,
};

use crate::json::Json;
use rp_proto::release::v1 as pb;

use super::{ApiQuery, AppState, PROBLEM, idempotency_key};
use crate::{
    dto::*,
    extract::{ApiJson, Caller},
    problem::Problem,
};

/// List the environments, in promotion order.
#[utoipa::path(get, path = "/api/v1/environments", tag = "environments", security(("bearer" = [])),
    responses((status = 200, description = "The pipeline", body = EnvironmentList)))]
pub async fn list_environments(
    State(state): State<AppState>,
    caller: Caller,
) -> Result<Json<EnvironmentList>, Problem> {
    caller.require_token()?;
    let list = state
        .clients
        .release
        .clone()
        .list_environments(caller.grpc(pb::ListEnvironmentsRequest {}))
        .await?
        .into_inner();
    Ok(Json(EnvironmentList { items: list.environments.into_iter().map(Environment::from).collect() }))
}

/// Add an environment to the pipeline (release managers). Production environments default to
/// deployments by release managers with one approval.
#[utoipa::path(post, path = "/api/v1/environments", tag = "environments", security(("bearer" = [])),
    request_body = CreateEnvironmentRequest,
    params(("Idempotency-Key" = Option<String>, Header, nullable = false, pattern = "^[!-~]{1,200}$",
        description = "Retries with the same key return the first result")),
    responses(
        (status = 201, description = "Environment created", body = Environment),
        (status = 409, description = "Name taken", body = Problem, content_type = PROBLEM),
    ))]
pub async fn create_environment(
    State(state): State<AppState>,
    caller: Caller,
    headers: HeaderMap,
    ApiJson(body): ApiJson<CreateEnvironmentRequest>,
) -> Result<impl IntoResponse, Problem> {
    caller.require_token()?;
    let request = body.into_pb(idempotency_key(&headers)?)?;
    let env = state.clients.release.clone().create_environment(caller.grpc(request)).await?.into_inner();
    Ok((StatusCode::CREATED, Json(Environment::from(env))))
}

/// Change an environment's position, production flag, roles, approvals or quality thresholds
/// (release managers).
#[utoipa::path(patch, path = "/api/v1/environments/{environment}", tag = "environments", security(("bearer" = [])),
    params(("environment" = String, Path, description = "Environment name or id")),
    request_body = UpdateEnvironmentRequest,
    responses(
        (status = 200, description = "The updated environment", body = Environment),
        (status = 404, description = "No such environment", body = Problem, content_type = PROBLEM),
    ))]
pub async fn update_environment(
    State(state): State<AppState>,
    caller: Caller,
    Path(environment): Path<String>,
    ApiJson(body): ApiJson<UpdateEnvironmentRequest>,
) -> Result<Json<Environment>, Problem> {
    caller.require_token()?;
    let request = body.into_pb(environment)?;
    let env = state.clients.release.clone().update_environment(caller.grpc(request)).await?.into_inner();
    Ok(Json(env.into()))
}

/// List an app's deployment targets (never their secrets).
#[utoipa::path(get, path = "/api/v1/apps/{app}/targets", tag = "apps", security(("bearer" = [])),
    params(("app" = String, Path, description = "App name or id")),
    responses(
        (status = 200, description = "The app's targets", body = TargetList),
        (status = 404, description = "No such app", body = Problem, content_type = PROBLEM),
    ))]
pub async fn list_targets(
    State(state): State<AppState>,
    caller: Caller,
    Path(app): Path<String>,
) -> Result<Json<TargetList>, Problem> {
    caller.require_token()?;
    if app.is_empty() {
        return Err(Problem::new(StatusCode::NOT_FOUND, "not_found", "app \"\" not found"));
    }
    let list = state
        .clients
        .release
        .clone()
        .list_targets(caller.grpc(pb::ListTargetsRequest { app }))
        .await?
        .into_inner();
    Ok(Json(TargetList { items: list.targets.into_iter().map(Target::from).collect() }))
}

/// Create or replace the target of an app in an environment (release managers). A new webhook
/// target without a secret gets a generated one, returned in this response only.
#[utoipa::path(put, path = "/api/v1/apps/{app}/targets/{environment}", tag = "apps", security(("bearer" = [])),
    params(
        ("app" = String, Path, description = "App name or id"),
        ("environment" = String, Path, description = "Environment name or id"),
    ),
    request_body = PutTargetRequest,
    responses(
        (status = 200, description = "The target, and the generated secret if one was generated",
            body = PutTargetResponse, headers(("Cache-Control" = String, description = "`no-store`"))),
        (status = 404, description = "No such app or environment", body = Problem, content_type = PROBLEM),
        (status = 422, description = "Invalid driver settings, strategy or steps", body = Problem, content_type = PROBLEM),
    ))]
pub async fn put_target(
    State(state): State<AppState>,
    caller: Caller,
    Path((app, environment)): Path<(String, String)>,
    ApiJson(body): ApiJson<PutTargetRequest>,
) -> Result<impl IntoResponse, Problem> {
    caller.require_token()?;
    let request = body.into_pb(app, environment)?;
    let response = state.clients.release.clone().put_target(caller.grpc(request)).await?.into_inner();
    let target = response.target.map(Target::from).ok_or_else(Problem::internal)?;
    let generated_secret = Some(response.generated_secret).filter(|s| !s.is_empty());
    Ok(([(header::CACHE_CONTROL, "no-store")], Json(PutTargetResponse { target, generated_secret })))
}

/// List freeze windows: current and future ones, or all.
#[utoipa::path(get, path = "/api/v1/freeze-windows", tag = "environments", security(("bearer" = [])),
    params(FreezeWindowQuery),
    responses((status = 200, description = "Freeze windows", body = FreezeWindowList)))]
pub async fn list_freeze_windows(
    State(state): State<AppState>,
    caller: Caller,
    ApiQuery(query): ApiQuery<FreezeWindowQuery>,
) -> Result<Json<FreezeWindowList>, Problem> {
    caller.require_token()?;
    let request = caller.grpc(pb::ListFreezeWindowsRequest { include_past: query.include_past });
    let list = state.clients.release.clone().list_freeze_windows(request).await?.into_inner();
    Ok(Json(FreezeWindowList { items: list.windows.into_iter().map(FreezeWindow::from).collect() }))
}

/// Freeze deployments to an environment, or all, for a while (release managers). Only hotfixes
/// deploy during a freeze.
#[utoipa::path(post, path = "/api/v1/freeze-windows", tag = "environments", security(("bearer" = [])),
    request_body = CreateFreezeWindowRequest,
    responses(
        (status = 201, description = "Freeze window created", body = FreezeWindow),
        (status = 404, description = "No such environment", body = Problem, content_type = PROBLEM),
    ))]
pub async fn create_freeze_window(
    State(state): State<AppState>,
    caller: Caller,
    ApiJson(body): ApiJson<CreateFreezeWindowRequest>,
) -> Result<impl IntoResponse, Problem> {
    caller.require_token()?;
    let request = body.into_pb()?;
    let window = state.clients.release.clone().create_freeze_window(caller.grpc(request)).await?.into_inner();
    Ok((StatusCode::CREATED, Json(FreezeWindow::from(window))))
}

/// End a freeze window early, or cancel a planned one (release managers).
#[utoipa::path(delete, path = "/api/v1/freeze-windows/{id}", tag = "environments", security(("bearer" = [])),
    params(("id" = uuid::Uuid, Path, description = "Freeze window id")),
    responses(
        (status = 204, description = "Deleted"),
        (status = 404, description = "No such freeze window", body = Problem, content_type = PROBLEM),
    ))]
pub async fn delete_freeze_window(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<StatusCode, Problem> {
    caller.require_token()?;
    state
        .clients
        .release
        .clone()
        .delete_freeze_window(caller.grpc(pb::DeleteFreezeWindowRequest { id }))
        .await?;
    Ok(StatusCode::NO_CONTENT)
}
