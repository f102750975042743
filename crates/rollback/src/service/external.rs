//! Prometheus queries and HTTP probes, read on a timer (they are too slow or too costly to read
//! on every traffic sample); the evaluator uses the newest reading.

use std::{sync::Arc, time::Duration};

use chrono::Utc;
use futures::StreamExt as _;
use rp_runtime::CancellationToken;
use serde_json::Value;

use super::{ExternalJob, ExternalReading, RollbackCore, lock};
use crate::domain::{
    evaluate::render,
    policy::{Comparison, Source},
};

/// At most this many reads in flight per replica.
const CONCURRENCY: usize = 32;

pub async fn run(core: Arc<RollbackCore>, shutdown: CancellationToken) {
    let interval = Duration::from_millis(core.config.rollback.poll_interval_ms.max(100));
    let mut ticker = tokio::time::interval(interval);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = ticker.tick() => {}
        }
        let jobs = lock(&core.external_jobs).clone();
        if jobs.is_empty() {
            lock(&core.external).clear();
            continue;
        }
        let readings: Vec<_> = futures::stream::iter(jobs)
            .map(|job| {
                let core = core.clone();
                async move {
                    let previous =
                        lock(&core.external).get(&(job.analysis_id, job.rule.name.clone())).cloned();
                    let reading = read(&core, &job, previous.as_ref()).await;
                    ((job.analysis_id, job.rule.name), reading)
                }
            })
            .buffer_unordered(CONCURRENCY)
            .collect()
            .await;
        {
            let mut external = lock(&core.external);
            let keep: std::collections::HashSet<_> = readings.iter().map(|(key, _)| key.clone()).collect();
            external.retain(|key, _| keep.contains(key));
            external.extend(readings);
        }
        core.wake.notify_one();
    }
}

async fn read(core: &RollbackCore, job: &ExternalJob, previous: Option<&ExternalReading>) -> ExternalReading {
    let now = Utc::now();
    match &job.rule.source {
        Source::Prometheus { url, query } => {
            let rendered = render(query, &job.app, &job.environment, &job.version);
            let (value, samples) = match prometheus(core, url, &rendered).await {
                Ok(found) => found,
                Err(err) => {
                    tracing::debug!(error = %err, query = rendered, "Prometheus query failed");
                    (None, 0)
                }
            };
            let baseline =
                if job.rule.comparison == Comparison::RelativeToStable && !job.stable_version.is_empty() {
                    let stable = render(query, &job.app, &job.environment, &job.stable_version);
                    prometheus(core, url, &stable).await.ok().and_then(|(value, _)| value)
                } else {
                    None
                };
            ExternalReading { value, baseline, samples, query: rendered, consecutive_failures: 0, at: now }
        }
        Source::HttpProbe { url, timeout_ms } => {
            let rendered = render(url, &job.app, &job.environment, &job.version);
            let ok = matches!(
                core.http.get(&rendered).timeout(Duration::from_millis(*timeout_ms)).send().await,
                Ok(response) if response.status().is_success()
            );
            let failures = if ok { 0 } else { previous.map_or(0, |p| p.consecutive_failures) + 1 };
            let probes = previous.map_or(0, |p| p.samples) + 1;
            ExternalReading {
                value: Some(failures as f64),
                baseline: None,
                samples: probes,
                query: format!("GET {rendered}"),
                consecutive_failures: failures,
                at: now,
            }
        }
        _ => ExternalReading {
            value: None,
            baseline: None,
            samples: 0,
            query: String::new(),
            consecutive_failures: 0,
            at: now,
        },
    }
}

/// Runs an instant query; returns the largest value of the result and the number of series.
async fn prometheus(core: &RollbackCore, base: &str, query: &str) -> anyhow::Result<(Option<f64>, u64)> {
    let url = reqwest::Url::parse_with_params(
        &format!("{}/api/v1/query", base.trim_end_matches('/')),
        [("query", query)],
    )?;
    let response = core.http.get(url).timeout(Duration::from_secs(5)).send().await?.error_for_status()?;
    let body: Value = response.json().await?;
    anyhow::ensure!(body["status"] == "success", "Prometheus answered {}", body["error"]);
    parse_result(&body["data"])
}

/// The value of an instant-query result: vector (largest sample), scalar, or nothing.
fn parse_result(data: &Value) -> anyhow::Result<(Option<f64>, u64)> {
    let number = |pair: &Value| pair.get(1).and_then(Value::as_str).and_then(|s| s.parse::<f64>().ok());
    match data["resultType"].as_str() {
        Some("vector") => {
            let series = data["result"].as_array().cloned().unwrap_or_default();
            let values: Vec<f64> =
                series.iter().filter_map(|s| number(&s["value"])).filter(|v| v.is_finite()).collect();
            Ok((values.iter().copied().reduce(f64::max), values.len() as u64))
        }
        Some("scalar") => {
            let value = number(&data["result"]).filter(|v| v.is_finite());
            Ok((value, u64::from(value.is_some())))
        }
        other => anyhow::bail!("unsupported result type {other:?}: use an instant vector or a scalar"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn instant_query_results_become_one_value() {
        let vector = serde_json::json!({"resultType": "vector", "result": [
            {"metric": {"pod": "a"}, "value": [1.0, "12.5"]},
            {"metric": {"pod": "b"}, "value": [1.0, "97.25"]},
            {"metric": {"pod": "c"}, "value": [1.0, "NaN"]}
        ]});
        assert_eq!(parse_result(&vector).unwrap(), (Some(97.25), 2));
        let empty = serde_json::json!({"resultType": "vector", "result": []});
        assert_eq!(parse_result(&empty).unwrap(), (None, 0));
        let scalar = serde_json::json!({"resultType": "scalar", "result": [1.0, "3"]});
        assert_eq!(parse_result(&scalar).unwrap(), (Some(3.0), 1));
        assert!(parse_result(&serde_json::json!({"resultType": "matrix", "result": []})).is_err());
    }
}
