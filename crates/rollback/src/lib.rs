//! The rollback service: watches deployments, decides on rollbacks and keeps incidents. This
//! first cut owns the incident store and its API; policies and analyses grow in their own issue.

pub mod domain;
mod grpc;
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
    let grpc = grpc::RollbackGrpc { db: kit.db.clone(), authn };
    let routes = tonic::service::Routes::new(RollbackServiceServer::new(grpc));
    Ok(kit.serve(listeners, routes, &[SERVICE_NAME], Vec::new()))
}
