//! The supervision view: every match's card, asked of its worker only
//! when it may have changed.
//!
//! A listing asks each match that is awake for its card (a
//! [`Command::Inspect`](crate::worker::Command) between two of its
//! commands, at most [`ASK_CONCURRENCY`] at once, each within
//! [`ASK_WITHIN`]); a sleeping match is asked again only when its
//! [`StateCell`](crate::worker::StateCell)'s generation moved (it woke, was
//! switched asleep, gave its base back). A match that did not answer in
//! time shows its last card marked `stale`. Rates are the seq's growth over
//! at least [`RATE_WINDOW`], so listings close together (two watchers) do
//! not make them jump.

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
/// Shortest time a rate is measured over.
pub const RATE_WINDOW: Duration = Duration::from_millis(900);

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

#[derive(Debug, Clone)]
struct Known {
    card: Card,
    /// The state cell's generation the card was answered at (`None`: never
    /// answered, a placeholder).
    generation: Option<u64>,
    /// Seq and when, at the start of the current rate window.
    base: (u64, Instant),
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
                    let (state, generation) = h.state.load();
                    let unchanged = known.get(id).is_some_and(|k| k.generation == Some(generation));
                    !(state == State::Hibernated && unchanged)
                })
                .map(|(id, h)| (id.clone(), h.clone()))
                .collect()
        };
        let answers: HashMap<Arc<str>, (Card, u64, Instant)> = futures_util::stream::iter(to_ask)
            .map(|(id, h)| async move {
                // The generation before asking: a change while the answer
                // is on its way is seen at the next listing.
                let generation = h.state.load().1;
                let detail = Router::ask_inspect(h, false, ASK_WITHIN).await;
                (id, detail.map(|d| (d.card, generation, Instant::now())))
            })
            .buffer_unordered(ASK_CONCURRENCY)
            .filter_map(|(id, d)| async move { d.map(|d| (id, d)) })
            .collect()
            .await;
        let mut known = self.lock();
        let mut next = HashMap::with_capacity(handles.len());
        let mut listed: Vec<Listed> = handles
            .into_iter()
            .map(|(id, h)| {
                let old = known.remove(&id);
                let asleep = h.state.get() == State::Hibernated;
                let stale = !answers.contains_key(&id) && !asleep;
                let k = match (answers.get(&id).cloned(), old) {
                    (Some((card, generation, at)), Some(old)) => {
                        let dt = at.saturating_duration_since(old.base.1);
                        let (base, rate) = if dt >= RATE_WINDOW {
                            let grew = card.seq.saturating_sub(old.base.0) as f64;
                            ((card.seq, at), grew / dt.as_secs_f64())
                        } else {
                            (old.base, old.events_per_s)
                        };
                        Known {
                            card,
                            generation: Some(generation),
                            base,
                            events_per_s: if asleep { 0.0 } else { rate },
                        }
                    }
                    (Some((card, generation, at)), None) => Known {
                        base: (card.seq, at),
                        card,
                        generation: Some(generation),
                        events_per_s: 0.0,
                    },
                    (None, Some(old)) if asleep => Known {
                        events_per_s: 0.0,
                        ..old
                    },
                    (None, Some(old)) => old,
                    // Never answered yet: what its state cell says, asked
                    // again next time.
                    (None, None) => Known {
                        card: Card {
                            state: h.state.get().as_str(),
                            version: String::new(),
                            epoch: 0,
                            seq: 0,
                            memory_bytes: 0,
                            subscribers: 0,
                            restarts: 0,
                            failures_in_window: 0,
                            last_error: None,
                            quarantine_reason: None,
                        },
                        generation: None,
                        base: (0, Instant::now()),
                        events_per_s: 0.0,
                    },
                };
                let (dead_letters, held) = parked.get(&*id).copied().unwrap_or_default();
                let mut card = k.card.clone();
                card.subscribers = h.updates.subscribers();
                let item = Listed {
                    id: id.to_string(),
                    card,
                    events_per_s: k.events_per_s,
                    mailbox: h.mailbox.len(),
                    dead_letters,
                    held,
                    stale,
                };
                next.insert(id, k);
                item
            })
            .collect();
        *known = next;
        drop(known);
        listed.sort_by(|a, b| a.id.cmp(&b.id));
        listed
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<Arc<str>, Known>> {
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }
}
