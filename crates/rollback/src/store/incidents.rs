use sea_orm::entity::prelude::*;

/// Incidents opened by automatic rollbacks.
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
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
