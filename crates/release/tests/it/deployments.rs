//! Every strategy end to end against the webhook driver and a local deployer, driver failures,
//! rollbacks, a restart in the middle of a canary, and the router driver's contract.

use std::time::Duration;

use futures::StreamExt as _;
use rp_proto::release::v1 as pb;
use rp_test_support::authed;
use tonic::Code;

use crate::{
    WAIT, quick,
    receiver::{Answer, Receiver},
    stack,
};

fn canary(steps: &[(i32, i64)]) -> Vec<pb::CanaryStep> {
    steps.iter().map(|(w, h)| pb::CanaryStep { weight: *w, hold_seconds: *h, analysis: true }).collect()
}

#[tokio::test]
async fn all_at_once_deploys_signed_then_verifies_then_succeeds() {
    let stack = stack().await;
    let receiver = Receiver::start().await;
    let people = stack.pipeline(&receiver).await;
    stack.release_version(&people.developer, "shop", "1.0.0").await;
    let created = stack
        .release
        .clone()
        .create_deployment(authed(&people.developer, quick("shop", "dev", "1.0.0")))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(created.state, "pending");
    let done = stack.wait_state(&people.developer, &created.id, "succeeded").await;
    assert_eq!(done.weight, 100);
    assert_eq!(done.steps.len(), 1);
    assert_eq!(done.steps[0].status, "completed");
    let calls = receiver.calls_for(&created.id);
    assert_eq!(calls.len(), 1);
    assert!(calls[0].signature_valid, "the deployer can verify the Standard Webhooks signature");
    assert_eq!((calls[0].weight(), calls[0].version(), calls[0].action()), (100, "1.0.0", "weight"));
    assert!(
        calls[0].body["callback_url"]
            .as_str()
            .unwrap()
            .ends_with(&format!("/api/v1/deployments/{}/driver-result", created.id))
    );
    // Verification took at least its window.
    let started = done.started_at.unwrap();
    let finished = done.finished_at.unwrap();
    assert!(
        finished.seconds * 1000 + i64::from(finished.nanos / 1_000_000)
            - (started.seconds * 1000 + i64::from(started.nanos / 1_000_000))
            >= 1000
    );

    let status = stack
        .release
        .clone()
        .get_status(authed(&people.viewer, pb::GetStatusRequest { app: "shop".into() }))
        .await
        .unwrap()
        .into_inner();
    let dev = status.entries.iter().find(|e| e.environment == "dev").unwrap();
    assert_eq!(dev.version, "1.0.0");
    assert!(dev.active.is_none());
}

#[tokio::test]
async fn a_canary_walks_its_steps_in_order_and_reports_each() {
    let stack = stack().await;
    let receiver = Receiver::start().await;
    let people = stack.pipeline(&receiver).await;
    stack.release_version(&people.developer, "shop", "1.0.0").await;
    stack.deploy_ok(&people.developer, "shop", "dev", "1.0.0").await;
    stack.release_version(&people.developer, "shop", "1.1.0").await;
    let mut subscription =
        stack.bus.subscribe(&rp_events::ConsumerSpec::new("it-canary", "rp.deployment.>")).await.unwrap();
    let request = pb::CreateDeploymentRequest {
        app: "shop".into(),
        environment: "dev".into(),
        version: "1.1.0".into(),
        strategy: "canary".into(),
        steps: canary(&[(10, 1), (50, 1)]),
        ..Default::default()
    };
    let created = stack
        .release
        .clone()
        .create_deployment(authed(&people.developer, request))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(created.previous_version, "1.0.0");
    assert_eq!(
        created.steps.iter().map(|s| s.weight).collect::<Vec<_>>(),
        [10, 50, 100],
        "a canary always ends at 100%"
    );

    // Watch the rollout live, as `rpctl deploy --watch` does.
    let mut watch = stack
        .release
        .clone()
        .watch_deployment(authed(&people.viewer, pb::GetDeploymentRequest { id: created.id.clone() }))
        .await
        .unwrap()
        .into_inner();
    let mut seen_weights = Vec::new();
    let last = tokio::time::timeout(WAIT, async {
        loop {
            let update = watch.message().await.unwrap().expect("the stream ends only after a final state");
            if seen_weights.last() != Some(&update.weight) {
                seen_weights.push(update.weight);
            }
            if update.state == "succeeded" {
                break update;
            }
        }
    })
    .await
    .unwrap();
    assert!(watch.message().await.unwrap().is_none(), "the watch ends at the final state");
    assert_eq!(seen_weights.iter().filter(|w| **w > 0).copied().collect::<Vec<_>>(), [10, 50, 100]);
    assert!(last.steps.iter().all(|s| s.status == "completed"));
    let weights: Vec<i64> = receiver.calls_for(&created.id).iter().map(|c| c.weight()).collect();
    assert_eq!(weights, [10, 50, 100]);
    assert!(receiver.calls_for(&created.id).iter().all(|c| c.body["stable"]["version"] == "1.0.0"));

    let mut facts = Vec::new();
    tokio::time::timeout(WAIT, async {
        while let Some(delivery) = subscription.next().await {
            let delivery = delivery.unwrap();
            let event = delivery.event.clone();
            delivery.ack().await.unwrap();
            if event.subject == format!("deployments/{}", created.id) {
                facts.push(event.event_type.clone());
                if event.event_type == "rp.deployment.succeeded" {
                    break;
                }
            }
        }
    })
    .await
    .unwrap();
    assert_eq!(
        facts,
        [
            "rp.deployment.created",
            "rp.deployment.started",
            "rp.deployment.step_advanced",
            "rp.deployment.step_advanced",
            "rp.deployment.step_advanced",
            "rp.deployment.succeeded"
        ]
    );
}

#[tokio::test]
async fn blue_green_analyses_at_zero_waits_for_the_switch_approval_then_switches_at_once() {
    let stack = stack().await;
    let receiver = Receiver::start().await;
    let people = stack.pipeline(&receiver).await;
    stack.release_version(&people.developer, "shop", "1.0.0").await;
    stack.deploy_ok(&people.developer, "shop", "dev", "1.0.0").await;
    stack.release_version(&people.developer, "shop", "1.1.0").await;
    let request = pb::CreateDeploymentRequest {
        app: "shop".into(),
        environment: "dev".into(),
        version: "1.1.0".into(),
        strategy: "blue_green".into(),
        pre_promotion_seconds: 1,
        approval_before_switch: true,
        rollback_window_seconds: 1,
        ..Default::default()
    };
    let created = stack
        .release
        .clone()
        .create_deployment(authed(&people.developer, request))
        .await
        .unwrap()
        .into_inner();
    let waiting = stack
        .wait_for(&people.viewer, &created.id, "the switch approval", |d| d.phase == "awaiting_approval")
        .await;
    assert_eq!(waiting.weight, 0, "green got no traffic before the switch");
    let own = stack
        .release
        .clone()
        .approve_deployment(authed(
            &people.developer,
            pb::ApproveDeploymentRequest { id: created.id.clone(), ..Default::default() },
        ))
        .await
        .unwrap_err();
    assert_eq!(own.code(), Code::PermissionDenied);
    stack
        .release
        .clone()
        .approve_deployment(authed(
            &people.manager,
            pb::ApproveDeploymentRequest {
                id: created.id.clone(),
                comment: "looks good".into(),
                ..Default::default()
            },
        ))
        .await
        .unwrap();
    let done = stack.wait_state(&people.viewer, &created.id, "succeeded").await;
    assert_eq!(done.approvals.len(), 1);
    let calls = receiver.calls_for(&created.id);
    let steps: Vec<(i64, &str)> = calls.iter().map(|c| (c.weight(), c.action())).collect();
    assert_eq!(steps, [(0, "weight"), (100, "switch")], "green at 0%, then one atomic switch");
}

#[tokio::test]
async fn a_hotfix_is_for_incident_commanders_and_skips_order_quality_and_freeze() {
    let stack = stack().await;
    let receiver = Receiver::start().await;
    let people = stack.pipeline(&receiver).await;
    stack.release_version(&people.developer, "shop", "1.0.1").await;
    stack
        .release
        .clone()
        .create_freeze_window(authed(
            &people.manager,
            pb::CreateFreezeWindowRequest {
                environment: "prod".into(),
                starts_at: None,
                ends_at: Some(rp_proto::timestamp(std::time::SystemTime::now() + Duration::from_secs(3600))),
                reason: "peak season".into(),
            },
        ))
        .await
        .unwrap();
    let hotfix = pb::CreateDeploymentRequest { strategy: "hotfix".into(), ..quick("shop", "prod", "1.0.1") };
    let denied =
        stack.release.clone().create_deployment(authed(&people.manager, hotfix.clone())).await.unwrap_err();
    assert_eq!(denied.code(), Code::PermissionDenied);
    assert!(denied.message().contains("incident commander"), "{}", denied.message());
    let created = stack
        .release
        .clone()
        .create_deployment(authed(&people.commander, hotfix))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        (created.state.as_str(), created.required_approvals),
        ("pending", 0),
        "no approval wait, no promotion order, no freeze"
    );
    stack.wait_state(&people.viewer, &created.id, "succeeded").await;
    let audit = stack
        .release
        .clone()
        .list_audit_entries(authed(
            &people.manager,
            pb::ListAuditEntriesRequest { resource_id: created.id.clone(), ..Default::default() },
        ))
        .await
        .unwrap()
        .into_inner();
    let first = &audit.entries[0];
    assert_eq!((first.action.as_str(), first.actor_email.as_str()), ("deployment.created", "ic@example.com"));
    assert!(audit.entries.iter().any(|e| e.action == "deployment.succeeded"));
}

#[tokio::test]
async fn an_accepted_step_completes_through_the_status_url() {
    let stack = stack().await;
    let receiver = Receiver::start().await;
    let people = stack.pipeline(&receiver).await;
    stack.release_version(&people.developer, "shop", "1.0.0").await;
    receiver.script(&[Answer::Accept { polls: 2, outcome: "succeeded" }]);
    let created = stack
        .release
        .clone()
        .create_deployment(authed(&people.developer, quick("shop", "dev", "1.0.0")))
        .await
        .unwrap()
        .into_inner();
    stack
        .wait_for(&people.viewer, &created.id, "the deployer to accept", |d| {
            d.phase == "awaiting_driver" || d.state == "succeeded"
        })
        .await;
    stack.wait_state(&people.viewer, &created.id, "succeeded").await;

    // Failure reported through the status URL fails the deployment with the deployer's words.
    stack.release_version(&people.developer, "shop", "1.0.1").await;
    receiver.script(&[Answer::Accept { polls: 1, outcome: "failed" }]);
    let failing = stack
        .release
        .clone()
        .create_deployment(authed(&people.developer, quick("shop", "dev", "1.0.1")))
        .await
        .unwrap()
        .into_inner();
    let failed = stack.wait_state(&people.viewer, &failing.id, "failed").await;
    assert!(failed.failure_reason.contains("scripted outcome"), "{}", failed.failure_reason);
}

#[tokio::test]
async fn a_driver_failure_fails_the_step_with_the_deployers_error() {
    let stack = stack().await;
    let receiver = Receiver::start().await;
    let people = stack.pipeline(&receiver).await;
    stack.release_version(&people.developer, "shop", "1.0.0").await;
    // A retryable error is retried (max_attempts 2), then the step fails.
    receiver.always(Answer::Status(503));
    let created = stack
        .release
        .clone()
        .create_deployment(authed(&people.developer, quick("shop", "dev", "1.0.0")))
        .await
        .unwrap()
        .into_inner();
    let failed = stack.wait_state(&people.viewer, &created.id, "failed").await;
    assert!(
        failed.failure_reason.contains("503") && failed.failure_reason.contains("after 2 attempt"),
        "{}",
        failed.failure_reason
    );
    assert_eq!(receiver.calls_for(&created.id).len(), 2);

    // A client error is not retried.
    receiver.always(Answer::Status(422));
    stack.release_version(&people.developer, "shop", "1.0.1").await;
    let second = stack
        .release
        .clone()
        .create_deployment(authed(&people.developer, quick("shop", "dev", "1.0.1")))
        .await
        .unwrap()
        .into_inner();
    let failed = stack.wait_state(&people.viewer, &second.id, "failed").await;
    assert!(failed.failure_reason.contains("422"), "{}", failed.failure_reason);
    assert_eq!(receiver.calls_for(&second.id).len(), 1);
}

#[tokio::test]
async fn rollback_restores_traffic_first_targets_earlier_releases_and_acts_once() {
    let stack = stack().await;
    let receiver = Receiver::start().await;
    let people = stack.pipeline(&receiver).await;
    for version in ["1.0.0", "1.1.0", "1.2.0"] {
        stack.release_version(&people.developer, "shop", version).await;
        stack.deploy_ok(&people.developer, "shop", "dev", version).await;
    }
    let mut release = stack.release.clone();
    let rollback = |target: &str| pb::RollbackRequest {
        app: "shop".into(),
        environment: "dev".into(),
        target_version: target.into(),
        reason: "error rate up".into(),
        ..Default::default()
    };
    let denied = release.rollback_deployment(authed(&people.viewer, rollback(""))).await.unwrap_err();
    assert_eq!(denied.code(), Code::PermissionDenied);
    let never = release.rollback_deployment(authed(&people.developer, rollback("9.9.9"))).await.unwrap_err();
    assert_eq!(never.code(), Code::NotFound);

    // Two rollbacks at once: one acts.
    let (mut first, mut second) = (release.clone(), release.clone());
    let (a, b) = tokio::join!(
        first.rollback_deployment(authed(&people.developer, rollback(""))),
        second.rollback_deployment(authed(&people.commander, rollback(""))),
    );
    let results = [a, b];
    let rolled: Vec<&pb::Deployment> =
        results.iter().filter_map(|r| r.as_ref().ok()).map(|r| r.get_ref()).collect();
    assert!(!rolled.is_empty(), "{results:?}");
    assert!(rolled.iter().all(|d| d.state == "rolled_back" && d.version == "1.2.0"));
    let restores: Vec<_> = receiver.calls().into_iter().filter(|c| c.action() == "restore").collect();
    assert_eq!(restores.len(), 1, "traffic moved once");
    assert_eq!((restores[0].version(), restores[0].weight()), ("1.1.0", 100));
    let status = release
        .get_status(authed(&people.viewer, pb::GetStatusRequest { app: "shop".into() }))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(status.entries.iter().find(|e| e.environment == "dev").unwrap().version, "1.1.0");

    // Any earlier successful release can be the target.
    let to_first =
        release.rollback_deployment(authed(&people.developer, rollback("1.0.0"))).await.unwrap().into_inner();
    assert_eq!(to_first.state, "rolled_back");
    let status = release
        .get_status(authed(&people.viewer, pb::GetStatusRequest { app: "shop".into() }))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(status.entries.iter().find(|e| e.environment == "dev").unwrap().version, "1.0.0");
    let never_ran = {
        stack.release_version(&people.developer, "shop", "2.0.0").await;
        release.rollback_deployment(authed(&people.developer, rollback("2.0.0"))).await.unwrap_err()
    };
    assert_eq!(never_ran.code(), Code::FailedPrecondition);
}

#[tokio::test]
async fn a_restart_in_the_middle_of_a_canary_resumes_at_the_right_step() {
    let mut stack = stack().await;
    let receiver = Receiver::start().await;
    let people = stack.pipeline(&receiver).await;
    stack.release_version(&people.developer, "shop", "1.0.0").await;
    let request = pb::CreateDeploymentRequest {
        app: "shop".into(),
        environment: "dev".into(),
        version: "1.0.0".into(),
        strategy: "canary".into(),
        steps: canary(&[(20, 3), (60, 1)]),
        ..Default::default()
    };
    let created = stack
        .release
        .clone()
        .create_deployment(authed(&people.developer, request))
        .await
        .unwrap()
        .into_inner();
    stack.wait_for(&people.viewer, &created.id, "the first step to hold", |d| d.weight == 20).await;
    stack.restart_release().await;
    let done = stack.wait_state(&people.viewer, &created.id, "succeeded").await;
    let weights: Vec<i64> = receiver.calls_for(&created.id).iter().map(|c| c.weight()).collect();
    assert_eq!(weights, [20, 60, 100], "no step repeated or skipped across the restart");
    let held = done.steps[0].completed_at.unwrap().seconds - done.steps[0].started_at.unwrap().seconds;
    assert!(held >= 2, "the first hold kept its duration across the restart ({held}s)");
}

#[tokio::test]
async fn pause_resume_promote_and_abort_drive_a_canary() {
    let stack = stack().await;
    let receiver = Receiver::start().await;
    let people = stack.pipeline(&receiver).await;
    stack.release_version(&people.developer, "shop", "1.0.0").await;
    stack.deploy_ok(&people.developer, "shop", "dev", "1.0.0").await;
    stack.release_version(&people.developer, "shop", "1.1.0").await;
    let request = pb::CreateDeploymentRequest {
        app: "shop".into(),
        environment: "dev".into(),
        version: "1.1.0".into(),
        strategy: "canary".into(),
        steps: canary(&[(10, 600), (50, 600)]),
        ..Default::default()
    };
    let mut release = stack.release.clone();
    let id = release.create_deployment(authed(&people.developer, request)).await.unwrap().into_inner().id;
    let action = |reason: &str| pb::DeploymentActionRequest {
        id: id.clone(),
        reason: reason.into(),
        ..Default::default()
    };
    stack.wait_for(&people.viewer, &id, "the first step", |d| d.weight == 10 && d.phase == "analyzing").await;
    let paused = release
        .pause_deployment(authed(&people.developer, action("investigating")))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(paused.phase, "paused");
    assert!(paused.next_action_at.is_none(), "a paused deployment does not advance");
    let again = release.pause_deployment(authed(&people.developer, action(""))).await.unwrap_err();
    assert_eq!(again.code(), Code::FailedPrecondition);
    let viewer = release.resume_deployment(authed(&people.viewer, action(""))).await.unwrap_err();
    assert_eq!(viewer.code(), Code::PermissionDenied);
    let resumed =
        release.resume_deployment(authed(&people.developer, action(""))).await.unwrap().into_inner();
    assert_eq!(resumed.phase, "analyzing");
    let remaining = resumed.next_action_at.unwrap().seconds - chrono::Utc::now().timestamp();
    assert!(remaining > 500, "the hold continues where it stopped ({remaining}s left)");
    // Stale revisions lose.
    let stale = release
        .promote_deployment(authed(
            &people.developer,
            pb::PromoteDeploymentRequest {
                id: id.clone(),
                full: false,
                expected_revision: paused.revision,
                ..Default::default()
            },
        ))
        .await
        .unwrap_err();
    assert_eq!(stale.code(), Code::Aborted);
    release
        .promote_deployment(authed(
            &people.developer,
            pb::PromoteDeploymentRequest { id: id.clone(), ..Default::default() },
        ))
        .await
        .unwrap();
    stack.wait_for(&people.viewer, &id, "the second step", |d| d.weight == 50).await;
    let aborted = release
        .abort_deployment(authed(&people.developer, action("wrong build")))
        .await
        .unwrap()
        .into_inner();
    assert_eq!((aborted.state.as_str(), aborted.failure_reason.as_str()), ("aborted", "wrong build"));
    let restore = receiver
        .calls_for(&id)
        .into_iter()
        .find(|c| c.action() == "restore")
        .expect("abort gives traffic back");
    assert_eq!((restore.version(), restore.weight()), ("1.0.0", 100));

    // Promote --full on a fresh canary jumps to 100%.
    let full = pb::CreateDeploymentRequest {
        app: "shop".into(),
        environment: "dev".into(),
        version: "1.1.0".into(),
        strategy: "canary".into(),
        steps: canary(&[(5, 600), (25, 600), (75, 600)]),
        ..Default::default()
    };
    let id = release.create_deployment(authed(&people.developer, full)).await.unwrap().into_inner().id;
    stack.wait_for(&people.viewer, &id, "the first step", |d| d.weight == 5).await;
    release
        .promote_deployment(authed(
            &people.developer,
            pb::PromoteDeploymentRequest { id: id.clone(), full: true, ..Default::default() },
        ))
        .await
        .unwrap();
    let done = stack.wait_state(&people.viewer, &id, "succeeded").await;
    let statuses: Vec<&str> = done.steps.iter().map(|s| s.status.as_str()).collect();
    assert_eq!(statuses, ["completed", "skipped", "skipped", "completed"]);
    assert_eq!(receiver.calls_for(&id).iter().map(|c| c.weight()).collect::<Vec<_>>(), [5, 100]);
}

#[tokio::test]
async fn the_router_driver_publishes_each_route_through_the_outbox() {
    let stack = stack().await;
    let receiver = Receiver::start().await;
    let people = stack.pipeline(&receiver).await;
    let config = serde_json::json!({
        "route": {"host": "shop.example.com", "path_prefix": "/"},
        "upstreams": {"1.0.0": ["127.0.0.1:9001"], "1.1.0": ["127.0.0.1:9002", "127.0.0.1:9003"]}
    });
    let mut release = stack.release.clone();
    release
        .put_target(authed(
            &people.manager,
            pb::PutTargetRequest {
                app: "shop".into(),
                environment: "dev".into(),
                driver: "router".into(),
                driver_config_json: config.to_string(),
                default_strategy: "canary".into(),
                ..Default::default()
            },
        ))
        .await
        .unwrap();
    let bad = release
        .put_target(authed(
            &people.manager,
            pb::PutTargetRequest {
                app: "shop".into(),
                environment: "dev".into(),
                driver: "router".into(),
                driver_config_json: "{\"upstreams\": {\"1.0.0\": []}}".into(),
                ..Default::default()
            },
        ))
        .await
        .unwrap_err();
    assert_eq!(bad.code(), Code::InvalidArgument);
    let mut routes =
        stack.bus.subscribe(&rp_events::ConsumerSpec::new("it-router", "rp.router.>")).await.unwrap();
    for version in ["1.0.0", "1.1.0"] {
        stack.release_version(&people.developer, "shop", version).await;
    }
    let first = release
        .create_deployment(authed(&people.developer, quick("shop", "dev", "1.0.0")))
        .await
        .unwrap()
        .into_inner();
    stack.wait_state(&people.viewer, &first.id, "succeeded").await;
    let request = pb::CreateDeploymentRequest {
        steps: canary(&[(25, 1)]),
        strategy: "canary".into(),
        ..quick("shop", "dev", "1.1.0")
    };
    let second = release.create_deployment(authed(&people.developer, request)).await.unwrap().into_inner();
    stack.wait_state(&people.viewer, &second.id, "succeeded").await;
    let mut updates = Vec::new();
    tokio::time::timeout(WAIT, async {
        while updates.len() < 3 {
            let delivery = routes.next().await.unwrap().unwrap();
            let route: rp_proto::events::v1::RouteUpdated = delivery.event.decode().unwrap();
            delivery.ack().await.unwrap();
            updates.push(route);
        }
    })
    .await
    .expect("three route updates");
    let summary: Vec<(String, String, i32)> = updates
        .iter()
        .map(|r| (r.canary_version.clone(), r.stable_version.clone(), r.canary_weight))
        .collect();
    assert_eq!(
        summary,
        [
            ("1.0.0".into(), String::new(), 100),
            ("1.1.0".into(), "1.0.0".into(), 25),
            ("1.1.0".into(), "1.0.0".into(), 100)
        ]
    );
    assert!(updates.windows(2).all(|w| w[0].revision < w[1].revision), "revisions order the updates");
    assert_eq!(updates[1].backends.iter().find(|b| b.version == "1.1.0").unwrap().addresses.len(), 2);
    assert_eq!(updates[1].r#match.as_ref().unwrap().host, "shop.example.com");

    // A router starting now loads the current route.
    let routes = release
        .list_routes(authed(&people.manager, pb::ListRoutesRequest {}))
        .await
        .unwrap()
        .into_inner()
        .routes;
    assert_eq!(routes.len(), 1);
    assert_eq!((routes[0].canary_version.as_str(), routes[0].canary_weight), ("1.1.0", 100));
    assert_eq!(routes[0].revision, updates[2].revision);
    let denied = release.list_routes(authed(&people.developer, pb::ListRoutesRequest {})).await.unwrap_err();
    assert_eq!(denied.code(), Code::PermissionDenied);
}
