//! Who is calling, and may they? Roles, the principal a request acts as, and the
//! [`Authenticator`] every service uses to verify access tokens locally against the JWKS that
//! auth publishes (re-fetched on an unknown key id, so key rotation needs no restart), and to
//! resolve CI API tokens through auth with a short cache.

mod authenticator;
mod claims;
mod role;

pub use authenticator::{Authenticator, GrpcKeySource, KeySource, bearer};
pub use claims::{ACCESS_TOKEN_KIND_USER, API_TOKEN_PREFIX, Claims};
pub use role::{Principal, PrincipalKind, Role};

/// Why a caller was refused.
#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
pub enum AuthError {
    #[error("missing bearer token")]
    Missing,
    #[error("malformed token")]
    Malformed,
    #[error("token expired")]
    Expired,
    #[error("invalid token")]
    Invalid,
    #[error("token revoked")]
    Revoked,
    #[error("this action needs one of the roles: {0}")]
    Forbidden(String),
    #[error("identity service unavailable: {0}")]
    Unavailable(String),
}

impl From<AuthError> for tonic::Status {
    fn from(err: AuthError) -> Self {
        match err {
            AuthError::Forbidden(_) => tonic::Status::permission_denied(err.to_string()),
            AuthError::Unavailable(_) => tonic::Status::unavailable(err.to_string()),
            _ => tonic::Status::unauthenticated(err.to_string()),
        }
    }
}

/// Metadata key carrying the request id from the gateway to services (and into audit records).
pub const REQUEST_ID_HEADER: &str = "x-request-id";

/// A request from one role to another, authenticated with the internal token.
pub fn internal_request<T>(config: &rp_config::IdentityConfig, body: T) -> tonic::Request<T> {
    let mut request = tonic::Request::new(body);
    if let Some(token) = &config.internal_token
        && let Ok(value) = tonic::metadata::MetadataValue::try_from(format!("Bearer {}", token.expose()))
    {
        request.metadata_mut().insert("authorization", value);
    }
    request
}
