use sea_orm::entity::prelude::*;

/// A rollback the service decided (automatic) or relayed (manual).
#[derive(Clone, Debug, PartialEq, DeriveEntityModel)]
#[sea_orm(table_name = "rollbacks")]
pub struct Model {
    #[sea_orm(primary_key, auto_increment = false)]
    pub id: Uuid,
    pub deployment_id: Uuid,
    pub analysis_id: Option<Uuid>,
    pub app: String,
    pub environment: String,
    pub version: String,
    pub restored_version: String,
    pub trigger: String,
    #[sea_orm(column_type = "Text")]
    pub reason: String,
    pub decided_at: DateTimeUtc,
    pub traffic_restored_at: Option<DateTimeUtc>,
    #[sea_orm(column_type = "Text")]
    pub measurement_ids: String,
    pub incident_id: String,
    pub requested_by: String,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
