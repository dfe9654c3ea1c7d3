//! Sans-IO message framer: a byte stream in, whole XML messages out.
//!
//! The feed is a stream of XML documents back to back, each one top-level
//! element, each possibly preceded by a UTF-8 BOM, an XML declaration and
//! whitespace. [`Framer`] hands out each message as the bytes from its start
//! tag to its end (`</root>`, or `/>` of a self-closing root), and every
//! byte it cannot hand out as one [`FrameError`] that says why and how many
//! bytes it dropped. It never does IO and never gives up on the stream.
//!
//! # Resynchronisation
//!
//! A *message start* is `<` + one of [`MESSAGE_ROOTS`] + whitespace, `/` or
//! `>`. Message starts are found by a byte search ([`scan`]) that ignores
//! quick-xml's tokenizer state, and quick-xml only ever reads an open
//! message up to the next message start. So whatever came before (a
//! message cut off inside a tag, a stray or unterminated quote, `<` followed
//! by garbage, mismatched end tags, CDATA, comments, PIs, NUL, invalid
//! UTF-8), a message start ends it: the open message is dropped
//! (`truncated`, or `malformed` if quick-xml had already refused it) and
//! framing restarts there. XML forbids a literal `<` in attribute values,
//! so a message start inside what looks like an open quote is a real new
//! message. The one price: a message start inside a message's CDATA section
//! or comment cuts it (the feed never sends one there). Between messages any
//! element start (`<` + a letter, `_` or `:`) opens a message, so a message
//! type Touchline does not know reaches the parser (`unknown_type`) instead
//! of counting as garbage; inside a message only roots cut it.
//!
//! # Bounds: what happens past each
//!
//! - Size: a message not complete within `max_message` bytes is dropped
//!   (`oversized`) with everything up to the next message start; bytes
//!   between messages that are not a prolog are dropped (`garbage`) once the
//!   next message starts. Either way at most `max_message` bytes (plus the
//!   last read) are held: past that, dropped bytes are only counted.
//! - Time: the framer has no clock. The read loop calls
//!   [`Framer::stalled`] when the feed has been quiet for its stall timeout;
//!   whatever is held is then dropped (`stalled` for a message begun,
//!   `garbage` or the dropping message's own reason otherwise) and framing
//!   restarts with the next byte.
//! - End of stream: [`Framer::close`] does the same with
//!   `incomplete_at_close`.
//!
//! # Counting
//!
//! Each dropped span is reported once, when it ends (at the next message
//! start, a stall or the close), as one [`FrameError`] whose
//! [`FrameError::kind`] is the metric reason and [`FrameError::bytes`] the
//! span's length: `touchline_feed_dropped_messages_total{reason}` and
//! `touchline_feed_dropped_bytes_total{reason}` (for `garbage`, a "message"
//! is one run of bytes between two messages). Framed messages, dropped
//! spans and prologs (whitespace, BOMs, declarations, comments between
//! messages) add up to every byte received.

mod scan;
#[cfg(test)]
mod tests;

use quick_xml::errors::{Error as XmlError, SyntaxError};
use quick_xml::events::Event;
use quick_xml::reader::Reader;

use scan::{Search, Starts, is_prolog, next_start};

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

const BOM: &[u8] = b"\xEF\xBB\xBF";

/// Consumed bytes are dropped from the buffer once there are this many and
/// they are at least half of it.
const COMPACT_AT: usize = 64 * 1024;

/// Root names in error reports are cut to this many bytes (they come from
/// the feed and may be garbage).
const MAX_ROOT_REPORT: usize = 64;

/// Why bytes were dropped, and how many. Each variant is one metric reason.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FrameError {
    #[error("{bytes} bytes between messages that are not a message")]
    Garbage { bytes: usize },
    #[error("message <{root}> cut off by the start of the next one ({bytes} bytes)")]
    Truncated { root: String, bytes: usize },
    #[error("malformed message <{root}>: {reason} ({bytes} bytes)")]
    Malformed { root: String, reason: String, bytes: usize },
    #[error("message <{root}> exceeds {limit} bytes ({bytes} bytes)")]
    Oversized { root: String, limit: usize, bytes: usize },
    #[error("message <{root}> incomplete when the feed went quiet ({bytes} bytes)")]
    Stalled { root: String, bytes: usize },
    #[error("message <{root}> incomplete when the connection closed ({bytes} bytes)")]
    IncompleteAtClose { root: String, bytes: usize },
}

impl FrameError {
    /// Stable label for metrics.
    pub fn kind(&self) -> &'static str {
        match self {
            FrameError::Garbage { .. } => "garbage",
            FrameError::Truncated { .. } => "truncated",
            FrameError::Malformed { .. } => "malformed",
            FrameError::Oversized { .. } => "oversized",
            FrameError::Stalled { .. } => "stalled",
            FrameError::IncompleteAtClose { .. } => "incomplete_at_close",
        }
    }

    /// Bytes of the stream this error dropped.
    pub fn bytes(&self) -> usize {
        match *self {
            FrameError::Garbage { bytes }
            | FrameError::Truncated { bytes, .. }
            | FrameError::Malformed { bytes, .. }
            | FrameError::Oversized { bytes, .. }
            | FrameError::Stalled { bytes, .. }
            | FrameError::IncompleteAtClose { bytes, .. } => bytes,
        }
    }
}

/// What the framer hands out.
pub type RawMessage = Result<Vec<u8>, FrameError>;

/// Where the framer is in the stream. Positions are stream offsets (bytes
/// since the connection opened), so a span's length is known even after
/// its bytes were forgotten.
#[derive(Debug, Clone)]
enum State {
    /// Between messages: the bytes from `run` belong to no message (yet);
    /// no element starts in `run..seek`. `overflow`: the run outgrew the
    /// size bound, its bytes were forgotten and it is garbage.
    Between { run: usize, seek: usize, overflow: bool },
    /// A message opened at `start`; quick-xml read it up to `scan`, where
    /// `depth` elements are open.
    Open { start: usize, scan: usize, depth: usize },
    /// Dropping a broken message that opened at `from` until the next
    /// message start.
    Dropping { from: usize, why: Broken },
}

/// Why a message is being dropped.
#[derive(Debug, Clone)]
enum Broken {
    /// A new document (an XML declaration) began inside it.
    Truncated,
    Malformed(String),
    Oversized,
}

/// How quick-xml's reading of an open message ended.
enum Read {
    /// The root closed at this offset.
    Complete(usize),
    /// The bytes ran out: read up to `scan`, `depth` elements open.
    Partial {
        scan: usize,
        depth: usize,
    },
    Broken(Broken),
}

/// Why the input ended ([`Framer::close`], [`Framer::stalled`]).
#[derive(Debug, Clone, Copy)]
enum End {
    Closed,
    Stalled,
}

/// What one step of the state machine decided.
enum Step {
    Out(RawMessage),
    Again,
    /// Nothing more can be decided until more bytes arrive.
    Wait,
}

/// Incremental framer. Push bytes with [`Framer::push`], then drain
/// [`Framer::next_message`] until it returns `None`. At the end of the
/// stream call [`Framer::close`] (after a quiet spell [`Framer::stalled`])
/// and drain again.
#[derive(Debug)]
pub struct Framer {
    /// Received bytes from stream offset `origin` on; older ones were
    /// handed out or dropped (see [`COMPACT_AT`]).
    buf: Vec<u8>,
    origin: usize,
    state: State,
    /// No message root starts in `..root_seek` after the current message's
    /// start: the search resumes here rather than rescanning.
    root_seek: usize,
    /// Root element name of the open message, for error reports.
    root: Vec<u8>,
    max_message: usize,
    /// Set by `close`/`stalled`: once nothing more can be decided, drop
    /// what is held for this reason.
    end: Option<End>,
}

impl Framer {
    pub fn new(max_message: usize) -> Self {
        Framer {
            buf: Vec::new(),
            origin: 0,
            state: State::Between {
                run: 0,
                seek: 0,
                overflow: false,
            },
            root_seek: 0,
            root: Vec::new(),
            max_message,
            end: None,
        }
    }

    pub fn push(&mut self, bytes: &[u8]) {
        self.buf.extend_from_slice(bytes);
    }

    /// The connection closed: the next drain of [`Framer::next_message`]
    /// hands out what is complete, then drops what is held
    /// (`incomplete_at_close`).
    pub fn close(&mut self) {
        self.end = Some(End::Closed);
    }

    /// The feed has been quiet for the stall timeout: the next drain drops
    /// what is held (`stalled`), and framing restarts with the next byte.
    pub fn stalled(&mut self) {
        self.end = Some(End::Stalled);
    }

    /// Bytes held, for tests of boundedness.
    pub fn buffered(&self) -> usize {
        self.end_offset() - self.keep_from()
    }

    /// The next complete message or error, or `None` until more bytes arrive.
    pub fn next_message(&mut self) -> Option<RawMessage> {
        loop {
            let step = match self.state.clone() {
                State::Between { run, seek, overflow } => self.between(run, seek, overflow),
                State::Open { start, scan, depth } => self.open(start, scan, depth),
                State::Dropping { from, why } => self.dropping(from, why),
            };
            let out = match step {
                Step::Again => continue,
                Step::Out(out) => Some(out),
                Step::Wait => self.end_of_input().map(Err),
            };
            self.compact();
            return out;
        }
    }

    /// Between messages: look for the next element start.
    fn between(&mut self, run: usize, seek: usize, overflow: bool) -> Step {
        match next_start(self.from(seek), Starts::Elements) {
            Search::Start(i) => {
                let start = seek + i;
                // Past the bound a run is garbage, however it arrived.
                let garbage = overflow || start - run > self.max_message || !is_prolog(self.range(run, start));
                self.open_at(start);
                match garbage {
                    true => Step::Out(Err(FrameError::Garbage { bytes: start - run })),
                    false => Step::Again,
                }
            }
            found => {
                let seek = match found {
                    Search::Undecided(i) => seek + i,
                    _ => self.end_offset(),
                };
                // Past the bound the run is garbage whatever follows: forget
                // its bytes, keep counting them.
                let overflow = overflow || seek - run > self.max_message;
                self.state = State::Between { run, seek, overflow };
                Step::Wait
            }
        }
    }

    /// In a message: read it up to the next message start.
    fn open(&mut self, start: usize, scan: usize, depth: usize) -> Step {
        let (limit, cut) = self.next_root(start);
        // Reading past the bound is of no use: the message is oversized.
        let stop = limit.min(start.saturating_add(self.max_message).saturating_add(1));
        let bytes = &self.buf[scan - self.origin..stop - self.origin];
        let read = match read(bytes, depth, &mut self.root) {
            Read::Complete(end) => Read::Complete(scan + end),
            Read::Partial { scan: at, depth } => Read::Partial { scan: scan + at, depth },
            broken => broken,
        };
        match read {
            Read::Complete(end) => {
                self.state = State::Between {
                    run: end,
                    seek: end,
                    overflow: false,
                };
                if end - start > self.max_message {
                    return Step::Out(Err(self.oversized(end - start)));
                }
                Step::Out(Ok(self.range(start, end).to_vec()))
            }
            Read::Partial { .. } if stop - start > self.max_message => self.drop_from(start, Broken::Oversized),
            Read::Partial { .. } if cut => {
                self.resume_at(limit);
                Step::Out(Err(FrameError::Truncated {
                    root: self.root_name(),
                    bytes: limit - start,
                }))
            }
            Read::Partial { scan, depth } => {
                self.state = State::Open { start, scan, depth };
                Step::Wait
            }
            Read::Broken(why) => self.drop_from(start, why),
        }
    }

    /// Dropping a broken message: skip to the next message start.
    fn dropping(&mut self, from: usize, why: Broken) -> Step {
        let (limit, cut) = self.next_root(from);
        if !cut {
            return Step::Wait;
        }
        let err = self.broken(why, limit - from);
        self.open_at(limit);
        Step::Out(Err(err))
    }

    /// The message opened at `from` is broken: drop it up to the next
    /// message start (reported then, with its length).
    fn drop_from(&mut self, from: usize, why: Broken) -> Step {
        self.state = State::Dropping { from, why };
        Step::Again
    }

    /// The next message start after the one at `start`: `(offset, true)`, or
    /// `(where the search stopped, false)`: the end of the bytes, or a `<`
    /// that may still become one.
    fn next_root(&mut self, start: usize) -> (usize, bool) {
        let from = self.root_seek.max(start + 1);
        let (at, cut) = match next_start(self.from(from), Starts::Roots) {
            Search::Start(i) => (from + i, true),
            Search::Undecided(i) => (from + i, false),
            Search::Nothing => (self.end_offset(), false),
        };
        self.root_seek = at;
        (at, cut)
    }

    fn open_at(&mut self, start: usize) {
        self.state = State::Open {
            start,
            scan: start,
            depth: 0,
        };
        self.root_seek = start + 1;
        self.root.clear();
    }

    /// Framing resumes between messages at `at` (a message start).
    fn resume_at(&mut self, at: usize) {
        self.state = State::Between {
            run: at,
            seek: at,
            overflow: false,
        };
    }

    /// The input ended ([`Framer::close`], [`Framer::stalled`]): drop what is
    /// held, report it, and start afresh after it.
    fn end_of_input(&mut self) -> Option<FrameError> {
        let end = self.end.take()?;
        let to = self.end_offset();
        let incomplete = |root: String, bytes| match end {
            End::Closed => FrameError::IncompleteAtClose { root, bytes },
            End::Stalled => FrameError::Stalled { root, bytes },
        };
        let err = match self.state.clone() {
            State::Between { run, .. } if run == to => None,
            State::Between { run, seek, overflow } => {
                if overflow || !is_prolog(self.range(run, seek)) {
                    Some(FrameError::Garbage { bytes: to - run })
                } else {
                    // A `<` that may have begun a message.
                    (seek < to).then(|| incomplete(String::new(), to - run))
                }
            }
            State::Open { start, .. } => Some(incomplete(self.root_name(), to - start)),
            State::Dropping { from, why } => Some(self.broken(why, to - from)),
        };
        self.resume_at(to);
        self.root_seek = to;
        err
    }

    fn broken(&self, why: Broken, bytes: usize) -> FrameError {
        let root = self.root_name();
        match why {
            Broken::Truncated => FrameError::Truncated { root, bytes },
            Broken::Malformed(reason) => FrameError::Malformed { root, reason, bytes },
            Broken::Oversized => self.oversized(bytes),
        }
    }

    fn oversized(&self, bytes: usize) -> FrameError {
        FrameError::Oversized {
            root: self.root_name(),
            limit: self.max_message,
            bytes,
        }
    }

    fn root_name(&self) -> String {
        String::from_utf8_lossy(&self.root).into_owned()
    }

    fn end_offset(&self) -> usize {
        self.origin + self.buf.len()
    }

    fn from(&self, at: usize) -> &[u8] {
        &self.buf[at - self.origin..]
    }

    fn range(&self, from: usize, to: usize) -> &[u8] {
        &self.buf[from - self.origin..to - self.origin]
    }

    /// The first stream offset whose byte may still be needed.
    fn keep_from(&self) -> usize {
        match self.state {
            State::Between {
                seek, overflow: true, ..
            } => seek,
            State::Between { run, .. } => run,
            State::Open { start, .. } => start,
            State::Dropping { .. } => self.root_seek,
        }
    }

    /// Forget bytes no longer needed, in bulk so framing stays linear.
    fn compact(&mut self) {
        let n = self.keep_from() - self.origin;
        if n >= COMPACT_AT && n * 2 >= self.buf.len() {
            self.buf.drain(..n);
            self.origin += n;
        }
    }
}

/// Read an open message's `bytes` with quick-xml from a point where `depth`
/// elements are open (0: the message's start tag). Offsets are into
/// `bytes`. Sets `root` from the start tag.
fn read(mut bytes: &[u8], mut depth: usize, root: &mut Vec<u8>) -> Read {
    // quick-xml drops a BOM at the start of its input without counting it;
    // inside a message it is text.
    let mut skipped = 0;
    while bytes.starts_with(BOM) {
        (bytes, skipped) = (&bytes[BOM.len()..], skipped + BOM.len());
    }
    let mut reader = Reader::from_reader(bytes);
    let cfg = reader.config_mut();
    // Reading resumes mid-message, without the open tags: depth is counted
    // here and names are the parser's business. Entities too.
    cfg.check_end_names = false;
    cfg.allow_unmatched_ends = true;
    cfg.allow_dangling_amp = true;
    let mut done = 0;
    loop {
        let event = reader.read_event();
        let after = reader.buffer_position() as usize;
        match event {
            Ok(Event::Start(e)) => {
                if depth == 0 {
                    set_root(root, e.name().as_ref());
                }
                depth += 1;
            }
            Ok(Event::Empty(e)) if depth == 0 => {
                set_root(root, e.name().as_ref());
                return Read::Complete(skipped + after);
            }
            Ok(Event::End(_)) if depth == 0 => {
                return Read::Broken(Broken::Malformed("end tag before any start tag".into()));
            }
            Ok(Event::End(_)) => {
                depth -= 1;
                if depth == 0 {
                    return Read::Complete(skipped + after);
                }
            }
            Ok(Event::Decl(_)) => return Read::Broken(Broken::Truncated),
            Ok(Event::Eof) => break,
            Ok(_) => {}
            Err(XmlError::Syntax(
                SyntaxError::UnclosedTag
                | SyntaxError::UnclosedComment
                | SyntaxError::UnclosedCData
                | SyntaxError::UnclosedPIOrXmlDecl
                | SyntaxError::UnclosedDoctype,
            )) => break,
            // `<!` at the very end: what follows decides.
            Err(XmlError::Syntax(SyntaxError::InvalidBangMarkup))
                if bytes.len() - reader.error_position() as usize <= 2 =>
            {
                break;
            }
            Err(e) => return Read::Broken(Broken::Malformed(e.to_string())),
        }
        done = after;
    }
    Read::Partial {
        scan: skipped + done,
        depth,
    }
}

fn set_root(root: &mut Vec<u8>, name: &[u8]) {
    root.clear();
    root.extend_from_slice(&name[..name.len().min(MAX_ROOT_REPORT)]);
}
