//! The plain little-endian encoding every piece of state is snapshotted in.
//!
//! [`W`] appends, [`Spill`] appends into a bounded buffer it hands on to a
//! writer whenever it fills (snapshots streamed into a file or records), [`R`]
//! reads and refuses bytes it cannot read completely.
//! Framing, versioning and checksums are the checkpoint store's business.

use std::io;

use crate::event::{Millis, Priority};
use crate::state::users::NEVER;

/// Why snapshot bytes were refused. Snapshots come from files: every
/// reference and every number later arithmetic relies on is checked on
/// load, so that a crafted or damaged file is refused with one of these,
/// never a panic. Messages name indices and values, never a user or
/// ticket id.
#[derive(Clone, Debug, thiserror::Error, PartialEq)]
pub enum SnapshotError {
    #[error("snapshot ends early (at byte {0})")]
    Truncated(usize),
    #[error("snapshot has {0} bytes after its end")]
    Trailing(usize),
    #[error("snapshot holds an invalid {0}")]
    Invalid(&'static str),
    #[error("snapshot was taken with engine.bucket = {taken} ms, the config now says {now} ms")]
    BucketChanged { taken: i64, now: i64 },
    /// A reference to an element that is not there.
    #[error("snapshot holds a {what} {index}, but only {len} are held")]
    Dangling {
        what: &'static str,
        index: u64,
        len: u64,
    },
    /// A number outside what the engine can ever hold.
    #[error("snapshot holds an out-of-range {what} ({value})")]
    OutOfRange { what: &'static str, value: String },
    /// One input partition's state is refused.
    #[error("in the state of engine partition {partition}: {error}")]
    InPartition {
        partition: u32,
        error: Box<SnapshotError>,
    },
}

/// Event times are within `0..=9999-12-31` ([`crate::event::time::MAX_RFC3339_MS`]);
/// timers and clocks lie at most a configured duration beyond. A stored
/// instant (or bucket or day index) beyond +-2^52 ms (142,000 years) is
/// refused, so that adding durations to it can never overflow.
pub const TIME_LIMIT: i64 = 1 << 52;

/// A stored count above 2^53 (the largest whole number an exported `f64`
/// holds exactly; 285 years at a million events a second) is refused, so
/// that counting on from it or adding partitions up can never overflow.
pub const COUNT_LIMIT: u64 = 1 << 53;

/// An instant, bucket or day index within [`TIME_LIMIT`].
pub fn check_time(what: &'static str, t: Millis) -> Result<Millis, SnapshotError> {
    if (-TIME_LIMIT..=TIME_LIMIT).contains(&t) {
        Ok(t)
    } else {
        Err(SnapshotError::OutOfRange {
            what,
            value: t.to_string(),
        })
    }
}

/// An instant within [`TIME_LIMIT`], or `NEVER`.
pub fn check_time_or_never(what: &'static str, t: Millis) -> Result<Millis, SnapshotError> {
    if t == NEVER {
        Ok(t)
    } else {
        check_time(what, t)
    }
}

/// A count within [`COUNT_LIMIT`].
pub fn check_count(what: &'static str, n: u64) -> Result<u64, SnapshotError> {
    if n <= COUNT_LIMIT {
        Ok(n)
    } else {
        Err(SnapshotError::OutOfRange {
            what,
            value: n.to_string(),
        })
    }
}

/// An index into something holding `len` elements.
pub fn check_index(what: &'static str, index: u64, len: usize) -> Result<(), SnapshotError> {
    if index < len as u64 {
        Ok(())
    } else {
        Err(SnapshotError::Dangling {
            what,
            index,
            len: len as u64,
        })
    }
}

/// A sum or amount: finite (a file cannot bring back an infinite or NaN sum).
pub fn check_finite(what: &'static str, v: f64) -> Result<f64, SnapshotError> {
    if v.is_finite() {
        Ok(v)
    } else {
        Err(SnapshotError::OutOfRange {
            what,
            value: v.to_string(),
        })
    }
}

/// A snapshot being written.
pub struct W(pub Vec<u8>);

impl W {
    pub fn u8(&mut self, v: u8) {
        self.0.push(v);
    }
    pub fn u32(&mut self, v: u32) {
        self.0.extend_from_slice(&v.to_le_bytes());
    }
    pub fn u64(&mut self, v: u64) {
        self.0.extend_from_slice(&v.to_le_bytes());
    }
    pub fn i64(&mut self, v: i64) {
        self.0.extend_from_slice(&v.to_le_bytes());
    }
    pub fn u128(&mut self, v: u128) {
        self.0.extend_from_slice(&v.to_le_bytes());
    }
    pub fn f64(&mut self, v: f64) {
        self.0.extend_from_slice(&v.to_le_bytes());
    }
    pub fn len(&mut self, n: usize) {
        self.u64(n as u64);
    }
    pub fn bytes(&mut self, b: &[u8]) {
        self.len(b.len());
        self.0.extend_from_slice(b);
    }
    pub fn opt_u8(&mut self, v: Option<u8>) {
        self.u8(v.map_or(255, |x| x));
    }
    pub fn opt_i64(&mut self, v: Option<i64>) {
        match v {
            Some(t) => {
                self.u8(1);
                self.i64(t);
            }
            None => self.u8(0),
        }
    }
    /// The header of a self-contained record: magic, format version, `engine.bucket`.
    pub fn header(&mut self, magic: u32, version: u8, bucket: i64) {
        self.u32(magic);
        self.u8(version);
        self.i64(bucket);
    }
}

/// A snapshot streamed out: bytes are encoded into a [`W`] of about `limit`
/// bytes, handed on to `out` whenever it is full (callers ask with
/// [`Spill::spill`] between pieces, so it holds at most `limit` plus one
/// piece). The first error of `out` is kept and every later write skipped;
/// [`Spill::finish`] returns it.
pub struct Spill<'a> {
    w: W,
    out: &'a mut dyn io::Write,
    limit: usize,
    total: u64,
    error: Option<io::Error>,
}

impl<'a> Spill<'a> {
    pub fn new(out: &'a mut dyn io::Write, limit: usize) -> Spill<'a> {
        Spill {
            w: W(Vec::with_capacity(limit.min(1 << 24))),
            out,
            limit: limit.max(1),
            total: 0,
            error: None,
        }
    }
    /// The buffer to encode into.
    pub fn w(&mut self) -> &mut W {
        &mut self.w
    }
    /// Hands the buffered bytes on if there are `limit` or more.
    pub fn spill(&mut self) {
        if self.w.0.len() >= self.limit {
            self.flush();
        }
    }
    fn flush(&mut self) {
        if self.error.is_none()
            && !self.w.0.is_empty()
            && let Err(e) = self.out.write_all(&self.w.0)
        {
            self.error = Some(e);
        }
        self.total += self.w.0.len() as u64;
        self.w.0.clear();
    }
    /// Appends `b`; a piece of `limit` bytes or more goes on directly.
    pub fn put(&mut self, b: &[u8]) {
        if self.w.0.len() + b.len() > self.limit {
            self.flush();
        }
        if b.len() >= self.limit {
            if self.error.is_none()
                && let Err(e) = self.out.write_all(b)
            {
                self.error = Some(e);
            }
            self.total += b.len() as u64;
        } else {
            self.w.0.extend_from_slice(b);
        }
    }
    /// Bytes encoded so far (handed on or buffered).
    pub fn total(&self) -> u64 {
        self.total + self.w.0.len() as u64
    }
    /// Hands on what is left; the first error of the writer, if any.
    pub fn finish(mut self) -> io::Result<()> {
        self.flush();
        match self.error.take() {
            Some(e) => Err(e),
            None => self.out.flush(),
        }
    }
}

/// A writer that counts and hashes (XXH3-64) what goes through it: the
/// length and checksum of a snapshot streamed into a checkpoint file or the
/// state store's chunks, computed on the way.
pub struct Summed<T> {
    pub inner: T,
    hash: xxhash_rust::xxh3::Xxh3,
    len: u64,
}

impl<T> Summed<T> {
    pub fn new(inner: T) -> Summed<T> {
        Summed {
            inner,
            hash: xxhash_rust::xxh3::Xxh3::new(),
            len: 0,
        }
    }
    /// Bytes written through so far.
    pub fn len(&self) -> u64 {
        self.len
    }
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }
    /// XXH3-64 of the bytes written through so far.
    pub fn digest(&self) -> u64 {
        self.hash.digest()
    }
}

impl<T: io::Write> io::Write for Summed<T> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.hash.update(&buf[..n]);
        self.len += n as u64;
        Ok(n)
    }
    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

/// A snapshot being read.
pub struct R<'a> {
    b: &'a [u8],
    at: usize,
}

impl<'a> R<'a> {
    pub fn new(b: &'a [u8]) -> R<'a> {
        R { b, at: 0 }
    }
    /// Refuses bytes left after the end.
    pub fn end(&self) -> Result<(), SnapshotError> {
        match self.b.len() - self.at {
            0 => Ok(()),
            n => Err(SnapshotError::Trailing(n)),
        }
    }
    fn take<const N: usize>(&mut self) -> Result<[u8; N], SnapshotError> {
        let end = self
            .at
            .checked_add(N)
            .ok_or(SnapshotError::Truncated(self.at))?;
        let s = self
            .b
            .get(self.at..end)
            .ok_or(SnapshotError::Truncated(self.at))?;
        self.at = end;
        let mut a = [0u8; N];
        a.copy_from_slice(s);
        Ok(a)
    }
    pub fn u8(&mut self) -> Result<u8, SnapshotError> {
        Ok(self.take::<1>()?[0])
    }
    pub fn u32(&mut self) -> Result<u32, SnapshotError> {
        Ok(u32::from_le_bytes(self.take()?))
    }
    pub fn u64(&mut self) -> Result<u64, SnapshotError> {
        Ok(u64::from_le_bytes(self.take()?))
    }
    pub fn i64(&mut self) -> Result<i64, SnapshotError> {
        Ok(i64::from_le_bytes(self.take()?))
    }
    pub fn u128(&mut self) -> Result<u128, SnapshotError> {
        Ok(u128::from_le_bytes(self.take()?))
    }
    pub fn f64(&mut self) -> Result<f64, SnapshotError> {
        Ok(f64::from_le_bytes(self.take()?))
    }
    /// A length, checked against what is left (each element takes at least `min` bytes).
    pub fn len(&mut self, min: usize) -> Result<usize, SnapshotError> {
        let n = self.u64()?;
        let left = (self.b.len() - self.at) as u64;
        if n.saturating_mul(min.max(1) as u64) > left {
            return Err(SnapshotError::Truncated(self.at));
        }
        Ok(n as usize)
    }
    pub fn bytes(&mut self) -> Result<&'a [u8], SnapshotError> {
        let n = self.len(1)?;
        let s = &self.b[self.at..self.at + n];
        self.at += n;
        Ok(s)
    }
    /// A flag written as 0 or 1; any other byte is refused.
    pub fn bool(&mut self, what: &'static str) -> Result<bool, SnapshotError> {
        match self.u8()? {
            0 => Ok(false),
            1 => Ok(true),
            _ => Err(SnapshotError::Invalid(what)),
        }
    }
    pub fn string(&mut self) -> Result<String, SnapshotError> {
        String::from_utf8(self.bytes()?.to_vec()).map_err(|_| SnapshotError::Invalid("string"))
    }
    pub fn opt_u8(&mut self) -> Result<Option<u8>, SnapshotError> {
        let v = self.u8()?;
        Ok((v != 255).then_some(v))
    }
    pub fn opt_i64(&mut self, what: &'static str) -> Result<Option<i64>, SnapshotError> {
        match self.u8()? {
            0 => Ok(None),
            1 => Ok(Some(self.i64()?)),
            _ => Err(SnapshotError::Invalid(what)),
        }
    }
    /// Reads a [`W::header`], refusing another magic or version
    /// (`Invalid(what.0)`, `Invalid(what.1)`) or another bucket size.
    pub fn header(
        &mut self,
        magic: u32,
        version: u8,
        bucket: i64,
        what: (&'static str, &'static str),
    ) -> Result<(), SnapshotError> {
        self.header_of(magic, version..=version, bucket, what)
            .map(|_| ())
    }
    /// [`R::header`] of any of `versions`: the version read.
    pub fn header_of(
        &mut self,
        magic: u32,
        versions: std::ops::RangeInclusive<u8>,
        bucket: i64,
        what: (&'static str, &'static str),
    ) -> Result<u8, SnapshotError> {
        if self.u32()? != magic {
            return Err(SnapshotError::Invalid(what.0));
        }
        let version = self.u8()?;
        if !versions.contains(&version) {
            return Err(SnapshotError::Invalid(what.1));
        }
        let taken = self.i64()?;
        if taken != bucket {
            return Err(SnapshotError::BucketChanged { taken, now: bucket });
        }
        Ok(version)
    }
    pub fn priority(&mut self) -> Result<Priority, SnapshotError> {
        let v = self.u8()?;
        priority(v)
    }
    /// A priority written with [`W::opt_u8`] of its index.
    pub fn opt_priority(&mut self) -> Result<Option<Priority>, SnapshotError> {
        self.opt_u8()?.map(priority).transpose()
    }
}

fn priority(v: u8) -> Result<Priority, SnapshotError> {
    Priority::ALL
        .get(v as usize)
        .copied()
        .ok_or(SnapshotError::Invalid("priority"))
}
