//! The notifier schema: sea-orm entities (one file per table) and migrations.

pub mod channels;

mod m20261127_000001_channels;

use sea_orm_migration::{MigrationTrait, MigratorTrait};

pub struct Migrator;

#[async_trait::async_trait]
impl MigratorTrait for Migrator {
    fn migrations() -> Vec<Box<dyn MigrationTrait>> {
        vec![
            Box::new(rp_events::outbox::migration::Migration),
            Box::new(m20261127_000001_channels::Migration),
        ]
    }
}
