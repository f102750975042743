use sea_orm_migration::{prelude::*, schema::*};

#[derive(DeriveMigrationName)]
pub struct Migration;

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .create_table(
                Table::create()
                    .table("incidents")
                    .if_not_exists()
                    .col(uuid("id").primary_key())
                    .col(string("app"))
                    .col(string("environment"))
                    .col(string("deployment_id"))
                    .col(string("status"))
                    .col(text("summary"))
                    .col(timestamp_with_time_zone("opened_at"))
                    .col(timestamp_with_time_zone_null("resolved_at"))
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(
                Index::create()
                    .name("incidents_app_status")
                    .table("incidents")
                    .col("app")
                    .col("status")
                    .if_not_exists()
                    .to_owned(),
            )
            .await?;
        Ok(())
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager.drop_table(Table::drop().table("incidents").if_exists().to_owned()).await
    }
}
