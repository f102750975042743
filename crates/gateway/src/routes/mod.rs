//! REST handlers under `/api/v1`, each a thin translation to one gRPC call.

pub mod alerts;
pub mod analyses;
pub mod apps;
pub mod audit;
pub mod auth;
pub mod channels;
pub mod deployments;
pub mod environments;
pub mod escalations;
pub mod incidents;
pub mod notifications;
pub mod policies;
pub mod releases;
pub mod rollbacks;
pub mod tokens;
pub mod users;

use axum::extract::{FromRequestParts, Query, rejection::QueryRejection};
use axum::http::{HeaderMap, header, request::Parts};
use rp_runtime::CancellationToken;
use serde::de::DeserializeOwned;
use utoipa_axum::{router::OpenApiRouter, routes};

use crate::{clients::Clients, problem::Problem};

/// Shared by every handler.
#[derive(Clone)]
pub struct AppState {
    pub clients: Clients,
    /// Cancelled when the gateway stops: long-lived responses (event streams) end.
    pub shutdown: CancellationToken,
}

/// The `Idempotency-Key` header (empty when absent): 1-200 visible ASCII characters.
pub fn idempotency_key(headers: &HeaderMap) -> Result<String, Problem> {
    match headers.get("idempotency-key") {
        None => Ok(String::new()),
        Some(value) => {
            let key = value.to_str().unwrap_or_default();
            crate::dto::check_token("Idempotency-Key", key, 200)?;
            Ok(key.to_owned())
        }
    }
}

/// The revision an `If-Match` header asks for (0 when absent or `*`): a deployment's `ETag`,
/// quoted or not.
pub fn expected_revision(headers: &HeaderMap) -> Result<i64, Problem> {
    let Some(value) = headers.get(header::IF_MATCH) else {
        return Ok(0);
    };
    let text = value.to_str().unwrap_or_default();
    if text == "*" {
        return Ok(0);
    }
    let digits = text.strip_prefix('"').and_then(|t| t.strip_suffix('"')).unwrap_or(text);
    let valid = (1..=18).contains(&digits.len())
        && digits.bytes().all(|b| b.is_ascii_digit())
        && !digits.starts_with('0');
    match digits.parse::<i64>() {
        Ok(revision) if valid => Ok(revision),
        _ => Err(Problem::validation("If-Match must be a deployment revision (its ETag), e.g. \"7\"")),
    }
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
        .routes(routes!(environments::list_targets))
        .routes(routes!(environments::put_target))
        .routes(routes!(environments::list_environments, environments::create_environment))
        .routes(routes!(environments::update_environment))
        .routes(routes!(environments::list_freeze_windows, environments::create_freeze_window))
        .routes(routes!(environments::delete_freeze_window))
        .routes(routes!(releases::list_releases))
        .routes(routes!(releases::create_release))
        .routes(routes!(releases::preview_release))
        .routes(routes!(releases::get_release))
        .routes(routes!(releases::report_quality_check))
        .routes(routes!(deployments::list_deployments, deployments::create_deployment))
        .routes(routes!(deployments::get_deployment))
        .routes(routes!(deployments::deployment_events))
        .routes(routes!(deployments::approve_deployment))
        .routes(routes!(deployments::pause_deployment))
        .routes(routes!(deployments::resume_deployment))
        .routes(routes!(deployments::promote_deployment))
        .routes(routes!(deployments::abort_deployment))
        .routes(routes!(deployments::rollback_deployment))
        .routes(routes!(deployments::report_driver_result))
        .routes(routes!(deployments::get_status))
        .routes(routes!(audit::list_audit))
        .routes(routes!(audit::verify_audit))
        .routes(routes!(audit::get_dora))
        .routes(routes!(incidents::list_incidents))
        .routes(routes!(incidents::get_incident))
        .routes(routes!(incidents::resolve_incident))
        .routes(routes!(policies::get_policy, policies::put_policy))
        .routes(routes!(analyses::list_analyses))
        .routes(routes!(analyses::get_analysis))
        .routes(routes!(analyses::get_deployment_analysis))
        .routes(routes!(rollbacks::list_rollbacks, rollbacks::create_rollback))
        .routes(routes!(alerts::receive_alertmanager_webhook))
        .routes(routes!(channels::list_channels, channels::create_channel))
        .routes(routes!(channels::get_channel, channels::update_channel, channels::delete_channel))
        .routes(routes!(channels::rotate_channel_secret))
        .routes(routes!(channels::test_channel))
        .routes(routes!(notifications::list_rules, notifications::create_rule))
        .routes(routes!(notifications::update_rule, notifications::delete_rule))
        .routes(routes!(notifications::list_deliveries))
        .routes(routes!(notifications::get_delivery))
        .routes(routes!(notifications::list_dead_letters))
        .routes(routes!(notifications::replay_dead_letters))
        .routes(routes!(notifications::replay_channel_dead_letters))
        .routes(routes!(escalations::list_escalation_policies, escalations::create_escalation_policy))
        .routes(routes!(escalations::update_escalation_policy, escalations::delete_escalation_policy))
        .routes(routes!(escalations::list_escalations))
        .routes(routes!(escalations::get_escalation))
        .routes(routes!(escalations::acknowledge_escalation))
        .routes(routes!(escalations::ack_page, escalations::ack_by_link))
}
