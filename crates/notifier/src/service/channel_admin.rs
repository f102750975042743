//! Channels through the API: create, change, delete, rotate a webhook's signing secret, send a
//! test. Secrets are sealed before they are stored and never leave the notifier again (a
//! signing secret the notifier generates is returned once, when it is made).

use std::collections::BTreeMap;

use chrono::Utc;
use rp_events::Event;
use rp_runtime::{ServiceError, validate};
use sea_orm::{
    ActiveModelTrait as _, ActiveValue::Set, ColumnTrait, EntityTrait, IntoActiveModel as _, QueryFilter,
    QueryOrder,
};
use serde_json::Value;
use uuid::Uuid;

use super::{NotifierCore, Result};
use crate::{
    channels::{self, INTERNAL_SECRETS, Resolved, SendError},
    domain::{
        classify::{Labels, Severity},
        kind,
    },
    store::channels as rows,
};

/// A channel to create.
#[derive(Debug, Clone, Default)]
pub struct NewChannel {
    pub name: String,
    pub kind: String,
    pub config_json: String,
    pub secrets: BTreeMap<String, String>,
    pub templates: BTreeMap<String, String>,
    pub rate_limit_per_minute: i32,
    pub disabled: bool,
}

/// Changes to a channel; `None` keeps a value.
#[derive(Debug, Clone, Default)]
pub struct ChannelChange {
    pub name: Option<String>,
    pub config_json: Option<String>,
    /// Secrets to set; an empty value removes one.
    pub secrets: BTreeMap<String, String>,
    pub templates: BTreeMap<String, String>,
    pub replace_templates: bool,
    pub rate_limit_per_minute: Option<i32>,
    pub enabled: Option<bool>,
}

/// What a test send came to.
#[derive(Debug, Clone)]
pub struct TestOutcome {
    pub started_at: chrono::DateTime<Utc>,
    pub latency_ms: i64,
    pub status_code: i32,
    pub outcome: &'static str,
    pub error: String,
    pub excerpt: String,
}

/// Names of the secrets a channel has (values never leave the notifier).
pub fn secret_names(secrets: &BTreeMap<String, String>) -> Vec<String> {
    secrets.keys().filter(|k| !INTERNAL_SECRETS.contains(&k.as_str())).cloned().collect()
}

fn parse_object(field: &str, json: &str) -> Result<Value> {
    let text = if json.trim().is_empty() { "{}" } else { json };
    let value: Value = serde_json::from_str(text)
        .map_err(|e| ServiceError::Invalid(format!("{field} is not valid JSON: {e}")))?;
    if !value.is_object() {
        return Err(ServiceError::Invalid(format!("{field} must be a JSON object")));
    }
    Ok(value)
}

fn check_name(name: &str) -> Result<String> {
    let name = name.trim();
    if name.is_empty() {
        return Err(ServiceError::Invalid("name must not be empty".into()));
    }
    validate::text("name", name, 100, false)?;
    Ok(name.to_owned())
}

fn check_rate(rate: i32) -> Result<i32> {
    if !(0..=100_000).contains(&rate) {
        return Err(ServiceError::Invalid(
            "rate_limit_per_minute must be between 0 (no limit) and 100000".into(),
        ));
    }
    Ok(rate)
}

fn check_secret_values(secrets: &BTreeMap<String, String>) -> Result<()> {
    for (key, value) in secrets {
        if INTERNAL_SECRETS.contains(&key.as_str()) {
            return Err(ServiceError::Invalid(format!("the secret {key:?} is managed by the notifier")));
        }
        validate::text(key, value, 4096, false)?;
    }
    Ok(())
}

impl NotifierCore {
    fn seal(&self, channel_id: Uuid, secrets: &BTreeMap<String, String>) -> String {
        if secrets.is_empty() {
            return String::new();
        }
        let plaintext = serde_json::to_vec(secrets).expect("a map of strings serialises");
        self.key.seal(&plaintext, channel_id.as_bytes())
    }

    /// Opens a channel's secrets.
    pub(crate) fn open_secrets(
        &self,
        row: &rows::Model,
    ) -> std::result::Result<BTreeMap<String, String>, String> {
        if row.secrets.is_empty() {
            return Ok(BTreeMap::new());
        }
        let plaintext = self.key.open(&row.secrets, row.id.as_bytes()).map_err(|e| e.to_string())?;
        serde_json::from_slice(&plaintext).map_err(|_| "sealed secrets are not readable".to_owned())
    }

    /// A channel ready to send.
    pub(crate) fn resolve_channel(&self, row: &rows::Model) -> std::result::Result<Resolved, String> {
        Ok(Resolved {
            id: row.id,
            name: row.name.clone(),
            kind: row.kind.clone(),
            config: serde_json::from_str(&row.config).unwrap_or_else(|_| Value::Object(Default::default())),
            secrets: self.open_secrets(row)?,
            templates: serde_json::from_str(&row.templates).unwrap_or_default(),
        })
    }

    async fn check_channel(
        &self,
        channel_kind: &str,
        config: &Value,
        secrets: &BTreeMap<String, String>,
        templates: &BTreeMap<String, String>,
    ) -> Result<()> {
        channels::validate(channel_kind, config, secrets, templates).map_err(ServiceError::Invalid)?;
        channels::check_network(channel_kind, config, secrets, &self.config.notifier.allowed_private_networks)
            .await
            .map_err(|e| ServiceError::Invalid(format!("refused by the SSRF guard: {e}")))
    }

    pub async fn list_channels(&self) -> Result<Vec<rows::Model>> {
        Ok(rows::Entity::find().order_by_asc(rows::Column::Name).all(&self.db.conn).await?)
    }

    pub async fn get_channel(&self, id: Uuid) -> Result<rows::Model> {
        rows::Entity::find_by_id(id)
            .one(&self.db.conn)
            .await?
            .ok_or_else(|| ServiceError::NotFound(format!("channel {id} not found")))
    }

    /// Secrets of a stored channel, for the API's `secrets_set` (names only).
    pub fn channel_secret_names(&self, row: &rows::Model) -> (Vec<String>, i32) {
        let secrets = self.open_secrets(row).unwrap_or_default();
        let signing = if row.kind == kind::WEBHOOK {
            crate::channels::webhook::signing_secrets(
                &Resolved {
                    id: row.id,
                    name: String::new(),
                    kind: row.kind.clone(),
                    config: Value::Null,
                    secrets: secrets.clone(),
                    templates: BTreeMap::new(),
                },
                Utc::now(),
            )
            .len() as i32
        } else {
            0
        };
        (secret_names(&secrets), signing)
    }

    /// Creates a channel; returns it and the signing secret when the notifier generated one.
    pub async fn create_channel(&self, input: NewChannel) -> Result<(rows::Model, Option<String>)> {
        let name = check_name(&input.name)?;
        let channel_kind = input.kind.trim().to_ascii_lowercase();
        let config = parse_object("config_json", &input.config_json)?;
        check_secret_values(&input.secrets)?;
        let mut secrets: BTreeMap<String, String> =
            input.secrets.into_iter().filter(|(_, v)| !v.is_empty()).collect();
        let mut generated = None;
        if channel_kind == kind::WEBHOOK && !secrets.contains_key("signing_secret") {
            let secret = rp_webhooks::generate_secret();
            secrets.insert("signing_secret".into(), secret.clone());
            generated = Some(secret);
        }
        self.check_channel(&channel_kind, &config, &secrets, &input.templates).await?;
        let id = Uuid::now_v7();
        let now = Utc::now();
        let row = rows::Model {
            id,
            name: name.clone(),
            kind: channel_kind,
            enabled: !input.disabled,
            created_at: now,
            config: config.to_string(),
            secrets: self.seal(id, &secrets),
            secret_kid: if secrets.is_empty() { String::new() } else { self.key.kid().to_owned() },
            templates: serde_json::to_string(&input.templates).unwrap_or_else(|_| "{}".into()),
            rate_limit_per_minute: check_rate(input.rate_limit_per_minute)?,
            disabled_reason: String::new(),
            throttled_until: None,
            updated_at: Some(now),
        };
        let txn = self.db.begin_write().await?;
        let taken = rows::Entity::find().filter(rows::Column::Name.eq(name.as_str())).one(&txn).await?;
        if taken.is_some() {
            return Err(ServiceError::Conflict(format!("a channel called {name:?} exists")));
        }
        rows::Entity::insert(row.clone().into_active_model()).exec_without_returning(&txn).await.map_err(
            |e| {
                if rp_db::is_unique_violation(&e) {
                    ServiceError::Conflict(format!("a channel called {name:?} exists"))
                } else {
                    e.into()
                }
            },
        )?;
        super::routing_config::bump(&txn).await?;
        txn.commit().await?;
        tracing::info!(channel = %row.name, kind = %row.kind, "channel created");
        Ok((row, generated))
    }

    pub async fn update_channel(&self, id: Uuid, change: ChannelChange) -> Result<rows::Model> {
        let current = self.get_channel(id).await?;
        let mut secrets = self.open_secrets(&current).map_err(ServiceError::Internal)?;
        check_secret_values(&change.secrets)?;
        for (key, value) in change.secrets {
            if value.is_empty() {
                secrets.remove(&key);
            } else {
                secrets.insert(key, value);
            }
        }
        let config = match &change.config_json {
            Some(json) => parse_object("config_json", json)?,
            None => {
                serde_json::from_str(&current.config).unwrap_or_else(|_| Value::Object(Default::default()))
            }
        };
        let mut templates: BTreeMap<String, String> =
            serde_json::from_str(&current.templates).unwrap_or_default();
        if change.replace_templates {
            templates = change.templates;
        } else {
            templates.extend(change.templates);
        }
        self.check_channel(&current.kind, &config, &secrets, &templates).await?;
        let now = Utc::now();
        let mut active = current.clone().into_active_model();
        if let Some(name) = &change.name {
            let name = check_name(name)?;
            if name != current.name {
                let taken = rows::Entity::find()
                    .filter(rows::Column::Name.eq(name.as_str()))
                    .one(&self.db.conn)
                    .await?;
                if taken.is_some() {
                    return Err(ServiceError::Conflict(format!("a channel called {name:?} exists")));
                }
            }
            active.name = Set(name);
        }
        active.config = Set(config.to_string());
        active.secrets = Set(self.seal(id, &secrets));
        active.secret_kid = Set(if secrets.is_empty() { String::new() } else { self.key.kid().to_owned() });
        active.templates = Set(serde_json::to_string(&templates).unwrap_or_else(|_| "{}".into()));
        if let Some(rate) = change.rate_limit_per_minute {
            active.rate_limit_per_minute = Set(check_rate(rate)?);
        }
        if let Some(enabled) = change.enabled {
            active.enabled = Set(enabled);
            if enabled {
                active.disabled_reason = Set(String::new());
                active.throttled_until = Set(None);
            } else if current.enabled {
                active.disabled_reason = Set("disabled through the API".into());
            }
        }
        active.updated_at = Set(Some(now));
        let txn = self.db.begin_write().await?;
        let updated = active.update(&txn).await?;
        super::routing_config::bump(&txn).await?;
        txn.commit().await?;
        self.wake.notify_one();
        Ok(updated)
    }

    pub async fn delete_channel(&self, id: Uuid) -> Result<()> {
        let txn = self.db.begin_write().await?;
        let deleted = rows::Entity::delete_by_id(id).exec(&txn).await?;
        if deleted.rows_affected == 0 {
            return Err(ServiceError::NotFound(format!("channel {id} not found")));
        }
        super::routing_config::bump(&txn).await?;
        txn.commit().await?;
        // Deliveries still waiting become dead letters at their next attempt ("channel deleted").
        self.wake.notify_one();
        Ok(())
    }

    /// A new signing secret for a webhook channel; the previous one keeps signing beside it for
    /// the rotation overlap.
    pub async fn rotate_secret(&self, id: Uuid, given: &str) -> Result<(rows::Model, String)> {
        let current = self.get_channel(id).await?;
        if current.kind != kind::WEBHOOK {
            return Err(ServiceError::Precondition("only webhook channels have signing secrets".into()));
        }
        let secret =
            if given.trim().is_empty() { rp_webhooks::generate_secret() } else { given.trim().to_owned() };
        rp_webhooks::validate_secret(&secret)
            .map_err(|e| ServiceError::Invalid(format!("signing_secret: {e}")))?;
        let mut secrets = self.open_secrets(&current).map_err(ServiceError::Internal)?;
        let now = Utc::now();
        if let Some(previous) = secrets.insert("signing_secret".into(), secret.clone()) {
            secrets.insert("previous_signing_secret".into(), previous);
            let expires = now + super::chrono_duration(self.settings.rotation_overlap);
            secrets.insert("previous_signing_secret_expires".into(), expires.to_rfc3339());
        }
        let mut active = current.into_active_model();
        active.secrets = Set(self.seal(id, &secrets));
        active.secret_kid = Set(self.key.kid().to_owned());
        active.updated_at = Set(Some(now));
        let txn = self.db.begin_write().await?;
        let updated = active.update(&txn).await?;
        super::routing_config::bump(&txn).await?;
        txn.commit().await?;
        tracing::info!(channel = %updated.name, "webhook signing secret rotated");
        Ok((updated, secret))
    }

    /// Sends a test message once, now, without retries.
    pub async fn test_channel(&self, id: Uuid) -> Result<TestOutcome> {
        let row = self.get_channel(id).await?;
        let resolved = self.resolve_channel(&row).map_err(ServiceError::Internal)?;
        let event = Event::new(
            super::SOURCE,
            "rp.notification.test",
            format!("channels/{id}"),
            &serde_json::json!({"channel_id": id.to_string(), "channel": row.name,
                "summary": "Test notification from Release Pilot"}),
        );
        let labels = Labels {
            event_type: event.event_type.clone(),
            subject: event.subject.clone(),
            severity: Severity::Low,
            summary: format!("Test notification from Release Pilot to {}", row.name),
            ..Labels::default()
        };
        let message = self.compose(Uuid::now_v7(), "", vec![event], vec![labels], &resolved, None);
        let started_at = Utc::now();
        let sent = self.senders.send(&resolved, &message).await;
        let elapsed = (Utc::now() - started_at).num_milliseconds().max(0);
        Ok(match sent {
            Ok(answer) => TestOutcome {
                started_at,
                latency_ms: answer.latency.as_millis() as i64,
                status_code: i32::from(answer.status_code),
                outcome: match answer.status_code {
                    200..=299 => "success",
                    410 => "gone",
                    429 => "rate_limited",
                    _ => "failure",
                },
                error: if (200..300).contains(&answer.status_code) {
                    String::new()
                } else {
                    format!("the receiver answered {}", answer.status_code)
                },
                excerpt: answer.excerpt,
            },
            Err(err) => TestOutcome {
                started_at,
                latency_ms: elapsed,
                status_code: 0,
                outcome: if matches!(err, SendError::Refused(_)) { "refused" } else { "failure" },
                error: err.to_string(),
                excerpt: String::new(),
            },
        })
    }
}
