//! Thin tonic layer of the rollback service.

use rp_db::Database;
use rp_identity::Authenticator;
use rp_proto::rollback::v1::{self as pb, rollback_service_server::RollbackService};
use rp_runtime::ServiceError;
use sea_orm::{ColumnTrait, EntityTrait, QueryFilter, QueryOrder, QuerySelect};
use tonic::{Request, Response, Status};

use crate::store::incidents;

pub struct RollbackGrpc {
    pub(crate) db: Database,
    pub(crate) authn: Authenticator,
}

fn incident_to_pb(incident: &incidents::Model) -> pb::Incident {
    pb::Incident {
        id: incident.id.to_string(),
        app: incident.app.clone(),
        environment: incident.environment.clone(),
        deployment_id: incident.deployment_id.clone(),
        status: incident.status.clone(),
        summary: incident.summary.clone(),
        opened_at: Some(rp_proto::timestamp(incident.opened_at)),
        resolved_at: incident.resolved_at.map(rp_proto::timestamp),
    }
}

#[tonic::async_trait]
impl RollbackService for RollbackGrpc {
    async fn list_incidents(
        &self,
        request: Request<pb::ListIncidentsRequest>,
    ) -> Result<Response<pb::ListIncidentsResponse>, Status> {
        self.authn.authenticate(request.metadata()).await?;
        let body = request.into_inner();
        let page_size = rp_db::page_size(body.page_size, 50, 200);
        // Newest first: the page token is the last id seen, and ids are time-ordered.
        let mut query = incidents::Entity::find().order_by_desc(incidents::Column::Id).limit(page_size + 1);
        if !body.app.is_empty() {
            rp_runtime::validate::slug("app", &body.app)?;
            query = query.filter(incidents::Column::App.eq(body.app));
        }
        if !body.status.is_empty() {
            if !matches!(body.status.as_str(), "open" | "resolved") {
                return Err(ServiceError::Invalid("status must be open or resolved".into()).into());
            }
            query = query.filter(incidents::Column::Status.eq(body.status));
        }
        if !body.page_token.is_empty() {
            let before = rp_db::parse_page_token(&body.page_token)
                .ok_or_else(|| ServiceError::Invalid("page_token is not valid".into()))?;
            query = query.filter(incidents::Column::Id.lt(before));
        }
        let mut rows = query.all(&self.db.conn).await.map_err(ServiceError::from)?;
        let next = if rows.len() as u64 > page_size {
            rows.truncate(page_size as usize);
            rows.last().map(|i| i.id.to_string()).unwrap_or_default()
        } else {
            String::new()
        };
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
        let raw = request.into_inner().id;
        let id = uuid::Uuid::parse_str(&raw)
            .map_err(|_| ServiceError::Invalid(format!("{raw:?} is not a valid id")))?;
        let incident = incidents::Entity::find_by_id(id)
            .one(&self.db.conn)
            .await
            .map_err(ServiceError::from)?
            .ok_or_else(|| ServiceError::NotFound(format!("incident {id} not found")))?;
        Ok(Response::new(incident_to_pb(&incident)))
    }
}
