//! Event-to-metric latency: from an event's Kafka append time to the moment
//! its effect is visible at `/metrics`.
//!
//! The engine takes an event at once but applies its effect in event-time
//! order, per input partition, once the partition's clock has passed it by
//! `allowed_lateness` (`Partition::applied_through` says how far that has
//! got). `/metrics` renders the engine on request, so that is the moment of
//! visibility. This tracker remembers (ts, append time) of accepted events
//! per partition and reports each once its partition has applied it.

use std::cmp::Reverse;
use std::collections::BinaryHeap;

use hashbrown::HashMap;

use crate::event::Millis;

/// Accepted events waiting for their effect to become visible.
#[derive(Debug, Default)]
pub struct LatencyTracker {
    /// Per engine partition, a min-heap on event time: (ts, append time).
    waiting: HashMap<u32, BinaryHeap<Reverse<(Millis, Millis)>>>,
    len: usize,
    /// At most this many events are tracked at once; beyond it new events are
    /// not sampled (bounded memory under a huge backlog).
    cap: usize,
}

impl LatencyTracker {
    pub fn new(cap: usize) -> LatencyTracker {
        LatencyTracker {
            cap,
            ..LatencyTracker::default()
        }
    }

    /// An event of partition `pid` with time `ts`, appended to Kafka at
    /// `append_ms`, was accepted.
    pub fn accepted(&mut self, pid: u32, ts: Millis, append_ms: Option<Millis>) {
        if let Some(a) = append_ms
            && self.len < self.cap
        {
            self.waiting.entry(pid).or_default().push(Reverse((ts, a)));
            self.len += 1;
        }
    }

    /// Partition `pid` has applied everything up to `applied_through`: calls
    /// `observe` with the latency in seconds (wall clock `now_ms`) of each
    /// of its events that became visible.
    pub fn release(
        &mut self,
        pid: u32,
        applied_through: Millis,
        now_ms: Millis,
        observe: &mut impl FnMut(f64),
    ) {
        let Some(heap) = self.waiting.get_mut(&pid) else {
            return;
        };
        while let Some(Reverse((ts, append))) = heap.peek().copied() {
            if ts > applied_through {
                break;
            }
            heap.pop();
            self.len -= 1;
            observe((now_ms - append).max(0) as f64 / 1000.0);
        }
    }

    /// Forgets partition `pid`'s waiting events (its state left this process).
    pub fn forget(&mut self, pid: u32) {
        if let Some(h) = self.waiting.remove(&pid) {
            self.len -= h.len();
        }
    }

    /// The partitions with events waiting.
    pub fn partitions(&self) -> Vec<u32> {
        self.waiting
            .iter()
            .filter(|(_, h)| !h.is_empty())
            .map(|(p, _)| *p)
            .collect()
    }

    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_effect_counts_once_its_own_partition_has_applied_it() {
        let mut l = LatencyTracker::new(10);
        l.accepted(0, 5_000, Some(100_000));
        l.accepted(0, 3_000, Some(100_500));
        l.accepted(1, 1_000, Some(100_000));
        l.accepted(1, 9_000, None);
        let mut seen = Vec::new();
        l.release(0, 4_000, 101_000, &mut |s| seen.push(s));
        assert_eq!(seen, [0.5], "ts 3000 <= 4000; ts 5000 is not");
        l.release(0, 5_000, 102_000, &mut |s| seen.push(s));
        assert_eq!(seen, [0.5, 2.0]);
        assert_eq!(l.partitions(), [1], "partition 1 has not applied its event");
        l.release(1, 1_000, 103_000, &mut |s| seen.push(s));
        assert_eq!(seen, [0.5, 2.0, 3.0]);
        assert!(
            l.is_empty(),
            "events without an append time are not tracked"
        );
    }
}
