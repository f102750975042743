//! Slack, PagerDuty and e-mail against local receivers speaking their formats.

use rp_proto::notifier::v1 as pb;
use serde_json::json;

use crate::{Reply, deployment, harness, incident, python::SmtpSink};

#[tokio::test]
async fn slack_gets_readable_blocks_linking_to_the_deployment() {
    let h = harness().await;
    let slack = h
        .channel("team chat", "slack", json!({}), &[("webhook_url", h.receiver.url("/services/T1/B1/x"))])
        .await;
    h.route(&slack, &["rp.deployment.*"], 0).await;
    let mut failed = deployment("d-slack", "failed", 2);
    failed.reason = "canary <error> rate & latency".into();
    let event = h.publish("rp.deployment.failed", "deployments/d-slack", &failed).await;
    let request = h.receiver.wait_for("/services/T1/B1/x", 1).await.remove(0);
    assert_eq!(request.header("content-type"), "application/json");
    let body = request.json();
    let blocks = body["blocks"].as_array().unwrap();
    assert_eq!(blocks[0]["type"], "header");
    let title = blocks[0]["text"]["text"].as_str().unwrap();
    assert!(title.contains("shop 2.0.0 in staging: deployment failed"), "{title}");
    assert_eq!(blocks[1]["type"], "section");
    let text = blocks[1]["text"]["text"].as_str().unwrap();
    assert!(text.contains("*HIGH*"), "{text}");
    assert!(text.contains("canary &lt;error&gt; rate &amp; latency"), "mrkdwn is escaped: {text}");
    assert_eq!(blocks[2]["type"], "context");
    let actions = blocks.iter().find(|b| b["type"] == "actions").expect("a button");
    let link = actions["elements"][0]["url"].as_str().unwrap();
    assert_eq!(link, format!("{}/deployments/d-slack", h.system.app.config.gateway.public_url));
    assert!(body["text"].as_str().unwrap().contains("deployment failed"), "fallback text for notifications");
    h.wait_delivery(&slack, &event, "delivered").await;
}

#[tokio::test]
async fn pagerduty_triggers_and_resolves_by_incident_and_gets_change_events() {
    let h = harness().await;
    h.receiver.answer_by_default(Reply::With(
        202,
        vec![("content-type", "application/json".into())],
        json!({"status": "success", "message": "Event processed"}).to_string(),
    ));
    let pager = h
        .channel(
            "pager",
            "pagerduty",
            json!({"api_url": h.receiver.url(""), "source": "rp-test"}),
            &[("routing_key", "R0UTINGKEY".into())],
        )
        .await;
    h.rule(pb::RoutingRuleInput {
        name: "everything to the pager at once".into(),
        event_types: vec!["rp.incident.*".into(), "rp.deployment.succeeded".into()],
        channel_ids: vec![pager.id.clone()],
        group_wait_ms: Some(0),
        group_by: vec!["event_type".into(), "subject".into()],
        ..Default::default()
    })
    .await;
    let opened = h.publish("rp.incident.opened", "incidents/inc-7", &incident("inc-7", "critical")).await;
    let trigger = h.receiver.wait_for("/v2/enqueue", 1).await.remove(0).json();
    assert_eq!(trigger["routing_key"], "R0UTINGKEY");
    assert_eq!(trigger["event_action"], "trigger");
    assert_eq!(trigger["dedup_key"], "inc-7");
    assert_eq!(trigger["payload"]["severity"], "critical");
    assert_eq!(trigger["payload"]["source"], "rp-test");
    assert_eq!(trigger["payload"]["component"], "shop");
    assert_eq!(trigger["payload"]["group"], "production");
    assert_eq!(trigger["payload"]["class"], "rp.incident.opened");
    assert!(trigger["payload"]["summary"].as_str().unwrap().contains("error rate above 2%"));
    assert_eq!(trigger["payload"]["custom_details"]["events"][0]["id"], opened.id.to_string());
    assert!(trigger["links"][0]["href"].as_str().unwrap().ends_with("/deployments/dep-inc-7"));

    let mut resolved = incident("inc-7", "critical");
    resolved.status = "resolved".into();
    h.publish("rp.incident.resolved", "incidents/inc-7", &resolved).await;
    let resolve = h.receiver.wait_for("/v2/enqueue", 2).await.remove(1).json();
    assert_eq!(
        resolve,
        json!({"routing_key": "R0UTINGKEY", "event_action": "resolve", "dedup_key": "inc-7"})
    );

    let mut succeeded = deployment("d-pd", "succeeded", 4);
    succeeded.environment = "production".into();
    succeeded.production = true;
    let change_event = h.publish("rp.deployment.succeeded", "deployments/d-pd", &succeeded).await;
    let change = h.receiver.wait_for("/v2/change/enqueue", 1).await.remove(0).json();
    assert_eq!(change["routing_key"], "R0UTINGKEY");
    assert!(
        change["payload"]["summary"]
            .as_str()
            .unwrap()
            .contains("shop 2.0.0 in production: deployment succeeded")
    );
    assert_eq!(change["payload"]["source"], "rp-test");
    assert!(change.get("event_action").is_none());
    let delivery = h.wait_delivery(&pager, &change_event, "delivered").await;
    assert_eq!(delivery.attempt_log[0].status_code, 202);
    assert!(delivery.attempt_log[0].response_excerpt.contains("Event processed"));
}

#[tokio::test]
async fn email_goes_out_as_plain_text_and_html_through_smtp() {
    let sink = SmtpSink::start().await;
    let h = harness().await;
    let mail = h
        .channel(
            "on-call mail",
            "email",
            json!({"smtp_host": "127.0.0.1", "smtp_port": sink.port, "tls": "none",
                   "from": "Release Pilot <rp@example.com>", "to": ["oncall@example.com", "lead@example.com"]}),
            &[],
        )
        .await;
    h.route(&mail, &["rp.deployment.*"], 0).await;
    let mut failed = deployment("d-mail", "failed", 3);
    failed.reason = "p95 <above> 1000 ms".into();
    let event = h.publish("rp.deployment.failed", "deployments/d-mail", &failed).await;
    let delivery = h.wait_delivery(&mail, &event, "delivered").await;
    assert_eq!(delivery.attempt_log[0].status_code, 250);
    let message = rp_test_support::eventually(crate::WAIT, "the e-mail", || async {
        sink.messages().into_iter().next()
    })
    .await;
    assert_eq!(message["mail_from"], "rp@example.com");
    assert_eq!(message["rcpt_tos"], json!(["oncall@example.com", "lead@example.com"]));
    assert_eq!(message["content_type"], "multipart/alternative");
    let subject = message["subject"].as_str().unwrap();
    assert!(subject.starts_with("[HIGH] shop 2.0.0 in staging: deployment failed"), "{subject}");
    assert_eq!(message["message_id"], format!("<{}@release-pilot.notifier>", delivery.id));
    let text = message["text"].as_str().unwrap();
    assert!(text.contains("p95 <above> 1000 ms") && text.contains("/deployments/d-mail"), "{text}");
    let html = message["html"].as_str().unwrap();
    assert!(html.contains("p95 &lt;above&gt; 1000 ms"), "escaped in HTML: {html}");
    assert!(html.contains("<a href="), "{html}");
}
