//! DORA metrics of one app in one environment over a window. The formulas (also in
//! docs/architecture.md):
//!
//! - **deployments**: non-rollback deployments that reached traffic (`started_at` in the window)
//!   and finished; **deployment frequency** = succeeded ones / window days.
//! - **lead time for changes**: median of (deployment finished − first commit of its release)
//!   over succeeded deployments in the window.
//! - **change failure rate**: failed changes / deployments, where a change failed when its
//!   deployment failed or was rolled back, or when the next deployment of the same app in the
//!   same environment is a hotfix or a rollback.
//! - **time to restore**: median of (restored − failure detected) over failed changes; a failed or
//!   rolled-back deployment records both times itself (rollback requested → traffic restored),
//!   a change remedied by a hotfix counts from the hotfix's creation to its success.

use chrono::{DateTime, Utc};

use super::plan::state;

/// The facts DORA needs about one deployment.
#[derive(Debug, Clone, PartialEq)]
pub struct Record {
    pub strategy: String,
    pub state: String,
    pub created_at: DateTime<Utc>,
    pub started_at: Option<DateTime<Utc>>,
    pub finished_at: Option<DateTime<Utc>>,
    pub first_commit_at: Option<DateTime<Utc>>,
    pub failure_detected_at: Option<DateTime<Utc>>,
    pub restored_at: Option<DateTime<Utc>>,
}

#[derive(Debug, Clone, PartialEq, Default)]
pub struct Figures {
    pub deployments: i64,
    pub deployment_frequency_per_day: f64,
    pub lead_time_seconds: f64,
    pub failed_changes: i64,
    pub change_failure_rate: f64,
    pub time_to_restore_seconds: f64,
    pub restorations: i64,
}

fn median(mut values: Vec<f64>) -> f64 {
    if values.is_empty() {
        return 0.0;
    }
    values.sort_by(f64::total_cmp);
    let middle = values.len() / 2;
    if values.len() % 2 == 1 { values[middle] } else { (values[middle - 1] + values[middle]) / 2.0 }
}

fn seconds(from: DateTime<Utc>, to: DateTime<Utc>) -> f64 {
    (to - from).num_milliseconds().max(0) as f64 / 1000.0
}

/// `records` are all deployments of one app in one environment, in creation order.
pub fn compute(records: &[Record], since: DateTime<Utc>, until: DateTime<Utc>, window_days: i32) -> Figures {
    let in_window = |r: &Record| r.started_at.is_some_and(|at| at >= since && at < until);
    let finished =
        |r: &Record| state::is_final(&r.state) && r.state != state::SUPERSEDED && r.state != state::ABORTED;
    let mut deployments = 0;
    let mut succeeded = 0;
    let mut lead_times = Vec::new();
    let mut failed = 0;
    let mut restore_times = Vec::new();
    for (i, record) in records.iter().enumerate() {
        if record.strategy == "rollback" || !in_window(record) || !finished(record) {
            continue;
        }
        deployments += 1;
        let next = records[i + 1..].iter().find(|r| r.started_at.is_some());
        if record.state == state::SUCCEEDED {
            succeeded += 1;
            if let (Some(first), Some(done)) = (record.first_commit_at, record.finished_at) {
                lead_times.push(seconds(first, done));
            }
        }
        let failed_itself = record.state == state::FAILED || record.state == state::ROLLED_BACK;
        let remedied_by_next = next.filter(|n| n.strategy == "hotfix" || n.strategy == "rollback");
        if failed_itself {
            failed += 1;
            if let (Some(detected), Some(restored)) = (record.failure_detected_at, record.restored_at) {
                restore_times.push(seconds(detected, restored));
            }
        } else if let Some(remedy) = remedied_by_next {
            failed += 1;
            if remedy.state == state::SUCCEEDED
                && let Some(done) = remedy.finished_at
            {
                restore_times.push(seconds(remedy.created_at, done));
            }
        }
    }
    let days = f64::from(window_days.max(1));
    Figures {
        deployments,
        deployment_frequency_per_day: succeeded as f64 / days,
        lead_time_seconds: median(lead_times),
        failed_changes: failed,
        change_failure_rate: if deployments == 0 { 0.0 } else { failed as f64 / deployments as f64 },
        restorations: restore_times.len() as i64,
        time_to_restore_seconds: median(restore_times),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(hours: i64) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339("2026-11-01T00:00:00Z").unwrap().with_timezone(&Utc)
            + chrono::Duration::hours(hours)
    }

    fn deploy(strategy: &str, state: &str, start: i64, minutes: i64, commit_hours_before: i64) -> Record {
        Record {
            strategy: strategy.into(),
            state: state.into(),
            created_at: at(start),
            started_at: Some(at(start)),
            finished_at: Some(at(start) + chrono::Duration::minutes(minutes)),
            first_commit_at: Some(at(start - commit_hours_before)),
            failure_detected_at: None,
            restored_at: None,
        }
    }

    #[test]
    fn a_scripted_history_gives_the_expected_figures() {
        let mut rolled_back = deploy("canary", state::ROLLED_BACK, 48, 20, 10);
        rolled_back.failure_detected_at = Some(at(48) + chrono::Duration::minutes(10));
        rolled_back.restored_at =
            Some(at(48) + chrono::Duration::minutes(10) + chrono::Duration::seconds(30));
        let history = vec![
            deploy("canary", state::SUCCEEDED, 0, 30, 4),       // lead 4h30m
            deploy("canary", state::SUCCEEDED, 24, 30, 2),      // lead 2h30m, then fixed by a hotfix
            deploy("hotfix", state::SUCCEEDED, 30, 15, 1),      // lead 1h15m; restores in 15 min
            rolled_back,                                        // fails; restores in 30 s
            deploy("rollback", state::SUCCEEDED, 48, 1, 0),     // not a change
            deploy("all_at_once", state::SUCCEEDED, 72, 10, 8), // lead 8h10m
            deploy("canary", state::SUPERSEDED, 90, 0, 1),      // never counted
            deploy("canary", state::SUCCEEDED, 24 * 40, 10, 1), // outside the window
        ];
        let figures = compute(&history, at(0), at(24 * 30), 30);
        assert_eq!(figures.deployments, 5);
        assert!((figures.deployment_frequency_per_day - 4.0 / 30.0).abs() < 1e-9);
        // Leads: 1h15m, 2h30m, 4h30m, 8h10m → median (2h30m + 4h30m) / 2 = 3h30m.
        assert_eq!(figures.lead_time_seconds, 3.5 * 3600.0);
        assert_eq!(figures.failed_changes, 2);
        assert!((figures.change_failure_rate - 0.4).abs() < 1e-9);
        assert_eq!(figures.restorations, 2);
        // Restores: 30 s and 15 min → median 465 s.
        assert_eq!(figures.time_to_restore_seconds, 465.0);
    }

    #[test]
    fn no_history_is_all_zero() {
        assert_eq!(compute(&[], at(0), at(1), 30), Figures::default());
    }
}
