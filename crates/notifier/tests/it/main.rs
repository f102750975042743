//! Notifier service over gRPC beside auth, on the backend chosen by `RELEASE_PILOT_TEST_BACKEND`.

use release_pilot::{Role, testing::TestSystem};
use rp_proto::notifier::v1::{self as pb, notifier_service_client::NotifierServiceClient};
use rp_test_support::{TestEnv, authed};
use tonic::{Code, Request};

#[tokio::test]
async fn channels_are_listed_and_read_by_authenticated_callers() {
    let system = {
        let env = TestEnv::new();
        TestSystem::start(env.config.clone(), &[Role::Auth, Role::Notifier, Role::Gateway])
            .await
            .unwrap()
            .hold(env)
    };
    let token = system.admin_token().await;
    let mut client = NotifierServiceClient::connect(system.grpc_endpoint("notifier")).await.unwrap();
    let list = client.list_channels(authed(&token, pb::ListChannelsRequest {})).await.unwrap().into_inner();
    assert!(list.channels.is_empty());
    let missing = client
        .get_channel(authed(&token, pb::GetChannelRequest { id: uuid::Uuid::now_v7().to_string() }))
        .await
        .unwrap_err();
    assert_eq!(missing.code(), Code::NotFound);
    let malformed =
        client.get_channel(authed(&token, pb::GetChannelRequest { id: "x".into() })).await.unwrap_err();
    assert_eq!(malformed.code(), Code::InvalidArgument);
    let anonymous = client.list_channels(Request::new(pb::ListChannelsRequest {})).await.unwrap_err();
    assert_eq!(anonymous.code(), Code::Unauthenticated);
    let http = system.http.get(system.url("/api/v1/channels")).bearer_auth(&token).send().await.unwrap();
    assert_eq!(http.status(), 200);
}
