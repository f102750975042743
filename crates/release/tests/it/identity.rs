//! Tokens verified by the release service itself.

use base64::{Engine as _, engine::general_purpose::URL_SAFE_NO_PAD};
use rp_identity::{Claims, Role};
use rp_proto::{auth::v1 as auth_pb, release::v1 as pb};
use rp_test_support::authed;
use tonic::{Code, Request};

use crate::stack;

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
async fn a_verified_token_is_refused_once_it_expires_although_verifications_are_cached() {
    let stack = stack().await;
    let (kid, key) = stack.signing_key().await;
    let short_lived = sign(&kid, &key, &stack.claims(1));
    assert!(stack.list_apps(&short_lived).await.is_ok(), "valid at first (and now cached)");
    assert!(stack.list_apps(&short_lived).await.is_ok(), "valid again, from the cache");
    // Expiry plus the configured leeway (5 s), with room for a slow machine.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(15);
    let refused = loop {
        match stack.list_apps(&short_lived).await {
            Err(status) => break status,
            Ok(_) if std::time::Instant::now() < deadline => {
                tokio::time::sleep(std::time::Duration::from_millis(250)).await;
            }
            Ok(_) => panic!("an expired token still passes 15 s after it expired"),
        }
    };
    assert_eq!(refused.code(), Code::Unauthenticated, "{refused:?}");
    assert!(refused.message().contains("expired"), "{}", refused.message());
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
