//! API tokens for CI.

use axum::{
    extract::{Path, State},
    http::StatusCode,
    response::IntoResponse,
};

use crate::json::Json;
use rp_proto::auth::v1 as pb;

use super::{ApiQuery, AppState, PROBLEM};
use crate::{
    dto::*,
    extract::{ApiJson, Caller},
    problem::Problem,
};

/// List API tokens: yours, or everyone's for administrators.
#[utoipa::path(get, path = "/api/v1/api-tokens", tag = "api-tokens", security(("bearer" = [])), params(TokenListQuery),
    responses((status = 200, description = "Tokens (never their secrets)", body = ApiTokenList)))]
pub async fn list_tokens(
    State(state): State<AppState>,
    caller: Caller,
    ApiQuery(query): ApiQuery<TokenListQuery>,
) -> Result<Json<ApiTokenList>, Problem> {
    caller.require_token()?;
    let request = caller.grpc(pb::ListApiTokensRequest { include_revoked: query.include_revoked });
    let list = state.clients.auth.clone().list_api_tokens(request).await?.into_inner();
    Ok(Json(ApiTokenList { items: list.tokens.into_iter().map(ApiToken::from).collect() }))
}

/// Create an API token with a subset of your roles. The secret is in this response only.
#[utoipa::path(post, path = "/api/v1/api-tokens", tag = "api-tokens", security(("bearer" = [])),
    request_body = CreateApiTokenRequest,
    responses(
        (status = 201, description = "Token created; store the secret now", body = CreatedApiToken),
        (status = 403, description = "A requested role is not yours to grant", body = Problem, content_type = PROBLEM),
    ))]
pub async fn create_token(
    State(state): State<AppState>,
    caller: Caller,
    ApiJson(body): ApiJson<CreateApiTokenRequest>,
) -> Result<impl IntoResponse, Problem> {
    caller.require_token()?;
    let request = caller.grpc(pb::CreateApiTokenRequest {
        name: body.name,
        roles: roles_to_pb(&body.roles),
        ttl_seconds: body.ttl_seconds,
    });
    let created = state.clients.auth.clone().create_api_token(request).await?.into_inner();
    let token = created.token.map(ApiToken::from).ok_or_else(Problem::internal)?;
    Ok((
        StatusCode::CREATED,
        [(axum::http::header::CACHE_CONTROL, "no-store")],
        Json(CreatedApiToken { token, secret: created.secret }),
    ))
}

/// Revoke an API token (yours, or any for administrators).
#[utoipa::path(delete, path = "/api/v1/api-tokens/{id}", tag = "api-tokens", security(("bearer" = [])),
    params(("id" = uuid::Uuid, Path, description = "Token id")),
    responses(
        (status = 200, description = "The revoked token", body = ApiToken),
        (status = 404, description = "No such token", body = Problem, content_type = PROBLEM),
    ))]
pub async fn revoke_token(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<Json<ApiToken>, Problem> {
    caller.require_token()?;
    let token = state
        .clients
        .auth
        .clone()
        .revoke_api_token(caller.grpc(pb::RevokeApiTokenRequest { id }))
        .await?
        .into_inner();
    Ok(Json(token.into()))
}
