//! Routing rules through the API.

use std::time::Duration;

use chrono::Utc;
use rp_runtime::{ServiceError, validate};
use sea_orm::{
    ActiveValue::Set, ColumnTrait, ConnectionTrait, DbErr, EntityTrait, IntoActiveModel as _, QueryFilter,
    QueryOrder,
};
use uuid::Uuid;

use super::{NotifierCore, Result};
use crate::{
    domain::{
        classify::Severity,
        kind,
        routing::{GROUP_LABELS, Rule},
    },
    store::{channels, list, routing_rules as rows, to_list},
};

/// A rule as the API gives it.
#[derive(Debug, Clone, Default)]
pub struct RuleInput {
    pub name: String,
    pub position: i32,
    pub disabled: bool,
    pub event_types: Vec<String>,
    pub severities: Vec<String>,
    pub apps: Vec<String>,
    pub environments: Vec<String>,
    pub channel_ids: Vec<String>,
    pub channel_kinds: Vec<String>,
    pub group_wait_ms: Option<i64>,
    pub repeat_interval_ms: Option<i64>,
    pub group_by: Vec<String>,
    pub stop: bool,
}

const MAX_WINDOW_MS: i64 = 7 * 24 * 3600 * 1000;

pub(crate) fn rule_of(row: &rows::Model) -> Rule {
    let millis = |value: Option<i64>| value.map(|ms| Duration::from_millis(ms.max(0) as u64));
    Rule {
        id: Some(row.id),
        name: row.name.clone(),
        event_types: list(&row.event_types),
        severities: list(&row.severities).iter().filter_map(|s| Severity::parse(s)).collect(),
        apps: list(&row.apps),
        environments: list(&row.environments),
        channel_ids: list(&row.channel_ids).iter().filter_map(|id| Uuid::parse_str(id).ok()).collect(),
        channel_kinds: list(&row.channel_kinds),
        group_wait: millis(row.group_wait_ms),
        repeat_interval: millis(row.repeat_interval_ms),
        group_by: list(&row.group_by),
        stop: row.stop,
    }
}

/// The enabled rules in position order.
pub(crate) async fn active_rules<C: ConnectionTrait>(conn: &C) -> std::result::Result<Vec<Rule>, DbErr> {
    let rows = rows::Entity::find()
        .filter(rows::Column::Enabled.eq(true))
        .order_by_asc(rows::Column::Position)
        .order_by_asc(rows::Column::Id)
        .all(conn)
        .await?;
    Ok(rows.iter().map(rule_of).collect())
}

fn clean(field: &str, values: &[String]) -> Result<Vec<String>> {
    let mut out = Vec::new();
    for value in values.iter().map(|v| v.trim()).filter(|v| !v.is_empty()) {
        validate::text(field, value, 200, false)?;
        if !out.iter().any(|v: &String| v == value) {
            out.push(value.to_owned());
        }
    }
    Ok(out)
}

impl NotifierCore {
    async fn checked(&self, input: &RuleInput) -> Result<RuleInput> {
        let name = input.name.trim();
        if name.is_empty() {
            return Err(ServiceError::Invalid("name must not be empty".into()));
        }
        validate::text("name", name, 200, false)?;
        let event_types = clean("event_types", &input.event_types)?;
        for pattern in &event_types {
            let ok = pattern == "*"
                || pattern == ">"
                || (pattern.starts_with("rp.")
                    && pattern.split('.').all(|t| !t.is_empty())
                    && pattern
                        .split('.')
                        .enumerate()
                        .all(|(i, t)| t != ">" || i == pattern.split('.').count() - 1));
            if !ok {
                return Err(ServiceError::Invalid(format!(
                    "event type pattern {pattern:?} must look like rp.deployment.succeeded, rp.deployment.* or rp.>"
                )));
            }
        }
        let mut severities = Vec::new();
        for severity in clean("severities", &input.severities)? {
            let parsed = Severity::parse(&severity).ok_or_else(|| {
                ServiceError::Invalid(format!("severity {severity:?} must be low, medium, high or critical"))
            })?;
            severities.push(parsed.as_str().to_owned());
        }
        let channel_kinds = clean("channel_kinds", &input.channel_kinds)?;
        for channel_kind in &channel_kinds {
            if !kind::ALL.contains(&channel_kind.as_str()) {
                return Err(ServiceError::Invalid(format!("unknown channel kind {channel_kind:?}")));
            }
        }
        let channel_ids = clean("channel_ids", &input.channel_ids)?;
        for raw in &channel_ids {
            let id = super::parse_id("channel id", raw)?;
            if channels::Entity::find_by_id(id).one(&self.db.conn).await?.is_none() {
                return Err(ServiceError::Invalid(format!("channel {id} does not exist")));
            }
        }
        if channel_ids.is_empty() && channel_kinds.is_empty() {
            return Err(ServiceError::Invalid("a rule needs channel_ids or channel_kinds".into()));
        }
        for (field, value) in
            [("group_wait_ms", input.group_wait_ms), ("repeat_interval_ms", input.repeat_interval_ms)]
        {
            if value.is_some_and(|ms| !(0..=MAX_WINDOW_MS).contains(&ms)) {
                return Err(ServiceError::Invalid(format!("{field} must be between 0 and {MAX_WINDOW_MS}")));
            }
        }
        let group_by = clean("group_by", &input.group_by)?;
        for label in &group_by {
            if !GROUP_LABELS.contains(&label.as_str()) {
                return Err(ServiceError::Invalid(format!(
                    "group_by label {label:?} must be one of {}",
                    GROUP_LABELS.join(", ")
                )));
            }
        }
        Ok(RuleInput {
            name: name.to_owned(),
            position: input.position,
            disabled: input.disabled,
            event_types,
            severities,
            apps: clean("apps", &input.apps)?,
            environments: clean("environments", &input.environments)?,
            channel_ids,
            channel_kinds,
            group_wait_ms: input.group_wait_ms,
            repeat_interval_ms: input.repeat_interval_ms,
            group_by,
            stop: input.stop,
        })
    }

    pub async fn list_rules(&self) -> Result<Vec<rows::Model>> {
        Ok(rows::Entity::find()
            .order_by_asc(rows::Column::Position)
            .order_by_asc(rows::Column::Id)
            .all(&self.db.conn)
            .await?)
    }

    pub async fn create_rule(&self, input: RuleInput) -> Result<rows::Model> {
        let input = self.checked(&input).await?;
        let position = if input.position > 0 {
            input.position
        } else {
            let last = rows::Entity::find().order_by_desc(rows::Column::Position).one(&self.db.conn).await?;
            last.map_or(10, |r| r.position + 10)
        };
        let now = Utc::now();
        let row = rows::Model {
            id: Uuid::now_v7(),
            name: input.name,
            position,
            enabled: !input.disabled,
            event_types: to_list(&input.event_types),
            severities: to_list(&input.severities),
            apps: to_list(&input.apps),
            environments: to_list(&input.environments),
            channel_ids: to_list(&input.channel_ids),
            channel_kinds: to_list(&input.channel_kinds),
            group_wait_ms: input.group_wait_ms,
            repeat_interval_ms: input.repeat_interval_ms,
            group_by: to_list(&input.group_by),
            stop: input.stop,
            created_at: now,
            updated_at: now,
        };
        let txn = self.db.begin_write().await?;
        rows::Entity::insert(row.clone().into_active_model()).exec_without_returning(&txn).await?;
        super::routing_config::bump(&txn).await?;
        txn.commit().await?;
        Ok(row)
    }

    pub async fn update_rule(&self, id: Uuid, input: RuleInput) -> Result<rows::Model> {
        let current = rows::Entity::find_by_id(id)
            .one(&self.db.conn)
            .await?
            .ok_or_else(|| ServiceError::NotFound(format!("routing rule {id} not found")))?;
        let input = self.checked(&input).await?;
        let mut active = current.clone().into_active_model();
        active.name = Set(input.name);
        if input.position > 0 {
            active.position = Set(input.position);
        }
        active.enabled = Set(!input.disabled);
        active.event_types = Set(to_list(&input.event_types));
        active.severities = Set(to_list(&input.severities));
        active.apps = Set(to_list(&input.apps));
        active.environments = Set(to_list(&input.environments));
        active.channel_ids = Set(to_list(&input.channel_ids));
        active.channel_kinds = Set(to_list(&input.channel_kinds));
        active.group_wait_ms = Set(input.group_wait_ms);
        active.repeat_interval_ms = Set(input.repeat_interval_ms);
        active.group_by = Set(to_list(&input.group_by));
        active.stop = Set(input.stop);
        active.updated_at = Set(Utc::now());
        let txn = self.db.begin_write().await?;
        let updated = sea_orm::ActiveModelTrait::update(active, &txn).await?;
        super::routing_config::bump(&txn).await?;
        txn.commit().await?;
        Ok(updated)
    }

    pub async fn delete_rule(&self, id: Uuid) -> Result<()> {
        let txn = self.db.begin_write().await?;
        let deleted = rows::Entity::delete_by_id(id).exec(&txn).await?;
        if deleted.rows_affected == 0 {
            return Err(ServiceError::NotFound(format!("routing rule {id} not found")));
        }
        super::routing_config::bump(&txn).await?;
        txn.commit().await?;
        Ok(())
    }
}
