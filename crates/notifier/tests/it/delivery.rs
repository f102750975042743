//! Delivery guarantees: the retry schedule, 429 + Retry-After, 410 Gone, dead letters and
//! replay, per-channel rate limits.

use std::time::Duration;

use rp_proto::{events::v1 as ev, notifier::v1 as pb};
use rp_test_support::eventually;
use tonic::Code;

use crate::{Reply, WAIT, deployment, harness, millis};

#[tokio::test]
async fn a_failing_receiver_is_retried_on_schedule_until_it_answers() {
    let h = harness().await;
    let (channel, _) = h.webhook("flaky", "/flaky").await;
    h.route(&channel, &["rp.deployment.*"], 0).await;
    h.receiver.script([Reply::Status(500), Reply::With(502, vec![], "upstream down".into())]);
    let event = h.publish("rp.deployment.failed", "deployments/f1", &deployment("f1", "failed", 1)).await;
    let delivery = h.wait_delivery(&channel, &event, "delivered").await;
    let requests = h.receiver.on("/flaky");
    assert_eq!(requests.len(), 3);
    let ids: Vec<&str> = requests.iter().map(|r| r.header("webhook-id")).collect();
    assert!(ids.iter().all(|id| *id == delivery.id), "every attempt has the same webhook-id: {ids:?}");
    // Schedule 100 ms, 200 ms (no jitter in tests).
    let gaps: Vec<Duration> = requests.windows(2).map(|w| w[1].at - w[0].at).collect();
    assert!(gaps[0] >= Duration::from_millis(95), "{gaps:?}");
    assert!(gaps[1] >= Duration::from_millis(195), "{gaps:?}");
    assert!(gaps[1] < Duration::from_secs(3), "{gaps:?}");
    assert_eq!(delivery.attempts, 3);
    let log: Vec<(i32, &str, i32)> =
        delivery.attempt_log.iter().map(|a| (a.attempt, a.outcome.as_str(), a.status_code)).collect();
    assert_eq!(log, [(1, "failure", 500), (2, "failure", 502), (3, "success", 200)]);
    assert_eq!(delivery.attempt_log[1].response_excerpt, "upstream down");
    assert_eq!(delivery.attempt_log[1].error, "the receiver answered 502");
}

#[tokio::test]
async fn exhausted_attempts_become_a_dead_letter_that_replays_with_the_same_id() {
    let h = harness().await;
    let (channel, _) = h.webhook("down", "/down").await;
    h.route(&channel, &["rp.deployment.*"], 0).await;
    h.receiver.answer_by_default(Reply::Status(503));
    let event = h.publish("rp.deployment.failed", "deployments/x1", &deployment("x1", "failed", 1)).await;
    let dead = h.wait_delivery(&channel, &event, "dead").await;
    assert_eq!(dead.attempts, 4, "one attempt and three retries");
    assert!(dead.last_error.contains("attempts exhausted"), "{}", dead.last_error);
    assert_eq!(h.receiver.on("/down").len(), 4);
    let failed = h.tap.wait("rp.notification.failed", |e| e.event_type == "rp.notification.failed").await;
    let payload: ev::NotificationChanged = failed.decode().unwrap();
    assert_eq!(
        (payload.delivery_id.as_str(), payload.attempts, payload.status_code),
        (dead.id.as_str(), 4, 503)
    );
    assert_eq!(payload.source_event_id, event.id.to_string());
    let letters = h
        .client()
        .list_dead_letters(
            h.admin(pb::ListDeadLettersRequest { channel_id: channel.id.clone(), ..Default::default() }),
        )
        .await
        .unwrap()
        .into_inner();
    assert_eq!(letters.deliveries.iter().map(|d| d.id.as_str()).collect::<Vec<_>>(), [dead.id.as_str()]);

    h.receiver.answer_by_default(Reply::Status(200));
    let replayed = h
        .client()
        .replay_dead_letters(h.admin(pb::ReplayDeadLettersRequest {
            delivery_ids: vec![dead.id.clone()],
            ..Default::default()
        }))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(replayed.replayed_ids, std::slice::from_ref(&dead.id));
    let delivered = h.wait_delivery(&channel, &event, "delivered").await;
    assert_eq!(delivered.attempts, 5);
    let requests = h.receiver.on("/down");
    assert_eq!(requests.len(), 5);
    assert_eq!(requests[4].header("webhook-id"), dead.id);
    assert_eq!(requests[4].json()["id"], event.id.to_string());
    let again = h
        .client()
        .replay_dead_letters(h.admin(pb::ReplayDeadLettersRequest {
            delivery_ids: vec![dead.id.clone()],
            ..Default::default()
        }))
        .await
        .unwrap_err();
    assert_eq!(again.code(), Code::FailedPrecondition, "a delivered message is no dead letter");
}

#[tokio::test]
async fn a_429_is_retried_after_the_receivers_retry_after() {
    let h = harness().await;
    let (channel, _) = h.webhook("busy", "/busy").await;
    h.route(&channel, &["rp.deployment.*"], 0).await;
    h.receiver.script([Reply::With(429, vec![("retry-after", "1".into())], "slow down".into())]);
    let event = h.publish("rp.deployment.failed", "deployments/b1", &deployment("b1", "failed", 1)).await;
    h.wait_delivery(&channel, &event, "retrying").await;
    // The channel is throttled now: a new message waits too, instead of going out at once.
    let next = h.publish("rp.deployment.failed", "deployments/b2", &deployment("b2", "failed", 1)).await;
    let delivery = h.wait_delivery(&channel, &event, "delivered").await;
    h.wait_delivery(&channel, &next, "delivered").await;
    let requests = h.receiver.on("/busy");
    assert_eq!(requests.len(), 3);
    for later in &requests[1..] {
        let gap = later.at - requests[0].at;
        assert!(gap >= Duration::from_millis(950), "sent {gap:?} after the 429, inside its Retry-After");
    }
    assert_eq!(delivery.attempt_log[0].outcome, "rate_limited");
    assert_eq!(delivery.attempt_log[0].status_code, 429);
}

#[tokio::test]
async fn a_410_disables_the_channel_and_dead_letters_what_waits_for_it() {
    let h = harness().await;
    let (channel, _) = h.webhook("gone", "/gone").await;
    h.route(&channel, &["rp.deployment.*"], 0).await;
    h.receiver.script([Reply::Status(410)]);
    let event = h.publish("rp.deployment.failed", "deployments/g1", &deployment("g1", "failed", 1)).await;
    let dead = h.wait_delivery(&channel, &event, "dead").await;
    assert_eq!(dead.attempts, 1, "410 is not retried");
    assert_eq!(dead.attempt_log[0].outcome, "gone");
    let disabled = h.get_channel(&channel.id).await;
    assert!(!disabled.enabled);
    assert!(disabled.disabled_reason.contains("410"), "{}", disabled.disabled_reason);
    // A disabled channel gets nothing new (a witness channel shows the event was routed), and
    // its dead letters wait until it is enabled.
    let (witness, _) = h.webhook("witness", "/witness").await;
    h.route(&witness, &["rp.deployment.*"], 0).await;
    let later = h.publish("rp.deployment.failed", "deployments/g2", &deployment("g2", "failed", 1)).await;
    h.wait_delivery(&witness, &later, "delivered").await;
    let replay = || {
        let mut client = h.client();
        let request =
            h.admin(pb::ReplayDeadLettersRequest { channel_id: channel.id.clone(), ..Default::default() });
        async move { client.replay_dead_letters(request).await }
    };
    assert_eq!(replay().await.unwrap_err().code(), Code::FailedPrecondition);
    h.client()
        .update_channel(h.admin(pb::UpdateChannelRequest {
            id: channel.id.clone(),
            enabled: Some(true),
            ..Default::default()
        }))
        .await
        .unwrap();
    assert_eq!(h.get_channel(&channel.id).await.disabled_reason, "");
    assert_eq!(replay().await.unwrap().into_inner().replayed_ids, std::slice::from_ref(&dead.id));
    h.wait_delivery(&channel, &event, "delivered").await;
    let deliveries = h.deliveries(&channel).await;
    assert!(
        !deliveries.iter().any(|d| d.event_ids.contains(&later.id.to_string())),
        "nothing was queued while the channel was disabled"
    );
}

#[tokio::test]
async fn a_channel_rate_limit_defers_attempts_beyond_it() {
    let h = harness().await;
    let (channel, _) = h.webhook("limited", "/limited").await;
    h.client()
        .update_channel(h.admin(pb::UpdateChannelRequest {
            id: channel.id.clone(),
            rate_limit_per_minute: Some(2),
            ..Default::default()
        }))
        .await
        .unwrap();
    h.route(&channel, &["rp.deployment.*"], 0).await;
    let mut events = Vec::new();
    for n in 1..=3 {
        let id = format!("rl{n}");
        events.push(
            h.publish("rp.deployment.failed", &format!("deployments/{id}"), &deployment(&id, "failed", 1))
                .await,
        );
    }
    h.receiver.wait_for("/limited", 2).await;
    let waiting = eventually(WAIT, "the third delivery to be deferred", || async {
        let deliveries = h.deliveries(&channel).await;
        let delivered = deliveries.iter().filter(|d| d.status == "delivered").count();
        let deferred: Vec<pb::Delivery> = deliveries
            .into_iter()
            .filter(|d| {
                d.status != "delivered" && millis(&d.due_at) > chrono::Utc::now().timestamp_millis() + 30_000
            })
            .collect();
        (delivered == 2 && deferred.len() == 1).then(|| deferred[0].clone())
    })
    .await;
    assert_eq!(waiting.attempts, 0, "a deferral is not an attempt");
    assert_eq!(h.receiver.on("/limited").len(), 2);
    assert!(events.iter().any(|e| waiting.event_ids.contains(&e.id.to_string())));
}

#[tokio::test]
async fn finished_deliveries_are_deleted_after_the_retention() {
    let h = harness().await;
    let (channel, _) = h.webhook("kept a while", "/kept").await;
    h.route(&channel, &["rp.deployment.*"], 0).await;
    let event = h.publish("rp.deployment.failed", "deployments/old1", &deployment("old1", "failed", 1)).await;
    h.wait_delivery(&channel, &event, "delivered").await;
    // A core of its own on the same database runs a pass as if the retention had passed.
    let config = h.system.app.config.clone();
    let db = rp_db::connect(&config, "notifier").await.unwrap();
    let outbox = rp_events::outbox::Outbox::new(db.clone());
    let any = std::net::SocketAddr::from(([127, 0, 0, 1], 0));
    let core = rp_notifier::NotifierCore::new(db, outbox, h.bus.clone(), config, any).await.unwrap();
    assert_eq!(core.delete_before(chrono::Utc::now() - chrono::Duration::days(1)).await.unwrap(), 0);
    assert!(core.delete_before(chrono::Utc::now() + chrono::Duration::days(1)).await.unwrap() >= 1);
    assert!(h.deliveries(&channel).await.is_empty());
}
