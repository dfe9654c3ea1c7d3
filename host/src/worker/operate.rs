//! An operator's actions on one match (the console's buttons): quarantine
//! by hand, hibernate now, wake now, replay one dead letter. Healing is
//! [`supervise`](super::supervise)'s.
//!
//! Each answers with a one-line report, or a [`Refusal`] saying why the
//! match is not in a state the action applies to; none of them takes a
//! seq except a replay that applies.

use bytes::Bytes;

use super::Worker;
use super::lifecycle::Lifecycle;
use super::supervise::Fate;
use crate::journal::Op;

/// How a quarantine by hand's reason starts (kept in the match record, so
/// a restart knows it too): a rollout switches such a match without
/// healing it, only an operator's heal lifts it.
pub(super) const BY_HAND: &str = "quarantined by an operator";

/// Whether a quarantine `reason` was an operator's.
pub(super) fn by_hand(reason: &str) -> bool {
    reason.starts_with(BY_HAND)
}

/// What an operator asks of a match.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// Hold its events and refuse its bets until healed (the reason given).
    Quarantine(String),
    /// Give its instance back now (marked clean first).
    Hibernate,
    /// Restore it now.
    Wake,
    /// Apply this dead letter (by its kept id) now, as the next event.
    Replay(u64),
}

/// Why an action was not carried out.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    /// The thing named does not exist (a dead letter id).
    #[error("{0}")]
    NotFound(String),
    /// The match is not in a state the action applies to.
    #[error("{0}")]
    Conflict(String),
    /// The store failed.
    #[error("{0}")]
    Failed(String),
}

impl Worker {
    pub(super) async fn operate(&mut self, action: Action) -> Result<String, Refusal> {
        let state = self.life.state().as_str();
        let report = match action {
            Action::Quarantine(reason) => {
                if matches!(
                    self.life,
                    Lifecycle::Quarantined { .. } | Lifecycle::Healing { .. } | Lifecycle::Stopped
                ) {
                    return Err(Refusal::Conflict(format!("the match is {state}")));
                }
                let reason = if reason.trim().is_empty() {
                    BY_HAND.to_owned()
                } else {
                    format!("{BY_HAND}: {}", reason.trim())
                };
                self.quarantine(reason);
                self.write_meta().await;
                format!("quarantined at seq {}", self.seq)
            }
            Action::Hibernate => {
                if !matches!(
                    self.life,
                    Lifecycle::Live(_) | Lifecycle::Napping | Lifecycle::Probation { .. }
                ) {
                    return Err(Refusal::Conflict(format!(
                        "only a live match hibernates; it is {state}"
                    )));
                }
                self.on_idle().await;
                self.hibernate();
                format!("hibernated at seq {}", self.seq)
            }
            Action::Wake => {
                if !matches!(self.life, Lifecycle::Hibernated { .. }) {
                    return Err(Refusal::Conflict(format!("the match is {state}, not hibernated")));
                }
                self.wake().await;
                format!("awake: {} at seq {}", self.life.state().as_str(), self.seq)
            }
            Action::Replay(id) => return self.replay_dead_letter(id).await,
        };
        Ok(report)
    }

    /// Apply one dead letter now. Like a heal's replay, a failure
    /// dead-letters it again (under a new id) and never quarantines.
    async fn replay_dead_letter(&mut self, id: u64) -> Result<String, Refusal> {
        // Applied like any event: the instance first, not as a restart.
        self.wake_from_nap();
        if matches!(
            self.life,
            Lifecycle::Quarantined { .. } | Lifecycle::Healing { .. } | Lifecycle::Stopped
        ) {
            return Err(Refusal::Conflict(format!(
                "the match is {}: heal it to replay everything kept",
                self.life.state().as_str()
            )));
        }
        if matches!(
            self.life,
            Lifecycle::Probation { .. } | Lifecycle::Hibernated { fallback: Some(_) }
        ) {
            // A replay now would end the probation untried (as a heal does).
            return Err(Refusal::Conflict(
                "on probation after a switch: replay once its first event has passed".into(),
            ));
        }
        let Some(journal) = self.env.journal.clone() else {
            return Err(Refusal::NotFound("no journal: nothing was kept".into()));
        };
        let failed = |e: crate::journal::JournalError| Refusal::Failed(e.to_string());
        crate::journal::sync(&*journal, Some(self.id.clone()))
            .await
            .map_err(failed)?;
        let parked = journal.parked(&self.id).map_err(failed)?;
        let Some(letter) = parked.dead_letters.into_iter().find(|l| l.id == id) else {
            return Err(Refusal::NotFound(format!("no dead letter {id} for {}", self.id)));
        };
        self.wake().await;
        let instance = match self.enter(Lifecycle::Restarting) {
            Lifecycle::Live(i) => Some(i),
            _ => None,
        };
        self.enter(Lifecycle::Healing { instance });
        let fate = self
            .on_event(letter.item.event, None, letter.raw.map(Bytes::from))
            .await;
        let next = match self.enter(Lifecycle::Restarting) {
            Lifecycle::Healing { instance: Some(i) } => Lifecycle::Live(i),
            Lifecycle::Healing { instance: None } => Lifecycle::Restarting,
            other => other,
        };
        self.enter(next);
        // Removed only now, behind what the replay wrote (the applied
        // event, or the letter parked anew): a crash in between keeps it.
        let remove = Op::RemoveDeadLetter {
            match_id: self.id.clone(),
            id,
        };
        journal.write(remove).await.map_err(failed)?;
        // Answered once durable, so what the operator reads next is so.
        crate::journal::sync(&*journal, Some(self.id.clone()))
            .await
            .map_err(failed)?;
        Ok(match fate {
            Fate::Applied => format!("dead letter {id} applied as seq {}", self.seq),
            Fate::DeadLettered | Fate::Held => format!("dead letter {id} failed again and was dead-lettered anew"),
            Fate::Rejected => format!("dead letter {id} was refused by the guest (not a failure): dropped"),
        })
    }
}
