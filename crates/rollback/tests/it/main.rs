//! Rollback service over gRPC beside auth, on the backend chosen by `RELEASE_PILOT_TEST_BACKEND`.

use release_pilot::{Role, testing::TestSystem};
use rp_proto::rollback::v1::{self as pb, rollback_service_client::RollbackServiceClient};
use rp_test_support::{TestEnv, authed};
use tonic::{Code, Request};

#[tokio::test]
async fn incidents_are_listed_and_read_by_authenticated_callers_with_validated_filters() {
    let system = {
        let env = TestEnv::new();
        TestSystem::start(env.config.clone(), &[Role::Auth, Role::Rollback, Role::Gateway])
            .await
            .unwrap()
            .hold(env)
    };
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
    let anonymous =
        client.list_incidents(Request::new(pb::ListIncidentsRequest::default())).await.unwrap_err();
    assert_eq!(anonymous.code(), Code::Unauthenticated);

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
