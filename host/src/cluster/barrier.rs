//! The store side of fencing: a partition's *barrier* in `TL_FRAMES`.
//!
//! The local fence ([`super::Fence`]) stops a node that runs; it cannot
//! stop one that was paused (SIGSTOP, a VM freeze) with frames already
//! handed to its NATS client: they leave when it resumes, after another
//! node has taken the partition. So the stream refuses them:
//!
//! 1. A new owner, before it applies anything of partition `p`, *raises*
//!    the barrier: it writes its lease token to `tl.fb.<p>` (in
//!    `TL_FRAMES`), expecting the subject's last sequence it has just read,
//!    and keeps the sequence the stream gives that write.
//! 2. Every frame it publishes (`tl.fo.<match>`) expects that sequence to
//!    still be the last of `tl.fb.<p>`
//!    (`Nats-Expected-Last-Subject-Sequence` with
//!    `Nats-Expected-Last-Subject-Sequence-Subject`, nats-server 2.11+).
//! 3. `TL_FRAMES` republishes to `tl.fr.<match>` only what it stored. Once
//!    the next owner has raised its barrier, every frame of the previous
//!    tenure is refused, whenever it arrives, and no relay ever sees it.
//!
//! Raising is itself conditional: a write expecting a sequence that has
//! moved fails and is retried after reading again. A raise finding a
//! *newer* token (fencing tokens are revisions of the leases' stream, so
//! they only grow) stops: this node was superseded and must not take the
//! barrier back. Frames are published without waiting for acknowledgements
//! (core publish, in order): a refused one is simply not stored, which the
//! relays see as a gap if it was not a stale owner's.

use async_nats::HeaderMap;
use async_nats::jetstream::context::PublishErrorKind;
use async_nats::jetstream::stream::LastRawMessageErrorKind;

use super::partition::barrier_subject;
use super::streams::{Cluster, FRAMES_STREAM};
use super::{ClusterError, frames};

/// Header naming the subject whose last sequence a publish expects.
const EXPECTED_SUBJECT: &str = "Nats-Expected-Last-Subject-Sequence-Subject";

/// Attempts of one raise before it reports failure (each conflict means
/// another writer moved the barrier in between: a contended takeover).
const ATTEMPTS: usize = 8;

/// What raising the barrier found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Raised {
    /// Ours: frames expecting this sequence are stored.
    Held { sequence: u64 },
    /// A later tenure's token is on it: this node no longer owns the
    /// partition.
    Superseded { by: u64 },
}

/// Raise partition `partition`'s barrier under `token` (idempotent: a
/// barrier already ours is returned as it is).
pub async fn raise(cluster: &Cluster, partition: u32, token: u64) -> Result<Raised, ClusterError> {
    let subject = barrier_subject(partition);
    let failed = |what: &str| {
        let what = format!("{what} {subject}");
        move |source: async_nats::Error| ClusterError::Setup { what, source }
    };
    let stream = cluster
        .js
        .get_stream(FRAMES_STREAM)
        .await
        .map_err(|e| failed("opening the stream for")(e.into()))?;
    for _ in 0..ATTEMPTS {
        let last = match stream.get_last_raw_message_by_subject(&subject).await {
            Ok(m) => Some((m.sequence, holder(&m.headers))),
            Err(e) if e.kind() == LastRawMessageErrorKind::NoMessageFound => None,
            Err(e) => return Err(failed("reading")(e.into())),
        };
        match last {
            Some((sequence, Some(held))) if held == token => return Ok(Raised::Held { sequence }),
            Some((_, Some(held))) if held > token => return Ok(Raised::Superseded { by: held }),
            _ => {}
        }
        let mut headers = HeaderMap::new();
        headers.insert(frames::TOKEN, token.to_string().as_str());
        let expected = last.map_or(0, |(s, _)| s).to_string();
        headers.insert(
            async_nats::header::NATS_EXPECTED_LAST_SUBJECT_SEQUENCE,
            expected.as_str(),
        );
        let ack = cluster
            .js
            .publish_with_headers(subject.clone(), headers, bytes::Bytes::new())
            .await
            .map_err(|e| failed("writing")(e.into()))?;
        match ack.await {
            Ok(ack) => return Ok(Raised::Held { sequence: ack.sequence }),
            // Moved since we read it (or our earlier attempt landed and
            // its acknowledgement was lost): read again.
            Err(e) if e.kind() == PublishErrorKind::WrongLastSequence => continue,
            Err(e) => return Err(failed("writing")(e.into())),
        }
    }
    Err(ClusterError::TimedOut("raising a partition's frame barrier"))
}

/// Make a frame's publish expect partition `partition`'s barrier to be
/// still at `sequence`.
pub fn expect(headers: &mut HeaderMap, partition: u32, sequence: u64) {
    headers.insert(
        async_nats::header::NATS_EXPECTED_LAST_SUBJECT_SEQUENCE,
        sequence.to_string().as_str(),
    );
    headers.insert(EXPECTED_SUBJECT, barrier_subject(partition).as_str());
}

/// The token a barrier message carries.
fn holder(headers: &HeaderMap) -> Option<u64> {
    headers.get(frames::TOKEN)?.as_str().parse().ok()
}
