//! Apps, environments (the promotion pipeline), targets and freeze windows.

use chrono::{DateTime, Utc};
use rp_identity::{Principal, Role};
use rp_proto::events::v1 as ev;
use rp_runtime::{ServiceError as E, ServiceResult as Result};
use sea_orm::{
    ActiveModelTrait, ActiveValue::Set, ColumnTrait, EntityTrait, QueryFilter, QueryOrder, QuerySelect,
};
use serde_json::json;
use uuid::Uuid;

use super::{ReleaseCore, actor, audit_log, now, parse_id, parse_roles};
use crate::{
    domain::{gates::Threshold, plan},
    drivers,
    store::{apps, environments, freeze_windows, targets},
};

/// Settings of a new or changed environment.
#[derive(Debug, Clone, Default)]
pub struct EnvironmentSpec {
    pub position: Option<i32>,
    pub production: Option<bool>,
    pub deployer_roles: Option<Vec<String>>,
    pub required_approvals: Option<i32>,
    pub approver_roles: Option<Vec<String>>,
    pub quality_thresholds: Option<Vec<Threshold>>,
}

/// Settings of a target.
#[derive(Debug, Clone)]
pub struct TargetSpec {
    pub driver: String,
    pub driver_config_json: String,
    pub default_strategy: String,
    pub canary_steps: Vec<plan::CanaryStep>,
    pub webhook_secret: String,
}

fn environment_json(env: &environments::Model) -> serde_json::Value {
    json!({
        "name": env.name, "position": env.position, "production": env.production,
        "deployer_roles": env.deployer_roles, "required_approvals": env.required_approvals,
        "approver_roles": env.approver_roles, "quality_thresholds": env.quality_thresholds,
    })
}

impl ReleaseCore {
    pub async fn create_app(
        &self,
        principal: &Principal,
        name: &str,
        description: &str,
        owner_team: &str,
        idempotency_key: &str,
    ) -> Result<apps::Model> {
        rp_runtime::validate::slug("app name", name)?;
        rp_runtime::validate::text("description", description, 2000, true)?;
        rp_runtime::validate::text("owner_team", owner_team, 100, false)?;
        let scope = format!("create_app:{}", principal.actor_id());
        if let Some(id) = self.replayed(&scope, idempotency_key).await? {
            return self.find_app(&self.db.conn, &id).await;
        }
        let txn = self.db.begin_write().await?;
        let inserted = apps::ActiveModel {
            id: Set(Uuid::now_v7()),
            name: Set(name.to_owned()),
            description: Set(description.to_owned()),
            owner_team: Set(owner_team.to_owned()),
            created_at: Set(now()),
            updated_at: Set(now()),
        }
        .insert(&txn)
        .await;
        let app = match inserted {
            Ok(app) => app,
            Err(err) if rp_db::is_unique_violation(&err) => {
                return Err(E::Conflict(format!("an app named {name} already exists")));
            }
            Err(err) => return Err(err.into()),
        };
        if !self.remember(&txn, &scope, idempotency_key, &app.id.to_string()).await? {
            txn.rollback().await?;
            let id = self.replayed(&scope, idempotency_key).await?.unwrap_or_default();
            return self.find_app(&self.db.conn, &id).await;
        }
        let payload = ev::AppCreated {
            actor: actor(principal),
            app_id: app.id.to_string(),
            name: app.name.clone(),
            owner_team: app.owner_team.clone(),
        };
        self.emit(&txn, "rp.release.app_created", format!("apps/{}", app.name), &payload).await?;
        let after = json!({"name": app.name, "description": app.description, "owner_team": app.owner_team});
        audit_log::append(&txn, &principal.into(), "app.create", "app", &app.name, None, Some(&after))
            .await?;
        self.commit(txn).await?;
        Ok(app)
    }

    pub async fn get_app(&self, id_or_name: &str) -> Result<apps::Model> {
        self.find_app(&self.db.conn, id_or_name).await
    }

    pub async fn list_apps(
        &self,
        page_size: u64,
        after: Option<Uuid>,
    ) -> Result<(Vec<apps::Model>, Option<Uuid>)> {
        let mut query = apps::Entity::find().order_by_asc(apps::Column::Id).limit(page_size + 1);
        if let Some(after) = after {
            query = query.filter(apps::Column::Id.gt(after));
        }
        let mut rows = query.all(&self.db.conn).await?;
        let next = if rows.len() as u64 > page_size {
            rows.truncate(page_size as usize);
            rows.last().map(|a| a.id)
        } else {
            None
        };
        Ok((rows, next))
    }

    // ------------------------------------------------------------------------ environments

    fn check_environment(spec: &EnvironmentSpec) -> Result<()> {
        if let Some(position) = spec.position
            && !(0..=1000).contains(&position)
        {
            return Err(E::Invalid("position must be between 0 and 1000".into()));
        }
        if let Some(required) = spec.required_approvals
            && !(0..=10).contains(&required)
        {
            return Err(E::Invalid("required_approvals must be between 0 and 10".into()));
        }
        if let Some(thresholds) = &spec.quality_thresholds {
            if thresholds.len() > 50 {
                return Err(E::Invalid("at most 50 quality thresholds".into()));
            }
            for threshold in thresholds {
                threshold.validate().map_err(E::Invalid)?;
            }
        }
        for roles in [&spec.deployer_roles, &spec.approver_roles].into_iter().flatten() {
            parse_roles(roles)?;
        }
        Ok(())
    }

    pub async fn create_environment(
        &self,
        principal: &Principal,
        name: &str,
        spec: EnvironmentSpec,
        idempotency_key: &str,
    ) -> Result<environments::Model> {
        rp_runtime::validate::slug("environment name", name)?;
        Self::check_environment(&spec)?;
        let scope = format!("create_environment:{}", principal.actor_id());
        if let Some(id) = self.replayed(&scope, idempotency_key).await? {
            return self.find_environment(&self.db.conn, &id).await;
        }
        let production = spec.production.unwrap_or(false);
        // Defaults follow the seed's authorities: developers deploy outside production, release
        // managers everywhere; production needs a release manager's approval.
        let default_deployers = if production { "release_manager" } else { "developer,release_manager" };
        let deployer_roles = match &spec.deployer_roles {
            Some(roles) => Role::join(&parse_roles(roles)?),
            None => default_deployers.to_owned(),
        };
        let approver_roles = match &spec.approver_roles {
            Some(roles) => Role::join(&parse_roles(roles)?),
            None => "release_manager".to_owned(),
        };
        let txn = self.db.begin_write().await?;
        let position = match spec.position {
            Some(position) => position,
            None => environments::Entity::find()
                .order_by_desc(environments::Column::Position)
                .one(&txn)
                .await?
                .map_or(0, |e| e.position + 10),
        };
        let inserted = environments::ActiveModel {
            id: Set(Uuid::now_v7()),
            name: Set(name.to_owned()),
            position: Set(position),
            production: Set(production),
            deployer_roles: Set(deployer_roles),
            required_approvals: Set(spec.required_approvals.unwrap_or(if production { 1 } else { 0 })),
            approver_roles: Set(approver_roles),
            quality_thresholds: Set(serde_json::to_string(&spec.quality_thresholds.unwrap_or_default())
                .unwrap_or_else(|_| "[]".into())),
            created_at: Set(now()),
            updated_at: Set(now()),
        }
        .insert(&txn)
        .await;
        let env = match inserted {
            Ok(env) => env,
            Err(err) if rp_db::is_unique_violation(&err) => {
                return Err(E::Conflict(format!("an environment named {name} already exists")));
            }
            Err(err) => return Err(err.into()),
        };
        if !self.remember(&txn, &scope, idempotency_key, &env.id.to_string()).await? {
            txn.rollback().await?;
            let id = self.replayed(&scope, idempotency_key).await?.unwrap_or_default();
            return self.find_environment(&self.db.conn, &id).await;
        }
        audit_log::append(
            &txn,
            &principal.into(),
            "environment.create",
            "environment",
            &env.name,
            None,
            Some(&environment_json(&env)),
        )
        .await?;
        self.commit(txn).await?;
        Ok(env)
    }

    pub async fn update_environment(
        &self,
        principal: &Principal,
        id_or_name: &str,
        spec: EnvironmentSpec,
    ) -> Result<environments::Model> {
        Self::check_environment(&spec)?;
        let txn = self.db.begin_write().await?;
        let env = self.find_environment(&txn, id_or_name).await?;
        let before = environment_json(&env);
        let mut active: environments::ActiveModel = env.into();
        if let Some(position) = spec.position {
            active.position = Set(position);
        }
        if let Some(production) = spec.production {
            active.production = Set(production);
        }
        if let Some(roles) = &spec.deployer_roles {
            active.deployer_roles = Set(Role::join(&parse_roles(roles)?));
        }
        if let Some(required) = spec.required_approvals {
            active.required_approvals = Set(required);
        }
        if let Some(roles) = &spec.approver_roles {
            active.approver_roles = Set(Role::join(&parse_roles(roles)?));
        }
        if let Some(thresholds) = &spec.quality_thresholds {
            active.quality_thresholds =
                Set(serde_json::to_string(thresholds).unwrap_or_else(|_| "[]".into()));
        }
        active.updated_at = Set(now());
        let env = active.update(&txn).await?;
        audit_log::append(
            &txn,
            &principal.into(),
            "environment.update",
            "environment",
            &env.name,
            Some(&before),
            Some(&environment_json(&env)),
        )
        .await?;
        self.commit(txn).await?;
        Ok(env)
    }

    /// The pipeline, in promotion order.
    pub async fn list_environments(&self) -> Result<Vec<environments::Model>> {
        Ok(environments::Entity::find()
            .order_by_asc(environments::Column::Position)
            .order_by_asc(environments::Column::Name)
            .all(&self.db.conn)
            .await?)
    }

    /// The environment before `env` in the pipeline.
    pub(crate) async fn previous_environment(
        &self,
        env: &environments::Model,
    ) -> Result<Option<environments::Model>> {
        Ok(environments::Entity::find()
            .filter(environments::Column::Position.lt(env.position))
            .order_by_desc(environments::Column::Position)
            .one(&self.db.conn)
            .await?)
    }

    // ----------------------------------------------------------------------------- targets

    /// Creates or replaces the target of an app in an environment. Returns the target and, when
    /// one was generated, the webhook signing secret (shown once).
    pub async fn put_target(
        &self,
        principal: &Principal,
        app: &str,
        environment: &str,
        spec: TargetSpec,
    ) -> Result<(targets::Model, Option<String>)> {
        drivers::validate_config(&spec.driver, &spec.driver_config_json).map_err(E::Invalid)?;
        let strategy = if spec.default_strategy.is_empty() {
            "canary".to_owned()
        } else {
            spec.default_strategy.clone()
        };
        plan::Strategy::parse(&strategy).map_err(E::Invalid)?;
        if !spec.canary_steps.is_empty() {
            plan::validate_canary(&spec.canary_steps).map_err(E::Invalid)?;
        }
        if !spec.webhook_secret.is_empty() {
            rp_webhooks::validate_secret(&spec.webhook_secret).map_err(|e| E::Invalid(e.to_string()))?;
        }
        let txn = self.db.begin_write().await?;
        let app = self.find_app(&txn, app).await?;
        let env = self.find_environment(&txn, environment).await?;
        let existing = targets::Entity::find()
            .filter(targets::Column::AppId.eq(app.id))
            .filter(targets::Column::EnvironmentId.eq(env.id))
            .one(&txn)
            .await?;
        let mut generated = None;
        let secret = match (&existing, spec.webhook_secret.is_empty()) {
            (_, false) => Some(spec.webhook_secret.clone()),
            (Some(current), true) if current.webhook_secret.is_some() => current.webhook_secret.clone(),
            _ if spec.driver == "webhook" => {
                let secret = rp_webhooks::generate_secret();
                generated = Some(secret.clone());
                Some(secret)
            }
            _ => None,
        };
        let steps_json = serde_json::to_string(&spec.canary_steps).unwrap_or_else(|_| "[]".into());
        let before = existing.as_ref().map(|t| json!({"driver": t.driver, "driver_config": t.driver_config, "default_strategy": t.default_strategy, "canary_steps": t.canary_steps}));
        let target = match existing {
            Some(current) => {
                let mut active: targets::ActiveModel = current.into();
                active.driver = Set(spec.driver.clone());
                active.driver_config = Set(spec.driver_config_json.clone());
                active.webhook_secret = Set(secret);
                active.default_strategy = Set(strategy);
                active.canary_steps = Set(steps_json);
                active.updated_at = Set(now());
                active.update(&txn).await?
            }
            None => {
                targets::ActiveModel {
                    id: Set(Uuid::now_v7()),
                    app_id: Set(app.id),
                    environment_id: Set(env.id),
                    driver: Set(spec.driver.clone()),
                    driver_config: Set(spec.driver_config_json.clone()),
                    webhook_secret: Set(secret),
                    default_strategy: Set(strategy),
                    canary_steps: Set(steps_json),
                    updated_at: Set(now()),
                }
                .insert(&txn)
                .await?
            }
        };
        let after = json!({"driver": target.driver, "driver_config": target.driver_config, "default_strategy": target.default_strategy, "canary_steps": target.canary_steps});
        audit_log::append(
            &txn,
            &principal.into(),
            "target.put",
            "target",
            &format!("{}/{}", app.name, env.name),
            before.as_ref(),
            Some(&after),
        )
        .await?;
        self.commit(txn).await?;
        Ok((target, generated))
    }

    pub async fn list_targets(&self, app: Option<&str>) -> Result<Vec<(targets::Model, String, String)>> {
        let mut query = targets::Entity::find().order_by_asc(targets::Column::Id);
        if let Some(app) = app {
            let app = self.find_app(&self.db.conn, app).await?;
            query = query.filter(targets::Column::AppId.eq(app.id));
        }
        let rows = query.all(&self.db.conn).await?;
        let apps = apps::Entity::find().all(&self.db.conn).await?;
        let envs = environments::Entity::find().all(&self.db.conn).await?;
        Ok(rows
            .into_iter()
            .map(|t| {
                let app = apps.iter().find(|a| a.id == t.app_id).map(|a| a.name.clone()).unwrap_or_default();
                let env = envs
                    .iter()
                    .find(|e| e.id == t.environment_id)
                    .map(|e| e.name.clone())
                    .unwrap_or_default();
                (t, app, env)
            })
            .collect())
    }

    // ---------------------------------------------------------------------- freeze windows

    pub async fn create_freeze(
        &self,
        principal: &Principal,
        environment: Option<&str>,
        starts_at: DateTime<Utc>,
        ends_at: DateTime<Utc>,
        reason: &str,
    ) -> Result<(freeze_windows::Model, String)> {
        if ends_at <= starts_at {
            return Err(E::Invalid("ends_at must be after starts_at".into()));
        }
        rp_runtime::validate::text("reason", reason, 500, false)?;
        let txn = self.db.begin_write().await?;
        let env = match environment {
            Some(name) => Some(self.find_environment(&txn, name).await?),
            None => None,
        };
        let window = freeze_windows::ActiveModel {
            id: Set(Uuid::now_v7()),
            environment_id: Set(env.as_ref().map(|e| e.id)),
            starts_at: Set(starts_at),
            ends_at: Set(ends_at),
            reason: Set(reason.to_owned()),
            created_by: Set(principal.email.clone()),
            created_at: Set(now()),
        }
        .insert(&txn)
        .await?;
        let env_name = env.map(|e| e.name).unwrap_or_default();
        let after =
            json!({"environment": env_name, "starts_at": starts_at, "ends_at": ends_at, "reason": reason});
        audit_log::append(
            &txn,
            &principal.into(),
            "freeze.create",
            "freeze_window",
            &window.id.to_string(),
            None,
            Some(&after),
        )
        .await?;
        self.commit(txn).await?;
        Ok((window, env_name))
    }

    pub async fn list_freezes(&self, include_past: bool) -> Result<Vec<(freeze_windows::Model, String)>> {
        let mut query = freeze_windows::Entity::find().order_by_asc(freeze_windows::Column::StartsAt);
        if !include_past {
            query = query.filter(freeze_windows::Column::EndsAt.gt(now()));
        }
        let rows = query.all(&self.db.conn).await?;
        let envs = environments::Entity::find().all(&self.db.conn).await?;
        Ok(rows
            .into_iter()
            .map(|w| {
                let name = w
                    .environment_id
                    .and_then(|id| envs.iter().find(|e| e.id == id))
                    .map(|e| e.name.clone())
                    .unwrap_or_default();
                (w, name)
            })
            .collect())
    }

    pub async fn delete_freeze(&self, principal: &Principal, id: &str) -> Result<()> {
        let id = parse_id("id", id)?;
        let txn = self.db.begin_write().await?;
        let window = freeze_windows::Entity::find_by_id(id)
            .one(&txn)
            .await?
            .ok_or_else(|| E::NotFound(format!("freeze window {id} not found")))?;
        freeze_windows::Entity::delete_by_id(id).exec(&txn).await?;
        let before =
            json!({"starts_at": window.starts_at, "ends_at": window.ends_at, "reason": window.reason});
        audit_log::append(
            &txn,
            &principal.into(),
            "freeze.delete",
            "freeze_window",
            &id.to_string(),
            Some(&before),
            None,
        )
        .await?;
        self.commit(txn).await?;
        Ok(())
    }

    /// The freeze covering `env` now, if any: (reason, end).
    pub(crate) async fn active_freeze(
        &self,
        env: &environments::Model,
    ) -> Result<Option<(String, DateTime<Utc>)>> {
        let now = now();
        let windows = freeze_windows::Entity::find()
            .filter(freeze_windows::Column::StartsAt.lte(now))
            .filter(freeze_windows::Column::EndsAt.gt(now))
            .all(&self.db.conn)
            .await?;
        Ok(windows
            .into_iter()
            .find(|w| w.environment_id.is_none() || w.environment_id == Some(env.id))
            .map(|w| (w.reason, w.ends_at)))
    }
}
