//! Incident timelines learn when people were told: every `rp.notification.delivered` about an
//! incident (the notifier's deliveries and escalation levels) adds "notification sent" with the
//! channel and the time the receiver accepted it.

use std::sync::Arc;

use rp_events::{ConsumerSpec, Event, inbox};
use rp_proto::events::v1 as ev;
use rp_runtime::CancellationToken;
use sea_orm::{ActiveModelTrait as _, EntityTrait, IntoActiveModel as _};
use uuid::Uuid;

use super::{RollbackCore, actions::timeline_entry};
use crate::store::incidents;

pub(crate) const CONSUMER: &str = "rollback-notifications";

/// Entries about notifications an incident's timeline keeps at most (an escalation that runs for
/// hours must not grow it without end); the delivery log has the rest.
const MAX_NOTIFICATION_ENTRIES: usize = 20;
const PREFIX: &str = "notification sent";

pub async fn run(core: Arc<RollbackCore>, shutdown: CancellationToken) {
    let spec = ConsumerSpec::new(CONSUMER, "rp.notification.delivered");
    let bus = core.bus.clone();
    inbox::run_consumer(
        bus,
        spec,
        move |event| {
            let core = core.clone();
            async move { core.on_notification_delivered(&event).await }
        },
        shutdown,
    )
    .await;
}

fn retry(err: impl std::fmt::Display) -> inbox::HandlerError {
    inbox::HandlerError::Retry(err.to_string())
}

impl RollbackCore {
    async fn on_notification_delivered(&self, event: &Event) -> Result<(), inbox::HandlerError> {
        let delivered: ev::NotificationChanged = event
            .decode()
            .map_err(|e| inbox::HandlerError::Drop(format!("malformed notification event: {e}")))?;
        let Ok(incident_id) = Uuid::parse_str(&delivered.incident_id) else {
            return Ok(()); // not about an incident
        };
        let txn = self.db.begin_write().await.map_err(retry)?;
        if !inbox::claim(&txn, CONSUMER, event.id).await.map_err(retry)? {
            return Ok(());
        }
        let Some(incident) = incidents::Entity::find_by_id(incident_id).one(&txn).await.map_err(retry)?
        else {
            // An incident of another installation sharing the bus, or deleted: nothing to record.
            return self.commit(txn).await.map_err(retry);
        };
        let mut timeline: Vec<serde_json::Value> =
            serde_json::from_str(&incident.timeline).unwrap_or_default();
        let sent = timeline
            .iter()
            .filter(|entry| entry["what"].as_str().is_some_and(|w| w.starts_with(PREFIX)))
            .count();
        let channel = match delivered.channel_name.as_str() {
            "" => delivered.channel_kind.clone(),
            name => format!("{} {name:?}", delivered.channel_kind),
        };
        let what = if delivered.escalation_id.is_empty() {
            format!("{PREFIX} via {channel}")
        } else {
            format!("{PREFIX} via {channel} (escalation)")
        };
        if sent >= MAX_NOTIFICATION_ENTRIES {
            return self.commit(txn).await.map_err(retry);
        }
        timeline.push(timeline_entry(&what, event.time));
        let mut updated = incident;
        updated.timeline = serde_json::to_string(&timeline).unwrap_or_else(|_| "[]".into());
        incidents::Entity::update(updated.into_active_model().reset_all()).exec(&txn).await.map_err(retry)?;
        self.commit(txn).await.map_err(retry)
    }
}
