//! The notifier service: turns events into notifications. A durable consumer classifies every
//! event, routes it by type, severity, app and environment to channels (signed webhooks with
//! CloudEvents bodies, Slack, e-mail, PagerDuty), groups bursts and drops duplicates; the
//! dispatcher delivers with leases, retries, rate limits and dead letters; critical incidents
//! escalate until acknowledged. See `docs/architecture.md` for the whole picture.

pub mod channels;
pub mod domain;
mod grpc;
pub mod metrics;
pub mod service;
pub mod store;

use std::{sync::Arc, time::Duration};

use anyhow::Context as _;
use futures::FutureExt as _;
use rp_config::Config;
use rp_events::SharedBus;
use rp_identity::{Authenticator, GrpcKeySource};
use rp_proto::notifier::v1::notifier_service_server::NotifierServiceServer;
use rp_runtime::{AdminState, CancellationToken, Listeners, RunningService, ServiceKit};

pub use service::NotifierCore;

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
    let core = NotifierCore::new(
        kit.db.clone(),
        kit.outbox.clone(),
        kit.bus.clone(),
        config.clone(),
        listeners.admin_addr(),
    )
    .await?;
    let tasks = core.spawn(kit.shutdown.clone());
    let admin_routes = service::ack_router(core.clone());
    let grpc = grpc::NotifierGrpc { core, authn };
    let routes = tonic::service::Routes::new(NotifierServiceServer::new(grpc));
    Ok(serve(kit, listeners, routes, admin_routes, tasks))
}

/// [`ServiceKit::serve`], with the acknowledge links beside the admin endpoints.
fn serve(
    kit: ServiceKit,
    listeners: Listeners,
    routes: tonic::service::Routes,
    admin_routes: axum::Router,
    extra: Vec<tokio::task::JoinHandle<()>>,
) -> RunningService {
    let primary_addr = listeners.primary_addr();
    let admin_addr = listeners.admin_addr();
    let max_connections = kit.config.database.max_connections;
    let pool_db = kit.db.clone();
    let admin_state = AdminState::new(kit.health.clone())
        .with_collector(move || pool_db.record_pool_metrics(max_connections));
    let admin_router = rp_runtime::admin::router(admin_state).merge(admin_routes);
    let relay = kit.outbox.spawn_relay(kit.bus.clone(), kit.config.outbox.clone(), kit.shutdown.clone());
    let name = kit.name;
    let shutdown = kit.shutdown.clone();
    let health = kit.health.clone();
    let db = kit.db.clone();
    let task = tokio::spawn(async move {
        let admin_shutdown = shutdown.clone();
        let admin = tokio::spawn(
            axum::serve(listeners.admin, admin_router)
                .with_graceful_shutdown(admin_shutdown.cancelled_owned())
                .into_future()
                .map(|_| ()),
        );
        health.set_ready(true);
        tracing::info!(service = name, grpc = %primary_addr, admin = %admin_addr, "service started");
        let served =
            rp_runtime::grpc::serve(listeners.primary, routes, &[SERVICE_NAME], shutdown.clone()).await;
        health.set_ready(false);
        shutdown.cancel();
        // The dispatcher records attempts in flight first, so the relay's last pass sends their events.
        for task in extra {
            let _ = task.await;
        }
        let _ = relay.await;
        let _ = tokio::time::timeout(Duration::from_secs(5), admin).await;
        db.conn.close().await.ok();
        tracing::info!(service = name, "service stopped");
        served.with_context(|| format!("{name} gRPC server failed"))
    });
    RunningService { name, primary_addr, admin_addr, task }
}
