//! Escalation policies: levels with delays from the start of an incident, each telling more
//! people, until someone acknowledges (or the incident is resolved). The default is the seed's
//! workflow: team chat now → team lead e-mail at 5 min → manager page at 15 min → executive at
//! 30 min.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use super::classify::{Labels, Severity};
use super::kind;

/// One level of a policy.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Level {
    pub name: String,
    /// From the start of the escalation.
    pub delay_ms: i64,
    #[serde(default)]
    pub channel_ids: Vec<String>,
    #[serde(default)]
    pub channel_kinds: Vec<String>,
}

/// A policy as the escalator applies it.
#[derive(Debug, Clone, PartialEq)]
pub struct Policy {
    pub name: String,
    pub severities: Vec<Severity>,
    pub apps: Vec<String>,
    pub environments: Vec<String>,
    pub levels: Vec<Level>,
}

impl Policy {
    /// True when an incident with `labels` starts this policy (no severities: critical only).
    pub fn matches(&self, labels: &Labels) -> bool {
        let severity_ok = if self.severities.is_empty() {
            labels.severity == Severity::Critical
        } else {
            self.severities.contains(&labels.severity)
        };
        severity_ok
            && (self.apps.is_empty() || self.apps.contains(&labels.app))
            && (self.environments.is_empty() || self.environments.contains(&labels.environment))
    }
}

/// The seed's escalation workflow, by channel kind (point the levels at channels to refine it).
pub fn default_policy() -> Policy {
    let level = |name: &str, minutes: i64, kinds: &[&str]| Level {
        name: name.to_owned(),
        delay_ms: minutes * 60_000,
        channel_ids: Vec::new(),
        channel_kinds: kinds.iter().map(|k| (*k).to_owned()).collect(),
    };
    Policy {
        name: "critical incidents (seed workflow)".into(),
        severities: vec![Severity::Critical],
        apps: Vec::new(),
        environments: Vec::new(),
        levels: vec![
            level("team chat", 0, &[kind::SLACK]),
            level("team lead e-mail", 5, &[kind::EMAIL]),
            level("manager page", 15, &[kind::PAGERDUTY]),
            level("executive escalation", 30, &[kind::EMAIL, kind::PAGERDUTY]),
        ],
    }
}

/// Checks levels: at least one, delays not negative and not decreasing, each with a target.
pub fn validate_levels(levels: &[Level]) -> Result<(), String> {
    if levels.is_empty() {
        return Err("an escalation policy needs at least one level".into());
    }
    let mut previous = 0;
    for (index, level) in levels.iter().enumerate() {
        let number = index + 1;
        if level.delay_ms < 0 {
            return Err(format!("level {number}: delay_ms must not be negative"));
        }
        if level.delay_ms < previous {
            return Err(format!("level {number}: delays must not decrease from one level to the next"));
        }
        if level.channel_ids.is_empty() && level.channel_kinds.is_empty() {
            return Err(format!("level {number}: name channel_ids or channel_kinds"));
        }
        for kind in &level.channel_kinds {
            if !kind::ALL.contains(&kind.as_str()) {
                return Err(format!("level {number}: unknown channel kind {kind:?}"));
            }
        }
        previous = level.delay_ms;
    }
    Ok(())
}

/// When level `index` (0-based) is due for an escalation that started at `started`.
pub fn due_at(started: DateTime<Utc>, levels: &[Level], index: usize) -> Option<DateTime<Utc>> {
    levels.get(index).map(|level| started + chrono::Duration::milliseconds(level.delay_ms))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_seed_workflow_escalates_at_0_5_15_and_30_minutes() {
        let policy = default_policy();
        assert!(validate_levels(&policy.levels).is_ok());
        let start = Utc::now();
        let minutes: Vec<i64> =
            (0..4).map(|i| (due_at(start, &policy.levels, i).unwrap() - start).num_minutes()).collect();
        assert_eq!(minutes, [0, 5, 15, 30]);
        assert_eq!(due_at(start, &policy.levels, 4), None);
        assert_eq!(policy.levels[2].channel_kinds, ["pagerduty"]);
    }

    #[test]
    fn only_matching_incidents_start_a_policy() {
        let policy = default_policy();
        let mut labels = Labels { severity: Severity::Critical, app: "shop".into(), ..Labels::default() };
        assert!(policy.matches(&labels));
        labels.severity = Severity::High;
        assert!(!policy.matches(&labels));
        let scoped = Policy { apps: vec!["billing".into()], ..default_policy() };
        labels.severity = Severity::Critical;
        assert!(!scoped.matches(&labels));
    }

    #[test]
    fn bad_levels_are_refused() {
        let level = |delay_ms, kinds: &[&str]| Level {
            name: "l".into(),
            delay_ms,
            channel_ids: vec![],
            channel_kinds: kinds.iter().map(|k| k.to_string()).collect(),
        };
        assert!(validate_levels(&[]).is_err());
        assert!(validate_levels(&[level(-1, &["slack"])]).is_err());
        assert!(
            validate_levels(&[level(10, &["slack"]), level(5, &["email"])]).unwrap_err().contains("decrease")
        );
        assert!(validate_levels(&[level(0, &[])]).is_err());
        assert!(validate_levels(&[level(0, &["fax"])]).is_err());
    }
}
