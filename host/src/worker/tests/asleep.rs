//! Sleeping through a rollout (`Worker::take_current`): the match takes
//! the router's version as it wakes, says it sleeps only between commands
//! (never in the middle of a wake), takes it too when it stops sleeping
//! without waking (an operator's quarantine), and starts on it when it
//! had no state to migrate.

use super::*;
use crate::worker::Current;

impl Harness {
    /// Started with `current` as the router's version.
    fn with_current(current: &Current) -> Harness {
        let current = current.clone();
        Harness::start_with(GuestVersion::native(), MemoryJournal::shared(1), None, |c| {
            c.current = Some(current);
        })
    }

    fn sleeps(&self) -> Vec<bool> {
        self.observer.1.lock().expect("recording lock").clone()
    }
}

#[tokio::test(start_paused = true)]
async fn asleep_through_a_rollout_it_takes_the_version_as_it_wakes() {
    let current = Current::new(GuestVersion::native());
    let mut h = Harness::with_current(&current);
    h.event(odds(2.0, None)).await;
    tokio::time::sleep(Duration::from_secs(31)).await;
    assert_eq!(h.metrics.hibernated_matches.get(), 1);
    assert_eq!(h.sleeps(), [true]);
    // A rollout passes it by: only the router's version changes.
    let new = faulty();
    current.set(new.clone());
    h.event(odds(2.5, None)).await;
    let snap = h.snapshot().await;
    assert_eq!(snap["guest_version"], new.version(), "{snap}");
    assert_eq!((snap["seq"].as_u64(), odds_in(&snap)), (Some(2), Some(2.5)));
    // Awake once, as the wake began: not asleep again while it rebuilt.
    assert_eq!(h.sleeps(), [true, false]);
    let statuses: Vec<String> = h.frames().into_iter().map(|f| f.2).filter(|s| !s.is_empty()).collect();
    assert_eq!(statuses, ["upgraded"]);
}

#[tokio::test(start_paused = true)]
async fn quarantined_by_hand_while_asleep_through_a_rollout_it_takes_the_version() {
    let current = Current::new(GuestVersion::native());
    let h = Harness::with_current(&current);
    h.event(odds(2.0, None)).await;
    tokio::time::sleep(Duration::from_secs(31)).await;
    assert_eq!(h.card().await.state, "hibernated");
    let new = faulty();
    current.set(new.clone());
    // Out of its sleep without waking: the version is taken all the same,
    // and the quarantine stays until an operator heals it.
    assert!(h.operate(Action::Quarantine("checking".into())).await.is_ok());
    let card = h.card().await;
    assert_eq!((card.state, card.version.as_str()), ("quarantined", new.version()));
    assert_eq!(h.sleeps(), [true, false]);
}

#[tokio::test(start_paused = true)]
async fn asleep_with_no_state_saved_it_starts_on_the_version_as_it_wakes() {
    let current = Current::new(GuestVersion::native());
    let h = Harness::with_current(&current);
    // No event ever applied: nothing saved, nothing to migrate.
    tokio::time::sleep(Duration::from_secs(31)).await;
    assert_eq!(h.metrics.hibernated_matches.get(), 1);
    let new = faulty();
    current.set(new.clone());
    let snap = h.snapshot().await;
    assert_eq!(snap["guest_version"], new.version(), "{snap}");
    assert_eq!(
        h.journal.meta(MATCH).expect("meta").guest.as_deref(),
        Some(new.version())
    );
}
