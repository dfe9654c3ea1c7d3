//! Table tests of the framer: `check(input, expected)` frames an input
//! pushed whole and again one byte at a time, then closed; every frame is
//! rendered as its text, every drop as `!reason:bytes`.

use super::*;

fn render(r: RawMessage) -> String {
    match r {
        Ok(m) => String::from_utf8_lossy(&m).into_owned(),
        Err(e) => format!("!{}:{}", e.kind(), e.bytes()),
    }
}

/// Frame `input` in reads of `chunk` bytes, close, render.
fn frame(input: &[u8], chunk: usize, max: usize) -> Vec<String> {
    let mut f = Framer::new(max);
    let mut out = Vec::new();
    for piece in input.chunks(chunk.max(1)) {
        f.push(piece);
        out.extend(std::iter::from_fn(|| f.next_message()).map(render));
    }
    f.close();
    out.extend(std::iter::from_fn(|| f.next_message()).map(render));
    assert_eq!(f.buffered(), 0, "nothing held after the close");
    out
}

fn check_max(input: &[u8], max: usize, expected: &[&str]) {
    let whole = frame(input, input.len(), max);
    assert_eq!(whole, expected, "pushed whole: {:?}", String::from_utf8_lossy(input));
    assert_eq!(frame(input, 1, max), expected, "a byte at a time");
}

fn check(input: &[u8], expected: &[&str]) {
    check_max(input, 1024, expected);
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
    // Before: `len` counted only the non-whitespace bytes; now `bytes` is
    // the whole run dropped.
    check(
        b"<alive/>\x00\xFFjunk <bet_stop/>",
        &["<alive/>", "!garbage:7", "<bet_stop/>"],
    );
    check(b"<<<>>> </x> &amp; \"<alive/>", &["!garbage:19", "<alive/>"]);
}

#[test]
fn truncated_message_resyncs_at_next_root() {
    // A root start inside an open message cuts it, nested or not.
    check(
        b"<odds_change><odds><market id=\"1\"><bet_stop event_id=\"x\"/><alive/>",
        &["!truncated:34", "<bet_stop event_id=\"x\"/>", "<alive/>"],
    );
    check(
        b"<odds_change><odds><?xml version=\"1.0\"?><alive/>",
        &["!truncated:40", "<alive/>"],
    );
}

/// The cases of issue 15: each cost the valid message after it.
#[test]
fn broken_markup_never_costs_the_next_message() {
    let cases: &[(&[u8], &str)] = &[
        // Cut off inside a start tag, inside an end tag.
        (b"<odds_change product=\"1\" event_id=\"sr:ma", "!truncated:40"),
        (b"<bet_stop event_id=\"x\"></bet_st", "!truncated:31"),
        // `<` + garbage inside a message.
        (b"<odds_change><\x00\x01\"<<", "!truncated:19"),
        // A stray quote in a start tag: an attribute value that never ends.
        (b"<bet_stop event_id=\"x groups=\"all\"/>", "!truncated:36"),
        // Unterminated comment, CDATA, PI inside a message.
        (b"<alive><!-- never ends", "!truncated:22"),
        (b"<alive><![CDATA[ never ends", "!truncated:27"),
        (b"<alive><?pi never ends", "!truncated:22"),
        // Invalid UTF-8 and NUL in names and text: quick-xml reads them as
        // bytes; the message never closes.
        (b"<odds_change \xFF\xFE=\"\x00\">\xC3\x28", "!truncated:22"),
        // Mismatched end tags: the depth balances, and the frame is the
        // parser's to refuse.
        (
            b"<odds_change><odds></market></odds_change>",
            "<odds_change><odds></market></odds_change>",
        ),
        // `<!` + garbage: malformed at once.
        (b"<odds_change><!x>", "!malformed:17"),
    ];
    for &(broken, first) in cases {
        let mut input = broken.to_vec();
        input.extend_from_slice(b"<alive product=\"1\"/>");
        let got = frame(&input, input.len(), 1024);
        assert_eq!(
            got.first().map(String::as_str),
            Some(first),
            "{:?}",
            String::from_utf8_lossy(broken)
        );
        assert_eq!(
            got.last().map(String::as_str),
            Some("<alive product=\"1\"/>"),
            "{:?}: {got:?}",
            String::from_utf8_lossy(broken)
        );
        assert_eq!(frame(&input, 1, 1024), got, "byte at a time");
    }
}

#[test]
fn unterminated_quote_does_not_hold_the_next_message() {
    let mut f = Framer::new(1024);
    f.push(b"<alive product=\"1/><bet_stop event_id=\"x\"/>");
    assert_eq!(f.next_message().map(render).as_deref(), Some("!truncated:19"));
    assert_eq!(f.next_message(), Some(Ok(b"<bet_stop event_id=\"x\"/>".to_vec())));
    assert_eq!(f.next_message(), None);
}

#[test]
fn oversized_message_is_dropped_and_framing_continues() {
    let big = format!("<odds_change>{}</odds_change><alive/>", "<m/>".repeat(400));
    check(big.as_bytes(), &["!oversized:1627", "<alive/>"]);
    // Complete, but one byte over.
    let over = format!("<alive x=\"{}\"/><bet_stop/>", "y".repeat(1025 - 13));
    check(over.as_bytes(), &["!oversized:1025", "<bet_stop/>"]);
    let fits = format!("<alive x=\"{}\"/>", "y".repeat(1024 - 13));
    check(fits.as_bytes(), &[fits.as_str()]);
}

#[test]
fn oversized_message_arriving_in_pieces_keeps_memory_bounded() {
    let mut f = Framer::new(1024);
    f.push(b"<odds_change>");
    for _ in 0..1000 {
        f.push(b"<market id=\"1\"><outcome id=\"2\"/></market>");
        assert_eq!(f.next_message(), None, "reported once it ends");
        assert!(f.buffered() < 4096, "framer holds {} bytes", f.buffered());
    }
    f.push(b"</odds_change><alive/>");
    // Before: reported when the bound was crossed; now when framing
    // resumes, with the whole length dropped.
    let dropped = 13 + 1000 * 41 + 14;
    assert_eq!(f.next_message().map(render), Some(format!("!oversized:{dropped}")));
    assert_eq!(f.next_message(), Some(Ok(b"<alive/>".to_vec())));
}

#[test]
fn endless_garbage_is_counted_not_held() {
    let mut f = Framer::new(1024);
    for _ in 0..1000 {
        f.push(b"no markup here, only text; ");
        assert_eq!(f.next_message(), None);
        assert!(f.buffered() <= 1024 + 27, "framer holds {} bytes", f.buffered());
    }
    f.push(b"<alive/>");
    assert_eq!(f.next_message().map(render).as_deref(), Some("!garbage:27000"));
    assert_eq!(f.next_message(), Some(Ok(b"<alive/>".to_vec())));
}

#[test]
fn stray_closing_tag_is_garbage() {
    // Before: `malformed`. A closing tag between messages is not a message.
    check(b"</x><alive/>", &["!garbage:4", "<alive/>"]);
}

#[test]
fn unknown_elements_between_messages_are_framed_for_the_parser() {
    check(
        b"<product_up product=\"1\"/><x><alive/>",
        &["<product_up product=\"1\"/>", "!truncated:3", "<alive/>"],
    );
}

#[test]
fn close_counts_what_is_held() {
    check(b"<alive/><odds_change><odds>", &["<alive/>", "!incomplete_at_close:19"]);
    check(b"<alive/><odds_ch", &["<alive/>", "!incomplete_at_close:8"]);
    check(b"<alive/>\r\n<", &["<alive/>", "!incomplete_at_close:3"]);
    check(b"<alive/>junk", &["<alive/>", "!garbage:4"]);
    check(b"<alive/>\r\n<?xml version=\"1.0\"?>\r\n", &["<alive/>"]);
    check(b"<odds_change><!x>", &["!malformed:17"]);
}

#[test]
fn a_stall_drops_what_is_held_and_framing_restarts() {
    let mut f = Framer::new(1024);
    f.push(b"<alive/><odds_change product=\"1");
    assert_eq!(f.next_message(), Some(Ok(b"<alive/>".to_vec())));
    assert_eq!(f.next_message(), None);
    f.stalled();
    assert_eq!(f.next_message().map(render).as_deref(), Some("!stalled:23"));
    assert_eq!(f.next_message(), None);
    assert_eq!(f.buffered(), 0);
    // The rest of the stalled message is garbage; framing goes on.
    f.push(b"\"></odds_change><bet_stop/>");
    assert_eq!(f.next_message().map(render).as_deref(), Some("!garbage:16"));
    assert_eq!(f.next_message(), Some(Ok(b"<bet_stop/>".to_vec())));
    // A stall with nothing held reports nothing.
    f.stalled();
    assert_eq!(f.next_message(), None);
}

#[test]
fn bom_inside_a_message_is_text_wherever_a_read_ends() {
    let input = b"<alive>\xEF\xBB\xBF</alive>";
    for split in 1..input.len() {
        let mut f = Framer::new(1024);
        f.push(&input[..split]);
        assert_eq!(f.next_message(), None);
        f.push(&input[split..]);
        assert_eq!(f.next_message(), Some(Ok(input.to_vec())), "split at {split}");
    }
}
