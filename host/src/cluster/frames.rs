//! Frames between nodes. A frame travels as its JSON text (serialised
//! once by its match's worker) with what a relay needs in headers, so no
//! node parses it again: `Tl-Kind` (`update`, `status`, `names`,
//! `snapshot`), `Tl-Epoch`, `Tl-Seq`, and `Tl-Lease-Token`, the fencing
//! token of the publisher's tenure over the match's partition.

use async_nats::HeaderMap;

const KIND: &str = "Tl-Kind";
const EPOCH: &str = "Tl-Epoch";
const SEQ: &str = "Tl-Seq";
pub(super) const TOKEN: &str = "Tl-Lease-Token";

/// What the headers of a frame say.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FrameHead {
    pub kind: String,
    pub epoch: u64,
    pub seq: u64,
    pub token: u64,
}

impl FrameHead {
    pub fn headers(&self) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(KIND, self.kind.as_str());
        h.insert(EPOCH, self.epoch.to_string().as_str());
        h.insert(SEQ, self.seq.to_string().as_str());
        h.insert(TOKEN, self.token.to_string().as_str());
        h
    }

    /// `None` if a header is missing or not a number.
    pub fn read(headers: &HeaderMap) -> Option<FrameHead> {
        let num = |k: &str| headers.get(k)?.as_str().parse().ok();
        Some(FrameHead {
            kind: headers.get(KIND)?.as_str().to_owned(),
            epoch: num(EPOCH)?,
            seq: num(SEQ)?,
            token: num(TOKEN)?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::FrameHead;

    #[test]
    fn a_head_reads_back_and_a_missing_header_is_none() {
        let head = FrameHead {
            kind: "update".into(),
            epoch: 3,
            seq: 41,
            token: 977,
        };
        assert_eq!(FrameHead::read(&head.headers()), Some(head));
        assert_eq!(FrameHead::read(&async_nats::HeaderMap::new()), None);
    }
}
