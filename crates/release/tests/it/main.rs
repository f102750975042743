//! Release service over gRPC beside a real auth service, on the backend chosen by
//! `RELEASE_PILOT_TEST_BACKEND`: local token verification and the first app API.

use std::{sync::Arc, time::Duration};

use base64::{Engine as _, engine::general_purpose::URL_SAFE_NO_PAD};
use futures::StreamExt as _;
use rp_identity::{Claims, Role};
use rp_proto::{
    auth::v1::{self as auth_pb, auth_service_client::AuthServiceClient},
    release::v1::{self as pb, release_service_client::ReleaseServiceClient},
};
use rp_runtime::{CancellationToken, Listeners};
use rp_test_support::{TestEnv, authed};
use sea_orm::{EntityTrait as _, QueryOrder as _};
use tonic::{Code, Request, transport::Channel};

const ADMIN_EMAIL: &str = "root@example.com";
const ADMIN_PASSWORD: &str = "root-password-123";

struct Stack {
    env: TestEnv,
    auth: AuthServiceClient<Channel>,
    release: ReleaseServiceClient<Channel>,
    bus: rp_events::SharedBus,
    _stop: tokio_util::sync::DropGuard,
}

async fn stack() -> Stack {
    let mut env = TestEnv::with_env(&[
        ("RP_AUTH__BOOTSTRAP_ADMIN__EMAIL", ADMIN_EMAIL),
        ("RP_AUTH__BOOTSTRAP_ADMIN__PASSWORD", ADMIN_PASSWORD),
    ]);
    let auth_listeners =
        Listeners::bind(env.config.auth.grpc_addr, env.config.auth.admin_addr).await.unwrap();
    env.config.endpoints.auth = format!("http://{}", auth_listeners.primary_addr());
    let config = Arc::new(env.config.clone());
    let bus = rp_events::connect(&config.nats).await.unwrap();
    let shutdown = CancellationToken::new();
    let auth = rp_auth::start(config.clone(), bus.clone(), auth_listeners, shutdown.clone()).await.unwrap();
    let release_listeners =
        Listeners::bind(config.release.grpc_addr, config.release.admin_addr).await.unwrap();
    let release = rp_release::start(config, bus.clone(), release_listeners, shutdown.clone()).await.unwrap();
    Stack {
        env,
        auth: AuthServiceClient::connect(format!("http://{}", auth.primary_addr)).await.unwrap(),
        release: ReleaseServiceClient::connect(format!("http://{}", release.primary_addr)).await.unwrap(),
        bus,
        _stop: shutdown.drop_guard(),
    }
}

impl Stack {
    async fn login(&self, email: &str, password: &str) -> String {
        self.auth
            .clone()
            .login(auth_pb::LoginRequest { email: email.into(), password: password.into() })
            .await
            .unwrap()
            .into_inner()
            .access_token
    }

    async fn admin(&self) -> String {
        self.login(ADMIN_EMAIL, ADMIN_PASSWORD).await
    }

    async fn user(&self, email: &str, roles: &[Role]) -> String {
        let admin = self.admin().await;
        self.auth
            .clone()
            .create_user(authed(
                &admin,
                auth_pb::CreateUserRequest {
                    email: email.into(),
                    display_name: String::new(),
                    password: "user-password-123".into(),
                    roles: roles.iter().map(|r| r.to_proto() as i32).collect(),
                },
            ))
            .await
            .unwrap();
        self.login(email, "user-password-123").await
    }

    async fn list_apps(&self, token: &str) -> Result<pb::ListAppsResponse, tonic::Status> {
        self.release
            .clone()
            .list_apps(authed(token, pb::ListAppsRequest::default()))
            .await
            .map(|r| r.into_inner())
    }

    /// The current signing key, read from auth's own tables: lets a test forge tokens that are
    /// correctly signed but wrong in another way.
    async fn signing_key(&self) -> (String, jsonwebtoken::EncodingKey) {
        let db = rp_db::connect(&self.env.config, "auth").await.unwrap();
        let key = rp_auth::store::signing_keys::Entity::find()
            .order_by_desc(rp_auth::store::signing_keys::Column::CreatedAt)
            .one(&db.conn)
            .await
            .unwrap()
            .unwrap();
        (key.kid, rp_auth::domain::keys::encoding_key(&key.private_key).unwrap())
    }

    fn claims(&self, exp_offset: i64) -> Claims {
        let now = chrono::Utc::now().timestamp();
        Claims {
            iss: self.env.config.identity.issuer.clone(),
            aud: self.env.config.identity.audience.clone(),
            sub: uuid::Uuid::now_v7().to_string(),
            exp: now + exp_offset,
            iat: now - 10,
            nbf: now - 10,
            jti: uuid::Uuid::now_v7().to_string(),
            email: "forged@example.com".into(),
            roles: vec!["admin".into()],
            kind: "user".into(),
        }
    }
}

fn sign(kid: &str, key: &jsonwebtoken::EncodingKey, claims: &Claims) -> String {
    let mut header = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::EdDSA);
    header.kid = Some(kid.to_owned());
    jsonwebtoken::encode(&header, claims, key).unwrap()
}

fn assert_refused(result: Result<pb::ListAppsResponse, tonic::Status>, what: &str) -> tonic::Status {
    let status = result.expect_err(what);
    assert_eq!(status.code(), Code::Unauthenticated, "{what}: {status:?}");
    status
}

#[tokio::test]
async fn the_release_service_verifies_tokens_itself_and_refuses_every_forgery() {
    let stack = stack().await;
    let (kid, key) = stack.signing_key().await;
    assert!(
        stack.list_apps(&sign(&kid, &key, &stack.claims(300))).await.is_ok(),
        "a correctly signed token passes"
    );
    assert!(stack.list_apps(&stack.admin().await).await.is_ok());

    let expired = assert_refused(stack.list_apps(&sign(&kid, &key, &stack.claims(-120))).await, "expired");
    assert!(expired.message().contains("expired"), "{}", expired.message());

    let valid = sign(&kid, &key, &stack.claims(300));
    let parts: Vec<&str> = valid.split('.').collect();
    let mut claims = stack.claims(300);
    claims.email = "someone-else@example.com".into();
    let tampered =
        format!("{}.{}.{}", parts[0], URL_SAFE_NO_PAD.encode(serde_json::to_vec(&claims).unwrap()), parts[2]);
    assert_refused(stack.list_apps(&tampered).await, "tampered payload");

    let stranger = rp_auth::domain::keys::generate();
    let wrong_key =
        sign(&kid, &rp_auth::domain::keys::encoding_key(&stranger.private_key).unwrap(), &stack.claims(300));
    assert_refused(stack.list_apps(&wrong_key).await, "signed with another key under the real kid");
    let unknown_kid = sign(
        &stranger.kid,
        &rp_auth::domain::keys::encoding_key(&stranger.private_key).unwrap(),
        &stack.claims(300),
    );
    assert_refused(stack.list_apps(&unknown_kid).await, "unknown kid");

    let none_header = URL_SAFE_NO_PAD.encode(format!(r#"{{"alg":"none","typ":"JWT","kid":"{kid}"}}"#));
    let none_token = format!("{none_header}.{}.", parts[1]);
    assert_refused(stack.list_apps(&none_token).await, "alg none");

    let jwks: serde_json::Value = serde_json::from_str(
        &stack.auth.clone().get_jwks(auth_pb::GetJwksRequest {}).await.unwrap().into_inner().jwks_json,
    )
    .unwrap();
    let public = URL_SAFE_NO_PAD.decode(jwks["keys"][0]["x"].as_str().unwrap()).unwrap();
    let mut hs_header = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256);
    hs_header.kid = Some(kid.clone());
    let confused = jsonwebtoken::encode(
        &hs_header,
        &stack.claims(300),
        &jsonwebtoken::EncodingKey::from_secret(&public),
    )
    .unwrap();
    assert_refused(stack.list_apps(&confused).await, "HS256 keyed with the public key");

    let mut wrong_audience = stack.claims(300);
    wrong_audience.aud = "another-system".into();
    assert_refused(stack.list_apps(&sign(&kid, &key, &wrong_audience)).await, "wrong audience");
    let mut wrong_issuer = stack.claims(300);
    wrong_issuer.iss = "evil".into();
    assert_refused(stack.list_apps(&sign(&kid, &key, &wrong_issuer)).await, "wrong issuer");
    let mut not_yet = stack.claims(600);
    not_yet.nbf = chrono::Utc::now().timestamp() + 300;
    assert_refused(stack.list_apps(&sign(&kid, &key, &not_yet)).await, "not valid yet");

    assert_refused(stack.list_apps("garbage").await, "not a JWT");
    let missing =
        stack.release.clone().list_apps(Request::new(pb::ListAppsRequest::default())).await.unwrap_err();
    assert_eq!(missing.code(), Code::Unauthenticated);
}

#[tokio::test]
async fn after_a_key_rotation_old_and_new_tokens_both_pass_without_a_restart() {
    let stack = stack().await;
    let before = stack.admin().await;
    assert!(stack.list_apps(&before).await.is_ok(), "release caches the first key");
    stack
        .auth
        .clone()
        .rotate_signing_key(authed(&before, auth_pb::RotateSigningKeyRequest {}))
        .await
        .unwrap();
    let after = stack.admin().await;
    assert!(stack.list_apps(&after).await.is_ok(), "the new key id triggers a JWKS refresh");
    assert!(stack.list_apps(&before).await.is_ok(), "the old key keeps verifying its tokens");
}

#[tokio::test]
async fn api_tokens_work_against_other_services() {
    let stack = stack().await;
    let rm = stack.user("rm@example.com", &[Role::ReleaseManager]).await;
    let secret = stack
        .auth
        .clone()
        .create_api_token(authed(
            &rm,
            auth_pb::CreateApiTokenRequest {
                name: "ci".into(),
                roles: vec![Role::ReleaseManager.to_proto() as i32],
                ttl_seconds: 0,
            },
        ))
        .await
        .unwrap()
        .into_inner()
        .secret;
    let app = stack
        .release
        .clone()
        .create_app(authed(&secret, pb::CreateAppRequest { name: "from-ci".into(), ..Default::default() }))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(app.name, "from-ci");
    assert_refused(stack.list_apps("rp_not-a-real-token").await, "unknown API token");
}

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
