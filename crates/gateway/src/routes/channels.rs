//! Notification channels: signed webhooks, Slack, e-mail, PagerDuty. Reads for every signed-in
//! user; writes for admins (the notifier checks the role). Secrets go in and never come out.

use axum::{
    extract::{Path, State},
    http::StatusCode,
};

use crate::json::Json;
use rp_proto::notifier::v1 as pb;

use super::{AppState, PROBLEM};
use crate::{
    dto::*,
    extract::{ApiJson, Caller},
    problem::Problem,
};

/// List notification channels.
#[utoipa::path(get, path = "/api/v1/channels", tag = "notifications", security(("bearer" = [])),
    responses((status = 200, description = "Channels, by name (never their secrets)", body = ChannelList)))]
pub async fn list_channels(
    State(state): State<AppState>,
    caller: Caller,
) -> Result<Json<ChannelList>, Problem> {
    caller.require_token()?;
    let list = state
        .clients
        .notifier
        .clone()
        .list_channels(caller.grpc(pb::ListChannelsRequest {}))
        .await?
        .into_inner();
    Ok(Json(ChannelList { items: list.channels.into_iter().map(Channel::from).collect() }))
}

/// Create a notification channel (admins). A webhook channel without a signing secret gets a
/// generated one, returned this once.
#[utoipa::path(post, path = "/api/v1/channels", tag = "notifications", security(("bearer" = [])),
    request_body = CreateChannelRequest,
    responses(
        (status = 201, description = "Created", body = ChannelWithSecret),
        (status = 403, description = "Not an admin", body = Problem, content_type = PROBLEM),
        (status = 409, description = "A channel has this name", body = Problem, content_type = PROBLEM),
        (status = 422, description = "Invalid settings, secrets or templates, or a host the SSRF guard refuses",
            body = Problem, content_type = PROBLEM),
    ))]
pub async fn create_channel(
    State(state): State<AppState>,
    caller: Caller,
    ApiJson(body): ApiJson<CreateChannelRequest>,
) -> Result<(StatusCode, Json<ChannelWithSecret>), Problem> {
    caller.require_token()?;
    let request = caller.grpc(body.into_pb()?);
    let created = state.clients.notifier.clone().create_channel(request).await?.into_inner();
    Ok((StatusCode::CREATED, Json(created.into())))
}

/// Get a notification channel.
#[utoipa::path(get, path = "/api/v1/channels/{id}", tag = "notifications", security(("bearer" = [])),
    params(("id" = uuid::Uuid, Path, description = "Channel id")),
    responses(
        (status = 200, description = "The channel", body = Channel),
        (status = 404, description = "No such channel", body = Problem, content_type = PROBLEM),
    ))]
pub async fn get_channel(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<Json<Channel>, Problem> {
    caller.require_token()?;
    path_id(&id)?;
    let channel = state
        .clients
        .notifier
        .clone()
        .get_channel(caller.grpc(pb::GetChannelRequest { id }))
        .await?
        .into_inner();
    Ok(Json(channel.into()))
}

/// Change a notification channel (admins); absent fields stay. Enabling a channel that was
/// disabled automatically (410 Gone) clears its reason.
#[utoipa::path(patch, path = "/api/v1/channels/{id}", tag = "notifications", security(("bearer" = [])),
    params(("id" = uuid::Uuid, Path, description = "Channel id")),
    request_body = UpdateChannelRequest,
    responses(
        (status = 200, description = "The channel", body = Channel),
        (status = 403, description = "Not an admin", body = Problem, content_type = PROBLEM),
        (status = 404, description = "No such channel", body = Problem, content_type = PROBLEM),
        (status = 409, description = "Another channel has this name", body = Problem, content_type = PROBLEM),
        (status = 422, description = "Invalid change", body = Problem, content_type = PROBLEM),
    ))]
pub async fn update_channel(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
    ApiJson(body): ApiJson<UpdateChannelRequest>,
) -> Result<Json<Channel>, Problem> {
    caller.require_token()?;
    let request = caller.grpc(body.into_pb(id)?);
    let channel = state.clients.notifier.clone().update_channel(request).await?.into_inner();
    Ok(Json(channel.into()))
}

/// Delete a notification channel (admins) with its pending deliveries.
#[utoipa::path(delete, path = "/api/v1/channels/{id}", tag = "notifications", security(("bearer" = [])),
    params(("id" = uuid::Uuid, Path, description = "Channel id")),
    responses(
        (status = 204, description = "Deleted"),
        (status = 403, description = "Not an admin", body = Problem, content_type = PROBLEM),
        (status = 404, description = "No such channel", body = Problem, content_type = PROBLEM),
    ))]
pub async fn delete_channel(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<StatusCode, Problem> {
    caller.require_token()?;
    path_id(&id)?;
    state.clients.notifier.clone().delete_channel(caller.grpc(pb::DeleteChannelRequest { id })).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Rotate a webhook channel's signing secret (admins). The new secret is returned this once;
/// the previous one keeps signing beside it (a second signature) for the configured overlap.
#[utoipa::path(post, path = "/api/v1/channels/{id}/rotate-secret", tag = "notifications", security(("bearer" = [])),
    params(("id" = uuid::Uuid, Path, description = "Channel id")),
    request_body = RotateSecretRequest,
    responses(
        (status = 200, description = "The channel and its new signing secret", body = ChannelWithSecret),
        (status = 403, description = "Not an admin", body = Problem, content_type = PROBLEM),
        (status = 404, description = "No such channel", body = Problem, content_type = PROBLEM),
        (status = 409, description = "Not a webhook channel", body = Problem, content_type = PROBLEM),
        (status = 422, description = "Not a valid signing secret", body = Problem, content_type = PROBLEM),
    ))]
pub async fn rotate_channel_secret(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
    ApiJson(body): ApiJson<RotateSecretRequest>,
) -> Result<Json<ChannelWithSecret>, Problem> {
    caller.require_token()?;
    path_id(&id)?;
    let request =
        pb::RotateChannelSecretRequest { id, signing_secret: body.signing_secret.unwrap_or_default() };
    let rotated =
        state.clients.notifier.clone().rotate_channel_secret(caller.grpc(request)).await?.into_inner();
    Ok(Json(rotated.into()))
}

/// Send a test notification through a channel now, once, without retries (admins); answers the
/// attempt, whatever the receiver said.
#[utoipa::path(post, path = "/api/v1/channels/{id}/test", tag = "notifications", security(("bearer" = [])),
    params(("id" = uuid::Uuid, Path, description = "Channel id")),
    responses(
        (status = 200, description = "The attempt: outcome, status, latency, the answer's start", body = DeliveryAttempt),
        (status = 403, description = "Not an admin", body = Problem, content_type = PROBLEM),
        (status = 404, description = "No such channel", body = Problem, content_type = PROBLEM),
    ))]
pub async fn test_channel(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<Json<DeliveryAttempt>, Problem> {
    caller.require_token()?;
    path_id(&id)?;
    let attempt = state
        .clients
        .notifier
        .clone()
        .test_channel(caller.grpc(pb::TestChannelRequest { id }))
        .await?
        .into_inner();
    Ok(Json(attempt.into()))
}
