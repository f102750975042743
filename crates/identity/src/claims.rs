//! Access-token claims.

use serde::{Deserialize, Serialize};

/// Prefix of CI API tokens (`rp_…`); anything else in a bearer header is treated as a JWT.
pub const API_TOKEN_PREFIX: &str = "rp_";
pub const ACCESS_TOKEN_KIND_USER: &str = "user";

/// Claims of an access token (JWT, EdDSA-signed by auth).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Claims {
    pub iss: String,
    pub aud: String,
    /// User id.
    pub sub: String,
    pub exp: i64,
    pub iat: i64,
    pub nbf: i64,
    /// Unique token id.
    pub jti: String,
    pub email: String,
    pub roles: Vec<String>,
    /// `user` (API tokens are opaque and resolved by auth, never minted as JWTs).
    pub kind: String,
}
