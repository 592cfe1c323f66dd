//! Canonical event model (EVENTS.md), decoding and schema mapping.
//!
//! Decoding turns raw message bytes into a borrowed [`Event`] or a
//! [`DecodeFailure`] carrying the reason that goes on the dead-letter record.
//! Nothing here does I/O or looks at the wall clock.
//!
//! Layout (imports go one way: `decode` -> `mapping` -> `raw` -> `error`):
//! - this file: the canonical model ([`Event`], [`EventType`], ...);
//! - [`error`]: [`DecodeError`] (the dead-letter reason codes), [`DecodeFailure`];
//! - `raw`: the canonical fields as read from a message, unchecked, and the
//!   one validation that turns them into an [`Event`];
//! - [`mapping`]: the `[mapping]` config section, checked and compiled into a
//!   [`Mapping`], and the mapped decoding (JSON Pointers into `raw`);
//! - [`decode`]: the [`Decoder`] and the canonical fast path;
//! - [`time`]: RFC 3339 parsing and formatting.

pub mod decode;
pub mod error;
pub mod mapping;
mod raw;
pub mod time;

use std::borrow::Cow;

pub use decode::Decoder;
pub use error::{DecodeError, DecodeFailure};
pub use mapping::{Mapping, MappingConfig};

/// Event time and all durations inside the engine: Unix epoch milliseconds.
pub type Millis = i64;

/// Longest accepted `event_id`, `user_id` and other identifier strings, in bytes.
pub const MAX_ID_BYTES: usize = 128;

/// Default of `engine.max_amount_usd`: larger money amounts are `out_of_range`.
/// A trillion USD is far above any real single amount, and a sum of 2^53
/// of them (about 9e27) is still finite (see docs/semantics.md).
pub const DEFAULT_MAX_AMOUNT_USD: f64 = 1e12;

/// The largest value `engine.max_amount_usd` may be configured to: even 2^64
/// amounts of it (about 1.8e37) sum to a finite number.
pub const MAX_AMOUNT_USD_LIMIT: f64 = 1e18;

/// The six canonical event types.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum EventType {
    Signup,
    Deposit,
    Trade,
    Referral,
    Support,
    Spend,
}

impl EventType {
    pub const ALL: [EventType; 6] = [
        EventType::Signup,
        EventType::Deposit,
        EventType::Trade,
        EventType::Referral,
        EventType::Support,
        EventType::Spend,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            EventType::Signup => "signup",
            EventType::Deposit => "deposit",
            EventType::Trade => "trade",
            EventType::Referral => "referral",
            EventType::Support => "support",
            EventType::Spend => "spend",
        }
    }

    pub fn parse(s: &str) -> Option<EventType> {
        Some(match s {
            "signup" => EventType::Signup,
            "deposit" => EventType::Deposit,
            "trade" => EventType::Trade,
            "referral" => EventType::Referral,
            "support" => EventType::Support,
            "spend" => EventType::Spend,
            _ => return None,
        })
    }

    pub fn index(self) -> usize {
        self as usize
    }
}

/// Ticket priority; `normal` when an `opened` action carries none.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub enum Priority {
    Low,
    #[default]
    Normal,
    High,
    Urgent,
}

impl Priority {
    pub const ALL: [Priority; 4] = [
        Priority::Low,
        Priority::Normal,
        Priority::High,
        Priority::Urgent,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Priority::Low => "low",
            Priority::Normal => "normal",
            Priority::High => "high",
            Priority::Urgent => "urgent",
        }
    }

    pub fn parse(s: &str) -> Option<Priority> {
        Some(match s {
            "low" => Priority::Low,
            "normal" => Priority::Normal,
            "high" => Priority::High,
            "urgent" => Priority::Urgent,
            _ => return None,
        })
    }

    pub fn index(self) -> usize {
        self as usize
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum SupportAction {
    Opened,
    AgentReplied,
    CustomerReplied,
    Pending,
    Resolved,
    Reopened,
    Rated,
}

impl SupportAction {
    pub fn parse(s: &str) -> Option<SupportAction> {
        Some(match s {
            "opened" => SupportAction::Opened,
            "agent_replied" => SupportAction::AgentReplied,
            "customer_replied" => SupportAction::CustomerReplied,
            "pending" => SupportAction::Pending,
            "resolved" => SupportAction::Resolved,
            "reopened" => SupportAction::Reopened,
            "rated" => SupportAction::Rated,
            _ => return None,
        })
    }

    pub fn as_str(self) -> &'static str {
        match self {
            SupportAction::Opened => "opened",
            SupportAction::AgentReplied => "agent_replied",
            SupportAction::CustomerReplied => "customer_replied",
            SupportAction::Pending => "pending",
            SupportAction::Resolved => "resolved",
            SupportAction::Reopened => "reopened",
            SupportAction::Rated => "rated",
        }
    }
}

/// Survey answers carried by a `rated` support action; each already range-checked.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct Ratings {
    /// 1..=5
    pub csat: Option<u8>,
    /// 1..=7, 7 = easiest
    pub ces: Option<u8>,
    /// 0..=10
    pub nps: Option<u8>,
}

#[derive(Clone, Copy, Debug, PartialEq)]
pub enum ReferralAction {
    InviteSent,
    Rewarded { reward_usd: f64 },
}

/// The type-specific part of an event, validated.
#[derive(Clone, Debug, PartialEq)]
pub enum EventBody<'a> {
    Signup {
        /// `None` when absent (then `referral` if `referrer_id` is set, else `unknown`).
        channel: Option<Cow<'a, str>>,
        campaign: Option<Cow<'a, str>>,
        referrer_id: Option<Cow<'a, str>>,
        country: Option<Cow<'a, str>>,
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
        ticket_id: Cow<'a, str>,
        action: SupportAction,
        /// Only meaningful on `opened`; `None` = absent (normal).
        priority: Option<Priority>,
        ratings: Ratings,
    },
    Spend {
        channel: Cow<'a, str>,
        amount_usd: f64,
    },
}

/// A valid canonical event. Strings borrow from the message where possible.
#[derive(Clone, Debug, PartialEq)]
pub struct Event<'a> {
    pub event_id: Cow<'a, str>,
    /// Event time, epoch milliseconds.
    pub ts: Millis,
    /// Required for every type except `spend`.
    pub user_id: Option<Cow<'a, str>>,
    pub body: EventBody<'a>,
}

impl Event<'_> {
    pub fn event_type(&self) -> EventType {
        match self.body {
            EventBody::Signup { .. } => EventType::Signup,
            EventBody::Deposit { .. } => EventType::Deposit,
            EventBody::Trade { .. } => EventType::Trade,
            EventBody::Referral { .. } => EventType::Referral,
            EventBody::Support { .. } => EventType::Support,
            EventBody::Spend { .. } => EventType::Spend,
        }
    }
}
