use sea_orm::entity::prelude::*;

/// Routing rules: which events go to which channels, grouped how. List columns are JSON arrays.
#[derive(Clone, Debug, PartialEq, DeriveEntityModel)]
#[sea_orm(table_name = "routing_rules")]
pub struct Model {
    #[sea_orm(primary_key, auto_increment = false)]
    pub id: Uuid,
    pub name: String,
    pub position: i32,
    pub enabled: bool,
    #[sea_orm(column_type = "Text")]
    pub event_types: String,
    #[sea_orm(column_type = "Text")]
    pub severities: String,
    #[sea_orm(column_type = "Text")]
    pub apps: String,
    #[sea_orm(column_type = "Text")]
    pub environments: String,
    #[sea_orm(column_type = "Text")]
    pub channel_ids: String,
    #[sea_orm(column_type = "Text")]
    pub channel_kinds: String,
    pub group_wait_ms: Option<i64>,
    pub repeat_interval_ms: Option<i64>,
    #[sea_orm(column_type = "Text")]
    pub group_by: String,
    pub stop: bool,
    pub created_at: DateTimeUtc,
    pub updated_at: DateTimeUtc,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
