//! Thin tonic layer of the notifier service.

use rp_db::Database;
use rp_identity::Authenticator;
use rp_proto::notifier::v1::{self as pb, notifier_service_server::NotifierService};
use rp_runtime::ServiceError;
use sea_orm::{EntityTrait, QueryOrder};
use tonic::{Request, Response, Status};

use crate::store::channels;

pub struct NotifierGrpc {
    pub(crate) db: Database,
    pub(crate) authn: Authenticator,
}

fn channel_to_pb(channel: &channels::Model) -> pb::Channel {
    pb::Channel {
        id: channel.id.to_string(),
        name: channel.name.clone(),
        kind: channel.kind.clone(),
        enabled: channel.enabled,
        created_at: Some(rp_proto::timestamp(channel.created_at)),
    }
}

#[tonic::async_trait]
impl NotifierService for NotifierGrpc {
    async fn list_channels(
        &self,
        request: Request<pb::ListChannelsRequest>,
    ) -> Result<Response<pb::ListChannelsResponse>, Status> {
        self.authn.authenticate(request.metadata()).await?;
        let rows = channels::Entity::find()
            .order_by_asc(channels::Column::Name)
            .all(&self.db.conn)
            .await
            .map_err(ServiceError::from)?;
        Ok(Response::new(pb::ListChannelsResponse { channels: rows.iter().map(channel_to_pb).collect() }))
    }

    async fn get_channel(
        &self,
        request: Request<pb::GetChannelRequest>,
    ) -> Result<Response<pb::Channel>, Status> {
        self.authn.authenticate(request.metadata()).await?;
        let raw = request.into_inner().id;
        let id = uuid::Uuid::parse_str(&raw)
            .map_err(|_| ServiceError::Invalid(format!("{raw:?} is not a valid id")))?;
        let channel = channels::Entity::find_by_id(id)
            .one(&self.db.conn)
            .await
            .map_err(ServiceError::from)?
            .ok_or_else(|| ServiceError::NotFound(format!("channel {id} not found")))?;
        Ok(Response::new(channel_to_pb(&channel)))
    }
}
