//! Signed webhooks: CloudEvents bodies, Standard Webhooks signatures checked by the reference
//! Python library and by the specification's test vector, secret rotation.

use rp_proto::{events::v1 as ev, notifier::v1 as pb};
use rp_test_support::eventually;

use crate::{WAIT, deployment, harness, harness_with, python};

fn verify_locally(secret: &str, request: &crate::Received) -> bool {
    let timestamp: i64 = request.header("webhook-timestamp").parse().unwrap();
    rp_webhooks::verify(
        secret,
        request.header("webhook-id"),
        timestamp,
        &request.body,
        request.header("webhook-signature"),
        chrono::Utc::now().timestamp(),
        300,
    )
    .is_ok()
}

#[tokio::test]
async fn webhooks_carry_signed_cloudevents_that_the_reference_library_verifies() {
    let h = harness().await;
    let (channel, secret) = h.webhook("ci", "/events").await;
    h.route(&channel, &["rp.deployment.*"], 0).await;
    let event = h.publish("rp.deployment.failed", "deployments/d1", &deployment("d1", "failed", 2)).await;
    let request = h.receiver.wait_for("/events", 1).await.remove(0);

    // CloudEvents 1.0, structured mode.
    assert_eq!(request.header("content-type"), "application/cloudevents+json");
    let body = request.json();
    assert_eq!(body["specversion"], "1.0");
    assert_eq!(body["id"], event.id.to_string());
    assert_eq!(body["type"], "rp.deployment.failed");
    assert_eq!(body["source"], "/release-pilot/release");
    assert_eq!(body["subject"], "deployments/d1");
    assert_eq!(body["datacontenttype"], "application/json");
    assert_eq!(body["data"]["deployment_id"], "d1");
    assert!(body["time"].as_str().unwrap().ends_with('Z'));

    // Standard Webhooks: the reference implementation accepts it, and a tampered body fails.
    let (id, timestamp, signature) = (
        request.header("webhook-id"),
        request.header("webhook-timestamp"),
        request.header("webhook-signature"),
    );
    assert!(signature.starts_with("v1,"));
    python::verify_signature(&secret, id, timestamp, signature, &request.body).await.unwrap();
    let mut tampered = request.body.clone();
    tampered.push(b' ');
    assert!(python::verify_signature(&secret, id, timestamp, signature, &tampered).await.is_err());
    assert!(
        python::verify_signature(&rp_webhooks::generate_secret(), id, timestamp, signature, &request.body)
            .await
            .is_err()
    );
    assert!(verify_locally(&secret, &request));

    // The delivery, its log and the event saying it was delivered.
    let delivery = h.wait_delivery(&channel, &event, "delivered").await;
    assert_eq!(id, delivery.id, "webhook-id is the delivery id");
    assert_eq!(delivery.attempts, 1);
    assert_eq!(delivery.attempt_log.len(), 1);
    let attempt = &delivery.attempt_log[0];
    assert_eq!((attempt.outcome.as_str(), attempt.status_code), ("success", 200));
    assert_eq!(attempt.response_excerpt, "ok");
    let delivered = h
        .tap
        .wait("rp.notification.delivered", |e| {
            e.event_type == "rp.notification.delivered" && e.subject == format!("deliveries/{}", delivery.id)
        })
        .await;
    let payload: ev::NotificationChanged = delivered.decode().unwrap();
    assert_eq!(payload.source_event_id, event.id.to_string());
    assert_eq!(payload.source_event_type, "rp.deployment.failed");
    assert_eq!(payload.source_subject, "deployments/d1");
    assert_eq!(
        (payload.channel_id.as_str(), payload.channel_kind.as_str()),
        (channel.id.as_str(), "webhook")
    );
    assert_eq!((payload.attempts, payload.status_code), (1, 200));
    assert!(payload.latency_ms >= 0 && payload.attempt_latency_ms >= 0);
    assert_eq!(payload.app, "shop");
}

#[tokio::test]
async fn a_rotated_secret_signs_beside_the_previous_one_until_the_overlap_ends() {
    let h = harness_with(&[("RP_NOTIFIER__SECRET_ROTATION_OVERLAP_SECS", "2")]).await;
    let (channel, old) = h.webhook("rotating", "/rotating").await;
    h.route(&channel, &["rp.deployment.*"], 0).await;
    let rotated = h
        .client()
        .rotate_channel_secret(
            h.admin(pb::RotateChannelSecretRequest { id: channel.id.clone(), signing_secret: String::new() }),
        )
        .await
        .unwrap()
        .into_inner();
    let new = rotated.signing_secret;
    assert!(new.starts_with("whsec_") && new != old);
    assert_eq!(rotated.channel.unwrap().active_signing_secrets, 2);
    h.publish("rp.deployment.started", "deployments/r1", &deployment("r1", "in_progress", 1)).await;
    let request = h.receiver.wait_for("/rotating", 1).await.remove(0);
    assert_eq!(request.header("webhook-signature").split(' ').count(), 2);
    for secret in [&old, &new] {
        python::verify_signature(
            secret,
            request.header("webhook-id"),
            request.header("webhook-timestamp"),
            request.header("webhook-signature"),
            &request.body,
        )
        .await
        .unwrap();
    }
    // Once the overlap is over, only the new secret signs.
    let mut n = 1;
    let last = eventually(WAIT, "a delivery signed by the new secret alone", || {
        n += 1;
        let h = &h;
        let step = n;
        async move {
            let before = h.receiver.on("/rotating").len();
            h.publish(
                "rp.deployment.started",
                &format!("deployments/r{step}"),
                &deployment(&format!("r{step}"), "in_progress", step),
            )
            .await;
            let got = h.receiver.wait_for("/rotating", before + 1).await;
            let request = got.last().cloned().unwrap();
            (request.header("webhook-signature").split(' ').count() == 1).then_some(request)
        }
    })
    .await;
    assert!(verify_locally(&new, &last));
    assert!(!verify_locally(&old, &last));
}
