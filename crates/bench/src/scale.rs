//! 1,000 concurrent canaries on one rollback replica. The replica runs as its own process (so
//! its CPU and memory are its own); this process plays the release service (deployment events
//! on JetStream) and the routers (one traffic sample per version per canary per second on the
//! telemetry channel), then reads the replica's CPU time and RSS from /proc and its decision lag
//! and evaluation-pass time from its /metrics.

use std::{
    path::Path,
    time::{Duration, Instant},
};

use rp_events::Event;
use rp_proto::events::v1 as ev;

use crate::write_report;

/// CPU seconds (user + system) and resident memory (bytes) of `pid`.
fn process_usage(pid: u32) -> anyhow::Result<(f64, u64)> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    // Fields after the command name (which may hold spaces) start after the last ')'.
    let after = stat.rsplit_once(')').map(|(_, rest)| rest).unwrap_or_default();
    let fields: Vec<&str> = after.split_whitespace().collect();
    let ticks: u64 = fields.get(11).and_then(|v| v.parse().ok()).unwrap_or(0)
        + fields.get(12).and_then(|v| v.parse::<u64>().ok()).unwrap_or(0);
    // USER_HZ is 100 on Linux.
    let cpu = ticks as f64 / 100.0;
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    let rss_kb = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next()?.parse::<u64>().ok())
        .unwrap_or(0);
    Ok((cpu, rss_kb * 1024))
}

/// Quantile `q` of a Prometheus histogram `name` (summed over its label sets), interpolated
/// within the bucket; and the observation count.
fn histogram_quantile(metrics: &str, name: &str, q: f64) -> (Option<f64>, f64) {
    let mut buckets: Vec<(f64, f64)> = Vec::new();
    for line in metrics.lines().filter(|l| l.starts_with(&format!("{name}_bucket"))) {
        let Some(le) = line.split("le=\"").nth(1).and_then(|r| r.split('"').next()) else { continue };
        let bound = if le == "+Inf" { f64::INFINITY } else { le.parse().unwrap_or(f64::INFINITY) };
        let count: f64 = line.rsplit(' ').next().and_then(|v| v.parse().ok()).unwrap_or(0.0);
        match buckets.iter_mut().find(|(b, _)| *b == bound) {
            Some(entry) => entry.1 += count,
            None => buckets.push((bound, count)),
        }
    }
    buckets.sort_by(|a, b| a.0.total_cmp(&b.0));
    let total = buckets.last().map(|b| b.1).unwrap_or(0.0);
    if total == 0.0 {
        return (None, 0.0);
    }
    let rank = q * total;
    let mut previous = (0.0, 0.0);
    for (bound, count) in &buckets {
        if *count >= rank {
            if bound.is_infinite() {
                return (Some(previous.0), total);
            }
            let within = if count > &previous.1 { (rank - previous.1) / (count - previous.1) } else { 1.0 };
            return (Some(previous.0 + (bound - previous.0) * within), total);
        }
        previous = (*bound, *count);
    }
    (None, total)
}

fn gauge(metrics: &str, name: &str) -> Option<f64> {
    metrics
        .lines()
        .find(|l| l.starts_with(name) && !l.starts_with('#'))
        .and_then(|l| l.rsplit(' ').next()?.parse().ok())
}

fn sample(app: &str, version: &str, track: &str, at_ms: i64) -> ev::TrafficSample {
    // 50 requests a second, none failing, latencies spread over 10-100 ms.
    let mut buckets = vec![0u64; 19];
    buckets[4] = 20;
    buckets[5] = 20;
    buckets[6] = 10;
    ev::TrafficSample {
        app: app.into(),
        environment: "prod".into(),
        version: version.into(),
        track: track.into(),
        deployment_id: String::new(),
        router: "bench".into(),
        at_unix_ms: at_ms,
        interval_ms: 1000,
        requests: 50,
        errors: 0,
        latency_buckets: buckets,
        health_failures: 0,
        healthy_upstreams: 2,
        upstreams: 2,
    }
}

pub async fn run(canaries: usize, seconds: u64, pid: u32, admin: &str, out: &Path) -> anyhow::Result<()> {
    let config = rp_config::Config::from_process_env(None)?;
    let bus = rp_events::connect(&config.nats).await?;
    let http = reqwest::Client::new();
    let metrics_url = format!("{}/metrics", admin.trim_end_matches('/'));
    let (_, idle_rss) = process_usage(pid)?;

    // The deployments start.
    let apps: Vec<String> = (0..canaries).map(|i| format!("app-{i:04}")).collect();
    for (i, app) in apps.iter().enumerate() {
        let id = uuid::Uuid::now_v7();
        let change = ev::DeploymentChanged {
            deployment_id: id.to_string(),
            app: app.clone(),
            environment: "prod".into(),
            production: true,
            version: "2.0.0".into(),
            previous_version: "1.0.0".into(),
            strategy: "canary".into(),
            state: "in_progress".into(),
            phase: "analyzing".into(),
            step: 0,
            steps: 4,
            weight: 25,
            revision: 2 + i as i64 % 2,
            ..Default::default()
        };
        bus.publish(&Event::new("release", "rp.deployment.started", format!("deployments/{id}"), &change))
            .await?;
    }
    let started = Instant::now();
    let watched = loop {
        let text = http.get(&metrics_url).send().await?.text().await?;
        let watched = gauge(&text, "rp_rollback_watched_analyses").unwrap_or(0.0);
        if watched as usize >= canaries {
            break watched;
        }
        anyhow::ensure!(
            started.elapsed() < Duration::from_secs(120),
            "the replica watches only {watched} canaries"
        );
        // Keep the routers' traffic coming while the replica catches up.
        tokio::time::sleep(Duration::from_millis(500)).await;
    };
    let claim_seconds = started.elapsed().as_secs_f64();
    eprintln!(
        "the replica watches {watched} canaries after {claim_seconds:.1} s; feeding traffic for {seconds} s"
    );

    // One sample per version per canary per second, spread over the second like real routers.
    let before = http.get(&metrics_url).send().await?.text().await?;
    let (cpu_start, _) = process_usage(pid)?;
    let measuring = Instant::now();
    let mut peak_rss = 0;
    let mut ticker = tokio::time::interval(Duration::from_secs(1));
    for _ in 0..seconds {
        ticker.tick().await;
        let slice = Duration::from_millis(900) / apps.len().max(1) as u32;
        for app in &apps {
            let at = chrono::Utc::now().timestamp_millis();
            for (version, track) in [("2.0.0", "canary"), ("1.0.0", "stable")] {
                let payload = serde_json::to_vec(&sample(app, version, track, at))?;
                bus.publish_ephemeral(&format!("traffic.{app}.prod"), payload.into()).await?;
            }
            if !slice.is_zero() {
                tokio::time::sleep(slice).await;
            }
        }
        peak_rss = peak_rss.max(process_usage(pid)?.1);
    }
    let elapsed = measuring.elapsed().as_secs_f64();
    let (cpu_end, rss) = process_usage(pid)?;
    let after = http.get(&metrics_url).send().await?.text().await?;
    let (lag_p50, lag_count) = histogram_quantile(&after, "rp_rollback_decision_lag_seconds", 0.5);
    let (lag_p99, _) = histogram_quantile(&after, "rp_rollback_decision_lag_seconds", 0.99);
    let (pass_p50, passes) = histogram_quantile(&after, "rp_rollback_evaluation_pass_seconds", 0.5);
    let (pass_p99, _) = histogram_quantile(&after, "rp_rollback_evaluation_pass_seconds", 0.99);
    let evaluations = |text: &str| {
        text.lines()
            .filter(|l| l.starts_with("rp_rollback_evaluations_total"))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum::<f64>()
    };
    let samples_in = gauge(&after, "rp_rollback_traffic_samples_total").unwrap_or(0.0)
        - gauge(&before, "rp_rollback_traffic_samples_total").unwrap_or(0.0);
    let report = serde_json::json!({
        "benchmark": "rollback-scale",
        "date": chrono::Utc::now().to_rfc3339(),
        "canaries": canaries,
        "seconds": seconds,
        "samples_sent_per_second": canaries * 2,
        "samples_received": samples_in,
        "rule_evaluations_per_second": (evaluations(&after) - evaluations(&before)) / elapsed,
        "watching_all_after_s": claim_seconds,
        "cpu_percent_of_one_core": (cpu_end - cpu_start) / elapsed * 100.0,
        "rss_mib": {"idle": idle_rss as f64 / 1048576.0, "end": rss as f64 / 1048576.0, "peak": peak_rss as f64 / 1048576.0},
        "decision_lag_s": {"p50": lag_p50, "p99": lag_p99, "observations": lag_count},
        "evaluation_pass_s": {"p50": pass_p50, "p99": pass_p99, "passes": passes},
    });
    write_report(out, &report)?;
    Ok(())
}
