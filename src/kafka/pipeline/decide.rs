//! The decision for one consumed message: its decoded payload offered to
//! the engine, and its offset booked by the delivery rule (see [`crate::kafka`]): handled
//! at once when the engine took it (applied or duplicate), or when it is
//! dropped for want of a dead-letter topic; held until its dead-letter
//! record is acknowledged otherwise. No I/O and no librdkafka message type:
//! the loop turns a [`Decision`] into a dead-letter delivery, and the tests
//! below drive it without a broker.

use std::borrow::Borrow;

use crate::engine::{Engine, Outcome, PartApply};
use crate::event::time::format_rfc3339;
use crate::event::{DecodeFailure, Event, EventType, Millis};
use crate::kafka::offsets::{HoldTicket, OffsetBook};

/// A consumed message, as the decision needs it.
#[derive(Clone, Copy, Debug)]
pub struct MessageView<'a> {
    pub topic: &'a str,
    pub partition: i32,
    pub offset: i64,
    /// The Kafka timestamp in ms (the fallback event time when configured,
    /// and the append time of the latency histogram).
    pub timestamp: Option<Millis>,
}

/// What to do with one message after the engine has seen it.
#[derive(Debug, PartialEq, Eq)]
pub enum Decision {
    /// The engine took the event (applied, or buffered for the lateness);
    /// its offset is handled.
    Applied { event_ts: Millis },
    /// A duplicate of an event already taken: counted, offset handled.
    Duplicate,
    /// Send the message to the dead-letter topic; its offset is held until
    /// the record is acknowledged and `ticket` released.
    DeadLetter {
        reason: &'static str,
        detail: String,
        ticket: HoldTicket,
    },
    /// Invalid or late with no dead-letter topic configured: counted by the
    /// engine, offset handled.
    Dropped {
        reason: &'static str,
        detail: String,
    },
    /// State in the state store: the message's partition is restoring its
    /// state, or the restored state covers the message already. Not taken,
    /// not counted, offset not booked.
    Ignored,
}

/// Offers message `m` of engine partition `pid` (`book.pid(..)`) to
/// `engine` with the wall clock `now`, and books its offset. `decoded`
/// gives its payload decoded (the loop decodes a turn's messages ahead, on
/// another thread, and lends each one: a decoded event is a few hundred
/// bytes, not moved); it is called only for a message that is admitted.
/// `dead_letters`: a dead-letter topic is configured.
///
/// The two halves, [`offer_decoded`] (the engine) and [`book_offered`]
/// (the offset book), are also called apart: the loop may apply a turn's
/// partitions on threads of their own between the book's `admits` and the
/// booking, which stays on the loop thread, in offset order.
pub fn decide_decoded<'p, D: Borrow<Result<Event<'p>, DecodeFailure>>>(
    m: &MessageView<'_>,
    pid: u32,
    decoded: impl FnOnce() -> D,
    engine: &mut Engine,
    book: &mut OffsetBook,
    dead_letters: bool,
    now: Millis,
) -> Decision {
    if !book.admits(pid, m.offset) {
        return Decision::Ignored;
    }
    let offered = offer_decoded(engine, pid, decoded().borrow(), now);
    book_offered(m, pid, offered, book, dead_letters)
}

/// What the engine did with an admitted message, before its offset is booked.
#[derive(Debug, PartialEq, Eq)]
pub enum Offered {
    Applied {
        event_ts: Millis,
    },
    Duplicate,
    /// Late, in the future or not decodable: counted by the engine.
    Refused {
        reason: &'static str,
        detail: String,
    },
}

/// The engine a message is offered to: the whole [`Engine`], or one
/// partition's share of it ([`PartApply`], on a thread of its own).
pub trait Offers {
    fn offer(&mut self, pid: u32, ev: &Event<'_>, now: Millis) -> Outcome;
    fn record_invalid(&mut self, pid: u32, ty: Option<EventType>);
    /// T, for the detail of a late event.
    fn clock(&self) -> Option<Millis>;
}

impl Offers for Engine {
    fn offer(&mut self, pid: u32, ev: &Event<'_>, now: Millis) -> Outcome {
        Engine::offer(self, pid, ev, Some(now))
    }
    fn record_invalid(&mut self, pid: u32, ty: Option<EventType>) {
        Engine::record_invalid(self, pid, ty)
    }
    fn clock(&self) -> Option<Millis> {
        Engine::clock(self)
    }
}

/// Only for messages of its own partition (`pid` is that one's).
impl Offers for PartApply<'_> {
    fn offer(&mut self, pid: u32, ev: &Event<'_>, now: Millis) -> Outcome {
        debug_assert_eq!(pid, self.pid());
        PartApply::offer(self, ev, Some(now))
    }
    fn record_invalid(&mut self, pid: u32, ty: Option<EventType>) {
        debug_assert_eq!(pid, self.pid());
        PartApply::record_invalid(self, ty)
    }
    fn clock(&self) -> Option<Millis> {
        PartApply::clock(self)
    }
}

/// Offers an admitted message of partition `pid`, `decoded`, to `engine`
/// with the wall clock `now` (the engine half of [`decide_decoded`]).
pub fn offer_decoded(
    engine: &mut impl Offers,
    pid: u32,
    decoded: &Result<Event<'_>, DecodeFailure>,
    now: Millis,
) -> Offered {
    let (reason, detail) = match decoded {
        Ok(ev) => match engine.offer(pid, ev, now) {
            Outcome::Applied => return Offered::Applied { event_ts: ev.ts },
            Outcome::Duplicate => return Offered::Duplicate,
            Outcome::Late => (
                "late",
                format!(
                    "event time {} is more than allowed_lateness behind the clock T {}",
                    format_rfc3339(ev.ts),
                    engine.clock().map(format_rfc3339).unwrap_or_default()
                ),
            ),
            Outcome::Invalid => (
                "future_ts",
                format!(
                    "event time {} is more than max_future_skew ahead of the wall clock {}",
                    format_rfc3339(ev.ts),
                    format_rfc3339(now)
                ),
            ),
        },
        Err(f) => {
            engine.record_invalid(pid, f.event_type);
            (f.error.reason(), f.error.to_string())
        }
    };
    Offered::Refused { reason, detail }
}

/// Books the offset of admitted message `m` of partition `pid` by what the
/// engine did with it (the offset-book half of [`decide_decoded`]):
/// handled when taken, or dropped for want of a dead-letter topic; held
/// for its dead letter otherwise.
pub fn book_offered(
    m: &MessageView<'_>,
    pid: u32,
    offered: Offered,
    book: &mut OffsetBook,
    dead_letters: bool,
) -> Decision {
    let (reason, detail) = match offered {
        Offered::Applied { event_ts } => {
            book.handled_at(pid, m.topic, m.partition, m.offset);
            return Decision::Applied { event_ts };
        }
        Offered::Duplicate => {
            book.handled_at(pid, m.topic, m.partition, m.offset);
            return Decision::Duplicate;
        }
        Offered::Refused { reason, detail } => (reason, detail),
    };
    if !dead_letters {
        book.handled_at(pid, m.topic, m.partition, m.offset);
        return Decision::Dropped { reason, detail };
    }
    let ticket = book.hold(m.topic, m.partition, m.offset);
    Decision::DeadLetter {
        reason,
        detail,
        ticket,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;
    use crate::event::Decoder;
    use rdkafka::TopicPartitionList;

    /// 2026-01-05T10:00:00Z (`date -u -d 2026-01-05T10:00:00Z +%s`).
    const JAN5_10H: Millis = 1_767_607_200_000;

    /// Engine and decoder under the default config (allowed_lateness 30 s,
    /// max_future_skew 5 min), one input topic `in`.
    struct Rig {
        decoder: Decoder,
        engine: Engine,
        book: OffsetBook,
    }

    impl Rig {
        fn new() -> Rig {
            let cfg = Config::default();
            Rig {
                decoder: Decoder::new(
                    &cfg.mapping,
                    cfg.engine.max_message_bytes,
                    cfg.engine.kafka_timestamp_fallback,
                ),
                engine: Engine::new(cfg.params().expect("valid config")),
                book: OffsetBook::new(&["in".into()]),
            }
        }

        /// Decides `payload` at `in/partition@offset`, wall clock `now`,
        /// with a dead-letter topic configured.
        fn offer(&mut self, partition: i32, offset: i64, payload: &str, now: Millis) -> Decision {
            self.offer_with(partition, offset, payload, now, true).1
        }

        fn offer_with(
            &mut self,
            partition: i32,
            offset: i64,
            payload: &str,
            now: Millis,
            dead_letters: bool,
        ) -> (u32, Decision) {
            let m = MessageView {
                topic: "in",
                partition,
                offset,
                timestamp: Some(now),
            };
            let pid = self.book.pid(m.topic, m.partition);
            let decision = decide_decoded(
                &m,
                pid,
                || self.decoder.decode(payload.as_bytes(), m.timestamp),
                &mut self.engine,
                &mut self.book,
                dead_letters,
                now,
            );
            (pid, decision)
        }

        /// The committable positions that moved, as (partition, offset).
        fn moved(&mut self) -> Vec<(i32, i64)> {
            positions(&self.book.take_moved())
        }
    }

    fn positions(tpl: &TopicPartitionList) -> Vec<(i32, i64)> {
        let mut v: Vec<_> = tpl
            .elements()
            .iter()
            .map(|e| (e.partition(), e.offset().to_raw().unwrap_or(-1)))
            .collect();
        v.sort();
        v
    }

    fn deposit(id: &str, ts: Millis) -> String {
        format!(
            r#"{{"event_id":"{id}","type":"deposit","ts":{ts},"user_id":"u1","amount_usd":25}}"#
        )
    }

    /// The reason, detail and ticket of a dead-letter decision.
    fn dead_letter(d: Decision) -> (&'static str, String, HoldTicket) {
        match d {
            Decision::DeadLetter {
                reason,
                detail,
                ticket,
            } => (reason, detail, ticket),
            other => panic!("expected a dead letter, got {other:?}"),
        }
    }

    #[test]
    fn a_valid_event_is_applied_and_its_offset_stored() {
        let mut r = Rig::new();
        let (pid, d) = r.offer_with(0, 5, &deposit("e1", JAN5_10H), JAN5_10H + 1_000, true);
        assert_eq!(pid, 0);
        assert_eq!(d, Decision::Applied { event_ts: JAN5_10H });
        // Taken by the engine, waiting in its lateness buffer.
        assert_eq!(r.engine.pending_events(), 1);
        // Offset 5 handled: the committable position is 6.
        assert_eq!(r.moved(), [(0, 6)]);
        assert_eq!(r.book.held_count(), 0);
    }

    #[test]
    fn an_invalid_event_is_dead_lettered_and_holds_its_offset_until_acknowledged() {
        let mut r = Rig::new();
        let now = JAN5_10H + 1_000;
        assert!(matches!(
            r.offer(0, 0, &deposit("e1", JAN5_10H), now),
            Decision::Applied { .. }
        ));
        // A deposit without `amount_usd` at offset 1, a valid one at 2.
        let bad = format!(r#"{{"event_id":"e2","type":"deposit","ts":{JAN5_10H},"user_id":"u1"}}"#);
        let (reason, detail, ticket) = dead_letter(r.offer(0, 1, &bad, now));
        assert_eq!(reason, "missing_field");
        assert_eq!(detail, "required field `amount_usd` is missing");
        assert!(matches!(
            r.offer(0, 2, &deposit("e3", JAN5_10H), now),
            Decision::Applied { .. }
        ));
        // Held: the position stops at 1 although 2 is handled.
        assert_eq!(r.book.held_count(), 1);
        assert_eq!(r.moved(), [(0, 1)]);
        // The dead-letter record is acknowledged: the position moves past 2.
        r.book.release(ticket);
        assert_eq!(r.moved(), [(0, 3)]);
        assert_eq!(r.book.held_count(), 0);
        // Not JSON at all.
        let d = r.offer(0, 3, "{not json", now);
        assert!(
            matches!(
                d,
                Decision::DeadLetter {
                    reason: "not_json",
                    ..
                }
            ),
            "{d:?}"
        );
    }

    #[test]
    fn a_duplicate_is_counted_and_its_offset_stored() {
        let mut r = Rig::new();
        let ev = deposit("e1", JAN5_10H);
        let now = JAN5_10H + 1_000;
        assert_eq!(
            r.offer(0, 0, &ev, now),
            Decision::Applied { event_ts: JAN5_10H }
        );
        assert_eq!(r.offer(0, 1, &ev, now), Decision::Duplicate);
        assert_eq!(r.engine.pending_events(), 1, "the duplicate is not taken");
        assert_eq!(r.moved(), [(0, 2)]);
    }

    #[test]
    fn a_late_event_is_dead_lettered_with_the_clock_in_its_reason() {
        let mut r = Rig::new();
        let now = JAN5_10H + 120_000;
        // T moves to 10:01:00; allowed_lateness is 30 s, so 10:00:00 is late.
        r.offer(0, 0, &deposit("e1", JAN5_10H + 60_000), now);
        let (reason, detail, _) = dead_letter(r.offer(0, 1, &deposit("e2", JAN5_10H), now));
        assert_eq!(reason, "late");
        assert_eq!(
            detail,
            "event time 2026-01-05T10:00:00Z is more than allowed_lateness behind the clock T 2026-01-05T10:01:00Z"
        );
        // 10:00:31 is within the lateness: taken.
        assert!(matches!(
            r.offer(0, 2, &deposit("e3", JAN5_10H + 31_000), now),
            Decision::Applied { .. }
        ));
        assert_eq!(r.moved(), [(0, 1)]);
    }

    #[test]
    fn an_event_too_far_ahead_of_the_wall_clock_is_dead_lettered_as_future_ts() {
        let mut r = Rig::new();
        // max_future_skew is 5 min: 5 min 1 s ahead is refused.
        let (reason, detail, _) =
            dead_letter(r.offer(0, 0, &deposit("e1", JAN5_10H + 301_000), JAN5_10H));
        assert_eq!(reason, "future_ts");
        assert_eq!(
            detail,
            "event time 2026-01-05T10:05:01Z is more than max_future_skew ahead of the wall clock 2026-01-05T10:00:00Z"
        );
        // Exactly 5 min ahead is accepted.
        assert!(matches!(
            r.offer(0, 1, &deposit("e2", JAN5_10H + 300_000), JAN5_10H),
            Decision::Applied { .. }
        ));
    }

    #[test]
    fn without_a_dead_letter_topic_an_invalid_event_is_dropped_and_its_offset_stored() {
        let mut r = Rig::new();
        let (_, d) = r.offer_with(0, 7, "[]", JAN5_10H, false);
        assert_eq!(
            d,
            Decision::Dropped {
                reason: "not_json",
                detail: "message is JSON but not a JSON object".into()
            }
        );
        assert_eq!(r.book.held_count(), 0);
        assert_eq!(r.moved(), [(0, 8)]);
    }

    #[test]
    fn partitions_keep_their_own_offsets_and_clocks() {
        let mut r = Rig::new();
        let now = JAN5_10H + 120_000;
        let (p0, d0) = r.offer_with(0, 10, &deposit("a", JAN5_10H + 60_000), now, true);
        // Partition 1's clock is its own: 10:00:00 is not late there.
        let (p1, d1) = r.offer_with(1, 20, &deposit("b", JAN5_10H), now, true);
        assert_eq!((p0, p1), (0, 1));
        assert!(matches!(d0, Decision::Applied { .. }), "{d0:?}");
        assert!(matches!(d1, Decision::Applied { .. }), "{d1:?}");
        // A dead letter on partition 1 holds partition 1 only.
        let (_, _, held) = dead_letter(r.offer(1, 21, "{", now));
        r.offer(0, 11, &deposit("c", JAN5_10H + 61_000), now);
        assert_eq!(r.moved(), [(0, 12), (1, 21)]);
        r.book.release(held);
        assert_eq!(r.moved(), [(1, 22)]);
    }
}
