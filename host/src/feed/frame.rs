//! Sans-IO message framer: a byte stream in, whole XML messages out.
//!
//! The feed is a stream of XML documents back to back, each one top-level
//! element, each possibly preceded by a UTF-8 BOM, an XML declaration and
//! whitespace. [`Framer`] tokenises with `quick-xml` just enough to find where
//! each top-level element ends. It keeps its scan position across pushes, so a
//! message arriving in many reads is scanned once, not once per read.
//!
//! It never does IO and never gives up on the stream: a malformed, truncated
//! or oversized message yields one [`FrameError`] and framing resumes at the
//! next message. Resynchronisation points are the start of a known message
//! element, an XML declaration or a BOM seen where a message was still open.

use quick_xml::errors::{Error as XmlError, SyntaxError};
use quick_xml::events::Event;
use quick_xml::reader::Reader;

/// Element names that start a feed message. Seeing one inside an open message
/// means the open message was truncated.
pub const MESSAGE_ROOTS: &[&[u8]] = &[
    b"odds_change",
    b"bet_stop",
    b"bet_settlement",
    b"bet_cancel",
    b"rollback_bet_settlement",
    b"rollback_bet_cancel",
    b"fixture_change",
    b"alive",
    b"snapshot_complete",
    b"product_down",
    b"cashout",
];

/// A start tag longer than this is treated as malformed rather than
/// incomplete, so one stray quote cannot swallow the stream.
const MAX_TAG_LEN: usize = 64 * 1024;

const BOM: &[u8] = b"\xEF\xBB\xBF";

/// Consumed bytes are dropped from the buffer once there are this many and
/// they are at least half of it.
const COMPACT_AT: usize = 64 * 1024;

/// Why bytes were dropped. Each variant is one counter label.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FrameError {
    #[error("message exceeds {limit} bytes")]
    Oversized { limit: usize },
    #[error("{len} bytes of non-XML data between messages")]
    Garbage { len: usize },
    #[error("message <{root}> truncated by the start of the next one")]
    Truncated { root: String },
    #[error("malformed XML: {reason}")]
    Malformed { reason: String },
}

impl FrameError {
    /// Stable label for metrics.
    pub fn kind(&self) -> &'static str {
        match self {
            FrameError::Oversized { .. } => "oversized",
            FrameError::Garbage { .. } => "garbage",
            FrameError::Truncated { .. } => "truncated",
            FrameError::Malformed { .. } => "malformed",
        }
    }
}

/// What one step of the framer decided.
enum Step {
    /// Hand this out (`None`: wait for more bytes).
    Return(Option<RawMessage>),
    /// Scan on at once.
    Again,
    /// Scanned a piece of a message: check its size, then scan on.
    Scanned,
}

/// What the framer hands out.
pub type RawMessage = Result<Vec<u8>, FrameError>;

/// Incremental framer. Push bytes with [`Framer::push`], then drain
/// [`Framer::next_message`] until it returns `None`.
#[derive(Debug)]
pub struct Framer {
    /// Received bytes; everything before `base` was handed out or dropped.
    /// Positions below are absolute indices into `buf`.
    buf: Vec<u8>,
    /// Start of the live bytes. Consumed bytes are dropped in bulk (see
    /// [`COMPACT_AT`]) so framing a large buffer stays linear.
    base: usize,
    /// Where scanning resumes (all events before it are accounted for).
    scan: usize,
    /// Start of the open message, if one is open.
    msg_start: Option<usize>,
    /// Element depth of the open message at `scan`.
    depth: usize,
    /// Root element name of the open message, for error reports.
    root: Vec<u8>,
    /// Set after an oversized message: drop bytes until it ends.
    discarding: bool,
    max_message: usize,
}

impl Framer {
    pub fn new(max_message: usize) -> Self {
        Framer {
            buf: Vec::new(),
            base: 0,
            scan: 0,
            msg_start: None,
            depth: 0,
            root: Vec::new(),
            discarding: false,
            max_message,
        }
    }

    pub fn push(&mut self, bytes: &[u8]) {
        self.buf.extend_from_slice(bytes);
    }

    /// Bytes held, for tests of boundedness.
    pub fn buffered(&self) -> usize {
        self.buf.len() - self.base
    }

    /// The next complete message or error, or `None` until more bytes arrive.
    pub fn next_message(&mut self) -> Option<RawMessage> {
        loop {
            match self.step() {
                Step::Return(out) => return out,
                Step::Again => continue,
                Step::Scanned => {}
            }
            if let Some(start) = self.msg_start
                && self.scan - start > self.max_message
                && !self.discarding
            {
                self.discarding = true;
                return Some(Err(FrameError::Oversized {
                    limit: self.max_message,
                }));
            }
            if self.discarding {
                self.drop_scanned();
            }
        }
    }

    /// Read one piece of markup at `scan` and act on it.
    fn step(&mut self) -> Step {
        let before = self.scan;
        if let Some(step) = self.bom(before) {
            return step;
        }
        let mut reader = Reader::from_reader(&self.buf[before..]);
        let cfg = reader.config_mut();
        // The reader is recreated mid-message; it cannot know the open
        // tags. Depth is tracked here; the parser checks names later.
        cfg.check_end_names = false;
        cfg.allow_unmatched_ends = true;
        let result = reader.read_event();
        let after = before + reader.buffer_position() as usize;
        let in_message = self.msg_start.is_some();
        match result {
            Ok(Event::Eof) => Step::Return(self.check_size_while_waiting()),
            Err(XmlError::Syntax(
                SyntaxError::UnclosedTag
                | SyntaxError::UnclosedComment
                | SyntaxError::UnclosedCData
                | SyntaxError::UnclosedPIOrXmlDecl
                | SyntaxError::UnclosedDoctype
                | SyntaxError::InvalidBangMarkup,
            )) if self.buf.len() - before <= MAX_TAG_LEN => Step::Return(self.check_size_while_waiting()),
            Err(e) => Step::Return(self.skip_broken(before, e.to_string())),
            Ok(Event::Text(t)) if in_message => match t.windows(3).position(|w| w == BOM) {
                Some(pos) => Step::Return(self.truncated_at(before + pos)),
                None => {
                    self.scan = after;
                    Step::Again
                }
            },
            Ok(Event::Text(t)) => {
                // Text running to the end of the buffer may be a split BOM
                // or the start of garbage: wait for the next '<'.
                let stray = (after != self.buf.len()).then(|| stray_bytes(t.as_ref()));
                self.between_messages(after, stray)
            }
            Ok(Event::Decl(_)) if in_message => Step::Return(self.truncated_at(before)),
            Ok(Event::Decl(_) | Event::PI(_) | Event::Comment(_) | Event::DocType(_)) if !in_message => {
                self.scan = after;
                self.consume_to(after);
                Step::Scanned
            }
            Ok(Event::Start(s)) => {
                let root = MESSAGE_ROOTS.contains(&s.name().as_ref());
                self.start_tag(before, after, root)
            }
            Ok(Event::Empty(s)) => {
                let root = MESSAGE_ROOTS.contains(&s.name().as_ref());
                self.empty_tag(before, after, root)
            }
            Ok(Event::End(_)) => self.end_tag(after),
            Ok(_) => {
                self.scan = after;
                Step::Scanned
            }
        }
    }

    /// A BOM (or what may be the start of one) at `at`.
    fn bom(&mut self, at: usize) -> Option<Step> {
        let rest = &self.buf[at..];
        // quick-xml skips a BOM at the start of its input without counting
        // it in `buffer_position`; BOMs are handled here instead.
        if rest.starts_with(BOM) {
            if self.msg_start.is_some() {
                return Some(Step::Return(self.truncated_at(at)));
            }
            self.consume_to(at + BOM.len());
            return Some(Step::Again);
        }
        let partial = !rest.is_empty() && rest.len() < BOM.len() && BOM.starts_with(rest);
        partial.then(|| Step::Return(self.check_size_while_waiting()))
    }

    /// Broken markup at `at`: skip it up to the next '<' after it.
    fn skip_broken(&mut self, at: usize, reason: String) -> Option<RawMessage> {
        let skip_to = self.buf[at + 1..]
            .iter()
            .position(|&b| b == b'<')
            .map_or(self.buf.len(), |p| at + 1 + p);
        let err = self.abandon(skip_to);
        Some(Err(err.unwrap_or(FrameError::Malformed { reason })))
    }

    /// Text between messages, up to `after`: only whitespace and BOMs belong
    /// here. `stray`: the other bytes in it, or `None` if it runs to the end
    /// of what has arrived.
    fn between_messages(&mut self, after: usize, stray: Option<usize>) -> Step {
        let Some(stray) = stray else {
            return Step::Return(self.check_size_while_waiting());
        };
        self.scan = after;
        self.consume_to(after);
        if stray > 0 {
            return Step::Return(Some(Err(FrameError::Garbage { len: stray })));
        }
        Step::Scanned
    }

    fn start_tag(&mut self, before: usize, after: usize, root: bool) -> Step {
        if self.msg_start.is_some() && root {
            return Step::Return(self.truncated_at(before));
        }
        if self.msg_start.is_none() {
            self.open(before);
        }
        self.depth += 1;
        self.scan = after;
        Step::Scanned
    }

    fn empty_tag(&mut self, before: usize, after: usize, root: bool) -> Step {
        if self.msg_start.is_some() && root {
            return Step::Return(self.truncated_at(before));
        }
        self.scan = after;
        if self.msg_start.is_none() {
            self.open(before);
            return Step::Return(self.close(after));
        }
        Step::Scanned
    }

    fn end_tag(&mut self, after: usize) -> Step {
        self.scan = after;
        if self.msg_start.is_none() {
            self.consume_to(after);
            return Step::Return(Some(Err(FrameError::Malformed {
                reason: "closing tag outside any message".into(),
            })));
        }
        self.depth -= 1;
        if self.depth == 0 {
            return Step::Return(self.close(after));
        }
        Step::Scanned
    }

    /// Skipping an oversized message: drop what was scanned of it, so
    /// memory stays bounded however long it is.
    fn drop_scanned(&mut self) {
        self.consume_to(self.scan);
        self.msg_start = Some(self.base);
    }

    fn open(&mut self, at: usize) {
        self.msg_start = Some(at);
        self.depth = 0;
        let name = self.buf[at + 1..]
            .iter()
            .take_while(|b| !b.is_ascii_whitespace() && !b"/>".contains(b));
        self.root.clear();
        self.root.extend(name);
    }

    /// The open message ends at `end`: hand it out (or drop it if oversized).
    fn close(&mut self, end: usize) -> Option<RawMessage> {
        let start = self
            .msg_start
            .take()
            .expect("close is only called with an open message");
        self.depth = 0;
        if self.discarding {
            self.discarding = false;
            self.consume_to(end);
            return self.next_message();
        }
        if end - start > self.max_message {
            self.consume_to(end);
            return Some(Err(FrameError::Oversized {
                limit: self.max_message,
            }));
        }
        let msg = self.buf[start..end].to_vec();
        self.consume_to(end);
        Some(Ok(msg))
    }

    /// The open message cannot be completed: a new message starts at `at`.
    fn truncated_at(&mut self, at: usize) -> Option<RawMessage> {
        let root = String::from_utf8_lossy(&self.root).into_owned();
        let was_discarding = self.discarding;
        self.msg_start = None;
        self.depth = 0;
        self.discarding = false;
        self.consume_to(at);
        if was_discarding {
            // Already reported as oversized.
            return self.next_message();
        }
        Some(Err(FrameError::Truncated { root }))
    }

    /// Drop a broken open message (if any) and the bytes up to `to`.
    fn abandon(&mut self, to: usize) -> Option<FrameError> {
        let was_open = self.msg_start.take().is_some();
        self.depth = 0;
        let was_discarding = std::mem::take(&mut self.discarding);
        self.consume_to(to);
        if was_open && !was_discarding {
            return Some(FrameError::Malformed {
                reason: format!("broken markup inside <{}>", String::from_utf8_lossy(&self.root)),
            });
        }
        None
    }

    /// Waiting for more bytes: enforce the size limit on what is held.
    fn check_size_while_waiting(&mut self) -> Option<RawMessage> {
        let held = self.buf.len() - self.msg_start.unwrap_or(self.scan);
        debug_assert!(self.scan >= self.base);
        if held > self.max_message && !self.discarding {
            if self.msg_start.is_none() {
                // Garbage without a single '<': drop it.
                let (len, end) = (self.buf.len() - self.scan, self.buf.len());
                self.consume_to(end);
                return Some(Err(FrameError::Garbage { len }));
            }
            self.discarding = true;
            self.drop_scanned();
            return Some(Err(FrameError::Oversized {
                limit: self.max_message,
            }));
        }
        if self.discarding {
            self.drop_scanned();
        }
        None
    }

    /// Forget everything before `to`.
    fn consume_to(&mut self, to: usize) {
        let to = to.min(self.buf.len());
        self.base = self.base.max(to);
        self.scan = self.scan.max(self.base);
        if let Some(s) = self.msg_start {
            self.msg_start = Some(s.max(self.base));
        }
        if self.base >= COMPACT_AT && self.base * 2 >= self.buf.len() {
            let n = self.base;
            self.buf.drain(..n);
            self.base = 0;
            self.scan -= n;
            if let Some(s) = self.msg_start {
                self.msg_start = Some(s - n);
            }
        }
    }
}

/// Bytes between messages that are neither whitespace nor part of a BOM.
fn stray_bytes(mut text: &[u8]) -> usize {
    let mut stray = 0;
    while let Some((&b, rest)) = text.split_first() {
        if text.starts_with(BOM) {
            text = &text[3..];
        } else {
            stray += usize::from(!b.is_ascii_whitespace());
            text = rest;
        }
    }
    stray
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Frame `input` pushed in one piece; render each frame as text or error kind.
    fn check(input: &[u8], expected: &[&str]) {
        let mut f = Framer::new(1024);
        f.push(input);
        let got: Vec<String> = std::iter::from_fn(|| f.next_message())
            .map(|r| match r {
                Ok(m) => String::from_utf8_lossy(&m).into_owned(),
                Err(e) => format!("!{}", e.kind()),
            })
            .collect();
        assert_eq!(got, expected);
    }

    #[test]
    fn back_to_back_with_boms_and_declarations() {
        check(
            b"\xEF\xBB\xBF<?xml version=\"1.0\"?>\r\n<a x=\"1\"><b/></a>\n\xEF\xBB\xBF<c/>  <d></d>",
            &["<a x=\"1\"><b/></a>", "<c/>", "<d></d>"],
        );
    }

    #[test]
    fn partial_input_waits() {
        let mut f = Framer::new(1024);
        f.push(b"<alive product=\"1\"");
        assert_eq!(f.next_message(), None);
        f.push(b"/>\xEF\xBB");
        assert_eq!(f.next_message(), Some(Ok(b"<alive product=\"1\"/>".to_vec())));
        assert_eq!(f.next_message(), None, "half a BOM is not garbage yet");
        f.push(b"\xBF<bet_stop/>");
        assert_eq!(f.next_message(), Some(Ok(b"<bet_stop/>".to_vec())));
    }

    #[test]
    fn garbage_between_messages_is_reported_and_skipped() {
        check(
            b"<alive/>\x00\xFFjunk<bet_stop/>",
            &["<alive/>", "!garbage", "<bet_stop/>"],
        );
    }

    #[test]
    fn truncated_message_resyncs_at_next_root() {
        check(
            b"<odds_change><odds><market id=\"1\"><bet_stop event_id=\"x\"/><alive/>",
            &["!truncated", "<bet_stop event_id=\"x\"/>", "<alive/>"],
        );
        check(
            b"<odds_change><odds><?xml version=\"1.0\"?><alive/>",
            &["!truncated", "<alive/>"],
        );
    }

    #[test]
    fn oversized_message_is_dropped_and_framing_continues() {
        let big = format!("<odds_change>{}</odds_change><alive/>", "<m/>".repeat(400));
        check(big.as_bytes(), &["!oversized", "<alive/>"]);
    }

    #[test]
    fn oversized_message_arriving_in_pieces_keeps_memory_bounded() {
        let mut f = Framer::new(1024);
        f.push(b"<odds_change>");
        let mut errors = 0;
        for _ in 0..1000 {
            f.push(b"<market id=\"1\"><outcome id=\"2\"/></market>");
            while let Some(r) = f.next_message() {
                assert!(r.is_err());
                errors += 1;
            }
            assert!(f.buffered() < 4096, "framer holds {} bytes", f.buffered());
        }
        f.push(b"</odds_change><alive/>");
        assert_eq!(f.next_message(), Some(Ok(b"<alive/>".to_vec())));
        assert_eq!(errors, 1, "one oversized message is one error");
    }

    #[test]
    fn stray_closing_tag_is_malformed() {
        check(b"</x><alive/>", &["!malformed", "<alive/>"]);
    }
}
