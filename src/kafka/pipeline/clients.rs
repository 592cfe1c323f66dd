//! Building the loop's two librdkafka clients: the input consumer (with the
//! rebalance callbacks of [`ConsumerCtx`]) and the producer of dead-letter,
//! output and alert records.

use std::sync::{Arc, Mutex};

use anyhow::Context as _;
use rdkafka::consumer::{Consumer, StreamConsumer};
use rdkafka::producer::FutureProducer;

use super::handover::{Handover, SharedEngine};
use crate::config::KafkaSection;
use crate::kafka::client::{self, Role};
use crate::kafka::context::{ConsumerCtx, ProducerCtx};
use crate::kafka::live::LiveState;
use crate::kafka::offsets::OffsetBook;
use crate::telemetry;

/// The consumer, subscribed to `kafka.input_topics`, and the producer.
pub struct Clients {
    pub consumer: StreamConsumer<ConsumerCtx>,
    pub producer: FutureProducer<ProducerCtx>,
}

/// Builds both clients and subscribes the consumer. Errors only on bad
/// settings (a broker that is down is waited for, not an error).
pub fn build(
    k: &KafkaSection,
    live: &Arc<LiveState>,
    book: &Arc<Mutex<OffsetBook>>,
    engine: &SharedEngine,
    handover: Option<Arc<Handover>>,
) -> anyhow::Result<Clients> {
    let consumer_settings = client::settings(k, Role::Consumer)?;
    let producer_settings = client::settings(k, Role::Producer)?;
    telemetry::ClientSettings {
        client: "consumer",
        redacted: &client::redacted(&consumer_settings),
        topics: Some(&k.input_topics.join(",")),
    }
    .emit();
    telemetry::ClientSettings {
        client: "producer",
        redacted: &client::redacted(&producer_settings),
        topics: None,
    }
    .emit();
    let consumer: StreamConsumer<ConsumerCtx> = client::create(
        &consumer_settings,
        ConsumerCtx {
            live: live.clone(),
            book: book.clone(),
            brokers: k.brokers.clone(),
            engine: engine.clone(),
            handover,
        },
    )
    .context("cannot create the Kafka consumer")?;
    let producer: FutureProducer<ProducerCtx> = client::create(
        &producer_settings,
        ProducerCtx {
            brokers: k.brokers.clone(),
        },
    )
    .context("cannot create the Kafka producer")?;
    let topics: Vec<&str> = k.input_topics.iter().map(String::as_str).collect();
    consumer
        .subscribe(&topics)
        .context("cannot subscribe to kafka.input_topics")?;
    Ok(Clients { consumer, producer })
}
