//! Reading one partition's events from `TL_EVENTS`, in stream order: what
//! the partition's owner applies.
//!
//! An ordered consumer (ephemeral, one replica, no acks: the client checks
//! every delivery's sequence and recreates the consumer from the last one
//! it saw on a gap) filtered on `tl.ev.<p>.>`, from a given stream
//! sequence. Each message becomes a [`PartitionEvent`]: its stream
//! sequence, the match id its subject names, and the encoded event. A
//! message whose subject or payload is not one [`super::ingest`] publishes
//! is reported as [`Delivery::Foreign`] (it costs no valid event; the
//! caller counts it).

use async_nats::jetstream::consumer::{DeliverPolicy, pull::OrderedConfig};
use bytes::Bytes;
use futures_util::{Stream, StreamExt as _};

use super::ClusterError;
use super::partition::{self, partition_events};
use super::streams::{Cluster, EVENTS_STREAM};

/// One event of the partition.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PartitionEvent {
    /// Its sequence in `TL_EVENTS` (increasing along the partition).
    pub sequence: u64,
    pub match_id: String,
    /// The encoded event (`touchline_guest::encode`).
    pub event: Bytes,
}

/// What the consumer delivered.
#[derive(Debug)]
pub enum Delivery {
    Event(PartitionEvent),
    /// A message on the partition's subjects that ingest did not publish
    /// (its subject names no match): skipped.
    Foreign {
        sequence: u64,
        subject: String,
    },
}

/// The events of `partition` from stream sequence `from` (1: all), as they
/// are stored, until the stream is dropped. Errors are the consumer's
/// (NATS gone for longer than the client retries): the caller reopens it
/// from the last sequence it applied.
pub async fn events(
    cluster: &Cluster,
    partition: u32,
    from: u64,
) -> Result<impl Stream<Item = Result<Delivery, ClusterError>> + Send + use<>, ClusterError> {
    let failed = |source: async_nats::Error| ClusterError::Setup {
        what: format!("the consumer of partition {partition}"),
        source,
    };
    let stream = cluster
        .js
        .get_stream(EVENTS_STREAM)
        .await
        .map_err(|e| failed(e.into()))?;
    let deliver_policy = if from <= 1 {
        DeliverPolicy::All
    } else {
        DeliverPolicy::ByStartSequence { start_sequence: from }
    };
    let consumer = stream
        .create_consumer(OrderedConfig {
            filter_subject: partition_events(partition),
            deliver_policy,
            ..Default::default()
        })
        .await
        .map_err(|e| failed(e.into()))?;
    let messages = consumer.messages().await.map_err(|e| failed(e.into()))?;
    Ok(messages.map(move |m| {
        let m = m.map_err(|e| ClusterError::Setup {
            what: format!("reading partition {partition}"),
            source: e.into(),
        })?;
        let sequence = m.info().map(|i| i.stream_sequence).map_err(|e| ClusterError::Setup {
            what: format!("reading partition {partition}"),
            source: e,
        })?;
        let subject = m.subject.as_str();
        match subject.rsplit('.').next().and_then(partition::match_id) {
            Some(match_id) => Ok(Delivery::Event(PartitionEvent {
                sequence,
                match_id,
                event: m.payload.clone(),
            })),
            None => Ok(Delivery::Foreign {
                sequence,
                subject: subject.to_owned(),
            }),
        }
    }))
}
