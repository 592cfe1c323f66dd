//! Message bytes to a validated [`Event`], or the reason it is invalid.
//!
//! Both input shapes go through one validation ([`validate`]):
//!
//! - canonical (EVENTS.md): serde_json straight into [`RawEvent`], a table of
//!   optional [`Raw`] scalars that borrow strings from the message, filled in
//!   place by a small map visitor (no `serde_json::Value`). `Raw` accepts any
//!   JSON value and records what it was, so a wrong type is reported by field
//!   name instead of as an opaque serde error, and unknown fields are skipped
//!   without being materialized.
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
//! - A field given twice keeps its last value (on both paths).

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
    // Tells valid JSON that is not an object (`not_json` too, but its own message) from garbage.
    if bytes.iter().find(|b| !b.is_ascii_whitespace()) != Some(&b'{') {
        return Err(DecodeFailure::untyped(
            match serde_json::from_slice::<IgnoredAny>(bytes) {
                Ok(_) => DecodeError::NotObject,
                Err(e) => DecodeError::NotJson(e.to_string()),
            },
        ));
    }
    let mut raw = RawEvent::default();
    raw.fill_from_json(bytes)
        .map_err(|e| DecodeFailure::untyped(DecodeError::NotJson(e.to_string())))?;
    let ty = canonical_type(raw.slot(Field::Type).as_ref()).map_err(DecodeFailure::untyped)?;
    validate(&mut raw, ty, TsFormat::Auto, fallback_ts).map_err(|error| DecodeFailure {
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

/// A JSON value that may be `null` (`None`): one `deserialize_any` call
/// instead of `Option`'s null check followed by a second dispatch.
struct NullableRaw<'a>(Option<Raw<'a>>);

impl<'de: 'a, 'a> serde::Deserialize<'de> for NullableRaw<'a> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(RawVisitor).map(NullableRaw)
    }
}

struct RawVisitor;

impl<'de> Visitor<'de> for RawVisitor {
    type Value = Option<Raw<'de>>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("any JSON value")
    }
    fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> {
        Ok(None)
    }
    fn visit_bool<E: de::Error>(self, _: bool) -> Result<Self::Value, E> {
        Ok(Some(Raw::Other("a boolean")))
    }
    fn visit_u64<E: de::Error>(self, v: u64) -> Result<Self::Value, E> {
        Ok(Some(Raw::UInt(v)))
    }
    fn visit_i64<E: de::Error>(self, v: i64) -> Result<Self::Value, E> {
        Ok(Some(match u64::try_from(v) {
            Ok(u) => Raw::UInt(u),
            Err(_) => Raw::NegInt(v),
        }))
    }
    fn visit_f64<E: de::Error>(self, v: f64) -> Result<Self::Value, E> {
        Ok(Some(Raw::Float(v)))
    }
    fn visit_borrowed_str<E: de::Error>(self, v: &'de str) -> Result<Self::Value, E> {
        Ok(Some(Raw::Str(Cow::Borrowed(v))))
    }
    fn visit_str<E: de::Error>(self, v: &str) -> Result<Self::Value, E> {
        Ok(Some(Raw::Str(Cow::Owned(v.to_owned()))))
    }
    fn visit_string<E: de::Error>(self, v: String) -> Result<Self::Value, E> {
        Ok(Some(Raw::Str(Cow::Owned(v))))
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
        while seq.next_element::<IgnoredAny>()?.is_some() {}
        Ok(Some(Raw::Other("an array")))
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        while map.next_entry::<IgnoredAny, IgnoredAny>()?.is_some() {}
        Ok(Some(Raw::Other("an object")))
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

    /// Reads a canonical message into `self`, in place: the struct is large
    /// enough that serde derive's by-value construction, and the moves after
    /// it, cost more than a tenth of the decode time. A field given twice
    /// keeps its last value, as `serde_json::Value` does on the mapped path.
    fn fill_from_json(&mut self, bytes: &'a [u8]) -> Result<(), serde_json::Error> {
        let mut de = serde_json::Deserializer::from_slice(bytes);
        de::Deserializer::deserialize_map(&mut de, Filler(self))?;
        de.end()
    }
}

/// Serde visitor that writes the canonical fields of a JSON object into a `RawEvent`.
struct Filler<'r, 'a>(&'r mut RawEvent<'a>);

impl<'de> Visitor<'de> for Filler<'_, 'de> {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON object")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        while let Some(key) = map.next_key::<Key>()? {
            match key.0 {
                Some(f) => *self.0.slot(f) = map.next_value::<NullableRaw>()?.0,
                None => {
                    map.next_value::<IgnoredAny>()?;
                }
            }
        }
        Ok(())
    }
}

/// An object key: a canonical field, or `None` for a key that is ignored.
struct Key(Option<Field>);

impl<'de> serde::Deserialize<'de> for Key {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct KeyVisitor;
        impl Visitor<'_> for KeyVisitor {
            type Value = Key;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a field name")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Key, E> {
                Ok(Key(Field::parse(v)))
            }
        }
        d.deserialize_identifier(KeyVisitor)
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
    raw: &mut RawEvent<'a>,
    ty: EventType,
    ts_format: TsFormat,
    fallback_ts: Option<Millis>,
) -> Result<Event<'a>, DecodeError> {
    let event_id = required_str(raw.take(Field::EventId), Field::EventId)?;
    let ts = timestamp(raw.take(Field::Ts), ts_format, fallback_ts)?;
    let user_id = match ty {
        EventType::Spend => optional_str(raw.take(Field::UserId), Field::UserId)?,
        _ => Some(required_str(raw.take(Field::UserId), Field::UserId)?),
    };
    let body = match ty {
        EventType::Signup => EventBody::Signup {
            channel: optional_str(raw.take(Field::Channel), Field::Channel)?,
            campaign: optional_str(raw.take(Field::Campaign), Field::Campaign)?,
            referrer_id: optional_str(raw.take(Field::ReferrerId), Field::ReferrerId)?,
            country: optional_str(raw.take(Field::Country), Field::Country)?,
        },
        EventType::Deposit => EventBody::Deposit {
            amount_usd: required_amount(raw.take(Field::AmountUsd), Field::AmountUsd)?,
        },
        EventType::Trade => EventBody::Trade {
            notional_usd: required_amount(raw.take(Field::NotionalUsd), Field::NotionalUsd)?,
            fee_usd: required_amount(raw.take(Field::FeeUsd), Field::FeeUsd)?,
        },
        EventType::Referral => EventBody::Referral {
            action: match referral_action(required(raw.take(Field::Action), Field::Action)?)? {
                RefAction::InviteSent => ReferralAction::InviteSent,
                RefAction::Rewarded => ReferralAction::Rewarded {
                    reward_usd: required_amount(raw.take(Field::RewardUsd), Field::RewardUsd)?,
                },
            },
        },
        EventType::Support => {
            let ticket_id = required_str(raw.take(Field::TicketId), Field::TicketId)?;
            let action = support_action(required(raw.take(Field::Action), Field::Action)?)?;
            let priority = match present(raw.take(Field::Priority)) {
                None => None,
                Some(v) => Some(priority(v)?),
            };
            let ratings = if action == SupportAction::Rated {
                Ratings {
                    csat: optional_rating(raw.take(Field::Csat), Field::Csat)?,
                    ces: optional_rating(raw.take(Field::Ces), Field::Ces)?,
                    nps: optional_rating(raw.take(Field::Nps), Field::Nps)?,
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
            channel: required_str(raw.take(Field::Channel), Field::Channel)?,
            amount_usd: required_amount(raw.take(Field::AmountUsd), Field::AmountUsd)?,
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
        (TsFormat::Auto | TsFormat::EpochMs | TsFormat::EpochS, Raw::NegInt(_) | Raw::Float(_)) => {
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

#[cfg(test)]
mod tests {
    use super::*;

    /// 2026-01-05T10:00:00Z (`date -u -d 2026-01-05T10:00:00Z +%s`).
    const JAN5_10H: Millis = 1_767_607_200_000;

    fn decoder() -> Decoder {
        Decoder::new(&MappingConfig::default(), 64 * 1024, false)
    }

    fn ok(msg: &str) -> Event<'_> {
        match decoder().decode(msg.as_bytes(), None) {
            Ok(e) => e,
            Err(f) => panic!("{msg}: {}", f.error),
        }
    }

    fn ok_owned(msg: String) -> Event<'static> {
        into_owned(ok(&msg))
    }

    fn fail(msg: &str) -> DecodeFailure {
        match decoder().decode(msg.as_bytes(), None) {
            Ok(e) => panic!("{msg}: accepted as {e:?}"),
            Err(f) => f,
        }
    }

    fn reason(msg: &str) -> &'static str {
        fail(msg).error.reason()
    }

    fn b(s: &str) -> Option<Cow<'_, str>> {
        Some(Cow::Borrowed(s))
    }

    /// A valid support event with `extra` fields appended.
    fn support(extra: &str) -> String {
        format!(
            r#"{{"event_id":"e1","type":"support","ts":1767607200000,"user_id":"u1","ticket_id":"T1"{extra}}}"#
        )
    }

    #[test]
    fn signup_with_every_field_borrows_from_the_message() {
        let msg = r#"{"event_id":"e1","type":"signup","ts":"2026-01-05T10:00:00Z","user_id":"u1",
            "channel":"paid_search","campaign":"winter","referrer_id":"u0","country":"DE","extra":{"x":[1,2]}}"#;
        let e = ok(msg);
        assert_eq!(
            e,
            Event {
                event_id: b("e1").unwrap(),
                ts: JAN5_10H,
                user_id: b("u1"),
                body: EventBody::Signup {
                    channel: b("paid_search"),
                    campaign: b("winter"),
                    referrer_id: b("u0"),
                    country: b("DE"),
                },
            }
        );
        assert!(matches!(e.event_id, Cow::Borrowed(_)));
        assert_eq!(e.event_type(), EventType::Signup);
    }

    #[test]
    fn signup_optional_fields_may_be_absent_null_or_empty() {
        let e = ok(
            r#"{"event_id":"e1","type":"signup","ts":0,"user_id":"u1","channel":null,"campaign":""}"#,
        );
        assert_eq!(
            e.body,
            EventBody::Signup {
                channel: None,
                campaign: None,
                referrer_id: None,
                country: None
            }
        );
    }

    #[test]
    fn escaped_strings_are_unescaped() {
        let e = ok(
            r#"{"event_id":"e\"1\u00e9","type":"deposit","ts":0,"user_id":"u1","amount_usd":1}"#,
        );
        assert_eq!(e.event_id, "e\"1é");
    }

    #[test]
    fn deposit_trade_and_spend_amounts() {
        let e = ok(r#"{"event_id":"e","type":"deposit","ts":5,"user_id":"u","amount_usd":100.25}"#);
        assert_eq!(e.body, EventBody::Deposit { amount_usd: 100.25 });
        assert_eq!(e.ts, 5);
        let e = ok(
            r#"{"event_id":"e","type":"trade","ts":5,"user_id":"u","notional_usd":1000,"fee_usd":0}"#,
        );
        assert_eq!(
            e.body,
            EventBody::Trade {
                notional_usd: 1000.0,
                fee_usd: 0.0
            }
        );
        let e = ok(r#"{"event_id":"e","type":"spend","ts":5,"channel":"social","amount_usd":0}"#);
        assert_eq!(e.user_id, None);
        assert_eq!(
            e.body,
            EventBody::Spend {
                channel: Cow::Borrowed("social"),
                amount_usd: 0.0
            }
        );
        let e = ok(
            r#"{"event_id":"e","type":"spend","ts":5,"user_id":"ops","channel":"social","amount_usd":3}"#,
        );
        assert_eq!(e.user_id, b("ops"));
    }

    #[test]
    fn negative_zero_amount_is_zero() {
        let e = ok(r#"{"event_id":"e","type":"deposit","ts":5,"user_id":"u","amount_usd":-0.0}"#);
        let EventBody::Deposit { amount_usd } = e.body else {
            panic!()
        };
        assert!(amount_usd == 0.0 && amount_usd.is_sign_positive());
    }

    #[test]
    fn referral_actions() {
        let e = ok(
            r#"{"event_id":"e","type":"referral","ts":5,"user_id":"u","action":"invite_sent","reward_usd":-4}"#,
        );
        assert_eq!(
            e.body,
            EventBody::Referral {
                action: ReferralAction::InviteSent
            }
        );
        let e = ok(
            r#"{"event_id":"e","type":"referral","ts":5,"user_id":"u","action":"rewarded","reward_usd":25}"#,
        );
        assert_eq!(
            e.body,
            EventBody::Referral {
                action: ReferralAction::Rewarded { reward_usd: 25.0 }
            }
        );
        let base = r#"{"event_id":"e","type":"referral","ts":5,"user_id":"u""#;
        assert_eq!(
            fail(&format!(r#"{base},"action":"rewarded"}}"#)).error,
            DecodeError::MissingField("reward_usd")
        );
        assert_eq!(
            reason(&format!(r#"{base},"action":"rewarded","reward_usd":-1}}"#)),
            "out_of_range"
        );
        assert_eq!(
            reason(&format!(r#"{base},"action":"clicked"}}"#)),
            "unknown_value"
        );
        assert_eq!(reason(&format!("{base}}}")), "missing_field");
    }

    #[test]
    fn support_opened_with_and_without_priority() {
        let e = ok_owned(support(r#","action":"opened","priority":"urgent""#));
        assert_eq!(
            e.body,
            EventBody::Support {
                ticket_id: Cow::Borrowed("T1"),
                action: SupportAction::Opened,
                priority: Some(Priority::Urgent),
                ratings: Ratings::default(),
            }
        );
        let e = ok_owned(support(r#","action":"opened""#));
        assert!(matches!(e.body, EventBody::Support { priority: None, .. }));
        for a in [
            "agent_replied",
            "customer_replied",
            "pending",
            "resolved",
            "reopened",
        ] {
            ok(&support(&format!(r#","action":"{a}""#)));
        }
    }

    #[test]
    fn support_priority_must_be_known() {
        let f = fail(&support(r#","action":"opened","priority":"p1""#));
        assert_eq!(f.error.reason(), "unknown_value");
        assert_eq!(f.event_type, Some(EventType::Support));
        assert!(f.error.to_string().contains("priority"), "{}", f.error);
        assert_eq!(
            reason(&support(r#","action":"opened","priority":3"#)),
            "wrong_type"
        );
    }

    #[test]
    fn support_action_and_ticket_are_required() {
        assert_eq!(
            fail(&support("")).error,
            DecodeError::MissingField("action")
        );
        assert_eq!(reason(&support(r#","action":"closed""#)), "unknown_value");
        let no_ticket =
            r#"{"event_id":"e","type":"support","ts":0,"user_id":"u","action":"opened"}"#;
        assert_eq!(
            fail(no_ticket).error,
            DecodeError::MissingField("ticket_id")
        );
    }

    #[test]
    fn rated_reads_scores_at_their_bounds() {
        let e = ok_owned(support(r#","action":"rated","csat":5,"ces":7,"nps":0"#));
        let ratings = Ratings {
            csat: Some(5),
            ces: Some(7),
            nps: Some(0),
        };
        assert!(matches!(e.body, EventBody::Support { ratings: r, .. } if r == ratings));
        let e = ok_owned(support(r#","action":"rated","csat":1,"ces":1,"nps":10"#));
        let ratings = Ratings {
            csat: Some(1),
            ces: Some(1),
            nps: Some(10),
        };
        assert!(matches!(e.body, EventBody::Support { ratings: r, .. } if r == ratings));
    }

    #[test]
    fn rated_without_scores_is_valid() {
        let e = ok_owned(support(r#","action":"rated""#));
        assert!(
            matches!(e.body, EventBody::Support { ratings, .. } if ratings == Ratings::default())
        );
    }

    #[test]
    fn whole_float_scores_are_integers() {
        let e = ok_owned(support(r#","action":"rated","csat":4.0"#));
        assert!(matches!(e.body, EventBody::Support { ratings, .. } if ratings.csat == Some(4)));
    }

    #[test]
    fn scores_out_of_range_fractional_or_strings_are_invalid() {
        for (extra, code) in [
            (r#","csat":0"#, "out_of_range"),
            (r#","csat":6"#, "out_of_range"),
            (r#","csat":9"#, "out_of_range"),
            (r#","csat":-1"#, "out_of_range"),
            (r#","csat":4.5"#, "out_of_range"),
            (r#","csat":"4""#, "wrong_type"),
            (r#","ces":0"#, "out_of_range"),
            (r#","ces":8"#, "out_of_range"),
            (r#","nps":11"#, "out_of_range"),
            (r#","nps":-1"#, "out_of_range"),
            (r#","nps":1e300"#, "out_of_range"),
            (r#","nps":true"#, "wrong_type"),
        ] {
            let f = fail(&support(&format!(r#","action":"rated"{extra}"#)));
            assert_eq!(f.error.reason(), code, "{extra}: {}", f.error);
        }
        let f = fail(&support(r#","action":"rated","csat":6"#));
        assert!(f.error.to_string().contains("csat"), "{}", f.error);
    }

    #[test]
    fn scores_are_ignored_on_actions_other_than_rated() {
        let e = ok_owned(support(r#","action":"resolved","csat":9,"nps":"x""#));
        assert!(
            matches!(e.body, EventBody::Support { ratings, .. } if ratings == Ratings::default())
        );
    }

    #[test]
    fn negative_or_non_numeric_amounts_are_invalid() {
        let dep = |a: &str| {
            format!(r#"{{"event_id":"e","type":"deposit","ts":0,"user_id":"u","amount_usd":{a}}}"#)
        };
        assert_eq!(reason(&dep("-0.01")), "out_of_range");
        assert_eq!(reason(&dep("-5")), "out_of_range");
        assert_eq!(reason(&dep(r#""5""#)), "wrong_type");
        assert_eq!(reason(&dep("[5]")), "wrong_type");
        assert_eq!(reason(&dep("{}")), "wrong_type");
        assert_eq!(reason(&dep("null")), "missing_field");
        let f = fail(&dep("-5"));
        assert_eq!(f.event_type, Some(EventType::Deposit));
        assert!(f.error.to_string().contains("amount_usd"), "{}", f.error);
        let trade = r#"{"event_id":"e","type":"trade","ts":0,"user_id":"u","notional_usd":10}"#;
        assert_eq!(fail(trade).error, DecodeError::MissingField("fee_usd"));
        let trade = r#"{"event_id":"e","type":"trade","ts":0,"user_id":"u","notional_usd":10,"fee_usd":-1}"#;
        assert_eq!(reason(trade), "out_of_range");
        let spend = r#"{"event_id":"e","type":"spend","ts":0,"amount_usd":10}"#;
        assert_eq!(fail(spend).error, DecodeError::MissingField("channel"));
    }

    #[test]
    fn envelope_fields_are_required() {
        assert_eq!(
            fail(r#"{"type":"deposit","ts":0,"user_id":"u","amount_usd":1}"#).error,
            DecodeError::MissingField("event_id")
        );
        let f = fail(r#"{"event_id":"e","type":"deposit","ts":0,"amount_usd":1}"#);
        assert_eq!(f.error, DecodeError::MissingField("user_id"));
        assert_eq!(f.error.reason(), "missing_field");
        assert_eq!(
            fail(r#"{"event_id":"e","type":"deposit","ts":0,"user_id":null,"amount_usd":1}"#).error,
            DecodeError::MissingField("user_id")
        );
        assert_eq!(
            fail(r#"{"event_id":"e","type":"deposit","user_id":"u","amount_usd":1}"#).error,
            DecodeError::MissingField("ts")
        );
        let f = fail(r#"{"event_id":"e","ts":0,"user_id":"u"}"#);
        assert_eq!(f.error, DecodeError::MissingField("type"));
        assert_eq!(f.event_type, None);
    }

    #[test]
    fn empty_ids_are_invalid() {
        let f = fail(r#"{"event_id":"","type":"deposit","ts":0,"user_id":"u","amount_usd":1}"#);
        assert_eq!(f.error, DecodeError::EmptyField("event_id"));
        assert_eq!(f.error.reason(), "missing_field");
        let f = fail(r#"{"event_id":"e","type":"deposit","ts":0,"user_id":"","amount_usd":1}"#);
        assert_eq!(f.error, DecodeError::EmptyField("user_id"));
        let f = fail(
            &support(r#","action":"opened","ticket_id":"""#).replace(r#""ticket_id":"T1","#, ""),
        );
        assert_eq!(f.error, DecodeError::EmptyField("ticket_id"));
    }

    #[test]
    fn unknown_and_mistyped_event_types() {
        let f = fail(r#"{"event_id":"e","type":"login","ts":0,"user_id":"u"}"#);
        assert_eq!(f.error, DecodeError::UnknownType("login".into()));
        assert_eq!(f.error.reason(), "unknown_type");
        assert_eq!(f.event_type, None);
        assert_eq!(
            reason(r#"{"event_id":"e","type":"Signup","ts":0,"user_id":"u"}"#),
            "unknown_type"
        );
        assert_eq!(
            reason(r#"{"event_id":"e","type":1,"ts":0,"user_id":"u"}"#),
            "wrong_type"
        );
    }

    #[test]
    fn ids_and_labels_over_128_bytes_are_too_long() {
        let id128 = "a".repeat(MAX_ID_BYTES);
        let id129 = "a".repeat(MAX_ID_BYTES + 1);
        ok(&format!(
            r#"{{"event_id":"{id128}","type":"deposit","ts":0,"user_id":"{id128}","amount_usd":1}}"#
        ));
        let f = fail(&format!(
            r#"{{"event_id":"{id129}","type":"deposit","ts":0,"user_id":"u","amount_usd":1}}"#
        ));
        assert_eq!(
            f.error,
            DecodeError::TooLong {
                field: "event_id",
                len: 129,
                max: 128
            }
        );
        assert_eq!(f.error.reason(), "too_long");
        for field in ["user_id", "channel", "campaign", "referrer_id", "country"] {
            let msg = format!(
                r#"{{"event_id":"e","type":"signup","ts":0,"user_id":"u","{field}":"{id129}"}}"#
            )
            .replacen(r#""user_id":"u","user_id""#, r#""user_id""#, 1);
            let f = fail(&msg);
            assert_eq!(f.error.reason(), "too_long", "{field}");
            assert!(f.error.to_string().contains(field));
        }
        // Bytes, not chars: 43 three-byte chars = 129 bytes.
        let wide = "€".repeat(43);
        assert_eq!(
            reason(
                &support(&format!(r#","action":"opened","ticket_id":"{wide}""#))
                    .replace(r#""ticket_id":"T1","#, "")
            ),
            "too_long"
        );
        let spend = format!(
            r#"{{"event_id":"e","type":"spend","ts":0,"channel":"{id129}","amount_usd":1}}"#
        );
        assert_eq!(reason(&spend), "too_long");
    }

    #[test]
    fn timestamps_as_strings_or_integer_ms() {
        let dep = |ts: &str| {
            format!(r#"{{"event_id":"e","type":"deposit","ts":{ts},"user_id":"u","amount_usd":1}}"#)
        };
        assert_eq!(
            ok(&dep(r#""2026-01-05T11:00:00.5+01:00""#)).ts,
            JAN5_10H + 500
        );
        assert_eq!(ok(&dep("1767607200000")).ts, JAN5_10H);
        assert_eq!(ok(&dep("1767607200000.0")).ts, JAN5_10H);
        assert_eq!(ok(&dep("0")).ts, 0);
        for bad in [
            r#""yesterday""#,
            r#""2026-02-30T00:00:00Z""#,
            r#""2026-01-05T10:00:00""#,
            r#""1969-12-31T23:59:59Z""#,
            "-1",
            "1.5",
            "1e300",
            "18446744073709551615",
            "253402300800000",
        ] {
            let f = fail(&dep(bad));
            assert_eq!(f.error.reason(), "bad_timestamp", "{bad}: {}", f.error);
            assert_eq!(f.event_type, Some(EventType::Deposit));
        }
        assert_eq!(reason(&dep("true")), "wrong_type");
        assert_eq!(reason(&dep("{}")), "wrong_type");
    }

    #[test]
    fn kafka_timestamp_fills_a_missing_ts_only_when_enabled() {
        let msg = br#"{"event_id":"e","type":"deposit","user_id":"u","amount_usd":1}"#;
        let with = Decoder::new(&MappingConfig::default(), 1024, true);
        assert_eq!(with.decode(msg, Some(JAN5_10H)).unwrap().ts, JAN5_10H);
        assert_eq!(
            with.decode(msg, None).unwrap_err().error,
            DecodeError::MissingField("ts")
        );
        assert_eq!(
            decoder().decode(msg, Some(JAN5_10H)).unwrap_err().error,
            DecodeError::MissingField("ts")
        );
        // A present but bad ts is not replaced.
        let bad = br#"{"event_id":"e","type":"deposit","ts":"x","user_id":"u","amount_usd":1}"#;
        assert_eq!(
            with.decode(bad, Some(JAN5_10H)).unwrap_err().error.reason(),
            "bad_timestamp"
        );
    }

    #[test]
    fn not_json_and_not_objects() {
        for msg in [
            "",
            "   ",
            "{",
            "not json",
            r#"{"event_id":"e",}"#,
            "{} {}",
            "\u{feff}{}",
        ] {
            assert_eq!(fail(msg).error.reason(), "not_json", "{msg:?}");
        }
        for msg in ["[]", r#"["e","signup",0,"u"]"#, "42", r#""str""#, "null"] {
            assert_eq!(fail(msg).error, DecodeError::NotObject, "{msg:?}");
        }
        assert!(matches!(fail("{").error, DecodeError::NotJson(_)));
        let invalid_utf8 = b"{\"event_id\":\"\xff\",\"type\":\"signup\"}";
        assert_eq!(
            decoder()
                .decode(invalid_utf8, None)
                .unwrap_err()
                .error
                .reason(),
            "not_json"
        );
    }

    #[test]
    fn a_field_given_twice_keeps_its_last_value() {
        let msg = r#"{"event_id":"e","type":"deposit","ts":0,"ts":1,"user_id":"u","amount_usd":1}"#;
        assert_eq!(ok(msg).ts, 1);
    }

    #[test]
    fn messages_over_the_size_limit_are_rejected_before_parsing() {
        let d = Decoder::new(&MappingConfig::default(), 16, false);
        let f = d.decode(b"this is not even json", None).unwrap_err();
        assert_eq!(f.error, DecodeError::TooLarge { size: 21, max: 16 });
        assert_eq!(f.error.reason(), "too_large");
        assert_eq!(f.event_type, None);
        let msg = br#"{"a":1234567890}"#;
        assert_eq!(msg.len(), 16);
        assert_eq!(
            d.decode(msg, None).unwrap_err().error.reason(),
            "missing_field"
        );
    }

    #[test]
    fn errors_are_reported_in_a_fixed_field_order() {
        // Bad type wins over everything; then event_id, ts, user_id, body.
        let msg = r#"{"type":"deposit","ts":"x","amount_usd":-1}"#;
        assert_eq!(fail(msg).error, DecodeError::MissingField("event_id"));
        let msg = r#"{"event_id":"e","type":"deposit","ts":"x","amount_usd":-1}"#;
        assert_eq!(reason(msg), "bad_timestamp");
    }

    #[test]
    fn decoder_can_be_shared_across_threads() {
        fn assert_send_sync<T: Send + Sync + Clone>() {}
        assert_send_sync::<Decoder>();
    }

    #[test]
    fn display_names_the_field() {
        let e = DecodeError::OutOfRange {
            field: "csat",
            detail: "9 is not a whole number in 1..=5".into(),
        };
        assert_eq!(
            e.to_string(),
            "field `csat` is out of range: 9 is not a whole number in 1..=5"
        );
        assert_eq!(
            DecodeError::MissingField("user_id").to_string(),
            "required field `user_id` is missing"
        );
    }

    #[test]
    fn never_panics_on_truncations_of_valid_messages() {
        let msg = r#"{"event_id":"e1","type":"support","ts":"2026-01-05T10:00:00.123+01:00","user_id":"u1","ticket_id":"T1","action":"rated","csat":5,"ces":7,"nps":10,"x":[{"y":null}]}"#;
        let d = decoder();
        ok(msg);
        for end in 0..msg.len() {
            let _ = d.decode(&msg.as_bytes()[..end], None);
        }
        for i in 0..msg.len() {
            let mut b = msg.as_bytes().to_vec();
            for byte in [b'"', b'{', b'}', b'-', b'9', 0xff, b' '] {
                b[i] = byte;
                let _ = d.decode(&b, Some(-1));
            }
        }
        let deep = format!("{}{}", "[".repeat(10_000), "]".repeat(10_000));
        let deep_obj = format!(r#"{{"x":{deep}}}"#);
        let _ = Decoder::new(&MappingConfig::default(), 1 << 20, false)
            .decode(deep_obj.as_bytes(), None);
    }
}
