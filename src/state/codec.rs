//! The plain little-endian encoding every piece of state is snapshotted in.
//!
//! [`W`] appends, [`R`] reads and refuses bytes it cannot read completely.
//! Framing, versioning and checksums are the checkpoint store's business.

use crate::event::Priority;

#[derive(Debug, thiserror::Error, PartialEq)]
pub enum SnapshotError {
    #[error("snapshot ends early (at byte {0})")]
    Truncated(usize),
    #[error("snapshot has {0} bytes after its end")]
    Trailing(usize),
    #[error("snapshot holds an invalid {0}")]
    Invalid(&'static str),
    #[error("snapshot was taken with engine.bucket = {taken} ms, the config now says {now} ms")]
    BucketChanged { taken: i64, now: i64 },
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
