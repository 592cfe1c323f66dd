//! Config-driven mapping of a foreign message shape onto the canonical schema.
//!
//! `[mapping]` in the config (shipped examples: `config/segment.toml`,
//! `config/cloudevents.toml`):
//!
//! ```toml
//! [mapping]
//! ts_format = "rfc3339"          # auto (default) | rfc3339 | epoch_ms | epoch_s
//!
//! [mapping.fields]               # canonical field -> JSON Pointer (RFC 6901)
//! event_id = "/messageId"        # required
//! type = "/event"                # required: the source's type value
//! ts = "/timestamp"
//! user_id = "/userId"
//! amount_usd = "/properties/amount"
//!
//! [mapping.types]                # source type value -> canonical type
//! "Signed Up" = "signup"
//! "Ticket Opened" = { type = "support", set = { action = "opened" } }
//! "Spend Booked" = { type = "spend", fields = { channel = "/properties/channel" } }
//! ```
//!
//! An empty `[mapping]` means the canonical schema, decoded on the fast path.
//! Otherwise a canonical field is read only through its pointer (a field with
//! none is absent); `set` fixes canonical values for one source type and wins
//! over the message; `fields` inside a type rule overrides pointers for that
//! type. With `types` empty, the type values must be canonical type names;
//! otherwise values not listed are `unknown_type`. The result goes through
//! `raw::validate`, the same validation as canonical input.
//!
//! Config validation is the one place a mapping is checked:
//! [`MappingConfig::compile`] turns the section into a [`Mapping`], the only
//! form a [`Decoder`](super::Decoder) takes, so decoding never meets an
//! unchecked mapping.

use std::borrow::Cow;
use std::collections::{BTreeMap, HashMap};
use std::fmt;

use serde::Deserialize;
use serde::de::{self, MapAccess, Visitor};
use serde_json::Value;

use super::error::{DecodeError, DecodeFailure, clip};
use super::raw::{
    Field, Raw, RawEvent, TsFormat, check_fixed_value, into_owned, type_str, validate,
};
use super::{DEFAULT_MAX_AMOUNT_USD, Event, EventType, Millis};
use pointer::Pointer;

mod pointer;
#[cfg(test)]
mod tests;

/// The `[mapping]` config section. The default is the canonical schema.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct MappingConfig {
    /// Canonical field name -> JSON Pointer to its value in the message.
    pub fields: BTreeMap<String, String>,
    /// Source type value -> canonical type, fixed values and pointer overrides.
    /// Empty: the source type values are canonical type names.
    pub types: BTreeMap<String, TypeRule>,
    /// How the value at `fields.ts` is written: `auto` (the canonical rule: an
    /// RFC 3339 string or integer epoch ms), `rfc3339`, `epoch_ms` or `epoch_s`.
    pub ts_format: Option<String>,
}

/// One entry of `[mapping.types]`: either just the canonical type name, or a table.
#[derive(Clone, Debug, Default)]
pub struct TypeRule {
    /// Canonical type name (`type` in the table form).
    pub canonical: String,
    /// Canonical field -> fixed value for events of this source type (wins over the message).
    pub set: BTreeMap<String, toml::Value>,
    /// Canonical field -> JSON Pointer, for this source type only (wins over `mapping.fields`).
    pub fields: BTreeMap<String, String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct TypeRuleTable {
    #[serde(rename = "type")]
    canonical: String,
    #[serde(default)]
    set: BTreeMap<String, toml::Value>,
    #[serde(default)]
    fields: BTreeMap<String, String>,
}

impl<'de> Deserialize<'de> for TypeRule {
    fn deserialize<D: de::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct RuleVisitor;
        impl<'de> Visitor<'de> for RuleVisitor {
            type Value = TypeRule;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a canonical type name or a table with `type`, `set`, `fields`")
            }
            fn visit_str<E: de::Error>(self, s: &str) -> Result<TypeRule, E> {
                Ok(TypeRule {
                    canonical: s.to_owned(),
                    ..TypeRule::default()
                })
            }
            fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<TypeRule, A::Error> {
                let t = TypeRuleTable::deserialize(de::value::MapAccessDeserializer::new(map))?;
                Ok(TypeRule {
                    canonical: t.canonical,
                    set: t.set,
                    fields: t.fields,
                })
            }
        }
        d.deserialize_any(RuleVisitor)
    }
}

impl MappingConfig {
    /// Whether this is the canonical schema (nothing configured).
    pub fn is_canonical(&self) -> bool {
        self.fields.is_empty() && self.types.is_empty() && self.ts_format.is_none()
    }

    /// [`MappingConfig::compile_bounded`] with the default bound on money
    /// amounts ([`DEFAULT_MAX_AMOUNT_USD`]).
    pub fn compile(&self) -> Result<Mapping, (String, String)> {
        self.compile_bounded(DEFAULT_MAX_AMOUNT_USD)
    }

    /// Checks the section and returns its ready-to-run form, with money
    /// amounts above `max_amount_usd` (`engine.max_amount_usd`) invalid;
    /// an error names the key relative to `mapping` and what is wrong with it.
    pub fn compile_bounded(&self, max_amount_usd: f64) -> Result<Mapping, (String, String)> {
        if self.is_canonical() {
            return Ok(Mapping {
                compiled: None,
                max_amount_usd,
            });
        }
        let ts_format = match self.ts_format.as_deref() {
            None => TsFormat::Auto,
            Some(s) => TsFormat::parse(s).ok_or_else(|| {
                (
                    "ts_format".to_string(),
                    format!("unknown format `{s}` (use auto, rfc3339, epoch_ms or epoch_s)"),
                )
            })?,
        };

        let mut global: BTreeMap<Field, Pointer> = BTreeMap::new();
        for (name, ptr) in &self.fields {
            let key = format!("fields.{}", toml_key(name));
            let f = Field::parse(name).ok_or_else(|| (key.clone(), unknown_field(name)))?;
            global.insert(f, Pointer::parse(ptr).map_err(|m| (key, m))?);
        }
        let required = |f: Field| {
            (
                format!("fields.{f}"),
                "a JSON Pointer is required once a mapping is configured".to_string(),
            )
        };
        if !global.contains_key(&Field::EventId) {
            return Err(required(Field::EventId));
        }
        let type_pointer = global
            .remove(&Field::Type)
            .ok_or_else(|| required(Field::Type))?;

        let mut rules = HashMap::new();
        if self.types.is_empty() {
            for ty in EventType::ALL {
                rules.insert(
                    ty.as_str().to_owned(),
                    Rule::new(ty, &global, &BTreeMap::new()),
                );
            }
        }
        for (source, rule) in &self.types {
            let key = format!("types.{}", toml_key(source));
            if source.is_empty() {
                return Err((
                    key,
                    "an empty type value never matches (it counts as absent)".into(),
                ));
            }
            rules.insert(
                source.clone(),
                compile_rule(&key, rule, &global, max_amount_usd)?,
            );
        }
        Ok(Mapping {
            compiled: Some(CompiledMapping {
                type_pointer,
                rules,
                ts_format,
            }),
            max_amount_usd,
        })
    }
}

fn compile_rule(
    key: &str,
    rule: &TypeRule,
    global: &BTreeMap<Field, Pointer>,
    max_amount_usd: f64,
) -> Result<Rule, (String, String)> {
    let ty = EventType::parse(&rule.canonical).ok_or_else(|| {
        (
            format!("{key}.type"),
            format!(
                "unknown canonical type `{}` (use signup, deposit, trade, referral, support or spend)",
                rule.canonical
            ),
        )
    })?;
    let field_for = |k: String, name: &str| -> Result<Field, (String, String)> {
        let f = Field::parse(name).ok_or_else(|| (k.clone(), unknown_field(name)))?;
        if !f.applies_to(ty) {
            return Err((
                k,
                format!("`{f}` is not a field of `{}` events", ty.as_str()),
            ));
        }
        Ok(f)
    };

    let mut overrides = BTreeMap::new();
    for (name, ptr) in &rule.fields {
        let k = format!("{key}.fields.{}", toml_key(name));
        let f = field_for(k.clone(), name)?;
        if f == Field::Type {
            return Err((
                k,
                "`type` is found before the type rule, so it cannot be overridden here".into(),
            ));
        }
        overrides.insert(f, Pointer::parse(ptr).map_err(|m| (k, m))?);
    }
    let mut compiled = Rule::new(ty, global, &overrides);

    for (name, value) in &rule.set {
        let k = format!("{key}.set.{}", toml_key(name));
        let f = field_for(k.clone(), name)?;
        if f.is_envelope() {
            return Err((
                k,
                format!("`{f}` differs per message; give it a pointer instead"),
            ));
        }
        if overrides.contains_key(&f) {
            return Err((k, format!("`{f}` also has a pointer in {key}.fields")));
        }
        let raw = toml_raw(value);
        check_fixed_value(ty, f, raw.clone(), max_amount_usd).map_err(|e| (k, e.to_string()))?;
        compiled.pointers.retain(|(pf, _)| *pf != f);
        compiled.fixed.push((f, raw));
    }
    Ok(compiled)
}

fn unknown_field(name: &str) -> String {
    let known: Vec<&str> = Field::ALL.iter().map(|f| f.as_str()).collect();
    format!(
        "unknown canonical field `{name}` (known: {})",
        known.join(", ")
    )
}

/// A key as written in TOML: bare when it can be, quoted otherwise.
fn toml_key(k: &str) -> String {
    if !k.is_empty()
        && k.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
    {
        k.to_owned()
    } else {
        format!("{k:?}")
    }
}

fn toml_raw(v: &toml::Value) -> Raw<'static> {
    match v {
        toml::Value::String(s) => Raw::Str(Cow::Owned(s.clone())),
        toml::Value::Integer(i) => match u64::try_from(*i) {
            Ok(u) => Raw::UInt(u),
            Err(_) => Raw::NegInt(*i),
        },
        toml::Value::Float(x) => Raw::Float(*x),
        toml::Value::Boolean(_) => Raw::Other("a boolean"),
        toml::Value::Datetime(_) => Raw::Other("a datetime"),
        toml::Value::Array(_) => Raw::Other("an array"),
        toml::Value::Table(_) => Raw::Other("a table"),
    }
}

/// A checked `[mapping]`, ready to decode with: the canonical schema (the
/// default) or a compiled mapping, and the bound on money amounts both
/// shapes are validated with (`engine.max_amount_usd`, set by config
/// validation). Only [`MappingConfig::compile_bounded`] makes a mapped one,
/// so holding a `Mapping` means the section passed validation.
#[derive(Clone, Debug)]
pub struct Mapping {
    compiled: Option<CompiledMapping>,
    max_amount_usd: f64,
}

impl Default for Mapping {
    /// The canonical schema, with the default bound on amounts.
    fn default() -> Mapping {
        Mapping {
            compiled: None,
            max_amount_usd: DEFAULT_MAX_AMOUNT_USD,
        }
    }
}

impl Mapping {
    /// Whether messages are in the canonical schema (decoded on the fast path).
    pub fn is_canonical(&self) -> bool {
        self.compiled.is_none()
    }

    /// The compiled mapping; `None` for the canonical schema.
    pub(crate) fn compiled(&self) -> Option<&CompiledMapping> {
        self.compiled.as_ref()
    }

    /// Larger money amounts are `out_of_range`.
    pub fn max_amount_usd(&self) -> f64 {
        self.max_amount_usd
    }
}

/// How events of one source type value are read.
#[derive(Clone, Debug)]
struct Rule {
    ty: EventType,
    /// Pointers of the fields this type reads (overrides applied; `type` excluded).
    pointers: Vec<(Field, Pointer)>,
    /// Fixed values, already checked.
    fixed: Vec<(Field, Raw<'static>)>,
}

impl Rule {
    fn new(
        ty: EventType,
        global: &BTreeMap<Field, Pointer>,
        overrides: &BTreeMap<Field, Pointer>,
    ) -> Rule {
        let pointers = Field::ALL
            .into_iter()
            .filter(|f| *f != Field::Type && f.applies_to(ty))
            .filter_map(|f| {
                let p = overrides.get(&f).or_else(|| global.get(&f))?;
                Some((f, p.clone()))
            })
            .collect();
        Rule {
            ty,
            pointers,
            fixed: Vec::new(),
        }
    }
}

/// A validated mapping, ready to decode.
#[derive(Clone, Debug)]
pub(crate) struct CompiledMapping {
    type_pointer: Pointer,
    /// Source type value -> rule. Without a `types` table: the canonical names.
    rules: HashMap<String, Rule>,
    ts_format: TsFormat,
}

impl CompiledMapping {
    pub(crate) fn decode<'a>(
        &self,
        bytes: &'a [u8],
        fallback_ts: Option<Millis>,
        max_amount_usd: f64,
    ) -> Result<Event<'a>, DecodeFailure> {
        let doc: Value = serde_json::from_slice(bytes)
            .map_err(|e| DecodeFailure::untyped(DecodeError::NotJson(e.to_string())))?;
        if !doc.is_object() {
            return Err(DecodeFailure::untyped(DecodeError::NotObject));
        }
        let source_type = self.type_pointer.resolve(&doc).and_then(Raw::from_json);
        let source_type = type_str(source_type.as_ref()).map_err(DecodeFailure::untyped)?;
        let rule = self
            .rules
            .get(source_type)
            .ok_or_else(|| DecodeFailure::untyped(DecodeError::UnknownType(clip(source_type))))?;

        let mut raw = RawEvent::default();
        for (f, p) in &rule.pointers {
            *raw.slot(*f) = p.resolve(&doc).and_then(Raw::from_json);
        }
        for (f, v) in &rule.fixed {
            *raw.slot(*f) = Some(match v {
                Raw::Str(s) => Raw::Str(Cow::Borrowed(s)),
                other => other.clone(),
            });
        }
        validate(
            &mut raw,
            rule.ty,
            self.ts_format,
            fallback_ts,
            max_amount_usd,
        )
        .map(into_owned)
    }
}
