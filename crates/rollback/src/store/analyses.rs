use sea_orm::entity::prelude::*;

/// The analysis of one deployment, from its start to its end. One replica holds its lease and
/// evaluates it; when that replica dies the lease expires and another takes over.
#[derive(Clone, Debug, PartialEq, DeriveEntityModel)]
#[sea_orm(table_name = "analyses")]
pub struct Model {
    #[sea_orm(primary_key, auto_increment = false)]
    pub id: Uuid,
    #[sea_orm(unique)]
    pub deployment_id: Uuid,
    pub app: String,
    pub environment: String,
    pub production: bool,
    pub version: String,
    pub stable_version: String,
    pub strategy: String,
    /// running, passed, failed (a rule acted), stopped.
    pub status: String,
    pub weight: i32,
    pub phase: String,
    #[sea_orm(column_type = "Text")]
    pub reason: String,
    pub started_at: DateTimeUtc,
    pub ended_at: Option<DateTimeUtc>,
    pub lease_holder: Option<String>,
    pub lease_expires_at: Option<DateTimeUtc>,
    /// Per-rule breach state (JSON), so a replica taking over continues the `for` clocks.
    #[sea_orm(column_type = "Text")]
    pub rule_state: String,
    /// Revision of the newest deployment event applied (events may arrive out of order).
    pub deployment_revision: i64,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
