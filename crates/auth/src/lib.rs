//! The auth service: users and roles, argon2id passwords, EdDSA access tokens verified locally by
//! every service through the JWKS published here, rotating refresh tokens with reuse detection,
//! CI API tokens, login throttling, signing-key rotation and the bootstrap administrator.

pub mod domain;
pub mod error;
mod grpc;
pub mod metrics;
pub mod service;
pub mod store;

use std::{sync::Arc, time::Duration};

use async_trait::async_trait;
use jsonwebtoken::jwk::JwkSet;
use rp_config::Config;
use rp_events::SharedBus;
use rp_identity::{AuthError, Authenticator, KeySource, Principal};
use rp_proto::auth::v1::auth_service_server::AuthServiceServer;
use rp_runtime::{CancellationToken, Listeners, RunningService, ServiceKit};

pub use service::AuthCore;

/// Fully qualified gRPC service name, as reported by health checks and reflection.
pub const SERVICE_NAME: &str = "releasepilot.auth.v1.AuthService";

/// How often key rotation and pruning are considered.
const MAINTENANCE_INTERVAL: Duration = Duration::from_secs(3600);

/// The auth service verifies its own callers straight from its database.
struct LocalKeySource(Arc<AuthCore>);

#[async_trait]
impl KeySource for LocalKeySource {
    async fn jwks(&self) -> Result<JwkSet, AuthError> {
        self.0.jwks().await.map_err(|e| AuthError::Unavailable(e.to_string()))
    }

    async fn resolve_api_token(&self, token: &str) -> Result<Principal, AuthError> {
        self.0.authenticate_api_token(token).await.map_err(|e| match e {
            error::AuthServiceError::Unauthenticated(_) => AuthError::Invalid,
            other => AuthError::Unavailable(other.to_string()),
        })
    }
}

/// Starts the auth service on `listeners` until `shutdown`.
pub async fn start(
    config: Arc<Config>,
    bus: SharedBus,
    listeners: Listeners,
    shutdown: CancellationToken,
) -> anyhow::Result<RunningService> {
    metrics::describe();
    let kit = ServiceKit::start::<store::Migrator>("auth", config.clone(), bus, shutdown.clone()).await?;
    let core = Arc::new(AuthCore::new(kit.db.clone(), kit.outbox.clone(), config.clone()));
    core.ensure_signing_key().await?;
    announce_bootstrap_admin(core.bootstrap_admin().await?);

    // Auth reads its own tables: no API-token cache, so a revocation takes effect at once here.
    let mut identity = config.identity.clone();
    identity.api_token_cache_secs = 0;
    let authn = Authenticator::new(Arc::new(LocalKeySource(core.clone())), identity);
    let grpc =
        grpc::AuthGrpc { core: core.clone(), authn, trusted_proxies: config.gateway.trusted_proxies.clone() };
    let routes = tonic::service::Routes::new(AuthServiceServer::new(grpc));

    let maintenance = tokio::spawn(async move {
        loop {
            if let Err(err) = core.rotate_if_due().await {
                tracing::warn!(error = %err, "scheduled key rotation failed");
            }
            if let Err(err) = core.prune().await {
                tracing::warn!(error = %err, "pruning expired auth records failed");
            }
            tokio::select! {
                _ = shutdown.cancelled() => break,
                _ = tokio::time::sleep(MAINTENANCE_INTERVAL) => {}
            }
        }
    });
    Ok(kit.serve(listeners, routes, &[SERVICE_NAME], vec![maintenance]))
}

/// Shows a generated bootstrap password once, on the terminal only (never in the log stream).
fn announce_bootstrap_admin(created: Option<(String, Option<String>)>) {
    match created {
        Some((email, Some(password))) => {
            eprintln!(
                "\n  Release Pilot created the first administrator.\n\
                 \n    e-mail:   {email}\n    password: {password}\n\
                 \n  This password is shown once. Change it after logging in, or set\n\
                 \x20 RP_AUTH__BOOTSTRAP_ADMIN__EMAIL / RP_AUTH__BOOTSTRAP_ADMIN__PASSWORD before the first start.\n"
            );
            tracing::info!(email, "bootstrap administrator created with a generated password (printed once)");
        }
        Some((email, None)) => tracing::info!(email, "bootstrap administrator created from configuration"),
        None => {}
    }
}
