//! REST handlers under `/api/v1`, each a thin translation to one gRPC call.

pub mod apps;
pub mod auth;
pub mod channels;
pub mod incidents;
pub mod tokens;
pub mod users;

use axum::extract::{FromRequestParts, Query, rejection::QueryRejection};
use axum::http::request::Parts;
use serde::de::DeserializeOwned;
use utoipa_axum::{router::OpenApiRouter, routes};

use crate::{clients::Clients, problem::Problem};

/// Shared by every handler.
#[derive(Clone)]
pub struct AppState {
    pub clients: Clients,
}

/// `Query<T>` whose rejections are problem+json.
pub struct ApiQuery<T>(pub T);

impl<T: DeserializeOwned, S: Send + Sync> FromRequestParts<S> for ApiQuery<T> {
    type Rejection = Problem;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        Query::<T>::from_request_parts(parts, state)
            .await
            .map(|Query(value)| Self(value))
            .map_err(|rejection: QueryRejection| Problem::validation(rejection.body_text()))
    }
}

/// Problem documents, for `responses(...)` annotations.
pub const PROBLEM: &str = "application/problem+json";

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(auth::login))
        .routes(routes!(auth::refresh))
        .routes(routes!(auth::logout))
        .routes(routes!(auth::me))
        .routes(routes!(auth::change_my_password))
        .routes(routes!(auth::rotate_signing_key))
        .routes(routes!(users::list_users, users::create_user))
        .routes(routes!(users::get_user, users::update_user))
        .routes(routes!(users::reset_password))
        .routes(routes!(tokens::list_tokens, tokens::create_token))
        .routes(routes!(tokens::revoke_token))
        .routes(routes!(apps::list_apps, apps::create_app))
        .routes(routes!(apps::get_app))
        .routes(routes!(incidents::list_incidents))
        .routes(routes!(incidents::get_incident))
        .routes(routes!(channels::list_channels))
        .routes(routes!(channels::get_channel))
}
