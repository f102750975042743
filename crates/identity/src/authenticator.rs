//! Local verification of access tokens and cached resolution of API tokens.

use std::{
    collections::HashMap,
    sync::Arc,
    time::{Duration, Instant},
};

use async_trait::async_trait;
use jsonwebtoken::{Algorithm, DecodingKey, Validation, jwk::JwkSet};
use rp_config::{Endpoints, IdentityConfig};
use rp_proto::auth::v1::{self as pb, auth_service_client::AuthServiceClient};
use sha2::{Digest, Sha256};
use tokio::sync::{Mutex, RwLock};
use tonic::{metadata::MetadataMap, transport::Channel};

use crate::{API_TOKEN_PREFIX, AuthError, Claims, Principal, PrincipalKind, REQUEST_ID_HEADER, Role};

/// Where verification keys and API-token identities come from.
#[async_trait]
pub trait KeySource: Send + Sync {
    /// The current JSON Web Key Set.
    async fn jwks(&self) -> Result<JwkSet, AuthError>;
    /// Resolves a CI API token (and records its use).
    async fn resolve_api_token(&self, token: &str) -> Result<Principal, AuthError>;
}

/// Keys and API tokens fetched from the auth service over gRPC.
pub struct GrpcKeySource {
    client: AuthServiceClient<rp_telemetry::grpc::TracedChannel>,
}

impl GrpcKeySource {
    /// Connects lazily to the auth service at `endpoints.auth`.
    pub fn new(endpoints: &Endpoints) -> Result<Self, AuthError> {
        let channel = Channel::from_shared(endpoints.auth.clone())
            .map_err(|e| AuthError::Unavailable(format!("bad auth endpoint: {e}")))?
            .connect_timeout(Duration::from_secs(3))
            .timeout(Duration::from_secs(5))
            .connect_lazy();
        Ok(Self { client: AuthServiceClient::new(rp_telemetry::grpc::traced(channel)) })
    }
}

#[async_trait]
impl KeySource for GrpcKeySource {
    async fn jwks(&self) -> Result<JwkSet, AuthError> {
        let response = self
            .client
            .clone()
            .get_jwks(pb::GetJwksRequest {})
            .await
            .map_err(|s| AuthError::Unavailable(s.message().to_owned()))?;
        serde_json::from_str(&response.into_inner().jwks_json)
            .map_err(|e| AuthError::Unavailable(format!("malformed JWKS: {e}")))
    }

    async fn resolve_api_token(&self, token: &str) -> Result<Principal, AuthError> {
        match self
            .client
            .clone()
            .authenticate_api_token(pb::AuthenticateApiTokenRequest { token: token.to_owned() })
            .await
        {
            Ok(response) => Ok(Principal::from_proto(&response.into_inner())),
            Err(status) if status.code() == tonic::Code::Unauthenticated => Err(AuthError::Invalid),
            Err(status) => Err(AuthError::Unavailable(status.message().to_owned())),
        }
    }
}

struct KeyCache {
    keys: HashMap<String, DecodingKey>,
    fetched_at: Option<Instant>,
}

/// Verifies bearer tokens. Cheap to clone; share one per process.
#[derive(Clone)]
pub struct Authenticator {
    inner: Arc<Inner>,
}

struct Inner {
    source: Arc<dyn KeySource>,
    config: IdentityConfig,
    keys: RwLock<KeyCache>,
    /// Serialises refetches and remembers when the last one happened.
    last_refetch: Mutex<Option<Instant>>,
    api_tokens: Mutex<HashMap<[u8; 32], (Principal, Instant)>>,
    /// Access tokens already verified, by SHA-256, until they expire or the key that signed them
    /// is due for a refresh (so a withdrawn key stops working as soon as it would without this
    /// cache).
    /// An EdDSA verification costs ~50 µs and a request is verified by the gateway and again by
    /// the service it calls; a digest and a lookup cost ~1 µs.
    verified: std::sync::Mutex<HashMap<[u8; 32], (Principal, Instant)>>,
}

/// Verified access tokens kept at most.
const VERIFIED_CACHE_SIZE: usize = 10_000;

impl Authenticator {
    pub fn new(source: Arc<dyn KeySource>, config: IdentityConfig) -> Self {
        Self {
            inner: Arc::new(Inner {
                source,
                config,
                keys: RwLock::new(KeyCache { keys: HashMap::new(), fetched_at: None }),
                last_refetch: Mutex::new(None),
                verified: std::sync::Mutex::new(HashMap::new()),
                api_tokens: Mutex::new(HashMap::new()),
            }),
        }
    }

    /// Authenticates the `authorization: Bearer …` metadata of a gRPC request.
    pub async fn authenticate(&self, metadata: &MetadataMap) -> Result<Principal, AuthError> {
        let header = metadata.get("authorization").and_then(|v| v.to_str().ok()).ok_or(AuthError::Missing)?;
        let token = bearer(header).ok_or(AuthError::Malformed)?;
        let mut principal = self.authenticate_token(token).await?;
        principal.request_id =
            metadata.get(REQUEST_ID_HEADER).and_then(|v| v.to_str().ok()).map(str::to_owned);
        Ok(principal)
    }

    /// Authenticates and checks the principal holds one of `roles`.
    pub async fn authorize(&self, metadata: &MetadataMap, roles: &[Role]) -> Result<Principal, AuthError> {
        let principal = self.authenticate(metadata).await?;
        principal.require_any(roles)?;
        Ok(principal)
    }

    /// Verifies an access token (JWT) or resolves an API token.
    pub async fn authenticate_token(&self, token: &str) -> Result<Principal, AuthError> {
        if let Some(internal) = &self.inner.config.internal_token {
            let expected = internal.expose().as_bytes();
            let same = token.len() == expected.len()
                && token.bytes().zip(expected).fold(0u8, |acc, (a, b)| acc | (a ^ *b)) == 0;
            if same {
                // Another role of Release Pilot (constant-time comparison).
                return Ok(Principal::system());
            }
        }
        if token.starts_with(API_TOKEN_PREFIX) {
            return self.resolve_api_token(token).await;
        }
        let digest: [u8; 32] = Sha256::digest(token.as_bytes()).into();
        if let Some(principal) = self.verified_principal(&digest) {
            return Ok(principal);
        }
        let claims = self.verify_jwt(token).await?;
        let principal = Principal {
            subject: claims.sub,
            email: claims.email,
            roles: claims.roles.iter().filter_map(|r| r.parse().ok()).collect(),
            kind: PrincipalKind::User,
            token_id: None,
            request_id: None,
        };
        let unix_now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or_default();
        let expires_in = Duration::from_secs((claims.exp.max(0) as u64).saturating_sub(unix_now));
        let keys_fetched_at = self.inner.keys.read().await.fetched_at.unwrap_or_else(Instant::now);
        let until = Ord::min(
            Instant::now() + expires_in,
            keys_fetched_at + Duration::from_secs(self.inner.config.jwks_refresh_secs),
        );
        let mut verified = self.inner.verified.lock().unwrap_or_else(|p| p.into_inner());
        if verified.len() >= VERIFIED_CACHE_SIZE {
            let now = Instant::now();
            verified.retain(|_, (_, until)| *until > now);
            if verified.len() >= VERIFIED_CACHE_SIZE {
                verified.clear();
            }
        }
        verified.insert(digest, (principal.clone(), until));
        Ok(principal)
    }

    fn verified_principal(&self, digest: &[u8; 32]) -> Option<Principal> {
        let verified = self.inner.verified.lock().unwrap_or_else(|p| p.into_inner());
        verified
            .get(digest)
            .filter(|(_, until)| *until > Instant::now())
            .map(|(principal, _)| principal.clone())
    }

    /// Checks signature, algorithm, issuer, audience and lifetime.
    pub async fn verify_jwt(&self, token: &str) -> Result<Claims, AuthError> {
        let header = jsonwebtoken::decode_header(token).map_err(|_| AuthError::Malformed)?;
        // Only EdDSA: rejects `alg: none` and algorithm-confusion tricks (HS256 with a public key).
        if header.alg != Algorithm::EdDSA {
            return Err(AuthError::Invalid);
        }
        let kid = header.kid.ok_or(AuthError::Invalid)?;
        let key = self.key(&kid).await?.ok_or(AuthError::Invalid)?;
        let mut validation = Validation::new(Algorithm::EdDSA);
        validation.set_issuer(&[&self.inner.config.issuer]);
        validation.set_audience(&[&self.inner.config.audience]);
        validation.set_required_spec_claims(&["exp", "iss", "aud", "sub", "nbf"]);
        validation.validate_nbf = true;
        validation.leeway = self.inner.config.leeway_secs;
        jsonwebtoken::decode::<Claims>(token, &key, &validation).map(|data| data.claims).map_err(|err| {
            match err.kind() {
                jsonwebtoken::errors::ErrorKind::ExpiredSignature => AuthError::Expired,
                _ => AuthError::Invalid,
            }
        })
    }

    /// The key for `kid`, refreshing the cache when it is stale or does not know the id yet.
    async fn key(&self, kid: &str) -> Result<Option<DecodingKey>, AuthError> {
        let asked_at = Instant::now();
        let refresh_every = Duration::from_secs(self.inner.config.jwks_refresh_secs);
        {
            let cache = self.inner.keys.read().await;
            let fresh = cache.fetched_at.is_some_and(|at| at.elapsed() < refresh_every);
            if let Some(key) = cache.keys.get(kid)
                && fresh
            {
                return Ok(Some(key.clone()));
            }
        }
        // Unknown kid (a rotation happened, or a forgery) or stale cache. Fetches are serialised
        // and spaced by jwks_min_refetch_ms; a caller that waited while another fetched after it
        // asked uses that result, so a burst of unknown ids costs one fetch.
        let mut last = self.inner.last_refetch.lock().await;
        let fetched_since_asked = last.is_some_and(|at| at >= asked_at);
        if !fetched_since_asked {
            let min_gap = Duration::from_millis(self.inner.config.jwks_min_refetch_ms);
            if let Some(elapsed) = last.map(|at| at.elapsed())
                && elapsed < min_gap
            {
                tokio::time::sleep(min_gap - elapsed).await;
            }
            *last = Some(Instant::now());
            match self.inner.source.jwks().await {
                Ok(set) => {
                    let keys = set
                        .keys
                        .iter()
                        .filter_map(|jwk| {
                            let kid = jwk.common.key_id.clone()?;
                            DecodingKey::from_jwk(jwk).ok().map(|key| (kid, key))
                        })
                        .collect();
                    *self.inner.keys.write().await = KeyCache { keys, fetched_at: Some(Instant::now()) };
                }
                Err(err) => {
                    tracing::warn!(error = %err, "cannot refresh JWKS; using cached keys");
                    if self.inner.keys.read().await.keys.is_empty() {
                        return Err(err);
                    }
                }
            }
        }
        Ok(self.inner.keys.read().await.keys.get(kid).cloned())
    }

    async fn resolve_api_token(&self, token: &str) -> Result<Principal, AuthError> {
        let digest: [u8; 32] = Sha256::digest(token.as_bytes()).into();
        let ttl = Duration::from_secs(self.inner.config.api_token_cache_secs);
        if let Some((principal, at)) = self.inner.api_tokens.lock().await.get(&digest)
            && at.elapsed() < ttl
        {
            return Ok(principal.clone());
        }
        let principal = self.inner.source.resolve_api_token(token).await?;
        let mut cache = self.inner.api_tokens.lock().await;
        if cache.len() > 10_000 {
            cache.retain(|_, (_, at)| at.elapsed() < ttl);
        }
        cache.insert(digest, (principal.clone(), Instant::now()));
        Ok(principal)
    }

    /// Forgets cached keys and API tokens (tests, admin actions).
    pub async fn clear_cache(&self) {
        *self.inner.keys.write().await = KeyCache { keys: HashMap::new(), fetched_at: None };
        *self.inner.last_refetch.lock().await = None;
        self.inner.api_tokens.lock().await.clear();
        self.inner.verified.lock().unwrap_or_else(|p| p.into_inner()).clear();
    }
}

/// The token of an `Authorization: Bearer <token>` value (scheme case-insensitive).
pub fn bearer(header: &str) -> Option<&str> {
    let (scheme, token) = header.split_once(' ')?;
    let token = token.trim();
    (scheme.eq_ignore_ascii_case("bearer") && !token.is_empty()).then_some(token)
}
