use sea_orm::entity::prelude::*;

/// Alerts received from Alertmanager, per app, environment and alert name.
#[derive(Clone, Debug, PartialEq, DeriveEntityModel)]
#[sea_orm(table_name = "alerts")]
pub struct Model {
    #[sea_orm(primary_key, auto_increment = false)]
    pub fingerprint: String,
    pub app: String,
    pub environment: String,
    pub version: String,
    pub alertname: String,
    pub severity: String,
    /// `firing` or `resolved`.
    pub status: String,
    pub updated_at: DateTimeUtc,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
