//! The key sealing channel secrets: `notifier.secret_key` when configured; otherwise a random
//! key generated once into `<data_dir>/notifier-secret.key` (mode 0600) and reused. Every
//! replica must use the same key: one whose key differs from the one the stored secrets were
//! sealed with refuses to start instead of failing every delivery.

use std::{io::Write as _, path::Path};

use anyhow::Context as _;
use rp_config::Config;
use rp_db::Database;
use sea_orm::{ColumnTrait, EntityTrait, QueryFilter, QuerySelect};

use crate::{domain::crypto::SecretKey, store::channels};

pub const KEY_FILE: &str = "notifier-secret.key";

pub fn load(config: &Config) -> anyhow::Result<SecretKey> {
    if let Some(secret) = &config.notifier.secret_key {
        anyhow::ensure!(
            secret.expose().trim().chars().count() >= 32,
            "notifier.secret_key must be at least 32 characters (e.g. `openssl rand -base64 32`)"
        );
        return Ok(SecretKey::from_material(secret.expose()));
    }
    if config.is_distributed_db() {
        tracing::warn!(
            file = %config.data_dir.join(KEY_FILE).display(),
            "notifier.secret_key is not set: using a key file; replicas on other hosts need the same key"
        );
    }
    let material = read_or_create(&config.data_dir)?;
    Ok(SecretKey::from_material(&material))
}

fn read_or_create(dir: &Path) -> anyhow::Result<String> {
    let path = dir.join(KEY_FILE);
    if let Ok(existing) = std::fs::read_to_string(&path) {
        anyhow::ensure!(existing.trim().len() >= 32, "{} is too short to be a key", path.display());
        return Ok(existing);
    }
    std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let material = SecretKey::generate_material();
    let temporary = dir.join(format!("{KEY_FILE}.{}", uuid::Uuid::new_v4().simple()));
    {
        let mut options = std::fs::OpenOptions::new();
        options.write(true).create_new(true);
        #[cfg(unix)]
        std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
        let mut file =
            options.open(&temporary).with_context(|| format!("cannot write {}", temporary.display()))?;
        file.write_all(material.as_bytes())?;
        file.sync_all()?;
    }
    // A hard link never replaces an existing file: of two replicas starting together, one
    // key wins and both use it.
    let linked = std::fs::hard_link(&temporary, &path);
    let _ = std::fs::remove_file(&temporary);
    match linked {
        Ok(()) => {
            tracing::info!(file = %path.display(), "generated the notifier's secret key");
            Ok(material)
        }
        Err(err) if err.kind() == std::io::ErrorKind::AlreadyExists => {
            Ok(std::fs::read_to_string(&path).with_context(|| format!("cannot read {}", path.display()))?)
        }
        Err(err) => Err(err).with_context(|| format!("cannot create {}", path.display())),
    }
}

/// Refuses a key that differs from the one stored secrets were sealed with.
pub async fn check_stored_secrets(db: &Database, key: &SecretKey) -> anyhow::Result<()> {
    let kids: Vec<String> = channels::Entity::find()
        .select_only()
        .column(channels::Column::SecretKid)
        .filter(channels::Column::SecretKid.ne(""))
        .distinct()
        .into_tuple()
        .all(&db.conn)
        .await?;
    if let Some(other) = kids.iter().find(|kid| kid.as_str() != key.kid()) {
        anyhow::bail!(
            "channel secrets are sealed with key {other}, but this notifier's key is {}: configure the same notifier.secret_key on every replica",
            key.kid()
        );
    }
    Ok(())
}
