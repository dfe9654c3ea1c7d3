//! What every fuzz input must satisfy: a mutated input followed by one valid
//! sample message, framed and parsed.
//!
//! - the framer and parser never panic (caught by the caller);
//! - the valid message after the input is the last frame, byte-identical,
//!   and parses as it does alone: no corruption before it costs it;
//! - framing the stream whole and in the given pieces gives the same
//!   frames and drops (the framer decides nothing on where reads end);
//! - framed and dropped bytes never exceed the stream; nothing is held
//!   after the close.

use touchline::feed::frame::{Framer, RawMessage};
use touchline::feed::parse::{FeedMessage, ParseError, parse};

/// The largest message size bound tried (each execution draws one between
/// the valid message's size and this, so junk is often oversized).
pub const LIMIT: usize = 96 * 1024;

/// A valid message to append: its file, its framed bytes, its parse.
pub struct Valid {
    pub name: String,
    pub file: Vec<u8>,
    pub element: Vec<u8>,
    pub parsed: Result<FeedMessage, ParseError>,
}

impl Valid {
    pub fn new(name: String, file: Vec<u8>) -> Valid {
        let start = file
            .windows(2)
            .position(|w| w[0] == b'<' && w[1].is_ascii_alphabetic())
            .unwrap_or(0);
        let end = file.iter().rposition(|&b| b == b'>').map_or(file.len(), |i| i + 1);
        let element = file[start..end].to_vec();
        let parsed = parse(&element);
        Valid {
            name,
            file,
            element,
            parsed,
        }
    }
}

/// Check `input` + `valid`, read in pieces cut at `cuts` (sorted), with
/// messages bounded to `limit` bytes (at least the valid one's size).
/// Returns the reasons of the drops (to show what the inputs exercised).
pub fn check(input: &[u8], valid: &Valid, cuts: &[usize], limit: usize) -> Result<Vec<&'static str>, String> {
    let mut stream = input.to_vec();
    stream.extend_from_slice(&valid.file);
    let whole = frame(&stream, &[], limit)?;
    let pieces = frame(&stream, cuts, limit)?;
    if whole != pieces {
        return Err(format!("reads cut at {cuts:?} frame differently from one read"));
    }
    let frames: Vec<&Vec<u8>> = whole.iter().filter_map(|r| r.as_ref().ok()).collect();
    for f in &frames {
        let _ = parse(f);
    }
    if frames.last().map(|f| f.as_slice()) != Some(valid.element.as_slice()) {
        return Err(format!(
            "the valid {} after the input is not the last frame: {} frames, drops {:?}",
            valid.name,
            frames.len(),
            whole.iter().filter_map(|r| r.as_ref().err()).collect::<Vec<_>>()
        ));
    }
    if frames.last().map(|f| parse(f)).as_ref() != Some(&valid.parsed) {
        return Err(format!("the valid {} parses differently after the input", valid.name));
    }
    let framed: usize = frames.iter().map(|f| f.len()).sum();
    let dropped: usize = whole.iter().filter_map(|r| r.as_ref().err()).map(|e| e.bytes()).sum();
    if framed + dropped > stream.len() {
        return Err(format!(
            "{framed} bytes framed + {dropped} dropped > {} received",
            stream.len()
        ));
    }
    Ok(whole
        .iter()
        .filter_map(|r| r.as_ref().err())
        .map(|e| e.kind())
        .collect())
}

/// Everything the framer hands out for `stream` read in pieces, then closed.
fn frame(stream: &[u8], cuts: &[usize], limit: usize) -> Result<Vec<RawMessage>, String> {
    let mut f = Framer::new(limit);
    let mut out = Vec::new();
    let mut at = 0;
    for &cut in cuts.iter().chain(std::iter::once(&stream.len())) {
        f.push(&stream[at..cut]);
        at = cut;
        out.extend(std::iter::from_fn(|| f.next_message()));
    }
    f.close();
    out.extend(std::iter::from_fn(|| f.next_message()));
    match f.buffered() {
        0 => Ok(out),
        n => Err(format!("{n} bytes held after the close")),
    }
}
