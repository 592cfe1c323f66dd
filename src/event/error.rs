//! Why a message is invalid: the error type every decoding path returns, and
//! its stable dead-letter reason codes.

use super::EventType;

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
