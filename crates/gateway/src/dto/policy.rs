//! Health policies: the rules canary analysis judges a deployment by. The rollback service takes
//! them as JSON text; here they are a typed `Rule` whose schema also says which metric comes from
//! which source, so that a rule the schema calls valid is one the service stores.

use std::{borrow::Cow, collections::HashSet};

use axum::http::StatusCode;
use chrono::{DateTime, Utc};
use rp_proto::rollback::v1 as pb;
use serde::{Deserialize, Serialize, de::Error as _};
use utoipa::{
    PartialSchema, ToSchema,
    openapi::{
        ArrayBuilder, ObjectBuilder, RefOr, Schema, Type,
        schema::{AdditionalProperties, AllOfBuilder, AnyOfBuilder, OneOfBuilder, SchemaType},
    },
};

use super::{check, integral, time, whole_number};
use crate::problem::Problem;

/// Most rules one policy holds (the rollback service's limit).
const MAX_RULES: usize = 50;
/// Longest window over router statistics, seconds: the router keeps samples this long.
const MAX_ROUTER_WINDOW: i64 = 3600;
const MAX_WINDOW: i64 = 86_400;
const MAX_MIN_SAMPLES: i64 = 1_000_000_000;
const MAX_PROBE_TIMEOUT_MS: i64 = 60_000;

/// What a rule measures: `error_rate` (percent of 5xx), `latency_p95` and `latency_p99`
/// (milliseconds) and `request_rate` (per second) from the router; `health_check_failures`
/// (consecutive failed checks) from the router or an HTTP probe; `query` (a PromQL value) from
/// Prometheus; `alert` (1 while a matching alert fires) from Alertmanager.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Metric {
    ErrorRate,
    LatencyP95,
    LatencyP99,
    RequestRate,
    HealthCheckFailures,
    Query,
    Alert,
}

impl Metric {
    const ROUTER_TRAFFIC: [Metric; 4] =
        [Metric::ErrorRate, Metric::LatencyP95, Metric::LatencyP99, Metric::RequestRate];

    pub fn as_str(self) -> &'static str {
        match self {
            Metric::ErrorRate => "error_rate",
            Metric::LatencyP95 => "latency_p95",
            Metric::LatencyP99 => "latency_p99",
            Metric::RequestRate => "request_rate",
            Metric::HealthCheckFailures => "health_check_failures",
            Metric::Query => "query",
            Metric::Alert => "alert",
        }
    }
}

/// Where a rule's values come from, by `kind` (the schema is written out below, so that each kind
/// refuses unknown fields as the deserializer does).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum RuleSource {
    /// A struct variant, so that unknown fields are refused as in the others.
    Router {},
    Prometheus {
        url: String,
        query: String,
    },
    HttpProbe {
        url: String,
        #[serde(default = "default_probe_timeout", deserialize_with = "whole_number")]
        timeout_ms: i64,
    },
    Alertmanager {
        #[serde(default)]
        alertname: String,
    },
}

impl PartialSchema for RuleSource {
    fn schema() -> RefOr<Schema> {
        let string = || ObjectBuilder::new().schema_type(Type::String);
        let kind = |kind: &str, description: &str| {
            ObjectBuilder::new()
                .title(Some(kind))
                .description(Some(description))
                .property("kind", string().enum_values(Some([kind])))
                .required("kind")
                .additional_properties(Some(AdditionalProperties::FreeForm(false)))
        };
        let url = |example: &str| {
            string().max_length(Some(2000)).pattern(Some("^https?://[!-~]+$")).examples([example])
        };
        OneOfBuilder::new()
            .description(Some("Where a rule's values come from, by `kind`."))
            .item(kind("router", "The built-in router's per-version traffic statistics and health checks."))
            .item(
                kind(
                    "prometheus",
                    "A PromQL query over Prometheus's HTTP API; `{app}`, `{environment}` and `{version}` are \
                     substituted (in `url` too).",
                )
                .property("url", url("http://prometheus:9090").description(Some("Prometheus's base URL.")))
                .property(
                    "query",
                    string()
                        .min_length(Some(1))
                        .max_length(Some(4000))
                        .pattern(Some(QUERY_PATTERN))
                        .description(Some("At least one visible character; line breaks and tabs allowed."))
                        .examples([
                            "sum(rate(http_requests_total{app=\"{app}\",version=\"{version}\",code=~\"5..\"}[1m]))",
                        ]),
                )
                .required("url")
                .required("query"),
            )
            .item(
                kind(
                    "http_probe",
                    "GET `url` (templated like a query); a non-2xx answer or a timeout is a failure.",
                )
                .property("url", url("http://{app}-canary:8080/health"))
                .property(
                    "timeout_ms",
                    ObjectBuilder::new()
                        .schema_type(Type::Integer)
                        .minimum(Some(1))
                        .maximum(Some(MAX_PROBE_TIMEOUT_MS))
                        .default(Some(2000.into()))
                        .description(Some("1-60000 milliseconds; default 2000.")),
                )
                .required("url"),
            )
            .item(
                kind(
                    "alertmanager",
                    "Alertmanager notifications (`POST /api/v1/alertmanager/webhook`) whose `app`, \
                     `environment` and (when present) `version` labels match the deployment.",
                )
                .property(
                    "alertname",
                    string()
                        .max_length(Some(200))
                        .pattern(Some(r"^[^\u0000-\u001f\u007f-\u009f]*$"))
                        .description(Some("Only alerts of this name; empty or absent: any.")),
                ),
            )
            .into()
    }
}

impl ToSchema for RuleSource {
    fn name() -> Cow<'static, str> {
        Cow::Borrowed("RuleSource")
    }
}

/// A PromQL query: at least one visible character; line breaks and tabs allowed.
const QUERY_PATTERN: &str = r"^[^\u0000-\u0008\u000b\u000c\u000e-\u001f\u007f-\u009f]*[^\s\u0000-\u001f\u007f-\u009f][^\u0000-\u0008\u000b\u000c\u000e-\u001f\u007f-\u009f]*$";

fn default_probe_timeout() -> i64 {
    2000
}

impl RuleSource {
    fn kind(&self) -> &'static str {
        match self {
            RuleSource::Router {} => "router",
            RuleSource::Prometheus { .. } => "prometheus",
            RuleSource::HttpProbe { .. } => "http_probe",
            RuleSource::Alertmanager { .. } => "alertmanager",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum RuleOperator {
    Gt,
    Gte,
    Lt,
    Lte,
}

/// `absolute` compares the value with `threshold`; `relative_to_stable` compares its deviation
/// from the stable version's value, in percent (router traffic metrics and queries only).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Comparison {
    #[default]
    Absolute,
    RelativeToStable,
}

/// Without enough samples: `pause` the deployment until data arrives, `fail` (a breach),
/// `pass` (healthy), or `extend` (no verdict yet, keep going).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum NoData {
    Pause,
    Fail,
    Pass,
    #[default]
    Extend,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Severity {
    Low,
    Medium,
    High,
    Critical,
}

/// What a breach that lasted `for_seconds` does: `rollback` (traffic back to the stable version,
/// an incident), `pause` the deployment, or only `alert`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum RuleAction {
    Alert,
    Pause,
    Rollback,
}

// One rule of a health policy, as the rollback service stores it. Its schema is `RuleSchema`:
// these properties, and which metrics each source gives.
/// The properties of a rule.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(as = RuleFields)]
pub struct Rule {
    /// Unique within the policy: 1-100 printable ASCII characters.
    #[schema(
        example = "error rate above 2%",
        min_length = 1,
        max_length = 100,
        pattern = "^[ -~]*[!-~][ -~]*$"
    )]
    pub name: String,
    pub metric: Metric,
    pub source: RuleSource,
    pub operator: RuleOperator,
    /// The value the metric (or, with `relative_to_stable`, its deviation in percent) is
    /// compared with.
    #[schema(example = 2.0)]
    pub threshold: f64,
    /// Default `absolute`.
    #[serde(default)]
    pub comparison: Comparison,
    /// Aggregation window, 1-86400 seconds (at most 3600 over router statistics).
    #[serde(deserialize_with = "whole_number")]
    #[schema(minimum = 1, maximum = 86400, example = 60)]
    pub window_seconds: i64,
    /// How long the breach must last before the action, 0-86400 seconds; default 0 (at once).
    #[serde(default, deserialize_with = "whole_number")]
    #[schema(minimum = 0, maximum = 86400, example = 120)]
    pub for_seconds: i64,
    /// Samples (requests, for router metrics) the window needs for a verdict; default 0.
    #[serde(default, deserialize_with = "whole_number")]
    #[schema(minimum = 0, maximum = 1_000_000_000, example = 20)]
    pub min_samples: i64,
    /// Default `extend`.
    #[serde(default)]
    pub no_data: NoData,
    pub severity: Severity,
    pub action: RuleAction,
    #[serde(default, deserialize_with = "weight_range", skip_serializing_if = "Option::is_none")]
    #[schema(schema_with = weights_schema)]
    pub weights: Option<[i64; 2]>,
}

fn weights_schema() -> ArrayBuilder {
    ArrayBuilder::new()
        .schema_type(SchemaType::from_iter([Type::Array, Type::Null]))
        .items(ObjectBuilder::new().schema_type(Type::Integer).minimum(Some(0)).maximum(Some(100)))
        .min_items(Some(2))
        .max_items(Some(2))
        .description(Some(
            "Only while the canary's traffic share is within this range (both ends included, 0-100, \
             in either order), for per-step criteria; absent or null: at every step.",
        ))
        .examples([serde_json::json!([1, 5])])
}

/// `[low, high]`, each a whole number.
fn weight_range<'de, D: serde::Deserializer<'de>>(deserializer: D) -> Result<Option<[i64; 2]>, D::Error> {
    let Some(numbers) = Option::<Vec<serde_json::Number>>::deserialize(deserializer)? else {
        return Ok(None);
    };
    match numbers.as_slice() {
        [low, high] => {
            Ok(Some([integral(low).map_err(D::Error::custom)?, integral(high).map_err(D::Error::custom)?]))
        }
        _ => Err(D::Error::custom(format!("weights must be two numbers, not {}", numbers.len()))),
    }
}

/// Which metrics each source gives, and what else that implies: one schema per combination.
struct Fit {
    title: &'static str,
    kind: &'static str,
    metrics: &'static [Metric],
    relative: bool,
    max_window: i64,
}

const FITS: [Fit; 5] = [
    Fit {
        title: "router traffic",
        kind: "router",
        metrics: &Metric::ROUTER_TRAFFIC,
        relative: true,
        max_window: MAX_ROUTER_WINDOW,
    },
    Fit {
        title: "router health checks",
        kind: "router",
        metrics: &[Metric::HealthCheckFailures],
        relative: false,
        max_window: MAX_ROUTER_WINDOW,
    },
    Fit {
        title: "Prometheus query",
        kind: "prometheus",
        metrics: &[Metric::Query],
        relative: true,
        max_window: MAX_WINDOW,
    },
    Fit {
        title: "HTTP probe",
        kind: "http_probe",
        metrics: &[Metric::HealthCheckFailures],
        relative: false,
        max_window: MAX_WINDOW,
    },
    Fit {
        title: "Alertmanager",
        kind: "alertmanager",
        metrics: &[Metric::Alert],
        relative: false,
        max_window: MAX_WINDOW,
    },
];

impl Fit {
    fn schema(&self) -> ObjectBuilder {
        let string =
            |values: Vec<&str>| ObjectBuilder::new().schema_type(Type::String).enum_values(Some(values));
        let mut schema = ObjectBuilder::new()
            .title(Some(self.title))
            .property(
                "source",
                ObjectBuilder::new().property("kind", string(vec![self.kind])).required("kind"),
            )
            .property("metric", string(self.metrics.iter().map(|m| m.as_str()).collect()));
        if !self.relative {
            schema = schema.property("comparison", string(vec!["absolute"]));
        }
        if self.max_window < MAX_WINDOW {
            schema = schema.property(
                "window_seconds",
                ObjectBuilder::new().schema_type(Type::Integer).maximum(Some(self.max_window)),
            );
        }
        schema
    }
}

/// The `Rule` schema: `RuleFields`, and one of the source and metric combinations.
pub struct RuleSchema;

impl PartialSchema for RuleSchema {
    fn schema() -> RefOr<Schema> {
        let fits = FITS.iter().fold(AnyOfBuilder::new(), |any, fit| any.item(fit.schema()));
        AllOfBuilder::new()
            .description(Some(
                "One rule of a health policy. Metrics by source: `router` gives `error_rate`, `latency_p95`, \
                 `latency_p99`, `request_rate` and `health_check_failures`; `prometheus` gives `query`; \
                 `http_probe` gives `health_check_failures`; `alertmanager` gives `alert`. Only router \
                 traffic metrics and queries compare `relative_to_stable`; windows over router statistics \
                 are at most 3600 seconds.",
            ))
            .item(<Rule as PartialSchema>::schema())
            .item(fits)
            .examples([serde_json::json!({
                "name": "error rate above 2%", "metric": "error_rate", "source": {"kind": "router"},
                "operator": "gt", "threshold": 2.0, "window_seconds": 60, "for_seconds": 120,
                "min_samples": 20, "severity": "critical", "action": "rollback"
            })])
            .into()
    }
}

impl ToSchema for RuleSchema {
    fn name() -> Cow<'static, str> {
        Cow::Borrowed("Rule")
    }

    fn schemas(schemas: &mut Vec<(String, RefOr<Schema>)>) {
        <Rule as ToSchema>::schemas(schemas);
    }
}

fn invalid(field: &str, what: impl std::fmt::Display) -> Problem {
    Problem::validation(format!("{field} {what}"))
}

/// `^https?://[!-~]+$` (the pattern of the sources' `url`; `{app}`, `{environment}` and `{version}`
/// are substituted, in the host too), at most 2000 characters.
fn url(field: &str, value: &str) -> Result<(), Problem> {
    let rest = value.strip_prefix("https://").or_else(|| value.strip_prefix("http://"));
    let ok = value.len() <= 2000
        && rest.is_some_and(|rest| !rest.is_empty() && rest.bytes().all(|b| (b'!'..=b'~').contains(&b)));
    if ok {
        Ok(())
    } else {
        Err(invalid(field, "must be an http(s) URL of at most 2000 printable ASCII characters"))
    }
}

impl Rule {
    /// The checks of the `Rule` schema, with the weight range put in order.
    fn check(&mut self, field: &str) -> Result<(), Problem> {
        let name = self.name.as_bytes();
        let printable = (1..=100).contains(&name.len())
            && name.iter().all(|b| (b' '..=b'~').contains(b))
            && name.iter().any(|b| *b != b' ');
        if !printable {
            return Err(invalid(
                &format!("{field}.name"),
                "must be 1-100 printable ASCII characters, not only spaces",
            ));
        }
        let field = format!("rule {:?}:", self.name);
        let fit = FITS
            .iter()
            .find(|fit| fit.kind == self.source.kind() && fit.metrics.contains(&self.metric))
            .ok_or_else(|| {
                let gives: Vec<&str> = FITS
                    .iter()
                    .filter(|fit| fit.kind == self.source.kind())
                    .flat_map(|fit| fit.metrics.iter().map(|m| m.as_str()))
                    .collect();
                invalid(
                    &field,
                    format!(
                        "metric {} does not come from a {} source (it gives {})",
                        self.metric.as_str(),
                        self.source.kind(),
                        gives.join(", ")
                    ),
                )
            })?;
        if self.comparison == Comparison::RelativeToStable && !fit.relative {
            return Err(invalid(
                &field,
                "only router traffic metrics and queries compare relative_to_stable",
            ));
        }
        if self.window_seconds > fit.max_window {
            return Err(invalid(
                &field,
                format!(
                    "window_seconds over router statistics is at most {MAX_ROUTER_WINDOW} (use Prometheus for longer windows)"
                ),
            ));
        }
        check::range(&format!("{field} window_seconds"), self.window_seconds, 1, MAX_WINDOW)?;
        check::range(&format!("{field} for_seconds"), self.for_seconds, 0, MAX_WINDOW)?;
        check::range(&format!("{field} min_samples"), self.min_samples, 0, MAX_MIN_SAMPLES)?;
        if let Some(weights) = &mut self.weights {
            for weight in weights.iter() {
                check::range(&format!("{field} weights"), *weight, 0, 100)?;
            }
            weights.sort_unstable();
        }
        match &self.source {
            RuleSource::Router {} => {}
            RuleSource::Prometheus { url: base, query } => {
                url(&format!("{field} source.url"), base)?;
                check::text(&format!("{field} source.query"), query, 4000, true)?;
                if query.trim().is_empty() {
                    return Err(invalid(&format!("{field} source.query"), "must not be empty"));
                }
            }
            RuleSource::HttpProbe { url: probe, timeout_ms } => {
                url(&format!("{field} source.url"), probe)?;
                check::range(&format!("{field} source.timeout_ms"), *timeout_ms, 1, MAX_PROBE_TIMEOUT_MS)?;
            }
            RuleSource::Alertmanager { alertname } => {
                check::text(&format!("{field} source.alertname"), alertname, 200, false)?;
            }
        }
        Ok(())
    }
}

/// A health policy: the rules the deployments of an app in an environment are judged by.
#[derive(Debug, Serialize, ToSchema)]
pub struct Policy {
    pub app: String,
    pub environment: String,
    #[schema(value_type = Vec<RuleSchema>)]
    pub rules: Vec<Rule>,
    /// True when no policy was set and the built-in defaults apply.
    pub default: bool,
    /// When the policy was last set; null for the defaults.
    #[serde(serialize_with = "crate::dto::rfc3339::option")]
    pub updated_at: Option<DateTime<Utc>>,
}

impl TryFrom<pb::Policy> for Policy {
    type Error = Problem;

    fn try_from(policy: pb::Policy) -> Result<Self, Problem> {
        let rules = serde_json::from_str(&policy.rules_json).map_err(|err| {
            tracing::error!(error = %err, app = policy.app, environment = policy.environment, "unreadable policy rules");
            Problem::internal()
        })?;
        Ok(Self {
            app: policy.app,
            environment: policy.environment,
            rules,
            default: policy.default,
            updated_at: time(policy.updated_at),
        })
    }
}

/// The rules that replace a policy; an empty list restores the defaults.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PutPolicyRequest {
    /// At most 50, with unique names.
    #[schema(value_type = Vec<RuleSchema>, max_items = 50)]
    pub rules: Vec<Rule>,
}

impl PutPolicyRequest {
    /// The rules as the JSON the rollback service takes, after the schema's checks.
    pub fn into_rules_json(mut self) -> Result<String, Problem> {
        if self.rules.len() > MAX_RULES {
            return Err(Problem::validation(format!("a policy holds at most {MAX_RULES} rules")));
        }
        let mut names = HashSet::new();
        for (index, rule) in self.rules.iter_mut().enumerate() {
            rule.check(&format!("rules[{index}]"))?;
            if !names.insert(rule.name.clone()) {
                return Err(Problem::new(
                    StatusCode::CONFLICT,
                    "already_exists",
                    format!("two rules are called {:?}: names are unique within a policy", rule.name),
                ));
            }
        }
        serde_json::to_string(&self.rules).map_err(|_| Problem::internal())
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn rule(value: serde_json::Value) -> Result<String, Problem> {
        let request: PutPolicyRequest = serde_json::from_value(json!({ "rules": [value] }))
            .map_err(|e| Problem::validation(e.to_string()))?;
        request.into_rules_json()
    }

    fn base() -> serde_json::Value {
        json!({"name": "errors", "metric": "error_rate", "source": {"kind": "router"}, "operator": "gt",
            "threshold": 2, "window_seconds": 60.0, "severity": "critical", "action": "rollback"})
    }

    #[test]
    fn rules_become_the_services_json_with_defaults_and_ordered_weights() {
        let mut value = base();
        value["weights"] = json!([25, 6]);
        let stored: serde_json::Value = serde_json::from_str(&rule(value).unwrap()).unwrap();
        assert_eq!(
            stored,
            json!([{"name": "errors", "metric": "error_rate", "source": {"kind": "router"}, "operator": "gt",
                "threshold": 2.0, "comparison": "absolute", "window_seconds": 60, "for_seconds": 0,
                "min_samples": 0, "no_data": "extend", "severity": "critical", "action": "rollback",
                "weights": [6, 25]}])
        );
        let probe = json!({"name": "probe", "metric": "health_check_failures",
            "source": {"kind": "http_probe", "url": "http://{app}:8080/health"}, "operator": "gte",
            "threshold": 3, "window_seconds": 10, "severity": "high", "action": "pause"});
        let stored: serde_json::Value = serde_json::from_str(&rule(probe).unwrap()).unwrap();
        assert_eq!(
            stored[0]["source"],
            json!({"kind": "http_probe", "url": "http://{app}:8080/health", "timeout_ms": 2000})
        );
    }

    #[test]
    fn rules_the_service_would_refuse_are_refused_first() {
        let with = |key: &str, value: serde_json::Value| {
            let mut rule = base();
            rule[key] = value;
            rule
        };
        for (bad, why) in [
            (with("metric", json!("alert")), "does not come from a router source"),
            (with("source", json!({"kind": "alertmanager"})), "gives alert"),
            (with("window_seconds", json!(7200)), "at most 3600"),
            (with("window_seconds", json!(0)), "window_seconds must be between 1"),
            (with("name", json!("   ")), "printable ASCII"),
            (with("name", json!("zähler")), "printable ASCII"),
            (with("weights", json!([0, 101])), "weights must be between 0 and 100"),
            (with("weights", json!([1])), "two numbers"),
            (with("source", json!({"kind": "router", "url": "http://x"})), "unknown field"),
            (
                json!({"name": "q", "metric": "query", "source": {"kind": "prometheus", "url": "ftp://x", "query": "up"},
                    "operator": "gt", "threshold": 1, "window_seconds": 60, "severity": "low", "action": "alert"}),
                "http(s) URL",
            ),
            (
                json!({"name": "q", "metric": "query", "source": {"kind": "prometheus", "url": "http://p", "query": " \n"},
                    "operator": "gt", "threshold": 1, "window_seconds": 60, "severity": "low", "action": "alert"}),
                "must not be empty",
            ),
            (with("threshold", json!("high")), "invalid type"),
            (with("typo", json!(1)), "unknown field"),
        ] {
            let problem = rule(bad.clone()).unwrap_err();
            assert_eq!(problem.status, 422, "{bad}");
            assert!(problem.detail.as_deref().unwrap_or_default().contains(why), "{bad}: {problem:?}");
        }
        let mut relative = json!({"name": "alerting", "metric": "alert", "source": {"kind": "alertmanager"},
            "operator": "gte", "threshold": 1, "window_seconds": 60, "severity": "critical", "action": "rollback"});
        assert!(rule(relative.clone()).is_ok());
        relative["comparison"] = json!("relative_to_stable");
        assert!(rule(relative).unwrap_err().detail.unwrap().contains("relative_to_stable"));
        let twice: PutPolicyRequest = serde_json::from_value(json!({ "rules": [base(), base()] })).unwrap();
        assert_eq!(twice.into_rules_json().unwrap_err().status, 409);
    }

    #[test]
    fn the_services_defaults_read_as_rules() {
        let policy = pb::Policy {
            app: "shop".into(),
            environment: "prod".into(),
            rules_json: json!([{"name": "Alertmanager alert firing", "metric": "alert",
                "source": {"kind": "alertmanager", "alertname": ""}, "operator": "gte", "threshold": 1.0,
                "comparison": "absolute", "window_seconds": 60, "for_seconds": 0, "min_samples": 0,
                "no_data": "extend", "severity": "critical", "action": "rollback"}])
            .to_string(),
            default: true,
            updated_at: None,
        };
        let policy = Policy::try_from(policy).unwrap();
        assert_eq!(policy.rules[0].source, RuleSource::Alertmanager { alertname: String::new() });
    }
}
