use sea_orm::entity::prelude::*;

/// Incidents, opened by automatic rollbacks, with their timeline and MTTR.
#[derive(Clone, Debug, PartialEq, DeriveEntityModel)]
#[sea_orm(table_name = "incidents")]
pub struct Model {
    #[sea_orm(primary_key, auto_increment = false)]
    pub id: Uuid,
    pub app: String,
    pub environment: String,
    pub deployment_id: String,
    /// `open` or `resolved`.
    pub status: String,
    #[sea_orm(column_type = "Text")]
    pub summary: String,
    pub opened_at: DateTimeUtc,
    pub resolved_at: Option<DateTimeUtc>,
    pub severity: String,
    /// JSON array of {what, at}.
    #[sea_orm(column_type = "Text")]
    pub timeline: String,
    pub mttr_seconds: f64,
    pub rollback_id: String,
    /// JSON array of measurement ids.
    #[sea_orm(column_type = "Text")]
    pub measurement_ids: String,
    pub version: String,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
