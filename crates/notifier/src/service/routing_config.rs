//! What the consumer routes by — the enabled rules and every channel — cached per replica and
//! re-read only when the configuration version moved. Every change to rules or channels (the
//! API's, a 429's throttle, a 410's disable) bumps the version in its own transaction, so a
//! replica reads one row per event instead of both tables, and never routes by a configuration
//! older than the one its transaction sees. Changes made in the database by hand, without the
//! API, are not seen until the next change through it.

use std::sync::{Arc, Mutex};

use sea_orm::{
    ColumnTrait as _, ConnectionTrait, DbErr, EntityTrait as _, QueryFilter as _, QuerySelect as _,
    sea_query::{Expr, ExprTrait as _},
};
use uuid::Uuid;

use crate::{
    domain::routing::{ChannelRef, Rule},
    store::{channels, config_version},
};

/// The rules and channels of one configuration version.
pub(crate) struct RoutingConfig {
    pub version: i64,
    pub rules: Vec<Rule>,
    pub refs: Vec<ChannelRef>,
    /// Full rows, for the attempts the consumer makes at once.
    pub channels: Vec<channels::Model>,
}

impl RoutingConfig {
    /// The row of channel `id` when a message due `now` may go out on it at once.
    pub fn sendable_at_once(&self, id: Uuid, now: chrono::DateTime<chrono::Utc>) -> Option<&channels::Model> {
        let sendable = self.refs.iter().any(|c| c.id == id && c.sendable_at_once(now));
        self.channels.iter().find(|c| sendable && c.id == id)
    }
}

#[derive(Default)]
pub(crate) struct RoutingCache {
    current: Mutex<Option<Arc<RoutingConfig>>>,
}

impl RoutingCache {
    /// The configuration as `conn` sees it.
    pub async fn get<C: ConnectionTrait>(&self, conn: &C) -> Result<Arc<RoutingConfig>, DbErr> {
        let version = current_version(conn).await?;
        if let Some(cached) = self.cached().filter(|c| c.version == version) {
            return Ok(cached);
        }
        let rules = super::rules::active_rules(conn).await?;
        let channels = channels::Entity::find().all(conn).await?;
        let refs = channels
            .iter()
            .map(|c| ChannelRef {
                id: c.id,
                kind: c.kind.clone(),
                enabled: c.enabled,
                rate_limit_per_minute: c.rate_limit_per_minute,
                throttled_until: c.throttled_until,
            })
            .collect();
        // Read after the version: at worst newer than it, which the next event re-reads.
        let fresh = Arc::new(RoutingConfig { version, rules, refs, channels });
        *self.current.lock().unwrap_or_else(|p| p.into_inner()) = Some(fresh.clone());
        Ok(fresh)
    }

    fn cached(&self) -> Option<Arc<RoutingConfig>> {
        self.current.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }
}

async fn current_version<C: ConnectionTrait>(conn: &C) -> Result<i64, DbErr> {
    let version: Option<i64> = config_version::Entity::find_by_id(config_version::ROW)
        .select_only()
        .column(config_version::Column::Version)
        .into_tuple()
        .one(conn)
        .await?;
    Ok(version.unwrap_or(0))
}

/// Records a change to rules or channels; call it in the change's transaction.
pub(crate) async fn bump<C: ConnectionTrait>(conn: &C) -> Result<(), DbErr> {
    config_version::Entity::update_many()
        .col_expr(config_version::Column::Version, Expr::col(config_version::Column::Version).add(1))
        .filter(config_version::Column::Id.eq(config_version::ROW))
        .exec(conn)
        .await?;
    Ok(())
}
