//! Metric names of the release service. Dashboards and alert rules use exactly these.

use metrics::{Unit, describe_counter, describe_gauge, describe_histogram};

pub const DEPLOYMENTS_TOTAL: &str = "rp_deployments_total";
pub const DEPLOYMENT_DURATION_SECONDS: &str = "rp_deployment_duration_seconds";
pub const ROLLBACKS_TOTAL: &str = "rp_rollbacks_total";
pub const DORA_DEPLOYMENT_FREQUENCY: &str = "rp_dora_deployment_frequency_per_day";
pub const DORA_LEAD_TIME_SECONDS: &str = "rp_dora_lead_time_seconds";
pub const DORA_CHANGE_FAILURE_RATE: &str = "rp_dora_change_failure_ratio";
pub const DORA_TIME_TO_RESTORE_SECONDS: &str = "rp_dora_time_to_restore_seconds";

pub fn describe() {
    describe_counter!(
        DEPLOYMENTS_TOTAL,
        "Deployments that reached a final state, by app, env, strategy and result"
    );
    describe_histogram!(
        DEPLOYMENT_DURATION_SECONDS,
        Unit::Seconds,
        "Start to final state of deployments, by app, env and strategy"
    );
    describe_counter!(ROLLBACKS_TOTAL, "Rollbacks, by app, env and trigger (manual or the rule that fired)");
    describe_gauge!(
        DORA_DEPLOYMENT_FREQUENCY,
        "Successful production deployments per day over 30 days, by app and env"
    );
    describe_gauge!(
        DORA_LEAD_TIME_SECONDS,
        Unit::Seconds,
        "Median first commit to production success over 30 days"
    );
    describe_gauge!(
        DORA_CHANGE_FAILURE_RATE,
        "Share of production changes rolled back, failed or followed by a hotfix, 30 days"
    );
    describe_gauge!(
        DORA_TIME_TO_RESTORE_SECONDS,
        Unit::Seconds,
        "Median failure detected to restored over 30 days"
    );
}
