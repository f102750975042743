//! Alertmanager webhook payloads (version 4): which deployments an alert is about.

use std::collections::BTreeMap;

use serde::Deserialize;
use sha2::{Digest, Sha256};

#[derive(Debug, Deserialize)]
struct Payload {
    alerts: Vec<RawAlert>,
}

#[derive(Debug, Deserialize)]
struct RawAlert {
    #[serde(default)]
    status: String,
    #[serde(default)]
    labels: BTreeMap<String, String>,
    #[serde(default)]
    fingerprint: String,
}

/// One alert, reduced to what matching needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Alert {
    pub fingerprint: String,
    /// `app` (or `application`) label; alerts without one match nothing.
    pub app: String,
    /// `environment` (or `env`) label.
    pub environment: String,
    /// `version` label; empty matches every version.
    pub version: String,
    pub alertname: String,
    pub severity: String,
    pub firing: bool,
}

/// Most alerts a payload may carry (Alertmanager groups rarely exceed a few dozen).
pub const MAX_ALERTS: usize = 1000;

/// Parses a webhook body.
pub fn parse(json: &str) -> Result<Vec<Alert>, String> {
    let payload: Payload =
        serde_json::from_str(json).map_err(|e| format!("not an Alertmanager webhook payload: {e}"))?;
    if payload.alerts.len() > MAX_ALERTS {
        return Err(format!("at most {MAX_ALERTS} alerts per notification"));
    }
    Ok(payload
        .alerts
        .into_iter()
        .map(|raw| {
            let label = |names: &[&str]| {
                names.iter().find_map(|n| raw.labels.get(*n)).map(|v| v.trim().to_owned()).unwrap_or_default()
            };
            let fingerprint = if raw.fingerprint.is_empty() {
                // Alertmanager always sends one; others may not: derive it from the label set.
                let mut hash = Sha256::new();
                for (k, v) in &raw.labels {
                    hash.update(k.as_bytes());
                    hash.update([0]);
                    hash.update(v.as_bytes());
                    hash.update([0]);
                }
                hex::encode(&hash.finalize()[..8])
            } else {
                raw.fingerprint.chars().take(64).collect()
            };
            Alert {
                fingerprint,
                app: label(&["app", "application"]),
                environment: label(&["environment", "env"]),
                version: label(&["version"]),
                alertname: label(&["alertname"]),
                severity: label(&["severity"]),
                firing: raw.status != "resolved",
            }
        })
        .collect())
}

impl Alert {
    /// Whether the alert is about `version` of `app` in `environment` and passes `alertname`
    /// (empty: any).
    pub fn matches(&self, app: &str, environment: &str, version: &str, alertname: &str) -> bool {
        !self.app.is_empty()
            && self.app == app
            && self.environment == environment
            && (self.version.is_empty() || self.version == version)
            && (alertname.is_empty() || self.alertname == alertname)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_alertmanager_v4_and_matches_by_labels() {
        let body = r#"{
          "version": "4", "status": "firing", "receiver": "release-pilot", "groupKey": "{}:{}",
          "alerts": [
            {"status": "firing", "labels": {"alertname": "HighErrorRate", "app": "shop", "env": "prod",
             "version": "1.3.0", "severity": "critical"}, "annotations": {}, "startsAt": "2026-11-27T10:00:00Z",
             "fingerprint": "abc123"},
            {"status": "resolved", "labels": {"alertname": "DiskFull", "application": "shop", "environment": "prod"}},
            {"status": "firing", "labels": {"alertname": "NodeDown"}}
          ]
        }"#;
        let alerts = parse(body).unwrap();
        assert_eq!(alerts.len(), 3);
        assert_eq!(
            alerts[0],
            Alert {
                fingerprint: "abc123".into(),
                app: "shop".into(),
                environment: "prod".into(),
                version: "1.3.0".into(),
                alertname: "HighErrorRate".into(),
                severity: "critical".into(),
                firing: true,
            }
        );
        assert!(alerts[0].matches("shop", "prod", "1.3.0", ""));
        assert!(alerts[0].matches("shop", "prod", "1.3.0", "HighErrorRate"));
        assert!(!alerts[0].matches("shop", "prod", "1.2.0", ""), "another version");
        assert!(!alerts[0].matches("shop", "staging", "1.3.0", ""));
        assert!(!alerts[1].firing && alerts[1].matches("shop", "prod", "9.9.9", ""), "no version label");
        assert_eq!(alerts[1].fingerprint.len(), 16);
        assert!(!alerts[2].matches("", "", "", ""), "an alert without labels matches nothing it cannot");
        assert!(parse("[]").is_err() && parse("{").is_err() && parse("{}").is_err());
    }
}
