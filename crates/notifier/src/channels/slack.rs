//! Slack incoming webhooks: a header with the title, the events as mrkdwn, a context line, and
//! buttons to the deployment (or incident) and, for escalations, to acknowledge.

use serde_json::{Value, json};

use super::{Answer, Message, Resolved, SendError, http::GuardedHttp};

fn truncate(text: &str, max: usize) -> String {
    if text.chars().count() <= max {
        return text.to_owned();
    }
    let mut cut: String = text.chars().take(max.saturating_sub(1)).collect();
    cut.push('…');
    cut
}

/// The message as Slack Block Kit JSON.
pub fn payload(title: &str, text: &str, message: &Message) -> Value {
    let primary = message.primary();
    let mut context = vec![format!("*{}*", message.severity.as_str())];
    for value in [&primary.app, &primary.environment, &primary.version] {
        if !value.is_empty() {
            context.push(value.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;"));
        }
    }
    if message.events.len() > 1 {
        context.push(format!("{} events", message.events.len()));
    }
    let mut blocks = vec![
        json!({"type": "header", "text": {"type": "plain_text", "text": truncate(title, 150), "emoji": true}}),
        json!({"type": "section", "text": {"type": "mrkdwn", "text": truncate(if text.is_empty() { title } else { text }, 3000)}}),
        json!({"type": "context", "elements": [{"type": "mrkdwn", "text": context.join("  ·  ")}]}),
    ];
    let mut buttons = Vec::new();
    if let Some(url) = message.context.get("deployment_url").and_then(Value::as_str).filter(|u| !u.is_empty())
    {
        buttons.push(
            json!({"type": "button", "text": {"type": "plain_text", "text": "View deployment"}, "url": url}),
        );
    } else if let Some(url) = message
        .context
        .get("event")
        .and_then(|e| e.get("url"))
        .and_then(Value::as_str)
        .filter(|u| !u.is_empty())
    {
        buttons.push(json!({"type": "button", "text": {"type": "plain_text", "text": "Open"}, "url": url}));
    }
    if let Some(url) = message.context.get("ack_url").and_then(Value::as_str).filter(|u| !u.is_empty()) {
        buttons.push(json!({"type": "button", "style": "danger", "text": {"type": "plain_text", "text": "Acknowledge"}, "url": url}));
    }
    if !buttons.is_empty() {
        blocks.push(json!({"type": "actions", "elements": buttons}));
    }
    json!({"text": truncate(title, 3000), "blocks": blocks})
}

pub async fn send(http: &GuardedHttp, channel: &Resolved, message: &Message) -> Result<Answer, SendError> {
    let url = channel
        .secrets
        .get("webhook_url")
        .filter(|u| !u.is_empty())
        .ok_or_else(|| SendError::Permanent("slack channel without webhook_url".into()))?;
    let title = message.render(channel, "title")?;
    let text = message.render(channel, "text")?;
    let body = payload(&title, &text, message).to_string().into_bytes();
    http.post(url, &[("content-type", "application/json".to_owned())], body).await
}
