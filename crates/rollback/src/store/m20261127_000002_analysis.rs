use sea_orm_migration::{prelude::*, schema::*};

#[derive(DeriveMigrationName)]
pub struct Migration;

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        // SQLite adds one column per ALTER TABLE.
        for definition in [
            string("severity").default("critical").to_owned(),
            text("timeline").default("[]").to_owned(),
            double("mttr_seconds").default(0.0).to_owned(),
            string("rollback_id").default("").to_owned(),
            text("measurement_ids").default("[]").to_owned(),
            string("version").default("").to_owned(),
        ] {
            manager.alter_table(Table::alter().table("incidents").add_column(definition).to_owned()).await?;
        }
        manager
            .create_table(
                Table::create()
                    .table("policies")
                    .if_not_exists()
                    .col(string("app"))
                    .col(string("environment"))
                    .col(text("rules"))
                    .col(string("updated_by"))
                    .col(timestamp_with_time_zone("updated_at"))
                    .primary_key(Index::create().col("app").col("environment"))
                    .to_owned(),
            )
            .await?;
        manager
            .create_table(
                Table::create()
                    .table("analyses")
                    .if_not_exists()
                    .col(uuid("id").primary_key())
                    .col(uuid_uniq("deployment_id"))
                    .col(string("app"))
                    .col(string("environment"))
                    .col(boolean("production"))
                    .col(string("version"))
                    .col(string("stable_version"))
                    .col(string("strategy"))
                    .col(string("status"))
                    .col(integer("weight"))
                    .col(string("phase"))
                    .col(text("reason"))
                    .col(timestamp_with_time_zone("started_at"))
                    .col(timestamp_with_time_zone_null("ended_at"))
                    .col(string_null("lease_holder"))
                    .col(timestamp_with_time_zone_null("lease_expires_at"))
                    .col(text("rule_state"))
                    .col(big_integer("deployment_revision"))
                    .to_owned(),
            )
            .await?;
        manager
            .create_table(
                Table::create()
                    .table("measurements")
                    .if_not_exists()
                    .col(uuid("id").primary_key())
                    .col(uuid("analysis_id"))
                    .col(string("rule"))
                    .col(string("metric"))
                    .col(text("query"))
                    .col(double_null("value"))
                    .col(double_null("baseline"))
                    .col(double_null("compared"))
                    .col(string("operator"))
                    .col(double("threshold"))
                    .col(big_integer("samples"))
                    .col(integer("weight"))
                    .col(string("verdict"))
                    .col(string("action"))
                    .col(timestamp_with_time_zone("at"))
                    .to_owned(),
            )
            .await?;
        manager
            .create_table(
                Table::create()
                    .table("rollbacks")
                    .if_not_exists()
                    .col(uuid("id").primary_key())
                    .col(uuid("deployment_id"))
                    .col(uuid_null("analysis_id"))
                    .col(string("app"))
                    .col(string("environment"))
                    .col(string("version"))
                    .col(string("restored_version"))
                    .col(string("trigger"))
                    .col(text("reason"))
                    .col(timestamp_with_time_zone("decided_at"))
                    .col(timestamp_with_time_zone_null("traffic_restored_at"))
                    .col(text("measurement_ids"))
                    .col(string("incident_id"))
                    .col(string("requested_by"))
                    .to_owned(),
            )
            .await?;
        manager
            .create_table(
                Table::create()
                    .table("alerts")
                    .if_not_exists()
                    .col(string("fingerprint").primary_key())
                    .col(string("app"))
                    .col(string("environment"))
                    .col(string("version"))
                    .col(string("alertname"))
                    .col(string("severity"))
                    .col(string("status"))
                    .col(timestamp_with_time_zone("updated_at"))
                    .to_owned(),
            )
            .await?;
        let connection = manager.get_connection();
        for statement in [
            "CREATE INDEX IF NOT EXISTS analyses_running ON analyses (status, lease_holder)",
            "CREATE INDEX IF NOT EXISTS measurements_analysis ON measurements (analysis_id, id)",
            "CREATE INDEX IF NOT EXISTS measurements_at ON measurements (at)",
            "CREATE UNIQUE INDEX IF NOT EXISTS rollbacks_deployment ON rollbacks (deployment_id)",
            "CREATE INDEX IF NOT EXISTS alerts_target ON alerts (app, environment, status)",
        ] {
            connection.execute_unprepared(statement).await?;
        }
        Ok(())
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        for table in ["alerts", "rollbacks", "measurements", "analyses", "policies"] {
            manager.drop_table(Table::drop().table(table).if_exists().to_owned()).await?;
        }
        Ok(())
    }
}
