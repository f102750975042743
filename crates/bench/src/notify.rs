//! `notify`: the notifier's latency benchmark. Deployment events (`rp.deployment.succeeded`, what
//! the release service publishes when a deployment succeeds) committed through a transactional
//! outbox, as the release service commits a state change, relayed to the bus and delivered
//! through a signed webhook channel to a local receiver. Phase one paces `events` events (200/s)
//! and measures each one's commit → receiver latency (p50/p90/p99), after a warm-up second at
//! the same pace; phase two commits `events` more, 16 at a time, and measures sustained
//! deliveries per second.

use std::{
    collections::HashMap,
    net::SocketAddr,
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use axum::{Router, body::Bytes, extract::State, http::StatusCode, routing::post};
use futures::{StreamExt as _, TryStreamExt as _};
use rp_config::Config;
use rp_events::Event;
use rp_proto::{
    events::v1 as ev,
    notifier::v1::{self as pb, notifier_service_client::NotifierServiceClient},
};
use rp_runtime::{CancellationToken, Listeners};
use serde_json::json;
use tokio::sync::Notify;

/// Events published at the measured pace before measuring.
const WARM_UP_EVENTS: usize = 200;

#[derive(Default)]
struct Arrivals {
    at: Mutex<HashMap<String, Instant>>,
    changed: Notify,
}

async fn receive(State(arrivals): State<Arc<Arrivals>>, body: Bytes) -> StatusCode {
    let now = Instant::now();
    if let Ok(value) = serde_json::from_slice::<serde_json::Value>(&body) {
        let ids: Vec<String> = match &value {
            serde_json::Value::Array(batch) => {
                batch.iter().filter_map(|e| e["id"].as_str().map(str::to_owned)).collect()
            }
            single => single["id"].as_str().map(str::to_owned).into_iter().collect(),
        };
        let mut at = arrivals.at.lock().unwrap_or_else(|p| p.into_inner());
        for id in ids {
            at.entry(id).or_insert(now);
        }
    }
    arrivals.changed.notify_waiters();
    StatusCode::NO_CONTENT
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let rank = ((p / 100.0) * (sorted.len() - 1) as f64).round() as usize;
    sorted[rank.min(sorted.len() - 1)]
}

fn deployment_event(n: usize) -> Event {
    let deployment = uuid::Uuid::now_v7();
    Event::new(
        "release",
        "rp.deployment.succeeded",
        format!("deployments/{deployment}"),
        &ev::DeploymentChanged {
            deployment_id: deployment.to_string(),
            app: "bench".into(),
            environment: "production".into(),
            version: format!("1.0.{n}"),
            state: "succeeded".into(),
            strategy: "all_at_once".into(),
            revision: 1,
            ..Default::default()
        },
    )
}

async fn wait_for(arrivals: &Arrivals, ids: &[String], deadline: Instant) -> usize {
    loop {
        let notified = arrivals.changed.notified();
        let seen = {
            let at = arrivals.at.lock().unwrap_or_else(|p| p.into_inner());
            ids.iter().filter(|id| at.contains_key(*id)).count()
        };
        if seen == ids.len() || Instant::now() > deadline {
            return seen;
        }
        let _ = tokio::time::timeout(Duration::from_millis(200), notified).await;
    }
}

/// The schema of the service whose state changes: only the outbox, as in every service.
struct SourceMigrator;

#[async_trait::async_trait]
impl sea_orm_migration::MigratorTrait for SourceMigrator {
    fn migrations() -> Vec<Box<dyn sea_orm_migration::MigrationTrait>> {
        vec![Box::new(rp_events::outbox::migration::Migration)]
    }
}

/// Where events come from: a state change committed with its event in the outbox, the relay
/// publishing it (what the release service does).
struct Source {
    db: rp_db::Database,
    outbox: rp_events::outbox::Outbox,
}

impl Source {
    async fn commit(&self, event: &Event) -> anyhow::Result<()> {
        let txn = self.db.begin_write().await?;
        rp_events::outbox::enqueue(&txn, event).await?;
        txn.commit().await?;
        self.outbox.wake();
        Ok(())
    }
}

/// Runs the benchmark against the backend the configuration (`RP_…`) names: JetStream and
/// PostgreSQL when set, else SQLite under `data_dir` and the in-process bus.
pub async fn run(events: usize, out: &std::path::Path) -> anyhow::Result<()> {
    let config = rp_config::Config::from_process_env(None)?;
    let report = measure_backend(config, events.max(1)).await?;
    crate::write_report(out, &report)
}

async fn measure_backend(mut config: Config, events: usize) -> anyhow::Result<serde_json::Value> {
    let any = SocketAddr::from(([127, 0, 0, 1], 0));
    config.notifier.allowed_private_networks.push("127.0.0.0/8".parse()?);
    config.notifier.dispatch_interval_ms = config.notifier.dispatch_interval_ms.min(100);
    config.notifier.max_in_flight = config.notifier.max_in_flight.max(64);
    let internal = format!("rpi_bench_{}", uuid::Uuid::new_v4().simple());
    config.identity.internal_token = Some(rp_config::Secret::new(internal.clone()));
    let arrivals = Arc::new(Arrivals::default());
    let receiver = tokio::net::TcpListener::bind(any).await?;
    let receiver_addr = receiver.local_addr()?;
    let shutdown = CancellationToken::new();
    let app = Router::new().route("/hook", post(receive)).with_state(arrivals.clone());
    let stop_receiver = shutdown.clone();
    tokio::spawn(async move {
        let _ = axum::serve(receiver, app).with_graceful_shutdown(stop_receiver.cancelled_owned()).await;
    });

    let bus = rp_events::connect(&config.nats).await?;
    let database = if config.is_distributed_db() { "postgres" } else { "sqlite" };
    let source_db = rp_db::connect(&config, "bench_source").await?;
    source_db.migrate::<SourceMigrator>().await?;
    let outbox = rp_events::outbox::Outbox::new(source_db.clone());
    let relay = outbox.spawn_relay(bus.clone(), config.outbox.clone(), shutdown.clone());
    let source = Source { db: source_db, outbox };
    let listeners = Listeners::bind(any, any).await?;
    let service = rp_notifier::start(Arc::new(config), bus.clone(), listeners, shutdown.clone()).await?;
    let result = measure(&service, &internal, receiver_addr, &source, &arrivals, events).await;
    shutdown.cancel();
    let _ = service.task.await;
    let _ = relay.await;
    let mut report = result?;
    report["backend"] = json!({"bus": bus.kind(), "database": database});
    Ok(report)
}

async fn measure(
    service: &rp_runtime::RunningService,
    internal: &str,
    receiver: SocketAddr,
    source: &Source,
    arrivals: &Arrivals,
    events: usize,
) -> anyhow::Result<serde_json::Value> {
    let mut client = NotifierServiceClient::connect(format!("http://{}", service.primary_addr)).await?;
    let authed = |body| {
        let mut request = tonic::Request::new(body);
        request.metadata_mut().insert("authorization", format!("Bearer {internal}").parse().expect("ascii"));
        request
    };
    let channel = client
        .create_channel(authed(pb::CreateChannelRequest {
            name: "bench receiver".into(),
            kind: "webhook".into(),
            config_json: json!({"url": format!("http://{receiver}/hook")}).to_string(),
            ..Default::default()
        }))
        .await?
        .into_inner()
        .channel
        .unwrap_or_default();
    let mut authed_rule = tonic::Request::new(pb::RoutingRuleInput {
        name: "bench: deployments to the receiver at once".into(),
        position: 1,
        event_types: vec!["rp.deployment.succeeded".into()],
        channel_ids: vec![channel.id.clone()],
        group_wait_ms: Some(0),
        repeat_interval_ms: Some(0),
        group_by: vec!["deployment".into()],
        ..Default::default()
    });
    authed_rule.metadata_mut().insert("authorization", format!("Bearer {internal}").parse()?);
    client.create_routing_rule(authed_rule).await?;

    // The consumer starts with new events only: publish until one arrives.
    let warm_deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let event = deployment_event(0);
        source.commit(&event).await?;
        if wait_for(arrivals, &[event.id.to_string()], Instant::now() + Duration::from_secs(1)).await == 1 {
            break;
        }
        anyhow::ensure!(Instant::now() < warm_deadline, "the notifier delivered nothing within 30 s");
    }

    // Warm-up at the measured pace for a second (connection pools fill, statements get
    // prepared): steady state is what is measured, as with k6's warm-up run.
    let mut pace = tokio::time::interval(Duration::from_millis(5));
    let mut warm = Vec::with_capacity(WARM_UP_EVENTS);
    for n in 0..WARM_UP_EVENTS {
        pace.tick().await;
        let event = deployment_event(n);
        source.commit(&event).await?;
        warm.push(event.id.to_string());
    }
    let warmed = wait_for(arrivals, &warm, Instant::now() + Duration::from_secs(60)).await;
    anyhow::ensure!(warmed == warm.len(), "the notifier delivered {warmed} of {} warm-up events", warm.len());

    // Phase 1: paced, one event every 5 ms; latency of each.
    let mut sent: Vec<(String, Instant)> = Vec::with_capacity(events);
    pace.reset();
    for n in 0..events {
        pace.tick().await;
        let event = deployment_event(n);
        let at = Instant::now();
        source.commit(&event).await?;
        sent.push((event.id.to_string(), at));
    }
    let ids: Vec<String> = sent.iter().map(|(id, _)| id.clone()).collect();
    let received = wait_for(arrivals, &ids, Instant::now() + Duration::from_secs(120)).await;
    let mut latencies: Vec<f64> = {
        let at = arrivals.at.lock().unwrap_or_else(|p| p.into_inner());
        sent.iter()
            .filter_map(|(id, published)| {
                at.get(id).map(|arrived| arrived.duration_since(*published).as_secs_f64() * 1000.0)
            })
            .collect()
    };
    latencies.sort_by(f64::total_cmp);
    let mean = latencies.iter().sum::<f64>() / latencies.len().max(1) as f64;

    // Phase 2: state changes committed as fast as the database takes them (16 at once, so the
    // source is not what limits it); sustained deliveries per second.
    let started = Instant::now();
    let burst_events: Vec<Event> = (0..events).map(deployment_event).collect();
    let burst: Vec<String> = burst_events.iter().map(|e| e.id.to_string()).collect();
    futures::stream::iter(burst_events.iter().map(|event| source.commit(event)))
        .buffer_unordered(16)
        .try_collect::<Vec<()>>()
        .await?;
    let published_in = started.elapsed();
    let burst_received = wait_for(arrivals, &burst, Instant::now() + Duration::from_secs(300)).await;
    let last = {
        let at = arrivals.at.lock().unwrap_or_else(|p| p.into_inner());
        burst.iter().filter_map(|id| at.get(id)).max().copied()
    };
    let seconds = last.map_or(0.0, |last| last.duration_since(started).as_secs_f64());
    Ok(json!({
        "events": events,
        "latency_ms": {
            "received": received,
            "p50": percentile(&latencies, 50.0),
            "p90": percentile(&latencies, 90.0),
            "p99": percentile(&latencies, 99.0),
            "max": latencies.last().copied().unwrap_or(0.0),
            "mean": mean,
            "publish_rate_per_second": 200,
            "warm_up_events": WARM_UP_EVENTS,
        },
        "throughput": {
            "received": burst_received,
            "published_seconds": published_in.as_secs_f64(),
            "seconds": seconds,
            "deliveries_per_second": if seconds > 0.0 { burst_received as f64 / seconds } else { 0.0 },
        },
    }))
}
