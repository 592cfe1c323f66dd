//! Message bytes to a validated [`Event`], or the reason it is invalid.
//!
//! Both input shapes go through one validation (`raw::validate`):
//!
//! - canonical (EVENTS.md): the common shape (a flat object of plain
//!   strings, numbers and literals) by a scanner of its own (`fast`), the
//!   rest by serde_json straight into `RawEvent`, a table of
//!   optional `Raw` scalars that borrow strings from the message, filled in
//!   place by a small map visitor (no `serde_json::Value`). `Raw` accepts any
//!   JSON value and records what it was, so a wrong type is reported by field
//!   name instead of as an opaque serde error, and unknown fields are skipped
//!   without being materialized.
//! - mapped ([`super::mapping`]): the message is parsed into a
//!   `serde_json::Value`, each canonical field is fetched by JSON Pointer into
//!   the same `RawEvent`, and the fixed values of the type rule are filled in.
//!
//! The validation, and the rules EVENTS.md leaves open that it decides, are
//! in `super::raw`.

use std::borrow::Cow;
use std::fmt;

use serde::de::{self, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};

use super::error::clip;
pub use super::error::{DecodeError, DecodeFailure};
use super::mapping::{CompiledMapping, Mapping};
use super::raw::{Field, Raw, RawEvent, TsFormat, type_str, validate};
use super::{Event, EventType, Millis};

mod fast;

#[cfg(test)]
mod amount_tests;
#[cfg(test)]
mod tests;

/// Decodes messages of one input shape. Cheap to clone; immutable while decoding.
#[derive(Clone, Debug)]
pub struct Decoder {
    /// `None`: the canonical schema (the fast path).
    mapping: Option<CompiledMapping>,
    /// Larger messages are invalid without being parsed.
    max_message_bytes: usize,
    /// Whether a message without `ts` takes the Kafka message timestamp.
    kafka_timestamp_fallback: bool,
    /// Larger money amounts are `out_of_range` (`engine.max_amount_usd`, carried by the [`Mapping`]).
    max_amount_usd: f64,
}

impl Decoder {
    /// A decoder of the shape `mapping` describes. It cannot fail: a
    /// [`Mapping`] only exists checked (it comes from config validation, see
    /// [`super::mapping::MappingConfig::compile`]).
    pub fn new(
        mapping: &Mapping,
        max_message_bytes: usize,
        kafka_timestamp_fallback: bool,
    ) -> Decoder {
        Decoder {
            mapping: mapping.compiled().cloned(),
            max_message_bytes,
            kafka_timestamp_fallback,
            max_amount_usd: mapping.max_amount_usd(),
        }
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
            None => decode_canonical(bytes, fallback, self.max_amount_usd),
            Some(m) => m.decode(bytes, fallback, self.max_amount_usd),
        }
    }
}

fn decode_canonical(
    bytes: &[u8],
    fallback_ts: Option<Millis>,
    max_amount_usd: f64,
) -> Result<Event<'_>, DecodeFailure> {
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
    let scanned = fast::fill(&mut raw, bytes).is_some();
    if !scanned {
        // Not the simple shape (or not JSON): serde_json reads it and decides.
        raw = RawEvent::default();
        fill_from_json(&mut raw, bytes)
            .map_err(|e| DecodeFailure::untyped(DecodeError::NotJson(e.to_string())))?;
    }
    let result = match canonical_type(raw.slot(Field::Type).as_ref()) {
        Ok(ty) => validate(&mut raw, ty, TsFormat::Auto, fallback_ts, max_amount_usd),
        Err(e) => Err(DecodeFailure::untyped(e)),
    };
    if scanned {
        // The scanner only stores borrowed strings and plain scalars
        // (`fast`'s module doc): nothing in `raw` owns memory, so skipping
        // its drop (a check of each of the 18 slots) frees nothing less.
        std::mem::forget(raw);
    }
    result
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

/// Reads a canonical message into `raw`, in place: the struct is large
/// enough that serde derive's by-value construction, and the moves after
/// it, cost more than a tenth of the decode time. A field given twice
/// keeps its last value, as `serde_json::Value` does on the mapped path.
fn fill_from_json<'a>(raw: &mut RawEvent<'a>, bytes: &'a [u8]) -> Result<(), serde_json::Error> {
    let mut de = serde_json::Deserializer::from_slice(bytes);
    de::Deserializer::deserialize_map(&mut de, Filler(raw))?;
    de.end()
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

fn canonical_type(v: Option<&Raw<'_>>) -> Result<EventType, DecodeError> {
    let s = type_str(v)?;
    EventType::parse(s).ok_or_else(|| DecodeError::UnknownType(clip(s)))
}
