//! Rule evaluation over sliding windows of traffic samples (router) or point values (Prometheus,
//! probes, alerts). Pure: the caller supplies the data and the clock.

use std::collections::VecDeque;

use chrono::{DateTime, Duration, Utc};
use serde::{Deserialize, Serialize};

use super::policy::{Comparison, Metric, NoData, Rule};

/// Latency histogram bucket upper bounds, milliseconds; the router uses the same.
pub const LATENCY_BUCKETS_MS: [f64; 18] = [
    1.0, 2.0, 5.0, 10.0, 20.0, 50.0, 100.0, 200.0, 300.0, 400.0, 450.0, 500.0, 750.0, 1000.0, 1500.0, 2000.0,
    5000.0, 10000.0,
];

/// Traffic of one version during one interval.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct Sample {
    pub at: DateTime<Utc>,
    pub requests: u64,
    pub errors: u64,
    /// Counts per `LATENCY_BUCKETS_MS` bucket, plus one for slower requests.
    pub latency_buckets: Vec<u64>,
    /// Consecutive failed active health checks of the worst upstream, at the end of the interval.
    #[serde(default)]
    pub health_failures: u32,
    /// The earliest `at` merged into this entry (set by [`Series::push`]). A window includes an
    /// entry only when all of it is inside, so nothing older than the window leaks in.
    #[serde(skip)]
    pub first_at: DateTime<Utc>,
}

/// The samples of one version, newest last, trimmed to the longest window in use. Samples that
/// fall in the same second (several routers, or sub-second router intervals) share one entry, so
/// memory grows with the window in seconds, not with the number of routers.
#[derive(Debug, Clone, Default)]
pub struct Series {
    samples: VecDeque<Sample>,
}

/// A window's aggregate.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Aggregate {
    pub requests: u64,
    pub errors: u64,
    pub buckets: Vec<u64>,
    pub samples: usize,
    /// The newest sample's consecutive health-check failures.
    pub health_failures: u32,
}

impl Aggregate {
    pub fn error_rate(&self) -> Option<f64> {
        (self.requests > 0).then(|| self.errors as f64 * 100.0 / self.requests as f64)
    }

    /// The `q` quantile (0-1) in milliseconds, interpolated within its bucket.
    pub fn quantile(&self, q: f64) -> Option<f64> {
        let total: u64 = self.buckets.iter().sum();
        if total == 0 {
            return None;
        }
        let rank = q * total as f64;
        let mut seen = 0u64;
        for (i, count) in self.buckets.iter().enumerate() {
            if *count == 0 {
                continue;
            }
            if (seen + count) as f64 >= rank {
                let lower = if i == 0 { 0.0 } else { LATENCY_BUCKETS_MS[i - 1] };
                let upper = LATENCY_BUCKETS_MS.get(i).copied().unwrap_or(lower * 2.0);
                let within = (rank - seen as f64) / *count as f64;
                return Some(lower + (upper - lower) * within.clamp(0.0, 1.0));
            }
            seen += count;
        }
        LATENCY_BUCKETS_MS.last().copied()
    }
}

impl Series {
    pub fn push(&mut self, sample: Sample, keep: Duration) {
        let cutoff = sample.at - keep;
        match self.samples.back_mut() {
            Some(last) if last.at.timestamp() == sample.at.timestamp() => {
                last.requests += sample.requests;
                last.errors += sample.errors;
                if last.latency_buckets.len() < sample.latency_buckets.len() {
                    last.latency_buckets.resize(sample.latency_buckets.len(), 0);
                }
                for (total, count) in last.latency_buckets.iter_mut().zip(&sample.latency_buckets) {
                    *total += count;
                }
                last.health_failures = last.health_failures.max(sample.health_failures);
                last.at = last.at.max(sample.at);
            }
            _ => self.samples.push_back(Sample { first_at: sample.at, ..sample }),
        }
        while self.samples.front().is_some_and(|s| s.at < cutoff) {
            self.samples.pop_front();
        }
    }

    /// When the newest run of samples breaching `rule` on their own began, looking back no
    /// further than `since`: the incident's "first bad sample".
    pub fn first_breach(&self, rule: &Rule, since: DateTime<Utc>) -> Option<DateTime<Utc>> {
        let mut first = None;
        for sample in self.samples.iter().filter(|s| s.first_at > since) {
            let single = Aggregate {
                requests: sample.requests,
                errors: sample.errors,
                buckets: sample.latency_buckets.clone(),
                samples: 1,
                health_failures: sample.health_failures,
            };
            let (value, _) = router_value(rule.metric, &single, Duration::seconds(1));
            match value {
                Some(value) if rule.operator.holds(value, rule.threshold) => {
                    first.get_or_insert(sample.at);
                }
                Some(_) => first = None,
                None => {}
            }
        }
        first
    }

    /// Samples within `window` before `now`.
    pub fn aggregate(&self, now: DateTime<Utc>, window: Duration) -> Aggregate {
        let since = now - window;
        let mut aggregate =
            Aggregate { buckets: vec![0; LATENCY_BUCKETS_MS.len() + 1], ..Default::default() };
        for sample in self.samples.iter().filter(|s| s.first_at > since && s.at <= now) {
            aggregate.requests += sample.requests;
            aggregate.errors += sample.errors;
            aggregate.samples += 1;
            aggregate.health_failures = sample.health_failures;
            for (total, count) in aggregate.buckets.iter_mut().zip(&sample.latency_buckets) {
                *total += count;
            }
        }
        aggregate
    }

    pub fn newest(&self) -> Option<DateTime<Utc>> {
        self.samples.back().map(|s| s.at)
    }

    pub fn is_empty(&self) -> bool {
        self.samples.is_empty()
    }
}

/// The value of a router metric over a window, and how many requests it rests on.
pub fn router_value(metric: Metric, aggregate: &Aggregate, window: Duration) -> (Option<f64>, u64) {
    let value = match metric {
        Metric::ErrorRate => aggregate.error_rate(),
        Metric::LatencyP95 => aggregate.quantile(0.95),
        Metric::LatencyP99 => aggregate.quantile(0.99),
        Metric::RequestRate => {
            Some(aggregate.requests as f64 / window.num_milliseconds().max(1) as f64 * 1000.0)
        }
        Metric::HealthCheckFailures if aggregate.samples > 0 => Some(aggregate.health_failures as f64),
        _ => None,
    };
    let samples = match metric {
        // Health checks run without traffic: the samples are the router's reports.
        Metric::HealthCheckFailures => aggregate.samples as u64,
        _ => aggregate.requests,
    };
    (value, samples)
}

/// A rule's state between evaluations: since when it has been breached.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct RuleState {
    pub breached_since: Option<DateTime<Utc>>,
    pub no_data_since: Option<DateTime<Utc>>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Verdict {
    /// Within the threshold.
    Healthy,
    /// Over the threshold, not yet for long enough.
    Breaching,
    /// Over the threshold for the whole `for` duration: act.
    Failed,
    /// Not enough data; the rule's no-data behaviour decided.
    NoDataPause,
    NoDataFail,
    NoDataPass,
    NoDataExtend,
}

impl Verdict {
    /// Whether the rule's action should run.
    pub fn acts(self) -> bool {
        matches!(self, Verdict::Failed | Verdict::NoDataFail)
    }
}

/// Inputs of one evaluation.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Observation {
    pub value: Option<f64>,
    /// The stable version's value (relative rules).
    pub baseline: Option<f64>,
    /// Requests or data points behind `value`.
    pub samples: u64,
}

/// The result, as stored in a decision record.
#[derive(Debug, Clone, PartialEq)]
pub struct Outcome {
    pub verdict: Verdict,
    /// The number compared: the value, or its deviation from the baseline in percent.
    pub compared: Option<f64>,
}

/// Evaluates `rule` at `now` and updates its state.
pub fn evaluate(rule: &Rule, observation: Observation, state: &mut RuleState, now: DateTime<Utc>) -> Outcome {
    let enough = observation.samples >= rule.min_samples.max(1)
        || (rule.min_samples == 0 && observation.value.is_some());
    let compared = match (rule.comparison, observation.value, observation.baseline) {
        (_, None, _) => None,
        (Comparison::Absolute, Some(value), _) => Some(value),
        (Comparison::RelativeToStable, Some(_), None) => None,
        (Comparison::RelativeToStable, Some(value), Some(baseline)) => Some(if baseline == 0.0 {
            if value == 0.0 { 0.0 } else { f64::INFINITY }
        } else {
            (value - baseline).abs() / baseline.abs() * 100.0
        }),
    };
    let Some(compared_value) = compared.filter(|_| enough) else {
        state.breached_since = None;
        state.no_data_since.get_or_insert(now);
        let verdict = match rule.no_data {
            NoData::Pause => Verdict::NoDataPause,
            NoData::Fail => Verdict::NoDataFail,
            NoData::Pass => Verdict::NoDataPass,
            NoData::Extend => Verdict::NoDataExtend,
        };
        return Outcome { verdict, compared };
    };
    state.no_data_since = None;
    if !rule.operator.holds(compared_value, rule.threshold) {
        state.breached_since = None;
        return Outcome { verdict: Verdict::Healthy, compared };
    }
    let since = *state.breached_since.get_or_insert(now);
    let verdict = if now - since >= Duration::seconds(rule.for_seconds as i64) {
        Verdict::Failed
    } else {
        Verdict::Breaching
    };
    Outcome { verdict, compared }
}

/// Substitutes `{app}`, `{environment}` and `{version}` in a query or URL template.
pub fn render(template: &str, app: &str, environment: &str, version: &str) -> String {
    template.replace("{app}", app).replace("{environment}", environment).replace("{version}", version)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::policy::{Action, Operator, Severity, Source};

    fn at(seconds: i64) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339("2026-11-27T10:00:00Z").unwrap().with_timezone(&Utc)
            + Duration::seconds(seconds)
    }

    fn rule(
        comparison: Comparison,
        threshold: f64,
        for_seconds: u64,
        min_samples: u64,
        no_data: NoData,
    ) -> Rule {
        Rule {
            name: "r".into(),
            metric: Metric::ErrorRate,
            source: Source::Router,
            operator: Operator::Gt,
            threshold,
            comparison,
            window_seconds: 10,
            for_seconds,
            min_samples,
            no_data,
            severity: Severity::Critical,
            action: Action::Rollback,
            weights: None,
        }
    }

    fn observe(value: Option<f64>, baseline: Option<f64>, samples: u64) -> Observation {
        Observation { value, baseline, samples }
    }

    #[test]
    fn evaluation_table() {
        use Comparison::*;
        use Verdict::*;
        // (rule, observation, expected verdict on a fresh state)
        let cases = [
            (rule(Absolute, 2.0, 0, 10, NoData::Extend), observe(Some(5.0), None, 100), Failed),
            (rule(Absolute, 2.0, 0, 10, NoData::Extend), observe(Some(1.0), None, 100), Healthy),
            (rule(Absolute, 2.0, 0, 10, NoData::Extend), observe(Some(2.0), None, 100), Healthy),
            (rule(Absolute, 2.0, 30, 10, NoData::Extend), observe(Some(5.0), None, 100), Breaching),
            // Minimum samples: 5 requests are not enough for a verdict.
            (rule(Absolute, 2.0, 0, 10, NoData::Extend), observe(Some(50.0), None, 5), NoDataExtend),
            (rule(Absolute, 2.0, 0, 10, NoData::Pause), observe(None, None, 0), NoDataPause),
            (rule(Absolute, 2.0, 0, 10, NoData::Fail), observe(None, None, 0), NoDataFail),
            (rule(Absolute, 2.0, 0, 10, NoData::Pass), observe(None, None, 0), NoDataPass),
            (rule(Absolute, 2.0, 0, 10, NoData::Extend), observe(None, None, 0), NoDataExtend),
            // Relative: percent off the stable value, either direction.
            (
                rule(RelativeToStable, 50.0, 0, 1, NoData::Extend),
                observe(Some(40.0), Some(100.0), 10),
                Failed,
            ),
            (
                rule(RelativeToStable, 50.0, 0, 1, NoData::Extend),
                observe(Some(160.0), Some(100.0), 10),
                Failed,
            ),
            (
                rule(RelativeToStable, 50.0, 0, 1, NoData::Extend),
                observe(Some(120.0), Some(100.0), 10),
                Healthy,
            ),
            (rule(RelativeToStable, 50.0, 0, 1, NoData::Pause), observe(Some(120.0), None, 10), NoDataPause),
            (rule(RelativeToStable, 50.0, 0, 1, NoData::Extend), observe(Some(1.0), Some(0.0), 10), Failed),
            (rule(RelativeToStable, 50.0, 0, 1, NoData::Extend), observe(Some(0.0), Some(0.0), 10), Healthy),
        ];
        for (i, (rule, observation, expected)) in cases.into_iter().enumerate() {
            let mut state = RuleState::default();
            assert_eq!(evaluate(&rule, observation, &mut state, at(0)).verdict, expected, "case {i}");
        }
        assert!(
            Verdict::Failed.acts()
                && Verdict::NoDataFail.acts()
                && !Verdict::Breaching.acts()
                && !Verdict::NoDataPause.acts()
        );
    }

    #[test]
    fn a_breach_must_last_for_the_for_duration_and_recovery_resets_it() {
        let rule = rule(Comparison::Absolute, 2.0, 30, 10, NoData::Extend);
        let mut state = RuleState::default();
        let bad = observe(Some(5.0), None, 100);
        assert_eq!(evaluate(&rule, bad, &mut state, at(0)).verdict, Verdict::Breaching);
        assert_eq!(evaluate(&rule, bad, &mut state, at(29)).verdict, Verdict::Breaching);
        assert_eq!(evaluate(&rule, bad, &mut state, at(30)).verdict, Verdict::Failed);
        assert_eq!(
            evaluate(&rule, observe(Some(1.0), None, 100), &mut state, at(31)).verdict,
            Verdict::Healthy
        );
        assert_eq!(
            evaluate(&rule, bad, &mut state, at(32)).verdict,
            Verdict::Breaching,
            "the clock restarts"
        );
    }

    #[test]
    fn windows_aggregate_only_recent_samples() {
        let mut series = Series::default();
        let bucket = |ms_index: usize, n: u64| {
            let mut b = vec![0; LATENCY_BUCKETS_MS.len() + 1];
            b[ms_index] = n;
            b
        };
        for second in 0..20 {
            let errors = if second >= 15 { 10 } else { 0 };
            series.push(
                Sample {
                    at: at(second),
                    requests: 100,
                    errors,
                    latency_buckets: bucket(6, 100),
                    ..Default::default()
                },
                Duration::seconds(60),
            );
        }
        let recent = series.aggregate(at(19), Duration::seconds(5));
        assert_eq!((recent.requests, recent.errors, recent.samples), (500, 50, 5));
        assert_eq!(recent.error_rate(), Some(10.0));
        let long = series.aggregate(at(19), Duration::seconds(20));
        assert_eq!(long.error_rate(), Some(2.5));
        // All latencies in the 50-100 ms bucket: p95 interpolates inside it.
        let p95 = recent.quantile(0.95).unwrap();
        assert!((50.0..=100.0).contains(&p95), "{p95}");
        assert_eq!(router_value(Metric::RequestRate, &recent, Duration::seconds(5)).0, Some(100.0));
        // Trimming keeps only what the longest window needs.
        series.push(Sample { at: at(200), requests: 1, ..Default::default() }, Duration::seconds(60));
        assert_eq!(series.aggregate(at(200), Duration::seconds(300)).samples, 1);
    }

    #[test]
    fn samples_of_one_second_merge_and_the_first_breach_is_found() {
        let mut series = Series::default();
        let half = |ms: i64, requests, errors| Sample {
            at: at(0) + Duration::milliseconds(ms),
            requests,
            errors,
            latency_buckets: vec![requests],
            ..Default::default()
        };
        // Two routers reporting within the same second: one entry.
        series.push(half(100, 10, 0), Duration::seconds(60));
        series.push(half(600, 10, 0), Duration::seconds(60));
        series.push(half(1100, 10, 5), Duration::seconds(60));
        series.push(half(2100, 10, 0), Duration::seconds(60));
        series.push(half(3100, 10, 8), Duration::seconds(60));
        series.push(half(4100, 10, 9), Duration::seconds(60));
        let all = series.aggregate(at(10), Duration::seconds(60));
        assert_eq!((all.samples, all.requests, all.buckets[0]), (5, 60, 60));
        let rule = rule(Comparison::Absolute, 20.0, 0, 1, NoData::Extend);
        // The breach at 1.1 s recovered at 2.1 s; the current run began at 3.1 s.
        assert_eq!(series.first_breach(&rule, at(0)), Some(at(0) + Duration::milliseconds(3100)));
        assert_eq!(series.first_breach(&rule, at(5)), None);
        // An entry merged from 0.1 s and 0.6 s is not inside a window starting at 0.3 s.
        assert_eq!(series.aggregate(at(10), Duration::milliseconds(9700)).requests, 40);
    }

    #[test]
    fn health_check_failures_are_the_newest_report() {
        let mut series = Series::default();
        for (second, failures) in [(0, 0), (1, 1), (2, 2), (3, 3)] {
            series.push(
                Sample { at: at(second), health_failures: failures, ..Default::default() },
                Duration::seconds(60),
            );
        }
        let aggregate = series.aggregate(at(3), Duration::seconds(10));
        assert_eq!(
            router_value(Metric::HealthCheckFailures, &aggregate, Duration::seconds(10)),
            (Some(3.0), 4)
        );
        let nothing = Series::default().aggregate(at(3), Duration::seconds(10));
        assert_eq!(router_value(Metric::HealthCheckFailures, &nothing, Duration::seconds(10)), (None, 0));
    }

    #[test]
    fn templates_name_the_deployment() {
        assert_eq!(
            render("rate(x{app=\"{app}\",v=\"{version}\"}[1m]) {environment}", "shop", "prod", "1.2.0"),
            "rate(x{app=\"shop\",v=\"1.2.0\"}[1m]) prod"
        );
    }
}
