//! The Kafka sink of `cxpulse gen`.

use std::collections::HashMap;

use super::*;

/// The Kafka sink against librdkafka's in-process mock broker: every line
/// arrives once, keyed by user, by channel for `spend`, unkeyed when invalid.
#[test]
fn kafka_sink_delivers_every_line_with_its_key() {
    use rdkafka::consumer::{BaseConsumer, Consumer};
    use rdkafka::mocking::MockCluster;
    use rdkafka::{ClientConfig, Message, Offset, TopicPartitionList};
    use std::time::{Duration, Instant};

    let cluster = MockCluster::new(1).unwrap();
    cluster.create_topic("events", 3, 1).unwrap();
    let brokers = cluster.bootstrap_servers();
    let c = cfg(21, 150);
    let began = Instant::now();
    // 150 lines at 300 a second: the pacing makes this take about 0.5 s.
    let code = produce(
        Generator::with_rate(&c, 300.0),
        &brokers,
        "events",
        Some(Pacer::new(c.start_ms)),
    )
    .unwrap();
    assert!(code == std::process::ExitCode::SUCCESS);
    assert!(
        began.elapsed() >= Duration::from_millis(300),
        "not paced: {:?}",
        began.elapsed()
    );

    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", &brokers)
        .set("group.id", "gen-test")
        .create()
        .unwrap();
    let mut tpl = TopicPartitionList::new();
    for p in 0..3 {
        tpl.add_partition_offset("events", p, Offset::Beginning)
            .unwrap();
    }
    consumer.assign(&tpl).unwrap();
    let want: Vec<GenLine> = Generator::with_rate(&c, 300.0).collect();
    let mut got: HashMap<String, usize> = HashMap::new();
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut n = 0;
    while n < want.len() && Instant::now() < deadline {
        let Some(m) = consumer.poll(Duration::from_millis(200)) else {
            continue;
        };
        let m = m.unwrap();
        let payload = String::from_utf8(m.payload().unwrap().to_vec()).unwrap();
        let key = m.key().map(|k| String::from_utf8(k.to_vec()).unwrap());
        *got.entry(format!("{key:?} {payload}")).or_default() += 1;
        n += 1;
    }
    let mut expected: HashMap<String, usize> = HashMap::new();
    for l in &want {
        *expected
            .entry(format!("{:?} {}", l.key, l.payload))
            .or_default() += 1;
    }
    assert_eq!(n, want.len());
    assert_eq!(got, expected);
}
