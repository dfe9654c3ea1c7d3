//! Bets on this match: decided between two events (so against exactly the
//! odds of that turn), recorded, answered once the record is durable; and
//! settled when a settlement, cancellation or rollback changes how they
//! stand.

use tokio::sync::oneshot;
use tokio::time::Instant;
use touchline_guest::bet::{BetDecision, BetRequest, OpenBet, SettleStatus, Settlement};

use std::sync::Arc;

use super::lifecycle::Lifecycle;
use super::{BetLog, Command, Worker};
use crate::journal::{BetRecord, JournalError, Op};

impl Worker {
    /// Decide a bet, record it, and answer once the record is durable
    /// (without holding up the next event: many bets share one group
    /// commit). A record that cannot be made durable is answered `Err` and
    /// forgotten: the bet does not stand.
    pub(super) async fn bet(&mut self, request: BetRequest, reply: oneshot::Sender<Result<BetRecord, JournalError>>) {
        let started = Instant::now();
        let decision = self.decide(&request).await;
        self.env
            .metrics
            .bet_decision_seconds
            .observe(started.elapsed().as_secs_f64());
        let record = BetRecord {
            match_id: self.id.to_string(),
            request,
            decision,
            seq: self.seq,
            epoch: self.epoch,
            decided_at: std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_millis() as i64),
            settlement: None,
        };
        if let Some(log) = self.env.bet_log.clone() {
            return self.record_in_cluster(log, record, reply);
        }
        let accepted = record.decision.is_ok();
        if accepted {
            self.bets.push(record.clone());
        }
        let Some(journal) = self.env.journal.clone() else {
            let _ = reply.send(Ok(record));
            return;
        };
        let queued = match journal.write(Op::Bet(Box::new(record.clone()))).await {
            Ok(()) => journal.barrier(Some(self.id.clone())).await,
            Err(e) => Err(e),
        };
        let durable = match queued {
            Ok(d) => d,
            Err(e) => {
                tracing::error!(match_id = %self.id, error = %e, "bet record refused; not confirmed");
                self.bets.retain(|b| b.request.id != record.request.id);
                let _ = reply.send(Err(e));
                return;
            }
        };
        let mailbox = self.mailbox.clone();
        tokio::spawn(async move {
            match durable.wait().await {
                Ok(()) => {
                    let _ = reply.send(Ok(record));
                }
                Err(e) => {
                    tracing::error!(match_id = %record.match_id, bet = %record.request.id, error = %e, "bet record not durable; not confirmed");
                    if accepted && let Some(mailbox) = mailbox.upgrade() {
                        let _ = mailbox
                            .send(Command::ForgetBet {
                                id: record.request.id.clone(),
                            })
                            .await;
                    }
                    let _ = reply.send(Err(e));
                }
            }
        });
    }

    /// In a cluster: answer once the decision is recorded in JetStream,
    /// after the settlements recorded before it (one ordered chain per
    /// match). The bet joins this match's bets only once recorded (through
    /// [`Command::RestoreBets`], which brings its standing up to date), so
    /// nothing is ever recorded of a bet whose decision was not. If another
    /// decision for the id was recorded first (an earlier owner's, or the
    /// receiving node's `unavailable`), that one stands.
    fn record_in_cluster(
        &mut self,
        log: Arc<dyn BetLog>,
        record: BetRecord,
        reply: oneshot::Sender<Result<BetRecord, JournalError>>,
    ) {
        let earlier = self.telling.take();
        let mailbox = self.mailbox.clone();
        self.telling = Some(tokio::spawn(async move {
            if let Some(earlier) = earlier {
                let _ = earlier.await;
            }
            let id = record.request.id.clone();
            let answer = match log.decided(record.clone()).await {
                Ok(None) => Ok(record),
                Ok(Some(stored)) => {
                    tracing::info!(match_id = %stored.match_id, bet = %id, "a decision was recorded first; it stands");
                    Ok(stored)
                }
                Err(e) => {
                    tracing::error!(match_id = %record.match_id, bet = %id, error = %e, "bet decision not recorded; not confirmed");
                    Err(JournalError::WriteFailed(e))
                }
            };
            if let Ok(stands) = &answer
                && stands.decision.is_ok()
                && let Some(mailbox) = mailbox.upgrade()
            {
                let records = vec![stands.clone()];
                let _ = mailbox.send(Command::RestoreBets { records }).await;
            }
            let _ = reply.send(answer);
        }));
    }

    /// Accepted bets an earlier owner recorded ([`Command::RestoreBets`]).
    pub(super) async fn restore_bets(&mut self, records: Vec<BetRecord>) {
        let before = self.bets.len();
        for r in records {
            if r.decision.is_ok() && !self.bets.iter().any(|b| b.request.id == r.request.id) {
                self.bets.push(r);
            }
        }
        if self.bets.len() > before {
            tracing::info!(match_id = %self.id, restored = self.bets.len() - before, "bets restored");
            self.settle_bets().await;
        }
    }

    async fn decide(&mut self, request: &BetRequest) -> Result<f64, String> {
        if self.life.quarantine_reason().is_some() {
            return Err("match_quarantined".into());
        }
        self.ensure_instance().await;
        // Every producer not up, as the board says at this turn: the guest
        // refuses a bet on a market of any of them (or of no known one).
        let down: Vec<u32> = crate::producers::ids(self.board.borrow().down).collect();
        let Some(instance) = self.life.applier() else {
            return Err("worker_unavailable".into());
        };
        match instance.decide_bet(&touchline_guest::encode(request), &down) {
            Ok(bytes) => match touchline_guest::decode::<BetDecision>(&bytes) {
                Ok(BetDecision::Accepted { odds }) => Ok(odds),
                Ok(BetDecision::Rejected(r)) => Err(r.code().to_owned()),
                Err(e) => Err(format!("worker_error: {e}")),
            },
            Err(f) => {
                if f.is_fatal() {
                    let _ = self.fail(f).await;
                    self.ensure_instance().await;
                }
                Err("worker_failed".into())
            }
        }
    }

    /// After a settlement, cancellation or rollback: update every accepted
    /// bet whose standing changed, durably, and tell its owner.
    pub(super) async fn settle_bets(&mut self) {
        let open: Vec<OpenBet> = self
            .bets
            .iter()
            .filter_map(|b| {
                let odds = *b.decision.as_ref().ok()?;
                let r = &b.request;
                Some(OpenBet {
                    market: r.market,
                    specifiers: r.specifiers.clone(),
                    outcome: r.outcome.clone(),
                    odds,
                    stake: r.stake,
                    placed_at: b.decided_at,
                })
            })
            .collect();
        if matches!(self.life, Lifecycle::Quarantined { .. }) {
            return;
        }
        let Some(instance) = self.life.applier() else { return };
        let settled: Vec<Settlement> = match instance
            .settle_bets(&touchline_guest::encode(&open))
            .map(|b| touchline_guest::decode::<Vec<Settlement>>(&b))
        {
            Ok(Ok(s)) if s.len() == self.bets.len() => s,
            other => {
                let detail = format!("{:?}", other.map(|r| r.map(|s| s.len())));
                tracing::error!(match_id = %self.id, detail, "settling bets failed");
                return;
            }
        };
        let mut changed = Vec::new();
        for (bet, now) in self.bets.iter_mut().zip(settled) {
            let unchanged = match &bet.settlement {
                Some(prev) => *prev == now,
                None => now.status == SettleStatus::Open,
            };
            if unchanged {
                continue;
            }
            self.env
                .metrics
                .bet_settlements
                .get_or_create(&vec![("status".to_owned(), now.status.code().to_owned())])
                .inc();
            bet.settlement = Some(now);
            if let Some(journal) = self.env.journal.as_deref()
                && let Err(e) = journal.write(Op::Bet(Box::new(bet.clone()))).await
            {
                tracing::error!(match_id = %self.id, bet = %bet.request.id, error = %e, "settlement record refused");
            }
            changed.push(bet.clone());
        }
        if changed.is_empty() {
            return;
        }
        // Owners hear of a settlement once its record is durable (as a bet
        // is confirmed only once durable), without holding up the match.
        let log = self.env.bet_log.clone();
        let durable = match self.env.journal.as_deref() {
            Some(journal) => Some(journal.barrier(Some(self.id.clone())).await),
            None => None,
        };
        let observer = self.env.observer.clone();
        let id = self.id.clone();
        // In order: after the owners were told of earlier settlements.
        let earlier = self.telling.take();
        self.telling = Some(tokio::spawn(async move {
            if let Some(earlier) = earlier {
                let _ = earlier.await;
            }
            if let Some(durable) = durable
                && let Err(e) = async { durable?.wait().await }.await
            {
                tracing::error!(match_id = %id, error = %e, "settlement records not durable; owners not told");
                return;
            }
            for bet in changed {
                match &log {
                    // Every node tells the bet's owner from the record.
                    Some(log) => {
                        if let Err(e) = log.changed(bet.clone()).await {
                            tracing::error!(match_id = %id, bet = %bet.request.id, error = %e, "settlement not recorded");
                        }
                    }
                    None => observer.bet_changed(&bet),
                }
            }
        }));
    }
}
