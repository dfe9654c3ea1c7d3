//! What the reference-data parsers share: a reader that walks a REST
//! response element by element, knowing the path of open elements, and the
//! [`DataError`] a broken response gives.
//!
//! Lenient the way the SDKs are: text, comments, namespaces and unknown
//! attributes are skipped by the callers; only what makes the document
//! unreadable (bad XML, a truncated file, a required attribute missing or
//! unreadable) is an error. Sans-IO: it reads a `&str`.

use quick_xml::events::{BytesStart, Event};

/// Why a descriptions or fixture response was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DataError {
    #[error("not well-formed XML: {0}")]
    Xml(String),
    #[error("the document ends inside <{0}>")]
    Truncated(String),
    #[error("no root element")]
    Empty,
    #[error("expected a {expected} document, found <{found}>")]
    WrongRoot { expected: &'static str, found: String },
    #[error("no <{0}> element")]
    MissingElement(&'static str),
    #[error("<{element}> lacks required attribute `{attr}`")]
    MissingAttribute { element: &'static str, attr: &'static str },
    #[error("<{element}> attribute `{attr}` has unreadable value {value:?}")]
    BadValue {
        element: &'static str,
        attr: &'static str,
        value: String,
    },
}

/// One step of the walk. Every element, empty or not, gives an `Open` and
/// then a `Close`; during both, [`Walker::path`] ends with that element.
#[derive(Debug)]
pub(super) enum Step {
    Open(Attrs),
    Close,
}

/// An element's attributes, unescaped, by local name.
#[derive(Debug, Default)]
pub(super) struct Attrs(Vec<(String, String)>);

impl Attrs {
    pub(super) fn get(&self, key: &str) -> Option<&str> {
        self.0.iter().find(|(k, _)| k == key).map(|(_, v)| v.as_str())
    }

    /// A required attribute: present and not blank.
    pub(super) fn required(&self, element: &'static str, attr: &'static str) -> Result<&str, DataError> {
        self.get(attr)
            .filter(|v| !v.trim().is_empty())
            .ok_or(DataError::MissingAttribute { element, attr })
    }

    /// A present, non-blank attribute as an owned string.
    pub(super) fn text(&self, key: &str) -> Option<String> {
        self.get(key).filter(|v| !v.trim().is_empty()).map(str::to_owned)
    }
}

pub(super) struct Walker<'a> {
    reader: quick_xml::Reader<&'a [u8]>,
    /// Local names of the open elements, root first.
    open: Vec<String>,
    /// The last step closed the innermost element: drop it before the next.
    pop: bool,
    /// The last step opened an empty element: its `Close` comes next.
    empty: bool,
}

impl<'a> Walker<'a> {
    pub(super) fn new(text: &'a str) -> Walker<'a> {
        // Most of the provider's samples start with a BOM.
        let text = text.strip_prefix('\u{feff}').unwrap_or(text);
        Walker {
            reader: quick_xml::Reader::from_str(text),
            open: Vec::new(),
            pop: false,
            empty: false,
        }
    }

    /// The open elements, root first, ending with the one just opened or
    /// being closed.
    pub(super) fn path(&self) -> &[String] {
        &self.open
    }

    /// Whether the path below the root is exactly `below_root`.
    pub(super) fn at(&self, below_root: &[&str]) -> bool {
        self.open.len() == below_root.len() + 1 && self.open[1..].iter().zip(below_root).all(|(a, b)| a == b)
    }

    /// The next element boundary; `None` at the end of a complete document.
    pub(super) fn next(&mut self) -> Result<Option<Step>, DataError> {
        if std::mem::take(&mut self.pop) {
            self.open.pop();
        }
        if std::mem::take(&mut self.empty) {
            self.pop = true;
            return Ok(Some(Step::Close));
        }
        loop {
            match self.reader.read_event().map_err(|e| DataError::Xml(e.to_string()))? {
                Event::Start(e) => {
                    let attrs = self.open_element(&e)?;
                    return Ok(Some(Step::Open(attrs)));
                }
                Event::Empty(e) => {
                    let attrs = self.open_element(&e)?;
                    self.empty = true;
                    return Ok(Some(Step::Open(attrs)));
                }
                Event::End(_) => {
                    // quick-xml has checked that the end tag matches.
                    self.pop = true;
                    return Ok(Some(Step::Close));
                }
                Event::Eof => {
                    return match self.open.last() {
                        Some(name) => Err(DataError::Truncated(name.clone())),
                        None => Ok(None),
                    };
                }
                _ => {}
            }
        }
    }

    fn open_element(&mut self, e: &BytesStart<'_>) -> Result<Attrs, DataError> {
        let name = String::from_utf8_lossy(e.local_name().as_ref()).into_owned();
        let mut attrs = Vec::new();
        for a in e.attributes() {
            let a = a.map_err(|e| DataError::Xml(e.to_string()))?;
            let key = String::from_utf8_lossy(a.key.local_name().as_ref()).into_owned();
            let value = a.unescape_value().map_err(|e| DataError::Xml(e.to_string()))?;
            attrs.push((key, value.into_owned()));
        }
        self.open.push(name);
        Ok(Attrs(attrs))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The walk as `+name` / `-name` lines.
    fn walk(xml: &str) -> Result<Vec<String>, DataError> {
        let mut w = Walker::new(xml);
        let mut out = Vec::new();
        while let Some(step) = w.next()? {
            let name = w.path().last().cloned().unwrap_or_default();
            out.push(match step {
                Step::Open(_) => format!("+{name}"),
                Step::Close => format!("-{name}"),
            });
        }
        Ok(out)
    }

    #[test]
    fn every_element_opens_and_closes_in_order() {
        let got = walk("\u{feff}<?xml version=\"1.0\"?><!-- c --><a x=\"1\"><b/>text<c><d/></c></a>").expect("walks");
        assert_eq!(got, ["+a", "+b", "-b", "+c", "+d", "-d", "-c", "-a"]);
    }

    #[test]
    fn paths_and_attributes_use_local_names() {
        let mut w = Walker::new(r#"<r xmlns="urn:x" xmlns:p="urn:p"><p:m p:id="7" name="a &amp; b"/></r>"#);
        assert!(matches!(w.next(), Ok(Some(Step::Open(_)))));
        let Ok(Some(Step::Open(attrs))) = w.next() else {
            panic!("second element")
        };
        assert!(w.at(&["m"]));
        assert_eq!(attrs.get("id"), Some("7"));
        assert_eq!(attrs.get("name"), Some("a & b"));
        assert_eq!(
            attrs.required("m", "groups"),
            Err(DataError::MissingAttribute {
                element: "m",
                attr: "groups"
            })
        );
    }

    #[test]
    fn broken_documents_are_errors() {
        assert_eq!(walk("<a><b></b>"), Err(DataError::Truncated("a".into())));
        assert!(matches!(walk("<a><b></a>"), Err(DataError::Xml(_))));
        assert!(matches!(walk("<a x=\"1></a>"), Err(DataError::Xml(_))));
        assert_eq!(walk("  "), Ok(vec![]));
    }
}
