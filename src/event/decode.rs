//! Message bytes to a validated [`Event`], or the reason it is invalid.
//!
//! Both input shapes go through one validation ([`validate`]):
//!
//! - canonical (EVENTS.md): serde derive straight into [`RawEvent`], a struct of
//!   optional [`Raw`] scalars that borrow strings from the message. `Raw`
//!   accepts any JSON value and records what it was, so a wrong type is
//!   reported by field name instead of as an opaque serde error, and the happy
//!   path costs no more than deserializing a typed struct.
//! - mapped ([`super::mapping`]): the message is parsed into a
//!   `serde_json::Value`, each canonical field is fetched by JSON Pointer into
//!   the same `RawEvent`, and the fixed values of the type rule are filled in.
//!
//! Rules that EVENTS.md leaves open, decided here:
//! - `null` and the empty string count as absent, for every field. A required
//!   field that is absent is `missing_field`; an optional one is just absent.
//! - A number with no fractional part (`4.0`) is accepted where an integer is
//!   required (ratings, integer epoch ms); `4.5` is `out_of_range`.
//! - Fields a type does not use are never looked at, whatever they hold;
//!   ratings are read on `rated` only, `reward_usd` on `rewarded` only.
//!   `priority` is read (and must be valid) on every support action.
//! - `ts` must lie in 1970-01-01T00:00:00Z..=9999-12-31T23:59:59.999Z.
//! - When several things are wrong, the first in this order is reported:
//!   `type`, `event_id`, `ts`, `user_id`, then the type's own fields.
//! - The canonical path rejects a message naming a field it reads twice
//!   (`not_json`); the mapped path, via `serde_json::Value`, keeps the last one.

use std::borrow::Cow;
use std::fmt;
use std::ops::RangeInclusive;

use serde::de::{self, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};

use super::mapping::{CompiledMapping, MappingConfig, TsFormat};
use super::time::{MAX_RFC3339_MS, parse_rfc3339};
use super::{
    Event, EventBody, EventType, MAX_ID_BYTES, Millis, Priority, Ratings, ReferralAction,
    SupportAction,
};

/// Why a message is invalid. [`DecodeError::reason`] is the stable dead-letter code.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum DecodeError {
    #[error("message is not valid JSON: {0}")]
    NotJson(String),
    #[error("message is JSON but not a JSON object")]
    NotObject,
    #[error("message is {size} bytes, over the maximum of {max}")]
    TooLarge { size: usize, max: usize },
    #[error("required field `{0}` is missing")]
    MissingField(&'static str),
    #[error("required field `{0}` is an empty string")]
    EmptyField(&'static str),
    #[error("field `{field}` must be {expected}, not {found}")]
    WrongType {
        field: &'static str,
        expected: &'static str,
        found: &'static str,
    },
    #[error("field `{field}` is out of range: {detail}")]
    OutOfRange { field: &'static str, detail: String },
    #[error("unknown event type `{0}`")]
    UnknownType(String),
    #[error("field `{field}` has unknown value `{value}` (expected one of: {expected})")]
    UnknownValue {
        field: &'static str,
        value: String,
        expected: &'static str,
    },
    #[error("field `ts` is not a valid timestamp: {0}")]
    BadTimestamp(String),
    #[error("field `{field}` is {len} bytes, over the limit of {max}")]
    TooLong {
        field: &'static str,
        len: usize,
        max: usize,
    },
}

impl DecodeError {
    /// Short stable code for the dead-letter `reason` header.
    pub fn reason(&self) -> &'static str {
        match self {
            DecodeError::NotJson(_) | DecodeError::NotObject => "not_json",
            DecodeError::TooLarge { .. } => "too_large",
            DecodeError::MissingField(_) | DecodeError::EmptyField(_) => "missing_field",
            DecodeError::WrongType { .. } => "wrong_type",
            DecodeError::OutOfRange { .. } => "out_of_range",
            DecodeError::UnknownType(_) => "unknown_type",
            DecodeError::UnknownValue { .. } => "unknown_value",
            DecodeError::BadTimestamp(_) => "bad_timestamp",
            DecodeError::TooLong { .. } => "too_long",
        }
    }
}

/// An invalid message: the error, and the canonical type when it could be read
/// (the `type` label of `cxpulse_events_total{outcome="invalid"}`).
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{error}")]
pub struct DecodeFailure {
    pub error: DecodeError,
    pub event_type: Option<EventType>,
}

impl DecodeFailure {
    pub(crate) fn untyped(error: DecodeError) -> DecodeFailure {
        DecodeFailure {
            error,
            event_type: None,
        }
    }
}

/// Decodes messages of one input shape. Cheap to clone; immutable while decoding.
#[derive(Clone, Debug)]
pub struct Decoder {
    /// `None`: the canonical schema (the fast path).
    mapping: Option<CompiledMapping>,
    /// Larger messages are invalid without being parsed.
    max_message_bytes: usize,
    /// Whether a message without `ts` takes the Kafka message timestamp.
    kafka_timestamp_fallback: bool,
}

impl Decoder {
    /// # Panics
    /// If `mapping` does not pass [`MappingConfig::validate`]; configs are
    /// validated when loaded, so this is a programming error.
    pub fn new(
        mapping: &MappingConfig,
        max_message_bytes: usize,
        kafka_timestamp_fallback: bool,
    ) -> Decoder {
        match Self::try_new(mapping, max_message_bytes, kafka_timestamp_fallback) {
            Ok(d) => d,
            Err((key, msg)) => panic!("unvalidated mapping config: mapping.{key}: {msg}"),
        }
    }

    /// As [`Decoder::new`], returning the mapping's config error instead of panicking.
    pub fn try_new(
        mapping: &MappingConfig,
        max_message_bytes: usize,
        kafka_timestamp_fallback: bool,
    ) -> Result<Decoder, (String, String)> {
        Ok(Decoder {
            mapping: mapping.compile()?,
            max_message_bytes,
            kafka_timestamp_fallback,
        })
    }

    /// Decodes and validates one message. `kafka_ts` is the Kafka message
    /// timestamp, used only when the event has no `ts` and the fallback is on.
    /// Never panics.
    pub fn decode<'a>(
        &self,
        bytes: &'a [u8],
        kafka_ts: Option<Millis>,
    ) -> Result<Event<'a>, DecodeFailure> {
        if bytes.len() > self.max_message_bytes {
            return Err(DecodeFailure::untyped(DecodeError::TooLarge {
                size: bytes.len(),
                max: self.max_message_bytes,
            }));
        }
        let fallback = if self.kafka_timestamp_fallback {
            kafka_ts
        } else {
            None
        };
        match &self.mapping {
            None => decode_canonical(bytes, fallback),
            Some(m) => m.decode(bytes, fallback),
        }
    }
}

fn decode_canonical(bytes: &[u8], fallback_ts: Option<Millis>) -> Result<Event<'_>, DecodeFailure> {
    // serde derive would also accept a JSON array as a struct, by position.
    if bytes.iter().find(|b| !b.is_ascii_whitespace()) != Some(&b'{') {
        return Err(DecodeFailure::untyped(
            match serde_json::from_slice::<IgnoredAny>(bytes) {
                Ok(_) => DecodeError::NotObject,
                Err(e) => DecodeError::NotJson(e.to_string()),
            },
        ));
    }
    let raw: RawEvent<'_> = serde_json::from_slice(bytes)
        .map_err(|e| DecodeFailure::untyped(DecodeError::NotJson(e.to_string())))?;
    let ty = canonical_type(raw.ty.as_ref()).map_err(DecodeFailure::untyped)?;
    validate(raw, ty, TsFormat::Auto, fallback_ts).map_err(|error| DecodeFailure {
        error,
        event_type: Some(ty),
    })
}

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
        Field::ALL.into_iter().find(|f| f.as_str() == s)
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

impl<'de: 'a, 'a> serde::Deserialize<'de> for Raw<'a> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(RawVisitor)
    }
}

struct RawVisitor;

impl<'de> Visitor<'de> for RawVisitor {
    type Value = Raw<'de>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("any JSON value")
    }
    fn visit_bool<E: de::Error>(self, _: bool) -> Result<Raw<'de>, E> {
        Ok(Raw::Other("a boolean"))
    }
    fn visit_u64<E: de::Error>(self, v: u64) -> Result<Raw<'de>, E> {
        Ok(Raw::UInt(v))
    }
    fn visit_i64<E: de::Error>(self, v: i64) -> Result<Raw<'de>, E> {
        Ok(match u64::try_from(v) {
            Ok(u) => Raw::UInt(u),
            Err(_) => Raw::NegInt(v),
        })
    }
    fn visit_f64<E: de::Error>(self, v: f64) -> Result<Raw<'de>, E> {
        Ok(Raw::Float(v))
    }
    fn visit_borrowed_str<E: de::Error>(self, v: &'de str) -> Result<Raw<'de>, E> {
        Ok(Raw::Str(Cow::Borrowed(v)))
    }
    fn visit_str<E: de::Error>(self, v: &str) -> Result<Raw<'de>, E> {
        Ok(Raw::Str(Cow::Owned(v.to_owned())))
    }
    fn visit_string<E: de::Error>(self, v: String) -> Result<Raw<'de>, E> {
        Ok(Raw::Str(Cow::Owned(v)))
    }
    fn visit_unit<E: de::Error>(self) -> Result<Raw<'de>, E> {
        Ok(Raw::Other("null"))
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Raw<'de>, A::Error> {
        while seq.next_element::<IgnoredAny>()?.is_some() {}
        Ok(Raw::Other("an array"))
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Raw<'de>, A::Error> {
        while map.next_entry::<IgnoredAny, IgnoredAny>()?.is_some() {}
        Ok(Raw::Other("an object"))
    }
}

/// Every canonical field of a message, unvalidated. `None` = absent or `null`.
#[derive(Debug, Default, serde::Deserialize)]
pub(crate) struct RawEvent<'a> {
    #[serde(borrow, default)]
    pub event_id: Option<Raw<'a>>,
    #[serde(borrow, default, rename = "type")]
    pub ty: Option<Raw<'a>>,
    #[serde(borrow, default)]
    pub ts: Option<Raw<'a>>,
    #[serde(borrow, default)]
    pub user_id: Option<Raw<'a>>,
    #[serde(borrow, default)]
    pub channel: Option<Raw<'a>>,
    #[serde(borrow, default)]
    pub campaign: Option<Raw<'a>>,
    #[serde(borrow, default)]
    pub referrer_id: Option<Raw<'a>>,
    #[serde(borrow, default)]
    pub country: Option<Raw<'a>>,
    #[serde(borrow, default)]
    pub amount_usd: Option<Raw<'a>>,
    #[serde(borrow, default)]
    pub notional_usd: Option<Raw<'a>>,
    #[serde(borrow, default)]
    pub fee_usd: Option<Raw<'a>>,
    #[serde(borrow, default)]
    pub action: Option<Raw<'a>>,
    #[serde(borrow, default)]
    pub reward_usd: Option<Raw<'a>>,
    #[serde(borrow, default)]
    pub ticket_id: Option<Raw<'a>>,
    #[serde(borrow, default)]
    pub priority: Option<Raw<'a>>,
    #[serde(borrow, default)]
    pub csat: Option<Raw<'a>>,
    #[serde(borrow, default)]
    pub ces: Option<Raw<'a>>,
    #[serde(borrow, default)]
    pub nps: Option<Raw<'a>>,
}

impl<'a> RawEvent<'a> {
    pub(crate) fn slot(&mut self, f: Field) -> &mut Option<Raw<'a>> {
        match f {
            Field::EventId => &mut self.event_id,
            Field::Type => &mut self.ty,
            Field::Ts => &mut self.ts,
            Field::UserId => &mut self.user_id,
            Field::Channel => &mut self.channel,
            Field::Campaign => &mut self.campaign,
            Field::ReferrerId => &mut self.referrer_id,
            Field::Country => &mut self.country,
            Field::AmountUsd => &mut self.amount_usd,
            Field::NotionalUsd => &mut self.notional_usd,
            Field::FeeUsd => &mut self.fee_usd,
            Field::Action => &mut self.action,
            Field::RewardUsd => &mut self.reward_usd,
            Field::TicketId => &mut self.ticket_id,
            Field::Priority => &mut self.priority,
            Field::Csat => &mut self.csat,
            Field::Ces => &mut self.ces,
            Field::Nps => &mut self.nps,
        }
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

fn canonical_type(v: Option<&Raw<'_>>) -> Result<EventType, DecodeError> {
    let s = type_str(v)?;
    EventType::parse(s).ok_or_else(|| DecodeError::UnknownType(clip(s)))
}

/// The single validation of both input shapes: `raw` holds the message's
/// fields, `ty` its already resolved canonical type.
pub(crate) fn validate<'a>(
    raw: RawEvent<'a>,
    ty: EventType,
    ts_format: TsFormat,
    fallback_ts: Option<Millis>,
) -> Result<Event<'a>, DecodeError> {
    let event_id = required_str(raw.event_id, Field::EventId)?;
    let ts = timestamp(raw.ts, ts_format, fallback_ts)?;
    let user_id = match ty {
        EventType::Spend => optional_str(raw.user_id, Field::UserId)?,
        _ => Some(required_str(raw.user_id, Field::UserId)?),
    };
    let body = match ty {
        EventType::Signup => EventBody::Signup {
            channel: optional_str(raw.channel, Field::Channel)?,
            campaign: optional_str(raw.campaign, Field::Campaign)?,
            referrer_id: optional_str(raw.referrer_id, Field::ReferrerId)?,
            country: optional_str(raw.country, Field::Country)?,
        },
        EventType::Deposit => EventBody::Deposit {
            amount_usd: required_amount(raw.amount_usd, Field::AmountUsd)?,
        },
        EventType::Trade => EventBody::Trade {
            notional_usd: required_amount(raw.notional_usd, Field::NotionalUsd)?,
            fee_usd: required_amount(raw.fee_usd, Field::FeeUsd)?,
        },
        EventType::Referral => EventBody::Referral {
            action: match referral_action(required(raw.action, Field::Action)?)? {
                RefAction::InviteSent => ReferralAction::InviteSent,
                RefAction::Rewarded => ReferralAction::Rewarded {
                    reward_usd: required_amount(raw.reward_usd, Field::RewardUsd)?,
                },
            },
        },
        EventType::Support => {
            let ticket_id = required_str(raw.ticket_id, Field::TicketId)?;
            let action = support_action(required(raw.action, Field::Action)?)?;
            let priority = match present(raw.priority) {
                None => None,
                Some(v) => Some(priority(v)?),
            };
            let ratings = if action == SupportAction::Rated {
                Ratings {
                    csat: optional_rating(raw.csat, Field::Csat)?,
                    ces: optional_rating(raw.ces, Field::Ces)?,
                    nps: optional_rating(raw.nps, Field::Nps)?,
                }
            } else {
                Ratings::default()
            };
            EventBody::Support {
                ticket_id,
                action,
                priority,
                ratings,
            }
        }
        EventType::Spend => EventBody::Spend {
            channel: required_str(raw.channel, Field::Channel)?,
            amount_usd: required_amount(raw.amount_usd, Field::AmountUsd)?,
        },
    };
    Ok(Event {
        event_id,
        ts,
        user_id,
        body,
    })
}

/// Checks one fixed value of a mapping type rule (`set`) as [`validate`] would
/// check it on an event of type `ty`.
pub(crate) fn check_fixed_value(ty: EventType, f: Field, v: Raw<'_>) -> Result<(), DecodeError> {
    match f {
        Field::Action if ty == EventType::Referral => referral_action(v).map(drop),
        Field::Action => support_action(v).map(drop),
        Field::Priority => priority(v).map(drop),
        Field::Csat | Field::Ces | Field::Nps => optional_rating(Some(v), f).map(drop),
        Field::AmountUsd | Field::NotionalUsd | Field::FeeUsd | Field::RewardUsd => {
            required_amount(Some(v), f).map(drop)
        }
        _ => required_str(Some(v), f).map(drop),
    }
}

/// `null` and `""` are absent.
fn present(v: Option<Raw<'_>>) -> Option<Raw<'_>> {
    match v {
        Some(Raw::Str(s)) if s.is_empty() => None,
        v => v,
    }
}

fn required(v: Option<Raw<'_>>, f: Field) -> Result<Raw<'_>, DecodeError> {
    match v {
        None => Err(DecodeError::MissingField(f.as_str())),
        Some(Raw::Str(s)) if s.is_empty() => Err(DecodeError::EmptyField(f.as_str())),
        Some(v) => Ok(v),
    }
}

fn wrong_type(f: Field, expected: &'static str, found: &Raw<'_>) -> DecodeError {
    DecodeError::WrongType {
        field: f.as_str(),
        expected,
        found: found.kind(),
    }
}

fn string(v: Raw<'_>, f: Field) -> Result<Cow<'_, str>, DecodeError> {
    match v {
        Raw::Str(s) if s.len() > MAX_ID_BYTES => Err(DecodeError::TooLong {
            field: f.as_str(),
            len: s.len(),
            max: MAX_ID_BYTES,
        }),
        Raw::Str(s) => Ok(s),
        other => Err(wrong_type(f, "a string", &other)),
    }
}

fn required_str(v: Option<Raw<'_>>, f: Field) -> Result<Cow<'_, str>, DecodeError> {
    string(required(v, f)?, f)
}

fn optional_str(v: Option<Raw<'_>>, f: Field) -> Result<Option<Cow<'_, str>>, DecodeError> {
    present(v).map(|v| string(v, f)).transpose()
}

fn number(v: &Raw<'_>, f: Field) -> Result<f64, DecodeError> {
    match *v {
        Raw::UInt(u) => Ok(u as f64),
        Raw::NegInt(i) => Ok(i as f64),
        Raw::Float(x) => Ok(x),
        ref other => Err(wrong_type(f, "a number", other)),
    }
}

/// A money amount: a finite number >= 0 (`-0` becomes `0`).
fn required_amount(v: Option<Raw<'_>>, f: Field) -> Result<f64, DecodeError> {
    let x = number(&required(v, f)?, f)?;
    if !x.is_finite() || x < 0.0 {
        return Err(DecodeError::OutOfRange {
            field: f.as_str(),
            detail: format!("{x} is not a finite number >= 0"),
        });
    }
    Ok(x + 0.0)
}

fn rating_range(f: Field) -> RangeInclusive<u8> {
    match f {
        Field::Csat => 1..=5,
        Field::Ces => 1..=7,
        _ => 0..=10,
    }
}

fn optional_rating(v: Option<Raw<'_>>, f: Field) -> Result<Option<u8>, DecodeError> {
    let Some(v) = present(v) else {
        return Ok(None);
    };
    let x = number(&v, f)?;
    let range = rating_range(f);
    if x.fract() != 0.0 || x < f64::from(*range.start()) || x > f64::from(*range.end()) {
        return Err(DecodeError::OutOfRange {
            field: f.as_str(),
            detail: format!(
                "{x} is not a whole number in {}..={}",
                range.start(),
                range.end()
            ),
        });
    }
    Ok(Some(x as u8))
}

/// An enumerated string field: `parse` or `unknown_value`.
fn enumerated<T>(
    v: Raw<'_>,
    f: Field,
    parse: impl FnOnce(&str) -> Option<T>,
    expected: &'static str,
) -> Result<T, DecodeError> {
    match v {
        Raw::Str(s) => parse(&s).ok_or_else(|| DecodeError::UnknownValue {
            field: f.as_str(),
            value: clip(&s),
            expected,
        }),
        other => Err(wrong_type(f, "a string", &other)),
    }
}

enum RefAction {
    InviteSent,
    Rewarded,
}

fn referral_action(v: Raw<'_>) -> Result<RefAction, DecodeError> {
    let parse = |s: &str| match s {
        "invite_sent" => Some(RefAction::InviteSent),
        "rewarded" => Some(RefAction::Rewarded),
        _ => None,
    };
    enumerated(v, Field::Action, parse, "invite_sent, rewarded")
}

fn support_action(v: Raw<'_>) -> Result<SupportAction, DecodeError> {
    enumerated(
        v,
        Field::Action,
        SupportAction::parse,
        "opened, agent_replied, customer_replied, pending, resolved, reopened, rated",
    )
}

fn priority(v: Raw<'_>) -> Result<Priority, DecodeError> {
    enumerated(
        v,
        Field::Priority,
        Priority::parse,
        "low, normal, high, urgent",
    )
}

fn timestamp(
    v: Option<Raw<'_>>,
    format: TsFormat,
    fallback_ts: Option<Millis>,
) -> Result<Millis, DecodeError> {
    let Some(v) = present(v) else {
        return match fallback_ts {
            Some(t) if (0..=MAX_RFC3339_MS).contains(&t) => Ok(t),
            _ => Err(DecodeError::MissingField("ts")),
        };
    };
    let bad = |detail: String| Err(DecodeError::BadTimestamp(detail));
    let ms = match (format, &v) {
        (TsFormat::Auto | TsFormat::Rfc3339, Raw::Str(s)) => match parse_rfc3339(s) {
            Some(ms) => ms,
            None => return bad(format!("`{}` is not an RFC 3339 date-time", clip(s))),
        },
        (TsFormat::Auto | TsFormat::EpochMs, Raw::UInt(u)) => i64::try_from(*u).unwrap_or(i64::MAX),
        (TsFormat::Auto | TsFormat::EpochMs, Raw::Float(x)) if x.fract() == 0.0 && *x >= 0.0 => {
            // Saturating; anything this large is rejected by the range check below.
            *x as i64
        }
        (TsFormat::EpochS, Raw::UInt(u)) => i64::try_from(*u)
            .ok()
            .and_then(|s| s.checked_mul(1000))
            .unwrap_or(i64::MAX),
        // Fractional seconds are rounded to the nearest ms: 0.001 s is not exact in binary.
        (TsFormat::EpochS, Raw::Float(x)) if *x >= 0.0 => (*x * 1000.0).round() as i64,
        (
            TsFormat::Auto | TsFormat::EpochMs | TsFormat::EpochS,
            Raw::UInt(_) | Raw::NegInt(_) | Raw::Float(_),
        ) => {
            return bad(match format {
                TsFormat::EpochS => format!("{} is not epoch seconds >= 0", number(&v, Field::Ts)?),
                _ => format!(
                    "{} is not an integer of epoch ms >= 0",
                    number(&v, Field::Ts)?
                ),
            });
        }
        (_, other) => {
            let expected = match format {
                TsFormat::Auto => "an RFC 3339 string or integer epoch ms",
                TsFormat::Rfc3339 => "an RFC 3339 string",
                TsFormat::EpochMs => "a number of epoch ms",
                TsFormat::EpochS => "a number of epoch seconds",
            };
            return Err(wrong_type(Field::Ts, expected, other));
        }
    };
    if !(0..=MAX_RFC3339_MS).contains(&ms) {
        return bad(format!(
            "{ms} ms is outside 1970-01-01T00:00:00Z..=9999-12-31T23:59:59.999Z"
        ));
    }
    Ok(ms)
}

/// A value quoted in an error message, cut to a sane length at a char boundary.
pub(crate) fn clip(s: &str) -> String {
    const MAX: usize = 64;
    if s.len() <= MAX {
        return s.to_owned();
    }
    let mut end = MAX;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}...", &s[..end])
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
