//! Health policies: the rules the canary analysis of an app in an environment follows.

use axum::extract::{Path, State};

use crate::json::Json;
use rp_proto::rollback::v1 as pb;

use super::{AppState, PROBLEM};
use crate::{
    dto::*,
    extract::{ApiJson, Caller},
    problem::Problem,
};

fn names(app: &str, environment: &str) -> Result<(), Problem> {
    check_slug("app", app)?;
    check_slug("environment", environment)
}

/// Get the health policy of an app in an environment: the rules its deployments are judged by,
/// or the built-in defaults (`default: true`) when none was set.
#[utoipa::path(get, path = "/api/v1/apps/{app}/environments/{environment}/policy", tag = "policies",
    security(("bearer" = [])),
    params(
        ("app" = String, Path, pattern = "^[a-z0-9][a-z0-9-]{0,61}[a-z0-9]$", description = "App name"),
        ("environment" = String, Path, pattern = "^[a-z0-9][a-z0-9-]{0,61}[a-z0-9]$", description = "Environment name"),
    ),
    responses((status = 200, description = "The policy", body = Policy)))]
pub async fn get_policy(
    State(state): State<AppState>,
    caller: Caller,
    Path((app, environment)): Path<(String, String)>,
) -> Result<Json<Policy>, Problem> {
    caller.require_token()?;
    names(&app, &environment)?;
    let request = caller.grpc(pb::GetPolicyRequest { app, environment });
    let policy = state.clients.rollback.clone().get_policy(request).await?.into_inner();
    Ok(Json(policy.try_into()?))
}

/// Replace the health policy of an app in an environment (release managers); an empty `rules`
/// list restores the defaults. Rules are checked before anything is stored: which metric comes
/// from which source, windows, ranges (422); names must be unique (409).
#[utoipa::path(put, path = "/api/v1/apps/{app}/environments/{environment}/policy", tag = "policies",
    security(("bearer" = [])),
    params(
        ("app" = String, Path, pattern = "^[a-z0-9][a-z0-9-]{0,61}[a-z0-9]$", description = "App name"),
        ("environment" = String, Path, pattern = "^[a-z0-9][a-z0-9-]{0,61}[a-z0-9]$", description = "Environment name"),
    ),
    request_body = PutPolicyRequest,
    responses(
        (status = 200, description = "The stored policy", body = Policy),
        (status = 403, description = "Not a release manager", body = Problem, content_type = PROBLEM),
        (status = 409, description = "Two rules share a name", body = Problem, content_type = PROBLEM),
        (status = 422, description = "A rule cannot work; `detail` names it and says why", body = Problem,
            content_type = PROBLEM),
    ))]
pub async fn put_policy(
    State(state): State<AppState>,
    caller: Caller,
    Path((app, environment)): Path<(String, String)>,
    ApiJson(body): ApiJson<PutPolicyRequest>,
) -> Result<Json<Policy>, Problem> {
    caller.require_token()?;
    names(&app, &environment)?;
    let rules_json = body.into_rules_json()?;
    let request = caller.grpc(pb::PutPolicyRequest { app, environment, rules_json });
    let policy = state.clients.rollback.clone().put_policy(request).await?.into_inner();
    Ok(Json(policy.try_into()?))
}
