//! Thin tonic layer of the release service: authenticate, check the role, translate.

use std::{pin::Pin, sync::Arc, time::Duration};

use chrono::{DateTime, Utc};
use futures::Stream;
use rp_identity::{Authenticator, Principal, Role};
use rp_proto::release::v1::{self as pb, release_service_server::ReleaseService};
use rp_runtime::ServiceError;
use tonic::{Request, Response, Status};

use crate::{
    domain::{
        gates::Threshold,
        plan::{CanaryStep, state},
        versioning::CommitInput,
    },
    service::{
        AuditQuery, CreateDeployment, DeploymentView, NewRelease, QualityReport, ReleaseCore, RollbackTarget,
        catalog::{EnvironmentSpec, TargetSpec},
        deployments::{step_kind, step_status},
    },
    store::{apps, audit_log, environments, freeze_windows, quality_checks, releases, targets},
};

pub struct ReleaseGrpc {
    pub(crate) core: Arc<ReleaseCore>,
    pub(crate) authn: Authenticator,
}

fn ts(time: DateTime<Utc>) -> rp_proto::Timestamp {
    rp_proto::timestamp(time)
}

fn from_ts(field: &str, ts: Option<rp_proto::Timestamp>) -> Result<Option<DateTime<Utc>>, ServiceError> {
    match ts {
        None => Ok(None),
        Some(t) => DateTime::from_timestamp(t.seconds, t.nanos.max(0) as u32)
            .map(Some)
            .ok_or_else(|| ServiceError::Invalid(format!("{field} is out of range"))),
    }
}

fn page_token(token: &str) -> Result<Option<uuid::Uuid>, ServiceError> {
    match token {
        "" => Ok(None),
        token => rp_db::parse_page_token(token)
            .map(Some)
            .ok_or_else(|| ServiceError::Invalid("page_token is not valid".into())),
    }
}

fn non_empty(text: &str) -> Option<&str> {
    Some(text).filter(|t| !t.is_empty())
}

pub fn app_to_pb(app: &apps::Model) -> pb::App {
    pb::App {
        id: app.id.to_string(),
        name: app.name.clone(),
        description: app.description.clone(),
        owner_team: app.owner_team.clone(),
        created_at: Some(ts(app.created_at)),
        updated_at: Some(ts(app.updated_at)),
    }
}

fn thresholds_to_pb(json: &str) -> Vec<pb::QualityThreshold> {
    serde_json::from_str::<Vec<Threshold>>(json)
        .unwrap_or_default()
        .into_iter()
        .map(|t| pb::QualityThreshold { check: t.check, operator: t.operator, value: t.value })
        .collect()
}

fn thresholds_from_pb(list: &[pb::QualityThreshold]) -> Vec<Threshold> {
    list.iter()
        .map(|t| Threshold { check: t.check.clone(), operator: t.operator.clone(), value: t.value })
        .collect()
}

fn environment_to_pb(env: &environments::Model) -> pb::Environment {
    let roles = |text: &str| text.split(',').filter(|r| !r.is_empty()).map(str::to_owned).collect();
    pb::Environment {
        id: env.id.to_string(),
        name: env.name.clone(),
        position: env.position,
        production: env.production,
        deployer_roles: roles(&env.deployer_roles),
        required_approvals: env.required_approvals,
        approver_roles: roles(&env.approver_roles),
        quality_thresholds: thresholds_to_pb(&env.quality_thresholds),
        created_at: Some(ts(env.created_at)),
    }
}

fn steps_to_pb(json: &str) -> Vec<pb::CanaryStep> {
    serde_json::from_str::<Vec<CanaryStep>>(json)
        .unwrap_or_default()
        .into_iter()
        .map(|s| pb::CanaryStep { weight: s.weight, hold_seconds: s.hold_seconds, analysis: s.analysis })
        .collect()
}

fn steps_from_pb(steps: &[pb::CanaryStep]) -> Vec<CanaryStep> {
    steps
        .iter()
        .map(|s| CanaryStep { weight: s.weight, hold_seconds: s.hold_seconds, analysis: s.analysis })
        .collect()
}

fn target_to_pb(target: &targets::Model, app: String, env: String) -> pb::Target {
    pb::Target {
        id: target.id.to_string(),
        app,
        environment: env,
        driver: target.driver.clone(),
        driver_config_json: target.driver_config.clone(),
        default_strategy: target.default_strategy.clone(),
        canary_steps: steps_to_pb(&target.canary_steps),
        updated_at: Some(ts(target.updated_at)),
        has_secret: target.webhook_secret.is_some(),
    }
}

fn check_to_pb(check: &quality_checks::Model) -> pb::QualityCheck {
    pb::QualityCheck {
        id: check.id.to_string(),
        release_id: check.release_id.to_string(),
        name: check.name.clone(),
        status: check.status.clone(),
        value: check.value,
        url: check.url.clone(),
        reported_by: check.reported_by.clone(),
        reported_at: Some(ts(check.reported_at)),
    }
}

fn release_to_pb(release: &releases::Model, app: String, checks: &[quality_checks::Model]) -> pb::Release {
    let commits: Vec<CommitInput> = serde_json::from_str(&release.commits).unwrap_or_default();
    pb::Release {
        id: release.id.to_string(),
        app,
        version: release.version.clone(),
        artifact_image: release.artifact_image.clone(),
        artifact_digest: release.artifact_digest.clone(),
        commits: commits
            .into_iter()
            .map(|c| pb::Commit {
                sha: c.sha,
                message: c.message,
                author: c.author,
                timestamp: c.timestamp.map(ts),
            })
            .collect(),
        changelog: release.changelog.clone(),
        quality_checks: checks.iter().map(check_to_pb).collect(),
        created_by: release.created_by.clone(),
        created_at: Some(ts(release.created_at)),
        bump: release.bump.clone(),
        commit_count: release.commit_count,
    }
}

/// A release in the BASIC view: no commits, no changelog.
fn release_summary_to_pb(release: releases::Model, app: String) -> pb::Release {
    pb::Release {
        id: release.id.to_string(),
        app,
        version: release.version,
        artifact_image: release.artifact_image,
        artifact_digest: release.artifact_digest,
        commit_count: release.commit_count,
        created_by: release.created_by,
        created_at: Some(ts(release.created_at)),
        bump: release.bump,
        ..Default::default()
    }
}

pub fn deployment_to_pb(view: &DeploymentView) -> pb::Deployment {
    let row = &view.row;
    pb::Deployment {
        id: row.id.to_string(),
        app: view.app.clone(),
        environment: view.environment.clone(),
        release_id: row.release_id.to_string(),
        version: view.version.clone(),
        previous_version: view.previous_version.clone(),
        strategy: row.strategy.clone(),
        state: row.state.clone(),
        phase: row.phase.clone(),
        current_step: row.current_step,
        steps: view
            .steps
            .iter()
            .enumerate()
            .map(|(i, s)| pb::DeploymentStep {
                index: i as i32,
                kind: step_kind(s.kind).into(),
                weight: s.weight,
                hold_seconds: s.hold_seconds,
                analysis: s.analysis,
                status: step_status(s.status).into(),
                started_at: s.started_at.map(ts),
                completed_at: s.completed_at.map(ts),
            })
            .collect(),
        weight: row.weight,
        approvals: view
            .approvals
            .iter()
            .map(|a| pb::Approval {
                approver_id: a.approver_id.clone(),
                approver_email: a.approver_email.clone(),
                decision: a.decision.clone(),
                comment: a.comment.clone(),
                at: Some(ts(a.at)),
            })
            .collect(),
        required_approvals: row.required_approvals,
        created_by: row.created_by_email.clone(),
        created_at: Some(ts(row.created_at)),
        started_at: row.started_at.map(ts),
        finished_at: row.finished_at.map(ts),
        next_action_at: row.next_action_at.map(ts),
        failure_reason: row.failure_reason.clone(),
        revision: row.revision,
    }
}

fn freeze_to_pb(window: &freeze_windows::Model, env: String) -> pb::FreezeWindow {
    pb::FreezeWindow {
        id: window.id.to_string(),
        environment: env,
        starts_at: Some(ts(window.starts_at)),
        ends_at: Some(ts(window.ends_at)),
        reason: window.reason.clone(),
        created_by: window.created_by.clone(),
    }
}

fn audit_to_pb(row: &audit_log::Model) -> pb::AuditEntry {
    pb::AuditEntry {
        sequence: row.seq,
        id: row.id.to_string(),
        at: Some(ts(row.at)),
        actor_subject: row.actor_subject.clone(),
        actor_email: row.actor_email.clone(),
        actor_kind: row.actor_kind.clone(),
        request_id: row.request_id.clone(),
        action: row.action.clone(),
        resource_type: row.resource_type.clone(),
        resource_id: row.resource_id.clone(),
        before_json: row.before_json.clone(),
        after_json: row.after_json.clone(),
        previous_hash: row.prev_hash.clone(),
        hash: row.hash.clone(),
    }
}

fn new_release(body: pb::CreateReleaseRequest) -> Result<NewRelease, ServiceError> {
    let commits = body
        .commits
        .into_iter()
        .map(|c| {
            Ok(CommitInput {
                sha: c.sha,
                message: c.message,
                author: c.author,
                timestamp: from_ts("commit timestamp", c.timestamp)?,
            })
        })
        .collect::<Result<Vec<_>, ServiceError>>()?;
    Ok(NewRelease {
        app: body.app,
        version: body.version,
        commits,
        artifact_image: body.artifact_image,
        artifact_digest: body.artifact_digest,
        pre_release: body.pre_release,
        idempotency_key: body.idempotency_key,
    })
}

impl ReleaseGrpc {
    async fn caller<T>(&self, request: &Request<T>) -> Result<Principal, Status> {
        Ok(self.authn.authenticate(request.metadata()).await?)
    }

    async fn with_role<T>(&self, request: &Request<T>, roles: &[Role]) -> Result<Principal, Status> {
        Ok(self.authn.authorize(request.metadata(), roles).await?)
    }
}

type WatchStream = Pin<Box<dyn Stream<Item = Result<pb::Deployment, Status>> + Send>>;

#[tonic::async_trait]
impl ReleaseService for ReleaseGrpc {
    type WatchDeploymentStream = WatchStream;

    async fn create_app(&self, request: Request<pb::CreateAppRequest>) -> Result<Response<pb::App>, Status> {
        let actor = self.with_role(&request, &[Role::ReleaseManager]).await?;
        let body = request.into_inner();
        let app = self
            .core
            .create_app(&actor, body.name.trim(), &body.description, &body.owner_team, &body.idempotency_key)
            .await?;
        Ok(Response::new(app_to_pb(&app)))
    }

    async fn get_app(&self, request: Request<pb::GetAppRequest>) -> Result<Response<pb::App>, Status> {
        self.caller(&request).await?;
        Ok(Response::new(app_to_pb(&self.core.get_app(&request.into_inner().app).await?)))
    }

    async fn list_apps(
        &self,
        request: Request<pb::ListAppsRequest>,
    ) -> Result<Response<pb::ListAppsResponse>, Status> {
        self.caller(&request).await?;
        let body = request.into_inner();
        let (apps, next) = self
            .core
            .list_apps(rp_db::page_size(body.page_size, 50, 200), page_token(&body.page_token)?)
            .await?;
        Ok(Response::new(pb::ListAppsResponse {
            apps: apps.iter().map(app_to_pb).collect(),
            next_page_token: next.map(|id| id.to_string()).unwrap_or_default(),
        }))
    }

    async fn create_environment(
        &self,
        request: Request<pb::CreateEnvironmentRequest>,
    ) -> Result<Response<pb::Environment>, Status> {
        let actor = self.with_role(&request, &[Role::ReleaseManager]).await?;
        let body = request.into_inner();
        let spec = EnvironmentSpec {
            position: (body.position > 0).then_some(body.position),
            production: Some(body.production),
            deployer_roles: (!body.deployer_roles.is_empty()).then_some(body.deployer_roles),
            // 0 is "not given" in proto3: production environments then need one approval.
            required_approvals: (body.required_approvals > 0).then_some(body.required_approvals),
            approver_roles: (!body.approver_roles.is_empty()).then_some(body.approver_roles),
            quality_thresholds: Some(thresholds_from_pb(&body.quality_thresholds)),
        };
        let env = self.core.create_environment(&actor, body.name.trim(), spec, &body.idempotency_key).await?;
        Ok(Response::new(environment_to_pb(&env)))
    }

    async fn update_environment(
        &self,
        request: Request<pb::UpdateEnvironmentRequest>,
    ) -> Result<Response<pb::Environment>, Status> {
        let actor = self.with_role(&request, &[Role::ReleaseManager]).await?;
        let body = request.into_inner();
        let spec = EnvironmentSpec {
            position: body.position,
            production: body.production,
            deployer_roles: body.deployer_roles.map(|r| r.roles),
            required_approvals: body.required_approvals,
            approver_roles: body.approver_roles.map(|r| r.roles),
            quality_thresholds: body.quality_thresholds.map(|t| thresholds_from_pb(&t.thresholds)),
        };
        let env = self.core.update_environment(&actor, &body.environment, spec).await?;
        Ok(Response::new(environment_to_pb(&env)))
    }

    async fn list_environments(
        &self,
        request: Request<pb::ListEnvironmentsRequest>,
    ) -> Result<Response<pb::ListEnvironmentsResponse>, Status> {
        self.caller(&request).await?;
        let envs = self.core.list_environments().await?;
        Ok(Response::new(pb::ListEnvironmentsResponse {
            environments: envs.iter().map(environment_to_pb).collect(),
        }))
    }

    async fn put_target(
        &self,
        request: Request<pb::PutTargetRequest>,
    ) -> Result<Response<pb::PutTargetResponse>, Status> {
        let actor = self.with_role(&request, &[Role::ReleaseManager]).await?;
        let body = request.into_inner();
        let spec = TargetSpec {
            driver: body.driver,
            driver_config_json: if body.driver_config_json.is_empty() {
                "{}".into()
            } else {
                body.driver_config_json
            },
            default_strategy: body.default_strategy,
            canary_steps: steps_from_pb(&body.canary_steps),
            webhook_secret: body.webhook_secret,
        };
        let (target, generated) = self.core.put_target(&actor, &body.app, &body.environment, spec).await?;
        Ok(Response::new(pb::PutTargetResponse {
            target: Some(target_to_pb(&target, body.app, body.environment)),
            generated_secret: generated.unwrap_or_default(),
        }))
    }

    async fn list_targets(
        &self,
        request: Request<pb::ListTargetsRequest>,
    ) -> Result<Response<pb::ListTargetsResponse>, Status> {
        self.caller(&request).await?;
        let app = request.into_inner().app;
        let targets = self.core.list_targets(non_empty(&app)).await?;
        Ok(Response::new(pb::ListTargetsResponse {
            targets: targets.into_iter().map(|(t, a, e)| target_to_pb(&t, a, e)).collect(),
        }))
    }

    async fn create_release(
        &self,
        request: Request<pb::CreateReleaseRequest>,
    ) -> Result<Response<pb::Release>, Status> {
        let actor = self.with_role(&request, &[Role::Developer, Role::ReleaseManager]).await?;
        let body = new_release(request.into_inner())?;
        let app = body.app.clone();
        let release = self.core.create_release(&actor, body).await?;
        Ok(Response::new(release_to_pb(&release, app, &[])))
    }

    async fn preview_release(
        &self,
        request: Request<pb::CreateReleaseRequest>,
    ) -> Result<Response<pb::ReleasePreview>, Status> {
        self.caller(&request).await?;
        let preview = self.core.preview_release(&new_release(request.into_inner())?).await?;
        Ok(Response::new(pb::ReleasePreview {
            version: preview.version.to_string(),
            previous_version: preview.previous.map(|v| v.to_string()).unwrap_or_default(),
            bump: preview.bump,
            changelog: preview.changelog,
            ignored_commits: preview.ignored_commits as i32,
        }))
    }

    async fn get_release(
        &self,
        request: Request<pb::GetReleaseRequest>,
    ) -> Result<Response<pb::Release>, Status> {
        self.caller(&request).await?;
        let body = request.into_inner();
        let (release, app) = self.core.get_release(&body.id, &body.app, &body.version).await?;
        let checks = self.core.latest_checks(release.id).await?;
        Ok(Response::new(release_to_pb(&release, app, &checks)))
    }

    async fn list_releases(
        &self,
        request: Request<pb::ListReleasesRequest>,
    ) -> Result<Response<pb::ListReleasesResponse>, Status> {
        self.caller(&request).await?;
        let body = request.into_inner();
        let full = match pb::ReleaseView::try_from(body.view) {
            Ok(pb::ReleaseView::Unspecified | pb::ReleaseView::Basic) => false,
            Ok(pb::ReleaseView::Full) => true,
            Err(_) => {
                return Err(Status::invalid_argument(format!("view: unknown release view {}", body.view)));
            }
        };
        let (rows, next, app) = self
            .core
            .list_releases(
                &body.app,
                rp_db::page_size(body.page_size, 50, 200),
                page_token(&body.page_token)?,
                full,
            )
            .await?;
        Ok(Response::new(pb::ListReleasesResponse {
            releases: rows
                .into_iter()
                .map(|r| {
                    if full {
                        release_to_pb(&r, app.clone(), &[])
                    } else {
                        release_summary_to_pb(r, app.clone())
                    }
                })
                .collect(),
            next_page_token: next.map(|id| id.to_string()).unwrap_or_default(),
        }))
    }

    async fn report_quality_check(
        &self,
        request: Request<pb::ReportQualityCheckRequest>,
    ) -> Result<Response<pb::QualityCheck>, Status> {
        let actor = self.with_role(&request, &[Role::Qa, Role::Developer, Role::ReleaseManager]).await?;
        let body = request.into_inner();
        let report = QualityReport {
            app: body.app,
            version: body.version,
            name: body.name,
            status: body.status,
            value: body.value,
            url: body.url,
        };
        let check = self.core.report_quality_check(&actor, report).await?;
        Ok(Response::new(check_to_pb(&check)))
    }

    async fn create_deployment(
        &self,
        request: Request<pb::CreateDeploymentRequest>,
    ) -> Result<Response<pb::Deployment>, Status> {
        let actor = self.caller(&request).await?;
        let body = request.into_inner();
        let positive = |v: i64| (v > 0).then_some(v);
        let view = self
            .core
            .create_deployment(
                &actor,
                CreateDeployment {
                    app: body.app,
                    environment: body.environment,
                    version: body.version,
                    release_id: body.release_id,
                    strategy: body.strategy,
                    steps: steps_from_pb(&body.steps),
                    verification_seconds: positive(body.verification_seconds),
                    pre_promotion_seconds: positive(body.pre_promotion_seconds),
                    approval_before_switch: body.approval_before_switch,
                    rollback_window_seconds: positive(body.rollback_window_seconds),
                    idempotency_key: body.idempotency_key,
                },
            )
            .await?;
        Ok(Response::new(deployment_to_pb(&view)))
    }

    async fn get_deployment(
        &self,
        request: Request<pb::GetDeploymentRequest>,
    ) -> Result<Response<pb::Deployment>, Status> {
        self.caller(&request).await?;
        Ok(Response::new(deployment_to_pb(&self.core.get_deployment(&request.into_inner().id).await?)))
    }

    async fn list_deployments(
        &self,
        request: Request<pb::ListDeploymentsRequest>,
    ) -> Result<Response<pb::ListDeploymentsResponse>, Status> {
        self.caller(&request).await?;
        let body = request.into_inner();
        let (views, next) = self
            .core
            .list_deployments(
                non_empty(&body.app),
                non_empty(&body.environment),
                non_empty(&body.state),
                rp_db::page_size(body.page_size, 50, 200),
                page_token(&body.page_token)?,
            )
            .await?;
        Ok(Response::new(pb::ListDeploymentsResponse {
            deployments: views.iter().map(deployment_to_pb).collect(),
            next_page_token: next.map(|id| id.to_string()).unwrap_or_default(),
        }))
    }

    async fn watch_deployment(
        &self,
        request: Request<pb::GetDeploymentRequest>,
    ) -> Result<Response<Self::WatchDeploymentStream>, Status> {
        self.caller(&request).await?;
        let id = request.into_inner().id;
        let first = self.core.get_deployment(&id).await?;
        let core = self.core.clone();
        // Polls the row; every revision is sent once, and the stream ends at a final state.
        let stream = async_stream(core, id, first);
        Ok(Response::new(Box::pin(stream)))
    }

    async fn approve_deployment(
        &self,
        request: Request<pb::ApproveDeploymentRequest>,
    ) -> Result<Response<pb::Deployment>, Status> {
        let actor = self.caller(&request).await?;
        let body = request.into_inner();
        let view =
            self.core.approve(&actor, &body.id, &body.decision, &body.comment, &body.idempotency_key).await?;
        Ok(Response::new(deployment_to_pb(&view)))
    }

    async fn pause_deployment(
        &self,
        request: Request<pb::DeploymentActionRequest>,
    ) -> Result<Response<pb::Deployment>, Status> {
        let actor = self.caller(&request).await?;
        let body = request.into_inner();
        let view = self
            .core
            .pause(&actor, &body.id, &body.reason, body.expected_revision, &body.idempotency_key)
            .await?;
        Ok(Response::new(deployment_to_pb(&view)))
    }

    async fn resume_deployment(
        &self,
        request: Request<pb::DeploymentActionRequest>,
    ) -> Result<Response<pb::Deployment>, Status> {
        let actor = self.caller(&request).await?;
        let body = request.into_inner();
        let view = self.core.resume(&actor, &body.id, body.expected_revision, &body.idempotency_key).await?;
        Ok(Response::new(deployment_to_pb(&view)))
    }

    async fn promote_deployment(
        &self,
        request: Request<pb::PromoteDeploymentRequest>,
    ) -> Result<Response<pb::Deployment>, Status> {
        let actor = self.caller(&request).await?;
        let body = request.into_inner();
        let view = self
            .core
            .promote(&actor, &body.id, body.full, body.expected_revision, &body.idempotency_key)
            .await?;
        Ok(Response::new(deployment_to_pb(&view)))
    }

    async fn abort_deployment(
        &self,
        request: Request<pb::DeploymentActionRequest>,
    ) -> Result<Response<pb::Deployment>, Status> {
        let actor = self.caller(&request).await?;
        let body = request.into_inner();
        let view = self
            .core
            .abort(&actor, &body.id, &body.reason, body.expected_revision, &body.idempotency_key)
            .await?;
        Ok(Response::new(deployment_to_pb(&view)))
    }

    async fn rollback_deployment(
        &self,
        request: Request<pb::RollbackRequest>,
    ) -> Result<Response<pb::Deployment>, Status> {
        let actor = self.caller(&request).await?;
        let body = request.into_inner();
        let what = RollbackTarget {
            deployment_id: body.deployment_id,
            app: body.app,
            environment: body.environment,
            target_version: body.target_version,
        };
        let view =
            self.core.rollback(&actor, what, &body.reason, &body.trigger, &body.idempotency_key).await?;
        Ok(Response::new(deployment_to_pb(&view)))
    }

    async fn report_driver_result(
        &self,
        request: Request<pb::DriverResultRequest>,
    ) -> Result<Response<pb::Deployment>, Status> {
        let actor = self.caller(&request).await?;
        let body = request.into_inner();
        let view = self
            .core
            .driver_result(&actor, &body.deployment_id, body.step, &body.status, &body.message)
            .await?;
        Ok(Response::new(deployment_to_pb(&view)))
    }

    async fn create_freeze_window(
        &self,
        request: Request<pb::CreateFreezeWindowRequest>,
    ) -> Result<Response<pb::FreezeWindow>, Status> {
        let actor = self.with_role(&request, &[Role::ReleaseManager]).await?;
        let body = request.into_inner();
        let starts = from_ts("starts_at", body.starts_at)?.unwrap_or_else(Utc::now);
        let ends = from_ts("ends_at", body.ends_at)?
            .ok_or_else(|| ServiceError::Invalid("ends_at is required".into()))?;
        let (window, env) =
            self.core.create_freeze(&actor, non_empty(&body.environment), starts, ends, &body.reason).await?;
        Ok(Response::new(freeze_to_pb(&window, env)))
    }

    async fn list_freeze_windows(
        &self,
        request: Request<pb::ListFreezeWindowsRequest>,
    ) -> Result<Response<pb::ListFreezeWindowsResponse>, Status> {
        self.caller(&request).await?;
        let windows = self.core.list_freezes(request.into_inner().include_past).await?;
        Ok(Response::new(pb::ListFreezeWindowsResponse {
            windows: windows.iter().map(|(w, e)| freeze_to_pb(w, e.clone())).collect(),
        }))
    }

    async fn delete_freeze_window(
        &self,
        request: Request<pb::DeleteFreezeWindowRequest>,
    ) -> Result<Response<pb::DeleteFreezeWindowResponse>, Status> {
        let actor = self.with_role(&request, &[Role::ReleaseManager]).await?;
        self.core.delete_freeze(&actor, &request.into_inner().id).await?;
        Ok(Response::new(pb::DeleteFreezeWindowResponse {}))
    }

    async fn get_status(
        &self,
        request: Request<pb::GetStatusRequest>,
    ) -> Result<Response<pb::StatusResponse>, Status> {
        self.caller(&request).await?;
        let app = request.into_inner().app;
        let entries = self.core.status(non_empty(&app)).await?;
        Ok(Response::new(pb::StatusResponse {
            entries: entries
                .into_iter()
                .map(|(app, environment, version, deployed_at, active)| pb::StatusEntry {
                    app,
                    environment,
                    version,
                    active: active.as_ref().map(deployment_to_pb),
                    deployed_at: deployed_at.map(ts),
                })
                .collect(),
        }))
    }

    async fn list_audit_entries(
        &self,
        request: Request<pb::ListAuditEntriesRequest>,
    ) -> Result<Response<pb::ListAuditEntriesResponse>, Status> {
        self.with_role(&request, &[Role::ReleaseManager, Role::IncidentCommander]).await?;
        let body = request.into_inner();
        let after_seq = match body.page_token.as_str() {
            "" => None,
            token => Some(
                token.parse::<i64>().map_err(|_| ServiceError::Invalid("page_token is not valid".into()))?,
            ),
        };
        let query = AuditQuery {
            actor: non_empty(&body.actor).map(str::to_owned),
            resource_type: non_empty(&body.resource_type).map(str::to_owned),
            resource_id: non_empty(&body.resource_id).map(str::to_owned),
            since: from_ts("since", body.since)?,
            until: from_ts("until", body.until)?,
            after_seq,
            limit: rp_db::page_size(body.page_size, 100, 1000),
        };
        let (rows, next) = self.core.list_audit(query).await?;
        Ok(Response::new(pb::ListAuditEntriesResponse {
            entries: rows.iter().map(audit_to_pb).collect(),
            next_page_token: next.map(|s| s.to_string()).unwrap_or_default(),
        }))
    }

    async fn verify_audit_chain(
        &self,
        request: Request<pb::VerifyAuditChainRequest>,
    ) -> Result<Response<pb::VerifyAuditChainResponse>, Status> {
        self.with_role(&request, &[Role::ReleaseManager, Role::IncidentCommander]).await?;
        let result = self.core.verify_audit().await?;
        Ok(Response::new(pb::VerifyAuditChainResponse {
            valid: result.valid,
            entries_checked: result.checked,
            broken_at: result.broken_at,
            problem: result.problem,
            head_hash: result.head_hash,
        }))
    }

    async fn list_routes(
        &self,
        request: Request<pb::ListRoutesRequest>,
    ) -> Result<Response<pb::ListRoutesResponse>, Status> {
        self.routes(request).await
    }

    async fn get_dora_metrics(
        &self,
        request: Request<pb::GetDoraMetricsRequest>,
    ) -> Result<Response<pb::DoraMetrics>, Status> {
        self.caller(&request).await?;
        let body = request.into_inner();
        let (app, environment, window_days, f) =
            self.core.dora(&body.app, &body.environment, body.window_days).await?;
        Ok(Response::new(pb::DoraMetrics {
            app,
            environment,
            window_days,
            deployments: f.deployments,
            deployment_frequency_per_day: f.deployment_frequency_per_day,
            lead_time_seconds: f.lead_time_seconds,
            failed_changes: f.failed_changes,
            change_failure_rate: f.change_failure_rate,
            time_to_restore_seconds: f.time_to_restore_seconds,
            restorations: f.restorations,
        }))
    }
}

impl ReleaseGrpc {
    async fn routes(
        &self,
        request: Request<pb::ListRoutesRequest>,
    ) -> Result<Response<pb::ListRoutesResponse>, Status> {
        // Routes name internal upstream addresses: release managers and Release Pilot's own roles.
        self.with_role(&request, &[Role::ReleaseManager]).await?;
        Ok(Response::new(pb::ListRoutesResponse { routes: self.core.list_routes().await? }))
    }
}

/// The stream of `WatchDeployment`: the current state, then every new revision.
fn async_stream(
    core: Arc<ReleaseCore>,
    id: String,
    first: DeploymentView,
) -> impl Stream<Item = Result<pb::Deployment, Status>> + Send {
    futures::stream::unfold(
        (core, id, Some(first), 0i64, false),
        |(core, id, pending, last_revision, done)| async move {
            if done {
                return None;
            }
            if let Some(view) = pending {
                let finished = state::is_final(&view.row.state);
                let revision = view.row.revision;
                return Some((Ok(deployment_to_pb(&view)), (core, id, None, revision, finished)));
            }
            loop {
                tokio::time::sleep(Duration::from_millis(200)).await;
                match core.get_deployment(&id).await {
                    Ok(view) if view.row.revision != last_revision => {
                        let finished = state::is_final(&view.row.state);
                        let revision = view.row.revision;
                        return Some((Ok(deployment_to_pb(&view)), (core, id, None, revision, finished)));
                    }
                    Ok(_) => continue,
                    Err(err) => return Some((Err(Status::from(err)), (core, id, None, last_revision, true))),
                }
            }
        },
    )
}
