//! Where routes come from: the release service's current routes when the router starts, then
//! every `rp.router.route_updated` event (each router has its own consumer, so every replica
//! sees every update within milliseconds).

use std::{sync::Arc, time::Duration};

use futures::StreamExt as _;
use rp_config::Config;
use rp_events::{ConsumerSpec, SharedBus};
use rp_proto::{events::v1 as ev, release::v1 as pb};
use tokio_util::sync::CancellationToken;

use crate::{metrics as names, table::Routes};

/// The route-update consumer of one router instance.
pub fn consumer(router_id: &str) -> ConsumerSpec {
    ConsumerSpec::new(format!("router-{router_id}"), "rp.router.route_updated")
        .ephemeral(Duration::from_secs(300))
}

/// Subscribes to route updates (before the router serves, so none is missed).
pub async fn subscribe(bus: &SharedBus, router_id: &str) -> anyhow::Result<rp_events::Subscription> {
    Ok(bus.subscribe(&consumer(router_id)).await?)
}

/// Loads the snapshot, then applies updates until shutdown. `loaded` is set once the snapshot is
/// in. The subscription was made first, so nothing published while the snapshot loads is
/// missed; revisions sort out the overlap.
pub async fn run(
    routes: Arc<Routes>,
    bus: SharedBus,
    mut subscription: rp_events::Subscription,
    config: Arc<Config>,
    router_id: String,
    loaded: Arc<std::sync::atomic::AtomicBool>,
    shutdown: CancellationToken,
) {
    let spec = consumer(&router_id);
    let snapshot = {
        let routes = routes.clone();
        let config = config.clone();
        let shutdown = shutdown.clone();
        let loaded = loaded.clone();
        tokio::spawn(async move {
            loop {
                match load_snapshot(&config).await {
                    Ok(list) => {
                        let count = list.len();
                        for route in list {
                            routes.apply(route);
                        }
                        loaded.store(true, std::sync::atomic::Ordering::SeqCst);
                        tracing::info!(routes = count, "router loaded the current routes");
                        break;
                    }
                    Err(err) => {
                        tracing::warn!(error = %err, "router cannot load routes from the release service yet")
                    }
                }
                tokio::select! {
                    _ = shutdown.cancelled() => break,
                    _ = tokio::time::sleep(Duration::from_secs(1)) => {}
                }
            }
        })
    };
    loop {
        let next = tokio::select! {
            _ = shutdown.cancelled() => break,
            next = subscription.next() => next,
        };
        let Some(delivery) = next else {
            // The subscription ended (connection lost): subscribe again.
            match bus.subscribe(&spec).await {
                Ok(again) => subscription = again,
                Err(_) => tokio::time::sleep(Duration::from_secs(1)).await,
            }
            continue;
        };
        let Ok(delivery) = delivery else { continue };
        match delivery.event.decode::<ev::RouteUpdated>() {
            Ok(update) => {
                let (app, environment, weight) =
                    (update.app.clone(), update.environment.clone(), update.canary_weight);
                if routes.apply(update) {
                    metrics::counter!(names::ROUTE_UPDATES_TOTAL).increment(1);
                    metrics::gauge!(names::ROUTES).set(routes.snapshot().routes.len() as f64);
                    tracing::info!(app, environment, canary_weight = weight, "route updated");
                }
            }
            Err(err) => tracing::warn!(error = %err, "malformed route update"),
        }
        let _ = delivery.ack().await;
    }
    snapshot.abort();
}

async fn load_snapshot(config: &Config) -> anyhow::Result<Vec<ev::RouteUpdated>> {
    let channel = tonic::transport::Endpoint::from_shared(config.endpoints.release.clone())?
        .connect_timeout(Duration::from_secs(2))
        .timeout(Duration::from_secs(5))
        .connect()
        .await?;
    let mut client = pb::release_service_client::ReleaseServiceClient::new(channel);
    let request = rp_identity::internal_request(&config.identity, pb::ListRoutesRequest {});
    Ok(client.list_routes(request).await?.into_inner().routes)
}
