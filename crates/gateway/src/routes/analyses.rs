//! Canary analyses and their decision records.

use axum::extract::{Path, State};

use crate::json::Json;
use rp_proto::rollback::v1 as pb;

use super::{ApiQuery, AppState, PROBLEM};
use crate::{dto::*, extract::Caller, problem::Problem};

/// List canary analyses, newest first.
#[utoipa::path(get, path = "/api/v1/analyses", tag = "analyses", security(("bearer" = [])),
    params(AnalysisListQuery),
    responses(
        (status = 200, description = "A page of analyses (without their decision records)", body = AnalysisPage),
        (status = 422, description = "Invalid filter", body = Problem, content_type = PROBLEM),
    ))]
pub async fn list_analyses(
    State(state): State<AppState>,
    caller: Caller,
    ApiQuery(query): ApiQuery<AnalysisListQuery>,
) -> Result<Json<AnalysisPage>, Problem> {
    caller.require_token()?;
    let request = caller.grpc(query.into_pb()?);
    let page = state.clients.rollback.clone().list_analyses(request).await?.into_inner();
    Ok(Json(AnalysisPage {
        items: page.analyses.into_iter().map(Analysis::from).collect(),
        next_page_token: next_token(page.next_page_token),
    }))
}

async fn analysis(
    state: &AppState,
    caller: &Caller,
    request: pb::GetAnalysisRequest,
) -> Result<Analysis, Problem> {
    let analysis = state.clients.rollback.clone().get_analysis(caller.grpc(request)).await?.into_inner();
    Ok(analysis.into())
}

/// Get an analysis, by its id or its deployment's, with its newest decision records: what each
/// rule measured, against what, and the verdict.
#[utoipa::path(get, path = "/api/v1/analyses/{id}", tag = "analyses", security(("bearer" = [])),
    params(("id" = uuid::Uuid, Path, description = "Analysis id, or the deployment's id"), AnalysisQuery),
    responses(
        (status = 200, description = "The analysis and its decision records", body = Analysis),
        (status = 404, description = "No analysis with that id", body = Problem, content_type = PROBLEM),
    ))]
pub async fn get_analysis(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
    ApiQuery(query): ApiQuery<AnalysisQuery>,
) -> Result<Json<Analysis>, Problem> {
    caller.require_token()?;
    let request = query.into_pb(id, String::new())?;
    Ok(Json(analysis(&state, &caller, request).await?))
}

/// Get the canary analysis of a deployment, with its newest decision records.
#[utoipa::path(get, path = "/api/v1/deployments/{id}/analysis", tag = "analyses", security(("bearer" = [])),
    params(("id" = uuid::Uuid, Path, description = "Deployment id"), AnalysisQuery),
    responses(
        (status = 200, description = "The analysis and its decision records", body = Analysis),
        (status = 404, description = "The deployment has no analysis (yet)", body = Problem, content_type = PROBLEM),
    ))]
pub async fn get_deployment_analysis(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
    ApiQuery(query): ApiQuery<AnalysisQuery>,
) -> Result<Json<Analysis>, Problem> {
    caller.require_token()?;
    let request = query.into_pb(String::new(), id)?;
    Ok(Json(analysis(&state, &caller, request).await?))
}
