use sea_orm::entity::prelude::*;

/// A stage of the promotion pipeline with its protection rules.
#[derive(Clone, Debug, PartialEq, DeriveEntityModel)]
#[sea_orm(table_name = "environments")]
pub struct Model {
    #[sea_orm(primary_key, auto_increment = false)]
    pub id: Uuid,
    #[sea_orm(unique)]
    pub name: String,
    pub position: i32,
    pub production: bool,
    /// Comma-separated role names allowed to deploy.
    pub deployer_roles: String,
    pub required_approvals: i32,
    /// Comma-separated role names allowed to approve.
    pub approver_roles: String,
    /// JSON array of quality thresholds.
    #[sea_orm(column_type = "Text")]
    pub quality_thresholds: String,
    pub created_at: DateTimeUtc,
    pub updated_at: DateTimeUtc,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
