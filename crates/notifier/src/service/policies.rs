//! Escalation policies through the API.

use chrono::Utc;
use rp_runtime::{ServiceError, validate};
use sea_orm::{ActiveValue::Set, ColumnTrait, EntityTrait, IntoActiveModel as _, QueryFilter, QueryOrder};
use uuid::Uuid;

use super::{NotifierCore, Result};
use crate::{
    domain::{
        classify::Severity,
        escalation::{self, Level},
    },
    store::{channels, escalation_policies as rows, to_list},
};

/// A policy as the API gives it.
#[derive(Debug, Clone, Default)]
pub struct PolicyInput {
    pub name: String,
    pub disabled: bool,
    pub severities: Vec<String>,
    pub apps: Vec<String>,
    pub environments: Vec<String>,
    pub levels: Vec<Level>,
}

impl NotifierCore {
    async fn checked_policy(&self, input: PolicyInput) -> Result<PolicyInput> {
        let name = input.name.trim().to_owned();
        if name.is_empty() {
            return Err(ServiceError::Invalid("name must not be empty".into()));
        }
        validate::text("name", &name, 200, false)?;
        let mut severities = Vec::new();
        for severity in input.severities.iter().filter(|s| !s.trim().is_empty()) {
            let parsed = Severity::parse(severity).ok_or_else(|| {
                ServiceError::Invalid(format!("severity {severity:?} must be low, medium, high or critical"))
            })?;
            severities.push(parsed.as_str().to_owned());
        }
        let mut levels = input.levels;
        for level in &mut levels {
            level.name = level.name.trim().to_owned();
            validate::text("level name", &level.name, 200, false)?;
            level.channel_ids.retain(|id| !id.trim().is_empty());
            level.channel_kinds.retain(|k| !k.trim().is_empty());
            for raw in &level.channel_ids {
                let id = super::parse_id("channel id", raw)?;
                if channels::Entity::find_by_id(id).one(&self.db.conn).await?.is_none() {
                    return Err(ServiceError::Invalid(format!("channel {id} does not exist")));
                }
            }
        }
        escalation::validate_levels(&levels).map_err(ServiceError::Invalid)?;
        for (field, values) in [("apps", &input.apps), ("environments", &input.environments)] {
            for value in values {
                validate::text(field, value, 200, false)?;
            }
        }
        Ok(PolicyInput {
            name,
            disabled: input.disabled,
            severities,
            apps: input.apps,
            environments: input.environments,
            levels,
        })
    }

    pub async fn list_policies(&self) -> Result<Vec<rows::Model>> {
        Ok(rows::Entity::find().order_by_asc(rows::Column::CreatedAt).all(&self.db.conn).await?)
    }

    pub async fn create_policy(&self, input: PolicyInput) -> Result<rows::Model> {
        let input = self.checked_policy(input).await?;
        let taken = rows::Entity::find()
            .filter(rows::Column::Name.eq(input.name.as_str()))
            .one(&self.db.conn)
            .await?;
        if taken.is_some() {
            return Err(ServiceError::Conflict(format!(
                "an escalation policy called {:?} exists",
                input.name
            )));
        }
        let now = Utc::now();
        let row = rows::Model {
            id: Uuid::now_v7(),
            name: input.name,
            enabled: !input.disabled,
            severities: to_list(&input.severities),
            apps: to_list(&input.apps),
            environments: to_list(&input.environments),
            levels: serde_json::to_string(&input.levels).unwrap_or_else(|_| "[]".into()),
            created_at: now,
            updated_at: now,
        };
        rows::Entity::insert(row.clone().into_active_model()).exec_without_returning(&self.db.conn).await?;
        Ok(row)
    }

    pub async fn update_policy(&self, id: Uuid, input: PolicyInput) -> Result<rows::Model> {
        let current = rows::Entity::find_by_id(id)
            .one(&self.db.conn)
            .await?
            .ok_or_else(|| ServiceError::NotFound(format!("escalation policy {id} not found")))?;
        let input = self.checked_policy(input).await?;
        if input.name != current.name {
            let taken = rows::Entity::find()
                .filter(rows::Column::Name.eq(input.name.as_str()))
                .one(&self.db.conn)
                .await?;
            if taken.is_some() {
                return Err(ServiceError::Conflict(format!(
                    "an escalation policy called {:?} exists",
                    input.name
                )));
            }
        }
        let mut active = current.into_active_model();
        active.name = Set(input.name);
        active.enabled = Set(!input.disabled);
        active.severities = Set(to_list(&input.severities));
        active.apps = Set(to_list(&input.apps));
        active.environments = Set(to_list(&input.environments));
        active.levels = Set(serde_json::to_string(&input.levels).unwrap_or_else(|_| "[]".into()));
        active.updated_at = Set(Utc::now());
        // Running escalations keep the levels they started with.
        Ok(sea_orm::ActiveModelTrait::update(active, &self.db.conn).await?)
    }

    pub async fn delete_policy(&self, id: Uuid) -> Result<()> {
        let deleted = rows::Entity::delete_by_id(id).exec(&self.db.conn).await?;
        if deleted.rows_affected == 0 {
            return Err(ServiceError::NotFound(format!("escalation policy {id} not found")));
        }
        Ok(())
    }
}
