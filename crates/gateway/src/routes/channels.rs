//! Notification channels.

use axum::{
    Json,
    extract::{Path, State},
};
use rp_proto::notifier::v1 as pb;

use super::{AppState, PROBLEM};
use crate::{dto::*, extract::Caller, problem::Problem};

/// List notification channels.
#[utoipa::path(get, path = "/api/v1/channels", tag = "channels", security(("bearer" = [])),
    responses((status = 200, description = "Channels (never their secrets)", body = ChannelList)))]
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

/// Get a notification channel.
#[utoipa::path(get, path = "/api/v1/channels/{id}", tag = "channels", security(("bearer" = [])),
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
    let channel = state
        .clients
        .notifier
        .clone()
        .get_channel(caller.grpc(pb::GetChannelRequest { id }))
        .await?
        .into_inner();
    Ok(Json(channel.into()))
}
