//! Output for people (tables, text) and for scripts (`--output json`).

use comfy_table::{Table, presets::UTF8_FULL_CONDENSED};
use rp_proto::{notifier::v1 as notifier_pb, release::v1 as pb};
use serde::Serialize;

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    Table,
    Json,
}

fn time(ts: &Option<rp_proto::Timestamp>) -> Option<String> {
    ts.as_ref()
        .and_then(|t| chrono::DateTime::from_timestamp(t.seconds, t.nanos.max(0) as u32))
        .map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true))
}

#[derive(Serialize)]
pub struct ReleaseOut {
    pub id: String,
    pub app: String,
    pub version: String,
    pub bump: String,
    pub artifact_image: String,
    pub artifact_digest: String,
    pub commits: usize,
    pub changelog: String,
    pub created_at: Option<String>,
}

impl From<&pb::Release> for ReleaseOut {
    fn from(r: &pb::Release) -> Self {
        Self {
            id: r.id.clone(),
            app: r.app.clone(),
            version: r.version.clone(),
            bump: r.bump.clone(),
            artifact_image: r.artifact_image.clone(),
            artifact_digest: r.artifact_digest.clone(),
            commits: r.commits.len(),
            changelog: r.changelog.clone(),
            created_at: time(&r.created_at),
        }
    }
}

#[derive(Serialize)]
pub struct StepOut {
    pub index: i32,
    pub kind: String,
    pub weight: i32,
    pub hold_seconds: i64,
    pub status: String,
}

#[derive(Serialize)]
pub struct DeploymentOut {
    pub id: String,
    pub app: String,
    pub environment: String,
    pub version: String,
    pub previous_version: String,
    pub strategy: String,
    pub state: String,
    pub phase: String,
    pub weight: i32,
    pub current_step: i32,
    pub steps: Vec<StepOut>,
    pub approvals: usize,
    pub required_approvals: i32,
    pub failure_reason: String,
    pub revision: i64,
    pub created_at: Option<String>,
    pub finished_at: Option<String>,
}

impl From<&pb::Deployment> for DeploymentOut {
    fn from(d: &pb::Deployment) -> Self {
        Self {
            id: d.id.clone(),
            app: d.app.clone(),
            environment: d.environment.clone(),
            version: d.version.clone(),
            previous_version: d.previous_version.clone(),
            strategy: d.strategy.clone(),
            state: d.state.clone(),
            phase: d.phase.clone(),
            weight: d.weight,
            current_step: d.current_step,
            steps: d
                .steps
                .iter()
                .map(|s| StepOut {
                    index: s.index,
                    kind: s.kind.clone(),
                    weight: s.weight,
                    hold_seconds: s.hold_seconds,
                    status: s.status.clone(),
                })
                .collect(),
            approvals: d.approvals.iter().filter(|a| a.decision == "approved").count(),
            required_approvals: d.required_approvals,
            failure_reason: d.failure_reason.clone(),
            revision: d.revision,
            created_at: time(&d.created_at),
            finished_at: time(&d.finished_at),
        }
    }
}

#[derive(Serialize)]
pub struct StatusOut {
    pub app: String,
    pub environment: String,
    pub version: String,
    pub deployed_at: Option<String>,
    pub in_flight: Option<DeploymentOut>,
}

pub fn print_json(value: &impl Serialize) -> anyhow::Result<()> {
    println!("{}", serde_json::to_string_pretty(value)?);
    Ok(())
}

pub fn print_release(format: Format, release: &pb::Release) -> anyhow::Result<()> {
    match format {
        Format::Json => print_json(&ReleaseOut::from(release)),
        Format::Table => {
            println!(
                "{} {} ({}, {} commits)",
                release.app,
                release.version,
                release.bump,
                release.commits.len()
            );
            if !release.changelog.is_empty() {
                println!("\n{}", release.changelog.trim_end());
            }
            Ok(())
        }
    }
}

pub fn print_deployment(format: Format, deployment: &pb::Deployment) -> anyhow::Result<()> {
    match format {
        Format::Json => print_json(&DeploymentOut::from(deployment)),
        Format::Table => {
            let mut line = format!(
                "deployment {} · {} {} → {} · {} · {}",
                deployment.id,
                deployment.app,
                deployment.version,
                deployment.environment,
                deployment.strategy,
                deployment.state
            );
            if !deployment.phase.is_empty() {
                line.push_str(&format!(
                    " ({}, {}% on {})",
                    deployment.phase, deployment.weight, deployment.version
                ));
            }
            if deployment.state == "awaiting_approval" {
                line.push_str(&format!(
                    " · approvals {}/{}",
                    deployment.approvals.len(),
                    deployment.required_approvals
                ));
            }
            println!("{line}");
            if !deployment.failure_reason.is_empty() {
                println!("reason: {}", deployment.failure_reason);
            }
            Ok(())
        }
    }
}

pub fn print_status(format: Format, status: &pb::StatusResponse) -> anyhow::Result<()> {
    match format {
        Format::Json => {
            let entries: Vec<StatusOut> = status
                .entries
                .iter()
                .map(|e| StatusOut {
                    app: e.app.clone(),
                    environment: e.environment.clone(),
                    version: e.version.clone(),
                    deployed_at: time(&e.deployed_at),
                    in_flight: e.active.as_ref().map(DeploymentOut::from),
                })
                .collect();
            print_json(&entries)
        }
        Format::Table => {
            let mut table = Table::new();
            table.load_preset(UTF8_FULL_CONDENSED).set_header([
                "APP",
                "ENVIRONMENT",
                "VERSION",
                "DEPLOYED",
                "IN FLIGHT",
            ]);
            for entry in &status.entries {
                let in_flight = entry
                    .active
                    .as_ref()
                    .map(|d| format!("{} {} {}% ({})", d.version, d.state, d.weight, d.strategy))
                    .unwrap_or_default();
                table.add_row([
                    entry.app.clone(),
                    entry.environment.clone(),
                    if entry.version.is_empty() { "—".into() } else { entry.version.clone() },
                    time(&entry.deployed_at).unwrap_or_default(),
                    in_flight,
                ]);
            }
            println!("{table}");
            Ok(())
        }
    }
}

#[derive(Serialize)]
struct EscalationOut {
    id: String,
    incident_id: String,
    policy: String,
    app: String,
    environment: String,
    summary: String,
    status: String,
    levels_fired: i32,
    levels: i32,
    acknowledged_at: Option<String>,
    acknowledged_by: String,
}

pub fn print_escalation(format: Format, escalation: &notifier_pb::Escalation) -> anyhow::Result<()> {
    match format {
        Format::Json => print_json(&EscalationOut {
            id: escalation.id.clone(),
            incident_id: escalation.incident_id.clone(),
            policy: escalation.policy_name.clone(),
            app: escalation.app.clone(),
            environment: escalation.environment.clone(),
            summary: escalation.summary.clone(),
            status: escalation.status.clone(),
            levels_fired: escalation.levels_fired,
            levels: escalation.levels,
            acknowledged_at: time(&escalation.acknowledged_at),
            acknowledged_by: escalation.acknowledged_by.clone(),
        }),
        Format::Table => {
            println!(
                "escalation {} · incident {} ({} in {}) · {} · {} of {} levels fired · {}",
                escalation.id,
                escalation.incident_id,
                escalation.app,
                escalation.environment,
                escalation.policy_name,
                escalation.levels_fired,
                escalation.levels,
                escalation.status
            );
            if !escalation.acknowledged_by.is_empty() {
                println!("acknowledged by {}", escalation.acknowledged_by);
            }
            Ok(())
        }
    }
}
