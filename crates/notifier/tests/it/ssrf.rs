//! The SSRF guard: channel addresses inside the network are refused (checked before any
//! connection is made, so nothing is sent to them).

use rp_proto::notifier::v1 as pb;
use serde_json::json;
use tonic::Code;

use crate::{Harness, harness_with};

async fn refused(h: &Harness, kind: &str, config: serde_json::Value, secrets: &[(&str, &str)]) -> String {
    let err = h
        .client()
        .create_channel(h.admin(pb::CreateChannelRequest {
            name: format!("inside {}", uuid::Uuid::new_v4().simple()),
            kind: kind.into(),
            config_json: config.to_string(),
            secrets: secrets.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect(),
            ..Default::default()
        }))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument, "{kind} {config}: {err:?}");
    assert!(err.message().contains("SSRF"), "{}", err.message());
    err.message().to_owned()
}

#[tokio::test]
async fn channels_pointing_inside_the_network_are_refused_unless_allowed() {
    // Only 127.0.0.0/8 is allowed here (the test receivers); everything else internal is refused.
    let h = harness_with(&[]).await;
    for (url, reason) in [
        ("http://10.1.2.3/hook", "private"),
        ("http://192.168.0.10:8080/hook", "private"),
        ("http://172.20.0.5/hook", "private"),
        ("http://169.254.169.254/latest/meta-data/", "link-local"),
        ("http://[::1]:9/hook", "loopback"),
        ("http://[fd00::1]/hook", "unique-local"),
        ("http://100.64.1.1/hook", "carrier-grade NAT"),
        ("http://0.0.0.0:9/hook", "unspecified"),
        ("http://[::ffff:10.0.0.1]/hook", "private"),
    ] {
        let message = refused(&h, "webhook", json!({"url": url}), &[]).await;
        assert!(message.contains(reason), "{url}: {message}");
    }
    let slack =
        refused(&h, "slack", json!({}), &[("webhook_url", "http://10.9.9.9/services/T0/B0/SLACKTOKEN")])
            .await;
    assert!(!slack.contains("SLACKTOKEN"), "the secret URL is not echoed: {slack}");
    refused(&h, "pagerduty", json!({"api_url": "http://192.168.1.1"}), &[("routing_key", "k")]).await;
    refused(
        &h,
        "email",
        json!({"smtp_host": "10.0.0.25", "tls": "none", "from": "rp@example.com", "to": ["a@example.com"]}),
        &[],
    )
    .await;
    // The allowed network works.
    h.webhook("allowed loopback", "/fine").await;
}

#[tokio::test]
async fn loopback_is_refused_when_not_allowed() {
    // A notifier that allows only a network the receivers are not in.
    let h = crate::harness_api_only(&[("RP_NOTIFIER__ALLOWED_PRIVATE_NETWORKS", "10.20.0.0/16")]).await;
    let message = refused(&h, "webhook", json!({"url": "http://localhost:9/hook"}), &[]).await;
    assert!(message.contains("loopback") && message.contains("allowed_private_networks"), "{message}");
    refused(&h, "webhook", json!({"url": "http://127.0.0.1:9/hook"}), &[]).await;
    let err = refused(&h, "webhook", json!({"url": "http://10.21.0.1/hook"}), &[]).await;
    assert!(err.contains("private"), "{err}");
    // The allowed network is accepted (nothing is sent: no rule routes to it).
    h.client()
        .create_channel(h.admin(pb::CreateChannelRequest {
            name: "allowed private".into(),
            kind: "webhook".into(),
            config_json: json!({"url": "http://10.20.0.1/hook"}).to_string(),
            ..Default::default()
        }))
        .await
        .unwrap();
}
