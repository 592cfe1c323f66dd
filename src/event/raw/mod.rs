//! The raw-field layer both input shapes share: the canonical [`Field`]s, a
//! message's fields as read but not yet checked ([`Raw`], [`RawEvent`]), and
//! their one validation into an [`Event`] ([`validate`]).
//!
//! The canonical decoder ([`super::decode`]) fills a [`RawEvent`] straight from
//! the JSON bytes; the mapped one ([`super::mapping`]) fills it by JSON Pointer
//! and from a type rule's fixed values. Neither is imported here.

mod validate;

use std::borrow::Cow;
use std::fmt;

use validate::wrong_type;
pub(crate) use validate::{TsFormat, check_fixed_value, validate};

use super::error::DecodeError;
use super::{Event, EventBody, EventType};

/// The canonical fields, as named in EVENTS.md and in the mapping config.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Field {
    EventId,
    Type,
    Ts,
    UserId,
    Channel,
    Campaign,
    ReferrerId,
    Country,
    AmountUsd,
    NotionalUsd,
    FeeUsd,
    Action,
    RewardUsd,
    TicketId,
    Priority,
    Csat,
    Ces,
    Nps,
}

impl Field {
    pub const ALL: [Field; 18] = [
        Field::EventId,
        Field::Type,
        Field::Ts,
        Field::UserId,
        Field::Channel,
        Field::Campaign,
        Field::ReferrerId,
        Field::Country,
        Field::AmountUsd,
        Field::NotionalUsd,
        Field::FeeUsd,
        Field::Action,
        Field::RewardUsd,
        Field::TicketId,
        Field::Priority,
        Field::Csat,
        Field::Ces,
        Field::Nps,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Field::EventId => "event_id",
            Field::Type => "type",
            Field::Ts => "ts",
            Field::UserId => "user_id",
            Field::Channel => "channel",
            Field::Campaign => "campaign",
            Field::ReferrerId => "referrer_id",
            Field::Country => "country",
            Field::AmountUsd => "amount_usd",
            Field::NotionalUsd => "notional_usd",
            Field::FeeUsd => "fee_usd",
            Field::Action => "action",
            Field::RewardUsd => "reward_usd",
            Field::TicketId => "ticket_id",
            Field::Priority => "priority",
            Field::Csat => "csat",
            Field::Ces => "ces",
            Field::Nps => "nps",
        }
    }

    pub fn parse(s: &str) -> Option<Field> {
        Some(match s {
            "event_id" => Field::EventId,
            "type" => Field::Type,
            "ts" => Field::Ts,
            "user_id" => Field::UserId,
            "channel" => Field::Channel,
            "campaign" => Field::Campaign,
            "referrer_id" => Field::ReferrerId,
            "country" => Field::Country,
            "amount_usd" => Field::AmountUsd,
            "notional_usd" => Field::NotionalUsd,
            "fee_usd" => Field::FeeUsd,
            "action" => Field::Action,
            "reward_usd" => Field::RewardUsd,
            "ticket_id" => Field::TicketId,
            "priority" => Field::Priority,
            "csat" => Field::Csat,
            "ces" => Field::Ces,
            "nps" => Field::Nps,
            _ => return None,
        })
    }

    /// Envelope fields, present on every type.
    pub fn is_envelope(self) -> bool {
        matches!(
            self,
            Field::EventId | Field::Type | Field::Ts | Field::UserId
        )
    }

    /// Whether events of type `ty` read this field.
    pub fn applies_to(self, ty: EventType) -> bool {
        use EventType as T;
        match self {
            Field::EventId | Field::Type | Field::Ts | Field::UserId => true,
            Field::Channel => matches!(ty, T::Signup | T::Spend),
            Field::Campaign | Field::ReferrerId | Field::Country => ty == T::Signup,
            Field::AmountUsd => matches!(ty, T::Deposit | T::Spend),
            Field::NotionalUsd | Field::FeeUsd => ty == T::Trade,
            Field::Action => matches!(ty, T::Referral | T::Support),
            Field::RewardUsd => ty == T::Referral,
            Field::TicketId | Field::Priority | Field::Csat | Field::Ces | Field::Nps => {
                ty == T::Support
            }
        }
    }
}

impl fmt::Display for Field {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One JSON value as read from a message, before validation. Any JSON value
/// deserializes into it, so a wrong type becomes a per-field error later.
#[derive(Clone, Debug, PartialEq)]
pub(crate) enum Raw<'a> {
    Str(Cow<'a, str>),
    /// Non-negative integer.
    UInt(u64),
    /// Negative integer.
    NegInt(i64),
    /// Number with a fraction or exponent.
    Float(f64),
    /// Boolean, array or object: only ever the wrong type. Holds its description.
    Other(&'static str),
}

impl Raw<'_> {
    fn kind(&self) -> &'static str {
        match self {
            Raw::Str(_) => "a string",
            Raw::UInt(_) | Raw::NegInt(_) | Raw::Float(_) => "a number",
            Raw::Other(k) => k,
        }
    }

    /// A `serde_json::Value` as a `Raw`; `None` for `null`.
    pub(crate) fn from_json(v: &serde_json::Value) -> Option<Raw<'_>> {
        use serde_json::Value as V;
        Some(match v {
            V::Null => return None,
            V::Bool(_) => Raw::Other("a boolean"),
            V::Number(n) => match (n.as_u64(), n.as_i64(), n.as_f64()) {
                (Some(u), _, _) => Raw::UInt(u),
                (None, Some(i), _) => Raw::NegInt(i),
                (None, None, Some(f)) => Raw::Float(f),
                (None, None, None) => Raw::Other("a number"),
            },
            V::String(s) => Raw::Str(Cow::Borrowed(s)),
            V::Array(_) => Raw::Other("an array"),
            V::Object(_) => Raw::Other("an object"),
        })
    }
}

/// Every canonical field of a message, unvalidated, indexed by [`Field`].
/// `None` = absent or `null`.
#[derive(Debug, Default)]
pub(crate) struct RawEvent<'a>([Option<Raw<'a>>; Field::ALL.len()]);

impl<'a> RawEvent<'a> {
    pub(crate) fn slot(&mut self, f: Field) -> &mut Option<Raw<'a>> {
        &mut self.0[f as usize]
    }

    fn take(&mut self, f: Field) -> Option<Raw<'a>> {
        self.0[f as usize].take()
    }
}

/// The message's type string: present, a string, not empty.
pub(crate) fn type_str<'r>(v: Option<&'r Raw<'_>>) -> Result<&'r str, DecodeError> {
    match v {
        None => Err(DecodeError::MissingField("type")),
        Some(Raw::Str(s)) if s.is_empty() => Err(DecodeError::EmptyField("type")),
        Some(Raw::Str(s)) => Ok(s),
        Some(other) => Err(wrong_type(Field::Type, "a string", other)),
    }
}

/// Detaches an event from the buffer it borrowed from (the mapped path's `Value`).
pub(crate) fn into_owned(e: Event<'_>) -> Event<'static> {
    fn own(c: Cow<'_, str>) -> Cow<'static, str> {
        Cow::Owned(c.into_owned())
    }
    let body = match e.body {
        EventBody::Signup {
            channel,
            campaign,
            referrer_id,
            country,
        } => EventBody::Signup {
            channel: channel.map(own),
            campaign: campaign.map(own),
            referrer_id: referrer_id.map(own),
            country: country.map(own),
        },
        EventBody::Deposit { amount_usd } => EventBody::Deposit { amount_usd },
        EventBody::Trade {
            notional_usd,
            fee_usd,
        } => EventBody::Trade {
            notional_usd,
            fee_usd,
        },
        EventBody::Referral { action } => EventBody::Referral { action },
        EventBody::Support {
            ticket_id,
            action,
            priority,
            ratings,
        } => EventBody::Support {
            ticket_id: own(ticket_id),
            action,
            priority,
            ratings,
        },
        EventBody::Spend {
            channel,
            amount_usd,
        } => EventBody::Spend {
            channel: own(channel),
            amount_usd,
        },
    };
    Event {
        event_id: own(e.event_id),
        ts: e.ts,
        user_id: e.user_id.map(own),
        body,
    }
}
