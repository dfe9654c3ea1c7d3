//! Which partition a match belongs to, and the NATS subjects of the
//! cluster. Pure: no IO.
//!
//! The partition of a match is part of the wire contract: every node, of
//! every version, must compute the same one, or two nodes would apply the
//! same match. It is FNV-1a 64 over the match id's UTF-8 bytes, modulo the
//! partition count (`--partitions`, default 64, the same on every node of a
//! cluster). Changing the hash or the count re-partitions the events
//! already in `TL_EVENTS`: that needs a migration, not a release.
//!
//! Subjects (NATS tokens are separated by `.`; `*` and `>` are wildcards;
//! whitespace ends a subject):
//! - `tl.ev.<p>.<match>`: a match event, in stream `TL_EVENTS`;
//! - `tl.fo.<match>`: a frame as its owner publishes it, into `TL_FRAMES`
//!   (fenced by the partition's barrier, [`super::barrier`]);
//! - `tl.fr.<match>`: the frames `TL_FRAMES` stored, republished for the
//!   match's subscribers;
//! - `tl.fb.<p>`: partition `p`'s barrier, in `TL_FRAMES`;
//! - `tl.bet.<p>`: a bet sent to partition `p`'s owner (request/reply).
//!
//! `<match>` is the match id as one token: bytes in `A-Z a-z 0-9 : _ -`
//! stand for themselves (so `sr:match:123` reads as itself), every other
//! byte is `%XX` (upper-case hex; `%` itself too), so the mapping is
//! reversible and no id can add a token or a wildcard.

use std::borrow::Cow;
use std::fmt::Write;

use super::ClusterError;

/// Partitions when `--partitions` is not given.
pub const DEFAULT_PARTITIONS: u32 = 64;

/// Upper bound on `--partitions`: one lease per partition is renewed every
/// `ttl/3` by its owner; past a few thousand that is the bucket's load.
pub const MAX_PARTITIONS: u32 = 4096;

/// Longest match id that makes a subject (the feed's ids are ~20 bytes;
/// escaped, this stays far below NATS's control-line limit).
pub const MAX_MATCH_ID_BYTES: usize = 256;

/// The partition count of a cluster.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Partitions {
    count: u32,
}

impl Default for Partitions {
    fn default() -> Self {
        Partitions {
            count: DEFAULT_PARTITIONS,
        }
    }
}

impl Partitions {
    pub fn new(count: u32) -> Result<Partitions, ClusterError> {
        if (1..=MAX_PARTITIONS).contains(&count) {
            Ok(Partitions { count })
        } else {
            Err(ClusterError::Config(format!(
                "partitions {count}: 1 to {MAX_PARTITIONS}"
            )))
        }
    }

    pub fn count(self) -> u32 {
        self.count
    }

    /// Every partition, `0..count`.
    pub fn all(self) -> std::ops::Range<u32> {
        0..self.count
    }

    /// The partition of `match_id`: FNV-1a 64 of its UTF-8 bytes, modulo
    /// the count (the wire contract: see the module doc).
    pub fn partition_of(self, match_id: &str) -> u32 {
        // The remainder is below `count`, a u32.
        (fnv1a64(match_id.as_bytes()) % u64::from(self.count)) as u32
    }
}

/// FNV-1a, 64 bits: tiny, stable, defined by its two constants alone.
pub fn fnv1a64(bytes: &[u8]) -> u64 {
    const OFFSET: u64 = 0xcbf2_9ce4_8422_2325;
    const PRIME: u64 = 0x0000_0100_0000_01b3;
    bytes
        .iter()
        .fold(OFFSET, |h, &b| (h ^ u64::from(b)).wrapping_mul(PRIME))
}

/// `match_id` as one subject token (see the module doc).
pub fn token(match_id: &str) -> Result<Cow<'_, str>, ClusterError> {
    if match_id.is_empty() || match_id.len() > MAX_MATCH_ID_BYTES {
        return Err(ClusterError::MatchId(match_id.to_owned()));
    }
    if match_id.bytes().all(plain) {
        return Ok(Cow::Borrowed(match_id));
    }
    let mut out = String::with_capacity(match_id.len() * 3);
    for b in match_id.bytes() {
        if plain(b) {
            out.push(char::from(b));
        } else {
            // Writing to a String cannot fail.
            let _ = write!(out, "%{b:02X}");
        }
    }
    Ok(Cow::Owned(out))
}

/// The match id a token stands for; `None` if it is not one [`token`]
/// makes.
pub fn match_id(token: &str) -> Option<String> {
    let mut bytes = Vec::with_capacity(token.len());
    let mut rest = token.as_bytes();
    while let Some((&b, tail)) = rest.split_first() {
        if b == b'%' {
            let hex = tail.get(..2)?;
            let hex = std::str::from_utf8(hex).ok()?;
            let v = u8::from_str_radix(hex, 16).ok()?;
            // Only what `token` escapes, in its spelling: one id, one token.
            if plain(v) || hex.bytes().any(|h| h.is_ascii_lowercase()) {
                return None;
            }
            bytes.push(v);
            rest = &tail[2..];
        } else if plain(b) {
            bytes.push(b);
            rest = tail;
        } else {
            return None;
        }
    }
    String::from_utf8(bytes).ok().filter(|s| !s.is_empty())
}

fn plain(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b':' | b'_' | b'-')
}

/// `tl.ev.<p>.<match>`: where a match's events are published.
pub fn event_subject(partition: u32, match_id: &str) -> Result<String, ClusterError> {
    Ok(format!("tl.ev.{partition}.{}", token(match_id)?))
}

/// `tl.ev.<p>.>`: every event of partition `p` (its owner's consumer).
pub fn partition_events(partition: u32) -> String {
    format!("tl.ev.{partition}.>")
}

/// `tl.fr.<match>`: where a match's stored frames reach its subscribers
/// (republished by `TL_FRAMES`).
pub fn frame_subject(match_id: &str) -> Result<String, ClusterError> {
    Ok(format!("tl.fr.{}", token(match_id)?))
}

/// `tl.fo.<match>`: where a match's owner publishes its frames, into
/// `TL_FRAMES`.
pub fn frame_in_subject(match_id: &str) -> Result<String, ClusterError> {
    Ok(format!("tl.fo.{}", token(match_id)?))
}

/// `tl.fb.<p>`: partition `p`'s frame barrier in `TL_FRAMES`.
pub fn barrier_subject(partition: u32) -> String {
    format!("tl.fb.{partition}")
}

/// `tl.snap.<p>`: requests for a snapshot of one of partition `p`'s
/// matches (the match id is the payload), answered by its owner.
pub fn snapshot_subject(partition: u32) -> String {
    format!("tl.snap.{partition}")
}

/// `tl.bet.<p>`: bets for partition `p`'s matches, to its owner.
pub fn bet_subject(partition: u32) -> String {
    format!("tl.bet.{partition}")
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Pinned: these values are the wire contract. If this test fails, the
    /// partition of every match in every existing cluster has moved.
    #[test]
    fn the_hash_is_pinned() {
        assert_eq!(fnv1a64(b""), 0xcbf2_9ce4_8422_2325);
        assert_eq!(fnv1a64(b"a"), 0xaf63_dc4c_8601_ec8c);
        assert_eq!(fnv1a64(b"sr:match:123"), 0x9aae_d0c3_2e68_5829);
        let p = Partitions::default();
        for (id, expected) in [("sr:match:123", 41), ("sr:match:9999999", 12), ("sr:stage:42", 28)] {
            assert_eq!(p.partition_of(id), expected, "{id}");
        }
        assert_eq!(Partitions::new(1).expect("1 is valid").partition_of("anything"), 0);
    }

    #[test]
    fn partitions_spread_the_matches() {
        let p = Partitions::default();
        let mut counts = [0u32; 64];
        for i in 0..64_000 {
            counts[p.partition_of(&format!("sr:match:{i}")) as usize] += 1;
        }
        let (min, max) = (counts.iter().min(), counts.iter().max());
        assert!(min >= Some(&800) && max <= Some(&1200), "{min:?}..{max:?}");
    }

    #[test]
    fn the_count_is_bounded() {
        assert!(Partitions::new(0).is_err());
        assert!(Partitions::new(MAX_PARTITIONS + 1).is_err());
        assert_eq!(Partitions::new(7).map(|p| p.all().count()).ok(), Some(7));
    }

    fn check(id: &str, expected: &str) {
        let t = token(id).expect("a valid id");
        assert_eq!(t, expected, "token of {id:?}");
        assert_eq!(match_id(&t).as_deref(), Some(id), "round trip of {id:?}");
    }

    #[test]
    fn match_ids_become_one_token() {
        check("sr:match:123", "sr:match:123");
        check("a-b_c", "a-b_c");
        check("a.b", "a%2Eb");
        check("a b", "a%20b");
        check("*", "%2A");
        check(">", "%3E");
        check("50%", "50%25");
        check("x\ty\r\n", "x%09y%0D%0A");
        check("é", "%C3%A9");
        check("$SYS", "%24SYS");
    }

    #[test]
    fn bad_ids_and_tokens_are_refused() {
        assert!(token("").is_err());
        assert!(token(&"x".repeat(MAX_MATCH_ID_BYTES + 1)).is_err());
        for t in ["", "a.b", "a%", "a%2", "a%zz", "%61", "%2e", "a b", "%FF"] {
            assert_eq!(match_id(t), None, "{t:?}");
        }
    }

    #[test]
    fn subjects() {
        assert_eq!(
            event_subject(41, "sr:match:123").ok().as_deref(),
            Some("tl.ev.41.sr:match:123")
        );
        assert_eq!(event_subject(3, "a.b").ok().as_deref(), Some("tl.ev.3.a%2Eb"));
        assert_eq!(partition_events(41), "tl.ev.41.>");
        assert_eq!(frame_subject("sr:match:1").ok().as_deref(), Some("tl.fr.sr:match:1"));
        assert_eq!(frame_in_subject("sr:match:1").ok().as_deref(), Some("tl.fo.sr:match:1"));
        assert_eq!(barrier_subject(7), "tl.fb.7");
        assert_eq!(bet_subject(7), "tl.bet.7");
        // No id adds a token or a wildcard.
        for id in ["a.b.c", "*", ">", "a >", "..", "a.*.>"] {
            let s = frame_subject(id).expect("valid id");
            assert_eq!(s.split('.').count(), 3, "{s}");
            assert!(!s.contains(['*', '>', ' ']), "{s}");
        }
    }
}
