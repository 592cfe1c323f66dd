//! Deliberate noise: lines held back and released later (out of order,
//! duplicates) and the invalid lines EVENTS.md names.

use super::{Generator, LineKey, LineMeta, Noise};
use crate::r#gen::agenda::Entry;
use crate::r#gen::line::LineBuf;

/// A finished line waiting for its release time (out-of-order, duplicate and
/// invalid lines): an entry due at its release, so the earliest pops first
/// and ties go in the order the lines were held.
pub(super) type Held = Entry<HeldLine>;

pub(super) struct HeldLine {
    pub(super) meta: LineMeta,
    pub(super) payload: Vec<u8>,
}

impl Generator {
    pub(super) fn hold(&mut self, release: i64, meta: LineMeta, payload: Vec<u8>) {
        self.seq += 1;
        self.held.push(Held {
            at: release,
            seq: self.seq,
            job: HeldLine { meta, payload },
        });
    }

    /// Queues an invalid line at the current time, one of the ways
    /// EVENTS.md names, for the user of the line just made (if any).
    pub(super) fn hold_invalid(&mut self, key: LineKey) {
        const BAD_TS: [&str; 3] = ["2026-13-45T25:61:00Z", "yesterday", "1767225600000ms"];
        let user = match key {
            LineKey::User(u) => u,
            _ => 1,
        };
        let mut b = LineBuf::new();
        b.raw("{\"event_id\":\"x");
        b.hex(self.id_tag);
        b.raw("-");
        b.hex(self.next_event);
        self.next_event += 1;
        let kind = self.rng.below(5);
        b.raw(match kind {
            0 | 2 => "\",\"type\":\"deposit\",\"ts\":\"",
            1 => "\",\"type\":\"support\",\"ts\":\"",
            _ => "\",\"type\":\"trade\",\"ts\":\"",
        });
        if kind == 4 {
            b.raw(BAD_TS[self.rng.below(3) as usize]);
        } else {
            b.ts(self.now);
        }
        b.raw("\"");
        if kind != 3 {
            b.id_field("user_id", 'u', user);
        }
        match kind {
            // Cut off mid-number: not JSON.
            0 => b.raw(",\"amount_usd\":12"),
            1 => {
                b.id_field("ticket_id", 't', self.next_ticket.saturating_sub(1).max(1));
                b.raw(",\"action\":\"rated\",\"csat\":9}");
            }
            2 => b.raw(",\"amount_usd\":-42.50}"),
            // 3: no user_id; 4: a ts that is not a time.
            _ => b.raw(",\"notional_usd\":100.00,\"fee_usd\":0.1000}"),
        }
        let meta = LineMeta {
            ts: self.now,
            key: LineKey::None,
            noise: Noise::Invalid,
        };
        self.hold(self.now, meta, b.bytes);
    }
}
