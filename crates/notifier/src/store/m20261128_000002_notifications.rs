//! Channels grow settings, secrets and templates; routing rules, deliveries with their items
//! and attempts, escalation policies and escalations. Seeds the seed's severity matrix and
//! escalation workflow.

use chrono::Utc;
use sea_orm::{ActiveValue::Set, EntityTrait as _};
use sea_orm_migration::{prelude::*, schema::*};
use uuid::Uuid;

use crate::domain::{escalation, routing};

#[derive(DeriveMigrationName)]
pub struct Migration;

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        // SQLite adds one column per ALTER TABLE.
        for definition in [
            text("config").default("{}").to_owned(),
            text("secrets").default("").to_owned(),
            string("secret_kid").default("").to_owned(),
            text("templates").default("{}").to_owned(),
            integer("rate_limit_per_minute").default(0).to_owned(),
            text("disabled_reason").default("").to_owned(),
            timestamp_with_time_zone_null("throttled_until").to_owned(),
            timestamp_with_time_zone_null("updated_at").to_owned(),
        ] {
            manager.alter_table(Table::alter().table("channels").add_column(definition).to_owned()).await?;
        }
        manager
            .create_table(
                Table::create()
                    .table("routing_rules")
                    .if_not_exists()
                    .col(uuid("id").primary_key())
                    .col(string("name"))
                    .col(integer("position"))
                    .col(boolean("enabled"))
                    .col(text("event_types"))
                    .col(text("severities"))
                    .col(text("apps"))
                    .col(text("environments"))
                    .col(text("channel_ids"))
                    .col(text("channel_kinds"))
                    .col(big_integer_null("group_wait_ms"))
                    .col(big_integer_null("repeat_interval_ms"))
                    .col(text("group_by"))
                    .col(boolean("stop"))
                    .col(timestamp_with_time_zone("created_at"))
                    .col(timestamp_with_time_zone("updated_at"))
                    .to_owned(),
            )
            .await?;
        manager
            .create_table(
                Table::create()
                    .table("deliveries")
                    .if_not_exists()
                    .col(uuid("id").primary_key())
                    .col(uuid("channel_id"))
                    .col(uuid_null("rule_id"))
                    .col(string("group_key"))
                    .col(string("status"))
                    .col(timestamp_with_time_zone("due_at"))
                    .col(integer("attempts"))
                    .col(integer("retry_base"))
                    .col(timestamp_with_time_zone("created_at"))
                    .col(timestamp_with_time_zone_null("delivered_at"))
                    .col(text("last_error"))
                    .col(integer("last_status_code"))
                    .col(string_null("lease_holder"))
                    .col(timestamp_with_time_zone_null("lease_expires_at"))
                    .col(uuid("event_id"))
                    .col(string("event_type"))
                    .col(string("subject"))
                    .col(string("severity"))
                    .col(string("app"))
                    .col(string("environment"))
                    .col(string("deployment_id"))
                    .col(string("incident_id"))
                    .col(string("escalation_id"))
                    .col(integer("escalation_level"))
                    .col(integer("item_count"))
                    .col(timestamp_with_time_zone("first_event_at"))
                    .col(timestamp_with_time_zone("updated_at"))
                    .to_owned(),
            )
            .await?;
        manager
            .create_table(
                Table::create()
                    .table("notification_items")
                    .if_not_exists()
                    .col(uuid("id").primary_key())
                    .col(uuid_null("delivery_id"))
                    .col(uuid("channel_id"))
                    .col(uuid_null("rule_id"))
                    .col(uuid("event_id"))
                    .col(string("event_type"))
                    .col(string("subject"))
                    .col(string("severity"))
                    .col(string("app"))
                    .col(string("environment"))
                    .col(string("deployment_id"))
                    .col(string("incident_id"))
                    .col(string("dedup_key"))
                    .col(string("status"))
                    .col(text("reason"))
                    .col(text("event"))
                    .col(timestamp_with_time_zone("event_time"))
                    .col(timestamp_with_time_zone("created_at"))
                    .to_owned(),
            )
            .await?;
        manager
            .create_table(
                Table::create()
                    .table("delivery_attempts")
                    .if_not_exists()
                    .col(uuid("id").primary_key())
                    .col(uuid("delivery_id"))
                    .col(uuid("channel_id"))
                    .col(integer("attempt"))
                    .col(timestamp_with_time_zone("started_at"))
                    .col(big_integer("latency_ms"))
                    .col(integer("status_code"))
                    .col(string("outcome"))
                    .col(text("error"))
                    .col(text("response_excerpt"))
                    .col(string("replica"))
                    .to_owned(),
            )
            .await?;
        manager
            .create_table(
                Table::create()
                    .table("escalation_policies")
                    .if_not_exists()
                    .col(uuid("id").primary_key())
                    .col(string_uniq("name"))
                    .col(boolean("enabled"))
                    .col(text("severities"))
                    .col(text("apps"))
                    .col(text("environments"))
                    .col(text("levels"))
                    .col(timestamp_with_time_zone("created_at"))
                    .col(timestamp_with_time_zone("updated_at"))
                    .to_owned(),
            )
            .await?;
        manager
            .create_table(
                Table::create()
                    .table("escalations")
                    .if_not_exists()
                    .col(uuid("id").primary_key())
                    .col(uuid("policy_id"))
                    .col(string("policy_name"))
                    .col(string("incident_id"))
                    .col(string("deployment_id"))
                    .col(string("app"))
                    .col(string("environment"))
                    .col(string("severity"))
                    .col(text("summary"))
                    .col(string("status"))
                    .col(integer("levels_fired"))
                    .col(text("levels"))
                    .col(timestamp_with_time_zone_null("next_level_at"))
                    .col(timestamp_with_time_zone("created_at"))
                    .col(timestamp_with_time_zone_null("acknowledged_at"))
                    .col(string("acknowledged_by"))
                    .col(timestamp_with_time_zone_null("resolved_at"))
                    .col(text("steps"))
                    .col(text("event"))
                    .to_owned(),
            )
            .await?;
        let connection = manager.get_connection();
        for statement in [
            // At most one open group per channel and group key: concurrent consumers race on it.
            "CREATE UNIQUE INDEX IF NOT EXISTS deliveries_open_group ON deliveries (channel_id, group_key) WHERE status = 'grouping'",
            "CREATE INDEX IF NOT EXISTS deliveries_due ON deliveries (status, due_at)",
            "CREATE INDEX IF NOT EXISTS deliveries_channel ON deliveries (channel_id, status, id)",
            "CREATE INDEX IF NOT EXISTS deliveries_incident ON deliveries (incident_id)",
            // An event reaches a channel once, however many rules route it there.
            "CREATE UNIQUE INDEX IF NOT EXISTS items_event_channel ON notification_items (channel_id, event_id, dedup_key)",
            "CREATE INDEX IF NOT EXISTS items_delivery ON notification_items (delivery_id)",
            "CREATE INDEX IF NOT EXISTS items_dedup ON notification_items (channel_id, dedup_key, created_at)",
            "CREATE INDEX IF NOT EXISTS items_deployment ON notification_items (deployment_id, event_type, status)",
            "CREATE INDEX IF NOT EXISTS attempts_delivery ON delivery_attempts (delivery_id, attempt)",
            "CREATE INDEX IF NOT EXISTS attempts_channel ON delivery_attempts (channel_id, started_at)",
            "CREATE UNIQUE INDEX IF NOT EXISTS escalations_incident ON escalations (policy_id, incident_id)",
            "CREATE INDEX IF NOT EXISTS escalations_due ON escalations (status, next_level_at)",
        ] {
            connection.execute_unprepared(statement).await?;
        }
        seed(manager).await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        for table in [
            "escalations",
            "escalation_policies",
            "delivery_attempts",
            "notification_items",
            "deliveries",
            "routing_rules",
        ] {
            manager.drop_table(Table::drop().table(table).if_exists().to_owned()).await?;
        }
        Ok(())
    }
}

/// The seed's matrix as editable rules, and its escalation workflow as a policy.
async fn seed(manager: &SchemaManager<'_>) -> Result<(), DbErr> {
    use crate::store::{escalation_policies, routing_rules, to_list};
    let now = Utc::now();
    let rules: Vec<routing_rules::ActiveModel> = routing::default_rules()
        .into_iter()
        .enumerate()
        .map(|(index, rule)| routing_rules::ActiveModel {
            id: Set(Uuid::now_v7()),
            name: Set(rule.name),
            position: Set((index as i32 + 1) * 10),
            enabled: Set(true),
            event_types: Set(to_list(&rule.event_types)),
            severities: Set(to_list(&rule.severities.iter().map(|s| s.as_str()).collect::<Vec<_>>())),
            apps: Set("[]".into()),
            environments: Set("[]".into()),
            channel_ids: Set("[]".into()),
            channel_kinds: Set(to_list(&rule.channel_kinds)),
            group_wait_ms: Set(None),
            repeat_interval_ms: Set(None),
            group_by: Set("[]".into()),
            stop: Set(false),
            created_at: Set(now),
            updated_at: Set(now),
        })
        .collect();
    routing_rules::Entity::insert_many(rules).exec_without_returning(manager.get_connection()).await?;
    let policy = escalation::default_policy();
    let row = escalation_policies::ActiveModel {
        id: Set(Uuid::now_v7()),
        name: Set(policy.name),
        enabled: Set(true),
        severities: Set(to_list(&policy.severities.iter().map(|s| s.as_str()).collect::<Vec<_>>())),
        apps: Set("[]".into()),
        environments: Set("[]".into()),
        levels: Set(serde_json::to_string(&policy.levels).unwrap_or_else(|_| "[]".into())),
        created_at: Set(now),
        updated_at: Set(now),
    };
    escalation_policies::Entity::insert(row).exec_without_returning(manager.get_connection()).await?;
    Ok(())
}
