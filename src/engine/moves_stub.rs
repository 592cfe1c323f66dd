//! TEMPORARY stand-in for helper A's per-partition API (branch
//! `part-state`), so the rebalance code compiles before A is merged.
//! Deleted at the merge.

use super::Engine;
use super::snapshot::SnapshotError;

impl Engine {
    pub fn partitions(&self) -> Vec<u32> {
        self.parts.keys().copied().collect()
    }

    pub fn ensure_partition(&mut self, p: u32) {
        self.parts.entry(p).or_default();
    }

    pub fn snapshot_partition(&self, _p: u32) -> Option<Vec<u8>> {
        None
    }

    pub fn restore_partition(&mut self, _p: u32, _bytes: &[u8]) -> Result<(), SnapshotError> {
        Err(SnapshotError::Invalid("stub"))
    }

    pub fn drop_partition(&mut self, p: u32) -> bool {
        self.parts.remove(&p).is_some()
    }
}
