//! Channel kinds: how a message reaches a signed webhook, Slack, an SMTP server or PagerDuty,
//! and what settings and secrets each kind takes.

pub mod email;
pub mod http;
pub mod pagerduty;
pub mod slack;
pub mod webhook;

use std::{collections::BTreeMap, time::Duration};

use ipnet::IpNet;
use serde_json::Value;
use uuid::Uuid;

use crate::domain::{
    classify::{Labels, Severity},
    kind, templates,
};

/// A channel ready to send: settings, opened secrets, template overrides.
#[derive(Clone)]
pub struct Resolved {
    pub id: Uuid,
    pub name: String,
    pub kind: String,
    pub config: Value,
    pub secrets: BTreeMap<String, String>,
    pub templates: BTreeMap<String, String>,
}

impl std::fmt::Debug for Resolved {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Resolved")
            .field("id", &self.id)
            .field("name", &self.name)
            .field("kind", &self.kind)
            .field("secrets", &self.secrets.keys().collect::<Vec<_>>())
            .finish_non_exhaustive()
    }
}

impl Resolved {
    pub fn setting(&self, key: &str) -> Option<&str> {
        self.config.get(key).and_then(Value::as_str).filter(|v| !v.is_empty())
    }
}

/// Escalation details a message carries.
#[derive(Debug, Clone, serde::Serialize)]
pub struct EscalationInfo {
    pub id: String,
    pub level: i32,
    pub levels: i32,
    pub name: String,
    pub policy: String,
}

/// One message: its events (the first is the primary), their labels, and the template context.
#[derive(Debug, Clone)]
pub struct Message {
    pub delivery_id: Uuid,
    pub events: Vec<rp_events::Event>,
    pub labels: Vec<Labels>,
    pub severity: Severity,
    pub context: Value,
    pub escalation: Option<EscalationInfo>,
    pub incident_id: String,
    pub dashboard_url: String,
}

impl Message {
    /// Renders template `key` for `channel`.
    pub fn render(&self, channel: &Resolved, key: &str) -> Result<String, SendError> {
        let context = minijinja::Value::from_serialize(&self.context);
        templates::render(&channel.kind, &channel.templates, key, &context).map_err(SendError::Permanent)
    }

    pub fn primary(&self) -> &Labels {
        &self.labels[0]
    }
}

/// What a receiver answered.
#[derive(Debug, Clone, PartialEq)]
pub struct Answer {
    /// HTTP status; for e-mail the SMTP reply code.
    pub status_code: u16,
    pub excerpt: String,
    pub retry_after: Option<String>,
    pub latency: Duration,
}

/// Why nothing was delivered.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum SendError {
    /// The SSRF guard refused the address: not retried.
    #[error("refused: {0}")]
    Refused(String),
    /// The channel cannot work as configured (missing secret, bad template): not retried.
    #[error("{0}")]
    Permanent(String),
    /// No answer (connection, timeout) or a transport failure: retried.
    #[error("{0}")]
    Transient(String),
}

/// Sends messages through every kind of channel.
#[derive(Clone)]
pub struct Senders {
    pub http: http::GuardedHttp,
    pub timeout: Duration,
}

impl Senders {
    pub fn new(allowed: Vec<IpNet>, timeout: Duration, excerpt_bytes: usize) -> anyhow::Result<Self> {
        Ok(Self { http: http::GuardedHttp::new(allowed, timeout, excerpt_bytes)?, timeout })
    }

    pub async fn send(&self, channel: &Resolved, message: &Message) -> Result<Answer, SendError> {
        match channel.kind.as_str() {
            kind::WEBHOOK => webhook::send(&self.http, channel, message).await,
            kind::SLACK => slack::send(&self.http, channel, message).await,
            kind::PAGERDUTY => pagerduty::send(&self.http, channel, message).await,
            kind::EMAIL => email::send(self.http.allowed(), self.timeout, channel, message).await,
            other => Err(SendError::Permanent(format!("unknown channel kind {other:?}"))),
        }
    }
}

/// Settings and secrets a kind takes.
struct Schema {
    settings: &'static [&'static str],
    secrets: &'static [&'static str],
    required_settings: &'static [&'static str],
    required_secrets: &'static [&'static str],
}

fn schema(channel_kind: &str) -> Option<Schema> {
    let schema = |settings, secrets, required_settings, required_secrets| {
        Some(Schema { settings, secrets, required_settings, required_secrets })
    };
    match channel_kind {
        kind::WEBHOOK => {
            schema(&["url"], &["signing_secret", "authorization"], &["url"], &["signing_secret"])
        }
        kind::SLACK => schema(&[], &["webhook_url"], &[], &["webhook_url"]),
        kind::EMAIL => schema(
            &["smtp_host", "smtp_port", "tls", "username", "from", "to"],
            &["smtp_password"],
            &["smtp_host", "from", "to"],
            &[],
        ),
        kind::PAGERDUTY => schema(&["api_url", "source"], &["routing_key"], &[], &["routing_key"]),
        _ => None,
    }
}

/// Secret keys kept by the notifier itself (rotation bookkeeping), never set through the API.
pub const INTERNAL_SECRETS: [&str; 2] = ["previous_signing_secret", "previous_signing_secret_expires"];

/// Checks a channel's settings, secrets and templates (not the network: see [`check_network`]).
pub fn validate(
    channel_kind: &str,
    config: &Value,
    secrets: &BTreeMap<String, String>,
    overrides: &BTreeMap<String, String>,
) -> Result<(), String> {
    let Schema { settings, secrets: secret_keys, required_settings: required, required_secrets } =
        schema(channel_kind)
            .ok_or_else(|| format!("kind must be one of {}, not {channel_kind:?}", kind::ALL.join(", ")))?;
    let object = config.as_object().ok_or("config_json must be a JSON object")?;
    for key in object.keys() {
        if !settings.contains(&key.as_str()) {
            return Err(format!(
                "{channel_kind} channels have no setting {key:?} (settings: {})",
                settings.join(", ")
            ));
        }
    }
    for key in required {
        let present = match object.get(*key) {
            Some(Value::String(s)) => !s.trim().is_empty(),
            Some(Value::Array(a)) => !a.is_empty(),
            Some(Value::Null) | None => false,
            Some(_) => true,
        };
        if !present {
            return Err(format!("{channel_kind} channels need the setting {key:?}"));
        }
    }
    for key in secrets.keys() {
        if !secret_keys.contains(&key.as_str()) && !INTERNAL_SECRETS.contains(&key.as_str()) {
            return Err(format!(
                "{channel_kind} channels have no secret {key:?} (secrets: {})",
                secret_keys.join(", ")
            ));
        }
    }
    for key in required_secrets {
        if secrets.get(*key).is_none_or(|v| v.is_empty()) {
            return Err(format!("{channel_kind} channels need the secret {key:?}"));
        }
    }
    match channel_kind {
        kind::WEBHOOK => {
            if let Some(secret) = secrets.get("signing_secret") {
                rp_webhooks::validate_secret(secret).map_err(|e| format!("signing_secret: {e}"))?;
            }
        }
        kind::EMAIL => email::validate(config)?,
        kind::PAGERDUTY => {
            if let Some(source) = object.get("source").filter(|s| !s.is_string()) {
                return Err(format!("source must be a string, not {source}"));
            }
        }
        _ => {}
    }
    templates::validate(channel_kind, overrides)
}

/// Checks every host a channel calls against the SSRF guard.
pub async fn check_network(
    channel_kind: &str,
    config: &Value,
    secrets: &BTreeMap<String, String>,
    allowed: &[IpNet],
) -> Result<(), String> {
    let setting = |key: &str| config.get(key).and_then(Value::as_str).unwrap_or_default().to_owned();
    match channel_kind {
        kind::WEBHOOK => http::check_url(&setting("url"), allowed).await.map(|_| ()),
        kind::SLACK => {
            let url = secrets.get("webhook_url").cloned().unwrap_or_default();
            // The URL is a secret: name only its host in errors.
            http::check_url(&url, allowed).await.map(|_| ()).map_err(|e| {
                let host = reqwest::Url::parse(&url).ok().and_then(|u| u.host_str().map(str::to_owned));
                format!(
                    "webhook_url ({}): {}",
                    host.unwrap_or_else(|| "not a URL".into()),
                    e.replace(&url, "<webhook_url>")
                )
            })
        }
        kind::PAGERDUTY => http::check_url(&pagerduty::api_url(config), allowed).await.map(|_| ()),
        kind::EMAIL => http::check_host(&setting("smtp_host"), allowed).await,
        _ => Ok(()),
    }
}
