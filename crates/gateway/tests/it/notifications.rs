//! The notifier through the REST API: channels whose secrets never come back, routing rules,
//! deliveries with their attempt log, dead letters and their replay, escalation policies, and
//! acknowledging an escalation as an incident commander or through the signed link.

use std::{
    collections::HashMap,
    net::SocketAddr,
    sync::{Arc, Mutex},
    time::Duration,
};

use axum::{extract::State, http::HeaderMap, routing::post};
use release_pilot::testing::TestSystem;
use reqwest::{Method, header};
use rp_events::Event;
use rp_proto::events::v1 as events;
use rp_test_support::eventually;
use serde_json::{Value, json};

use super::{call, expect, problem, system_with};

const WAIT: Duration = Duration::from_secs(30);

/// Loopback receivers allowed, fast retries.
const FAST: &[(&str, &str)] = &[
    ("RP_NOTIFIER__ALLOWED_PRIVATE_NETWORKS", "127.0.0.0/8"),
    ("RP_NOTIFIER__RETRY_SCHEDULE", "100ms,200ms"),
    ("RP_NOTIFIER__RETRY_JITTER", "0"),
    ("RP_NOTIFIER__DISPATCH_INTERVAL_MS", "50"),
];

/// What a local webhook receiver got: per path, the headers and bodies. Answers 200, or the
/// status set for a path.
#[derive(Clone, Default)]
struct Receiver {
    got: Arc<Mutex<Vec<(String, HeaderMap, Value)>>>,
    status: Arc<Mutex<HashMap<String, u16>>>,
    addr: Option<SocketAddr>,
}

impl Receiver {
    async fn start() -> Self {
        async fn receive(
            State(receiver): State<Receiver>,
            uri: axum::http::Uri,
            headers: HeaderMap,
            body: axum::body::Bytes,
        ) -> axum::http::StatusCode {
            let path = uri.path().to_owned();
            let body = serde_json::from_slice(&body).unwrap_or(Value::Null);
            receiver.got.lock().unwrap().push((path.clone(), headers, body));
            let status = receiver.status.lock().unwrap().get(&path).copied().unwrap_or(200);
            axum::http::StatusCode::from_u16(status).unwrap()
        }
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let receiver = Receiver { addr: Some(listener.local_addr().unwrap()), ..Default::default() };
        let app = axum::Router::new().route("/{*path}", post(receive)).with_state(receiver.clone());
        tokio::spawn(async move { axum::serve(listener, app).await });
        receiver
    }

    fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr.unwrap())
    }

    fn answer(&self, path: &str, status: u16) {
        self.status.lock().unwrap().insert(path.into(), status);
    }

    fn on(&self, path: &str) -> Vec<(HeaderMap, Value)> {
        self.got
            .lock()
            .unwrap()
            .iter()
            .filter(|(p, _, _)| p == path)
            .map(|(_, h, b)| (h.clone(), b.clone()))
            .collect()
    }
}

async fn publish(
    system: &TestSystem,
    event_type: &str,
    subject: &str,
    data: &impl serde::Serialize,
) -> Event {
    let event = Event::new("release", event_type, subject, data);
    system.app.bus.publish(&event).await.unwrap();
    event
}

fn deployment(id: &str, state: &str) -> events::DeploymentChanged {
    events::DeploymentChanged {
        deployment_id: id.into(),
        app: "shop".into(),
        environment: "staging".into(),
        version: "2.0.0".into(),
        previous_version: "1.0.0".into(),
        strategy: "all_at_once".into(),
        state: state.into(),
        ..Default::default()
    }
}

fn incident(id: &str) -> events::IncidentChanged {
    events::IncidentChanged {
        incident_id: id.into(),
        deployment_id: uuid::Uuid::now_v7().to_string(),
        app: "shop".into(),
        environment: "production".into(),
        version: "2.0.0".into(),
        severity: "critical".into(),
        summary: format!("error rate above 2% on shop 2.0.0 ({id})"),
        status: "open".into(),
        production: true,
        ..Default::default()
    }
}

/// Deletes the seeded routing rules and escalation policy, through the API.
async fn clear_defaults(system: &TestSystem, admin: &str) {
    let rules =
        expect(call(system, Method::GET, "/api/v1/notification-rules", admin, None, &[]).await, 200).await;
    assert!(!rules["items"].as_array().unwrap().is_empty(), "the seed's matrix is seeded: {rules}");
    for rule in rules["items"].as_array().unwrap() {
        let path = format!("/api/v1/notification-rules/{}", rule["id"].as_str().unwrap());
        assert_eq!(call(system, Method::DELETE, &path, admin, None, &[]).await.status(), 204);
    }
    let policies =
        expect(call(system, Method::GET, "/api/v1/escalation-policies", admin, None, &[]).await, 200).await;
    for policy in policies["items"].as_array().unwrap() {
        let path = format!("/api/v1/escalation-policies/{}", policy["id"].as_str().unwrap());
        assert_eq!(call(system, Method::DELETE, &path, admin, None, &[]).await.status(), 204);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn channels_keep_their_secrets_and_writes_need_an_admin() {
    let system = system_with(FAST).await;
    let admin = system.admin_token().await;
    let developer = system.user_token("dev@example.com", &["developer"]).await;
    let receiver = Receiver::start().await;

    let body = json!({"name": "ops hook", "kind": "webhook", "config": {"url": receiver.url("/hook")},
        "secrets": {"authorization": "Bearer receiver-secret"}});
    problem(
        call(&system, Method::POST, "/api/v1/channels", &developer, Some(body.clone()), &[]).await,
        403,
        "forbidden",
    )
    .await;
    let created =
        expect(call(&system, Method::POST, "/api/v1/channels", &admin, Some(body.clone()), &[]).await, 201)
            .await;
    let secret = created["signing_secret"].as_str().unwrap().to_owned();
    assert!(secret.starts_with("whsec_"), "{created}");
    let id = created["channel"]["id"].as_str().unwrap().to_owned();
    assert_eq!(created["channel"]["config"], json!({"url": receiver.url("/hook")}));
    problem(
        call(&system, Method::POST, "/api/v1/channels", &admin, Some(body), &[]).await,
        409,
        "already_exists",
    )
    .await;

    // Readers see which secrets are set, never their values.
    let path = format!("/api/v1/channels/{id}");
    let text = call(&system, Method::GET, &path, &developer, None, &[]).await.text().await.unwrap();
    assert!(!text.contains(&secret) && !text.contains("receiver-secret"), "{text}");
    let channel: Value = serde_json::from_str(&text).unwrap();
    assert_eq!(channel["secrets_set"], json!(["authorization", "signing_secret"]));
    assert_eq!(channel["active_signing_secrets"], 1);

    // A test message is signed with the secret the caller was given.
    let attempt =
        expect(call(&system, Method::POST, &format!("{path}/test"), &admin, None, &[]).await, 200).await;
    assert_eq!((attempt["outcome"].as_str(), attempt["status_code"].as_i64()), (Some("success"), Some(200)));
    let (headers, _) = receiver.on("/hook").pop().expect("the test message");
    assert_eq!(headers["authorization"], "Bearer receiver-secret");
    assert!(headers["webhook-signature"].to_str().unwrap().starts_with("v1,"));

    // Rotation: a new secret, and the old one signs beside it during the overlap.
    let rotated = expect(
        call(&system, Method::POST, &format!("{path}/rotate-secret"), &admin, Some(json!({})), &[]).await,
        200,
    )
    .await;
    assert_ne!(rotated["signing_secret"].as_str(), Some(secret.as_str()));
    assert_eq!(rotated["channel"]["active_signing_secrets"], 2);

    // PATCH changes what it names; bad input is a 422 naming the field; then delete.
    let patched = expect(
        call(
            &system,
            Method::PATCH,
            &path,
            &admin,
            Some(json!({"enabled": false, "rate_limit_per_minute": 30})),
            &[],
        )
        .await,
        200,
    )
    .await;
    assert_eq!(
        (patched["enabled"].as_bool(), patched["rate_limit_per_minute"].as_i64()),
        (Some(false), Some(30))
    );
    assert_eq!(patched["name"], "ops hook");
    let bad =
        call(&system, Method::PATCH, &path, &admin, Some(json!({"rate_limit_per_minute": -1})), &[]).await;
    assert!(
        problem(bad, 422, "validation_failed").await["detail"]
            .as_str()
            .unwrap()
            .contains("rate_limit_per_minute")
    );
    let inside =
        json!({"name": "metadata", "kind": "webhook", "config": {"url": "http://169.254.169.254/latest"}});
    let refused = call(&system, Method::POST, "/api/v1/channels", &admin, Some(inside), &[]).await;
    assert!(problem(refused, 422, "validation_failed").await["detail"].as_str().unwrap().contains("SSRF"));
    assert_eq!(call(&system, Method::DELETE, &path, &developer, None, &[]).await.status(), 403);
    assert_eq!(call(&system, Method::DELETE, &path, &admin, None, &[]).await.status(), 204);
    problem(call(&system, Method::GET, &path, &admin, None, &[]).await, 404, "not_found").await;
    problem(
        call(&system, Method::GET, "/api/v1/channels/nope", &admin, None, &[]).await,
        422,
        "validation_failed",
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn routed_events_leave_an_attempt_log_and_dead_letters_replay() {
    let system = system_with(FAST).await;
    let admin = system.admin_token().await;
    let receiver = Receiver::start().await;
    clear_defaults(&system, &admin).await;

    let mut channels = Vec::new();
    for (name, path) in [("deploys", "/deploys"), ("flaky", "/flaky")] {
        let body = json!({"name": name, "kind": "webhook", "config": {"url": receiver.url(path)}});
        let created =
            expect(call(&system, Method::POST, "/api/v1/channels", &admin, Some(body), &[]).await, 201).await;
        channels.push(created["channel"]["id"].as_str().unwrap().to_owned());
    }
    for (name, events, channel) in
        [("deployments", "rp.deployment.*", &channels[0]), ("releases", "rp.release.>", &channels[1])]
    {
        let rule =
            json!({"name": name, "event_types": [events], "channel_ids": [channel], "group_wait_ms": 0});
        let created = expect(
            call(&system, Method::POST, "/api/v1/notification-rules", &admin, Some(rule), &[]).await,
            201,
        )
        .await;
        assert_eq!(created["event_types"], json!([events]));
    }
    let bad_rule = json!({"name": "nowhere", "event_types": ["deployments"], "channel_kinds": ["slack"]});
    problem(
        call(&system, Method::POST, "/api/v1/notification-rules", &admin, Some(bad_rule), &[]).await,
        422,
        "validation_failed",
    )
    .await;

    // The consumer takes new events only: publish until one arrives.
    let mut n = 0;
    eventually(WAIT, "a deployment event delivered", || {
        n += 1;
        let system = &system;
        let receiver = receiver.clone();
        async move {
            publish(
                system,
                "rp.deployment.succeeded",
                &format!("deployments/d{n}"),
                &deployment(&format!("d{n}"), "succeeded"),
            )
            .await;
            tokio::time::sleep(Duration::from_millis(200)).await;
            (!receiver.on("/deploys").is_empty()).then_some(())
        }
    })
    .await;
    let (headers, body) = receiver.on("/deploys").remove(0);
    let query = format!("/api/v1/deliveries?channel_id={}&status=delivered", channels[0]);
    let page = eventually(WAIT, "the delivery listed", || async {
        let page = expect(call(&system, Method::GET, &query, &admin, None, &[]).await, 200).await;
        (!page["items"].as_array().unwrap().is_empty()).then_some(page)
    })
    .await;
    let first = page["items"].as_array().unwrap().last().unwrap().clone();
    assert_eq!(first["event_ids"][0], body["id"], "the CloudEvent id is the event id");
    let detail = expect(
        call(
            &system,
            Method::GET,
            &format!("/api/v1/deliveries/{}", first["id"].as_str().unwrap()),
            &admin,
            None,
            &[],
        )
        .await,
        200,
    )
    .await;
    let attempt = &detail["attempt_log"][0];
    assert_eq!((attempt["outcome"].as_str(), attempt["status_code"].as_i64()), (Some("success"), Some(200)));
    assert!(attempt["latency_ms"].as_i64().unwrap() >= 0);
    // `webhook-id` is the delivery id: the same on every attempt.
    assert_eq!(headers["webhook-id"].to_str().unwrap(), detail["id"].as_str().unwrap());

    // A receiver failing every attempt (3 with this schedule) makes a dead letter; replayed once
    // it answers, it arrives with the same webhook-id.
    receiver.answer("/flaky", 500);
    let release =
        events::ReleaseCreated { app: "shop".into(), version: "2.0.0".into(), ..Default::default() };
    publish(&system, "rp.release.created", "releases/shop/2.0.0", &release).await;
    let dead_query = format!("/api/v1/dead-letters?channel_id={}", channels[1]);
    let dead = eventually(WAIT, "a dead letter", || async {
        let page = expect(call(&system, Method::GET, &dead_query, &admin, None, &[]).await, 200).await;
        page["items"].as_array().unwrap().first().cloned()
    })
    .await;
    assert_eq!((dead["status"].as_str(), dead["attempts"].as_i64()), (Some("dead"), Some(3)));
    assert_eq!(dead["last_status_code"], 500);
    assert_eq!(receiver.on("/flaky").len(), 3);
    receiver.answer("/flaky", 200);
    let replay = json!({"delivery_ids": [dead["id"]]});
    let replayed = expect(
        call(&system, Method::POST, "/api/v1/dead-letters/replay", &admin, Some(replay), &[]).await,
        200,
    )
    .await;
    assert_eq!(replayed["replayed_ids"], json!([dead["id"]]));
    let arrivals = eventually(WAIT, "the replay delivered", || async {
        let got = receiver.on("/flaky");
        (got.len() == 4).then_some(got)
    })
    .await;
    let ids: Vec<&str> = arrivals.iter().map(|(h, _)| h["webhook-id"].to_str().unwrap()).collect();
    assert!(ids.iter().all(|id| *id == ids[0]), "{ids:?}");
    problem(
        call(&system, Method::POST, "/api/v1/dead-letters/replay", &admin, Some(json!({})), &[]).await,
        422,
        "validation_failed",
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn escalations_stop_when_acknowledged_over_the_api_or_by_the_signed_link() {
    let system = system_with(FAST).await;
    let admin = system.admin_token().await;
    let developer = system.user_token("dev@example.com", &["developer"]).await;
    let commander = system.user_token("ic@example.com", &["incident_commander"]).await;
    let receiver = Receiver::start().await;
    clear_defaults(&system, &admin).await;

    let body = json!({"name": "on-call", "kind": "webhook", "config": {"url": receiver.url("/oncall")}});
    let channel =
        expect(call(&system, Method::POST, "/api/v1/channels", &admin, Some(body), &[]).await, 201).await;
    let channel = channel["channel"]["id"].as_str().unwrap().to_owned();
    let policy = json!({"name": "critical incidents", "severities": ["critical"], "levels": [
        {"name": "team now", "delay_ms": 0, "channel_ids": [channel]},
        {"name": "manager", "delay_ms": 600000, "channel_ids": [channel]}]});
    let bad = json!({"name": "backwards", "levels": [
        {"name": "late", "delay_ms": 5000, "channel_kinds": ["webhook"]},
        {"name": "early", "delay_ms": 0, "channel_kinds": ["webhook"]}]});
    problem(
        call(&system, Method::POST, "/api/v1/escalation-policies", &admin, Some(bad), &[]).await,
        422,
        "validation_failed",
    )
    .await;
    problem(
        call(&system, Method::POST, "/api/v1/escalation-policies", &developer, Some(policy.clone()), &[])
            .await,
        403,
        "forbidden",
    )
    .await;
    expect(call(&system, Method::POST, "/api/v1/escalation-policies", &admin, Some(policy), &[]).await, 201)
        .await;

    // Two critical incidents, each escalated; the first level fires at once.
    let mut escalations = Vec::new();
    let mut n = 0;
    for _ in 0..2 {
        let escalation = eventually(WAIT, "an escalation", || {
            n += 1;
            let system = &system;
            let admin = admin.clone();
            async move {
                let id = uuid::Uuid::now_v7().to_string();
                publish(system, "rp.incident.opened", &format!("incidents/{id}"), &incident(&id)).await;
                let query = format!("/api/v1/escalations?incident_id={id}");
                for _ in 0..10 {
                    let list = expect(call(system, Method::GET, &query, &admin, None, &[]).await, 200).await;
                    if let Some(found) = list["items"].as_array().unwrap().first() {
                        return Some(found.clone());
                    }
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
                None
            }
        })
        .await;
        assert_eq!((escalation["status"].as_str(), escalation["levels"].as_i64()), (Some("active"), Some(2)));
        escalations.push(escalation);
    }
    assert!(n >= 2);

    // Over the API: developers may not; an incident commander may, with a note.
    let first = escalations[0]["id"].as_str().unwrap();
    let ack = format!("/api/v1/escalations/{first}/acknowledge");
    problem(call(&system, Method::POST, &ack, &developer, Some(json!({})), &[]).await, 403, "forbidden")
        .await;
    let acked =
        expect(call(&system, Method::POST, &ack, &commander, Some(json!({"note": "on it"})), &[]).await, 200)
            .await;
    assert_eq!(acked["status"], "acknowledged");
    assert!(acked["acknowledged_by"].as_str().unwrap().contains("ic@example.com"), "{acked}");

    // By the link in the message: the token from the CloudEvent, posted to the gateway without
    // signing in. Opening the page acknowledges nothing.
    let second = escalations[1]["id"].as_str().unwrap().to_owned();
    let message = eventually(WAIT, "the second escalation's message", || async {
        receiver
            .on("/oncall")
            .into_iter()
            .map(|(_, body)| body)
            .find(|body| body["rpescalation"] == second.as_str())
    })
    .await;
    let link = message["rpackurl"].as_str().expect("an acknowledge link");
    let token = link.rsplit('/').next().unwrap();
    let url = system.url(&format!("/api/v1/ack/{token}"));
    let page = system.http.get(&url).send().await.unwrap();
    assert_eq!(page.status(), 200);
    assert!(page.text().await.unwrap().contains("<form method=\"post\">"));
    let still = expect(
        call(&system, Method::GET, &format!("/api/v1/escalations/{second}"), &admin, None, &[]).await,
        200,
    )
    .await;
    assert_eq!(still["status"], "active");
    let done = system.http.post(&url).send().await.unwrap();
    assert_eq!(done.status(), 200);
    let done: Value = done.json().await.unwrap();
    assert_eq!((done["id"].as_str(), done["status"].as_str()), (Some(second.as_str()), Some("acknowledged")));
    let html = system.http.post(&url).header(header::ACCEPT, "text/html").send().await.unwrap();
    assert_eq!(html.status(), 200);
    assert!(html.text().await.unwrap().contains("acknowledged"));

    // A forged token is refused.
    let forged = system.http.post(system.url("/api/v1/ack/forged-token")).send().await.unwrap();
    assert!(forged.status().is_client_error(), "{}", forged.status());
}
