//! Apps.

use axum::{
    extract::{Path, State},
    http::{HeaderMap, StatusCode},
    response::IntoResponse,
};

use crate::json::Json;
use rp_proto::release::v1 as pb;

use super::{ApiQuery, AppState, PROBLEM};
use crate::{
    dto::*,
    extract::{ApiJson, Caller},
    problem::Problem,
};

/// List apps.
#[utoipa::path(get, path = "/api/v1/apps", tag = "apps", security(("bearer" = [])), params(PageQuery),
    responses((status = 200, description = "A page of apps", body = AppPage)))]
pub async fn list_apps(
    State(state): State<AppState>,
    caller: Caller,
    ApiQuery(query): ApiQuery<PageQuery>,
) -> Result<Json<AppPage>, Problem> {
    caller.require_token()?;
    let request = caller.grpc(pb::ListAppsRequest {
        page_size: check_page_size(query.page_size)?,
        page_token: check_page_token(query.page_token)?,
    });
    let page = state.clients.release.clone().list_apps(request).await?.into_inner();
    Ok(Json(AppPage {
        items: page.apps.into_iter().map(App::from).collect(),
        next_page_token: next_token(page.next_page_token),
    }))
}

/// Register an app (release managers). Send `Idempotency-Key` to make retries safe.
#[utoipa::path(post, path = "/api/v1/apps", tag = "apps", security(("bearer" = [])), request_body = CreateAppRequest,
    params(("Idempotency-Key" = Option<String>, Header, description = "Retries with the same key return the first result")),
    responses(
        (status = 201, description = "App registered", body = App),
        (status = 409, description = "Name taken", body = Problem, content_type = PROBLEM),
        (status = 422, description = "Invalid name", body = Problem, content_type = PROBLEM),
    ))]
pub async fn create_app(
    State(state): State<AppState>,
    caller: Caller,
    headers: HeaderMap,
    ApiJson(body): ApiJson<CreateAppRequest>,
) -> Result<impl IntoResponse, Problem> {
    caller.require_token()?;
    let idempotency_key =
        headers.get("idempotency-key").and_then(|v| v.to_str().ok()).unwrap_or("").to_owned();
    if idempotency_key.len() > 200 {
        return Err(Problem::validation("Idempotency-Key is limited to 200 characters"));
    }
    let request = caller.grpc(pb::CreateAppRequest {
        name: body.name,
        description: body.description,
        owner_team: body.owner_team,
        idempotency_key,
    });
    let app = state.clients.release.clone().create_app(request).await?.into_inner();
    Ok((StatusCode::CREATED, Json(App::from(app))))
}

/// Get an app by name or id.
#[utoipa::path(get, path = "/api/v1/apps/{app}", tag = "apps", security(("bearer" = [])),
    params(("app" = String, Path, description = "App name or id")),
    responses(
        (status = 200, description = "The app", body = App),
        (status = 404, description = "No such app", body = Problem, content_type = PROBLEM),
    ))]
pub async fn get_app(
    State(state): State<AppState>,
    caller: Caller,
    Path(app): Path<String>,
) -> Result<Json<App>, Problem> {
    caller.require_token()?;
    let app =
        state.clients.release.clone().get_app(caller.grpc(pb::GetAppRequest { app })).await?.into_inner();
    Ok(Json(app.into()))
}
