//! Follows deployments (`rp.deployment.>`): an analysis starts when a deployment starts, follows
//! its weight and phase, and ends when the deployment ends.

use std::sync::{Arc, atomic::Ordering};

use chrono::Utc;
use rp_events::{ConsumerSpec, Event, inbox};
use rp_proto::{events::v1 as ev, rollback::v1 as pb};
use rp_runtime::CancellationToken;
use sea_orm::{
    ActiveModelTrait as _, ActiveValue::Set, ColumnTrait, ConnectionTrait, EntityTrait, IntoActiveModel as _,
    QueryFilter, sea_query::OnConflict,
};
use uuid::Uuid;

use super::RollbackCore;
use crate::store::{analyses, rollbacks};

pub(crate) const CONSUMER: &str = "rollback-deployments";

/// Analysis statuses.
pub mod status {
    pub const RUNNING: &str = "running";
    pub const PASSED: &str = "passed";
    pub const FAILED: &str = "failed";
    pub const STOPPED: &str = "stopped";
}

pub async fn run(core: Arc<RollbackCore>, shutdown: CancellationToken) {
    let spec = ConsumerSpec::new(CONSUMER, "rp.deployment.>");
    let bus = core.bus.clone();
    inbox::run_consumer(
        bus,
        spec,
        move |event| {
            let core = core.clone();
            async move { core.on_deployment_event(&event).await }
        },
        shutdown,
    )
    .await;
}

fn retry(err: impl std::fmt::Display) -> inbox::HandlerError {
    inbox::HandlerError::Retry(err.to_string())
}

impl RollbackCore {
    async fn on_deployment_event(&self, event: &Event) -> Result<(), inbox::HandlerError> {
        let fact = event.event_type.trim_start_matches("rp.deployment.");
        let change: ev::DeploymentChanged = event
            .decode()
            .map_err(|e| inbox::HandlerError::Drop(format!("malformed deployment event: {e}")))?;
        if change.strategy == "rollback" {
            // The record of what serves after a rollback: nothing to watch.
            return Ok(());
        }
        let Ok(deployment_id) = Uuid::parse_str(&change.deployment_id) else {
            return Err(inbox::HandlerError::Drop("deployment event without a valid id".into()));
        };
        let txn = self.db.begin_write().await.map_err(retry)?;
        if !inbox::claim(&txn, CONSUMER, event.id).await.map_err(retry)? {
            return Ok(());
        }
        let existing = analyses::Entity::find()
            .filter(analyses::Column::DeploymentId.eq(deployment_id))
            .one(&txn)
            .await
            .map_err(retry)?;
        if existing.as_ref().is_some_and(|a| a.deployment_revision >= change.revision) {
            // An older event arriving late.
            return self.commit(txn).await.map_err(retry);
        }
        let ending = match change.state.as_str() {
            "succeeded" => Some(status::PASSED),
            "failed" | "aborted" | "superseded" | "rolled_back" => Some(status::STOPPED),
            _ => None,
        };
        match (existing, ending) {
            (None, None) if change.state == "in_progress" => {
                let analysis = analyses::Model {
                    id: Uuid::now_v7(),
                    deployment_id,
                    app: change.app.clone(),
                    environment: change.environment.clone(),
                    production: change.production,
                    version: change.version.clone(),
                    stable_version: change.previous_version.clone(),
                    strategy: change.strategy.clone(),
                    status: status::RUNNING.into(),
                    weight: change.weight,
                    phase: change.phase.clone(),
                    reason: String::new(),
                    started_at: Utc::now(),
                    ended_at: None,
                    lease_holder: None,
                    lease_expires_at: None,
                    rule_state: "{}".into(),
                    deployment_revision: change.revision,
                };
                analyses::Entity::insert(analysis.clone().into_active_model())
                    .exec_without_returning(&txn)
                    .await
                    .map_err(retry)?;
                self.analysis_event(&txn, "started", &analysis, None).await.map_err(retry)?;
            }
            (None, _) => {}
            (Some(current), None) => {
                let mut active = current.into_active_model();
                active.weight = Set(change.weight);
                active.phase = Set(change.phase.clone());
                active.deployment_revision = Set(change.revision);
                active.update(&txn).await.map_err(retry)?;
            }
            (Some(current), Some(end)) => {
                let mut active = current.clone().into_active_model();
                active.weight = Set(change.weight);
                active.phase = Set(change.phase.clone());
                active.deployment_revision = Set(change.revision);
                if current.status == status::RUNNING {
                    let reason = match fact {
                        "rolled_back" => format!("deployment rolled back ({})", change.trigger),
                        _ if change.reason.is_empty() => format!("deployment {}", change.state),
                        _ => format!("deployment {}: {}", change.state, change.reason),
                    };
                    active.status = Set(end.into());
                    active.reason = Set(reason.clone());
                    active.ended_at = Set(Some(Utc::now()));
                    active.lease_holder = Set(None);
                    let ended = active.update(&txn).await.map_err(retry)?;
                    self.analysis_event(&txn, end, &ended, None).await.map_err(retry)?;
                } else {
                    active.update(&txn).await.map_err(retry)?;
                }
            }
        }
        if fact == "rolled_back" {
            // Rollbacks people asked for through the release service are recorded here too;
            // an automatic rollback records its own (richer) row, which wins.
            self.record_observed_rollback(&txn, deployment_id, &change).await.map_err(retry)?;
        }
        self.commit(txn).await.map_err(retry)?;
        self.reload.store(true, Ordering::SeqCst);
        self.wake.notify_one();
        Ok(())
    }

    /// Records a rollback the release service reports, unless an automatic rollback of this
    /// service is under way for it (that one records itself, with its evidence). Whoever records
    /// a rollback first also publishes its events, so they appear once.
    async fn record_observed_rollback<C: ConnectionTrait>(
        &self,
        conn: &C,
        deployment_id: Uuid,
        change: &ev::DeploymentChanged,
    ) -> Result<(), sea_orm::DbErr> {
        let automatic = analyses::Entity::find()
            .filter(analyses::Column::DeploymentId.eq(deployment_id))
            .filter(analyses::Column::Status.eq(status::FAILED))
            .one(conn)
            .await?
            .is_some();
        if automatic {
            return Ok(());
        }
        let now = Utc::now();
        let row = rollbacks::Model {
            id: Uuid::now_v7(),
            deployment_id,
            analysis_id: None,
            app: change.app.clone(),
            environment: change.environment.clone(),
            version: change.version.clone(),
            restored_version: change.previous_version.clone(),
            trigger: if change.trigger.is_empty() { "manual".into() } else { change.trigger.clone() },
            reason: change.reason.clone(),
            decided_at: now,
            traffic_restored_at: Some(now),
            measurement_ids: "[]".into(),
            incident_id: String::new(),
            requested_by: change.actor.as_ref().map(|a| a.email.clone()).unwrap_or_default(),
        };
        let inserted = rollbacks::Entity::insert(row.clone().into_active_model())
            .on_conflict(OnConflict::column(rollbacks::Column::DeploymentId).do_nothing().to_owned())
            .exec_without_returning(conn)
            .await?;
        if inserted == 1 {
            let payload = ev::RollbackChanged {
                actor: change.actor.clone(),
                rollback_id: row.id.to_string(),
                deployment_id: deployment_id.to_string(),
                app: row.app.clone(),
                environment: row.environment.clone(),
                version: row.version.clone(),
                restored_version: row.restored_version.clone(),
                trigger: row.trigger.clone(),
                reason: row.reason.clone(),
                incident_id: String::new(),
                measurement_ids: Vec::new(),
                restore_ms: 0,
                production: change.production,
            };
            let subject = format!("rollbacks/{}", row.id);
            self.emit(conn, "rp.rollback.triggered", subject.clone(), &payload).await?;
            self.emit(conn, "rp.rollback.completed", subject, &payload).await?;
        }
        Ok(())
    }

    /// Enqueues `rp.analysis.<fact>`.
    pub(crate) async fn analysis_event<C: ConnectionTrait>(
        &self,
        conn: &C,
        fact: &str,
        analysis: &analyses::Model,
        decision: Option<(&crate::domain::policy::Rule, &[Uuid])>,
    ) -> Result<(), sea_orm::DbErr> {
        let (rule, severity, action, ids) = match decision {
            Some((rule, ids)) => (
                rule.name.clone(),
                super::queries::enum_text(&rule.severity),
                super::queries::enum_text(&rule.action),
                ids.iter().map(Uuid::to_string).collect(),
            ),
            None => Default::default(),
        };
        let payload = ev::AnalysisChanged {
            analysis_id: analysis.id.to_string(),
            deployment_id: analysis.deployment_id.to_string(),
            app: analysis.app.clone(),
            environment: analysis.environment.clone(),
            version: analysis.version.clone(),
            status: analysis.status.clone(),
            rule,
            reason: analysis.reason.clone(),
            severity,
            action,
            measurement_ids: ids,
            production: analysis.production,
        };
        self.emit(conn, &format!("rp.analysis.{fact}"), format!("analyses/{}", analysis.id), &payload).await
    }
}

/// The API view of an analysis row (without decision records).
pub(crate) fn analysis_to_pb(row: &analyses::Model) -> pb::Analysis {
    pb::Analysis {
        id: row.id.to_string(),
        deployment_id: row.deployment_id.to_string(),
        app: row.app.clone(),
        environment: row.environment.clone(),
        version: row.version.clone(),
        stable_version: row.stable_version.clone(),
        status: row.status.clone(),
        weight: row.weight,
        reason: row.reason.clone(),
        started_at: Some(rp_proto::timestamp(row.started_at)),
        ended_at: row.ended_at.map(rp_proto::timestamp),
        measurements: Vec::new(),
        lease_holder: row.lease_holder.clone().unwrap_or_default(),
    }
}
