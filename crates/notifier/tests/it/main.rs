//! The notifier end to end: auth, gateway and notifier in one process (or notifier replicas of
//! their own), local receivers speaking webhook, Slack and PagerDuty, an SMTP sink, events
//! published on the bus, on the backend chosen by `RELEASE_PILOT_TEST_BACKEND`.

mod api;
mod delivery;
mod escalation;
mod grouping;
mod kinds;
mod python;
mod replicas;
mod ssrf;
mod webhook;

use std::{
    collections::{HashMap, VecDeque},
    net::SocketAddr,
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use axum::{
    Router,
    body::Bytes,
    extract::State,
    http::{HeaderMap, StatusCode, Uri},
    response::{IntoResponse, Response},
};
use futures::StreamExt as _;
use release_pilot::{Role, testing::TestSystem};
use rp_events::{ConsumerSpec, Event, SharedBus};
use rp_proto::notifier::v1::{self as pb, notifier_service_client::NotifierServiceClient};
use rp_test_support::{TestEnv, authed, eventually};
use serde_json::json;
use tonic::transport::Channel;

pub const WAIT: Duration = Duration::from_secs(30);

/// Fast retries, short leases, loopback receivers allowed.
pub const FAST: &[(&str, &str)] = &[
    ("RP_NOTIFIER__ALLOWED_PRIVATE_NETWORKS", "127.0.0.0/8"),
    ("RP_NOTIFIER__RETRY_SCHEDULE", "100ms,200ms,400ms"),
    ("RP_NOTIFIER__RETRY_JITTER", "0"),
    ("RP_NOTIFIER__REQUEST_TIMEOUT_MS", "2000"),
    ("RP_NOTIFIER__DELIVERY_LEASE_MS", "3000"),
    ("RP_NOTIFIER__DISPATCH_INTERVAL_MS", "50"),
];

/// One request a receiver got.
#[derive(Debug, Clone)]
pub struct Received {
    pub path: String,
    pub headers: HashMap<String, String>,
    pub body: Vec<u8>,
    pub at: Instant,
}

impl Received {
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).expect("a JSON body")
    }

    pub fn header(&self, name: &str) -> &str {
        self.headers.get(name).map(String::as_str).unwrap_or_default()
    }
}

/// What a receiver answers.
#[derive(Debug, Clone)]
pub enum Reply {
    Status(u16),
    With(u16, Vec<(&'static str, String)>, String),
    /// Never answers (the sender is killed meanwhile).
    Hang,
}

#[derive(Default)]
struct ReceiverState {
    requests: Mutex<Vec<Received>>,
    script: Mutex<VecDeque<Reply>>,
    default: Mutex<Option<Reply>>,
}

/// A local HTTP receiver: records every request, answers from a script (then its default, 200).
#[derive(Clone)]
pub struct Receiver {
    pub addr: SocketAddr,
    state: Arc<ReceiverState>,
}

async fn receive(
    State(state): State<Arc<ReceiverState>>,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let received = Received {
        path: uri.path().to_owned(),
        headers: headers
            .iter()
            .map(|(k, v)| (k.as_str().to_owned(), v.to_str().unwrap_or_default().to_owned()))
            .collect(),
        body: body.to_vec(),
        at: Instant::now(),
    };
    state.requests.lock().unwrap().push(received);
    let scripted = state.script.lock().unwrap().pop_front();
    let reply = scripted.or_else(|| state.default.lock().unwrap().clone()).unwrap_or(Reply::Status(200));
    match reply {
        Reply::Status(code) => (StatusCode::from_u16(code).unwrap(), "ok").into_response(),
        Reply::With(code, headers, body) => {
            let mut response = (StatusCode::from_u16(code).unwrap(), body).into_response();
            for (name, value) in headers {
                response.headers_mut().insert(name, value.parse().unwrap());
            }
            response
        }
        Reply::Hang => futures::future::pending().await,
    }
}

impl Receiver {
    pub async fn start() -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let state = Arc::new(ReceiverState::default());
        let app = Router::new().fallback(receive).with_state(state.clone());
        tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Self { addr, state }
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    pub fn script(&self, replies: impl IntoIterator<Item = Reply>) {
        self.state.script.lock().unwrap().extend(replies);
    }

    pub fn answer_by_default(&self, reply: Reply) {
        *self.state.default.lock().unwrap() = Some(reply);
    }

    /// Requests to `path` so far.
    pub fn on(&self, path: &str) -> Vec<Received> {
        self.state.requests.lock().unwrap().iter().filter(|r| r.path == path).cloned().collect()
    }

    /// Waits for at least `n` requests to `path`.
    pub async fn wait_for(&self, path: &str, n: usize) -> Vec<Received> {
        eventually(WAIT, &format!("{n} request(s) to {path}"), || async {
            let got = self.on(path);
            (got.len() >= n).then_some(got)
        })
        .await
    }
}

/// Collects the notifier's own events (`rp.notification.>`, `rp.escalation.>`) from the bus.
#[derive(Clone)]
pub struct Tap {
    events: Arc<Mutex<Vec<Event>>>,
}

impl Tap {
    pub async fn start(bus: &SharedBus) -> Self {
        let events = Arc::new(Mutex::new(Vec::new()));
        for filter in ["rp.notification.>", "rp.escalation.>"] {
            let name = format!("tap-{}", uuid::Uuid::new_v4().simple());
            let mut subscription = bus.subscribe(&ConsumerSpec::new(name, filter)).await.unwrap();
            let collected = events.clone();
            tokio::spawn(async move {
                while let Some(Ok(delivery)) = subscription.next().await {
                    collected.lock().unwrap().push(delivery.event.clone());
                    let _ = delivery.ack().await;
                }
            });
        }
        Self { events }
    }

    pub async fn wait(&self, what: &str, matches: impl Fn(&Event) -> bool) -> Event {
        eventually(WAIT, what, || async { self.events.lock().unwrap().iter().find(|e| matches(e)).cloned() })
            .await
    }
}

/// The system with a notifier, an admin token and a client.
pub struct Harness {
    pub system: TestSystem,
    pub admin: String,
    pub client: NotifierServiceClient<Channel>,
    pub bus: SharedBus,
    pub tap: Tap,
    pub receiver: Receiver,
}

pub async fn harness() -> Harness {
    harness_with(&[]).await
}

/// A harness with FAST settings plus `extra`; the default rules and policy are removed so
/// each test routes exactly what it sets up.
pub async fn harness_with(extra: &[(&str, &str)]) -> Harness {
    start_harness(extra, true, true).await
}

/// A harness that keeps the seeded rules and escalation policy.
pub async fn harness_seeded() -> Harness {
    start_harness(&[], false, true).await
}

/// A harness for API calls only (its notifier need not reach the test receivers).
pub async fn harness_api_only(extra: &[(&str, &str)]) -> Harness {
    start_harness(extra, true, false).await
}

async fn start_harness(extra: &[(&str, &str)], clear: bool, probe: bool) -> Harness {
    let mut vars: Vec<(&str, &str)> = FAST.to_vec();
    vars.extend_from_slice(extra);
    let env = TestEnv::with_env(&vars);
    let system = TestSystem::start(env.config.clone(), &[Role::Auth, Role::Notifier, Role::Gateway])
        .await
        .unwrap()
        .hold(env);
    let admin = system.admin_token().await;
    let client = NotifierServiceClient::connect(system.grpc_endpoint("notifier")).await.unwrap();
    let bus = system.app.bus.clone();
    let tap = Tap::start(&bus).await;
    let receiver = Receiver::start().await;
    let harness = Harness { system, admin, client, bus, tap, receiver };
    if clear {
        harness.clear_defaults().await;
    }
    if probe {
        harness.wait_until_consuming().await;
    }
    harness
}

/// A deployment event payload.
pub fn deployment(id: &str, state: &str, step: i32) -> rp_proto::events::v1::DeploymentChanged {
    rp_proto::events::v1::DeploymentChanged {
        deployment_id: id.into(),
        app: "shop".into(),
        environment: "staging".into(),
        version: "2.0.0".into(),
        previous_version: "1.0.0".into(),
        strategy: "canary".into(),
        state: state.into(),
        step,
        steps: 4,
        weight: 25,
        revision: i64::from(step) + 1,
        ..Default::default()
    }
}

/// An incident event payload.
pub fn incident(id: &str, severity: &str) -> rp_proto::events::v1::IncidentChanged {
    rp_proto::events::v1::IncidentChanged {
        incident_id: id.into(),
        deployment_id: format!("dep-{id}"),
        app: "shop".into(),
        environment: "production".into(),
        version: "2.0.0".into(),
        severity: severity.into(),
        summary: format!("error rate above 2% on shop 2.0.0 ({id})"),
        status: "open".into(),
        production: true,
        ..Default::default()
    }
}

impl Harness {
    pub fn admin<T>(&self, body: T) -> tonic::Request<T> {
        authed(&self.admin, body)
    }

    pub fn client(&self) -> NotifierServiceClient<Channel> {
        self.client.clone()
    }

    /// Removes the seeded rules and escalation policy.
    pub async fn clear_defaults(&self) {
        clear_defaults(&mut self.client(), &self.admin).await;
    }

    /// Publishes probes until the notifier's consumer has seen one.
    pub async fn wait_until_consuming(&self) {
        wait_until_consuming(&mut self.client(), &self.admin, &self.bus, &self.receiver).await;
    }

    pub async fn publish(&self, event_type: &str, subject: &str, data: &impl serde::Serialize) -> Event {
        let event = Event::new("release", event_type, subject, data);
        self.bus.publish(&event).await.unwrap();
        event
    }

    /// A webhook channel to `path` on the harness receiver; returns it and its secret.
    pub async fn webhook(&self, name: &str, path: &str) -> (pb::Channel, String) {
        let created = self
            .client()
            .create_channel(self.admin(pb::CreateChannelRequest {
                name: name.into(),
                kind: "webhook".into(),
                config_json: json!({"url": self.receiver.url(path)}).to_string(),
                ..Default::default()
            }))
            .await
            .unwrap()
            .into_inner();
        (created.channel.unwrap(), created.signing_secret)
    }

    pub async fn channel(
        &self,
        name: &str,
        kind: &str,
        config: serde_json::Value,
        secrets: &[(&str, String)],
    ) -> pb::Channel {
        self.client()
            .create_channel(self.admin(pb::CreateChannelRequest {
                name: name.into(),
                kind: kind.into(),
                config_json: config.to_string(),
                secrets: secrets.iter().map(|(k, v)| ((*k).to_owned(), v.clone())).collect(),
                ..Default::default()
            }))
            .await
            .unwrap()
            .into_inner()
            .channel
            .unwrap()
    }

    /// A rule sending `event_types` to `channel` after `group_wait_ms`.
    pub async fn route(
        &self,
        channel: &pb::Channel,
        event_types: &[&str],
        group_wait_ms: i64,
    ) -> pb::RoutingRule {
        self.rule(pb::RoutingRuleInput {
            name: format!("{} → {}", event_types.join(", "), channel.name),
            event_types: event_types.iter().map(|t| (*t).to_owned()).collect(),
            channel_ids: vec![channel.id.clone()],
            group_wait_ms: Some(group_wait_ms),
            ..Default::default()
        })
        .await
    }

    pub async fn rule(&self, input: pb::RoutingRuleInput) -> pb::RoutingRule {
        self.client().create_routing_rule(self.admin(input)).await.unwrap().into_inner()
    }

    pub async fn deliveries(&self, channel: &pb::Channel) -> Vec<pb::Delivery> {
        self.client()
            .list_deliveries(self.admin(pb::ListDeliveriesRequest {
                channel_id: channel.id.clone(),
                page_size: 500,
                ..Default::default()
            }))
            .await
            .unwrap()
            .into_inner()
            .deliveries
    }

    pub async fn delivery(&self, id: &str) -> pb::Delivery {
        self.client()
            .get_delivery(self.admin(pb::GetDeliveryRequest { id: id.into() }))
            .await
            .unwrap()
            .into_inner()
    }

    /// Waits until the delivery of `event` on `channel` has `status`.
    pub async fn wait_delivery(&self, channel: &pb::Channel, event: &Event, status: &str) -> pb::Delivery {
        eventually(WAIT, &format!("the delivery of {} to be {status}", event.event_type), || async {
            let id = self
                .deliveries(channel)
                .await
                .into_iter()
                .find(|d| d.event_ids.contains(&event.id.to_string()))?
                .id;
            let delivery = self.delivery(&id).await;
            (delivery.status == status).then_some(delivery)
        })
        .await
    }

    pub async fn get_channel(&self, id: &str) -> pb::Channel {
        self.client()
            .get_channel(self.admin(pb::GetChannelRequest { id: id.into() }))
            .await
            .unwrap()
            .into_inner()
    }
}

pub async fn clear_defaults(client: &mut NotifierServiceClient<Channel>, token: &str) {
    let rules =
        client.list_routing_rules(authed(token, pb::ListRoutingRulesRequest {})).await.unwrap().into_inner();
    for rule in rules.rules {
        client
            .delete_routing_rule(authed(token, pb::DeleteRoutingRuleRequest { id: rule.id }))
            .await
            .unwrap();
    }
    let policies = client
        .list_escalation_policies(authed(token, pb::ListEscalationPoliciesRequest {}))
        .await
        .unwrap()
        .into_inner();
    for policy in policies.policies {
        client
            .delete_escalation_policy(authed(token, pb::DeleteEscalationPolicyRequest { id: policy.id }))
            .await
            .unwrap();
    }
}

/// The consumer starts with new events only: publish probes (routed to a probe channel) until
/// one is delivered, then remove the probe's rule and channel.
pub async fn wait_until_consuming(
    client: &mut NotifierServiceClient<Channel>,
    token: &str,
    bus: &SharedBus,
    receiver: &Receiver,
) {
    let probe = client
        .create_channel(authed(
            token,
            pb::CreateChannelRequest {
                name: format!("probe {}", uuid::Uuid::new_v4().simple()),
                kind: "webhook".into(),
                config_json: json!({"url": receiver.url("/probe")}).to_string(),
                ..Default::default()
            },
        ))
        .await
        .unwrap()
        .into_inner()
        .channel
        .unwrap();
    let rule = client
        .create_routing_rule(authed(
            token,
            pb::RoutingRuleInput {
                name: "probe".into(),
                event_types: vec!["rp.probe.ping".into()],
                channel_ids: vec![probe.id.clone()],
                group_wait_ms: Some(0),
                ..Default::default()
            },
        ))
        .await
        .unwrap()
        .into_inner();
    eventually(WAIT, "the notifier to consume events", || async {
        bus.publish(&Event::new(
            "test",
            "rp.probe.ping",
            "probes/1",
            &json!({"n": uuid::Uuid::new_v4().to_string()}),
        ))
        .await
        .unwrap();
        let listed = client
            .clone()
            .list_deliveries(authed(
                token,
                pb::ListDeliveriesRequest { channel_id: probe.id.clone(), ..Default::default() },
            ))
            .await
            .unwrap()
            .into_inner();
        (!listed.deliveries.is_empty()).then_some(())
    })
    .await;
    client.delete_routing_rule(authed(token, pb::DeleteRoutingRuleRequest { id: rule.id })).await.unwrap();
    client.delete_channel(authed(token, pb::DeleteChannelRequest { id: probe.id })).await.unwrap();
}

/// A protobuf timestamp in milliseconds since the epoch.
pub fn millis(ts: &Option<rp_proto::Timestamp>) -> i64 {
    ts.as_ref().map_or(0, |t| t.seconds * 1000 + i64::from(t.nanos) / 1_000_000)
}
