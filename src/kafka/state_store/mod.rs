//! Each input partition's state in a compacted Kafka topic (`checkpoint.store
//! = "kafka"`): chunked snapshots with a checksummed manifest written last,
//! two alternating slots per ownership epoch, the epoch in the key.
//!
//! - [`StateStore::load`] reads the state partition holding an input
//!   partition to its high watermark with a group-less consumer (assign +
//!   seek), keeps the latest record per key, returns the newest complete and
//!   valid snapshot (highest epoch, then seq), and claims the next epoch
//!   (highest epoch seen + 1) by writing a claim record.
//! - [`StateStore::save`] writes a snapshot's chunks into the slot not holding
//!   the newest complete snapshot, waits for them, then writes the manifest.
//!   [`StateStore::save_streamed`] produces each chunk as the encoder fills
//!   it, with at most [`IN_FLIGHT_BYTES`] (or 64 chunks) produced and not yet
//!   acknowledged: a partition's snapshot is never whole in memory.
//!   After the first complete snapshot of an epoch, the keys of older epochs
//!   get tombstones.
//!
//! A zombie (an old owner still running) writes only keys of its older
//! epoch: it can overwrite nothing of the new owner's, and a reader prefers
//! the higher epoch. Layout, choices and sizes: docs/state-store.md.

use std::collections::HashMap;
use std::io;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use anyhow::{Context, anyhow, bail};
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, ResourceSpecifier, TopicReplication};
use rdkafka::client::{Client, ClientContext};
use rdkafka::config::RDKafkaLogLevel;
use rdkafka::consumer::{BaseConsumer, Consumer, ConsumerContext};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::Message;
use rdkafka::producer::{BaseRecord, DeliveryResult, Producer, ProducerContext, ThreadedProducer};
use rdkafka::types::RDKafkaErrorCode as Code;
use rdkafka::{Offset, TopicPartitionList};

use super::client::{self, Role};
use crate::config::{Config, Secrets};
use crate::state::codec::Summed;
use crate::telemetry;

pub mod records;

use records::{Key, KeyKind, Manifest, Slot};

/// `segment.bytes` of a state topic cxpulse creates (64 MiB).
const SEGMENT_BYTES: &str = "67108864";

/// Chunk bytes a streamed save keeps produced but not yet acknowledged, at
/// most (and at most 64 chunks, at least 2).
pub const IN_FLIGHT_BYTES: usize = 8 << 20;

/// Most refusals listed in a [`Claim`] (the rest are counted in one line).
const MAX_REFUSED_LISTED: usize = 50;

/// A snapshot read back.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StoredSnapshot {
    pub bytes: Vec<u8>,
    /// The input offsets it covers are those below this one.
    pub next_offset: i64,
    pub epoch: u64,
    pub seq: u64,
}

/// What [`StateStore::load`] found, and the epoch the caller now owns.
#[derive(Clone, Debug)]
pub struct Claim {
    /// The epoch this owner must write with (max seen + 1).
    pub epoch: u64,
    /// Newest complete, checksum-valid snapshot, if any.
    pub loaded: Option<StoredSnapshot>,
    /// Key and value bytes read from the state partition (every input
    /// partition sharing it).
    pub bytes_read: u64,
    pub records_read: u64,
    /// Why records or snapshots were skipped.
    pub refused: Vec<String>,
}

/// What one [`StateStore::save`] wrote.
#[derive(Clone, Debug, PartialEq)]
pub struct SaveStats {
    /// Value bytes written (chunks and manifest).
    pub bytes: u64,
    pub chunks: u32,
    pub seconds: f64,
    /// Most chunk value bytes produced and not yet acknowledged at once.
    pub in_flight_peak: u64,
}

/// What this process knows of one input partition it claimed.
#[derive(Debug)]
struct PartState {
    epoch: u64,
    /// The seq of the last save attempted in `epoch`.
    last_seq: u64,
    /// The slot holding the newest complete snapshot of `epoch`.
    newest: Option<Slot>,
    /// Per slot: most chunks any write of `epoch` put there (chunks beyond a
    /// shorter later snapshot get tombstones).
    chunks_written: [u32; 2],
    /// Keys of older epochs: tombstoned once `epoch` has a complete snapshot.
    stale: Vec<String>,
}

/// Claimed input partitions by (topic, partition).
type Parts = HashMap<(String, i32), Arc<Mutex<PartState>>>;

/// Delivery outcome of the records of one save (or claim).
#[derive(Default)]
struct Batch {
    acked: AtomicUsize,
    failed: Mutex<Vec<String>>,
}

impl Batch {
    fn done(&self) -> usize {
        self.acked.load(Ordering::SeqCst)
    }
    fn failure(&self) -> Option<String> {
        lock(&self.failed).first().cloned()
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// librdkafka callbacks of the state store's clients.
struct StoreCtx {
    brokers: String,
}

impl ClientContext for StoreCtx {
    fn log(&self, level: RDKafkaLogLevel, fac: &str, log_message: &str) {
        telemetry::ClientLog {
            client: "state",
            level,
            facility: fac,
            message: log_message,
        }
        .emit();
    }

    fn error(&self, error: KafkaError, reason: &str) {
        telemetry::KafkaClientError {
            client: "state",
            brokers: &self.brokers,
            error: &error,
            reason,
        }
        .emit();
    }
}

impl ProducerContext for StoreCtx {
    type DeliveryOpaque = Arc<Batch>;

    fn delivery(&self, result: &DeliveryResult<'_>, batch: Arc<Batch>) {
        match result {
            Ok(_) => {
                batch.acked.fetch_add(1, Ordering::SeqCst);
            }
            Err((e, _)) => lock(&batch.failed).push(e.to_string()),
        }
    }
}

impl ConsumerContext for StoreCtx {}

/// Snapshots of input partitions in a compacted Kafka topic. `Send + Sync`:
/// share it as `Arc<StateStore>`; every method blocks (call it from a
/// rebalance callback or `spawn_blocking`, never hold a lock across it).
pub struct StateStore {
    topic: String,
    partitions_wanted: i32,
    replication: i32,
    chunk_bytes: usize,
    producer: ThreadedProducer<StoreCtx>,
    /// Settings of the producer (admin client) and the loader consumer.
    producer_settings: std::collections::BTreeMap<String, String>,
    consumer_settings: std::collections::BTreeMap<String, String>,
    brokers: String,
    /// Partition count of the state topic, once known.
    partitions: Mutex<Option<i32>>,
    parts: Mutex<Parts>,
}

impl StateStore {
    /// From the [kafka] connection settings (the same security settings as
    /// the pipeline's clients) and the [checkpoint] section. Connects lazily.
    pub fn new(cfg: &Config) -> anyhow::Result<StateStore> {
        let k = &cfg.kafka;
        let mut producer_settings = client::settings(k, Role::Producer)?;
        producer_settings.insert("client.id".into(), "cxpulse-state".into());
        // A metadata request must never create the state topic with the
        // broker's default (delete) policy: `ensure_topic` creates it.
        producer_settings.insert("allow.auto.create.topics".into(), "false".into());
        producer_settings.insert("acks".into(), "all".into());
        let mut consumer_settings = client::settings(k, Role::Consumer)?;
        // The loader joins no group: it assigns one partition at an offset
        // and never commits. librdkafka wants a group.id for `assign` all the
        // same; this one is never joined (no member, no offsets).
        for key in ["group.instance.id", "statistics.interval.ms"] {
            consumer_settings.remove(key);
        }
        consumer_settings.insert(
            "group.id".into(),
            format!("{}-cxpulse-state-loader", k.group_id),
        );
        consumer_settings.insert("client.id".into(), "cxpulse-state-loader".into());
        consumer_settings.insert("enable.partition.eof".into(), "true".into());
        consumer_settings.insert("auto.offset.reset".into(), "earliest".into());
        let brokers = k.brokers.clone();
        let producer: ThreadedProducer<StoreCtx> = client::create(
            &producer_settings,
            StoreCtx {
                brokers: brokers.clone(),
            },
        )
        .context("state store producer")?;
        let c = &cfg.checkpoint;
        Ok(StateStore {
            topic: c.state_topic(&k.group_id),
            partitions_wanted: c.topic_partitions,
            replication: c.topic_replication,
            chunk_bytes: c.chunk_bytes.max(1),
            producer,
            producer_settings,
            consumer_settings,
            brokers,
            partitions: Mutex::new(None),
            parts: Mutex::new(HashMap::new()),
        })
    }

    /// The state topic's name: `checkpoint.topic`, or
    /// `<kafka.group_id>-cxpulse-state` when that is empty.
    pub fn topic(&self) -> &str {
        &self.topic
    }

    /// Creates the state topic (cleanup.policy=compact, segment.bytes=64 MiB,
    /// `checkpoint.topic_partitions`, `checkpoint.topic_replication`) if it is
    /// missing, and waits until every partition has a leader. An existing
    /// topic is used as it is (a policy other than compact is logged).
    pub fn ensure_topic(&self, timeout: Duration) -> anyhow::Result<()> {
        let deadline = Instant::now() + timeout;
        let admin: AdminClient<StoreCtx> = client::create(
            &self.producer_settings,
            StoreCtx {
                brokers: self.brokers.clone(),
            },
        )
        .context("state store admin client")?;
        if let Some(n) = self.partition_count(admin.inner(), left(deadline))? {
            *lock(&self.partitions) = Some(n);
            // A broker that does not answer DescribeConfigs (librdkafka's
            // mock cluster of `cxpulse demo`) must not hold up the restores.
            self.check_policy(&admin, left(deadline).min(Duration::from_secs(2)));
            return Ok(());
        }
        let topic = NewTopic::new(
            &self.topic,
            self.partitions_wanted,
            TopicReplication::Fixed(self.replication),
        )
        .set("cleanup.policy", "compact")
        // The active segment is never compacted: a smaller one bounds the
        // superseded snapshots kept (Kafka's default is 1 GiB).
        .set("segment.bytes", SEGMENT_BYTES);
        let opts = AdminOptions::new()
            .request_timeout(Some(left(deadline)))
            .operation_timeout(Some(left(deadline)));
        let results = block_on(async {
            tokio::time::timeout(left(deadline), admin.create_topics([&topic], &opts)).await
        })?
        .map_err(|_| anyhow!("creating state topic {}: timed out", self.topic))?
        .map_err(|e| self.scrub(anyhow!("creating state topic {}: {e}", self.topic)))?;
        for r in results {
            match r {
                Ok(_) | Err((_, Code::TopicAlreadyExists)) => {}
                Err((t, code)) => bail!("creating state topic {t}: {code}"),
            }
        }
        loop {
            let wait = left(deadline).min(Duration::from_secs(2));
            if let Some(n) = self.partition_count(admin.inner(), wait)? {
                *lock(&self.partitions) = Some(n);
                tracing::info!(
                    topic = self.topic.as_str(),
                    partitions = n,
                    "state topic created (cleanup.policy=compact)"
                );
                return Ok(());
            }
            if Instant::now() >= deadline {
                bail!(
                    "state topic {} was created but has no leader for every partition within {}s",
                    self.topic,
                    timeout.as_secs_f64()
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Reads the state partition holding input (`topic`, `partition`) to its
    /// end (at least its high watermark), returns the newest complete snapshot, and claims the
    /// next epoch (written as a claim record, so that the next loader goes
    /// higher). Errors only when Kafka cannot be read or the claim cannot be
    /// written; bad records are skipped and listed in `refused`.
    pub fn load(&self, topic: &str, partition: i32, timeout: Duration) -> anyhow::Result<Claim> {
        let deadline = Instant::now() + timeout;
        let sp = self.state_partition(topic, partition, deadline)?;
        let consumer: BaseConsumer<StoreCtx> = client::create(
            &self.consumer_settings,
            StoreCtx {
                brokers: self.brokers.clone(),
            },
        )
        .context("state store loader")?;
        let (low, high) = consumer
            .fetch_watermarks(&self.topic, sp, left(deadline))
            .map_err(|e| {
                self.scrub(anyhow!(
                    "reading state topic {} partition {sp}: watermarks: {e}",
                    self.topic
                ))
            })?;
        let prefix = Key::prefix(topic, partition);
        let mut latest: HashMap<Key, Option<Vec<u8>>> = HashMap::new();
        let mut refused: Vec<String> = Vec::new();
        let (mut bytes_read, mut records_read) = (0u64, 0u64);
        if high > low {
            let mut tpl = TopicPartitionList::new();
            tpl.add_partition_offset(&self.topic, sp, Offset::Offset(low))
                .map_err(|e| anyhow!("state topic assignment: {e}"))?;
            consumer
                .assign(&tpl)
                .map_err(|e| self.scrub(anyhow!("state topic assignment: {e}")))?;
            // To the end: the partition-EOF event at an offset at or past
            // the high watermark read first. (tansu 0.6 answers the high
            // watermark with the last batch's base offset + 1, short of the
            // end; EOF comes at the real end. Kafka's EOF comes at the high
            // watermark, past any control records.)
            let mut next = low;
            loop {
                if Instant::now() >= deadline {
                    bail!(
                        "reading state topic {} partition {sp}: timed out after {}s at offset {next} (high watermark {high})",
                        self.topic,
                        timeout.as_secs_f64()
                    );
                }
                match consumer.poll(left(deadline).min(Duration::from_millis(200))) {
                    None => {}
                    Some(Ok(m)) => {
                        next = m.offset() + 1;
                        records_read += 1;
                        let key = m.key().unwrap_or_default();
                        let value = m.payload();
                        bytes_read += (key.len() + value.map_or(0, <[u8]>::len)) as u64;
                        if !key.starts_with(prefix.as_bytes()) {
                            // Another input partition's, or not ours at all.
                            if let Err(why) = Key::parse(key) {
                                refused.push(format!(
                                    "record at offset {} of state partition {sp}: {why}",
                                    m.offset()
                                ));
                            }
                            continue;
                        }
                        match Key::parse(key) {
                            Ok(k) if k.topic == topic && k.partition == partition => {
                                latest.insert(k, value.map(<[u8]>::to_vec));
                            }
                            Ok(_) => {}
                            Err(why) => refused.push(format!(
                                "record at offset {} of state partition {sp}: {why}",
                                m.offset()
                            )),
                        }
                    }
                    Some(Err(KafkaError::PartitionEOF(_))) => {
                        let pos = consumer
                            .position()
                            .ok()
                            .and_then(|p| {
                                p.find_partition(&self.topic, sp)
                                    .and_then(|e| e.offset().to_raw())
                            })
                            .unwrap_or(next);
                        if next.max(pos) >= high {
                            break;
                        }
                    }
                    Some(Err(e)) => {
                        return Err(self.scrub(anyhow!(
                            "reading state topic {} partition {sp}: {e}",
                            self.topic
                        )));
                    }
                }
            }
        }
        let r = records::resolve(topic, partition, &latest);
        refused.extend(r.refused);
        let epoch = r.max_epoch.map_or(1, |e| e + 1);
        // Claim the epoch before anything is written with it.
        let claim_key = Key::new(topic, partition, epoch, KeyKind::Claim).to_string();
        let now_ms = chrono::Utc::now().timestamp_millis();
        self.write(
            sp,
            &[(claim_key, Some(records::claim_value(epoch, now_ms)))],
            deadline,
            "claim",
        )?;
        let state = PartState {
            epoch,
            last_seq: 0,
            newest: None,
            chunks_written: [0, 0],
            stale: r
                .live
                .iter()
                .filter(|k| k.epoch < epoch)
                .map(Key::to_string)
                .collect(),
        };
        lock(&self.parts).insert((topic.to_string(), partition), Arc::new(Mutex::new(state)));
        if refused.len() > MAX_REFUSED_LISTED {
            let more = refused.len() - MAX_REFUSED_LISTED;
            refused.truncate(MAX_REFUSED_LISTED);
            refused.push(format!("... and {more} more"));
        }
        let loaded = r.found.map(|f| StoredSnapshot {
            bytes: f.bytes,
            next_offset: f.manifest.next_offset,
            epoch: f.manifest.epoch,
            seq: f.manifest.seq,
        });
        Ok(Claim {
            epoch,
            loaded,
            bytes_read,
            records_read,
            refused,
        })
    }

    /// Writes `bytes` (covering input offsets below `next_offset`) as chunks
    /// of at most `checkpoint.chunk_bytes`, then, once every chunk is
    /// acknowledged, the manifest, into the slot not holding the newest
    /// complete snapshot of `epoch`. Returns when the manifest is
    /// acknowledged, or Err when `timeout` passed or a record failed (the
    /// previous snapshot stays the newest complete one). `epoch` must be the
    /// one [`StateStore::load`] claimed for this partition.
    pub fn save(
        &self,
        topic: &str,
        partition: i32,
        epoch: u64,
        next_offset: i64,
        bytes: &[u8],
        timeout: Duration,
    ) -> anyhow::Result<SaveStats> {
        self.save_streamed(topic, partition, epoch, next_offset, timeout, |out| {
            out.write_all(bytes)
        })
    }

    /// Like [`StateStore::save`], the snapshot bytes written by `encode`
    /// (e.g. [`crate::engine::snapshot::FrozenPartition::write_to`]): each
    /// chunk is produced as soon as it is full, with at most
    /// [`IN_FLIGHT_BYTES`] (or 64 chunks) produced and not yet acknowledged,
    /// the manifest (total length, checksums) computed on the way. An error
    /// of `encode` fails the save like a record that failed.
    pub fn save_streamed(
        &self,
        topic: &str,
        partition: i32,
        epoch: u64,
        next_offset: i64,
        timeout: Duration,
        encode: impl FnOnce(&mut dyn io::Write) -> io::Result<()>,
    ) -> anyhow::Result<SaveStats> {
        let start = Instant::now();
        let deadline = start + timeout;
        let part = lock(&self.parts)
            .get(&(topic.to_string(), partition))
            .cloned()
            .ok_or_else(|| {
                anyhow!("saving {topic}/{partition}: no claim (call load for this partition first)")
            })?;
        // One save of a partition at a time; bounded by the timeout.
        let mut st = loop {
            match part.try_lock() {
                Ok(g) => break g,
                Err(std::sync::TryLockError::Poisoned(e)) => break e.into_inner(),
                Err(std::sync::TryLockError::WouldBlock) => {
                    if Instant::now() >= deadline {
                        bail!("saving {topic}/{partition}: another save of it is still running");
                    }
                    std::thread::sleep(Duration::from_millis(5));
                }
            }
        };
        if st.epoch != epoch {
            bail!(
                "saving {topic}/{partition}: epoch {epoch} is not the claimed epoch {}",
                st.epoch
            );
        }
        if next_offset < 0 {
            bail!("saving {topic}/{partition}: negative next offset {next_offset}");
        }
        let sp = self.state_partition(topic, partition, deadline)?;
        let slot = st.newest.map_or(Slot::A, Slot::other);
        let seq = st.last_seq + 1;
        st.last_seq = seq;
        let si = slot.index();
        let what = format!("snapshot of {topic}/{partition}");
        let mut out = ChunkWriter {
            store: self,
            sp,
            key: (topic, partition, epoch, slot),
            seq,
            deadline,
            what: &what,
            batch: Arc::new(Batch::default()),
            data: Vec::with_capacity(self.chunk_bytes),
            chunks: Vec::new(),
            sizes: Vec::new(),
            in_flight_max: (IN_FLIGHT_BYTES / self.chunk_bytes).clamp(2, 64),
            in_flight_peak: 0,
            failed: None,
        };
        // The manifest's total length and checksum, on the way.
        let mut summed = Summed::new(&mut out);
        let encoded = encode(&mut summed);
        let (total_len, checksum) = (summed.len(), summed.digest());
        let finished = match encoded {
            Ok(()) => out.finish(),
            Err(e) => Err(out
                .failed
                .take()
                .unwrap_or_else(|| anyhow!("encoding the {what}: {e}"))),
        };
        // Chunks produced (even of a failed save) are in the slot now: a
        // shorter later snapshot tombstones those beyond its end.
        let n = out.chunks.len() as u32;
        st.chunks_written[si] = st.chunks_written[si].max(n);
        finished?;
        let manifest = Manifest {
            epoch,
            seq,
            next_offset,
            total_len,
            checksum,
            chunks: out.chunks,
        };
        let mut written: u64 = out.sizes.iter().sum();
        let in_flight_peak = out.in_flight_peak;
        let mvalue = manifest.encode();
        written += mvalue.len() as u64;
        let mkey = Key::new(topic, partition, epoch, KeyKind::Manifest(slot)).to_string();
        self.write(sp, &[(mkey, Some(mvalue))], deadline, &what)?;
        st.newest = Some(slot);
        // Complete: older epochs' keys and this slot's chunks beyond the
        // new end are garbage now.
        let mut tombstones: Vec<(String, Option<Vec<u8>>)> =
            st.stale.iter().map(|k| (k.clone(), None)).collect();
        for i in n..st.chunks_written[si] {
            let key = Key::new(topic, partition, epoch, KeyKind::Chunk(slot, i));
            tombstones.push((key.to_string(), None));
        }
        if !tombstones.is_empty() {
            match self.write(sp, &tombstones, deadline, "tombstones") {
                Ok(()) => {
                    st.stale.clear();
                    st.chunks_written[si] = n;
                }
                Err(e) => tracing::warn!(
                    topic,
                    partition,
                    error = %e,
                    "state store: tombstones for superseded records not written; retried after the next save"
                ),
            }
        }
        Ok(SaveStats {
            bytes: written,
            chunks: n,
            seconds: start.elapsed().as_secs_f64(),
            in_flight_peak,
        })
    }

    /// The state partition of input (`topic`, `partition`).
    fn state_partition(
        &self,
        topic: &str,
        partition: i32,
        deadline: Instant,
    ) -> anyhow::Result<i32> {
        let known = *lock(&self.partitions);
        let n = match known {
            Some(n) => n,
            None => {
                let n = self
                    .partition_count(self.producer.client(), left(deadline))?
                    .ok_or_else(|| {
                        anyhow!(
                            "state topic {} does not exist (or has a partition without a leader)",
                            self.topic
                        )
                    })?;
                *lock(&self.partitions) = Some(n);
                n
            }
        };
        Ok(records::state_partition(topic, partition, n))
    }

    /// The state topic's partition count; None when it does not exist or a
    /// partition has no leader; Err when the brokers cannot be asked.
    fn partition_count<C: ClientContext>(
        &self,
        client: &Client<C>,
        timeout: Duration,
    ) -> anyhow::Result<Option<i32>> {
        let md = client
            .fetch_metadata(Some(&self.topic), timeout)
            .map_err(|e| self.scrub(anyhow!("metadata of state topic {}: {e}", self.topic)))?;
        let Some(t) = md.topics().iter().find(|t| t.name() == self.topic) else {
            return Ok(None);
        };
        let ps = t.partitions();
        if t.error().is_some()
            || ps.is_empty()
            || ps.iter().any(|p| p.error().is_some() || p.leader() < 0)
        {
            return Ok(None);
        }
        Ok(Some(ps.len() as i32))
    }

    /// Logs a warning when the existing state topic is not compacted (or the
    /// broker does not say).
    fn check_policy(&self, admin: &AdminClient<StoreCtx>, timeout: Duration) {
        let opts = AdminOptions::new().request_timeout(Some(timeout));
        let spec = ResourceSpecifier::Topic(&self.topic);
        let policy = block_on(async {
            tokio::time::timeout(timeout, admin.describe_configs([&spec], &opts)).await
        });
        let policy = match policy {
            Ok(Ok(Ok(rs))) => rs
                .into_iter()
                .next()
                .and_then(|r| r.ok())
                .and_then(|r| r.get("cleanup.policy").and_then(|e| e.value.clone())),
            _ => None,
        };
        match policy {
            Some(p) if p.contains("compact") => {}
            other => tracing::warn!(
                topic = self.topic.as_str(),
                cleanup_policy = other.as_deref().unwrap_or("unknown"),
                "the state topic exists without cleanup.policy=compact: superseded snapshots are not \
                 compacted away, and with delete a snapshot older than retention.ms is lost"
            ),
        }
    }

    /// Produces `records` (key, value or tombstone) to state partition `sp`
    /// and waits until every one is acknowledged, or `deadline`.
    fn write(
        &self,
        sp: i32,
        records: &[(String, Option<Vec<u8>>)],
        deadline: Instant,
        what: &str,
    ) -> anyhow::Result<()> {
        let batch = Arc::new(Batch::default());
        for (key, value) in records {
            self.send(sp, &batch, key, value.as_deref(), deadline, what)?;
        }
        self.wait(&batch, records.len(), deadline, what)
    }

    /// Produces one record (key, value or tombstone) of `batch`, waiting
    /// while the producer's queue is full (until `deadline`).
    fn send(
        &self,
        sp: i32,
        batch: &Arc<Batch>,
        key: &str,
        value: Option<&[u8]>,
        deadline: Instant,
        what: &str,
    ) -> anyhow::Result<()> {
        let mut rec: BaseRecord<'_, str, [u8], Arc<Batch>> =
            BaseRecord::with_opaque_to(&self.topic, batch.clone())
                .partition(sp)
                .key(key);
        if let Some(v) = value {
            rec = rec.payload(v);
        }
        loop {
            match self.producer.send(rec) {
                Ok(()) => return Ok(()),
                Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), back)) => {
                    if Instant::now() >= deadline {
                        bail!(
                            "writing {what} to state topic {}: producer queue full until the timeout",
                            self.topic
                        );
                    }
                    rec = back;
                    std::thread::sleep(Duration::from_millis(5));
                }
                Err((e, _)) => {
                    return Err(
                        self.scrub(anyhow!("writing {what} to state topic {}: {e}", self.topic))
                    );
                }
            }
        }
    }

    /// Waits until at least `acked` records of `batch` are acknowledged; Err
    /// at the first that failed, or at `deadline`.
    fn wait(
        &self,
        batch: &Batch,
        acked: usize,
        deadline: Instant,
        what: &str,
    ) -> anyhow::Result<()> {
        loop {
            if let Some(e) = batch.failure() {
                return Err(
                    self.scrub(anyhow!("writing {what} to state topic {}: {e}", self.topic))
                );
            }
            if batch.done() >= acked {
                return Ok(());
            }
            if Instant::now() >= deadline {
                bail!(
                    "writing {what} to state topic {}: {} of {} records acknowledged before the timeout",
                    self.topic,
                    batch.done(),
                    acked
                );
            }
            std::thread::sleep(Duration::from_millis(1));
        }
    }

    /// `e` with every secret value of the client settings replaced.
    fn scrub(&self, e: anyhow::Error) -> anyhow::Error {
        let mut all = self.producer_settings.clone();
        all.extend(self.consumer_settings.clone());
        anyhow!(Secrets::in_pairs(&all).scrub(&format!("{e:#}")))
    }
}

/// The chunks of a streamed save (see [`StateStore::save_streamed`]): bytes
/// are gathered into one chunk's data and produced when it is full; the
/// manifest's lengths and checksums are computed on the way.
struct ChunkWriter<'a> {
    store: &'a StateStore,
    sp: i32,
    /// Topic, partition, epoch and slot of the chunk keys.
    key: (&'a str, i32, u64, Slot),
    seq: u64,
    deadline: Instant,
    what: &'a str,
    batch: Arc<Batch>,
    /// The chunk being filled.
    data: Vec<u8>,
    /// (length, XXH3-64) of each chunk produced.
    chunks: Vec<(u32, u64)>,
    /// Value bytes of each chunk produced.
    sizes: Vec<u64>,
    /// Most chunks produced and not yet acknowledged.
    in_flight_max: usize,
    in_flight_peak: u64,
    /// Why the save failed (the encoder is stopped with an I/O error).
    failed: Option<anyhow::Error>,
}

impl ChunkWriter<'_> {
    /// Produces the chunk filled so far, after waiting for room in flight.
    fn produce(&mut self) -> anyhow::Result<()> {
        let i = self.chunks.len();
        if i >= records::MAX_CHUNKS as usize {
            bail!(
                "saving {}/{}: more than {} chunks of checkpoint.chunk_bytes = {}",
                self.key.0,
                self.key.1,
                records::MAX_CHUNKS,
                self.store.chunk_bytes
            );
        }
        let wait_for = (i + 1).saturating_sub(self.in_flight_max);
        self.store
            .wait(&self.batch, wait_for, self.deadline, self.what)?;
        let (topic, partition, epoch, slot) = self.key;
        let key = Key::new(topic, partition, epoch, KeyKind::Chunk(slot, i as u32));
        let value = records::chunk_value(epoch, self.seq, i as u32, &self.data);
        self.store.send(
            self.sp,
            &self.batch,
            &key.to_string(),
            Some(&value),
            self.deadline,
            self.what,
        )?;
        self.chunks.push((
            self.data.len() as u32,
            xxhash_rust::xxh3::xxh3_64(&self.data),
        ));
        self.sizes.push(value.len() as u64);
        let acked = self.batch.done().min(self.sizes.len());
        let in_flight: u64 = self.sizes[acked..].iter().sum();
        self.in_flight_peak = self.in_flight_peak.max(in_flight);
        self.data.clear();
        Ok(())
    }

    /// Produces the last chunk and waits until every chunk is acknowledged.
    fn finish(&mut self) -> anyhow::Result<()> {
        if !self.data.is_empty() {
            self.produce()?;
        }
        self.store
            .wait(&self.batch, self.chunks.len(), self.deadline, self.what)
    }
}

impl io::Write for ChunkWriter<'_> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        if self.failed.is_some() {
            return Err(io::Error::other("the state store save failed"));
        }
        let room = self.store.chunk_bytes - self.data.len();
        let n = buf.len().min(room);
        self.data.extend_from_slice(&buf[..n]);
        if self.data.len() == self.store.chunk_bytes
            && let Err(e) = self.produce()
        {
            self.failed = Some(e);
            return Err(io::Error::other("the state store save failed"));
        }
        Ok(n)
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// What is left until `deadline` (zero once passed).
fn left(deadline: Instant) -> Duration {
    deadline.saturating_duration_since(Instant::now())
}

/// Runs an rdkafka admin future to completion on a private runtime in its own
/// thread: works from plain threads, `spawn_blocking` and inside a runtime's
/// task (a rebalance callback) alike.
fn block_on<F: std::future::Future + Send>(fut: F) -> anyhow::Result<F::Output>
where
    F::Output: Send,
{
    std::thread::scope(|s| {
        s.spawn(|| {
            tokio::runtime::Builder::new_current_thread()
                .enable_time()
                .build()
                .map(|rt| rt.block_on(fut))
        })
        .join()
    })
    .map_err(|_| anyhow!("state store: the admin request's thread panicked"))?
    .map_err(|e| anyhow!("state store: cannot start a runtime for an admin request: {e}"))
}
