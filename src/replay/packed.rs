//! A decoded [`Event`] that owns nothing: its strings are ranges of a
//! per-batch string arena. A decode worker packs every event of a chunk into
//! one arena (no allocation per event); the applying thread unpacks each back
//! into an [`Event`] borrowing from that arena.

use std::borrow::Cow;

use crate::event::{Event, EventBody, Millis, Priority, Ratings, ReferralAction, SupportAction};

/// A string of the arena: `start..end` (byte offsets).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Span {
    start: usize,
    end: usize,
}

/// The strings of a batch's events, back to back.
#[derive(Debug, Default)]
pub(crate) struct Arena {
    text: String,
}

impl Arena {
    pub(crate) fn with_capacity(bytes: usize) -> Arena {
        Arena {
            text: String::with_capacity(bytes),
        }
    }

    pub(crate) fn clear(&mut self) {
        self.text.clear();
    }

    fn push(&mut self, s: &str) -> Span {
        let start = self.text.len();
        self.text.push_str(s);
        Span {
            start,
            end: self.text.len(),
        }
    }

    fn get(&self, s: Span) -> &str {
        // Spans are only made by `push` on this arena, at char boundaries.
        self.text.get(s.start..s.end).unwrap_or_default()
    }
}

#[derive(Clone, Debug, PartialEq)]
enum Body {
    Signup {
        channel: Option<Span>,
        campaign: Option<Span>,
        referrer_id: Option<Span>,
        country: Option<Span>,
    },
    Deposit {
        amount_usd: f64,
    },
    Trade {
        notional_usd: f64,
        fee_usd: f64,
    },
    Referral {
        action: ReferralAction,
    },
    Support {
        ticket_id: Span,
        action: SupportAction,
        priority: Option<Priority>,
        ratings: Ratings,
    },
    Spend {
        channel: Span,
        amount_usd: f64,
    },
}

/// An [`Event`] whose strings live in an [`Arena`].
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct Packed {
    event_id: Span,
    ts: Millis,
    user_id: Option<Span>,
    body: Body,
}

impl Packed {
    /// Copies `ev`'s strings into `arena`.
    pub(crate) fn pack(ev: &Event<'_>, arena: &mut Arena) -> Packed {
        let mut opt = |s: &Option<Cow<'_, str>>| s.as_deref().map(|s| arena.push(s));
        let user_id = opt(&ev.user_id);
        let body = match &ev.body {
            EventBody::Signup {
                channel,
                campaign,
                referrer_id,
                country,
            } => Body::Signup {
                channel: opt(channel),
                campaign: opt(campaign),
                referrer_id: opt(referrer_id),
                country: opt(country),
            },
            EventBody::Deposit { amount_usd } => Body::Deposit {
                amount_usd: *amount_usd,
            },
            EventBody::Trade {
                notional_usd,
                fee_usd,
            } => Body::Trade {
                notional_usd: *notional_usd,
                fee_usd: *fee_usd,
            },
            EventBody::Referral { action } => Body::Referral { action: *action },
            EventBody::Support {
                ticket_id,
                action,
                priority,
                ratings,
            } => Body::Support {
                ticket_id: arena.push(ticket_id),
                action: *action,
                priority: *priority,
                ratings: *ratings,
            },
            EventBody::Spend {
                channel,
                amount_usd,
            } => Body::Spend {
                channel: arena.push(channel),
                amount_usd: *amount_usd,
            },
        };
        Packed {
            event_id: arena.push(&ev.event_id),
            ts: ev.ts,
            user_id,
            body,
        }
    }

    pub(crate) fn ts(&self) -> Millis {
        self.ts
    }

    /// The event again, borrowing from `arena` (the one it was packed into).
    pub(crate) fn unpack<'a>(&self, arena: &'a Arena) -> Event<'a> {
        let s = |s: Span| Cow::Borrowed(arena.get(s));
        let opt = |s: Option<Span>| s.map(|s| Cow::Borrowed(arena.get(s)));
        let body = match self.body {
            Body::Signup {
                channel,
                campaign,
                referrer_id,
                country,
            } => EventBody::Signup {
                channel: opt(channel),
                campaign: opt(campaign),
                referrer_id: opt(referrer_id),
                country: opt(country),
            },
            Body::Deposit { amount_usd } => EventBody::Deposit { amount_usd },
            Body::Trade {
                notional_usd,
                fee_usd,
            } => EventBody::Trade {
                notional_usd,
                fee_usd,
            },
            Body::Referral { action } => EventBody::Referral { action },
            Body::Support {
                ticket_id,
                action,
                priority,
                ratings,
            } => EventBody::Support {
                ticket_id: s(ticket_id),
                action,
                priority,
                ratings,
            },
            Body::Spend {
                channel,
                amount_usd,
            } => EventBody::Spend {
                channel: s(channel),
                amount_usd,
            },
        };
        Event {
            event_id: s(self.event_id),
            ts: self.ts,
            user_id: opt(self.user_id),
            body,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::{Decoder, Mapping};

    /// Every shape of event, packed into one arena and unpacked, is the event
    /// the decoder gave (escaped strings, which the decoder owns, included).
    #[test]
    fn pack_then_unpack_gives_the_decoded_event_back() {
        let d = Decoder::new(&Mapping::default(), 1 << 20, false);
        let lines: &[&str] = &[
            r#"{"event_id":"s1","type":"signup","ts":"2026-03-01T10:00:00Z","user_id":"u\u00e91","channel":"ads","campaign":"c1","referrer_id":"u9","country":"DE"}"#,
            r#"{"event_id":"s2","type":"signup","ts":1772359200000,"user_id":"u2"}"#,
            r#"{"event_id":"d1","type":"deposit","ts":"2026-03-01T10:00:01Z","user_id":"u1","amount_usd":12.5}"#,
            r#"{"event_id":"t1","type":"trade","ts":"2026-03-01T10:00:02Z","user_id":"u1","notional_usd":100,"fee_usd":0.25}"#,
            r#"{"event_id":"r1","type":"referral","ts":"2026-03-01T10:00:03Z","user_id":"u1","action":"rewarded","reward_usd":5}"#,
            r#"{"event_id":"r2","type":"referral","ts":"2026-03-01T10:00:03Z","user_id":"u1","action":"invite_sent"}"#,
            r#"{"event_id":"k1","type":"support","ts":"2026-03-01T10:00:04Z","user_id":"u1","ticket_id":"t\"7","action":"opened","priority":"high"}"#,
            r#"{"event_id":"k2","type":"support","ts":"2026-03-01T10:00:05Z","user_id":"u1","ticket_id":"t7","action":"rated","csat":4,"ces":6,"nps":9}"#,
            r#"{"event_id":"p1","type":"spend","ts":"2026-03-01T10:00:06Z","channel":"ads","amount_usd":300}"#,
        ];
        let mut arena = Arena::with_capacity(0);
        let mut packed = Vec::new();
        for l in lines {
            let ev = match d.decode(l.as_bytes(), None) {
                Ok(ev) => ev,
                Err(f) => panic!("{l}: {}", f.error),
            };
            packed.push((Packed::pack(&ev, &mut arena), ev));
        }
        for (p, ev) in &packed {
            assert_eq!(&p.unpack(&arena), ev);
            assert_eq!(p.ts(), ev.ts);
        }
        let (p0, _) = &packed[0];
        assert_eq!(p0.unpack(&arena).user_id.as_deref(), Some("u\u{e9}1"));
        assert_eq!(p0.ts(), 1_772_359_200_000);
        let (p6, _) = &packed[6];
        assert_eq!(
            p6.unpack(&arena).body,
            EventBody::Support {
                ticket_id: Cow::Borrowed("t\"7"),
                action: SupportAction::Opened,
                priority: Some(Priority::High),
                ratings: Ratings::default(),
            }
        );
        let (p7, _) = &packed[7];
        assert!(matches!(
            p7.unpack(&arena).body,
            EventBody::Support {
                ratings: Ratings {
                    csat: Some(4),
                    ces: Some(6),
                    nps: Some(9)
                },
                ..
            }
        ));
    }
}
