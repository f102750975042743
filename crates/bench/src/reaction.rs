//! Rollback reaction time. The whole system runs in this process with its default settings
//! (router samples every 250 ms, evaluation on every sample); demo app 1.0.0 serves, a canary of
//! 1.1.0 takes 20% of the traffic, then 1.1.0 starts failing half of its requests. For each run:
//!
//! - *crossing*: the first moment the traffic generator's own view of 1.1.0 — its answers in the
//!   rule's trailing window — breaks the rule (error rate above 5% over 2 s, at least 20
//!   requests): the evidence is in;
//! - *restored*: the last answer 1.1.0 gave; every request after it reached 1.0.0;
//! - reaction = restored − crossing, split at the rollback service's decision time.

use std::{
    net::SocketAddr,
    path::Path,
    sync::{Arc, Mutex},
    time::{Duration, Instant, SystemTime},
};

use demo_app::Knobs;
use release_pilot::demo::{self, APP, ENV, authed};
use rp_proto::{
    release::v1::{self as release_pb, release_service_client::ReleaseServiceClient},
    rollback::v1::{self as rollback_pb, rollback_service_client::RollbackServiceClient},
};
use rp_runtime::CancellationToken;
use tonic::transport::Channel;

use crate::{quantile, write_report};

const WINDOW: Duration = Duration::from_secs(2);
const THRESHOLD_PERCENT: f64 = 5.0;
const MIN_SAMPLES: usize = 20;

#[derive(Debug, Clone)]
struct Hit {
    done: Instant,
    canary: bool,
    failed: bool,
}

struct Generator {
    hits: Arc<Mutex<Vec<Hit>>>,
    /// `Instant` ↔ wall clock, to place the server's timestamps on the generator's timeline.
    base: (Instant, SystemTime),
}

impl Generator {
    fn start(url: String, workers: usize, stop: CancellationToken) -> Self {
        let hits = Arc::new(Mutex::new(Vec::new()));
        let client = reqwest::Client::builder().pool_max_idle_per_host(workers).build().expect("http client");
        for _ in 0..workers {
            let (hits, client, url, stop) = (hits.clone(), client.clone(), url.clone(), stop.clone());
            tokio::spawn(async move {
                while !stop.is_cancelled() {
                    let Ok(response) = client.get(&url).timeout(Duration::from_secs(2)).send().await else {
                        continue;
                    };
                    let canary =
                        response.headers().get("x-rp-version").is_some_and(|v| v.as_bytes() == b"1.1.0");
                    let failed = response.status().is_server_error();
                    let hit = Hit { done: Instant::now(), canary, failed };
                    hits.lock().unwrap_or_else(|p| p.into_inner()).push(hit);
                    // ~100 requests per second per worker.
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
            });
        }
        Self { hits, base: (Instant::now(), SystemTime::now()) }
    }

    fn since(&self, since: Instant) -> Vec<Hit> {
        self.hits
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
            .filter(|h| h.done >= since)
            .cloned()
            .collect()
    }

    fn instant_of(&self, wall: SystemTime) -> Instant {
        match wall.duration_since(self.base.1) {
            Ok(after) => self.base.0 + after,
            Err(before) => self.base.0 - before.duration(),
        }
    }
}

/// The first canary answer after `broken` at which the trailing window breaks the rule.
fn crossing(hits: &[Hit], broken: Instant) -> Option<Instant> {
    let canary: Vec<&Hit> = hits.iter().filter(|h| h.canary).collect();
    let mut start = 0;
    for (end, hit) in canary.iter().enumerate() {
        while canary[start].done + WINDOW <= hit.done {
            start += 1;
        }
        if hit.done < broken {
            continue;
        }
        let window = &canary[start..=end];
        let errors = window.iter().filter(|h| h.failed).count();
        if window.len() >= MIN_SAMPLES && errors as f64 * 100.0 / window.len() as f64 > THRESHOLD_PERCENT {
            return Some(hit.done);
        }
    }
    None
}

pub async fn run(runs: usize, workers: usize, out: &Path) -> anyhow::Result<()> {
    let mut config = rp_config::Config::from_process_env(None)?;
    let any = SocketAddr::from(([127, 0, 0, 1], 0));
    for (grpc, admin) in [
        (&mut config.auth.grpc_addr, &mut config.auth.admin_addr),
        (&mut config.release.grpc_addr, &mut config.release.admin_addr),
        (&mut config.rollback.grpc_addr, &mut config.rollback.admin_addr),
        (&mut config.notifier.grpc_addr, &mut config.notifier.admin_addr),
        (&mut config.gateway.http_addr, &mut config.gateway.admin_addr),
        (&mut config.router.proxy_addr, &mut config.router.admin_addr),
    ] {
        (*grpc, *admin) = (any, any);
    }
    let password = "bench-admin-password";
    config.auth.bootstrap_admin.email = Some("admin@example.com".into());
    config.auth.bootstrap_admin.password = Some(rp_config::Secret::new(password));
    let data = std::env::temp_dir().join(format!("rp-bench-reaction-{}", std::process::id()));
    config.data_dir = data.clone();
    let shutdown = CancellationToken::new();
    let result = measure(config, runs, workers, out, password, shutdown.clone()).await;
    shutdown.cancel();
    let _ = std::fs::remove_dir_all(data);
    result
}

async fn measure(
    config: rp_config::Config,
    runs: usize,
    workers: usize,
    out: &Path,
    password: &str,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    let settings = (config.router.stats_interval_ms, config.rollback.evaluation_interval_ms);
    let app = release_pilot::App::start(config, &[], shutdown.clone()).await?;
    let gateway = app.service("gateway").map(|s| s.primary_addr).expect("gateway");
    let router = app.service("router").map(|s| s.primary_addr).expect("router");
    let any = SocketAddr::from(([127, 0, 0, 1], 0));
    let v1 = demo_app::spawn("1.0.0", any, Knobs::default()).await?;
    let v2 = demo_app::spawn("1.1.0", any, Knobs::default()).await?;
    let token = demo::login(&format!("http://{gateway}"), "admin@example.com", password).await?;
    let mut release = ReleaseServiceClient::new(
        Channel::from_shared(app.config.endpoints.release.clone())?.connect().await?,
    );
    let mut rollback = RollbackServiceClient::new(
        Channel::from_shared(app.config.endpoints.rollback.clone())?.connect().await?,
    );
    demo::setup(&mut release, &mut rollback, &token, &v1, &v2).await?;
    let rules = serde_json::json!([
        {"name": "error rate above 5%", "metric": "error_rate", "source": {"kind": "router"},
         "operator": "gt", "threshold": THRESHOLD_PERCENT, "window_seconds": WINDOW.as_secs(), "for_seconds": 0,
         "min_samples": MIN_SAMPLES, "severity": "critical", "action": "rollback"}
    ]);
    rollback
        .put_policy(authed(
            &token,
            rollback_pb::PutPolicyRequest {
                app: APP.into(),
                environment: ENV.into(),
                rules_json: rules.to_string(),
            },
        )?)
        .await?;
    let first = demo::deploy(&mut release, &token, "1.0.0", "all_at_once", vec![]).await?;
    wait_state(&mut release, &token, &first.id, "succeeded").await?;
    let generator = Generator::start(format!("http://{router}/"), workers, shutdown.clone());

    let mut results = Vec::new();
    for run in 0..runs {
        v2.set(Knobs::default());
        let deployment = demo::deploy(&mut release, &token, "1.1.0", "canary", vec![(20, 3600)]).await?;
        // Healthy canary traffic fills the window first.
        let started = Instant::now();
        if wait_until(Duration::from_secs(30), || {
            generator.since(started).iter().filter(|h| h.canary).count() >= 60
        })
        .await
        .is_err()
        {
            let now = release
                .get_deployment(authed(
                    &token,
                    release_pb::GetDeploymentRequest { id: deployment.id.clone() },
                )?)
                .await?
                .into_inner();
            anyhow::bail!(
                "run {run}: the canary got no traffic (deployment {} {} {} at {}%: {})",
                now.id,
                now.state,
                now.phase,
                now.weight,
                now.failure_reason
            );
        }
        let broken = Instant::now();
        v2.set(Knobs { error_rate: 0.5, ..Knobs::default() });
        wait_state(&mut release, &token, &deployment.id, "rolled_back").await?;
        // Quiet for a second: every request now reaches 1.0.0.
        wait_until(Duration::from_secs(30), || {
            let recent = generator.since(Instant::now() - Duration::from_secs(1));
            recent.len() > 20 && recent.iter().all(|h| !h.canary)
        })
        .await
        .map_err(|_| anyhow::anyhow!("run {run}: traffic did not return to 1.0.0"))?;
        let hits = generator.since(started);
        let cross = crossing(&hits, broken).ok_or_else(|| anyhow::anyhow!("run {run}: no crossing seen"))?;
        let restored = hits.iter().filter(|h| h.canary).map(|h| h.done).max().unwrap_or(cross);
        let decided = decision_time(&mut rollback, &token, &deployment.id)
            .await?
            .map(|wall| generator.instant_of(wall));
        let seconds = |later: Instant, earlier: Instant| {
            later
                .checked_duration_since(earlier)
                .map_or_else(|| -(earlier - later).as_secs_f64(), |d| d.as_secs_f64())
        };
        let reaction = seconds(restored, cross);
        let detection = decided.map(|d| seconds(d, cross));
        eprintln!(
            "run {:>2}: reaction {:.3} s (crossing → decision {}, decision → last canary answer {})",
            run + 1,
            reaction,
            detection.map_or("?".into(), |d| format!("{d:.3} s")),
            decided.map_or("?".into(), |d| format!("{:.3} s", seconds(restored, d)))
        );
        results.push((reaction, detection, decided.map(|d| seconds(restored, d))));
    }
    let reactions: Vec<f64> = results.iter().map(|r| r.0).collect();
    let detections: Vec<f64> = results.iter().filter_map(|r| r.1).collect();
    let restores: Vec<f64> = results.iter().filter_map(|r| r.2).collect();
    let summary = |values: &[f64]| {
        serde_json::json!({
            "p50_s": quantile(values, 0.5), "p95_s": quantile(values, 0.95), "max_s": quantile(values, 1.0),
            "mean_s": values.iter().sum::<f64>() / values.len().max(1) as f64,
        })
    };
    let report = serde_json::json!({
        "benchmark": "rollback-reaction",
        "date": chrono::Utc::now().to_rfc3339(),
        "backend": if app.config.is_distributed_db() { "postgres+jetstream" } else { "sqlite+in-process" },
        "runs": runs,
        "rule": {"metric": "error_rate", "threshold_percent": THRESHOLD_PERCENT, "window_s": WINDOW.as_secs(), "min_samples": MIN_SAMPLES},
        "settings": {"router_stats_interval_ms": settings.0, "rollback_evaluation_interval_ms": settings.1, "canary_weight": 20, "canary_error_rate": 0.5},
        "reaction": summary(&reactions),
        "crossing_to_decision": summary(&detections),
        "decision_to_last_canary_answer": summary(&restores),
        "all_runs_s": reactions,
        "target": {"p95_s": 1.0},
    });
    write_report(out, &report)?;
    drop(generator);
    shutdown.cancel();
    let mut app = app;
    app.stop().await;
    Ok(())
}

async fn wait_until(within: Duration, mut done: impl FnMut() -> bool) -> Result<(), ()> {
    let deadline = Instant::now() + within;
    while Instant::now() < deadline {
        if done() {
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    Err(())
}

async fn wait_state(
    release: &mut ReleaseServiceClient<Channel>,
    token: &str,
    id: &str,
    state: &str,
) -> anyhow::Result<()> {
    let deadline = Instant::now() + Duration::from_secs(60);
    while Instant::now() < deadline {
        let deployment = release
            .get_deployment(authed(token, release_pb::GetDeploymentRequest { id: id.into() })?)
            .await?
            .into_inner();
        if deployment.state == state {
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    anyhow::bail!("deployment {id} did not become {state}")
}

/// When the rollback service decided, from the incident's timeline.
async fn decision_time(
    rollback: &mut RollbackServiceClient<Channel>,
    token: &str,
    deployment_id: &str,
) -> anyhow::Result<Option<SystemTime>> {
    for _ in 0..50 {
        let incidents = rollback
            .list_incidents(authed(
                token,
                rollback_pb::ListIncidentsRequest { app: APP.into(), ..Default::default() },
            )?)
            .await?
            .into_inner()
            .incidents;
        if let Some(incident) = incidents.into_iter().find(|i| i.deployment_id == deployment_id) {
            return Ok(incident
                .timeline
                .iter()
                .find(|t| t.what.starts_with("decision"))
                .and_then(|t| t.at)
                .map(|t| SystemTime::UNIX_EPOCH + Duration::new(t.seconds as u64, t.nanos as u32)));
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    Ok(None)
}
