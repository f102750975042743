//! The rollback service's shapes: canary analyses with their decision records, incidents,
//! rollback records and manual rollbacks, and Alertmanager's webhook.

use std::{borrow::Cow, collections::BTreeMap};

use chrono::{DateTime, Utc};
use rp_proto::rollback::v1 as pb;
use serde::{Deserialize, Serialize};
use utoipa::{
    IntoParams, PartialSchema, ToSchema,
    openapi::{ObjectBuilder, RefOr, Schema, Type, schema::OneOfBuilder},
};

use super::{RuleAction, Severity, check, time};
use crate::problem::Problem;

const SLUG: &str = "^[a-z0-9][a-z0-9-]{0,61}[a-z0-9]$";

fn non_empty(text: String) -> Option<String> {
    Some(text).filter(|t| !t.is_empty())
}

/// An optional app or environment filter: a name when given.
fn slug_filter(field: &str, value: Option<String>) -> Result<String, Problem> {
    match value {
        None => Ok(String::new()),
        Some(value) => {
            check::slug(field, &value)?;
            Ok(value)
        }
    }
}

// --------------------------------------------------------------------------------- analyses

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum AnalysisStatus {
    Running,
    Passed,
    Failed,
    Stopped,
}

impl AnalysisStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            AnalysisStatus::Running => "running",
            AnalysisStatus::Passed => "passed",
            AnalysisStatus::Failed => "failed",
            AnalysisStatus::Stopped => "stopped",
        }
    }
}

/// A decision record's verdict: `healthy`; `breaching` (not for long enough yet); `failed` (the
/// rule's action was taken); without enough data, what the rule's `no_data` says
/// (`no_data_pause`, `no_data_fail`, `no_data_pass`, `no_data_extend`).
#[derive(Debug, Clone, Copy, Serialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Verdict {
    Healthy,
    Breaching,
    Failed,
    NoDataPause,
    NoDataFail,
    NoDataPass,
    NoDataExtend,
}

/// One evaluation of one rule: the decision record.
#[derive(Debug, Serialize, ToSchema)]
pub struct Measurement {
    pub id: String,
    /// The rule's name.
    pub rule: String,
    #[schema(value_type = super::Metric)]
    pub metric: String,
    /// The rendered query or probe URL, or the router statistics it read.
    pub query: String,
    /// The measured value; null without data.
    pub value: Option<f64>,
    /// The stable version's value, for `relative_to_stable` rules.
    pub baseline: Option<f64>,
    /// What was compared with the threshold: the value, or its deviation in percent.
    pub compared: Option<f64>,
    #[schema(value_type = super::RuleOperator)]
    pub operator: String,
    pub threshold: f64,
    /// Samples in the window (requests, for router metrics).
    pub samples: u64,
    /// The canary's traffic share then, percent.
    pub weight: i32,
    #[schema(value_type = Verdict)]
    pub verdict: String,
    /// The rule's action.
    #[schema(value_type = RuleAction)]
    pub action: String,
    #[serde(serialize_with = "crate::dto::rfc3339::option")]
    pub at: Option<DateTime<Utc>>,
}

impl From<pb::Measurement> for Measurement {
    fn from(m: pb::Measurement) -> Self {
        Self {
            id: m.id,
            rule: m.rule,
            metric: m.metric,
            query: m.query,
            value: m.value,
            baseline: m.baseline,
            compared: m.compared,
            operator: m.operator,
            threshold: m.threshold,
            samples: m.samples,
            weight: m.weight,
            verdict: m.verdict,
            action: m.action,
            at: time(m.at),
        }
    }
}

/// The canary analysis of one deployment: its policy's rules evaluated against the new version
/// while it takes traffic.
#[derive(Debug, Serialize, ToSchema)]
pub struct Analysis {
    pub id: String,
    pub deployment_id: String,
    pub app: String,
    pub environment: String,
    /// The version under analysis.
    pub version: String,
    /// The version it is compared with, and rolled back to.
    pub stable_version: String,
    #[schema(value_type = AnalysisStatus)]
    pub status: String,
    /// The new version's traffic share, percent.
    pub weight: i32,
    /// Why it ended (or paused), naming the rule.
    pub reason: Option<String>,
    #[serde(serialize_with = "crate::dto::rfc3339::option")]
    pub started_at: Option<DateTime<Utc>>,
    #[serde(serialize_with = "crate::dto::rfc3339::option")]
    pub ended_at: Option<DateTime<Utc>>,
    /// The rollback service replica evaluating it.
    pub lease_holder: Option<String>,
    /// Decision records, newest first. Only `GET /api/v1/analyses/{id}` (and the deployment's
    /// `analysis`) includes them; lists leave them empty.
    pub measurements: Vec<Measurement>,
}

impl From<pb::Analysis> for Analysis {
    fn from(a: pb::Analysis) -> Self {
        Self {
            id: a.id,
            deployment_id: a.deployment_id,
            app: a.app,
            environment: a.environment,
            version: a.version,
            stable_version: a.stable_version,
            status: a.status,
            weight: a.weight,
            reason: non_empty(a.reason),
            started_at: time(a.started_at),
            ended_at: time(a.ended_at),
            lease_holder: non_empty(a.lease_holder),
            measurements: a.measurements.into_iter().map(Measurement::from).collect(),
        }
    }
}

#[derive(Debug, Serialize, ToSchema)]
pub struct AnalysisPage {
    /// Newest first.
    pub items: Vec<Analysis>,
    pub next_page_token: Option<String>,
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct AnalysisListQuery {
    /// App name.
    #[param(pattern = "^[a-z0-9][a-z0-9-]{0,61}[a-z0-9]$")]
    pub app: Option<String>,
    /// Environment name.
    #[param(pattern = "^[a-z0-9][a-z0-9-]{0,61}[a-z0-9]$")]
    pub environment: Option<String>,
    #[param(inline)]
    pub status: Option<AnalysisStatus>,
    /// 1-200, default 50.
    #[param(minimum = 1, maximum = 200)]
    pub page_size: Option<i32>,
    /// `next_page_token` of the previous page.
    #[param(format = Uuid)]
    pub page_token: Option<String>,
}

impl AnalysisListQuery {
    pub fn into_pb(self) -> Result<pb::ListAnalysesRequest, Problem> {
        Ok(pb::ListAnalysesRequest {
            app: slug_filter("app", self.app)?,
            environment: slug_filter("environment", self.environment)?,
            status: self.status.map(|s| s.as_str().to_owned()).unwrap_or_default(),
            page_size: super::check_page_size(self.page_size)?,
            page_token: super::check_page_token(self.page_token)?,
        })
    }
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct AnalysisQuery {
    /// How many of the newest decision records to include, 1-1000; default 100.
    #[param(minimum = 1, maximum = 1000)]
    pub measurements: Option<i32>,
    /// Only the records that breached or acted (`breaching`, `failed`, `no_data_fail`,
    /// `no_data_pause`).
    #[serde(default)]
    pub breaches_only: bool,
}

impl AnalysisQuery {
    /// The request for the analysis with this id, or of the deployment with this id.
    pub fn into_pb(self, id: String, deployment_id: String) -> Result<pb::GetAnalysisRequest, Problem> {
        let measurements = match self.measurements {
            None => 0,
            Some(n) => {
                check::range("measurements", i64::from(n), 1, 1000)?;
                n
            }
        };
        Ok(pb::GetAnalysisRequest { id, deployment_id, measurements, breaches_only: self.breaches_only })
    }
}

// -------------------------------------------------------------------------------- incidents

#[derive(Debug, Serialize, ToSchema)]
pub struct TimelineEntry {
    /// First bad sample, decision, traffic restored, notification sent, resolved…
    pub what: String,
    #[serde(serialize_with = "crate::dto::rfc3339::option")]
    pub at: Option<DateTime<Utc>>,
}

/// An incident, opened when a rule rolled a deployment back.
#[derive(Debug, Serialize, ToSchema)]
pub struct Incident {
    pub id: String,
    pub app: String,
    pub environment: String,
    pub deployment_id: String,
    /// The version that was rolled back.
    pub version: String,
    #[schema(value_type = IncidentStatus)]
    pub status: String,
    /// The severity of the rule that fired.
    #[schema(value_type = Severity)]
    pub severity: String,
    pub summary: String,
    #[serde(serialize_with = "crate::dto::rfc3339::option")]
    pub opened_at: Option<DateTime<Utc>>,
    #[serde(serialize_with = "crate::dto::rfc3339::option")]
    pub resolved_at: Option<DateTime<Utc>>,
    /// What happened when, oldest first.
    pub timeline: Vec<TimelineEntry>,
    /// Time to restore: first bad sample to traffic restored, seconds; null when the
    /// automatic rollback failed.
    pub mttr_seconds: Option<f64>,
    /// The rollback record; null when the automatic rollback failed.
    pub rollback_id: Option<String>,
    /// The decision records that caused the rollback.
    pub measurement_ids: Vec<String>,
}

impl From<pb::Incident> for Incident {
    fn from(i: pb::Incident) -> Self {
        let restored = !i.rollback_id.is_empty();
        Self {
            id: i.id,
            app: i.app,
            environment: i.environment,
            deployment_id: i.deployment_id,
            version: i.version,
            status: i.status,
            severity: i.severity,
            summary: i.summary,
            opened_at: time(i.opened_at),
            resolved_at: time(i.resolved_at),
            timeline: i
                .timeline
                .into_iter()
                .map(|t| TimelineEntry { what: t.what, at: time(t.at) })
                .collect(),
            mttr_seconds: restored.then_some(i.mttr_seconds),
            rollback_id: non_empty(i.rollback_id),
            measurement_ids: i.measurement_ids,
        }
    }
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct IncidentQuery {
    /// App name.
    #[param(pattern = "^[a-z0-9][a-z0-9-]{0,61}[a-z0-9]$")]
    pub app: Option<String>,
    #[param(inline)]
    pub status: Option<IncidentStatus>,
    #[param(minimum = 1, maximum = 200)]
    pub page_size: Option<i32>,
    #[param(format = Uuid)]
    pub page_token: Option<String>,
}

#[derive(Debug, Clone, Copy, Deserialize, Serialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum IncidentStatus {
    Open,
    Resolved,
}

impl IncidentStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            IncidentStatus::Open => "open",
            IncidentStatus::Resolved => "resolved",
        }
    }
}

#[derive(Debug, Serialize, ToSchema)]
pub struct IncidentPage {
    pub items: Vec<Incident>,
    pub next_page_token: Option<String>,
}

#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ResolveIncidentRequest {
    /// What was found or done; it ends the timeline.
    #[serde(default)]
    #[schema(
        example = "bad config in 2.0.0; fixed in 2.0.1",
        max_length = 2000,
        pattern = r"^[^\u0000-\u001f\u007f-\u009f]*$"
    )]
    pub note: String,
}

impl ResolveIncidentRequest {
    pub fn into_pb(self, id: String) -> Result<pb::ResolveIncidentRequest, Problem> {
        check::text("note", &self.note, 2000, false)?;
        Ok(pb::ResolveIncidentRequest { id, note: self.note })
    }
}

// -------------------------------------------------------------------------------- rollbacks

/// A rollback: traffic taken from a version and given back to the one before, automatically
/// (a rule fired) or because someone asked.
#[derive(Debug, Serialize, ToSchema)]
pub struct RollbackRecord {
    pub id: String,
    /// The deployment that was rolled back.
    pub deployment_id: String,
    pub app: String,
    pub environment: String,
    /// The version taken out of service.
    pub version: String,
    /// The version serving again.
    pub restored_version: String,
    /// `manual`, or the name of the rule that fired.
    #[schema(example = "error rate above 2%")]
    pub trigger: String,
    pub reason: String,
    #[serde(serialize_with = "crate::dto::rfc3339::option")]
    pub decided_at: Option<DateTime<Utc>>,
    #[serde(serialize_with = "crate::dto::rfc3339::option")]
    pub traffic_restored_at: Option<DateTime<Utc>>,
    /// The decision records that caused it (automatic rollbacks).
    pub measurement_ids: Vec<String>,
    /// The incident it opened (automatic rollbacks).
    pub incident_id: Option<String>,
    /// Who asked: an e-mail address, or `system`.
    pub requested_by: String,
}

impl From<pb::RollbackRecord> for RollbackRecord {
    fn from(r: pb::RollbackRecord) -> Self {
        Self {
            id: r.id,
            deployment_id: r.deployment_id,
            app: r.app,
            environment: r.environment,
            version: r.version,
            restored_version: r.restored_version,
            trigger: r.trigger,
            reason: r.reason,
            decided_at: time(r.decided_at),
            traffic_restored_at: time(r.traffic_restored_at),
            measurement_ids: r.measurement_ids,
            incident_id: non_empty(r.incident_id),
            requested_by: r.requested_by,
        }
    }
}

#[derive(Debug, Serialize, ToSchema)]
pub struct RollbackPage {
    /// Newest first.
    pub items: Vec<RollbackRecord>,
    pub next_page_token: Option<String>,
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct RollbackListQuery {
    /// App name.
    #[param(pattern = "^[a-z0-9][a-z0-9-]{0,61}[a-z0-9]$")]
    pub app: Option<String>,
    /// Environment name.
    #[param(pattern = "^[a-z0-9][a-z0-9-]{0,61}[a-z0-9]$")]
    pub environment: Option<String>,
    /// 1-200, default 50.
    #[param(minimum = 1, maximum = 200)]
    pub page_size: Option<i32>,
    /// `next_page_token` of the previous page.
    #[param(format = Uuid)]
    pub page_token: Option<String>,
}

impl RollbackListQuery {
    pub fn into_pb(self) -> Result<pb::ListRollbacksRequest, Problem> {
        Ok(pb::ListRollbacksRequest {
            app: slug_filter("app", self.app)?,
            environment: slug_filter("environment", self.environment)?,
            page_size: super::check_page_size(self.page_size)?,
            page_token: super::check_page_token(self.page_token)?,
        })
    }
}

/// Body of `POST /api/v1/rollbacks` as received; `CreateRollbackRequest` is its schema.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RollbackInput {
    pub deployment_id: Option<String>,
    pub app: Option<String>,
    pub environment: Option<String>,
    pub target_version: Option<String>,
    #[serde(default)]
    pub reason: String,
}

impl RollbackInput {
    pub fn into_pb(self) -> Result<pb::TriggerRollbackRequest, Problem> {
        let (deployment_id, app, environment) = match (self.deployment_id, self.app, self.environment) {
            (Some(id), None, None) => {
                if uuid::Uuid::parse_str(&id).is_err() {
                    return Err(Problem::validation(format!("deployment_id {id:?} is not a valid id")));
                }
                (id, String::new(), String::new())
            }
            (None, Some(app), Some(environment)) => {
                check::slug("app", &app)?;
                check::slug("environment", &environment)?;
                (String::new(), app, environment)
            }
            _ => {
                return Err(Problem::validation(
                    "give either deployment_id, or app and environment (not both)",
                ));
            }
        };
        check::text("reason", &self.reason, 1000, false)?;
        Ok(pb::TriggerRollbackRequest {
            deployment_id,
            app,
            environment,
            target_version: self.target_version.unwrap_or_default(),
            reason: self.reason,
        })
    }
}

/// What to roll back: a deployment by id, or what runs for an app in an environment.
pub struct CreateRollbackRequest;

impl PartialSchema for CreateRollbackRequest {
    fn schema() -> RefOr<Schema> {
        let string = || ObjectBuilder::new().schema_type(Type::String);
        let common = |object: ObjectBuilder| {
            object
                .property(
                    "target_version",
                    ObjectBuilder::new()
                        .schema_type(utoipa::openapi::schema::SchemaType::from_iter([Type::String, Type::Null]))
                        .description(Some(
                            "An earlier version that succeeded in this environment; default: the one serving before.",
                        )),
                )
                .property(
                    "reason",
                    string()
                        .max_length(Some(1000))
                        .pattern(Some(r"^[^\u0000-\u001f\u007f-\u009f]*$"))
                        .description(Some("Why; recorded with the rollback and in the audit log."))
                        .examples(["checkout errors after the release"]),
                )
                .additional_properties(Some(utoipa::openapi::schema::AdditionalProperties::FreeForm(false)))
        };
        let by_deployment = common(
            ObjectBuilder::new()
                .title(Some("by deployment"))
                .property(
                    "deployment_id",
                    string()
                        .format(Some(utoipa::openapi::SchemaFormat::KnownFormat(
                            utoipa::openapi::KnownFormat::Uuid,
                        )))
                        .description(Some("The deployment to roll back (running or succeeded).")),
                )
                .required("deployment_id"),
        );
        let by_app = common(
            ObjectBuilder::new()
                .title(Some("by app and environment"))
                .property(
                    "app",
                    string().pattern(Some(SLUG)).description(Some("App name")).examples(["checkout"]),
                )
                .property(
                    "environment",
                    string().pattern(Some(SLUG)).description(Some("Environment name")).examples(["prod"]),
                )
                .required("app")
                .required("environment"),
        );
        OneOfBuilder::new()
            .description(Some(
                "A deployment by `deployment_id`, or whatever runs (or is being deployed) for `app` in `environment`.",
            ))
            .item(by_deployment)
            .item(by_app)
            .into()
    }
}

impl ToSchema for CreateRollbackRequest {
    fn name() -> Cow<'static, str> {
        Cow::Borrowed("CreateRollbackRequest")
    }
}

// ----------------------------------------------------------------------------- Alertmanager

#[derive(Debug, Clone, Copy, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum AlertStatus {
    Firing,
    Resolved,
}

/// Alertmanager's webhook version; only `4` exists.
#[derive(Debug, Clone, Copy, Deserialize, ToSchema)]
pub enum AlertmanagerVersion {
    #[serde(rename = "4")]
    V4,
}

/// The body Alertmanager's `webhook_configs` POST (version 4). Other fields (as Grafana adds)
/// are ignored.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct AlertmanagerWebhook {
    pub version: AlertmanagerVersion,
    /// Key of the alert group.
    #[schema(example = "{}:{alertname=\"CheckoutErrors\"}")]
    pub group_key: String,
    /// Alerts left out because of `max_alerts`.
    #[serde(default, deserialize_with = "super::whole_number")]
    #[schema(minimum = 0, maximum = 1_000_000_000)]
    pub truncated_alerts: i64,
    /// `firing` while any alert of the group fires.
    pub status: AlertStatus,
    /// The receiver's name in Alertmanager's configuration.
    #[schema(example = "release-pilot")]
    pub receiver: String,
    #[serde(default)]
    pub group_labels: BTreeMap<String, String>,
    #[serde(default)]
    pub common_labels: BTreeMap<String, String>,
    #[serde(default)]
    pub common_annotations: BTreeMap<String, String>,
    /// Alertmanager's URL.
    #[serde(default, rename = "externalURL")]
    pub external_url: String,
    /// At most 1000.
    #[schema(max_items = 1000)]
    pub alerts: Vec<AlertmanagerAlert>,
}

/// One alert of a notification. Alerts feed the rules with an `alertmanager` source when their
/// `app` (or `application`), `environment` (or `env`) and, when present, `version` labels name a
/// deployment under analysis.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct AlertmanagerAlert {
    pub status: AlertStatus,
    #[schema(example = json!({"alertname": "CheckoutErrors", "app": "checkout", "environment": "prod",
        "version": "2.0.0", "severity": "critical"}))]
    pub labels: BTreeMap<String, String>,
    #[serde(default)]
    pub annotations: BTreeMap<String, String>,
    /// RFC 3339; empty or null when unknown.
    #[serde(default, deserialize_with = "optional_time")]
    pub starts_at: Option<DateTime<Utc>>,
    /// RFC 3339; `0001-01-01T00:00:00Z` while firing.
    #[serde(default, deserialize_with = "optional_time")]
    pub ends_at: Option<DateTime<Utc>>,
    #[serde(default, rename = "generatorURL")]
    pub generator_url: String,
    /// Identifies the alert across notifications; derived from the labels when absent.
    #[serde(default)]
    pub fingerprint: String,
}

/// An RFC 3339 time; null or empty: none.
fn optional_time<'de, D: serde::Deserializer<'de>>(
    deserializer: D,
) -> Result<Option<DateTime<Utc>>, D::Error> {
    match Option::<String>::deserialize(deserializer)? {
        None => Ok(None),
        Some(text) if text.is_empty() => Ok(None),
        Some(text) => DateTime::parse_from_rfc3339(&text)
            .map(|t| Some(t.with_timezone(&Utc)))
            .map_err(|e| serde::de::Error::custom(format!("{text:?} is not an RFC 3339 time: {e}"))),
    }
}

impl AlertmanagerWebhook {
    pub fn check(&self) -> Result<(), Problem> {
        if self.alerts.len() > 1000 {
            return Err(Problem::validation(format!(
                "alerts: at most 1000 per notification, not {}",
                self.alerts.len()
            )));
        }
        check::range("truncatedAlerts", self.truncated_alerts, 0, 1_000_000_000)
    }
}

/// What became of a notification.
#[derive(Debug, Serialize, ToSchema)]
pub struct AlertsReceived {
    /// Alerts in the notification.
    pub alerts: i32,
    /// Firing alerts about a deployment under analysis.
    pub matched: i32,
}

impl From<pb::ReceiveAlertsResponse> for AlertsReceived {
    fn from(r: pb::ReceiveAlertsResponse) -> Self {
        Self { alerts: r.alerts, matched: r.matched }
    }
}
