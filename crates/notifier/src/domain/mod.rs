//! The notifier's rules, free of I/O: what an event is about and how severe it is, where it is
//! routed, how it is grouped and de-duplicated, when it is retried, which addresses may be
//! called, how messages are rendered, how secrets and acknowledge links are protected, and how
//! incidents escalate.

pub mod classify;
pub mod crypto;
pub mod escalation;
pub mod grouping;
pub mod routing;
pub mod schedule;
pub mod ssrf;
pub mod templates;

/// Channel kinds.
pub mod kind {
    pub const WEBHOOK: &str = "webhook";
    pub const SLACK: &str = "slack";
    pub const EMAIL: &str = "email";
    pub const PAGERDUTY: &str = "pagerduty";
    pub const ALL: [&str; 4] = [WEBHOOK, SLACK, EMAIL, PAGERDUTY];
}
