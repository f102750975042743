//! The rollback schema: sea-orm entities (one file per table) and migrations.

pub mod alerts;
pub mod analyses;
pub mod incidents;
pub mod measurements;
pub mod policies;
pub mod rollbacks;

mod m20261127_000001_incidents;
mod m20261127_000002_analysis;

use sea_orm_migration::{MigrationTrait, MigratorTrait};

pub struct Migrator;

#[async_trait::async_trait]
impl MigratorTrait for Migrator {
    fn migrations() -> Vec<Box<dyn MigrationTrait>> {
        vec![
            Box::new(rp_events::outbox::migration::Migration),
            Box::new(m20261127_000001_incidents::Migration),
            Box::new(m20261127_000002_analysis::Migration),
        ]
    }
}
