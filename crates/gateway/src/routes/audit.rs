//! The audit log and DORA metrics.

use axum::extract::State;

use crate::json::Json;
use rp_proto::release::v1 as pb;

use super::{ApiQuery, AppState, PROBLEM};
use crate::{dto::*, extract::Caller, problem::Problem};

/// List audit entries, oldest first (release managers, incident commanders).
#[utoipa::path(get, path = "/api/v1/audit", tag = "audit", security(("bearer" = [])), params(AuditQuery),
    responses(
        (status = 200, description = "A page of audit entries", body = AuditPage),
        (status = 403, description = "Not a release manager or incident commander", body = Problem,
            content_type = PROBLEM),
    ))]
pub async fn list_audit(
    State(state): State<AppState>,
    caller: Caller,
    ApiQuery(query): ApiQuery<AuditQuery>,
) -> Result<Json<AuditPage>, Problem> {
    caller.require_token()?;
    let request = caller.grpc(query.into_pb()?);
    let page = state.clients.release.clone().list_audit_entries(request).await?.into_inner();
    Ok(Json(AuditPage {
        items: page.entries.into_iter().map(AuditEntry::from).collect(),
        next_page_token: next_token(page.next_page_token),
    }))
}

/// Recompute the audit log's hash chain end to end (release managers, incident commanders).
#[utoipa::path(get, path = "/api/v1/audit/verify", tag = "audit", security(("bearer" = [])),
    responses(
        (status = 200, description = "Whether the chain is intact, and where it breaks", body = AuditVerification),
        (status = 403, description = "Not a release manager or incident commander", body = Problem,
            content_type = PROBLEM),
    ))]
pub async fn verify_audit(
    State(state): State<AppState>,
    caller: Caller,
) -> Result<Json<AuditVerification>, Problem> {
    caller.require_token()?;
    let request = caller.grpc(pb::VerifyAuditChainRequest {});
    let result = state.clients.release.clone().verify_audit_chain(request).await?.into_inner();
    Ok(Json(result.into()))
}

/// DORA metrics of an app in an environment: deployment frequency, lead time for changes,
/// change failure rate and time to restore.
#[utoipa::path(get, path = "/api/v1/dora", tag = "dora", security(("bearer" = [])), params(DoraQuery),
    responses(
        (status = 200, description = "The figures", body = DoraMetrics),
        (status = 404, description = "No such app or environment", body = Problem, content_type = PROBLEM),
        (status = 409, description = "No environment given and none is production", body = Problem,
            content_type = PROBLEM),
    ))]
pub async fn get_dora(
    State(state): State<AppState>,
    caller: Caller,
    ApiQuery(query): ApiQuery<DoraQuery>,
) -> Result<Json<DoraMetrics>, Problem> {
    caller.require_token()?;
    let window_days = match query.window_days {
        None => 0,
        Some(days) if (1..=365).contains(&days) => days,
        Some(days) => {
            return Err(Problem::validation(format!("window_days must be between 1 and 365, not {days}")));
        }
    };
    let request = caller.grpc(pb::GetDoraMetricsRequest {
        app: query.app,
        environment: query.environment.unwrap_or_default(),
        window_days,
    });
    let metrics = state.clients.release.clone().get_dora_metrics(request).await?.into_inner();
    Ok(Json(metrics.into()))
}
