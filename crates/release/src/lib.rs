//! The release service: the system of record for what runs where. It owns apps (and, as the
//! deployment domain grows, environments, releases, deployments, approvals and the audit log).

mod grpc;
mod idempotency;
pub mod service;
pub mod store;

use std::sync::Arc;

use rp_config::Config;
use rp_events::SharedBus;
use rp_identity::{Authenticator, GrpcKeySource};
use rp_proto::release::v1::release_service_server::ReleaseServiceServer;
use rp_runtime::{CancellationToken, Listeners, RunningService, ServiceKit};

pub const SERVICE_NAME: &str = "releasepilot.release.v1.ReleaseService";

/// Starts the release service on `listeners` until `shutdown`.
pub async fn start(
    config: Arc<Config>,
    bus: SharedBus,
    listeners: Listeners,
    shutdown: CancellationToken,
) -> anyhow::Result<RunningService> {
    let kit = ServiceKit::start::<store::Migrator>("release", config.clone(), bus, shutdown).await?;
    let authn = Authenticator::new(Arc::new(GrpcKeySource::new(&config.endpoints)?), config.identity.clone());
    let core = Arc::new(service::ReleaseCore::new(kit.db.clone(), kit.outbox.clone()));
    let routes = tonic::service::Routes::new(ReleaseServiceServer::new(grpc::ReleaseGrpc { core, authn }));
    Ok(kit.serve(listeners, routes, &[SERVICE_NAME], Vec::new()))
}
