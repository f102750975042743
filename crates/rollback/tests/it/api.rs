//! The rollback API's contract: policies (defaults, validation, roles), lists and their filters.

use release_pilot::{Role, testing::TestSystem};
use rp_proto::rollback::v1::{self as pb, rollback_service_client::RollbackServiceClient};
use rp_test_support::{TestEnv, authed};
use tonic::{Code, Request};

async fn system() -> TestSystem {
    let env = TestEnv::new();
    TestSystem::start(env.config.clone(), &[Role::Auth, Role::Rollback, Role::Gateway])
        .await
        .unwrap()
        .hold(env)
}

#[tokio::test]
async fn policies_default_to_the_trigger_matrix_and_only_valid_rules_are_stored() {
    let system = system().await;
    let admin = system.admin_token().await;
    let developer = system.user_token("dev@example.com", &["developer"]).await;
    let mut client = RollbackServiceClient::connect(system.grpc_endpoint("rollback")).await.unwrap();
    let get = pb::GetPolicyRequest { app: "shop".into(), environment: "prod".into() };

    let default = client.get_policy(authed(&developer, get.clone())).await.unwrap().into_inner();
    assert!(default.default && default.updated_at.is_none());
    let rules: Vec<serde_json::Value> = serde_json::from_str(&default.rules_json).unwrap();
    let error_rule = rules.iter().find(|r| r["name"] == "error rate above 2%").unwrap();
    assert_eq!(
        (error_rule["threshold"].as_f64(), error_rule["for_seconds"].as_u64()),
        (Some(2.0), Some(120))
    );
    assert!(rules.iter().any(|r| r["metric"] == "health_check_failures" && r["action"] == "rollback"));

    let put = |rules_json: &str| pb::PutPolicyRequest {
        app: "shop".into(),
        environment: "prod".into(),
        rules_json: rules_json.into(),
    };
    let rule = serde_json::json!({"name": "p99 above 800 ms", "metric": "latency_p99", "source": {"kind": "router"},
        "operator": "gt", "threshold": 800.0, "window_seconds": 30, "for_seconds": 10, "min_samples": 50,
        "no_data": "pause", "severity": "high", "action": "pause", "weights": [1, 50]});
    let forbidden = client.put_policy(authed(&developer, put(&format!("[{rule}]")))).await.unwrap_err();
    assert_eq!(forbidden.code(), Code::PermissionDenied);
    let mut zero_window = rule.clone();
    zero_window["window_seconds"] = 0.into();
    let mut wrong_source = rule.clone();
    wrong_source["source"] = serde_json::json!({"kind": "alertmanager"});
    let mut unknown_metric = rule.clone();
    unknown_metric["metric"] = "vibes".into();
    for (bad, why) in [
        ("not json".to_owned(), "valid rule list"),
        (format!("[{zero_window}]"), "window_seconds"),
        (format!("[{wrong_source}]"), "cannot come from"),
        (format!("[{unknown_metric}]"), "valid rule list"),
        (format!("[{rule}, {rule}]"), "two rules"),
    ] {
        let error = client.put_policy(authed(&admin, put(&bad))).await.unwrap_err();
        assert_eq!(error.code(), Code::InvalidArgument, "{bad}");
        assert!(error.message().contains(why), "{bad}: {}", error.message());
    }
    assert!(
        client.get_policy(authed(&admin, get.clone())).await.unwrap().into_inner().default,
        "nothing stored"
    );

    let stored = client.put_policy(authed(&admin, put(&format!("[{rule}]")))).await.unwrap().into_inner();
    assert!(!stored.default && stored.updated_at.is_some());
    let read = client.get_policy(authed(&developer, get.clone())).await.unwrap().into_inner();
    let rules: Vec<serde_json::Value> = serde_json::from_str(&read.rules_json).unwrap();
    assert_eq!(rules.len(), 1);
    assert_eq!(
        (rules[0]["no_data"].as_str(), rules[0]["weights"].clone()),
        (Some("pause"), serde_json::json!([1, 50]))
    );
    // An empty list restores the defaults.
    let reset = client.put_policy(authed(&admin, put("[]"))).await.unwrap().into_inner();
    assert!(reset.default);
    let bad_app = client
        .get_policy(authed(
            &admin,
            pb::GetPolicyRequest { app: "Not A Slug".into(), environment: "prod".into() },
        ))
        .await
        .unwrap_err();
    assert_eq!(bad_app.code(), Code::InvalidArgument);
}

#[tokio::test]
async fn lists_validate_their_filters_and_need_a_caller() {
    let system = system().await;
    let token = system.admin_token().await;
    let mut client = RollbackServiceClient::connect(system.grpc_endpoint("rollback")).await.unwrap();

    let empty = client
        .list_incidents(authed(&token, pb::ListIncidentsRequest::default()))
        .await
        .unwrap()
        .into_inner();
    assert!(empty.incidents.is_empty() && empty.next_page_token.is_empty());
    let bad_status = client
        .list_incidents(authed(
            &token,
            pb::ListIncidentsRequest { status: "maybe".into(), ..Default::default() },
        ))
        .await
        .unwrap_err();
    assert_eq!(bad_status.code(), Code::InvalidArgument);
    let bad_token = client
        .list_incidents(authed(
            &token,
            pb::ListIncidentsRequest { page_token: "zzz".into(), ..Default::default() },
        ))
        .await
        .unwrap_err();
    assert_eq!(bad_token.code(), Code::InvalidArgument);
    let missing = client
        .get_incident(authed(&token, pb::GetIncidentRequest { id: uuid::Uuid::now_v7().to_string() }))
        .await
        .unwrap_err();
    assert_eq!(missing.code(), Code::NotFound);
    let malformed =
        client.get_incident(authed(&token, pb::GetIncidentRequest { id: "42".into() })).await.unwrap_err();
    assert_eq!(malformed.code(), Code::InvalidArgument);
    let analyses = client
        .list_analyses(authed(
            &token,
            pb::ListAnalysesRequest { status: "sideways".into(), ..Default::default() },
        ))
        .await
        .unwrap_err();
    assert_eq!(analyses.code(), Code::InvalidArgument);
    let no_analysis =
        client.get_analysis(authed(&token, pb::GetAnalysisRequest::default())).await.unwrap_err();
    assert_eq!(no_analysis.code(), Code::InvalidArgument);
    let unknown = client
        .get_analysis(authed(
            &token,
            pb::GetAnalysisRequest { deployment_id: uuid::Uuid::now_v7().to_string(), ..Default::default() },
        ))
        .await
        .unwrap_err();
    assert_eq!(unknown.code(), Code::NotFound);
    assert!(
        client
            .list_rollbacks(authed(&token, pb::ListRollbacksRequest::default()))
            .await
            .unwrap()
            .into_inner()
            .rollbacks
            .is_empty()
    );
    let anonymous =
        client.list_incidents(Request::new(pb::ListIncidentsRequest::default())).await.unwrap_err();
    assert_eq!(anonymous.code(), Code::Unauthenticated);
    let viewer = system.user_token("viewer@example.com", &["viewer"]).await;
    let alerts = client
        .receive_alerts(authed(&viewer, pb::ReceiveAlertsRequest { payload_json: "{\"alerts\": []}".into() }))
        .await
        .unwrap_err();
    assert_eq!(alerts.code(), Code::PermissionDenied);

    let http = system
        .http
        .get(system.url("/api/v1/incidents?status=open"))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    assert_eq!(http.status(), 200);
    let body: serde_json::Value = http.json().await.unwrap();
    assert_eq!(body["items"], serde_json::json!([]));
}
