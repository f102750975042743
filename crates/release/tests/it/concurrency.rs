//! Races: many concurrent requests on the same deployment. Exactly one transition wins each
//! race, the losers get a clear refusal, and the invariants hold afterwards.

use std::collections::HashSet;

use rp_proto::release::v1 as pb;
use rp_test_support::authed;
use tonic::Code;

use crate::{quick, receiver::Receiver, stack};

fn codes<T: std::fmt::Debug>(results: &[Result<tonic::Response<T>, tonic::Status>]) -> (usize, Vec<Code>) {
    let ok = results.iter().filter(|r| r.is_ok()).count();
    let refused = results.iter().filter_map(|r| r.as_ref().err()).map(|s| s.code()).collect();
    (ok, refused)
}

#[tokio::test]
async fn fifty_concurrent_pauses_and_aborts_each_let_exactly_one_win() {
    let stack = stack().await;
    let receiver = Receiver::start().await;
    let people = stack.pipeline(&receiver).await;
    stack.release_version(&people.developer, "shop", "1.0.0").await;
    let request = pb::CreateDeploymentRequest {
        strategy: "canary".into(),
        steps: vec![pb::CanaryStep { weight: 10, hold_seconds: 600, analysis: false }],
        ..quick("shop", "dev", "1.0.0")
    };
    let release = stack.release.clone();
    let id =
        release.clone().create_deployment(authed(&people.developer, request)).await.unwrap().into_inner().id;
    stack.wait_for(&people.viewer, &id, "the first hold", |d| d.phase == "holding").await;

    let action = pb::DeploymentActionRequest { id: id.clone(), ..Default::default() };
    let pauses = futures::future::join_all((0..50).map(|_| {
        let mut release = release.clone();
        let request = authed(&people.developer, action.clone());
        async move { release.pause_deployment(request).await }
    }))
    .await;
    let (ok, refused) = codes(&pauses);
    assert_eq!(ok, 1, "exactly one pause wins: {refused:?}");
    assert!(refused.iter().all(|c| matches!(c, Code::Aborted | Code::FailedPrecondition)), "{refused:?}");

    let aborts = futures::future::join_all((0..50).map(|_| {
        let mut release = release.clone();
        let request = authed(&people.developer, action.clone());
        async move { release.abort_deployment(request).await }
    }))
    .await;
    let (ok, refused) = codes(&aborts);
    assert_eq!(ok, 1, "exactly one abort wins: {refused:?}");
    assert!(refused.iter().all(|c| matches!(c, Code::Aborted | Code::FailedPrecondition)), "{refused:?}");

    let audit = release
        .clone()
        .list_audit_entries(authed(
            &people.manager,
            pb::ListAuditEntriesRequest { resource_id: id.clone(), page_size: 1000, ..Default::default() },
        ))
        .await
        .unwrap()
        .into_inner();
    let count = |action: &str| audit.entries.iter().filter(|e| e.action == action).count();
    assert_eq!(
        (count("deployment.paused"), count("deployment.aborted")),
        (1, 1),
        "one transition each, on the record once"
    );
    let verified = release
        .clone()
        .verify_audit_chain(authed(&people.manager, pb::VerifyAuditChainRequest {}))
        .await
        .unwrap()
        .into_inner();
    assert!(verified.valid, "{}", verified.problem);
}

#[tokio::test]
async fn fifty_concurrent_deploys_leave_at_most_one_active_deployment() {
    let stack = stack().await;
    let receiver = Receiver::start().await;
    let people = stack.pipeline(&receiver).await;
    stack.release_version(&people.developer, "shop", "1.0.0").await;
    let release = stack.release.clone();
    let results = futures::future::join_all((0..50).map(|i| {
        let mut release = release.clone();
        let request = pb::CreateDeploymentRequest {
            strategy: "canary".into(),
            steps: vec![pb::CanaryStep { weight: 10, hold_seconds: 600, analysis: false }],
            idempotency_key: format!("race-{i}"),
            ..quick("shop", "dev", "1.0.0")
        };
        let request = authed(&people.developer, request);
        async move { release.create_deployment(request).await }
    }))
    .await;
    let (ok, refused) = codes(&results);
    assert!(ok >= 1, "{refused:?}");
    // Refused as a conflict, or (SQLite's single writer, 50 at once) as "busy, retry": never
    // an internal error.
    assert!(
        refused.iter().all(|c| matches!(c, Code::FailedPrecondition | Code::Aborted | Code::Unavailable)),
        "{refused:?}"
    );

    let listed = release
        .clone()
        .list_deployments(authed(
            &people.viewer,
            pb::ListDeploymentsRequest {
                app: "shop".into(),
                environment: "dev".into(),
                page_size: 200,
                ..Default::default()
            },
        ))
        .await
        .unwrap()
        .into_inner();
    let created: HashSet<String> =
        results.iter().filter_map(|r| r.as_ref().ok()).map(|r| r.get_ref().id.clone()).collect();
    let rows: HashSet<String> = listed.deployments.iter().map(|d| d.id.clone()).collect();
    assert_eq!(created, rows, "every accepted request is one deployment, and nothing else was created");
    let active: Vec<&pb::Deployment> = listed
        .deployments
        .iter()
        .filter(|d| matches!(d.state.as_str(), "pending" | "awaiting_approval" | "in_progress"))
        .collect();
    assert_eq!(active.len(), 1, "one active deployment per app and environment");
    assert!(
        listed.deployments.iter().filter(|d| d.id != active[0].id).all(|d| d.state == "superseded"),
        "the others were superseded: {:?}",
        listed.deployments.iter().map(|d| (d.state.as_str(), d.failure_reason.as_str())).collect::<Vec<_>>()
    );
    let verified = release
        .clone()
        .verify_audit_chain(authed(&people.manager, pb::VerifyAuditChainRequest {}))
        .await
        .unwrap()
        .into_inner();
    assert!(verified.valid, "{}", verified.problem);
}

#[tokio::test]
async fn concurrent_approvals_and_aborts_end_consistently() {
    let stack = stack().await;
    let receiver = Receiver::start().await;
    let people = stack.pipeline(&receiver).await;
    stack.release_version(&people.developer, "shop", "1.0.0").await;
    // Straight to production as a hotfix would be too easy: walk the pipeline.
    stack.deploy_ok(&people.developer, "shop", "dev", "1.0.0").await;
    let mut release = stack.release.clone();
    release
        .report_quality_check(authed(
            &people.qa,
            pb::ReportQualityCheckRequest {
                app: "shop".into(),
                version: "1.0.0".into(),
                name: "coverage".into(),
                status: "passed".into(),
                value: Some(99.0),
                url: String::new(),
            },
        ))
        .await
        .unwrap();
    stack.deploy_ok(&people.developer, "shop", "staging", "1.0.0").await;
    let id = release
        .create_deployment(authed(&people.manager, quick("shop", "prod", "1.0.0")))
        .await
        .unwrap()
        .into_inner()
        .id;
    let approvals = (0..25).map(|_| {
        let mut release = release.clone();
        let request = authed(
            &people.other_manager,
            pb::ApproveDeploymentRequest { id: id.clone(), ..Default::default() },
        );
        async move { release.approve_deployment(request).await.map(|_| "approve") }
    });
    let aborts = (0..25).map(|_| {
        let mut release = release.clone();
        let request =
            authed(&people.manager, pb::DeploymentActionRequest { id: id.clone(), ..Default::default() });
        async move { release.abort_deployment(request).await.map(|_| "abort") }
    });
    let approvals: Vec<_> = futures::future::join_all(approvals).await;
    let aborts: Vec<_> = futures::future::join_all(aborts).await;
    let approved = approvals.iter().filter(|r| r.is_ok()).count();
    let aborted = aborts.iter().filter(|r| r.is_ok()).count();
    assert_eq!(
        approved,
        1,
        "one approval per approver: {:?}",
        approvals.iter().filter_map(|r| r.as_ref().err()).collect::<Vec<_>>()
    );
    assert_eq!(aborted, 1, "one abort wins");
    let final_state = stack.deployment(&people.viewer, &id).await;
    assert_eq!(final_state.state, "aborted");
    assert_eq!(final_state.approvals.len(), 1);
}
