//! Bet intake: validation, idempotency, routing to the match's worker,
//! durable confirmation.
//!
//! A bet is checked for shape and stake here (a malformed one never reaches
//! a worker), then its id is claimed so concurrent duplicates wait for the
//! first decision. An id already decided returns that decision (also after a
//! restart, from the store); the same id with other content is refused. The
//! match's worker decides between two feed events and answers only once the
//! decision is durable. In a cluster the match's owner decides and records
//! it in JetStream ([`cluster`]).

pub mod cluster;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use serde::Serialize;
use tokio::sync::{Notify, oneshot};
use touchline_guest::bet::BetRequest;
use touchline_guest::event::canonical_specifiers;

use crate::journal::{BetRecord, Journal, Op, sync};
use crate::metrics::Metrics;
use crate::router::Router;
use crate::store::StoreHandle;
use crate::worker::Command;

/// Stake and odds policy.
#[derive(Debug, Clone)]
pub struct Policy {
    pub min_stake: f64,
    pub max_stake: f64,
    /// Accept when current odds are better for the bettor than offered.
    pub accept_better_odds: bool,
}

/// A bet as a client sends it (ids already normalised to strings).
#[derive(Debug, Clone)]
pub struct ClientBet {
    pub id: String,
    pub match_id: String,
    pub market: String,
    pub specifiers: String,
    pub outcome: String,
    pub odds: f64,
    pub stake: f64,
}

/// Where a bet stands, as its answer says.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum BetStatus {
    #[default]
    Rejected,
    /// Accepted; open (also after a settlement was rolled back).
    Accepted,
    Won,
    Lost,
    Void,
}

impl BetStatus {
    pub fn code(self) -> &'static str {
        match self {
            BetStatus::Rejected => "rejected",
            BetStatus::Accepted => "accepted",
            BetStatus::Won => "won",
            BetStatus::Lost => "lost",
            BetStatus::Void => "void",
        }
    }

    fn of(settlement: Option<&touchline_guest::bet::Settlement>) -> BetStatus {
        use touchline_guest::bet::SettleStatus;
        match settlement.map(|s| s.status) {
            None | Some(SettleStatus::Open) => BetStatus::Accepted,
            Some(SettleStatus::Won) => BetStatus::Won,
            Some(SettleStatus::Lost) => BetStatus::Lost,
            Some(SettleStatus::Void) => BetStatus::Void,
        }
    }
}

impl Serialize for BetStatus {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.code())
    }
}

/// The answer to a client, also the body of `GET /api/bets/{id}`.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Answer {
    #[serde(rename = "type")]
    pub kind: &'static str,
    pub id: String,
    pub status: BetStatus,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// Accepted odds.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub odds: Option<f64>,
    #[serde(rename = "match", skip_serializing_if = "Option::is_none")]
    pub match_id: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub market: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub specifiers: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub outcome: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub stake: Option<f64>,
    /// Seq and epoch of the match state the decision saw.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub seq: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub epoch: Option<u64>,
    /// Once settled: what is paid out (stake included).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub payout: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub void_factor: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub dead_heat_factor: Option<f64>,
}

impl Answer {
    fn rejected(id: &str, reason: impl Into<String>) -> Answer {
        Answer {
            kind: "bet",
            id: id.to_owned(),
            status: BetStatus::Rejected,
            reason: Some(reason.into()),
            ..Default::default()
        }
    }

    pub fn from_record(r: &BetRecord) -> Answer {
        let (status, odds, reason) = match &r.decision {
            Ok(odds) => (BetStatus::of(r.settlement.as_ref()), Some(*odds), None),
            Err(reason) => (BetStatus::Rejected, None, Some(reason.clone())),
        };
        let settled = r
            .settlement
            .as_ref()
            .filter(|s| s.status != touchline_guest::bet::SettleStatus::Open);
        Answer {
            kind: "bet",
            id: r.request.id.clone(),
            status,
            reason,
            odds,
            match_id: Some(r.match_id.clone()),
            market: Some(r.request.market),
            specifiers: Some(r.request.specifiers.clone()),
            outcome: Some(r.request.outcome.clone()),
            stake: Some(r.request.stake),
            seq: Some(r.seq),
            epoch: Some(r.epoch),
            payout: settled.map(|s| s.payout),
            void_factor: settled.map(|s| s.void_factor),
            dead_heat_factor: settled.map(|s| s.dead_heat_factor),
        }
    }
}

/// Owners of bets connected right now, to tell them about settlements.
/// A full owner queue drops the message (the owner can still read
/// `GET /api/bets/{id}`), so a slow client never holds up a worker.
#[derive(Debug, Default)]
pub struct Owners {
    map: Mutex<HashMap<String, tokio::sync::mpsc::Sender<Answer>>>,
}

/// Messages queued per session for bet updates.
pub const OWNER_QUEUE: usize = 256;

impl Owners {
    pub fn register(&self, bet_id: &str, tx: tokio::sync::mpsc::Sender<Answer>) {
        self.map.lock().expect("owners lock").insert(bet_id.to_owned(), tx);
    }

    /// A session ends: forget the bets it owned (unless another session
    /// placed the same id since and owns it now).
    pub fn unregister(&self, bet_ids: &[String], tx: &tokio::sync::mpsc::Sender<Answer>) {
        let mut map = self.map.lock().expect("owners lock");
        for id in bet_ids {
            if map.get(id).is_some_and(|owner| owner.same_channel(tx)) {
                map.remove(id);
            }
        }
    }

    pub fn notify(&self, answer: Answer) {
        let mut map = self.map.lock().expect("owners lock");
        if let Some(tx) = map.get(&answer.id) {
            if tx.is_closed() {
                map.remove(&answer.id);
            } else {
                let _ = tx.try_send(answer);
            }
        }
    }
}

pub struct Desk {
    pub owners: Arc<Owners>,
    router: Arc<Router>,
    store: Option<StoreHandle>,
    policy: Policy,
    metrics: Arc<Metrics>,
    /// Ids being decided right now; duplicates wait on the notify.
    inflight: Mutex<HashMap<String, Arc<Notify>>>,
    /// In a cluster: bets go to the match's owner ([`cluster::Remote`]).
    remote: Option<cluster::Remote>,
}

impl Desk {
    pub fn new(
        router: Arc<Router>,
        owners: Arc<Owners>,
        store: Option<StoreHandle>,
        policy: Policy,
        metrics: Arc<Metrics>,
    ) -> Desk {
        Desk {
            owners,
            router,
            store,
            policy,
            metrics,
            inflight: Mutex::new(HashMap::new()),
            remote: None,
        }
    }

    /// A cluster node's desk: bets go to their match's owner, decisions
    /// are kept in the cluster (not in this node's store).
    pub fn in_cluster(mut self, remote: cluster::Remote) -> Desk {
        self.remote = Some(remote);
        self.store = None;
        self
    }

    /// The recorded bet, for `GET /api/bets/{id}`.
    pub async fn get(&self, id: &str) -> Option<Answer> {
        if let Some(remote) = &self.remote {
            return remote.lookup(id).await;
        }
        let store = self.store.as_ref()?;
        store.store.bet(id).ok().flatten().map(|r| Answer::from_record(&r))
    }

    pub async fn place(&self, bet: ClientBet) -> Answer {
        let started = Instant::now();
        let (answer, fresh) = self.place_inner(bet).await;
        if !fresh {
            // The decision of an earlier request with this id: not a new one.
            self.metrics.bet_replays.inc();
            return answer;
        }
        let reason = answer
            .reason
            .as_deref()
            .map_or("none", |r| r.split(':').next().unwrap_or(r))
            .to_owned();
        self.metrics
            .bets
            .get_or_create(&vec![
                ("decision".to_owned(), answer.status.code().to_owned()),
                ("reason".to_owned(), reason),
            ])
            .inc();
        self.metrics
            .bet_confirm_seconds
            .observe(started.elapsed().as_secs_f64());
        answer
    }

    /// The answer, and whether it is a new decision (`false`: an earlier
    /// request's, returned again).
    async fn place_inner(&self, bet: ClientBet) -> (Answer, bool) {
        let id = bet.id.clone();
        if id.is_empty() || id.len() > 128 {
            // Not an id the answer could be kept under.
            return (Answer::rejected(&id, "invalid_id: 1 to 128 characters"), true);
        }
        // An unreadable market id is kept as market 0 (the reason quotes it).
        let market = bet.market.parse::<u32>().ok();
        let request = BetRequest {
            id: id.clone(),
            market: market.unwrap_or(0),
            specifiers: canonical_specifiers(&bet.specifiers).into(),
            outcome: bet.outcome.clone(),
            odds: bet.odds,
            stake: bet.stake,
            accept_better_odds: self.policy.accept_better_odds,
        };
        // In a cluster the owner holds the id while it decides (this node
        // may be the owner: holding it here too would deadlock).
        if let Some(remote) = &self.remote {
            let rejected = self.invalid(&bet, market);
            return remote.place(bet.match_id, request, rejected).await;
        }
        let _claim = self.claim(&id).await;
        if let Some(store) = &self.store {
            match store.store.bet(&id) {
                Ok(Some(prior)) if same_bet(&prior.request, &request) && prior.match_id == bet.match_id => {
                    return (Answer::from_record(&prior), false);
                }
                Ok(Some(_)) => {
                    return (
                        Answer::rejected(&id, "id_conflict: this id was used for another bet"),
                        true,
                    );
                }
                Ok(None) => {}
                Err(e) => {
                    tracing::error!(error = %e, "reading bets");
                    return (Answer::rejected(&id, "unavailable: bet store unreadable"), true);
                }
            }
        }
        // Rejected on its face: kept like any decision, so the id answers
        // the same at any time (`GET /api/bets/{id}` too).
        if let Some(reason) = self.invalid(&bet, market) {
            return (self.record_unrouted(bet.match_id, request, &reason).await, true);
        }
        (self.decide(bet.match_id, request).await, true)
    }

    /// Why a bet is rejected before any worker sees it, if it is.
    fn invalid(&self, bet: &ClientBet, market: Option<u32>) -> Option<String> {
        if market.is_none() {
            return Some(format!("invalid_market: {:?} is not a market id", bet.market));
        }
        if !(bet.stake.is_finite() && bet.stake > 0.0) {
            return Some("invalid_stake: must be a positive number".to_owned());
        }
        if bet.stake < self.policy.min_stake || bet.stake > self.policy.max_stake {
            return Some(format!(
                "invalid_stake: must be between {} and {}",
                self.policy.min_stake, self.policy.max_stake
            ));
        }
        if !(bet.odds.is_finite() && bet.odds > 1.0) {
            return Some("invalid_odds: must be a number above 1".to_owned());
        }
        None
    }

    /// Route a valid bet to its match's worker and wait for the durable
    /// decision.
    async fn decide(&self, match_id: String, request: BetRequest) -> Answer {
        let id = request.id.clone();
        let Some(handle) = self.router.get(&match_id) else {
            return self.record_unrouted(match_id, request, "unknown_match").await;
        };
        let (tx, rx) = oneshot::channel();
        if handle
            .mailbox
            .send(Command::Bet {
                request: request.clone(),
                reply: tx,
            })
            .await
            .is_err()
        {
            return Answer::rejected(&id, "unavailable: match worker stopped");
        }
        drop(handle);
        match rx.await {
            Ok(Ok(record)) => Answer::from_record(&record),
            Ok(Err(e)) => Answer::rejected(&id, format!("storage_unavailable: {e}")),
            Err(_) => Answer::rejected(&id, "unavailable: match worker stopped"),
        }
    }

    /// A bet rejected before reaching a worker is recorded too, so its id
    /// keeps its decision.
    async fn record_unrouted(&self, match_id: String, request: BetRequest, reason: &str) -> Answer {
        let record = BetRecord {
            match_id,
            request,
            decision: Err(reason.to_owned()),
            seq: 0,
            epoch: 0,
            decided_at: 0,
            settlement: None,
        };
        if let Some(store) = &self.store {
            let scope = Some(std::sync::Arc::from(record.match_id.as_str()));
            let written = match store.write(Op::Bet(Box::new(record.clone()))).await {
                Ok(()) => sync(store, scope).await,
                Err(e) => Err(e),
            };
            if let Err(e) = written {
                return Answer::rejected(&record.request.id, format!("storage_unavailable: {e}"));
            }
        }
        Answer::from_record(&record)
    }

    /// Hold `id` until the returned guard drops, unless another request
    /// holds it now (`None`).
    fn try_claim(&self, id: &str) -> Option<Claim<'_>> {
        self.claim_or_wait(id).ok()
    }

    /// Hold `id` until the returned guard drops; waits while another
    /// request holds it.
    async fn claim(&self, id: &str) -> Claim<'_> {
        loop {
            let notify = match self.claim_or_wait(id) {
                Ok(claim) => return claim,
                Err(notify) => notify,
            };
            let released = notify.notified();
            // Re-check: it may have been released before `notified` existed.
            if self
                .inflight
                .lock()
                .expect("inflight lock")
                .get(id)
                .is_some_and(|n| Arc::ptr_eq(n, &notify))
            {
                released.await;
            }
        }
    }

    /// The claim on `id`, or what its holder notifies when it lets go.
    fn claim_or_wait(&self, id: &str) -> Result<Claim<'_>, Arc<Notify>> {
        let mut map = self
            .inflight
            .lock()
            .expect("inflight lock is never held across a panic");
        if let Some(n) = map.get(id) {
            return Err(n.clone());
        }
        map.insert(id.to_owned(), Arc::new(Notify::new()));
        Ok(Claim {
            desk: self,
            id: id.to_owned(),
        })
    }
}

/// The same bet as one already kept (NaN stakes or odds, kept as sent by a
/// rejected request, compare by their bits).
fn same_bet(a: &BetRequest, b: &BetRequest) -> bool {
    a.id == b.id
        && a.market == b.market
        && a.specifiers == b.specifiers
        && a.outcome == b.outcome
        && a.odds.to_bits() == b.odds.to_bits()
        && a.stake.to_bits() == b.stake.to_bits()
        && a.accept_better_odds == b.accept_better_odds
}

struct Claim<'a> {
    desk: &'a Desk,
    id: String,
}

impl Drop for Claim<'_> {
    fn drop(&mut self) {
        if let Some(n) = self.desk.inflight.lock().expect("inflight lock").remove(&self.id) {
            n.notify_waiters();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn answer(id: &str) -> Answer {
        Answer::rejected(id, "test")
    }

    #[test]
    fn owners_forget_a_finished_sessions_bets_but_not_anothers() {
        let owners = Owners::default();
        let (mine, mut my_rx) = tokio::sync::mpsc::channel(4);
        let (theirs, mut their_rx) = tokio::sync::mpsc::channel(4);
        owners.register("a", mine.clone());
        owners.register("b", mine.clone());
        owners.register("c", theirs.clone());
        owners.notify(answer("a"));
        assert_eq!(my_rx.try_recv().map(|a| a.id).ok(), Some("a".to_owned()));
        // "b" was re-placed by the other session: it owns it now.
        owners.register("b", theirs.clone());
        owners.unregister(&["a".to_owned(), "b".to_owned()], &mine);
        assert!(!owners.map.lock().expect("lock").contains_key("a"));
        owners.notify(answer("b"));
        owners.notify(answer("c"));
        assert_eq!(their_rx.try_recv().map(|a| a.id).ok(), Some("b".to_owned()));
        assert_eq!(their_rx.try_recv().map(|a| a.id).ok(), Some("c".to_owned()));
        assert!(my_rx.try_recv().is_err());
    }
}
