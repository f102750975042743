//! Escalations of critical incidents: levels on time, stopped by an acknowledgement through the
//! API or the signed link in the message, ended by the incident's resolution.

use std::time::{Duration, Instant};

use rp_proto::{events::v1 as ev, notifier::v1 as pb};
use rp_test_support::{authed, eventually};
use serde_json::json;
use tonic::{Code, Request};

use crate::{Harness, WAIT, harness, incident, millis};

fn level(name: &str, delay_ms: i64, channel: &pb::Channel) -> pb::EscalationLevel {
    pb::EscalationLevel {
        name: name.into(),
        delay_ms,
        channel_ids: vec![channel.id.clone()],
        ..Default::default()
    }
}

async fn policy(
    h: &Harness,
    name: &str,
    app: &str,
    levels: Vec<pb::EscalationLevel>,
) -> pb::EscalationPolicy {
    h.client()
        .create_escalation_policy(h.admin(pb::EscalationPolicyInput {
            name: name.into(),
            severities: vec!["critical".into()],
            apps: vec![app.into()],
            levels,
            ..Default::default()
        }))
        .await
        .unwrap()
        .into_inner()
}

async fn escalation_of(h: &Harness, incident_id: &str) -> pb::Escalation {
    eventually(WAIT, &format!("the escalation of {incident_id}"), || async {
        h.client()
            .list_escalations(
                h.admin(pb::ListEscalationsRequest { incident_id: incident_id.into(), ..Default::default() }),
            )
            .await
            .unwrap()
            .into_inner()
            .escalations
            .into_iter()
            .next()
    })
    .await
}

/// A second incident whose only level fires at `delay_ms`: once it has, every level of other
/// escalations due earlier has had its chance to fire.
async fn witness(h: &Harness, delay_ms: i64) -> pb::Channel {
    let (channel, _) = h.webhook("witness", "/witness").await;
    policy(h, "witness", "billing", vec![level("witness", delay_ms, &channel)]).await;
    let mut billing = incident("w1", "critical");
    billing.app = "billing".into();
    h.publish("rp.incident.opened", "incidents/w1", &billing).await;
    channel
}

#[tokio::test]
async fn levels_fire_on_time_until_someone_acknowledges() {
    let h = harness().await;
    let (first, _) = h.webhook("team", "/l1").await;
    let (second, _) = h.webhook("lead", "/l2").await;
    let (third, _) = h.webhook("manager", "/l3").await;
    policy(
        &h,
        "shop on-call",
        "shop",
        vec![level("team", 0, &first), level("lead", 700, &second), level("manager", 2500, &third)],
    )
    .await;
    // Level 2 is due 700 ms after the escalation is created, which is after this instant. (Measuring
    // from level 1's arrival instead would count level 1's own delivery latency against level 2.)
    let before_opening = Instant::now();
    let opened = h.publish("rp.incident.opened", "incidents/e1", &incident("e1", "critical")).await;
    let witness = witness(&h, 2800).await;

    let l1 = h.receiver.wait_for("/l1", 1).await.remove(0);
    let body = l1.json();
    assert_eq!(body["id"], opened.id.to_string(), "the level carries the incident event");
    assert_eq!(body["rpescalationlevel"], 1);
    assert!(body["rpackurl"].as_str().unwrap().contains("/ack/"), "{body}");
    let l2 = h.receiver.wait_for("/l2", 1).await.remove(0);
    assert!(l2.at > l1.at, "level 2 came after level 1");
    let waited = l2.at - before_opening;
    assert!(waited >= Duration::from_millis(700), "level 2 waited its delay: {waited:?}");
    let escalation = escalation_of(&h, "e1").await;
    assert_eq!((escalation.status.as_str(), escalation.levels_fired, escalation.levels), ("active", 2, 3));
    let fired: Vec<i64> =
        escalation.steps.iter().map(|s| millis(&s.fired_at) - millis(&escalation.created_at)).collect();
    assert!(fired[0] < 500 && fired[1] >= 700, "{fired:?}");

    let viewer = h.system.user_token("viewer@example.com", &["viewer"]).await;
    let denied = h
        .client()
        .acknowledge_escalation(authed(
            &viewer,
            pb::AcknowledgeEscalationRequest { id: escalation.id.clone(), note: String::new() },
        ))
        .await
        .unwrap_err();
    assert_eq!(denied.code(), Code::PermissionDenied);
    let commander = h.system.user_token("ic@example.com", &["incident_commander"]).await;
    let acknowledged = h
        .client()
        .acknowledge_escalation(authed(
            &commander,
            pb::AcknowledgeEscalationRequest { id: escalation.id.clone(), note: "on it".into() },
        ))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(acknowledged.status, "acknowledged");
    assert_eq!(acknowledged.acknowledged_by, "ic@example.com: on it");
    assert!(acknowledged.next_level_at.is_none());

    // The witness fires after level 3 was due: level 3 never fired.
    h.receiver.wait_for("/witness", 1).await;
    let after = escalation_of(&h, "e1").await;
    assert_eq!((after.status.as_str(), after.levels_fired), ("acknowledged", 2));
    assert!(h.receiver.on("/l3").is_empty());
    assert!(h.deliveries(&third).await.is_empty());
    assert!(!h.deliveries(&witness).await.is_empty());
    let acked =
        h.tap.wait("rp.escalation.acknowledged", |e| e.event_type == "rp.escalation.acknowledged").await;
    let payload: ev::EscalationChanged = acked.decode().unwrap();
    assert_eq!((payload.incident_id.as_str(), payload.via.as_str()), ("e1", "api"));
    assert_eq!(payload.actor.unwrap().email, "ic@example.com");
    h.tap
        .wait("level 2 fired", |e| {
            e.event_type == "rp.escalation.level_fired"
                && e.decode::<ev::EscalationChanged>().is_ok_and(|p| p.level == 2 && p.incident_id == "e1")
        })
        .await;
}

#[tokio::test]
async fn the_signed_link_in_the_message_acknowledges() {
    let h = harness().await;
    let slack = h.channel("team chat", "slack", json!({}), &[("webhook_url", h.receiver.url("/chat"))]).await;
    let (lead, _) = h.webhook("lead", "/lead").await;
    policy(&h, "shop on-call", "shop", vec![level("team chat", 0, &slack), level("lead", 1500, &lead)]).await;
    h.publish("rp.incident.opened", "incidents/k1", &incident("k1", "critical")).await;
    let witness = witness(&h, 1800).await;
    let message = h.receiver.wait_for("/chat", 1).await.remove(0).json();
    let title = message["blocks"][0]["text"]["text"].as_str().unwrap();
    assert!(title.starts_with("[Escalation 1/2]"), "{title}");
    let actions = message["blocks"].as_array().unwrap().iter().find(|b| b["type"] == "actions").unwrap();
    let button =
        actions["elements"].as_array().unwrap().iter().find(|e| e["text"]["text"] == "Acknowledge").unwrap();
    let link = button["url"].as_str().unwrap().to_owned();
    assert!(link.starts_with(&h.system.admin_url("notifier", "/ack/")), "{link}");

    // Opening the link shows a button; only submitting it acknowledges.
    let page = h.system.http.get(&link).send().await.unwrap();
    assert_eq!(page.status(), 200);
    assert!(page.text().await.unwrap().contains("<form method=\"post\">"));
    assert_eq!(escalation_of(&h, "k1").await.status, "active");
    let mut forged: Vec<char> = link.chars().collect();
    let at = forged.len() - 6;
    forged[at] = if forged[at] == 'Q' { 'R' } else { 'Q' };
    let forged: String = forged.into_iter().collect();
    assert_eq!(h.system.http.post(&forged).send().await.unwrap().status(), 404);
    let done = h.system.http.post(&link).send().await.unwrap();
    assert_eq!(done.status(), 200);
    assert!(done.text().await.unwrap().contains("acknowledged"));
    let escalation = escalation_of(&h, "k1").await;
    assert_eq!(
        (escalation.status.as_str(), escalation.acknowledged_by.as_str()),
        ("acknowledged", "acknowledge link")
    );

    // The token is its own credential over gRPC too (for the gateway); acknowledging twice is fine.
    let token = link.rsplit('/').next().unwrap().to_owned();
    let again = h
        .client()
        .acknowledge_escalation_by_token(Request::new(pb::AcknowledgeByTokenRequest { token }))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(again.status, "acknowledged");
    let bad = h
        .client()
        .acknowledge_escalation_by_token(Request::new(pb::AcknowledgeByTokenRequest {
            token: "nope.nope".into(),
        }))
        .await
        .unwrap_err();
    assert_eq!(bad.code(), Code::NotFound);

    h.receiver.wait_for("/witness", 1).await;
    assert!(h.receiver.on("/lead").is_empty(), "level 2 never fired");
    assert_eq!(escalation_of(&h, "k1").await.levels_fired, 1);
    assert!(!h.deliveries(&witness).await.is_empty());
}

#[tokio::test]
async fn resolving_the_incident_ends_its_escalation() {
    let h = harness().await;
    let (team, _) = h.webhook("team", "/team").await;
    let (later, _) = h.webhook("later", "/later").await;
    policy(&h, "shop", "shop", vec![level("team", 0, &team), level("later", 60_000, &later)]).await;
    h.publish("rp.incident.opened", "incidents/r1", &incident("r1", "critical")).await;
    h.receiver.wait_for("/team", 1).await;
    let mut resolved = incident("r1", "critical");
    resolved.status = "resolved".into();
    h.publish("rp.incident.resolved", "incidents/r1", &resolved).await;
    let escalation = eventually(WAIT, "the escalation to end", || async {
        Some(escalation_of(&h, "r1").await).filter(|e| e.status == "resolved")
    })
    .await;
    assert!(escalation.resolved_at.is_some() && escalation.next_level_at.is_none());
    h.tap.wait("rp.escalation.resolved", |e| e.event_type == "rp.escalation.resolved").await;
    // A high-severity incident starts no escalation (the policy is for critical ones).
    h.publish("rp.incident.opened", "incidents/r2", &incident("r2", "high")).await;
    let (witness_channel, _) = h.webhook("marker", "/marker").await;
    h.route(&witness_channel, &["rp.incident.*"], 0).await;
    let marker = h.publish("rp.incident.opened", "incidents/r3", &incident("r3", "high")).await;
    h.wait_delivery(&witness_channel, &marker, "delivered").await;
    let all = h
        .client()
        .list_escalations(h.admin(pb::ListEscalationsRequest::default()))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(all.escalations.iter().map(|e| e.incident_id.as_str()).collect::<Vec<_>>(), ["r1"]);
}
