//! Idempotency keys: a retried mutation with the same key returns the first result instead of
//! acting twice.

use chrono::Utc;
use sea_orm::{ActiveValue::Set, ConnectionTrait, DbErr, EntityTrait, sea_query::OnConflict};

use crate::store::idempotency_keys;

/// The resource an earlier call with this key produced.
pub async fn lookup<C: ConnectionTrait>(conn: &C, scope: &str, key: &str) -> Result<Option<String>, DbErr> {
    Ok(idempotency_keys::Entity::find_by_id((scope.to_owned(), key.to_owned()))
        .one(conn)
        .await?
        .map(|row| row.resource_id))
}

/// Records the key inside the caller's transaction. False when a concurrent call recorded it
/// first: the caller must roll back and return that call's resource.
pub async fn record<C: ConnectionTrait>(
    conn: &C,
    scope: &str,
    key: &str,
    resource_id: &str,
) -> Result<bool, DbErr> {
    let inserted = idempotency_keys::Entity::insert(idempotency_keys::ActiveModel {
        scope: Set(scope.to_owned()),
        key: Set(key.to_owned()),
        resource_id: Set(resource_id.to_owned()),
        created_at: Set(Utc::now()),
    })
    .on_conflict(
        OnConflict::columns([idempotency_keys::Column::Scope, idempotency_keys::Column::Key])
            .do_nothing()
            .to_owned(),
    )
    .exec_without_returning(conn)
    .await?;
    Ok(inserted == 1)
}
