//! Deployment gates. Each refusal names the gate and the reason, so the person (or pipeline)
//! refused knows what to fix.

use chrono::{DateTime, Utc};
use rp_identity::{Principal, Role};
use serde::{Deserialize, Serialize};

/// A gate said no.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    pub gate: &'static str,
    pub reason: String,
}

impl Refusal {
    fn new(gate: &'static str, reason: impl Into<String>) -> Self {
        Self { gate, reason: reason.into() }
    }
}

impl std::fmt::Display for Refusal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "gate {} refused: {}", self.gate, self.reason)
    }
}

/// A minimum a quality check must meet in an environment.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Threshold {
    pub check: String,
    /// `gte`, `lte`, `eq` or `passed`.
    pub operator: String,
    #[serde(default)]
    pub value: f64,
}

impl Threshold {
    pub fn validate(&self) -> Result<(), String> {
        if self.check.trim().is_empty() || self.check.len() > 100 {
            return Err("a threshold needs a check name of at most 100 characters".into());
        }
        if !matches!(self.operator.as_str(), "gte" | "lte" | "eq" | "passed") {
            return Err(format!(
                "threshold operator must be gte, lte, eq or passed, not {:?}",
                self.operator
            ));
        }
        if !self.value.is_finite() {
            return Err("threshold value must be a finite number".into());
        }
        Ok(())
    }

    fn describe(&self) -> String {
        match self.operator.as_str() {
            "gte" => format!("{} ≥ {}", self.check, self.value),
            "lte" => format!("{} ≤ {}", self.check, self.value),
            "eq" => format!("{} = {}", self.check, self.value),
            _ => format!("{} passed", self.check),
        }
    }
}

/// The latest result of one check.
#[derive(Debug, Clone, PartialEq)]
pub struct CheckResult {
    pub name: String,
    pub status: String,
    pub value: Option<f64>,
}

/// Who may deploy here: the environment's deployer roles; hotfixes only incident commanders.
pub fn deployer(
    principal: &Principal,
    deployer_roles: &[Role],
    hotfix: bool,
    environment: &str,
) -> Result<(), Refusal> {
    if hotfix {
        return principal
            .require_any(&[Role::IncidentCommander])
            .map_err(|_| Refusal::new("authority", "only an incident commander may run a hotfix"));
    }
    principal.require_any(deployer_roles).map_err(|_| {
        Refusal::new(
            "authority",
            format!("deploying to {environment} needs one of the roles {}", Role::join(deployer_roles)),
        )
    })
}

/// A release enters an environment only after succeeding in the previous one (hotfixes skip).
pub fn promotion_order(
    previous_environment: Option<&str>,
    succeeded_there: bool,
    hotfix: bool,
    version: &str,
) -> Result<(), Refusal> {
    match previous_environment {
        Some(previous) if !hotfix && !succeeded_there => Err(Refusal::new(
            "promotion_order",
            format!("{version} has not been deployed successfully to {previous} yet"),
        )),
        _ => Ok(()),
    }
}

/// Every threshold must be met by the latest result of its check (hotfixes skip).
pub fn quality(thresholds: &[Threshold], results: &[CheckResult], hotfix: bool) -> Result<(), Refusal> {
    if hotfix {
        return Ok(());
    }
    let mut failures = Vec::new();
    for threshold in thresholds {
        let Some(result) = results.iter().find(|r| r.name == threshold.check) else {
            failures.push(format!("no result for {} (needs {})", threshold.check, threshold.describe()));
            continue;
        };
        let met = match threshold.operator.as_str() {
            "passed" => result.status == "passed",
            op => match result.value {
                Some(v) if result.status != "failed" => match op {
                    "gte" => v >= threshold.value,
                    "lte" => v <= threshold.value,
                    _ => (v - threshold.value).abs() < f64::EPSILON,
                },
                _ => false,
            },
        };
        if !met {
            let got = match result.value {
                Some(v) => format!("{} is {v} ({})", result.name, result.status),
                None => format!("{} is {}", result.name, result.status),
            };
            failures.push(format!("{got}, needs {}", threshold.describe()));
        }
    }
    if failures.is_empty() { Ok(()) } else { Err(Refusal::new("quality", failures.join("; "))) }
}

/// A freeze window covering `now` refuses everything but hotfixes.
pub fn freeze(active: Option<(&str, DateTime<Utc>)>, hotfix: bool) -> Result<(), Refusal> {
    match active {
        Some((reason, ends_at)) if !hotfix => Err(Refusal::new(
            "freeze",
            format!(
                "deployments are frozen until {} ({reason}); only hotfixes may proceed",
                ends_at.to_rfc3339()
            ),
        )),
        _ => Ok(()),
    }
}

/// Approvers need an approver role, and nobody approves their own deployment.
pub fn approver(
    principal: &Principal,
    approver_roles: &[Role],
    deployment_creator: &str,
) -> Result<(), Refusal> {
    principal.require_any(approver_roles).map_err(|_| {
        Refusal::new(
            "approval",
            format!("approving here needs one of the roles {}", Role::join(approver_roles)),
        )
    })?;
    if principal.subject == deployment_creator || principal.actor_id() == deployment_creator {
        return Err(Refusal::new("approval", "four-eyes: nobody approves their own deployment"));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn principal(roles: &[Role]) -> Principal {
        Principal { roles: roles.to_vec(), subject: "u1".into(), ..Principal::system() }
    }

    fn threshold(check: &str, operator: &str, value: f64) -> Threshold {
        Threshold { check: check.into(), operator: operator.into(), value }
    }

    fn result(name: &str, status: &str, value: Option<f64>) -> CheckResult {
        CheckResult { name: name.into(), status: status.into(), value }
    }

    #[test]
    fn quality_thresholds_compare_the_latest_results() {
        let thresholds = [
            threshold("coverage", "gte", 90.0),
            threshold("high_vulnerabilities", "eq", 0.0),
            threshold("e2e", "passed", 0.0),
        ];
        let good = [
            result("coverage", "passed", Some(92.5)),
            result("high_vulnerabilities", "passed", Some(0.0)),
            result("e2e", "passed", None),
        ];
        assert!(quality(&thresholds, &good, false).is_ok());
        let bad =
            [result("coverage", "passed", Some(80.0)), result("high_vulnerabilities", "failed", Some(2.0))];
        let refusal = quality(&thresholds, &bad, false).unwrap_err();
        assert_eq!(refusal.gate, "quality");
        assert!(refusal.reason.contains("coverage is 80"), "{refusal}");
        assert!(refusal.reason.contains("high_vulnerabilities is 2"), "{refusal}");
        assert!(refusal.reason.contains("no result for e2e"), "{refusal}");
        assert!(quality(&thresholds, &bad, true).is_ok(), "hotfixes skip quality gates");
        assert!(threshold("x", "approx", 1.0).validate().is_err());
    }

    #[test]
    fn authority_order_freeze_and_four_eyes() {
        let developer = principal(&[Role::Developer]);
        assert!(deployer(&developer, &[Role::Developer, Role::ReleaseManager], false, "staging").is_ok());
        assert!(
            deployer(&developer, &[Role::ReleaseManager], false, "prod")
                .unwrap_err()
                .reason
                .contains("release_manager")
        );
        assert!(
            deployer(&developer, &[Role::Developer], true, "prod")
                .unwrap_err()
                .reason
                .contains("incident commander")
        );
        assert!(
            deployer(&principal(&[Role::IncidentCommander]), &[Role::ReleaseManager], true, "prod").is_ok()
        );

        assert_eq!(
            promotion_order(Some("staging"), false, false, "1.2.0").unwrap_err().gate,
            "promotion_order"
        );
        assert!(promotion_order(Some("staging"), false, true, "1.2.0").is_ok());
        assert!(promotion_order(None, false, false, "1.2.0").is_ok());

        let ends = Utc::now();
        assert_eq!(freeze(Some(("holiday", ends)), false).unwrap_err().gate, "freeze");
        assert!(freeze(Some(("holiday", ends)), true).is_ok());

        let manager = Principal { subject: "rm".into(), ..principal(&[Role::ReleaseManager]) };
        assert!(approver(&manager, &[Role::ReleaseManager], "someone-else").is_ok());
        assert!(approver(&manager, &[Role::ReleaseManager], "rm").unwrap_err().reason.contains("four-eyes"));
        assert!(approver(&developer, &[Role::ReleaseManager], "x").is_err());
    }
}
