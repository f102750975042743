//! The router (role `router`): Release Pilot's data plane. A weighted reverse proxy per app with
//! stable and canary upstream sets, a header override (`x-rp-track`), sticky sessions, active and
//! passive health checking, three balancing algorithms, streaming bodies over pooled keep-alive
//! connections, and per-version traffic statistics sent to the rollback service every
//! `router.stats_interval_ms`. Routes come from the release service (see `source`).

pub mod chunked;
pub mod connections;
pub mod health;
pub mod http1;
pub mod metrics;
pub mod proxy;
pub mod source;
pub mod stats;
pub mod table;

use std::{
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    time::Duration,
};

use futures::FutureExt as _;
use rp_config::Config;
use rp_events::SharedBus;
use rp_runtime::{AdminState, CancellationToken, Health, Listeners, RunningService};

pub use proxy::{TRACK_HEADER, VERSION_HEADER};
pub use table::Routes;

/// Starts the router on `listeners` (proxy + admin) until `shutdown`.
pub async fn start(
    config: Arc<Config>,
    bus: SharedBus,
    listeners: Listeners,
    shutdown: CancellationToken,
) -> anyhow::Result<RunningService> {
    // Install the recorder before any counter handle is created (handles made earlier are no-ops).
    let _ = rp_telemetry::metrics_handle();
    metrics::describe();
    let settings = &config.router;
    let router_id = uuid::Uuid::new_v4().simple().to_string()[..12].to_owned();
    let routes = Arc::new(Routes::new(&settings.sticky_cookie));
    // One proxy (and upstream pool) per proxy thread; see `proxy::serve`.
    let threads = match settings.proxy_threads {
        0 => std::thread::available_parallelism().map_or(1, usize::from),
        n => n,
    };
    let proxy_settings = proxy::ProxySettings {
        balancing: table::Balancing::parse(&settings.balancing),
        passive_failure_threshold: settings.passive_failure_threshold.max(1),
        ejection: Duration::from_secs(settings.ejection_secs),
        upstream_timeout: Duration::from_secs(settings.upstream_timeout_secs),
    };
    let proxies: Vec<Arc<proxy::Proxy>> = (0..threads)
        .map(|_| {
            Arc::new(proxy::Proxy::new(
                routes.clone(),
                proxy_settings.clone(),
                Duration::from_secs(settings.upstream_idle_timeout_secs),
                settings.upstream_max_idle_per_host,
                settings.upstream_http2,
            ))
        })
        .collect();

    let loaded = Arc::new(AtomicBool::new(false));
    let health = Health::new("router");
    {
        let loaded = loaded.clone();
        health.add_check("routes loaded from release", move || {
            let ok = loaded.load(Ordering::SeqCst);
            async move { if ok { Ok(Duration::ZERO) } else { Err("waiting for the release service".to_owned()) } }.boxed()
        });
        let bus = bus.clone();
        health.add_check(format!("event_bus ({})", bus.kind()), move || {
            let bus = bus.clone();
            async move { bus.ping().await.map_err(|e| e.to_string()) }.boxed()
        });
    }

    let subscription = source::subscribe(&bus, &router_id).await?;
    let source = tokio::spawn(source::run(
        routes.clone(),
        bus.clone(),
        subscription,
        config.clone(),
        router_id.clone(),
        loaded,
        shutdown.clone(),
    ));
    let checks = health::spawn(
        routes.clone(),
        health::CheckSettings {
            path: settings.health_check_path.clone(),
            interval: Duration::from_millis(settings.health_check_interval_ms),
            timeout: Duration::from_millis(settings.health_check_timeout_ms),
            unhealthy_threshold: settings.unhealthy_threshold.max(1),
            healthy_threshold: settings.healthy_threshold.max(1),
        },
        shutdown.clone(),
    );
    let samples = stats::spawn_publisher(
        routes.clone(),
        bus,
        router_id,
        Duration::from_millis(settings.stats_interval_ms),
        shutdown.clone(),
    );

    let primary_addr = listeners.primary_addr();
    let admin_addr = listeners.admin_addr();
    let task = tokio::spawn(async move {
        let admin = tokio::spawn(rp_runtime::admin::serve(
            listeners.admin,
            AdminState::new(health.clone()),
            shutdown.clone(),
        ));
        health.set_ready(true);
        tracing::info!(service = "router", proxy = %primary_addr, admin = %admin_addr, "service started");
        proxy::serve(listeners.primary, proxies, shutdown.clone()).await;
        health.set_ready(false);
        for task in [source, checks, samples] {
            let _ = task.await;
        }
        let _ = tokio::time::timeout(Duration::from_secs(5), admin).await;
        tracing::info!(service = "router", "service stopped");
        Ok(())
    });
    Ok(RunningService { name: "router", primary_addr, admin_addr, task })
}
