//! Grouping and de-duplication, like Alertmanager's group_by, group_wait and repeat_interval:
//! events of one group (channel + group labels) arriving within group_wait become one message;
//! the same event type about the same thing is sent once per repeat_interval; and a later event
//! can make a pending one pointless (a rollback suppresses the "deployment succeeded" it follows).

use super::classify::Labels;

/// The group an event joins on a channel: the values of `group_by`, in order.
pub fn group_key(group_by: &[String], labels: &Labels) -> String {
    group_by
        .iter()
        .map(|label| {
            let value = match label.as_str() {
                "app" => labels.app.as_str(),
                "environment" => labels.environment.as_str(),
                "deployment" => labels.deployment_id.as_str(),
                "incident" => labels.incident_id.as_str(),
                "event_type" => labels.event_type.as_str(),
                "subject" => labels.subject.as_str(),
                _ => "",
            };
            format!("{label}={value}")
        })
        .collect::<Vec<_>>()
        .join("|")
}

/// Payload fields that differ between two tellings of the same fact.
const VOLATILE: [&str; 5] = ["actor", "revision", "mttr_seconds", "restore_ms", "measurement_ids"];

/// What "the same notification" means for repeat_interval: the same event type about the same
/// incident, deployment or subject, saying the same thing (the payload without who did it and
/// counters). A deployment's next step is news; the same alert again is not.
pub fn dedup_key(labels: &Labels, data: &serde_json::Value) -> String {
    use sha2::Digest as _;
    let about = [&labels.incident_id, &labels.deployment_id, &labels.subject]
        .into_iter()
        .find(|v| !v.is_empty())
        .cloned()
        .unwrap_or_default();
    let mut content = data.clone();
    if let Some(object) = content.as_object_mut() {
        for key in VOLATILE {
            object.remove(key);
        }
    }
    // serde_json keeps object keys sorted, so equal payloads serialise equally.
    let digest = sha2::Sha256::digest(content.to_string().as_bytes());
    format!("{}|{about}|{}", labels.event_type, hex::encode(&digest[..8]))
}

/// Event types that a pending notification of type `pending` becomes pointless after, when
/// both are about the same deployment.
pub fn suppressed_by(pending: &str) -> &'static [&'static str] {
    match pending {
        "rp.deployment.succeeded" | "rp.deployment.promoted" => {
            &["rp.deployment.rolled_back", "rp.rollback.triggered", "rp.rollback.completed"]
        }
        _ => &[],
    }
}

/// The pending event types that an event of type `arriving` suppresses (same deployment).
pub fn suppresses(arriving: &str) -> Vec<&'static str> {
    ["rp.deployment.succeeded", "rp.deployment.promoted"]
        .into_iter()
        .filter(|pending| suppressed_by(pending).contains(&arriving))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn labels() -> Labels {
        Labels {
            event_type: "rp.deployment.step_advanced".into(),
            subject: "deployments/d1".into(),
            app: "shop".into(),
            environment: "prod".into(),
            deployment_id: "d1".into(),
            ..Labels::default()
        }
    }

    #[test]
    fn group_keys_follow_the_labels() {
        let by: Vec<String> = ["app", "environment", "deployment"].map(String::from).to_vec();
        assert_eq!(group_key(&by, &labels()), "app=shop|environment=prod|deployment=d1");
        let mut other = labels();
        other.event_type = "rp.deployment.succeeded".into();
        assert_eq!(group_key(&by, &labels()), group_key(&by, &other));
        other.deployment_id = "d2".into();
        assert_ne!(group_key(&by, &labels()), group_key(&by, &other));
    }

    #[test]
    fn dedup_keys_ignore_who_and_counters_but_not_content() {
        let mut l = labels();
        let step = |n: i64, revision: i64| serde_json::json!({"step": n, "revision": revision, "actor": {"email": "a"}});
        assert!(dedup_key(&l, &step(1, 1)).starts_with("rp.deployment.step_advanced|d1|"));
        assert_eq!(dedup_key(&l, &step(1, 1)), dedup_key(&l, &step(1, 7)));
        assert_ne!(dedup_key(&l, &step(1, 1)), dedup_key(&l, &step(2, 2)));
        l.incident_id = "i9".into();
        assert!(dedup_key(&l, &step(1, 1)).starts_with("rp.deployment.step_advanced|i9|"));
    }

    #[test]
    fn rollbacks_suppress_success() {
        assert_eq!(
            suppresses("rp.deployment.rolled_back"),
            ["rp.deployment.succeeded", "rp.deployment.promoted"]
        );
        assert_eq!(suppresses("rp.rollback.completed").len(), 2);
        assert!(suppresses("rp.deployment.succeeded").is_empty());
        assert!(suppressed_by("rp.deployment.succeeded").contains(&"rp.rollback.triggered"));
    }
}
