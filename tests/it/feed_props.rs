//! Property: broken input between valid feed messages never costs a valid
//! message (the framer's resynchronisation rule, `feed::frame`).
//!
//! Valid messages are the real samples (every file in `tests/data/*/messages`,
//! BOM and declaration included); corruptions are the classes of issue 15.

use std::sync::LazyLock;

use proptest::prelude::*;
use touchline::feed::frame::Framer;

use crate::support::all_samples;

/// Large enough for every sample (the largest is 81,428 bytes), small
/// enough that junk running into the next message can be oversized.
const LIMIT: usize = 96 * 1024;

/// Each sample file, and its message: the bytes from the root's `<` to the
/// last `>` (what the framer must hand out for it).
struct Sample {
    file: Vec<u8>,
    element: std::ops::Range<usize>,
}

impl Sample {
    fn element(&self) -> &[u8] {
        &self.file[self.element.clone()]
    }
}

static SAMPLES: LazyLock<Vec<Sample>> = LazyLock::new(|| {
    all_samples()
        .into_iter()
        .map(|(rel, file)| {
            let start = (0..file.len())
                .find(|&i| file[i] == b'<' && file.get(i + 1).is_some_and(u8::is_ascii_alphabetic))
                .unwrap_or_else(|| panic!("{rel}: no root"));
            let end = file.iter().rposition(|&b| b == b'>').expect("a closing >") + 1;
            Sample {
                file,
                element: start..end,
            }
        })
        .collect()
});

fn sample() -> impl Strategy<Value = usize> {
    0..SAMPLES.len()
}

/// Bytes that are not a message, or not a whole one.
fn corruption() -> impl Strategy<Value = Vec<u8>> {
    let tokens: Vec<&'static [u8]> = vec![
        b"\"",
        b"'",
        b"<",
        b"&",
        b"&amp",
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
        b"<!DOCTYPE x",
        b"</odds>",
        b"</market></odds_change>",
        b"</alive>",
        b"<odds_chan",
        b"<odds_change ",
        b"<odds_change event_id=\"sr:match:1 product=\"1\">",
        b"<bet_stop",
        b"<alive product=\"1",
        b"<market id=\"1\">",
        b"/>",
        b">",
        b"\r\n",
    ];
    prop_oneof![
        // Random bytes.
        prop::collection::vec(any::<u8>(), 0..64),
        // A run of the tokens and random bytes.
        prop::collection::vec(
            prop_oneof![
                prop::sample::select(tokens).prop_map(<[u8]>::to_vec),
                prop::collection::vec(any::<u8>(), 1..8),
            ],
            1..8
        )
        .prop_map(|parts| parts.concat()),
        // `<` + garbage.
        prop::collection::vec(any::<u8>(), 1..16).prop_map(|g| [&b"<"[..], &g].concat()),
        // A sample cut off anywhere before its end.
        (sample(), any::<prop::sample::Index>()).prop_map(|(s, at)| {
            let s = &SAMPLES[s];
            s.file[..at.index(s.element.end)].to_vec()
        }),
        // A sample cut off, with a stray quote or `<` inserted before the cut.
        (
            sample(),
            any::<prop::sample::Index>(),
            any::<prop::sample::Index>(),
            prop::sample::select(vec![b'"', b'<', b'\'', 0])
        )
            .prop_map(|(s, cut, at, byte)| {
                let s = &SAMPLES[s];
                let mut bytes = s.file[..cut.index(s.element.end)].to_vec();
                bytes.insert(at.index(bytes.len() + 1), byte);
                bytes
            }),
        // A whole sample with one byte changed.
        (sample(), any::<prop::sample::Index>(), any::<u8>()).prop_map(|(s, at, byte)| {
            let mut bytes = SAMPLES[s].file.clone();
            let at = at.index(bytes.len());
            bytes[at] = byte;
            bytes
        }),
    ]
    // A corruption must not hold a valid message whole: then it would be
    // one, and framing it would be right.
    .prop_filter("holds a whole sample message", |c| {
        SAMPLES.iter().all(|s| memchr::memmem::find(c, s.element()).is_none())
    })
}

/// One stretch of the stream: corruptions, then a valid message.
fn stretch() -> impl Strategy<Value = (Vec<Vec<u8>>, usize)> {
    (prop::collection::vec(corruption(), 0..3), sample())
}

/// Frame `stream` read in pieces cut at `cuts`, then closed: every frame's
/// bytes, and the total of the bytes reported dropped.
fn frame(stream: &[u8], cuts: &[usize]) -> (Vec<Vec<u8>>, usize) {
    let mut f = Framer::new(LIMIT);
    let (mut frames, mut dropped) = (Vec::new(), 0);
    let mut take = |f: &mut Framer| {
        while let Some(r) = f.next_message() {
            match r {
                Ok(m) => frames.push(m),
                Err(e) => dropped += e.bytes(),
            }
        }
    };
    let mut at = 0;
    for &cut in cuts {
        f.push(&stream[at..cut]);
        at = cut;
        take(&mut f);
    }
    f.push(&stream[at..]);
    take(&mut f);
    f.close();
    take(&mut f);
    assert_eq!(f.buffered(), 0, "nothing held after the close");
    (frames, dropped)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    /// For a stream `c₀ v₁ c₁ v₂ … vₙ cₙ`, where each `vᵢ` is a whole sample
    /// file (its BOM and declaration included) and each `cᵢ` zero or more
    /// corruptions (random bytes; the tokens: quotes, `<`, `&`, NUL,
    /// invalid UTF-8, BOMs, declarations, CDATA, comments, PIs, DOCTYPEs,
    /// mismatched end tags, partial roots, unterminated attribute values;
    /// `<` + garbage; a sample cut off before its last byte, possibly with a
    /// stray quote or `<` inserted; a sample with one byte changed), none of
    /// which — alone or run together with its neighbours — contains a
    /// sample's message whole, read in pieces cut at arbitrary points and
    /// then closed:
    ///
    /// - the frames byte-equal to some sample's message are exactly the
    ///   messages of `v₁ … vₙ`, in order: none lost, altered, duplicated or
    ///   reordered (the corruptions may add other frames and drops);
    /// - framed and dropped bytes together never exceed the stream;
    /// - nothing is held after the close.
    #[test]
    fn valid_messages_survive_any_corruption_between_them(
        stretches in prop::collection::vec(stretch(), 1..8),
        tail in prop::collection::vec(corruption(), 0..3),
        cuts in prop::collection::vec(any::<prop::sample::Index>(), 0..24),
    ) {
        // Corruptions side by side may add up to a whole message again (a
        // sample cut before its last `>`, then a `>`): the framer rightly
        // frames it, so such a case says nothing about the property.
        let whole_in = |junk: &[Vec<u8>]| {
            let bytes = junk.concat();
            SAMPLES.iter().any(|s| bytes.windows(s.element().len()).any(|w| w == s.element()))
        };
        prop_assume!(!stretches.iter().any(|(junk, _)| whole_in(junk)) && !whole_in(&tail));
        let mut stream = Vec::new();
        let mut expected: Vec<&[u8]> = Vec::new();
        for (junk, valid) in &stretches {
            junk.iter().for_each(|c| stream.extend_from_slice(c));
            stream.extend_from_slice(&SAMPLES[*valid].file);
            expected.push(SAMPLES[*valid].element());
        }
        tail.iter().for_each(|c| stream.extend_from_slice(c));
        let mut cuts: Vec<usize> = cuts.iter().map(|i| i.index(stream.len() + 1)).collect();
        cuts.sort_unstable();

        let (frames, dropped) = frame(&stream, &cuts);
        let valid: Vec<&[u8]> = frames
            .iter()
            .map(Vec::as_slice)
            .filter(|f| SAMPLES.iter().any(|s| s.element() == *f))
            .collect();
        prop_assert!(valid == expected, "valid frames {} of {} expected", valid.len(), expected.len());
        let framed: usize = frames.iter().map(Vec::len).sum();
        prop_assert!(framed + dropped <= stream.len());
    }
}
