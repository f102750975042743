//! The notifier's shapes: channels (their secrets never leave the notifier), routing rules,
//! deliveries with their attempt log, dead letters, escalation policies and escalations.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use rp_proto::notifier::v1 as pb;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};
use utoipa::{IntoParams, ToSchema};

use super::{Severity, check, time};
use crate::problem::Problem;

/// The longest grouping window, repeat interval or escalation delay: a week.
const MAX_WINDOW_MS: i64 = 7 * 24 * 3600 * 1000;

fn non_empty(text: String) -> Option<String> {
    Some(text).filter(|t| !t.is_empty())
}

fn name(field: &str, value: &str, max: usize) -> Result<(), Problem> {
    if value.trim().is_empty() {
        return Err(Problem::validation(format!("{field} must not be blank")));
    }
    check::text(field, value, max, false)
}

fn uuid(field: &str, value: &str) -> Result<(), Problem> {
    uuid::Uuid::parse_str(value)
        .map(|_| ())
        .map_err(|_| Problem::validation(format!("{field} {value:?} is not a valid id")))
}

fn uuids(field: &str, values: &[String]) -> Result<(), Problem> {
    values.iter().try_for_each(|v| uuid(field, v))
}

fn texts(field: &str, values: &[String]) -> Result<(), Problem> {
    values.iter().try_for_each(|v| name(field, v, 200))
}

fn json_object(map: &Map<String, Value>) -> String {
    Value::Object(map.clone()).to_string()
}

// --------------------------------------------------------------------------------- channels

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum ChannelKind {
    Webhook,
    Slack,
    Email,
    Pagerduty,
}

impl ChannelKind {
    pub fn as_str(self) -> &'static str {
        match self {
            ChannelKind::Webhook => "webhook",
            ChannelKind::Slack => "slack",
            ChannelKind::Email => "email",
            ChannelKind::Pagerduty => "pagerduty",
        }
    }
}

/// A notification channel. Its secrets are stored encrypted and never returned: `secrets_set`
/// names the ones it has.
#[derive(Debug, Serialize, ToSchema)]
pub struct Channel {
    pub id: String,
    pub name: String,
    #[schema(value_type = ChannelKind)]
    pub kind: String,
    pub enabled: bool,
    /// Settings that are not secret. webhook: `url`; email: `smtp_host`, `smtp_port`, `tls`
    /// (none, starttls, tls), `username`, `from`, `to`; pagerduty: `api_url`, `source`.
    #[schema(value_type = Object)]
    pub config: Value,
    /// Names of the secrets set (webhook: signing_secret, authorization; slack: webhook_url;
    /// email: smtp_password; pagerduty: routing_key).
    pub secrets_set: Vec<String>,
    /// minijinja templates overriding the defaults (slack: title, text; email: subject, text,
    /// html; pagerduty: summary).
    pub templates: BTreeMap<String, String>,
    /// Attempts per minute at most; 0: no limit.
    pub rate_limit_per_minute: i32,
    /// Why the channel was disabled automatically (e.g. its receiver answered 410 Gone).
    pub disabled_reason: Option<String>,
    /// Signing secrets in use (webhooks): 1, or 2 while a rotated one still signs beside the new.
    pub active_signing_secrets: i32,
    #[serde(serialize_with = "crate::dto::rfc3339::option")]
    pub created_at: Option<DateTime<Utc>>,
    #[serde(serialize_with = "crate::dto::rfc3339::option")]
    pub updated_at: Option<DateTime<Utc>>,
}

impl From<pb::Channel> for Channel {
    fn from(c: pb::Channel) -> Self {
        Self {
            id: c.id,
            name: c.name,
            kind: c.kind,
            enabled: c.enabled,
            config: serde_json::from_str(&c.config_json).unwrap_or_else(|_| Value::Object(Map::new())),
            secrets_set: c.secrets_set,
            templates: c.templates.into_iter().collect(),
            rate_limit_per_minute: c.rate_limit_per_minute,
            disabled_reason: non_empty(c.disabled_reason),
            active_signing_secrets: c.active_signing_secrets,
            created_at: time(c.created_at),
            updated_at: time(c.updated_at),
        }
    }
}

#[derive(Debug, Serialize, ToSchema)]
pub struct ChannelList {
    pub items: Vec<Channel>,
}

/// A channel, and the webhook signing secret the notifier generated for it (`whsec_…`), shown
/// this once.
#[derive(Debug, Serialize, ToSchema)]
pub struct ChannelWithSecret {
    pub channel: Channel,
    pub signing_secret: Option<String>,
}

impl From<pb::ChannelWithSecret> for ChannelWithSecret {
    fn from(c: pb::ChannelWithSecret) -> Self {
        Self { channel: c.channel.unwrap_or_default().into(), signing_secret: non_empty(c.signing_secret) }
    }
}

/// A new channel. Hosts are checked against the SSRF guard: URLs and SMTP hosts that resolve to
/// loopback, private or link-local addresses are refused unless the notifier allows them.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateChannelRequest {
    #[schema(
        min_length = 1,
        max_length = 100,
        pattern = r"^[^\u0000-\u001f\u007f-\u009f]*\S[^\u0000-\u001f\u007f-\u009f]*$",
        example = "release-alerts"
    )]
    pub name: String,
    pub kind: ChannelKind,
    /// Settings by kind (see `Channel.config`).
    #[serde(default)]
    #[schema(value_type = Object, example = json!({"url": "https://hooks.example.com/release-pilot"}))]
    pub config: Map<String, Value>,
    /// Secrets by kind (see `Channel.secrets_set`). A webhook without `signing_secret` gets a
    /// generated one, returned once.
    #[serde(default)]
    pub secrets: BTreeMap<String, String>,
    #[serde(default)]
    pub templates: BTreeMap<String, String>,
    #[serde(default)]
    #[schema(minimum = 0, maximum = 100000)]
    pub rate_limit_per_minute: i32,
    #[serde(default = "enabled")]
    #[schema(default = true)]
    pub enabled: bool,
}

fn enabled() -> bool {
    true
}

fn check_secrets(secrets: &BTreeMap<String, String>) -> Result<(), Problem> {
    secrets.iter().try_for_each(|(key, value)| {
        check::text("secret name", key, 100, false)?;
        check::text(key, value, 4096, false)
    })
}

fn check_templates(templates: &BTreeMap<String, String>) -> Result<(), Problem> {
    templates.iter().try_for_each(|(key, value)| {
        check::text("template name", key, 100, false)?;
        check::text(key, value, 65536, true)
    })
}

impl CreateChannelRequest {
    pub fn into_pb(self) -> Result<pb::CreateChannelRequest, Problem> {
        name("name", &self.name, 100)?;
        check::range("rate_limit_per_minute", self.rate_limit_per_minute.into(), 0, 100_000)?;
        check_secrets(&self.secrets)?;
        check_templates(&self.templates)?;
        Ok(pb::CreateChannelRequest {
            name: self.name,
            kind: self.kind.as_str().into(),
            config_json: json_object(&self.config),
            secrets: self.secrets.into_iter().collect(),
            templates: self.templates.into_iter().collect(),
            rate_limit_per_minute: self.rate_limit_per_minute,
            disabled: !self.enabled,
        })
    }
}

/// Changes to a channel; what is absent stays.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct UpdateChannelRequest {
    #[schema(
        min_length = 1,
        max_length = 100,
        pattern = r"^[^\u0000-\u001f\u007f-\u009f]*\S[^\u0000-\u001f\u007f-\u009f]*$"
    )]
    pub name: Option<String>,
    /// Replaces the settings.
    #[schema(value_type = Option<Object>)]
    pub config: Option<Map<String, Value>>,
    /// Secrets to set; an empty value removes one; the others are kept.
    #[serde(default)]
    pub secrets: BTreeMap<String, String>,
    /// Replaces the template overrides.
    pub templates: Option<BTreeMap<String, String>>,
    #[schema(minimum = 0, maximum = 100000)]
    pub rate_limit_per_minute: Option<i32>,
    /// Enabling clears `disabled_reason`.
    pub enabled: Option<bool>,
}

impl UpdateChannelRequest {
    pub fn into_pb(self, id: String) -> Result<pb::UpdateChannelRequest, Problem> {
        uuid("id", &id)?;
        if let Some(value) = &self.name {
            name("name", value, 100)?;
        }
        if let Some(rate) = self.rate_limit_per_minute {
            check::range("rate_limit_per_minute", rate.into(), 0, 100_000)?;
        }
        check_secrets(&self.secrets)?;
        if let Some(templates) = &self.templates {
            check_templates(templates)?;
        }
        Ok(pb::UpdateChannelRequest {
            id,
            name: self.name,
            config_json: self.config.as_ref().map(json_object),
            secrets: self.secrets.into_iter().collect(),
            replace_templates: self.templates.is_some(),
            templates: self.templates.unwrap_or_default().into_iter().collect(),
            rate_limit_per_minute: self.rate_limit_per_minute,
            enabled: self.enabled,
        })
    }
}

/// A new signing secret for a webhook channel.
#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RotateSecretRequest {
    /// `whsec_` and base64 of 24-64 random bytes; generated when absent.
    #[schema(pattern = "^whsec_[A-Za-z0-9+/]{32,88}={0,2}$")]
    pub signing_secret: Option<String>,
}

// ------------------------------------------------------------------------------ deliveries

#[derive(Debug, Clone, Copy, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum DeliveryStatus {
    Grouping,
    Pending,
    Sending,
    Retrying,
    Delivered,
    Dead,
    Suppressed,
}

impl DeliveryStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            DeliveryStatus::Grouping => "grouping",
            DeliveryStatus::Pending => "pending",
            DeliveryStatus::Sending => "sending",
            DeliveryStatus::Retrying => "retrying",
            DeliveryStatus::Delivered => "delivered",
            DeliveryStatus::Dead => "dead",
            DeliveryStatus::Suppressed => "suppressed",
        }
    }
}

/// One attempt to deliver a message.
#[derive(Debug, Serialize, ToSchema)]
pub struct DeliveryAttempt {
    pub id: String,
    pub delivery_id: String,
    pub attempt: i32,
    #[serde(serialize_with = "crate::dto::rfc3339::option")]
    pub started_at: Option<DateTime<Utc>>,
    /// From sending to the answer.
    pub latency_ms: i64,
    /// The receiver's HTTP status (SMTP: 250 when accepted); null without an answer.
    pub status_code: Option<i32>,
    /// sending, success, failure, rate_limited, gone, refused, abandoned (its replica stopped;
    /// another retried), suppressed.
    pub outcome: String,
    pub error: Option<String>,
    /// The start of the receiver's answer.
    pub response_excerpt: Option<String>,
    /// The notifier replica that made it.
    pub replica: String,
}

impl From<pb::DeliveryAttempt> for DeliveryAttempt {
    fn from(a: pb::DeliveryAttempt) -> Self {
        Self {
            id: a.id,
            delivery_id: a.delivery_id,
            attempt: a.attempt,
            started_at: time(a.started_at),
            latency_ms: a.latency_ms,
            status_code: Some(a.status_code).filter(|c| *c != 0),
            outcome: a.outcome,
            error: non_empty(a.error),
            response_excerpt: non_empty(a.response_excerpt),
            replica: a.replica,
        }
    }
}

/// One message to one channel, carrying one event or a group of them.
#[derive(Debug, Serialize, ToSchema)]
pub struct Delivery {
    pub id: String,
    pub channel_id: String,
    pub channel_name: String,
    #[schema(value_type = ChannelKind)]
    pub channel_kind: String,
    #[schema(value_type = DeliveryStatus)]
    pub status: String,
    pub group_key: String,
    /// The events in the message; the first is the primary one.
    pub event_ids: Vec<String>,
    pub event_types: Vec<String>,
    pub event_type: String,
    pub subject: String,
    pub severity: String,
    pub app: Option<String>,
    pub environment: Option<String>,
    pub incident_id: Option<String>,
    pub escalation_id: Option<String>,
    /// Events suppressed or de-duplicated instead of joining this message.
    pub suppressed_events: i32,
    pub attempts: i32,
    #[serde(serialize_with = "crate::dto::rfc3339::option")]
    pub created_at: Option<DateTime<Utc>>,
    /// When the next attempt is due (grouping: when the group is sent).
    #[serde(serialize_with = "crate::dto::rfc3339::option")]
    pub due_at: Option<DateTime<Utc>>,
    #[serde(serialize_with = "crate::dto::rfc3339::option")]
    pub delivered_at: Option<DateTime<Utc>>,
    pub last_error: Option<String>,
    pub last_status_code: Option<i32>,
    /// Every attempt; only `GET /api/v1/deliveries/{id}` fills it.
    pub attempt_log: Vec<DeliveryAttempt>,
}

impl From<pb::Delivery> for Delivery {
    fn from(d: pb::Delivery) -> Self {
        Self {
            id: d.id,
            channel_id: d.channel_id,
            channel_name: d.channel_name,
            channel_kind: d.channel_kind,
            status: d.status,
            group_key: d.group_key,
            event_ids: d.event_ids,
            event_types: d.event_types,
            event_type: d.event_type,
            subject: d.subject,
            severity: d.severity,
            app: non_empty(d.app),
            environment: non_empty(d.environment),
            incident_id: non_empty(d.incident_id),
            escalation_id: non_empty(d.escalation_id),
            suppressed_events: d.suppressed_events,
            attempts: d.attempts,
            created_at: time(d.created_at),
            due_at: time(d.due_at),
            delivered_at: time(d.delivered_at),
            last_error: non_empty(d.last_error),
            last_status_code: Some(d.last_status_code).filter(|c| *c != 0),
            attempt_log: d.attempt_log.into_iter().map(DeliveryAttempt::from).collect(),
        }
    }
}

#[derive(Debug, Serialize, ToSchema)]
pub struct DeliveryPage {
    pub items: Vec<Delivery>,
    pub next_page_token: Option<String>,
}

impl From<pb::ListDeliveriesResponse> for DeliveryPage {
    fn from(page: pb::ListDeliveriesResponse) -> Self {
        Self {
            items: page.deliveries.into_iter().map(Delivery::from).collect(),
            next_page_token: super::next_token(page.next_page_token),
        }
    }
}

#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct DeliveryQuery {
    #[param(format = Uuid)]
    pub channel_id: Option<String>,
    pub status: Option<DeliveryStatus>,
    /// An event type or a pattern: `rp.deployment.*`, `rp.>`.
    #[param(pattern = r"^(\*|>|rp(\.[a-z0-9_*-]+)+|rp(\.[a-z0-9_*-]+)*\.>)$", max_length = 200)]
    pub event_type: Option<String>,
    #[param(format = Uuid)]
    pub incident_id: Option<String>,
    #[param(format = Uuid)]
    pub event_id: Option<String>,
    #[param(minimum = 1, maximum = 200)]
    pub page_size: Option<i32>,
    /// `next_page_token` of the previous page.
    #[param(format = Uuid)]
    pub page_token: Option<String>,
}

impl DeliveryQuery {
    pub fn into_pb(self) -> Result<pb::ListDeliveriesRequest, Problem> {
        for (field, value) in [
            ("channel_id", &self.channel_id),
            ("incident_id", &self.incident_id),
            ("event_id", &self.event_id),
        ] {
            if let Some(value) = value {
                uuid(field, value)?;
            }
        }
        if let Some(pattern) = &self.event_type
            && (pattern.len() > 200 || !event_pattern(pattern))
        {
            return Err(Problem::validation(format!(
                "event_type {pattern:?} must look like rp.deployment.succeeded, rp.deployment.* or rp.>"
            )));
        }
        Ok(pb::ListDeliveriesRequest {
            channel_id: self.channel_id.unwrap_or_default(),
            status: self.status.map(|s| s.as_str().to_owned()).unwrap_or_default(),
            event_type: self.event_type.unwrap_or_default(),
            incident_id: self.incident_id.unwrap_or_default(),
            event_id: self.event_id.unwrap_or_default(),
            page_size: super::check_page_size(self.page_size)?,
            page_token: super::check_page_token(self.page_token)?,
        })
    }
}

#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct DeadLetterQuery {
    #[param(format = Uuid)]
    pub channel_id: Option<String>,
    #[param(minimum = 1, maximum = 200)]
    pub page_size: Option<i32>,
    #[param(format = Uuid)]
    pub page_token: Option<String>,
}

impl DeadLetterQuery {
    pub fn into_pb(self) -> Result<pb::ListDeadLettersRequest, Problem> {
        if let Some(id) = &self.channel_id {
            uuid("channel_id", id)?;
        }
        Ok(pb::ListDeadLettersRequest {
            channel_id: self.channel_id.unwrap_or_default(),
            page_size: super::check_page_size(self.page_size)?,
            page_token: super::check_page_token(self.page_token)?,
        })
    }
}

/// Dead letters to send again, with a fresh retry schedule and the same `webhook-id`. (Every
/// dead letter of a channel: `POST /api/v1/channels/{id}/replay-dead-letters`.)
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ReplayRequest {
    #[schema(min_items = 1, max_items = 1000)]
    pub delivery_ids: Vec<uuid::Uuid>,
}

impl ReplayRequest {
    pub fn into_pb(self) -> Result<pb::ReplayDeadLettersRequest, Problem> {
        if !(1..=1000).contains(&self.delivery_ids.len()) {
            return Err(Problem::validation("delivery_ids must name 1 to 1000 dead letters"));
        }
        Ok(pb::ReplayDeadLettersRequest {
            delivery_ids: self.delivery_ids.iter().map(ToString::to_string).collect(),
            channel_id: String::new(),
        })
    }
}

#[derive(Debug, Serialize, ToSchema)]
pub struct ReplayResult {
    /// The dead letters sent again (those named that were not dead letters are left out).
    pub replayed_ids: Vec<String>,
}

// --------------------------------------------------------------------------- routing rules

/// The schema of `event_types`: event types (`rp.deployment.succeeded`) or patterns with NATS
/// wildcards, `*` one token and a final `>` the rest (`rp.deployment.*`, `rp.>`).
fn event_types_schema() -> utoipa::openapi::schema::Array {
    use utoipa::openapi::schema::{ArrayBuilder, ObjectBuilder, Type};
    ArrayBuilder::new()
        .items(
            ObjectBuilder::new().schema_type(Type::String).pattern(Some(EVENT_PATTERN)).max_length(Some(200)),
        )
        .max_items(Some(50))
        .examples([json!(["rp.deployment.*", "rp.incident.opened"])])
        .build()
}

/// Labels a rule can group by.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum GroupLabel {
    App,
    Environment,
    Deployment,
    Incident,
    EventType,
    Subject,
}

impl GroupLabel {
    fn as_str(self) -> &'static str {
        match self {
            GroupLabel::App => "app",
            GroupLabel::Environment => "environment",
            GroupLabel::Deployment => "deployment",
            GroupLabel::Incident => "incident",
            GroupLabel::EventType => "event_type",
            GroupLabel::Subject => "subject",
        }
    }
}

fn severity_str(severity: Severity) -> String {
    serde_json::to_value(severity).ok().and_then(|v| v.as_str().map(str::to_owned)).unwrap_or_default()
}

/// Routes events to channels. Every enabled rule matching an event applies, in `position` order
/// (until one with `stop`); an empty filter matches everything.
#[derive(Debug, Serialize, ToSchema)]
pub struct RoutingRule {
    pub id: String,
    pub name: String,
    pub position: i32,
    pub enabled: bool,
    /// Event types with NATS wildcards: `rp.incident.opened`, `rp.deployment.*`, `rp.>`.
    pub event_types: Vec<String>,
    #[schema(value_type = Vec<Severity>)]
    pub severities: Vec<String>,
    pub apps: Vec<String>,
    pub environments: Vec<String>,
    pub channel_ids: Vec<String>,
    #[schema(value_type = Vec<ChannelKind>)]
    pub channel_kinds: Vec<String>,
    /// Events of one group arriving within this window become one message; null: by severity
    /// (critical 0 s, high 5 s, else 30 s).
    pub group_wait_ms: Option<i64>,
    /// The same notification is sent once per interval; null: 4 hours.
    pub repeat_interval_ms: Option<i64>,
    #[schema(value_type = Vec<GroupLabel>)]
    pub group_by: Vec<String>,
    /// No later rule applies to an event this one matched.
    pub stop: bool,
    #[serde(serialize_with = "crate::dto::rfc3339::option")]
    pub created_at: Option<DateTime<Utc>>,
    #[serde(serialize_with = "crate::dto::rfc3339::option")]
    pub updated_at: Option<DateTime<Utc>>,
}

impl From<pb::RoutingRule> for RoutingRule {
    fn from(r: pb::RoutingRule) -> Self {
        Self {
            id: r.id,
            name: r.name,
            position: r.position,
            enabled: r.enabled,
            event_types: r.event_types,
            severities: r.severities,
            apps: r.apps,
            environments: r.environments,
            channel_ids: r.channel_ids,
            channel_kinds: r.channel_kinds,
            group_wait_ms: r.group_wait_ms,
            repeat_interval_ms: r.repeat_interval_ms,
            group_by: r.group_by,
            stop: r.stop,
            created_at: time(r.created_at),
            updated_at: time(r.updated_at),
        }
    }
}

#[derive(Debug, Serialize, ToSchema)]
pub struct RoutingRuleList {
    pub items: Vec<RoutingRule>,
}

/// A routing rule as written: it needs `channel_ids` or `channel_kinds`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RoutingRuleRequest {
    #[schema(
        min_length = 1,
        max_length = 200,
        pattern = r"^[^\u0000-\u001f\u007f-\u009f]*\S[^\u0000-\u001f\u007f-\u009f]*$",
        example = "deployments of shop to chat"
    )]
    pub name: String,
    #[serde(default)]
    pub position: i32,
    #[serde(default = "enabled")]
    #[schema(default = true)]
    pub enabled: bool,
    #[serde(default)]
    #[schema(schema_with = event_types_schema)]
    pub event_types: Vec<String>,
    #[serde(default)]
    pub severities: Vec<Severity>,
    #[serde(default)]
    #[schema(max_items = 100)]
    pub apps: Vec<String>,
    #[serde(default)]
    #[schema(max_items = 100)]
    pub environments: Vec<String>,
    #[serde(default)]
    #[schema(max_items = 50)]
    pub channel_ids: Vec<uuid::Uuid>,
    #[serde(default)]
    pub channel_kinds: Vec<ChannelKind>,
    #[schema(minimum = 0, maximum = 604800000)]
    pub group_wait_ms: Option<i64>,
    #[schema(minimum = 0, maximum = 604800000)]
    pub repeat_interval_ms: Option<i64>,
    /// Default: app, environment, deployment.
    #[serde(default)]
    pub group_by: Vec<GroupLabel>,
    #[serde(default)]
    pub stop: bool,
}

/// `^(\*|>|rp(\.[a-z0-9_*-]+)+|rp(\.[a-z0-9_*-]+)*\.>)$`: an event type, or a pattern with NATS
/// wildcards (`*` one token, a final `>` the rest).
pub const EVENT_PATTERN: &str = r"^(\*|>|rp(\.[a-z0-9_*-]+)+|rp(\.[a-z0-9_*-]+)*\.>)$";

fn event_pattern(pattern: &str) -> bool {
    if pattern == "*" || pattern == ">" {
        return true;
    }
    let Some(rest) = pattern.strip_prefix("rp.") else {
        return false;
    };
    let tokens: Vec<&str> = rest.split('.').collect();
    let last = tokens.len() - 1;
    tokens.iter().enumerate().all(|(i, token)| {
        (i == last && *token == ">")
            || (!token.is_empty()
                && token.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"_*-".contains(&b)))
    })
}

impl RoutingRuleRequest {
    pub fn into_pb(self) -> Result<pb::RoutingRuleInput, Problem> {
        name("name", &self.name, 200)?;
        for pattern in &self.event_types {
            if pattern.len() > 200 || !event_pattern(pattern) {
                return Err(Problem::validation(format!(
                    "event type pattern {pattern:?} must look like rp.deployment.succeeded, rp.deployment.* or rp.>"
                )));
            }
        }
        texts("apps", &self.apps)?;
        texts("environments", &self.environments)?;
        if self.channel_ids.is_empty() && self.channel_kinds.is_empty() {
            return Err(Problem::validation("a rule needs channel_ids or channel_kinds"));
        }
        for (field, value) in
            [("group_wait_ms", self.group_wait_ms), ("repeat_interval_ms", self.repeat_interval_ms)]
        {
            if let Some(ms) = value {
                check::range(field, ms, 0, MAX_WINDOW_MS)?;
            }
        }
        Ok(pb::RoutingRuleInput {
            name: self.name,
            position: self.position,
            disabled: !self.enabled,
            event_types: self.event_types,
            severities: self.severities.into_iter().map(severity_str).collect(),
            apps: self.apps,
            environments: self.environments,
            channel_ids: self.channel_ids.iter().map(ToString::to_string).collect(),
            channel_kinds: self.channel_kinds.iter().map(|k| k.as_str().to_owned()).collect(),
            group_wait_ms: self.group_wait_ms,
            repeat_interval_ms: self.repeat_interval_ms,
            group_by: self.group_by.iter().map(|l| l.as_str().to_owned()).collect(),
            stop: self.stop,
        })
    }
}

// ---------------------------------------------------------------------------- escalations

/// One level of an escalation policy: who is told, how long after the escalation started.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct EscalationLevel {
    #[schema(
        min_length = 1,
        max_length = 200,
        pattern = r"^[^\u0000-\u001f\u007f-\u009f]*\S[^\u0000-\u001f\u007f-\u009f]*$",
        example = "lead e-mail"
    )]
    pub name: String,
    /// From the start of the escalation; never less than the previous level's.
    #[schema(minimum = 0, maximum = 604800000, example = 300000)]
    pub delay_ms: i64,
    #[serde(default)]
    #[schema(value_type = Vec<uuid::Uuid>, max_items = 50)]
    pub channel_ids: Vec<String>,
    #[serde(default)]
    #[schema(value_type = Vec<ChannelKind>)]
    pub channel_kinds: Vec<String>,
}

impl From<pb::EscalationLevel> for EscalationLevel {
    fn from(l: pb::EscalationLevel) -> Self {
        Self {
            name: l.name,
            delay_ms: l.delay_ms,
            channel_ids: l.channel_ids,
            channel_kinds: l.channel_kinds,
        }
    }
}

/// Who is told, and when, until someone acknowledges an incident.
#[derive(Debug, Serialize, ToSchema)]
pub struct EscalationPolicy {
    pub id: String,
    pub name: String,
    pub enabled: bool,
    /// Incidents of these severities start it.
    #[schema(value_type = Vec<Severity>)]
    pub severities: Vec<String>,
    pub apps: Vec<String>,
    pub environments: Vec<String>,
    pub levels: Vec<EscalationLevel>,
    #[serde(serialize_with = "crate::dto::rfc3339::option")]
    pub created_at: Option<DateTime<Utc>>,
    #[serde(serialize_with = "crate::dto::rfc3339::option")]
    pub updated_at: Option<DateTime<Utc>>,
}

impl From<pb::EscalationPolicy> for EscalationPolicy {
    fn from(p: pb::EscalationPolicy) -> Self {
        Self {
            id: p.id,
            name: p.name,
            enabled: p.enabled,
            severities: p.severities,
            apps: p.apps,
            environments: p.environments,
            levels: p.levels.into_iter().map(EscalationLevel::from).collect(),
            created_at: time(p.created_at),
            updated_at: time(p.updated_at),
        }
    }
}

#[derive(Debug, Serialize, ToSchema)]
pub struct EscalationPolicyList {
    pub items: Vec<EscalationPolicy>,
}

/// An escalation policy as written.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct EscalationPolicyRequest {
    #[schema(
        min_length = 1,
        max_length = 200,
        pattern = r"^[^\u0000-\u001f\u007f-\u009f]*\S[^\u0000-\u001f\u007f-\u009f]*$",
        example = "critical incidents"
    )]
    pub name: String,
    #[serde(default = "enabled")]
    #[schema(default = true)]
    pub enabled: bool,
    /// Default: critical.
    #[serde(default)]
    pub severities: Vec<Severity>,
    #[serde(default)]
    #[schema(max_items = 100)]
    pub apps: Vec<String>,
    #[serde(default)]
    #[schema(max_items = 100)]
    pub environments: Vec<String>,
    #[schema(min_items = 1, max_items = 20)]
    pub levels: Vec<EscalationLevel>,
}

impl EscalationPolicyRequest {
    pub fn into_pb(self) -> Result<pb::EscalationPolicyInput, Problem> {
        name("name", &self.name, 200)?;
        texts("apps", &self.apps)?;
        texts("environments", &self.environments)?;
        if !(1..=20).contains(&self.levels.len()) {
            return Err(Problem::validation("an escalation policy needs 1 to 20 levels"));
        }
        let mut previous = 0;
        for (number, level) in self.levels.iter().enumerate().map(|(i, l)| (i + 1, l)) {
            name(&format!("level {number} name"), &level.name, 200)?;
            check::range(&format!("level {number} delay_ms"), level.delay_ms, previous, MAX_WINDOW_MS)?;
            previous = level.delay_ms;
            uuids(&format!("level {number} channel_ids"), &level.channel_ids)?;
            for kind in &level.channel_kinds {
                if !["webhook", "slack", "email", "pagerduty"].contains(&kind.as_str()) {
                    return Err(Problem::validation(format!(
                        "level {number}: unknown channel kind {kind:?}"
                    )));
                }
            }
            if level.channel_ids.is_empty() && level.channel_kinds.is_empty() {
                return Err(Problem::validation(format!(
                    "level {number}: name channel_ids or channel_kinds"
                )));
            }
        }
        Ok(pb::EscalationPolicyInput {
            name: self.name,
            disabled: !self.enabled,
            severities: self.severities.into_iter().map(severity_str).collect(),
            apps: self.apps,
            environments: self.environments,
            levels: self
                .levels
                .into_iter()
                .map(|l| pb::EscalationLevel {
                    name: l.name,
                    delay_ms: l.delay_ms,
                    channel_ids: l.channel_ids,
                    channel_kinds: l.channel_kinds,
                })
                .collect(),
        })
    }
}

#[derive(Debug, Clone, Copy, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum EscalationStatus {
    Active,
    Acknowledged,
    Resolved,
    Exhausted,
}

impl EscalationStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            EscalationStatus::Active => "active",
            EscalationStatus::Acknowledged => "acknowledged",
            EscalationStatus::Resolved => "resolved",
            EscalationStatus::Exhausted => "exhausted",
        }
    }
}

/// A level that fired, and the deliveries it made.
#[derive(Debug, Serialize, ToSchema)]
pub struct EscalationStep {
    pub level: i32,
    pub name: String,
    #[serde(serialize_with = "crate::dto::rfc3339::option")]
    pub fired_at: Option<DateTime<Utc>>,
    pub delivery_ids: Vec<String>,
}

/// One incident escalated under one policy.
#[derive(Debug, Serialize, ToSchema)]
pub struct Escalation {
    pub id: String,
    pub policy_id: String,
    pub policy_name: String,
    pub incident_id: String,
    pub app: String,
    pub environment: String,
    pub severity: String,
    pub summary: String,
    #[schema(value_type = EscalationStatus)]
    pub status: String,
    pub levels_fired: i32,
    pub levels: i32,
    #[serde(serialize_with = "crate::dto::rfc3339::option")]
    pub next_level_at: Option<DateTime<Utc>>,
    #[serde(serialize_with = "crate::dto::rfc3339::option")]
    pub created_at: Option<DateTime<Utc>>,
    #[serde(serialize_with = "crate::dto::rfc3339::option")]
    pub acknowledged_at: Option<DateTime<Utc>>,
    pub acknowledged_by: Option<String>,
    #[serde(serialize_with = "crate::dto::rfc3339::option")]
    pub resolved_at: Option<DateTime<Utc>>,
    pub steps: Vec<EscalationStep>,
}

impl From<pb::Escalation> for Escalation {
    fn from(e: pb::Escalation) -> Self {
        Self {
            id: e.id,
            policy_id: e.policy_id,
            policy_name: e.policy_name,
            incident_id: e.incident_id,
            app: e.app,
            environment: e.environment,
            severity: e.severity,
            summary: e.summary,
            status: e.status,
            levels_fired: e.levels_fired,
            levels: e.levels,
            next_level_at: time(e.next_level_at),
            created_at: time(e.created_at),
            acknowledged_at: time(e.acknowledged_at),
            acknowledged_by: non_empty(e.acknowledged_by),
            resolved_at: time(e.resolved_at),
            steps: e
                .steps
                .into_iter()
                .map(|s| EscalationStep {
                    level: s.level,
                    name: s.name,
                    fired_at: time(s.fired_at),
                    delivery_ids: s.delivery_ids,
                })
                .collect(),
        }
    }
}

#[derive(Debug, Serialize, ToSchema)]
pub struct EscalationList {
    pub items: Vec<Escalation>,
}

#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct EscalationQuery {
    pub status: Option<EscalationStatus>,
    #[param(format = Uuid)]
    pub incident_id: Option<String>,
}

impl EscalationQuery {
    pub fn into_pb(self) -> Result<pb::ListEscalationsRequest, Problem> {
        if let Some(id) = &self.incident_id {
            uuid("incident_id", id)?;
        }
        Ok(pb::ListEscalationsRequest {
            status: self.status.map(|s| s.as_str().to_owned()).unwrap_or_default(),
            incident_id: self.incident_id.unwrap_or_default(),
        })
    }
}

/// Acknowledging stops the escalation: no later level fires.
#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AcknowledgeRequest {
    #[serde(default)]
    #[schema(max_length = 500, pattern = r"^[^\u0000-\u001f\u007f-\u009f]*$", example = "on it")]
    pub note: String,
}

impl AcknowledgeRequest {
    pub fn into_pb(self, id: String) -> Result<pb::AcknowledgeEscalationRequest, Problem> {
        uuid("id", &id)?;
        check::text("note", &self.note, 500, false)?;
        Ok(pb::AcknowledgeEscalationRequest { id, note: self.note })
    }
}

/// Checks a path id.
pub fn path_id(id: &str) -> Result<(), Problem> {
    uuid("id", id)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn event_patterns_follow_nats_wildcards() {
        for ok in ["rp.>", "rp.deployment.*", "rp.incident.opened", "*", ">"] {
            assert!(event_pattern(ok), "{ok}");
        }
        for bad in ["deployment.*", "rp..x", "rp.>.x", "rp.", "", "rp", "rp.Deploy"] {
            assert!(!event_pattern(bad), "{bad}");
        }
    }
}
