//! The deployment engine: moves deployments along their steps. All timing lives in the database
//! (`next_action_at`), so a restart — or another replica — resumes exactly where the work was.
//! A replica claims a step by compare-and-set before calling the driver and holds it for
//! `release.step_lease_secs`; if it dies, the lease runs out and another replica applies the step
//! again (drivers are idempotent).

use std::{sync::Arc, time::Duration};

use rp_identity::Principal;
use rp_runtime::{CancellationToken, ServiceError as E, ServiceResult as Result};
use sea_orm::{ColumnTrait, EntityTrait, QueryFilter, QueryOrder, QuerySelect};

use super::{
    ReleaseCore,
    deployments::{DeploymentView, DriverState, steps_json, steps_of},
    now,
};
use crate::{
    domain::plan::{StepKind, StepStatus, phase, state},
    drivers::{self, DesiredState, Outcome, PollResult, VersionRef},
    store::{deployments, releases, targets},
};

/// Runs the engine until shutdown.
pub struct Engine;

impl Engine {
    pub fn spawn(core: Arc<ReleaseCore>, shutdown: CancellationToken) -> tokio::task::JoinHandle<()> {
        tokio::spawn(async move {
            let tick = Duration::from_millis(core.config.release.engine_tick_ms);
            loop {
                match core.run_due().await {
                    Ok(worked) if worked > 0 => continue,
                    Ok(_) => {}
                    Err(err) => tracing::warn!(error = %err, "deployment engine pass failed"),
                }
                tokio::select! {
                    _ = shutdown.cancelled() => break,
                    _ = core.engine_wake.notified() => {}
                    _ = tokio::time::sleep(tick) => {}
                }
            }
        })
    }
}

fn lease(core: &ReleaseCore) -> chrono::Duration {
    chrono::Duration::seconds(core.config.release.step_lease_secs as i64)
}

impl ReleaseCore {
    /// Advances every deployment whose next action is due; returns how many it touched.
    pub async fn run_due(&self) -> Result<usize> {
        let due = deployments::Entity::find()
            .filter(deployments::Column::State.is_in([state::PENDING, state::IN_PROGRESS]))
            .filter(deployments::Column::NextActionAt.lte(now()))
            .order_by_asc(deployments::Column::NextActionAt)
            .limit(50)
            .all(&self.db.conn)
            .await?;
        let count = due.len();
        for row in due {
            let id = row.id;
            match self.advance(row).await {
                Ok(()) => {}
                // Another replica or a person moved it first: nothing to do.
                Err(E::Aborted(_)) => {}
                Err(err) => tracing::warn!(deployment = %id, error = %err, "cannot advance deployment"),
            }
        }
        Ok(count)
    }

    async fn advance(&self, row: deployments::Model) -> Result<()> {
        match (row.state.as_str(), row.phase.as_str()) {
            (state::PENDING, _) => self.start(row).await,
            (state::IN_PROGRESS, phase::APPLYING) => self.apply_step(row).await,
            (state::IN_PROGRESS, phase::HOLDING | phase::ANALYZING) => self.hold_done(row).await,
            (state::IN_PROGRESS, phase::AWAITING_DRIVER) => self.check_driver(row).await,
            _ => Ok(()),
        }
    }

    async fn start(&self, current: deployments::Model) -> Result<()> {
        let txn = self.db.begin_write().await?;
        let current = self.load_deployment(&txn, current.id).await?;
        if current.state != state::PENDING {
            return Ok(());
        }
        let mut steps = steps_of(&current);
        let mut next = current.clone();
        next.state = state::IN_PROGRESS.into();
        next.started_at = Some(now());
        next.current_step = 0;
        next.phase = phase::APPLYING.into();
        next.next_action_at = Some(now() + lease(self));
        if let Some(step) = steps.first_mut() {
            step.status = StepStatus::Running;
            step.started_at = Some(now());
        }
        next.steps = steps_json(&steps);
        let next = self.cas(&txn, &current, next).await?;
        self.record(&txn, "started", Some(&current), next.clone(), &Principal::system(), "").await?;
        self.commit(txn).await?;
        self.apply_step(next).await
    }

    /// Applies the current step through the target's driver.
    async fn apply_step(&self, current: deployments::Model) -> Result<()> {
        let steps = steps_of(&current);
        let Some(step) = steps.get(current.current_step as usize).cloned() else {
            return self.finish(current).await;
        };
        if step.kind == StepKind::Approval {
            let txn = self.db.begin_write().await?;
            let mut next = current.clone();
            next.phase = phase::AWAITING_APPROVAL.into();
            next.next_action_at = None;
            let next = self.cas(&txn, &current, next).await?;
            let view = self
                .record(
                    &txn,
                    "awaiting_approval",
                    Some(&current),
                    next,
                    &Principal::system(),
                    "the switch needs an approval",
                )
                .await?;
            let payload = rp_proto::events::v1::ApprovalChanged {
                actor: None,
                deployment_id: view.row.id.to_string(),
                app: view.app.clone(),
                environment: view.environment.clone(),
                version: view.version.clone(),
                decision: String::new(),
                approvals: 0,
                required: view.row.required_approvals.max(1),
                approver_roles: Vec::new(),
            };
            self.emit(&txn, "rp.approval.requested", format!("deployments/{}", view.row.id), &payload)
                .await?;
            self.commit(txn).await?;
            return Ok(());
        }
        // Claim (or renew the claim on) the step before the slow part.
        let claim_txn = self.db.begin_write().await?;
        let mut claimed = current.clone();
        claimed.phase = phase::APPLYING.into();
        claimed.next_action_at = Some(now() + lease(self));
        let claimed = self.cas(&claim_txn, &current, claimed).await?;
        claim_txn.commit().await?;

        let desired = match self.desired_state(&claimed, step.weight, step_action(step.kind)).await {
            Ok(desired) => desired,
            Err(err) => return self.fail(&claimed, &Principal::system(), &err.to_string()).await.map(|_| ()),
        };
        let driver = match self.driver_for(&claimed).await {
            Ok(driver) => driver,
            Err(err) => return self.fail(&claimed, &Principal::system(), &err.to_string()).await.map(|_| ()),
        };
        match driver.apply(&desired).await {
            Ok(Outcome::Done) => {
                self.step_applied_with(&claimed, &Principal::system(), None).await.map(|_| ())
            }
            Ok(Outcome::Publish(event)) => {
                self.step_applied_with(&claimed, &Principal::system(), Some(*event)).await.map(|_| ())
            }
            Ok(Outcome::Accepted { status_url }) => {
                let txn = self.db.begin_write().await?;
                let mut next = claimed.clone();
                let mut driver_state = DriverState::of(&claimed);
                driver_state.accepted_at = Some(now());
                let wait = match &status_url {
                    Some(_) => chrono::Duration::milliseconds(self.config.release.driver_poll_ms as i64),
                    None => chrono::Duration::seconds(self.config.release.driver_timeout_secs as i64),
                };
                driver_state.status_url = status_url;
                next.phase = phase::AWAITING_DRIVER.into();
                next.driver_state = driver_state.json();
                next.next_action_at = Some(now() + wait);
                let next = self.cas(&txn, &claimed, next).await?;
                self.record(&txn, "step_accepted", Some(&claimed), next, &Principal::system(), "").await?;
                self.commit(txn).await
            }
            Err(err) => self.fail(&claimed, &Principal::system(), &err.to_string()).await.map(|_| ()),
        }
    }

    /// The driver confirmed the current step: traffic is at the step's weight; the hold starts.
    pub(crate) async fn step_applied(
        &self,
        current: &deployments::Model,
        principal: &Principal,
    ) -> Result<DeploymentView> {
        self.step_applied_with(current, principal, None).await
    }

    async fn step_applied_with(
        &self,
        current: &deployments::Model,
        principal: &Principal,
        publish: Option<rp_events::Event>,
    ) -> Result<DeploymentView> {
        let txn = self.db.begin_write().await?;
        let mut steps = steps_of(current);
        let index = current.current_step as usize;
        let mut next = current.clone();
        if let Some(step) = steps.get_mut(index) {
            step.status = StepStatus::Running;
            step.started_at.get_or_insert(now());
            next.weight = step.weight;
            next.phase = if step.analysis { phase::ANALYZING.into() } else { phase::HOLDING.into() };
            next.next_action_at = Some(now() + chrono::Duration::seconds(step.hold_seconds.max(0)));
        }
        let mut driver_state = DriverState::of(current);
        driver_state.status_url = None;
        driver_state.accepted_at = None;
        next.driver_state = driver_state.json();
        next.steps = steps_json(&steps);
        let next = self.cas(&txn, current, next).await?;
        if let Some(event) = publish {
            self.publish_driver_event(&txn, current, &event).await?;
        }
        let view = self.record(&txn, "step_advanced", Some(current), next, principal, "").await?;
        self.commit(txn).await?;
        Ok(view)
    }

    /// The hold of the current step is over: next step, or done.
    async fn hold_done(&self, current: deployments::Model) -> Result<()> {
        let mut steps = steps_of(&current);
        let index = current.current_step as usize;
        if let Some(step) = steps.get_mut(index) {
            step.status = StepStatus::Completed;
            step.completed_at.get_or_insert(now());
        }
        if index + 1 >= steps.len() {
            let mut done = current.clone();
            done.steps = steps_json(&steps);
            return self.finish_from(&current, done).await;
        }
        let txn = self.db.begin_write().await?;
        let mut next = current.clone();
        next.current_step = index as i32 + 1;
        if let Some(step) = steps.get_mut(index + 1) {
            step.status = StepStatus::Running;
            step.started_at = Some(now());
        }
        next.steps = steps_json(&steps);
        next.phase = phase::APPLYING.into();
        next.next_action_at = Some(now() + lease(self));
        let next = self.cas(&txn, &current, next).await?;
        txn.commit().await?;
        self.apply_step(next).await
    }

    async fn finish(&self, current: deployments::Model) -> Result<()> {
        let done = current.clone();
        self.finish_from(&current, done).await
    }

    async fn finish_from(&self, current: &deployments::Model, mut done: deployments::Model) -> Result<()> {
        let txn = self.db.begin_write().await?;
        done.state = state::SUCCEEDED.into();
        done.phase = phase::NONE.into();
        done.weight = 100;
        done.finished_at = Some(now());
        done.next_action_at = None;
        let done = self.cas(&txn, current, done).await?;
        self.record(&txn, "succeeded", Some(current), done, &Principal::system(), "").await?;
        self.commit(txn).await
    }

    /// Polls an accepted step, or fails it when the deployer took too long.
    async fn check_driver(&self, current: deployments::Model) -> Result<()> {
        let driver_state = DriverState::of(&current);
        let timeout = chrono::Duration::seconds(self.config.release.driver_timeout_secs as i64);
        let timed_out = driver_state.accepted_at.is_none_or(|at| now() - at > timeout);
        if let Some(url) = &driver_state.status_url {
            let driver = self.driver_for(&current).await?;
            match driver.poll(url).await {
                Ok(PollResult::Succeeded) => {
                    return self.step_applied(&current, &Principal::system()).await.map(|_| ());
                }
                Ok(PollResult::Failed(message)) => {
                    return self
                        .fail(
                            &current,
                            &Principal::system(),
                            &format!("the deployer reported failure: {message}"),
                        )
                        .await
                        .map(|_| ());
                }
                Ok(PollResult::InProgress) | Err(_) if !timed_out => {
                    let txn = self.db.begin_write().await?;
                    let mut next = current.clone();
                    next.next_action_at = Some(
                        now() + chrono::Duration::milliseconds(self.config.release.driver_poll_ms as i64),
                    );
                    self.cas(&txn, &current, next).await?;
                    return Ok(txn.commit().await?);
                }
                _ => {}
            }
        }
        if timed_out {
            let reason = format!(
                "the deployer did not report step {} within {}s",
                current.current_step,
                timeout.num_seconds()
            );
            return self.fail(&current, &Principal::system(), &reason).await.map(|_| ());
        }
        Ok(())
    }

    /// Fails a deployment; if it had taken traffic, gives it back to the stable version.
    pub(crate) async fn fail(
        &self,
        current: &deployments::Model,
        principal: &Principal,
        reason: &str,
    ) -> Result<DeploymentView> {
        let detected = now();
        let mut restored = None;
        if current.weight > 0
            && let Some(stable) = current.previous_release_id
        {
            match self.restore_traffic(current, stable).await {
                Ok(_) => restored = Some(now()),
                Err(err) => {
                    tracing::error!(deployment = %current.id, error = %err, "failed deployment: traffic could not be restored")
                }
            }
        }
        let txn = self.db.begin_write().await?;
        let latest = self.load_deployment(&txn, current.id).await?;
        let mut next = latest.clone();
        next.state = state::FAILED.into();
        next.phase = phase::NONE.into();
        next.finished_at = Some(now());
        next.next_action_at = None;
        next.failure_reason = reason.to_owned();
        next.failure_detected_at = Some(detected);
        next.restored_at = restored;
        if restored.is_some() {
            next.weight = 0;
        }
        let next = self.cas(&txn, &latest, next).await?;
        let view = self.record(&txn, "failed", Some(&latest), next, principal, reason).await?;
        self.commit(txn).await?;
        Ok(view)
    }

    async fn driver_for(&self, row: &deployments::Model) -> Result<Box<dyn drivers::Driver>> {
        let target = targets::Entity::find()
            .filter(targets::Column::AppId.eq(row.app_id))
            .filter(targets::Column::EnvironmentId.eq(row.environment_id))
            .one(&self.db.conn)
            .await?
            .ok_or_else(|| E::Precondition("the deployment's target was removed".into()))?;
        drivers::from_target(
            &target.driver,
            &target.driver_config,
            target.webhook_secret.as_deref(),
            &self.http,
        )
        .map_err(|e| E::Precondition(e.to_string()))
    }

    async fn desired_state(
        &self,
        row: &deployments::Model,
        weight: i32,
        action: &str,
    ) -> Result<DesiredState> {
        let view = self.view(&self.db.conn, row.clone()).await?;
        let version = |release: releases::Model| VersionRef {
            version: release.version,
            image: release.artifact_image,
            digest: release.artifact_digest,
        };
        let canary = releases::Entity::find_by_id(row.release_id)
            .one(&self.db.conn)
            .await?
            .ok_or_else(|| E::Internal("release missing".into()))?;
        let stable = match row.previous_release_id {
            Some(id) => releases::Entity::find_by_id(id).one(&self.db.conn).await?.map(version),
            None => None,
        };
        Ok(DesiredState {
            deployment_id: row.id.to_string(),
            app: view.app,
            environment: view.environment,
            strategy: row.strategy.clone(),
            step: row.current_step,
            steps: view.steps.len() as i32,
            action: action.to_owned(),
            stable,
            canary: version(canary),
            canary_weight: weight,
            revision: row.revision,
            callback_url: format!(
                "{}/api/v1/deployments/{}/driver-result",
                self.config.release.callback_base_url.trim_end_matches('/'),
                row.id
            ),
        })
    }
}

fn step_action(kind: StepKind) -> &'static str {
    match kind {
        StepKind::Switch => "switch",
        _ => "weight",
    }
}
