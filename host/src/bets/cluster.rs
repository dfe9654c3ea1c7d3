//! Bets in a cluster: any node takes a bet, the match's owner decides it,
//! and the decision is recorded in JetStream before anyone is answered
//! (`cluster::bets` has the subjects and buckets).
//!
//! - **The receiving node** ([`Remote::place`]) sends the bet to
//!   `tl.bet.<p>` and waits for the owner's answer, asking again (with
//!   backoff) while nobody answers or the owner says to: during a failover
//!   nobody holds `p` for about a lease TTL. Past [`BET_PATIENCE`] it
//!   records a rejection itself, `unavailable`, under the same
//!   first-record-wins rule as the owner: either the rejection stands and
//!   no owner can decide the bet later, or a decision was recorded first
//!   and that one is the answer. Exactly one decision, whoever writes it.
//! - **The owner** ([`Desk::decide_owned`], one responder per partition
//!   it holds, [`serve_owned`]) claims the id cluster-wide (KV create;
//!   another bet under the id is an `id_conflict`), returns a decision
//!   already recorded (a retry, on this owner or an earlier one), and
//!   otherwise waits until it has handed its workers every event of the
//!   partition stored when the bet arrived (and the partition's recorded
//!   bets), so the decision sees at least the odds any node had published
//!   by then: a producer's recovery is announced only after its events
//!   are stored. Then the match's worker decides and records
//!   ([`JetStreamBets`]): first-wins, the message id a hash of the record
//!   (so only a retry of the same record is a duplicate). Only a recorded
//!   accepted bet joins the match's bets.
//! - **Settlements** are recorded by the owner's workers as new records
//!   of the bet; every node hears the records (`tl.bd.>`) and tells the
//!   sessions that placed those bets there.
//! - **A new owner** follows the partition's records for its tenure
//!   (`feed::cluster`): each accepted bet goes to its match's worker,
//!   which brings its standing up to date at once.

use std::sync::{Arc, OnceLock};
use std::time::Duration;

use futures_util::StreamExt as _;
use futures_util::future::BoxFuture;
use tokio::sync::{Semaphore, oneshot, watch};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use touchline_guest::bet::BetRequest;

use super::{Answer, Desk, Owners, same_bet};
use crate::cluster::bets::{Ask, BetBook, Claim, Progress, Reply};
use crate::cluster::partition::bet_subject;
use crate::cluster::{Fence, Owned, Partitions};
use crate::journal::BetRecord;
use crate::worker::{BetLog, Command};

/// How long a node waits for the match's owner to answer a bet (a
/// failover takes a lease TTL and a round of balancing) before it rejects
/// it `unavailable`.
pub const BET_PATIENCE: Duration = Duration::from_secs(10);

/// One attempt's wait for the owner's answer.
const ATTEMPT: Duration = Duration::from_secs(3);

/// How long an owner waits to have applied what was stored before a bet
/// arrived; past it the bet is asked again.
const CATCH_UP: Duration = Duration::from_secs(2);

/// How long a worker retries recording a decision. Shorter than
/// [`BET_PATIENCE`], so it usually ends first; when it does not, the
/// first-wins record decides which of the two stands.
const RECORD_PATIENCE: Duration = Duration::from_secs(5);

/// How long a settlement record is retried (a new owner recomputes and
/// records them anyway).
const CHANGE_PATIENCE: Duration = Duration::from_secs(30);

/// Bets an owner decides at once; more wait for a slot.
const DECIDING: usize = 256;

/// The receiving side: sends bets to their owners.
pub struct Remote {
    pub book: BetBook,
    pub partitions: Partitions,
}

impl Remote {
    /// The recorded answer to this bet, and whether it is a new decision.
    pub async fn place(&self, match_id: String, request: BetRequest, rejected: Option<String>) -> (Answer, bool) {
        let id = request.id.clone();
        let p = self.partitions.partition_of(&match_id);
        let ask = Ask {
            match_id,
            request,
            rejected,
        };
        let payload = match serde_json::to_vec(&ask) {
            Ok(p) => bytes::Bytes::from(p),
            Err(e) => return (Answer::rejected(&id, format!("invalid_bet: {e}")), true),
        };
        let give_up = Instant::now() + BET_PATIENCE;
        let mut backoff = Duration::from_millis(50);
        loop {
            // No attempt outlasts the patience.
            let attempt = ATTEMPT.min(give_up.saturating_duration_since(Instant::now()));
            let asked = self
                .book
                .client()
                .send_request(
                    bet_subject(p),
                    async_nats::Request::new()
                        .payload(payload.clone())
                        .timeout(Some(attempt)),
                )
                .await;
            let why = match asked.map(|m| serde_json::from_slice::<Reply>(&m.payload)) {
                Ok(Ok(Reply::Decided { record, replay })) => return (Answer::from_record(&record), !replay),
                Ok(Ok(Reply::Conflict)) => return (Answer::rejected(&id, ID_CONFLICT), true),
                Ok(Ok(Reply::Retry(why))) => why,
                Ok(Err(e)) => format!("unreadable answer: {e}"),
                Err(e) => e.to_string(),
            };
            if Instant::now() + backoff >= give_up {
                tracing::warn!(bet = %id, partition = p, last = %why, "the match's owner did not answer in time");
                return self.give_up(p, ask).await;
            }
            tracing::debug!(bet = %id, partition = p, why, "asking the match's owner again");
            tokio::time::sleep(backoff).await;
            backoff = (backoff * 2).min(Duration::from_millis(500));
        }
    }

    /// Record the bet as rejected `unavailable` unless a decision was
    /// recorded first (then that one is the answer).
    async fn give_up(&self, p: u32, ask: Ask) -> (Answer, bool) {
        let reason = format!(
            "unavailable: the match's owner did not answer within {} s",
            BET_PATIENCE.as_secs()
        );
        let id = ask.request.id.clone();
        match self.book.claim(&ask.match_id, &ask.request, same_bet).await {
            Ok(Claim::Other) => return (Answer::rejected(&id, ID_CONFLICT), true),
            Ok(_) => {}
            Err(e) => {
                tracing::warn!(bet = %id, error = %e, "the rejection could not be recorded");
                return (Answer::rejected(&id, NOT_RECORDED), true);
            }
        }
        let record = unrouted(ask.match_id, ask.request, &reason);
        match self.book.record_decision(p, &record).await {
            Ok(None) => (Answer::from_record(&record), true),
            Ok(Some(stored)) => (Answer::from_record(&stored), false),
            Err(e) => {
                tracing::warn!(bet = %id, error = %e, "the rejection could not be recorded");
                (Answer::rejected(&id, NOT_RECORDED), true)
            }
        }
    }

    /// `GET /api/bets/{id}`: the last record, from the cluster.
    pub async fn lookup(&self, id: &str) -> Option<Answer> {
        let match_id = self.book.claimed_match(id).await.ok()??;
        let p = self.partitions.partition_of(&match_id);
        let record = self.book.recorded(p, id).await.ok()??;
        Some(Answer::from_record(&record))
    }
}

const ID_CONFLICT: &str = "id_conflict: this id was used for another bet";

/// The owner did not answer and the cluster could not be written either:
/// the outcome is not known here (an owner may still decide the bet).
const NOT_RECORDED: &str =
    "unavailable: the cluster did not answer; the outcome is unknown, ask again with the same id";

/// A decision made without a worker (rejected on its face, unknown match,
/// the owner unreachable).
fn unrouted(match_id: String, request: BetRequest, reason: &str) -> BetRecord {
    BetRecord {
        match_id,
        request,
        decision: Err(reason.to_owned()),
        seq: 0,
        epoch: 0,
        decided_at: 0,
        settlement: None,
    }
}

/// What an owner needs to decide a partition's bets.
#[derive(Clone)]
pub struct Owner {
    pub desk: Arc<Desk>,
    pub book: BetBook,
    pub progress: Arc<Progress>,
    pub fence: Arc<Fence>,
}

impl Desk {
    /// Decide (or find the decision of) a bet for partition `p`, held
    /// under `token`.
    async fn decide_owned(&self, owner: &Owner, (p, token): (u32, u64), ask: Ask) -> Reply {
        let retry = |why: String| Reply::Retry(why);
        let id = ask.request.id.clone();
        // Being decided here already (an earlier attempt of the same
        // request): the next attempt finds its record.
        let Some(_claim) = self.try_claim(&id) else {
            return retry("being decided".into());
        };
        match owner.book.claim(&ask.match_id, &ask.request, same_bet).await {
            Err(e) => return retry(format!("claiming the id: {e}")),
            Ok(Claim::Other) => return Reply::Conflict,
            Ok(Claim::Same) => match owner.book.recorded(p, &id).await {
                Err(e) => return retry(format!("reading the record: {e}")),
                // (Its worker learns it from the partition's records.)
                Ok(Some(record)) => return Reply::Decided { record, replay: true },
                // Claimed by a request whose decision was never recorded
                // (its owner died first): decided now.
                Ok(None) => {}
            },
            Ok(Claim::New) => {}
        }
        if let Some(reason) = ask.rejected {
            return record_unrouted(owner, p, unrouted(ask.match_id, ask.request, &reason)).await;
        }
        let stored = match owner.book.last_event(p).await {
            Ok(s) => s,
            Err(e) => return retry(format!("reading the partition's last event: {e}")),
        };
        if !owner.progress.reached(p, token, stored, CATCH_UP).await {
            return retry(format!("partition {p} not applied up to {stored} yet"));
        }
        if !owner.fence.holds(p, token) {
            return retry("not the owner any more".into());
        }
        let Some(handle) = self.router.local(&ask.match_id) else {
            return record_unrouted(owner, p, unrouted(ask.match_id, ask.request, "unknown_match")).await;
        };
        let (tx, rx) = oneshot::channel();
        let request = ask.request;
        if handle.mailbox.send(Command::Bet { request, reply: tx }).await.is_err() {
            return retry("the match's worker stopped".into());
        }
        match rx.await {
            Ok(Ok(record)) => Reply::Decided { record, replay: false },
            Ok(Err(e)) => retry(format!("not recorded: {e}")),
            Err(_) => retry("the match's worker stopped".into()),
        }
    }
}

async fn record_unrouted(owner: &Owner, p: u32, record: BetRecord) -> Reply {
    match owner.book.record_decision(p, &record).await {
        Ok(None) => Reply::Decided { record, replay: false },
        Ok(Some(stored)) => Reply::Decided {
            record: stored,
            replay: true,
        },
        Err(e) => Reply::Retry(format!("recording: {e}")),
    }
}

/// Answer `tl.bet.<p>` for every partition this node holds, one responder
/// per tenure, until `stop`.
pub fn serve_owned(owner: Owner, owned: watch::Receiver<Owned>, stop: CancellationToken, tasks: &TaskTracker) {
    let spawner = tasks.clone();
    let slots = Arc::new(Semaphore::new(DECIDING));
    let start = move |p: u32, token: u64, cancel: CancellationToken| {
        spawner.spawn(respond(owner.clone(), (p, token), slots.clone(), cancel));
    };
    crate::cluster::tenures::each(owned, stop, tasks, start, |_| {});
}

async fn respond(owner: Owner, (p, token): (u32, u64), slots: Arc<Semaphore>, cancel: CancellationToken) {
    let client = owner.book.client().clone();
    let mut requests = match client.subscribe(bet_subject(p)).await {
        Ok(s) => s,
        Err(e) => return tracing::warn!(partition = p, error = %e, "cannot take bets"),
    };
    loop {
        let request = tokio::select! {
            _ = cancel.cancelled() => return,
            next = requests.next() => match next { Some(r) => r, None => return },
        };
        let Some(reply_to) = request.reply else { continue };
        let Ok(slot) = slots.clone().acquire_owned().await else {
            return;
        };
        let (owner, client) = (owner.clone(), client.clone());
        tokio::spawn(async move {
            let reply = match serde_json::from_slice::<Ask>(&request.payload) {
                Err(e) => Reply::Retry(format!("unreadable bet: {e}")),
                Ok(_) if !owner.fence.holds(p, token) => Reply::Retry("not the owner".into()),
                // Bounded like one attempt of the receiving node: past it
                // that node asks again (and finds the record, if any).
                Ok(ask) => tokio::time::timeout(ATTEMPT, owner.desk.decide_owned(&owner, (p, token), ask))
                    .await
                    .unwrap_or_else(|_| Reply::Retry("not decided in time".into())),
            };
            drop(slot);
            match serde_json::to_vec(&reply) {
                Ok(body) => {
                    if let Err(e) = client.publish(reply_to, body.into()).await {
                        tracing::debug!(partition = p, error = %e, "bet answer not sent");
                    }
                }
                Err(e) => tracing::error!(error = %e, "bet answer not encodable"),
            }
        });
    }
}

/// Records bets in `TL_BETS` for this node's workers; refuses for a
/// partition this node does not hold now.
pub struct JetStreamBets {
    book: BetBook,
    partitions: Partitions,
    fence: OnceLock<Arc<Fence>>,
}

impl JetStreamBets {
    pub fn new(book: BetBook, partitions: Partitions) -> JetStreamBets {
        JetStreamBets {
            book,
            partitions,
            fence: OnceLock::new(),
        }
    }

    /// The leases' fence, once they are kept (no worker runs before).
    pub fn set_fence(&self, fence: Arc<Fence>) {
        let _ = self.fence.set(fence);
    }

    fn held(&self, p: u32) -> bool {
        self.fence.get().is_some_and(|f| f.token(p).is_some())
    }
}

impl BetLog for Arc<JetStreamBets> {
    fn decided(&self, record: BetRecord) -> BoxFuture<'static, Result<Option<BetRecord>, String>> {
        Box::pin(self.clone().record(record, true))
    }

    fn changed(&self, record: BetRecord) -> BoxFuture<'static, Result<(), String>> {
        let recorded = self.clone().record(record, false);
        Box::pin(async move { recorded.await.map(drop) })
    }
}

impl JetStreamBets {
    /// Record a decision (first-wins: the record that stands if another
    /// did) or a change of standing, retried while this node holds the
    /// bet's partition, for the patience of each.
    async fn record(self: Arc<Self>, record: BetRecord, decision: bool) -> Result<Option<BetRecord>, String> {
        let p = self.partitions.partition_of(&record.match_id);
        let patience = if decision { RECORD_PATIENCE } else { CHANGE_PATIENCE };
        retrying(patience, || async {
            if !self.held(p) {
                return Err("partition not held".to_owned());
            }
            let recorded = if decision {
                self.book.record_decision(p, &record).await
            } else {
                self.book.record_change(p, &record).await.map(|()| None)
            };
            recorded.map_err(|e| e.to_string())
        })
        .await
    }
}

/// `attempt` until it succeeds or `patience` has passed (backoff 50 ms
/// doubling to 1 s); the last error.
async fn retrying<T, F, Fut>(patience: Duration, mut attempt: F) -> Result<T, String>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, String>>,
{
    let give_up = Instant::now() + patience;
    let mut backoff = Duration::from_millis(50);
    loop {
        match attempt().await {
            Ok(v) => return Ok(v),
            Err(e) if Instant::now() + backoff >= give_up => return Err(e),
            Err(_) => {}
        }
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(Duration::from_secs(1));
    }
}

/// Tell the sessions of this node about settlements of the bets they
/// placed, from the records every owner publishes (`tl.bd.>`), until
/// `stop`. Decisions are answered to their session directly.
pub fn hear_settlements(client: async_nats::Client, owners: Arc<Owners>, stop: CancellationToken, tasks: &TaskTracker) {
    tasks.spawn(async move {
        let mut records = match client.subscribe("tl.bd.>").await {
            Ok(s) => s,
            Err(e) => return tracing::error!(error = %e, "cannot hear bet settlements"),
        };
        loop {
            let m = tokio::select! {
                _ = stop.cancelled() => return,
                m = records.next() => match m { Some(m) => m, None => return },
            };
            if let Ok(record) = serde_json::from_slice::<BetRecord>(&m.payload)
                && record.settlement.is_some()
            {
                owners.notify(Answer::from_record(&record));
            }
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn retrying_stops_at_success_or_patience() {
        let mut n = 0;
        let ok = retrying(Duration::from_secs(5), || {
            n += 1;
            let v = n;
            async move { if v < 3 { Err(format!("try {v}")) } else { Ok(v) } }
        })
        .await;
        assert_eq!(ok, Ok(3));
        let started = Instant::now();
        let failed: Result<(), String> = retrying(Duration::from_secs(5), || async { Err("down".to_owned()) }).await;
        assert_eq!(failed, Err("down".to_owned()));
        assert!(started.elapsed() <= Duration::from_secs(5), "{:?}", started.elapsed());
        assert!(started.elapsed() >= Duration::from_secs(3), "{:?}", started.elapsed());
    }
}
