//! The audit log: appended in the transaction of every mutation here, and from the events of the
//! other services; queried by actor, resource and time; verified end to end.

use chrono::{DateTime, Utc};
use rp_events::{Event, inbox};
use rp_identity::Principal;
use rp_runtime::{ServiceError as E, ServiceResult as Result};
use sea_orm::{
    ActiveValue::Set, ColumnTrait, ConnectionTrait, DbBackend, EntityTrait, PaginatorTrait, QueryFilter,
    QueryOrder, QuerySelect,
};
use serde_json::Value;
use uuid::Uuid;

use super::ReleaseCore;
use crate::{
    domain::audit::{self, EntryContent},
    store::audit_log,
};

/// Who did it, as stored.
pub struct Who {
    pub subject: String,
    pub email: String,
    pub kind: String,
    pub request_id: String,
}

impl From<&Principal> for Who {
    fn from(p: &Principal) -> Self {
        Self {
            subject: p.actor_id().to_owned(),
            email: p.email.clone(),
            kind: p.kind.as_str().to_owned(),
            request_id: p.request_id.clone().unwrap_or_default(),
        }
    }
}

/// Filters of `ListAuditEntries`.
#[derive(Debug, Default, Clone)]
pub struct AuditQuery {
    pub actor: Option<String>,
    pub resource_type: Option<String>,
    pub resource_id: Option<String>,
    pub since: Option<DateTime<Utc>>,
    pub until: Option<DateTime<Utc>>,
    pub after_seq: Option<i64>,
    pub limit: u64,
}

/// Appends an entry inside the caller's transaction. Appends are serialised (an advisory lock
/// on PostgreSQL; SQLite write transactions are serial already) so the chain never forks.
pub async fn append<C: ConnectionTrait>(
    conn: &C,
    who: &Who,
    action: &str,
    resource_type: &str,
    resource_id: &str,
    before: Option<&Value>,
    after: Option<&Value>,
) -> Result<()> {
    if conn.get_database_backend() == DbBackend::Postgres {
        conn.execute_unprepared("SELECT pg_advisory_xact_lock(7203391)").await?;
    }
    let head = audit_log::Entity::find().order_by_desc(audit_log::Column::Seq).one(conn).await?;
    let (seq, previous) = match head {
        Some(row) => (row.seq + 1, row.hash),
        None => (1, audit::GENESIS.to_owned()),
    };
    let id = Uuid::now_v7().to_string();
    // Microseconds: what both databases keep, so the hash can be recomputed from stored rows.
    let at = chrono::SubsecRound::trunc_subsecs(Utc::now(), 6);
    let before_json = before.map(Value::to_string).unwrap_or_default();
    let after_json = after.map(Value::to_string).unwrap_or_default();
    let content = EntryContent {
        seq,
        id: &id,
        at,
        actor_subject: &who.subject,
        actor_email: &who.email,
        actor_kind: &who.kind,
        request_id: &who.request_id,
        action,
        resource_type,
        resource_id,
        before_json: &before_json,
        after_json: &after_json,
    };
    let hash = audit::hash(&previous, &content);
    audit_log::Entity::insert(audit_log::ActiveModel {
        seq: Set(seq),
        id: Set(Uuid::parse_str(&id).expect("generated above")),
        at: Set(at),
        actor_subject: Set(who.subject.clone()),
        actor_email: Set(who.email.clone()),
        actor_kind: Set(who.kind.clone()),
        request_id: Set(who.request_id.clone()),
        action: Set(action.to_owned()),
        resource_type: Set(resource_type.to_owned()),
        resource_id: Set(resource_id.to_owned()),
        before_json: Set(before_json),
        after_json: Set(after_json),
        prev_hash: Set(previous),
        hash: Set(hash),
    })
    .exec_without_returning(conn)
    .await?;
    Ok(())
}

fn content(row: &audit_log::Model) -> (String, EntryContent<'_>) {
    let id = row.id.to_string();
    let content = EntryContent {
        seq: row.seq,
        id: "",
        at: row.at,
        actor_subject: &row.actor_subject,
        actor_email: &row.actor_email,
        actor_kind: &row.actor_kind,
        request_id: &row.request_id,
        action: &row.action,
        resource_type: &row.resource_type,
        resource_id: &row.resource_id,
        before_json: &row.before_json,
        after_json: &row.after_json,
    };
    (id, content)
}

/// Result of a chain verification.
pub struct Verification {
    pub valid: bool,
    pub checked: i64,
    pub broken_at: i64,
    pub problem: String,
    pub head_hash: String,
}

impl ReleaseCore {
    pub async fn list_audit(&self, query: AuditQuery) -> Result<(Vec<audit_log::Model>, Option<i64>)> {
        let mut select =
            audit_log::Entity::find().order_by_asc(audit_log::Column::Seq).limit(query.limit + 1);
        if let Some(actor) = query.actor {
            rp_runtime::validate::text("actor", &actor, 254, false)?;
            select = select.filter(
                sea_orm::Condition::any()
                    .add(audit_log::Column::ActorSubject.eq(actor.clone()))
                    .add(audit_log::Column::ActorEmail.eq(actor)),
            );
        }
        if let Some(kind) = query.resource_type {
            rp_runtime::validate::text("resource_type", &kind, 100, false)?;
            select = select.filter(audit_log::Column::ResourceType.eq(kind));
        }
        if let Some(id) = query.resource_id {
            rp_runtime::validate::text("resource_id", &id, 200, false)?;
            select = select.filter(audit_log::Column::ResourceId.eq(id));
        }
        if let Some(since) = query.since {
            select = select.filter(audit_log::Column::At.gte(since));
        }
        if let Some(until) = query.until {
            select = select.filter(audit_log::Column::At.lt(until));
        }
        if let Some(after) = query.after_seq {
            select = select.filter(audit_log::Column::Seq.gt(after));
        }
        let mut rows = select.all(&self.db.conn).await?;
        let next = if rows.len() as u64 > query.limit {
            rows.truncate(query.limit as usize);
            rows.last().map(|r| r.seq)
        } else {
            None
        };
        Ok((rows, next))
    }

    /// Recomputes the whole chain, in pages.
    pub async fn verify_audit(&self) -> Result<Verification> {
        let mut verifier = audit::Verifier::default();
        let mut after = 0i64;
        loop {
            let page = audit_log::Entity::find()
                .filter(audit_log::Column::Seq.gt(after))
                .order_by_asc(audit_log::Column::Seq)
                .limit(1000)
                .all(&self.db.conn)
                .await?;
            if page.is_empty() {
                break;
            }
            for row in &page {
                let (id, mut entry) = content(row);
                entry.id = &id;
                if let Err(broken) = verifier.check(&entry, &row.prev_hash, &row.hash) {
                    return Ok(Verification {
                        valid: false,
                        checked: verifier.checked,
                        broken_at: broken.seq,
                        problem: broken.problem,
                        head_hash: String::new(),
                    });
                }
                after = row.seq;
            }
        }
        Ok(Verification {
            valid: true,
            checked: verifier.checked,
            broken_at: 0,
            problem: String::new(),
            head_hash: verifier.head().to_owned(),
        })
    }

    /// Records another service's event in the audit log, once (inbox), in one transaction.
    pub async fn audit_event(&self, event: &Event) -> std::result::Result<(), inbox::HandlerError> {
        let retry = |e: sea_orm::DbErr| inbox::HandlerError::Retry(e.to_string());
        let txn = self.db.begin_write().await.map_err(retry)?;
        if !inbox::claim(&txn, "release-audit", event.id).await.map_err(retry)? {
            return Ok(());
        }
        let actor = event.data.get("actor").cloned().unwrap_or(Value::Null);
        let text = |key: &str| actor.get(key).and_then(Value::as_str).unwrap_or_default().to_owned();
        let who = Who {
            subject: if actor.is_null() { "system".into() } else { text("subject") },
            email: text("email"),
            kind: if actor.is_null() { "system".into() } else { text("kind") },
            request_id: text("request_id"),
        };
        let action = event.event_type.trim_start_matches("rp.").to_owned();
        let (resource_type, resource_id) = event.subject.split_once('/').unwrap_or(("", &event.subject));
        let mut after = event.data.clone();
        if let Value::Object(map) = &mut after {
            map.remove("actor");
        }
        append(&txn, &who, &action, resource_type, resource_id, None, Some(&after))
            .await
            .map_err(|e| inbox::HandlerError::Retry(e.to_string()))?;
        txn.commit().await.map_err(retry)?;
        Ok(())
    }

    pub async fn audit_count(&self) -> Result<u64> {
        Ok(audit_log::Entity::find().count(&self.db.conn).await?)
    }
}

/// Parses an RFC 3339 time filter.
pub fn parse_time(field: &str, text: &str) -> Result<DateTime<Utc>> {
    DateTime::parse_from_rfc3339(text)
        .map(|t| t.with_timezone(&Utc))
        .map_err(|_| E::Invalid(format!("{field} must be an RFC 3339 time")))
}
