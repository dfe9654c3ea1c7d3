//! `permessage-deflate` (RFC 7692): frames compressed once and shared.
//!
//! A frame's JSON is serialised once for every subscriber ([`Text`]); its
//! compressed form is made the first time a session that negotiated the
//! extension writes it, and shared by every such session after that, so
//! compression costs once per frame, not once per delivery. That needs
//! the compressed bytes not to depend on what the session sent before:
//! the server answers every offer it accepts with
//! `server_no_context_takeover` (each message compressed on its own) and
//! `client_no_context_takeover` (the same asked of the client, so a
//! session keeps no inflate window between messages either).
//!
//! A frame under [`MIN_LEN`] bytes, or one that does not shrink, goes out
//! uncompressed (RSV1 clear), as the RFC allows per message. What a client
//! sends compressed is inflated before tungstenite reads it
//! ([`inflate::Inflating`]), bounded by the message size budget.

pub mod inflate;

use std::cell::RefCell;
use std::sync::{Arc, OnceLock};

use bytes::Bytes;
use flate2::{Compress, Compression, FlushCompress};
use tokio_tungstenite::tungstenite::Utf8Bytes;

/// Frames shorter than this are sent as they are: the header and the
/// deflate block's own overhead leave little to gain.
pub const MIN_LEN: usize = 256;

/// Deflate's level. On an 8 KB update of the simulator's, with a
/// compressor reused: level 1 took 14 µs to 855 bytes, 3 41 µs to 744, 6
/// 61 µs to 633. Each frame is compressed once, whatever its subscribers
/// (50 per frame in the bench at 1,000 clients, ~1 µs per delivery at 6),
/// while every subscriber's bytes cross the network.
const LEVEL: u32 = 6;

thread_local! {
    /// One compressor per thread, reset for each frame: a new one costs
    /// more than the compressing (its ~300 KB of state allocated and
    /// cleared: 224 µs a frame against 61).
    static COMPRESSOR: RefCell<Compress> = RefCell::new(Compress::new(Compression::new(LEVEL), false));
}

/// The `Sec-WebSocket-Extensions` answer to an accepted offer...
pub const RESPONSE: &str = "permessage-deflate; server_no_context_takeover; client_no_context_takeover";

/// ...and to one that named `server_max_window_bits` (15), which an answer
/// must name back to accept it (RFC 7692 §7.1.2.1).
pub const RESPONSE_WINDOW: &str =
    "permessage-deflate; server_no_context_takeover; client_no_context_takeover; server_max_window_bits=15";

/// The tail a sync flush ends a deflate stream with, left off the wire
/// (RFC 7692 §7.2.1) and put back before inflating.
pub const TAIL: [u8; 4] = [0x00, 0x00, 0xff, 0xff];

/// Longest frame header: 10 bytes of length encoding, 4 of mask key.
pub const MAX_HEADER: usize = 14;

/// A frame's header (RFC 6455 §5.2) into `out`: first byte `b0`, the
/// shortest encoding of `len`, and where `masked` a zero mask key (so the
/// payload goes as it is); returns its length. The one encoder of frame
/// headers: the server's writers and [`inflate`]'s re-framed messages.
pub fn frame_header(b0: u8, masked: bool, len: u64, out: &mut [u8; MAX_HEADER]) -> usize {
    let mask_bit = if masked { 0x80 } else { 0 };
    out[0] = b0;
    let n = if len < 126 {
        out[1] = mask_bit | len as u8;
        2
    } else if let Ok(short) = u16::try_from(len) {
        out[1] = mask_bit | 126;
        out[2..4].copy_from_slice(&short.to_be_bytes());
        4
    } else {
        out[1] = mask_bit | 127;
        out[2..10].copy_from_slice(&len.to_be_bytes());
        10
    };
    if masked {
        out[n..n + 4].fill(0);
        n + 4
    } else {
        n
    }
}

/// A frame's text, shared by every session that sends it, with its
/// compressed form made at most once. Cloning shares both.
#[derive(Debug, Clone)]
pub struct Text {
    plain: Utf8Bytes,
    /// `Some(None)`: compressing did not pay.
    deflated: Arc<OnceLock<Option<Bytes>>>,
}

impl Text {
    pub fn as_str(&self) -> &str {
        self.plain.as_str()
    }

    pub fn plain(&self) -> &Utf8Bytes {
        &self.plain
    }

    /// Bytes of the uncompressed text.
    pub fn len(&self) -> usize {
        self.plain.len()
    }

    pub fn is_empty(&self) -> bool {
        self.plain.is_empty()
    }

    /// What a frame of this text carries on a connection that negotiated
    /// the extension (`deflate`) or not: whether it is compressed (RSV1),
    /// and the payload.
    pub fn payload(&self, deflate: bool) -> (bool, &[u8]) {
        if deflate
            && self.plain.len() >= MIN_LEN
            && let Some(packed) = self.deflated.get_or_init(|| compress(self.plain.as_bytes()))
        {
            return (true, packed);
        }
        (false, self.plain.as_bytes())
    }
}

impl From<Utf8Bytes> for Text {
    fn from(plain: Utf8Bytes) -> Text {
        Text {
            plain,
            deflated: Arc::default(),
        }
    }
}

impl From<String> for Text {
    fn from(s: String) -> Text {
        Text::from(Utf8Bytes::from(s))
    }
}

impl From<&str> for Text {
    fn from(s: &str) -> Text {
        Text::from(Utf8Bytes::from(s))
    }
}

/// `plain` as one message's payload with no context taken over: raw
/// deflate, sync-flushed, its [`TAIL`] left off. `None` if that is not
/// shorter than `plain`.
pub fn compress(plain: &[u8]) -> Option<Bytes> {
    COMPRESSOR.with(|c| {
        let mut c = c.borrow_mut();
        c.reset();
        // Room for as much as the text: more would not pay. The sync
        // flush is complete once everything is in with room left over.
        let mut out = Vec::with_capacity(plain.len());
        loop {
            let taken = usize::try_from(c.total_in()).ok()?;
            c.compress_vec(&plain[taken..], &mut out, FlushCompress::Sync).ok()?;
            if out.len() == out.capacity() {
                return None;
            }
            if c.total_in() == plain.len() as u64 {
                break;
            }
        }
        if !out.ends_with(&TAIL) {
            return None;
        }
        out.truncate(out.len() - TAIL.len());
        // Room was made for the whole text; the frame keeps only its bytes
        // (for as long as it is held: resume rings, snapshot caches).
        out.shrink_to_fit();
        Some(Bytes::from(out))
    })
}

/// The answer to the client's `Sec-WebSocket-Extensions` (every value of
/// the header, in order): the first offer of `permessage-deflate` the
/// server can take, its parameters known, none twice, and no
/// `server_max_window_bits` below 15 (the server compresses with the whole
/// window). An offer it cannot take is passed over for the next; `None`:
/// none taken, the session runs uncompressed.
pub fn answer<'a>(values: impl IntoIterator<Item = &'a str>) -> Option<&'static str> {
    values.into_iter().flat_map(|v| v.split(',')).find_map(acceptable)
}

fn acceptable(offer: &str) -> Option<&'static str> {
    let mut parts = offer.split(';').map(str::trim);
    if !parts
        .next()
        .is_some_and(|name| name.eq_ignore_ascii_case("permessage-deflate"))
    {
        return None;
    }
    // 8 to 15, without leading zeros (RFC 7692 §7.1.2).
    let bits = |v: Option<&str>| {
        v.filter(|v| !v.starts_with('0') && v.bytes().all(|b| b.is_ascii_digit()))
            .and_then(|v| v.parse::<u8>().ok())
            .filter(|b| (8..=15).contains(b))
    };
    let mut seen: Vec<String> = Vec::new();
    for param in parts {
        let (name, value) = match param.split_once('=') {
            Some((n, v)) => (n.trim().to_ascii_lowercase(), Some(v.trim().trim_matches('"'))),
            None => (param.to_ascii_lowercase(), None),
        };
        if seen.contains(&name) {
            return None;
        }
        let fine = match name.as_str() {
            "server_no_context_takeover" | "client_no_context_takeover" => value.is_none(),
            "server_max_window_bits" => bits(value) == Some(15),
            "client_max_window_bits" => value.is_none() || bits(value).is_some(),
            _ => false,
        };
        if !fine {
            return None;
        }
        seen.push(name);
    }
    Some(if seen.iter().any(|n| n == "server_max_window_bits") {
        RESPONSE_WINDOW
    } else {
        RESPONSE
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use flate2::{Decompress, FlushDecompress};

    fn inflate(packed: &[u8]) -> Vec<u8> {
        let mut input = packed.to_vec();
        input.extend_from_slice(&TAIL);
        let mut out = Vec::with_capacity(1 << 20);
        Decompress::new(false)
            .decompress_vec(&input, &mut out, FlushDecompress::Sync)
            .expect("inflate");
        out
    }

    #[test]
    fn a_compressed_frame_inflates_to_its_text_and_is_made_once() {
        let json = format!(
            "{{\"type\":\"update\",\"markets\":[{}]}}",
            "{\"id\":1,\"odds\":1.85},".repeat(40)
        );
        let text = Text::from(json.clone());
        let copy = text.clone();
        let (rsv1, packed) = text.payload(true);
        assert!(rsv1);
        assert!(packed.len() * 4 < json.len(), "{} of {}", packed.len(), json.len());
        assert_eq!(inflate(packed), json.as_bytes());
        // The clone shares the compressed bytes: the same allocation.
        assert_eq!(copy.payload(true).1.as_ptr(), packed.as_ptr());
        assert_eq!(text.payload(false), (false, json.as_bytes()));
    }

    #[test]
    fn short_or_incompressible_frames_go_out_as_they_are() {
        let short = Text::from("{\"type\":\"error\"}");
        assert_eq!(short.payload(true), (false, short.as_str().as_bytes()));
        // Bytes that deflate cannot shrink (a pseudo-random run).
        let mut x = 0x2545_f491_4f6c_dd1du64;
        let noise: Vec<u8> = (0..4096)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                x as u8
            })
            .collect();
        assert_eq!(compress(&noise), None);
    }

    #[test]
    fn offers_are_taken_only_with_parameters_the_server_can_keep() {
        // What browsers offer.
        assert_eq!(answer(["permessage-deflate; client_max_window_bits"]), Some(RESPONSE));
        assert_eq!(
            answer(["permessage-deflate; server_no_context_takeover; client_max_window_bits=10"]),
            Some(RESPONSE)
        );
        // A window of 15 asked for is named back, as accepting it must.
        assert_eq!(
            answer(["PerMessage-Deflate ; server_max_window_bits=\"15\""]),
            Some(RESPONSE_WINDOW)
        );
        // A smaller window for the server: this offer passed over, the next taken.
        assert_eq!(answer(["permessage-deflate; server_max_window_bits=10"]), None);
        assert_eq!(
            answer(["permessage-deflate; server_max_window_bits=10, permessage-deflate"]),
            Some(RESPONSE)
        );
        assert_eq!(answer(["x-webkit-deflate-frame", "permessage-deflate"]), Some(RESPONSE));
        // Unknown, repeated, or malformed parameters; other extensions.
        for bad in [
            "permessage-deflate; zip=1",
            "permessage-deflate; client_no_context_takeover; client_no_context_takeover",
            "permessage-deflate; client_max_window_bits=16",
            "permessage-deflate; server_max_window_bits=015",
            "permessage-deflate; server_max_window_bits=+15",
            "permessage-deflate; server_no_context_takeover=1",
            "x-webkit-deflate-frame",
        ] {
            assert_eq!(answer([bad]), None, "{bad}");
        }
        assert_eq!(answer([]), None);
    }
}
