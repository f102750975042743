//! Releases: versions computed from Conventional Commits (or given), changelogs, quality checks.

use axum::{
    extract::{Path, State},
    http::{HeaderMap, StatusCode},
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

/// List an app's releases, newest first.
#[utoipa::path(get, path = "/api/v1/releases", tag = "releases", security(("bearer" = [])),
    params(ReleaseListQuery),
    responses(
        (status = 200, description = "A page of releases", body = ReleasePage),
        (status = 404, description = "No such app", body = Problem, content_type = PROBLEM),
    ))]
pub async fn list_releases(
    State(state): State<AppState>,
    caller: Caller,
    ApiQuery(query): ApiQuery<ReleaseListQuery>,
) -> Result<Json<ReleasePage>, Problem> {
    caller.require_token()?;
    let request = caller.grpc(pb::ListReleasesRequest {
        page_size: check_page_size(query.page_size)?,
        page_token: check_page_token(query.page_token)?,
        app: query.app,
        view: pb::ReleaseView::Basic.into(),
    });
    let page = state.clients.release.clone().list_releases(request).await?.into_inner();
    Ok(Json(ReleasePage {
        items: page.releases.into_iter().map(ReleaseSummary::from).collect(),
        next_page_token: next_token(page.next_page_token),
    }))
}

/// Create a release (developers, release managers): with an explicit version, or computed from
/// the commits since the last release (`feat` → minor, `fix` → patch, breaking → major). Versions
/// are immutable. Send `Idempotency-Key` to make retries safe.
#[utoipa::path(post, path = "/api/v1/apps/{app}/releases", tag = "releases", security(("bearer" = [])),
    params(
        ("app" = String, Path, description = "App name or id"),
        ("Idempotency-Key" = Option<String>, Header, nullable = false, pattern = "^[!-~]{1,200}$",
            description = "Retries with the same key return the first result"),
    ),
    request_body = CreateReleaseRequest,
    responses(
        (status = 201, description = "Release created", body = Release),
        (status = 404, description = "No such app", body = Problem, content_type = PROBLEM),
        (status = 409, description = "The version exists, or no commit calls for a release", body = Problem,
            content_type = PROBLEM),
    ))]
pub async fn create_release(
    State(state): State<AppState>,
    caller: Caller,
    headers: HeaderMap,
    Path(app): Path<String>,
    ApiJson(body): ApiJson<ReleaseInput>,
) -> Result<impl IntoResponse, Problem> {
    caller.require_token()?;
    let request = body.into_pb(app, idempotency_key(&headers)?)?;
    let release = state.clients.release.clone().create_release(caller.grpc(request)).await?.into_inner();
    Ok((StatusCode::CREATED, Json(Release::from(release))))
}

/// The version and changelog creating this release would give; creates nothing.
#[utoipa::path(post, path = "/api/v1/apps/{app}/releases/preview", tag = "releases", security(("bearer" = [])),
    params(("app" = String, Path, description = "App name or id")),
    request_body = CreateReleaseRequest,
    responses(
        (status = 200, description = "The computed version and changelog", body = ReleasePreview),
        (status = 404, description = "No such app", body = Problem, content_type = PROBLEM),
        (status = 409, description = "No commit calls for a release", body = Problem, content_type = PROBLEM),
    ))]
pub async fn preview_release(
    State(state): State<AppState>,
    caller: Caller,
    Path(app): Path<String>,
    ApiJson(body): ApiJson<ReleaseInput>,
) -> Result<Json<ReleasePreview>, Problem> {
    caller.require_token()?;
    let request = body.into_pb(app, String::new())?;
    let preview = state.clients.release.clone().preview_release(caller.grpc(request)).await?.into_inner();
    Ok(Json(preview.into()))
}

/// Get a release with its commits, changelog and the latest result of each quality check.
#[utoipa::path(get, path = "/api/v1/apps/{app}/releases/{version}", tag = "releases", security(("bearer" = [])),
    params(
        ("app" = String, Path, description = "App name or id"),
        ("version" = String, Path, description = "Version, e.g. `1.4.0`"),
    ),
    responses(
        (status = 200, description = "The release", body = Release),
        (status = 404, description = "No such app or release", body = Problem, content_type = PROBLEM),
    ))]
pub async fn get_release(
    State(state): State<AppState>,
    caller: Caller,
    Path((app, version)): Path<(String, String)>,
) -> Result<Json<Release>, Problem> {
    caller.require_token()?;
    let request = caller.grpc(pb::GetReleaseRequest { id: String::new(), app, version });
    let release = state.clients.release.clone().get_release(request).await?.into_inner();
    Ok(Json(release.into()))
}

/// Report a quality-check result for a release (QA, developers, release managers); the latest
/// result of each check counts for the environments' quality thresholds.
#[utoipa::path(post, path = "/api/v1/apps/{app}/releases/{version}/quality-checks", tag = "releases",
    security(("bearer" = [])),
    params(
        ("app" = String, Path, description = "App name or id"),
        ("version" = String, Path, description = "Version, e.g. `1.4.0`"),
    ),
    request_body = ReportQualityCheckRequest,
    responses(
        (status = 201, description = "Result recorded", body = QualityCheck),
        (status = 404, description = "No such app or release", body = Problem, content_type = PROBLEM),
    ))]
pub async fn report_quality_check(
    State(state): State<AppState>,
    caller: Caller,
    Path((app, version)): Path<(String, String)>,
    ApiJson(body): ApiJson<ReportQualityCheckRequest>,
) -> Result<impl IntoResponse, Problem> {
    caller.require_token()?;
    let request = body.into_pb(app, version)?;
    let check = state.clients.release.clone().report_quality_check(caller.grpc(request)).await?.into_inner();
    Ok((StatusCode::CREATED, Json(QualityCheck::from(check))))
}
