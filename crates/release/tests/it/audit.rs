//! The audit log: every mutation, queryable, and a chain that detects edits and deletions.
//! DORA figures from a real history.

use rp_proto::release::v1 as pb;
use rp_test_support::authed;
use sea_orm::{ConnectionTrait as _, Statement};
use tonic::Code;

use crate::{quick, receiver::Receiver, stack};

#[tokio::test]
async fn the_audit_chain_records_who_did_what_and_detects_tampering() {
    let stack = stack().await;
    let receiver = Receiver::start().await;
    let people = stack.pipeline(&receiver).await;
    stack.release_version(&people.developer, "shop", "1.0.0").await;
    stack.deploy_ok(&people.developer, "shop", "dev", "1.0.0").await;
    let mut release = stack.release.clone();

    let denied = release
        .list_audit_entries(authed(&people.developer, pb::ListAuditEntriesRequest::default()))
        .await
        .unwrap_err();
    assert_eq!(denied.code(), Code::PermissionDenied);

    let by_dev = release
        .list_audit_entries(authed(
            &people.manager,
            pb::ListAuditEntriesRequest {
                actor: "dev@example.com".into(),
                page_size: 500,
                ..Default::default()
            },
        ))
        .await
        .unwrap()
        .into_inner();
    let actions: Vec<&str> = by_dev.entries.iter().map(|e| e.action.as_str()).collect();
    assert!(actions.contains(&"release.create") && actions.contains(&"deployment.created"), "{actions:?}");
    let created = by_dev.entries.iter().find(|e| e.action == "deployment.created").unwrap();
    assert!(created.after_json.contains("pending"), "{}", created.after_json);
    assert!(!created.request_id.is_empty() || created.actor_kind == "user");
    let environments = release
        .list_audit_entries(authed(
            &people.manager,
            pb::ListAuditEntriesRequest { resource_type: "environment".into(), ..Default::default() },
        ))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(environments.entries.len(), 3);
    assert!(environments.entries.iter().all(|e| e.actor_email == "rm@example.com"));

    // Other services' changes reach the log through their events.
    let users = rp_test_support::eventually(crate::WAIT, "auth events in the audit log", || async {
        let page = stack
            .release
            .clone()
            .list_audit_entries(authed(
                &people.manager,
                pb::ListAuditEntriesRequest {
                    resource_type: "users".into(),
                    page_size: 100,
                    ..Default::default()
                },
            ))
            .await
            .unwrap()
            .into_inner();
        (page.entries.iter().filter(|e| e.action == "auth.user_created").count() >= 7).then_some(page)
    })
    .await;
    assert!(users.entries.iter().any(|e| e.after_json.contains("qa@example.com")));

    let verified = release
        .verify_audit_chain(authed(&people.manager, pb::VerifyAuditChainRequest {}))
        .await
        .unwrap()
        .into_inner();
    assert!(verified.valid && verified.entries_checked > 10, "{verified:?}");
    assert_eq!(verified.head_hash.len(), 64);

    // Tamper with the stored log behind the service's back.
    let db = rp_db::connect(&stack.env.config, "release").await.unwrap();
    let backend = db.conn.get_database_backend();
    db.conn
        .execute_raw(Statement::from_string(
            backend,
            "UPDATE audit_log SET after_json = '{\"state\":\"succeeded\"}' WHERE seq = 5",
        ))
        .await
        .unwrap();
    let edited = release
        .verify_audit_chain(authed(&people.manager, pb::VerifyAuditChainRequest {}))
        .await
        .unwrap()
        .into_inner();
    assert!(!edited.valid);
    assert_eq!(edited.broken_at, 5);
    assert!(edited.problem.contains("edited"), "{}", edited.problem);

    // Repair the edit by restoring the chain would need the hash; instead delete a later row.
    db.conn
        .execute_raw(Statement::from_string(backend, "DELETE FROM audit_log WHERE seq <= 5"))
        .await
        .unwrap();
    let deleted = release
        .verify_audit_chain(authed(&people.manager, pb::VerifyAuditChainRequest {}))
        .await
        .unwrap()
        .into_inner();
    assert!(!deleted.valid);
    assert_eq!(deleted.broken_at, 1);
    assert!(deleted.problem.contains("missing"), "{}", deleted.problem);
}

#[tokio::test]
async fn dora_metrics_follow_the_production_history() {
    let stack = stack().await;
    let receiver = Receiver::start().await;
    let people = stack.pipeline(&receiver).await;
    let mut release = stack.release.clone();
    let ship = |version: &'static str| {
        let stack = &stack;
        let people = &people;
        let mut release = release.clone();
        async move {
            stack.release_version(&people.developer, "shop", version).await;
            stack.deploy_ok(&people.developer, "shop", "dev", version).await;
            release
                .report_quality_check(authed(
                    &people.qa,
                    pb::ReportQualityCheckRequest {
                        app: "shop".into(),
                        version: version.into(),
                        name: "coverage".into(),
                        status: "passed".into(),
                        value: Some(95.0),
                        url: String::new(),
                    },
                ))
                .await
                .unwrap();
            stack.deploy_ok(&people.developer, "shop", "staging", version).await;
            let created = release
                .create_deployment(authed(&people.manager, quick("shop", "prod", version)))
                .await
                .unwrap()
                .into_inner();
            release
                .approve_deployment(authed(
                    &people.other_manager,
                    pb::ApproveDeploymentRequest { id: created.id.clone(), ..Default::default() },
                ))
                .await
                .unwrap();
            stack.wait_state(&people.viewer, &created.id, "succeeded").await
        }
    };
    ship("1.0.0").await;
    ship("1.1.0").await;
    ship("1.2.0").await;
    // 1.2.0 goes wrong in production and is rolled back.
    release
        .rollback_deployment(authed(
            &people.manager,
            pb::RollbackRequest {
                app: "shop".into(),
                environment: "prod".into(),
                reason: "checkout errors".into(),
                ..Default::default()
            },
        ))
        .await
        .unwrap();
    let dora = release
        .get_dora_metrics(authed(
            &people.viewer,
            pb::GetDoraMetricsRequest { app: "shop".into(), ..Default::default() },
        ))
        .await
        .unwrap()
        .into_inner();
    assert_eq!((dora.environment.as_str(), dora.window_days), ("prod", 30), "production is the default");
    assert_eq!(dora.deployments, 3);
    assert_eq!(dora.failed_changes, 1);
    assert!((dora.change_failure_rate - 1.0 / 3.0).abs() < 1e-9);
    assert!((dora.deployment_frequency_per_day - 2.0 / 30.0).abs() < 1e-9, "two changes still stand");
    // Commits are stamped an hour before the release: lead time is about an hour.
    assert!((3600.0..3700.0).contains(&dora.lead_time_seconds), "{}", dora.lead_time_seconds);
    assert_eq!(dora.restorations, 1);
    assert!(dora.time_to_restore_seconds < 30.0, "{}", dora.time_to_restore_seconds);
    let dev = release
        .get_dora_metrics(authed(
            &people.viewer,
            pb::GetDoraMetricsRequest { app: "shop".into(), environment: "dev".into(), window_days: 7 },
        ))
        .await
        .unwrap()
        .into_inner();
    assert_eq!((dev.deployments, dev.failed_changes), (3, 0));
    let bad = release
        .get_dora_metrics(authed(
            &people.viewer,
            pb::GetDoraMetricsRequest { app: "shop".into(), window_days: 1000, ..Default::default() },
        ))
        .await
        .unwrap_err();
    assert_eq!(bad.code(), Code::InvalidArgument);
}
