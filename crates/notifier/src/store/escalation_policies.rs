use sea_orm::entity::prelude::*;

/// Escalation policies; `levels` is a JSON array of `domain::escalation::Level`.
#[derive(Clone, Debug, PartialEq, DeriveEntityModel)]
#[sea_orm(table_name = "escalation_policies")]
pub struct Model {
    #[sea_orm(primary_key, auto_increment = false)]
    pub id: Uuid,
    #[sea_orm(unique)]
    pub name: String,
    pub enabled: bool,
    #[sea_orm(column_type = "Text")]
    pub severities: String,
    #[sea_orm(column_type = "Text")]
    pub apps: String,
    #[sea_orm(column_type = "Text")]
    pub environments: String,
    #[sea_orm(column_type = "Text")]
    pub levels: String,
    pub created_at: DateTimeUtc,
    pub updated_at: DateTimeUtc,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
