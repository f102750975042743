//! Routing rules (which events reach which channels, grouped how), deliveries with their
//! attempt log, and dead letters with their replay.

use axum::{
    extract::{Path, State},
    http::StatusCode,
};

use crate::json::Json;
use rp_proto::notifier::v1 as pb;

use super::{ApiQuery, AppState, PROBLEM};
use crate::{
    dto::*,
    extract::{ApiJson, Caller},
    problem::Problem,
};

/// List routing rules in the order they apply.
#[utoipa::path(get, path = "/api/v1/notification-rules", tag = "notifications", security(("bearer" = [])),
    responses((status = 200, description = "Rules by position", body = RoutingRuleList)))]
pub async fn list_rules(
    State(state): State<AppState>,
    caller: Caller,
) -> Result<Json<RoutingRuleList>, Problem> {
    caller.require_token()?;
    let request = caller.grpc(pb::ListRoutingRulesRequest {});
    let list = state.clients.notifier.clone().list_routing_rules(request).await?.into_inner();
    Ok(Json(RoutingRuleList { items: list.rules.into_iter().map(RoutingRule::from).collect() }))
}

/// Create a routing rule (admins).
#[utoipa::path(post, path = "/api/v1/notification-rules", tag = "notifications", security(("bearer" = [])),
    request_body = RoutingRuleRequest,
    responses(
        (status = 201, description = "Created", body = RoutingRule),
        (status = 403, description = "Not an admin", body = Problem, content_type = PROBLEM),
        (status = 422, description = "Invalid rule, or a channel that does not exist", body = Problem,
            content_type = PROBLEM),
    ))]
pub async fn create_rule(
    State(state): State<AppState>,
    caller: Caller,
    ApiJson(body): ApiJson<RoutingRuleRequest>,
) -> Result<(StatusCode, Json<RoutingRule>), Problem> {
    caller.require_token()?;
    let request = caller.grpc(body.into_pb()?);
    let rule = state.clients.notifier.clone().create_routing_rule(request).await?.into_inner();
    Ok((StatusCode::CREATED, Json(rule.into())))
}

/// Replace a routing rule (admins).
#[utoipa::path(put, path = "/api/v1/notification-rules/{id}", tag = "notifications", security(("bearer" = [])),
    params(("id" = uuid::Uuid, Path, description = "Rule id")),
    request_body = RoutingRuleRequest,
    responses(
        (status = 200, description = "The rule", body = RoutingRule),
        (status = 403, description = "Not an admin", body = Problem, content_type = PROBLEM),
        (status = 404, description = "No such rule", body = Problem, content_type = PROBLEM),
        (status = 422, description = "Invalid rule", body = Problem, content_type = PROBLEM),
    ))]
pub async fn update_rule(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
    ApiJson(body): ApiJson<RoutingRuleRequest>,
) -> Result<Json<RoutingRule>, Problem> {
    caller.require_token()?;
    path_id(&id)?;
    let request = caller.grpc(pb::UpdateRoutingRuleRequest { id, rule: Some(body.into_pb()?) });
    let rule = state.clients.notifier.clone().update_routing_rule(request).await?.into_inner();
    Ok(Json(rule.into()))
}

/// Delete a routing rule (admins).
#[utoipa::path(delete, path = "/api/v1/notification-rules/{id}", tag = "notifications", security(("bearer" = [])),
    params(("id" = uuid::Uuid, Path, description = "Rule id")),
    responses(
        (status = 204, description = "Deleted"),
        (status = 403, description = "Not an admin", body = Problem, content_type = PROBLEM),
        (status = 404, description = "No such rule", body = Problem, content_type = PROBLEM),
    ))]
pub async fn delete_rule(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<StatusCode, Problem> {
    caller.require_token()?;
    path_id(&id)?;
    state
        .clients
        .notifier
        .clone()
        .delete_routing_rule(caller.grpc(pb::DeleteRoutingRuleRequest { id }))
        .await?;
    Ok(StatusCode::NO_CONTENT)
}

/// List deliveries, newest first.
#[utoipa::path(get, path = "/api/v1/deliveries", tag = "notifications", security(("bearer" = [])),
    params(DeliveryQuery),
    responses(
        (status = 200, description = "A page of deliveries (without their attempt log)", body = DeliveryPage),
        (status = 422, description = "Invalid filter", body = Problem, content_type = PROBLEM),
    ))]
pub async fn list_deliveries(
    State(state): State<AppState>,
    caller: Caller,
    ApiQuery(query): ApiQuery<DeliveryQuery>,
) -> Result<Json<DeliveryPage>, Problem> {
    caller.require_token()?;
    let request = caller.grpc(query.into_pb()?);
    let page = state.clients.notifier.clone().list_deliveries(request).await?.into_inner();
    Ok(Json(page.into()))
}

/// Get a delivery with every attempt: status, latency, the receiver's answer.
#[utoipa::path(get, path = "/api/v1/deliveries/{id}", tag = "notifications", security(("bearer" = [])),
    params(("id" = uuid::Uuid, Path, description = "Delivery id")),
    responses(
        (status = 200, description = "The delivery and its attempt log", body = Delivery),
        (status = 404, description = "No such delivery", body = Problem, content_type = PROBLEM),
    ))]
pub async fn get_delivery(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<Json<Delivery>, Problem> {
    caller.require_token()?;
    path_id(&id)?;
    let delivery = state
        .clients
        .notifier
        .clone()
        .get_delivery(caller.grpc(pb::GetDeliveryRequest { id }))
        .await?
        .into_inner();
    Ok(Json(delivery.into()))
}

/// List dead letters: deliveries whose attempts ran out or whose channel was disabled.
#[utoipa::path(get, path = "/api/v1/dead-letters", tag = "notifications", security(("bearer" = [])),
    params(DeadLetterQuery),
    responses(
        (status = 200, description = "A page of dead letters, newest first", body = DeliveryPage),
        (status = 422, description = "Invalid filter", body = Problem, content_type = PROBLEM),
    ))]
pub async fn list_dead_letters(
    State(state): State<AppState>,
    caller: Caller,
    ApiQuery(query): ApiQuery<DeadLetterQuery>,
) -> Result<Json<DeliveryPage>, Problem> {
    caller.require_token()?;
    let request = caller.grpc(query.into_pb()?);
    let page = state.clients.notifier.clone().list_dead_letters(request).await?.into_inner();
    Ok(Json(page.into()))
}

/// Send dead letters again (admins), with a fresh retry schedule and the same `webhook-id`.
#[utoipa::path(post, path = "/api/v1/dead-letters/replay", tag = "notifications", security(("bearer" = [])),
    request_body = ReplayRequest,
    responses(
        (status = 200, description = "The dead letters sent again", body = ReplayResult),
        (status = 403, description = "Not an admin", body = Problem, content_type = PROBLEM),
        (status = 422, description = "Not a list of delivery ids", body = Problem, content_type = PROBLEM),
    ))]
pub async fn replay_dead_letters(
    State(state): State<AppState>,
    caller: Caller,
    ApiJson(body): ApiJson<ReplayRequest>,
) -> Result<Json<ReplayResult>, Problem> {
    caller.require_token()?;
    let request = caller.grpc(body.into_pb()?);
    let replayed = state.clients.notifier.clone().replay_dead_letters(request).await?.into_inner();
    Ok(Json(ReplayResult { replayed_ids: replayed.replayed_ids }))
}

/// Send every dead letter of a channel again (admins).
#[utoipa::path(post, path = "/api/v1/channels/{id}/replay-dead-letters", tag = "notifications", security(("bearer" = [])),
    params(("id" = uuid::Uuid, Path, description = "Channel id")),
    responses(
        (status = 200, description = "The dead letters sent again", body = ReplayResult),
        (status = 403, description = "Not an admin", body = Problem, content_type = PROBLEM),
        (status = 404, description = "No such channel", body = Problem, content_type = PROBLEM),
    ))]
pub async fn replay_channel_dead_letters(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<Json<ReplayResult>, Problem> {
    caller.require_token()?;
    path_id(&id)?;
    // The notifier replays a channel's dead letters without checking that the channel exists.
    state.clients.notifier.clone().get_channel(caller.grpc(pb::GetChannelRequest { id: id.clone() })).await?;
    let request = caller.grpc(pb::ReplayDeadLettersRequest { delivery_ids: Vec::new(), channel_id: id });
    let replayed = state.clients.notifier.clone().replay_dead_letters(request).await?.into_inner();
    Ok(Json(ReplayResult { replayed_ids: replayed.replayed_ids }))
}
