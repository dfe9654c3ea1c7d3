//! Reading attribute values. A required one rejects the message when it is
//! missing or unreadable ([`req`]); an optional one is read leniently
//! ([`Fields`]): an unreadable value is dropped and reported as a
//! [`Problem`], and the caller decides how to read it (as absent, or the
//! safe way). Attributes that are not well-formed XML reject the message.

use std::borrow::Cow;
use std::str::FromStr;

use quick_xml::events::BytesStart;

use super::{ParseError, Problem, Result};

/// A value the feed sends in an attribute.
pub(super) trait Value: FromStr {
    /// Whether a parsed value is one the feed can mean.
    fn sane(&self) -> bool {
        true
    }
}

impl Value for i8 {}
impl Value for u8 {}
impl Value for i32 {}
impl Value for u32 {}
impl Value for i64 {}
impl Value for u64 {}
impl Value for f64 {
    /// `NaN` and infinities parse, but are no odds, scores or factors.
    fn sane(&self) -> bool {
        self.is_finite()
    }
}

/// An optional attribute, read.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(super) enum Attr<T> {
    Absent,
    Read(T),
    /// Present but unreadable (reported already).
    Unreadable,
}

impl<T> Attr<T> {
    /// The value; `None` when absent or unreadable.
    pub(super) fn ok(self) -> Option<T> {
        match self {
            Attr::Read(v) => Some(v),
            Attr::Absent | Attr::Unreadable => None,
        }
    }

    /// The value; `absent` or `unreadable` when it is not there to read.
    pub(super) fn or(self, absent: T, unreadable: T) -> T {
        match self {
            Attr::Read(v) => v,
            Attr::Absent => absent,
            Attr::Unreadable => unreadable,
        }
    }

    pub(super) fn is_unreadable(&self) -> bool {
        matches!(self, Attr::Unreadable)
    }
}

/// Reads one message's optional attributes, reporting what it drops.
pub(super) struct Fields<'p> {
    /// The message's kind (its element name), for the problems.
    kind: &'static str,
    problems: &'p mut Vec<Problem>,
}

impl<'p> Fields<'p> {
    pub(super) fn new(kind: &'static str, problems: &'p mut Vec<Problem>) -> Self {
        Fields { kind, problems }
    }

    /// Optional attribute `attr` of `e`.
    pub(super) fn attr<T: Value>(
        &mut self,
        e: &BytesStart,
        element: &'static str,
        attr: &'static str,
    ) -> Result<Attr<T>> {
        Ok(self.value(opt_str(e, element, attr)?, attr))
    }

    /// An optional attribute's value found by [`attrs`].
    pub(super) fn value<T: Value>(&mut self, v: Option<Cow<'_, str>>, attr: &'static str) -> Attr<T> {
        let Some(v) = v else { return Attr::Absent };
        match v.trim().parse::<T>() {
            Ok(x) if x.sane() => Attr::Read(x),
            _ => {
                self.report(attr);
                Attr::Unreadable
            }
        }
    }

    /// `a`, unless its value is not one `ok` allows: then unreadable
    /// (reported).
    pub(super) fn check<T>(&mut self, a: Attr<T>, field: &'static str, ok: impl FnOnce(&T) -> bool) -> Attr<T> {
        match a {
            Attr::Read(v) if !ok(&v) => {
                self.report(field);
                Attr::Unreadable
            }
            a => a,
        }
    }

    /// `field` of this message was dropped or read the safe way.
    pub(super) fn report(&mut self, field: &'static str) {
        self.problems.push(Problem { kind: self.kind, field });
    }
}

/// Attribute `attr` of `e` as text, if present.
pub(super) fn opt_str<'a>(
    e: &'a BytesStart,
    element: &'static str,
    attr: &'static str,
) -> Result<Option<Cow<'a, str>>> {
    let Some(a) = e.try_get_attribute(attr).map_err(malformed)? else {
        return Ok(None);
    };
    a.unescape_value().map(Some).map_err(|_| ParseError::BadValue {
        element,
        attr,
        value: String::from_utf8_lossy(&a.value).into_owned(),
    })
}

/// Required text attribute.
pub(super) fn req_str<'a>(e: &'a BytesStart, element: &'static str, attr: &'static str) -> Result<Cow<'a, str>> {
    opt_str(e, element, attr)?.ok_or(ParseError::MissingAttribute { element, attr })
}

/// Required attribute: missing or unreadable rejects the message.
pub(super) fn req<T: Value>(e: &BytesStart, element: &'static str, attr: &'static str) -> Result<T> {
    req_value(opt_str(e, element, attr)?, element, attr)
}

/// A required attribute's value found by [`attrs`].
pub(super) fn req_value<T: Value>(v: Option<Cow<'_, str>>, element: &'static str, attr: &'static str) -> Result<T> {
    let v = v.ok_or(ParseError::MissingAttribute { element, attr })?;
    match v.trim().parse::<T>() {
        Ok(x) if x.sane() => Ok(x),
        _ => Err(ParseError::BadValue {
            element,
            attr,
            value: v.into_owned(),
        }),
    }
}

/// The values of `names` on `e`, found in one pass over its attributes
/// (the hot path: every market and outcome of every odds_change).
pub(super) fn attrs<'a, const N: usize>(
    e: &'a BytesStart,
    element: &'static str,
    names: [&'static str; N],
) -> Result<[Option<Cow<'a, str>>; N]> {
    let mut out: [Option<Cow<'a, str>>; N] = std::array::from_fn(|_| None);
    for a in e.attributes().with_checks(false) {
        let a = a.map_err(malformed)?;
        if let Some(i) = names.iter().position(|n| a.key.as_ref() == n.as_bytes()) {
            let value = a.unescape_value().map_err(|_| ParseError::BadValue {
                element,
                attr: names[i],
                value: String::from_utf8_lossy(&a.value).into_owned(),
            })?;
            out[i] = Some(value);
        }
    }
    Ok(out)
}

pub(super) fn malformed(e: impl std::fmt::Display) -> ParseError {
    ParseError::Malformed(e.to_string())
}
