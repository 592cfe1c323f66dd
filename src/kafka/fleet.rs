//! Fleet totals: the output topic carries the series of the whole fleet, not
//! of one instance (see `docs/fleet.md`).
//!
//! - Every instance, each `kafka.publish_interval`, publishes what each input
//!   partition it holds contributes ([`crate::engine::Engine::partials`]) to an
//!   internal compacted topic, the **partials topic** ([`partials_topic`]),
//!   keyed `<input topic>/<partition>`, the value a small header
//!   ([`PartialHeader`]) followed by the partial's bytes ([`encode`]).
//! - Every instance reads the partials topic from its beginning with a
//!   consumer outside the group ([`PartialsReader`]) and keeps the latest
//!   readable partial per input partition ([`Latest`]).
//! - The instance that owns input partition 0 of the first input topic is the
//!   **folder**: each publish interval the loop folds the latest partials
//!   ([`Latest::fold_input`], then `engine::fold_partials`), its own
//!   partitions' taken now, and publishes the totals on the output topic in
//!   the usual record format, stating T. Other instances publish nothing on
//!   the output topic.
//! - Records on the partials topic that are not a readable partial are
//!   skipped, counted (`cxpulse_fleet_partials_refused_total{reason}`) and
//!   logged; a bad record never replaces a good partial and never stops the
//!   process.
//!
//! The duty to fold moves with partition 0 ([`FleetTotals::set_folder`], at
//! each publish tick from the consumer's assignment); since every instance
//! already reads the partials topic, a new folder publishes at its next tick.

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::Duration;

use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::{ClientContext, DefaultClientContext};
use rdkafka::config::RDKafkaLogLevel;
use rdkafka::consumer::{BaseConsumer, Consumer, ConsumerContext};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::Message;
use rdkafka::{Offset, TopicPartitionList};

use super::client::{self, Role};
use super::publish::OutRecord;
use crate::config::KafkaSection;
use crate::event::Millis;
use crate::telemetry;

/// First bytes of every partial record's value.
pub const MAGIC: &[u8; 4] = b"CXPP";
/// The header format this build writes (it also reads version 1, which has
/// no ownership epoch: read as epoch 0).
pub const FORMAT_VERSION: u8 = 2;
/// Magic, version, T, ownership epoch, input partition count, instance id length.
const FIXED_HEADER: usize = 4 + 1 + 8 + 8 + 4 + 2;
/// The same of format version 1 (no epoch).
const FIXED_HEADER_V1: usize = 4 + 1 + 8 + 4 + 2;
/// How often the input topics' partition counts are read again.
const LAYOUT_REFRESH: Duration = Duration::from_secs(10);
/// The header T of a partial taken while its engine had no T yet (no event
/// applied, no wall-clock following): it contributes its counters only.
pub const NO_T: Millis = Millis::MIN;
/// Timeout of one metadata or admin request.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

/// The partials topic: `kafka.partials_topic`, or `<group_id>-cxpulse-partials`.
pub fn partials_topic(k: &KafkaSection) -> String {
    if k.partials_topic.is_empty() {
        format!("{}-cxpulse-partials", k.group_id)
    } else {
        k.partials_topic.clone()
    }
}

/// The key of input partition `partition` of `topic` on the partials topic.
pub fn partial_key(topic: &str, partition: i32) -> String {
    format!("{topic}/{partition}")
}

/// The engine partition number of (topic index, partition), as
/// [`crate::kafka::offsets::PartitionIds`] numbers them (configured topics
/// first, in config order).
pub fn engine_pid(topic_index: usize, partition: i32) -> u32 {
    ((topic_index as u32) << 20) | (partition.max(0) as u32 & 0xF_FFFF)
}

/// (topic, partition) of engine partition `pid`, if its topic is configured.
pub fn input_of(pid: u32, topics: &[String]) -> Option<(&str, i32)> {
    let t = topics.get((pid >> 20) as usize)?;
    Some((t.as_str(), (pid & 0xF_FFFF) as i32))
}

/// What precedes a partial's bytes in its record value.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PartialHeader {
    /// The publishing engine's T when the partial was taken, ms; [`NO_T`]
    /// when it had none.
    pub t: Millis,
    /// The publisher's ownership epoch of the partition: the state store's
    /// claim epoch for it (0 without a Kafka state store). Per key the
    /// partial with the highest epoch wins (see [`Latest::apply`]).
    pub epoch: u64,
    /// Input partitions (all input topics) the publisher knew of; 0 = unknown.
    pub input_partitions: u32,
    /// Who published it (for logs): `kafka.group_instance_id`, else host and pid.
    pub instance: String,
}

/// Why a record on the partials topic is skipped.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Refused {
    /// No key, or not `<topic>/<partition>`.
    BadKey,
    /// A key naming a topic that is not an input topic of this config.
    UnknownTopic(String),
    BadMagic,
    BadVersion(u8),
    Truncated,
    /// The partial's bytes are refused by the fold.
    Undecodable(String),
    /// Written with an older ownership epoch than the partial kept for its
    /// key: by an instance that lost the partition (a zombie).
    StaleEpoch {
        kept: u64,
        got: u64,
    },
}

impl Refused {
    /// The `reason` label of `cxpulse_fleet_partials_refused_total`.
    pub fn reason(&self) -> &'static str {
        match self {
            Refused::BadKey => "bad_key",
            Refused::UnknownTopic(_) => "unknown_topic",
            Refused::BadMagic => "bad_magic",
            Refused::BadVersion(_) => "bad_version",
            Refused::Truncated => "truncated",
            Refused::Undecodable(_) => "undecodable",
            Refused::StaleEpoch { .. } => "stale_epoch",
        }
    }
}

impl fmt::Display for Refused {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Refused::BadKey => f.write_str("the key is not <input topic>/<partition>"),
            Refused::UnknownTopic(t) => write!(f, "topic {t:?} is not an input topic"),
            Refused::BadMagic => f.write_str("the value does not start with the partial magic"),
            Refused::BadVersion(v) => write!(
                f,
                "partial format version {v}, this build reads {FORMAT_VERSION}"
            ),
            Refused::Truncated => f.write_str("the value ends inside its header"),
            Refused::Undecodable(e) => write!(f, "the partial is refused: {e}"),
            Refused::StaleEpoch { kept, got } => write!(
                f,
                "ownership epoch {got} is older than the partial kept ({kept}): written by an instance that lost the partition"
            ),
        }
    }
}

/// The record value: header, then the partial's bytes.
pub fn encode(h: &PartialHeader, partial: &[u8]) -> Vec<u8> {
    let id = h.instance.as_bytes();
    let id = &id[..id.len().min(u16::MAX as usize)];
    let mut v = Vec::with_capacity(FIXED_HEADER + id.len() + partial.len());
    v.extend_from_slice(MAGIC);
    v.push(FORMAT_VERSION);
    v.extend_from_slice(&h.t.to_le_bytes());
    v.extend_from_slice(&h.epoch.to_le_bytes());
    v.extend_from_slice(&h.input_partitions.to_le_bytes());
    v.extend_from_slice(&(id.len() as u16).to_le_bytes());
    v.extend_from_slice(id);
    v.extend_from_slice(partial);
    v
}

/// The header and the partial's bytes of a record value (format version 2,
/// or 1: written before partials carried an epoch, read as epoch 0).
pub fn decode(v: &[u8]) -> Result<(PartialHeader, &[u8]), Refused> {
    if v.len() < MAGIC.len() || &v[..MAGIC.len()] != MAGIC {
        return Err(Refused::BadMagic);
    }
    let version = *v.get(4).ok_or(Refused::Truncated)?;
    let fixed = match version {
        1 => FIXED_HEADER_V1,
        FORMAT_VERSION => FIXED_HEADER,
        _ => return Err(Refused::BadVersion(version)),
    };
    if v.len() < fixed {
        return Err(Refused::Truncated);
    }
    let le8 = |at: usize| {
        let mut b = [0u8; 8];
        b.copy_from_slice(&v[at..at + 8]);
        b
    };
    let t = i64::from_le_bytes(le8(5));
    let (epoch, at) = if version == 1 {
        (0, 13)
    } else {
        (u64::from_le_bytes(le8(13)), 21)
    };
    let n = u32::from_le_bytes([v[at], v[at + 1], v[at + 2], v[at + 3]]);
    let id_len = u16::from_le_bytes([v[at + 4], v[at + 5]]) as usize;
    let rest = &v[fixed..];
    if rest.len() < id_len {
        return Err(Refused::Truncated);
    }
    let (id, partial) = rest.split_at(id_len);
    Ok((
        PartialHeader {
            t,
            epoch,
            input_partitions: n,
            instance: String::from_utf8_lossy(id).into_owned(),
        },
        partial,
    ))
}

/// The engine partition a partials-topic key names.
pub fn parse_key(key: Option<&[u8]>, topics: &[String]) -> Result<u32, Refused> {
    let key = std::str::from_utf8(key.ok_or(Refused::BadKey)?).map_err(|_| Refused::BadKey)?;
    let (topic, partition) = key.rsplit_once('/').ok_or(Refused::BadKey)?;
    let partition: i32 = partition.parse().map_err(|_| Refused::BadKey)?;
    if !(0..=0xF_FFFF).contains(&partition) {
        return Err(Refused::BadKey);
    }
    let index = topics
        .iter()
        .position(|t| t == topic)
        .ok_or_else(|| Refused::UnknownTopic(topic.to_string()))?;
    Ok(engine_pid(index, partition))
}

/// The partials-topic records of `partials` (engine partition, bytes), all
/// taken at T = `t`; each header's epoch is `epoch(partition)` (`header`'s
/// own is not used). Partitions of a topic not configured are left out.
pub fn partial_records(
    partials_topic: &str,
    input_topics: &[String],
    header: &PartialHeader,
    partials: &[(u32, Vec<u8>)],
    epoch: &dyn Fn(u32) -> u64,
) -> Vec<OutRecord> {
    partials
        .iter()
        .filter_map(|(pid, bytes)| {
            let (topic, partition) = input_of(*pid, input_topics)?;
            let h = PartialHeader {
                epoch: epoch(*pid),
                ..header.clone()
            };
            Some(OutRecord {
                topic: partials_topic.to_string(),
                key: Some(partial_key(topic, partition).into_bytes()),
                payload: Some(encode(&h, bytes)),
                headers: None,
            })
        })
        .collect()
}

/// The latest readable partial of one input partition.
#[derive(Clone, Debug, PartialEq)]
pub struct Entry {
    pub header: PartialHeader,
    pub bytes: Vec<u8>,
    /// Where it was read (partials-topic partition, offset).
    pub at: (i32, i64),
}

/// Checks a partial's bytes (engine partition, T, bytes): `Err` with why
/// they cannot be folded.
pub type Validate = dyn Fn(u32, Millis, &[u8]) -> Result<(), String> + Send + Sync;

/// The latest readable partial per input partition, as read from the
/// partials topic in offset order.
#[derive(Debug, Default)]
pub struct Latest {
    parts: BTreeMap<u32, Entry>,
}

/// What [`Latest::fold_input`] found.
#[derive(Debug, PartialEq)]
pub enum FoldInput<'a> {
    /// Every expected partition has a partial: fold these at `t`.
    Ready {
        /// The newest T of the partials.
        t: Millis,
        /// Newest minus oldest T.
        spread: Millis,
        parts: Vec<(u32, &'a [u8])>,
    },
    /// Expected partitions without a partial (not folded: totals held back).
    Missing(Vec<u32>),
    /// Every partial says its engine has no T yet: nothing to state T of.
    NoClock,
}

impl Latest {
    /// One record of the partials topic, in offset order. A tombstone (no
    /// value) forgets the partition's partial. A refused record changes
    /// nothing (an older good partial stays). Per key the partial with the
    /// highest ownership epoch wins, ties to the latest: one with a lower
    /// epoch than the partial kept is refused (`StaleEpoch`), so a zombie's
    /// late partial never replaces the new owner's.
    pub fn apply(
        &mut self,
        key: Option<&[u8]>,
        value: Option<&[u8]>,
        at: (i32, i64),
        topics: &[String],
        validate: &Validate,
    ) -> Result<(), Refused> {
        let pid = parse_key(key, topics)?;
        let Some(value) = value else {
            self.parts.remove(&pid);
            return Ok(());
        };
        let (header, bytes) = decode(value)?;
        validate(pid, header.t, bytes).map_err(Refused::Undecodable)?;
        if let Some(kept) = self.parts.get(&pid)
            && kept.header.epoch > header.epoch
        {
            return Err(Refused::StaleEpoch {
                kept: kept.header.epoch,
                got: header.epoch,
            });
        }
        self.parts.insert(
            pid,
            Entry {
                header,
                bytes: bytes.to_vec(),
                at,
            },
        );
        Ok(())
    }

    pub fn get(&self, pid: u32) -> Option<&Entry> {
        self.parts.get(&pid)
    }

    pub fn len(&self) -> usize {
        self.parts.len()
    }

    pub fn is_empty(&self) -> bool {
        self.parts.is_empty()
    }

    /// The partials to fold for the input partitions `expected` (ascending):
    /// ready only when every one has a partial, and when no partial says the
    /// input has more partitions than `expected` lists (the layout read here
    /// is then older than the publisher's). T is the newest partial's T.
    /// Partials of partitions not expected are left out. `own` (the folder's
    /// own partitions, taken now at `own_t`, written with ownership epoch
    /// `own_epoch(partition)`) replaces what was read for them: fresher than
    /// the topic, and the last state at shutdown; unless what was read has a
    /// higher epoch (this instance lost the partition without knowing it
    /// yet: the new owner's partial wins).
    pub fn fold_input<'a>(
        &'a self,
        expected: &[u32],
        own: &'a [(u32, Vec<u8>)],
        own_t: Millis,
        own_epoch: &dyn Fn(u32) -> u64,
    ) -> FoldInput<'a> {
        let pick = |p: u32| -> Option<(Millis, u32, &'a [u8])> {
            let read = self.parts.get(&p);
            if let Some((_, b)) = own.iter().find(|(q, _)| *q == p)
                && read.is_none_or(|e| e.header.epoch <= own_epoch(p))
            {
                return Some((own_t, 0, b.as_slice()));
            }
            let e = read?;
            Some((e.header.t, e.header.input_partitions, e.bytes.as_slice()))
        };
        let missing: Vec<u32> = expected
            .iter()
            .copied()
            .filter(|p| pick(*p).is_none())
            .collect();
        if !missing.is_empty() || expected.is_empty() {
            return FoldInput::Missing(missing);
        }
        let mut parts = Vec::with_capacity(expected.len());
        let (mut newest, mut oldest) = (Millis::MIN, Millis::MAX);
        let mut claimed = 0u32;
        for p in expected {
            let Some((t, n, bytes)) = pick(*p) else {
                continue;
            };
            if t != NO_T {
                newest = newest.max(t);
                oldest = oldest.min(t);
            }
            claimed = claimed.max(n);
            parts.push((*p, bytes));
        }
        if claimed as usize > expected.len() {
            return FoldInput::Missing(Vec::new());
        }
        if newest == Millis::MIN {
            return FoldInput::NoClock;
        }
        FoldInput::Ready {
            t: newest,
            spread: newest - oldest,
            parts,
        }
    }
}

/// Partition counts of the input topics (config order); `None` until read.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Layout {
    pub counts: Vec<u32>,
}

impl Layout {
    /// Every input partition's engine number, ascending.
    pub fn pids(&self) -> Vec<u32> {
        let mut v: Vec<u32> = self
            .counts
            .iter()
            .enumerate()
            .flat_map(|(t, n)| (0..*n as i32).map(move |p| engine_pid(t, p)))
            .collect();
        v.sort_unstable();
        v
    }

    pub fn total(&self) -> u32 {
        self.counts.iter().sum()
    }
}

/// What the folder thread shares with the loop.
#[derive(Debug, Default)]
struct FolderView {
    latest: Latest,
    /// Every partition of the partials topic was read to its end once.
    caught_up: bool,
}

/// The folder's consumer: a thread reading the partials topic (all its
/// partitions assigned, from the beginning, never joining the group nor
/// committing) into [`Latest`].
pub struct PartialsReader {
    view: Arc<Mutex<FolderView>>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl PartialsReader {
    /// Starts the thread. `settings` are the consumer's librdkafka settings
    /// (security included). The consumer keeps `group.id` (librdkafka wants
    /// one, and it is the id the deployment's ACLs name) but never joins
    /// the group nor commits: it assigns its partitions itself.
    pub fn start(
        mut settings: BTreeMap<String, String>,
        topic: String,
        input_topics: Vec<String>,
        validate: Arc<Validate>,
    ) -> anyhow::Result<PartialsReader> {
        settings.remove("statistics.interval.ms");
        settings.remove("group.instance.id");
        settings.remove("partition.assignment.strategy");
        settings.insert("client.id".into(), "cxpulse-partials".into());
        settings.insert("enable.partition.eof".into(), "true".into());
        settings.insert("auto.offset.reset".into(), "earliest".into());
        let consumer: BaseConsumer<PartialsCtx> = client::create(&settings, PartialsCtx)?;
        let view = Arc::new(Mutex::new(FolderView::default()));
        let stop = Arc::new(AtomicBool::new(false));
        let (v, s) = (view.clone(), stop.clone());
        let thread = std::thread::Builder::new()
            .name("cxpulse-folder".into())
            .spawn(move || read_partials(&consumer, &topic, &input_topics, &*validate, &v, &s))?;
        Ok(PartialsReader {
            view,
            stop,
            thread: Some(thread),
        })
    }

    fn view(&self) -> MutexGuard<'_, FolderView> {
        self.view.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Whether the partials topic was read to its end once.
    pub fn caught_up(&self) -> bool {
        self.view().caught_up
    }

    /// Runs `f` over the latest partials (under the folder's lock).
    pub fn with_latest<T>(&self, f: impl FnOnce(&Latest) -> T) -> T {
        f(&self.view().latest)
    }
}

impl Drop for PartialsReader {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        // The thread notices within one poll (200 ms); not joined here, so
        // the loop never waits on librdkafka's close.
        drop(self.thread.take());
    }
}

/// The folder thread: assign every partition of `topic` from the beginning,
/// apply each record, note each partition's end.
fn read_partials(
    consumer: &BaseConsumer<PartialsCtx>,
    topic: &str,
    input_topics: &[String],
    validate: &Validate,
    view: &Mutex<FolderView>,
    stop: &AtomicBool,
) {
    let lock = || view.lock().unwrap_or_else(|e| e.into_inner());
    // The partitions of the partials topic (it may not exist yet).
    let partitions: Vec<i32> = loop {
        if stop.load(Ordering::Relaxed) {
            return;
        }
        match consumer.fetch_metadata(Some(topic), REQUEST_TIMEOUT) {
            Ok(md) => {
                let ps: Vec<i32> = md
                    .topics()
                    .iter()
                    .filter(|t| t.name() == topic && t.error().is_none())
                    .flat_map(|t| t.partitions().iter().map(|p| p.id()))
                    .collect();
                if !ps.is_empty() {
                    break ps;
                }
                telemetry::PartialsTopicTrouble {
                    what: "missing",
                    topic,
                    error: &"the partials topic has no partitions yet",
                }
                .emit();
            }
            Err(e) => telemetry::PartialsTopicTrouble {
                what: "metadata",
                topic,
                error: &e,
            }
            .emit(),
        }
        sleep_unless_stopped(Duration::from_secs(1), stop);
    };
    let mut tpl = TopicPartitionList::new();
    for p in &partitions {
        if let Err(e) = tpl.add_partition_offset(topic, *p, Offset::Beginning) {
            telemetry::PartialsTopicTrouble {
                what: "assign",
                topic,
                error: &e,
            }
            .emit();
        }
    }
    if let Err(e) = consumer.assign(&tpl) {
        telemetry::PartialsTopicTrouble {
            what: "assign",
            topic,
            error: &e,
        }
        .emit();
        return;
    }
    let mut at_end: HashMap<i32, bool> = partitions.iter().map(|p| (*p, false)).collect();
    while !stop.load(Ordering::Relaxed) {
        match consumer.poll(Duration::from_millis(200)) {
            None => {}
            Some(Ok(m)) => {
                let at = (m.partition(), m.offset());
                let r = lock()
                    .latest
                    .apply(m.key(), m.payload(), at, input_topics, validate);
                if let Err(why) = r {
                    let key = m.key().map(String::from_utf8_lossy).unwrap_or_default();
                    telemetry::PartialRefused {
                        reason: why.reason(),
                        key: &key,
                        partition: at.0,
                        offset: at.1,
                        detail: &why,
                    }
                    .emit();
                }
            }
            Some(Err(KafkaError::PartitionEOF(p))) => {
                at_end.insert(p, true);
                if at_end.values().all(|e| *e) {
                    lock().caught_up = true;
                }
            }
            Some(Err(e)) => telemetry::PartialsTopicTrouble {
                what: "consume",
                topic,
                error: &e,
            }
            .emit(),
        }
    }
}

fn sleep_unless_stopped(d: Duration, stop: &AtomicBool) {
    let step = Duration::from_millis(100);
    let mut left = d;
    while !left.is_zero() && !stop.load(Ordering::Relaxed) {
        let s = left.min(step);
        std::thread::sleep(s);
        left -= s;
    }
}

/// Context of the partials consumer: logs and errors to telemetry.
pub struct PartialsCtx;

impl ClientContext for PartialsCtx {
    fn log(&self, level: RDKafkaLogLevel, fac: &str, log_message: &str) {
        telemetry::ClientLog {
            client: "partials-consumer",
            level,
            facility: fac,
            message: log_message,
        }
        .emit();
    }

    fn error(&self, error: KafkaError, reason: &str) {
        // The end of a partition is how the reader knows it caught up.
        if matches!(error, KafkaError::PartitionEOF(_))
            || error.rdkafka_error_code() == Some(RDKafkaErrorCode::PartitionEOF)
        {
            return;
        }
        telemetry::KafkaClientError {
            client: "partials-consumer",
            brokers: "",
            error: &error,
            reason,
        }
        .emit();
    }
}

impl ConsumerContext for PartialsCtx {}

/// Creates the partials topic (compacted, 1 partition, the broker's default
/// replication) unless it exists. Blocking; retried by the caller.
fn ensure_topic(
    admin: &AdminClient<DefaultClientContext>,
    rt: &tokio::runtime::Runtime,
    topic: &str,
) -> anyhow::Result<bool> {
    // Segments roll hourly so that compaction (which skips the active
    // segment) keeps what a new folder reads to about an hour of records.
    let compact = NewTopic::new(topic, 1, TopicReplication::Fixed(-1))
        .set("cleanup.policy", "compact")
        .set("segment.ms", "3600000");
    if read_layout(admin.inner(), &[topic.to_string()]).is_ok() {
        return Ok(false);
    }
    let opts = AdminOptions::new()
        .operation_timeout(Some(REQUEST_TIMEOUT))
        .request_timeout(Some(REQUEST_TIMEOUT));
    let results = rt.block_on(admin.create_topics([&compact], &opts))?;
    match results.into_iter().next() {
        Some(Ok(_)) => Ok(true),
        Some(Err((_, RDKafkaErrorCode::TopicAlreadyExists))) => Ok(false),
        Some(Err((_, code))) => anyhow::bail!("cannot create topic {topic}: {code:?}"),
        None => anyhow::bail!("cannot create topic {topic}: no answer"),
    }
}

/// The partition counts of `topics` (config order); errors when one is
/// unknown to the broker.
fn read_layout<C: ClientContext>(
    client: &rdkafka::client::Client<C>,
    topics: &[String],
) -> anyhow::Result<Layout> {
    let mut counts = Vec::with_capacity(topics.len());
    for t in topics {
        let md = client.fetch_metadata(Some(t), REQUEST_TIMEOUT)?;
        let n = md
            .topics()
            .iter()
            .find(|x| x.name() == t && x.error().is_none())
            .map_or(0, |x| x.partitions().len() as u32);
        anyhow::ensure!(n > 0, "input topic {t} has no partitions (yet)");
        counts.push(n);
    }
    Ok(Layout { counts })
}

/// A thread that reads the input topics' partition counts every
/// [`LAYOUT_REFRESH`] (every second until known) and creates the partials
/// topic if missing (checked by metadata first; tried every second until it
/// exists).
struct LayoutWatch {
    layout: Arc<Mutex<Option<Layout>>>,
    stop: Arc<AtomicBool>,
}

impl LayoutWatch {
    fn start(
        settings: &BTreeMap<String, String>,
        partials_topic: String,
        input_topics: Vec<String>,
    ) -> anyhow::Result<LayoutWatch> {
        // Its metadata reads of the input topics must not create them.
        let mut settings = settings.clone();
        settings.insert("allow.auto.create.topics".into(), "false".into());
        let admin: AdminClient<DefaultClientContext> =
            client::create(&settings, DefaultClientContext)?;
        let layout = Arc::new(Mutex::new(None));
        let stop = Arc::new(AtomicBool::new(false));
        let (l, s) = (layout.clone(), stop.clone());
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        std::thread::Builder::new()
            .name("cxpulse-layout".into())
            .spawn(move || {
                let mut topic_ok = false;
                while !s.load(Ordering::Relaxed) {
                    let layout_ok = match read_layout(admin.inner(), &input_topics) {
                        Ok(found) => {
                            *l.lock().unwrap_or_else(|e| e.into_inner()) = Some(found);
                            true
                        }
                        Err(e) => {
                            telemetry::PartialsTopicTrouble {
                                what: "input-layout",
                                topic: &partials_topic,
                                error: &e,
                            }
                            .emit();
                            false
                        }
                    };
                    if !topic_ok {
                        match ensure_topic(&admin, &rt, &partials_topic) {
                            Ok(created) => {
                                topic_ok = true;
                                if created {
                                    telemetry::PartialsTopicCreated {
                                        topic: &partials_topic,
                                    }
                                    .emit();
                                }
                            }
                            Err(e) => telemetry::PartialsTopicTrouble {
                                what: "create",
                                topic: &partials_topic,
                                error: &e,
                            }
                            .emit(),
                        }
                    }
                    let wait = if topic_ok && layout_ok {
                        LAYOUT_REFRESH
                    } else {
                        Duration::from_secs(1)
                    };
                    sleep_unless_stopped(wait, &s);
                }
            })?;
        Ok(LayoutWatch { layout, stop })
    }

    fn get(&self) -> Option<Layout> {
        self.layout
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }
}

impl Drop for LayoutWatch {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

/// A fold of partials into series: (T, partials) -> families.
pub type Fold<'a> =
    dyn Fn(Millis, &[(u32, &[u8])]) -> Result<Vec<crate::export::Family>, String> + 'a;

/// Totals the folder can publish now.
pub struct Totals {
    pub t: Millis,
    pub families: Vec<crate::export::Family>,
}

/// The loop's side of fleet totals: publishing partials, reading everyone's
/// (every instance reads the partials topic, so the duty moves without a
/// catch-up), and the folding duty while this instance owns input
/// partition 0.
pub struct FleetTotals {
    pub partials_topic: String,
    input_topics: Vec<String>,
    instance: String,
    layout: LayoutWatch,
    reader: PartialsReader,
    folding: bool,
}

impl FleetTotals {
    /// Starts the layout thread (which creates the partials topic if
    /// missing) and the reader of the partials topic. `validate` checks a
    /// partial read back before it is kept.
    pub fn new(
        k: &KafkaSection,
        instance: String,
        validate: Arc<Validate>,
    ) -> anyhow::Result<Self> {
        let partials_topic = partials_topic(k);
        let consumer_settings = client::settings(k, Role::Consumer)?;
        let producer_settings = client::settings(k, Role::Producer)?;
        let layout = LayoutWatch::start(
            &producer_settings,
            partials_topic.clone(),
            k.input_topics.clone(),
        )?;
        let reader = PartialsReader::start(
            consumer_settings,
            partials_topic.clone(),
            k.input_topics.clone(),
            validate,
        )?;
        Ok(FleetTotals {
            partials_topic,
            input_topics: k.input_topics.clone(),
            instance,
            layout,
            reader,
            folding: false,
        })
    }

    /// The partials-topic records of `partials`, taken at `t`, each with its
    /// partition's ownership epoch `epoch(partition)`.
    pub fn partial_records(
        &self,
        t: Millis,
        partials: &[(u32, Vec<u8>)],
        epoch: &dyn Fn(u32) -> u64,
    ) -> Vec<OutRecord> {
        let header = PartialHeader {
            t,
            epoch: 0,
            input_partitions: self.layout.get().map_or(0, |l| l.total()),
            instance: self.instance.clone(),
        };
        partial_records(
            &self.partials_topic,
            &self.input_topics,
            &header,
            partials,
            epoch,
        )
    }

    pub fn is_folder(&self) -> bool {
        self.folding
    }

    /// Takes up or gives up the folding duty; returns whether it changed.
    pub fn set_folder(&mut self, active: bool) -> bool {
        if active == self.folding {
            return false;
        }
        self.folding = active;
        telemetry::FolderDuty {
            active,
            partials_topic: &self.partials_topic,
        }
        .emit();
        true
    }

    /// The folder's totals now, when it can publish them: the partials topic
    /// read to its end once, the input layout known, every input partition
    /// with a partial, and the fold accepting them. Otherwise `None`, said
    /// why (logged, `cxpulse_fleet_partitions_missing`). `own`: this
    /// instance's partials, taken at `own_t` ([`NO_T`]: its engine has no T
    /// yet; they replace what the topic holds for them, unless it holds one
    /// with a higher ownership epoch than `own_epoch(partition)`).
    pub fn totals(
        &self,
        fold: &Fold<'_>,
        own: &[(u32, Vec<u8>)],
        own_t: Millis,
        own_epoch: &dyn Fn(u32) -> u64,
    ) -> Option<Totals> {
        if !self.folding {
            return None;
        }
        let folder = &self.reader;
        let held = |why: &str, missing: usize| {
            telemetry::TotalsHeldBack { why, missing }.emit();
            None
        };
        if !folder.caught_up() {
            return held("the partials topic is not read to its end yet", 0);
        }
        let Some(layout) = self.layout.get() else {
            return held("the input topics' partition counts are not known yet", 0);
        };
        let expected = layout.pids();
        folder.with_latest(
            |latest| match latest.fold_input(&expected, own, own_t, own_epoch) {
                FoldInput::Missing(m) if m.is_empty() => held(
                    "a partial counts more input partitions than the metadata read here",
                    0,
                ),
                FoldInput::Missing(m) => held("input partitions without a partial", m.len()),
                FoldInput::NoClock => held("no partition has applied an event yet (no T)", 0),
                FoldInput::Ready { t, spread, parts } => match fold(t, &parts) {
                    Ok(families) => {
                        telemetry::TotalsFolded {
                            partitions: parts.len(),
                            spread_ms: spread,
                        }
                        .emit();
                        Some(Totals { t, families })
                    }
                    Err(e) => held(&format!("the fold refused the partials: {e}"), 0),
                },
            },
        )
    }
}

/// The check of a partial read back from the partials topic: the engine
/// decodes it (cheap: no fold).
pub fn validator(prm: crate::state::params::Params) -> Arc<Validate> {
    Arc::new(move |_pid, _t, bytes| {
        crate::engine::fleet::check_partial(&prm, bytes).map_err(|e| e.to_string())
    })
}

/// Who publishes: `kafka.group_instance_id` when set, else `$HOSTNAME`, plus the pid.
pub fn instance_id(group_instance_id: &str) -> String {
    if !group_instance_id.is_empty() {
        return group_instance_id.to_string();
    }
    let host = std::env::var("HOSTNAME").unwrap_or_else(|_| "cxpulse".into());
    format!("{host}-{}", std::process::id())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn topics() -> Vec<String> {
        vec!["events".to_string(), "more".to_string()]
    }

    fn header(t: Millis, n: u32) -> PartialHeader {
        PartialHeader {
            t,
            epoch: 0,
            input_partitions: n,
            instance: "pod-1".into(),
        }
    }

    fn accept(_: u32, _: Millis, b: &[u8]) -> Result<(), String> {
        if b.starts_with(b"bad") {
            Err("corrupt partial".into())
        } else {
            Ok(())
        }
    }

    #[test]
    fn header_round_trips_and_keeps_the_partial_bytes() {
        let h = header(1_700_000_000_123, 6);
        let v = encode(&h, b"\x00\x01partial");
        assert_eq!(&v[..4], b"CXPP");
        assert_eq!(v[4], FORMAT_VERSION);
        let (back, bytes) = decode(&v).unwrap();
        assert_eq!(back, h);
        assert_eq!(bytes, b"\x00\x01partial");
        // An empty partial and an empty instance id are fine too.
        let h = PartialHeader {
            t: -5,
            epoch: 7,
            input_partitions: 0,
            instance: String::new(),
        };
        let v = encode(&h, b"");
        assert_eq!(v.len(), FIXED_HEADER);
        assert_eq!(decode(&v).unwrap(), (h, &b""[..]));
    }

    #[test]
    fn bad_values_are_refused_with_a_reason_never_a_panic() {
        let good = encode(&header(10, 2), b"p");
        assert_eq!(decode(b"").unwrap_err(), Refused::BadMagic);
        assert_eq!(decode(b"{\"json\":1}").unwrap_err(), Refused::BadMagic);
        let mut v2 = good.clone();
        v2[4] = 3;
        assert_eq!(decode(&v2).unwrap_err(), Refused::BadVersion(3));
        assert_eq!(decode(b"CXPP").unwrap_err(), Refused::Truncated);
        // Every cut inside the header (5 fixed bytes + id "pod-1").
        for cut in 5..FIXED_HEADER + 5 {
            assert_eq!(
                decode(&good[..cut]).unwrap_err(),
                Refused::Truncated,
                "{cut}"
            );
        }
        assert_eq!(decode(&good).unwrap().1, b"p");
        assert_eq!(Refused::BadVersion(3).reason(), "bad_version");
    }

    #[test]
    fn keys_name_an_input_partition_of_this_config() {
        let ts = topics();
        assert_eq!(parse_key(Some(b"events/0"), &ts), Ok(0));
        assert_eq!(parse_key(Some(b"events/3"), &ts), Ok(3));
        assert_eq!(parse_key(Some(b"more/2"), &ts), Ok((1 << 20) | 2));
        assert_eq!(input_of((1 << 20) | 2, &ts), Some(("more", 2)));
        assert_eq!(input_of(2 << 20, &ts), None);
        // A topic name with a slash: the partition is after the last one.
        let slashed = vec!["a/b".to_string()];
        assert_eq!(parse_key(Some(b"a/b/1"), &slashed), Ok(1));
        for bad in [
            &b"events"[..],
            b"events/",
            b"events/x",
            b"events/-1",
            b"events/99999999",
            b"\xff\xfe/1",
        ] {
            assert_eq!(parse_key(Some(bad), &ts), Err(Refused::BadKey), "{bad:?}");
        }
        assert_eq!(parse_key(None, &ts), Err(Refused::BadKey));
        assert_eq!(
            parse_key(Some(b"other/1"), &ts),
            Err(Refused::UnknownTopic("other".into()))
        );
    }

    #[test]
    fn records_are_keyed_by_input_partition_and_carry_the_header() {
        let ts = topics();
        let recs = partial_records(
            "g-cxpulse-partials",
            &ts,
            &header(42, 3),
            &[
                (0, b"a".to_vec()),
                ((1 << 20) | 1, b"b".to_vec()),
                (5 << 20, b"c".to_vec()),
            ],
            &|pid| u64::from(pid & 0xF) + 10,
        );
        assert_eq!(recs.len(), 2, "the unconfigured topic index 5 is left out");
        assert_eq!(recs[0].key.as_deref(), Some(&b"events/0"[..]));
        assert_eq!(recs[1].key.as_deref(), Some(&b"more/1"[..]));
        assert!(recs.iter().all(|r| r.topic == "g-cxpulse-partials"));
        let (h, b) = decode(recs[1].payload.as_deref().unwrap()).unwrap();
        assert_eq!((h.t, h.input_partitions, b), (42, 3, &b"b"[..]));
        assert_eq!(h.epoch, 11, "more/1's own epoch");
        let (h, _) = decode(recs[0].payload.as_deref().unwrap()).unwrap();
        assert_eq!(h.epoch, 10, "events/0's own epoch");
    }

    #[test]
    fn the_topic_name_rule() {
        let mut k = KafkaSection {
            group_id: "shop".into(),
            ..KafkaSection::default()
        };
        assert_eq!(partials_topic(&k), "shop-cxpulse-partials");
        k.partials_topic = "fleet-partials".into();
        assert_eq!(partials_topic(&k), "fleet-partials");
    }

    /// Records in offset order: the latest readable one per key wins; a bad
    /// record is refused and leaves the previous good partial in place; a
    /// tombstone forgets the key.
    #[test]
    fn latest_per_key_and_bad_records_are_skipped() {
        let ts = topics();
        let mut l = Latest::default();
        let mut off = 0;
        let mut put = |l: &mut Latest, key: &[u8], v: Option<Vec<u8>>| {
            off += 1;
            l.apply(Some(key), v.as_deref(), (0, off), &ts, &accept)
        };
        put(
            &mut l,
            b"events/0",
            Some(encode(&header(100, 2), b"p0-old")),
        )
        .unwrap();
        put(&mut l, b"events/1", Some(encode(&header(90, 2), b"p1"))).unwrap();
        put(
            &mut l,
            b"events/0",
            Some(encode(&header(110, 2), b"p0-new")),
        )
        .unwrap();
        // Garbage: every kind is refused, nothing changes.
        assert_eq!(
            put(&mut l, b"events/0", Some(b"garbage".to_vec())),
            Err(Refused::BadMagic)
        );
        assert_eq!(
            put(
                &mut l,
                b"events/1",
                Some(encode(&header(200, 2), b"bad bytes"))
            ),
            Err(Refused::Undecodable("corrupt partial".into()))
        );
        assert_eq!(
            put(&mut l, b"nope/0", Some(encode(&header(200, 2), b"x"))),
            Err(Refused::UnknownTopic("nope".into()))
        );
        // A key no longer in the input (say a partition of a layout gone):
        // kept, but not folded.
        put(&mut l, b"events/5", Some(encode(&header(300, 2), b"p5"))).unwrap();
        assert_eq!(l.len(), 3);
        assert_eq!(l.get(0).unwrap().bytes, b"p0-new");
        assert_eq!(l.get(0).unwrap().at, (0, 3));
        assert_eq!(l.get(1).unwrap().bytes, b"p1");
        assert_eq!(l.get(1).unwrap().header.t, 90);
        match l.fold_input(&[0, 1], &[], 0, &|_| 0) {
            FoldInput::Ready { t, spread, parts } => {
                assert_eq!(t, 110, "the newest partial's T");
                assert_eq!(spread, 20);
                assert_eq!(parts, vec![(0, &b"p0-new"[..]), (1, &b"p1"[..])]);
            }
            other => panic!("{other:?}"),
        }
        // Partition 2 expected but without a partial: held back, named.
        assert_eq!(
            l.fold_input(&[0, 1, 2], &[], 0, &|_| 0),
            FoldInput::Missing(vec![2])
        );
        // The folder's own partition 2, taken now at T 120: folded with
        // the others, replacing what the topic holds for it.
        let own = vec![(2, b"p2-own".to_vec())];
        match l.fold_input(&[0, 1, 2], &own, 120, &|_| 0) {
            FoldInput::Ready { t, spread, parts } => {
                assert_eq!((t, spread), (120, 30));
                assert_eq!(
                    parts,
                    vec![(0, &b"p0-new"[..]), (1, &b"p1"[..]), (2, &b"p2-own"[..])]
                );
            }
            other => panic!("{other:?}"),
        }
        let own = vec![(0, b"p0-own".to_vec())];
        match l.fold_input(&[0, 1], &own, 95, &|_| 0) {
            FoldInput::Ready { t, parts, .. } => {
                assert_eq!(
                    t, 95,
                    "p1 at 90, own p0 at 95 (the topic's p0 at 110 is replaced)"
                );
                assert_eq!(parts, vec![(0, &b"p0-own"[..]), (1, &b"p1"[..])]);
            }
            other => panic!("{other:?}"),
        }
        // Partials of engines without T count (their counters), but state
        // no T; only partials without T: nothing to publish yet.
        let no_t = vec![(0, b"p0-no-t".to_vec())];
        match l.fold_input(&[0, 1], &no_t, NO_T, &|_| 0) {
            FoldInput::Ready { t, spread, parts } => {
                assert_eq!((t, spread), (90, 0));
                assert_eq!(parts, vec![(0, &b"p0-no-t"[..]), (1, &b"p1"[..])]);
            }
            other => panic!("{other:?}"),
        }
        let mut none = Latest::default();
        none.apply(
            Some(b"events/1"),
            Some(&encode(&header(NO_T, 2), b"x")),
            (0, 99),
            &ts,
            &accept,
        )
        .unwrap();
        assert_eq!(
            none.fold_input(&[0, 1], &no_t, NO_T, &|_| 0),
            FoldInput::NoClock
        );
        // A tombstone forgets partition 1.
        put(&mut l, b"events/1", None).unwrap();
        assert_eq!(
            l.fold_input(&[0, 1], &[], 0, &|_| 0),
            FoldInput::Missing(vec![1])
        );
        // No layout yet: nothing to fold.
        assert_eq!(
            l.fold_input(&[], &[], 0, &|_| 0),
            FoldInput::Missing(vec![])
        );
    }

    #[test]
    fn a_partial_counting_more_partitions_than_known_holds_the_fold_back() {
        let ts = topics();
        let mut l = Latest::default();
        l.apply(
            Some(b"events/0"),
            Some(&encode(&header(1, 3), b"a")),
            (0, 0),
            &ts,
            &accept,
        )
        .unwrap();
        l.apply(
            Some(b"events/1"),
            Some(&encode(&header(1, 2), b"b")),
            (0, 1),
            &ts,
            &accept,
        )
        .unwrap();
        // The publisher of partition 0 saw 3 input partitions; this layout 2.
        assert_eq!(
            l.fold_input(&[0, 1], &[], 0, &|_| 0),
            FoldInput::Missing(vec![])
        );
    }

    /// A version-1 value (no epoch; written before partials were fenced)
    /// is read as epoch 0.
    #[test]
    fn version_1_values_are_read_with_epoch_0() {
        let mut v = Vec::new();
        v.extend_from_slice(b"CXPP");
        v.push(1);
        v.extend_from_slice(&1234i64.to_le_bytes());
        v.extend_from_slice(&6u32.to_le_bytes());
        v.extend_from_slice(&2u16.to_le_bytes());
        v.extend_from_slice(b"idpartial");
        let (h, rest) = decode(&v).unwrap();
        assert_eq!((h.t, h.epoch, h.input_partitions), (1234, 0, 6));
        assert_eq!((h.instance.as_str(), rest), ("id", &b"partial"[..]));
        assert_eq!(decode(&v[..FIXED_HEADER_V1 - 1]), Err(Refused::Truncated));
        // Version 2 puts the epoch after T.
        let h2 = PartialHeader {
            epoch: 0x0102_0304_0506_0708,
            ..h.clone()
        };
        let v2 = encode(&h2, b"p");
        assert_eq!(v2[4], 2);
        assert_eq!(&v2[13..21], &0x0102_0304_0506_0708u64.to_le_bytes());
        assert_eq!(decode(&v2).unwrap(), (h2, &b"p"[..]));
    }

    /// Per key the partial with the highest ownership epoch wins, ties to
    /// the latest: a zombie's late partial (older epoch) is refused and
    /// counted as `stale_epoch`, whatever its T.
    #[test]
    fn an_older_epoch_never_replaces_a_newer_partial() {
        let ts = topics();
        let mut l = Latest::default();
        let with = |t: Millis, epoch: u64| PartialHeader {
            t,
            epoch,
            input_partitions: 2,
            instance: "x".into(),
        };
        let mut off = 0;
        let mut put = |l: &mut Latest, h: PartialHeader, b: &[u8]| {
            off += 1;
            l.apply(
                Some(b"events/0"),
                Some(&encode(&h, b)),
                (0, off),
                &ts,
                &accept,
            )
        };
        put(&mut l, with(100, 3), b"old owner").unwrap();
        put(&mut l, with(90, 4), b"new owner").unwrap();
        assert_eq!(
            l.get(0).unwrap().bytes,
            b"new owner",
            "a higher epoch wins, even with an older T"
        );
        let e = put(&mut l, with(500, 3), b"zombie").unwrap_err();
        assert_eq!(e, Refused::StaleEpoch { kept: 4, got: 3 });
        assert_eq!(e.reason(), "stale_epoch");
        assert_eq!(l.get(0).unwrap().bytes, b"new owner");
        put(&mut l, with(95, 4), b"new owner, later").unwrap();
        assert_eq!(
            l.get(0).unwrap().bytes,
            b"new owner, later",
            "ties: the latest"
        );
        // The folder's own partial (taken now) replaces what was read only
        // when its own epoch is not older: a zombie folder folds the new
        // owner's partial, not its own.
        put(&mut l, with(95, 4), b"p0").unwrap();
        l.apply(
            Some(b"events/1"),
            Some(&encode(&with(95, 1), b"p1")),
            (0, 99),
            &ts,
            &accept,
        )
        .unwrap();
        let own = vec![(0, b"mine".to_vec())];
        let parts = |epoch: u64| match l.fold_input(&[0, 1], &own, 200, &move |_| epoch) {
            FoldInput::Ready { parts, .. } => {
                parts.iter().map(|(_, b)| b.to_vec()).collect::<Vec<_>>()
            }
            other => panic!("{other:?}"),
        };
        assert_eq!(
            parts(3),
            vec![b"p0".to_vec(), b"p1".to_vec()],
            "own epoch 3 < 4 read"
        );
        assert_eq!(
            parts(4),
            vec![b"mine".to_vec(), b"p1".to_vec()],
            "own epoch 4 = 4 read"
        );
        assert_eq!(parts(5), vec![b"mine".to_vec(), b"p1".to_vec()]);
    }

    #[test]
    fn layout_lists_every_input_partition() {
        let l = Layout { counts: vec![3, 2] };
        assert_eq!(l.pids(), vec![0, 1, 2, 1 << 20, (1 << 20) | 1]);
        assert_eq!(l.total(), 5);
    }
}
