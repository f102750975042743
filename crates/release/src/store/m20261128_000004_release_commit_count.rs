//! Releases keep their commit count beside the commits, so a list of releases reads neither the
//! commits nor the changelog (the two large columns) to show how many commits each has.

use sea_orm::DatabaseBackend;
use sea_orm_migration::{prelude::*, schema::*};

#[derive(DeriveMigrationName)]
pub struct Migration;

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .alter_table(
                Table::alter().table("releases").add_column(integer("commit_count").default(0)).to_owned(),
            )
            .await?;
        let count = match manager.get_database_backend() {
            DatabaseBackend::Postgres => "json_array_length(commits::json)",
            _ => "json_array_length(commits)",
        };
        manager
            .get_connection()
            .execute_unprepared(&format!(
                "UPDATE releases SET commit_count = {count} WHERE commits IS NOT NULL AND commits <> ''"
            ))
            .await?;
        Ok(())
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager.alter_table(Table::alter().table("releases").drop_column("commit_count").to_owned()).await
    }
}
