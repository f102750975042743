//! The release service's behaviour. Every mutation runs in one transaction that also appends the
//! audit entry and enqueues the events (transactional outbox), then wakes the relay and the
//! deployment engine.

pub mod audit_log;
pub mod catalog;
pub mod deployments;
mod dora;
mod engine;
mod releases;

use std::sync::Arc;

use chrono::Utc;
use rp_config::Config;
use rp_db::Database;
use rp_events::{Event, outbox::Outbox};
use rp_identity::Principal;
use rp_runtime::{ServiceError as E, ServiceResult as Result};
use sea_orm::{ColumnTrait, ConnectionTrait, DatabaseTransaction, EntityTrait, QueryFilter};
use serde::Serialize;
use tokio::sync::Notify;
use uuid::Uuid;

pub use audit_log::AuditQuery;
pub use deployments::{CreateDeployment, DeploymentView, RollbackTarget};
pub use engine::Engine;
pub use releases::{NewRelease, QualityReport};

use crate::{
    idempotency,
    store::{apps, environments, releases as release_rows},
};

pub(crate) const SERVICE: &str = "release";
/// The `source` suffix of this service's events.
pub const SERVICE_NAME_SHORT: &str = SERVICE;

/// Shared by the gRPC layer, the engine and the consumers.
pub struct ReleaseCore {
    pub(crate) db: Database,
    pub(crate) outbox: Outbox,
    pub(crate) config: Arc<Config>,
    pub(crate) http: reqwest::Client,
    /// Wakes the deployment engine after a change that may make work due.
    pub(crate) engine_wake: Arc<Notify>,
}

impl ReleaseCore {
    pub fn new(db: Database, outbox: Outbox, config: Arc<Config>) -> Self {
        let http = reqwest::Client::builder()
            .user_agent(concat!("release-pilot/", env!("CARGO_PKG_VERSION")))
            .build()
            .expect("the HTTP client builds with static settings");
        Self { db, outbox, config, http, engine_wake: Arc::new(Notify::new()) }
    }

    /// Commits `txn`, then wakes the outbox relay and the engine.
    pub(crate) async fn commit(&self, txn: DatabaseTransaction) -> Result<()> {
        txn.commit().await?;
        self.outbox.wake();
        self.engine_wake.notify_one();
        Ok(())
    }

    /// Looks up an idempotency key; `Some(resource id)` when the call already happened.
    pub(crate) async fn replayed(&self, scope: &str, key: &str) -> Result<Option<String>> {
        if key.is_empty() {
            return Ok(None);
        }
        if key.len() > 200 {
            return Err(E::Invalid("idempotency_key is limited to 200 characters".into()));
        }
        Ok(idempotency::lookup(&self.db.conn, scope, key).await?)
    }

    /// Records an idempotency key in `txn`; false when a concurrent call got there first.
    pub(crate) async fn remember(
        &self,
        txn: &DatabaseTransaction,
        scope: &str,
        key: &str,
        id: &str,
    ) -> Result<bool> {
        if key.is_empty() {
            return Ok(true);
        }
        Ok(idempotency::record(txn, scope, key, id).await?)
    }

    /// Finds an app by id or name.
    pub(crate) async fn find_app<C: ConnectionTrait>(
        &self,
        conn: &C,
        id_or_name: &str,
    ) -> Result<apps::Model> {
        let query = match Uuid::parse_str(id_or_name) {
            Ok(id) => apps::Entity::find_by_id(id),
            Err(_) if rp_runtime::validate::slug("app", id_or_name).is_err() => {
                return Err(E::NotFound(format!("app {id_or_name:?} not found")));
            }
            Err(_) => apps::Entity::find().filter(apps::Column::Name.eq(id_or_name)),
        };
        query.one(conn).await?.ok_or_else(|| E::NotFound(format!("app {id_or_name} not found")))
    }

    /// Finds an environment by id or name.
    pub(crate) async fn find_environment<C: ConnectionTrait>(
        &self,
        conn: &C,
        id_or_name: &str,
    ) -> Result<environments::Model> {
        let query = match Uuid::parse_str(id_or_name) {
            Ok(id) => environments::Entity::find_by_id(id),
            Err(_) if rp_runtime::validate::slug("environment", id_or_name).is_err() => {
                return Err(E::NotFound(format!("environment {id_or_name:?} not found")));
            }
            Err(_) => environments::Entity::find().filter(environments::Column::Name.eq(id_or_name)),
        };
        query.one(conn).await?.ok_or_else(|| E::NotFound(format!("environment {id_or_name} not found")))
    }

    /// Finds a release of `app` by version.
    pub(crate) async fn find_release<C: ConnectionTrait>(
        &self,
        conn: &C,
        app: &apps::Model,
        version: &str,
    ) -> Result<release_rows::Model> {
        release_rows::Entity::find()
            .filter(release_rows::Column::AppId.eq(app.id))
            .filter(release_rows::Column::Version.eq(version.trim().trim_start_matches('v')))
            .one(conn)
            .await?
            .ok_or_else(|| E::NotFound(format!("{} has no release {version}", app.name)))
    }

    /// Enqueues an event in `txn`.
    pub(crate) async fn emit<C: ConnectionTrait>(
        &self,
        conn: &C,
        event_type: &str,
        subject: String,
        payload: &impl Serialize,
    ) -> Result<()> {
        rp_events::outbox::enqueue(conn, &Event::new(SERVICE, event_type, subject, payload)).await?;
        Ok(())
    }
}

impl ReleaseCore {
    /// Enqueues an event a driver asked for, in the step's transaction; a route update is also
    /// kept as the target's current route for routers that start later.
    pub(crate) async fn publish_driver_event<C: ConnectionTrait>(
        &self,
        conn: &C,
        row: &crate::store::deployments::Model,
        event: &Event,
    ) -> Result<()> {
        rp_events::outbox::enqueue(conn, event).await?;
        if event.event_type == "rp.router.route_updated" {
            use sea_orm::{ActiveValue::Set, sea_query::OnConflict};
            let revision = event.data.get("revision").and_then(serde_json::Value::as_i64).unwrap_or_default();
            let route = crate::store::routes::ActiveModel {
                app_id: Set(row.app_id),
                environment_id: Set(row.environment_id),
                route: Set(event.data.to_string()),
                revision: Set(revision),
                updated_at: Set(now()),
            };
            crate::store::routes::Entity::insert(route)
                .on_conflict(
                    OnConflict::columns([
                        crate::store::routes::Column::AppId,
                        crate::store::routes::Column::EnvironmentId,
                    ])
                    .update_columns([
                        crate::store::routes::Column::Route,
                        crate::store::routes::Column::Revision,
                        crate::store::routes::Column::UpdatedAt,
                    ])
                    .to_owned(),
                )
                .exec_without_returning(conn)
                .await?;
        }
        Ok(())
    }

    /// Every router-driven target's current route.
    pub async fn list_routes(&self) -> Result<Vec<rp_proto::events::v1::RouteUpdated>> {
        let rows = crate::store::routes::Entity::find().all(&self.db.conn).await?;
        Ok(rows.into_iter().filter_map(|row| serde_json::from_str(&row.route).ok()).collect())
    }
}

/// Parses an id given by a caller.
pub(crate) fn parse_id(field: &str, text: &str) -> Result<Uuid> {
    Uuid::parse_str(text.trim()).map_err(|_| E::Invalid(format!("{field} {text:?} is not a valid id")))
}

/// Role names stored comma-separated, validated.
pub(crate) fn parse_roles(names: &[String]) -> Result<Vec<rp_identity::Role>> {
    let mut roles = Vec::new();
    for name in names {
        roles.push(name.trim().parse::<rp_identity::Role>().map_err(E::Invalid)?);
    }
    roles.sort();
    roles.dedup();
    Ok(roles)
}

pub(crate) fn stored_roles(text: &str) -> Vec<rp_identity::Role> {
    rp_identity::Role::parse_list(text).unwrap_or_default()
}

/// The actor of events, for a principal.
pub(crate) fn actor(principal: &Principal) -> Option<rp_proto::events::v1::Actor> {
    Some(principal.actor())
}

pub(crate) fn now() -> chrono::DateTime<Utc> {
    Utc::now()
}
