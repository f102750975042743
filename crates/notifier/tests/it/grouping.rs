//! Grouping and de-duplication: bursts become one message, a rollback suppresses the success it
//! follows, repeats wait for the repeat interval; and the seed's matrix decides where events go.

use rp_proto::{events::v1 as ev, notifier::v1 as pb};
use rp_test_support::eventually;
use serde_json::json;

use crate::{WAIT, deployment, harness, incident};

#[tokio::test]
async fn a_burst_of_step_events_becomes_one_message() {
    let h = harness().await;
    let (channel, _) = h.webhook("steps", "/steps").await;
    h.route(&channel, &["rp.deployment.*"], 1500).await;
    let mut burst = Vec::new();
    for step in 1..=5 {
        burst.push(
            h.publish(
                "rp.deployment.step_advanced",
                "deployments/b1",
                &deployment("b1", "in_progress", step),
            )
            .await,
        );
    }
    let other =
        h.publish("rp.deployment.step_advanced", "deployments/b2", &deployment("b2", "in_progress", 1)).await;
    let grouped = h.wait_delivery(&channel, &burst[0], "delivered").await;
    assert_eq!(grouped.event_ids, burst.iter().map(|e| e.id.to_string()).collect::<Vec<_>>());
    h.wait_delivery(&channel, &other, "delivered").await;
    let requests = h.receiver.on("/steps");
    assert_eq!(requests.len(), 2, "one message per deployment");
    let batch = requests.iter().find(|r| r.header("webhook-id") == grouped.id).unwrap();
    assert_eq!(batch.header("content-type"), "application/cloudevents-batch+json");
    let events = batch.json();
    let steps: Vec<i64> =
        events.as_array().unwrap().iter().map(|e| e["data"]["step"].as_i64().unwrap()).collect();
    assert_eq!(steps, [1, 2, 3, 4, 5]);
    assert!(events.as_array().unwrap().iter().all(|e| e["specversion"] == "1.0"));
    let single = requests.iter().find(|r| r.header("webhook-id") != grouped.id).unwrap();
    assert_eq!(single.header("content-type"), "application/cloudevents+json");
    assert_eq!(single.json()["id"], other.id.to_string());
}

#[tokio::test]
async fn a_rollback_suppresses_the_deployment_succeeded_it_follows() {
    let h = harness().await;
    let (channel, _) = h.webhook("chat-like", "/outcomes").await;
    h.rule(pb::RoutingRuleInput {
        name: "outcomes, one group per event type".into(),
        event_types: vec!["rp.deployment.*".into()],
        channel_ids: vec![channel.id.clone()],
        group_wait_ms: Some(1500),
        group_by: vec!["deployment".into(), "event_type".into()],
        ..Default::default()
    })
    .await;
    let succeeded =
        h.publish("rp.deployment.succeeded", "deployments/s1", &deployment("s1", "succeeded", 4)).await;
    let mut rolled_back = deployment("s1", "rolled_back", 4);
    rolled_back.trigger = "error rate above 2%".into();
    let rollback = h.publish("rp.deployment.rolled_back", "deployments/s1", &rolled_back).await;
    h.wait_delivery(&channel, &rollback, "delivered").await;
    let suppressed = eventually(WAIT, "the success to be suppressed", || async {
        h.deliveries(&channel).await.into_iter().find(|d| d.status == "suppressed")
    })
    .await;
    assert_eq!(suppressed.event_type, "rp.deployment.succeeded");
    assert_eq!(suppressed.suppressed_events, 1);
    assert!(suppressed.event_ids.is_empty());
    let requests = h.receiver.on("/outcomes");
    assert_eq!(requests.len(), 1);
    assert_eq!(requests[0].json()["type"], "rp.deployment.rolled_back");
    // A success arriving after the rollback (out of order) is suppressed too.
    let late =
        h.publish("rp.deployment.succeeded", "deployments/s1", &deployment("s1", "succeeded", 5)).await;
    let (witness, _) = h.webhook("witness", "/witness").await;
    h.route(&witness, &["rp.deployment.*"], 0).await;
    let marker =
        h.publish("rp.deployment.started", "deployments/s9", &deployment("s9", "in_progress", 1)).await;
    h.wait_delivery(&witness, &marker, "delivered").await;
    assert!(
        !h.deliveries(&channel).await.iter().any(|d| d.event_ids.contains(&late.id.to_string())),
        "the late success joined no message"
    );
    assert_ne!(succeeded.id, late.id);
}

#[tokio::test]
async fn the_same_notification_is_sent_once_per_repeat_interval() {
    let h = harness().await;
    let (channel, _) = h.webhook("alerts", "/alerts").await;
    h.rule(pb::RoutingRuleInput {
        name: "alerts at once, repeats hourly".into(),
        event_types: vec!["rp.analysis.alert".into()],
        channel_ids: vec![channel.id.clone()],
        group_wait_ms: Some(0),
        repeat_interval_ms: Some(3_600_000),
        ..Default::default()
    })
    .await;
    let alert = |rule: &str| ev::AnalysisChanged {
        analysis_id: "a1".into(),
        deployment_id: "d-alert".into(),
        app: "shop".into(),
        environment: "staging".into(),
        version: "2.0.0".into(),
        status: "running".into(),
        rule: rule.into(),
        reason: "checkout conversions 50% below stable".into(),
        severity: "medium".into(),
        action: "alert".into(),
        ..Default::default()
    };
    let first = h.publish("rp.analysis.alert", "analyses/a1", &alert("business metric")).await;
    let repeat = h.publish("rp.analysis.alert", "analyses/a1", &alert("business metric")).await;
    let different = h.publish("rp.analysis.alert", "analyses/a1", &alert("p95 latency")).await;
    h.wait_delivery(&channel, &first, "delivered").await;
    h.wait_delivery(&channel, &different, "delivered").await;
    let deliveries = h.deliveries(&channel).await;
    let mut sent: Vec<String> = deliveries.iter().flat_map(|d| d.event_ids.clone()).collect();
    sent.sort();
    let mut expected = vec![first.id.to_string(), different.id.to_string()];
    expected.sort();
    assert_eq!(sent, expected, "the repeat joined no message");
    assert!(!sent.contains(&repeat.id.to_string()));
    assert_eq!(deliveries.iter().map(|d| d.suppressed_events).sum::<i32>(), 0);
    let received: usize = h
        .receiver
        .on("/alerts")
        .iter()
        .map(|r| match r.json() {
            serde_json::Value::Array(batch) => batch.len(),
            _ => 1,
        })
        .sum();
    assert_eq!(received, 2);
}

#[tokio::test]
async fn the_seed_matrix_routes_by_severity() {
    // The seeded rules and policy (kept here), with one channel of each kind.
    let h = crate::harness_seeded().await;
    let rules =
        h.client().list_routing_rules(h.admin(pb::ListRoutingRulesRequest {})).await.unwrap().into_inner();
    assert_eq!(rules.rules.len(), 5);
    let (webhook, _) = h.webhook("tickets", "/tickets").await;
    let slack = h.channel("chat", "slack", json!({}), &[("webhook_url", h.receiver.url("/slack"))]).await;
    let email = h
        .channel("mail", "email", json!({"smtp_host": "127.0.0.1", "smtp_port": 2, "tls": "none", "from": "rp@example.com", "to": ["a@example.com"]}), &[])
        .await;
    let pager = h
        .channel("pager", "pagerduty", json!({"api_url": h.receiver.url("")}), &[("routing_key", "k".into())])
        .await;
    let kinds_for = |event: rp_events::Event| {
        let h = &h;
        let (webhook, slack, email, pager) = (&webhook, &slack, &email, &pager);
        async move {
            eventually(WAIT, &format!("routing of {}", event.event_type), || async {
                let mut kinds = Vec::new();
                for channel in [webhook, slack, email, pager] {
                    if h.deliveries(channel).await.iter().any(|d| d.event_ids.contains(&event.id.to_string()))
                    {
                        kinds.push(channel.kind.clone());
                    }
                }
                // Every event of these tests reaches at least one channel.
                (!kinds.is_empty()).then_some(kinds)
            })
            .await
        }
    };
    let critical = h.publish("rp.incident.opened", "incidents/m1", &incident("m1", "critical")).await;
    let high = h.publish("rp.deployment.failed", "deployments/m2", &deployment("m2", "failed", 1)).await;
    let medium =
        h.publish("rp.deployment.started", "deployments/m3", &deployment("m3", "in_progress", 1)).await;
    let low =
        h.publish("rp.release.created", "releases/m4", &json!({"app": "shop", "version": "2.0.0"})).await;
    // Routing happens in one transaction per event, so a later marker proves earlier ones are done.
    let marker =
        h.publish("rp.release.created", "releases/m5", &json!({"app": "shop", "version": "2.0.1"})).await;
    kinds_for(marker).await;
    assert_eq!(kinds_for(critical).await, ["slack", "email", "pagerduty"]);
    assert_eq!(kinds_for(high).await, ["slack", "email"]);
    assert_eq!(kinds_for(medium).await, ["slack"]);
    assert_eq!(kinds_for(low).await, ["webhook"]);
}
