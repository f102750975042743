//! The router alone, serving one app with a fixed weighted route, until SIGTERM.

use std::{net::SocketAddr, sync::Arc, time::Duration};

use rp_events::Event;
use rp_proto::events::v1 as ev;
use rp_runtime::{CancellationToken, Listeners};

pub async fn run(
    listen: SocketAddr,
    admin: SocketAddr,
    stable: String,
    canary: String,
    weight: i32,
) -> anyhow::Result<()> {
    let mut config = rp_config::Config::default();
    config.router.proxy_addr = listen;
    config.router.admin_addr = admin;
    // No release service here: the route comes from this process.
    config.endpoints.release = "http://127.0.0.1:9".into();
    let config = Arc::new(config);
    let bus: rp_events::SharedBus = Arc::new(rp_events::InProcessBus::new());
    let shutdown = CancellationToken::new();
    rp_runtime::shutdown::cancel_on_signal(shutdown.clone());
    let listeners = Listeners::bind(listen, admin).await?;
    let router = rp_router::start(config, bus.clone(), listeners, shutdown.clone()).await?;
    let route = ev::RouteUpdated {
        app: "bench".into(),
        environment: "bench".into(),
        r#match: Some(ev::RouteMatch { host: String::new(), path_prefix: "/".into() }),
        backends: vec![
            ev::RouteBackend { version: "1.0.0".into(), addresses: vec![stable] },
            ev::RouteBackend { version: "2.0.0".into(), addresses: vec![canary] },
        ],
        stable_version: "1.0.0".into(),
        canary_version: "2.0.0".into(),
        canary_weight: weight,
        deployment_id: "bench".into(),
        revision: 1,
    };
    bus.publish(&Event::new("bench", "rp.router.route_updated", "routes/bench/bench", &route)).await?;
    // Ready when the route answers.
    let client = reqwest::Client::new();
    for _ in 0..100 {
        if client.get(format!("http://{listen}/")).send().await.is_ok_and(|r| r.status().is_success()) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    eprintln!("router ready on {listen}");
    shutdown.cancelled().await;
    router.task.await??;
    Ok(())
}
