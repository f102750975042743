//! Several notifier replicas: each attempt is made by one of them, and a replica killed in the
//! middle of a delivery loses nothing — another sends it again with the same `webhook-id`.

use std::{collections::HashMap, net::SocketAddr, sync::Arc};

use release_pilot::{Role, testing::TestSystem};
use rp_proto::notifier::v1::{self as pb, notifier_service_client::NotifierServiceClient};
use rp_runtime::{CancellationToken, Listeners};
use rp_test_support::{KillableReplica, TestEnv, authed, eventually};
use serde_json::json;
use tonic::transport::Channel;

use crate::{FAST, Receiver, Reply, Tap, WAIT, clear_defaults, deployment, wait_until_consuming};

/// A notifier in a runtime of its own, which `kill` drops where it stands: no lease is given
/// back, no answer recorded.
struct Replica(KillableReplica);

impl Replica {
    fn start(config: Arc<rp_config::Config>, bus: rp_events::SharedBus) -> Self {
        Self(KillableReplica::start(move || async move {
            let any = SocketAddr::from(([127, 0, 0, 1], 0));
            let listeners = Listeners::bind(any, any).await.unwrap();
            let service = rp_notifier::start(config, bus, listeners, CancellationToken::new()).await.unwrap();
            (service.primary_addr, service)
        }))
    }

    fn kill(self) {
        self.0.kill();
    }

    async fn client(&self) -> NotifierServiceClient<Channel> {
        NotifierServiceClient::connect(format!("http://{}", self.0.addr)).await.unwrap()
    }
}

/// Auth and gateway only; the notifiers are replicas of the test's own.
async fn system() -> (TestSystem, String) {
    let env = TestEnv::with_env(FAST);
    let system = TestSystem::start(env.config.clone(), &[Role::Auth, Role::Gateway]).await.unwrap().hold(env);
    let admin = system.admin_token().await;
    (system, admin)
}

/// Two replicas on one system, the seeded rules cleared, the first consuming.
struct TwoReplicas {
    _system: TestSystem,
    admin: String,
    bus: rp_events::SharedBus,
    receiver: Receiver,
    first: Replica,
    second: Replica,
    /// The first replica's.
    client: NotifierServiceClient<Channel>,
}

impl TwoReplicas {
    async fn start() -> Self {
        let (system, admin) = system().await;
        let (config, bus) = (system.app.config.clone(), system.app.bus.clone());
        let receiver = Receiver::start().await;
        let first = Replica::start(config.clone(), bus.clone());
        let second = Replica::start(config, bus.clone());
        let mut client = first.client().await;
        clear_defaults(&mut client, &admin).await;
        wait_until_consuming(&mut client, &admin, &bus, &receiver).await;
        Self { _system: system, admin, bus, receiver, first, second, client }
    }
}

async fn route_to(
    client: &mut NotifierServiceClient<Channel>,
    admin: &str,
    receiver: &Receiver,
    path: &str,
) -> pb::Channel {
    let channel = client
        .create_channel(authed(
            admin,
            pb::CreateChannelRequest {
                name: path.into(),
                kind: "webhook".into(),
                config_json: json!({"url": receiver.url(path)}).to_string(),
                ..Default::default()
            },
        ))
        .await
        .unwrap()
        .into_inner()
        .channel
        .unwrap();
    client
        .create_routing_rule(authed(
            admin,
            pb::RoutingRuleInput {
                name: "deployments at once".into(),
                event_types: vec!["rp.deployment.*".into()],
                channel_ids: vec![channel.id.clone()],
                group_wait_ms: Some(0),
                ..Default::default()
            },
        ))
        .await
        .unwrap();
    channel
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_notifier_killed_mid_delivery_loses_nothing_and_the_duplicate_keeps_its_webhook_id() {
    let (system, admin) = system().await;
    let (config, bus) = (system.app.config.clone(), system.app.bus.clone());
    let tap = Tap::start(&bus).await;
    let receiver = Receiver::start().await;
    let first = Replica::start(config.clone(), bus.clone());
    let mut client = first.client().await;
    clear_defaults(&mut client, &admin).await;
    wait_until_consuming(&mut client, &admin, &bus, &receiver).await;
    let channel = route_to(&mut client, &admin, &receiver, "/kill").await;
    receiver.script([Reply::Hang]);
    let event = rp_events::Event::new(
        "release",
        "rp.deployment.failed",
        "deployments/k1",
        &deployment("k1", "failed", 1),
    );
    bus.publish(&event).await.unwrap();
    let held = receiver.wait_for("/kill", 1).await.remove(0);
    first.kill();

    let second = Replica::start(config, bus.clone());
    let mut client = second.client().await;
    let requests = receiver.wait_for("/kill", 2).await;
    assert_eq!(requests.len(), 2);
    assert_eq!(
        requests[1].header("webhook-id"),
        held.header("webhook-id"),
        "the duplicate keeps its webhook-id"
    );
    assert_eq!(requests[1].json()["id"], event.id.to_string());
    assert_eq!(requests[1].json(), held.json());
    let delivery = eventually(WAIT, "the delivery to complete", || {
        let mut client = client.clone();
        let (admin, channel_id) = (admin.clone(), channel.id.clone());
        async move {
            let listed = client
                .list_deliveries(authed(
                    &admin,
                    pb::ListDeliveriesRequest { channel_id, ..Default::default() },
                ))
                .await
                .unwrap()
                .into_inner();
            let id = listed.deliveries.into_iter().find(|d| d.status == "delivered")?.id;
            Some(
                client
                    .get_delivery(authed(&admin, pb::GetDeliveryRequest { id }))
                    .await
                    .unwrap()
                    .into_inner(),
            )
        }
    })
    .await;
    assert_eq!(delivery.id, held.header("webhook-id"));
    assert_eq!(delivery.attempts, 2);
    let log: Vec<&str> = delivery.attempt_log.iter().map(|a| a.outcome.as_str()).collect();
    assert_eq!(log, ["abandoned", "success"]);
    assert_ne!(delivery.attempt_log[0].replica, delivery.attempt_log[1].replica);
    tap.wait("rp.notification.delivered", |e| e.subject == format!("deliveries/{}", delivery.id)).await;
    let _ = client.list_channels(authed(&admin, pb::ListChannelsRequest {})).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_replicas_send_every_message_once() {
    let TwoReplicas { _system, admin, bus, receiver, first, second, mut client } = TwoReplicas::start().await;
    let mut other = second.client().await;
    wait_until_consuming(&mut other, &admin, &bus, &receiver).await;
    route_to(&mut client, &admin, &receiver, "/both").await;
    let count = 30;
    for n in 0..count {
        let id = format!("both{n}");
        let event = rp_events::Event::new(
            "release",
            "rp.deployment.failed",
            format!("deployments/{id}"),
            &deployment(&id, "failed", 1),
        );
        bus.publish(&event).await.unwrap();
    }
    let requests = receiver.wait_for("/both", count).await;
    let mut per_id: HashMap<String, usize> = HashMap::new();
    for request in &requests {
        *per_id.entry(request.header("webhook-id").to_owned()).or_default() += 1;
    }
    assert_eq!(per_id.len(), count);
    assert!(per_id.values().all(|n| *n == 1), "{per_id:?}");
    let deliveries = eventually(WAIT, "every delivery to be recorded", || {
        let mut client = client.clone();
        let admin = admin.clone();
        async move {
            let listed = client
                .list_deliveries(authed(
                    &admin,
                    pb::ListDeliveriesRequest {
                        event_type: "rp.deployment.*".into(),
                        page_size: 500,
                        ..Default::default()
                    },
                ))
                .await
                .unwrap()
                .into_inner()
                .deliveries;
            (listed.len() == count && listed.iter().all(|d| d.status == "delivered")).then_some(listed)
        }
    })
    .await;
    assert!(deliveries.iter().all(|d| d.attempts == 1), "no attempt was made twice");
    assert_eq!(receiver.on("/both").len(), count);
    drop((first, second));
}

/// Replicas cache routing per configuration version: a change made through one replica routes
/// the very next events on the other, which had cached the configuration from before it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_routing_change_through_one_replica_routes_the_next_events_on_the_other() {
    let TwoReplicas { _system, admin, bus, receiver, first, second, mut client } = TwoReplicas::start().await;
    let old = route_to(&mut client, &admin, &receiver, "/old").await;
    let publish = |id: String| {
        let bus = bus.clone();
        async move {
            let event = rp_events::Event::new(
                "release",
                "rp.deployment.failed",
                format!("deployments/{id}"),
                &deployment(&id, "failed", 1),
            );
            bus.publish(&event).await.unwrap();
        }
    };
    // Bursts until both replicas have sent some, so both cached this configuration. (One event
    // at a time, the in-process bus's round robin would hand every deployment event to one
    // replica and every `rp.notification.delivered` to the other.)
    let mut senders = std::collections::HashSet::new();
    let burst = 10;
    for round in 0..10 {
        for n in 0..burst {
            publish(format!("warm{round}-{n}")).await;
        }
        for sent in receiver.wait_for("/old", (round + 1) * burst).await {
            let id = sent.header("webhook-id").to_owned();
            let delivery = eventually(WAIT, "the attempt to be recorded", || {
                let (mut client, admin, id) = (client.clone(), admin.clone(), id.clone());
                async move {
                    let request = authed(&admin, pb::GetDeliveryRequest { id });
                    let delivery = client.get_delivery(request).await.ok()?.into_inner();
                    (delivery.status == "delivered").then_some(delivery)
                }
            })
            .await;
            senders.insert(delivery.attempt_log[0].replica.clone());
        }
        if senders.len() == 2 {
            break;
        }
    }
    assert_eq!(senders.len(), 2, "both replicas took events");
    let before = receiver.on("/old").len();

    // Through the second replica: the old channel off, a new one on.
    let mut client = second.client().await;
    client
        .update_channel(authed(
            &admin,
            pb::UpdateChannelRequest { id: old.id.clone(), enabled: Some(false), ..Default::default() },
        ))
        .await
        .unwrap();
    route_to(&mut client, &admin, &receiver, "/new").await;
    // A replica routing by what it cached before would send these to /old, never to /new.
    let count = 20;
    for n in 0..count {
        publish(format!("after{n}")).await;
    }
    receiver.wait_for("/new", count).await;
    assert_eq!(receiver.on("/old").len(), before, "nothing went to the disabled channel");
    drop((first, second));
}
