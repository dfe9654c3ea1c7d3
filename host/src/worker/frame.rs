//! The frames a worker sends to WebSocket sessions: serialised once here,
//! shared by every subscriber.

use std::borrow::Cow;

use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;
use tokio_tungstenite::tungstenite::Utf8Bytes;

use crate::deflate::Text;

use crate::cluster::frames::FrameHead;

/// A serialised frame for one match, shared by all its subscribers.
#[derive(Debug, Clone)]
pub struct Frame {
    /// For updates, this frame's seq; otherwise the seq of the last update
    /// applied before it.
    pub seq: u64,
    pub epoch: u64,
    pub kind: FrameKind,
    /// The JSON text, serialised once (and compressed at most once);
    /// cloning shares the buffers.
    pub bytes: Text,
}

impl Frame {
    /// The head of a resumption at `since`, for a match whose latest
    /// snapshot is `snapshot` (`push::relay` resuming a session from the
    /// updates it forwarded): like the worker's own, it names the match's
    /// producers that are down now. `None`: `snapshot` is not a snapshot
    /// frame's JSON.
    pub fn resumed_from(snapshot: &Frame, since: u64) -> Option<Frame> {
        #[derive(Deserialize)]
        struct Head<'a> {
            #[serde(rename = "match", borrow)]
            match_id: Cow<'a, str>,
            #[serde(borrow)]
            guest_version: Cow<'a, str>,
            #[serde(default)]
            producers_down: Vec<u32>,
        }
        if snapshot.kind != FrameKind::Snapshot {
            return None;
        }
        let head: Head = serde_json::from_str(snapshot.bytes.as_str()).ok()?;
        let envelope = Envelope {
            kind: FrameKind::Resumed,
            match_id: &head.match_id,
            epoch: snapshot.epoch,
            seq: since,
            guest_version: &head.guest_version,
            delta: None,
            state: None,
            quarantined: None,
            status: None,
            reason: None,
            product: None,
            producers_down: Some(&head.producers_down),
            names: None,
        };
        Some(envelope.render())
    }

    /// Its headers between nodes, published by the holder of `token`.
    pub fn head(&self, token: u64) -> FrameHead {
        FrameHead {
            kind: self.kind.name().to_owned(),
            epoch: self.epoch,
            seq: self.seq,
            token,
        }
    }

    /// A frame from another node's message, with its publisher's token
    /// (`None`: not one a node publishes).
    pub fn from_head(head: &FrameHead, payload: bytes::Bytes) -> Option<Frame> {
        Some(Frame {
            seq: head.seq,
            epoch: head.epoch,
            kind: FrameKind::from_name(&head.kind)?,
            bytes: Text::from(Utf8Bytes::try_from(payload).ok()?),
        })
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum FrameKind {
    Snapshot,
    Update,
    Status,
    /// A resume point was accepted; the missed updates follow.
    Resumed,
    /// The match's names became known (its fixture arrived): the whole
    /// set, as a snapshot carries it. Takes no seq.
    Names,
}

impl FrameKind {
    const ALL: [FrameKind; 5] = [
        FrameKind::Snapshot,
        FrameKind::Update,
        FrameKind::Status,
        FrameKind::Resumed,
        FrameKind::Names,
    ];

    /// Its wire name (the frame's JSON `type`).
    pub fn name(self) -> &'static str {
        match self {
            FrameKind::Snapshot => "snapshot",
            FrameKind::Update => "update",
            FrameKind::Status => "status",
            FrameKind::Resumed => "resumed",
            FrameKind::Names => "names",
        }
    }

    /// The kind a wire name stands for.
    pub fn from_name(name: &str) -> Option<FrameKind> {
        FrameKind::ALL.into_iter().find(|k| k.name() == name)
    }
}

/// What a status frame announces.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Status {
    Quarantined,
    DeadLetter,
    Healed,
    Upgraded,
    RolledBack,
    /// A producer of this match is down: its markets take no bets.
    ProducerDown,
    /// ...and has recovered.
    ProducerUp,
}

/// Everything a frame can say; `None` fields are left out.
#[derive(Debug, Serialize)]
pub(super) struct Envelope<'a> {
    #[serde(rename = "type")]
    pub kind: FrameKind,
    #[serde(rename = "match")]
    pub match_id: &'a str,
    pub epoch: u64,
    pub seq: u64,
    pub guest_version: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub delta: Option<&'a RawValue>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub state: Option<&'a RawValue>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub quarantined: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub status: Option<Status>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<&'a str>,
    /// The producer a `producer_down`/`producer_up` status is about.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub product: Option<u32>,
    /// Snapshots: the match's producers that are down.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub producers_down: Option<&'a [u32]>,
    /// Names beside the ids (`worker::names`): snapshots, names frames,
    /// and updates that bring markets not named before.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub names: Option<&'a RawValue>,
}

impl<'a> Envelope<'a> {
    pub fn with_delta(mut self, delta: &'a RawValue) -> Self {
        self.delta = Some(delta);
        self
    }

    pub fn with_state(mut self, state: &'a RawValue) -> Self {
        self.state = Some(state);
        self
    }

    pub fn with_status(mut self, status: Status, reason: &'a str) -> Self {
        self.status = Some(status);
        self.reason = Some(reason);
        self
    }

    pub fn render(&self) -> Frame {
        let text = String::from_utf8(self.json()).expect("serde_json writes UTF-8");
        Frame {
            seq: self.seq,
            epoch: self.epoch,
            kind: self.kind,
            bytes: Text::from(text),
        }
    }

    /// The JSON, in one buffer allocated at about its final size. Grown
    /// from serde_json's 128 bytes by doubling, a 3.6 KB update was
    /// reallocated five times and ended in a buffer of the next power of
    /// two, which a kept frame (the resume ring, the snapshot cache) holds
    /// on to: up to twice its length. A heap profile (`--features
    /// dhat-heap`, 200 live matches) found frame buffers the largest
    /// holder: 881 of 6.7 KB on average at its peak.
    fn json(&self) -> Vec<u8> {
        let raw = |v: Option<&RawValue>| v.map_or(0, |v| v.get().len());
        let text = |v: Option<&str>| v.map_or(0, str::len);
        let hint = ENVELOPE_BYTES
            + self.match_id.len()
            + self.guest_version.len()
            + raw(self.delta)
            + raw(self.state)
            + raw(self.names)
            + text(self.quarantined)
            + text(self.reason)
            + self.producers_down.map_or(0, |p| p.len() * 11);
        let mut json = Vec::with_capacity(hint);
        serde_json::to_writer(&mut json, self).expect("envelope fields are strings, numbers and validated JSON");
        if json.capacity() - json.len() > json.len() / 8 {
            // Escaped text made it outgrow the hint.
            json.shrink_to_fit();
        }
        json
    }
}

/// An envelope's JSON beyond its variable fields: keys, numbers, quotes
/// (`{"type":"snapshot","match":"","epoch":…,"seq":…,"guest_version":""}`
/// and the keys of the optional fields).
const ENVELOPE_BYTES: usize = 256;

pub(super) fn null_json() -> Box<RawValue> {
    RawValue::from_string("null".to_owned()).expect("null is JSON")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_envelope_is_written_once_into_a_buffer_of_about_its_size() {
        let odds: Vec<String> = (0..120)
            .map(|i| format!(r#"{{"id":"{i}","odds":{}.25}}"#, i % 50 + 1))
            .collect();
        let delta = RawValue::from_string(format!(r#"{{"markets":[{}]}}"#, odds.join(","))).expect("JSON");
        let envelope = Envelope {
            kind: FrameKind::Update,
            match_id: "sr:match:1",
            epoch: 3,
            seq: 41,
            guest_version: "746a358329478f9dad6f19c4dd433e7f2f21cfd050f996125430ed7a11fad128",
            delta: Some(&delta),
            state: None,
            quarantined: None,
            status: None,
            reason: Some("a \"quoted\"\nreason"),
            product: None,
            producers_down: None,
            names: None,
        };
        let json = envelope.json();
        assert_eq!(json, serde_json::to_vec(&envelope).expect("JSON"));
        assert!(
            json.len().next_power_of_two() - json.len() > ENVELOPE_BYTES,
            "a size a doubling buffer would leave more than that unused in: {}",
            json.len()
        );
        assert!(
            json.capacity() - json.len() <= ENVELOPE_BYTES,
            "{} bytes in a buffer of {}",
            json.len(),
            json.capacity()
        );
        assert_eq!(envelope.render().bytes.as_str().as_bytes(), json.as_slice());
    }
}
