//! Alertmanager's webhook: alerts about a deployment under analysis feed its alert rules.

use axum::extract::State;

use crate::json::Json;
use rp_proto::rollback::v1 as pb;

use super::{AppState, PROBLEM};
use crate::{
    dto::*,
    extract::{Caller, RawJson},
    problem::Problem,
};

/// Receive an Alertmanager notification (webhook version 4). Firing alerts whose `app`,
/// `environment` and (when present) `version` labels name a deployment under analysis feed the
/// rules with an `alertmanager` source, which roll it back by default. Authenticate with an API
/// token of an incident commander or release manager, in Alertmanager's receiver:
/// `webhook_configs: [{url: https://…/api/v1/alertmanager/webhook, http_config: {authorization:
/// {credentials: rp_…}}}]`.
#[utoipa::path(post, path = "/api/v1/alertmanager/webhook", tag = "alerts", security(("bearer" = [])),
    request_body = AlertmanagerWebhook,
    responses(
        (status = 200, description = "Received", body = AlertsReceived),
        (status = 403, description = "Not an incident commander or release manager", body = Problem,
            content_type = PROBLEM),
        (status = 422, description = "Not an Alertmanager notification", body = Problem, content_type = PROBLEM),
    ))]
pub async fn receive_alertmanager_webhook(
    State(state): State<AppState>,
    caller: Caller,
    body: RawJson<AlertmanagerWebhook>,
) -> Result<Json<AlertsReceived>, Problem> {
    caller.require_token()?;
    body.value.check()?;
    // Checked above; passed on as sent, so the service sees exactly what Alertmanager said.
    let payload_json =
        String::from_utf8(body.raw.to_vec()).map_err(|_| Problem::validation("the body is not UTF-8"))?;
    let request = caller.grpc(pb::ReceiveAlertsRequest { payload_json });
    let received = state.clients.rollback.clone().receive_alerts(request).await?.into_inner();
    Ok(Json(received.into()))
}
