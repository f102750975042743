//! DORA metrics from the deployment history, over the API and as Prometheus gauges.

use std::{collections::HashMap, sync::Arc, time::Duration};

use chrono::Utc;
use rp_runtime::{CancellationToken, ServiceError as E, ServiceResult as Result};
use sea_orm::EntityTrait;

use super::ReleaseCore;
use crate::{
    domain::dora::{self, Figures, Record},
    metrics as names,
    store::{apps, environments, releases},
};

impl ReleaseCore {
    /// DORA figures of `app` in `environment` (default: the production environment) over
    /// `window_days` (default 30).
    pub async fn dora(
        &self,
        app: &str,
        environment: &str,
        window_days: i32,
    ) -> Result<(String, String, i32, Figures)> {
        let window_days = if window_days == 0 { 30 } else { window_days };
        if !(1..=365).contains(&window_days) {
            return Err(E::Invalid("window_days must be between 1 and 365".into()));
        }
        let app = self.find_app(&self.db.conn, app).await?;
        let env =
            if environment.is_empty() {
                self.list_environments().await?.into_iter().rev().find(|e| e.production).ok_or_else(|| {
                    E::Precondition("no production environment: name the environment".into())
                })?
            } else {
                self.find_environment(&self.db.conn, environment).await?
            };
        let figures = self.figures(&app, &env, window_days).await?;
        Ok((app.name, env.name, window_days, figures))
    }

    async fn figures(
        &self,
        app: &apps::Model,
        env: &environments::Model,
        window_days: i32,
    ) -> Result<Figures> {
        let history = self.history(app.id, env.id).await?;
        let release_ids: Vec<_> = history.iter().map(|d| d.release_id).collect();
        let first_commits: HashMap<_, _> = releases::Entity::find()
            .all(&self.db.conn)
            .await?
            .into_iter()
            .filter(|r| release_ids.contains(&r.id))
            .map(|r| (r.id, r.first_commit_at))
            .collect();
        let records: Vec<Record> = history
            .iter()
            .map(|d| Record {
                strategy: d.strategy.clone(),
                state: d.state.clone(),
                created_at: d.created_at,
                started_at: d.started_at,
                finished_at: d.finished_at,
                first_commit_at: first_commits.get(&d.release_id).copied().flatten(),
                failure_detected_at: d.failure_detected_at,
                restored_at: d.restored_at,
            })
            .collect();
        let until = Utc::now();
        let since = until - chrono::Duration::days(i64::from(window_days));
        Ok(dora::compute(&records, since, until, window_days))
    }

    /// Refreshes the DORA gauges of every app in every production environment, every minute.
    pub fn spawn_dora_gauges(self: &Arc<Self>, shutdown: CancellationToken) -> tokio::task::JoinHandle<()> {
        let core = self.clone();
        tokio::spawn(async move {
            loop {
                if let Err(err) = core.update_gauges().await {
                    tracing::warn!(error = %err, "cannot refresh DORA gauges");
                }
                tokio::select! {
                    _ = shutdown.cancelled() => break,
                    _ = tokio::time::sleep(Duration::from_secs(60)) => {}
                }
            }
        })
    }

    async fn update_gauges(&self) -> Result<()> {
        let apps = apps::Entity::find().all(&self.db.conn).await?;
        let envs = self.list_environments().await?;
        for app in &apps {
            for env in envs.iter().filter(|e| e.production) {
                let f = self.figures(app, env, 30).await?;
                let labels = [("app", app.name.clone()), ("env", env.name.clone())];
                metrics::gauge!(names::DORA_DEPLOYMENT_FREQUENCY, &labels)
                    .set(f.deployment_frequency_per_day);
                metrics::gauge!(names::DORA_LEAD_TIME_SECONDS, &labels).set(f.lead_time_seconds);
                metrics::gauge!(names::DORA_CHANGE_FAILURE_RATE, &labels).set(f.change_failure_rate);
                metrics::gauge!(names::DORA_TIME_TO_RESTORE_SECONDS, &labels).set(f.time_to_restore_seconds);
            }
        }
        Ok(())
    }
}
