//! The supervision view: every match's card, asked of its worker only
//! when it may have changed.
//!
//! A listing asks each match that is not asleep for its card (a
//! [`Command::Inspect`](crate::worker::Command) between two of its
//! commands, at most [`ASK_CONCURRENCY`] at once, each within
//! [`ASK_WITHIN`]); a hibernated match whose cached card already says so
//! is not asked (nothing changes while it sleeps). A match that did not
//! answer in time shows its last card marked `stale`. Rates are the seq's
//! growth between two listings.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures_util::StreamExt as _;

use crate::router::Router;
use crate::worker::{Card, State};

/// Longest a listing waits for one worker's card.
pub const ASK_WITHIN: Duration = Duration::from_secs(1);
/// Workers asked at once.
pub const ASK_CONCURRENCY: usize = 64;

/// One match as the console lists it.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Listed {
    pub id: String,
    #[serde(flatten)]
    pub card: Card,
    pub events_per_s: f64,
    /// Commands queued in its mailbox.
    pub mailbox: usize,
    pub dead_letters: usize,
    pub held: usize,
    /// The worker did not answer in time: its last known card.
    pub stale: bool,
}

#[derive(Debug)]
struct Known {
    card: Card,
    /// Seq and when it was read, for the rate.
    seq_at: (u64, Instant),
    events_per_s: f64,
}

/// The cards seen last, per match.
#[derive(Debug, Default)]
pub struct Cards(Mutex<HashMap<Arc<str>, Known>>);

impl Cards {
    /// Every match's card, sorted by id. `parked`: dead letters and held
    /// events per match, from the store.
    pub async fn list(&self, router: &Router, parked: &HashMap<String, (usize, usize)>) -> Vec<Listed> {
        let handles = router.handles();
        let to_ask: Vec<_> = {
            let known = self.lock();
            handles
                .iter()
                .filter(|(id, h)| {
                    let asleep = h.state.get() == State::Hibernated;
                    !(asleep
                        && known
                            .get(id)
                            .is_some_and(|k| k.card.state == State::Hibernated.as_str()))
                })
                .map(|(id, h)| (id.clone(), h.clone()))
                .collect()
        };
        let answers: HashMap<Arc<str>, Card> = futures_util::stream::iter(to_ask)
            .map(|(id, h)| async move { (id, Router::ask_inspect(h, false, ASK_WITHIN).await) })
            .buffer_unordered(ASK_CONCURRENCY)
            .filter_map(|(id, d)| async move { d.map(|d| (id, d.card)) })
            .collect()
            .await;
        let now = Instant::now();
        let mut known = self.lock();
        known.retain(|id, _| handles.iter().any(|(h, _)| h == id));
        let mut listed: Vec<Listed> = handles
            .into_iter()
            .map(|(id, h)| {
                let fresh = answers.get(&id).cloned();
                let stale = fresh.is_none() && h.state.get() != State::Hibernated;
                let k = match (fresh, known.remove(&id)) {
                    (Some(card), Some(old)) => {
                        let dt = now.duration_since(old.seq_at.1).as_secs_f64();
                        let rate = if dt > 0.0 {
                            card.seq.saturating_sub(old.seq_at.0) as f64 / dt
                        } else {
                            old.events_per_s
                        };
                        Known {
                            seq_at: (card.seq, now),
                            card,
                            events_per_s: rate,
                        }
                    }
                    (Some(card), None) => Known {
                        seq_at: (card.seq, now),
                        card,
                        events_per_s: 0.0,
                    },
                    (None, Some(old)) if !stale => Known {
                        events_per_s: 0.0,
                        ..old
                    },
                    (None, Some(old)) => old,
                    // Never answered yet: what its state cell says.
                    (None, None) => Known {
                        card: Card {
                            state: h.state.get().as_str(),
                            version: String::new(),
                            epoch: 0,
                            seq: 0,
                            memory_bytes: 0,
                            subscribers: h.updates.subscribers(),
                            restarts: 0,
                            failures_in_window: 0,
                            last_error: None,
                            quarantine_reason: None,
                        },
                        seq_at: (0, now),
                        events_per_s: 0.0,
                    },
                };
                let (dead_letters, held) = parked.get(&*id).copied().unwrap_or_default();
                let item = Listed {
                    id: id.to_string(),
                    card: k.card.clone(),
                    events_per_s: k.events_per_s,
                    mailbox: h.mailbox.len(),
                    dead_letters,
                    held,
                    stale,
                };
                known.insert(id, k);
                item
            })
            .collect();
        listed.sort_by(|a, b| a.id.cmp(&b.id));
        listed
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<Arc<str>, Known>> {
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }
}
