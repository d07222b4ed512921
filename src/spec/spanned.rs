//! [`Spanned<T>`]: a deserialized value with the byte range it came from.
//!
//! `ron` reports positions for syntax errors but gives deserialized values none. A
//! `Spanned<T>` asks ron for the value's raw text (ron's `RawValue`, which borrows from the
//! input), takes its offset in the file, and parses `T` from that text with the same
//! extensions. Errors inside keep their position in the file: the innermost one is kept in a
//! thread-local for [`parse`] to report. Parsing costs grow with nesting depth, which stays
//! small for spec files.

use std::cell::RefCell;
use std::fmt;
use std::marker::PhantomData;

use ron::extensions::Extensions;
use ron::value::RawValue;
use serde::de::{self, Deserialize, Deserializer, MapAccess, Visitor};

/// A byte range in a source file.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
pub struct Span {
    /// Which file of a [`super::Sources`] the range is in.
    pub file: u32,
    pub start: usize,
    pub end: usize,
}

/// A value and where it was written. Equality and hashing look at the value only.
#[derive(Clone, Default)]
pub struct Spanned<T> {
    pub value: T,
    pub span: Span,
}

impl<T> Spanned<T> {
    /// A value not read from a file (defaults, overrides); its span is empty.
    pub fn unspanned(value: T) -> Self {
        Spanned {
            value,
            span: Span::default(),
        }
    }
}

impl<T> std::ops::Deref for Spanned<T> {
    type Target = T;
    fn deref(&self) -> &T {
        &self.value
    }
}

impl<T: fmt::Debug> fmt::Debug for Spanned<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.value.fmt(f)
    }
}

impl<T: serde::Serialize> serde::Serialize for Spanned<T> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        self.value.serialize(s)
    }
}

impl<T: Eq> Eq for Spanned<T> {}

impl<T: PartialEq> PartialEq for Spanned<T> {
    fn eq(&self, other: &Self) -> bool {
        self.value == other.value
    }
}

/// What [`parse`] needs while it runs: the input's address range, its extensions, and the
/// innermost error so far.
struct Context {
    file: u32,
    base: usize,
    len: usize,
    extensions: Extensions,
    pending: Option<ParseError>,
}

thread_local! {
    static CONTEXT: RefCell<Vec<Context>> = const { RefCell::new(Vec::new()) };
}

/// A parse failure at a byte range of the input.
#[derive(Debug, Clone)]
pub struct ParseError {
    pub span: Span,
    pub message: String,
}

/// The deepest nesting of brackets a spec may use: far above the shipped specs' (under 10),
/// low enough that parsing never nears the stack's limit.
pub const NESTING_LIMIT: usize = 64;

fn options(extensions: Extensions) -> ron::Options {
    ron::Options::default()
        .with_default_extension(extensions)
        .with_recursion_limit(NESTING_LIMIT)
}

/// Parses `text` as `T`, with [`Spanned`] fields filled in.
pub fn parse<T: de::DeserializeOwned>(text: &str, file: u32) -> Result<T, ParseError> {
    let options = options(Extensions::IMPLICIT_SOME);
    let mut de = ron::Deserializer::from_str_with_options(text, &options)
        .map_err(|e| to_parse_error(text, file, &e))?;
    CONTEXT.with(|c| {
        c.borrow_mut().push(Context {
            file,
            base: text.as_ptr() as usize,
            len: text.len(),
            extensions: de.extensions(),
            pending: None,
        })
    });
    let result = T::deserialize(&mut de).and_then(|v| de.end().map(|()| v));
    let pending = CONTEXT.with(|c| c.borrow_mut().pop().and_then(|ctx| ctx.pending));
    result.map_err(|code| {
        pending.unwrap_or_else(|| {
            let e = de.span_error(code);
            to_parse_error(text, file, &e)
        })
    })
}

fn to_parse_error(text: &str, file: u32, e: &ron::error::SpannedError) -> ParseError {
    let start = byte_offset(text, e.span.start);
    let end = byte_offset(text, e.span.end).max(start);
    ParseError {
        span: Span { file, start, end },
        message: message_of(&e.code),
    }
}

/// ron's message for an error, starting lower-case like the rest of our messages
/// ("expected comma", "unexpected field named `x` ...").
fn message_of(code: &ron::Error) -> String {
    let s = match code {
        ron::Error::Message(m) => m.clone(),
        ron::Error::ExceededRecursionLimit => format!(
            "nested deeper than {NESTING_LIMIT} levels, the most a spec may nest: flatten the value here"
        ),
        other => other.to_string().trim_end_matches('.').to_string(),
    };
    let mut chars = s.chars();
    match (chars.next(), chars.next()) {
        (Some(a), Some(b)) if a.is_uppercase() && b.is_lowercase() => {
            a.to_lowercase().chain(s[a.len_utf8()..].chars()).collect()
        }
        _ => s,
    }
}

/// The byte offset of a 1-based (line, char column) position in `text`.
fn byte_offset(text: &str, pos: ron::error::Position) -> usize {
    let mut offset = 0;
    for (i, l) in text.split_inclusive('\n').enumerate() {
        if i + 1 == pos.line {
            return offset
                + l.char_indices()
                    .nth(pos.col.saturating_sub(1))
                    .map_or(l.len(), |(i, _)| i);
        }
        offset += l.len();
    }
    text.len()
}

impl<'de, T: Deserialize<'de>> Deserialize<'de> for Spanned<T> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let raw = <&RawValue>::deserialize(deserializer)?.get_ron();
        let located = CONTEXT.with(|c| {
            c.borrow().last().and_then(|ctx| {
                let at = (raw.as_ptr() as usize).checked_sub(ctx.base)?;
                (at + raw.len() <= ctx.len).then_some((at, ctx.extensions, ctx.file))
            })
        });
        let (at, extensions, file) = located.unwrap_or((0, Extensions::IMPLICIT_SOME, 0));
        let options = options(extensions);
        let fail = |e: ron::error::SpannedError| {
            let message = message_of(&e.code);
            CONTEXT.with(|c| {
                if let Some(ctx) = c.borrow_mut().last_mut()
                    && ctx.pending.is_none()
                {
                    // SAFETY-free arithmetic: `raw` lies within the parsed input.
                    let rel = byte_offset(raw, e.span.start);
                    let rel_end = byte_offset(raw, e.span.end).max(rel);
                    ctx.pending = Some(ParseError {
                        span: Span {
                            file,
                            start: at + rel,
                            end: at + rel_end,
                        },
                        message: message.clone(),
                    });
                }
            });
            de::Error::custom(message)
        };
        let mut inner = ron::Deserializer::from_str_with_options(raw, &options).map_err(fail)?;
        let value_start = raw.len() - inner.remainder().trim_start().len();
        let value = match T::deserialize(&mut inner) {
            Ok(v) => v,
            Err(code) => return Err(fail(inner.span_error(code))),
        };
        Ok(Spanned {
            value,
            span: Span {
                file,
                start: at + value_start,
                end: at + raw.len(),
            },
        })
    }
}

/// A RON map whose entry order is kept. Duplicate keys are kept too: the validation step
/// reports them with the key's position.
#[derive(Clone)]
pub struct OrderedMap<K, V>(pub Vec<(K, V)>);

impl<K, V> Default for OrderedMap<K, V> {
    fn default() -> Self {
        OrderedMap(Vec::new())
    }
}

impl<K: fmt::Debug, V: fmt::Debug> fmt::Debug for OrderedMap<K, V> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_map()
            .entries(self.0.iter().map(|(k, v)| (k, v)))
            .finish()
    }
}

impl<K: serde::Serialize, V: serde::Serialize> serde::Serialize for OrderedMap<K, V> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_map(self.0.iter().map(|(k, v)| (k, v)))
    }
}

impl<'de, K, V> Deserialize<'de> for OrderedMap<K, V>
where
    K: Deserialize<'de>,
    V: Deserialize<'de>,
{
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct MapVisitor<K, V>(PhantomData<(K, V)>);
        impl<'de, K, V> Visitor<'de> for MapVisitor<K, V>
        where
            K: Deserialize<'de>,
            V: Deserialize<'de>,
        {
            type Value = OrderedMap<K, V>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a map")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
                let mut entries: Vec<(K, V)> = Vec::new();
                while let Some((k, v)) = map.next_entry::<K, V>()? {
                    entries.push((k, v));
                }
                Ok(OrderedMap(entries))
            }
        }
        deserializer.deserialize_map(MapVisitor(PhantomData))
    }
}
