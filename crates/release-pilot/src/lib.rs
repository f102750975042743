//! Assembles the Release Pilot roles into one process: binds every listener first (so port 0
//! resolves and every role knows where the others are), shares one event bus, starts the roles,
//! and shuts them down together with a grace period.

pub mod demo;
pub mod testing;

use std::{net::SocketAddr, sync::Arc, time::Duration};

use anyhow::Context as _;
use rp_config::Config;
use rp_runtime::{CancellationToken, Listeners, RunningService};

/// A role the binary can run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, clap::ValueEnum)]
pub enum Role {
    Gateway,
    Auth,
    Release,
    Rollback,
    Notifier,
    Router,
}

impl Role {
    pub const ALL: [Role; 6] =
        [Role::Auth, Role::Release, Role::Rollback, Role::Notifier, Role::Gateway, Role::Router];

    pub fn name(self) -> &'static str {
        match self {
            Role::Gateway => "gateway",
            Role::Auth => "auth",
            Role::Release => "release",
            Role::Rollback => "rollback",
            Role::Notifier => "notifier",
            Role::Router => "router",
        }
    }

    /// (primary, admin) listen addresses from the configuration.
    fn addrs(self, config: &Config) -> (SocketAddr, SocketAddr) {
        match self {
            Role::Gateway => (config.gateway.http_addr, config.gateway.admin_addr),
            Role::Auth => (config.auth.grpc_addr, config.auth.admin_addr),
            Role::Release => (config.release.grpc_addr, config.release.admin_addr),
            Role::Rollback => (config.rollback.grpc_addr, config.rollback.admin_addr),
            Role::Notifier => (config.notifier.grpc_addr, config.notifier.admin_addr),
            Role::Router => (config.router.proxy_addr, config.router.admin_addr),
        }
    }

    fn endpoint_mut(self, config: &mut Config) -> Option<&mut String> {
        match self {
            Role::Gateway | Role::Router => None,
            Role::Auth => Some(&mut config.endpoints.auth),
            Role::Release => Some(&mut config.endpoints.release),
            Role::Rollback => Some(&mut config.endpoints.rollback),
            Role::Notifier => Some(&mut config.endpoints.notifier),
        }
    }
}

/// The roles to run: all of them when none are named.
pub fn resolve_roles(requested: &[Role]) -> Vec<Role> {
    let mut roles = if requested.is_empty() { Role::ALL.to_vec() } else { requested.to_vec() };
    roles.sort();
    roles.dedup();
    roles
}

/// A running process: the roles and the addresses they listen on.
pub struct App {
    pub config: Arc<Config>,
    pub services: Vec<RunningService>,
    pub shutdown: CancellationToken,
    /// The bus the roles share (tests start extra replicas on it).
    pub bus: rp_events::SharedBus,
}

impl App {
    /// Binds, then starts `roles`. Roles in this process reach each other at their real bound
    /// addresses; other roles at `config.endpoints`.
    pub async fn start(
        mut config: Config,
        roles: &[Role],
        shutdown: CancellationToken,
    ) -> anyhow::Result<Self> {
        let roles = resolve_roles(roles);
        let mut bound = Vec::new();
        for role in &roles {
            let (primary, admin) = role.addrs(&config);
            let listeners = Listeners::bind(primary, admin)
                .await
                .with_context(|| format!("cannot bind the {} ports {primary} / {admin}", role.name()))?;
            let mut local = listeners.primary_addr();
            if local.ip().is_unspecified() {
                local.set_ip([127, 0, 0, 1].into());
            }
            if let Some(endpoint) = role.endpoint_mut(&mut config) {
                *endpoint = format!("http://{local}");
            }
            bound.push((*role, listeners));
        }
        if config.identity.internal_token.is_none() {
            // Roles of this process share a fresh internal credential.
            config.identity.internal_token = Some(rp_config::Secret::new(random_token()));
        }
        let config = Arc::new(config);
        let bus = rp_events::connect(&config.nats).await?;
        tracing::info!(
            roles = ?roles.iter().map(|r| r.name()).collect::<Vec<_>>(),
            database = if config.is_distributed_db() { "postgres" } else { "sqlite" },
            bus = bus.kind(),
            "starting release pilot"
        );
        let mut services = Vec::new();
        for (role, listeners) in bound {
            let (config, bus, token) = (config.clone(), bus.clone(), shutdown.clone());
            let started = match role {
                Role::Auth => rp_auth::start(config, bus, listeners, token).await,
                Role::Release => rp_release::start(config, bus, listeners, token).await,
                Role::Rollback => rp_rollback::start(config, bus, listeners, token).await,
                Role::Notifier => rp_notifier::start(config, bus, listeners, token).await,
                Role::Gateway => rp_gateway::start(config, listeners, token).await,
                Role::Router => rp_router::start(config, bus, listeners, token).await,
            };
            match started {
                Ok(service) => services.push(service),
                Err(err) => {
                    // Stop what already started before reporting.
                    shutdown.cancel();
                    for service in services {
                        let _ = service.task.await;
                    }
                    return Err(err.context(format!("cannot start {}", role.name())));
                }
            }
        }
        Ok(Self { config, services, shutdown, bus })
    }

    /// The running service called `name`.
    pub fn service(&self, name: &str) -> Option<&RunningService> {
        self.services.iter().find(|s| s.name == name)
    }

    /// Waits until the shutdown token fires (or a service fails), then gives the services the
    /// grace period to finish in-flight work.
    pub async fn run_until_stopped(self) -> anyhow::Result<()> {
        let grace = Duration::from_secs(self.config.shutdown.grace_period_secs);
        let shutdown = self.shutdown.clone();
        let mut tasks: Vec<_> = self.services.into_iter().map(|s| (s.name, s.task)).collect();
        let mut failure = None;
        // A service ending on its own is a failure: take the others down too.
        let (name, result) = {
            let waits = tasks.iter_mut().map(|(name, task)| Box::pin(async move { (*name, task.await) }));
            let first = futures::future::select_all(waits);
            tokio::select! {
                _ = shutdown.cancelled() => (None, None),
                ((name, result), _, _) = first => (Some(name), Some(result)),
            }
        };
        if let (Some(name), Some(result)) = (name, result) {
            if !shutdown.is_cancelled() {
                let reason = match result {
                    Ok(Ok(())) => "stopped unexpectedly".to_owned(),
                    Ok(Err(err)) => format!("{err:#}"),
                    Err(err) => format!("panicked: {err}"),
                };
                tracing::error!(service = name, reason, "a service stopped; shutting down");
                failure = Some(anyhow::anyhow!("{name} {reason}"));
            }
            shutdown.cancel();
        }
        let drain = async {
            for (name, task) in tasks {
                if task.is_finished() {
                    continue;
                }
                match task.await {
                    Ok(Err(err)) => {
                        tracing::error!(service = name, error = %format!("{err:#}"), "service failed")
                    }
                    Err(err) => tracing::error!(service = name, error = %err, "service panicked"),
                    Ok(Ok(())) => {}
                }
            }
        };
        if tokio::time::timeout(grace, drain).await.is_err() {
            tracing::warn!(?grace, "grace period over; exiting with work in flight");
        }
        failure.map_or(Ok(()), Err)
    }
}

impl App {
    /// Cancels every role and waits for them to finish (tests; `main` uses `run_until_stopped`).
    pub async fn stop(&mut self) {
        self.shutdown.cancel();
        for service in std::mem::take(&mut self.services) {
            let _ = service.task.await;
        }
    }
}

fn random_token() -> String {
    use std::fmt::Write as _;
    let mut bytes = [0u8; 32];
    getrandom::fill(&mut bytes).expect("the operating system provides randomness");
    bytes.iter().fold(String::from("rpi_"), |mut out, b| {
        let _ = write!(out, "{b:02x}");
        out
    })
}

/// Applies every role's migrations and exits.
pub async fn migrate(config: &Config, roles: &[Role]) -> anyhow::Result<()> {
    for role in resolve_roles(roles) {
        let db = match role {
            Role::Gateway | Role::Router => continue,
            _ => rp_db::connect(config, role.name()).await?,
        };
        match role {
            Role::Auth => db.migrate::<rp_auth::store::Migrator>().await?,
            Role::Release => db.migrate::<rp_release::store::Migrator>().await?,
            Role::Rollback => db.migrate::<rp_rollback::store::Migrator>().await?,
            Role::Notifier => db.migrate::<rp_notifier::store::Migrator>().await?,
            Role::Gateway | Role::Router => {}
        }
        tracing::info!(service = role.name(), backend = ?db.backend, "migrations applied");
    }
    Ok(())
}

/// Asks each role's admin `/ready` endpoint; returns the ones that are not ready.
pub async fn healthcheck(config: &Config, roles: &[Role]) -> Vec<(Role, String)> {
    let client = reqwest::Client::builder().timeout(Duration::from_secs(3)).build().expect("http client");
    let mut failing = Vec::new();
    for role in resolve_roles(roles) {
        let (_, mut admin) = role.addrs(config);
        if admin.ip().is_unspecified() {
            admin.set_ip([127, 0, 0, 1].into());
        }
        let url = format!("http://{admin}/ready");
        match client.get(&url).send().await {
            Ok(response) if response.status().is_success() => {}
            Ok(response) => failing.push((role, format!("{url} answered {}", response.status()))),
            Err(err) => failing.push((role, format!("{url}: {err}"))),
        }
    }
    failing
}
