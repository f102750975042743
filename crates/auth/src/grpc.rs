//! Thin tonic layer: authenticate, authorize, translate between proto and domain.

use std::{net::IpAddr, sync::Arc};

use ipnet::IpNet;
use rp_identity::{Authenticator, Principal, Role};
use rp_proto::auth::v1::{self as pb, auth_service_server::AuthService};
use tonic::{Request, Response, Status};

use crate::{
    error::AuthServiceError,
    metrics as names,
    service::{ApiToken, AuthCore, TokenPair, User, parse_id, ts, user_roles},
};

pub struct AuthGrpc {
    pub(crate) core: Arc<AuthCore>,
    pub(crate) authn: Authenticator,
    pub(crate) trusted_proxies: Vec<IpNet>,
}

impl AuthGrpc {
    async fn caller<T>(&self, request: &Request<T>) -> Result<Principal, Status> {
        Ok(self.authn.authenticate(request.metadata()).await?)
    }

    async fn admin<T>(&self, request: &Request<T>) -> Result<Principal, Status> {
        Ok(self.authn.authorize(request.metadata(), &[Role::Admin]).await?)
    }

    /// The client's address: the peer, or — when the peer is a trusted proxy such as the
    /// gateway — the address it reports in `x-rp-client-ip`.
    fn client_ip<T>(&self, request: &Request<T>) -> String {
        let peer = request.remote_addr().map(|a| a.ip());
        let forwarded = request
            .metadata()
            .get("x-rp-client-ip")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().parse::<IpAddr>().ok());
        match (peer, forwarded) {
            (Some(peer), Some(client)) if self.trusted_proxies.iter().any(|net| net.contains(&peer)) => {
                client.to_string()
            }
            (Some(peer), _) => peer.to_string(),
            (None, _) => "unknown".into(),
        }
    }
}

fn token_pair(pair: TokenPair) -> pb::TokenPair {
    pb::TokenPair {
        access_token: pair.access_token,
        refresh_token: pair.refresh_token,
        expires_in: pair.expires_in,
        token_type: "Bearer".into(),
    }
}

pub fn user_to_pb(user: &User) -> pb::User {
    pb::User {
        id: user.id.to_string(),
        email: user.email.clone(),
        display_name: user.display_name.clone(),
        roles: user_roles(user).iter().map(|r| r.to_proto() as i32).collect(),
        disabled: user.disabled,
        created_at: Some(ts(user.created_at)),
        updated_at: Some(ts(user.updated_at)),
    }
}

fn api_token_to_pb(token: &ApiToken) -> pb::ApiToken {
    pb::ApiToken {
        id: token.id.to_string(),
        name: token.name.clone(),
        prefix: token.prefix.clone(),
        roles: Role::parse_list(&token.roles)
            .unwrap_or_default()
            .iter()
            .map(|r| r.to_proto() as i32)
            .collect(),
        owner_id: token.owner_id.to_string(),
        created_at: Some(ts(token.created_at)),
        expires_at: token.expires_at.map(ts),
        last_used_at: token.last_used_at.map(ts),
        revoked_at: token.revoked_at.map(ts),
    }
}

fn roles_from_pb(values: &[i32]) -> Result<Vec<Role>, AuthServiceError> {
    let mut roles = values
        .iter()
        .map(|v| Role::from_proto(*v).ok_or_else(|| AuthServiceError::Invalid(format!("unknown role {v}"))))
        .collect::<Result<Vec<_>, _>>()?;
    roles.sort();
    roles.dedup();
    Ok(roles)
}

#[tonic::async_trait]
impl AuthService for AuthGrpc {
    async fn login(&self, request: Request<pb::LoginRequest>) -> Result<Response<pb::TokenPair>, Status> {
        let ip = self.client_ip(&request);
        let body = request.into_inner();
        let pair = self.core.login(&body.email, &body.password, &ip).await?;
        metrics::counter!(names::TOKENS_ISSUED_TOTAL, "grant" => "password").increment(1);
        Ok(Response::new(token_pair(pair)))
    }

    async fn refresh(&self, request: Request<pb::RefreshRequest>) -> Result<Response<pb::TokenPair>, Status> {
        let ip = self.client_ip(&request);
        let pair = self.core.refresh(&request.into_inner().refresh_token, &ip).await?;
        metrics::counter!(names::TOKENS_ISSUED_TOTAL, "grant" => "refresh").increment(1);
        Ok(Response::new(token_pair(pair)))
    }

    async fn logout(
        &self,
        request: Request<pb::LogoutRequest>,
    ) -> Result<Response<pb::LogoutResponse>, Status> {
        self.core.logout(&request.into_inner().refresh_token).await?;
        Ok(Response::new(pb::LogoutResponse {}))
    }

    async fn get_jwks(
        &self,
        _: Request<pb::GetJwksRequest>,
    ) -> Result<Response<pb::GetJwksResponse>, Status> {
        let set = self.core.jwks().await?;
        let jwks_json = serde_json::to_string(&set).map_err(|e| Status::internal(e.to_string()))?;
        Ok(Response::new(pb::GetJwksResponse { jwks_json }))
    }

    async fn rotate_signing_key(
        &self,
        request: Request<pb::RotateSigningKeyRequest>,
    ) -> Result<Response<pb::RotateSigningKeyResponse>, Status> {
        let actor = self.admin(&request).await?;
        let key = self.core.rotate_signing_key(&actor).await?;
        Ok(Response::new(pb::RotateSigningKeyResponse {
            kid: key.kid,
            algorithm: key.algorithm,
            created_at: Some(ts(key.created_at)),
        }))
    }

    async fn authenticate_api_token(
        &self,
        request: Request<pb::AuthenticateApiTokenRequest>,
    ) -> Result<Response<pb::Principal>, Status> {
        let principal = self.core.authenticate_api_token(&request.into_inner().token).await?;
        Ok(Response::new(principal.to_proto()))
    }

    async fn get_me(&self, request: Request<pb::GetMeRequest>) -> Result<Response<pb::User>, Status> {
        let caller = self.caller(&request).await?;
        let user = self.core.get_user(&caller.subject).await?;
        let mut user = user_to_pb(&user);
        // Through an API token the caller acts with the token's roles, not the owner's.
        user.roles = caller.roles.iter().map(|r| r.to_proto() as i32).collect();
        Ok(Response::new(user))
    }

    async fn create_user(
        &self,
        request: Request<pb::CreateUserRequest>,
    ) -> Result<Response<pb::User>, Status> {
        let actor = self.admin(&request).await?;
        let body = request.into_inner();
        let roles = roles_from_pb(&body.roles)?;
        let user =
            self.core.create_user(&actor, &body.email, &body.display_name, &body.password, roles).await?;
        Ok(Response::new(user_to_pb(&user)))
    }

    async fn get_user(&self, request: Request<pb::GetUserRequest>) -> Result<Response<pb::User>, Status> {
        let caller = self.caller(&request).await?;
        let id = request.into_inner().id;
        if !caller.is_admin() && parse_id(&id)?.to_string() != caller.subject {
            return Err(AuthServiceError::Forbidden("only administrators can read other users".into()).into());
        }
        Ok(Response::new(user_to_pb(&self.core.get_user(&id).await?)))
    }

    async fn list_users(
        &self,
        request: Request<pb::ListUsersRequest>,
    ) -> Result<Response<pb::ListUsersResponse>, Status> {
        self.admin(&request).await?;
        let body = request.into_inner();
        let after = match body.page_token.as_str() {
            "" => None,
            token => Some(
                rp_db::parse_page_token(token)
                    .ok_or_else(|| AuthServiceError::Invalid("page_token is not valid".into()))?,
            ),
        };
        let (users, next) = self.core.list_users(rp_db::page_size(body.page_size, 50, 200), after).await?;
        Ok(Response::new(pb::ListUsersResponse {
            users: users.iter().map(user_to_pb).collect(),
            next_page_token: next.map(|id| id.to_string()).unwrap_or_default(),
        }))
    }

    async fn update_user(
        &self,
        request: Request<pb::UpdateUserRequest>,
    ) -> Result<Response<pb::User>, Status> {
        let actor = self.admin(&request).await?;
        let body = request.into_inner();
        let roles = match &body.roles {
            Some(list) => {
                let roles = roles_from_pb(&list.roles)?;
                if roles.is_empty() {
                    return Err(AuthServiceError::Invalid("a user needs at least one role".into()).into());
                }
                Some(roles)
            }
            None => None,
        };
        let user = self.core.update_user(&actor, &body.id, body.display_name, roles, body.disabled).await?;
        Ok(Response::new(user_to_pb(&user)))
    }

    async fn set_password(
        &self,
        request: Request<pb::SetPasswordRequest>,
    ) -> Result<Response<pb::SetPasswordResponse>, Status> {
        let actor = self.caller(&request).await?;
        let body = request.into_inner();
        let user_id = if body.user_id.is_empty() { actor.subject.clone() } else { body.user_id };
        self.core.set_password(&actor, &user_id, &body.current_password, &body.new_password).await?;
        Ok(Response::new(pb::SetPasswordResponse {}))
    }

    async fn create_api_token(
        &self,
        request: Request<pb::CreateApiTokenRequest>,
    ) -> Result<Response<pb::CreateApiTokenResponse>, Status> {
        let actor = self.caller(&request).await?;
        let body = request.into_inner();
        let roles = roles_from_pb(&body.roles)?;
        let (token, secret) = self.core.create_api_token(&actor, &body.name, roles, body.ttl_seconds).await?;
        Ok(Response::new(pb::CreateApiTokenResponse { token: Some(api_token_to_pb(&token)), secret }))
    }

    async fn list_api_tokens(
        &self,
        request: Request<pb::ListApiTokensRequest>,
    ) -> Result<Response<pb::ListApiTokensResponse>, Status> {
        let actor = self.caller(&request).await?;
        let tokens = self.core.list_api_tokens(&actor, request.into_inner().include_revoked).await?;
        Ok(Response::new(pb::ListApiTokensResponse { tokens: tokens.iter().map(api_token_to_pb).collect() }))
    }

    async fn revoke_api_token(
        &self,
        request: Request<pb::RevokeApiTokenRequest>,
    ) -> Result<Response<pb::ApiToken>, Status> {
        let actor = self.caller(&request).await?;
        let token = self.core.revoke_api_token(&actor, &request.into_inner().id).await?;
        Ok(Response::new(api_token_to_pb(&token)))
    }
}
