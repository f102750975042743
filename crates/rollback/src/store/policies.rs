use sea_orm::entity::prelude::*;

/// The health policy of an app in an environment.
#[derive(Clone, Debug, PartialEq, DeriveEntityModel)]
#[sea_orm(table_name = "policies")]
pub struct Model {
    #[sea_orm(primary_key, auto_increment = false)]
    pub app: String,
    #[sea_orm(primary_key, auto_increment = false)]
    pub environment: String,
    /// JSON array of rules.
    #[sea_orm(column_type = "Text")]
    pub rules: String,
    pub updated_by: String,
    pub updated_at: DateTimeUtc,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
