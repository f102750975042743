use sea_orm::entity::prelude::*;

/// The last route published for a router-driven target (routers load these when they start).
#[derive(Clone, Debug, PartialEq, DeriveEntityModel)]
#[sea_orm(table_name = "routes")]
pub struct Model {
    #[sea_orm(primary_key, auto_increment = false)]
    pub app_id: Uuid,
    #[sea_orm(primary_key, auto_increment = false)]
    pub environment_id: Uuid,
    /// `releasepilot.events.v1.RouteUpdated` as JSON.
    #[sea_orm(column_type = "Text")]
    pub route: String,
    pub revision: i64,
    pub updated_at: DateTimeUtc,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
