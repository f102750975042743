//! Rollback records, and rollbacks people ask for.

use axum::{
    extract::State,
    http::StatusCode,
    response::{IntoResponse, Response},
};

use crate::json::Json;
use rp_proto::release::v1 as release_pb;

use super::{ApiQuery, AppState, PROBLEM};
use crate::{
    dto::*,
    extract::{ApiJson, Caller},
    problem::Problem,
};

/// List rollbacks, automatic and manual, newest first.
#[utoipa::path(get, path = "/api/v1/rollbacks", tag = "rollbacks", security(("bearer" = [])),
    params(RollbackListQuery),
    responses(
        (status = 200, description = "A page of rollback records", body = RollbackPage),
        (status = 422, description = "Invalid filter", body = Problem, content_type = PROBLEM),
    ))]
pub async fn list_rollbacks(
    State(state): State<AppState>,
    caller: Caller,
    ApiQuery(query): ApiQuery<RollbackListQuery>,
) -> Result<Json<RollbackPage>, Problem> {
    caller.require_token()?;
    let request = caller.grpc(query.into_pb()?);
    let page = state.clients.rollback.clone().list_rollbacks(request).await?.into_inner();
    Ok(Json(RollbackPage {
        items: page.rollbacks.into_iter().map(RollbackRecord::from).collect(),
        next_page_token: next_token(page.next_page_token),
    }))
}

/// Roll back a deployment (by `deployment_id`), or whatever runs for an app in an environment:
/// traffic goes to the version serving before (or `target_version`) first, then the rollback is
/// recorded. The environment's deployers and incident commanders may. Asking again for a
/// deployment that was rolled back already changes nothing and answers its record with 200
/// (two requests at the same moment may both see 201, with the same record). With `app` and
/// `environment`, each request rolls back what runs there now: retry with the `deployment_id`
/// of the answer.
#[utoipa::path(post, path = "/api/v1/rollbacks", tag = "rollbacks", security(("bearer" = [])),
    request_body = CreateRollbackRequest,
    responses(
        (status = 201, description = "Rolled back now", body = RollbackRecord),
        (status = 200, description = "The deployment was rolled back already; its rollback", body = RollbackRecord),
        (status = 403, description = "Not a deployer of the environment or an incident commander", body = Problem,
            content_type = PROBLEM),
        (status = 404, description = "No such deployment, app, environment or version", body = Problem,
            content_type = PROBLEM),
        (status = 409, description = "Nothing to roll back, or nothing to roll back to", body = Problem,
            content_type = PROBLEM),
    ))]
pub async fn create_rollback(
    State(state): State<AppState>,
    caller: Caller,
    ApiJson(body): ApiJson<RollbackInput>,
) -> Result<Response, Problem> {
    caller.require_token()?;
    let request = body.into_pb()?;
    // The rollback service answers a repeated request with the first record, without saying so:
    // a deployment that is rolled back already tells.
    let repeated = if request.deployment_id.is_empty() {
        false
    } else {
        let lookup = caller.grpc(release_pb::GetDeploymentRequest { id: request.deployment_id.clone() });
        let deployment = state.clients.release.clone().get_deployment(lookup).await?.into_inner();
        deployment.state == "rolled_back"
    };
    let record = state.clients.rollback.clone().trigger_rollback(caller.grpc(request)).await?.into_inner();
    let status = if repeated { StatusCode::OK } else { StatusCode::CREATED };
    Ok((status, Json(RollbackRecord::from(record))).into_response())
}
