use sea_orm_migration::{prelude::*, schema::*};

#[derive(DeriveMigrationName)]
pub struct Migration;

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .create_table(
                Table::create()
                    .table("routes")
                    .if_not_exists()
                    .col(uuid("app_id"))
                    .col(uuid("environment_id"))
                    .col(text("route"))
                    .col(big_integer("revision"))
                    .col(timestamp_with_time_zone("updated_at"))
                    .primary_key(Index::create().col("app_id").col("environment_id"))
                    .to_owned(),
            )
            .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager.drop_table(Table::drop().table("routes").if_exists().to_owned()).await
    }
}
