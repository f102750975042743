//! Generic webhooks: the events as CloudEvents 1.0 JSON (structured mode; a group is a batch),
//! signed per Standard Webhooks. `webhook-id` is the delivery id, the same on every attempt, so
//! receivers drop duplicates; during a secret rotation both secrets sign.

use chrono::{DateTime, Utc};

use super::{Answer, Message, Resolved, SendError, http::GuardedHttp};

pub const CONTENT_TYPE: &str = "application/cloudevents+json";
pub const BATCH_CONTENT_TYPE: &str = "application/cloudevents-batch+json";

/// One event as CloudEvents JSON; an escalation level adds the extension attributes
/// `rpescalation`, `rpescalationlevel` and `rpackurl` (the signed acknowledge link).
fn cloudevent(event: &rp_events::Event, message: &Message) -> serde_json::Value {
    let mut value = event.to_cloudevent();
    if let Some(escalation) = &message.escalation {
        value["rpescalation"] = escalation.id.clone().into();
        value["rpescalationlevel"] = escalation.level.into();
        if let Some(url) = message.context.get("ack_url").and_then(|u| u.as_str()).filter(|u| !u.is_empty()) {
            value["rpackurl"] = url.into();
        }
    }
    value
}

/// The body and its content type: one CloudEvent, or a batch (JSON array) for a group.
pub fn body(message: &Message) -> (Vec<u8>, &'static str) {
    if message.events.len() == 1 {
        (cloudevent(&message.events[0], message).to_string().into_bytes(), CONTENT_TYPE)
    } else {
        let batch: Vec<serde_json::Value> = message.events.iter().map(|e| cloudevent(e, message)).collect();
        (serde_json::Value::Array(batch).to_string().into_bytes(), BATCH_CONTENT_TYPE)
    }
}

/// Secrets that sign now: the current one, and the previous one until its overlap ends.
pub fn signing_secrets(channel: &Resolved, now: DateTime<Utc>) -> Vec<String> {
    let mut secrets: Vec<String> = channel.secrets.get("signing_secret").cloned().into_iter().collect();
    let previous_valid = channel
        .secrets
        .get("previous_signing_secret_expires")
        .and_then(|at| DateTime::parse_from_rfc3339(at).ok())
        .is_some_and(|at| at > now);
    if previous_valid && let Some(previous) = channel.secrets.get("previous_signing_secret") {
        secrets.push(previous.clone());
    }
    secrets
}

/// The Standard Webhooks headers of one attempt.
pub fn signature_headers(
    secrets: &[String],
    id: &str,
    timestamp: i64,
    body: &[u8],
) -> Result<Vec<(&'static str, String)>, SendError> {
    let refs: Vec<&str> = secrets.iter().map(String::as_str).collect();
    let signature = rp_webhooks::sign_all(&refs, id, timestamp, body)
        .map_err(|e| SendError::Permanent(format!("signing_secret: {e}")))?;
    Ok(vec![
        (rp_webhooks::HEADER_ID, id.to_owned()),
        (rp_webhooks::HEADER_TIMESTAMP, timestamp.to_string()),
        (rp_webhooks::HEADER_SIGNATURE, signature),
    ])
}

pub async fn send(http: &GuardedHttp, channel: &Resolved, message: &Message) -> Result<Answer, SendError> {
    let url =
        channel.setting("url").ok_or_else(|| SendError::Permanent("webhook channel without url".into()))?;
    let (body, content_type) = body(message);
    let now = Utc::now();
    let secrets = signing_secrets(channel, now);
    if secrets.is_empty() {
        return Err(SendError::Permanent("webhook channel without signing secret".into()));
    }
    let mut headers = signature_headers(&secrets, &message.delivery_id.to_string(), now.timestamp(), &body)?;
    headers.push(("content-type", content_type.to_owned()));
    if let Some(authorization) = channel.secrets.get("authorization").filter(|a| !a.is_empty()) {
        headers.push(("authorization", authorization.clone()));
    }
    http.post(url, &headers, body).await
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The test vector published with the Standard Webhooks specification, through the headers
    /// the notifier sends.
    #[test]
    fn headers_match_the_specification_test_vector() {
        let secrets = vec!["whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw".to_owned()];
        let headers = signature_headers(
            &secrets,
            "msg_p5jXN8AQM9LWM0D4loKWxJek",
            1614265330,
            br#"{"test": 2432232314}"#,
        )
        .unwrap();
        assert_eq!(headers[0], ("webhook-id", "msg_p5jXN8AQM9LWM0D4loKWxJek".to_owned()));
        assert_eq!(headers[1], ("webhook-timestamp", "1614265330".to_owned()));
        assert_eq!(
            headers[2],
            ("webhook-signature", "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=".to_owned())
        );
    }

    #[test]
    fn the_previous_secret_signs_until_its_overlap_ends() {
        let now = Utc::now();
        let mut channel = Resolved {
            id: uuid::Uuid::nil(),
            name: "w".into(),
            kind: "webhook".into(),
            config: serde_json::json!({}),
            secrets: Default::default(),
            templates: Default::default(),
        };
        channel.secrets.insert("signing_secret".into(), "whsec_bmV3".into());
        channel.secrets.insert("previous_signing_secret".into(), "whsec_b2xk".into());
        channel.secrets.insert(
            "previous_signing_secret_expires".into(),
            (now + chrono::Duration::hours(1)).to_rfc3339(),
        );
        assert_eq!(signing_secrets(&channel, now), ["whsec_bmV3", "whsec_b2xk"]);
        assert_eq!(signing_secrets(&channel, now + chrono::Duration::hours(2)), ["whsec_bmV3"]);
        let headers = signature_headers(&signing_secrets(&channel, now), "id", 1, b"x").unwrap();
        assert_eq!(headers[2].1.split(' ').count(), 2);
    }
}
