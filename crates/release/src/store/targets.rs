use sea_orm::entity::prelude::*;

/// An app in an environment, bound to a deployment driver.
#[derive(Clone, Debug, PartialEq, DeriveEntityModel)]
#[sea_orm(table_name = "targets")]
pub struct Model {
    #[sea_orm(primary_key, auto_increment = false)]
    pub id: Uuid,
    pub app_id: Uuid,
    pub environment_id: Uuid,
    pub driver: String,
    #[sea_orm(column_type = "Text")]
    pub driver_config: String,
    /// Standard Webhooks signing secret (base64) for the webhook driver.
    pub webhook_secret: Option<String>,
    pub default_strategy: String,
    /// JSON array of canary steps.
    #[sea_orm(column_type = "Text")]
    pub canary_steps: String,
    pub updated_at: DateTimeUtc,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
