//! The notifier schema: sea-orm entities (one file per table) and migrations.

pub mod attempts;
pub mod channels;
pub mod config_version;
pub mod deliveries;
pub mod escalation_policies;
pub mod escalations;
pub mod items;
pub mod routing_rules;

mod m20261127_000001_channels;
mod m20261128_000002_notifications;
mod m20261128_000003_config_version;

use sea_orm_migration::{MigrationTrait, MigratorTrait};

pub struct Migrator;

#[async_trait::async_trait]
impl MigratorTrait for Migrator {
    fn migrations() -> Vec<Box<dyn MigrationTrait>> {
        vec![
            Box::new(rp_events::outbox::migration::Migration),
            Box::new(m20261127_000001_channels::Migration),
            Box::new(m20261128_000002_notifications::Migration),
            Box::new(m20261128_000003_config_version::Migration),
        ]
    }
}

/// A JSON array column as strings.
pub fn list(json: &str) -> Vec<String> {
    serde_json::from_str(json).unwrap_or_default()
}

/// Strings as a JSON array column.
pub fn to_list<S: AsRef<str>>(items: &[S]) -> String {
    serde_json::to_string(&items.iter().map(AsRef::as_ref).collect::<Vec<_>>())
        .unwrap_or_else(|_| "[]".into())
}
