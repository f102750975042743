//! The rollback service: watches deployments against health policies, keeps a decision record
//! of every evaluation, rolls back (or pauses, or alerts) when a rule fails, and keeps incidents.

pub mod domain;
mod grpc;
pub mod service;
pub mod store;

use std::sync::Arc;

use rp_config::Config;
use rp_events::SharedBus;
use rp_identity::{Authenticator, GrpcKeySource};
use rp_proto::rollback::v1::rollback_service_server::RollbackServiceServer;
use rp_runtime::{CancellationToken, Listeners, RunningService, ServiceKit};

pub const SERVICE_NAME: &str = "releasepilot.rollback.v1.RollbackService";

/// Starts the rollback service on `listeners` until `shutdown`.
pub async fn start(
    config: Arc<Config>,
    bus: SharedBus,
    listeners: Listeners,
    shutdown: CancellationToken,
) -> anyhow::Result<RunningService> {
    let kit = ServiceKit::start::<store::Migrator>("rollback", config.clone(), bus, shutdown).await?;
    let authn = Authenticator::new(Arc::new(GrpcKeySource::new(&config.endpoints)?), config.identity.clone());
    let core = service::RollbackCore::new(kit.db.clone(), kit.outbox.clone(), kit.bus.clone(), config)?;
    let tasks = core.spawn(kit.shutdown.clone());
    let grpc = grpc::RollbackGrpc { core, authn };
    let routes = tonic::service::Routes::new(RollbackServiceServer::new(grpc));
    Ok(kit.serve(listeners, routes, &[SERVICE_NAME], tasks))
}
