//! Deployments: creation behind the gates, approvals, people's operations (pause, resume,
//! promote, abort, rollback) and reads. Every transition is a compare-and-set on the row's
//! revision, so of two concurrent operations exactly one wins and the other gets `ABORTED`.

use chrono::{DateTime, Utc};
use rp_identity::{Principal, Role};
use rp_proto::events::v1 as ev;
use rp_runtime::{ServiceError as E, ServiceResult as Result};
use sea_orm::{
    ActiveModelTrait, ActiveValue::Set, ColumnTrait, ConnectionTrait, EntityTrait, IntoActiveModel,
    QueryFilter, QueryOrder, QuerySelect,
};
use serde::{Deserialize, Serialize};
use serde_json::json;
use uuid::Uuid;

use super::{ReleaseCore, actor, audit_log, now, parse_id, stored_roles};
use crate::{
    domain::{
        gates::{self, CheckResult, Threshold},
        plan::{self, CanaryStep, PlanOptions, Step, StepKind, StepStatus, Strategy, phase, state},
    },
    drivers::{DesiredState, Outcome, VersionRef},
    metrics as names,
    store::{approvals, apps, deployments, environments, releases, targets},
};

/// A deployment with the names and versions it refers to.
#[derive(Debug, Clone)]
pub struct DeploymentView {
    pub row: deployments::Model,
    pub app: String,
    pub environment: String,
    pub production: bool,
    pub version: String,
    pub previous_version: String,
    pub steps: Vec<Step>,
    pub approvals: Vec<approvals::Model>,
}

/// Bookkeeping kept with a deployment (driver progress, pause state).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub(crate) struct DriverState {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status_url: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub accepted_at: Option<DateTime<Utc>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub paused_phase: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub paused_remaining_ms: Option<i64>,
}

impl DriverState {
    pub(crate) fn of(row: &deployments::Model) -> Self {
        serde_json::from_str(&row.driver_state).unwrap_or_default()
    }

    pub(crate) fn json(&self) -> String {
        serde_json::to_string(self).unwrap_or_else(|_| "{}".into())
    }
}

pub(crate) fn steps_of(row: &deployments::Model) -> Vec<Step> {
    serde_json::from_str(&row.steps).unwrap_or_default()
}

pub(crate) fn steps_json(steps: &[Step]) -> String {
    serde_json::to_string(steps).unwrap_or_else(|_| "[]".into())
}

/// A request to deploy.
#[derive(Debug, Clone, Default)]
pub struct CreateDeployment {
    pub app: String,
    pub environment: String,
    pub version: String,
    pub release_id: String,
    pub strategy: String,
    pub steps: Vec<CanaryStep>,
    pub verification_seconds: Option<i64>,
    pub pre_promotion_seconds: Option<i64>,
    pub approval_before_switch: bool,
    pub rollback_window_seconds: Option<i64>,
    pub idempotency_key: String,
}

/// What to roll back.
#[derive(Debug, Clone, Default)]
pub struct RollbackTarget {
    pub deployment_id: String,
    pub app: String,
    pub environment: String,
    pub target_version: String,
}

/// A summary for audit records.
pub(crate) fn summary(row: &deployments::Model) -> serde_json::Value {
    json!({
        "state": row.state, "phase": row.phase, "step": row.current_step, "weight": row.weight,
        "revision": row.revision, "failure_reason": row.failure_reason,
    })
}

fn conflict(row: &deployments::Model) -> E {
    E::Aborted(format!(
        "deployment {} changed concurrently (now {} / {}); read it again and retry",
        row.id, row.state, row.phase
    ))
}

impl ReleaseCore {
    /// Writes `next` over `current` if nobody changed it meanwhile; bumps the revision.
    pub(crate) async fn cas<C: ConnectionTrait>(
        &self,
        conn: &C,
        current: &deployments::Model,
        mut next: deployments::Model,
    ) -> Result<deployments::Model> {
        next.revision = current.revision + 1;
        let active = next.clone().into_active_model().reset_all();
        let updated = deployments::Entity::update_many()
            .set(active)
            .filter(deployments::Column::Id.eq(current.id))
            .filter(deployments::Column::Revision.eq(current.revision))
            .exec(conn)
            .await?;
        if updated.rows_affected != 1 {
            return Err(conflict(current));
        }
        Ok(next)
    }

    pub(crate) async fn load_deployment<C: ConnectionTrait>(
        &self,
        conn: &C,
        id: Uuid,
    ) -> Result<deployments::Model> {
        deployments::Entity::find_by_id(id)
            .one(conn)
            .await?
            .ok_or_else(|| E::NotFound(format!("deployment {id} not found")))
    }

    pub(crate) async fn view<C: ConnectionTrait>(
        &self,
        conn: &C,
        row: deployments::Model,
    ) -> Result<DeploymentView> {
        let app = apps::Entity::find_by_id(row.app_id).one(conn).await?.map(|a| a.name).unwrap_or_default();
        let env = environments::Entity::find_by_id(row.environment_id).one(conn).await?;
        let version = releases::Entity::find_by_id(row.release_id)
            .one(conn)
            .await?
            .map(|r| r.version)
            .unwrap_or_default();
        let previous_version = match row.previous_release_id {
            Some(id) => {
                releases::Entity::find_by_id(id).one(conn).await?.map(|r| r.version).unwrap_or_default()
            }
            None => String::new(),
        };
        let approvals = approvals::Entity::find()
            .filter(approvals::Column::DeploymentId.eq(row.id))
            .order_by_asc(approvals::Column::At)
            .all(conn)
            .await?;
        Ok(DeploymentView {
            steps: steps_of(&row),
            app,
            environment: env.as_ref().map(|e| e.name.clone()).unwrap_or_default(),
            production: env.is_some_and(|e| e.production),
            version,
            previous_version,
            approvals,
            row,
        })
    }

    /// Enqueues `rp.deployment.<fact>` for the view.
    pub(crate) async fn deployment_event<C: ConnectionTrait>(
        &self,
        conn: &C,
        fact: &str,
        view: &DeploymentView,
        principal: &Principal,
        reason: &str,
    ) -> Result<()> {
        let payload = ev::DeploymentChanged {
            actor: actor(principal),
            deployment_id: view.row.id.to_string(),
            app: view.app.clone(),
            environment: view.environment.clone(),
            production: view.production,
            release_id: view.row.release_id.to_string(),
            version: view.version.clone(),
            previous_version: view.previous_version.clone(),
            strategy: view.row.strategy.clone(),
            state: view.row.state.clone(),
            phase: view.row.phase.clone(),
            step: view.row.current_step,
            steps: view.steps.len() as i32,
            weight: view.row.weight,
            reason: reason.to_owned(),
            trigger: view.row.trigger.clone(),
            revision: view.row.revision,
        };
        self.emit(conn, &format!("rp.deployment.{fact}"), format!("deployments/{}", view.row.id), &payload)
            .await
    }

    /// Records a transition: event, audit entry and metrics, in `conn`'s transaction.
    pub(crate) async fn record<C: ConnectionTrait>(
        &self,
        conn: &C,
        fact: &str,
        before: Option<&deployments::Model>,
        after: deployments::Model,
        principal: &Principal,
        reason: &str,
    ) -> Result<DeploymentView> {
        let view = self.view(conn, after).await?;
        self.deployment_event(conn, fact, &view, principal, reason).await?;
        let before_json = before.map(summary);
        audit_log::append(
            conn,
            &principal.into(),
            &format!("deployment.{fact}"),
            "deployment",
            &view.row.id.to_string(),
            before_json.as_ref(),
            Some(&summary(&view.row)),
        )
        .await?;
        if state::is_final(&view.row.state) {
            metrics::counter!(names::DEPLOYMENTS_TOTAL, "app" => view.app.clone(), "env" => view.environment.clone(),
                "strategy" => view.row.strategy.clone(), "result" => view.row.state.clone())
            .increment(1);
            if let (Some(started), Some(finished)) = (view.row.started_at, view.row.finished_at) {
                metrics::histogram!(names::DEPLOYMENT_DURATION_SECONDS, "app" => view.app.clone(), "env" => view.environment.clone(),
                    "strategy" => view.row.strategy.clone())
                .record((finished - started).num_milliseconds().max(0) as f64 / 1000.0);
            }
        }
        Ok(view)
    }

    /// The last release that succeeded for an app in an environment.
    pub(crate) async fn serving_release<C: ConnectionTrait>(
        &self,
        conn: &C,
        app_id: Uuid,
        env_id: Uuid,
    ) -> Result<Option<deployments::Model>> {
        Ok(deployments::Entity::find()
            .filter(deployments::Column::AppId.eq(app_id))
            .filter(deployments::Column::EnvironmentId.eq(env_id))
            .filter(deployments::Column::State.eq(state::SUCCEEDED))
            .order_by_desc(deployments::Column::FinishedAt)
            .one(conn)
            .await?)
    }

    // ------------------------------------------------------------------------------ create

    pub async fn create_deployment(
        &self,
        principal: &Principal,
        request: CreateDeployment,
    ) -> Result<DeploymentView> {
        let scope = format!("create_deployment:{}", principal.actor_id());
        if let Some(id) = self.replayed(&scope, &request.idempotency_key).await? {
            let row = self.load_deployment(&self.db.conn, parse_id("id", &id)?).await?;
            return self.view(&self.db.conn, row).await;
        }
        let app = self.find_app(&self.db.conn, &request.app).await?;
        let env = self.find_environment(&self.db.conn, &request.environment).await?;
        let release = if !request.release_id.is_empty() {
            let release = self.release_by_id(&request.release_id).await?;
            if release.app_id != app.id {
                return Err(E::Invalid(format!("release {} is not a release of {}", release.id, app.name)));
            }
            release
        } else if !request.version.is_empty() {
            self.find_release(&self.db.conn, &app, &request.version).await?
        } else {
            return Err(E::Invalid("give the version (or release_id) to deploy".into()));
        };
        let target = targets::Entity::find()
            .filter(targets::Column::AppId.eq(app.id))
            .filter(targets::Column::EnvironmentId.eq(env.id))
            .one(&self.db.conn)
            .await?
            .ok_or_else(|| {
                E::Precondition(format!(
                    "{} has no target in {}: configure one first (PutTarget)",
                    app.name, env.name
                ))
            })?;
        let strategy_name = if request.strategy.is_empty() {
            target.default_strategy.clone()
        } else {
            request.strategy.clone()
        };
        let strategy = Strategy::parse(&strategy_name).map_err(E::Invalid)?;
        let hotfix = strategy == Strategy::Hotfix;

        // Gates, in the order a person would check them.
        let refuse = |refusal: gates::Refusal| match refusal.gate {
            "authority" => E::Forbidden(refusal.to_string()),
            _ => E::Precondition(refusal.to_string()),
        };
        gates::deployer(principal, &stored_roles(&env.deployer_roles), hotfix, &env.name).map_err(refuse)?;
        let freeze = self.active_freeze(&env).await?;
        gates::freeze(freeze.as_ref().map(|(reason, ends)| (reason.as_str(), *ends)), hotfix)
            .map_err(refuse)?;
        if let Some(previous) = self.previous_environment(&env).await? {
            let succeeded = deployments::Entity::find()
                .filter(deployments::Column::ReleaseId.eq(release.id))
                .filter(deployments::Column::EnvironmentId.eq(previous.id))
                .filter(deployments::Column::State.eq(state::SUCCEEDED))
                .one(&self.db.conn)
                .await?
                .is_some();
            gates::promotion_order(Some(&previous.name), succeeded, hotfix, &release.version)
                .map_err(refuse)?;
        }
        let thresholds: Vec<Threshold> = serde_json::from_str(&env.quality_thresholds).unwrap_or_default();
        let checks: Vec<CheckResult> = self
            .latest_checks(release.id)
            .await?
            .into_iter()
            .map(|c| CheckResult { name: c.name, status: c.status, value: c.value })
            .collect();
        gates::quality(&thresholds, &checks, hotfix).map_err(refuse)?;

        let canary = match (&request.steps, strategy) {
            (steps, _) if !steps.is_empty() => steps.clone(),
            _ => {
                let configured: Vec<CanaryStep> =
                    serde_json::from_str(&target.canary_steps).unwrap_or_default();
                if configured.is_empty() { plan::default_canary() } else { configured }
            }
        };
        let defaults = PlanOptions::default();
        let options = PlanOptions {
            verification_seconds: request.verification_seconds.unwrap_or(if hotfix {
                60
            } else {
                defaults.verification_seconds
            }),
            pre_promotion_seconds: request.pre_promotion_seconds.unwrap_or(defaults.pre_promotion_seconds),
            approval_before_switch: request.approval_before_switch,
            rollback_window_seconds: request
                .rollback_window_seconds
                .unwrap_or(defaults.rollback_window_seconds),
        };
        let steps = plan::build(strategy, &canary, options).map_err(E::Invalid)?;
        // A hotfix is approved by the incident commander who runs it.
        let required = if hotfix { 0 } else { env.required_approvals };

        let txn = self.db.begin_write().await?;
        // A newer request replaces one that has not started.
        let waiting = deployments::Entity::find()
            .filter(deployments::Column::AppId.eq(app.id))
            .filter(deployments::Column::EnvironmentId.eq(env.id))
            .filter(deployments::Column::State.is_in([state::PENDING, state::AWAITING_APPROVAL]))
            .all(&txn)
            .await?;
        for old in waiting {
            let mut next = old.clone();
            next.state = state::SUPERSEDED.into();
            next.finished_at = Some(now());
            next.next_action_at = None;
            let next = self.cas(&txn, &old, next).await?;
            self.record(&txn, "superseded", Some(&old), next, principal, "a newer deployment was requested")
                .await?;
        }
        let previous_release_id = self.serving_release(&txn, app.id, env.id).await?.map(|d| d.release_id);
        let initial_state = if required > 0 { state::AWAITING_APPROVAL } else { state::PENDING };
        let row = deployments::Model {
            id: Uuid::now_v7(),
            app_id: app.id,
            environment_id: env.id,
            release_id: release.id,
            previous_release_id,
            strategy: strategy.as_str().into(),
            state: initial_state.into(),
            phase: phase::NONE.into(),
            current_step: 0,
            steps: steps_json(&steps),
            weight: 0,
            required_approvals: required,
            created_by: principal.actor_id().to_owned(),
            created_by_email: principal.email.clone(),
            created_at: now(),
            started_at: None,
            finished_at: None,
            next_action_at: (required == 0).then(now),
            failure_reason: String::new(),
            failure_detected_at: None,
            restored_at: None,
            rollback_of: None,
            trigger: String::new(),
            driver_state: "{}".into(),
            revision: 1,
        };
        let inserted =
            deployments::Entity::insert(row.clone().into_active_model()).exec_without_returning(&txn).await;
        if let Err(err) = inserted {
            if rp_db::is_unique_violation(&err) {
                let active = deployments::Entity::find()
                    .filter(deployments::Column::AppId.eq(app.id))
                    .filter(deployments::Column::EnvironmentId.eq(env.id))
                    .filter(deployments::Column::State.eq(state::IN_PROGRESS))
                    .one(&self.db.conn)
                    .await?;
                let which = active.map(|d| d.id.to_string()).unwrap_or_else(|| "another deployment".into());
                return Err(E::Precondition(format!(
                    "{} already has a deployment in progress in {} ({which}); wait for it, or abort it",
                    app.name, env.name
                )));
            }
            return Err(err.into());
        }
        if !self.remember(&txn, &scope, &request.idempotency_key, &row.id.to_string()).await? {
            txn.rollback().await?;
            let id = self.replayed(&scope, &request.idempotency_key).await?.unwrap_or_default();
            let row = self.load_deployment(&self.db.conn, parse_id("id", &id)?).await?;
            return self.view(&self.db.conn, row).await;
        }
        let view = self.record(&txn, "created", None, row, principal, "").await?;
        if required > 0 {
            self.approval_event(&txn, "requested", &view, principal, "", 0, required, &env).await?;
        }
        self.commit(txn).await?;
        Ok(view)
    }

    #[allow(clippy::too_many_arguments)]
    async fn approval_event<C: ConnectionTrait>(
        &self,
        conn: &C,
        fact: &str,
        view: &DeploymentView,
        principal: &Principal,
        decision: &str,
        approvals: i32,
        required: i32,
        env: &environments::Model,
    ) -> Result<()> {
        let payload = ev::ApprovalChanged {
            actor: actor(principal),
            deployment_id: view.row.id.to_string(),
            app: view.app.clone(),
            environment: view.environment.clone(),
            version: view.version.clone(),
            decision: decision.to_owned(),
            approvals,
            required,
            approver_roles: stored_roles(&env.approver_roles).iter().map(|r| r.as_str().to_owned()).collect(),
        };
        self.emit(conn, &format!("rp.approval.{fact}"), format!("deployments/{}", view.row.id), &payload)
            .await
    }

    // ---------------------------------------------------------------------------- approvals

    pub async fn approve(
        &self,
        principal: &Principal,
        id: &str,
        decision: &str,
        comment: &str,
        key: &str,
    ) -> Result<DeploymentView> {
        let id = parse_id("id", id)?;
        let decision = if decision.is_empty() { "approved" } else { decision };
        if !matches!(decision, "approved" | "rejected") {
            return Err(E::Invalid("decision must be approved or rejected".into()));
        }
        rp_runtime::validate::text("comment", comment, 2000, true)?;
        let scope = format!("approve:{}:{id}", principal.actor_id());
        if self.replayed(&scope, key).await?.is_some() {
            let row = self.load_deployment(&self.db.conn, id).await?;
            return self.view(&self.db.conn, row).await;
        }
        let txn = self.db.begin_write().await?;
        let current = self.load_deployment(&txn, id).await?;
        let env = environments::Entity::find_by_id(current.environment_id)
            .one(&txn)
            .await?
            .ok_or_else(|| E::Internal("environment missing".into()))?;
        let switch_approval =
            current.state == state::IN_PROGRESS && current.phase == phase::AWAITING_APPROVAL;
        if current.state != state::AWAITING_APPROVAL && !switch_approval {
            return Err(E::Precondition(format!(
                "deployment {id} is {} and needs no approval",
                current.state
            )));
        }
        gates::approver(principal, &stored_roles(&env.approver_roles), &current.created_by)
            .map_err(|r| E::Forbidden(r.to_string()))?;
        let inserted = approvals::ActiveModel {
            id: Set(Uuid::now_v7()),
            deployment_id: Set(id),
            approver_id: Set(principal.actor_id().to_owned()),
            approver_email: Set(principal.email.clone()),
            decision: Set(decision.to_owned()),
            comment: Set(comment.to_owned()),
            at: Set(now()),
        }
        .insert(&txn)
        .await;
        match inserted {
            Err(err) if rp_db::is_unique_violation(&err) => {
                return Err(E::Conflict(format!(
                    "{} has already decided on deployment {id}",
                    principal.email
                )));
            }
            other => other?,
        };
        let approved = approvals::Entity::find()
            .filter(approvals::Column::DeploymentId.eq(id))
            .filter(approvals::Column::Decision.eq("approved"))
            .all(&txn)
            .await?
            .len() as i32;
        let required = current.required_approvals.max(1);
        let mut next = current.clone();
        let (fact, reason) = if decision == "rejected" {
            next.state = state::ABORTED.into();
            next.phase = phase::NONE.into();
            next.finished_at = Some(now());
            next.next_action_at = None;
            next.failure_reason = format!("rejected by {}: {comment}", principal.email);
            ("aborted", next.failure_reason.clone())
        } else if approved >= required {
            if switch_approval {
                let mut steps = steps_of(&current);
                if let Some(step) = steps.get_mut(current.current_step as usize) {
                    step.status = StepStatus::Completed;
                    step.completed_at = Some(now());
                }
                next.steps = steps_json(&steps);
                next.phase = phase::HOLDING.into();
            } else {
                next.state = state::PENDING.into();
            }
            next.next_action_at = Some(now());
            ("approved", String::new())
        } else {
            ("approval_recorded", String::new())
        };
        let next = self.cas(&txn, &current, next).await?;
        let view = self.record(&txn, fact, Some(&current), next, principal, &reason).await?;
        let approval_fact = if decision == "rejected" { "rejected" } else { "granted" };
        self.approval_event(&txn, approval_fact, &view, principal, decision, approved, required, &env)
            .await?;
        self.remember(&txn, &scope, key, &id.to_string()).await?;
        self.commit(txn).await?;
        Ok(view)
    }

    // ------------------------------------------------------------------------ operations

    /// Who may operate a running deployment: its environment's deployers and incident commanders.
    async fn check_operator(&self, principal: &Principal, row: &deployments::Model) -> Result<()> {
        let env = environments::Entity::find_by_id(row.environment_id)
            .one(&self.db.conn)
            .await?
            .ok_or_else(|| E::Internal("environment missing".into()))?;
        let mut roles = stored_roles(&env.deployer_roles);
        roles.push(Role::IncidentCommander);
        principal.require_any(&roles).map_err(|e| E::Forbidden(e.to_string()))
    }

    /// Runs `change` on the deployment as one checked transition.
    async fn operate(
        &self,
        principal: &Principal,
        id: &str,
        expected_revision: i64,
        key: &str,
        operation: &str,
        change: impl FnOnce(&deployments::Model) -> Result<(deployments::Model, &'static str, String)>,
    ) -> Result<DeploymentView> {
        let id = parse_id("id", id)?;
        let scope = format!("{operation}:{}:{id}", principal.actor_id());
        if self.replayed(&scope, key).await?.is_some() {
            let row = self.load_deployment(&self.db.conn, id).await?;
            return self.view(&self.db.conn, row).await;
        }
        let row = self.load_deployment(&self.db.conn, id).await?;
        self.check_operator(principal, &row).await?;
        let txn = self.db.begin_write().await?;
        let current = self.load_deployment(&txn, id).await?;
        if expected_revision > 0 && current.revision != expected_revision {
            return Err(conflict(&current));
        }
        let (next, fact, reason) = change(&current)?;
        let next = self.cas(&txn, &current, next).await?;
        let view = self.record(&txn, fact, Some(&current), next, principal, &reason).await?;
        self.remember(&txn, &scope, key, &id.to_string()).await?;
        self.commit(txn).await?;
        Ok(view)
    }

    pub async fn pause(
        &self,
        principal: &Principal,
        id: &str,
        reason: &str,
        expected: i64,
        key: &str,
    ) -> Result<DeploymentView> {
        rp_runtime::validate::text("reason", reason, 500, false)?;
        let reason = reason.to_owned();
        self.operate(principal, id, expected, key, "pause", move |current| {
            if current.state != state::IN_PROGRESS
                || !matches!(current.phase.as_str(), phase::HOLDING | phase::ANALYZING)
            {
                return Err(E::Precondition(format!(
                    "only a deployment holding a step can pause; this one is {} {}",
                    current.state, current.phase
                )));
            }
            let mut driver = DriverState::of(current);
            driver.paused_phase = Some(current.phase.clone());
            driver.paused_remaining_ms =
                current.next_action_at.map(|at| (at - now()).num_milliseconds().max(0));
            let mut next = current.clone();
            next.phase = phase::PAUSED.into();
            next.next_action_at = None;
            next.driver_state = driver.json();
            Ok((next, "paused", reason))
        })
        .await
    }

    pub async fn resume(
        &self,
        principal: &Principal,
        id: &str,
        expected: i64,
        key: &str,
    ) -> Result<DeploymentView> {
        self.operate(principal, id, expected, key, "resume", |current| {
            if current.phase != phase::PAUSED {
                return Err(E::Precondition(format!("deployment {} is not paused", current.id)));
            }
            let mut driver = DriverState::of(current);
            let remaining = driver.paused_remaining_ms.take().unwrap_or(0);
            let mut next = current.clone();
            next.phase = driver.paused_phase.take().unwrap_or_else(|| phase::HOLDING.into());
            next.next_action_at = Some(now() + chrono::Duration::milliseconds(remaining));
            next.driver_state = driver.json();
            Ok((next, "resumed", String::new()))
        })
        .await
    }

    pub async fn promote(
        &self,
        principal: &Principal,
        id: &str,
        full: bool,
        expected: i64,
        key: &str,
    ) -> Result<DeploymentView> {
        self.operate(principal, id, expected, key, "promote", move |current| {
            let holding = matches!(current.phase.as_str(), phase::HOLDING | phase::ANALYZING | phase::PAUSED);
            if current.state != state::IN_PROGRESS || !holding {
                return Err(E::Precondition(format!(
                    "only a deployment holding a step can be promoted; this one is {} {}",
                    current.state, current.phase
                )));
            }
            let mut steps = steps_of(current);
            let mut next = current.clone();
            if full {
                // Skip straight to the last step (all traffic on the new version).
                let last = steps.len().saturating_sub(1);
                for (index, step) in steps.iter_mut().enumerate() {
                    if index < last && step.status != StepStatus::Completed {
                        step.status = if index == current.current_step as usize {
                            StepStatus::Completed
                        } else {
                            StepStatus::Skipped
                        };
                        step.completed_at.get_or_insert(now());
                    }
                }
                next.current_step = last as i32;
                next.phase = phase::APPLYING.into();
            } else {
                // End the current hold now; the engine moves to the next step.
                next.phase = phase::HOLDING.into();
            }
            let mut driver = DriverState::of(current);
            driver.paused_phase = None;
            driver.paused_remaining_ms = None;
            next.driver_state = driver.json();
            next.steps = steps_json(&steps);
            next.next_action_at = Some(now());
            Ok((
                next,
                "promoted",
                if full { "promoted to 100%".into() } else { "promoted to the next step".into() },
            ))
        })
        .await
    }

    /// Stops a deployment. One that had taken traffic gives it back to the stable version first.
    pub async fn abort(
        &self,
        principal: &Principal,
        id: &str,
        reason: &str,
        expected: i64,
        key: &str,
    ) -> Result<DeploymentView> {
        rp_runtime::validate::text("reason", reason, 500, false)?;
        let row = self.load_deployment(&self.db.conn, parse_id("id", id)?).await?;
        self.check_operator(principal, &row).await?;
        if row.state == state::IN_PROGRESS
            && row.weight > 0
            && let Some(stable) = row.previous_release_id
        {
            // Traffic first: the stable version gets everything back before the state changes.
            self.restore_traffic(&row, stable).await?;
        }
        let reason =
            if reason.is_empty() { format!("aborted by {}", principal.email) } else { reason.to_owned() };
        self.operate(principal, id, expected, key, "abort", move |current| {
            if !state::ACTIVE.contains(&current.state.as_str()) {
                return Err(E::Precondition(format!(
                    "deployment {} is already {}",
                    current.id, current.state
                )));
            }
            let mut next = current.clone();
            next.state = state::ABORTED.into();
            next.phase = phase::NONE.into();
            next.weight = 0;
            next.finished_at = Some(now());
            next.next_action_at = None;
            next.failure_reason = reason.clone();
            Ok((next, "aborted", reason))
        })
        .await
    }

    /// Applies `release` at 100% through the deployment's driver (rollback and abort).
    pub(crate) async fn restore_traffic(
        &self,
        row: &deployments::Model,
        release_id: Uuid,
    ) -> Result<Option<rp_events::Event>> {
        let view = self.view(&self.db.conn, row.clone()).await?;
        let target = targets::Entity::find()
            .filter(targets::Column::AppId.eq(row.app_id))
            .filter(targets::Column::EnvironmentId.eq(row.environment_id))
            .one(&self.db.conn)
            .await?
            .ok_or_else(|| E::Precondition("the target was removed; traffic cannot be moved".into()))?;
        let restore = releases::Entity::find_by_id(release_id)
            .one(&self.db.conn)
            .await?
            .ok_or_else(|| E::Internal("release missing".into()))?;
        let desired = DesiredState {
            deployment_id: row.id.to_string(),
            app: view.app.clone(),
            environment: view.environment.clone(),
            strategy: row.strategy.clone(),
            step: row.current_step,
            steps: view.steps.len() as i32,
            action: "restore".into(),
            stable: None,
            canary: VersionRef {
                version: restore.version,
                image: restore.artifact_image,
                digest: restore.artifact_digest,
            },
            canary_weight: 100,
            revision: row.revision,
            callback_url: String::new(),
        };
        let driver = crate::drivers::from_target(
            &target.driver,
            &target.driver_config,
            target.webhook_secret.as_deref(),
            &self.http,
        )
        .map_err(|e| E::Precondition(e.to_string()))?;
        match driver.apply(&desired).await {
            Ok(Outcome::Publish(event)) => {
                // The router learns the route through the outbox: commit it right away.
                let txn = self.db.begin_write().await?;
                self.publish_driver_event(&txn, row, &event).await?;
                self.commit(txn).await?;
                Ok(Some(*event))
            }
            Ok(_) => Ok(None),
            Err(err) => Err(E::Unavailable(format!("traffic could not be restored: {err}"))),
        }
    }

    /// Rolls back: traffic to the last good release (or `target_version`) first, then the
    /// deployment is marked rolled back and a rollback deployment records what now serves.
    /// A second request for the same deployment returns the first one's result.
    pub async fn rollback(
        &self,
        principal: &Principal,
        what: RollbackTarget,
        reason: &str,
        trigger: &str,
        key: &str,
    ) -> Result<DeploymentView> {
        rp_runtime::validate::text("reason", reason, 1000, false)?;
        rp_runtime::validate::text("trigger", trigger, 200, false)?;
        let detected_at = now();
        let subject = if !what.deployment_id.is_empty() {
            self.load_deployment(&self.db.conn, parse_id("deployment_id", &what.deployment_id)?).await?
        } else {
            let app = self.find_app(&self.db.conn, &what.app).await?;
            let env = self.find_environment(&self.db.conn, &what.environment).await?;
            let active = deployments::Entity::find()
                .filter(deployments::Column::AppId.eq(app.id))
                .filter(deployments::Column::EnvironmentId.eq(env.id))
                .filter(deployments::Column::State.is_in([state::IN_PROGRESS, state::SUCCEEDED]))
                .filter(deployments::Column::Strategy.ne("rollback"))
                .order_by_desc(deployments::Column::Id)
                .one(&self.db.conn)
                .await?;
            active.ok_or_else(|| {
                E::Precondition(format!("{} has nothing to roll back in {}", app.name, env.name))
            })?
        };
        self.check_operator(principal, &subject).await?;
        if subject.state == state::ROLLED_BACK {
            // Idempotent: the rollback already happened.
            return self.view(&self.db.conn, subject).await;
        }
        if !matches!(subject.state.as_str(), state::IN_PROGRESS | state::SUCCEEDED) {
            return Err(E::Precondition(format!(
                "deployment {} is {} and cannot be rolled back",
                subject.id, subject.state
            )));
        }
        let target_release = if what.target_version.is_empty() {
            subject.previous_release_id.ok_or_else(|| {
                E::Precondition(
                    "this is the first release in this environment: there is no earlier one to roll back to"
                        .into(),
                )
            })?
        } else {
            let app = apps::Entity::find_by_id(subject.app_id)
                .one(&self.db.conn)
                .await?
                .ok_or_else(|| E::Internal("app missing".into()))?;
            let release = self.find_release(&self.db.conn, &app, &what.target_version).await?;
            let succeeded_before = deployments::Entity::find()
                .filter(deployments::Column::ReleaseId.eq(release.id))
                .filter(deployments::Column::EnvironmentId.eq(subject.environment_id))
                .filter(deployments::Column::State.is_in([state::SUCCEEDED, state::ROLLED_BACK]))
                .filter(deployments::Column::Id.ne(subject.id))
                .one(&self.db.conn)
                .await?
                .is_some();
            if !succeeded_before || release.id == subject.release_id {
                return Err(E::Precondition(format!(
                    "{} never ran successfully in this environment before; roll back to an earlier successful release",
                    release.version
                )));
            }
            release.id
        };

        // Claim the rollback: of concurrent requests (people, replicas), exactly one proceeds; the
        // others wait for its outcome. A rollback wins over the deployment's own progress: when the
        // engine (or another request) changed the deployment between read and write, read again.
        let mut attempt = 0;
        let (current, claimed) = loop {
            attempt += 1;
            let claim_txn = self.db.begin_write().await?;
            let current = self.load_deployment(&claim_txn, subject.id).await?;
            if current.state == state::ROLLED_BACK || current.phase == "rolling_back" {
                claim_txn.rollback().await?;
                let row = self.wait_rolled_back(subject.id).await?;
                return self.view(&self.db.conn, row).await;
            }
            if !matches!(current.state.as_str(), state::IN_PROGRESS | state::SUCCEEDED) {
                claim_txn.rollback().await?;
                return Err(E::Precondition(format!(
                    "deployment {} is {} and cannot be rolled back",
                    current.id, current.state
                )));
            }
            let mut claimed = current.clone();
            claimed.phase = "rolling_back".into();
            claimed.next_action_at = None;
            claimed.failure_detected_at.get_or_insert(detected_at);
            match self.cas(&claim_txn, &current, claimed).await {
                Ok(claimed) => {
                    claim_txn.commit().await?;
                    break (current, claimed);
                }
                Err(E::Aborted(_)) if attempt < 10 => {
                    claim_txn.rollback().await?;
                    continue;
                }
                Err(err) => return Err(err),
            }
        };

        // Traffic first.
        if let Err(err) = self.restore_traffic(&claimed, target_release).await {
            let txn = self.db.begin_write().await?;
            let mut back = claimed.clone();
            back.phase =
                if current.state == state::IN_PROGRESS { phase::HOLDING.into() } else { phase::NONE.into() };
            back.next_action_at = (current.state == state::IN_PROGRESS).then(now);
            back.failure_reason = err.to_string();
            self.cas(&txn, &claimed, back).await?;
            self.commit(txn).await?;
            return Err(err);
        }
        let restored_at = now();

        let txn = self.db.begin_write().await?;
        let mut rolled = claimed.clone();
        rolled.state = state::ROLLED_BACK.into();
        rolled.phase = phase::NONE.into();
        rolled.weight = 0;
        rolled.finished_at = Some(restored_at);
        rolled.restored_at = Some(restored_at);
        rolled.trigger = if trigger.is_empty() { "manual".into() } else { trigger.to_owned() };
        rolled.failure_reason =
            if reason.is_empty() { format!("rolled back by {}", principal.email) } else { reason.to_owned() };
        let rolled = self.cas(&txn, &claimed, rolled).await?;
        let view = self
            .record(&txn, "rolled_back", Some(&claimed), rolled.clone(), principal, &rolled.failure_reason)
            .await?;
        metrics::counter!(names::ROLLBACKS_TOTAL, "app" => view.app.clone(), "env" => view.environment.clone(), "trigger" => rolled.trigger.clone())
            .increment(1);
        // What serves now, recorded as a deployment of its own (status, DORA).
        let record = deployments::Model {
            id: Uuid::now_v7(),
            release_id: target_release,
            previous_release_id: Some(rolled.release_id),
            strategy: Strategy::Rollback.as_str().into(),
            state: state::SUCCEEDED.into(),
            phase: phase::NONE.into(),
            current_step: 0,
            steps: steps_json(
                &plan::build(Strategy::Rollback, &[], PlanOptions::default()).unwrap_or_default(),
            ),
            weight: 100,
            required_approvals: 0,
            created_by: principal.actor_id().to_owned(),
            created_by_email: principal.email.clone(),
            created_at: detected_at,
            started_at: Some(detected_at),
            finished_at: Some(restored_at),
            next_action_at: None,
            failure_reason: String::new(),
            failure_detected_at: None,
            restored_at: Some(restored_at),
            rollback_of: Some(rolled.id),
            trigger: rolled.trigger.clone(),
            driver_state: "{}".into(),
            revision: 1,
            ..rolled.clone()
        };
        deployments::Entity::insert(record.into_active_model()).exec_without_returning(&txn).await?;
        self.remember(
            &txn,
            &format!("rollback:{}:{}", principal.actor_id(), rolled.id),
            key,
            &rolled.id.to_string(),
        )
        .await?;
        self.commit(txn).await?;
        Ok(view)
    }

    /// Waits (briefly) for a concurrent rollback to finish, then returns its result.
    async fn wait_rolled_back(&self, id: Uuid) -> Result<deployments::Model> {
        for _ in 0..100 {
            let row = self.load_deployment(&self.db.conn, id).await?;
            if row.phase != "rolling_back" {
                return Ok(row);
            }
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
        self.load_deployment(&self.db.conn, id).await
    }

    /// An external deployer reports how an accepted step went.
    pub async fn driver_result(
        &self,
        principal: &Principal,
        id: &str,
        step: i32,
        status: &str,
        message: &str,
    ) -> Result<DeploymentView> {
        rp_runtime::validate::text("message", message, 2000, false)?;
        if !matches!(status, "succeeded" | "failed") {
            return Err(E::Invalid("status must be succeeded or failed".into()));
        }
        let row = self.load_deployment(&self.db.conn, parse_id("deployment_id", id)?).await?;
        self.check_operator(principal, &row).await?;
        if row.phase != phase::AWAITING_DRIVER || row.current_step != step {
            return Err(E::Precondition(format!(
                "deployment {} is not waiting for step {step} (it is {} at step {})",
                row.id, row.phase, row.current_step
            )));
        }
        match status {
            "succeeded" => self.step_applied(&row, principal).await,
            _ => self.fail(&row, principal, &format!("the deployer reported failure: {message}")).await,
        }
    }

    pub async fn get_deployment(&self, id: &str) -> Result<DeploymentView> {
        let row = self.load_deployment(&self.db.conn, parse_id("id", id)?).await?;
        self.view(&self.db.conn, row).await
    }

    /// Newest first.
    pub async fn list_deployments(
        &self,
        app: Option<&str>,
        environment: Option<&str>,
        state_filter: Option<&str>,
        page_size: u64,
        before: Option<Uuid>,
    ) -> Result<(Vec<DeploymentView>, Option<Uuid>)> {
        let mut query =
            deployments::Entity::find().order_by_desc(deployments::Column::Id).limit(page_size + 1);
        if let Some(app) = app {
            query = query.filter(deployments::Column::AppId.eq(self.find_app(&self.db.conn, app).await?.id));
        }
        if let Some(env) = environment {
            query = query.filter(
                deployments::Column::EnvironmentId.eq(self.find_environment(&self.db.conn, env).await?.id),
            );
        }
        if let Some(wanted) = state_filter {
            let known = [
                state::PENDING,
                state::AWAITING_APPROVAL,
                state::IN_PROGRESS,
                state::SUCCEEDED,
                state::FAILED,
                state::ROLLED_BACK,
                state::ABORTED,
                state::SUPERSEDED,
            ];
            if !known.contains(&wanted) {
                return Err(E::Invalid(format!("unknown state {wanted:?}")));
            }
            query = query.filter(deployments::Column::State.eq(wanted));
        }
        if let Some(before) = before {
            query = query.filter(deployments::Column::Id.lt(before));
        }
        let mut rows = query.all(&self.db.conn).await?;
        let next = if rows.len() as u64 > page_size {
            rows.truncate(page_size as usize);
            rows.last().map(|r| r.id)
        } else {
            None
        };
        let mut views = Vec::with_capacity(rows.len());
        for row in rows {
            views.push(self.view(&self.db.conn, row).await?);
        }
        Ok((views, next))
    }

    /// App × environment → serving version and deployment in flight.
    pub async fn status(
        &self,
        app: Option<&str>,
    ) -> Result<Vec<(String, String, String, Option<DateTime<Utc>>, Option<DeploymentView>)>> {
        let apps = match app {
            Some(name) => vec![self.find_app(&self.db.conn, name).await?],
            None => apps::Entity::find().order_by_asc(apps::Column::Name).all(&self.db.conn).await?,
        };
        let envs = self.list_environments().await?;
        let mut entries = Vec::new();
        for app in &apps {
            for env in &envs {
                let serving = self.serving_release(&self.db.conn, app.id, env.id).await?;
                let active = deployments::Entity::find()
                    .filter(deployments::Column::AppId.eq(app.id))
                    .filter(deployments::Column::EnvironmentId.eq(env.id))
                    .filter(deployments::Column::State.is_in(state::ACTIVE))
                    .one(&self.db.conn)
                    .await?;
                let has_target = targets::Entity::find()
                    .filter(targets::Column::AppId.eq(app.id))
                    .filter(targets::Column::EnvironmentId.eq(env.id))
                    .one(&self.db.conn)
                    .await?
                    .is_some();
                if serving.is_none() && active.is_none() && !has_target {
                    continue;
                }
                let version = match &serving {
                    Some(d) => releases::Entity::find_by_id(d.release_id)
                        .one(&self.db.conn)
                        .await?
                        .map(|r| r.version)
                        .unwrap_or_default(),
                    None => String::new(),
                };
                let active = match active {
                    Some(row) => Some(self.view(&self.db.conn, row).await?),
                    None => None,
                };
                entries.push((
                    app.name.clone(),
                    env.name.clone(),
                    version,
                    serving.and_then(|d| d.finished_at),
                    active,
                ));
            }
        }
        Ok(entries)
    }

    /// Deployment rows of one app and environment, oldest first (DORA).
    pub(crate) async fn history(&self, app_id: Uuid, env_id: Uuid) -> Result<Vec<deployments::Model>> {
        Ok(deployments::Entity::find()
            .filter(deployments::Column::AppId.eq(app_id))
            .filter(deployments::Column::EnvironmentId.eq(env_id))
            .order_by_asc(deployments::Column::CreatedAt)
            .order_by_asc(deployments::Column::Id)
            .limit(100_000)
            .all(&self.db.conn)
            .await?)
    }
}

/// Steps in the proto's words.
pub fn step_kind(kind: StepKind) -> &'static str {
    match kind {
        StepKind::Weight => "weight",
        StepKind::Approval => "approval",
        StepKind::Switch => "switch",
    }
}

pub fn step_status(status: StepStatus) -> &'static str {
    match status {
        StepStatus::Pending => "pending",
        StepStatus::Running => "running",
        StepStatus::Completed => "completed",
        StepStatus::Skipped => "skipped",
    }
}
