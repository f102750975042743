//! The configuration version: replicas cache routing rules and channels and re-read them only
//! when it moved (see `service::routing_config`).

use sea_orm::{ActiveValue::Set, EntityTrait as _};
use sea_orm_migration::{prelude::*, schema::*};

use super::config_version;

#[derive(DeriveMigrationName)]
pub struct Migration;

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .create_table(
                Table::create()
                    .table("notifier_config_version")
                    .if_not_exists()
                    .col(integer("id").primary_key())
                    .col(big_integer("version"))
                    .to_owned(),
            )
            .await?;
        config_version::Entity::insert(config_version::ActiveModel {
            id: Set(config_version::ROW),
            version: Set(0),
        })
        .exec_without_returning(manager.get_connection())
        .await?;
        Ok(())
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager.drop_table(Table::drop().table("notifier_config_version").if_exists().to_owned()).await
    }
}
