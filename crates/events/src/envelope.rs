//! The event envelope: CloudEvents 1.0 attributes around a JSON payload.

use chrono::{DateTime, SecondsFormat, SubsecRound as _, Utc};
use serde::{Serialize, de::DeserializeOwned};
use uuid::Uuid;

/// One fact that happened, as published on the bus.
#[derive(Debug, Clone, PartialEq)]
pub struct Event {
    /// UUIDv7: unique, and ordered by creation time within a process.
    pub id: Uuid,
    /// The producing service, e.g. `/release-pilot/release`.
    pub source: String,
    /// Dotted type, also the subject suffix: `rp.deployment.started`.
    pub event_type: String,
    /// The resource the event is about, e.g. `deployments/0190…`.
    pub subject: String,
    pub time: DateTime<Utc>,
    /// W3C trace context of the operation that produced the event.
    pub traceparent: Option<String>,
    /// Payload (`data`), JSON with the proto field names of `releasepilot.events.v1`.
    pub data: serde_json::Value,
}

impl Event {
    /// Creates an event stamped now, inheriting the current trace context.
    pub fn new(
        service: &str,
        event_type: impl Into<String>,
        subject: impl Into<String>,
        data: &impl Serialize,
    ) -> Self {
        Self {
            id: Uuid::now_v7(),
            source: format!("/release-pilot/{service}"),
            event_type: event_type.into(),
            subject: subject.into(),
            // Microseconds: what PostgreSQL and the RFC 3339 rendering keep.
            time: Utc::now().trunc_subsecs(6),
            traceparent: rp_telemetry::propagation::current_traceparent(),
            data: serde_json::to_value(data).unwrap_or(serde_json::Value::Null),
        }
    }

    /// Decodes the payload into its proto message type.
    pub fn decode<T: DeserializeOwned>(&self) -> Result<T, serde_json::Error> {
        serde_json::from_value(self.data.clone())
    }

    /// CloudEvents 1.0 structured-mode JSON, as webhooks receive it.
    pub fn to_cloudevent(&self) -> serde_json::Value {
        let mut value = serde_json::json!({
            "specversion": "1.0",
            "id": self.id.to_string(),
            "source": self.source,
            "type": self.event_type,
            "subject": self.subject,
            "time": self.time.to_rfc3339_opts(SecondsFormat::Micros, true),
            "datacontenttype": "application/json",
            "data": self.data,
        });
        if let Some(traceparent) = &self.traceparent {
            value["traceparent"] = serde_json::Value::String(traceparent.clone());
        }
        value
    }

    /// Parses structured-mode CloudEvents JSON (the inverse of [`Event::to_cloudevent`]).
    pub fn from_cloudevent(value: &serde_json::Value) -> Option<Self> {
        let text = |key: &str| value.get(key).and_then(|v| v.as_str()).map(str::to_owned);
        Some(Self {
            id: text("id")?.parse().ok()?,
            source: text("source")?,
            event_type: text("type")?,
            subject: text("subject").unwrap_or_default(),
            time: DateTime::parse_from_rfc3339(&text("time")?).ok()?.with_timezone(&Utc),
            traceparent: text("traceparent"),
            data: value.get("data").cloned().unwrap_or(serde_json::Value::Null),
        })
    }
}

/// Headers carrying the CloudEvents attributes in binary mode (NATS messages).
pub mod headers {
    pub const MSG_ID: &str = "Nats-Msg-Id";
    pub const SPEC_VERSION: &str = "ce-specversion";
    pub const ID: &str = "ce-id";
    pub const SOURCE: &str = "ce-source";
    pub const TYPE: &str = "ce-type";
    pub const SUBJECT: &str = "ce-subject";
    pub const TIME: &str = "ce-time";
    pub const TRACEPARENT: &str = "traceparent";
    pub const CONTENT_TYPE: &str = "content-type";
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cloudevent_round_trip_keeps_every_attribute() {
        let mut event =
            Event::new("release", "rp.app.created", "apps/1", &serde_json::json!({"name": "web"}));
        event.traceparent = Some("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01".into());
        let json = event.to_cloudevent();
        assert_eq!(json["specversion"], "1.0");
        assert_eq!(json["source"], "/release-pilot/release");
        assert_eq!(json["datacontenttype"], "application/json");
        let parsed = Event::from_cloudevent(&json).unwrap();
        assert_eq!(parsed, event);
    }

    #[test]
    fn ids_are_version_7_and_increase() {
        let a = Event::new("x", "rp.t", "s", &());
        let b = Event::new("x", "rp.t", "s", &());
        assert_eq!(a.id.get_version_num(), 7);
        assert!(b.id > a.id);
    }
}
