//! What decisions do: roll back (traffic first, through the release service), pause, or alert;
//! and manual rollbacks asked of this service.

use std::sync::Arc;

use chrono::{DateTime, Utc};
use rp_identity::Principal;
use rp_proto::{events::v1 as ev, release::v1 as release_pb};
use rp_runtime::ServiceError as E;
use sea_orm::{
    ColumnTrait, ConnectionTrait, EntityTrait, IntoActiveModel as _, QueryFilter,
    sea_query::{Expr, OnConflict},
};
use tonic::Code;
use uuid::Uuid;

use super::{Result, RollbackCore, evaluator::Decision, lock, names, watcher::status};
use crate::{
    domain::policy::Rule,
    store::{analyses, incidents, rollbacks},
};

/// Runs a decision in the background; the analysis is not evaluated again meanwhile.
pub(crate) fn spawn(core: Arc<RollbackCore>, row: analyses::Model, decision: Decision) {
    lock(&core.acting).insert(row.id);
    tokio::spawn(async move {
        let id = row.id;
        let result = match decision {
            Decision::Rollback { rule, reason, measurement_ids, first_bad } => {
                core.roll_back(row, rule, reason, measurement_ids, first_bad).await
            }
            Decision::Pause { rule, reason, measurement_ids } => {
                core.pause(row, rule, reason, measurement_ids).await
            }
            Decision::Alert { rule, reason, measurement_ids } => {
                core.alert(row, rule, reason, measurement_ids).await
            }
        };
        if let Err(err) = result {
            tracing::warn!(analysis = %id, error = %err, "decision could not be carried out; it is evaluated again");
        }
        lock(&core.acting).remove(&id);
        core.wake.notify_one();
    });
}

/// Release answers that will not change by retrying.
fn is_final(code: Code) -> bool {
    matches!(code, Code::FailedPrecondition | Code::NotFound | Code::InvalidArgument | Code::PermissionDenied)
}

/// A manual rollback request.
#[derive(Debug, Clone, Default)]
pub struct ManualRollback {
    pub deployment_id: String,
    pub app: String,
    pub environment: String,
    pub target_version: String,
    pub reason: String,
}

impl RollbackCore {
    /// An automatic rollback: claim the analysis, restore traffic through the release service,
    /// then record the rollback, the incident and the events in one transaction.
    async fn roll_back(
        &self,
        row: analyses::Model,
        rule: Rule,
        reason: String,
        measurement_ids: Vec<Uuid>,
        first_bad: DateTime<Utc>,
    ) -> anyhow::Result<()> {
        let decided_at = Utc::now();
        // Of two replicas (a lease that changed hands mid-pass), exactly one gets here.
        let claimed = analyses::Entity::update_many()
            .col_expr(analyses::Column::Status, Expr::value(status::FAILED))
            .col_expr(analyses::Column::Reason, Expr::value(reason.clone()))
            .col_expr(analyses::Column::EndedAt, Expr::value(decided_at))
            .filter(analyses::Column::Id.eq(row.id))
            .filter(analyses::Column::Status.eq(status::RUNNING))
            .filter(analyses::Column::LeaseHolder.eq(self.replica.clone()))
            .exec(&self.db.conn)
            .await?;
        if claimed.rows_affected == 0 {
            return Ok(());
        }
        tracing::warn!(
            app = row.app,
            environment = row.environment,
            version = row.version,
            rule = rule.name,
            reason,
            "rolling back"
        );
        let request = rp_identity::internal_request(
            &self.config.identity,
            release_pb::RollbackRequest {
                deployment_id: row.deployment_id.to_string(),
                reason: reason.clone(),
                trigger: rule.name.clone(),
                idempotency_key: format!("analysis-{}", row.id),
                ..Default::default()
            },
        );
        let outcome = self.release.clone().rollback_deployment(request).await;
        let restored = match outcome {
            Ok(response) => {
                let deployment = response.into_inner();
                let at = deployment
                    .finished_at
                    .and_then(|t| DateTime::from_timestamp(t.seconds, t.nanos as u32))
                    .unwrap_or_else(Utc::now);
                Ok((at, deployment.previous_version))
            }
            Err(status) if !is_final(status.code()) => {
                // Try again at the next evaluation.
                analyses::Entity::update_many()
                    .col_expr(analyses::Column::Status, Expr::value(status::RUNNING))
                    .col_expr(analyses::Column::EndedAt, Expr::value(Option::<DateTime<Utc>>::None))
                    .filter(analyses::Column::Id.eq(row.id))
                    .filter(analyses::Column::Status.eq(status::FAILED))
                    .exec(&self.db.conn)
                    .await?;
                self.reload.store(true, std::sync::atomic::Ordering::SeqCst);
                anyhow::bail!("the release service did not roll back: {}", status.message());
            }
            Err(status) => Err(status.message().to_owned()),
        };
        let mut failed = row.clone();
        failed.status = status::FAILED.into();
        failed.reason = reason.clone();
        failed.ended_at = Some(decided_at);
        let txn = self.db.begin_write().await?;
        self.analysis_event(&txn, "failed", &failed, Some((&rule, &measurement_ids))).await?;
        let severity = super::queries::enum_text(&rule.severity);
        let incident_id = Uuid::now_v7();
        let rollback_id = Uuid::now_v7();
        let ids_json = serde_json::to_string(&measurement_ids).unwrap_or_else(|_| "[]".into());
        let mut timeline = vec![
            timeline_entry("first bad sample", first_bad),
            timeline_entry(&format!("decision: {reason}"), decided_at),
        ];
        let (summary, mttr, restored_version) = match &restored {
            Ok((at, restored_version)) => {
                timeline.push(timeline_entry(&format!("traffic restored to {restored_version}"), *at));
                let mttr = (*at - first_bad).num_milliseconds().max(0) as f64 / 1000.0;
                metrics::histogram!(names::REACTION_SECONDS, "app" => row.app.clone())
                    .record((*at - decided_at).num_milliseconds().max(0) as f64 / 1000.0);
                (
                    format!(
                        "{} {} rolled back to {restored_version} in {}: {}",
                        row.app, row.version, row.environment, rule.name
                    ),
                    mttr,
                    restored_version.clone(),
                )
            }
            Err(message) => {
                timeline.push(timeline_entry(&format!("rollback failed: {message}"), Utc::now()));
                (
                    format!(
                        "{} {} in {}: automatic rollback failed ({message}); {}",
                        row.app, row.version, row.environment, rule.name
                    ),
                    0.0,
                    row.stable_version.clone(),
                )
            }
        };
        let incident = incidents::Model {
            id: incident_id,
            app: row.app.clone(),
            environment: row.environment.clone(),
            deployment_id: row.deployment_id.to_string(),
            status: "open".into(),
            summary: summary.clone(),
            opened_at: decided_at,
            resolved_at: None,
            severity: severity.clone(),
            timeline: serde_json::to_string(&timeline).unwrap_or_else(|_| "[]".into()),
            mttr_seconds: mttr,
            rollback_id: if restored.is_ok() { rollback_id.to_string() } else { String::new() },
            measurement_ids: ids_json.clone(),
            version: row.version.clone(),
        };
        incidents::Entity::insert(incident.into_active_model()).exec_without_returning(&txn).await?;
        let rollback_event = ev::RollbackChanged {
            actor: Some(Principal::system().actor()),
            rollback_id: rollback_id.to_string(),
            deployment_id: row.deployment_id.to_string(),
            app: row.app.clone(),
            environment: row.environment.clone(),
            version: row.version.clone(),
            restored_version: restored_version.clone(),
            trigger: rule.name.clone(),
            reason: reason.clone(),
            incident_id: incident_id.to_string(),
            measurement_ids: measurement_ids.iter().map(Uuid::to_string).collect(),
            restore_ms: restored
                .as_ref()
                .map(|(at, _)| (*at - decided_at).num_milliseconds().max(0))
                .unwrap_or(0),
            production: row.production,
        };
        let subject = format!("rollbacks/{rollback_id}");
        self.emit(&txn, "rp.rollback.triggered", subject.clone(), &rollback_event).await?;
        match &restored {
            Ok((at, _)) => {
                let record = rollbacks::Model {
                    id: rollback_id,
                    deployment_id: row.deployment_id,
                    analysis_id: Some(row.id),
                    app: row.app.clone(),
                    environment: row.environment.clone(),
                    version: row.version.clone(),
                    restored_version,
                    trigger: rule.name.clone(),
                    reason: reason.clone(),
                    decided_at,
                    traffic_restored_at: Some(*at),
                    measurement_ids: ids_json,
                    incident_id: incident_id.to_string(),
                    requested_by: "system".into(),
                };
                upsert_rollback(&txn, record).await?;
                self.emit(&txn, "rp.rollback.completed", subject, &rollback_event).await?;
                metrics::counter!(names::ROLLBACKS_TOTAL, "app" => row.app.clone(), "rule" => rule.name.clone())
                    .increment(1);
            }
            Err(_) => self.emit(&txn, "rp.rollback.failed", subject, &rollback_event).await?,
        }
        let incident_event = ev::IncidentChanged {
            actor: Some(Principal::system().actor()),
            incident_id: incident_id.to_string(),
            deployment_id: row.deployment_id.to_string(),
            app: row.app.clone(),
            environment: row.environment.clone(),
            version: row.version.clone(),
            severity,
            summary,
            status: "open".into(),
            mttr_seconds: mttr,
            production: row.production,
        };
        self.emit(&txn, "rp.incident.opened", format!("incidents/{incident_id}"), &incident_event).await?;
        self.commit(txn).await?;
        metrics::counter!(names::DECISIONS_TOTAL, "action" => "rollback").increment(1);
        Ok(())
    }

    async fn pause(
        &self,
        row: analyses::Model,
        rule: Rule,
        reason: String,
        measurement_ids: Vec<Uuid>,
    ) -> anyhow::Result<()> {
        let request = rp_identity::internal_request(
            &self.config.identity,
            release_pb::DeploymentActionRequest {
                id: row.deployment_id.to_string(),
                reason: reason.clone(),
                ..Default::default()
            },
        );
        match self.release.clone().pause_deployment(request).await {
            Ok(_) => {}
            // Already paused or finished: nothing to do.
            Err(status) if is_final(status.code()) => return Ok(()),
            Err(status) => anyhow::bail!("the release service did not pause: {}", status.message()),
        }
        let mut paused = row;
        paused.reason = reason;
        let txn = self.db.begin_write().await?;
        self.analysis_event(&txn, "paused", &paused, Some((&rule, &measurement_ids))).await?;
        self.commit(txn).await?;
        metrics::counter!(names::DECISIONS_TOTAL, "action" => "pause").increment(1);
        Ok(())
    }

    async fn alert(
        &self,
        row: analyses::Model,
        rule: Rule,
        reason: String,
        measurement_ids: Vec<Uuid>,
    ) -> anyhow::Result<()> {
        let mut alerted = row;
        alerted.reason = reason;
        let txn = self.db.begin_write().await?;
        self.analysis_event(&txn, "alert", &alerted, Some((&rule, &measurement_ids))).await?;
        self.commit(txn).await?;
        metrics::counter!(names::DECISIONS_TOTAL, "action" => "alert").increment(1);
        Ok(())
    }

    /// A rollback a person asks for: the release service checks their role and moves traffic;
    /// this service records it. Asked twice, it acts once and returns the same record.
    pub async fn manual_rollback(
        &self,
        principal: &Principal,
        authorization: tonic::metadata::MetadataMap,
        request: ManualRollback,
    ) -> Result<rollbacks::Model> {
        rp_runtime::validate::text("reason", &request.reason, 1000, false)?;
        if request.deployment_id.is_empty() {
            rp_runtime::validate::slug("app", &request.app)?;
            rp_runtime::validate::slug("environment", &request.environment)?;
        } else {
            Uuid::parse_str(&request.deployment_id).map_err(|_| {
                E::Invalid(format!("deployment_id {:?} is not a valid id", request.deployment_id))
            })?;
        }
        let reason = if request.reason.is_empty() {
            format!("rolled back by {}", principal.email)
        } else {
            request.reason.clone()
        };
        let decided_at = Utc::now();
        let mut call = tonic::Request::new(release_pb::RollbackRequest {
            deployment_id: request.deployment_id.clone(),
            app: request.app.clone(),
            environment: request.environment.clone(),
            target_version: request.target_version.clone(),
            reason: reason.clone(),
            trigger: "manual".into(),
            idempotency_key: String::new(),
        });
        // The caller's own credentials: the release service authorizes and audits the person.
        for key in ["authorization", rp_identity::REQUEST_ID_HEADER] {
            if let Some(value) = authorization.get(key) {
                call.metadata_mut().insert(key, value.clone());
            }
        }
        let deployment =
            self.release.clone().rollback_deployment(call).await.map_err(status_to_error)?.into_inner();
        let deployment_id =
            Uuid::parse_str(&deployment.id).map_err(|_| E::Internal("bad deployment id".into()))?;
        let restored_at = deployment
            .finished_at
            .and_then(|t| DateTime::from_timestamp(t.seconds, t.nanos as u32))
            .unwrap_or_else(Utc::now);
        let analysis = analyses::Entity::find()
            .filter(analyses::Column::DeploymentId.eq(deployment_id))
            .one(&self.db.conn)
            .await?;
        let record = rollbacks::Model {
            id: Uuid::now_v7(),
            deployment_id,
            analysis_id: analysis.map(|a| a.id),
            app: deployment.app.clone(),
            environment: deployment.environment.clone(),
            version: deployment.version.clone(),
            restored_version: deployment.previous_version.clone(),
            trigger: "manual".into(),
            reason: deployment.failure_reason.clone(),
            decided_at,
            traffic_restored_at: Some(restored_at),
            measurement_ids: "[]".into(),
            incident_id: String::new(),
            requested_by: principal.email.clone(),
        };
        let txn = self.db.begin_write().await?;
        let inserted = rollbacks::Entity::insert(record.clone().into_active_model())
            .on_conflict(OnConflict::column(rollbacks::Column::DeploymentId).do_nothing().to_owned())
            .exec_without_returning(&txn)
            .await?;
        if inserted == 0 {
            // A second request, or the watcher seeing the release service's event, recorded
            // this rollback first (with its events): it is the same rollback.
            txn.rollback().await?;
            return rollbacks::Entity::find()
                .filter(rollbacks::Column::DeploymentId.eq(deployment_id))
                .one(&self.db.conn)
                .await?
                .ok_or_else(|| E::Internal("rollback record vanished".into()));
        }
        let payload = ev::RollbackChanged {
            actor: Some(principal.actor()),
            rollback_id: record.id.to_string(),
            deployment_id: deployment_id.to_string(),
            app: record.app.clone(),
            environment: record.environment.clone(),
            version: record.version.clone(),
            restored_version: record.restored_version.clone(),
            trigger: "manual".into(),
            reason: record.reason.clone(),
            incident_id: String::new(),
            measurement_ids: Vec::new(),
            restore_ms: (restored_at - decided_at).num_milliseconds().max(0),
            production: analysis_production(&txn, deployment_id).await?,
        };
        let subject = format!("rollbacks/{}", record.id);
        self.emit(&txn, "rp.rollback.triggered", subject.clone(), &payload).await?;
        self.emit(&txn, "rp.rollback.completed", subject, &payload).await?;
        self.commit(txn).await?;
        Ok(record)
    }
}

async fn analysis_production<C: ConnectionTrait>(conn: &C, deployment_id: Uuid) -> Result<bool> {
    Ok(analyses::Entity::find()
        .filter(analyses::Column::DeploymentId.eq(deployment_id))
        .one(conn)
        .await?
        .is_some_and(|a| a.production))
}

/// Inserts the automatic rollback's record; if the watcher recorded the rollback first (from the
/// release service's event), the automatic record's evidence replaces it.
async fn upsert_rollback<C: ConnectionTrait>(
    conn: &C,
    record: rollbacks::Model,
) -> Result<(), sea_orm::DbErr> {
    use rollbacks::Column as C;
    rollbacks::Entity::insert(record.into_active_model())
        .on_conflict(
            OnConflict::column(C::DeploymentId)
                .update_columns([
                    C::Id,
                    C::AnalysisId,
                    C::Trigger,
                    C::Reason,
                    C::DecidedAt,
                    C::TrafficRestoredAt,
                    C::MeasurementIds,
                    C::IncidentId,
                    C::RequestedBy,
                    C::RestoredVersion,
                ])
                .to_owned(),
        )
        .exec_without_returning(conn)
        .await?;
    Ok(())
}

pub(crate) fn timeline_entry(what: &str, at: DateTime<Utc>) -> serde_json::Value {
    serde_json::json!({ "what": what, "at": at.to_rfc3339_opts(chrono::SecondsFormat::Millis, true) })
}

/// Maps the release service's answer to ours, keeping its message.
fn status_to_error(status: tonic::Status) -> E {
    let message = status.message().to_owned();
    match status.code() {
        Code::InvalidArgument => E::Invalid(message),
        Code::NotFound => E::NotFound(message),
        Code::FailedPrecondition => E::Precondition(message),
        Code::PermissionDenied => E::Forbidden(message),
        Code::Unauthenticated => E::Unauthenticated(message),
        Code::AlreadyExists => E::Conflict(message),
        Code::Aborted => E::Aborted(message),
        _ => E::Unavailable(format!("the release service did not answer: {message}")),
    }
}
