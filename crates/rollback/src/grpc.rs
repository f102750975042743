//! Thin tonic layer of the rollback service: authentication, roles, and conversions.

use std::sync::Arc;

use rp_identity::{Authenticator, Role};
use rp_proto::rollback::v1::{self as pb, rollback_service_server::RollbackService};
use tonic::{Request, Response, Status};

use crate::{
    service::{AnalysisQuery, ListFilter, ManualRollback, RollbackCore},
    store::{incidents, measurements, rollbacks},
};

pub struct RollbackGrpc {
    pub(crate) core: Arc<RollbackCore>,
    pub(crate) authn: Authenticator,
}

/// Who may change policies.
const POLICY_EDITORS: &[Role] = &[Role::ReleaseManager, Role::Admin];
/// Who may resolve incidents and feed alerts.
const RESPONDERS: &[Role] = &[Role::IncidentCommander, Role::ReleaseManager, Role::Admin];

fn timestamp(at: chrono::DateTime<chrono::Utc>) -> Option<rp_proto::Timestamp> {
    Some(rp_proto::timestamp(at))
}

fn ids(json: &str) -> Vec<String> {
    serde_json::from_str(json).unwrap_or_default()
}

fn incident_to_pb(incident: &incidents::Model) -> pb::Incident {
    let timeline: Vec<serde_json::Value> = serde_json::from_str(&incident.timeline).unwrap_or_default();
    pb::Incident {
        id: incident.id.to_string(),
        app: incident.app.clone(),
        environment: incident.environment.clone(),
        deployment_id: incident.deployment_id.clone(),
        status: incident.status.clone(),
        summary: incident.summary.clone(),
        opened_at: timestamp(incident.opened_at),
        resolved_at: incident.resolved_at.map(rp_proto::timestamp),
        severity: incident.severity.clone(),
        timeline: timeline
            .iter()
            .map(|entry| pb::TimelineEntry {
                what: entry["what"].as_str().unwrap_or_default().to_owned(),
                at: entry["at"]
                    .as_str()
                    .and_then(|at| chrono::DateTime::parse_from_rfc3339(at).ok())
                    .map(|at| rp_proto::timestamp(at.with_timezone(&chrono::Utc))),
            })
            .collect(),
        mttr_seconds: incident.mttr_seconds,
        rollback_id: incident.rollback_id.clone(),
        measurement_ids: ids(&incident.measurement_ids),
        version: incident.version.clone(),
    }
}

fn measurement_to_pb(record: &measurements::Model) -> pb::Measurement {
    pb::Measurement {
        id: record.id.to_string(),
        rule: record.rule.clone(),
        metric: record.metric.clone(),
        query: record.query.clone(),
        value: record.value,
        baseline: record.baseline,
        compared: record.compared,
        operator: record.operator.clone(),
        threshold: record.threshold,
        samples: record.samples.max(0) as u64,
        weight: record.weight,
        verdict: record.verdict.clone(),
        action: record.action.clone(),
        at: timestamp(record.at),
    }
}

fn rollback_to_pb(record: &rollbacks::Model) -> pb::RollbackRecord {
    pb::RollbackRecord {
        id: record.id.to_string(),
        deployment_id: record.deployment_id.to_string(),
        app: record.app.clone(),
        environment: record.environment.clone(),
        version: record.version.clone(),
        restored_version: record.restored_version.clone(),
        trigger: record.trigger.clone(),
        reason: record.reason.clone(),
        decided_at: timestamp(record.decided_at),
        traffic_restored_at: record.traffic_restored_at.map(rp_proto::timestamp),
        measurement_ids: ids(&record.measurement_ids),
        incident_id: record.incident_id.clone(),
        requested_by: record.requested_by.clone(),
    }
}

fn policy_to_pb(policy: crate::service::PolicyView) -> Result<pb::Policy, Status> {
    Ok(pb::Policy {
        app: policy.app,
        environment: policy.environment,
        rules_json: serde_json::to_string(&policy.rules).map_err(|e| Status::internal(e.to_string()))?,
        default: policy.default,
        updated_at: policy.updated_at.map(rp_proto::timestamp),
    })
}

#[tonic::async_trait]
impl RollbackService for RollbackGrpc {
    async fn get_policy(
        &self,
        request: Request<pb::GetPolicyRequest>,
    ) -> Result<Response<pb::Policy>, Status> {
        self.authn.authenticate(request.metadata()).await?;
        let body = request.into_inner();
        let policy = self.core.get_policy(&body.app, &body.environment).await?;
        Ok(Response::new(policy_to_pb(policy)?))
    }

    async fn put_policy(
        &self,
        request: Request<pb::PutPolicyRequest>,
    ) -> Result<Response<pb::Policy>, Status> {
        let principal = self.authn.authorize(request.metadata(), POLICY_EDITORS).await?;
        let body = request.into_inner();
        let policy = self.core.put_policy(&principal, &body.app, &body.environment, &body.rules_json).await?;
        Ok(Response::new(policy_to_pb(policy)?))
    }

    async fn list_analyses(
        &self,
        request: Request<pb::ListAnalysesRequest>,
    ) -> Result<Response<pb::ListAnalysesResponse>, Status> {
        self.authn.authenticate(request.metadata()).await?;
        let body = request.into_inner();
        let filter = ListFilter {
            app: body.app,
            environment: body.environment,
            status: body.status,
            page_size: body.page_size,
            page_token: body.page_token,
        };
        let (rows, next) = self.core.list_analyses(&filter).await?;
        Ok(Response::new(pb::ListAnalysesResponse {
            analyses: rows.iter().map(crate::service::analysis_to_pb).collect(),
            next_page_token: next,
        }))
    }

    async fn get_analysis(
        &self,
        request: Request<pb::GetAnalysisRequest>,
    ) -> Result<Response<pb::Analysis>, Status> {
        self.authn.authenticate(request.metadata()).await?;
        let body = request.into_inner();
        let query = AnalysisQuery {
            id: body.id,
            deployment_id: body.deployment_id,
            measurements: body.measurements,
            breaches_only: body.breaches_only,
        };
        let (analysis, records) = self.core.get_analysis(&query).await?;
        let mut view = crate::service::analysis_to_pb(&analysis);
        view.measurements = records.iter().map(measurement_to_pb).collect();
        Ok(Response::new(view))
    }

    async fn list_incidents(
        &self,
        request: Request<pb::ListIncidentsRequest>,
    ) -> Result<Response<pb::ListIncidentsResponse>, Status> {
        self.authn.authenticate(request.metadata()).await?;
        let body = request.into_inner();
        let filter = ListFilter {
            app: body.app,
            status: body.status,
            page_size: body.page_size,
            page_token: body.page_token,
            ..Default::default()
        };
        let (rows, next) = self.core.list_incidents(&filter).await?;
        Ok(Response::new(pb::ListIncidentsResponse {
            incidents: rows.iter().map(incident_to_pb).collect(),
            next_page_token: next,
        }))
    }

    async fn get_incident(
        &self,
        request: Request<pb::GetIncidentRequest>,
    ) -> Result<Response<pb::Incident>, Status> {
        self.authn.authenticate(request.metadata()).await?;
        let incident = self.core.get_incident(&request.into_inner().id).await?;
        Ok(Response::new(incident_to_pb(&incident)))
    }

    async fn resolve_incident(
        &self,
        request: Request<pb::ResolveIncidentRequest>,
    ) -> Result<Response<pb::Incident>, Status> {
        let principal = self.authn.authorize(request.metadata(), RESPONDERS).await?;
        let body = request.into_inner();
        let incident = self.core.resolve_incident(&principal, &body.id, &body.note).await?;
        Ok(Response::new(incident_to_pb(&incident)))
    }

    async fn trigger_rollback(
        &self,
        request: Request<pb::TriggerRollbackRequest>,
    ) -> Result<Response<pb::RollbackRecord>, Status> {
        // The release service decides who may roll back what (the environment's deployers and
        // incident commanders): the caller's credentials travel with the call.
        let principal = self.authn.authenticate(request.metadata()).await?;
        let metadata = request.metadata().clone();
        let body = request.into_inner();
        let record = self
            .core
            .manual_rollback(
                &principal,
                metadata,
                ManualRollback {
                    deployment_id: body.deployment_id,
                    app: body.app,
                    environment: body.environment,
                    target_version: body.target_version,
                    reason: body.reason,
                },
            )
            .await?;
        Ok(Response::new(rollback_to_pb(&record)))
    }

    async fn list_rollbacks(
        &self,
        request: Request<pb::ListRollbacksRequest>,
    ) -> Result<Response<pb::ListRollbacksResponse>, Status> {
        self.authn.authenticate(request.metadata()).await?;
        let body = request.into_inner();
        let filter = ListFilter {
            app: body.app,
            environment: body.environment,
            page_size: body.page_size,
            page_token: body.page_token,
            ..Default::default()
        };
        let (rows, next) = self.core.list_rollbacks(&filter).await?;
        Ok(Response::new(pb::ListRollbacksResponse {
            rollbacks: rows.iter().map(rollback_to_pb).collect(),
            next_page_token: next,
        }))
    }

    async fn receive_alerts(
        &self,
        request: Request<pb::ReceiveAlertsRequest>,
    ) -> Result<Response<pb::ReceiveAlertsResponse>, Status> {
        self.authn.authorize(request.metadata(), RESPONDERS).await?;
        let (alerts, matched) = self.core.receive_alerts(&request.into_inner().payload_json).await?;
        Ok(Response::new(pb::ReceiveAlertsResponse { alerts: alerts as i32, matched: matched as i32 }))
    }
}
