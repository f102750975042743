//! Deployment plans: every strategy becomes a list of steps the engine walks through, so one
//! state machine runs canary, blue-green, all-at-once, hotfix and rollback deployments.

use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Strategy {
    AllAtOnce,
    Canary,
    BlueGreen,
    Hotfix,
    /// Restoring an earlier release (recorded as a deployment of its own).
    Rollback,
}

impl Strategy {
    pub fn as_str(self) -> &'static str {
        match self {
            Strategy::AllAtOnce => "all_at_once",
            Strategy::Canary => "canary",
            Strategy::BlueGreen => "blue_green",
            Strategy::Hotfix => "hotfix",
            Strategy::Rollback => "rollback",
        }
    }

    pub fn parse(text: &str) -> Result<Self, String> {
        match text {
            "all_at_once" => Ok(Strategy::AllAtOnce),
            "canary" => Ok(Strategy::Canary),
            "blue_green" => Ok(Strategy::BlueGreen),
            "hotfix" => Ok(Strategy::Hotfix),
            other => {
                Err(format!("unknown strategy {other:?}; use all_at_once, canary, blue_green or hotfix"))
            }
        }
    }
}

/// What a step does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum StepKind {
    /// Send `weight` percent of traffic to the new version, then hold.
    Weight,
    /// Blue-green: wait for an approval before switching.
    Approval,
    /// Blue-green: switch all traffic at once, then keep the old version warm for the hold.
    Switch,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum StepStatus {
    Pending,
    Running,
    Completed,
    Skipped,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Step {
    pub kind: StepKind,
    pub weight: i32,
    pub hold_seconds: i64,
    pub analysis: bool,
    pub status: StepStatus,
    pub started_at: Option<DateTime<Utc>>,
    pub completed_at: Option<DateTime<Utc>>,
}

impl Step {
    fn new(kind: StepKind, weight: i32, hold: i64, analysis: bool) -> Self {
        Self {
            kind,
            weight,
            hold_seconds: hold,
            analysis,
            status: StepStatus::Pending,
            started_at: None,
            completed_at: None,
        }
    }

    pub fn hold(&self) -> Duration {
        Duration::from_secs(self.hold_seconds.max(0) as u64)
    }
}

/// A canary step as users give it.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct CanaryStep {
    pub weight: i32,
    pub hold_seconds: i64,
    pub analysis: bool,
}

/// The seed's canary: 5% for 10 min, 25% for 30 min, 75% for 60 min, then 100%.
pub fn default_canary() -> Vec<CanaryStep> {
    vec![
        CanaryStep { weight: 5, hold_seconds: 600, analysis: true },
        CanaryStep { weight: 25, hold_seconds: 1800, analysis: true },
        CanaryStep { weight: 75, hold_seconds: 3600, analysis: true },
        CanaryStep { weight: 100, hold_seconds: 0, analysis: false },
    ]
}

/// Strategy parameters beyond the steps.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct PlanOptions {
    pub verification_seconds: i64,
    pub pre_promotion_seconds: i64,
    pub approval_before_switch: bool,
    pub rollback_window_seconds: i64,
}

impl Default for PlanOptions {
    fn default() -> Self {
        // Verification 5 min, pre-promotion 5 min, blue kept warm 10 min.
        Self {
            verification_seconds: 300,
            pre_promotion_seconds: 300,
            approval_before_switch: false,
            rollback_window_seconds: 600,
        }
    }
}

/// Maximum length of one hold: a week (a longer one is almost certainly a unit mistake).
const MAX_HOLD_SECONDS: i64 = 7 * 24 * 3600;

/// Checks user-given canary steps: weights strictly increase within 1-100, holds are sane.
pub fn validate_canary(steps: &[CanaryStep]) -> Result<(), String> {
    if steps.is_empty() || steps.len() > 20 {
        return Err("a canary needs 1 to 20 steps".into());
    }
    let mut previous = 0;
    for (i, step) in steps.iter().enumerate() {
        if !(1..=100).contains(&step.weight) {
            return Err(format!("step {i}: weight must be between 1 and 100, not {}", step.weight));
        }
        if step.weight <= previous {
            return Err(format!("step {i}: weights must increase ({} after {previous})", step.weight));
        }
        if !(0..=MAX_HOLD_SECONDS).contains(&step.hold_seconds) {
            return Err(format!("step {i}: hold_seconds must be between 0 and {MAX_HOLD_SECONDS}"));
        }
        previous = step.weight;
    }
    Ok(())
}

fn check_seconds(name: &str, value: i64) -> Result<(), String> {
    if (0..=MAX_HOLD_SECONDS).contains(&value) {
        Ok(())
    } else {
        Err(format!("{name} must be between 0 and {MAX_HOLD_SECONDS} seconds"))
    }
}

/// Builds the steps of a deployment.
pub fn build(strategy: Strategy, canary: &[CanaryStep], options: PlanOptions) -> Result<Vec<Step>, String> {
    check_seconds("verification_seconds", options.verification_seconds)?;
    check_seconds("pre_promotion_seconds", options.pre_promotion_seconds)?;
    check_seconds("rollback_window_seconds", options.rollback_window_seconds)?;
    Ok(match strategy {
        Strategy::Canary => {
            validate_canary(canary)?;
            let mut steps: Vec<Step> = canary
                .iter()
                .map(|s| Step::new(StepKind::Weight, s.weight, s.hold_seconds, s.analysis))
                .collect();
            // A canary always ends with all traffic on the new version.
            if steps.last().is_some_and(|s| s.weight != 100) {
                steps.push(Step::new(StepKind::Weight, 100, 0, false));
            }
            steps
        }
        Strategy::AllAtOnce | Strategy::Hotfix => {
            vec![Step::new(StepKind::Weight, 100, options.verification_seconds, true)]
        }
        Strategy::BlueGreen => {
            let mut steps = vec![Step::new(StepKind::Weight, 0, options.pre_promotion_seconds, true)];
            if options.approval_before_switch {
                steps.push(Step::new(StepKind::Approval, 0, 0, false));
            }
            steps.push(Step::new(StepKind::Switch, 100, options.rollback_window_seconds, true));
            steps
        }
        Strategy::Rollback => vec![Step::new(StepKind::Weight, 100, 0, false)],
    })
}

/// Deployment states.
pub mod state {
    pub const PENDING: &str = "pending";
    pub const AWAITING_APPROVAL: &str = "awaiting_approval";
    pub const IN_PROGRESS: &str = "in_progress";
    pub const SUCCEEDED: &str = "succeeded";
    pub const FAILED: &str = "failed";
    pub const ROLLED_BACK: &str = "rolled_back";
    pub const ABORTED: &str = "aborted";
    pub const SUPERSEDED: &str = "superseded";

    /// States that hold the app × environment slot.
    pub const ACTIVE: [&str; 3] = [PENDING, AWAITING_APPROVAL, IN_PROGRESS];

    pub fn is_final(state: &str) -> bool {
        matches!(state, SUCCEEDED | FAILED | ROLLED_BACK | ABORTED | SUPERSEDED)
    }
}

/// Phases within `in_progress`.
pub mod phase {
    pub const NONE: &str = "";
    /// The driver is applying the current step.
    pub const APPLYING: &str = "applying";
    /// The driver accepted the step and reports completion later (callback or polling).
    pub const AWAITING_DRIVER: &str = "awaiting_driver";
    /// Traffic is at the step's weight; the hold runs.
    pub const HOLDING: &str = "holding";
    /// Holding with health analysis running (steps with `analysis`).
    pub const ANALYZING: &str = "analyzing";
    /// Blue-green: waiting for the switch approval.
    pub const AWAITING_APPROVAL: &str = "awaiting_approval";
    pub const PAUSED: &str = "paused";
}

#[cfg(test)]
mod tests {
    use super::*;

    fn canary(spec: &[(i32, i64)]) -> Vec<CanaryStep> {
        spec.iter().map(|(w, h)| CanaryStep { weight: *w, hold_seconds: *h, analysis: true }).collect()
    }

    #[test]
    fn each_strategy_becomes_steps() {
        let options = PlanOptions {
            verification_seconds: 2,
            pre_promotion_seconds: 3,
            approval_before_switch: true,
            rollback_window_seconds: 4,
        };
        let weights =
            |steps: Vec<Step>| steps.iter().map(|s| (s.kind, s.weight, s.hold_seconds)).collect::<Vec<_>>();
        assert_eq!(
            weights(build(Strategy::Canary, &canary(&[(5, 1), (50, 1)]), options).unwrap()),
            vec![(StepKind::Weight, 5, 1), (StepKind::Weight, 50, 1), (StepKind::Weight, 100, 0)]
        );
        assert_eq!(
            weights(build(Strategy::AllAtOnce, &[], options).unwrap()),
            vec![(StepKind::Weight, 100, 2)]
        );
        assert_eq!(
            weights(build(Strategy::BlueGreen, &[], options).unwrap()),
            vec![(StepKind::Weight, 0, 3), (StepKind::Approval, 0, 0), (StepKind::Switch, 100, 4)]
        );
        let seed = build(Strategy::Canary, &default_canary(), PlanOptions::default()).unwrap();
        assert_eq!(
            seed.iter().map(|s| (s.weight, s.hold_seconds)).collect::<Vec<_>>(),
            vec![(5, 600), (25, 1800), (75, 3600), (100, 0)]
        );
    }

    #[test]
    fn bad_canaries_are_refused_with_the_step_named() {
        assert!(validate_canary(&[]).is_err());
        assert!(validate_canary(&canary(&[(0, 1)])).unwrap_err().contains("step 0"));
        assert!(validate_canary(&canary(&[(50, 1), (20, 1)])).unwrap_err().contains("increase"));
        assert!(validate_canary(&canary(&[(10, -1)])).is_err());
        assert!(
            build(Strategy::AllAtOnce, &[], PlanOptions { verification_seconds: -5, ..Default::default() })
                .is_err()
        );
    }
}
