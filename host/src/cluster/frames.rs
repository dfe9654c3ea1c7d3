//! Frames between nodes. A frame travels as its JSON text (serialised
//! once by its match's worker) with what a relay needs in headers, so no
//! node parses it again: `Tl-Kind` (`update`, `status`, `names`,
//! `snapshot`), `Tl-Epoch`, `Tl-Seq`, and `Tl-Lease-Token`, the fencing
//! token of the publisher's tenure over the match's partition.
//!
//! [`history`] reads back what `TL_FRAMES` keeps of a match (its last
//! resume window of frames): what a new relay resumes a session from.

use async_nats::HeaderMap;
use async_nats::jetstream::consumer::{DeliverPolicy, pull::OrderedConfig};
use async_nats::jetstream::stream::LastRawMessageErrorKind;
use bytes::Bytes;
use futures_util::StreamExt as _;

use super::ClusterError;
use super::partition::frame_in_subject;
use super::streams::FRAMES_STREAM;

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

/// Every frame `TL_FRAMES` keeps for `match_id`, oldest first, as
/// (headers, payload); empty if it keeps none.
pub async fn history(
    js: &async_nats::jetstream::Context,
    match_id: &str,
) -> Result<Vec<(Option<HeaderMap>, Bytes)>, ClusterError> {
    let subject = frame_in_subject(match_id)?;
    let failed = |source: async_nats::Error| ClusterError::Setup {
        what: format!("reading the frames kept on {subject}"),
        source,
    };
    let stream = js
        .get_stream_no_info(FRAMES_STREAM)
        .await
        .map_err(|e| failed(e.into()))?;
    match stream.get_last_raw_message_by_subject(&subject).await {
        Ok(_) => {}
        Err(e) if e.kind() == LastRawMessageErrorKind::NoMessageFound => return Ok(Vec::new()),
        Err(e) => return Err(failed(e.into())),
    }
    let consumer = stream
        .create_consumer(OrderedConfig {
            filter_subject: subject.clone(),
            deliver_policy: DeliverPolicy::All,
            ..Default::default()
        })
        .await
        .map_err(|e| failed(e.into()))?;
    let mut messages = consumer.messages().await.map_err(|e| failed(e.into()))?;
    let mut out = Vec::new();
    while let Some(m) = messages.next().await {
        let m = m.map_err(|e| failed(e.into()))?;
        let pending = m.info().map_err(failed)?.pending;
        out.push((m.headers.clone(), m.payload.clone()));
        if pending == 0 {
            break;
        }
    }
    Ok(out)
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
