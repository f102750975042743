//! Incidents opened by automatic rollbacks: their timeline, MTTR and evidence; resolving them.

use axum::extract::{Path, State};

use crate::json::Json;
use rp_proto::rollback::v1 as pb;

use super::{ApiQuery, AppState, PROBLEM};
use crate::{
    dto::*,
    extract::{ApiJson, Caller},
    problem::Problem,
};

/// List incidents, newest first.
#[utoipa::path(get, path = "/api/v1/incidents", tag = "incidents", security(("bearer" = [])), params(IncidentQuery),
    responses(
        (status = 200, description = "A page of incidents", body = IncidentPage),
        (status = 422, description = "Invalid filter", body = Problem, content_type = PROBLEM),
    ))]
pub async fn list_incidents(
    State(state): State<AppState>,
    caller: Caller,
    ApiQuery(query): ApiQuery<IncidentQuery>,
) -> Result<Json<IncidentPage>, Problem> {
    caller.require_token()?;
    if query.app.as_deref() == Some("") {
        return Err(Problem::validation("app must not be empty; omit it to list every app"));
    }
    let request = caller.grpc(pb::ListIncidentsRequest {
        app: query.app.unwrap_or_default(),
        status: query.status.map(|s| s.as_str().to_owned()).unwrap_or_default(),
        page_size: check_page_size(query.page_size)?,
        page_token: check_page_token(query.page_token)?,
    });
    let page = state.clients.rollback.clone().list_incidents(request).await?.into_inner();
    Ok(Json(IncidentPage {
        items: page.incidents.into_iter().map(Incident::from).collect(),
        next_page_token: next_token(page.next_page_token),
    }))
}

/// Get an incident.
#[utoipa::path(get, path = "/api/v1/incidents/{id}", tag = "incidents", security(("bearer" = [])),
    params(("id" = uuid::Uuid, Path, description = "Incident id")),
    responses(
        (status = 200, description = "The incident", body = Incident),
        (status = 404, description = "No such incident", body = Problem, content_type = PROBLEM),
    ))]
pub async fn get_incident(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<Json<Incident>, Problem> {
    caller.require_token()?;
    let incident = state
        .clients
        .rollback
        .clone()
        .get_incident(caller.grpc(pb::GetIncidentRequest { id }))
        .await?
        .into_inner();
    Ok(Json(incident.into()))
}

/// Resolve an incident (incident commanders, release managers); the note ends its timeline.
/// Resolving a resolved incident returns it unchanged.
#[utoipa::path(post, path = "/api/v1/incidents/{id}/resolve", tag = "incidents", security(("bearer" = [])),
    params(("id" = uuid::Uuid, Path, description = "Incident id")),
    request_body = ResolveIncidentRequest,
    responses(
        (status = 200, description = "The resolved incident", body = Incident),
        (status = 403, description = "Not an incident commander or release manager", body = Problem,
            content_type = PROBLEM),
        (status = 404, description = "No such incident", body = Problem, content_type = PROBLEM),
    ))]
pub async fn resolve_incident(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
    ApiJson(body): ApiJson<ResolveIncidentRequest>,
) -> Result<Json<Incident>, Problem> {
    caller.require_token()?;
    let request = caller.grpc(body.into_pb(id)?);
    let incident = state.clients.rollback.clone().resolve_incident(request).await?.into_inner();
    Ok(Json(incident.into()))
}
