//! Match snapshots in JetStream (issue 13): what a new owner restores a
//! match from, so it replays only the events after it, and what lets the
//! owner trim `TL_EVENTS`.
//!
//! A snapshot is the guest state with the match's `seq`, `epoch` and guest
//! version ([`SnapshotRecord`]) and the `TL_EVENTS` sequence of the last
//! event it covers (`Tl-Position`). It is kept on `tl.fs.<p>.<match>` in
//! `TL_FRAMES`, one per match (`Nats-Rollup: sub` replaces the previous),
//! not in a separate KV bucket: in the same stream as the partition's
//! barrier, so each write expects the writer's barrier ([`super::barrier`])
//! and a stale owner's snapshot is refused like its frames.
//!
//! Once a snapshot is stored, the owner purges the match's events below
//! it from `TL_EVENTS` ([`trim`]): the stream holds, per match, only what
//! its snapshot does not cover. A new owner reads the partition's
//! snapshots ([`of_partition`]) after raising its barrier, restores each
//! match from its own, and skips the events at or below its position.

use async_nats::HeaderMap;
use async_nats::jetstream::consumer::{DeliverPolicy, pull::OrderedConfig};
use async_nats::jetstream::context::PublishErrorKind;
use async_nats::jetstream::stream::LastRawMessageErrorKind;
use futures_util::StreamExt as _;

use super::partition::{match_id, token};
use super::streams::{Cluster, EVENTS_STREAM, FRAMES_STREAM};
use super::{ClusterError, barrier};
use crate::journal::SnapshotRecord;

/// The `TL_EVENTS` sequence of the last event a snapshot covers.
const POSITION: &str = "Tl-Position";

/// One match's stored snapshot.
#[derive(Debug, Clone, PartialEq)]
pub struct Stored {
    pub match_id: String,
    pub record: SnapshotRecord,
    /// The last event it covers, as a `TL_EVENTS` sequence.
    pub position: u64,
}

/// `tl.fs.<p>.<match>`.
pub fn snapshot_subject(partition: u32, match_id: &str) -> Result<String, ClusterError> {
    Ok(format!("tl.fs.{partition}.{}", token(match_id)?))
}

fn encode(record: &SnapshotRecord) -> Result<Vec<u8>, ClusterError> {
    bincode::serde::encode_to_vec(record, bincode::config::standard())
        .map_err(|e| ClusterError::Config(format!("encoding a snapshot: {e}")))
}

fn decode(bytes: &[u8]) -> Option<SnapshotRecord> {
    bincode::serde::decode_from_slice(bytes, bincode::config::standard())
        .ok()
        .map(|(r, _)| r)
}

/// Store `record` as `match_id`'s snapshot, covering the events up to
/// `position`, if partition `partition`'s barrier is still at `barrier`.
/// `Ok(false)`: refused by a later tenure's barrier.
pub async fn write(
    cluster: &Cluster,
    partition: u32,
    match_id: &str,
    record: &SnapshotRecord,
    (position, barrier_at): (u64, u64),
) -> Result<bool, ClusterError> {
    let subject = snapshot_subject(partition, match_id)?;
    let mut headers = HeaderMap::new();
    headers.insert(POSITION, position.to_string().as_str());
    headers.insert(async_nats::header::NATS_ROLLUP, "sub");
    barrier::expect(&mut headers, partition, barrier_at);
    let failed = |source: async_nats::Error| ClusterError::Publish {
        subject: subject.clone(),
        source,
    };
    let ack = cluster
        .js
        .publish_with_headers(subject.clone(), headers, encode(record)?.into())
        .await
        .map_err(|e| failed(e.into()))?;
    match ack.await {
        Ok(_) => Ok(true),
        Err(e) if e.kind() == PublishErrorKind::WrongLastSequence => Ok(false),
        Err(e) => Err(failed(e.into())),
    }
}

/// Purge `match_id`'s events up to and including `position` from
/// `TL_EVENTS` (a stored snapshot covers them); how many went.
pub async fn trim(cluster: &Cluster, partition: u32, match_id: &str, position: u64) -> Result<u64, ClusterError> {
    let subject = super::partition::event_subject(partition, match_id)?;
    let failed = |source: async_nats::Error| ClusterError::Setup {
        what: format!("trimming {subject}"),
        source,
    };
    let stream = cluster
        .js
        .get_stream_no_info(EVENTS_STREAM)
        .await
        .map_err(|e| failed(e.into()))?;
    let purged = stream
        .purge()
        .filter(subject.clone())
        .sequence(position + 1)
        .await
        .map_err(|e| failed(e.into()))?;
    Ok(purged.purged)
}

/// Every stored snapshot of partition `partition`'s matches.
pub async fn of_partition(cluster: &Cluster, partition: u32) -> Result<Vec<Stored>, ClusterError> {
    let filter = format!("tl.fs.{partition}.>");
    let failed = |source: async_nats::Error| ClusterError::Setup {
        what: format!("reading the snapshots of partition {partition}"),
        source,
    };
    let stream = cluster
        .js
        .get_stream(FRAMES_STREAM)
        .await
        .map_err(|e| failed(e.into()))?;
    match stream.get_last_raw_message_by_subject(&filter).await {
        Ok(_) => {}
        Err(e) if e.kind() == LastRawMessageErrorKind::NoMessageFound => return Ok(Vec::new()),
        Err(e) => return Err(failed(e.into())),
    }
    let consumer = stream
        .create_consumer(OrderedConfig {
            filter_subject: filter,
            deliver_policy: DeliverPolicy::LastPerSubject,
            ..Default::default()
        })
        .await
        .map_err(|e| failed(e.into()))?;
    let mut messages = consumer.messages().await.map_err(|e| failed(e.into()))?;
    let mut out = Vec::new();
    while let Some(m) = messages.next().await {
        let m = m.map_err(|e| failed(e.into()))?;
        let pending = m.info().map_err(failed)?.pending;
        let id = m.subject.as_str().rsplit('.').next().and_then(match_id);
        let position = m
            .headers
            .as_ref()
            .and_then(|h| h.get(POSITION))
            .and_then(|v| v.as_str().parse().ok());
        match (id, position, decode(&m.payload)) {
            (Some(match_id), Some(position), Some(record)) => out.push(Stored {
                match_id,
                record,
                position,
            }),
            // Its covered events may be trimmed already: the match starts
            // again from what remains (an operator's matter, so loud).
            _ => tracing::error!(subject = %m.subject, "unreadable snapshot: skipped"),
        }
        if pending == 0 {
            break;
        }
    }
    Ok(out)
}
