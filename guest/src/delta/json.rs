//! A [`Delta`]'s JSON, byte for byte what serde_json writes for its
//! derived `Serialize`, with the parts every odds change repeats by the
//! hundred (a known market's [`MarketPart`], a known outcome's
//! [`OutcomeDelta::Part`]) written by hand: their keys are literals, where
//! serde_json escapes every key of every object at run time (its string
//! escaping was 3.3% of the server's samples in the pipeline at 1,000
//! matches, the delta's rendering 8.9%). Values still go through
//! serde_json (strings escaped, numbers formatted, non-finite odds `null`),
//! and so do the rare parts (a whole new market or outcome, the summary, a
//! settlement's result, cancels). `tests` holds the two renderings equal.

use serde::Serialize;

use super::{Delta, MarketDelta, MarketPart, OutcomeDelta};

/// The delta's JSON, as `serde_json::to_string(delta)` would give it.
pub fn to_string(delta: &Delta<'_>) -> Result<String, serde_json::Error> {
    let mut out = Vec::with_capacity(256);
    write_delta(&mut out, delta)?;
    Ok(into_string(out))
}

/// The delta with one more field at its end, as serde_json writes a
/// struct that flattens the delta beside that field (the `v2` guest's
/// `events_seen`).
#[cfg(any(feature = "v2", test))]
pub fn to_string_with(delta: &Delta<'_>, key: &str, value: u64) -> Result<String, serde_json::Error> {
    let mut out = Vec::with_capacity(256);
    write_delta(&mut out, delta)?;
    out.pop(); // the closing brace
    out.push(b',');
    value_to(&mut out, key)?;
    out.push(b':');
    value_to(&mut out, &value)?;
    out.push(b'}');
    Ok(into_string(out))
}

/// The JSON written, as a string, without checking it again.
#[allow(unsafe_code)]
fn into_string(out: Vec<u8>) -> String {
    // SAFETY: every byte came from serde_json's writer (valid UTF-8, as
    // its own `to_string` relies on) or from the ASCII literals here.
    unsafe { String::from_utf8_unchecked(out) }
}

fn value_to<T: Serialize + ?Sized>(out: &mut Vec<u8>, value: &T) -> Result<(), serde_json::Error> {
    serde_json::to_writer(&mut *out, value)
}

fn write_delta(out: &mut Vec<u8>, d: &Delta<'_>) -> Result<(), serde_json::Error> {
    out.extend_from_slice(b"{\"event\":");
    value_to(out, d.event)?;
    out.extend_from_slice(b",\"timestamp\":");
    value_to(out, &d.timestamp)?;
    if let Some(summary) = &d.summary {
        out.extend_from_slice(b",\"summary\":");
        value_to(out, summary)?;
    }
    out.extend_from_slice(b",\"markets\":[");
    for (i, m) in d.markets.iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        match m {
            MarketDelta::Whole(view) => value_to(out, view)?,
            MarketDelta::Part(part) => write_part(out, part)?,
        }
    }
    out.extend_from_slice(b"]}");
    Ok(())
}

/// `,"key":value` when the field changed (`Some`); a `Some(None)` is `null`.
fn field<T: Serialize>(out: &mut Vec<u8>, key: &[u8], value: &Option<T>) -> Result<(), serde_json::Error> {
    if let Some(v) = value {
        out.push(b',');
        out.extend_from_slice(key);
        value_to(out, v)?;
    }
    Ok(())
}

fn write_part(out: &mut Vec<u8>, p: &MarketPart<'_>) -> Result<(), serde_json::Error> {
    out.extend_from_slice(b"{\"id\":");
    value_to(out, &p.id)?;
    out.extend_from_slice(b",\"specifiers\":");
    value_to(out, p.specifiers)?;
    field(out, b"\"status\":", &p.status)?;
    field(out, b"\"favourite\":", &p.favourite)?;
    field(out, b"\"status_before_resolution\":", &p.status_before_resolution)?;
    field(out, b"\"void_reason\":", &p.void_reason)?;
    field(out, b"\"certainty\":", &p.certainty)?;
    field(out, b"\"product\":", &p.product)?;
    field(out, b"\"cancels\":", &p.cancels)?;
    if !p.outcomes.is_empty() {
        out.extend_from_slice(b",\"outcomes\":[");
        for (i, o) in p.outcomes.iter().enumerate() {
            if i > 0 {
                out.push(b',');
            }
            write_outcome(out, o)?;
        }
        out.push(b']');
    }
    out.push(b'}');
    Ok(())
}

fn write_outcome(out: &mut Vec<u8>, o: &OutcomeDelta<'_>) -> Result<(), serde_json::Error> {
    match o {
        OutcomeDelta::Whole(whole) => value_to(out, whole),
        OutcomeDelta::Part {
            id,
            odds,
            active,
            result,
        } => {
            out.extend_from_slice(b"{\"id\":");
            value_to(out, id)?;
            field(out, b"\"odds\":", odds)?;
            field(out, b"\"active\":", active)?;
            field(out, b"\"result\":", result)?;
            out.push(b'}');
            Ok(())
        }
    }
}
