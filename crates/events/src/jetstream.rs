//! NATS JetStream bus: one stream (`RP_EVENTS` on `<prefix>rp.>`), CloudEvents attributes in
//! headers, `Nats-Msg-Id` = event id so the server drops duplicates, durable pull consumers.

use std::time::{Duration, Instant};

use async_nats::{
    HeaderMap,
    jetstream::{
        self, AckKind,
        consumer::{AckPolicy, DeliverPolicy, pull},
        stream,
    },
};
use async_trait::async_trait;
use bytes::Bytes;
use chrono::{DateTime, SecondsFormat, Utc};
use futures::StreamExt as _;
use tokio::sync::OnceCell;

use crate::{Acker, BusError, ConsumerSpec, Delivery, Event, EventBus, StartFrom, Subscription, headers};

/// How long a publish waits for the server's acknowledgement.
const PUBLISH_TIMEOUT: Duration = Duration::from_secs(5);

pub struct JetStreamBus {
    client: async_nats::Client,
    context: jetstream::Context,
    stream_config: stream::Config,
    subject_prefix: String,
    stream_ready: OnceCell<()>,
}

impl JetStreamBus {
    /// Connects and makes sure the stream exists. When NATS is unreachable at start-up the client
    /// keeps reconnecting in the background and the stream is created on first use, so services
    /// start (and their outboxes fill) while NATS is down.
    pub async fn connect(config: &rp_config::NatsConfig) -> Result<Self, BusError> {
        let url = config.url.as_ref().map(|u| u.expose().to_owned()).unwrap_or_default();
        let client = async_nats::ConnectOptions::new()
            .name("release-pilot")
            .connection_timeout(Duration::from_secs(config.connect_timeout_secs))
            .retry_on_initial_connect()
            .event_callback(|event| async move {
                match event {
                    async_nats::Event::Connected => tracing::info!("nats connected"),
                    async_nats::Event::Disconnected => tracing::warn!("nats disconnected"),
                    other => tracing::debug!(event = %other, "nats event"),
                }
            })
            .connect(url.as_str())
            .await
            .map_err(|e| BusError::Connect(e.to_string()))?;
        let mut context = jetstream::new(client.clone());
        context.set_timeout(PUBLISH_TIMEOUT);
        let stream_config = stream::Config {
            name: config.stream.clone(),
            subjects: vec![format!("{}rp.>", config.subject_prefix)],
            duplicate_window: Duration::from_secs(config.duplicate_window_secs),
            max_age: Duration::from_secs(config.max_age_hours * 3600),
            storage: stream::StorageType::File,
            ..Default::default()
        };
        let bus = Self {
            client,
            context,
            stream_config,
            subject_prefix: config.subject_prefix.clone(),
            stream_ready: OnceCell::new(),
        };
        match tokio::time::timeout(Duration::from_secs(config.connect_timeout_secs), bus.ensure_stream())
            .await
        {
            Ok(Ok(())) => {}
            Ok(Err(err)) => {
                tracing::warn!(error = %err, "jetstream stream not ready yet; will retry on use")
            }
            Err(_) => {
                tracing::warn!("nats not reachable yet; events wait in the outbox until it is")
            }
        }
        Ok(bus)
    }

    async fn ensure_stream(&self) -> Result<(), BusError> {
        self.stream_ready
            .get_or_try_init(|| async {
                self.context
                    .get_or_create_stream(self.stream_config.clone())
                    .await
                    .map(|_| ())
                    .map_err(|e| BusError::Unavailable(format!("stream {}: {e}", self.stream_config.name)))
            })
            .await
            .map(|_| ())
    }

    /// Hands `event` to the connection; the returned future resolves when the stream stored it.
    async fn send(&self, event: &Event) -> Result<jetstream::context::PublishAckFuture, BusError> {
        self.ensure_stream().await?;
        let payload = Bytes::from(serde_json::to_vec(&event.data).map_err(|e| publish_failed(event, e))?);
        self.context
            .send_publish(
                self.nats_subject(&event.event_type),
                jetstream::message::PublishMessage::build()
                    .payload(payload)
                    .headers(Self::encode_headers(event)),
            )
            .await
            .map_err(|e| publish_failed(event, e))
    }

    fn nats_subject(&self, event_type: &str) -> String {
        format!("{}{}", self.subject_prefix, event_type)
    }

    fn encode_headers(event: &Event) -> HeaderMap {
        let mut map = HeaderMap::new();
        let id = event.id.to_string();
        map.insert(headers::MSG_ID, id.as_str());
        map.insert(headers::SPEC_VERSION, "1.0");
        map.insert(headers::ID, id.as_str());
        map.insert(headers::SOURCE, event.source.as_str());
        map.insert(headers::TYPE, event.event_type.as_str());
        map.insert(headers::SUBJECT, event.subject.as_str());
        map.insert(headers::TIME, event.time.to_rfc3339_opts(SecondsFormat::Micros, true).as_str());
        map.insert(headers::CONTENT_TYPE, "application/json");
        if let Some(traceparent) = &event.traceparent {
            map.insert(headers::TRACEPARENT, traceparent.as_str());
        }
        map
    }

    fn decode(message: &async_nats::Message, prefix: &str) -> Result<Event, BusError> {
        let subject = message.subject.to_string();
        let malformed =
            |reason: &str| BusError::Malformed { subject: subject.clone(), reason: reason.to_owned() };
        let map = message.headers.as_ref().ok_or_else(|| malformed("no headers"))?;
        let header = |name: &str| map.get(name).map(|v| v.as_str().to_owned());
        let id = header(headers::ID).ok_or_else(|| malformed("no ce-id"))?;
        let time = header(headers::TIME).ok_or_else(|| malformed("no ce-time"))?;
        Ok(Event {
            id: id.parse().map_err(|_| malformed("ce-id is not a uuid"))?,
            source: header(headers::SOURCE).unwrap_or_default(),
            event_type: header(headers::TYPE)
                .unwrap_or_else(|| subject.strip_prefix(prefix).unwrap_or(&subject).to_owned()),
            subject: header(headers::SUBJECT).unwrap_or_default(),
            time: DateTime::parse_from_rfc3339(&time)
                .map_err(|_| malformed("ce-time is not RFC 3339"))?
                .with_timezone(&Utc),
            traceparent: header(headers::TRACEPARENT),
            data: serde_json::from_slice(&message.payload).map_err(|e| malformed(&e.to_string()))?,
        })
    }
}

#[async_trait]
impl EventBus for JetStreamBus {
    async fn publish(&self, event: &Event) -> Result<(), BusError> {
        self.send(event).await?.await.map_err(|e| publish_failed(event, e))?;
        Ok(())
    }

    /// Sends every event before waiting for the first acknowledgement: one connection keeps them
    /// in order, and the batch costs about one round trip. Should one fail, the ones after it may
    /// be stored too; the relay publishes them again with the same ids, which the stream drops
    /// as duplicates.
    async fn publish_in_order(&self, events: &[Event]) -> (usize, Option<BusError>) {
        let mut acks = Vec::with_capacity(events.len());
        let mut send_error = None;
        for event in events {
            match self.send(event).await {
                Ok(ack) => acks.push(ack),
                Err(err) => {
                    send_error = Some(err);
                    break;
                }
            }
        }
        let mut confirmed = 0;
        for (event, ack) in events.iter().zip(acks) {
            if let Err(err) = ack.await {
                return (confirmed, Some(publish_failed(event, err)));
            }
            confirmed += 1;
        }
        (confirmed, send_error)
    }

    async fn subscribe(&self, spec: &ConsumerSpec) -> Result<Subscription, BusError> {
        let failed = |reason: String| BusError::Subscribe { consumer: spec.name.clone(), reason };
        self.ensure_stream().await?;
        let stream =
            self.context.get_stream(&self.stream_config.name).await.map_err(|e| failed(e.to_string()))?;
        let consumer_name = format!("{}{}", self.subject_prefix.replace('.', "_"), spec.name);
        let consumer: jetstream::consumer::Consumer<pull::Config> = stream
            .get_or_create_consumer(
                &consumer_name,
                pull::Config {
                    durable_name: Some(consumer_name.clone()),
                    filter_subject: self.nats_subject(&spec.filter),
                    deliver_policy: match spec.start_from {
                        StartFrom::Beginning => DeliverPolicy::All,
                        StartFrom::New => DeliverPolicy::New,
                    },
                    ack_policy: AckPolicy::Explicit,
                    ack_wait: spec.ack_wait,
                    max_ack_pending: 10_000,
                    inactive_threshold: spec.inactive_after.unwrap_or_default(),
                    ..Default::default()
                },
            )
            .await
            .map_err(|e| failed(e.to_string()))?;
        let messages = consumer.messages().await.map_err(|e| failed(e.to_string()))?;
        let prefix = self.subject_prefix.clone();
        let consumer_for_errors = spec.name.clone();
        Ok(Box::pin(messages.map(move |item| {
            let message = item.map_err(|e| BusError::Subscribe {
                consumer: consumer_for_errors.clone(),
                reason: e.to_string(),
            })?;
            let attempt = message.info().map(|info| info.delivered as u64).unwrap_or(1);
            match Self::decode(&message, &prefix) {
                Ok(event) => Ok(Delivery::new(event, attempt, Box::new(NatsAcker { message }))),
                Err(err) => {
                    // A message nobody can read would be redelivered forever: terminate it.
                    tokio::spawn(async move {
                        let _ = message.ack_with(AckKind::Term).await;
                    });
                    Err(err)
                }
            }
        })))
    }

    async fn ping(&self) -> Result<Duration, BusError> {
        let started = Instant::now();
        tokio::time::timeout(Duration::from_secs(2), self.client.flush())
            .await
            .map_err(|_| BusError::Unavailable("nats did not answer within 2s".into()))?
            .map_err(|e| BusError::Unavailable(e.to_string()))?;
        if self.client.connection_state() != async_nats::connection::State::Connected {
            return Err(BusError::Unavailable("nats is disconnected".into()));
        }
        Ok(started.elapsed())
    }

    fn kind(&self) -> &'static str {
        "jetstream"
    }

    async fn publish_ephemeral(&self, topic: &str, payload: Bytes) -> Result<(), BusError> {
        self.client
            .publish(self.ephemeral_subject(topic), payload)
            .await
            .map_err(|e| BusError::Unavailable(format!("telemetry publish: {e}")))
    }

    async fn subscribe_ephemeral(&self, topic: &str) -> Result<crate::EphemeralSubscription, BusError> {
        let subscriber = self
            .client
            .subscribe(self.ephemeral_subject(topic))
            .await
            .map_err(|e| BusError::Subscribe { consumer: topic.to_owned(), reason: e.to_string() })?;
        let prefix = self.ephemeral_subject("");
        Ok(Box::pin(subscriber.map(move |message| {
            let topic =
                message.subject.as_str().strip_prefix(&prefix).unwrap_or(message.subject.as_str()).to_owned();
            (topic, message.payload)
        })))
    }
}

fn publish_failed(event: &Event, reason: impl std::fmt::Display) -> BusError {
    BusError::Publish { event_type: event.event_type.clone(), reason: reason.to_string() }
}

impl JetStreamBus {
    /// Telemetry subjects live outside the stream's `rp.>`: `<prefix>rpx.<topic>`.
    fn ephemeral_subject(&self, topic: &str) -> String {
        format!("{}rpx.{topic}", self.subject_prefix)
    }
}

struct NatsAcker {
    message: jetstream::Message,
}

#[async_trait]
impl Acker for NatsAcker {
    async fn ack(&self) -> Result<(), BusError> {
        // Double ack: the server confirms it recorded the ack, so a crash right after cannot cause
        // a redelivery of work we already committed.
        self.message.double_ack().await.map_err(|e| BusError::Unavailable(format!("ack: {e}")))
    }

    async fn nak(&self, delay: Duration) -> Result<(), BusError> {
        self.message
            .ack_with(AckKind::Nak(Some(delay)))
            .await
            .map_err(|e| BusError::Unavailable(format!("nak: {e}")))
    }
}
