use sea_orm::entity::prelude::*;

#[derive(Clone, Debug, PartialEq, DeriveEntityModel)]
#[sea_orm(table_name = "releases")]
pub struct Model {
    #[sea_orm(primary_key, auto_increment = false)]
    pub id: Uuid,
    pub app_id: Uuid,
    pub version: String,
    pub artifact_image: String,
    pub artifact_digest: String,
    /// JSON array of commits.
    #[sea_orm(column_type = "Text")]
    pub commits: String,
    /// Entries in `commits`, so lists need not read them.
    pub commit_count: i32,
    #[sea_orm(column_type = "Text")]
    pub changelog: String,
    pub bump: String,
    /// Earliest commit timestamp: the start of DORA lead time.
    pub first_commit_at: Option<DateTimeUtc>,
    pub created_by: String,
    pub created_at: DateTimeUtc,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
