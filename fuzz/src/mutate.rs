//! The mutator: corpus entries (the real samples) changed the ways issue 15
//! measured, by a seeded PRNG so a run is repeatable from its seed.
//!
//! Pure: it takes the corpus and the PRNG and returns bytes; it never
//! frames, parses or touches a file.

use rand::Rng;
use rand_chacha::ChaCha8Rng;

/// Markup fragments a broken feed produces, inserted whole.
const TOKENS: &[&[u8]] = &[
    b"\"",
    b"'",
    b"<",
    b">",
    b"/>",
    b"&",
    b"&amp;",
    b"&#x0;",
    b"\x00",
    b"\xC3\x28",
    b"\xFF\xFE",
    b"\xED\xA0\x80",
    b"\x80",
    b"\xEF\xBB\xBF",
    b"<?xml version=\"1.0\" encoding=\"UTF-8\"?>",
    b"<![CDATA[",
    b"]]>",
    b"<!--",
    b"-->",
    b"<?pi ",
    b"?>",
    b"<!DOCTYPE x [",
    b"</odds>",
    b"</market></odds_change>",
    b"</alive>",
    b"</>",
    b"<odds_chan",
    b"<odds_change ",
    b"<bet_stop",
    b"<alive product=\"1",
    b"<market id=\"1\">",
    b"<outcome id=\"1\" odds=\"",
    b"\r\n",
];

/// A corpus entry with one to six mutations stacked.
pub fn mutate(corpus: &[Vec<u8>], rng: &mut ChaCha8Rng) -> Vec<u8> {
    let mut bytes = pick(corpus, rng).clone();
    if rng.random_bool(0.1) {
        bytes.extend_from_slice(pick(corpus, rng));
    }
    for _ in 0..rng.random_range(1..=6) {
        once(&mut bytes, corpus, rng);
    }
    bytes
}

fn pick<'a>(corpus: &'a [Vec<u8>], rng: &mut ChaCha8Rng) -> &'a Vec<u8> {
    &corpus[rng.random_range(0..corpus.len())]
}

/// A random range of `bytes` (possibly empty).
fn range(len: usize, rng: &mut ChaCha8Rng) -> std::ops::Range<usize> {
    let a = rng.random_range(0..=len);
    let b = rng.random_range(a..=len.min(a + 256));
    a..b
}

fn once(bytes: &mut Vec<u8>, corpus: &[Vec<u8>], rng: &mut ChaCha8Rng) {
    let len = bytes.len();
    let at = rng.random_range(0..=len);
    match rng.random_range(0..9) {
        // Bit flip.
        0 if len > 0 => {
            let i = rng.random_range(0..len);
            bytes[i] ^= 1 << rng.random_range(0..8);
        }
        // Byte set.
        1 if len > 0 => {
            let i = rng.random_range(0..len);
            bytes[i] = rng.random();
        }
        // Truncation.
        2 => bytes.truncate(at),
        // Deletion of a range.
        3 => {
            bytes.drain(range(len, rng));
        }
        // A range repeated.
        4 => {
            let copy = bytes[range(len, rng)].to_vec();
            bytes.splice(at..at, copy);
        }
        // Splice: a range of another entry.
        5 => {
            let other = pick(corpus, rng);
            let copy = other[range(other.len(), rng)].to_vec();
            bytes.splice(at..at, copy);
        }
        // Random bytes.
        6 => {
            let n = rng.random_range(1..16);
            let noise: Vec<u8> = (0..n).map(|_| rng.random()).collect();
            bytes.splice(at..at, noise);
        }
        // A broken-markup token (twice as likely as the rest).
        _ => {
            let token = TOKENS[rng.random_range(0..TOKENS.len())];
            bytes.splice(at..at, token.iter().copied());
        }
    }
}
