//! Thin tonic layer of the release service.

use std::sync::Arc;

use rp_identity::{Authenticator, Role};
use rp_proto::release::v1::{self as pb, release_service_server::ReleaseService};
use rp_runtime::ServiceError;
use tonic::{Request, Response, Status};

use crate::{service::ReleaseCore, store::apps};

pub struct ReleaseGrpc {
    pub(crate) core: Arc<ReleaseCore>,
    pub(crate) authn: Authenticator,
}

fn app_to_pb(app: &apps::Model) -> pb::App {
    pb::App {
        id: app.id.to_string(),
        name: app.name.clone(),
        description: app.description.clone(),
        owner_team: app.owner_team.clone(),
        created_at: Some(rp_proto::timestamp(app.created_at)),
        updated_at: Some(rp_proto::timestamp(app.updated_at)),
    }
}

#[tonic::async_trait]
impl ReleaseService for ReleaseGrpc {
    async fn create_app(&self, request: Request<pb::CreateAppRequest>) -> Result<Response<pb::App>, Status> {
        let actor = self.authn.authorize(request.metadata(), &[Role::ReleaseManager]).await?;
        let body = request.into_inner();
        let app = self
            .core
            .create_app(&actor, body.name.trim(), &body.description, &body.owner_team, &body.idempotency_key)
            .await?;
        Ok(Response::new(app_to_pb(&app)))
    }

    async fn get_app(&self, request: Request<pb::GetAppRequest>) -> Result<Response<pb::App>, Status> {
        self.authn.authenticate(request.metadata()).await?;
        let app = self.core.get_app(&request.into_inner().app).await?;
        Ok(Response::new(app_to_pb(&app)))
    }

    async fn list_apps(
        &self,
        request: Request<pb::ListAppsRequest>,
    ) -> Result<Response<pb::ListAppsResponse>, Status> {
        self.authn.authenticate(request.metadata()).await?;
        let body = request.into_inner();
        let after = match body.page_token.as_str() {
            "" => None,
            token => Some(
                rp_db::parse_page_token(token)
                    .ok_or_else(|| ServiceError::Invalid("page_token is not valid".into()))?,
            ),
        };
        let (apps, next) = self.core.list_apps(rp_db::page_size(body.page_size, 50, 200), after).await?;
        Ok(Response::new(pb::ListAppsResponse {
            apps: apps.iter().map(app_to_pb).collect(),
            next_page_token: next.map(|id| id.to_string()).unwrap_or_default(),
        }))
    }
}
