use sea_orm::entity::prelude::*;

/// One row (`id` = 1) counting every change to routing rules and channels, committed in the
/// same transaction as the change, so a replica can tell whether what it cached is current.
#[derive(Clone, Debug, PartialEq, DeriveEntityModel)]
#[sea_orm(table_name = "notifier_config_version")]
pub struct Model {
    #[sea_orm(primary_key, auto_increment = false)]
    pub id: i32,
    pub version: i64,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}

/// The row's id.
pub const ROW: i32 = 1;
