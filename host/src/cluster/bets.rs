//! Bets in JetStream: the cluster-wide claim of a bet id, the decision
//! records, and the request a node sends a match's owner. NATS only: the
//! desk (`bets::cluster`) and the workers decide.
//!
//! | where | what |
//! |---|---|
//! | KV `TL_BET_IDS`, key = the bet id in hex | the first request under that id (match and bet), created once: the id is claimed cluster-wide |
//! | stream `TL_BETS`, `tl.bd.<p>.<id in hex>` | the bet's record: the decision first (published only if the subject is empty: `Nats-Expected-Last-Subject-Sequence: 0`), then each change of its standing |
//! | `tl.bet.<p>` | a node asks partition `p`'s owner to decide ([`Ask`], answered with a [`Reply`]) |
//!
//! Both are written with the stream's replication before anyone is
//! answered, so a decision outlives its owner: a new owner reads
//! `tl.bd.<p>.>` (the last record of each bet) when it takes `p`.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use async_nats::HeaderMap;
use async_nats::jetstream::consumer::{DeliverPolicy, pull::OrderedConfig};
use async_nats::jetstream::context::PublishErrorKind;
use async_nats::jetstream::kv;
use async_nats::jetstream::stream::LastRawMessageErrorKind;
use futures_util::{Stream, StreamExt as _};
use serde::{Deserialize, Serialize};
use tokio::sync::watch;
use touchline_guest::bet::BetRequest;

use super::ClusterError;
use super::ingest::message_id;
use super::partition::partition_events;
use super::streams::{BETS_STREAM, Cluster, EVENTS_STREAM, bucket};
use crate::journal::BetRecord;

/// The bucket of claimed bet ids.
pub const IDS_BUCKET: &str = "TL_BET_IDS";

/// A bet id as a KV key and a subject token: its bytes in lowercase hex
/// (ids are 1 to 128 bytes of anything; keys allow few characters).
pub fn key(id: &str) -> String {
    let mut out = String::with_capacity(id.len() * 2);
    for b in id.bytes() {
        out.push(char::from_digit(u32::from(b >> 4), 16).unwrap_or('0'));
        out.push(char::from_digit(u32::from(b & 0xf), 16).unwrap_or('0'));
    }
    out
}

/// `tl.bd.<p>.<key>`: the records of one bet.
pub fn record_subject(partition: u32, id: &str) -> String {
    format!("tl.bd.{partition}.{}", key(id))
}

/// `tl.bd.<p>.>`: the records of every bet on partition `p`.
pub fn partition_records(partition: u32) -> String {
    format!("tl.bd.{partition}.>")
}

/// A bet sent to its match's owner.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Ask {
    pub match_id: String,
    pub request: BetRequest,
    /// Rejected on its face by the node that received it (stake, odds,
    /// market id): the owner records that reason without deciding.
    pub rejected: Option<String>,
}

/// The owner's answer.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum Reply {
    /// The decision recorded for this bet; `replay`: an earlier request's.
    Decided { record: BetRecord, replay: bool },
    /// The id was claimed by another bet (another match or other content).
    Conflict,
    /// Not decided: ask again (not the owner any more, not caught up yet,
    /// NATS trouble). The reason is for logs.
    Retry(String),
}

/// What a claim found.
#[derive(Debug, Clone, PartialEq)]
pub enum Claim {
    /// This request is the first under its id.
    New,
    /// The same bet was claimed before (a retry, maybe on another owner).
    Same,
    /// Another bet holds the id.
    Other,
}

/// The bet claims and records of a connected node.
#[derive(Debug, Clone)]
pub struct BetBook {
    cluster: Cluster,
    ids: kv::Store,
}

#[derive(Serialize, Deserialize, PartialEq)]
struct Claimed {
    match_id: String,
    request: BetRequest,
}

impl BetBook {
    /// Open (create or update) the ids bucket.
    pub async fn open(cluster: &Cluster) -> Result<BetBook, ClusterError> {
        let ids = cluster
            .js
            .create_or_update_key_value(bucket(IDS_BUCKET, &cluster.config, Duration::ZERO))
            .await
            .map_err(|e| ClusterError::Setup {
                what: format!("bucket {IDS_BUCKET}"),
                source: e.into(),
            })?;
        Ok(BetBook {
            cluster: cluster.clone(),
            ids,
        })
    }

    pub fn client(&self) -> &async_nats::Client {
        &self.cluster.client
    }

    pub fn cluster(&self) -> &Cluster {
        &self.cluster
    }

    /// Claim `request.id` for this bet (a KV create). Bets compare as the
    /// desk compares them (`same`).
    pub async fn claim(
        &self,
        match_id: &str,
        request: &BetRequest,
        same: impl Fn(&BetRequest, &BetRequest) -> bool,
    ) -> Result<Claim, ClusterError> {
        let key = key(&request.id);
        let value = serde_json::to_vec(&Claimed {
            match_id: match_id.to_owned(),
            request: request.clone(),
        })
        .map_err(|e| ClusterError::Config(format!("bet not encodable: {e}")))?;
        match self.ids.create(&key, value.into()).await {
            Ok(_) => return Ok(Claim::New),
            Err(e) if e.kind() == kv::CreateErrorKind::AlreadyExists => {}
            Err(e) => return Err(ClusterError::kv("create", IDS_BUCKET, &key)(e.into())),
        }
        let held = self
            .ids
            .get(&key)
            .await
            .map_err(|e| ClusterError::kv("get", IDS_BUCKET, &key)(e.into()))?;
        let held = held.and_then(|v| serde_json::from_slice::<Claimed>(&v).ok());
        Ok(match held {
            Some(c) if c.match_id == match_id && same(&c.request, request) => Claim::Same,
            _ => Claim::Other,
        })
    }

    /// The match a claimed id was placed on.
    pub async fn claimed_match(&self, id: &str) -> Result<Option<String>, ClusterError> {
        let key = key(id);
        let held = self
            .ids
            .get(&key)
            .await
            .map_err(|e| ClusterError::kv("get", IDS_BUCKET, &key)(e.into()))?;
        Ok(held
            .and_then(|v| serde_json::from_slice::<Claimed>(&v).ok())
            .map(|c| c.match_id))
    }

    /// The last record of bet `id` on partition `p`, if any.
    pub async fn recorded(&self, partition: u32, id: &str) -> Result<Option<BetRecord>, ClusterError> {
        let subject = record_subject(partition, id);
        let stream = self.stream(BETS_STREAM).await?;
        match stream.get_last_raw_message_by_subject(&subject).await {
            Ok(m) => Ok(serde_json::from_slice(&m.payload).ok()),
            Err(e) if e.kind() == LastRawMessageErrorKind::NoMessageFound => Ok(None),
            Err(e) => Err(ClusterError::Setup {
                what: format!("reading {subject}"),
                source: e.into(),
            }),
        }
    }

    /// Record a bet's decision, unless one is recorded already (then that
    /// one is returned: it stands). Retrying the same record is safe (its
    /// message id makes a stored one a duplicate, not a conflict).
    pub async fn record_decision(&self, partition: u32, record: &BetRecord) -> Result<Option<BetRecord>, ClusterError> {
        let mut headers = HeaderMap::new();
        headers.insert(async_nats::header::NATS_EXPECTED_LAST_SUBJECT_SEQUENCE, "0");
        // The message id is the record's content: a retry of a stored
        // record is a duplicate (acknowledged, not stored twice), while any
        // other record for the bet (another writer's, another decision)
        // meets the expected sequence and loses. (The server checks the
        // message id before the expected sequence: an id shared by two
        // different records would acknowledge the second as stored.)
        let payload = serde_json::to_vec(record).map_err(|e| ClusterError::Config(format!("bet record: {e}")))?;
        let id = message_id(&record.request.id, &payload);
        headers.insert(async_nats::header::NATS_MESSAGE_ID, id.as_str());
        match self.publish(partition, record, headers).await {
            Ok(false) => Ok(None),
            // A duplicate: stored before (this record, by a retry). Read
            // back, so whatever stands is what is answered.
            Ok(true) | Err(Some(PublishErrorKind::WrongLastSequence)) => {
                match self.recorded(partition, &record.request.id).await? {
                    Some(stored) if stored == *record => Ok(None),
                    Some(stored) => Ok(Some(stored)),
                    None => Err(ClusterError::Config(format!(
                        "bet {}: a record exists but cannot be read",
                        record.request.id
                    ))),
                }
            }
            Err(_) => Err(ClusterError::TimedOut("recording a bet decision")),
        }
    }

    /// Record where an accepted bet stands now (a settlement, a void, a
    /// rollback).
    /// No message id: a change may repeat an earlier one (won, rolled
    /// back, won again), and a retry stored twice only repeats the last.
    pub async fn record_change(&self, partition: u32, record: &BetRecord) -> Result<(), ClusterError> {
        self.publish(partition, record, HeaderMap::new())
            .await
            .map(drop)
            .map_err(|_| ClusterError::TimedOut("recording a bet's settlement"))
    }

    async fn publish(
        &self,
        partition: u32,
        record: &BetRecord,
        headers: HeaderMap,
    ) -> Result<bool, Option<PublishErrorKind>> {
        let payload = serde_json::to_vec(record).map_err(|_| None)?;
        let subject = record_subject(partition, &record.request.id);
        let ack = self
            .cluster
            .js
            .publish_with_headers(subject, headers, payload.into())
            .await
            .map_err(|e| Some(e.kind()))?;
        ack.await.map(|a| a.duplicate).map_err(|e| Some(e.kind()))
    }

    /// Partition `p`'s bet records: first the last record of every bet,
    /// then each new one, for as long as the stream is read. Each item
    /// says whether the backlog is read (`caught_up`); with no record yet
    /// the first item is `(None, true)`.
    pub async fn records(
        &self,
        partition: u32,
    ) -> Result<impl Stream<Item = Result<(Option<BetRecord>, bool), ClusterError>> + Send + use<>, ClusterError> {
        let failed = move |source: async_nats::Error| ClusterError::Setup {
            what: format!("the bets of partition {partition}"),
            source,
        };
        let stream = self.stream(BETS_STREAM).await?;
        let filter = partition_records(partition);
        let empty = match stream.get_last_raw_message_by_subject(&filter).await {
            Ok(_) => false,
            Err(e) if e.kind() == LastRawMessageErrorKind::NoMessageFound => true,
            Err(e) => return Err(failed(e.into())),
        };
        let consumer = stream
            .create_consumer(OrderedConfig {
                filter_subject: filter,
                deliver_policy: DeliverPolicy::LastPerSubject,
                ..Default::default()
            })
            .await
            .map_err(|e| failed(e.into()))?;
        let messages = consumer.messages().await.map_err(|e| failed(e.into()))?;
        let first = futures_util::stream::iter(empty.then_some(Ok((None, true))));
        Ok(first.chain(messages.map(move |m| {
            let m = m.map_err(|e| failed(e.into()))?;
            let pending = m.info().map(|i| i.pending).map_err(failed)?;
            Ok((serde_json::from_slice::<BetRecord>(&m.payload).ok(), pending == 0))
        })))
    }

    /// The stream sequence of partition `p`'s last stored event (0: none).
    pub async fn last_event(&self, partition: u32) -> Result<u64, ClusterError> {
        let stream = self.stream(EVENTS_STREAM).await?;
        match stream
            .get_last_raw_message_by_subject(&partition_events(partition))
            .await
        {
            Ok(m) => Ok(m.sequence),
            Err(e) if e.kind() == LastRawMessageErrorKind::NoMessageFound => Ok(0),
            Err(e) => Err(ClusterError::Setup {
                what: format!("the last event of partition {partition}"),
                source: e.into(),
            }),
        }
    }

    async fn stream(&self, name: &str) -> Result<async_nats::jetstream::stream::Stream, ClusterError> {
        self.cluster.js.get_stream(name).await.map_err(|e| ClusterError::Setup {
            what: format!("stream {name}"),
            source: e.into(),
        })
    }
}

/// How far this node's applier of a partition has come, in one tenure.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Applied {
    /// The fencing token of the tenure.
    pub token: u64,
    /// The stream sequence of the last event handed to its worker.
    pub sequence: u64,
    /// The partition's recorded bets are back in their workers: it may
    /// decide bets.
    pub bets_restored: bool,
}

/// Each partition's [`Applied`], written by its applier (`feed::cluster`)
/// and waited on by the bet desk before a decision.
#[derive(Debug, Default)]
pub struct Progress(Mutex<HashMap<u32, watch::Sender<Applied>>>);

impl Progress {
    /// A tenure begins: nothing applied yet.
    pub fn begin(&self, partition: u32, token: u64) -> watch::Sender<Applied> {
        let (tx, _) = watch::channel(Applied {
            token,
            ..Applied::default()
        });
        self.0.lock().expect("progress lock").insert(partition, tx.clone());
        tx
    }

    /// Wait until the applier of `partition` under `token` has handed its
    /// workers every event up to `sequence` and restored the bets, for at
    /// most `within`. `false`: not in time, or another tenure.
    pub async fn reached(&self, partition: u32, token: u64, sequence: u64, within: Duration) -> bool {
        let rx = self
            .0
            .lock()
            .expect("progress lock")
            .get(&partition)
            .map(|tx| tx.subscribe());
        let Some(mut rx) = rx else { return false };
        let done = rx.wait_for(|a| a.token != token || (a.bets_restored && a.sequence >= sequence));
        match tokio::time::timeout(within, done).await {
            Ok(Ok(a)) => a.token == token,
            _ => false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_hex_of_the_id_and_subjects_carry_them() {
        assert_eq!(key("b-1"), "622d31");
        assert_eq!(key("é"), "c3a9");
        assert_eq!(record_subject(7, "x"), "tl.bd.7.78");
        assert_eq!(partition_records(7), "tl.bd.7.>");
    }

    #[tokio::test(start_paused = true)]
    async fn progress_waits_for_the_sequence_and_the_bets_of_its_tenure() {
        let progress = Progress::default();
        assert!(!progress.reached(1, 5, 0, Duration::from_secs(1)).await, "no applier");
        let tx = progress.begin(1, 5);
        tx.send_modify(|a| a.sequence = 10);
        assert!(
            !progress.reached(1, 5, 10, Duration::from_secs(1)).await,
            "bets not back"
        );
        tx.send_modify(|a| a.bets_restored = true);
        assert!(progress.reached(1, 5, 10, Duration::from_secs(1)).await);
        assert!(
            !progress.reached(1, 5, 11, Duration::from_secs(1)).await,
            "not that far"
        );
        assert!(
            !progress.reached(1, 4, 1, Duration::from_secs(1)).await,
            "another tenure"
        );
    }
}
