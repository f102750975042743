use sea_orm_migration::{prelude::*, schema::*};

#[derive(DeriveMigrationName)]
pub struct Migration;

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .create_table(
                Table::create()
                    .table("environments")
                    .if_not_exists()
                    .col(uuid("id").primary_key())
                    .col(string_uniq("name"))
                    .col(integer("position"))
                    .col(boolean("production"))
                    .col(string("deployer_roles"))
                    .col(integer("required_approvals"))
                    .col(string("approver_roles"))
                    .col(text("quality_thresholds"))
                    .col(timestamp_with_time_zone("created_at"))
                    .col(timestamp_with_time_zone("updated_at"))
                    .to_owned(),
            )
            .await?;
        manager
            .create_table(
                Table::create()
                    .table("targets")
                    .if_not_exists()
                    .col(uuid("id").primary_key())
                    .col(uuid("app_id"))
                    .col(uuid("environment_id"))
                    .col(string("driver"))
                    .col(text("driver_config"))
                    .col(text_null("webhook_secret"))
                    .col(string("default_strategy"))
                    .col(text("canary_steps"))
                    .col(timestamp_with_time_zone("updated_at"))
                    .to_owned(),
            )
            .await?;
        manager
            .create_table(
                Table::create()
                    .table("releases")
                    .if_not_exists()
                    .col(uuid("id").primary_key())
                    .col(uuid("app_id"))
                    .col(string("version"))
                    .col(string("artifact_image"))
                    .col(string("artifact_digest"))
                    .col(text("commits"))
                    .col(text("changelog"))
                    .col(string("bump"))
                    .col(timestamp_with_time_zone_null("first_commit_at"))
                    .col(string("created_by"))
                    .col(timestamp_with_time_zone("created_at"))
                    .to_owned(),
            )
            .await?;
        manager
            .create_table(
                Table::create()
                    .table("quality_checks")
                    .if_not_exists()
                    .col(uuid("id").primary_key())
                    .col(uuid("release_id"))
                    .col(string("name"))
                    .col(string("status"))
                    .col(double_null("value"))
                    .col(string("url"))
                    .col(string("reported_by"))
                    .col(timestamp_with_time_zone("reported_at"))
                    .to_owned(),
            )
            .await?;
        manager
            .create_table(
                Table::create()
                    .table("deployments")
                    .if_not_exists()
                    .col(uuid("id").primary_key())
                    .col(uuid("app_id"))
                    .col(uuid("environment_id"))
                    .col(uuid("release_id"))
                    .col(uuid_null("previous_release_id"))
                    .col(string("strategy"))
                    .col(string("state"))
                    .col(string("phase"))
                    .col(integer("current_step"))
                    .col(text("steps"))
                    .col(integer("weight"))
                    .col(integer("required_approvals"))
                    .col(string("created_by"))
                    .col(string("created_by_email"))
                    .col(timestamp_with_time_zone("created_at"))
                    .col(timestamp_with_time_zone_null("started_at"))
                    .col(timestamp_with_time_zone_null("finished_at"))
                    .col(timestamp_with_time_zone_null("next_action_at"))
                    .col(text("failure_reason"))
                    .col(timestamp_with_time_zone_null("failure_detected_at"))
                    .col(timestamp_with_time_zone_null("restored_at"))
                    .col(uuid_null("rollback_of"))
                    .col(string("trigger"))
                    .col(text("driver_state"))
                    .col(big_integer("revision"))
                    .to_owned(),
            )
            .await?;
        manager
            .create_table(
                Table::create()
                    .table("approvals")
                    .if_not_exists()
                    .col(uuid("id").primary_key())
                    .col(uuid("deployment_id"))
                    .col(string("approver_id"))
                    .col(string("approver_email"))
                    .col(string("decision"))
                    .col(text("comment"))
                    .col(timestamp_with_time_zone("at"))
                    .to_owned(),
            )
            .await?;
        manager
            .create_table(
                Table::create()
                    .table("freeze_windows")
                    .if_not_exists()
                    .col(uuid("id").primary_key())
                    .col(uuid_null("environment_id"))
                    .col(timestamp_with_time_zone("starts_at"))
                    .col(timestamp_with_time_zone("ends_at"))
                    .col(text("reason"))
                    .col(string("created_by"))
                    .col(timestamp_with_time_zone("created_at"))
                    .to_owned(),
            )
            .await?;
        manager
            .create_table(
                Table::create()
                    .table("audit_log")
                    .if_not_exists()
                    .col(big_integer("seq").primary_key())
                    .col(uuid("id"))
                    .col(timestamp_with_time_zone("at"))
                    .col(string("actor_subject"))
                    .col(string("actor_email"))
                    .col(string("actor_kind"))
                    .col(string("request_id"))
                    .col(string("action"))
                    .col(string("resource_type"))
                    .col(string("resource_id"))
                    .col(text("before_json"))
                    .col(text("after_json"))
                    .col(string("prev_hash"))
                    .col(string("hash"))
                    .to_owned(),
            )
            .await?;
        // Indexes, in SQL both engines understand (partial indexes included).
        let connection = manager.get_connection();
        for statement in [
            "CREATE UNIQUE INDEX IF NOT EXISTS targets_app_environment ON targets (app_id, environment_id)",
            "CREATE UNIQUE INDEX IF NOT EXISTS releases_app_version ON releases (app_id, version)",
            "CREATE INDEX IF NOT EXISTS releases_app_id ON releases (app_id, id)",
            "CREATE INDEX IF NOT EXISTS quality_checks_release ON quality_checks (release_id, name)",
            // One active deployment per app and environment, enforced by the database.
            "CREATE UNIQUE INDEX IF NOT EXISTS deployments_one_active ON deployments (app_id, environment_id) \
             WHERE state IN ('pending', 'awaiting_approval', 'in_progress')",
            "CREATE INDEX IF NOT EXISTS deployments_app_environment ON deployments (app_id, environment_id, id)",
            "CREATE INDEX IF NOT EXISTS deployments_due ON deployments (next_action_at) WHERE next_action_at IS NOT NULL",
            "CREATE UNIQUE INDEX IF NOT EXISTS approvals_one_per_approver ON approvals (deployment_id, approver_id)",
            "CREATE INDEX IF NOT EXISTS audit_log_actor ON audit_log (actor_subject, seq)",
            "CREATE INDEX IF NOT EXISTS audit_log_resource ON audit_log (resource_type, resource_id, seq)",
            "CREATE INDEX IF NOT EXISTS audit_log_at ON audit_log (at)",
        ] {
            connection.execute_unprepared(statement).await?;
        }
        Ok(())
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        for table in [
            "audit_log",
            "freeze_windows",
            "approvals",
            "deployments",
            "quality_checks",
            "releases",
            "targets",
            "environments",
        ] {
            manager.drop_table(Table::drop().table(table).if_exists().to_owned()).await?;
        }
        Ok(())
    }
}
