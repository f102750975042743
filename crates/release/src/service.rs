//! Release domain: apps (environments, releases and deployments arrive with the release issue).

use chrono::Utc;
use rp_db::Database;
use rp_events::{Event, outbox::Outbox};
use rp_identity::Principal;
use rp_proto::events::v1 as ev;
use rp_runtime::{ServiceError as E, ServiceResult as Result};
use sea_orm::{
    ActiveModelTrait, ActiveValue::Set, ColumnTrait, EntityTrait, QueryFilter, QueryOrder, QuerySelect,
};
use uuid::Uuid;

use crate::{idempotency, store::apps};

const SERVICE: &str = "release";

pub struct ReleaseCore {
    db: Database,
    outbox: Outbox,
}

/// App names are URL path segments and label values.
pub fn validate_app_name(name: &str) -> Result<()> {
    rp_runtime::validate::slug("app name", name)
}

impl ReleaseCore {
    pub fn new(db: Database, outbox: Outbox) -> Self {
        Self { db, outbox }
    }

    pub async fn create_app(
        &self,
        actor: &Principal,
        name: &str,
        description: &str,
        owner_team: &str,
        idempotency_key: &str,
    ) -> Result<apps::Model> {
        validate_app_name(name)?;
        rp_runtime::validate::text("description", description, 2000, true)?;
        rp_runtime::validate::text("owner_team", owner_team, 100, false)?;
        let scope = format!("create_app:{}", actor.actor_id());
        if !idempotency_key.is_empty()
            && let Some(id) = idempotency::lookup(&self.db.conn, &scope, idempotency_key).await?
        {
            return self.get_app(&id).await;
        }
        let now = Utc::now();
        let txn = self.db.begin_write().await?;
        let inserted = apps::ActiveModel {
            id: Set(Uuid::now_v7()),
            name: Set(name.to_owned()),
            description: Set(description.to_owned()),
            owner_team: Set(owner_team.to_owned()),
            created_at: Set(now),
            updated_at: Set(now),
        }
        .insert(&txn)
        .await;
        let app = match inserted {
            Ok(app) => app,
            Err(err) if rp_db::is_unique_violation(&err) => {
                return Err(E::Conflict(format!("an app named {name} already exists")));
            }
            Err(err) => return Err(err.into()),
        };
        if !idempotency_key.is_empty()
            && !idempotency::record(&txn, &scope, idempotency_key, &app.id.to_string()).await?
        {
            txn.rollback().await?;
            let id = idempotency::lookup(&self.db.conn, &scope, idempotency_key).await?.unwrap_or_default();
            return self.get_app(&id).await;
        }
        let event = Event::new(
            SERVICE,
            "rp.release.app_created",
            format!("apps/{}", app.name),
            &ev::AppCreated {
                actor: Some(actor.actor()),
                app_id: app.id.to_string(),
                name: app.name.clone(),
                owner_team: app.owner_team.clone(),
            },
        );
        rp_events::outbox::enqueue(&txn, &event).await?;
        txn.commit().await?;
        self.outbox.wake();
        Ok(app)
    }

    /// Finds an app by id or by name.
    pub async fn get_app(&self, id_or_name: &str) -> Result<apps::Model> {
        let query = match Uuid::parse_str(id_or_name) {
            Ok(id) => apps::Entity::find_by_id(id),
            // A string that cannot be an app name names no app.
            Err(_) if validate_app_name(id_or_name).is_err() => {
                return Err(E::NotFound(format!("app {id_or_name:?} not found")));
            }
            Err(_) => apps::Entity::find().filter(apps::Column::Name.eq(id_or_name)),
        };
        query.one(&self.db.conn).await?.ok_or_else(|| E::NotFound(format!("app {id_or_name} not found")))
    }

    pub async fn list_apps(
        &self,
        page_size: u64,
        after: Option<Uuid>,
    ) -> Result<(Vec<apps::Model>, Option<Uuid>)> {
        let mut query = apps::Entity::find().order_by_asc(apps::Column::Id).limit(page_size + 1);
        if let Some(after) = after {
            query = query.filter(apps::Column::Id.gt(after));
        }
        let mut rows = query.all(&self.db.conn).await?;
        let next = if rows.len() as u64 > page_size {
            rows.truncate(page_size as usize);
            rows.last().map(|a| a.id)
        } else {
            None
        };
        Ok((rows, next))
    }
}
