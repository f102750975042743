//! Notifier service over gRPC beside auth, on the backend chosen by `RELEASE_PILOT_TEST_BACKEND`.

use release_pilot::{Role, testing::TestSystem};
use rp_proto::notifier::v1::{self as pb, notifier_service_client::NotifierServiceClient};
use rp_test_support::TestEnv;
use tonic::{Code, Request, metadata::MetadataValue};

fn authed<T>(token: &str, body: T) -> Request<T> {
    let mut request = Request::new(body);
    request
        .metadata_mut()
        .insert("authorization", MetadataValue::try_from(format!("Bearer {token}")).unwrap());
    request
}

#[tokio::test]
async fn channels_are_listed_and_read_by_authenticated_callers() {
    let system =
        TestSystem::start(TestEnv::new().config, &[Role::Auth, Role::Notifier, Role::Gateway]).await.unwrap();
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
