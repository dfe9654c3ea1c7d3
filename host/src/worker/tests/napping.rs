//! Napping (`worker::nap`): an idle live match gives its instance back and
//! its next command finds the same state, on the real Wasm guest; its
//! state is the snapshot taken at the nap, which it hibernates and
//! switches from without waking.

use super::*;

const NAP: Duration = Duration::from_millis(100);

fn napping(version: GuestVersion) -> Harness {
    Harness::start_with(version, MemoryJournal::shared(1), None, |c| c.nap_after = Some(NAP))
}

/// On the real guest, fed [`stream`] and then left idle past the nap.
async fn napped() -> Harness {
    let h = napping(faulty());
    for e in stream() {
        h.event(e).await;
    }
    tokio::time::sleep(NAP * 2).await;
    assert_eq!(h.metrics.napping_matches.get(), 1);
    h
}

/// Prices that move market 1 and touch a second market, as a feed does.
fn stream() -> Vec<MatchEvent> {
    (0..6).map(|i| odds(2.0 + f64::from(i) / 10.0, Some(7))).collect()
}

impl Harness {
    async fn inspect(&self) -> Card {
        self.ask(|reply| Command::Inspect { detail: false, reply }).await.card
    }

    fn counted(&self, histogram: &str) -> bool {
        !self
            .metrics
            .render()
            .contains(&format!("touchline_{histogram}_count 0"))
    }
}

#[tokio::test(start_paused = true)]
async fn idle_it_gives_its_instance_back_and_the_next_event_finds_the_same_state() {
    let (h, twin) = (
        napping(faulty()),
        Harness::start(faulty(), MemoryJournal::shared(1), None),
    );
    for e in stream() {
        h.event(e.clone()).await;
        twin.event(e).await;
    }
    let live = h.inspect().await;
    assert!(live.memory_bytes > 1 << 20, "a Wasm instance: {}", live.memory_bytes);
    tokio::time::sleep(NAP * 2).await;
    assert_eq!(h.metrics.napping_matches.get(), 1);
    let card = h.inspect().await;
    assert_eq!((card.state, card.seq), ("live", 6), "live to everyone outside");
    assert!(card.memory_bytes < 64 << 10, "no instance: {}", card.memory_bytes);
    assert_eq!(h.metrics.napping_matches.get(), 1, "an inspection does not wake it");
    assert!(!h.counted("nap_wake_seconds"));

    h.event(odds(3.5, Some(7))).await;
    twin.event(odds(3.5, Some(7))).await;
    let (mut snap, mut expected) = (h.snapshot().await, twin.snapshot().await);
    assert_eq!(h.metrics.napping_matches.get(), 0);
    assert!(h.counted("nap_wake_seconds"));
    assert!(!h.counted("recovery_seconds"), "not a restart");
    assert_eq!(h.inspect().await.restarts, 0);
    assert_eq!((snap["seq"].as_u64(), odds_in(&snap)), (Some(7), Some(3.5)));
    for s in [&mut snap, &mut expected] {
        s.as_object_mut().expect("object").remove("epoch");
    }
    assert_eq!(snap, expected, "the same frame as a match that never napped");
}

#[tokio::test(start_paused = true)]
async fn napping_it_is_snapshotted_marked_clean_and_hibernates_without_waking() {
    let h = napped().await;
    let stored = h.journal.stored_snapshot(MATCH).expect("read").expect("a snapshot");
    assert_eq!(stored.seq, 6, "the nap's snapshot, before clean_after (1 s)");
    let detail = h.ask(|reply| Command::Inspect { detail: true, reply }).await;
    // It keeps no resume ring while it naps (a resume rebuilds the frames).
    assert!(detail.frames.is_empty(), "{} frames kept", detail.frames.len());
    assert_eq!(
        detail.card.memory_bytes,
        stored.state.len(),
        "the base only: no resume ring, no tail, no checkpoint"
    );
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(h.journal.meta(MATCH).expect("meta").clean_seq, Some(6));
    tokio::time::sleep(Duration::from_secs(30)).await;
    assert_eq!(
        (h.metrics.hibernated_matches.get(), h.metrics.napping_matches.get()),
        (1, 0)
    );
    assert!(!h.counted("nap_wake_seconds"), "never woken");
    h.event(odds(4.0, None)).await;
    let snap = h.snapshot().await;
    assert_eq!((snap["seq"].as_u64(), odds_in(&snap)), (Some(7), Some(4.0)));
}

#[tokio::test(start_paused = true)]
async fn a_bet_on_a_napping_match_is_decided_on_its_current_odds() {
    let h = napped().await;
    let stale = h.bet("b-stale", 2.0).await.expect("answered");
    assert!(stale.decision.is_err(), "2.0 is not the price any more: {stale:?}");
    let current = h.bet("b-current", 2.5).await.expect("answered");
    assert!(current.decision.is_ok(), "{current:?}");
}

#[tokio::test(start_paused = true)]
async fn a_clean_napping_match_is_switched_asleep_without_waking() {
    let h = napping(GuestVersion::native());
    for e in stream() {
        h.event(e).await;
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(h.metrics.napping_matches.get(), 1);
    let new = faulty();
    let outcome = h.switch_on_probation(&new).await;
    assert!(matches!(outcome, SwitchOutcome::Switched { .. }), "{outcome:?}");
    assert_eq!(h.metrics.hibernated_matches.get(), 1);
    assert!(!h.counted("nap_wake_seconds"));
    h.event(odds(3.0, None)).await;
    let snap = h.snapshot().await;
    assert_eq!(snap["guest_version"], new.version());
    assert_eq!((snap["seq"].as_u64(), odds_in(&snap)), (Some(7), Some(3.0)));
}

#[tokio::test(start_paused = true)]
async fn a_sparse_match_naps_again_sooner_and_a_burst_keeps_the_full_delay() {
    use crate::worker::nap::NAP_AGAIN_AFTER;
    const SLOW: Duration = Duration::from_secs(1);
    let h = Harness::start_with(faulty(), MemoryJournal::shared(1), None, |c| c.nap_after = Some(SLOW));
    let napping = || h.metrics.napping_matches.get();
    // Each event is handled once an inspection behind it is answered (an
    // inspection is not activity). Right after the start, and then after
    // one idle spell longer than nap_after: the full delay both times.
    for (i, o) in [2.0, 2.1].into_iter().enumerate() {
        h.event(odds(o, Some(7))).await;
        h.inspect().await;
        assert_eq!(napping(), 0, "event {i}: awake");
        tokio::time::sleep(NAP_AGAIN_AFTER * 3).await;
        assert_eq!(napping(), 0, "event {i}: awake within nap_after");
        tokio::time::sleep(SLOW).await;
        assert_eq!(napping(), 1, "event {i}: napped after nap_after");
    }
    // A second event in a row after a long idle spell: a sparse match,
    // which naps again after NAP_AGAIN_AFTER.
    h.event(odds(2.2, Some(7))).await;
    h.inspect().await;
    assert_eq!(napping(), 0, "woken by the event");
    tokio::time::sleep(NAP_AGAIN_AFTER + Duration::from_millis(10)).await;
    assert_eq!(napping(), 1, "a sparse match naps again soon");
    // The next event soon after, as a burst begins: the full delay again.
    h.event(odds(2.3, Some(7))).await;
    h.inspect().await;
    tokio::time::sleep(NAP_AGAIN_AFTER * 3).await;
    assert_eq!(napping(), 0, "a burst keeps its instance for nap_after");
    tokio::time::sleep(SLOW).await;
    assert_eq!(napping(), 1);
    let snap = h.snapshot().await;
    assert_eq!((snap["seq"].as_u64(), odds_in(&snap)), (Some(4), Some(2.3)));
}
