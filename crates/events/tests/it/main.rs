//! Integration tests of the bus, the outbox relay and the inbox, on the backend chosen by
//! `RELEASE_PILOT_TEST_BACKEND` (SQLite + in-process, or PostgreSQL + JetStream).

use std::{
    collections::HashSet,
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    time::Duration,
};

use async_trait::async_trait;
use futures::StreamExt as _;
use rp_db::Database;
use rp_events::{
    BusError, ConsumerSpec, Event, EventBus, SharedBus, Subscription, inbox,
    outbox::{self, Outbox},
};
use rp_test_support::{Backend, NatsServer, TestEnv, eventually};
use sea_orm::{ConnectionTrait, TransactionTrait};
use sea_orm_migration::{MigrationTrait, MigratorTrait, prelude::*};
use tokio_util::sync::CancellationToken;

const WAIT: Duration = Duration::from_secs(15);

struct TestMigrator;

#[async_trait]
impl MigratorTrait for TestMigrator {
    fn migrations() -> Vec<Box<dyn MigrationTrait>> {
        vec![Box::new(outbox::migration::Migration), Box::new(CreateWidgets)]
    }
}

#[derive(DeriveMigrationName)]
struct CreateWidgets;

#[async_trait]
impl MigrationTrait for CreateWidgets {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .get_connection()
            .execute_unprepared("CREATE TABLE widgets (id VARCHAR(64) PRIMARY KEY)")
            .await?;
        Ok(())
    }

    async fn down(&self, _: &SchemaManager) -> Result<(), DbErr> {
        Ok(())
    }
}

struct Harness {
    env: TestEnv,
    db: Database,
    outbox: Outbox,
    bus: SharedBus,
    shutdown: CancellationToken,
}

impl Drop for Harness {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

async fn harness_with(env: TestEnv, bus: SharedBus) -> Harness {
    let db = rp_db::connect(&env.config, "evtest").await.expect("database");
    db.migrate::<TestMigrator>().await.expect("migrations");
    let outbox = Outbox::new(db.clone());
    let shutdown = CancellationToken::new();
    outbox.spawn_relay(bus.clone(), env.config.outbox.clone(), shutdown.clone());
    Harness { env, db, outbox, bus, shutdown }
}

async fn harness() -> Harness {
    let env = TestEnv::new();
    let bus = rp_events::connect(&env.config.nats).await.expect("bus");
    harness_with(env, bus).await
}

fn widget_event(id: &str) -> Event {
    Event::new("evtest", "rp.widget.created", format!("widgets/{id}"), &serde_json::json!({ "widget": id }))
}

/// Inserts a widget and its event in one transaction, then commits or rolls back.
async fn write_widget(h: &Harness, id: &str, commit: bool) -> Event {
    let event = widget_event(id);
    let txn = h.db.begin_write().await.unwrap();
    txn.execute_unprepared(&format!("INSERT INTO widgets (id) VALUES ('{id}')")).await.unwrap();
    outbox::enqueue(&txn, &event).await.unwrap();
    if commit {
        txn.commit().await.unwrap();
        h.outbox.wake();
    } else {
        txn.rollback().await.unwrap();
    }
    event
}

/// Collects events until one with subject `widgets/<marker>` arrives.
async fn collect_until(subscription: &mut Subscription, marker: &str) -> Vec<Event> {
    let marker_subject = format!("widgets/{marker}");
    let mut seen = Vec::new();
    tokio::time::timeout(WAIT, async {
        while let Some(delivery) = subscription.next().await {
            let delivery = delivery.expect("delivery");
            let event = delivery.event.clone();
            delivery.ack().await.expect("ack");
            let done = event.subject == marker_subject;
            seen.push(event);
            if done {
                break;
            }
        }
    })
    .await
    .unwrap_or_else(|_| panic!("marker {marker} not received; got {seen:?}"));
    seen
}

#[tokio::test]
async fn committed_event_is_published_exactly_once_and_rolled_back_never() {
    let h = harness().await;
    let mut subscription = h.bus.subscribe(&ConsumerSpec::new("it-once", "rp.widget.>")).await.unwrap();

    let committed = write_widget(&h, "a", true).await;
    let rolled_back = write_widget(&h, "b", false).await;
    let marker = write_widget(&h, "marker", true).await;

    let seen = collect_until(&mut subscription, "marker").await;
    let ids: Vec<_> = seen.iter().map(|e| e.id).collect();
    assert_eq!(ids, vec![committed.id, marker.id], "exactly the committed events, in order, once each");
    assert!(!ids.contains(&rolled_back.id));
    assert_eq!(seen[0].data, committed.data);

    let row_count =
        h.db.conn
            .query_one_raw(sea_orm::Statement::from_string(
                h.db.conn.get_database_backend(),
                "SELECT COUNT(*) AS n FROM widgets",
            ))
            .await
            .unwrap()
            .unwrap();
    assert_eq!(row_count.try_get::<i64>("", "n").unwrap(), 2, "the rolled-back widget is gone too");
    eventually(WAIT, "outbox drained", || async { (h.outbox.pending().await.unwrap() == 0).then_some(()) })
        .await;
}

#[tokio::test]
async fn a_transaction_of_many_events_arrives_in_commit_order_once_each() {
    let h = harness().await;
    let mut subscription = h.bus.subscribe(&ConsumerSpec::new("it-batch", "rp.widget.>")).await.unwrap();
    // More than one relay batch, all committed together: the relay keeps several publishes in
    // flight and must still deliver them in order.
    let batch = h.env.config.outbox.batch_size as usize * 2 + 3;
    let events: Vec<Event> = (0..batch).map(|n| widget_event(&format!("w{n}"))).collect();
    let txn = h.db.begin_write().await.unwrap();
    for event in &events {
        outbox::enqueue(&txn, event).await.unwrap();
    }
    txn.commit().await.unwrap();
    h.outbox.wake();
    let marker = write_widget(&h, "marker", true).await;
    let seen = collect_until(&mut subscription, "marker").await;
    let expected: Vec<_> = events.iter().map(|e| e.id).chain([marker.id]).collect();
    assert_eq!(seen.iter().map(|e| e.id).collect::<Vec<_>>(), expected);
}

#[tokio::test]
async fn published_events_keep_their_cloudevents_attributes() {
    let h = harness().await;
    let mut subscription =
        h.bus.subscribe(&ConsumerSpec::new("it-attrs", "rp.widget.created")).await.unwrap();
    let mut event = widget_event("attrs");
    event.traceparent = Some("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01".into());
    h.bus.publish(&event).await.unwrap();
    let delivery = tokio::time::timeout(WAIT, subscription.next()).await.unwrap().unwrap().unwrap();
    let received = delivery.event.clone();
    delivery.ack().await.unwrap();
    assert_eq!(received.id, event.id);
    assert_eq!(received.source, "/release-pilot/evtest");
    assert_eq!(received.event_type, "rp.widget.created");
    assert_eq!(received.subject, "widgets/attrs");
    assert_eq!(received.traceparent, event.traceparent);
    assert_eq!(received.time.timestamp_micros(), event.time.timestamp_micros());
    assert_eq!(received.data, event.data);
}

#[tokio::test]
async fn the_same_event_id_published_twice_is_delivered_once() {
    let h = harness().await;
    let mut subscription = h.bus.subscribe(&ConsumerSpec::new("it-dedup", "rp.widget.>")).await.unwrap();
    let event = widget_event("dup");
    h.bus.publish(&event).await.unwrap();
    h.bus.publish(&event).await.unwrap();
    h.bus.publish(&widget_event("marker")).await.unwrap();
    let seen = collect_until(&mut subscription, "marker").await;
    assert_eq!(seen.len(), 2, "{seen:?}");
    assert_eq!(seen[0].id, event.id);
}

#[tokio::test]
async fn a_nak_redelivers_and_members_of_a_group_share_the_work() {
    let h = harness().await;
    let spec = ConsumerSpec::new("it-group", "rp.widget.>");
    let mut first = h.bus.subscribe(&spec).await.unwrap();
    let mut second = h.bus.subscribe(&spec).await.unwrap();
    for i in 0..20 {
        h.bus.publish(&widget_event(&format!("w{i}"))).await.unwrap();
    }
    let mut received = HashSet::new();
    let mut naked_once = false;
    let mut redelivered = None;
    tokio::time::timeout(WAIT, async {
        while received.len() < 20 {
            let delivery = tokio::select! {
                Some(d) = first.next() => d.unwrap(),
                Some(d) = second.next() => d.unwrap(),
            };
            if !naked_once {
                naked_once = true;
                redelivered = Some(delivery.event.id);
                delivery.nak(Duration::from_millis(50)).await.unwrap();
                continue;
            }
            if Some(delivery.event.id) == redelivered {
                assert!(delivery.attempt >= 2, "redelivery counts attempts");
            }
            received.insert(delivery.event.id);
            delivery.ack().await.unwrap();
        }
    })
    .await
    .expect("all 20 events, including the nakked one, arrive");
    assert!(received.contains(&redelivered.unwrap()));
}

#[tokio::test]
async fn inbox_claims_each_event_once_per_consumer() {
    let h = harness().await;
    let id = uuid::Uuid::now_v7();
    let txn = h.db.begin_write().await.unwrap();
    assert!(inbox::claim(&txn, "notifier", id).await.unwrap());
    assert!(!inbox::claim(&txn, "notifier", id).await.unwrap(), "second claim in the same transaction");
    // The transaction is still usable after the duplicate (no aborted transaction on PostgreSQL).
    assert!(inbox::claim(&txn, "audit", id).await.unwrap());
    txn.commit().await.unwrap();
    let txn = h.db.conn.begin().await.unwrap();
    assert!(!inbox::claim(&txn, "notifier", id).await.unwrap(), "claim survives commit");
    txn.rollback().await.unwrap();
}

/// In embedded mode the outage is simulated by a bus that refuses publishes while "down"; in
/// distributed mode a private nats-server is really stopped and started again.
struct SwitchableBus {
    inner: SharedBus,
    down: AtomicBool,
}

#[async_trait]
impl EventBus for SwitchableBus {
    async fn publish(&self, event: &Event) -> Result<(), BusError> {
        if self.down.load(Ordering::SeqCst) {
            return Err(BusError::Unavailable("switched off".into()));
        }
        self.inner.publish(event).await
    }
    async fn subscribe(&self, spec: &ConsumerSpec) -> Result<Subscription, BusError> {
        self.inner.subscribe(spec).await
    }
    async fn ping(&self) -> Result<Duration, BusError> {
        self.inner.ping().await
    }
    fn kind(&self) -> &'static str {
        "switchable"
    }
    async fn publish_ephemeral(&self, topic: &str, payload: bytes::Bytes) -> Result<(), BusError> {
        self.inner.publish_ephemeral(topic, payload).await
    }
    async fn subscribe_ephemeral(&self, topic: &str) -> Result<rp_events::EphemeralSubscription, BusError> {
        self.inner.subscribe_ephemeral(topic).await
    }
}

#[tokio::test]
async fn with_the_bus_down_writes_succeed_and_events_arrive_once_after_it_returns() {
    let mut env = TestEnv::with_env(&[("RP_OUTBOX__RETRY_BACKOFF_MS", "100")]);
    let mut nats = None;
    let switch = match env.backend {
        Backend::Embedded => {
            let switch = Arc::new(SwitchableBus {
                inner: Arc::new(rp_events::InProcessBus::new()),
                down: AtomicBool::new(false),
            });
            Some(switch)
        }
        Backend::Distributed => {
            let server = NatsServer::start(&env.dir().join("nats")).await;
            env.config.nats.url = Some(rp_config::UrlWithCredentials::new(server.url()));
            nats = Some(server);
            None
        }
    };
    let bus: SharedBus = match &switch {
        Some(switch) => switch.clone(),
        None => rp_events::connect(&env.config.nats).await.unwrap(),
    };
    let h = harness_with(env, bus).await;
    let mut subscription = h.bus.subscribe(&ConsumerSpec::new("it-outage", "rp.widget.>")).await.unwrap();

    // Take the bus down.
    match (&switch, nats.as_mut()) {
        (Some(switch), _) => switch.down.store(true, Ordering::SeqCst),
        (None, Some(server)) => server.stop(),
        _ => unreachable!(),
    }
    let mut written = Vec::new();
    for i in 0..5 {
        written.push(write_widget(&h, &format!("o{i}"), true).await.id);
    }
    assert_eq!(h.outbox.pending().await.unwrap(), 5, "all five wait in the outbox");

    // Bring it back.
    match (&switch, nats.as_mut()) {
        (Some(switch), _) => switch.down.store(false, Ordering::SeqCst),
        (None, Some(server)) => server.restart().await,
        _ => unreachable!(),
    }
    let marker = write_widget(&h, "marker", true).await;
    let seen = collect_until(&mut subscription, "marker").await;
    let ids: Vec<_> = seen.iter().map(|e| e.id).collect();
    written.push(marker.id);
    assert_eq!(ids, written, "each event once, in commit order");
    eventually(WAIT, "outbox drained", || async { (h.outbox.pending().await.unwrap() == 0).then_some(()) })
        .await;
}

#[tokio::test]
async fn telemetry_messages_reach_every_subscriber_and_skip_the_event_stream() {
    let h = harness().await;
    let mut first = h.bus.subscribe_ephemeral("traffic.>").await.unwrap();
    let mut second = h.bus.subscribe_ephemeral("traffic.shop.*").await.unwrap();
    let mut events = h.bus.subscribe(&ConsumerSpec::new("it-not-telemetry", "rp.>")).await.unwrap();
    // Subscriptions on NATS are asynchronous: publish until the first message is seen.
    let got = tokio::time::timeout(WAIT, async {
        loop {
            h.bus.publish_ephemeral("traffic.shop.prod", bytes::Bytes::from_static(b"sample")).await.unwrap();
            if let Ok(Some(message)) = tokio::time::timeout(Duration::from_millis(100), first.next()).await {
                break message;
            }
        }
    })
    .await
    .expect("a telemetry message");
    assert_eq!(got, ("traffic.shop.prod".to_owned(), bytes::Bytes::from_static(b"sample")));
    let (topic, payload) = tokio::time::timeout(WAIT, second.next()).await.unwrap().unwrap();
    assert_eq!((topic.as_str(), &payload[..]), ("traffic.shop.prod", &b"sample"[..]));
    h.bus.publish_ephemeral("traffic.other.prod", bytes::Bytes::from_static(b"x")).await.unwrap();
    h.bus.publish(&widget_event("marker")).await.unwrap();
    let delivery = tokio::time::timeout(WAIT, events.next()).await.unwrap().unwrap().unwrap();
    assert_eq!(delivery.event.subject, "widgets/marker", "telemetry never enters the event stream");
}
