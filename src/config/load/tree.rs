//! The YAML document as a plain tree of positioned nodes, before any interpolation or
//! validation.
//!
//! serde-saphyr parses (YAML 1.2: `yes`/`no`/`on`/`off` are strings) and records where every
//! node sits; the loader then walks this tree knowing each value's key path, so it can report
//! every problem at once instead of stopping at the first, as a derived `Deserialize` would.

use std::fmt;

use serde::de::{self, Deserialize, Deserializer, MapAccess, SeqAccess, Visitor};
use serde_saphyr::options::{DuplicateKeyPolicy, NonFiniteFloatPolicy};
use serde_saphyr::{Location, Spanned};

use super::Position;

/// One YAML node and where it was written.
#[derive(Debug)]
pub(super) struct Node {
    pub(super) kind: Kind,
    /// Where the node is used (for an alias: the `*alias`).
    pub(super) position: Option<Position>,
    /// Byte range of the scalar's text where it is defined, to quote numbers and booleans as
    /// written (`1.10` must not become `1.1` in an `env` value).
    source_span: Option<(usize, usize)>,
}

/// What a node holds. Scalars are typed by the YAML 1.2 core schema; interpolation has not run.
#[derive(Debug)]
pub(super) enum Kind {
    Null,
    Bool(bool),
    Int(i128),
    Float(f64),
    Str(String),
    Seq(Vec<Node>),
    Map(Vec<Entry>),
}

/// One `key: value` pair of a mapping, in document order. Duplicates are kept so that the
/// loader can report them with their key path.
#[derive(Debug)]
pub(super) struct Entry {
    pub(super) key: String,
    pub(super) position: Option<Position>,
    pub(super) value: Node,
}

impl Node {
    /// The scalar exactly as written in the source, for numbers and booleans.
    pub(super) fn source_text<'s>(&self, source: &'s str) -> Option<&'s str> {
        let (start, len) = self.source_span?;
        source.get(start..start.checked_add(len)?).map(str::trim)
    }
}

/// A YAML syntax error (or a structure serde-saphyr refuses, such as a second document).
#[derive(Debug)]
pub(super) struct SyntaxError {
    pub(super) position: Option<Position>,
    pub(super) message: String,
}

/// Parses one YAML document into a [`Node`] tree.
pub(super) fn parse(text: &str) -> Result<Node, SyntaxError> {
    let options = serde_saphyr::options! {
        // YAML 1.2: only true/false are booleans, so `grantPermission: yes` stays a string.
        strict_booleans: true,
        // Keep odd spellings as text rather than guessing: `0755` and `1_000` stay strings.
        leading_zero_numbers_as_strings: true,
        underscored_numbers_as_strings: true,
        non_finite_float_policy: NonFiniteFloatPolicy::AsString,
        // The loader reports duplicates itself, with the key path.
        duplicate_keys: DuplicateKeyPolicy::PassThrough,
        reject_unsupported_tags: true,
        with_snippet: false,
    };
    serde_saphyr::from_str_with_options::<Node>(text, options).map_err(|error| {
        let position = error.location().and_then(position_of);
        let mut message = error.without_snippet().to_string();
        if let Some(at) = position {
            let suffix = format!(" at line {}, column {}", at.line, at.column);
            if let Some(stripped) = message.strip_suffix(&suffix) {
                message = stripped.to_owned();
            }
        }
        if message.starts_with("multiple YAML documents") {
            message = "the file holds more than one YAML document ('---'); Iris reads exactly one"
                .to_owned();
        }
        SyntaxError { position, message }
    })
}

fn position_of(location: Location) -> Option<Position> {
    (location.line() > 0).then(|| Position {
        line: location.line(),
        column: location.column(),
    })
}

impl<'de> Deserialize<'de> for Node {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let spanned = Spanned::<Kind>::deserialize(deserializer)?;
        let span = spanned.defined.span();
        let source_span = span
            .byte_offset()
            .zip(span.byte_len())
            .and_then(|(start, len)| {
                Some((usize::try_from(start).ok()?, usize::try_from(len).ok()?))
            });
        Ok(Self {
            kind: spanned.value,
            position: position_of(spanned.referenced),
            source_span,
        })
    }
}

impl<'de> Deserialize<'de> for Kind {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_any(KindVisitor)
    }
}

struct KindVisitor;

impl<'de> Visitor<'de> for KindVisitor {
    type Value = Kind;

    fn expecting(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter.write_str("a YAML value")
    }

    fn visit_unit<E>(self) -> Result<Kind, E> {
        Ok(Kind::Null)
    }

    fn visit_none<E>(self) -> Result<Kind, E> {
        Ok(Kind::Null)
    }

    fn visit_some<D: Deserializer<'de>>(self, deserializer: D) -> Result<Kind, D::Error> {
        Kind::deserialize(deserializer)
    }

    fn visit_bool<E>(self, value: bool) -> Result<Kind, E> {
        Ok(Kind::Bool(value))
    }

    fn visit_i64<E>(self, value: i64) -> Result<Kind, E> {
        Ok(Kind::Int(value.into()))
    }

    fn visit_u64<E>(self, value: u64) -> Result<Kind, E> {
        Ok(Kind::Int(value.into()))
    }

    fn visit_i128<E>(self, value: i128) -> Result<Kind, E> {
        Ok(Kind::Int(value))
    }

    fn visit_u128<E>(self, value: u128) -> Result<Kind, E> {
        // Beyond i128 every consumer rejects the value anyway; it is quoted from the source.
        Ok(Kind::Int(i128::try_from(value).unwrap_or(i128::MAX)))
    }

    fn visit_f64<E>(self, value: f64) -> Result<Kind, E> {
        Ok(Kind::Float(value))
    }

    fn visit_str<E>(self, value: &str) -> Result<Kind, E> {
        Ok(Kind::Str(value.to_owned()))
    }

    fn visit_string<E>(self, value: String) -> Result<Kind, E> {
        Ok(Kind::Str(value))
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Kind, A::Error> {
        let mut items = Vec::new();
        while let Some(item) = seq.next_element::<Node>()? {
            items.push(item);
        }
        Ok(Kind::Seq(items))
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Kind, A::Error> {
        let mut entries = Vec::new();
        while let Some(key) = map.next_key::<Spanned<String>>()? {
            let value = map.next_value::<Node>()?;
            entries.push(Entry {
                key: key.value,
                position: position_of(key.referenced),
                value,
            });
        }
        Ok(Kind::Map(entries))
    }

    fn visit_bytes<E: de::Error>(self, _value: &[u8]) -> Result<Kind, E> {
        Err(E::custom("binary values are not supported here"))
    }
}
