//! Health policies: rules over metrics, and the seed's defaults.

use serde::{Deserialize, Serialize};

/// What a rule measures.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Metric {
    /// Share of 5xx responses, percent (router).
    ErrorRate,
    /// Latency percentiles, milliseconds (router).
    LatencyP95,
    LatencyP99,
    /// Requests per second (router).
    RequestRate,
    /// Consecutive failed health probes (HTTP probe).
    HealthCheckFailures,
    /// The value of a PromQL query (memory, DB pool, business metrics…).
    Query,
    /// 1 while a matching Alertmanager alert fires.
    Alert,
}

/// Where the values come from.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Source {
    /// The built-in router's per-version traffic statistics.
    Router,
    /// PromQL over Prometheus's HTTP API; `{app}`, `{environment}`, `{version}` are substituted.
    Prometheus { url: String, query: String },
    /// GET `url` (templated like PromQL); a non-2xx answer or a timeout is a failure.
    HttpProbe {
        url: String,
        #[serde(default = "default_probe_timeout")]
        timeout_ms: u64,
    },
    /// Alertmanager webhook notifications whose labels match the deployment.
    Alertmanager {
        #[serde(default)]
        alertname: String,
    },
}

/// Traffic samples are kept in memory this long at most.
pub const MAX_ROUTER_WINDOW_SECONDS: u64 = 3600;

fn default_probe_timeout() -> u64 {
    2000
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Operator {
    Gt,
    Gte,
    Lt,
    Lte,
}

impl Operator {
    pub fn holds(self, value: f64, threshold: f64) -> bool {
        match self {
            Operator::Gt => value > threshold,
            Operator::Gte => value >= threshold,
            Operator::Lt => value < threshold,
            Operator::Lte => value <= threshold,
        }
    }

    pub fn symbol(self) -> &'static str {
        match self {
            Operator::Gt => ">",
            Operator::Gte => "≥",
            Operator::Lt => "<",
            Operator::Lte => "≤",
        }
    }
}

/// Absolute threshold, or relative to the stable version's value of the same metric.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Comparison {
    Absolute,
    /// `threshold` is a percentage of deviation from the stable value (50 = 50% off).
    RelativeToStable,
}

/// What to do without enough data.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum NoData {
    /// Hold the deployment until data arrives.
    Pause,
    /// Treat as a breach.
    Fail,
    /// Treat as healthy.
    Pass,
    /// Keep waiting (no verdict) without pausing.
    Extend,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Severity {
    Low,
    Medium,
    High,
    Critical,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Action {
    Alert,
    Pause,
    Rollback,
}

/// One rule of a policy.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Rule {
    pub name: String,
    pub metric: Metric,
    pub source: Source,
    pub operator: Operator,
    pub threshold: f64,
    #[serde(default = "absolute")]
    pub comparison: Comparison,
    /// Aggregation window, seconds.
    pub window_seconds: u64,
    /// How long the breach must last before acting, seconds (0: at once).
    #[serde(default)]
    pub for_seconds: u64,
    /// Minimum samples in the window (requests for router metrics) for a verdict.
    #[serde(default)]
    pub min_samples: u64,
    #[serde(default = "default_no_data")]
    pub no_data: NoData,
    pub severity: Severity,
    pub action: Action,
    /// Only while the canary weight is within this range (per-step criteria).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub weights: Option<(i32, i32)>,
}

fn absolute() -> Comparison {
    Comparison::Absolute
}

fn default_no_data() -> NoData {
    NoData::Extend
}

impl Rule {
    pub fn validate(&self) -> Result<(), String> {
        if self.name.trim().is_empty() || self.name.len() > 100 {
            return Err("a rule needs a name of at most 100 characters".into());
        }
        if !self.threshold.is_finite() {
            return Err(format!("rule {}: threshold must be a finite number", self.name));
        }
        if self.window_seconds == 0 || self.window_seconds > 86_400 || self.for_seconds > 86_400 {
            return Err(format!(
                "rule {}: window_seconds must be 1-86400 and for_seconds 0-86400",
                self.name
            ));
        }
        if let Some((low, high)) = self.weights
            && (!(0..=100).contains(&low) || !(low..=100).contains(&high))
        {
            return Err(format!("rule {}: weights must be a range within 0-100", self.name));
        }
        let router_metric = matches!(
            self.metric,
            Metric::ErrorRate | Metric::LatencyP95 | Metric::LatencyP99 | Metric::RequestRate
        );
        if matches!(self.source, Source::Router) && self.window_seconds > MAX_ROUTER_WINDOW_SECONDS {
            return Err(format!(
                "rule {}: router windows are at most {MAX_ROUTER_WINDOW_SECONDS} seconds (use Prometheus for longer ones)",
                self.name
            ));
        }
        let fits = match (&self.source, self.metric) {
            (Source::Router, Metric::HealthCheckFailures) => true,
            (Source::Router, _) => router_metric,
            (Source::Prometheus { url, query }, Metric::Query) => {
                if !(url.starts_with("http://") || url.starts_with("https://")) || query.trim().is_empty() {
                    return Err(format!(
                        "rule {}: a Prometheus source needs an http(s) url and a query",
                        self.name
                    ));
                }
                true
            }
            (Source::HttpProbe { url, .. }, Metric::HealthCheckFailures) => {
                if !(url.starts_with("http://") || url.starts_with("https://")) {
                    return Err(format!("rule {}: a probe needs an http(s) url", self.name));
                }
                true
            }
            (Source::Alertmanager { .. }, Metric::Alert) => true,
            _ => false,
        };
        if !fits {
            return Err(format!("rule {}: metric {:?} cannot come from that source", self.name, self.metric));
        }
        if self.comparison == Comparison::RelativeToStable && !router_metric && self.metric != Metric::Query {
            return Err(format!(
                "rule {}: only router and Prometheus metrics compare against the stable version",
                self.name
            ));
        }
        Ok(())
    }

    /// Whether the rule applies at this canary weight.
    pub fn applies_at(&self, weight: i32) -> bool {
        self.weights.is_none_or(|(low, high)| (low..=high).contains(&weight))
    }
}

/// The seed's Rollback Trigger Matrix and Canary Release Configuration, as rules. The memory,
/// DB-pool and business-metric rules need a Prometheus URL, so they are added only when one is
/// configured.
pub fn default_rules(prometheus_url: Option<&str>, health_url: Option<&str>) -> Vec<Rule> {
    let router = |name: &str, metric, threshold, window, for_s, min, action, severity, weights| Rule {
        name: name.into(),
        metric,
        source: Source::Router,
        operator: Operator::Gt,
        threshold,
        comparison: Comparison::Absolute,
        window_seconds: window,
        for_seconds: for_s,
        min_samples: min,
        no_data: NoData::Extend,
        severity,
        action,
        weights,
    };
    let mut rules = vec![
        // Trigger matrix: error rate > 2% for 2 min; p95 > 1000 ms for 5 min.
        router(
            "error rate above 2%",
            Metric::ErrorRate,
            2.0,
            60,
            120,
            20,
            Action::Rollback,
            Severity::Critical,
            None,
        ),
        router(
            "p95 latency above 1000 ms",
            Metric::LatencyP95,
            1000.0,
            60,
            300,
            20,
            Action::Rollback,
            Severity::Critical,
            None,
        ),
        // Canary steps: success criteria hold the rollout, triggers roll back.
        router(
            "5% step: error rate above 0.5%",
            Metric::ErrorRate,
            0.5,
            60,
            60,
            20,
            Action::Pause,
            Severity::High,
            Some((1, 5)),
        ),
        router(
            "5% step: p95 above 400 ms",
            Metric::LatencyP95,
            400.0,
            60,
            60,
            20,
            Action::Pause,
            Severity::High,
            Some((1, 5)),
        ),
        router(
            "25% step: error rate above 1%",
            Metric::ErrorRate,
            1.0,
            60,
            60,
            20,
            Action::Pause,
            Severity::High,
            Some((6, 25)),
        ),
        router(
            "25% step: error rate above 1.5%",
            Metric::ErrorRate,
            1.5,
            60,
            60,
            20,
            Action::Rollback,
            Severity::Critical,
            Some((6, 25)),
        ),
        router(
            "25% step: p95 above 450 ms",
            Metric::LatencyP95,
            450.0,
            60,
            60,
            20,
            Action::Pause,
            Severity::High,
            Some((6, 25)),
        ),
        router(
            "75% step: error rate above 1.5%",
            Metric::ErrorRate,
            1.5,
            60,
            60,
            20,
            Action::Pause,
            Severity::High,
            Some((26, 75)),
        ),
        router(
            "75% step: p95 above 500 ms",
            Metric::LatencyP95,
            500.0,
            60,
            60,
            20,
            Action::Pause,
            Severity::High,
            Some((26, 75)),
        ),
    ];
    // Three consecutive failed health checks: immediate rollback. The router's active checks of
    // the version's upstreams, or a probe of `health_url` when one is given.
    {
        let source = match health_url {
            Some(url) => Source::HttpProbe { url: url.into(), timeout_ms: 2000 },
            None => Source::Router,
        };
        rules.push(Rule {
            name: "3 consecutive health-check failures".into(),
            metric: Metric::HealthCheckFailures,
            source,
            operator: Operator::Gte,
            threshold: 3.0,
            comparison: Comparison::Absolute,
            window_seconds: 10,
            for_seconds: 0,
            min_samples: 0,
            no_data: NoData::Extend,
            severity: Severity::Critical,
            action: Action::Rollback,
            weights: None,
        });
    }
    // An Alertmanager alert labelled with the deployment's app and environment (and version, when
    // it carries one) is evidence enough: roll back.
    rules.push(Rule {
        name: "Alertmanager alert firing".into(),
        metric: Metric::Alert,
        source: Source::Alertmanager { alertname: String::new() },
        operator: Operator::Gte,
        threshold: 1.0,
        comparison: Comparison::Absolute,
        window_seconds: 60,
        for_seconds: 0,
        min_samples: 0,
        no_data: NoData::Extend,
        severity: Severity::Critical,
        action: Action::Rollback,
        weights: None,
    });
    if let Some(url) = prometheus_url {
        let query = |name: &str, query: &str, threshold, for_s, comparison, action, severity| Rule {
            name: name.into(),
            metric: Metric::Query,
            source: Source::Prometheus { url: url.into(), query: query.into() },
            operator: Operator::Gt,
            threshold,
            comparison,
            window_seconds: 60,
            for_seconds: for_s,
            min_samples: 1,
            no_data: NoData::Extend,
            severity,
            action,
            weights: None,
        };
        rules.push(query(
            "memory above 95%",
            "max(container_memory_working_set_bytes{app=\"{app}\",version=\"{version}\"} / container_spec_memory_limit_bytes{app=\"{app}\",version=\"{version}\"}) * 100",
            95.0,
            120,
            Comparison::Absolute,
            Action::Rollback,
            Severity::Critical,
        ));
        rules.push(query(
            "DB pool above 95%",
            "max(db_pool_connections{app=\"{app}\",version=\"{version}\",state=\"in_use\"} / db_pool_connections{app=\"{app}\",version=\"{version}\",state=\"max\"}) * 100",
            95.0,
            0,
            Comparison::Absolute,
            Action::Rollback,
            Severity::Critical,
        ));
        rules.push(query(
            "business metric 50% off the stable version",
            "sum(rate(business_events_total{app=\"{app}\",version=\"{version}\"}[5m]))",
            50.0,
            300,
            Comparison::RelativeToStable,
            Action::Alert,
            Severity::High,
        ));
    }
    rules
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_defaults_encode_the_seed_and_validate() {
        let rules = default_rules(Some("http://prometheus:9090"), Some("http://app/health"));
        for rule in &rules {
            rule.validate().unwrap();
        }
        let error = rules.iter().find(|r| r.name == "error rate above 2%").unwrap();
        assert_eq!((error.threshold, error.for_seconds, error.action), (2.0, 120, Action::Rollback));
        let latency = rules.iter().find(|r| r.metric == Metric::LatencyP95 && r.weights.is_none()).unwrap();
        assert_eq!((latency.threshold, latency.for_seconds), (1000.0, 300));
        let health = rules.iter().find(|r| r.metric == Metric::HealthCheckFailures).unwrap();
        assert_eq!((health.threshold, health.for_seconds, health.action), (3.0, 0, Action::Rollback));
        let business = rules.iter().find(|r| r.comparison == Comparison::RelativeToStable).unwrap();
        assert_eq!((business.threshold, business.action), (50.0, Action::Alert));
        assert!(
            rules.iter().filter(|r| r.weights == Some((1, 5))).all(|r| r.applies_at(5) && !r.applies_at(25))
        );
        assert_eq!(default_rules(None, None).len(), 11);
        let router_health =
            default_rules(None, None).into_iter().find(|r| r.metric == Metric::HealthCheckFailures);
        assert_eq!(router_health.map(|r| r.source), Some(Source::Router));
    }

    #[test]
    fn rules_that_cannot_work_are_refused() {
        let mut rule = default_rules(None, None).remove(0);
        rule.source = Source::HttpProbe { url: "http://x".into(), timeout_ms: 100 };
        assert!(rule.validate().unwrap_err().contains("cannot come from"));
        let mut rule = default_rules(None, None).remove(0);
        rule.window_seconds = 0;
        assert!(rule.validate().is_err());
        let mut rule = default_rules(None, None).remove(0);
        rule.weights = Some((50, 10));
        assert!(rule.validate().is_err());
    }
}
