//! Releases: explicit or computed versions, changelogs, quality checks.

use rp_identity::Principal;
use rp_proto::events::v1 as ev;
use rp_runtime::{ServiceError as E, ServiceResult as Result};
use sea_orm::{
    ActiveModelTrait,
    ActiveValue::Set,
    ColumnTrait, EntityTrait, QueryFilter, QueryOrder, QuerySelect,
    sea_query::{Expr, ExprTrait as _, Query},
};
use semver::Version;
use serde_json::json;
use uuid::Uuid;

use super::{ReleaseCore, actor, audit_log, now};
use crate::{
    domain::versioning::{self, CommitInput, PreMajorPolicy},
    store::{apps, quality_checks, releases},
};

/// A release to create (or preview).
#[derive(Debug, Clone, Default)]
pub struct NewRelease {
    pub app: String,
    pub version: String,
    pub commits: Vec<CommitInput>,
    pub artifact_image: String,
    pub artifact_digest: String,
    pub pre_release: String,
    pub idempotency_key: String,
}

/// A quality-check result CI reports.
#[derive(Debug, Clone, Default)]
pub struct QualityReport {
    pub app: String,
    pub version: String,
    pub name: String,
    pub status: String,
    pub value: Option<f64>,
    pub url: String,
}

/// What a release will be.
#[derive(Debug, Clone, PartialEq)]
pub struct Preview {
    pub version: Version,
    pub previous: Option<Version>,
    pub bump: String,
    pub changelog: String,
    pub ignored_commits: usize,
}

fn check_input(new: &NewRelease) -> Result<()> {
    if new.commits.len() > 5000 {
        return Err(E::Invalid("at most 5000 commits per release".into()));
    }
    for commit in &new.commits {
        rp_runtime::validate::text("commit sha", &commit.sha, 64, false)?;
        rp_runtime::validate::text("commit message", &commit.message, 20_000, true)?;
        rp_runtime::validate::text("commit author", &commit.author, 200, false)?;
    }
    rp_runtime::validate::text("artifact_image", &new.artifact_image, 500, false)?;
    if !new.artifact_digest.is_empty() {
        let valid = new
            .artifact_digest
            .strip_prefix("sha256:")
            .is_some_and(|hex| hex.len() == 64 && hex.bytes().all(|b| b.is_ascii_hexdigit()));
        if !valid {
            return Err(E::Invalid("artifact_digest must be sha256:<64 hex characters>".into()));
        }
    }
    Ok(())
}

impl ReleaseCore {
    fn policy(&self) -> PreMajorPolicy {
        PreMajorPolicy {
            breaking_bumps_minor: self.config.release.pre_major_breaking_bumps_minor,
            feature_bumps_patch: self.config.release.pre_major_feature_bumps_patch,
        }
    }

    /// The app's highest version so far.
    async fn latest_version(&self, app: &apps::Model) -> Result<Option<Version>> {
        let versions: Vec<String> = releases::Entity::find()
            .select_only()
            .column(releases::Column::Version)
            .filter(releases::Column::AppId.eq(app.id))
            .into_tuple()
            .all(&self.db.conn)
            .await?;
        Ok(versions.iter().filter_map(|v| Version::parse(v).ok()).max())
    }

    pub async fn preview_release(&self, new: &NewRelease) -> Result<Preview> {
        check_input(new)?;
        let app = self.find_app(&self.db.conn, &new.app).await?;
        let previous = self.latest_version(&app).await?;
        if !new.version.is_empty() {
            let version = versioning::parse_version(&new.version).map_err(E::Invalid)?;
            let changelog = versioning::changelog(&version, &new.commits, now());
            return Ok(Preview { version, previous, bump: "explicit".into(), changelog, ignored_commits: 0 });
        }
        if new.commits.is_empty() {
            return Err(E::Invalid("give a version, or the commits to compute it from".into()));
        }
        let initial =
            Version::parse(&self.config.release.initial_version).map_err(|e| E::Internal(e.to_string()))?;
        let pre = Some(new.pre_release.as_str()).filter(|p| !p.is_empty());
        let computed =
            versioning::next_version(previous.as_ref(), &new.commits, self.policy(), &initial, pre)
                .map_err(|e| E::Precondition(e.to_string()))?;
        Ok(Preview {
            version: computed.version,
            previous,
            bump: computed.bump.as_str().to_owned(),
            changelog: computed.changelog,
            ignored_commits: computed.ignored_commits,
        })
    }

    pub async fn create_release(&self, principal: &Principal, new: NewRelease) -> Result<releases::Model> {
        let scope = format!("create_release:{}", principal.actor_id());
        if let Some(id) = self.replayed(&scope, &new.idempotency_key).await? {
            return self.release_by_id(&id).await;
        }
        let preview = self.preview_release(&new).await?;
        let app = self.find_app(&self.db.conn, &new.app).await?;
        let version = preview.version.to_string();
        let first_commit_at = new.commits.iter().filter_map(|c| c.timestamp).min();
        let txn = self.db.begin_write().await?;
        let inserted = releases::ActiveModel {
            id: Set(Uuid::now_v7()),
            app_id: Set(app.id),
            version: Set(version.clone()),
            artifact_image: Set(new.artifact_image.clone()),
            artifact_digest: Set(new.artifact_digest.clone()),
            commits: Set(serde_json::to_string(&new.commits).unwrap_or_else(|_| "[]".into())),
            commit_count: Set(new.commits.len() as i32),
            changelog: Set(preview.changelog.clone()),
            bump: Set(preview.bump.clone()),
            first_commit_at: Set(first_commit_at),
            created_by: Set(principal.email.clone()),
            created_at: Set(now()),
        }
        .insert(&txn)
        .await;
        let release = match inserted {
            Ok(release) => release,
            Err(err) if rp_db::is_unique_violation(&err) => {
                return Err(E::Conflict(format!(
                    "{} already has a release {version}; versions are immutable",
                    app.name
                )));
            }
            Err(err) => return Err(err.into()),
        };
        if !self.remember(&txn, &scope, &new.idempotency_key, &release.id.to_string()).await? {
            txn.rollback().await?;
            let id = self.replayed(&scope, &new.idempotency_key).await?.unwrap_or_default();
            return self.release_by_id(&id).await;
        }
        let payload = ev::ReleaseCreated {
            actor: actor(principal),
            release_id: release.id.to_string(),
            app: app.name.clone(),
            version: version.clone(),
            previous_version: preview.previous.map(|v| v.to_string()).unwrap_or_default(),
            bump: preview.bump.clone(),
            artifact_image: release.artifact_image.clone(),
            artifact_digest: release.artifact_digest.clone(),
            commits: new.commits.len() as i32,
        };
        self.emit(&txn, "rp.release.created", format!("releases/{}", release.id), &payload).await?;
        let after = json!({"app": app.name, "version": version, "bump": preview.bump, "artifact_digest": release.artifact_digest});
        audit_log::append(
            &txn,
            &principal.into(),
            "release.create",
            "release",
            &release.id.to_string(),
            None,
            Some(&after),
        )
        .await?;
        self.commit(txn).await?;
        Ok(release)
    }

    pub async fn release_by_id(&self, id: &str) -> Result<releases::Model> {
        let id = super::parse_id("release id", id)?;
        releases::Entity::find_by_id(id)
            .one(&self.db.conn)
            .await?
            .ok_or_else(|| E::NotFound(format!("release {id} not found")))
    }

    pub async fn get_release(&self, id: &str, app: &str, version: &str) -> Result<(releases::Model, String)> {
        let release = if !id.is_empty() {
            self.release_by_id(id).await?
        } else {
            let app = self.find_app(&self.db.conn, app).await?;
            self.find_release(&self.db.conn, &app, version).await?
        };
        let app = apps::Entity::find_by_id(release.app_id)
            .one(&self.db.conn)
            .await?
            .map(|a| a.name)
            .unwrap_or_default();
        Ok((release, app))
    }

    /// Newest first, with the app's name. One query in the usual case (the app named in a
    /// subquery); the app row is read only to tell "no such app" from an empty page, or for
    /// its name when it was asked for by id. Without `full`, the rows' commits and changelog
    /// (the large columns) are not read and left empty; `commit_count` says how many there are.
    pub async fn list_releases(
        &self,
        app: &str,
        page_size: u64,
        before: Option<Uuid>,
        full: bool,
    ) -> Result<(Vec<releases::Model>, Option<Uuid>, String)> {
        let by_id = Uuid::parse_str(app).ok();
        if by_id.is_none() && rp_runtime::validate::slug("app", app).is_err() {
            return Err(E::NotFound(format!("app {app:?} not found")));
        }
        // One more than a page: whether there is a next page.
        let limit = page_size + 1;
        let mut rows = match (&self.db.reads, full) {
            (Some(reads), false) => pg_summaries(reads, app, by_id, limit, before).await?,
            (_, true) => page_query(app, by_id, limit, before).all(&self.db.conn).await?,
            (None, false) => summaries(page_query(app, by_id, limit, before), &self.db.conn).await?,
        };
        let name = if rows.is_empty() || by_id.is_some() {
            self.find_app(&self.db.conn, app).await?.name
        } else {
            app.to_owned()
        };
        let next = if rows.len() as u64 > page_size {
            rows.truncate(page_size as usize);
            rows.last().map(|r| r.id)
        } else {
            None
        };
        Ok((rows, next, name))
    }

    /// The latest result of each check of a release.
    pub async fn latest_checks(&self, release_id: Uuid) -> Result<Vec<quality_checks::Model>> {
        let rows = quality_checks::Entity::find()
            .filter(quality_checks::Column::ReleaseId.eq(release_id))
            .order_by_desc(quality_checks::Column::Id)
            .all(&self.db.conn)
            .await?;
        let mut latest: Vec<quality_checks::Model> = Vec::new();
        for row in rows {
            if !latest.iter().any(|c| c.name == row.name) {
                latest.push(row);
            }
        }
        latest.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(latest)
    }

    pub async fn report_quality_check(
        &self,
        principal: &Principal,
        report: QualityReport,
    ) -> Result<quality_checks::Model> {
        let QualityReport { app, version, name, status, value, url } = report;
        let (app, version, name, status, url) =
            (app.as_str(), version.as_str(), name.as_str(), status.as_str(), url.as_str());
        if name.trim().is_empty() {
            return Err(E::Invalid("a quality check needs a name".into()));
        }
        rp_runtime::validate::text("name", name, 100, false)?;
        rp_runtime::validate::text("url", url, 2000, false)?;
        if !matches!(status, "passed" | "failed" | "pending") {
            return Err(E::Invalid(format!("status must be passed, failed or pending, not {status:?}")));
        }
        if value.is_some_and(|v| !v.is_finite()) {
            return Err(E::Invalid("value must be a finite number".into()));
        }
        let app = self.find_app(&self.db.conn, app).await?;
        let release = self.find_release(&self.db.conn, &app, version).await?;
        let txn = self.db.begin_write().await?;
        let check = quality_checks::ActiveModel {
            id: Set(Uuid::now_v7()),
            release_id: Set(release.id),
            name: Set(name.trim().to_owned()),
            status: Set(status.to_owned()),
            value: Set(value),
            url: Set(url.to_owned()),
            reported_by: Set(principal.email.clone()),
            reported_at: Set(now()),
        }
        .insert(&txn)
        .await?;
        let payload = ev::QualityCheckReported {
            actor: actor(principal),
            release_id: release.id.to_string(),
            app: app.name.clone(),
            version: release.version.clone(),
            name: check.name.clone(),
            status: check.status.clone(),
            value,
        };
        self.emit(&txn, "rp.release.quality_check_reported", format!("releases/{}", release.id), &payload)
            .await?;
        let after = json!({"app": app.name, "version": release.version, "check": check.name, "status": check.status, "value": value});
        audit_log::append(
            &txn,
            &principal.into(),
            "quality_check.report",
            "release",
            &release.id.to_string(),
            None,
            Some(&after),
        )
        .await?;
        self.commit(txn).await?;
        Ok(check)
    }
}

/// A page of an app's releases (named, or by id), newest first, before a release or from the top.
fn page_query(
    app: &str,
    by_id: Option<Uuid>,
    limit: u64,
    before: Option<Uuid>,
) -> sea_orm::Select<releases::Entity> {
    let app_filter = match by_id {
        Some(id) => releases::Column::AppId.eq(id),
        None => {
            let named = Query::select()
                .column(apps::Column::Id)
                .from(apps::Entity)
                .and_where(apps::Column::Name.eq(app))
                .to_owned();
            // `= (scalar subquery)`: PostgreSQL runs it once (an InitPlan) and walks the
            // primary key backwards, where `IN (…)` was planned as a join.
            Expr::col((releases::Entity, releases::Column::AppId))
                .eq(Expr::SubQuery(None, Box::new(named.into())))
        }
    };
    let query = releases::Entity::find().filter(app_filter).order_by_desc(releases::Column::Id).limit(limit);
    match before {
        Some(before) => query.filter(releases::Column::Id.lt(before)),
        None => query,
    }
}

/// Releases without their commits and changelog, decoded by column position (the by-name
/// decoding of whole models was 13.5 % of the process when lists were profiled).
async fn summaries(
    query: sea_orm::Select<releases::Entity>,
    conn: &sea_orm::DatabaseConnection,
) -> std::result::Result<Vec<releases::Model>, sea_orm::DbErr> {
    use releases::Column as C;
    let rows: Vec<Summary> = query
        .select_only()
        .columns([
            C::Id,
            C::AppId,
            C::Version,
            C::ArtifactImage,
            C::ArtifactDigest,
            C::CommitCount,
            C::Bump,
            C::CreatedBy,
            C::CreatedAt,
        ])
        .into_model()
        .all(conn)
        .await?;
    Ok(rows.into_iter().map(|Summary(model)| model).collect())
}

/// The statement of [`summaries`] on PostgreSQL, written out: by app name or id, from the
/// first page or before a release.
macro_rules! summaries_sql {
    ($app:literal, $before:literal) => {
        concat!(
            "SELECT id, app_id, version, artifact_image, artifact_digest, commit_count, bump, created_by, created_at ",
            "FROM releases WHERE app_id = ", $app, $before, " ORDER BY id DESC LIMIT $2"
        )
    };
}

/// [`summaries`] through the read pool (one round trip where the pool took two).
async fn pg_summaries(
    reads: &rp_db::ReadPool,
    app: &str,
    by_id: Option<Uuid>,
    limit: u64,
    before: Option<Uuid>,
) -> std::result::Result<Vec<releases::Model>, sea_orm::DbErr> {
    use sea_orm::sqlx;
    // `= (scalar subquery)`: an InitPlan, then the primary key walked backwards (see `page_query`).
    let sql = match (by_id.is_some(), before.is_some()) {
        (false, false) => summaries_sql!("(SELECT id FROM apps WHERE name = $1)", ""),
        (false, true) => summaries_sql!("(SELECT id FROM apps WHERE name = $1)", " AND id < $3"),
        (true, false) => summaries_sql!("$1", ""),
        (true, true) => summaries_sql!("$1", " AND id < $3"),
    };
    let limit = i64::try_from(limit).unwrap_or(i64::MAX);
    let query = match by_id {
        Some(id) => sqlx::query(sql).bind(id),
        None => sqlx::query(sql).bind(app),
    }
    .bind(limit);
    let query = match before {
        Some(before) => query.bind(before),
        None => query,
    };
    reads
        .fetch_all(query)
        .await?
        .iter()
        .map(|row| pg_summary(row).map(summary_model).map_err(|err| sea_orm::DbErr::Type(err.to_string())))
        .collect()
}

/// One row of [`summaries`], in the order of its columns.
struct Summary(releases::Model);

type SummaryColumns =
    (Uuid, Uuid, String, String, String, i32, String, String, chrono::DateTime<chrono::Utc>);

impl sea_orm::FromQueryResult for Summary {
    fn from_query_result(
        row: &sea_orm::QueryResult,
        _prefix: &str,
    ) -> std::result::Result<Self, sea_orm::DbErr> {
        let columns: SummaryColumns = match row.try_as_pg_row() {
            // On PostgreSQL, skip sqlx's type-compatibility check: it compares each value's type
            // against a list of candidates (four comparisons for a `varchar`) and took 40 % of
            // decoding a page. The columns are ours, selected just above; every value is still
            // validated as it decodes (a wrong length or bad UTF-8 is an error, not garbage).
            Some(pg) => pg_summary(pg).map_err(|err| sea_orm::DbErr::Type(err.to_string()))?,
            None => row.try_get_many_by_index()?,
        };
        Ok(Self(summary_model(columns)))
    }
}

fn summary_model(columns: SummaryColumns) -> releases::Model {
    let (id, app_id, version, artifact_image, artifact_digest, commit_count, bump, created_by, created_at) =
        columns;
    releases::Model {
        id,
        app_id,
        version,
        artifact_image,
        artifact_digest,
        commits: String::new(),
        commit_count,
        changelog: String::new(),
        bump,
        first_commit_at: None,
        created_by,
        created_at,
    }
}

fn pg_summary(
    row: &sea_orm::sqlx::postgres::PgRow,
) -> std::result::Result<SummaryColumns, sea_orm::sqlx::Error> {
    use sea_orm::sqlx::Row as _;
    Ok((
        row.try_get_unchecked(0)?,
        row.try_get_unchecked(1)?,
        row.try_get_unchecked(2)?,
        row.try_get_unchecked(3)?,
        row.try_get_unchecked(4)?,
        row.try_get_unchecked(5)?,
        row.try_get_unchecked(6)?,
        row.try_get_unchecked(7)?,
        row.try_get_unchecked(8)?,
    ))
}
