//! Metric names of the notifier. Dashboards and alert rules use exactly these.

use metrics::{Unit, describe_counter, describe_histogram};

/// Attempts by channel (name), kind and result (success, failure, rate_limited, gone, refused).
pub const NOTIFICATIONS_SENT_TOTAL: &str = "rp_notifications_sent_total";
/// Source event to the receiver's acceptance, by channel kind.
pub const NOTIFICATION_LATENCY_SECONDS: &str = "rp_notification_latency_seconds";
/// One attempt, send to answer, by channel kind.
pub const ATTEMPT_DURATION_SECONDS: &str = "rp_notification_attempt_duration_seconds";
/// Deliveries that became dead letters, by channel kind and reason.
pub const DEAD_LETTERS_TOTAL: &str = "rp_notification_dead_letters_total";
/// Escalation transitions (started, level_fired, acknowledged, resolved, exhausted).
pub const ESCALATIONS_TOTAL: &str = "rp_escalations_total";

pub fn describe() {
    describe_counter!(
        NOTIFICATIONS_SENT_TOTAL,
        "Notification delivery attempts, by channel, kind and result"
    );
    describe_histogram!(
        NOTIFICATION_LATENCY_SECONDS,
        Unit::Seconds,
        "Source event to delivered notification, by channel kind"
    );
    describe_histogram!(ATTEMPT_DURATION_SECONDS, Unit::Seconds, "One delivery attempt, by channel kind");
    describe_counter!(DEAD_LETTERS_TOTAL, "Deliveries that became dead letters, by channel kind and reason");
    describe_counter!(ESCALATIONS_TOTAL, "Escalation transitions, by transition");
}
