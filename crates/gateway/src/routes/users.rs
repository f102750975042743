//! User management (administrators).

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

/// List users (admin).
#[utoipa::path(get, path = "/api/v1/users", tag = "users", security(("bearer" = [])), params(PageQuery),
    responses(
        (status = 200, description = "A page of users", body = UserPage),
        (status = 403, description = "Not an administrator", body = Problem, content_type = PROBLEM),
    ))]
pub async fn list_users(
    State(state): State<AppState>,
    caller: Caller,
    ApiQuery(query): ApiQuery<PageQuery>,
) -> Result<Json<UserPage>, Problem> {
    caller.require_token()?;
    let request = caller.grpc(pb::ListUsersRequest {
        page_size: check_page_size(query.page_size)?,
        page_token: check_page_token(query.page_token)?,
    });
    let page = state.clients.auth.clone().list_users(request).await?.into_inner();
    Ok(Json(UserPage {
        items: page.users.into_iter().map(User::from).collect(),
        next_page_token: next_token(page.next_page_token),
    }))
}

/// Create a user (admin).
#[utoipa::path(post, path = "/api/v1/users", tag = "users", security(("bearer" = [])), request_body = CreateUserRequest,
    responses(
        (status = 201, description = "User created", body = User),
        (status = 409, description = "E-mail already in use", body = Problem, content_type = PROBLEM),
        (status = 422, description = "Invalid e-mail, password or role", body = Problem, content_type = PROBLEM),
    ))]
pub async fn create_user(
    State(state): State<AppState>,
    caller: Caller,
    ApiJson(body): ApiJson<CreateUserRequest>,
) -> Result<impl IntoResponse, Problem> {
    caller.require_token()?;
    let request = caller.grpc(pb::CreateUserRequest {
        email: body.email,
        display_name: body.display_name,
        password: body.password,
        roles: roles_to_pb(&body.roles),
    });
    let user = state.clients.auth.clone().create_user(request).await?.into_inner();
    Ok((StatusCode::CREATED, Json(User::from(user))))
}

/// Get a user (admin, or yourself).
#[utoipa::path(get, path = "/api/v1/users/{id}", tag = "users", security(("bearer" = [])),
    params(("id" = uuid::Uuid, Path, description = "User id")),
    responses(
        (status = 200, description = "The user", body = User),
        (status = 404, description = "No such user", body = Problem, content_type = PROBLEM),
    ))]
pub async fn get_user(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<Json<User>, Problem> {
    caller.require_token()?;
    let user =
        state.clients.auth.clone().get_user(caller.grpc(pb::GetUserRequest { id })).await?.into_inner();
    Ok(Json(user.into()))
}

/// Change a user's name, roles or disabled flag (admin). Disabling ends the user's sessions.
#[utoipa::path(patch, path = "/api/v1/users/{id}", tag = "users", security(("bearer" = [])),
    params(("id" = uuid::Uuid, Path, description = "User id")), request_body = UpdateUserRequest,
    responses(
        (status = 200, description = "The updated user", body = User),
        (status = 404, description = "No such user", body = Problem, content_type = PROBLEM),
    ))]
pub async fn update_user(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
    ApiJson(body): ApiJson<UpdateUserRequest>,
) -> Result<Json<User>, Problem> {
    caller.require_token()?;
    let request = caller.grpc(pb::UpdateUserRequest {
        id,
        display_name: body.display_name,
        roles: body.roles.map(|roles| pb::RoleList { roles: roles_to_pb(&roles) }),
        disabled: body.disabled,
    });
    let user = state.clients.auth.clone().update_user(request).await?.into_inner();
    Ok(Json(user.into()))
}

/// Reset a user's password (admin); ends the user's sessions.
#[utoipa::path(put, path = "/api/v1/users/{id}/password", tag = "users", security(("bearer" = [])),
    params(("id" = uuid::Uuid, Path, description = "User id")), request_body = ChangePasswordRequest,
    responses((status = 204, description = "Password reset")))]
pub async fn reset_password(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
    ApiJson(body): ApiJson<ChangePasswordRequest>,
) -> Result<StatusCode, Problem> {
    caller.require_token()?;
    let request = caller.grpc(pb::SetPasswordRequest {
        user_id: id,
        current_password: body.current_password,
        new_password: body.new_password,
    });
    state.clients.auth.clone().set_password(request).await?;
    Ok(StatusCode::NO_CONTENT)
}
