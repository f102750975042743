//! A delivery's message: its events, their labels, and the template context.

use rp_events::Event;
use serde_json::{Value, json};

use super::NotifierCore;
use crate::{
    channels::{EscalationInfo, Message, Resolved},
    domain::classify::{Labels, Severity, classify},
    store::{deliveries, items},
};

fn labels_of(event: &Event, item: &items::Model) -> Labels {
    classify(&event.event_type, &event.subject, &event.data).unwrap_or_else(|| Labels {
        event_type: item.event_type.clone(),
        subject: item.subject.clone(),
        severity: Severity::parse(&item.severity).unwrap_or_default(),
        app: item.app.clone(),
        environment: item.environment.clone(),
        deployment_id: item.deployment_id.clone(),
        incident_id: item.incident_id.clone(),
        summary: format!("{} {}", item.event_type, item.subject),
        ..Labels::default()
    })
}

impl NotifierCore {
    fn link(&self, labels: &Labels) -> String {
        if !labels.deployment_id.is_empty() {
            format!("{}/deployments/{}", self.dashboard_url, labels.deployment_id)
        } else if !labels.incident_id.is_empty() {
            format!("{}/incidents/{}", self.dashboard_url, labels.incident_id)
        } else {
            String::new()
        }
    }

    /// The message of `delivery` carrying `items` to `channel`.
    pub(crate) fn message(
        &self,
        delivery: &deliveries::Model,
        items: &[items::Model],
        channel: &Resolved,
        escalation: Option<EscalationInfo>,
    ) -> Message {
        let mut events = Vec::new();
        let mut labels = Vec::new();
        for item in items {
            let parsed =
                serde_json::from_str::<Value>(&item.event).ok().and_then(|v| Event::from_cloudevent(&v));
            if let Some(event) = parsed {
                labels.push(labels_of(&event, item));
                events.push(event);
            }
        }
        self.compose(delivery.id, &delivery.incident_id, events, labels, channel, escalation)
    }

    /// A message of `events` (with their `labels`) to `channel`.
    pub(crate) fn compose(
        &self,
        delivery_id: uuid::Uuid,
        incident_id: &str,
        events: Vec<Event>,
        labels: Vec<Labels>,
        channel: &Resolved,
        escalation: Option<EscalationInfo>,
    ) -> Message {
        let severity = labels.iter().map(|l| l.severity).max().unwrap_or_default();
        let rendered: Vec<Value> = events
            .iter()
            .zip(&labels)
            .map(|(event, l)| {
                json!({
                    "id": event.id.to_string(),
                    "type": event.event_type,
                    "subject": event.subject,
                    "source": event.source,
                    "time": event.time.to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
                    "severity": l.severity.as_str(),
                    "summary": l.summary,
                    "app": l.app,
                    "environment": l.environment,
                    "version": l.version,
                    "deployment_id": l.deployment_id,
                    "incident_id": l.incident_id,
                    "production": l.production,
                    "url": self.link(l),
                    "data": event.data,
                })
            })
            .collect();
        let primary = labels.first().cloned().unwrap_or_default();
        let ack_url =
            escalation.as_ref().map(|e| self.ack_url(e.id.parse().unwrap_or_default())).unwrap_or_default();
        let deployment_url = if primary.deployment_id.is_empty() {
            String::new()
        } else {
            format!("{}/deployments/{}", self.dashboard_url, primary.deployment_id)
        };
        let context = json!({
            "event": rendered.first().cloned().unwrap_or(Value::Null),
            "events": rendered,
            "count": events.len(),
            "severity": severity.as_str(),
            "app": primary.app,
            "environment": primary.environment,
            "channel": {"id": channel.id.to_string(), "name": channel.name, "kind": channel.kind},
            "dashboard_url": self.dashboard_url,
            "deployment_url": deployment_url,
            "ack_url": ack_url,
            "escalation": escalation,
            "delivery_id": delivery_id.to_string(),
        });
        Message {
            delivery_id,
            events,
            labels,
            severity,
            context,
            escalation,
            incident_id: incident_id.to_owned(),
            dashboard_url: self.dashboard_url.clone(),
        }
    }
}
