//! What an event is about (app, environment, deployment, incident) and how severe it is, in the
//! seed's four levels. Routing, grouping and templates work on these labels.

use serde::{Deserialize, Serialize};
use serde_json::Value;

/// Severity levels of the seed's "Alerting Rules & Escalation Matrix".
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Severity {
    #[default]
    Low,
    Medium,
    High,
    Critical,
}

impl Severity {
    pub const ALL: [Severity; 4] = [Severity::Low, Severity::Medium, Severity::High, Severity::Critical];

    pub fn as_str(self) -> &'static str {
        match self {
            Severity::Low => "low",
            Severity::Medium => "medium",
            Severity::High => "high",
            Severity::Critical => "critical",
        }
    }

    /// Parses a severity; `warning` and `info` (Alertmanager's words) map to medium and low.
    pub fn parse(text: &str) -> Option<Self> {
        match text.trim().to_ascii_lowercase().as_str() {
            "low" | "info" => Some(Severity::Low),
            "medium" | "warning" => Some(Severity::Medium),
            "high" | "error" => Some(Severity::High),
            "critical" | "page" => Some(Severity::Critical),
            _ => None,
        }
    }
}

/// What routing, grouping and templates know about an event.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Labels {
    pub event_type: String,
    pub subject: String,
    pub severity: Severity,
    pub app: String,
    pub environment: String,
    pub deployment_id: String,
    pub incident_id: String,
    pub version: String,
    pub production: bool,
    /// One line for people.
    pub summary: String,
}

/// Event types the notifier never notifies about: its own (a notification about a notification
/// would loop) and the router's high-rate route updates.
pub fn is_ignored(event_type: &str) -> bool {
    ["rp.notification.", "rp.escalation.", "rp.router."].iter().any(|prefix| event_type.starts_with(prefix))
}

fn text(data: &Value, key: &str) -> String {
    data.get(key).and_then(Value::as_str).unwrap_or_default().to_owned()
}

/// Labels of an event, or `None` for an event the notifier ignores.
pub fn classify(event_type: &str, subject: &str, data: &Value) -> Option<Labels> {
    if is_ignored(event_type) || !event_type.starts_with("rp.") {
        return None;
    }
    let production = data.get("production").and_then(Value::as_bool).unwrap_or(false);
    let named = |fallback: Severity| Severity::parse(&text(data, "severity")).unwrap_or(fallback);
    let severity = match event_type {
        "rp.incident.opened" | "rp.incident.resolved" => named(Severity::Critical),
        "rp.rollback.failed" => Severity::Critical,
        "rp.rollback.triggered" | "rp.rollback.completed" if production => Severity::Critical,
        "rp.rollback.triggered" | "rp.rollback.completed" => Severity::High,
        "rp.analysis.alert" => named(Severity::Medium),
        "rp.analysis.failed" | "rp.deployment.failed" | "rp.deployment.rolled_back" => Severity::High,
        "rp.auth.refresh_token_reused" => Severity::High,
        "rp.analysis.paused"
        | "rp.deployment.started"
        | "rp.deployment.succeeded"
        | "rp.deployment.awaiting_approval"
        | "rp.deployment.promoted"
        | "rp.deployment.paused"
        | "rp.deployment.aborted"
        | "rp.approval.requested" => Severity::Medium,
        _ => Severity::Low,
    };
    let mut labels = Labels {
        event_type: event_type.to_owned(),
        subject: subject.to_owned(),
        severity,
        app: text(data, "app"),
        environment: text(data, "environment"),
        deployment_id: text(data, "deployment_id"),
        incident_id: text(data, "incident_id"),
        version: text(data, "version"),
        production,
        summary: String::new(),
    };
    if labels.incident_id.is_empty() && event_type.starts_with("rp.incident.") {
        labels.incident_id = subject.trim_start_matches("incidents/").to_owned();
    }
    labels.summary = summary(event_type, subject, data, &labels);
    Some(labels)
}

fn summary(event_type: &str, subject: &str, data: &Value, labels: &Labels) -> String {
    let (app, version, env) = (&labels.app, &labels.version, &labels.environment);
    let reason = text(data, "reason");
    let with_reason = |line: String| if reason.is_empty() { line } else { format!("{line}: {reason}") };
    let fact = event_type.rsplit('.').next().unwrap_or_default().replace('_', " ");
    match event_type {
        t if t.starts_with("rp.deployment.") => {
            with_reason(format!("{app} {version} in {env}: deployment {fact}"))
        }
        "rp.rollback.triggered" | "rp.rollback.completed" | "rp.rollback.failed" => with_reason(format!(
            "{app} {version} in {env}: rollback to {} {fact} ({})",
            text(data, "restored_version"),
            text(data, "trigger")
        )),
        "rp.incident.opened" => {
            format!("Incident opened ({}): {}", labels.severity.as_str(), text(data, "summary"))
        }
        "rp.incident.resolved" => format!("Incident resolved: {}", text(data, "summary")),
        t if t.starts_with("rp.analysis.") => with_reason(format!(
            "{app} {version} in {env}: analysis {fact}{}",
            Some(text(data, "rule")).filter(|r| !r.is_empty()).map(|r| format!(" ({r})")).unwrap_or_default()
        )),
        t if t.starts_with("rp.approval.") => format!(
            "{app} {version} in {env}: approval {fact} ({}/{})",
            data.get("approvals").and_then(Value::as_i64).unwrap_or(0),
            data.get("required").and_then(Value::as_i64).unwrap_or(0)
        ),
        "rp.release.created" => format!("{app} {version} released"),
        _ => format!("{event_type} {subject}"),
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn incidents_keep_their_severity_and_rollbacks_in_production_are_critical() {
        let incident = classify(
            "rp.incident.opened",
            "incidents/i1",
            &json!({"incident_id": "i1", "severity": "high", "app": "shop", "summary": "errors"}),
        )
        .unwrap();
        assert_eq!((incident.severity, incident.incident_id.as_str()), (Severity::High, "i1"));
        assert!(incident.summary.contains("errors"));
        let prod = json!({"app": "shop", "production": true, "incident_id": "i1"});
        assert_eq!(classify("rp.rollback.completed", "r", &prod).unwrap().severity, Severity::Critical);
        let staging = json!({"app": "shop", "production": false});
        assert_eq!(classify("rp.rollback.completed", "r", &staging).unwrap().severity, Severity::High);
        assert_eq!(classify("rp.deployment.succeeded", "d", &staging).unwrap().severity, Severity::Medium);
        assert_eq!(classify("rp.deployment.step_advanced", "d", &staging).unwrap().severity, Severity::Low);
    }

    #[test]
    fn own_events_and_route_updates_are_ignored() {
        for t in ["rp.notification.delivered", "rp.escalation.started", "rp.router.route_updated", "other.x"]
        {
            assert!(classify(t, "s", &json!({})).is_none(), "{t}");
        }
    }

    #[test]
    fn severities_parse_alertmanager_words() {
        assert_eq!(Severity::parse("warning"), Some(Severity::Medium));
        assert_eq!(Severity::parse("CRITICAL"), Some(Severity::Critical));
        assert_eq!(Severity::parse("nope"), None);
        assert!(Severity::Critical > Severity::High);
    }
}
