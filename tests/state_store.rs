//! The Kafka state store (`checkpoint.store = "kafka"`) against a real tansu
//! broker over TCP: round trip, chunking, a crash mid-write, zombie fencing,
//! garbage records, and the pipeline's security settings (TLS, SASL).

mod common;

use std::collections::BTreeMap;
use std::time::Duration;

use common::secure::{Pki, SecureBroker, Security};
use common::{Tansu, block_on};
use cxpulse::config::Config;
use cxpulse::kafka::StateStore;
use cxpulse::kafka::state_store::records::{self, Key, KeyKind, Manifest, Slot};
use rdkafka::ClientConfig;
use rdkafka::admin::{AdminClient, AdminOptions, ResourceSpecifier};
use rdkafka::client::DefaultClientContext;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::Message;
use rdkafka::producer::{BaseProducer, BaseRecord, Producer};
use rdkafka::{Offset, TopicPartitionList};

const T: Duration = Duration::from_secs(20);
const STATE: &str = "g1-cxpulse-state";

fn config_text(brokers: &str, extra: &str, pass: &[(&str, String)]) -> String {
    let mut text = format!(
        "[kafka]\nbrokers = \"{brokers}\"\ngroup_id = \"g1\"\n[checkpoint]\nstore = \"kafka\"\n{extra}\n[kafka.librdkafka]\n"
    );
    for (k, v) in pass {
        text.push_str(&format!("\"{k}\" = \"{v}\"\n"));
    }
    text
}

fn store(broker: &Tansu, extra: &str) -> StateStore {
    let text = config_text(&broker.addr, extra, &[]);
    let cfg = Config::from_toml_str(&text, "test.toml", Vec::new()).expect("valid config");
    let s = StateStore::new(&cfg).expect("state store");
    s.ensure_topic(T).expect("ensure_topic");
    s
}

/// Bytes that differ at every position (a chunk swapped or shifted shows).
fn sample(n: usize, salt: u8) -> Vec<u8> {
    (0..n)
        .map(|i| (i as u8).wrapping_mul(31).wrapping_add(salt) ^ ((i >> 8) as u8))
        .collect()
}

/// The state partition of input (`topic`, `partition`) in a 6-partition
/// state topic (the default `checkpoint.topic_partitions`).
fn sp(topic: &str, partition: i32) -> i32 {
    records::state_partition(topic, partition, 6)
}

/// A raw record: key, value (None = no key / a tombstone).
type Raw<'a> = (Option<&'a [u8]>, Option<&'a [u8]>);

/// Writes raw (key, value) records to `topic`'s partition `partition`;
/// `None` value = tombstone.
fn put_raw(broker: &Tansu, topic: &str, partition: i32, recs: &[Raw<'_>]) {
    let p: BaseProducer = broker
        .client_config()
        .set("acks", "all")
        .create()
        .expect("raw producer");
    for (k, v) in recs {
        let mut r = BaseRecord::<[u8], [u8]>::to(topic).partition(partition);
        if let Some(k) = k {
            r = r.key(*k);
        }
        if let Some(v) = v {
            r = r.payload(*v);
        }
        p.send(r).map_err(|(e, _)| e).expect("raw send");
    }
    p.flush(T).expect("raw flush");
}

/// Every record of `topic`'s partition `partition`, in order: (key, value).
/// Read to the partition-EOF event (tansu's high watermark falls short of
/// the end when the last batch holds several records).
fn read_raw(broker: &Tansu, topic: &str, partition: i32) -> Vec<(String, Option<Vec<u8>>)> {
    let c: BaseConsumer = broker
        .client_config()
        .set("group.id", "raw-reader")
        .set("enable.auto.commit", "false")
        .set("enable.partition.eof", "true")
        .create()
        .expect("raw consumer");
    let mut tpl = TopicPartitionList::new();
    tpl.add_partition_offset(topic, partition, Offset::Beginning)
        .expect("tpl");
    c.assign(&tpl).expect("assign");
    let mut out = Vec::new();
    let deadline = std::time::Instant::now() + T;
    loop {
        assert!(std::time::Instant::now() < deadline, "read_raw timed out");
        match c.poll(Duration::from_millis(200)) {
            Some(Ok(m)) => {
                assert_eq!(m.offset(), out.len() as i64, "no gap");
                let k = String::from_utf8_lossy(m.key().unwrap_or_default()).into_owned();
                out.push((k, m.payload().map(<[u8]>::to_vec)));
            }
            Some(Err(rdkafka::error::KafkaError::PartitionEOF(_))) => return out,
            Some(Err(e)) => panic!("read_raw: {e}"),
            None => {}
        }
    }
}

/// The latest record of every key of input (`topic`, `partition`): what a
/// compacted topic keeps.
fn latest(broker: &Tansu, topic: &str, partition: i32) -> BTreeMap<String, Option<Vec<u8>>> {
    let prefix = format!("{topic}/{partition}/");
    read_raw(broker, STATE, sp(topic, partition))
        .into_iter()
        .filter(|(k, _)| k.starts_with(&prefix))
        .collect()
}

fn live_keys(m: &BTreeMap<String, Option<Vec<u8>>>) -> Vec<&str> {
    m.iter()
        .filter(|(_, v)| v.is_some())
        .map(|(k, _)| k.as_str())
        .collect()
}

#[test]
fn round_trip_through_a_compacted_topic() {
    let broker = Tansu::start();
    let s = store(&broker, "");
    assert_eq!(s.topic(), STATE);

    // Created compacted, with the default 6 partitions.
    let admin: AdminClient<DefaultClientContext> = broker.client_config().create().expect("admin");
    let described =
        block_on(admin.describe_configs([&ResourceSpecifier::Topic(STATE)], &AdminOptions::new()))
            .expect("describe_configs");
    let config = |name: &str| {
        described[0]
            .as_ref()
            .ok()
            .and_then(|r| r.get(name))
            .and_then(|e| e.value.clone())
    };
    assert_eq!(config("cleanup.policy").as_deref(), Some("compact"));
    assert_eq!(config("segment.bytes").as_deref(), Some("67108864"));
    let md = admin
        .inner()
        .fetch_metadata(Some(STATE), T)
        .expect("metadata");
    assert_eq!(md.topics()[0].partitions().len(), 6);
    // A second ensure_topic (another instance) finds it and is fine.
    store(&broker, "");

    // Nothing stored yet: epoch 1, no snapshot.
    let claim = s.load("orders", 2, T).expect("load");
    assert_eq!(claim.epoch, 1);
    assert!(claim.loaded.is_none());
    assert!(claim.refused.is_empty(), "{:?}", claim.refused);

    let bytes = sample(10_000, 7);
    let stats = s.save("orders", 2, 1, 1234, &bytes, T).expect("save");
    assert_eq!(stats.chunks, 1);
    // One chunk (26-byte header + data) and a 70-byte manifest (6-byte
    // header, 44 bytes of fields, 12 per chunk, 8 of checksum): see
    // docs/state-store.md.
    assert_eq!(stats.bytes, 26 + 10_000 + 70);

    // Another process (a new owner) reads it back and claims epoch 2.
    let other = store(&broker, "");
    let claim = other.load("orders", 2, T).expect("load");
    assert_eq!(claim.epoch, 2);
    assert!(claim.refused.is_empty(), "{:?}", claim.refused);
    // claim of epoch 1, chunk, manifest (the state partition holds only
    // this input partition's records so far).
    assert_eq!(claim.records_read, 3);
    let got = claim.loaded.expect("snapshot loaded");
    assert_eq!(got.bytes, bytes);
    assert_eq!((got.next_offset, got.epoch, got.seq), (1234, 1, 1));

    // Keys as documented.
    assert_eq!(
        live_keys(&latest(&broker, "orders", 2)),
        [
            "orders/2/1/A/0",
            "orders/2/1/A/manifest",
            "orders/2/1/claim",
            "orders/2/2/claim"
        ]
    );

    // Other input partitions share nothing.
    let claim = other.load("orders", 3, T).expect("load");
    assert!(claim.loaded.is_none());
    assert_eq!(claim.epoch, 1);
    // Nor does another input topic with the same partition number.
    let claim = other.load("payments", 2, T).expect("load");
    assert!(claim.loaded.is_none());
    assert_eq!(claim.epoch, 1);

    // A save needs the claim of this store, and its epoch.
    let e = other.save("orders", 7, 1, 0, b"x", T).unwrap_err();
    assert!(e.to_string().contains("no claim"), "{e}");
    let e = other.save("orders", 2, 1, 0, b"x", T).unwrap_err();
    assert!(e.to_string().contains("not the claimed epoch 2"), "{e}");
}

#[test]
fn large_snapshots_are_chunked_and_slots_alternate() {
    let broker = Tansu::start();
    let s = store(&broker, "chunk_bytes = 1024");
    let claim = s.load("orders", 0, T).expect("load");
    assert_eq!(claim.epoch, 1);

    let first = sample(5000, 1); // 5 chunks: 4 x 1024 + 904
    let st = s.save("orders", 0, 1, 100, &first, T).expect("save 1");
    assert_eq!(st.chunks, 5);
    let second = sample(2500, 2); // 3 chunks
    let st = s.save("orders", 0, 1, 200, &second, T).expect("save 2");
    assert_eq!(st.chunks, 3);
    let m = latest(&broker, "orders", 0);
    assert_eq!(
        live_keys(&m),
        [
            "orders/0/1/A/0",
            "orders/0/1/A/1",
            "orders/0/1/A/2",
            "orders/0/1/A/3",
            "orders/0/1/A/4",
            "orders/0/1/A/manifest",
            "orders/0/1/B/0",
            "orders/0/1/B/1",
            "orders/0/1/B/2",
            "orders/0/1/B/manifest",
            "orders/0/1/claim",
        ]
    );
    let loaded = store(&broker, "").load("orders", 0, T).expect("load");
    let got = loaded.loaded.expect("loaded");
    assert_eq!((got.bytes.len(), got.next_offset, got.seq), (2500, 200, 2));
    assert_eq!(got.bytes, second);

    // Third save: back into slot A, now 2 chunks: A/2..A/4 get tombstones.
    let third = sample(1500, 3);
    s.save("orders", 0, 1, 300, &third, T).expect("save 3");
    let m = latest(&broker, "orders", 0);
    for k in ["orders/0/1/A/2", "orders/0/1/A/3", "orders/0/1/A/4"] {
        assert_eq!(m[k], None, "{k} tombstoned");
    }
    // (This store's epoch-1 claim was superseded by the load above, which
    // claimed epoch 2; its keys are tombstoned by epoch 2's first save.)
    let claim = store(&broker, "").load("orders", 0, T).expect("load");
    let got = claim.loaded.expect("loaded");
    assert_eq!(
        (got.bytes, got.next_offset, got.epoch, got.seq),
        (third, 300, 1, 3)
    );
    assert_eq!(claim.epoch, 3);
}

/// A snapshot the size of one partition's in the measurements of
/// docs/state-store.md (1M generated events over 6 partitions: 2.2 MB),
/// in default-size chunks; the times are printed for the doc.
#[test]
fn a_partition_snapshot_of_measured_size_round_trips() {
    let broker = Tansu::start();
    let s = store(&broker, "");
    s.load("orders", 0, T).expect("load");
    let bytes = sample(2_218_591, 42);
    let st = s.save("orders", 0, 1, 777, &bytes, T).expect("save");
    assert_eq!(st.chunks, 5, "4 x 524288 + 121439");
    let other = store(&broker, "");
    let t0 = std::time::Instant::now();
    let claim = other.load("orders", 0, T).expect("load");
    let cold = t0.elapsed().as_secs_f64();
    // Again, with the store's producer connected (as in a running process).
    let t0 = std::time::Instant::now();
    let again = other.load("orders", 0, T).expect("load");
    let warm = t0.elapsed().as_secs_f64();
    eprintln!(
        "2218591-byte snapshot: save {:.3}s ({} bytes, at most {} in flight), load {cold:.3}s with a new store, {warm:.3}s with a connected one ({} bytes read)",
        st.seconds, st.bytes, st.in_flight_peak, claim.bytes_read
    );
    assert_eq!(again.epoch, claim.epoch + 1);
    assert_eq!(again.loaded.as_ref().map(|l| l.seq), Some(1));
    let got = claim.loaded.expect("loaded");
    assert_eq!((got.bytes == bytes, got.next_offset), (true, 777));
}

#[test]
fn a_crash_mid_write_loads_the_previous_complete_snapshot() {
    let broker = Tansu::start();
    let s = store(&broker, "chunk_bytes = 1024");
    s.load("orders", 1, T).expect("load");
    let good = sample(3000, 9);
    s.save("orders", 1, 1, 500, &good, T).expect("save");
    let part = sp("orders", 1);

    // 1. Chunks of seq 2 in slot B, no manifest (the process died between).
    let newer = sample(3000, 10);
    let chunks: Vec<(String, Vec<u8>)> = newer
        .chunks(1024)
        .enumerate()
        .map(|(i, c)| {
            let k = Key::new("orders", 1, 1, KeyKind::Chunk(Slot::B, i as u32));
            (k.to_string(), records::chunk_value(1, 2, i as u32, c))
        })
        .collect();
    let raw: Vec<Raw<'_>> = chunks
        .iter()
        .map(|(k, v)| (Some(k.as_bytes()), Some(v.as_slice())))
        .collect();
    put_raw(&broker, STATE, part, &raw);
    let claim = store(&broker, "").load("orders", 1, T).expect("load");
    let got = claim.loaded.expect("previous snapshot");
    assert_eq!(
        (got.bytes, got.seq, got.next_offset),
        (good.clone(), 1, 500)
    );
    assert_eq!(
        claim.refused,
        [
            "snapshot epoch 1 slot B seq 2: chunks without a manifest (a write that did not complete)"
        ]
    );

    // 2. Its manifest arrives, but chunk 1 is corrupt.
    let mkey = Key::new("orders", 1, 1, KeyKind::Manifest(Slot::B)).to_string();
    let manifest = Manifest::of(1, 2, 900, &newer, 1024).encode();
    let bad_chunk = records::chunk_value(1, 2, 1, &sample(1024, 77));
    let ckey = Key::new("orders", 1, 1, KeyKind::Chunk(Slot::B, 1)).to_string();
    put_raw(
        &broker,
        STATE,
        part,
        &[
            (Some(ckey.as_bytes()), Some(&bad_chunk)),
            (Some(mkey.as_bytes()), Some(&manifest)),
        ],
    );
    let claim = store(&broker, "").load("orders", 1, T).expect("load");
    assert_eq!(claim.loaded.expect("previous").bytes, good);
    assert_eq!(
        claim.refused,
        ["snapshot epoch 1 slot B seq 2: chunk 1 checksum mismatch"]
    );

    // 3. Chunk 2 missing (tombstone).
    let ckey2 = Key::new("orders", 1, 1, KeyKind::Chunk(Slot::B, 2)).to_string();
    let fixed = records::chunk_value(1, 2, 1, &newer[1024..2048]);
    put_raw(
        &broker,
        STATE,
        part,
        &[
            (Some(ckey.as_bytes()), Some(&fixed)),
            (Some(ckey2.as_bytes()), None),
        ],
    );
    let claim = store(&broker, "").load("orders", 1, T).expect("load");
    assert_eq!(claim.loaded.expect("previous").bytes, good);
    assert_eq!(
        claim.refused,
        ["snapshot epoch 1 slot B seq 2: chunk 2 is missing"]
    );

    // Control: with chunk 2 back, the newer snapshot is complete and wins.
    let c2 = records::chunk_value(1, 2, 2, &newer[2048..]);
    put_raw(&broker, STATE, part, &[(Some(ckey2.as_bytes()), Some(&c2))]);
    let claim = store(&broker, "").load("orders", 1, T).expect("load");
    let got = claim.loaded.expect("newer");
    assert_eq!((got.bytes, got.seq, got.next_offset), (newer, 2, 900));
    assert!(claim.refused.is_empty(), "{:?}", claim.refused);
}

#[test]
fn a_save_cut_off_by_an_unanswering_broker_leaves_the_previous_snapshot() {
    let broker = Tansu::start();
    let s = store(&broker, "chunk_bytes = 1024");
    s.load("orders", 4, T).expect("load");
    let good = sample(4000, 4);
    s.save("orders", 4, 1, 40, &good, T).expect("save");

    broker.pause();
    let t0 = std::time::Instant::now();
    let e = s
        .save("orders", 4, 1, 80, &sample(4000, 5), Duration::from_secs(2))
        .unwrap_err();
    let waited = t0.elapsed();
    broker.resume();
    assert!(e.to_string().contains("before the timeout"), "{e}");
    assert!(
        waited < Duration::from_secs(4),
        "bounded by the timeout: {waited:?}"
    );
    // Whatever of it lands meanwhile, the previous snapshot is loaded.
    std::thread::sleep(Duration::from_secs(2));
    let claim = store(&broker, "").load("orders", 4, T).expect("load");
    let got = claim.loaded.expect("previous");
    assert_eq!((got.bytes, got.next_offset, got.seq), (good, 40, 1));

    // The same owner's next save (a new seq, into the same free slot)
    // completes and wins... over its cut-off write, not over the newer claim:
    // epoch 2 now belongs to the loader above.
    let third = sample(2000, 6);
    s.save("orders", 4, 1, 120, &third, T)
        .expect("save after resume");
    let got = store(&broker, "")
        .load("orders", 4, T)
        .expect("load")
        .loaded
        .expect("loaded");
    assert_eq!((got.bytes, got.next_offset, got.seq), (third, 120, 3));
}

#[test]
fn a_zombie_with_an_older_epoch_never_wins() {
    let broker = Tansu::start();
    let old = store(&broker, "chunk_bytes = 1024");
    assert_eq!(old.load("orders", 5, T).expect("load").epoch, 1);
    let s1 = sample(3000, 21);
    old.save("orders", 5, 1, 10, &s1, T).expect("save");

    // The partition moves: the new owner loads s1 and claims epoch 2.
    let new = store(&broker, "chunk_bytes = 1024");
    let claim = new.load("orders", 5, T).expect("load");
    assert_eq!(claim.epoch, 2);
    assert_eq!(claim.loaded.expect("s1").bytes, s1);
    let s2 = sample(2000, 22);
    new.save("orders", 5, 2, 20, &s2, T).expect("save");
    // Epoch 2 is complete: epoch 1's keys are tombstoned.
    let m = latest(&broker, "orders", 5);
    assert_eq!(
        live_keys(&m),
        [
            "orders/5/2/A/0",
            "orders/5/2/A/1",
            "orders/5/2/A/manifest",
            "orders/5/2/claim"
        ]
    );
    assert_eq!(m["orders/5/1/A/manifest"], None);

    // The old owner still runs (it missed the revocation) and keeps saving
    // newer data under its epoch, more often than the new owner.
    for i in 0..3 {
        old.save("orders", 5, 1, 1000 + i, &sample(3000, 30 + i as u8), T)
            .expect("zombie save is accepted by the broker");
    }
    // ...it cannot touch the new owner's keys, and a reader prefers epoch 2.
    let claim = store(&broker, "").load("orders", 5, T).expect("load");
    let got = claim.loaded.expect("s2");
    assert_eq!(
        (got.bytes, got.epoch, got.seq, got.next_offset),
        (s2, 2, 1, 20)
    );
    assert_eq!(claim.epoch, 3);
    assert!(claim.refused.is_empty(), "{:?}", claim.refused);
}

#[test]
fn garbage_records_are_skipped_and_listed_never_a_panic() {
    let broker = Tansu::start();
    let s = store(&broker, "");
    s.load("orders", 6, T).expect("load");
    let good = sample(700, 60);
    s.save("orders", 6, 1, 66, &good, T).expect("save");
    let part = sp("orders", 6);

    let mut versioned = records::claim_value(1, 0);
    versioned[4] = 9;
    let recs: Vec<Raw<'_>> = vec![
        // Garbage value on the other slot's manifest key.
        (Some(b"orders/6/1/B/manifest"), Some(b"garbage")),
        // Wrong magic on a claim key (its epoch still counts).
        (
            Some(b"orders/6/9/claim"),
            Some(b"XXXX\x01\x03aaaaaaaabbbbbbbb"),
        ),
        // Another format version.
        (Some(b"orders/6/1/claim"), Some(&versioned)),
        // A key that is no state key at all, and no key.
        (Some(b"not a key"), Some(b"v")),
        (None, Some(b"v")),
        // Empty value (not a tombstone) on a chunk key of another slot.
        (Some(b"orders/6/1/B/0"), Some(b"")),
    ];
    put_raw(&broker, STATE, part, &recs);
    let claim = store(&broker, "").load("orders", 6, T).expect("load");
    // The good snapshot still loads; nothing panicked; every bad record is
    // named.
    assert_eq!(claim.loaded.expect("good").bytes, good);
    let at = |o: usize| format!("record at offset {o} of state partition {part}");
    let mut want = vec![
        "record orders/6/1/B/0: value does not start with the magic CXST".to_string(),
        "record orders/6/1/B/manifest: value does not start with the magic CXST".into(),
        "record orders/6/1/claim: value has format version 9 (this build reads 1)".into(),
        "record orders/6/9/claim: value does not start with the magic CXST".into(),
        format!("{}: key is not <topic>/<partition>/<epoch>/...", at(6)),
        format!("{}: key is not <topic>/<partition>/<epoch>/...", at(7)),
    ];
    want.sort();
    let mut refused = claim.refused.clone();
    refused.sort();
    assert_eq!(refused, want);
    // Epoch: one above the highest in a key (9), even a refused one.
    assert_eq!(claim.epoch, 10);

    // The good snapshot's own manifest replaced by a chunk value: no
    // snapshot is complete (the caller starts empty), and both are named.
    let chunk = records::chunk_value(1, 1, 0, b"zz");
    put_raw(
        &broker,
        STATE,
        part,
        &[(Some(b"orders/6/1/A/manifest"), Some(&chunk))],
    );
    let claim = store(&broker, "").load("orders", 6, T).expect("load");
    assert!(claim.loaded.is_none());
    assert_eq!(claim.refused.len(), 8, "{:?}", claim.refused);
    for line in [
        "record orders/6/1/A/manifest: value does not match its key",
        "snapshot epoch 1 slot A seq 1: chunks without a manifest (a write that did not complete)",
    ] {
        assert!(
            claim.refused.iter().any(|r| r == line),
            "{line}: {:?}",
            claim.refused
        );
    }
    assert_eq!(claim.epoch, 11, "epoch 10 was claimed by the load above");

    // Its manifest back: loaded again.
    let mkey = Key::new("orders", 6, 1, KeyKind::Manifest(Slot::A)).to_string();
    let manifest = Manifest::of(1, 1, 66, &good, 524_288).encode();
    put_raw(
        &broker,
        STATE,
        part,
        &[(Some(mkey.as_bytes()), Some(&manifest))],
    );
    let claim = store(&broker, "").load("orders", 6, T).expect("load");
    assert_eq!(claim.loaded.expect("good").bytes, good);
    assert_eq!(claim.refused.len(), 6, "{:?}", claim.refused);
}

/// The store connects with the pipeline's security settings: through a TLS
/// front that requires a client certificate (its key encrypted, the password
/// from the config), and refuses cleanly, without the password, when the
/// CA is wrong.
#[test]
fn security_settings_of_the_pipeline_apply_and_no_secret_is_shown() {
    const KEY_PASSWORD: &str = "4242424242";
    let pki = Pki::generate();
    let key = pki.encrypted_client_key(KEY_PASSWORD);
    let broker = SecureBroker::start(
        &pki,
        Security {
            client_cert: true,
            sasl: false,
        },
    );
    let pass = |ca: &std::path::Path| {
        vec![
            ("security.protocol", "SSL".to_string()),
            ("ssl.ca.location", ca.display().to_string()),
            (
                "ssl.certificate.location",
                pki.client_cert.display().to_string(),
            ),
            ("ssl.key.location", key.display().to_string()),
            ("ssl.key.password", KEY_PASSWORD.to_string()),
        ]
    };
    let text = config_text(&broker.addr, "", &pass(&pki.ca));
    let cfg = Config::from_toml_str(&text, "tls.toml", Vec::new()).expect("config");
    let s = StateStore::new(&cfg).expect("store");
    s.ensure_topic(T).expect("ensure_topic through TLS");
    s.load("orders", 0, T).expect("load through TLS");
    s.save("orders", 0, 1, 5, b"state", T)
        .expect("save through TLS");
    let other = StateStore::new(&cfg).expect("store");
    other.ensure_topic(T).expect("ensure_topic");
    let claim = other.load("orders", 0, T).expect("load");
    assert_eq!(claim.loaded.expect("loaded").bytes, b"state");
    // The plain port is not the TLS front: nothing works without the settings.
    let plain = ClientConfig::new()
        .set("bootstrap.servers", &broker.addr)
        .set("socket.timeout.ms", "2000")
        .create::<BaseConsumer>()
        .expect("client");
    assert!(plain.fetch_metadata(None, Duration::from_secs(2)).is_err());

    // Another CA: refused within the timeout, the password nowhere.
    let text = config_text(&broker.addr, "", &pass(&pki.other_ca));
    let cfg = Config::from_toml_str(&text, "tls.toml", Vec::new()).expect("config");
    let s = StateStore::new(&cfg).expect("store");
    let e = s.ensure_topic(Duration::from_secs(3)).unwrap_err();
    let shown = format!("{e:#}");
    assert!(!shown.contains(KEY_PASSWORD), "{shown}");
    let e = s.load("orders", 0, Duration::from_secs(3)).unwrap_err();
    assert!(!format!("{e:#}").contains(KEY_PASSWORD), "{e:#}");
}

/// No broker: every call fails within its timeout (the caller's budget in a
/// rebalance callback), the SASL password nowhere in the errors.
#[test]
fn an_unreachable_broker_is_an_error_within_the_timeout() {
    const PASSWORD: &str = "s3cr3tpassw0rd";
    let addr = format!("127.0.0.1:{}", common::free_port());
    let text = config_text(
        &addr,
        "",
        &[
            ("security.protocol", "SASL_PLAINTEXT".to_string()),
            ("sasl.mechanisms", "SCRAM-SHA-256".to_string()),
            ("sasl.username", "svc-user".to_string()),
            ("sasl.password", PASSWORD.to_string()),
        ],
    );
    let cfg = Config::from_toml_str(&text, "t.toml", Vec::new()).expect("config");
    let s = StateStore::new(&cfg).expect("store (connects lazily)");
    let budget = Duration::from_secs(2);
    let t0 = std::time::Instant::now();
    let e = s.ensure_topic(budget).unwrap_err();
    assert!(t0.elapsed() < Duration::from_secs(4), "{:?}", t0.elapsed());
    let shown = format!("{e:#}");
    assert!(shown.contains(STATE), "{shown}");
    assert!(!shown.contains(PASSWORD), "{shown}");
    let t0 = std::time::Instant::now();
    let e = s.load("orders", 0, budget).unwrap_err();
    assert!(t0.elapsed() < Duration::from_secs(4), "{:?}", t0.elapsed());
    assert!(!format!("{e:#}").contains(PASSWORD), "{e:#}");
}

/// One state partition for everything (`topic_partitions = 1`, a named
/// topic): input partitions of two topics share it and stay apart; a load
/// reads (and counts) the others' records but lists none of them.
#[test]
fn input_partitions_sharing_a_state_partition_stay_apart() {
    let broker = Tansu::start();
    let s = store(&broker, "topic = \"shared-state\"\ntopic_partitions = 1");
    assert_eq!(s.topic(), "shared-state");
    let inputs = [("orders", 0, 11u8), ("orders", 1, 12), ("payments", 0, 13)];
    for (t, p, salt) in inputs {
        assert_eq!(s.load(t, p, T).expect("load").epoch, 1);
        s.save(t, p, 1, i64::from(salt) * 10, &sample(3000, salt), T)
            .expect("save");
    }
    // A store configured for 6 partitions uses the topic as it exists (1).
    let other = store(&broker, "topic = \"shared-state\"");
    for (t, p, salt) in inputs {
        let claim = other.load(t, p, T).expect("load");
        assert!(claim.refused.is_empty(), "{t}/{p}: {:?}", claim.refused);
        let got = claim.loaded.expect("loaded");
        assert_eq!(got.bytes, sample(3000, salt), "{t}/{p}");
        assert_eq!(got.next_offset, i64::from(salt) * 10);
        assert_eq!(claim.epoch, 2);
    }
    // All in partition 0 of the one-partition topic.
    let all = read_raw(&broker, "shared-state", 0);
    assert!(all.iter().any(|(k, _)| k == "payments/0/1/A/manifest"));
    assert!(all.iter().any(|(k, _)| k == "orders/1/1/A/manifest"));
}

/// A streamed save (`save_streamed`): the encoder's bytes, written in
/// 7-byte pieces across chunk boundaries, are produced chunk by chunk with
/// at most 64 chunks of 1024 bytes in flight; they load back whole. A frozen
/// engine partition streamed straight into the records loads back as the
/// bytes of `snapshot_partition` at the freeze. An encoder failing midway
/// fails the save, naming why, and the previous snapshot stays the newest.
#[test]
fn a_streamed_save_bounds_the_bytes_in_flight_and_loads_back_whole() {
    let broker = Tansu::start();
    let s = store(&broker, "chunk_bytes = 1024");
    s.load("orders", 3, T).expect("load");
    let bytes = sample(300_000, 11);
    let st = s
        .save_streamed("orders", 3, 1, 30, T, |out| {
            bytes.chunks(7).try_for_each(|p| out.write_all(p))
        })
        .expect("save");
    assert_eq!(st.chunks, 293, "292 x 1024 + 992");
    let bound = 64 * (1024 + records::CHUNK_HEADER) as u64;
    eprintln!(
        "300000 bytes in 293 chunks: at most {} bytes in flight",
        st.in_flight_peak
    );
    assert!(
        st.in_flight_peak > 0 && st.in_flight_peak <= bound,
        "{} bytes in flight at most, bound {bound}",
        st.in_flight_peak
    );
    let got = store(&broker, "").load("orders", 3, T).expect("load");
    let got = got.loaded.expect("loaded");
    assert_eq!((got.bytes == bytes, got.next_offset), (true, 30));

    // A real partition's state, frozen then streamed.
    let cfg = Config::default();
    let mut engine = cxpulse::engine::Engine::new(cfg.params().expect("valid config"));
    for k in 0..3000u64 {
        let ev = cxpulse::event::Event {
            event_id: format!("ev-{k}").into(),
            ts: 1_767_225_600_000 + k as i64 * 1000,
            user_id: Some(format!("user-{}", k / 2).into()),
            body: if k % 2 == 0 {
                cxpulse::event::EventBody::Signup {
                    channel: Some("organic".into()),
                    campaign: None,
                    referrer_id: None,
                    country: None,
                }
            } else {
                cxpulse::event::EventBody::Deposit { amount_usd: 10.0 }
            },
        };
        engine.offer(3, &ev, None);
    }
    let want = engine.snapshot_partition(3).expect("held");
    let view = engine.freeze_partition(3).expect("held");
    let s = store(&broker, "chunk_bytes = 1024");
    let epoch = s.load("orders", 3, T).expect("load").epoch;
    let st = s
        .save_streamed("orders", 3, epoch, 60, T, |out| view.write_to(out))
        .expect("save");
    assert_eq!(st.chunks as usize, want.len().div_ceil(1024));
    let got = store(&broker, "").load("orders", 3, T).expect("load");
    let got = got.loaded.expect("loaded");
    assert!(got.bytes == want, "the partition's snapshot at the freeze");
    assert_eq!(got.next_offset, 60);

    // The next save's encoder fails after 5000 bytes (4 chunks produced).
    let e = s
        .save_streamed("orders", 3, epoch, 90, T, |out| {
            out.write_all(&sample(5000, 12))?;
            Err(std::io::Error::other("disk on fire"))
        })
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("encoding the snapshot of orders/3") && e.contains("disk on fire"),
        "{e}"
    );
    let got = store(&broker, "").load("orders", 3, T).expect("load");
    let got = got.loaded.expect("the previous one");
    assert!(got.bytes == want, "the previous snapshot stays the newest");
    assert_eq!(got.next_offset, 60);
}
