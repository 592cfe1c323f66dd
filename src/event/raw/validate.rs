//! The single validation of both input shapes, and the per-field checks it is
//! made of: presence, type, length, range, enumerated values, timestamps.
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
//! - A money amount (every `*_usd` field) is a finite number in
//!   `0..=engine.max_amount_usd` (1e12 by default); anything else is
//!   `out_of_range`. The bound keeps every sum finite (see docs/semantics.md).
//! - When several things are wrong, the first in this order is reported:
//!   `type`, `event_id`, `ts`, `user_id`, then the type's own fields.
//! - A field given twice keeps its last value (on both paths).

use std::borrow::Cow;
use std::ops::RangeInclusive;

use super::{Field, Raw, RawEvent};
use crate::event::error::{DecodeError, DecodeFailure, clip};
use crate::event::time::{MAX_RFC3339_MS, parse_rfc3339};
use crate::event::{
    Event, EventBody, EventType, MAX_ID_BYTES, Millis, Priority, Ratings, ReferralAction,
    SupportAction,
};

/// How a mapped `ts` is written.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub(crate) enum TsFormat {
    /// The canonical rule: an RFC 3339 string, or integer epoch milliseconds.
    #[default]
    Auto,
    Rfc3339,
    EpochMs,
    /// A number of seconds; a fraction is rounded to the nearest millisecond.
    EpochS,
}

impl TsFormat {
    pub(crate) fn parse(s: &str) -> Option<TsFormat> {
        Some(match s {
            "auto" => TsFormat::Auto,
            "rfc3339" => TsFormat::Rfc3339,
            "epoch_ms" => TsFormat::EpochMs,
            "epoch_s" => TsFormat::EpochS,
            _ => return None,
        })
    }
}

/// The single validation of both input shapes: `raw` holds the message's
/// fields, `ty` its already resolved canonical type. A failure carries `ty`.
///
/// It returns the [`DecodeFailure`] itself (rather than a `DecodeError` each
/// caller wraps) so that the event is built once, in the caller's result:
/// wrapping the error afterwards copied the whole `Result` (152 bytes) per event.
pub(crate) fn validate<'a>(
    raw: &mut RawEvent<'a>,
    ty: EventType,
    ts_format: TsFormat,
    fallback_ts: Option<Millis>,
    max_amount: f64,
) -> Result<Event<'a>, DecodeFailure> {
    match fields(raw, ty, ts_format, fallback_ts, max_amount) {
        Ok(event) => Ok(event),
        Err(error) => Err(DecodeFailure {
            error,
            event_type: Some(ty),
        }),
    }
}

/// [`validate`]'s checks, field by field, in the order its doc gives.
#[inline(always)]
fn fields<'a>(
    raw: &mut RawEvent<'a>,
    ty: EventType,
    ts_format: TsFormat,
    fallback_ts: Option<Millis>,
    max_amount: f64,
) -> Result<Event<'a>, DecodeError> {
    let amount = |v: Option<Raw<'_>>, f: Field| required_amount(v, f, max_amount);
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
            amount_usd: amount(raw.take(Field::AmountUsd), Field::AmountUsd)?,
        },
        EventType::Trade => EventBody::Trade {
            notional_usd: amount(raw.take(Field::NotionalUsd), Field::NotionalUsd)?,
            fee_usd: amount(raw.take(Field::FeeUsd), Field::FeeUsd)?,
        },
        EventType::Referral => EventBody::Referral {
            action: match referral_action(required(raw.take(Field::Action), Field::Action)?)? {
                RefAction::InviteSent => ReferralAction::InviteSent,
                RefAction::Rewarded => ReferralAction::Rewarded {
                    reward_usd: amount(raw.take(Field::RewardUsd), Field::RewardUsd)?,
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
            amount_usd: amount(raw.take(Field::AmountUsd), Field::AmountUsd)?,
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
pub(crate) fn check_fixed_value(
    ty: EventType,
    f: Field,
    v: Raw<'_>,
    max_amount: f64,
) -> Result<(), DecodeError> {
    match f {
        Field::Action if ty == EventType::Referral => referral_action(v).map(drop),
        Field::Action => support_action(v).map(drop),
        Field::Priority => priority(v).map(drop),
        Field::Csat | Field::Ces | Field::Nps => optional_rating(Some(v), f).map(drop),
        Field::AmountUsd | Field::NotionalUsd | Field::FeeUsd | Field::RewardUsd => {
            required_amount(Some(v), f, max_amount).map(drop)
        }
        _ => required_str(Some(v), f).map(drop),
    }
}

/// `null` and `""` are absent.
#[inline]
fn present(v: Option<Raw<'_>>) -> Option<Raw<'_>> {
    match v {
        Some(Raw::Str(s)) if s.is_empty() => None,
        v => v,
    }
}

#[inline]
fn required(v: Option<Raw<'_>>, f: Field) -> Result<Raw<'_>, DecodeError> {
    match v {
        None => Err(DecodeError::MissingField(f.as_str())),
        Some(Raw::Str(s)) if s.is_empty() => Err(DecodeError::EmptyField(f.as_str())),
        Some(v) => Ok(v),
    }
}

pub(super) fn wrong_type(f: Field, expected: &'static str, found: &Raw<'_>) -> DecodeError {
    DecodeError::WrongType {
        field: f.as_str(),
        expected,
        found: found.kind(),
    }
}

#[inline]
fn string(v: Raw<'_>, f: Field) -> Result<Cow<'_, str>, DecodeError> {
    match v {
        Raw::Str(s) if s.len() > MAX_ID_BYTES => Err(too_long(f, s.len())),
        Raw::Str(s) => Ok(s),
        other => Err(not_a_string(f, &other)),
    }
}

/// [`string`]'s errors, out of line (rare).
#[cold]
#[inline(never)]
fn too_long(f: Field, len: usize) -> DecodeError {
    DecodeError::TooLong {
        field: f.as_str(),
        len,
        max: MAX_ID_BYTES,
    }
}

#[cold]
#[inline(never)]
fn not_a_string(f: Field, found: &Raw<'_>) -> DecodeError {
    wrong_type(f, "a string", found)
}

#[inline]
fn required_str(v: Option<Raw<'_>>, f: Field) -> Result<Cow<'_, str>, DecodeError> {
    string(required(v, f)?, f)
}

#[inline]
fn optional_str(v: Option<Raw<'_>>, f: Field) -> Result<Option<Cow<'_, str>>, DecodeError> {
    present(v).map(|v| string(v, f)).transpose()
}

#[inline]
fn number(v: &Raw<'_>, f: Field) -> Result<f64, DecodeError> {
    match *v {
        Raw::UInt(u) => Ok(u as f64),
        Raw::NegInt(i) => Ok(i as f64),
        Raw::Float(x) => Ok(x),
        ref other => Err(wrong_type(f, "a number", other)),
    }
}

/// A money amount: a finite number in `0..=max` (`-0` becomes `0`).
#[inline]
fn required_amount(v: Option<Raw<'_>>, f: Field, max: f64) -> Result<f64, DecodeError> {
    let x = number(&required(v, f)?, f)?;
    // Written so that NaN fails too.
    if !(x >= 0.0 && x <= max) {
        return Err(amount_out_of_range(f, x, max));
    }
    Ok(x + 0.0)
}

/// [`required_amount`]'s error (out of line: it formats).
#[cold]
#[inline(never)]
fn amount_out_of_range(f: Field, x: f64, max: f64) -> DecodeError {
    DecodeError::OutOfRange {
        field: f.as_str(),
        detail: format!(
            "{} is not a number in 0..={} (engine.max_amount_usd)",
            short(x),
            short(max)
        ),
    }
}

/// A number as written in an error: in full up to 1e15, in exponent form beyond
/// (`1e308` in full is 309 digits).
fn short(x: f64) -> String {
    if x.abs() < 1e15 {
        format!("{x}")
    } else {
        format!("{x:e}")
    }
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
