//! Byte-level searches of the framer: where the next message may start, and
//! whether the bytes between two messages are only a prolog.
//!
//! These look at raw bytes only, never at quick-xml's tokenizer state, so a
//! stray quote, an unclosed comment or a truncated tag before a message start
//! cannot hide it. Pure functions; no allocation.

use memchr::memmem;

use super::{BOM, MESSAGE_ROOTS};

/// Which `<` count as the start of a message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Starts {
    /// `<` + a message root name + whitespace, `/` or `>`: inside a message
    /// (or while dropping one) only these cut it.
    Roots,
    /// `<` + a name start (ASCII letter, `_`, `:`): between messages any
    /// element is framed, so a message type Touchline does not know is
    /// refused by the parser as `unknown_type` rather than lost as garbage.
    Elements,
}

/// The outcome of a search, as an index into the searched bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Search {
    /// A message starts at this `<`.
    Start(usize),
    /// The bytes end before it can be told whether this `<` starts a
    /// message; nothing before it does.
    Undecided(usize),
    /// No message starts in these bytes.
    Nothing,
}

/// The first message start in `bytes`.
pub(super) fn next_start(bytes: &[u8], which: Starts) -> Search {
    for i in memchr::memchr_iter(b'<', bytes) {
        let rest = &bytes[i + 1..];
        let verdict = match which {
            Starts::Roots => root_at(rest),
            Starts::Elements => element_at(rest),
        };
        match verdict {
            Verdict::Yes => return Search::Start(i),
            Verdict::NeedMore => return Search::Undecided(i),
            Verdict::No => {}
        }
    }
    Search::Nothing
}

enum Verdict {
    Yes,
    No,
    NeedMore,
}

/// Does a message root start right after a `<` followed by `rest`?
fn root_at(rest: &[u8]) -> Verdict {
    let mut verdict = Verdict::No;
    for root in MESSAGE_ROOTS {
        match rest.get(root.len()) {
            Some(&after) if rest.starts_with(root) && is_delimiter(after) => return Verdict::Yes,
            Some(_) => {}
            // `rest` is no longer than the name: a prefix of it may still
            // become this root.
            None if root.starts_with(rest) => verdict = Verdict::NeedMore,
            None => {}
        }
    }
    verdict
}

fn element_at(rest: &[u8]) -> Verdict {
    match rest.first() {
        None => Verdict::NeedMore,
        Some(&b) if b.is_ascii_alphabetic() || b == b'_' || b == b':' => Verdict::Yes,
        Some(_) => Verdict::No,
    }
}

/// What may follow an element name in a start tag.
fn is_delimiter(b: u8) -> bool {
    matches!(b, b' ' | b'\t' | b'\r' | b'\n' | b'/' | b'>')
}

/// Whether `bytes` (between two messages) hold nothing but what may precede
/// a document: whitespace, BOMs, XML declarations and processing
/// instructions, comments, a DOCTYPE. Anything else is garbage.
pub(super) fn is_prolog(mut bytes: &[u8]) -> bool {
    loop {
        bytes = bytes.trim_ascii_start();
        if bytes.is_empty() {
            return true;
        }
        let skip = if bytes.starts_with(BOM) {
            Some(BOM.len())
        } else if bytes.starts_with(b"<?") {
            memmem::find(&bytes[2..], b"?>").map(|i| i + 4)
        } else if bytes.starts_with(b"<!--") {
            memmem::find(&bytes[4..], b"-->").map(|i| i + 7)
        } else if bytes.starts_with(b"<!DOCTYPE") {
            memchr::memchr(b'>', bytes).map(|i| i + 1)
        } else {
            None
        };
        match skip {
            Some(n) => bytes = &bytes[n..],
            None => return false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn roots_need_a_delimiter_and_wait_for_one() {
        for (bytes, expected) in [
            (&b"x<odds_change a"[..], Search::Start(1)),
            (b"<bet_stop/>", Search::Start(0)),
            (b"<alive>", Search::Start(0)),
            (b"<alive\r\n", Search::Start(0)),
            (b"<odds_changes><alive ", Search::Start(14)),
            (b"<odds><market>", Search::Nothing),
            (b"<odds_change", Search::Undecided(0)),
            (b"<odds", Search::Undecided(0)),
            (b"<", Search::Undecided(0)),
            (b"<x><", Search::Undecided(3)),
            (b"<<\"<alive ", Search::Start(3)),
        ] {
            assert_eq!(
                next_start(bytes, Starts::Roots),
                expected,
                "{:?}",
                String::from_utf8_lossy(bytes)
            );
        }
    }

    #[test]
    fn any_element_starts_between_messages() {
        for (bytes, expected) in [
            (&b"junk <product_up/>"[..], Search::Start(5)),
            (b"<<<>>> </x> <?xml?> <!-- --> <_a", Search::Start(29)),
            (b"< a", Search::Nothing),
            (b"\x00<", Search::Undecided(1)),
        ] {
            assert_eq!(next_start(bytes, Starts::Elements), expected);
        }
    }

    #[test]
    fn prolog_is_whitespace_boms_declarations_comments() {
        for (bytes, prolog) in [
            (&b""[..], true),
            (
                b"\r\n \xEF\xBB\xBF<?xml version=\"1.0\"?>\n<!-- c --><!DOCTYPE x>\xEF\xBB\xBF",
                true,
            ),
            (b"\xEF\xBB", false),
            (b"<?xml version=\"1.0\"", false),
            (b"<!-- unterminated", false),
            (b"</odds_change>", false),
            (b" x ", false),
            (b"<![CDATA[x]]>", false),
        ] {
            assert_eq!(is_prolog(bytes), prolog, "{:?}", String::from_utf8_lossy(bytes));
        }
    }
}
