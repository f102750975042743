//! Routing rules: which channels an event reaches. Every enabled rule that matches applies, in
//! position order (a rule with `stop` ends the walk); a channel reached by several rules gets
//! the event once, under the first rule. The defaults are the seed's matrix: critical → pager +
//! chat + e-mail, high → chat + e-mail, medium → chat, low → ticket/webhook, plus PagerDuty change
//! events for deployments that succeeded.

use std::time::Duration;

use uuid::Uuid;

use super::{
    classify::{Labels, Severity},
    kind,
};

/// The same event type about the same thing is sent once per this, unless a rule says otherwise
/// (Alertmanager's default repeat_interval).
pub const DEFAULT_REPEAT_INTERVAL: Duration = Duration::from_secs(4 * 3600);

/// Labels a group may be formed by.
pub const GROUP_LABELS: [&str; 6] = ["app", "environment", "deployment", "incident", "event_type", "subject"];

/// Grouping when a rule names none: one group per deployment of an app in an environment.
pub const DEFAULT_GROUP_BY: [&str; 3] = ["app", "environment", "deployment"];

/// How long the first event of a group waits for others, by the group's severity: a page goes
/// out at once, chat messages collect a burst.
pub fn default_group_wait(severity: Severity) -> Duration {
    match severity {
        Severity::Critical => Duration::ZERO,
        Severity::High => Duration::from_secs(5),
        Severity::Medium | Severity::Low => Duration::from_secs(30),
    }
}

/// A routing rule as the router applies it.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Rule {
    pub id: Option<Uuid>,
    pub name: String,
    pub event_types: Vec<String>,
    pub severities: Vec<Severity>,
    pub apps: Vec<String>,
    pub environments: Vec<String>,
    pub channel_ids: Vec<Uuid>,
    pub channel_kinds: Vec<String>,
    pub group_wait: Option<Duration>,
    pub repeat_interval: Option<Duration>,
    pub group_by: Vec<String>,
    pub stop: bool,
}

impl Rule {
    /// True when the rule's filters (each empty one matches everything) accept the event.
    pub fn matches(&self, labels: &Labels) -> bool {
        let type_ok = self.event_types.is_empty()
            || self.event_types.iter().any(|p| p == "*" || rp_events::subject_matches(p, &labels.event_type));
        let severity_ok = self.severities.is_empty() || self.severities.contains(&labels.severity);
        let app_ok = self.apps.is_empty() || self.apps.iter().any(|a| a == &labels.app);
        let env_ok =
            self.environments.is_empty() || self.environments.iter().any(|e| e == &labels.environment);
        type_ok && severity_ok && app_ok && env_ok
    }

    pub fn group_wait_for(&self, severity: Severity) -> Duration {
        self.group_wait.unwrap_or_else(|| default_group_wait(severity))
    }

    pub fn repeat_interval(&self) -> Duration {
        self.repeat_interval.unwrap_or(DEFAULT_REPEAT_INTERVAL)
    }

    pub fn group_by(&self) -> Vec<String> {
        if self.group_by.is_empty() {
            DEFAULT_GROUP_BY.iter().map(|s| (*s).to_owned()).collect()
        } else {
            self.group_by.clone()
        }
    }
}

/// A channel as routing sees it.
#[derive(Debug, Clone, PartialEq)]
pub struct ChannelRef {
    pub id: Uuid,
    pub kind: String,
    pub enabled: bool,
    /// Attempts per minute (0: unlimited).
    pub rate_limit_per_minute: i32,
    /// The receiver asked not to be called before this.
    pub throttled_until: Option<chrono::DateTime<chrono::Utc>>,
}

impl ChannelRef {
    /// Whether a message due now may go out at once, without the dispatcher's rate-limit count.
    pub fn sendable_at_once(&self, now: chrono::DateTime<chrono::Utc>) -> bool {
        self.enabled
            && self.rate_limit_per_minute <= 0
            && self.throttled_until.is_none_or(|until| until <= now)
    }
}

/// Where an event goes: (channel id, index of the rule that sent it there), in rule order.
pub fn route(rules: &[Rule], channels: &[ChannelRef], labels: &Labels) -> Vec<(Uuid, usize)> {
    let mut targets: Vec<(Uuid, usize)> = Vec::new();
    for (index, rule) in rules.iter().enumerate() {
        if !rule.matches(labels) {
            continue;
        }
        for channel in channels.iter().filter(|c| c.enabled) {
            let wanted = rule.channel_ids.contains(&channel.id) || rule.channel_kinds.contains(&channel.kind);
            if wanted && !targets.iter().any(|(id, _)| *id == channel.id) {
                targets.push((channel.id, index));
            }
        }
        if rule.stop {
            break;
        }
    }
    targets
}

/// The seed's matrix as rules (seeded into every new database, editable afterwards).
pub fn default_rules() -> Vec<Rule> {
    let rule = |name: &str, severities: &[Severity], kinds: &[&str]| Rule {
        name: name.to_owned(),
        severities: severities.to_vec(),
        channel_kinds: kinds.iter().map(|k| (*k).to_owned()).collect(),
        ..Rule::default()
    };
    let mut change_events =
        rule("deployments that succeeded → PagerDuty change events", &[], &[kind::PAGERDUTY]);
    change_events.event_types = vec!["rp.deployment.succeeded".into()];
    vec![
        rule(
            "critical → pager, chat and e-mail",
            &[Severity::Critical],
            &[kind::PAGERDUTY, kind::SLACK, kind::EMAIL],
        ),
        rule("high → chat and e-mail", &[Severity::High], &[kind::SLACK, kind::EMAIL]),
        rule("medium → chat", &[Severity::Medium], &[kind::SLACK]),
        rule("low → ticket/webhook", &[Severity::Low], &[kind::WEBHOOK]),
        change_events,
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    fn labels(event_type: &str, severity: Severity) -> Labels {
        Labels {
            event_type: event_type.into(),
            severity,
            app: "shop".into(),
            environment: "prod".into(),
            ..Labels::default()
        }
    }

    fn channels() -> Vec<ChannelRef> {
        kind::ALL
            .iter()
            .map(|k| ChannelRef {
                id: Uuid::new_v4(),
                kind: (*k).into(),
                enabled: true,
                rate_limit_per_minute: 0,
                throttled_until: None,
            })
            .collect()
    }

    fn kinds_of(targets: &[(Uuid, usize)], channels: &[ChannelRef]) -> Vec<String> {
        let mut kinds: Vec<String> = targets
            .iter()
            .map(|(id, _)| channels.iter().find(|c| c.id == *id).unwrap().kind.clone())
            .collect();
        kinds.sort();
        kinds
    }

    #[test]
    fn only_enabled_unlimited_unthrottled_channels_send_at_once() {
        let now = chrono::Utc::now();
        let open = ChannelRef {
            id: Uuid::new_v4(),
            kind: "webhook".into(),
            enabled: true,
            rate_limit_per_minute: 0,
            throttled_until: None,
        };
        assert!(open.sendable_at_once(now));
        assert!(!ChannelRef { enabled: false, ..open.clone() }.sendable_at_once(now));
        assert!(!ChannelRef { rate_limit_per_minute: 30, ..open.clone() }.sendable_at_once(now));
        let later = now + chrono::Duration::seconds(5);
        assert!(!ChannelRef { throttled_until: Some(later), ..open.clone() }.sendable_at_once(now));
        let earlier = now - chrono::Duration::seconds(5);
        assert!(ChannelRef { throttled_until: Some(earlier), ..open }.sendable_at_once(now));
    }

    #[test]
    fn the_default_matrix_follows_the_seed() {
        let (rules, channels) = (default_rules(), channels());
        let kinds = |t: &str, s| kinds_of(&route(&rules, &channels, &labels(t, s)), &channels);
        assert_eq!(kinds("rp.incident.opened", Severity::Critical), ["email", "pagerduty", "slack"]);
        assert_eq!(kinds("rp.deployment.failed", Severity::High), ["email", "slack"]);
        assert_eq!(kinds("rp.deployment.started", Severity::Medium), ["slack"]);
        assert_eq!(kinds("rp.release.created", Severity::Low), ["webhook"]);
        assert_eq!(kinds("rp.deployment.succeeded", Severity::Medium), ["pagerduty", "slack"]);
    }

    #[test]
    fn filters_wildcards_stop_and_disabled_channels() {
        let mut channels = channels();
        let slack = channels[1].id;
        let rule = Rule {
            event_types: vec!["rp.deployment.*".into()],
            apps: vec!["shop".into()],
            environments: vec!["prod".into()],
            channel_ids: vec![slack],
            stop: true,
            ..Rule::default()
        };
        let rules = vec![rule, Rule { channel_kinds: vec!["email".into()], ..Rule::default() }];
        assert_eq!(route(&rules, &channels, &labels("rp.deployment.failed", Severity::High)), [(slack, 0)]);
        let other = route(&rules, &channels, &labels("rp.release.created", Severity::Low));
        assert_eq!(kinds_of(&other, &channels), ["email"]);
        let mut elsewhere = labels("rp.deployment.failed", Severity::High);
        elsewhere.environment = "staging".into();
        assert_eq!(kinds_of(&route(&rules, &channels, &elsewhere), &channels), ["email"]);
        channels[1].enabled = false;
        assert!(route(&rules, &channels, &labels("rp.deployment.failed", Severity::High)).is_empty());
    }

    #[test]
    fn a_channel_named_by_two_rules_gets_the_event_once() {
        let channels = channels();
        let rules = vec![
            Rule { channel_kinds: vec!["slack".into()], ..Rule::default() },
            Rule { channel_ids: vec![channels[1].id], ..Rule::default() },
        ];
        assert_eq!(route(&rules, &channels, &labels("rp.x.y", Severity::Low)), [(channels[1].id, 0)]);
        assert_eq!(default_group_wait(Severity::Critical), Duration::ZERO);
    }
}
