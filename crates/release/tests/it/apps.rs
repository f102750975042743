//! Apps.

use std::time::Duration;

use futures::StreamExt as _;
use rp_identity::Role;
use rp_proto::release::v1 as pb;
use rp_test_support::authed;
use tonic::Code;

use crate::{ADMIN_EMAIL, stack};

#[tokio::test]
async fn apps_are_created_by_release_managers_once_and_found_by_name_or_id() {
    let stack = stack().await;
    let developer = stack.user("dev@example.com", &[Role::Developer]).await;
    let rm = stack.user("rm@example.com", &[Role::ReleaseManager]).await;
    let create = |token: &str, name: &str, key: &str| {
        authed(
            token,
            pb::CreateAppRequest {
                name: name.into(),
                description: "storefront".into(),
                owner_team: "payments".into(),
                idempotency_key: key.into(),
            },
        )
    };
    let mut client = stack.release.clone();
    let denied = client.create_app(create(&developer, "checkout", "")).await.unwrap_err();
    assert_eq!(denied.code(), Code::PermissionDenied);
    assert!(denied.message().contains("release_manager"));

    for bad in ["", "a", "Checkout", "-checkout", "check_out", &"x".repeat(64)] {
        let status = client.create_app(create(&rm, bad, "")).await.unwrap_err();
        assert_eq!(status.code(), Code::InvalidArgument, "{bad:?}");
    }

    let app = client.create_app(create(&rm, "checkout", "key-1")).await.unwrap().into_inner();
    let retried = client.create_app(create(&rm, "checkout", "key-1")).await.unwrap().into_inner();
    assert_eq!(retried.id, app.id, "same idempotency key, same app");
    let duplicate = client.create_app(create(&rm, "checkout", "key-2")).await.unwrap_err();
    assert_eq!(duplicate.code(), Code::AlreadyExists);

    let by_name = client
        .get_app(authed(&developer, pb::GetAppRequest { app: "checkout".into() }))
        .await
        .unwrap()
        .into_inner();
    let by_id = client
        .get_app(authed(&developer, pb::GetAppRequest { app: app.id.clone() }))
        .await
        .unwrap()
        .into_inner();
    assert_eq!((by_name.id.as_str(), by_id.name.as_str()), (app.id.as_str(), "checkout"));
    assert_eq!(by_name.owner_team, "payments");
    let missing =
        client.get_app(authed(&developer, pb::GetAppRequest { app: "nope".into() })).await.unwrap_err();
    assert_eq!(missing.code(), Code::NotFound);

    for i in 0..4 {
        client.create_app(create(&rm, &format!("svc-{i}"), "")).await.unwrap();
    }
    let first = client
        .list_apps(authed(&developer, pb::ListAppsRequest { page_size: 3, page_token: String::new() }))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(first.apps.len(), 3);
    let second = client
        .list_apps(authed(
            &developer,
            pb::ListAppsRequest { page_size: 3, page_token: first.next_page_token.clone() },
        ))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(second.apps.len(), 2);
    assert!(second.next_page_token.is_empty());
}

#[tokio::test]
async fn an_app_creation_publishes_one_event_even_when_retried() {
    let stack = stack().await;
    let mut subscription = stack
        .bus
        .subscribe(&rp_events::ConsumerSpec::new("it-release", "rp.release.>").from_beginning())
        .await
        .unwrap();
    let admin = stack.admin().await;
    let request = || {
        authed(
            &admin,
            pb::CreateAppRequest { name: "web".into(), idempotency_key: "k".into(), ..Default::default() },
        )
    };
    let app = stack.release.clone().create_app(request()).await.unwrap().into_inner();
    stack.release.clone().create_app(request()).await.unwrap();
    stack
        .release
        .clone()
        .create_app(authed(&admin, pb::CreateAppRequest { name: "marker".into(), ..Default::default() }))
        .await
        .unwrap();
    let mut created = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            let delivery = subscription.next().await.unwrap().unwrap();
            let event = delivery.event.clone();
            delivery.ack().await.unwrap();
            let payload: rp_proto::events::v1::AppCreated = event.decode().unwrap();
            if payload.name == "marker" {
                break;
            }
            created.push(payload);
        }
    })
    .await
    .expect("events arrive");
    assert_eq!(created.len(), 1, "{created:?}");
    assert_eq!(created[0].app_id, app.id);
    assert_eq!(created[0].actor.as_ref().unwrap().email, ADMIN_EMAIL);
}
