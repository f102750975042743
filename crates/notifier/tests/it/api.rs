//! The API: channels and their secrets, roles, validation, the seeded defaults.

use release_pilot::{Role, testing::TestSystem};
use rp_proto::notifier::v1::{self as pb, notifier_service_client::NotifierServiceClient};
use rp_test_support::{TestEnv, authed};
use sea_orm::{ConnectionTrait as _, Statement};
use serde_json::json;
use tonic::{Code, Request};

use crate::{Reply, harness};

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

#[tokio::test]
async fn the_seed_matrix_and_escalation_workflow_are_seeded() {
    let system = {
        let env = TestEnv::new();
        TestSystem::start(env.config.clone(), &[Role::Auth, Role::Notifier, Role::Gateway])
            .await
            .unwrap()
            .hold(env)
    };
    let token = system.admin_token().await;
    let mut client = NotifierServiceClient::connect(system.grpc_endpoint("notifier")).await.unwrap();
    let rules =
        client.list_routing_rules(authed(&token, pb::ListRoutingRulesRequest {})).await.unwrap().into_inner();
    let matrix: Vec<(Vec<String>, Vec<String>)> =
        rules.rules.iter().map(|r| (r.severities.clone(), r.channel_kinds.clone())).collect();
    let strings = |items: &[&str]| items.iter().map(|s| s.to_string()).collect::<Vec<_>>();
    assert_eq!(
        matrix[..4],
        [
            (strings(&["critical"]), strings(&["pagerduty", "slack", "email"])),
            (strings(&["high"]), strings(&["slack", "email"])),
            (strings(&["medium"]), strings(&["slack"])),
            (strings(&["low"]), strings(&["webhook"])),
        ]
    );
    assert_eq!(rules.rules[4].event_types, ["rp.deployment.succeeded"]);
    assert!(rules.rules.iter().all(|r| r.enabled && r.group_wait_ms.is_none()));
    let policies = client
        .list_escalation_policies(authed(&token, pb::ListEscalationPoliciesRequest {}))
        .await
        .unwrap()
        .into_inner();
    let seed = &policies.policies[0];
    assert_eq!(seed.severities, ["critical"]);
    let timeline: Vec<(i64, Vec<String>)> =
        seed.levels.iter().map(|l| (l.delay_ms / 60_000, l.channel_kinds.clone())).collect();
    assert_eq!(
        timeline,
        [
            (0, strings(&["slack"])),
            (5, strings(&["email"])),
            (15, strings(&["pagerduty"])),
            (30, strings(&["email", "pagerduty"])),
        ]
    );
}

#[tokio::test]
async fn channel_secrets_are_sealed_at_rest_and_never_returned() {
    let h = harness().await;
    let slack_url = h.receiver.url("/services/T000/B000/XOXB-SLACK-SECRET-PATH");
    let slack = h.channel("chat", "slack", json!({}), &[("webhook_url", slack_url.clone())]).await;
    let created = h
        .client()
        .create_channel(h.admin(pb::CreateChannelRequest {
            name: "hooks".into(),
            kind: "webhook".into(),
            config_json: json!({"url": h.receiver.url("/hooks")}).to_string(),
            secrets:
                [("authorization".to_owned(), "Bearer VERY-PRIVATE-TOKEN".to_owned())].into_iter().collect(),
            ..Default::default()
        }))
        .await
        .unwrap()
        .into_inner();
    assert!(created.signing_secret.starts_with("whsec_"), "a generated secret is shown once");
    let webhook = created.channel.unwrap();
    assert_eq!(webhook.secrets_set, ["authorization", "signing_secret"]);
    assert_eq!(webhook.active_signing_secrets, 1);
    assert_eq!(slack.secrets_set, ["webhook_url"]);
    let listed = h.client().list_channels(h.admin(pb::ListChannelsRequest {})).await.unwrap().into_inner();
    let shown = format!("{listed:?} {:?}", h.get_channel(&webhook.id).await);
    for secret in ["XOXB-SLACK-SECRET-PATH", "VERY-PRIVATE-TOKEN", created.signing_secret.as_str()] {
        assert!(!shown.contains(secret), "{secret} leaked through the API");
    }
    // At rest: the notifier's own tables hold sealed blobs only.
    let db = rp_db::connect(&h.system.app.config, "notifier").await.unwrap();
    let rows = db
        .conn
        .query_all_raw(Statement::from_string(db.conn.get_database_backend(), "SELECT secrets FROM channels"))
        .await
        .unwrap();
    let stored: Vec<String> = rows.iter().map(|r| r.try_get::<String>("", "secrets").unwrap()).collect();
    assert!(stored.iter().filter(|s| !s.is_empty()).all(|s| s.starts_with("v1.")), "{stored:?}");
    let all = stored.join(" ");
    for secret in ["XOXB-SLACK-SECRET-PATH", "VERY-PRIVATE-TOKEN", created.signing_secret.as_str(), "whsec_"]
    {
        assert!(!all.contains(secret), "{secret} stored in clear");
    }
    // A secret can be replaced and removed, never read.
    let updated = h
        .client()
        .update_channel(h.admin(pb::UpdateChannelRequest {
            id: webhook.id.clone(),
            secrets: [("authorization".to_owned(), String::new())].into_iter().collect(),
            ..Default::default()
        }))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(updated.secrets_set, ["signing_secret"]);
    // The test send uses the sealed secrets.
    h.receiver.script([Reply::Status(204)]);
    let attempt = h
        .client()
        .test_channel(h.admin(pb::TestChannelRequest { id: slack.id.clone() }))
        .await
        .unwrap()
        .into_inner();
    assert_eq!((attempt.outcome.as_str(), attempt.status_code), ("success", 204), "{attempt:?}");
    let sent = h.receiver.wait_for("/services/T000/B000/XOXB-SLACK-SECRET-PATH", 1).await;
    assert!(sent[0].json()["text"].as_str().unwrap().contains("Test notification"));
}

#[tokio::test]
async fn writes_need_the_admin_role_and_bad_input_is_refused() {
    let h = harness().await;
    let viewer = h.system.user_token("viewer@example.com", &["viewer"]).await;
    let commander = h.system.user_token("ic@example.com", &["incident_commander"]).await;
    let mut client = h.client();
    let create = |token: &str, kind: &str, config: serde_json::Value| {
        authed(
            token,
            pb::CreateChannelRequest {
                name: format!("c-{}", uuid::Uuid::new_v4().simple()),
                kind: kind.into(),
                config_json: config.to_string(),
                ..Default::default()
            },
        )
    };
    let url = json!({"url": h.receiver.url("/x")});
    for token in [&viewer, &commander] {
        let denied = client.create_channel(create(token, "webhook", url.clone())).await.unwrap_err();
        assert_eq!(denied.code(), Code::PermissionDenied);
        let denied = client
            .create_routing_rule(authed(
                token,
                pb::RoutingRuleInput {
                    name: "x".into(),
                    channel_kinds: vec!["slack".into()],
                    ..Default::default()
                },
            ))
            .await
            .unwrap_err();
        assert_eq!(denied.code(), Code::PermissionDenied);
        assert!(client.list_channels(authed(token, pb::ListChannelsRequest {})).await.is_ok());
        assert!(client.list_deliveries(authed(token, pb::ListDeliveriesRequest::default())).await.is_ok());
        assert!(client.list_escalations(authed(token, pb::ListEscalationsRequest::default())).await.is_ok());
    }
    let invalid = |config: serde_json::Value, kind: &str| {
        let mut client = client.clone();
        let request = create(&h.admin, kind, config);
        async move { client.create_channel(request).await.unwrap_err() }
    };
    for (kind, config, expected) in [
        ("fax", json!({}), "kind must be one of"),
        ("webhook", json!({}), "need the setting \"url\""),
        ("webhook", json!({"url": "ftp://127.0.0.1/x"}), "http or https"),
        ("webhook", json!({"url": h.receiver.url("/x"), "colour": "red"}), "no setting \"colour\""),
        ("slack", json!({}), "need the secret \"webhook_url\""),
        (
            "email",
            json!({"smtp_host": "127.0.0.1", "from": "not an address", "to": ["a@example.com"]}),
            "from",
        ),
        ("email", json!({"smtp_host": "127.0.0.1", "from": "rp@example.com", "to": []}), "to"),
    ] {
        let err = invalid(config, kind).await;
        assert_eq!(err.code(), Code::InvalidArgument, "{kind}: {err:?}");
        assert!(err.message().contains(expected), "{kind}: {} lacks {expected}", err.message());
    }
    let bad_template = client
        .create_channel(h.admin(pb::CreateChannelRequest {
            name: "templated".into(),
            kind: "slack".into(),
            secrets: [("webhook_url".to_owned(), h.receiver.url("/s"))].into_iter().collect(),
            templates: [("title".to_owned(), "{% if %}".to_owned())].into_iter().collect(),
            ..Default::default()
        }))
        .await
        .unwrap_err();
    assert_eq!(bad_template.code(), Code::InvalidArgument);
    assert!(bad_template.message().contains("title"), "{}", bad_template.message());
    let (first, _) = h.webhook("same name", "/x").await;
    let again = client.create_channel(h.admin(pb::CreateChannelRequest {
        name: "same name".into(),
        kind: "webhook".into(),
        config_json: url.to_string(),
        ..Default::default()
    }));
    assert_eq!(again.await.unwrap_err().code(), Code::AlreadyExists);
    for rule in [
        pb::RoutingRuleInput { name: "no target".into(), ..Default::default() },
        pb::RoutingRuleInput {
            name: "bad severity".into(),
            severities: vec!["apocalyptic".into()],
            channel_ids: vec![first.id.clone()],
            ..Default::default()
        },
        pb::RoutingRuleInput {
            name: "bad pattern".into(),
            event_types: vec!["deployment".into()],
            channel_ids: vec![first.id.clone()],
            ..Default::default()
        },
        pb::RoutingRuleInput {
            name: "unknown channel".into(),
            channel_ids: vec![uuid::Uuid::now_v7().to_string()],
            ..Default::default()
        },
        pb::RoutingRuleInput {
            name: "bad label".into(),
            group_by: vec!["colour".into()],
            channel_ids: vec![first.id.clone()],
            ..Default::default()
        },
    ] {
        let err = client.create_routing_rule(h.admin(rule.clone())).await.unwrap_err();
        assert_eq!(err.code(), Code::InvalidArgument, "{rule:?}");
    }
    let bad_policy = client
        .create_escalation_policy(h.admin(pb::EscalationPolicyInput {
            name: "backwards".into(),
            levels: vec![
                pb::EscalationLevel {
                    name: "late".into(),
                    delay_ms: 600_000,
                    channel_kinds: vec!["slack".into()],
                    ..Default::default()
                },
                pb::EscalationLevel {
                    name: "early".into(),
                    delay_ms: 0,
                    channel_kinds: vec!["email".into()],
                    ..Default::default()
                },
            ],
            ..Default::default()
        }))
        .await
        .unwrap_err();
    assert_eq!(bad_policy.code(), Code::InvalidArgument);
    let rotate_slack = client
        .rotate_channel_secret(h.admin(pb::RotateChannelSecretRequest {
            id: h.channel("s", "slack", json!({}), &[("webhook_url", h.receiver.url("/s"))]).await.id,
            signing_secret: String::new(),
        }))
        .await
        .unwrap_err();
    assert_eq!(rotate_slack.code(), Code::FailedPrecondition);
}
