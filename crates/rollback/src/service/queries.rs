//! Reads and small writes behind the API: policies, analyses with their decision records,
//! incidents, rollbacks, Alertmanager notifications; and the decision-record retention.

use std::{sync::Arc, time::Duration};

use chrono::Utc;
use rp_identity::Principal;
use rp_proto::events::v1 as ev;
use rp_runtime::{CancellationToken, ServiceError as E};
use sea_orm::{
    ActiveModelTrait as _, ColumnTrait, EntityTrait, IntoActiveModel as _, PaginatorTrait as _, QueryFilter,
    QueryOrder, QuerySelect, Select, sea_query::OnConflict,
};
use serde::Serialize;
use uuid::Uuid;

use super::{Result, RollbackCore, watcher::status};
use crate::{
    domain::{alertmanager, policy::Rule},
    store::{alerts, analyses, incidents, measurements, policies, rollbacks},
};

/// The snake_case name serde gives an enum value.
pub(crate) fn enum_text<T: Serialize>(value: &T) -> String {
    serde_json::to_value(value).ok().and_then(|v| v.as_str().map(str::to_owned)).unwrap_or_default()
}

/// Filters and paging shared by the list calls.
#[derive(Debug, Clone, Default)]
pub struct ListFilter {
    pub app: String,
    pub environment: String,
    pub status: String,
    pub page_size: i32,
    pub page_token: String,
}

/// Which analysis to read, and how much of its record.
#[derive(Debug, Clone, Default)]
pub struct AnalysisQuery {
    pub id: String,
    pub deployment_id: String,
    pub measurements: i32,
    pub breaches_only: bool,
}

/// A policy as the API shows it.
#[derive(Debug, Clone)]
pub struct PolicyView {
    pub app: String,
    pub environment: String,
    pub rules: Vec<Rule>,
    pub default: bool,
    pub updated_at: Option<chrono::DateTime<Utc>>,
}

/// Most rules one policy may hold.
const MAX_RULES: usize = 50;

fn parse_id(field: &str, text: &str) -> Result<Uuid> {
    Uuid::parse_str(text.trim()).map_err(|_| E::Invalid(format!("{field} {text:?} is not a valid id")))
}

/// Applies newest-first keyset paging; returns the page and the next token.
async fn page<E2>(
    query: Select<E2>,
    id: E2::Column,
    filter: &ListFilter,
    conn: &sea_orm::DatabaseConnection,
) -> Result<(Vec<E2::Model>, String)>
where
    E2: EntityTrait,
    E2::Model: HasId,
{
    let size = rp_db::page_size(filter.page_size, 50, 200);
    let mut query = query.order_by_desc(id).limit(size + 1);
    if !filter.page_token.is_empty() {
        let before = rp_db::parse_page_token(&filter.page_token)
            .ok_or_else(|| E::Invalid("page_token is not valid".into()))?;
        query = query.filter(id.lt(before));
    }
    let mut rows = query.all(conn).await?;
    let next = if rows.len() as u64 > size {
        rows.truncate(size as usize);
        rows.last().map(|row| row.id().to_string()).unwrap_or_default()
    } else {
        String::new()
    };
    Ok((rows, next))
}

pub(crate) trait HasId {
    fn id(&self) -> Uuid;
}

macro_rules! has_id {
    ($($module:ident),*) => {
        $(impl HasId for $module::Model {
            fn id(&self) -> Uuid {
                self.id
            }
        })*
    };
}
has_id!(analyses, incidents, rollbacks);

fn check_filter(filter: &ListFilter, statuses: &[&str]) -> Result<()> {
    if !filter.app.is_empty() {
        rp_runtime::validate::slug("app", &filter.app)?;
    }
    if !filter.environment.is_empty() {
        rp_runtime::validate::slug("environment", &filter.environment)?;
    }
    if !filter.status.is_empty() && !statuses.contains(&filter.status.as_str()) {
        return Err(E::Invalid(format!("status must be one of {}", statuses.join(", "))));
    }
    Ok(())
}

impl RollbackCore {
    pub async fn get_policy(&self, app: &str, environment: &str) -> Result<PolicyView> {
        rp_runtime::validate::slug("app", app)?;
        rp_runtime::validate::slug("environment", environment)?;
        let row =
            policies::Entity::find_by_id((app.to_owned(), environment.to_owned())).one(&self.db.conn).await?;
        Ok(match row {
            Some(row) => PolicyView {
                app: row.app,
                environment: row.environment,
                rules: serde_json::from_str(&row.rules)
                    .map_err(|e| E::Internal(format!("stored policy: {e}")))?,
                default: false,
                updated_at: Some(row.updated_at),
            },
            None => PolicyView {
                app: app.to_owned(),
                environment: environment.to_owned(),
                rules: self.default_rules(),
                default: true,
                updated_at: None,
            },
        })
    }

    /// Replaces the policy of an app in an environment; an empty rule list restores the defaults.
    pub async fn put_policy(
        &self,
        principal: &Principal,
        app: &str,
        environment: &str,
        rules_json: &str,
    ) -> Result<PolicyView> {
        rp_runtime::validate::slug("app", app)?;
        rp_runtime::validate::slug("environment", environment)?;
        let rules: Vec<Rule> = serde_json::from_str(rules_json)
            .map_err(|e| E::Invalid(format!("rules are not a valid rule list: {e}")))?;
        if rules.len() > MAX_RULES {
            return Err(E::Invalid(format!("a policy holds at most {MAX_RULES} rules")));
        }
        let mut names = std::collections::HashSet::new();
        for rule in &rules {
            rule.validate().map_err(E::Invalid)?;
            if !names.insert(rule.name.as_str()) {
                return Err(E::Invalid(format!("two rules are called {:?}", rule.name)));
            }
        }
        let key = (app.to_owned(), environment.to_owned());
        if rules.is_empty() {
            policies::Entity::delete_by_id(key).exec(&self.db.conn).await?;
        } else {
            let row = policies::Model {
                app: app.to_owned(),
                environment: environment.to_owned(),
                rules: serde_json::to_string(&rules).map_err(|e| E::Internal(e.to_string()))?,
                updated_by: principal.email.clone(),
                updated_at: Utc::now(),
            };
            policies::Entity::insert(row.into_active_model())
                .on_conflict(
                    OnConflict::columns([policies::Column::App, policies::Column::Environment])
                        .update_columns([
                            policies::Column::Rules,
                            policies::Column::UpdatedBy,
                            policies::Column::UpdatedAt,
                        ])
                        .to_owned(),
                )
                .exec_without_returning(&self.db.conn)
                .await?;
        }
        self.announce_change("policies").await;
        self.get_policy(app, environment).await
    }

    pub async fn list_analyses(&self, filter: &ListFilter) -> Result<(Vec<analyses::Model>, String)> {
        check_filter(filter, &[status::RUNNING, status::PASSED, status::FAILED, status::STOPPED])?;
        let mut query = analyses::Entity::find();
        if !filter.app.is_empty() {
            query = query.filter(analyses::Column::App.eq(&filter.app));
        }
        if !filter.environment.is_empty() {
            query = query.filter(analyses::Column::Environment.eq(&filter.environment));
        }
        if !filter.status.is_empty() {
            query = query.filter(analyses::Column::Status.eq(&filter.status));
        }
        page(query, analyses::Column::Id, filter, &self.db.conn).await
    }

    /// An analysis (by its id or its deployment's) and its newest decision records.
    pub async fn get_analysis(
        &self,
        query: &AnalysisQuery,
    ) -> Result<(analyses::Model, Vec<measurements::Model>)> {
        let found = match (query.id.is_empty(), query.deployment_id.is_empty()) {
            (false, _) => {
                let id = parse_id("id", &query.id)?;
                analyses::Entity::find()
                    .filter(
                        sea_orm::Condition::any()
                            .add(analyses::Column::Id.eq(id))
                            .add(analyses::Column::DeploymentId.eq(id)),
                    )
                    .one(&self.db.conn)
                    .await?
            }
            (true, false) => {
                let id = parse_id("deployment_id", &query.deployment_id)?;
                analyses::Entity::find()
                    .filter(analyses::Column::DeploymentId.eq(id))
                    .one(&self.db.conn)
                    .await?
            }
            (true, true) => return Err(E::Invalid("give an analysis id or a deployment_id".into())),
        };
        let analysis = found.ok_or_else(|| E::NotFound("no analysis for that id".into()))?;
        let limit = match query.measurements {
            n if n <= 0 => 100,
            n => (n as u64).min(1000),
        };
        let mut records = measurements::Entity::find()
            .filter(measurements::Column::AnalysisId.eq(analysis.id))
            .order_by_desc(measurements::Column::Id)
            .limit(limit);
        if query.breaches_only {
            records = records.filter(measurements::Column::Verdict.is_in([
                "breaching",
                "failed",
                "no_data_fail",
                "no_data_pause",
            ]));
        }
        let records = records.all(&self.db.conn).await?;
        Ok((analysis, records))
    }

    pub async fn list_incidents(&self, filter: &ListFilter) -> Result<(Vec<incidents::Model>, String)> {
        check_filter(filter, &["open", "resolved"])?;
        let mut query = incidents::Entity::find();
        if !filter.app.is_empty() {
            query = query.filter(incidents::Column::App.eq(&filter.app));
        }
        if !filter.environment.is_empty() {
            query = query.filter(incidents::Column::Environment.eq(&filter.environment));
        }
        if !filter.status.is_empty() {
            query = query.filter(incidents::Column::Status.eq(&filter.status));
        }
        page(query, incidents::Column::Id, filter, &self.db.conn).await
    }

    pub async fn get_incident(&self, id: &str) -> Result<incidents::Model> {
        let id = parse_id("id", id)?;
        incidents::Entity::find_by_id(id)
            .one(&self.db.conn)
            .await?
            .ok_or_else(|| E::NotFound(format!("incident {id} not found")))
    }

    /// Resolves an incident (once; resolving it again returns it unchanged).
    pub async fn resolve_incident(
        &self,
        principal: &Principal,
        id: &str,
        note: &str,
    ) -> Result<incidents::Model> {
        rp_runtime::validate::text("note", note, 2000, false)?;
        let txn = self.db.begin_write().await?;
        let id = parse_id("id", id)?;
        let incident = incidents::Entity::find_by_id(id)
            .one(&txn)
            .await?
            .ok_or_else(|| E::NotFound(format!("incident {id} not found")))?;
        if incident.status == "resolved" {
            txn.rollback().await?;
            return Ok(incident);
        }
        // Microseconds: what PostgreSQL keeps, so the answer equals what is read back later.
        let now = chrono::SubsecRound::trunc_subsecs(Utc::now(), 6);
        let mut timeline: Vec<serde_json::Value> =
            serde_json::from_str(&incident.timeline).unwrap_or_default();
        let what = if note.is_empty() {
            format!("resolved by {}", principal.email)
        } else {
            format!("resolved by {}: {note}", principal.email)
        };
        timeline.push(serde_json::json!({ "what": what, "at": now.to_rfc3339_opts(chrono::SecondsFormat::Millis, true) }));
        let mut resolved = incident.clone();
        resolved.status = "resolved".into();
        resolved.resolved_at = Some(now);
        resolved.timeline = serde_json::to_string(&timeline).unwrap_or_else(|_| "[]".into());
        let active = resolved.clone().into_active_model().reset_all();
        incidents::Entity::update(active).exec(&txn).await?;
        let payload = ev::IncidentChanged {
            actor: Some(principal.actor()),
            incident_id: id.to_string(),
            deployment_id: resolved.deployment_id.clone(),
            app: resolved.app.clone(),
            environment: resolved.environment.clone(),
            version: resolved.version.clone(),
            severity: resolved.severity.clone(),
            summary: resolved.summary.clone(),
            status: "resolved".into(),
            mttr_seconds: resolved.mttr_seconds,
            production: false,
        };
        self.emit(&txn, "rp.incident.resolved", format!("incidents/{id}"), &payload).await?;
        self.commit(txn).await?;
        Ok(resolved)
    }

    pub async fn list_rollbacks(&self, filter: &ListFilter) -> Result<(Vec<rollbacks::Model>, String)> {
        check_filter(filter, &[])?;
        let mut query = rollbacks::Entity::find();
        if !filter.app.is_empty() {
            query = query.filter(rollbacks::Column::App.eq(&filter.app));
        }
        if !filter.environment.is_empty() {
            query = query.filter(rollbacks::Column::Environment.eq(&filter.environment));
        }
        page(query, rollbacks::Column::Id, filter, &self.db.conn).await
    }

    /// Stores an Alertmanager notification; returns (alerts, alerts about a watched deployment).
    pub async fn receive_alerts(&self, payload_json: &str) -> Result<(usize, usize)> {
        if payload_json.len() > 1 << 20 {
            return Err(E::Invalid("an Alertmanager notification is at most 1 MiB".into()));
        }
        let parsed = alertmanager::parse(payload_json).map_err(E::Invalid)?;
        let now = Utc::now();
        let running = analyses::Entity::find()
            .filter(analyses::Column::Status.eq(status::RUNNING))
            .all(&self.db.conn)
            .await?;
        let matched = parsed
            .iter()
            .filter(|alert| {
                alert.firing && running.iter().any(|a| alert.matches(&a.app, &a.environment, &a.version, ""))
            })
            .count();
        let txn = self.db.begin_write().await?;
        for alert in parsed.iter().filter(|alert| !alert.app.is_empty()) {
            let row = alerts::Model {
                fingerprint: alert.fingerprint.clone(),
                app: alert.app.clone(),
                environment: alert.environment.clone(),
                version: alert.version.clone(),
                alertname: alert.alertname.clone(),
                severity: alert.severity.clone(),
                status: if alert.firing { "firing".into() } else { "resolved".into() },
                updated_at: now,
            };
            use alerts::Column as C;
            alerts::Entity::insert(row.into_active_model())
                .on_conflict(
                    OnConflict::column(C::Fingerprint)
                        .update_columns([
                            C::App,
                            C::Environment,
                            C::Version,
                            C::Alertname,
                            C::Severity,
                            C::Status,
                            C::UpdatedAt,
                        ])
                        .to_owned(),
                )
                .exec_without_returning(&txn)
                .await?;
        }
        txn.commit().await?;
        self.announce_change("alerts").await;
        Ok((parsed.len(), matched))
    }

    pub async fn measurement_count(&self) -> Result<u64> {
        Ok(measurements::Entity::find().count(&self.db.conn).await?)
    }
}

/// Deletes decision records and resolved alerts older than the retention.
pub async fn run_retention(core: Arc<RollbackCore>, shutdown: CancellationToken) {
    let mut ticker = tokio::time::interval(Duration::from_secs(3600));
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = ticker.tick() => {}
        }
        let days = core.config.rollback.measurement_retention_days.max(1) as i64;
        let cutoff = Utc::now() - chrono::Duration::days(days);
        let deleted = measurements::Entity::delete_many()
            .filter(measurements::Column::At.lt(cutoff))
            .exec(&core.db.conn)
            .await;
        let resolved = alerts::Entity::delete_many()
            .filter(alerts::Column::Status.eq("resolved"))
            .filter(alerts::Column::UpdatedAt.lt(cutoff))
            .exec(&core.db.conn)
            .await;
        match (deleted, resolved) {
            (Ok(deleted), Ok(_)) if deleted.rows_affected > 0 => {
                tracing::info!(deleted = deleted.rows_affected, days, "old decision records deleted")
            }
            (Err(err), _) | (_, Err(err)) => tracing::warn!(error = %err, "retention failed"),
            _ => {}
        }
    }
}
