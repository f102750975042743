//! The notifier service: turns events into notifications. This first cut owns the channel store
//! and its API; routing, delivery and escalation grow in their own issue.

mod grpc;
pub mod store;

use std::sync::Arc;

use rp_config::Config;
use rp_events::SharedBus;
use rp_identity::{Authenticator, GrpcKeySource};
use rp_proto::notifier::v1::notifier_service_server::NotifierServiceServer;
use rp_runtime::{CancellationToken, Listeners, RunningService, ServiceKit};

pub const SERVICE_NAME: &str = "releasepilot.notifier.v1.NotifierService";

/// Starts the notifier service on `listeners` until `shutdown`.
pub async fn start(
    config: Arc<Config>,
    bus: SharedBus,
    listeners: Listeners,
    shutdown: CancellationToken,
) -> anyhow::Result<RunningService> {
    let kit = ServiceKit::start::<store::Migrator>("notifier", config.clone(), bus, shutdown).await?;
    let authn = Authenticator::new(Arc::new(GrpcKeySource::new(&config.endpoints)?), config.identity.clone());
    let grpc = grpc::NotifierGrpc { db: kit.db.clone(), authn };
    let routes = tonic::service::Routes::new(NotifierServiceServer::new(grpc));
    Ok(kit.serve(listeners, routes, &[SERVICE_NAME], Vec::new()))
}
