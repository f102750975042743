//! Auth service over gRPC, on the backend chosen by `RELEASE_PILOT_TEST_BACKEND`.

use std::{sync::Arc, time::Duration};

use futures::StreamExt as _;
use rp_identity::{Authenticator, GrpcKeySource, Role};
use rp_proto::auth::v1::{self as pb, auth_service_client::AuthServiceClient};
use rp_runtime::{CancellationToken, Listeners, RunningService};
use rp_test_support::{TestEnv, authed};
use tonic::{Code, Request, metadata::MetadataValue, transport::Channel};

const ADMIN_EMAIL: &str = "root@example.com";
const ADMIN_PASSWORD: &str = "root-password-123";

struct Auth {
    env: TestEnv,
    service: RunningService,
    client: AuthServiceClient<Channel>,
    bus: rp_events::SharedBus,
    shutdown: CancellationToken,
    _stop_on_drop: tokio_util::sync::DropGuard,
}

async fn start_with(extra: &[(&str, &str)]) -> Auth {
    let mut vars = vec![
        ("RP_AUTH__BOOTSTRAP_ADMIN__EMAIL", ADMIN_EMAIL),
        ("RP_AUTH__BOOTSTRAP_ADMIN__PASSWORD", ADMIN_PASSWORD),
    ];
    vars.extend_from_slice(extra);
    let env = TestEnv::with_env(&vars);
    start_env(env).await
}

async fn start_env(env: TestEnv) -> Auth {
    let config = Arc::new(env.config.clone());
    let bus = rp_events::connect(&config.nats).await.unwrap();
    let listeners = Listeners::bind(config.auth.grpc_addr, config.auth.admin_addr).await.unwrap();
    let shutdown = CancellationToken::new();
    let service = rp_auth::start(config, bus.clone(), listeners, shutdown.clone()).await.unwrap();
    let client = AuthServiceClient::connect(format!("http://{}", service.primary_addr)).await.unwrap();
    Auth { env, service, client, bus, _stop_on_drop: shutdown.clone().drop_guard(), shutdown }
}

async fn start() -> Auth {
    start_with(&[]).await
}

fn from_ip<T>(ip: &str, body: T) -> Request<T> {
    let mut request = Request::new(body);
    request.metadata_mut().insert("x-rp-client-ip", MetadataValue::try_from(ip).unwrap());
    request
}

impl Auth {
    async fn login(&self, email: &str, password: &str) -> Result<pb::TokenPair, tonic::Status> {
        self.client
            .clone()
            .login(pb::LoginRequest { email: email.into(), password: password.into() })
            .await
            .map(|r| r.into_inner())
    }

    async fn admin(&self) -> String {
        self.login(ADMIN_EMAIL, ADMIN_PASSWORD).await.unwrap().access_token
    }

    async fn create_user(&self, email: &str, roles: &[Role]) -> pb::User {
        let admin = self.admin().await;
        self.client
            .clone()
            .create_user(authed(
                &admin,
                pb::CreateUserRequest {
                    email: email.into(),
                    display_name: String::new(),
                    password: "user-password-123".into(),
                    roles: roles.iter().map(|r| r.to_proto() as i32).collect(),
                },
            ))
            .await
            .unwrap()
            .into_inner()
    }

    async fn me(&self, token: &str) -> Result<pb::User, tonic::Status> {
        self.client.clone().get_me(authed(token, pb::GetMeRequest {})).await.map(|r| r.into_inner())
    }

    fn authenticator(&self) -> Authenticator {
        let mut endpoints = self.env.config.endpoints.clone();
        endpoints.auth = format!("http://{}", self.service.primary_addr);
        Authenticator::new(
            Arc::new(GrpcKeySource::new(&endpoints).unwrap()),
            self.env.config.identity.clone(),
        )
    }
}

fn jwt_header(token: &str) -> serde_json::Value {
    use base64::Engine as _;
    let header = token.split('.').next().unwrap();
    serde_json::from_slice(&base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(header).unwrap()).unwrap()
}

#[tokio::test]
async fn login_issues_an_eddsa_token_that_verifies_against_the_published_jwks() {
    let auth = start().await;
    let pair = auth.login(ADMIN_EMAIL, ADMIN_PASSWORD).await.unwrap();
    assert_eq!(pair.token_type, "Bearer");
    assert_eq!(pair.expires_in, 900);
    assert!(!pair.refresh_token.is_empty());
    let header = jwt_header(&pair.access_token);
    assert_eq!(header["alg"], "EdDSA");
    let jwks: serde_json::Value = serde_json::from_str(
        &auth.client.clone().get_jwks(pb::GetJwksRequest {}).await.unwrap().into_inner().jwks_json,
    )
    .unwrap();
    assert_eq!(jwks["keys"][0]["kid"], header["kid"]);
    assert_eq!(jwks["keys"][0]["kty"], "OKP");
    assert_eq!(jwks["keys"][0]["crv"], "Ed25519");
    assert!(jwks["keys"][0].get("d").is_none(), "the JWKS must not contain private material");

    let principal = auth.authenticator().authenticate_token(&pair.access_token).await.unwrap();
    assert_eq!(principal.email, ADMIN_EMAIL);
    assert_eq!(principal.roles, vec![Role::Admin]);
}

#[tokio::test]
async fn wrong_password_and_unknown_account_get_the_same_answer() {
    let auth = start().await;
    let wrong = auth.login(ADMIN_EMAIL, "not-the-password").await.unwrap_err();
    let unknown = auth.login("nobody@example.com", "not-the-password").await.unwrap_err();
    assert_eq!(wrong.code(), Code::Unauthenticated);
    assert_eq!((wrong.code(), wrong.message()), (unknown.code(), unknown.message()));
    let empty = auth.login("", "").await.unwrap_err();
    assert_eq!(empty.code(), Code::InvalidArgument);
    // E-mail matching ignores case and surrounding blanks.
    assert!(auth.login(" ROOT@example.com ", ADMIN_PASSWORD).await.is_ok());
}

#[tokio::test]
async fn refresh_rotates_and_reusing_a_rotated_token_revokes_the_whole_family() {
    let auth = start().await;
    let first = auth.login(ADMIN_EMAIL, ADMIN_PASSWORD).await.unwrap();
    let refresh = |token: String| {
        let mut client = auth.client.clone();
        async move { client.refresh(pb::RefreshRequest { refresh_token: token }).await.map(|r| r.into_inner()) }
    };
    let second = refresh(first.refresh_token.clone()).await.unwrap();
    assert_ne!(second.refresh_token, first.refresh_token);
    assert!(auth.me(&second.access_token).await.is_ok());

    // The stolen first token is replayed: refused, and the family dies with it.
    let reuse = refresh(first.refresh_token.clone()).await.unwrap_err();
    assert_eq!(reuse.code(), Code::Unauthenticated);
    assert!(reuse.message().contains("already used"), "{}", reuse.message());
    let after = refresh(second.refresh_token.clone()).await.unwrap_err();
    assert_eq!(after.code(), Code::Unauthenticated, "the legitimate newer token is revoked too");

    // Another login is a separate family and still works.
    let other = auth.login(ADMIN_EMAIL, ADMIN_PASSWORD).await.unwrap();
    assert!(refresh(other.refresh_token).await.is_ok());
    assert_eq!(refresh("garbage".into()).await.unwrap_err().code(), Code::Unauthenticated);
}

#[tokio::test]
async fn concurrent_refreshes_of_one_token_let_exactly_one_win() {
    let auth = start().await;
    let pair = auth.login(ADMIN_EMAIL, ADMIN_PASSWORD).await.unwrap();
    let attempts = (0..8).map(|_| {
        let mut client = auth.client.clone();
        let token = pair.refresh_token.clone();
        async move { client.refresh(pb::RefreshRequest { refresh_token: token }).await }
    });
    let results = futures::future::join_all(attempts).await;
    assert_eq!(results.iter().filter(|r| r.is_ok()).count(), 1, "{results:?}");
}

#[tokio::test]
async fn logout_revokes_the_refresh_family_and_is_idempotent() {
    let auth = start().await;
    let pair = auth.login(ADMIN_EMAIL, ADMIN_PASSWORD).await.unwrap();
    let rotated = auth
        .client
        .clone()
        .refresh(pb::RefreshRequest { refresh_token: pair.refresh_token.clone() })
        .await
        .unwrap()
        .into_inner();
    auth.client
        .clone()
        .logout(pb::LogoutRequest { refresh_token: rotated.refresh_token.clone() })
        .await
        .unwrap();
    auth.client
        .clone()
        .logout(pb::LogoutRequest { refresh_token: rotated.refresh_token.clone() })
        .await
        .unwrap();
    let refused = auth
        .client
        .clone()
        .refresh(pb::RefreshRequest { refresh_token: rotated.refresh_token })
        .await
        .unwrap_err();
    assert_eq!(refused.code(), Code::Unauthenticated);
}

#[tokio::test]
async fn api_tokens_are_shown_once_scoped_to_the_owners_roles_recorded_and_revocable() {
    let auth = start().await;
    auth.create_user("dev@example.com", &[Role::Developer, Role::Qa]).await;
    let dev = auth.login("dev@example.com", "user-password-123").await.unwrap().access_token;

    let escalate = auth
        .client
        .clone()
        .create_api_token(authed(
            &dev,
            pb::CreateApiTokenRequest {
                name: "ci".into(),
                roles: vec![Role::Admin.to_proto() as i32],
                ttl_seconds: 0,
            },
        ))
        .await
        .unwrap_err();
    assert_eq!(escalate.code(), Code::PermissionDenied, "nobody grants a role they lack");

    let created = auth
        .client
        .clone()
        .create_api_token(authed(
            &dev,
            pb::CreateApiTokenRequest {
                name: "ci".into(),
                roles: vec![Role::Developer.to_proto() as i32],
                ttl_seconds: 3600,
            },
        ))
        .await
        .unwrap()
        .into_inner();
    let secret = created.secret.clone();
    let token = created.token.unwrap();
    assert!(secret.starts_with("rp_") && secret.starts_with(&token.prefix));
    assert!(token.expires_at.is_some());

    let me = auth.me(&secret).await.unwrap();
    assert_eq!(me.email, "dev@example.com");
    assert_eq!(me.roles, vec![Role::Developer.to_proto() as i32], "the token's roles, not all the owner's");

    let listed = auth
        .client
        .clone()
        .list_api_tokens(authed(&dev, pb::ListApiTokensRequest { include_revoked: false }))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(listed.tokens.len(), 1);
    assert!(listed.tokens[0].last_used_at.is_some(), "use is recorded");
    let listed_json = format!("{listed:?}");
    assert!(!listed_json.contains(&secret[10..]), "the secret is never listed");

    // An API token cannot mint more tokens.
    let chained = auth
        .client
        .clone()
        .create_api_token(authed(
            &secret,
            pb::CreateApiTokenRequest {
                name: "x".into(),
                roles: vec![Role::Developer.to_proto() as i32],
                ttl_seconds: 0,
            },
        ))
        .await
        .unwrap_err();
    assert_eq!(chained.code(), Code::PermissionDenied);

    // Another user cannot see or revoke it.
    auth.create_user("other@example.com", &[Role::Developer]).await;
    let other = auth.login("other@example.com", "user-password-123").await.unwrap().access_token;
    let foreign = auth
        .client
        .clone()
        .revoke_api_token(authed(&other, pb::RevokeApiTokenRequest { id: token.id.clone() }))
        .await
        .unwrap_err();
    assert_eq!(foreign.code(), Code::NotFound);

    let revoked = auth
        .client
        .clone()
        .revoke_api_token(authed(&dev, pb::RevokeApiTokenRequest { id: token.id.clone() }))
        .await
        .unwrap()
        .into_inner();
    assert!(revoked.revoked_at.is_some());
    assert_eq!(auth.me(&secret).await.unwrap_err().code(), Code::Unauthenticated);
    let remaining = auth
        .client
        .clone()
        .list_api_tokens(authed(&dev, pb::ListApiTokensRequest { include_revoked: false }))
        .await
        .unwrap()
        .into_inner();
    assert!(remaining.tokens.is_empty());
}

#[tokio::test]
async fn api_tokens_lose_roles_their_owner_loses_and_die_with_a_disabled_owner() {
    let auth = start().await;
    let user = auth.create_user("rm@example.com", &[Role::ReleaseManager, Role::Developer]).await;
    let rm = auth.login("rm@example.com", "user-password-123").await.unwrap().access_token;
    let secret = auth
        .client
        .clone()
        .create_api_token(authed(
            &rm,
            pb::CreateApiTokenRequest {
                name: "deploy".into(),
                roles: vec![Role::ReleaseManager.to_proto() as i32, Role::Developer.to_proto() as i32],
                ttl_seconds: 0,
            },
        ))
        .await
        .unwrap()
        .into_inner()
        .secret;
    let admin = auth.admin().await;
    auth.client
        .clone()
        .update_user(authed(
            &admin,
            pb::UpdateUserRequest {
                id: user.id.clone(),
                display_name: None,
                roles: Some(pb::RoleList { roles: vec![Role::Developer.to_proto() as i32] }),
                disabled: None,
            },
        ))
        .await
        .unwrap();
    assert_eq!(auth.me(&secret).await.unwrap().roles, vec![Role::Developer.to_proto() as i32]);
    auth.client
        .clone()
        .update_user(authed(
            &admin,
            pb::UpdateUserRequest { id: user.id, display_name: None, roles: None, disabled: Some(true) },
        ))
        .await
        .unwrap();
    assert_eq!(auth.me(&secret).await.unwrap_err().code(), Code::Unauthenticated);
    assert_eq!(
        auth.login("rm@example.com", "user-password-123").await.unwrap_err().code(),
        Code::Unauthenticated
    );
}

#[tokio::test]
async fn failed_logins_are_throttled_per_account_and_per_ip_with_a_retry_after() {
    let auth = start_with(&[
        ("RP_AUTH__THROTTLE__MAX_FAILURES_PER_ACCOUNT", "3"),
        ("RP_AUTH__THROTTLE__MAX_FAILURES_PER_IP", "5"),
        ("RP_AUTH__THROTTLE__WINDOW_SECS", "600"),
    ])
    .await;
    let attempt = |email: &'static str, password: &'static str, ip: &'static str| {
        let mut client = auth.client.clone();
        async move {
            client
                .login(from_ip(ip, pb::LoginRequest { email: email.into(), password: password.into() }))
                .await
        }
    };
    for _ in 0..3 {
        assert_eq!(
            attempt(ADMIN_EMAIL, "wrong", "198.51.100.1").await.unwrap_err().code(),
            Code::Unauthenticated
        );
    }
    // Even the right password is refused now, from any address, with a clear reason and a wait.
    let throttled = attempt(ADMIN_EMAIL, ADMIN_PASSWORD, "198.51.100.2").await.unwrap_err();
    assert_eq!(throttled.code(), Code::ResourceExhausted);
    assert!(throttled.message().contains("this account"), "{}", throttled.message());
    let retry_after: u64 =
        throttled.metadata().get("retry-after").unwrap().to_str().unwrap().parse().unwrap();
    assert!((590..=600).contains(&retry_after), "{retry_after}");

    // Per address: two more failures on other accounts from .1 reach the IP limit of five.
    for email in ["a@example.com", "b@example.com"] {
        let email: &'static str = email;
        assert_eq!(attempt(email, "wrong", "198.51.100.1").await.unwrap_err().code(), Code::Unauthenticated);
    }
    let by_ip = attempt("c@example.com", "whatever", "198.51.100.1").await.unwrap_err();
    assert_eq!(by_ip.code(), Code::ResourceExhausted);
    assert!(by_ip.message().contains("your address"), "{}", by_ip.message());
    // A different address is unaffected for other accounts.
    assert_eq!(
        attempt("c@example.com", "whatever", "198.51.100.3").await.unwrap_err().code(),
        Code::Unauthenticated
    );
}

#[tokio::test]
async fn admin_only_calls_refuse_other_roles_and_anonymous_callers() {
    let auth = start().await;
    auth.create_user("viewer@example.com", &[Role::Viewer]).await;
    let viewer = auth.login("viewer@example.com", "user-password-123").await.unwrap().access_token;
    let mut client = auth.client.clone();
    let denied = client.list_users(authed(&viewer, pb::ListUsersRequest::default())).await.unwrap_err();
    assert_eq!(denied.code(), Code::PermissionDenied);
    assert!(denied.message().contains("admin"));
    assert_eq!(
        client.rotate_signing_key(authed(&viewer, pb::RotateSigningKeyRequest {})).await.unwrap_err().code(),
        Code::PermissionDenied
    );
    assert_eq!(
        client.list_users(Request::new(pb::ListUsersRequest::default())).await.unwrap_err().code(),
        Code::Unauthenticated
    );
    assert_eq!(
        client.list_users(authed("not-a-jwt", pb::ListUsersRequest::default())).await.unwrap_err().code(),
        Code::Unauthenticated
    );
    // A viewer may read themselves but not others.
    let me = auth.me(&viewer).await.unwrap();
    assert!(client.get_user(authed(&viewer, pb::GetUserRequest { id: me.id.clone() })).await.is_ok());
    let admin_id = auth.me(&auth.admin().await).await.unwrap().id;
    assert_eq!(
        client.get_user(authed(&viewer, pb::GetUserRequest { id: admin_id })).await.unwrap_err().code(),
        Code::PermissionDenied
    );
}

#[tokio::test]
async fn user_management_validates_input_and_pages() {
    let auth = start().await;
    let admin = auth.admin().await;
    let mut client = auth.client.clone();
    let create = |email: &str, password: &str| {
        authed(
            &admin,
            pb::CreateUserRequest {
                email: email.into(),
                display_name: String::new(),
                password: password.into(),
                roles: vec![],
            },
        )
    };
    assert_eq!(
        client.create_user(create("not-an-email", "long-enough-pw")).await.unwrap_err().code(),
        Code::InvalidArgument
    );
    assert_eq!(
        client.create_user(create("short@example.com", "short")).await.unwrap_err().code(),
        Code::InvalidArgument
    );
    let user = client.create_user(create("New@Example.com", "long-enough-pw")).await.unwrap().into_inner();
    assert_eq!(user.email, "new@example.com");
    assert_eq!(user.roles, vec![Role::Viewer.to_proto() as i32], "viewer by default");
    assert_eq!(
        client.create_user(create("new@example.com", "long-enough-pw")).await.unwrap_err().code(),
        Code::AlreadyExists
    );
    for i in 0..3 {
        client.create_user(create(&format!("u{i}@example.com"), "long-enough-pw")).await.unwrap();
    }
    let mut seen = Vec::new();
    let mut token = String::new();
    loop {
        let page = client
            .list_users(authed(&admin, pb::ListUsersRequest { page_size: 2, page_token: token.clone() }))
            .await
            .unwrap()
            .into_inner();
        assert!(page.users.len() <= 2);
        seen.extend(page.users.into_iter().map(|u| u.email));
        if page.next_page_token.is_empty() {
            break;
        }
        token = page.next_page_token;
    }
    assert_eq!(seen.len(), 5, "admin + 4 users, each once: {seen:?}");
    let bad_token = client
        .list_users(authed(&admin, pb::ListUsersRequest { page_size: 2, page_token: "x".into() }))
        .await
        .unwrap_err();
    assert_eq!(bad_token.code(), Code::InvalidArgument);
    // Administrators cannot lock themselves out.
    let me = auth.me(&admin).await.unwrap();
    let self_disable = client
        .update_user(authed(
            &admin,
            pb::UpdateUserRequest { id: me.id, display_name: None, roles: None, disabled: Some(true) },
        ))
        .await
        .unwrap_err();
    assert_eq!(self_disable.code(), Code::FailedPrecondition);
}

#[tokio::test]
async fn changing_a_password_needs_the_current_one_and_ends_other_sessions() {
    let auth = start().await;
    auth.create_user("pw@example.com", &[Role::Developer]).await;
    let pair = auth.login("pw@example.com", "user-password-123").await.unwrap();
    let mut client = auth.client.clone();
    let wrong = client
        .set_password(authed(
            &pair.access_token,
            pb::SetPasswordRequest {
                user_id: String::new(),
                current_password: "nope".into(),
                new_password: "brand-new-password".into(),
            },
        ))
        .await
        .unwrap_err();
    assert_eq!(wrong.code(), Code::PermissionDenied, "a wrong current password is a refusal, not bad input");
    client
        .set_password(authed(
            &pair.access_token,
            pb::SetPasswordRequest {
                user_id: String::new(),
                current_password: "user-password-123".into(),
                new_password: "brand-new-password".into(),
            },
        ))
        .await
        .unwrap();
    assert_eq!(
        client.refresh(pb::RefreshRequest { refresh_token: pair.refresh_token }).await.unwrap_err().code(),
        Code::Unauthenticated
    );
    assert!(auth.login("pw@example.com", "user-password-123").await.is_err());
    assert!(auth.login("pw@example.com", "brand-new-password").await.is_ok());
}

#[tokio::test]
async fn rotating_the_signing_key_logs_nobody_out() {
    let auth = start().await;
    let authenticator = auth.authenticator();
    let before = auth.admin().await;
    assert!(authenticator.authenticate_token(&before).await.is_ok(), "verifier has cached the first key");
    let rotated = auth
        .client
        .clone()
        .rotate_signing_key(authed(&before, pb::RotateSigningKeyRequest {}))
        .await
        .unwrap()
        .into_inner();
    let after = auth.admin().await;
    assert_eq!(jwt_header(&after)["kid"], rotated.kid.as_str(), "new tokens use the new key");
    assert_ne!(jwt_header(&before)["kid"], jwt_header(&after)["kid"]);
    // A verifier that only knew the old key fetches the new one on first sight of its id.
    assert!(authenticator.authenticate_token(&after).await.is_ok());
    assert!(
        authenticator.authenticate_token(&before).await.is_ok(),
        "old tokens stay valid until they expire"
    );
    assert!(auth.me(&before).await.is_ok());
    let jwks: serde_json::Value = serde_json::from_str(
        &auth.client.clone().get_jwks(pb::GetJwksRequest {}).await.unwrap().into_inner().jwks_json,
    )
    .unwrap();
    assert_eq!(jwks["keys"].as_array().unwrap().len(), 2);
}

async fn user_emails(config: &rp_config::Config) -> Vec<(String, String)> {
    use sea_orm::EntityTrait as _;
    let db = rp_db::connect(config, "auth").await.unwrap();
    rp_auth::store::users::Entity::find()
        .all(&db.conn)
        .await
        .unwrap()
        .into_iter()
        .map(|u| (u.email, u.roles))
        .collect()
}

#[tokio::test]
async fn without_bootstrap_settings_one_admin_is_created_once() {
    let auth = start_env(TestEnv::new()).await;
    assert_eq!(
        user_emails(&auth.env.config).await,
        vec![("admin@release-pilot.local".to_owned(), "admin".to_owned())]
    );
    // Restart on the same data: no second administrator, no new password.
    auth.shutdown.cancel();
    let Auth { env, service, _stop_on_drop, .. } = auth;
    drop(_stop_on_drop);
    service.task.await.unwrap().unwrap();
    let again = start_env(env).await;
    assert_eq!(user_emails(&again.env.config).await.len(), 1);
}

#[tokio::test]
async fn changes_are_published_as_events_with_their_actor() {
    let auth = start().await;
    let mut subscription = auth
        .bus
        .subscribe(&rp_events::ConsumerSpec::new("it-auth", "rp.auth.>").from_beginning())
        .await
        .unwrap();
    let user = auth.create_user("evented@example.com", &[Role::Qa]).await;
    let event = tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            let delivery = subscription.next().await.unwrap().unwrap();
            let event = delivery.event.clone();
            delivery.ack().await.unwrap();
            if event.event_type == "rp.auth.user_created" && event.subject == format!("users/{}", user.id) {
                break event;
            }
        }
    })
    .await
    .expect("user_created event");
    let payload: rp_proto::events::v1::UserCreated = event.decode().unwrap();
    assert_eq!(payload.email, "evented@example.com");
    assert_eq!(payload.roles, vec!["qa"]);
    assert_eq!(payload.actor.unwrap().email, ADMIN_EMAIL);
    assert_eq!(event.source, "/release-pilot/auth");
}
