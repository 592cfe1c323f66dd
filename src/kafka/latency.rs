//! Event-to-metric latency: from an event's Kafka append time to the moment
//! its effect is visible at `/metrics`.
//!
//! The engine takes an event at once but applies its effect in event-time
//! order, per input partition, once the partition's clock has passed it by
//! `allowed_lateness` (`Partition::applied_through` says how far that has
//! got). `/metrics` renders the engine on request, so that is the moment of
//! visibility. This tracker remembers (ts, append time) of accepted events
//! per partition and reports each once its partition has applied it.

use hashbrown::HashMap;

use crate::engine::pending::RunHeap;
use crate::event::Millis;

/// Accepted events waiting for their effect to become visible.
#[derive(Debug, Default)]
pub struct LatencyTracker {
    /// Per engine partition, the events waiting, by event time.
    waiting: HashMap<u32, Waiting>,
    len: usize,
    /// At most this many events are tracked at once; beyond it new events are
    /// not sampled (bounded memory under a huge backlog).
    cap: usize,
}

/// One partition's waiting events, (ts, append time), taken in ascending
/// order. Most arrive in event-time order: a [`RunHeap`] keeps those in a
/// FIFO run (no heap work per event) and only the others in a heap.
type Waiting = RunHeap<(Millis, Millis)>;

/// Takes the smallest waiting event of `w` if its ts is at most `through`.
fn pop_through(w: &mut Waiting, through: Millis) -> Option<(Millis, Millis)> {
    let (&(ts, _), side) = w.peek_next()?;
    if ts > through {
        return None;
    }
    w.pop_next(side)
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
            self.waiting.entry(pid).or_default().push((ts, a));
            self.len += 1;
        }
    }

    /// Partition `pid` has applied everything up to `applied_through`: calls
    /// `observe` with the latency in seconds (wall clock `now_ms`) of each
    /// of its events that became visible, in ascending (ts, append time).
    pub fn release(
        &mut self,
        pid: u32,
        applied_through: Millis,
        now_ms: Millis,
        observe: &mut impl FnMut(f64),
    ) {
        let Some(waiting) = self.waiting.get_mut(&pid) else {
            return;
        };
        while let Some((_, append)) = pop_through(waiting, applied_through) {
            self.len -= 1;
            observe((now_ms - append).max(0) as f64 / 1000.0);
        }
    }

    /// Forgets partition `pid`'s waiting events (its state left this process).
    pub fn forget(&mut self, pid: u32) {
        if let Some(w) = self.waiting.remove(&pid) {
            self.len -= w.len();
        }
    }

    /// The partitions with events waiting.
    pub fn partitions(&self) -> Vec<u32> {
        self.waiting
            .iter()
            .filter(|(_, w)| !w.is_empty())
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

    #[test]
    fn events_out_of_order_are_released_in_event_time_order_as_by_one_heap() {
        // Partition 0: in order, then below the back (late), then in order
        // again; every event is released exactly once, ascending by ts.
        let mut l = LatencyTracker::new(100);
        for (ts, append) in [
            (1_000, 10_000),
            (2_000, 10_100),
            (5_000, 10_200),
            (3_000, 10_300), // late: below 5000
            (1_500, 10_400), // late
            (5_000, 10_500), // equal ts, not below the back (5000, 10200)
            (7_000, 10_600),
            (4_000, 10_700), // late
        ] {
            l.accepted(0, ts, Some(append));
        }
        assert_eq!(l.len(), 8);
        let mut seen = Vec::new();
        // now 11_000: latency = (11_000 - append) / 1000.
        l.release(0, 3_000, 11_000, &mut |s| seen.push(s));
        // ts 1000 (append 10000), 1500 (10400), 2000 (10100), 3000 (10300).
        assert_eq!(seen, [1.0, 0.6, 0.9, 0.7]);
        seen.clear();
        l.release(0, 5_000, 11_000, &mut |s| seen.push(s));
        // ts 4000 (10700), 5000 (10200), 5000 (10500).
        assert_eq!(seen, [0.3, 0.8, 0.5]);
        assert_eq!(l.len(), 1);
        seen.clear();
        l.release(0, 6_999, 11_000, &mut |s| seen.push(s));
        assert!(seen.is_empty(), "ts 7000 is not applied through 6999");
        l.release(0, 7_000, 11_000, &mut |s| seen.push(s));
        assert_eq!(seen, [0.4]);
        assert!(l.is_empty());
        assert!(l.partitions().is_empty());
    }

    #[test]
    fn forgetting_a_partition_drops_its_late_and_in_order_events_from_the_count() {
        let mut l = LatencyTracker::new(3);
        l.accepted(2, 5_000, Some(1));
        l.accepted(2, 4_000, Some(2)); // late
        l.accepted(3, 1_000, Some(3));
        l.accepted(3, 2_000, Some(4)); // over the cap of 3: not sampled
        assert_eq!(l.len(), 3);
        l.forget(2);
        assert_eq!(l.len(), 1);
        assert_eq!(l.partitions(), [3]);
    }
}
