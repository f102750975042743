//! The service kit: the parts every gRPC service (auth, release, rollback, notifier) assembles
//! the same way.

use std::{net::SocketAddr, sync::Arc, time::Duration};

use anyhow::Context as _;
use futures::FutureExt as _;
use rp_config::Config;
use rp_db::Database;
use rp_events::{SharedBus, outbox::Outbox};
use sea_orm_migration::MigratorTrait;
use tokio::{net::TcpListener, task::JoinHandle};
use tokio_util::sync::CancellationToken;

use crate::{admin::AdminState, health::Health};

/// A service's two listening sockets, bound before anything else starts so that every port is
/// known (and port 0 resolved) up front.
pub struct Listeners {
    pub primary: TcpListener,
    pub admin: TcpListener,
}

impl Listeners {
    pub async fn bind(primary: SocketAddr, admin: SocketAddr) -> std::io::Result<Self> {
        let primary = TcpListener::bind(primary).await?;
        let admin = TcpListener::bind(admin).await?;
        Ok(Self { primary, admin })
    }

    pub fn primary_addr(&self) -> SocketAddr {
        self.primary.local_addr().expect("bound listener has an address")
    }

    pub fn admin_addr(&self) -> SocketAddr {
        self.admin.local_addr().expect("bound listener has an address")
    }
}

/// A started service: its addresses and the task that ends when it has shut down.
pub struct RunningService {
    pub name: &'static str,
    pub primary_addr: SocketAddr,
    pub admin_addr: SocketAddr,
    pub task: JoinHandle<anyhow::Result<()>>,
}

/// Database, outbox, bus and health of one service.
#[derive(Clone)]
pub struct ServiceKit {
    pub name: &'static str,
    pub config: Arc<Config>,
    pub db: Database,
    pub outbox: Outbox,
    pub bus: SharedBus,
    pub health: Health,
    pub shutdown: CancellationToken,
}

impl ServiceKit {
    /// Connects the service's database, applies `M`'s migrations (unless disabled) and registers
    /// the database and bus health checks.
    pub async fn start<M: MigratorTrait>(
        name: &'static str,
        config: Arc<Config>,
        bus: SharedBus,
        shutdown: CancellationToken,
    ) -> anyhow::Result<Self> {
        // Install the recorder before the service creates metric handles (earlier ones are no-ops).
        let _ = rp_telemetry::metrics_handle();
        let db = rp_db::connect(&config, name).await?;
        if config.database.run_migrations {
            db.migrate::<M>().await?;
        }
        let health = Health::new(name);
        let check_db = db.clone();
        health.add_check("database", move || {
            let db = check_db.clone();
            async move { db.ping().await.map_err(|e| e.to_string()) }.boxed()
        });
        let check_bus = bus.clone();
        health.add_check(format!("event_bus ({})", bus.kind()), move || {
            let bus = check_bus.clone();
            async move { bus.ping().await.map_err(|e| e.to_string()) }.boxed()
        });
        let outbox = Outbox::new(db.clone());
        Ok(Self { name, config, db, outbox, bus, health, shutdown })
    }

    /// Serves `routes` over gRPC and the admin endpoints, and runs the outbox relay, until the
    /// shutdown token fires. `extra` tasks (consumers, schedulers) are awaited on the way out.
    pub fn serve(
        self,
        listeners: Listeners,
        routes: tonic::service::Routes,
        service_names: &'static [&'static str],
        extra: Vec<JoinHandle<()>>,
    ) -> RunningService {
        let primary_addr = listeners.primary_addr();
        let admin_addr = listeners.admin_addr();
        let max_connections = self.config.database.max_connections;
        let pool_db = self.db.clone();
        let admin_state = AdminState::new(self.health.clone())
            .with_collector(move || pool_db.record_pool_metrics(max_connections));
        let relay =
            self.outbox.spawn_relay(self.bus.clone(), self.config.outbox.clone(), self.shutdown.clone());
        let name = self.name;
        let shutdown = self.shutdown.clone();
        let health = self.health.clone();
        let task = tokio::spawn(async move {
            let admin = tokio::spawn(crate::admin::serve(listeners.admin, admin_state, shutdown.clone()));
            health.set_ready(true);
            tracing::info!(service = name, grpc = %primary_addr, admin = %admin_addr, "service started");
            let served = crate::grpc::serve(listeners.primary, routes, service_names, shutdown.clone()).await;
            health.set_ready(false);
            shutdown.cancel();
            let _ = relay.await;
            for task in extra {
                let _ = task.await;
            }
            let _ = tokio::time::timeout(Duration::from_secs(5), admin).await;
            self.db.conn.close().await.ok();
            tracing::info!(service = name, "service stopped");
            served.with_context(|| format!("{name} gRPC server failed"))
        });
        RunningService { name, primary_addr, admin_addr, task }
    }
}
