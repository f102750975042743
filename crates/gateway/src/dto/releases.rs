//! The release service's shapes: environments, targets, releases, deployments, freeze windows,
//! status, audit and DORA. Request constraints are schema constraints (`pattern`, ranges, enums)
//! that the gateway (`check`) and the release service enforce together, so a request the schema
//! calls valid is accepted and one it calls invalid is refused.

use std::{borrow::Cow, collections::BTreeMap};

use chrono::{DateTime, Utc};
use rp_identity::Role;
use rp_proto::release::v1 as pb;
use serde::{Deserialize, Serialize, de::Error as _};
use utoipa::{
    IntoParams, PartialSchema, ToSchema,
    openapi::{
        ArrayBuilder, ObjectBuilder, RefOr, Schema, Type,
        schema::{AllOfBuilder, AnyOfBuilder},
    },
};

use super::{check, integral, time, whole_number};
use crate::problem::Problem;

/// Optional integer; like `whole_number`, integral floats (`5.0`) count.
fn opt_whole_number<'de, D: serde::Deserializer<'de>>(deserializer: D) -> Result<Option<i64>, D::Error> {
    match Option::<serde_json::Number>::deserialize(deserializer)? {
        None => Ok(None),
        Some(number) => integral(&number).map(Some).map_err(D::Error::custom),
    }
}

fn non_empty(text: String) -> Option<String> {
    Some(text).filter(|t| !t.is_empty())
}

fn role_list(names: &[String]) -> Vec<Role> {
    names.iter().filter_map(|name| name.parse().ok()).collect()
}

fn role_names(roles: &[Role]) -> Vec<String> {
    roles.iter().map(|role| role.as_str().to_owned()).collect()
}

fn range(field: &str, value: Option<i64>, lo: i64, hi: i64) -> Result<Option<i64>, Problem> {
    if let Some(value) = value {
        check::range(field, value, lo, hi)?;
    }
    Ok(value)
}

// ------------------------------------------------------------------------------------- enums

/// How a deployment moves traffic.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Strategy {
    AllAtOnce,
    Canary,
    BlueGreen,
    /// Incident commanders only; skips approvals, promotion order, quality gates and freezes.
    Hotfix,
}

impl Strategy {
    pub fn as_str(self) -> &'static str {
        match self {
            Strategy::AllAtOnce => "all_at_once",
            Strategy::Canary => "canary",
            Strategy::BlueGreen => "blue_green",
            Strategy::Hotfix => "hotfix",
        }
    }
}

/// The strategy of a deployment: a requested one, or `rollback` for the record of a rollback.
#[derive(Debug, Clone, Copy, Serialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum DeploymentStrategy {
    AllAtOnce,
    Canary,
    BlueGreen,
    Hotfix,
    Rollback,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum DeploymentState {
    Pending,
    AwaitingApproval,
    InProgress,
    Succeeded,
    Failed,
    RolledBack,
    Aborted,
    Superseded,
}

impl DeploymentState {
    pub fn as_str(self) -> &'static str {
        match self {
            DeploymentState::Pending => "pending",
            DeploymentState::AwaitingApproval => "awaiting_approval",
            DeploymentState::InProgress => "in_progress",
            DeploymentState::Succeeded => "succeeded",
            DeploymentState::Failed => "failed",
            DeploymentState::RolledBack => "rolled_back",
            DeploymentState::Aborted => "aborted",
            DeploymentState::Superseded => "superseded",
        }
    }
}

/// `gte`, `lte` and `eq` compare the check's value; `passed` needs status `passed`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum ThresholdOperator {
    Gte,
    Lte,
    Eq,
    Passed,
}

impl ThresholdOperator {
    fn as_str(self) -> &'static str {
        match self {
            ThresholdOperator::Gte => "gte",
            ThresholdOperator::Lte => "lte",
            ThresholdOperator::Eq => "eq",
            ThresholdOperator::Passed => "passed",
        }
    }

    fn parse(text: &str) -> Option<Self> {
        [Self::Gte, Self::Lte, Self::Eq, Self::Passed].into_iter().find(|op| op.as_str() == text)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum CheckStatus {
    Passed,
    Failed,
    Pending,
}

impl CheckStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            CheckStatus::Passed => "passed",
            CheckStatus::Failed => "failed",
            CheckStatus::Pending => "pending",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum ApprovalDecision {
    Approved,
    Rejected,
}

impl ApprovalDecision {
    pub fn as_str(self) -> &'static str {
        match self {
            ApprovalDecision::Approved => "approved",
            ApprovalDecision::Rejected => "rejected",
        }
    }
}

/// How an external deployer's step went.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum DriverOutcome {
    Succeeded,
    Failed,
}

impl DriverOutcome {
    pub fn as_str(self) -> &'static str {
        match self {
            DriverOutcome::Succeeded => "succeeded",
            DriverOutcome::Failed => "failed",
        }
    }
}

/// How a target's deployments reach the world.
#[derive(Debug, Clone, Copy, Serialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum TargetDriver {
    /// A signed POST of each step's desired state to an external deployer.
    Webhook,
    /// Release Pilot's own router.
    Router,
}

// ------------------------------------------------------------------------------ environments

/// A minimum a quality check must meet before a release enters an environment.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct QualityThreshold {
    /// Name of the quality check (as reported for releases).
    #[schema(example = "coverage", pattern = "^[!-~]([ -~]{0,98}[!-~])?$")]
    pub check: String,
    pub operator: ThresholdOperator,
    /// Compared with the check's value by `gte`, `lte` and `eq`; ignored by `passed`.
    #[serde(default)]
    #[schema(example = 80.0)]
    pub value: f64,
}

impl QualityThreshold {
    fn to_pb(&self) -> pb::QualityThreshold {
        pb::QualityThreshold {
            check: self.check.clone(),
            operator: self.operator.as_str().to_owned(),
            value: self.value,
        }
    }
}

fn thresholds_to_pb(field: &str, list: &[QualityThreshold]) -> Result<Vec<pb::QualityThreshold>, Problem> {
    if list.len() > 50 {
        return Err(Problem::validation(format!("{field}: at most 50 quality thresholds")));
    }
    for threshold in list {
        check::check_name("quality threshold check", &threshold.check)?;
    }
    Ok(list.iter().map(QualityThreshold::to_pb).collect())
}

/// A stage of the promotion pipeline.
#[derive(Debug, Serialize, ToSchema)]
pub struct Environment {
    pub id: String,
    #[schema(example = "prod")]
    pub name: String,
    /// Order in the promotion pipeline (ascending): a release must succeed in the environment
    /// before this one first.
    pub position: i32,
    pub production: bool,
    /// Roles allowed to deploy here (administrators always may).
    pub deployer_roles: Vec<Role>,
    /// Approvals a deployment needs before it starts; 0 for none.
    pub required_approvals: i32,
    /// Roles whose members may approve (never their own deployment).
    pub approver_roles: Vec<Role>,
    pub quality_thresholds: Vec<QualityThreshold>,
    #[serde(serialize_with = "crate::dto::rfc3339::option")]
    pub created_at: Option<DateTime<Utc>>,
}

impl From<pb::Environment> for Environment {
    fn from(env: pb::Environment) -> Self {
        Self {
            id: env.id,
            name: env.name,
            position: env.position,
            production: env.production,
            deployer_roles: role_list(&env.deployer_roles),
            required_approvals: env.required_approvals,
            approver_roles: role_list(&env.approver_roles),
            quality_thresholds: env
                .quality_thresholds
                .into_iter()
                .filter_map(|t| {
                    Some(QualityThreshold {
                        operator: ThresholdOperator::parse(&t.operator)?,
                        check: t.check,
                        value: t.value,
                    })
                })
                .collect(),
            created_at: time(env.created_at),
        }
    }
}

#[derive(Debug, Serialize, ToSchema)]
pub struct EnvironmentList {
    /// In promotion order.
    pub items: Vec<Environment>,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateEnvironmentRequest {
    /// 2-63 lowercase letters, digits and inner dashes.
    #[schema(example = "staging", pattern = "^[a-z0-9][a-z0-9-]{0,61}[a-z0-9]$")]
    pub name: String,
    /// Order in the pipeline, 1-1000; default: after the last environment.
    #[serde(default, deserialize_with = "opt_whole_number")]
    #[schema(minimum = 1, maximum = 1000)]
    pub position: Option<i64>,
    #[serde(default)]
    pub production: bool,
    /// Default (also when empty): `developer` and `release_manager`; in production only
    /// `release_manager`.
    pub deployer_roles: Option<Vec<Role>>,
    /// 0-10; default 1 in production, else 0.
    #[serde(default, deserialize_with = "opt_whole_number")]
    #[schema(minimum = 0, maximum = 10)]
    pub required_approvals: Option<i64>,
    /// Default (also when empty): `release_manager`.
    pub approver_roles: Option<Vec<Role>>,
    #[serde(default)]
    #[schema(max_items = 50)]
    pub quality_thresholds: Vec<QualityThreshold>,
}

impl CreateEnvironmentRequest {
    pub fn into_pb(self, idempotency_key: String) -> Result<pb::CreateEnvironmentRequest, Problem> {
        check::slug("name", &self.name)?;
        let position = range("position", self.position, 1, 1000)?;
        let required = range("required_approvals", self.required_approvals, 0, 10)?;
        Ok(pb::CreateEnvironmentRequest {
            quality_thresholds: thresholds_to_pb("quality_thresholds", &self.quality_thresholds)?,
            name: self.name,
            position: position.unwrap_or(0) as i32,
            production: self.production,
            deployer_roles: role_names(&self.deployer_roles.unwrap_or_default()),
            // The service reads 0 as "none" in production: send its default explicitly.
            required_approvals: required.unwrap_or(if self.production { 1 } else { 0 }) as i32,
            approver_roles: role_names(&self.approver_roles.unwrap_or_default()),
            idempotency_key,
        })
    }
}

/// Changes to an environment; absent fields stay as they are.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct UpdateEnvironmentRequest {
    #[serde(default, deserialize_with = "opt_whole_number")]
    #[schema(minimum = 0, maximum = 1000)]
    pub position: Option<i64>,
    pub production: Option<bool>,
    /// Replaces the deployer roles (an empty list leaves deploying to administrators).
    pub deployer_roles: Option<Vec<Role>>,
    #[serde(default, deserialize_with = "opt_whole_number")]
    #[schema(minimum = 0, maximum = 10)]
    pub required_approvals: Option<i64>,
    pub approver_roles: Option<Vec<Role>>,
    /// Replaces the thresholds.
    #[schema(max_items = 50)]
    pub quality_thresholds: Option<Vec<QualityThreshold>>,
}

impl UpdateEnvironmentRequest {
    pub fn into_pb(self, environment: String) -> Result<pb::UpdateEnvironmentRequest, Problem> {
        let position = range("position", self.position, 0, 1000)?;
        let required = range("required_approvals", self.required_approvals, 0, 10)?;
        let thresholds = match &self.quality_thresholds {
            Some(list) => Some(pb::Thresholds { thresholds: thresholds_to_pb("quality_thresholds", list)? }),
            None => None,
        };
        Ok(pb::UpdateEnvironmentRequest {
            environment,
            position: position.map(|p| p as i32),
            production: self.production,
            deployer_roles: self.deployer_roles.map(|r| pb::RoleNames { roles: role_names(&r) }),
            required_approvals: required.map(|r| r as i32),
            approver_roles: self.approver_roles.map(|r| pb::RoleNames { roles: role_names(&r) }),
            quality_thresholds: thresholds,
        })
    }
}

// ----------------------------------------------------------------------------------- targets

/// One canary step: how long to hold the traffic share, and whether health analysis must pass
/// before the next step.
#[derive(Debug, Clone, Default, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CanaryHold {
    /// 0-604800 seconds (a week).
    #[serde(default, deserialize_with = "whole_number")]
    #[schema(minimum = 0, maximum = 604800, example = 600)]
    pub hold_seconds: i64,
    #[serde(default)]
    pub analysis: bool,
}

/// Canary steps keyed by the percentage of traffic on the new version (1-100), run in
/// ascending order; at most 20. A canary that does not end at 100 gets a final 100% step.
#[derive(Debug, Clone, Default, Serialize)]
pub struct CanarySteps(pub BTreeMap<u8, CanaryHold>);

impl<'de> Deserialize<'de> for CanarySteps {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let raw = BTreeMap::<String, CanaryHold>::deserialize(deserializer)?;
        if raw.len() > 20 {
            return Err(D::Error::custom("a canary has at most 20 steps"));
        }
        let mut steps = BTreeMap::new();
        for (key, hold) in raw {
            let weight = key.parse::<u8>().ok().filter(|w| (1..=100).contains(w) && key == w.to_string());
            let Some(weight) = weight else {
                return Err(D::Error::custom(format!(
                    "canary step {key:?}: keys are traffic percentages from 1 to 100"
                )));
            };
            if !(0..=604_800).contains(&hold.hold_seconds) {
                return Err(D::Error::custom(format!(
                    "canary step {key}: hold_seconds must be between 0 and 604800"
                )));
            }
            steps.insert(weight, hold);
        }
        Ok(Self(steps))
    }
}

impl PartialSchema for CanarySteps {
    fn schema() -> RefOr<Schema> {
        ObjectBuilder::new()
            .description(Some(
                "Canary steps keyed by the percentage of traffic on the new version (1-100), run in \
                 ascending order; at most 20. A canary that does not end at 100 gets a final 100% step.",
            ))
            .property_names(Some(
                ObjectBuilder::new().schema_type(Type::String).pattern(Some("^([1-9][0-9]?|100)$")),
            ))
            .additional_properties(Some(utoipa::openapi::Ref::from_schema_name("CanaryHold")))
            .max_properties(Some(20))
            .examples([serde_json::json!({
                "5": {"hold_seconds": 600, "analysis": true},
                "25": {"hold_seconds": 1800, "analysis": true},
                "100": {}
            })])
            .into()
    }
}

impl ToSchema for CanarySteps {
    fn schemas(schemas: &mut Vec<(String, RefOr<Schema>)>) {
        schemas.push(("CanaryHold".into(), CanaryHold::schema()));
    }
}

impl CanarySteps {
    pub fn to_pb(&self) -> Vec<pb::CanaryStep> {
        self.0
            .iter()
            .map(|(weight, hold)| pb::CanaryStep {
                weight: i32::from(*weight),
                hold_seconds: hold.hold_seconds,
                analysis: hold.analysis,
            })
            .collect()
    }

    fn from_pb(steps: &[pb::CanaryStep]) -> Self {
        Self(
            steps
                .iter()
                .filter_map(|s| {
                    let weight = u8::try_from(s.weight).ok()?;
                    Some((weight, CanaryHold { hold_seconds: s.hold_seconds, analysis: s.analysis }))
                })
                .collect(),
        )
    }
}

/// Where deployments of an app in an environment go, and how.
#[derive(Debug, Serialize, ToSchema)]
pub struct Target {
    pub id: String,
    pub app: String,
    pub environment: String,
    #[schema(value_type = TargetDriver)]
    pub driver: String,
    /// The driver's settings (`WebhookSettings` or `RouterSettings`), defaults filled in.
    #[schema(value_type = Object)]
    pub driver_config: serde_json::Value,
    /// Strategy of deployments that name none.
    #[schema(value_type = Strategy)]
    pub default_strategy: String,
    /// Canary steps of deployments that give none (empty: 5% 10 min → 25% 30 min → 75% 60 min → 100%).
    pub canary_steps: CanarySteps,
    /// Whether webhook calls are signed (the secret itself is never returned).
    pub has_secret: bool,
    #[serde(serialize_with = "crate::dto::rfc3339::option")]
    pub updated_at: Option<DateTime<Utc>>,
}

impl From<pb::Target> for Target {
    fn from(t: pb::Target) -> Self {
        Self {
            id: t.id,
            app: t.app,
            environment: t.environment,
            driver: t.driver,
            driver_config: serde_json::from_str(&t.driver_config_json)
                .unwrap_or_else(|_| serde_json::Value::Object(Default::default())),
            default_strategy: t.default_strategy,
            canary_steps: CanarySteps::from_pb(&t.canary_steps),
            has_secret: t.has_secret,
            updated_at: time(t.updated_at),
        }
    }
}

#[derive(Debug, Serialize, ToSchema)]
pub struct TargetList {
    pub items: Vec<Target>,
}

/// Settings of the `webhook` driver: each step's desired state is POSTed, signed the Standard
/// Webhooks way; 2xx means applied, 202 accepted (completion reported to
/// `POST /api/v1/deployments/{id}/driver-result` or polled).
#[derive(Debug, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct WebhookSettings {
    /// `http(s)://` and a domain name or IPv4 address.
    #[schema(
        example = "https://deployer.example.com/hooks/release-pilot",
        max_length = 2000,
        pattern = "^https?://(((25[0-5]|2[0-4][0-9]|1[0-9]{2}|[1-9]?[0-9])\\.){3}(25[0-5]|2[0-4][0-9]|1[0-9]{2}|[1-9]?[0-9])|([A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?\\.)*[A-Za-z]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?)(:(6553[0-5]|655[0-2][0-9]|65[0-4][0-9]{2}|6[0-4][0-9]{3}|[1-5][0-9]{4}|[1-9][0-9]{0,3}|0))?([/?#][!-~]*)?$"
    )]
    pub url: String,
    /// Per attempt, 1-120 seconds; default 10.
    #[serde(default, deserialize_with = "opt_whole_number", skip_serializing_if = "Option::is_none")]
    #[schema(minimum = 1, maximum = 120)]
    pub timeout_seconds: Option<i64>,
    /// 1-10; default 3.
    #[serde(default, deserialize_with = "opt_whole_number", skip_serializing_if = "Option::is_none")]
    #[schema(minimum = 1, maximum = 10)]
    pub max_attempts: Option<i64>,
}

impl WebhookSettings {
    fn check(&self) -> Result<(), Problem> {
        check::webhook_url("driver_config.url", &self.url)?;
        range("driver_config.timeout_seconds", self.timeout_seconds, 1, 120)?;
        range("driver_config.max_attempts", self.max_attempts, 1, 10)?;
        Ok(())
    }
}

/// Which requests the router sends to the app.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RouteMatch {
    /// Host header to match; empty or absent: any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(max_length = 253, pattern = r"^[^\u0000-\u001f\u007f-\u009f]*$")]
    pub host: Option<String>,
    /// Default `/`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(max_length = 2000, pattern = r"^/[^\u0000-\u001f\u007f-\u009f]*$", example = "/")]
    pub path_prefix: Option<String>,
}

/// Upstream addresses (`host:port`) of each version.
#[derive(Debug, Serialize, Deserialize)]
pub struct Upstreams(pub BTreeMap<String, Vec<String>>);

impl PartialSchema for Upstreams {
    fn schema() -> RefOr<Schema> {
        ObjectBuilder::new()
            .description(Some("Upstream addresses (`host:port`) of each version."))
            .additional_properties(Some(
                ArrayBuilder::new()
                    .items(
                        ObjectBuilder::new().schema_type(Type::String).max_length(Some(300)).pattern(Some(
                            r"^[^\u0000-\u001f\u007f-\u009f]*:[^\u0000-\u001f\u007f-\u009f]*$",
                        )),
                    )
                    .min_items(Some(1)),
            ))
            .examples([serde_json::json!({"1.4.0": ["10.0.0.7:8080"], "1.5.0": ["10.0.0.9:8080"]})])
            .into()
    }
}

impl ToSchema for Upstreams {}

/// Settings of the `router` driver: Release Pilot's router splits the app's traffic between
/// the versions' upstreams.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RouterSettings {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub route: Option<RouteMatch>,
    pub upstreams: Upstreams,
}

impl RouterSettings {
    /// Checks the settings and fills in the route's defaults (the service needs them spelled out).
    fn check(&mut self) -> Result<(), Problem> {
        let route = self.route.get_or_insert(RouteMatch { host: None, path_prefix: None });
        route.path_prefix.get_or_insert_with(|| "/".to_owned());
        if let Some(route) = &self.route {
            if let Some(host) = &route.host {
                check::text("driver_config.route.host", host, 253, false)?;
            }
            if let Some(prefix) = &route.path_prefix {
                if !prefix.starts_with('/') {
                    return Err(Problem::validation("driver_config.route.path_prefix must start with /"));
                }
                check::text("driver_config.route.path_prefix", prefix, 2000, false)?;
            }
        }
        for (version, addresses) in &self.upstreams.0 {
            if addresses.is_empty() {
                return Err(Problem::validation(format!("driver_config.upstreams of {version} are empty")));
            }
            for address in addresses {
                check::text("driver_config.upstreams address", address, 300, false)?;
                if !address.contains(':') {
                    return Err(Problem::validation(format!("upstream {address:?} must be host:port")));
                }
            }
        }
        Ok(())
    }
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum WebhookDriver {
    Webhook,
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum RouterDriver {
    Router,
}

/// A target deploying through a webhook.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct WebhookTarget {
    pub driver: WebhookDriver,
    pub driver_config: WebhookSettings,
    /// Default `canary`.
    pub default_strategy: Option<Strategy>,
    #[serde(default)]
    pub canary_steps: CanarySteps,
    /// Signing secret (Standard Webhooks: `whsec_` and base64). Absent: keep the current one; a
    /// new target without one gets a generated secret, returned once.
    #[schema(
        format = Password,
        pattern = "^(whsec_)?([A-Za-z0-9+/]{4})*([A-Za-z0-9+/][AQgw]==|[A-Za-z0-9+/]{2}[AEIMQUYcgkosw048]=|[A-Za-z0-9+/]{4})$"
    )]
    pub webhook_secret: Option<String>,
}

/// A target deploying through Release Pilot's router.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RouterTarget {
    pub driver: RouterDriver,
    pub driver_config: RouterSettings,
    /// Default `canary`.
    pub default_strategy: Option<Strategy>,
    #[serde(default)]
    pub canary_steps: CanarySteps,
}

/// A target: the driver and its settings, the default strategy and canary steps.
#[derive(Debug, Serialize, ToSchema)]
#[serde(untagged)]
pub enum PutTargetRequest {
    Webhook(WebhookTarget),
    Router(RouterTarget),
}

impl<'de> Deserialize<'de> for PutTargetRequest {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let value = serde_json::Value::deserialize(deserializer)?;
        if !value.is_object() {
            return Err(D::Error::custom("expected an object"));
        }
        match value.get("driver") {
            None => Err(D::Error::missing_field("driver")),
            Some(serde_json::Value::String(driver)) if driver == "webhook" => {
                serde_json::from_value(value).map(Self::Webhook).map_err(D::Error::custom)
            }
            Some(serde_json::Value::String(driver)) if driver == "router" => {
                serde_json::from_value(value).map(Self::Router).map_err(D::Error::custom)
            }
            Some(other) => Err(D::Error::custom(format!(
                "driver: unknown driver {other}, expected `webhook` or `router`"
            ))),
        }
    }
}

impl PutTargetRequest {
    pub fn into_pb(self, app: String, environment: String) -> Result<pb::PutTargetRequest, Problem> {
        let (driver, config, strategy, steps, secret) = match self {
            PutTargetRequest::Webhook(t) => {
                t.driver_config.check()?;
                if t.webhook_secret.as_deref() == Some("") {
                    return Err(Problem::validation(
                        "webhook_secret must not be empty; omit it to keep the current one",
                    ));
                }
                let config = serde_json::to_string(&t.driver_config).map_err(|_| Problem::internal())?;
                ("webhook", config, t.default_strategy, t.canary_steps, t.webhook_secret)
            }
            PutTargetRequest::Router(mut t) => {
                t.driver_config.check()?;
                let config = serde_json::to_string(&t.driver_config).map_err(|_| Problem::internal())?;
                ("router", config, t.default_strategy, t.canary_steps, None)
            }
        };
        Ok(pb::PutTargetRequest {
            app,
            environment,
            driver: driver.to_owned(),
            driver_config_json: config,
            default_strategy: strategy.map(|s| s.as_str().to_owned()).unwrap_or_default(),
            canary_steps: steps.to_pb(),
            webhook_secret: secret.unwrap_or_default(),
        })
    }
}

#[derive(Debug, Serialize, ToSchema)]
pub struct PutTargetResponse {
    pub target: Target,
    /// The generated webhook signing secret, present only when one was generated: store it now.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(format = Password)]
    pub generated_secret: Option<String>,
}

// ---------------------------------------------------------------------------------- releases

/// A commit going into a release. Conventional Commits (`feat: …`, `fix: …`, `feat!: …` or a
/// `BREAKING CHANGE:` footer) decide the version bump; other commits are listed but ignored.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Commit {
    #[serde(default)]
    #[schema(example = "9fceb02", max_length = 64, pattern = r"^[^\u0000-\u001f\u007f-\u009f]*$")]
    pub sha: String,
    /// Full message: subject, body and footers.
    #[schema(
        example = "feat(cart): keep the basket across sessions",
        max_length = 20000,
        pattern = r"^[^\u0000-\u0008\u000b\u000c\u000e-\u001f\u007f-\u009f]*$"
    )]
    pub message: String,
    #[serde(default)]
    #[schema(max_length = 200, pattern = r"^[^\u0000-\u001f\u007f-\u009f]*$")]
    pub author: String,
    #[serde(serialize_with = "crate::dto::rfc3339::option")]
    pub timestamp: Option<DateTime<Utc>>,
}

impl Commit {
    fn to_pb(&self) -> pb::Commit {
        pb::Commit {
            sha: self.sha.clone(),
            message: self.message.clone(),
            author: self.author.clone(),
            timestamp: self.timestamp.map(rp_proto::timestamp),
        }
    }
}

impl From<pb::Commit> for Commit {
    fn from(c: pb::Commit) -> Self {
        Self { sha: c.sha, message: c.message, author: c.author, timestamp: time(c.timestamp) }
    }
}

/// The fields of a release to create (or preview).
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ReleaseInput {
    /// Explicit semantic version (a leading `v` is dropped); absent: computed from `commits`.
    #[schema(
        example = "1.4.0",
        pattern = r"^v?(0|[1-9][0-9]{0,18})\.(0|[1-9][0-9]{0,18})\.(0|[1-9][0-9]{0,18})(-(0|[1-9][0-9]*|[0-9]*[A-Za-z-][0-9A-Za-z-]*)(\.(0|[1-9][0-9]*|[0-9]*[A-Za-z-][0-9A-Za-z-]*))*)?(\+[0-9A-Za-z-]+(\.[0-9A-Za-z-]+)*)?$"
    )]
    pub version: Option<String>,
    /// Commits since the previous release; required without `version`.
    #[serde(default)]
    #[schema(max_items = 5000)]
    pub commits: Vec<Commit>,
    #[serde(default)]
    #[schema(
        example = "registry.example.com/checkout",
        max_length = 500,
        pattern = r"^[^\u0000-\u001f\u007f-\u009f]*$"
    )]
    pub artifact_image: String,
    #[serde(default)]
    #[schema(pattern = "^(sha256:[0-9a-f]{64})?$")]
    pub artifact_digest: String,
    /// Pre-release identifier of a computed version: `rc` makes `1.3.0-rc.1`, then `1.3.0-rc.2`.
    #[schema(example = "rc", pattern = "^(0|[1-9][0-9]*|[0-9]*[A-Za-z-][0-9A-Za-z-]*)$")]
    pub pre_release: Option<String>,
}

impl ReleaseInput {
    pub fn into_pb(self, app: String, idempotency_key: String) -> Result<pb::CreateReleaseRequest, Problem> {
        match &self.version {
            Some(version) => check::semver("version", version)?,
            None if self.commits.is_empty() => {
                return Err(Problem::validation("give a version, or the commits to compute it from"));
            }
            None => {}
        }
        if self.commits.len() > 5000 {
            return Err(Problem::validation("at most 5000 commits per release"));
        }
        for commit in &self.commits {
            check::text("commit sha", &commit.sha, 64, false)?;
            check::text("commit message", &commit.message, 20_000, true)?;
            check::text("commit author", &commit.author, 200, false)?;
        }
        check::text("artifact_image", &self.artifact_image, 500, false)?;
        check::digest("artifact_digest", &self.artifact_digest)?;
        if let Some(pre) = &self.pre_release {
            check::pre_release("pre_release", pre)?;
        }
        Ok(pb::CreateReleaseRequest {
            app,
            version: self.version.unwrap_or_default(),
            commits: self.commits.iter().map(Commit::to_pb).collect(),
            artifact_image: self.artifact_image,
            artifact_digest: self.artifact_digest,
            pre_release: self.pre_release.unwrap_or_default(),
            idempotency_key,
        })
    }
}

/// Body of `POST /api/v1/apps/{app}/releases` (and `/preview`): a `version`, or the `commits`
/// to compute it from, or both.
pub struct CreateReleaseRequest;

impl PartialSchema for CreateReleaseRequest {
    fn schema() -> RefOr<Schema> {
        let version = ObjectBuilder::new()
            .required("version")
            .property("version", ObjectBuilder::new().schema_type(Type::String));
        let commits = ObjectBuilder::new().required("commits").property(
            "commits",
            ArrayBuilder::new().items(ObjectBuilder::new().schema_type(Type::Object)).min_items(Some(1)),
        );
        AllOfBuilder::new()
            .description(Some(
                "A release: an explicit `version`, or the `commits` to compute it from (Conventional Commits), or both.",
            ))
            .item(ReleaseInput::schema())
            .item(AnyOfBuilder::new().item(version).item(commits))
            .examples([serde_json::json!({
                "commits": [{"sha": "9fceb02", "message": "feat(cart): keep the basket across sessions", "author": "dev@example.com"}],
                "artifact_image": "registry.example.com/checkout",
                "artifact_digest": format!("sha256:{}", "0".repeat(64))
            })])
            .into()
    }
}

impl ToSchema for CreateReleaseRequest {
    fn name() -> Cow<'static, str> {
        Cow::Borrowed("CreateReleaseRequest")
    }

    fn schemas(schemas: &mut Vec<(String, RefOr<Schema>)>) {
        <ReleaseInput as ToSchema>::schemas(schemas);
    }
}

/// The latest result of a quality check of a release.
#[derive(Debug, Serialize, ToSchema)]
pub struct QualityCheck {
    pub id: String,
    pub release_id: String,
    pub name: String,
    #[schema(value_type = CheckStatus)]
    pub status: String,
    pub value: Option<f64>,
    pub url: Option<String>,
    pub reported_by: String,
    #[serde(serialize_with = "crate::dto::rfc3339::option")]
    pub reported_at: Option<DateTime<Utc>>,
}

impl From<pb::QualityCheck> for QualityCheck {
    fn from(c: pb::QualityCheck) -> Self {
        Self {
            id: c.id,
            release_id: c.release_id,
            name: c.name,
            status: c.status,
            value: c.value,
            url: non_empty(c.url),
            reported_by: c.reported_by,
            reported_at: time(c.reported_at),
        }
    }
}

/// A release with its commits, changelog and quality checks.
#[derive(Debug, Serialize, ToSchema)]
pub struct Release {
    pub id: String,
    pub app: String,
    #[schema(example = "1.4.0")]
    pub version: String,
    /// `major`, `minor`, `patch` (computed) or `explicit`.
    pub bump: String,
    pub artifact_image: Option<String>,
    pub artifact_digest: Option<String>,
    pub commits: Vec<Commit>,
    /// Markdown, grouped like release-please.
    pub changelog: String,
    /// The latest result of each check.
    pub quality_checks: Vec<QualityCheck>,
    pub created_by: String,
    #[serde(serialize_with = "crate::dto::rfc3339::option")]
    pub created_at: Option<DateTime<Utc>>,
}

impl From<pb::Release> for Release {
    fn from(r: pb::Release) -> Self {
        Self {
            id: r.id,
            app: r.app,
            version: r.version,
            bump: r.bump,
            artifact_image: non_empty(r.artifact_image),
            artifact_digest: non_empty(r.artifact_digest),
            commits: r.commits.into_iter().map(Commit::from).collect(),
            changelog: r.changelog,
            quality_checks: r.quality_checks.into_iter().map(QualityCheck::from).collect(),
            created_by: r.created_by,
            created_at: time(r.created_at),
        }
    }
}

/// A release in a list (`GET /api/v1/apps/{app}/releases/{version}` has its commits, changelog
/// and quality checks).
#[derive(Debug, Serialize, ToSchema)]
pub struct ReleaseSummary {
    pub id: String,
    pub app: String,
    pub version: String,
    pub bump: String,
    pub artifact_image: Option<String>,
    pub artifact_digest: Option<String>,
    pub commit_count: usize,
    pub created_by: String,
    #[serde(serialize_with = "crate::dto::rfc3339::option")]
    pub created_at: Option<DateTime<Utc>>,
}

impl From<pb::Release> for ReleaseSummary {
    fn from(r: pb::Release) -> Self {
        Self {
            id: r.id,
            app: r.app,
            version: r.version,
            bump: r.bump,
            artifact_image: non_empty(r.artifact_image),
            artifact_digest: non_empty(r.artifact_digest),
            commit_count: r.commit_count.max(0) as usize,
            created_by: r.created_by,
            created_at: time(r.created_at),
        }
    }
}

#[derive(Debug, Serialize, ToSchema)]
pub struct ReleasePage {
    /// Newest first.
    pub items: Vec<ReleaseSummary>,
    pub next_page_token: Option<String>,
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ReleaseListQuery {
    /// App name or id.
    pub app: String,
    /// 1-200, default 50.
    #[param(minimum = 1, maximum = 200)]
    pub page_size: Option<i32>,
    /// `next_page_token` of the previous page.
    #[param(format = Uuid)]
    pub page_token: Option<String>,
}

/// What creating a release with these commits would give.
#[derive(Debug, Serialize, ToSchema)]
pub struct ReleasePreview {
    pub version: String,
    /// The app's highest version so far.
    pub previous_version: Option<String>,
    /// `major`, `minor`, `patch` or `explicit`.
    pub bump: String,
    pub changelog: String,
    /// Commits that do not follow Conventional Commits (they do not affect the version).
    pub ignored_commits: i32,
}

impl From<pb::ReleasePreview> for ReleasePreview {
    fn from(p: pb::ReleasePreview) -> Self {
        Self {
            version: p.version,
            previous_version: non_empty(p.previous_version),
            bump: p.bump,
            changelog: p.changelog,
            ignored_commits: p.ignored_commits,
        }
    }
}

/// A quality-check result (CI, scanners, QA).
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ReportQualityCheckRequest {
    #[schema(example = "coverage", pattern = "^[!-~]([ -~]{0,98}[!-~])?$")]
    pub name: String,
    pub status: CheckStatus,
    #[schema(example = 87.5)]
    pub value: Option<f64>,
    /// Link to the report.
    #[serde(default)]
    #[schema(max_length = 2000, pattern = r"^[^\u0000-\u001f\u007f-\u009f]*$")]
    pub url: String,
}

impl ReportQualityCheckRequest {
    pub fn into_pb(self, app: String, version: String) -> Result<pb::ReportQualityCheckRequest, Problem> {
        check::check_name("name", &self.name)?;
        check::text("url", &self.url, 2000, false)?;
        Ok(pb::ReportQualityCheckRequest {
            app,
            version,
            name: self.name,
            status: self.status.as_str().to_owned(),
            value: self.value,
            url: self.url,
        })
    }
}

// ------------------------------------------------------------------------------- deployments

#[derive(Debug, Serialize, ToSchema)]
pub struct DeploymentStep {
    pub index: i32,
    /// `weight`, `approval` (blue-green switch approval) or `switch`.
    pub kind: String,
    /// Percent of traffic on the new version during the step.
    pub weight: i32,
    pub hold_seconds: i64,
    pub analysis: bool,
    /// `pending`, `running`, `completed` or `skipped`.
    pub status: String,
    #[serde(serialize_with = "crate::dto::rfc3339::option")]
    pub started_at: Option<DateTime<Utc>>,
    #[serde(serialize_with = "crate::dto::rfc3339::option")]
    pub completed_at: Option<DateTime<Utc>>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct Approval {
    pub approver_id: String,
    pub approver_email: String,
    #[schema(value_type = ApprovalDecision)]
    pub decision: String,
    pub comment: String,
    #[serde(serialize_with = "crate::dto::rfc3339::option")]
    pub at: Option<DateTime<Utc>>,
}

/// A deployment of a release to an environment. The `ETag` of responses carrying one is its
/// revision, for `If-Match`.
#[derive(Debug, Serialize, ToSchema)]
pub struct Deployment {
    pub id: String,
    pub app: String,
    pub environment: String,
    pub release_id: String,
    pub version: String,
    /// The version serving before (the rollback target).
    pub previous_version: Option<String>,
    #[schema(value_type = DeploymentStrategy)]
    pub strategy: String,
    #[schema(value_type = DeploymentState)]
    pub state: String,
    /// Within `in_progress`: `applying`, `holding`, `analyzing`, `awaiting_driver`,
    /// `awaiting_approval` (blue-green switch) or `paused`.
    pub phase: Option<String>,
    pub current_step: i32,
    pub steps: Vec<DeploymentStep>,
    /// Percent of traffic on the new version.
    pub weight: i32,
    pub approvals: Vec<Approval>,
    pub required_approvals: i32,
    pub created_by: String,
    #[serde(serialize_with = "crate::dto::rfc3339::option")]
    pub created_at: Option<DateTime<Utc>>,
    #[serde(serialize_with = "crate::dto::rfc3339::option")]
    pub started_at: Option<DateTime<Utc>>,
    #[serde(serialize_with = "crate::dto::rfc3339::option")]
    pub finished_at: Option<DateTime<Utc>>,
    /// When the engine acts next (end of a hold, lease expiry).
    #[serde(serialize_with = "crate::dto::rfc3339::option")]
    pub next_action_at: Option<DateTime<Utc>>,
    pub failure_reason: Option<String>,
    /// Increases with every change; send it as `If-Match` to act only on what you saw.
    pub revision: i64,
}

impl From<pb::Deployment> for Deployment {
    fn from(d: pb::Deployment) -> Self {
        Self {
            id: d.id,
            app: d.app,
            environment: d.environment,
            release_id: d.release_id,
            version: d.version,
            previous_version: non_empty(d.previous_version),
            strategy: d.strategy,
            state: d.state,
            phase: non_empty(d.phase),
            current_step: d.current_step,
            steps: d
                .steps
                .into_iter()
                .map(|s| DeploymentStep {
                    index: s.index,
                    kind: s.kind,
                    weight: s.weight,
                    hold_seconds: s.hold_seconds,
                    analysis: s.analysis,
                    status: s.status,
                    started_at: time(s.started_at),
                    completed_at: time(s.completed_at),
                })
                .collect(),
            weight: d.weight,
            approvals: d
                .approvals
                .into_iter()
                .map(|a| Approval {
                    approver_id: a.approver_id,
                    approver_email: a.approver_email,
                    decision: a.decision,
                    comment: a.comment,
                    at: time(a.at),
                })
                .collect(),
            required_approvals: d.required_approvals,
            created_by: d.created_by,
            created_at: time(d.created_at),
            started_at: time(d.started_at),
            finished_at: time(d.finished_at),
            next_action_at: time(d.next_action_at),
            failure_reason: non_empty(d.failure_reason),
            revision: d.revision,
        }
    }
}

#[derive(Debug, Serialize, ToSchema)]
pub struct DeploymentPage {
    /// Newest first.
    pub items: Vec<Deployment>,
    pub next_page_token: Option<String>,
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct DeploymentListQuery {
    /// App name or id; empty or absent: every app.
    pub app: Option<String>,
    /// Environment name or id; empty or absent: every environment.
    pub environment: Option<String>,
    pub state: Option<DeploymentState>,
    /// 1-200, default 50.
    #[param(minimum = 1, maximum = 200)]
    pub page_size: Option<i32>,
    /// `next_page_token` of the previous page.
    #[param(format = Uuid)]
    pub page_token: Option<String>,
}

fn seconds(field: &str, value: Option<i64>) -> Result<i64, Problem> {
    Ok(range(field, value, 0, 604_800)?.unwrap_or(0))
}

/// A deployment to create. The environment's gates apply: deployer roles, freeze windows,
/// promotion order, quality thresholds; then approvals.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateDeploymentRequest {
    /// App name or id.
    #[schema(example = "checkout")]
    pub app: String,
    /// Environment name or id.
    #[schema(example = "staging")]
    pub environment: String,
    /// The release to deploy.
    #[schema(example = "1.4.0", min_length = 1)]
    pub version: String,
    /// Default: the target's default strategy.
    pub strategy: Option<Strategy>,
    /// `canary`: the steps; default: the target's.
    #[serde(default)]
    pub steps: CanarySteps,
    /// `all_at_once` and `hotfix`: how long to watch at 100%, 0-604800 s; 0 or absent: 300
    /// (hotfix 60).
    #[serde(default, deserialize_with = "opt_whole_number")]
    #[schema(minimum = 0, maximum = 604800)]
    pub verification_seconds: Option<i64>,
    /// `blue_green`: analysis of the new version before the switch; 0 or absent: 300.
    #[serde(default, deserialize_with = "opt_whole_number")]
    #[schema(minimum = 0, maximum = 604800)]
    pub pre_promotion_seconds: Option<i64>,
    /// `blue_green`: wait for an approval before switching.
    #[serde(default)]
    pub approval_before_switch: bool,
    /// `blue_green`: how long the old version stays ready after the switch; 0 or absent: 600.
    #[serde(default, deserialize_with = "opt_whole_number")]
    #[schema(minimum = 0, maximum = 604800)]
    pub rollback_window_seconds: Option<i64>,
}

impl CreateDeploymentRequest {
    pub fn into_pb(self, idempotency_key: String) -> Result<pb::CreateDeploymentRequest, Problem> {
        if self.version.is_empty() {
            return Err(Problem::validation("version must not be empty"));
        }
        Ok(pb::CreateDeploymentRequest {
            verification_seconds: seconds("verification_seconds", self.verification_seconds)?,
            pre_promotion_seconds: seconds("pre_promotion_seconds", self.pre_promotion_seconds)?,
            rollback_window_seconds: seconds("rollback_window_seconds", self.rollback_window_seconds)?,
            app: self.app,
            environment: self.environment,
            version: self.version,
            release_id: String::new(),
            strategy: self.strategy.map(|s| s.as_str().to_owned()).unwrap_or_default(),
            steps: self.steps.to_pb(),
            approval_before_switch: self.approval_before_switch,
            idempotency_key,
        })
    }
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ApprovalRequest {
    pub decision: ApprovalDecision,
    #[serde(default)]
    #[schema(max_length = 2000, pattern = r"^[^\u0000-\u0008\u000b\u000c\u000e-\u001f\u007f-\u009f]*$")]
    pub comment: String,
}

/// Why (recorded in the audit log and the deployment's events).
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ReasonRequest {
    #[serde(default)]
    #[schema(
        example = "error rate looks odd",
        max_length = 500,
        pattern = r"^[^\u0000-\u001f\u007f-\u009f]*$"
    )]
    pub reason: String,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PromoteRequest {
    /// Straight to 100% instead of the next step.
    #[serde(default)]
    pub full: bool,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RollbackDeploymentRequest {
    /// An earlier version that succeeded in this environment; default: the one serving before.
    pub target_version: Option<String>,
    #[serde(default)]
    #[schema(max_length = 1000, pattern = r"^[^\u0000-\u001f\u007f-\u009f]*$")]
    pub reason: String,
}

/// Completion report of an external deployer for a step it accepted (HTTP 202).
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct DriverResultRequest {
    /// The step the deployer was asked to apply (`step` of its call).
    #[serde(deserialize_with = "whole_number")]
    #[schema(minimum = 0, maximum = 1000)]
    pub step: i64,
    pub status: DriverOutcome,
    #[serde(default)]
    #[schema(max_length = 2000, pattern = r"^[^\u0000-\u001f\u007f-\u009f]*$")]
    pub message: String,
}

impl DriverResultRequest {
    pub fn into_pb(self, deployment_id: String) -> Result<pb::DriverResultRequest, Problem> {
        check::range("step", self.step, 0, 1000)?;
        Ok(pb::DriverResultRequest {
            deployment_id,
            step: self.step as i32,
            status: self.status.as_str().to_owned(),
            message: self.message,
        })
    }
}

/// One Server-Sent Event of `GET /api/v1/deployments/{id}/events`: `event: deployment` with the
/// deployment as JSON, or `event: error` with a problem document, after which the stream ends.
#[derive(Debug, Serialize, ToSchema)]
pub struct DeploymentEvent {
    #[schema(value_type = DeploymentEventKind)]
    pub event: String,
    /// JSON: a `Deployment`, or a `Problem` for `error`.
    #[schema(content_media_type = "application/json")]
    pub data: String,
    /// The deployment's revision.
    pub id: Option<String>,
}

#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum DeploymentEventKind {
    Deployment,
    Error,
}

// -------------------------------------------------------------------------------- status

/// What runs where: one app in one environment.
#[derive(Debug, Serialize, ToSchema)]
pub struct StatusEntry {
    pub app: String,
    pub environment: String,
    /// The version serving (last succeeded deployment); null before the first.
    pub version: Option<String>,
    #[serde(serialize_with = "crate::dto::rfc3339::option")]
    pub deployed_at: Option<DateTime<Utc>>,
    /// The deployment in flight, if any.
    pub active: Option<Deployment>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct StatusList {
    /// Apps by name, environments in pipeline order.
    pub items: Vec<StatusEntry>,
}

impl From<pb::StatusResponse> for StatusList {
    fn from(status: pb::StatusResponse) -> Self {
        Self {
            items: status
                .entries
                .into_iter()
                .map(|e| StatusEntry {
                    app: e.app,
                    environment: e.environment,
                    version: non_empty(e.version),
                    deployed_at: time(e.deployed_at),
                    active: e.active.map(Deployment::from),
                })
                .collect(),
        }
    }
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct StatusQuery {
    /// App name or id; absent: every app.
    pub app: Option<String>,
}

// ---------------------------------------------------------------------------- freeze windows

/// A period in which only hotfixes may deploy.
#[derive(Debug, Serialize, ToSchema)]
pub struct FreezeWindow {
    pub id: String,
    /// Null: every environment.
    pub environment: Option<String>,
    #[serde(serialize_with = "crate::dto::rfc3339::option")]
    pub starts_at: Option<DateTime<Utc>>,
    #[serde(serialize_with = "crate::dto::rfc3339::option")]
    pub ends_at: Option<DateTime<Utc>>,
    pub reason: String,
    pub created_by: String,
}

impl From<pb::FreezeWindow> for FreezeWindow {
    fn from(w: pb::FreezeWindow) -> Self {
        Self {
            id: w.id,
            environment: non_empty(w.environment),
            starts_at: time(w.starts_at),
            ends_at: time(w.ends_at),
            reason: w.reason,
            created_by: w.created_by,
        }
    }
}

#[derive(Debug, Serialize, ToSchema)]
pub struct FreezeWindowList {
    /// By start.
    pub items: Vec<FreezeWindow>,
}

/// The latest end a freeze window may have.
fn last_representable() -> DateTime<Utc> {
    DateTime::from_timestamp(253_402_300_799, 0).unwrap_or(DateTime::<Utc>::MAX_UTC)
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateFreezeWindowRequest {
    /// Environment name or id; absent or empty: every environment.
    #[schema(example = "prod")]
    pub environment: Option<String>,
    /// Default: now.
    pub starts_at: Option<DateTime<Utc>>,
    /// Length of the freeze, 1 second to 366 days; it must end before the year 10000.
    #[serde(deserialize_with = "whole_number")]
    #[schema(minimum = 1, maximum = 31622400, example = 172800)]
    pub duration_seconds: i64,
    #[serde(default)]
    #[schema(
        example = "end-of-year freeze",
        max_length = 500,
        pattern = r"^[^\u0000-\u001f\u007f-\u009f]*$"
    )]
    pub reason: String,
}

impl CreateFreezeWindowRequest {
    pub fn into_pb(self) -> Result<pb::CreateFreezeWindowRequest, Problem> {
        check::range("duration_seconds", self.duration_seconds, 1, 31_622_400)?;
        check::text("reason", &self.reason, 500, false)?;
        let starts = self.starts_at.unwrap_or_else(Utc::now);
        let ends = starts + chrono::Duration::seconds(self.duration_seconds);
        if ends > last_representable() {
            return Err(Problem::validation("the freeze window must end before the year 10000"));
        }
        Ok(pb::CreateFreezeWindowRequest {
            environment: self.environment.unwrap_or_default(),
            starts_at: Some(rp_proto::timestamp(starts)),
            ends_at: Some(rp_proto::timestamp(ends)),
            reason: self.reason,
        })
    }
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct FreezeWindowQuery {
    /// Include windows that have ended.
    #[serde(default)]
    pub include_past: bool,
}

// ------------------------------------------------------------------------------------- audit

/// One entry of the hash-chained audit log.
#[derive(Debug, Serialize, ToSchema)]
pub struct AuditEntry {
    pub sequence: i64,
    pub id: String,
    #[serde(serialize_with = "crate::dto::rfc3339::option")]
    pub at: Option<DateTime<Utc>>,
    pub actor_subject: String,
    pub actor_email: String,
    /// `user`, `api_token` or `system`.
    pub actor_kind: String,
    pub request_id: Option<String>,
    /// e.g. `deployment.create`, `auth.user_created`.
    pub action: String,
    pub resource_type: String,
    pub resource_id: String,
    /// The resource before the change (absent on creation).
    #[schema(value_type = Option<Object>)]
    pub before: Option<serde_json::Value>,
    /// The resource after the change (absent on deletion).
    #[schema(value_type = Option<Object>)]
    pub after: Option<serde_json::Value>,
    pub previous_hash: String,
    pub hash: String,
}

fn json_field(text: &str) -> Option<serde_json::Value> {
    serde_json::from_str(text).ok()
}

impl From<pb::AuditEntry> for AuditEntry {
    fn from(e: pb::AuditEntry) -> Self {
        Self {
            sequence: e.sequence,
            id: e.id,
            at: time(e.at),
            actor_subject: e.actor_subject,
            actor_email: e.actor_email,
            actor_kind: e.actor_kind,
            request_id: non_empty(e.request_id),
            action: e.action,
            resource_type: e.resource_type,
            resource_id: e.resource_id,
            before: json_field(&e.before_json),
            after: json_field(&e.after_json),
            previous_hash: e.previous_hash,
            hash: e.hash,
        }
    }
}

#[derive(Debug, Serialize, ToSchema)]
pub struct AuditPage {
    /// Oldest first.
    pub items: Vec<AuditEntry>,
    pub next_page_token: Option<String>,
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct AuditQuery {
    /// Actor id or e-mail.
    #[param(max_length = 254, pattern = r"^[^\u0000-\u001f\u007f-\u009f]*$")]
    pub actor: Option<String>,
    /// e.g. `deployment`, `release`, `app`, `user`.
    #[param(max_length = 100, pattern = r"^[^\u0000-\u001f\u007f-\u009f]*$")]
    pub resource_type: Option<String>,
    #[param(max_length = 200, pattern = r"^[^\u0000-\u001f\u007f-\u009f]*$")]
    pub resource_id: Option<String>,
    /// Entries at or after this time (RFC 3339).
    pub since: Option<DateTime<Utc>>,
    /// Entries before this time (RFC 3339).
    pub until: Option<DateTime<Utc>>,
    /// 1-1000, default 100.
    #[param(minimum = 1, maximum = 1000)]
    pub page_size: Option<i32>,
    /// `next_page_token` of the previous page.
    #[param(pattern = "^[0-9]{1,18}$")]
    pub page_token: Option<String>,
}

impl AuditQuery {
    pub fn into_pb(self) -> Result<pb::ListAuditEntriesRequest, Problem> {
        let text = |field: &str, value: &Option<String>, max| match value {
            Some(v) => check::text(field, v, max, false),
            None => Ok(()),
        };
        text("actor", &self.actor, 254)?;
        text("resource_type", &self.resource_type, 100)?;
        text("resource_id", &self.resource_id, 200)?;
        let page_size = match self.page_size {
            None => 0,
            Some(n) => check::range("page_size", n.into(), 1, 1000).map(|()| n)?,
        };
        if let Some(token) = &self.page_token
            && (!(1..=18).contains(&token.len()) || !token.bytes().all(|b| b.is_ascii_digit()))
        {
            return Err(Problem::validation("page_token must be the next_page_token of a previous page"));
        }
        Ok(pb::ListAuditEntriesRequest {
            actor: self.actor.unwrap_or_default(),
            resource_type: self.resource_type.unwrap_or_default(),
            resource_id: self.resource_id.unwrap_or_default(),
            since: self.since.map(rp_proto::timestamp),
            until: self.until.map(rp_proto::timestamp),
            page_size,
            page_token: self.page_token.unwrap_or_default(),
        })
    }
}

/// The audit chain recomputed end to end.
#[derive(Debug, Serialize, ToSchema)]
pub struct AuditVerification {
    pub valid: bool,
    pub entries_checked: i64,
    /// First sequence number where the chain breaks.
    pub broken_at: Option<i64>,
    /// Why it breaks there.
    pub problem: Option<String>,
    /// Hash of the newest entry: record it elsewhere to detect truncation later.
    pub head_hash: String,
}

impl From<pb::VerifyAuditChainResponse> for AuditVerification {
    fn from(v: pb::VerifyAuditChainResponse) -> Self {
        Self {
            valid: v.valid,
            entries_checked: v.entries_checked,
            broken_at: (!v.valid && v.broken_at > 0).then_some(v.broken_at),
            problem: non_empty(v.problem),
            head_hash: v.head_hash,
        }
    }
}

// -------------------------------------------------------------------------------------- DORA

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct DoraQuery {
    /// App name or id.
    pub app: String,
    /// Environment name or id; default: the production environment.
    pub environment: Option<String>,
    /// 1-365, default 30.
    #[param(minimum = 1, maximum = 365)]
    pub window_days: Option<i32>,
}

/// The four DORA metrics of an app in an environment over a window.
#[derive(Debug, Serialize, ToSchema)]
pub struct DoraMetrics {
    pub app: String,
    pub environment: String,
    pub window_days: i32,
    /// Deployments in the window.
    pub deployments: i64,
    pub deployment_frequency_per_day: f64,
    /// Median first commit → success, seconds; 0 without data.
    pub lead_time_seconds: f64,
    pub failed_changes: i64,
    /// Share of deployments that failed or were rolled back, 0-1.
    pub change_failure_rate: f64,
    /// Median failure detected → recovered, seconds; 0 without data.
    pub time_to_restore_seconds: f64,
    pub restorations: i64,
}

impl From<pb::DoraMetrics> for DoraMetrics {
    fn from(m: pb::DoraMetrics) -> Self {
        Self {
            app: m.app,
            environment: m.environment,
            window_days: m.window_days,
            deployments: m.deployments,
            deployment_frequency_per_day: m.deployment_frequency_per_day,
            lead_time_seconds: m.lead_time_seconds,
            failed_changes: m.failed_changes,
            change_failure_rate: m.change_failure_rate,
            time_to_restore_seconds: m.time_to_restore_seconds,
            restorations: m.restorations,
        }
    }
}
