//! Ingest: a node with a feed connection publishes each match event to
//! `TL_EVENTS` on its partition's subject (`tl.ev.<p>.<match>`); a publish
//! returns once JetStream acknowledged it (the feed reader's window of
//! publishes, `feed::publishing`, makes that the backpressure).
//!
//! Every publish carries a `Nats-Msg-Id` derived from the feed message's
//! own bytes and its match ([`message_id`]): two ingest nodes on redundant
//! feed connections, or a message re-sent after a reconnect, publish the
//! same id, and JetStream keeps the first within its duplicate window
//! ([`super::streams::DUPLICATE_WINDOW`]), so the partition's owner applies
//! it once. The payload is the event encoded once
//! (`touchline_guest::encode`), the bytes the journal keeps.

use async_nats::jetstream::{self, message::PublishMessage};
use bytes::Bytes;
use sha2::{Digest as _, Sha256};

use super::ClusterError;
use super::partition::{Partitions, event_subject};
use super::streams::Cluster;

/// Where the feed's producer news goes (every node subscribes).
pub const PRODUCERS_SUBJECT: &str = "tl.pr";

/// Where one event went in `TL_EVENTS`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Published {
    pub partition: u32,
    /// The stream sequence JetStream gave it (the first copy's, for a
    /// duplicate).
    pub sequence: u64,
    /// Another publish of the same message came first.
    pub duplicate: bool,
}

/// Publishes a node's feed events (cheap to clone: one connection).
#[derive(Debug, Clone)]
pub struct Ingest {
    js: jetstream::Context,
    partitions: Partitions,
}

impl Ingest {
    pub fn new(cluster: &Cluster) -> Ingest {
        Ingest {
            js: cluster.js.clone(),
            partitions: cluster.config.partitions,
        }
    }

    /// Publish `news` (what the feed says about its producers, JSON) to
    /// every node (`tl.pr`, core NATS: liveness is only ever current).
    pub async fn tell(&self, news: Bytes) -> Result<(), ClusterError> {
        self.js
            .client()
            .publish(PRODUCERS_SUBJECT, news)
            .await
            .map_err(|e| ClusterError::Publish {
                subject: PRODUCERS_SUBJECT.to_owned(),
                source: e.into(),
            })
    }

    /// Publish `event` (the encoded event of match `match_id`) with
    /// `Nats-Msg-Id` `id` (its feed message's [`message_id`], made once so a
    /// retry does not hash the message again) and wait for the stream to
    /// store it.
    pub async fn publish(&self, match_id: &str, event: Bytes, id: String) -> Result<Published, ClusterError> {
        let partition = self.partitions.partition_of(match_id);
        let subject = event_subject(partition, match_id)?;
        let publish = PublishMessage::build().payload(event).message_id(id);
        let failed = |source: async_nats::Error| ClusterError::Publish {
            subject: subject.clone(),
            source,
        };
        let ack = self
            .js
            .send_publish(subject.clone(), publish)
            .await
            .map_err(|e| failed(e.into()))?
            .await
            .map_err(|e| failed(e.into()))?;
        Ok(Published {
            partition,
            sequence: ack.sequence,
            duplicate: ack.duplicate,
        })
    }
}

/// The `Nats-Msg-Id` of a feed message's event for `match_id`: SHA-256 of
/// the match id, a zero byte and the message's bytes, in hex (64
/// characters). Byte-identical messages — the provider's redundant
/// connections, a re-send — get the same id; any other byte differs.
pub fn message_id(match_id: &str, message: &[u8]) -> String {
    let mut h = Sha256::new();
    h.update(match_id.as_bytes());
    h.update([0]);
    h.update(message);
    format!("{:x}", h.finalize())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_id_is_the_message_and_its_match() {
        let a = message_id("sr:match:1", b"<odds_change/>");
        assert_eq!(a.len(), 64);
        assert_eq!(
            a,
            message_id("sr:match:1", b"<odds_change/>"),
            "the same bytes, the same id"
        );
        assert_ne!(a, message_id("sr:match:2", b"<odds_change/>"));
        assert_ne!(a, message_id("sr:match:1", b"<odds_change />"));
        // The separator keeps id and message apart.
        assert_ne!(message_id("a", b"bc"), message_id("ab", b"c"));
    }
}
