//! The Kafka state store (`checkpoint.store = "kafka"`) against a real tansu
//! broker over TCP: round trip, chunking, crash mid-write, zombie fencing,
//! garbage records.

mod common;

use std::time::Duration;

use common::Tansu;
use cxpulse::config::Config;
use cxpulse::kafka::StateStore;

const T: Duration = Duration::from_secs(20);

fn config(broker: &Tansu, extra: &str) -> Config {
    let text = format!(
        "[kafka]\nbrokers = \"{}\"\ngroup_id = \"g1\"\n[checkpoint]\nstore = \"kafka\"\n{extra}",
        broker.addr
    );
    Config::from_toml_str(&text, "test.toml", Vec::new()).expect("valid config")
}

fn store(broker: &Tansu, extra: &str) -> StateStore {
    let s = StateStore::new(&config(broker, extra)).expect("state store");
    s.ensure_topic(T).expect("ensure_topic");
    s
}

/// Bytes that differ at every position (a chunk swapped or shifted shows).
fn sample(n: usize, salt: u8) -> Vec<u8> {
    (0..n)
        .map(|i| (i as u8).wrapping_mul(31).wrapping_add(salt))
        .collect()
}

#[test]
fn round_trip_through_a_compacted_topic() {
    let broker = Tansu::start();
    let s = store(&broker, "");
    assert_eq!(s.topic(), "g1-cxpulse-state");

    // Nothing stored yet: epoch 1, no snapshot.
    let claim = s.load("orders", 2, T).expect("load");
    assert_eq!(claim.epoch, 1);
    assert!(claim.loaded.is_none());
    assert!(claim.refused.is_empty(), "{:?}", claim.refused);

    let bytes = sample(10_000, 7);
    let stats = s.save("orders", 2, 1, 1234, &bytes, T).expect("save");
    assert_eq!(stats.chunks, 1);
    assert!(stats.bytes > 10_000, "{stats:?}");

    // Another process (a new owner) reads it back and claims epoch 2.
    let other = store(&broker, "");
    let claim = other.load("orders", 2, T).expect("load");
    let got = claim.loaded.expect("snapshot loaded");
    assert_eq!(got.bytes, bytes);
    assert_eq!((got.next_offset, got.epoch, got.seq), (1234, 1, 1));
    assert_eq!(claim.epoch, 2);
    assert!(claim.refused.is_empty(), "{:?}", claim.refused);
    assert!(
        claim.records_read >= 3,
        "claim, chunk, manifest: {}",
        claim.records_read
    );

    // Other input partitions share nothing.
    let claim = other.load("orders", 3, T).expect("load");
    assert!(claim.loaded.is_none());
    assert_eq!(claim.epoch, 1);
}
