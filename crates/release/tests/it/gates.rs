//! Every gate refusal names the gate and the reason; approvals follow four-eyes.

use std::time::Duration;

use rp_proto::release::v1 as pb;
use rp_test_support::authed;
use tonic::Code;

use crate::{quick, receiver::Receiver, stack};

#[tokio::test]
async fn each_gate_refuses_with_its_name_and_reason() {
    let stack = stack().await;
    let receiver = Receiver::start().await;
    let people = stack.pipeline(&receiver).await;
    stack.release_version(&people.developer, "shop", "1.0.0").await;
    let mut release = stack.release.clone();

    // Authority: developers do not deploy to production.
    let authority = release
        .create_deployment(authed(&people.developer, quick("shop", "prod", "1.0.0")))
        .await
        .unwrap_err();
    assert_eq!(authority.code(), Code::PermissionDenied);
    assert!(
        authority.message().contains("gate authority refused")
            && authority.message().contains("release_manager"),
        "{}",
        authority.message()
    );

    // Promotion order: staging before dev succeeded.
    let order = release
        .create_deployment(authed(&people.developer, quick("shop", "staging", "1.0.0")))
        .await
        .unwrap_err();
    assert_eq!(order.code(), Code::FailedPrecondition);
    assert!(
        order.message().contains("gate promotion_order refused") && order.message().contains("dev"),
        "{}",
        order.message()
    );

    stack.deploy_ok(&people.developer, "shop", "dev", "1.0.0").await;

    // Quality: staging wants coverage ≥ 90.
    let missing = release
        .create_deployment(authed(&people.developer, quick("shop", "staging", "1.0.0")))
        .await
        .unwrap_err();
    assert!(
        missing.message().contains("gate quality refused")
            && missing.message().contains("no result for coverage"),
        "{}",
        missing.message()
    );
    let report = |value: f64| pb::ReportQualityCheckRequest {
        app: "shop".into(),
        version: "1.0.0".into(),
        name: "coverage".into(),
        status: "passed".into(),
        value: Some(value),
        url: String::new(),
    };
    release.report_quality_check(authed(&people.qa, report(84.0))).await.unwrap();
    let low = release
        .create_deployment(authed(&people.developer, quick("shop", "staging", "1.0.0")))
        .await
        .unwrap_err();
    assert!(low.message().contains("coverage is 84") && low.message().contains("≥ 90"), "{}", low.message());
    release.report_quality_check(authed(&people.qa, report(91.0))).await.unwrap();

    // Freeze: refused until the window ends.
    let freeze = release
        .create_freeze_window(authed(
            &people.manager,
            pb::CreateFreezeWindowRequest {
                environment: "staging".into(),
                starts_at: None,
                ends_at: Some(rp_proto::timestamp(std::time::SystemTime::now() + Duration::from_secs(3600))),
                reason: "release train".into(),
            },
        ))
        .await
        .unwrap()
        .into_inner();
    let frozen = release
        .create_deployment(authed(&people.developer, quick("shop", "staging", "1.0.0")))
        .await
        .unwrap_err();
    assert!(
        frozen.message().contains("gate freeze refused") && frozen.message().contains("release train"),
        "{}",
        frozen.message()
    );
    let denied = release
        .delete_freeze_window(authed(
            &people.developer,
            pb::DeleteFreezeWindowRequest { id: freeze.id.clone() },
        ))
        .await
        .unwrap_err();
    assert_eq!(denied.code(), Code::PermissionDenied);
    release
        .delete_freeze_window(authed(&people.manager, pb::DeleteFreezeWindowRequest { id: freeze.id }))
        .await
        .unwrap();
    let staged = stack.deploy_ok(&people.developer, "shop", "staging", "1.0.0").await;
    assert_eq!(staged.state, "succeeded");

    // No target, no deployment.
    release
        .create_app(authed(
            &people.manager,
            pb::CreateAppRequest { name: "untargeted".into(), ..Default::default() },
        ))
        .await
        .unwrap();
    stack.release_version(&people.developer, "untargeted", "1.0.0").await;
    let no_target = release
        .create_deployment(authed(&people.developer, quick("untargeted", "dev", "1.0.0")))
        .await
        .unwrap_err();
    assert_eq!(no_target.code(), Code::FailedPrecondition);
    assert!(no_target.message().contains("no target"));
}

#[tokio::test]
async fn production_needs_an_approval_from_someone_else_with_an_approver_role() {
    let stack = stack().await;
    let receiver = Receiver::start().await;
    let people = stack.pipeline(&receiver).await;
    stack.release_version(&people.developer, "shop", "1.0.0").await;
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
                value: Some(95.0),
                url: String::new(),
            },
        ))
        .await
        .unwrap();
    stack.deploy_ok(&people.developer, "shop", "staging", "1.0.0").await;

    let created = release
        .create_deployment(authed(&people.manager, quick("shop", "prod", "1.0.0")))
        .await
        .unwrap()
        .into_inner();
    assert_eq!((created.state.as_str(), created.required_approvals), ("awaiting_approval", 1));
    let approve = |token: &str, decision: &str| {
        let mut release = release.clone();
        let request = authed(
            token,
            pb::ApproveDeploymentRequest {
                id: created.id.clone(),
                decision: decision.into(),
                ..Default::default()
            },
        );
        async move { release.approve_deployment(request).await }
    };
    let own = approve(&people.manager, "approved").await.unwrap_err();
    assert_eq!(own.code(), Code::PermissionDenied);
    assert!(own.message().contains("four-eyes"), "{}", own.message());
    let developer = approve(&people.developer, "approved").await.unwrap_err();
    assert_eq!(developer.code(), Code::PermissionDenied);
    assert!(developer.message().contains("release_manager"));
    let odd = approve(&people.other_manager, "maybe").await.unwrap_err();
    assert_eq!(odd.code(), Code::InvalidArgument);
    let approved = approve(&people.other_manager, "approved").await.unwrap().into_inner();
    assert_eq!(approved.approvals[0].approver_email, "rm2@example.com");
    stack.wait_state(&people.viewer, &created.id, "succeeded").await;
    let twice = approve(&people.other_manager, "approved").await.unwrap_err();
    assert_eq!(twice.code(), Code::FailedPrecondition, "nothing left to approve");

    // A rejection ends the deployment.
    stack.release_version(&people.developer, "shop", "1.0.1").await;
    for env in ["dev", "staging"] {
        if env == "staging" {
            release
                .report_quality_check(authed(
                    &people.qa,
                    pb::ReportQualityCheckRequest {
                        app: "shop".into(),
                        version: "1.0.1".into(),
                        name: "coverage".into(),
                        status: "passed".into(),
                        value: Some(95.0),
                        url: String::new(),
                    },
                ))
                .await
                .unwrap();
        }
        stack.deploy_ok(&people.developer, "shop", env, "1.0.1").await;
    }
    let second = release
        .create_deployment(authed(&people.manager, quick("shop", "prod", "1.0.1")))
        .await
        .unwrap()
        .into_inner();
    let rejected = release
        .approve_deployment(authed(
            &people.other_manager,
            pb::ApproveDeploymentRequest {
                id: second.id.clone(),
                decision: "rejected".into(),
                comment: "not during the sale".into(),
                ..Default::default()
            },
        ))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(rejected.state, "aborted");
    assert!(rejected.failure_reason.contains("not during the sale"));
}
