//! The state topic's records: keys, values, and choosing the snapshot to load
//! from the latest record of every key (no Kafka here; unit-tested).
//!
//! Keys (topic names never hold `/`):
//! - `<topic>/<partition>/<epoch>/<A|B>/<i>`: chunk `i` of the snapshot in a slot;
//! - `<topic>/<partition>/<epoch>/<A|B>/manifest`: that slot's manifest, written
//!   after every chunk of it was acknowledged;
//! - `<topic>/<partition>/<epoch>/claim`: an owner took the partition with this epoch.
//!
//! Values start with `CXST`, a format version byte and a kind byte; integers
//! are little-endian. See docs/state-store.md for the full layout.

use std::collections::HashMap;
use std::fmt;

use xxhash_rust::xxh3::xxh3_64;

use crate::config::is_valid_topic_name;

pub const MAGIC: &[u8; 4] = b"CXST";
pub const VERSION: u8 = 1;
const KIND_CHUNK: u8 = 1;
const KIND_MANIFEST: u8 = 2;
const KIND_CLAIM: u8 = 3;
/// Epochs above this are refused (so that `max + 1` never overflows, even
/// after a crafted record).
pub const MAX_EPOCH: u64 = 1 << 62;
/// Most chunks of one snapshot (its manifest then stays under 800 KB, within
/// Kafka's default record size); more are refused by `save` and, in a
/// crafted manifest, by the reader.
pub const MAX_CHUNKS: u32 = 1 << 16;
/// Bytes before the data of a chunk value.
pub const CHUNK_HEADER: usize = 4 + 1 + 1 + 8 + 8 + 4;

/// One of the two alternating places of a snapshot within an epoch.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Slot {
    A,
    B,
}

impl Slot {
    pub fn other(self) -> Slot {
        match self {
            Slot::A => Slot::B,
            Slot::B => Slot::A,
        }
    }
    pub fn index(self) -> usize {
        match self {
            Slot::A => 0,
            Slot::B => 1,
        }
    }
    fn as_str(self) -> &'static str {
        match self {
            Slot::A => "A",
            Slot::B => "B",
        }
    }
}

/// What a key names.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum KeyKind {
    Chunk(Slot, u32),
    Manifest(Slot),
    Claim,
}

/// A parsed state-topic key.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Key {
    pub topic: String,
    pub partition: i32,
    pub epoch: u64,
    pub kind: KeyKind,
}

impl fmt::Display for Key {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}/{}/", self.topic, self.partition, self.epoch)?;
        match self.kind {
            KeyKind::Chunk(s, i) => write!(f, "{}/{i}", s.as_str()),
            KeyKind::Manifest(s) => write!(f, "{}/manifest", s.as_str()),
            KeyKind::Claim => write!(f, "claim"),
        }
    }
}

impl Key {
    pub fn new(topic: &str, partition: i32, epoch: u64, kind: KeyKind) -> Key {
        Key {
            topic: topic.to_string(),
            partition,
            epoch,
            kind,
        }
    }

    /// Parses a key; the error says what is wrong with it.
    pub fn parse(bytes: &[u8]) -> Result<Key, String> {
        let s = std::str::from_utf8(bytes).map_err(|_| "key is not UTF-8".to_string())?;
        let parts: Vec<&str> = s.split('/').collect();
        if !(4..=5).contains(&parts.len()) {
            return Err("key is not <topic>/<partition>/<epoch>/...".into());
        }
        if !is_valid_topic_name(parts[0]) {
            return Err("key does not start with a topic name".into());
        }
        let partition: i32 = parts[1]
            .parse()
            .ok()
            .filter(|p| *p >= 0)
            .ok_or("key has no partition number")?;
        let epoch: u64 = parts[2]
            .parse()
            .ok()
            .filter(|e| *e <= MAX_EPOCH)
            .ok_or("key has no epoch (or one out of range)")?;
        let slot = |x: &str| match x {
            "A" => Ok(Slot::A),
            "B" => Ok(Slot::B),
            _ => Err("key has no slot A or B".to_string()),
        };
        let kind = match parts[3..] {
            ["claim"] => KeyKind::Claim,
            [s, "manifest"] => KeyKind::Manifest(slot(s)?),
            [s, i] => KeyKind::Chunk(
                slot(s)?,
                i.parse()
                    .ok()
                    .filter(|i| *i < MAX_CHUNKS)
                    .ok_or("key has no chunk number")?,
            ),
            _ => return Err("key names no chunk, manifest or claim".into()),
        };
        Ok(Key {
            topic: parts[0].to_string(),
            partition,
            epoch,
            kind,
        })
    }

    /// `<topic>/<partition>/`: the prefix of every key of an input partition.
    pub fn prefix(topic: &str, partition: i32) -> String {
        format!("{topic}/{partition}/")
    }
}

fn header(kind: u8, cap: usize) -> Vec<u8> {
    let mut v = Vec::with_capacity(cap);
    v.extend_from_slice(MAGIC);
    v.push(VERSION);
    v.push(kind);
    v
}

/// A chunk's value: header (epoch, seq, index) then the data.
pub fn chunk_value(epoch: u64, seq: u64, index: u32, data: &[u8]) -> Vec<u8> {
    let mut v = header(KIND_CHUNK, CHUNK_HEADER + data.len());
    v.extend_from_slice(&epoch.to_le_bytes());
    v.extend_from_slice(&seq.to_le_bytes());
    v.extend_from_slice(&index.to_le_bytes());
    v.extend_from_slice(data);
    v
}

/// A claim's value: the epoch and the wall-clock time of the claim (ms).
pub fn claim_value(epoch: u64, at_ms: i64) -> Vec<u8> {
    let mut v = header(KIND_CLAIM, 22);
    v.extend_from_slice(&epoch.to_le_bytes());
    v.extend_from_slice(&at_ms.to_le_bytes());
    v
}

/// A snapshot's manifest.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Manifest {
    pub epoch: u64,
    pub seq: u64,
    pub next_offset: i64,
    pub total_len: u64,
    /// XXH3-64 of the whole snapshot.
    pub checksum: u64,
    /// (length, XXH3-64) of each chunk's data.
    pub chunks: Vec<(u32, u64)>,
}

impl Manifest {
    /// The manifest of `bytes` cut in chunks of `chunk_bytes`.
    pub fn of(
        epoch: u64,
        seq: u64,
        next_offset: i64,
        bytes: &[u8],
        chunk_bytes: usize,
    ) -> Manifest {
        Manifest {
            epoch,
            seq,
            next_offset,
            total_len: bytes.len() as u64,
            checksum: xxh3_64(bytes),
            chunks: bytes
                .chunks(chunk_bytes.max(1))
                .map(|c| (c.len() as u32, xxh3_64(c)))
                .collect(),
        }
    }

    /// Its value: header, fields, one (len, checksum) per chunk, then the
    /// XXH3-64 of everything before it.
    pub fn encode(&self) -> Vec<u8> {
        let mut v = header(KIND_MANIFEST, 56 + 12 * self.chunks.len() + 8);
        v.extend_from_slice(&self.epoch.to_le_bytes());
        v.extend_from_slice(&self.seq.to_le_bytes());
        v.extend_from_slice(&self.next_offset.to_le_bytes());
        v.extend_from_slice(&self.total_len.to_le_bytes());
        v.extend_from_slice(&self.checksum.to_le_bytes());
        v.extend_from_slice(&(self.chunks.len() as u32).to_le_bytes());
        for (len, sum) in &self.chunks {
            v.extend_from_slice(&len.to_le_bytes());
            v.extend_from_slice(&sum.to_le_bytes());
        }
        let sum = xxh3_64(&v);
        v.extend_from_slice(&sum.to_le_bytes());
        v
    }
}

/// A decoded value.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Value<'a> {
    Chunk {
        epoch: u64,
        seq: u64,
        index: u32,
        data: &'a [u8],
    },
    Manifest(Manifest),
    Claim {
        epoch: u64,
    },
}

struct Reader<'a> {
    b: &'a [u8],
    at: usize,
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], String> {
        let end = self.at.checked_add(n).filter(|e| *e <= self.b.len());
        match end {
            Some(end) => {
                let s = &self.b[self.at..end];
                self.at = end;
                Ok(s)
            }
            None => Err("value is truncated".into()),
        }
    }
    fn u32(&mut self) -> Result<u32, String> {
        let s = self.take(4)?;
        Ok(u32::from_le_bytes([s[0], s[1], s[2], s[3]]))
    }
    fn u64(&mut self) -> Result<u64, String> {
        let s = self.take(8)?;
        let mut a = [0u8; 8];
        a.copy_from_slice(s);
        Ok(u64::from_le_bytes(a))
    }
}

/// Decodes a value; the error says why it is refused.
pub fn decode(bytes: &[u8]) -> Result<Value<'_>, String> {
    if bytes.len() < 6 || &bytes[..4] != MAGIC {
        return Err("value does not start with the magic CXST".into());
    }
    if bytes[4] != VERSION {
        return Err(format!(
            "value has format version {} (this build reads {VERSION})",
            bytes[4]
        ));
    }
    let mut r = Reader { b: bytes, at: 6 };
    match bytes[5] {
        KIND_CHUNK => {
            let epoch = r.u64()?;
            let seq = r.u64()?;
            let index = r.u32()?;
            Ok(Value::Chunk {
                epoch,
                seq,
                index,
                data: &bytes[r.at..],
            })
        }
        KIND_MANIFEST => {
            if bytes.len() < 8 {
                return Err("value is truncated".into());
            }
            let (body, sum) = bytes.split_at(bytes.len() - 8);
            let mut s = [0u8; 8];
            s.copy_from_slice(sum);
            if xxh3_64(body) != u64::from_le_bytes(s) {
                return Err("manifest checksum mismatch".into());
            }
            let mut r = Reader { b: body, at: 6 };
            let epoch = r.u64()?;
            let seq = r.u64()?;
            let next_offset = r.u64()? as i64;
            let total_len = r.u64()?;
            let checksum = r.u64()?;
            let n = r.u32()?;
            if n > MAX_CHUNKS {
                return Err(format!("manifest lists {n} chunks (at most {MAX_CHUNKS})"));
            }
            let mut chunks = Vec::with_capacity(n as usize);
            for _ in 0..n {
                chunks.push((r.u32()?, r.u64()?));
            }
            if r.at != body.len() {
                return Err("manifest has trailing bytes".into());
            }
            let sum: u64 = chunks.iter().map(|(l, _)| u64::from(*l)).sum();
            if sum != total_len {
                return Err("manifest's chunk lengths do not add up to its total".into());
            }
            if next_offset < 0 {
                return Err("manifest has a negative next offset".into());
            }
            Ok(Value::Manifest(Manifest {
                epoch,
                seq,
                next_offset,
                total_len,
                checksum,
                chunks,
            }))
        }
        KIND_CLAIM => {
            let epoch = r.u64()?;
            let _at = r.u64()?;
            Ok(Value::Claim { epoch })
        }
        k => Err(format!("value has unknown kind {k}")),
    }
}

/// The state-topic partition holding input (topic, partition), for a state
/// topic of `partitions` partitions: (XXH3-64 of the topic name + partition)
/// mod partitions, so that consecutive partitions of one input topic land on
/// consecutive state partitions and several input topics spread.
pub fn state_partition(topic: &str, partition: i32, partitions: i32) -> i32 {
    let n = partitions.max(1) as u64;
    let h = xxh3_64(topic.as_bytes()) % n;
    ((h + (partition.max(0) as u64) % n) % n) as i32
}

/// A snapshot found complete and valid.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Found {
    pub bytes: Vec<u8>,
    pub manifest: Manifest,
    pub slot: Slot,
}

/// What the latest records of one input partition's keys say.
#[derive(Debug, Default)]
pub struct Resolved {
    /// Highest epoch in any of its keys (tombstoned ones too).
    pub max_epoch: Option<u64>,
    /// The highest (epoch, seq) complete, valid snapshot.
    pub found: Option<Found>,
    /// Why records or snapshots were skipped.
    pub refused: Vec<String>,
    /// Keys whose latest record is not a tombstone.
    pub live: Vec<Key>,
}

/// Chooses the snapshot of input (`topic`, `partition`) from `latest`: the
/// latest value (None = tombstone) of every key of that input partition.
pub fn resolve(topic: &str, partition: i32, latest: &HashMap<Key, Option<Vec<u8>>>) -> Resolved {
    let mut out = Resolved {
        max_epoch: latest.keys().map(|k| k.epoch).max(),
        ..Resolved::default()
    };
    let mut sorted: Vec<&Key> = latest.keys().collect();
    sorted.sort_by_key(|k| k.to_string());
    let mut manifests: Vec<(Slot, Manifest)> = Vec::new();
    // (epoch, slot, seq) of chunks, to report writes that never completed.
    let mut chunk_seqs: HashMap<(u64, Slot), u64> = HashMap::new();
    for key in sorted {
        let Some(value) = &latest[key] else { continue };
        out.live.push(key.clone());
        let v = match decode(value) {
            Ok(v) => v,
            Err(why) => {
                out.refused.push(format!("record {key}: {why}"));
                continue;
            }
        };
        match (key.kind, v) {
            (KeyKind::Manifest(slot), Value::Manifest(m)) if m.epoch == key.epoch => {
                manifests.push((slot, m));
            }
            (
                KeyKind::Chunk(slot, i),
                Value::Chunk {
                    epoch, seq, index, ..
                },
            ) if epoch == key.epoch && index == i => {
                let e = chunk_seqs.entry((epoch, slot)).or_insert(seq);
                *e = (*e).max(seq);
            }
            (KeyKind::Claim, Value::Claim { epoch }) if epoch == key.epoch => {}
            _ => out
                .refused
                .push(format!("record {key}: value does not match its key")),
        }
    }
    manifests.sort_by_key(|(_, m)| std::cmp::Reverse((m.epoch, m.seq)));
    for ((epoch, slot), seq) in &chunk_seqs {
        let complete = manifests
            .iter()
            .any(|(s, m)| m.epoch == *epoch && s == slot && m.seq >= *seq);
        if !complete {
            out.refused.push(format!(
                "snapshot epoch {epoch} slot {} seq {seq}: chunks without a manifest (a write that did not complete)",
                slot.as_str()
            ));
        }
    }
    for (slot, m) in manifests {
        match assemble(latest, topic, partition, slot, &m) {
            Ok(bytes) => {
                out.found = Some(Found {
                    bytes,
                    manifest: m,
                    slot,
                });
                break;
            }
            Err(why) => out.refused.push(format!(
                "snapshot epoch {} slot {} seq {}: {why}",
                m.epoch,
                slot.as_str(),
                m.seq
            )),
        }
    }
    out
}

/// The bytes of the snapshot `m` describes, if every chunk is there and
/// matches.
fn assemble(
    latest: &HashMap<Key, Option<Vec<u8>>>,
    topic: &str,
    partition: i32,
    slot: Slot,
    m: &Manifest,
) -> Result<Vec<u8>, String> {
    let total = usize::try_from(m.total_len).map_err(|_| "too large".to_string())?;
    let mut bytes = Vec::with_capacity(total.min(1 << 30));
    for (i, (len, sum)) in m.chunks.iter().enumerate() {
        let key = Key::new(topic, partition, m.epoch, KeyKind::Chunk(slot, i as u32));
        let Some(Some(value)) = latest.get(&key) else {
            return Err(format!("chunk {i} is missing"));
        };
        match decode(value) {
            Ok(Value::Chunk {
                epoch, seq, data, ..
            }) if epoch == m.epoch && seq == m.seq => {
                if data.len() != *len as usize || xxh3_64(data) != *sum {
                    return Err(format!("chunk {i} checksum mismatch"));
                }
                bytes.extend_from_slice(data);
            }
            Ok(Value::Chunk { seq, .. }) => {
                return Err(format!("chunk {i} belongs to seq {seq}"));
            }
            Ok(_) => return Err(format!("chunk {i} is not a chunk")),
            Err(why) => return Err(format!("chunk {i}: {why}")),
        }
    }
    if bytes.len() != total || xxh3_64(&bytes) != m.checksum {
        return Err("checksum of the whole snapshot mismatch".into());
    }
    Ok(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn put(
        map: &mut HashMap<Key, Option<Vec<u8>>>,
        epoch: u64,
        seq: u64,
        slot: Slot,
        bytes: &[u8],
        chunk: usize,
        manifest: bool,
    ) {
        let m = Manifest::of(epoch, seq, 100 + seq as i64, bytes, chunk);
        for (i, c) in bytes.chunks(chunk).enumerate() {
            map.insert(
                Key::new("in", 3, epoch, KeyKind::Chunk(slot, i as u32)),
                Some(chunk_value(epoch, seq, i as u32, c)),
            );
        }
        if manifest {
            map.insert(
                Key::new("in", 3, epoch, KeyKind::Manifest(slot)),
                Some(m.encode()),
            );
        }
    }

    #[test]
    fn keys_render_and_parse_back() {
        for kind in [
            KeyKind::Chunk(Slot::A, 0),
            KeyKind::Chunk(Slot::B, 17),
            KeyKind::Manifest(Slot::B),
            KeyKind::Claim,
        ] {
            let k = Key::new("orders.v1", 5, 42, kind);
            assert_eq!(Key::parse(k.to_string().as_bytes()), Ok(k));
        }
        assert_eq!(
            Key::new("t", 1, 2, KeyKind::Chunk(Slot::A, 3)).to_string(),
            "t/1/2/A/3"
        );
        assert_eq!(
            Key::new("t", 1, 2, KeyKind::Manifest(Slot::B)).to_string(),
            "t/1/2/B/manifest"
        );
        for bad in [
            "garbage",
            "t/1/2",
            "t/-1/2/claim",
            "t/1/x/claim",
            "t/1/2/C/manifest",
            "t/1/2/A/x",
            "t/1/9999999999999999999/claim",
            "t/1/4611686018427387905/claim",
            "a b/1/2/claim",
        ] {
            assert!(Key::parse(bad.as_bytes()).is_err(), "{bad}");
        }
        assert!(Key::parse(&[0xff, 0xfe]).is_err());
    }

    #[test]
    fn values_decode_and_damage_is_refused() {
        let m = Manifest::of(3, 9, 77, b"hello world", 4);
        assert_eq!(m.chunks.len(), 3);
        let v = m.encode();
        assert_eq!(decode(&v), Ok(Value::Manifest(m)));
        let mut bad = v.clone();
        bad[10] ^= 1;
        assert_eq!(decode(&bad).unwrap_err(), "manifest checksum mismatch");
        assert!(decode(&v[..v.len() - 1]).is_err());
        assert!(decode(b"").is_err());
        assert!(decode(b"XXXX\x01\x01").unwrap_err().contains("magic"));
        assert!(decode(b"CXST\x09\x01").unwrap_err().contains("version 9"));
        assert!(decode(b"CXST\x01\x07").unwrap_err().contains("kind 7"));
        assert!(
            decode(b"CXST\x01\x01\x00")
                .unwrap_err()
                .contains("truncated")
        );
        assert_eq!(
            decode(&chunk_value(1, 2, 3, b"ab")),
            Ok(Value::Chunk {
                epoch: 1,
                seq: 2,
                index: 3,
                data: b"ab"
            })
        );
        assert_eq!(decode(&claim_value(8, 0)), Ok(Value::Claim { epoch: 8 }));
        // Every truncation of every kind is an error, never a panic.
        for v in [
            Manifest::of(1, 1, 1, b"abcdefgh", 3).encode(),
            claim_value(1, 1),
        ] {
            for n in 0..v.len() {
                assert!(decode(&v[..n]).is_err(), "{n}");
            }
        }
    }

    #[test]
    fn newest_complete_snapshot_wins_and_incomplete_ones_are_listed() {
        let mut map = HashMap::new();
        put(&mut map, 1, 1, Slot::A, b"first snapshot", 4, true);
        put(&mut map, 1, 2, Slot::B, b"second snapshot", 4, true);
        let r = resolve("in", 3, &map);
        let f = r.found.expect("found");
        assert_eq!(f.bytes, b"second snapshot");
        assert_eq!(
            (f.manifest.seq, f.manifest.next_offset, f.slot),
            (2, 102, Slot::B)
        );
        assert!(r.refused.is_empty(), "{:?}", r.refused);
        assert_eq!(r.max_epoch, Some(1));

        // seq 3 into slot A: chunks written, no manifest (crash): the
        // manifest of seq 1 still names slot A but its chunks are gone.
        put(&mut map, 1, 3, Slot::A, b"third snapshot!!", 4, false);
        let r = resolve("in", 3, &map);
        assert_eq!(r.found.expect("found").bytes, b"second snapshot");
        assert!(
            r.refused
                .iter()
                .any(|w| w.contains("slot A seq 3: chunks without a manifest")),
            "{:?}",
            r.refused
        );
        // Only snapshots newer than the one loaded are examined.
        assert_eq!(r.refused.len(), 1, "{:?}", r.refused);

        // A newer epoch's snapshot wins over any seq of an older one.
        put(&mut map, 2, 1, Slot::A, b"new owner", 4, true);
        let r = resolve("in", 3, &map);
        assert_eq!(r.found.expect("found").bytes, b"new owner");
        assert_eq!(r.max_epoch, Some(2));

        // Its chunk corrupted: back to the previous epoch's newest.
        let k = Key::new("in", 3, 2, KeyKind::Chunk(Slot::A, 1));
        map.insert(k, Some(chunk_value(2, 1, 1, b"XXXX")));
        let r = resolve("in", 3, &map);
        assert_eq!(r.found.expect("found").bytes, b"second snapshot");
        assert!(
            r.refused
                .iter()
                .any(|w| w.contains("epoch 2 slot A seq 1: chunk 1 checksum mismatch")),
            "{:?}",
            r.refused
        );
        // A chunk deleted (tombstone): missing.
        let k = Key::new("in", 3, 2, KeyKind::Chunk(Slot::A, 0));
        map.insert(k, None);
        let r = resolve("in", 3, &map);
        assert!(
            r.refused.iter().any(|w| w.contains("chunk 0 is missing")),
            "{:?}",
            r.refused
        );
    }

    #[test]
    fn garbage_values_are_listed_and_a_claim_raises_the_epoch() {
        let mut map = HashMap::new();
        put(&mut map, 4, 1, Slot::A, b"ok", 4, true);
        map.insert(
            Key::new("in", 3, 4, KeyKind::Manifest(Slot::B)),
            Some(b"garbage".to_vec()),
        );
        map.insert(
            Key::new("in", 3, 4, KeyKind::Chunk(Slot::B, 0)),
            Some(claim_value(4, 0)),
        );
        map.insert(
            Key::new("in", 3, 6, KeyKind::Claim),
            Some(claim_value(6, 0)),
        );
        let r = resolve("in", 3, &map);
        assert_eq!(r.found.expect("found").bytes, b"ok");
        assert_eq!(r.max_epoch, Some(6));
        assert_eq!(r.refused.len(), 2, "{:?}", r.refused);
        assert!(
            r.refused
                .iter()
                .any(|w| w.contains("4/B/manifest: value does not start with the magic"))
        );
        assert!(
            r.refused
                .iter()
                .any(|w| w.contains("4/B/0: value does not match its key"))
        );
    }

    /// Random and mutated bytes as keys and values: refused or accepted,
    /// never a panic (nor an allocation sized by a crafted length).
    #[test]
    fn random_and_mutated_records_never_panic() {
        let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
        let mut next = || {
            x = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
            let mut z = x;
            z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
            z ^ (z >> 31)
        };
        let seeds = [
            Manifest::of(2, 3, 4, b"some snapshot bytes", 5).encode(),
            chunk_value(2, 3, 1, b"apsh"),
            claim_value(2, 0),
        ];
        let mut map = HashMap::new();
        put(&mut map, 2, 3, Slot::A, b"some snapshot bytes", 5, true);
        for round in 0..20_000 {
            let mut v = seeds[round % seeds.len()].clone();
            for _ in 0..(next() % 4) {
                let i = (next() as usize) % v.len();
                v[i] = next() as u8;
            }
            if next() % 3 == 0 {
                v.truncate((next() as usize) % (v.len() + 1));
            }
            let _ = decode(&v);
            let key: Vec<u8> = (0..(next() % 24))
                .map(|_| b"in/3/2AB/manifest0129x"[(next() % 22) as usize])
                .collect();
            let _ = Key::parse(&key);
            // The mutated value under each of the snapshot's keys.
            let keys: Vec<Key> = map.keys().cloned().collect();
            let k = &keys[(next() as usize) % keys.len()];
            let old = map.insert(k.clone(), Some(v));
            let r = resolve("in", 3, &map);
            if let Some(f) = &r.found {
                assert_eq!(f.bytes, b"some snapshot bytes");
            }
            map.insert(k.clone(), old.flatten());
        }
    }

    #[test]
    fn state_partition_is_stable_and_in_range() {
        for n in [1, 2, 6, 7] {
            for p in 0..20 {
                let s = state_partition("orders", p, n);
                assert!((0..n).contains(&s));
                assert_eq!(s, state_partition("orders", p, n));
            }
        }
        // Consecutive partitions of one topic: consecutive state partitions.
        let a = state_partition("orders", 0, 6);
        assert_eq!(state_partition("orders", 1, 6), (a + 1) % 6);
    }
}
