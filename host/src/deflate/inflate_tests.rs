//! The inflating filter against tungstenite, which reads what it hands on.

use futures_util::StreamExt as _;
use tokio::io::AsyncWriteExt as _;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::error::{CapacityError, ProtocolError};
use tokio_tungstenite::tungstenite::protocol::{Role, WebSocketConfig};
use tokio_tungstenite::tungstenite::{Error, Message};

use super::*;
use crate::deflate::compress;

const MAX: usize = 64 * 1024;

/// A client's frame (masked with `key`), RSV1 set if `rsv1`.
fn frame(fin: bool, rsv1: bool, opcode: u8, payload: &[u8], key: [u8; 4]) -> Vec<u8> {
    let mut f = head(
        u8::from(fin) << 7 | u8::from(rsv1) << 6 | opcode,
        Some(key),
        payload.len() as u64,
    );
    f.extend(payload.iter().enumerate().map(|(i, b)| b ^ key[i % 4]));
    f
}

/// A frame header: first byte `b0`, masked with `key` if any, for a
/// payload of `len` bytes.
fn head(b0: u8, key: Option<[u8; 4]>, len: u64) -> Vec<u8> {
    let mask = if key.is_some() { 0x80 } else { 0 };
    let mut f = vec![b0];
    match len {
        n if n < 126 => f.push(mask | n as u8),
        n if n <= 0xffff => {
            f.push(mask | 126);
            f.extend_from_slice(&(n as u16).to_be_bytes());
        }
        n => {
            f.push(mask | 127);
            f.extend_from_slice(&n.to_be_bytes());
        }
    }
    f.extend(key.unwrap_or_default().iter().take(if key.is_some() { 4 } else { 0 }));
    f
}

fn json(n: usize) -> String {
    let items: Vec<String> = (0..n)
        .map(|i| format!("{{\"id\":{i},\"odds\":\"1.{i:02}\"}}"))
        .collect();
    format!("{{\"op\":\"subscribe\",\"matches\":[{}]}}", items.join(","))
}

/// What a server-side tungstenite reads from `wire` through the filter
/// (fed `chunk` bytes at a time, then the end of the stream): its
/// messages, and the error it stopped at, if any before the end.
async fn read(wire: Vec<u8>, chunk: usize, deflate: bool) -> (Vec<Message>, Option<Error>) {
    let (mut client, server) = tokio::io::duplex(1 << 20);
    let writer = tokio::spawn(async move {
        for part in wire.chunks(chunk) {
            client.write_all(part).await.expect("write");
        }
        // The end of what the client sends; it still takes pongs.
        client.shutdown().await.expect("shutdown");
        client
    });
    let (io, first) = Inflating::new(server, Vec::new(), deflate, MAX);
    let config = WebSocketConfig::default()
        .max_message_size(Some(MAX))
        .max_frame_size(Some(MAX));
    let mut ws = WebSocketStream::from_partially_read(io, first, Role::Server, Some(config)).await;
    let mut got = Vec::new();
    let end = loop {
        match ws.next().await {
            Some(Ok(m)) => got.push(m),
            // The end of the stream, without a closing handshake.
            Some(Err(Error::Protocol(ProtocolError::ResetWithoutClosingHandshake))) | None => break None,
            Some(Err(e)) => break Some(e),
        }
    };
    drop(writer.await.expect("writer"));
    (got, end)
}

/// A compressed message in one frame, one in three fragments with a ping
/// between them, and frames sent uncompressed all read as sent, whatever
/// the pieces the bytes arrive in.
#[tokio::test]
async fn compressed_and_plain_messages_read_as_sent_in_any_pieces() {
    let (one, two) = (json(40), json(300));
    let packed_one = compress(one.as_bytes()).expect("compressible");
    let packed_two = compress(two.as_bytes()).expect("compressible");
    let third = packed_two.len() / 3;
    let key = [0x37, 0xfa, 0x21, 0x3d];
    let mut wire = frame(true, true, 1, &packed_one, key);
    wire.extend(frame(false, true, 1, &packed_two[..third], key));
    wire.extend(frame(true, false, 9, b"ping!", key));
    wire.extend(frame(false, false, 0, &packed_two[third..2 * third], [1, 2, 3, 4]));
    wire.extend(frame(true, false, 0, &packed_two[2 * third..], key));
    wire.extend(frame(true, false, 1, b"{\"op\":\"plain\"}", key));
    wire.extend(frame(true, true, 2, &compress(&[7u8; 3000]).expect("zeros"), key));
    for chunk in [1, 3, 7, 4096] {
        let (got, err) = read(wire.clone(), chunk, true).await;
        assert!(err.is_none(), "chunk {chunk}: {err:?}");
        assert_eq!(
            got,
            [
                Message::text(one.clone()),
                Message::Ping(b"ping!".to_vec().into()),
                Message::text(two.clone()),
                Message::text("{\"op\":\"plain\"}"),
                Message::binary(vec![7u8; 3000]),
            ],
            "chunk {chunk}"
        );
    }
}

/// A small compressed message that inflates past the budget (a
/// decompression bomb) is refused as too big, as a message over the
/// budget sent plainly is; so is one whose compressed bytes alone pass it.
#[tokio::test]
async fn a_bomb_is_refused_as_too_big_without_inflating_it_all() {
    let zeros = vec![b'0'; 10 << 20];
    let bomb = compress(&zeros).expect("zeros");
    assert!(bomb.len() < 16 * 1024, "{}", bomb.len());
    let (got, err) = read(frame(true, true, 1, &bomb, [9; 4]), 4096, true).await;
    assert!(got.is_empty());
    assert!(
        matches!(err, Some(Error::Capacity(CapacityError::MessageTooLong { size, .. })) if size == MAX + 1),
        "{err:?}"
    );
    // Fragments whose compressed bytes together pass the budget.
    let mut wire = Vec::new();
    for i in 0..3 {
        wire.extend(frame(false, i == 0, u8::from(i == 0), &[0u8; 30_000], [5; 4]));
    }
    let (_, err) = read(wire, 4096, true).await;
    assert!(matches!(err, Some(Error::Capacity(_))), "{err:?}");
}

/// What the extension forbids is refused as a protocol error: RSV1 on a
/// control frame or a continuation, a new message inside a compressed
/// one, bytes that do not inflate. Without the extension, any RSV1 is.
#[tokio::test]
async fn what_the_extension_forbids_is_a_protocol_error() {
    let packed = compress(json(40).as_bytes()).expect("compressible");
    let key = [3; 4];
    let cases: Vec<(&str, Vec<u8>)> = vec![
        ("RSV1 on a ping", frame(true, true, 9, b"x", key)),
        ("RSV1 on a continuation", {
            let mut w = frame(false, true, 1, &packed[..10], key);
            w.extend(frame(true, true, 0, &packed[10..], key));
            w
        }),
        ("a new message inside one", {
            let mut w = frame(false, true, 1, &packed[..10], key);
            w.extend(frame(true, false, 1, b"{}", key));
            w
        }),
        ("not deflate data", frame(true, true, 1, &[0xff; 64], key)),
        ("RSV2 on a compressed message", {
            let mut w = frame(true, true, 1, &packed, key);
            w[0] |= 0x20;
            w
        }),
        ("RSV3 on its continuation", {
            let mut w = frame(false, true, 1, &packed[..10], key);
            let mut c = frame(true, false, 0, &packed[10..], key);
            c[0] |= 0x10;
            w.extend(c);
            w
        }),
        ("an unmasked continuation of a masked message", {
            let mut w = frame(false, true, 1, &packed[..10], key);
            w.extend(head(0x80, None, (packed.len() - 10) as u64));
            w.extend_from_slice(&packed[10..]);
            w
        }),
    ];
    for (what, wire) in cases {
        let (got, err) = read(wire, 5, true).await;
        assert!(got.is_empty(), "{what}: {got:?}");
        assert!(matches!(err, Some(Error::Protocol(_))), "{what}: {err:?}");
    }
    let (got, err) = read(frame(true, true, 1, &packed, key), 4096, false).await;
    assert!(got.is_empty());
    assert!(matches!(err, Some(Error::Protocol(_))), "not negotiated: {err:?}");
}

/// The filter hands on uncompressed frames byte for byte.
#[test]
fn plain_frames_pass_unchanged() {
    let mut wire = frame(true, false, 1, json(300).as_bytes(), [1, 2, 3, 4]);
    wire.extend(frame(true, false, 10, b"pong", [0; 4]));
    let mut f = Inflater::new(MAX);
    for b in &wire {
        f.push(std::slice::from_ref(b));
    }
    assert_eq!(f.ready(), &wire[..]);
}

/// Exactly the budget inflated is read; one byte more is refused as too
/// big, as it would be sent plainly.
#[tokio::test]
async fn the_budget_counts_what_a_message_inflates_to_to_the_byte() {
    for (len, fits) in [(MAX, true), (MAX + 1, false)] {
        let text = "a".repeat(len);
        let (got, err) = read(
            frame(true, true, 1, &compress(text.as_bytes()).expect("a run"), [1; 4]),
            4096,
            true,
        )
        .await;
        if fits {
            assert!(err.is_none(), "{err:?}");
            assert_eq!(got, [Message::text(text)]);
        } else {
            assert!(got.is_empty());
            assert!(matches!(err, Some(Error::Capacity(_))), "{err:?}");
        }
    }
}

/// A continuation whose length would wrap the message's size past zero
/// (2^64 - 10 after 10 bytes) is refused as too big: nothing is gathered.
#[test]
fn a_length_that_would_overflow_the_budget_check_is_refused() {
    let mut f = Inflater::new(MAX);
    let mut wire = frame(false, true, 1, &[0u8; 10], [0; 4]);
    wire.extend(head(0x00, Some([0; 4]), u64::MAX - 9));
    wire.extend_from_slice(&[0u8; 4096]);
    f.push(&wire);
    assert!(f.ended());
    // What is handed on: a header claiming MAX + 1 bytes, nothing more.
    assert_eq!(f.ready(), &head(0x81, Some([0; 4]), MAX as u64 + 1)[..]);
}

/// One read bringing many small messages that each inflate to the whole
/// budget hands them on one at a time: what is ready never holds more
/// than one of them.
#[test]
fn many_small_bombs_in_one_read_are_inflated_one_at_a_time() {
    let bomb = frame(true, true, 1, &compress(&vec![b'0'; MAX]).expect("zeros"), [7; 4]);
    assert!(bomb.len() < 200, "{}", bomb.len());
    let wire: Vec<u8> = bomb.iter().copied().cycle().take(bomb.len() * 40).collect();
    let mut f = Inflater::new(MAX);
    f.push(&wire);
    let mut messages = 0;
    loop {
        let ready = f.ready().len();
        if ready == 0 && !f.pump() {
            break;
        }
        assert!(ready <= MAX + 14, "{ready} bytes ready at once");
        if ready > 0 {
            messages += 1;
            f.consume(ready);
        }
    }
    assert_eq!(messages, 40);
}

/// Empty compressed messages (no data at all, or an empty stored block)
/// and a compressed message whose last fragment is empty are handed on,
/// each before what follows them in the same read.
#[test]
fn empty_compressed_messages_and_fragments_are_handed_on_in_order() {
    let packed = compress(json(40).as_bytes()).expect("compressible");
    let key = [4, 3, 2, 1];
    let mut wire = frame(true, true, 1, &[], key);
    wire.extend(frame(true, true, 1, &[0x00], key));
    wire.extend(frame(false, true, 1, &packed, key));
    wire.extend(frame(true, false, 0, &[], key));
    wire.extend(frame(true, false, 1, b"{}", key));
    let mut f = Inflater::new(MAX);
    f.push(&wire);
    let mut got = Vec::new();
    loop {
        if f.ready().is_empty() && !f.pump() {
            break;
        }
        got.extend_from_slice(f.ready());
        let n = f.ready().len();
        f.consume(n);
    }
    assert!(!f.ended());
    // An empty one that ends the bytes read is handed on at once, not when
    // more bytes come.
    let mut alone = Inflater::new(MAX);
    alone.push(&frame(true, true, 1, &[], key));
    assert_eq!(alone.ready(), &head(0x81, Some([0; 4]), 0)[..]);
    let body = json(40);
    let mut expected = head(0x81, Some([0; 4]), 0);
    expected.extend(head(0x81, Some([0; 4]), 0));
    expected.extend(head(0x81, Some([0; 4]), body.len() as u64));
    expected.extend_from_slice(body.as_bytes());
    expected.extend(frame(true, false, 1, b"{}", key));
    assert_eq!(got, expected);
}
