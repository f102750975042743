//! Login, token refresh, logout, the caller's own account, key rotation.

use axum::{extract::State, http::StatusCode, response::IntoResponse};

use crate::json::Json;
use rp_proto::auth::v1 as pb;

use super::{AppState, PROBLEM};
use crate::{
    dto::*,
    extract::{ApiJson, Caller},
    problem::Problem,
};

/// Log in with e-mail and password.
#[utoipa::path(post, path = "/api/v1/auth/login", tag = "auth", request_body = LoginRequest,
    responses(
        (status = 200, description = "Tokens issued", body = TokenResponse),
        (status = 401, description = "Wrong e-mail or password", body = Problem, content_type = PROBLEM),
        (status = 422, description = "Invalid body", body = Problem, content_type = PROBLEM),
        (status = 429, description = "Too many failed logins; see Retry-After", body = Problem, content_type = PROBLEM),
    ))]
pub async fn login(
    State(state): State<AppState>,
    caller: Caller,
    ApiJson(body): ApiJson<LoginRequest>,
) -> Result<Json<TokenResponse>, Problem> {
    if body.email.is_empty() || body.password.is_empty() {
        return Err(Problem::validation("email and password are required"));
    }
    let request = caller.grpc(pb::LoginRequest { email: body.email, password: body.password });
    let pair = state.clients.auth.clone().login(request).await?.into_inner();
    Ok(Json(pair.into()))
}

/// Exchange a refresh token for new tokens. The presented token is used up; presenting it
/// again revokes every token of that login.
#[utoipa::path(post, path = "/api/v1/auth/refresh", tag = "auth", request_body = RefreshRequest,
    responses(
        (status = 200, description = "Tokens rotated", body = TokenResponse),
        (status = 401, description = "Invalid, expired, revoked or reused token", body = Problem, content_type = PROBLEM),
    ))]
pub async fn refresh(
    State(state): State<AppState>,
    caller: Caller,
    ApiJson(body): ApiJson<RefreshRequest>,
) -> Result<Json<TokenResponse>, Problem> {
    if body.refresh_token.is_empty() {
        return Err(Problem::validation("refresh_token is required"));
    }
    let request = caller.grpc(pb::RefreshRequest { refresh_token: body.refresh_token });
    let pair = state.clients.auth.clone().refresh(request).await?.into_inner();
    Ok(Json(pair.into()))
}

/// Log out: revokes the refresh token and every token rotated from the same login.
#[utoipa::path(post, path = "/api/v1/auth/logout", tag = "auth", request_body = RefreshRequest,
    responses((status = 204, description = "Logged out")))]
pub async fn logout(
    State(state): State<AppState>,
    caller: Caller,
    ApiJson(body): ApiJson<RefreshRequest>,
) -> Result<StatusCode, Problem> {
    if body.refresh_token.is_empty() || body.refresh_token.len() > 512 {
        return Err(Problem::validation("refresh_token must be 1-512 characters"));
    }
    let request = caller.grpc(pb::LogoutRequest { refresh_token: body.refresh_token });
    state.clients.auth.clone().logout(request).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// The caller's own user, with the roles this token grants.
#[utoipa::path(get, path = "/api/v1/me", tag = "auth", security(("bearer" = [])),
    responses(
        (status = 200, description = "The caller", body = User),
        (status = 401, description = "Missing or invalid token", body = Problem, content_type = PROBLEM),
    ))]
pub async fn me(State(state): State<AppState>, caller: Caller) -> Result<Json<User>, Problem> {
    caller.require_token()?;
    let user = state.clients.auth.clone().get_me(caller.grpc(pb::GetMeRequest {})).await?.into_inner();
    Ok(Json(user.into()))
}

/// Change your own password; ends every other session.
#[utoipa::path(put, path = "/api/v1/me/password", tag = "auth", security(("bearer" = [])),
    request_body = ChangePasswordRequest,
    responses(
        (status = 204, description = "Password changed"),
        (status = 422, description = "Wrong current password or weak new one", body = Problem, content_type = PROBLEM),
    ))]
pub async fn change_my_password(
    State(state): State<AppState>,
    caller: Caller,
    ApiJson(body): ApiJson<ChangePasswordRequest>,
) -> Result<StatusCode, Problem> {
    caller.require_token()?;
    let request = caller.grpc(pb::SetPasswordRequest {
        user_id: String::new(),
        current_password: body.current_password,
        new_password: body.new_password,
    });
    state.clients.auth.clone().set_password(request).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Rotate the token signing key (admin). Tokens signed with the previous key stay valid until
/// they expire.
#[utoipa::path(post, path = "/api/v1/auth/signing-keys/rotate", tag = "auth", security(("bearer" = [])),
    responses(
        (status = 201, description = "New signing key", body = SigningKey),
        (status = 403, description = "Not an administrator", body = Problem, content_type = PROBLEM),
    ))]
pub async fn rotate_signing_key(
    State(state): State<AppState>,
    caller: Caller,
) -> Result<impl IntoResponse, Problem> {
    caller.require_token()?;
    let key =
        state.clients.auth.clone().rotate_signing_key(caller.grpc(pb::RotateSigningKeyRequest {})).await?;
    Ok((StatusCode::CREATED, Json(SigningKey::from(key.into_inner()))))
}

/// The public keys that verify access tokens (RFC 7517).
pub async fn jwks(State(state): State<AppState>, caller: Caller) -> Result<impl IntoResponse, Problem> {
    let response =
        state.clients.auth.clone().get_jwks(caller.grpc(pb::GetJwksRequest {})).await?.into_inner();
    Ok((
        [
            (axum::http::header::CONTENT_TYPE, "application/jwk-set+json"),
            (axum::http::header::CACHE_CONTROL, "public, max-age=300"),
        ],
        response.jwks_json,
    ))
}
