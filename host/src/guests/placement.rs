//! Which match runs which guest version, which sleep, and first-event
//! failures: what the workers report (through the server's observer) and
//! rollouts read (passing sleepers by) and wait on.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::{Arc, Mutex};

use serde::Serialize;

/// Which match runs which version, which sleep, and first-event failures.
#[derive(Debug, Default)]
pub struct Placement {
    running: Mutex<HashMap<Arc<str>, Arc<str>>>,
    /// Matches asleep (hibernated): a rollout passes them by.
    asleep: Mutex<HashSet<Arc<str>>>,
    probation: Mutex<Probation>,
    /// Signalled whenever a probation starts, ends or fails.
    pub(super) changed: tokio::sync::Notify,
}

#[derive(Debug, Default)]
struct Probation {
    /// Switched matches that have not had their first event yet.
    pending: std::collections::HashSet<Arc<str>>,
    /// First-event failures since the current (or last) rollout began.
    failures: Vec<MatchFailure>,
}

#[derive(Debug, Clone, Serialize)]
pub struct MatchFailure {
    #[serde(rename = "match")]
    pub match_id: String,
    pub reason: String,
}

impl Placement {
    pub fn set(&self, match_id: &Arc<str>, version: Arc<str>) {
        self.running
            .lock()
            .expect("placement lock")
            .insert(match_id.clone(), version);
    }

    pub fn remove(&self, match_id: &str) {
        self.running.lock().expect("placement lock").remove(match_id);
        self.asleep.lock().expect("placement lock").remove(match_id);
        self.probation_ended(match_id);
    }

    pub fn sleeps(&self, match_id: &Arc<str>, asleep: bool) {
        let mut set = self.asleep.lock().expect("placement lock");
        if asleep {
            set.insert(match_id.clone());
        } else {
            set.remove(match_id);
        }
    }

    /// Sleeping match → the version it sleeps on. (Read after the router's
    /// version changed, it names every match that will read the new one
    /// as it wakes: a match says it is awake before reading.)
    pub(super) fn sleeping(&self) -> HashMap<Arc<str>, Arc<str>> {
        let asleep = self.asleep.lock().expect("placement lock");
        let running = self.running.lock().expect("placement lock");
        asleep
            .iter()
            .filter_map(|id| Some((id.clone(), running.get(id)?.clone())))
            .collect()
    }

    pub fn probation_started(&self, match_id: &Arc<str>) {
        self.probation
            .lock()
            .expect("placement lock")
            .pending
            .insert(match_id.clone());
        self.changed.notify_waiters();
    }

    /// Passed its first event, or its probation was cut short.
    pub fn probation_ended(&self, match_id: &str) {
        if self.probation.lock().expect("placement lock").pending.remove(match_id) {
            self.changed.notify_waiters();
        }
    }

    pub fn probation_failed(&self, match_id: &str, reason: &str) {
        let mut p = self.probation.lock().expect("placement lock");
        p.pending.remove(match_id);
        p.failures.push(MatchFailure {
            match_id: match_id.to_owned(),
            reason: reason.to_owned(),
        });
        drop(p);
        self.changed.notify_waiters();
    }

    pub(super) fn probation_failures(&self) -> Vec<MatchFailure> {
        self.probation.lock().expect("placement lock").failures.clone()
    }

    /// (matches still on probation, first-event failures).
    pub(super) fn probation_counts(&self) -> (usize, usize) {
        let p = self.probation.lock().expect("placement lock");
        (p.pending.len(), p.failures.len())
    }

    pub(super) fn reset_probation(&self) {
        self.probation.lock().expect("placement lock").failures.clear();
    }

    /// Match → the version it runs now.
    pub(super) fn running(&self) -> HashMap<Arc<str>, Arc<str>> {
        self.running.lock().expect("placement lock").clone()
    }

    /// Version → matches running it (sorted).
    pub fn by_version(&self) -> BTreeMap<Arc<str>, Vec<Arc<str>>> {
        let mut out: BTreeMap<Arc<str>, Vec<Arc<str>>> = BTreeMap::new();
        for (m, v) in self.running.lock().expect("placement lock").iter() {
            out.entry(v.clone()).or_default().push(m.clone());
        }
        for ids in out.values_mut() {
            ids.sort();
        }
        out
    }
}
