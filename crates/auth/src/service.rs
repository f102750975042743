//! The auth service's behaviour: logins, token rotation, users, API tokens, signing keys.

use std::{
    sync::Arc,
    time::{Duration, Instant},
};

use chrono::{DateTime, Utc};
use jsonwebtoken::{Algorithm, Header, jwk::JwkSet};
use rp_config::Config;
use rp_db::Database;
use rp_events::{Event, outbox};
use rp_identity::{ACCESS_TOKEN_KIND_USER, Claims, Principal, PrincipalKind, Role};
use rp_proto::events::v1 as ev;
use sea_orm::{
    ActiveModelTrait, ActiveValue::Set, ColumnTrait, Condition, ConnectionTrait, EntityTrait, PaginatorTrait,
    QueryFilter, QueryOrder, QuerySelect,
};
use tokio::sync::RwLock;
use uuid::Uuid;

use crate::{
    domain::{keys, passwords, secrets, validate},
    error::{AuthServiceError as E, Result},
    metrics as names,
    store::{api_tokens, login_attempts, refresh_tokens, signing_keys, users},
};

const SERVICE: &str = "auth";
/// How long a cached signing key is trusted before re-reading which key is current.
const SIGNER_CACHE: Duration = Duration::from_secs(30);
/// An API token's last use is written at most this often.
const LAST_USED_RESOLUTION: chrono::Duration = chrono::Duration::seconds(60);

/// Tokens handed out by login and refresh.
#[derive(Debug, Clone)]
pub struct TokenPair {
    pub access_token: String,
    pub refresh_token: String,
    pub expires_in: i64,
}

struct Signer {
    kid: String,
    key: jsonwebtoken::EncodingKey,
    loaded: Instant,
}

/// Auth core, shared by the gRPC layer and the in-process key source.
pub struct AuthCore {
    db: Database,
    outbox: outbox::Outbox,
    config: Arc<Config>,
    signer: RwLock<Option<Signer>>,
}

/// A user as the API shows it.
pub type User = users::Model;
pub type ApiToken = api_tokens::Model;

pub fn user_roles(user: &User) -> Vec<Role> {
    Role::parse_list(&user.roles).unwrap_or_default()
}

impl AuthCore {
    pub fn new(db: Database, outbox: outbox::Outbox, config: Arc<Config>) -> Self {
        Self { db, outbox, config, signer: RwLock::new(None) }
    }

    // ---------------------------------------------------------------- logins and tokens

    /// Checks throttles, then the password; issues an access token and a new refresh family.
    pub async fn login(&self, email: &str, password: &str, client_ip: &str) -> Result<TokenPair> {
        if email.is_empty() || password.is_empty() {
            return Err(E::Invalid("email and password are required".into()));
        }
        let email = email.trim().to_lowercase();
        if email.is_empty() || rp_runtime::validate::text("email", &email, 254, false).is_err() {
            // No account can have such an address: the usual answer, without a lookup.
            return Err(E::Unauthenticated("invalid email or password".into()));
        }
        self.check_throttle(&email, client_ip).await?;
        let user = users::Entity::find().filter(users::Column::Email.eq(&email)).one(&self.db.conn).await?;
        let hash = user.as_ref().map(|u| u.password_hash.clone());
        let password_ok = passwords::verify_blocking(password.to_owned(), hash).await;
        let user = match user {
            Some(user) if password_ok && !user.disabled => user,
            other => {
                self.record_attempt(&email, client_ip, false).await?;
                let reason = match other {
                    None => "unknown account",
                    Some(u) if u.disabled => "account disabled",
                    Some(_) => "wrong password",
                };
                metrics::counter!(names::LOGIN_ATTEMPTS_TOTAL, "result" => "failure").increment(1);
                tracing::info!(reason, client_ip, "login refused");
                // One message for every case: the response must not reveal which accounts exist.
                return Err(E::Unauthenticated("invalid email or password".into()));
            }
        };
        self.record_attempt(&email, client_ip, true).await?;
        metrics::counter!(names::LOGIN_ATTEMPTS_TOTAL, "result" => "success").increment(1);
        let refresh_token = self.insert_refresh_token(&self.db.conn, user.id, Uuid::now_v7()).await?;
        let access_token = self.issue_access_token(&user, ACCESS_TOKEN_KIND_USER, &user_roles(&user)).await?;
        Ok(TokenPair {
            access_token,
            refresh_token,
            expires_in: self.config.auth.access_token_ttl_secs as i64,
        })
    }

    async fn check_throttle(&self, email: &str, client_ip: &str) -> Result<()> {
        let throttle = &self.config.auth.throttle;
        let window = chrono::Duration::seconds(throttle.window_secs as i64);
        let now = Utc::now();
        let since = now - window;
        // Failures count since the window start or the account's last success, whichever is later.
        let last_success = login_attempts::Entity::find()
            .filter(login_attempts::Column::Email.eq(email))
            .filter(login_attempts::Column::Success.eq(true))
            .filter(login_attempts::Column::At.gt(since))
            .order_by_desc(login_attempts::Column::At)
            .one(&self.db.conn)
            .await?
            .map(|a| a.at);
        let account_since = last_success.map_or(since, |at| at.max(since));
        let checks = [
            (
                login_attempts::Column::Email,
                email,
                account_since,
                throttle.max_failures_per_account,
                "this account",
            ),
            (
                login_attempts::Column::ClientIp,
                client_ip,
                since,
                throttle.max_failures_per_ip,
                "your address",
            ),
        ];
        for (column, value, since, limit, whom) in checks {
            let failures = login_attempts::Entity::find()
                .filter(column.eq(value))
                .filter(login_attempts::Column::Success.eq(false))
                .filter(login_attempts::Column::At.gt(since))
                .order_by_asc(login_attempts::Column::At)
                .all(&self.db.conn)
                .await?;
            if failures.len() as u32 >= limit {
                // The oldest failure in the window leaves it first.
                let index = failures.len() - limit as usize;
                let frees_at = failures[index].at + window;
                let retry_after = (frees_at - now).num_seconds().max(1) as u64;
                metrics::counter!(names::LOGIN_ATTEMPTS_TOTAL, "result" => "throttled").increment(1);
                return Err(E::Throttled {
                    message: format!("too many failed logins for {whom}; try again in {retry_after} seconds"),
                    retry_after_secs: retry_after,
                });
            }
        }
        Ok(())
    }

    async fn record_attempt(&self, email: &str, client_ip: &str, success: bool) -> Result<()> {
        login_attempts::ActiveModel {
            id: Set(Uuid::now_v7()),
            email: Set(email.to_owned()),
            client_ip: Set(client_ip.to_owned()),
            success: Set(success),
            at: Set(Utc::now()),
        }
        .insert(&self.db.conn)
        .await?;
        Ok(())
    }

    async fn insert_refresh_token<C: ConnectionTrait>(
        &self,
        conn: &C,
        user_id: Uuid,
        family_id: Uuid,
    ) -> Result<String> {
        let token = secrets::random_secret();
        let now = Utc::now();
        refresh_tokens::ActiveModel {
            id: Set(Uuid::now_v7()),
            family_id: Set(family_id),
            user_id: Set(user_id),
            token_hash: Set(secrets::digest(&token)),
            created_at: Set(now),
            expires_at: Set(now + chrono::Duration::seconds(self.config.auth.refresh_token_ttl_secs as i64)),
            used_at: Set(None),
            revoked_at: Set(None),
        }
        .insert(conn)
        .await?;
        Ok(token)
    }

    /// Rotates a refresh token. A token that was already rotated is evidence of theft: the whole
    /// family is revoked, so the thief's copy and the owner's both stop working.
    pub async fn refresh(&self, token: &str, client_ip: &str) -> Result<TokenPair> {
        let invalid = || E::Unauthenticated("invalid or expired refresh token".into());
        if token.is_empty() || token.len() > 512 {
            return Err(invalid());
        }
        let stored = refresh_tokens::Entity::find()
            .filter(refresh_tokens::Column::TokenHash.eq(secrets::digest(token)))
            .one(&self.db.conn)
            .await?
            .ok_or_else(invalid)?;
        if stored.revoked_at.is_some() || stored.expires_at <= Utc::now() {
            return Err(invalid());
        }
        let txn = self.db.begin_write().await?;
        // Conditional update: of two concurrent refreshes with the same token exactly one wins.
        let claimed = refresh_tokens::Entity::update_many()
            .col_expr(refresh_tokens::Column::UsedAt, sea_orm::sea_query::Expr::value(Utc::now()))
            .filter(refresh_tokens::Column::Id.eq(stored.id))
            .filter(refresh_tokens::Column::UsedAt.is_null())
            .filter(refresh_tokens::Column::RevokedAt.is_null())
            .exec(&txn)
            .await?
            .rows_affected
            == 1;
        if !claimed {
            self.revoke_family(&txn, stored.family_id).await?;
            let event = Event::new(
                SERVICE,
                "rp.auth.refresh_token_reused",
                format!("users/{}", stored.user_id),
                &ev::RefreshTokenReused {
                    user_id: stored.user_id.to_string(),
                    family_id: stored.family_id.to_string(),
                    client_ip: client_ip.to_owned(),
                },
            );
            outbox::enqueue(&txn, &event).await?;
            txn.commit().await?;
            self.outbox.wake();
            tracing::warn!(user_id = %stored.user_id, client_ip, "refresh token reuse detected; family revoked");
            return Err(E::Unauthenticated(
                "refresh token was already used; all sessions of this login are revoked".into(),
            ));
        }
        let user = users::Entity::find_by_id(stored.user_id).one(&txn).await?.ok_or_else(invalid)?;
        if user.disabled {
            txn.rollback().await?;
            return Err(invalid());
        }
        let refresh_token = self.insert_refresh_token(&txn, user.id, stored.family_id).await?;
        txn.commit().await?;
        let access_token = self.issue_access_token(&user, ACCESS_TOKEN_KIND_USER, &user_roles(&user)).await?;
        Ok(TokenPair {
            access_token,
            refresh_token,
            expires_in: self.config.auth.access_token_ttl_secs as i64,
        })
    }

    async fn revoke_family<C: ConnectionTrait>(&self, conn: &C, family_id: Uuid) -> Result<()> {
        refresh_tokens::Entity::update_many()
            .col_expr(refresh_tokens::Column::RevokedAt, sea_orm::sea_query::Expr::value(Utc::now()))
            .filter(refresh_tokens::Column::FamilyId.eq(family_id))
            .filter(refresh_tokens::Column::RevokedAt.is_null())
            .exec(conn)
            .await?;
        Ok(())
    }

    /// Revokes the family of `token`. Unknown tokens are accepted silently (logout is idempotent).
    pub async fn logout(&self, token: &str) -> Result<()> {
        if let Some(stored) = refresh_tokens::Entity::find()
            .filter(refresh_tokens::Column::TokenHash.eq(secrets::digest(token)))
            .one(&self.db.conn)
            .await?
        {
            self.revoke_family(&self.db.conn, stored.family_id).await?;
        }
        Ok(())
    }

    async fn issue_access_token(&self, user: &User, kind: &str, roles: &[Role]) -> Result<String> {
        let now = Utc::now().timestamp();
        let identity = &self.config.identity;
        let claims = Claims {
            iss: identity.issuer.clone(),
            aud: identity.audience.clone(),
            sub: user.id.to_string(),
            exp: now + self.config.auth.access_token_ttl_secs as i64,
            iat: now,
            nbf: now,
            jti: Uuid::now_v7().to_string(),
            email: user.email.clone(),
            roles: roles.iter().map(|r| r.as_str().to_owned()).collect(),
            kind: kind.to_owned(),
        };
        let signer = self.signer().await?;
        let mut header = Header::new(Algorithm::EdDSA);
        header.kid = Some(signer.0);
        jsonwebtoken::encode(&header, &claims, &signer.1).map_err(|e| E::Internal(format!("signing: {e}")))
    }

    /// The current signing key, from cache or the database.
    async fn signer(&self) -> Result<(String, jsonwebtoken::EncodingKey)> {
        if let Some(signer) = self.signer.read().await.as_ref()
            && signer.loaded.elapsed() < SIGNER_CACHE
        {
            return Ok((signer.kid.clone(), signer.key.clone()));
        }
        let current = self.current_key().await?.ok_or_else(|| E::Internal("no signing key".into()))?;
        let key = keys::encoding_key(&current.private_key).map_err(E::Internal)?;
        *self.signer.write().await =
            Some(Signer { kid: current.kid.clone(), key: key.clone(), loaded: Instant::now() });
        Ok((current.kid, key))
    }

    async fn current_key(&self) -> Result<Option<signing_keys::Model>> {
        Ok(signing_keys::Entity::find()
            .filter(signing_keys::Column::RetiredAt.is_null())
            .order_by_desc(signing_keys::Column::CreatedAt)
            .one(&self.db.conn)
            .await?)
    }

    /// Creates the first signing key when there is none.
    pub async fn ensure_signing_key(&self) -> Result<()> {
        if self.current_key().await?.is_none() {
            let generated = keys::generate();
            let result = signing_keys::Entity::insert(signing_keys::ActiveModel {
                kid: Set(generated.kid),
                algorithm: Set(keys::ALGORITHM.into()),
                private_key: Set(generated.private_key),
                public_key: Set(generated.public_key),
                created_at: Set(Utc::now()),
                retired_at: Set(None),
            })
            .exec_without_returning(&self.db.conn)
            .await;
            if let Err(err) = result {
                // Another replica created it first.
                if !rp_db::is_unique_violation(&err) {
                    return Err(err.into());
                }
            }
        }
        Ok(())
    }

    /// Retires the current key and creates a new one. Tokens signed with the retired key keep
    /// verifying: it stays in the JWKS until they have expired.
    pub async fn rotate_signing_key(&self, actor: &Principal) -> Result<signing_keys::Model> {
        let generated = keys::generate();
        let txn = self.db.begin_write().await?;
        let previous = signing_keys::Entity::find()
            .filter(signing_keys::Column::RetiredAt.is_null())
            .order_by_desc(signing_keys::Column::CreatedAt)
            .one(&txn)
            .await?;
        let now = Utc::now();
        signing_keys::Entity::update_many()
            .col_expr(signing_keys::Column::RetiredAt, sea_orm::sea_query::Expr::value(now))
            .filter(signing_keys::Column::RetiredAt.is_null())
            .exec(&txn)
            .await?;
        let model = signing_keys::ActiveModel {
            kid: Set(generated.kid.clone()),
            algorithm: Set(keys::ALGORITHM.into()),
            private_key: Set(generated.private_key),
            public_key: Set(generated.public_key),
            created_at: Set(now),
            retired_at: Set(None),
        }
        .insert(&txn)
        .await?;
        let event = Event::new(
            SERVICE,
            "rp.auth.signing_key_rotated",
            format!("signing-keys/{}", generated.kid),
            &ev::SigningKeyRotated {
                actor: Some(actor.actor()),
                kid: generated.kid.clone(),
                previous_kid: previous.map(|k| k.kid).unwrap_or_default(),
            },
        );
        outbox::enqueue(&txn, &event).await?;
        txn.commit().await?;
        self.outbox.wake();
        *self.signer.write().await = None;
        tracing::info!(kid = %model.kid, "signing key rotated");
        Ok(model)
    }

    /// Rotates when the current key is older than `signing_key_rotation_days`.
    pub async fn rotate_if_due(&self) -> Result<bool> {
        let days = self.config.auth.signing_key_rotation_days;
        if days == 0 {
            return Ok(false);
        }
        let due = match self.current_key().await? {
            Some(key) => Utc::now() - key.created_at > chrono::Duration::days(days as i64),
            None => true,
        };
        if due {
            self.rotate_signing_key(&Principal::system()).await?;
        }
        Ok(due)
    }

    /// Keys that may still verify live tokens: the current one, and retired ones for as long as
    /// a token they signed can live.
    pub async fn jwks(&self) -> Result<JwkSet> {
        let grace = chrono::Duration::seconds(
            (self.config.auth.access_token_ttl_secs + self.config.identity.leeway_secs + 60) as i64,
        );
        let rows = signing_keys::Entity::find()
            .filter(
                Condition::any()
                    .add(signing_keys::Column::RetiredAt.is_null())
                    .add(signing_keys::Column::RetiredAt.gt(Utc::now() - grace)),
            )
            .order_by_desc(signing_keys::Column::CreatedAt)
            .all(&self.db.conn)
            .await?;
        Ok(keys::jwks(rows.iter().map(|k| (k.kid.as_str(), k.public_key.as_str()))))
    }

    // ---------------------------------------------------------------- API tokens

    /// Resolves an API token to its principal: the token's roles, limited to what its owner
    /// still holds.
    pub async fn authenticate_api_token(&self, token: &str) -> Result<Principal> {
        let invalid = || E::Unauthenticated("invalid, expired or revoked API token".into());
        let stored = api_tokens::Entity::find()
            .filter(api_tokens::Column::TokenHash.eq(secrets::digest(token)))
            .one(&self.db.conn)
            .await?
            .ok_or_else(invalid)?;
        let now = Utc::now();
        if stored.revoked_at.is_some() || stored.expires_at.is_some_and(|at| at <= now) {
            return Err(invalid());
        }
        let owner =
            users::Entity::find_by_id(stored.owner_id).one(&self.db.conn).await?.ok_or_else(invalid)?;
        if owner.disabled {
            return Err(invalid());
        }
        if stored.last_used_at.is_none_or(|at| now - at > LAST_USED_RESOLUTION) {
            api_tokens::Entity::update_many()
                .col_expr(api_tokens::Column::LastUsedAt, sea_orm::sea_query::Expr::value(now))
                .filter(api_tokens::Column::Id.eq(stored.id))
                .exec(&self.db.conn)
                .await?;
        }
        let owner_roles = user_roles(&owner);
        let owner_is_admin = owner_roles.contains(&Role::Admin);
        let roles = Role::parse_list(&stored.roles)
            .unwrap_or_default()
            .into_iter()
            .filter(|r| owner_is_admin || owner_roles.contains(r))
            .collect();
        Ok(Principal {
            subject: owner.id.to_string(),
            email: owner.email,
            roles,
            kind: PrincipalKind::ApiToken,
            token_id: Some(stored.id.to_string()),
            request_id: None,
        })
    }

    pub async fn create_api_token(
        &self,
        actor: &Principal,
        name: &str,
        roles: Vec<Role>,
        ttl_seconds: i64,
    ) -> Result<(ApiToken, String)> {
        if actor.kind != PrincipalKind::User && !actor.is_admin() {
            return Err(E::Forbidden("API tokens cannot create API tokens".into()));
        }
        let name = validate::name("name", name, 100).map_err(E::Invalid)?;
        if roles.is_empty() {
            return Err(E::Invalid("an API token needs at least one role".into()));
        }
        if let Some(role) = roles.iter().find(|r| !actor.has_role(**r)) {
            return Err(E::Forbidden(format!("you cannot grant the role {role} that you do not hold")));
        }
        // Ten years at most: enough for any CI secret, and far from date arithmetic overflow.
        if !(0..=315_360_000).contains(&ttl_seconds) {
            return Err(E::Invalid(
                "ttl_seconds must be between 0 (no expiry) and 315360000 (ten years)".into(),
            ));
        }
        let owner_id = parse_id(&actor.subject)?;
        let secret = secrets::api_token();
        let now = Utc::now();
        let txn = self.db.begin_write().await?;
        let model = api_tokens::ActiveModel {
            id: Set(Uuid::now_v7()),
            name: Set(name.clone()),
            prefix: Set(secret[..10].to_owned()),
            token_hash: Set(secrets::digest(&secret)),
            roles: Set(Role::join(&roles)),
            owner_id: Set(owner_id),
            created_at: Set(now),
            expires_at: Set((ttl_seconds > 0).then(|| now + chrono::Duration::seconds(ttl_seconds))),
            last_used_at: Set(None),
            revoked_at: Set(None),
        }
        .insert(&txn)
        .await?;
        let event = Event::new(
            SERVICE,
            "rp.auth.api_token_created",
            format!("api-tokens/{}", model.id),
            &ev::ApiTokenCreated {
                actor: Some(actor.actor()),
                token_id: model.id.to_string(),
                name,
                roles: roles.iter().map(|r| r.as_str().to_owned()).collect(),
            },
        );
        outbox::enqueue(&txn, &event).await?;
        txn.commit().await?;
        self.outbox.wake();
        Ok((model, secret))
    }

    /// Admins see every token; others see their own.
    pub async fn list_api_tokens(&self, actor: &Principal, include_revoked: bool) -> Result<Vec<ApiToken>> {
        let mut query = api_tokens::Entity::find().order_by_asc(api_tokens::Column::Id);
        if !actor.is_admin() {
            query = query.filter(api_tokens::Column::OwnerId.eq(parse_id(&actor.subject)?));
        }
        if !include_revoked {
            query = query.filter(api_tokens::Column::RevokedAt.is_null());
        }
        Ok(query.all(&self.db.conn).await?)
    }

    pub async fn revoke_api_token(&self, actor: &Principal, id: &str) -> Result<ApiToken> {
        let id = parse_id(id)?;
        let txn = self.db.begin_write().await?;
        let token = api_tokens::Entity::find_by_id(id)
            .one(&txn)
            .await?
            .ok_or_else(|| E::NotFound(format!("API token {id} not found")))?;
        if !actor.is_admin() && token.owner_id.to_string() != actor.subject {
            // Same answer as a missing token: do not reveal other users' token ids.
            return Err(E::NotFound(format!("API token {id} not found")));
        }
        if token.revoked_at.is_some() {
            txn.rollback().await?;
            return Ok(token);
        }
        let mut active: api_tokens::ActiveModel = token.into();
        active.revoked_at = Set(Some(Utc::now()));
        let token = active.update(&txn).await?;
        let event = Event::new(
            SERVICE,
            "rp.auth.api_token_revoked",
            format!("api-tokens/{id}"),
            &ev::ApiTokenRevoked { actor: Some(actor.actor()), token_id: id.to_string() },
        );
        outbox::enqueue(&txn, &event).await?;
        txn.commit().await?;
        self.outbox.wake();
        Ok(token)
    }

    // ---------------------------------------------------------------- users

    pub async fn get_user(&self, id: &str) -> Result<User> {
        let id = parse_id(id)?;
        users::Entity::find_by_id(id)
            .one(&self.db.conn)
            .await?
            .ok_or_else(|| E::NotFound(format!("user {id} not found")))
    }

    pub async fn list_users(&self, page_size: u64, after: Option<Uuid>) -> Result<(Vec<User>, Option<Uuid>)> {
        let mut query = users::Entity::find().order_by_asc(users::Column::Id).limit(page_size + 1);
        if let Some(after) = after {
            query = query.filter(users::Column::Id.gt(after));
        }
        let mut rows = query.all(&self.db.conn).await?;
        let next = (rows.len() as u64 > page_size).then(|| {
            rows.truncate(page_size as usize);
            rows.last().map(|u| u.id)
        });
        Ok((rows, next.flatten()))
    }

    pub async fn create_user(
        &self,
        actor: &Principal,
        email: &str,
        display_name: &str,
        password: &str,
        roles: Vec<Role>,
    ) -> Result<User> {
        let email = validate::email(email).map_err(E::Invalid)?;
        let display_name = if display_name.trim().is_empty() {
            email.split('@').next().unwrap_or_default().to_owned()
        } else {
            validate::name("display_name", display_name, 100).map_err(E::Invalid)?
        };
        validate::password(password, self.config.auth.password_min_length).map_err(E::Invalid)?;
        let roles = if roles.is_empty() { vec![Role::Viewer] } else { roles };
        let hash = passwords::hash_blocking(password.to_owned()).await.map_err(E::Internal)?;
        self.insert_user(actor, email, display_name, hash, roles).await
    }

    async fn insert_user(
        &self,
        actor: &Principal,
        email: String,
        display_name: String,
        password_hash: String,
        roles: Vec<Role>,
    ) -> Result<User> {
        let now = Utc::now();
        let txn = self.db.begin_write().await?;
        let inserted = users::ActiveModel {
            id: Set(Uuid::now_v7()),
            email: Set(email.clone()),
            display_name: Set(display_name),
            password_hash: Set(password_hash),
            roles: Set(Role::join(&roles)),
            disabled: Set(false),
            created_at: Set(now),
            updated_at: Set(now),
        }
        .insert(&txn)
        .await;
        let user = match inserted {
            Ok(user) => user,
            Err(err) if rp_db::is_unique_violation(&err) => {
                return Err(E::Conflict(format!("a user with e-mail {email} already exists")));
            }
            Err(err) => return Err(err.into()),
        };
        let event = Event::new(
            SERVICE,
            "rp.auth.user_created",
            format!("users/{}", user.id),
            &ev::UserCreated {
                actor: Some(actor.actor()),
                user_id: user.id.to_string(),
                email: user.email.clone(),
                roles: roles.iter().map(|r| r.as_str().to_owned()).collect(),
            },
        );
        outbox::enqueue(&txn, &event).await?;
        txn.commit().await?;
        self.outbox.wake();
        Ok(user)
    }

    pub async fn update_user(
        &self,
        actor: &Principal,
        id: &str,
        display_name: Option<String>,
        roles: Option<Vec<Role>>,
        disabled: Option<bool>,
    ) -> Result<User> {
        let id = parse_id(id)?;
        if actor.subject == id.to_string()
            && (disabled == Some(true) || roles.as_ref().is_some_and(|r| !r.contains(&Role::Admin)))
        {
            return Err(E::Precondition(
                "administrators cannot disable themselves or drop their own admin role".into(),
            ));
        }
        let txn = self.db.begin_write().await?;
        let user = users::Entity::find_by_id(id)
            .one(&txn)
            .await?
            .ok_or_else(|| E::NotFound(format!("user {id} not found")))?;
        let previous_roles = user_roles(&user);
        let previously_disabled = user.disabled;
        let mut active: users::ActiveModel = user.into();
        if let Some(name) = display_name {
            active.display_name = Set(validate::name("display_name", &name, 100).map_err(E::Invalid)?);
        }
        if let Some(roles) = &roles {
            active.roles = Set(Role::join(roles));
        }
        if let Some(disabled) = disabled {
            active.disabled = Set(disabled);
        }
        active.updated_at = Set(Utc::now());
        let user = active.update(&txn).await?;
        if user.disabled && !previously_disabled {
            // A disabled user's sessions end now (access tokens expire within their short TTL).
            refresh_tokens::Entity::update_many()
                .col_expr(refresh_tokens::Column::RevokedAt, sea_orm::sea_query::Expr::value(Utc::now()))
                .filter(refresh_tokens::Column::UserId.eq(id))
                .filter(refresh_tokens::Column::RevokedAt.is_null())
                .exec(&txn)
                .await?;
        }
        let event = Event::new(
            SERVICE,
            "rp.auth.user_updated",
            format!("users/{id}"),
            &ev::UserUpdated {
                actor: Some(actor.actor()),
                user_id: id.to_string(),
                email: user.email.clone(),
                roles: user_roles(&user).iter().map(|r| r.as_str().to_owned()).collect(),
                disabled: user.disabled,
                previous_roles: previous_roles.iter().map(|r| r.as_str().to_owned()).collect(),
                previously_disabled,
            },
        );
        outbox::enqueue(&txn, &event).await?;
        txn.commit().await?;
        self.outbox.wake();
        Ok(user)
    }

    /// Users change their own password with the current one; admins reset anyone's. Either way
    /// every refresh token of the user is revoked.
    pub async fn set_password(
        &self,
        actor: &Principal,
        user_id: &str,
        current: &str,
        new: &str,
    ) -> Result<()> {
        let user = self.get_user(user_id).await?;
        let is_self = actor.subject == user.id.to_string() && actor.kind == PrincipalKind::User;
        if !is_self && !actor.is_admin() {
            return Err(E::Forbidden("only administrators can change other users' passwords".into()));
        }
        validate::password(new, self.config.auth.password_min_length).map_err(E::Invalid)?;
        if current.chars().count() > 1024 {
            return Err(E::Invalid("current_password must be at most 1024 characters".into()));
        }
        if is_self && !passwords::verify_blocking(current.to_owned(), Some(user.password_hash.clone())).await
        {
            return Err(E::Forbidden("current password is wrong".into()));
        }
        let hash = passwords::hash_blocking(new.to_owned()).await.map_err(E::Internal)?;
        let txn = self.db.begin_write().await?;
        let mut active: users::ActiveModel = user.clone().into();
        active.password_hash = Set(hash);
        active.updated_at = Set(Utc::now());
        active.update(&txn).await?;
        refresh_tokens::Entity::update_many()
            .col_expr(refresh_tokens::Column::RevokedAt, sea_orm::sea_query::Expr::value(Utc::now()))
            .filter(refresh_tokens::Column::UserId.eq(user.id))
            .filter(refresh_tokens::Column::RevokedAt.is_null())
            .exec(&txn)
            .await?;
        let event = Event::new(
            SERVICE,
            "rp.auth.password_changed",
            format!("users/{}", user.id),
            &ev::PasswordChanged { actor: Some(actor.actor()), user_id: user.id.to_string() },
        );
        outbox::enqueue(&txn, &event).await?;
        txn.commit().await?;
        self.outbox.wake();
        Ok(())
    }

    /// Creates the first administrator when there are no users. Returns the generated password
    /// when none was configured, for the caller to show exactly once.
    pub async fn bootstrap_admin(&self) -> Result<Option<(String, Option<String>)>> {
        if users::Entity::find().count(&self.db.conn).await? > 0 {
            return Ok(None);
        }
        let bootstrap = &self.config.auth.bootstrap_admin;
        let email = validate::email(bootstrap.email.as_deref().unwrap_or("admin@release-pilot.local"))
            .map_err(E::Invalid)?;
        let (password, generated) = match &bootstrap.password {
            Some(password) => (password.expose().to_owned(), None),
            None => {
                let generated = secrets::generate_password();
                (generated.clone(), Some(generated))
            }
        };
        let hash = passwords::hash_blocking(password).await.map_err(E::Internal)?;
        match self
            .insert_user(&Principal::system(), email.clone(), "Administrator".into(), hash, vec![Role::Admin])
            .await
        {
            Ok(_) => Ok(Some((email, generated))),
            // Another replica bootstrapped concurrently.
            Err(E::Conflict(_)) => Ok(None),
            Err(err) => Err(err),
        }
    }

    /// Deletes login attempts and refresh tokens that no longer matter.
    pub async fn prune(&self) -> Result<()> {
        let now = Utc::now();
        let window = chrono::Duration::seconds(self.config.auth.throttle.window_secs as i64);
        login_attempts::Entity::delete_many()
            .filter(login_attempts::Column::At.lt(now - window * 2))
            .exec(&self.db.conn)
            .await?;
        refresh_tokens::Entity::delete_many()
            .filter(refresh_tokens::Column::ExpiresAt.lt(now - chrono::Duration::days(1)))
            .exec(&self.db.conn)
            .await?;
        Ok(())
    }
}

pub fn parse_id(id: &str) -> Result<Uuid> {
    Uuid::parse_str(id.trim()).map_err(|_| E::Invalid(format!("{id:?} is not a valid id")))
}

/// Timestamps in the API.
pub fn ts(time: DateTime<Utc>) -> rp_proto::Timestamp {
    rp_proto::timestamp(time)
}
