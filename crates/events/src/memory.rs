//! The in-process bus of embedded mode. It mirrors the JetStream semantics the services rely on:
//! de-duplication by event id, durable consumer groups that share work and keep events while no
//! member is listening, redelivery on nak, and redelivery of deliveries dropped without an ack.
//! It lives as long as the process; durability across restarts comes from the outbox, which only
//! marks an event sent once the bus has taken it.

use std::{
    collections::{HashMap, HashSet, VecDeque},
    pin::Pin,
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, Ordering},
    },
    task::{Context, Poll},
    time::{Duration, Instant},
};

use async_trait::async_trait;
use futures::Stream;
use tokio::sync::mpsc;
use uuid::Uuid;

use crate::{
    Acker, BusError, ConsumerSpec, Delivery, Event, EventBus, StartFrom, Subscription, subject_matches,
};

/// Events kept for consumers that start from the beginning.
const RETAINED_EVENTS: usize = 10_000;
/// Event ids remembered for de-duplication.
const DEDUP_IDS: usize = 100_000;

#[derive(Clone)]
struct Queued {
    event: Event,
    attempt: u64,
}

#[derive(Default)]
struct Group {
    filter: String,
    members: Vec<mpsc::UnboundedSender<Queued>>,
    next: usize,
    /// Events waiting for a member.
    backlog: VecDeque<Queued>,
}

impl Group {
    fn matches(&self, event_type: &str) -> bool {
        subject_matches(&self.filter, event_type)
    }

    /// Hands `item` to the next live member, or keeps it until one subscribes.
    fn dispatch(&mut self, mut item: Queued) {
        while !self.members.is_empty() {
            let index = self.next % self.members.len();
            match self.members[index].send(item) {
                Ok(()) => {
                    self.next = index + 1;
                    return;
                }
                Err(mpsc::error::SendError(returned)) => {
                    item = returned;
                    self.members.remove(index);
                }
            }
        }
        self.backlog.push_back(item);
    }
}

/// Capacity of the telemetry channel; a subscriber this far behind skips ahead.
const EPHEMERAL_CAPACITY: usize = 4096;

#[derive(Default)]
struct State {
    retained: VecDeque<Event>,
    seen_ids: HashSet<Uuid>,
    seen_order: VecDeque<Uuid>,
    groups: HashMap<String, Group>,
}

/// In-process event bus; clone-free sharing through `Arc<InProcessBus>`.
pub struct InProcessBus {
    state: Arc<Mutex<State>>,
    ephemeral: tokio::sync::broadcast::Sender<(String, bytes::Bytes)>,
}

impl Default for InProcessBus {
    fn default() -> Self {
        Self { state: Arc::default(), ephemeral: tokio::sync::broadcast::channel(EPHEMERAL_CAPACITY).0 }
    }
}

impl InProcessBus {
    pub fn new() -> Self {
        Self::default()
    }
}

fn redeliver(state: &Arc<Mutex<State>>, group: &str, item: Queued) {
    let mut state = state.lock().expect("bus state lock");
    if let Some(group) = state.groups.get_mut(group) {
        group.dispatch(item);
    }
}

#[async_trait]
impl EventBus for InProcessBus {
    async fn publish(&self, event: &Event) -> Result<(), BusError> {
        let mut state = self.state.lock().expect("bus state lock");
        if !state.seen_ids.insert(event.id) {
            return Ok(());
        }
        state.seen_order.push_back(event.id);
        if state.seen_order.len() > DEDUP_IDS
            && let Some(old) = state.seen_order.pop_front()
        {
            state.seen_ids.remove(&old);
        }
        state.retained.push_back(event.clone());
        if state.retained.len() > RETAINED_EVENTS {
            state.retained.pop_front();
        }
        for group in state.groups.values_mut() {
            if group.matches(&event.event_type) {
                group.dispatch(Queued { event: event.clone(), attempt: 1 });
            }
        }
        Ok(())
    }

    async fn subscribe(&self, spec: &ConsumerSpec) -> Result<Subscription, BusError> {
        let (sender, receiver) = mpsc::unbounded_channel();
        {
            let mut state = self.state.lock().expect("bus state lock");
            let is_new = !state.groups.contains_key(&spec.name);
            let replay: Vec<Event> = if is_new && spec.start_from == StartFrom::Beginning {
                state.retained.iter().cloned().collect()
            } else {
                Vec::new()
            };
            let group = state.groups.entry(spec.name.clone()).or_default();
            group.filter = spec.filter.clone();
            for event in replay {
                if group.matches(&event.event_type) {
                    group.backlog.push_back(Queued { event, attempt: 1 });
                }
            }
            for item in std::mem::take(&mut group.backlog) {
                // The receiver is alive, so this cannot fail.
                let _ = sender.send(item);
            }
            group.members.push(sender);
        }
        Ok(Box::pin(MemberStream {
            receiver,
            group: spec.name.clone(),
            state: self.state.clone(),
            ack_wait: spec.ack_wait,
        }))
    }

    async fn ping(&self) -> Result<Duration, BusError> {
        let started = Instant::now();
        drop(self.state.lock().expect("bus state lock"));
        Ok(started.elapsed())
    }

    fn kind(&self) -> &'static str {
        "in-process"
    }

    async fn publish_ephemeral(&self, topic: &str, payload: bytes::Bytes) -> Result<(), BusError> {
        // No subscriber is not an error: telemetry nobody listens to is dropped.
        let _ = self.ephemeral.send((topic.to_owned(), payload));
        Ok(())
    }

    async fn subscribe_ephemeral(&self, topic: &str) -> Result<crate::EphemeralSubscription, BusError> {
        let filter = topic.to_owned();
        let receiver = tokio_stream::wrappers::BroadcastStream::new(self.ephemeral.subscribe());
        Ok(Box::pin(futures::StreamExt::filter_map(receiver, move |item| {
            let keep = match item {
                Ok((topic, payload)) if subject_matches(&filter, &topic) => Some((topic, payload)),
                _ => None,
            };
            async move { keep }
        })))
    }
}

/// A member's stream; events still queued when it is dropped go back to the group.
struct MemberStream {
    receiver: mpsc::UnboundedReceiver<Queued>,
    group: String,
    state: Arc<Mutex<State>>,
    ack_wait: Duration,
}

impl Stream for MemberStream {
    type Item = Result<Delivery, BusError>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        match self.receiver.poll_recv(cx) {
            Poll::Ready(Some(item)) => {
                let acker = MemoryAcker {
                    item: item.clone(),
                    group: self.group.clone(),
                    state: self.state.clone(),
                    settled: Arc::new(AtomicBool::new(false)),
                };
                acker.redeliver_after_ack_wait(self.ack_wait);
                Poll::Ready(Some(Ok(Delivery::new(item.event, item.attempt, Box::new(acker)))))
            }
            Poll::Ready(None) => Poll::Ready(None),
            Poll::Pending => Poll::Pending,
        }
    }
}

impl Drop for MemberStream {
    fn drop(&mut self) {
        self.receiver.close();
        while let Ok(item) = self.receiver.try_recv() {
            redeliver(&self.state, &self.group, item);
        }
    }
}

struct MemoryAcker {
    item: Queued,
    group: String,
    state: Arc<Mutex<State>>,
    settled: Arc<AtomicBool>,
}

impl MemoryAcker {
    /// Like JetStream's AckWait: a delivery neither acked nor nakked in time is delivered again.
    fn redeliver_after_ack_wait(&self, ack_wait: Duration) {
        let (settled, state, group) = (self.settled.clone(), self.state.clone(), self.group.clone());
        let item = Queued { event: self.item.event.clone(), attempt: self.item.attempt + 1 };
        if let Ok(handle) = tokio::runtime::Handle::try_current() {
            handle.spawn(async move {
                tokio::time::sleep(ack_wait).await;
                if !settled.swap(true, Ordering::SeqCst) {
                    redeliver(&state, &group, item);
                }
            });
        }
    }
}

#[async_trait]
impl Acker for MemoryAcker {
    async fn ack(&self) -> Result<(), BusError> {
        self.settled.store(true, Ordering::SeqCst);
        Ok(())
    }

    async fn nak(&self, delay: Duration) -> Result<(), BusError> {
        if self.settled.swap(true, Ordering::SeqCst) {
            return Ok(());
        }
        let (state, group) = (self.state.clone(), self.group.clone());
        let item = Queued { event: self.item.event.clone(), attempt: self.item.attempt + 1 };
        tokio::spawn(async move {
            tokio::time::sleep(delay).await;
            redeliver(&state, &group, item);
        });
        Ok(())
    }
}

impl Drop for MemoryAcker {
    fn drop(&mut self) {
        // Dropped unsettled (the handler panicked or was cancelled): deliver again now.
        if !self.settled.swap(true, Ordering::SeqCst) {
            let item = Queued { event: self.item.event.clone(), attempt: self.item.attempt + 1 };
            redeliver(&self.state, &self.group, item);
        }
    }
}
