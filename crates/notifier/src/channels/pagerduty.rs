//! PagerDuty Events API v2: rollbacks and incidents trigger an alert whose `dedup_key` is the
//! incident id (so every event of one incident updates one alert), the incident's resolution
//! resolves it, and other events (a deployment that succeeded, a release) become change events.

use serde_json::{Value, json};

use super::{Answer, Message, Resolved, SendError, http::GuardedHttp};
use crate::domain::classify::{Labels, Severity};

pub const DEFAULT_API_URL: &str = "https://events.pagerduty.com";

/// The Events API base URL of a channel.
pub fn api_url(config: &Value) -> String {
    config
        .get("api_url")
        .and_then(Value::as_str)
        .filter(|u| !u.is_empty())
        .unwrap_or(DEFAULT_API_URL)
        .trim_end_matches('/')
        .to_owned()
}

/// What a message does to PagerDuty.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    Trigger { dedup_key: String },
    Resolve { dedup_key: String },
    Change,
}

fn dedup_key(labels: &Labels) -> String {
    [&labels.incident_id, &labels.deployment_id, &labels.subject]
        .into_iter()
        .find(|v| !v.is_empty())
        .cloned()
        .unwrap_or_else(|| labels.event_type.clone())
}

fn action_of(labels: &Labels, escalation: bool) -> Action {
    let t = labels.event_type.as_str();
    if t == "rp.incident.resolved" {
        return Action::Resolve { dedup_key: dedup_key(labels) };
    }
    let triggers = escalation
        || t == "rp.incident.opened"
        || t.starts_with("rp.rollback.")
        || matches!(
            t,
            "rp.analysis.failed" | "rp.analysis.alert" | "rp.deployment.failed" | "rp.deployment.rolled_back"
        )
        || labels.severity >= Severity::High;
    if triggers { Action::Trigger { dedup_key: dedup_key(labels) } } else { Action::Change }
}

/// The action of a message: the last event that triggers or resolves decides; otherwise a
/// change event.
pub fn action(message: &Message) -> (Action, usize) {
    let escalation = message.escalation.is_some();
    message
        .labels
        .iter()
        .enumerate()
        .rev()
        .map(|(index, labels)| (action_of(labels, escalation), index))
        .find(|(action, _)| *action != Action::Change)
        .unwrap_or((Action::Change, 0))
}

fn severity(severity: Severity) -> &'static str {
    match severity {
        Severity::Critical => "critical",
        Severity::High => "error",
        Severity::Medium => "warning",
        Severity::Low => "info",
    }
}

fn links(message: &Message) -> Vec<Value> {
    let mut links = Vec::new();
    if let Some(url) = message.context.get("deployment_url").and_then(Value::as_str).filter(|u| !u.is_empty())
    {
        links.push(json!({"href": url, "text": "Deployment in Release Pilot"}));
    }
    if let Some(url) = message.context.get("ack_url").and_then(Value::as_str).filter(|u| !u.is_empty()) {
        links.push(json!({"href": url, "text": "Acknowledge the escalation"}));
    }
    links
}

fn details(message: &Message, labels: &Labels) -> Value {
    json!({
        "app": labels.app,
        "environment": labels.environment,
        "version": labels.version,
        "deployment_id": labels.deployment_id,
        "incident_id": labels.incident_id,
        "events": message.labels.iter().zip(&message.events).map(|(l, e)| json!({
            "id": e.id.to_string(), "type": l.event_type, "summary": l.summary, "time": e.time.to_rfc3339(),
        })).collect::<Vec<_>>(),
        "escalation": message.escalation,
    })
}

/// The request: (path, body).
pub fn request(channel: &Resolved, message: &Message, summary: &str) -> Result<(String, Value), SendError> {
    let routing_key = channel
        .secrets
        .get("routing_key")
        .filter(|k| !k.is_empty())
        .ok_or_else(|| SendError::Permanent("pagerduty channel without routing_key".into()))?;
    let source = channel.setting("source").unwrap_or("release-pilot");
    let summary: String = summary.chars().take(1024).collect();
    let (action, index) = action(message);
    let labels = &message.labels[index];
    let event = &message.events[index];
    let timestamp = event.time.to_rfc3339_opts(chrono::SecondsFormat::Millis, true);
    Ok(match action {
        Action::Trigger { dedup_key } => (
            "/v2/enqueue".into(),
            json!({
                "routing_key": routing_key,
                "event_action": "trigger",
                "dedup_key": dedup_key,
                "payload": {
                    "summary": summary,
                    "source": source,
                    "severity": severity(message.severity.max(labels.severity)),
                    "timestamp": timestamp,
                    "component": labels.app,
                    "group": labels.environment,
                    "class": labels.event_type,
                    "custom_details": details(message, labels),
                },
                "client": "Release Pilot",
                "client_url": message.dashboard_url,
                "links": links(message),
            }),
        ),
        Action::Resolve { dedup_key } => (
            "/v2/enqueue".into(),
            json!({"routing_key": routing_key, "event_action": "resolve", "dedup_key": dedup_key}),
        ),
        Action::Change => (
            "/v2/change/enqueue".into(),
            json!({
                "routing_key": routing_key,
                "payload": {
                    "summary": summary,
                    "timestamp": timestamp,
                    "source": source,
                    "custom_details": details(message, labels),
                },
                "links": links(message),
            }),
        ),
    })
}

pub async fn send(http: &GuardedHttp, channel: &Resolved, message: &Message) -> Result<Answer, SendError> {
    let summary = message.render(channel, "summary")?;
    let (path, body) = request(channel, message, &summary)?;
    let url = format!("{}{path}", api_url(&channel.config));
    http.post(&url, &[("content-type", "application/json".to_owned())], body.to_string().into_bytes()).await
}

#[cfg(test)]
mod tests {
    use super::*;

    fn labels(event_type: &str, severity: Severity) -> Labels {
        Labels {
            event_type: event_type.into(),
            severity,
            incident_id: "inc-1".into(),
            deployment_id: "dep-1".into(),
            ..Labels::default()
        }
    }

    fn message(types: &[(&str, Severity)]) -> Message {
        Message {
            delivery_id: uuid::Uuid::nil(),
            events: types.iter().map(|(t, _)| rp_events::Event::new("t", *t, "s", &())).collect(),
            labels: types.iter().map(|(t, s)| labels(t, *s)).collect(),
            severity: Severity::Critical,
            context: json!({}),
            escalation: None,
            incident_id: "inc-1".into(),
            dashboard_url: "http://rp".into(),
        }
    }

    #[test]
    fn incidents_trigger_and_resolve_with_the_incident_id() {
        let opened = message(&[
            ("rp.rollback.completed", Severity::Critical),
            ("rp.incident.opened", Severity::Critical),
        ]);
        assert_eq!(action(&opened), (Action::Trigger { dedup_key: "inc-1".into() }, 1));
        let resolved = message(&[("rp.incident.resolved", Severity::Critical)]);
        assert_eq!(action(&resolved).0, Action::Resolve { dedup_key: "inc-1".into() });
        let change = message(&[("rp.deployment.succeeded", Severity::Medium)]);
        assert_eq!(action(&change).0, Action::Change);
    }

    #[test]
    fn requests_follow_the_events_api() {
        let channel = Resolved {
            id: uuid::Uuid::nil(),
            name: "pd".into(),
            kind: "pagerduty".into(),
            config: json!({}),
            secrets: [("routing_key".to_owned(), "R0UT1NG".to_owned())].into_iter().collect(),
            templates: Default::default(),
        };
        let (path, body) =
            request(&channel, &message(&[("rp.incident.opened", Severity::Critical)]), "boom").unwrap();
        assert_eq!(path, "/v2/enqueue");
        assert_eq!(body["event_action"], "trigger");
        assert_eq!(body["payload"]["severity"], "critical");
        assert_eq!(body["routing_key"], "R0UT1NG");
        let (path, body) =
            request(&channel, &message(&[("rp.deployment.succeeded", Severity::Medium)]), "ok").unwrap();
        assert_eq!(path, "/v2/change/enqueue");
        assert_eq!(body["payload"]["summary"], "ok");
        assert_eq!(api_url(&json!({"api_url": "http://127.0.0.1:9/"})), "http://127.0.0.1:9");
    }
}
