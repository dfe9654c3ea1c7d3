//! The inflating filter against tungstenite, which reads what it hands on.

use futures_util::StreamExt as _;
use tokio::io::AsyncWriteExt as _;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::protocol::{Role, WebSocketConfig};
use tokio_tungstenite::tungstenite::{Error, Message, error::CapacityError};

use super::*;
use crate::deflate::compress;

const MAX: usize = 64 * 1024;

/// A client's frame (masked with `key`), RSV1 set if `rsv1`.
fn frame(fin: bool, rsv1: bool, opcode: u8, payload: &[u8], key: [u8; 4]) -> Vec<u8> {
    let mut f = vec![u8::from(fin) << 7 | u8::from(rsv1) << 6 | opcode];
    match payload.len() {
        n if n < 126 => f.push(0x80 | n as u8),
        n if n <= 0xffff => {
            f.push(0x80 | 126);
            f.extend_from_slice(&(n as u16).to_be_bytes());
        }
        n => {
            f.push(0x80 | 127);
            f.extend_from_slice(&(n as u64).to_be_bytes());
        }
    }
    f.extend_from_slice(&key);
    f.extend(payload.iter().enumerate().map(|(i, b)| b ^ key[i % 4]));
    f
}

fn json(n: usize) -> String {
    let items: Vec<String> = (0..n)
        .map(|i| format!("{{\"id\":{i},\"odds\":\"1.{i:02}\"}}"))
        .collect();
    format!("{{\"op\":\"subscribe\",\"matches\":[{}]}}", items.join(","))
}

/// What a server-side tungstenite reads from `wire` through the filter
/// (fed `chunk` bytes at a time): its messages, and the error it stopped
/// at, if any.
async fn read(wire: Vec<u8>, chunk: usize, deflate: bool) -> (Vec<Message>, Option<Error>) {
    let (mut client, server) = tokio::io::duplex(1 << 20);
    let writer = tokio::spawn(async move {
        for part in wire.chunks(chunk) {
            client.write_all(part).await.expect("write");
        }
        client
    });
    let (io, first) = Inflating::new(server, Vec::new(), deflate, MAX);
    let config = WebSocketConfig::default()
        .max_message_size(Some(MAX))
        .max_frame_size(Some(MAX));
    let mut ws = WebSocketStream::from_partially_read(io, first, Role::Server, Some(config)).await;
    let _client = writer.await.expect("writer"); // held open: no EOF
    let mut got = Vec::new();
    loop {
        match tokio::time::timeout(std::time::Duration::from_millis(200), ws.next()).await {
            Ok(Some(Ok(m))) => got.push(m),
            Ok(Some(Err(e))) => return (got, Some(e)),
            Ok(None) | Err(_) => return (got, None),
        }
    }
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
