//! The release service: the system of record for what runs where. It owns apps, environments
//! (the promotion pipeline), targets, releases (semver from Conventional Commits, changelogs,
//! quality checks), deployments with their strategies, gates and engine, the hash-chained audit
//! log (fed by its own mutations and by every other service's events) and DORA metrics.

pub mod domain;
pub mod drivers;
mod grpc;
mod idempotency;
pub mod metrics;
pub mod service;
pub mod store;

use std::sync::Arc;

use rp_config::Config;
use rp_events::{ConsumerSpec, SharedBus, inbox};
use rp_identity::{Authenticator, GrpcKeySource};
use rp_proto::release::v1::release_service_server::ReleaseServiceServer;
use rp_runtime::{CancellationToken, Listeners, RunningService, ServiceKit};

pub use service::ReleaseCore;

pub const SERVICE_NAME: &str = "releasepilot.release.v1.ReleaseService";

/// Starts the release service on `listeners` until `shutdown`.
pub async fn start(
    config: Arc<Config>,
    bus: SharedBus,
    listeners: Listeners,
    shutdown: CancellationToken,
) -> anyhow::Result<RunningService> {
    metrics::describe();
    let kit = ServiceKit::start::<store::Migrator>("release", config.clone(), bus.clone(), shutdown.clone())
        .await?;
    let authn = Authenticator::new(Arc::new(GrpcKeySource::new(&config.endpoints)?), config.identity.clone());
    let core = Arc::new(ReleaseCore::new(kit.db.clone(), kit.outbox.clone(), config.clone()));

    let engine = service::Engine::spawn(core.clone(), shutdown.clone());
    let gauges = core.spawn_dora_gauges(shutdown.clone());
    // Every other service's events land in the audit log (this service appends its own
    // mutations in their transactions).
    let auditor = {
        let core = core.clone();
        let spec = ConsumerSpec::new("release-audit", "rp.>").from_beginning();
        tokio::spawn(inbox::run_consumer(
            bus,
            spec,
            move |event| {
                let core = core.clone();
                async move {
                    if event.source == format!("/release-pilot/{}", service::SERVICE_NAME_SHORT) {
                        return Ok(());
                    }
                    core.audit_event(&event).await
                }
            },
            shutdown,
        ))
    };
    let routes = tonic::service::Routes::new(ReleaseServiceServer::new(grpc::ReleaseGrpc { core, authn }));
    Ok(kit.serve(listeners, routes, &[SERVICE_NAME], vec![engine, gauges, auditor]))
}
