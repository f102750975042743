//! Active health checks: every upstream in use is probed on an interval; consecutive failures
//! take it out of rotation, consecutive successes bring it back.

use std::{
    sync::{Arc, atomic::Ordering},
    time::Duration,
};

use bytes::Bytes;
use http_body_util::Empty;
use hyper_util::{
    client::legacy::{Client, connect::HttpConnector},
    rt::TokioExecutor,
};
use tokio_util::sync::CancellationToken;

use crate::table::{Routes, Upstream};

#[derive(Debug, Clone)]
pub struct CheckSettings {
    pub path: String,
    pub interval: Duration,
    pub timeout: Duration,
    pub unhealthy_threshold: u32,
    pub healthy_threshold: u32,
}

/// Records one check result; returns true when the upstream's health flipped.
pub fn record(upstream: &Upstream, ok: bool, settings: &CheckSettings) -> bool {
    if ok {
        upstream.check_failures.store(0, Ordering::Relaxed);
        let successes = upstream.check_successes.fetch_add(1, Ordering::Relaxed) + 1;
        if !upstream.healthy.load(Ordering::Relaxed) && successes >= settings.healthy_threshold {
            upstream.healthy.store(true, Ordering::Relaxed);
            tracing::info!(upstream = %upstream.address, "upstream healthy again");
            return true;
        }
    } else {
        upstream.check_successes.store(0, Ordering::Relaxed);
        let failures = upstream.check_failures.fetch_add(1, Ordering::Relaxed) + 1;
        if upstream.healthy.load(Ordering::Relaxed) && failures >= settings.unhealthy_threshold {
            upstream.healthy.store(false, Ordering::Relaxed);
            tracing::warn!(upstream = %upstream.address, failures, "upstream out of rotation: health checks failing");
            return true;
        }
    }
    false
}

pub fn spawn(
    routes: Arc<Routes>,
    settings: CheckSettings,
    shutdown: CancellationToken,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let client: Client<HttpConnector, Empty<Bytes>> =
            Client::builder(TokioExecutor::new()).build(HttpConnector::new());
        let mut ticker = tokio::time::interval(settings.interval);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => break,
                _ = ticker.tick() => {}
            }
            let checks = routes.upstreams().into_iter().map(|upstream| {
                let client = client.clone();
                let settings = &settings;
                async move {
                    let uri = format!("http://{}{}", upstream.address, settings.path);
                    let ok = match uri.parse::<http::Uri>() {
                        Ok(uri) => matches!(
                            tokio::time::timeout(settings.timeout, client.get(uri)).await,
                            Ok(Ok(response)) if response.status().is_success()
                        ),
                        Err(_) => false,
                    };
                    record(&upstream, ok, settings);
                }
            });
            futures::future::join_all(checks).await;
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn three_failures_take_it_out_two_successes_bring_it_back() {
        let routes = Routes::default();
        routes.apply(rp_proto::events::v1::RouteUpdated {
            app: "a".into(),
            environment: "e".into(),
            backends: vec![rp_proto::events::v1::RouteBackend {
                version: "1".into(),
                addresses: vec!["127.0.0.1:1".into()],
            }],
            canary_version: "1".into(),
            canary_weight: 100,
            revision: 1,
            ..Default::default()
        });
        let upstream = routes.upstreams().remove(0);
        let settings = CheckSettings {
            path: "/health".into(),
            interval: Duration::from_secs(1),
            timeout: Duration::from_secs(1),
            unhealthy_threshold: 3,
            healthy_threshold: 2,
        };
        assert!(!record(&upstream, false, &settings));
        assert!(!record(&upstream, false, &settings));
        assert!(upstream.healthy.load(Ordering::Relaxed));
        assert!(record(&upstream, false, &settings));
        assert!(!upstream.healthy.load(Ordering::Relaxed));
        assert!(!record(&upstream, true, &settings));
        assert!(record(&upstream, true, &settings));
        assert!(upstream.healthy.load(Ordering::Relaxed));
    }
}
