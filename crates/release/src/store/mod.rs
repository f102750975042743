//! The release schema: sea-orm entities (one file per table) and migrations.

pub mod approvals;
pub mod apps;
pub mod audit_log;
pub mod deployments;
pub mod environments;
pub mod freeze_windows;
pub mod idempotency_keys;
pub mod quality_checks;
pub mod releases;
pub mod routes;
pub mod targets;

mod m20261127_000001_apps;
mod m20261127_000002_deployment_domain;
mod m20261127_000003_routes;
mod m20261128_000004_release_commit_count;

use sea_orm_migration::{MigrationTrait, MigratorTrait};

pub struct Migrator;

#[async_trait::async_trait]
impl MigratorTrait for Migrator {
    fn migrations() -> Vec<Box<dyn MigrationTrait>> {
        vec![
            Box::new(rp_events::outbox::migration::Migration),
            Box::new(m20261127_000001_apps::Migration),
            Box::new(m20261127_000002_deployment_domain::Migration),
            Box::new(m20261127_000003_routes::Migration),
            Box::new(m20261128_000004_release_commit_count::Migration),
        ]
    }
}
